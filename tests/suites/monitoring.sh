#!/usr/bin/env bash
# Checks deploy/monitoring/ (issue 15): the alert rules, their PrometheusRule and the Grafana
# dashboard, offline.
#
# - rules.yaml passes `promtool check rules`, and rules.test.yaml's cases pass `promtool test
#   rules`: per alert, one test group whose synthetic series fire it and one that must stay
#   silent (check.py structure holds every alert to both); each case can fail: with an alert
#   made to always fire its silent groups fail, made to never fire its firing groups fail
#   (check.py mutants). Every alert has summary, description, a one-line runbook, a severity.
# - prometheusrule.yaml is what render-prometheusrule.sh makes of rules.yaml, byte for byte, and
#   is a PrometheusRule (monitoring.coreos.com/v1) whose spec.groups are rules.yaml's groups
#   (no CRD schema is available offline, so its structure is checked here, not in deploy.sh).
# - grafana-dashboard.json is JSON with a Prometheus datasource input and unique panel ids, and
#   every expression in it parses (`promtool check rules` on them as recording rules).
# - Every metric the rules and the dashboard name is one the daemon exports, with the labels
#   they use: the release daemon runs against `fedimds sim` in a network namespace, serves one
#   token and refuses one (target unconsented: its app has no consent, 400), and its /metrics
#   is what check.py names compares against (counter _total, histogram _bucket/_sum/_count).
#   A renamed metric in that scrape must fail the check.
set -euo pipefail
# shellcheck source=tests/suites/lib.sh
source "$(dirname "$0")/lib.sh"
suite_init monitoring
need_root "a network namespace for the daemon"
need_tools curl ip=iproute2 unshare=util-linux
if ! command -v promtool >/dev/null; then
  # Debian's prometheus package ships promtool; its recommends (exporters) are not needed.
  say "apt-get install --no-install-recommends prometheus (for promtool)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
command -v promtool >/dev/null || die "no promtool after installing prometheus"
make_venv "$TARGET_DIR/monitoring-venv" PyYAML==6.0.2
PY=$TARGET_DIR/monitoring-venv/bin/python
CHECK=tests/suites/monitoring/check.py
MON=deploy/monitoring
make_work
build_fedimds

# check.py on a copy of deploy/monitoring/ broken by the sed expression given: must fail and say WANT.
must_refuse() {
  local what=$1 want=$2 cmd=$3 file=$4 edit=$5 err
  rm -rf "$WORK/broken" && cp -r "$MON" "$WORK/broken"
  sed -i -e "$edit" "$WORK/broken/$file"
  cmp -s "$MON/$file" "$WORK/broken/$file" && die "negative control '$what': the edit changed nothing"
  if err=$(MONITORING_DIR=$WORK/broken "$PY" "$CHECK" "$cmd" 2>&1); then
    die "check.py $cmd accepted $what"
  fi
  grep -qF -- "$want" <<<"$err" || die "check.py $cmd refused $what, but not for: $want (it said: $err)"
}

# --- the rules ---------------------------------------------------------------------------------
promtool check rules "$MON/rules.yaml" >"$WORK/check.log" 2>&1 || { cat "$WORK/check.log"; die "promtool check rules rejected rules.yaml"; }
cp "$MON/rules.yaml" "$WORK/bad-rules.yaml"
sed -i 's/increase(fedimds_audit_failures_total\[5m\])/increase(fedimds_audit_failures_total)/' "$WORK/bad-rules.yaml"
if promtool check rules "$WORK/bad-rules.yaml" >/dev/null 2>&1; then
  die "promtool check rules accepted a range function without its range: the check is not working"
fi
say "ok: promtool check rules (and it refuses a broken expression)"

(cd "$MON" && promtool test rules rules.test.yaml) >"$WORK/test.log" 2>&1 \
  || { cat "$WORK/test.log"; die "promtool test rules failed"; }
say "ok: promtool test rules: $(grep -c '^  - name:' "$MON/rules.test.yaml") test groups pass"

"$PY" "$CHECK" structure >"$WORK/structure.out" || die "deploy/monitoring breaks the promises above"
say "ok: structure: $(cat "$WORK/structure.out")"
must_refuse "an alert without a silent case" "no case expects FedimdsAuditFailures silent" structure \
  rules.test.yaml 's/alertname: FedimdsAuditFailures$/alertname: FedimdsRestarted/'
must_refuse "an alert without a runbook" "FedimdsDown: no runbook annotation" structure \
  rules.yaml '/^          runbook: "Check that the process/d'
must_refuse "a PrometheusRule whose groups differ" "spec.groups differ" structure \
  prometheusrule.yaml 's/severity: critical/severity: warning/'
must_refuse "a dashboard with a repeated panel id" "panel ids are missing or not unique" structure \
  grafana-dashboard.json 's/"id": 2,/"id": 1,/'
say "ok: structure's negative controls refused"

"$PY" "$CHECK" mutants >"$WORK/mutants.out" || die "a rule test case cannot fail"
say "ok: mutants: $(cat "$WORK/mutants.out")"

# --- the PrometheusRule -------------------------------------------------------------------------
"$MON/render-prometheusrule.sh" >"$WORK/prometheusrule.yaml" || die "render-prometheusrule.sh failed"
diff -u "$MON/prometheusrule.yaml" "$WORK/prometheusrule.yaml" \
  || die "deploy/monitoring/prometheusrule.yaml is not what render-prometheusrule.sh makes of rules.yaml: run it"
sed 's/> 0.1$/> 0.2/' "$MON/rules.yaml" >"$WORK/rules-edited.yaml"
mkdir -p "$WORK/render" && cp "$MON/render-prometheusrule.sh" "$WORK/render/" && cp "$WORK/rules-edited.yaml" "$WORK/render/rules.yaml"
if "$WORK/render/render-prometheusrule.sh" | cmp -s - "$MON/prometheusrule.yaml"; then
  die "an edited rules.yaml renders the committed PrometheusRule: the comparison is not working"
fi
say "ok: prometheusrule.yaml is rendered from rules.yaml (and an edit shows)"

# --- the dashboard ------------------------------------------------------------------------------
"$PY" "$CHECK" dashboard-rules >"$WORK/dashboard-rules.yaml" || die "cannot read the dashboard's expressions"
promtool check rules "$WORK/dashboard-rules.yaml" >"$WORK/dashboard.log" 2>&1 \
  || { cat "$WORK/dashboard.log"; die "a dashboard expression does not parse"; }
say "ok: the dashboard's $(grep -c 'record:' "$WORK/dashboard-rules.yaml") expressions parse"

# --- the names, against the real daemon -----------------------------------------------------------
# `fedimds sim` prints the daemon config for itself once it listens, its last line blank (as
# tests/suites/conformance.sh reads it).
sim_printed_config() {
  awk '/^A daemon config for it:$/ { found = 1 } found { n++; last = $0 } END { exit !(n > 3 && last == "") }' "$1"
}
# In a fresh namespace (in_netns): the simulator, the daemon on the config it prints (tokens on
# 127.0.0.1:8181, admin on its default 127.0.0.1:8182), a served and a refused request, then
# /metrics into DIR/metrics.txt.
scrape_daemon() {
  local bin=$1 dir=$2 sim daemon code url=http://127.0.0.1:8181
  ip link set lo up
  "$bin" sim --listen 127.0.0.1:8282 >"$dir/sim.out" 2>"$dir/sim.log" &
  PIDS+=($!)
  sim=$!
  wait_for "the simulator's printed config" "$sim" sim_printed_config "$dir/sim.out"
  sed -n '/^A daemon config for it:$/,$p' "$dir/sim.out" | tail -n +2 >"$dir/daemon.toml"
  grep -q '^\[admin\]' "$dir/daemon.toml" && die "the simulator's config sets [admin]: the suite assumes the default"
  "$bin" serve --config "$dir/daemon.toml" >/dev/null 2>"$dir/daemon.log" &
  PIDS+=($!)
  daemon=$!
  wait_for "the daemon" "$daemon" answers_ok http://127.0.0.1:8182/readyz
  code=$(curl -sS -o /dev/null -w '%{http_code}' -H 'Metadata: true' \
    "$url/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://graph.microsoft.com")
  [ "$code" = 200 ] || die "the good token request got $code"
  code=$(curl -sS -o /dev/null -w '%{http_code}' -H 'Metadata: true' \
    "$url/targets/unconsented/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://graph.microsoft.com")
  [ "$code" = 400 ] || die "the request for unconsented got $code, not 400"
  curl -fsS --max-time 5 http://127.0.0.1:8182/metrics >"$dir/metrics.txt" || die "cannot scrape /metrics"
}
in_netns scrape_daemon "$FEDIMDS" "$WORK" || die "could not run the daemon and scrape it"
for want in 'fedimds_requests_total{dialect="imds",target="litware",status="200"} 1' \
            'fedimds_requests_total{dialect="imds",target="unconsented",status="400"} 1' \
            '# EOF'; do
  grep -qxF "$want" "$WORK/metrics.txt" || die "the scrape lacks: $want"
done
say "ok: the daemon served one token and refused one (400); /metrics scraped ($(grep -vc '^#' "$WORK/metrics.txt") samples)"

"$PY" "$CHECK" names "$WORK/metrics.txt" >"$WORK/names.out" \
  || die "the rules or the dashboard use a metric or label the daemon does not export"
say "ok: names: $(cat "$WORK/names.out")"
# Negative controls: a metric renamed in the scrape, one the rules use and one only the dashboard
# uses, must each be named.
for rename in fedimds_audit_failures_total:fedimds_audit_errors_total:"FedimdsAuditFailures" \
              fedimds_cache_bytes:fedimds_cache_size_bytes:"panel 'Cache bytes'"; do
  IFS=: read -r from to where <<<"$rename"
  sed "s/^$from\b/$to/; s/^# TYPE ${from%_total} /# TYPE ${to%_total} /" "$WORK/metrics.txt" >"$WORK/renamed.txt"
  cmp -s "$WORK/metrics.txt" "$WORK/renamed.txt" && die "negative control: $from is not in the scrape"
  if "$PY" "$CHECK" names "$WORK/renamed.txt" >"$WORK/renamed.err" 2>&1; then
    die "check.py names accepted a scrape where $from is $to"
  fi
  grep -F "$where" "$WORK/renamed.err" | grep -qF "$from is not exported" \
    || die "renaming $from was not caught at $where: $(cat "$WORK/renamed.err")"
done
say "ok: a metric renamed in the daemon's output is caught (in the rules and in the dashboard)"
say "all passed in ${SECONDS}s"
