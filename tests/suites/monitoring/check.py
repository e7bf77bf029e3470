"""tests/suites/monitoring.sh's checks of deploy/monitoring/. Run from the repository root.

  check.py structure          the rules (annotations, severity), their unit tests (one firing
                              and one silent case per alert), the PrometheusRule (rules.yaml's
                              groups, verbatim) and the dashboard (JSON, unique panel ids)
  check.py mutants            per alert, its rule made to always fire, then to never fire:
                              `promtool test rules` must fail, in that alert's silent test
                              groups, then in its firing ones (so each case can fail)
  check.py dashboard-rules    the dashboard's expressions as recording rules on stdout, Grafana
                              variables filled in, for `promtool check rules` to parse
  check.py names SCRAPE       every metric the rules and the dashboard name is in SCRAPE (what
                              the daemon's /metrics answered), with the labels they use

Exits non-zero with every problem found. MONITORING_DIR, when set, is read instead of
deploy/monitoring (the suite's negative controls run on broken copies).
"""

import copy
import json
import os
import re
import subprocess
import sys
import tempfile

import yaml

# A copy elsewhere for the suite's negative controls (MONITORING_DIR), else the real one.
MON = os.environ.get("MONITORING_DIR", "deploy/monitoring")
RULES = f"{MON}/rules.yaml"
TESTS = f"{MON}/rules.test.yaml"
PROMRULE = f"{MON}/prometheusrule.yaml"
DASHBOARD = f"{MON}/grafana-dashboard.json"

SEVERITIES = {"critical", "warning", "info"}
# Labels Prometheus adds to every scraped series (the target's), not the daemon.
TARGET_LABELS = {"job", "instance"}
# Metrics Prometheus makes itself, per target: the only names not in the daemon's /metrics.
PROMETHEUS_METRICS = {"up": set()}
# Labels whose values the daemon fixes in code (crates/fedimds/src/metrics.rs: LOOKUP_RESULTS,
# UpstreamName, ok/error), so a value the scrape does not show is a typo.
ENUMERATED = {"result", "outcome", "upstream"}
# What Grafana puts in for its variables when an expression is parsed here.
GRAFANA_VARS = {"__rate_interval": "5m", "__interval": "1m", "__range": "1h", "instance": ".*"}


def load_yaml(path):
    with open(path) as f:
        return yaml.safe_load(f)


def alerts(rules):
    return [r for g in rules["groups"] for r in g["rules"] if "alert" in r]


# --- structure -------------------------------------------------------------------------------


def check_structure():
    problems = []
    rules = load_yaml(RULES)
    names = [r["alert"] for r in alerts(rules)]
    if len(names) < 8:
        problems.append(f"{RULES}: only {len(names)} alerts")
    if len(set(names)) != len(names):
        problems.append(f"{RULES}: an alert name is used twice: {names}")
    for rule in alerts(rules):
        name, ann = rule["alert"], rule.get("annotations", {})
        for key in ("summary", "description", "runbook"):
            if not str(ann.get(key, "")).strip():
                problems.append(f"{name}: no {key} annotation")
        if "\n" in str(ann.get("runbook", "")).strip():
            problems.append(f"{name}: the runbook annotation is more than one line")
        if rule.get("labels", {}).get("severity") not in SEVERITIES:
            problems.append(f"{name}: severity must be one of {sorted(SEVERITIES)}")

    # Every alert has a test group that expects it to fire and one that expects silence; every
    # alertname tested is a rule (promtool passes a silent case for a name that does not exist).
    tests = load_yaml(TESTS)
    if tests.get("rule_files") != ["rules.yaml"]:
        problems.append(f"{TESTS}: rule_files must be just rules.yaml")
    fires, silent, groups = {}, {}, []
    for group in tests.get("tests", []):
        gname = group.get("name")
        if not gname:
            problems.append(f"{TESTS}: a test group has no name")
        groups.append(gname)
        for case in group.get("alert_rule_test", []):
            alert = case["alertname"]
            if alert not in names:
                problems.append(f"{TESTS}: group {gname!r} tests {alert}, which is no rule")
            (fires if case.get("exp_alerts") else silent).setdefault(alert, []).append(gname)
    if len(set(groups)) != len(groups):
        problems.append(f"{TESTS}: a test group name is used twice")
    for name in names:
        if name not in fires:
            problems.append(f"{TESTS}: no case fires {name}")
        if name not in silent:
            problems.append(f"{TESTS}: no case expects {name} silent")

    # The PrometheusRule: the operator's object around rules.yaml's groups, nothing else.
    pr = load_yaml(PROMRULE)
    if pr.get("apiVersion") != "monitoring.coreos.com/v1":
        problems.append(f"{PROMRULE}: apiVersion is {pr.get('apiVersion')!r}")
    if pr.get("kind") != "PrometheusRule":
        problems.append(f"{PROMRULE}: kind is {pr.get('kind')!r}")
    if not (pr.get("metadata") or {}).get("name"):
        problems.append(f"{PROMRULE}: no metadata.name")
    spec = pr.get("spec") or {}
    if set(spec) != {"groups"}:
        problems.append(f"{PROMRULE}: spec has {sorted(spec)}, not just groups")
    if spec.get("groups") != rules["groups"]:
        problems.append(f"{PROMRULE}: spec.groups differ from {RULES}'s groups")

    # The dashboard: JSON, an importable datasource input, unique panel ids, queries everywhere.
    try:
        with open(DASHBOARD) as f:
            dash = json.load(f)
    except (OSError, ValueError) as e:
        problems.append(f"{DASHBOARD}: not valid JSON: {e}")
        dash = {}
    if dash:
        if not dash.get("title") or not dash.get("uid"):
            problems.append(f"{DASHBOARD}: no title or uid")
        inputs = {i.get("name") for i in dash.get("__inputs", []) if i.get("pluginId") == "prometheus"}
        if "DS_PROMETHEUS" not in inputs:
            problems.append(f"{DASHBOARD}: no __inputs entry DS_PROMETHEUS for a Prometheus datasource")
        ids = []
        for panel in all_panels(dash):
            ids.append(panel.get("id"))
            title = panel.get("title", panel.get("id"))
            if panel.get("type") == "row":
                continue
            if not panel.get("gridPos"):
                problems.append(f"{DASHBOARD}: panel {title!r} has no gridPos")
            if (panel.get("datasource") or {}).get("uid") != "${DS_PROMETHEUS}":
                problems.append(f"{DASHBOARD}: panel {title!r} does not use ${{DS_PROMETHEUS}}")
            targets = panel.get("targets") or []
            if not targets or not all(str(t.get("expr", "")).strip() for t in targets):
                problems.append(f"{DASHBOARD}: panel {title!r} has a target without an expression")
            refs = [t.get("refId") for t in targets]
            if len(set(refs)) != len(refs) or None in refs:
                problems.append(f"{DASHBOARD}: panel {title!r} has missing or repeated refIds")
        if None in ids or len(set(ids)) != len(ids):
            problems.append(f"{DASHBOARD}: panel ids are missing or not unique: {ids}")
        if len(ids) < 8:
            problems.append(f"{DASHBOARD}: only {len(ids)} panels")
    return problems, f"{len(names)} alerts, {len(groups)} test groups, {len(ids) if dash else 0} panels"


def all_panels(dash):
    for panel in dash.get("panels", []):
        yield panel
        yield from panel.get("panels", [])  # a collapsed row holds its own


# --- mutants ---------------------------------------------------------------------------------


def promtool_test(rules, tmp):
    """promtool test rules on rules.test.yaml with RULES replaced by `rules`: (status, output)."""
    with open(os.path.join(tmp, "rules.yaml"), "w") as f:
        yaml.safe_dump(rules, f, sort_keys=False)
    with open(TESTS) as src, open(os.path.join(tmp, "rules.test.yaml"), "w") as dst:
        dst.write(src.read())
    run = subprocess.run(["promtool", "test", "rules", "rules.test.yaml"], cwd=tmp,
                         capture_output=True, text=True)
    return run.returncode, run.stdout + run.stderr


def check_mutants():
    problems = []
    rules = load_yaml(RULES)
    tests = load_yaml(TESTS)
    groups = {}  # alert -> {"fire": [group names], "silent": [...]}
    for group in tests["tests"]:
        for case in group.get("alert_rule_test", []):
            kind = "fire" if case.get("exp_alerts") else "silent"
            groups.setdefault(case["alertname"], {"fire": [], "silent": []})[kind].append(group["name"])
    n = 0
    with tempfile.TemporaryDirectory() as tmp:
        status, out = promtool_test(rules, tmp)
        if status != 0:
            return [f"the unmutated rules fail their tests:\n{out}"], ""
        for rule in alerts(rules):
            name = rule["alert"]
            # always: fires from the first sample with no `for`; never: an empty vector.
            for mutant, expr, must_fail in (("always", "vector(1)", "silent"),
                                            ("never", "vector(1) < 0", "fire")):
                mutated = copy.deepcopy(rules)
                for r in alerts(mutated):
                    if r["alert"] == name:
                        r["expr"] = expr
                        r.pop("for", None)
                status, out = promtool_test(mutated, tmp)
                n += 1
                if status == 0:
                    problems.append(f"{name} made to fire {mutant}: promtool test rules still passes")
                    continue
                for gname in groups.get(name, {}).get(must_fail, []):
                    if f"name: {gname}," not in out:
                        problems.append(f"{name} made to fire {mutant}: test group {gname!r} did not fail")
    return problems, f"{n} mutants, each caught"


# --- PromQL names ----------------------------------------------------------------------------

IDENT = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
            "offset", "bool", "inf", "nan", "atan2"}


def fill_grafana_vars(expr):
    def sub(m):
        var = m.group(1) or m.group(2)
        if var not in GRAFANA_VARS:
            raise ValueError(f"unknown Grafana variable ${var} in {expr!r}")
        return GRAFANA_VARS[var]
    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", sub, expr)


def promql_uses(expr):
    """(metric selectors [(name, [(label, op, value)])], grouping labels) of a PromQL expression.

    A small lexer, not a parser: strings are set aside first, then selectors ({…} with the name
    before it), ranges ([…]) and grouping clauses (by/without/on/ignoring/group_*(…)) are
    taken out; of what is left, a name followed by "(" is a function and a keyword is a keyword,
    and every other name is a metric. promtool has parsed every expression before this runs.
    """
    strings = []

    def keep(m):
        strings.append(m.group(0)[1:-1])
        return f'"{len(strings) - 1}"'
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', keep, expr)
    text = re.sub(r"#[^\n]*", " ", text)
    selectors, grouping = [], set()

    def selector(m):
        name, body = m.group(1), m.group(2)
        matchers = []
        for lm in re.finditer(rf"({IDENT})\s*(=~|!~|!=|=)\s*\"(\d+)\"", body):
            matchers.append((lm.group(1), lm.group(2), strings[int(lm.group(3))]))
        if not name or name in KEYWORDS:
            raise ValueError(f"a selector without a metric name in {expr!r}: not checkable")
        if name == "__name__" or any(lbl == "__name__" for lbl, _, _ in matchers):
            raise ValueError(f"a __name__ matcher in {expr!r}: not checkable")
        selectors.append((name, matchers))
        return " "
    text = re.sub(rf"({IDENT})?\s*\{{([^}}]*)\}}", selector, text)
    text = re.sub(r"\[[^\]]*\]", " ", text)

    def group(m):
        grouping.update(x.strip() for x in m.group(2).split(",") if x.strip())
        return " "
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", group, text)
    for m in re.finditer(rf"(?<![\w.]){IDENT}", text):
        word = m.group(0)
        if word in KEYWORDS or re.match(r"\s*\(", text[m.end():]):
            continue
        selectors.append((word, []))
    return selectors, grouping


def parse_scrape(path):
    """{series name: {label: set of values}} of an OpenMetrics text, and {family: type}."""
    series, types = {}, {}
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("# TYPE "):
                _, _, family, kind = line.split(" ", 3)
                types[family] = kind
                continue
            if not line or line.startswith("#"):
                continue
            m = re.match(rf"({IDENT})(?:\{{(.*)\}})?\s+\S+", line)
            if not m:
                raise ValueError(f"{path}: cannot read the sample line {line!r}")
            labels = series.setdefault(m.group(1), {})
            for lm in re.finditer(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""):
                labels.setdefault(lm.group(1), set()).add(lm.group(2))
    return series, types


def expressions():
    """(where, PromQL, extra labels that must exist) of the rules and the dashboard."""
    out = []
    for rule in alerts(load_yaml(RULES)):
        used = set()
        for text in rule.get("annotations", {}).values():
            used.update(re.findall(r"\$labels\.(\w+)", str(text)))
        out.append((f"{RULES}: {rule['alert']}", rule["expr"], used))
    with open(DASHBOARD) as f:
        dash = json.load(f)
    for panel in all_panels(dash):
        for target in panel.get("targets") or []:
            used = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")))
            out.append((f"{DASHBOARD}: panel {panel.get('title')!r} {target.get('refId')}",
                        fill_grafana_vars(target["expr"]), used))
    for var in dash.get("templating", {}).get("list", []):
        query = var.get("query")
        if var.get("type") != "query":
            continue
        query = query.get("query") if isinstance(query, dict) else query
        m = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\)\s*", query or "")
        if not m:
            raise ValueError(f"{DASHBOARD}: variable {var.get('name')}: not label_values(SELECTOR, LABEL)")
        out.append((f"{DASHBOARD}: variable {var.get('name')}", m.group(1), {m.group(2)}))
    return out


def check_names(scrape):
    series, types = parse_scrape(scrape)
    known = dict(series)
    known.update(PROMETHEUS_METRICS)
    problems, metrics = [], set()
    exprs = expressions()
    for where, expr, extra in exprs:
        try:
            selectors, grouping = promql_uses(expr)
        except ValueError as e:
            problems.append(f"{where}: {e}")
            continue
        if not selectors:
            problems.append(f"{where}: names no metric")
        labels_here = set(TARGET_LABELS)
        for name, matchers in selectors:
            metrics.add(name)
            if name not in known:
                hint = ""
                family = re.sub(r"_(total|bucket|sum|count)$", "", name)
                if name in types and types[name] == "counter":
                    hint = f" (a counter: Prometheus stores it as {name}_total)"
                elif name in types and types[name] == "histogram":
                    hint = f" (a histogram: use {name}_bucket, _sum or _count)"
                elif family in types:
                    hint = f" ({family} is a {types[family]}, but the daemon exported no {name})"
                problems.append(f"{where}: {name} is not exported by the daemon{hint}")
                continue
            have = known[name]
            labels_here.update(have)
            for label, op, value in matchers:
                if label not in have and label not in TARGET_LABELS:
                    problems.append(f"{where}: {name} has no label {label} (it has {sorted(have)})")
                elif label in ENUMERATED and op == "=" and value not in have[label]:
                    problems.append(f"{where}: {name}{{{label}}} is never {value!r} "
                                    f"(the daemon exports {sorted(have[label])})")
        for label in sorted((grouping | extra) - labels_here):
            problems.append(f"{where}: groups by or shows label {label}, which none of its metrics has")
    return problems, f"{len(exprs)} expressions name {len(metrics)} metrics, all exported"


# --- the dashboard for promtool ----------------------------------------------------------------


def dashboard_rules():
    with open(DASHBOARD) as f:
        dash = json.load(f)
    rules = []
    for panel in all_panels(dash):
        for target in panel.get("targets") or []:
            rules.append({"record": f"dashboard:panel{panel.get('id')}:{target.get('refId')}",
                          "expr": fill_grafana_vars(target["expr"])})
    yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, sys.stdout, sort_keys=False)
    return [], None


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    try:
        if cmd == "structure":
            problems, done = check_structure()
        elif cmd == "mutants":
            problems, done = check_mutants()
        elif cmd == "names":
            problems, done = check_names(*args)
        elif cmd == "dashboard-rules":
            problems, done = dashboard_rules()
        else:
            sys.exit(f"check.py: no command {cmd!r}")
    except (ValueError, KeyError, TypeError, OSError, yaml.YAMLError) as e:
        sys.exit(f"check.py {cmd}: {type(e).__name__}: {e}")
    if problems:
        sys.exit("\n".join(problems))
    if done:
        print(done)


main()
