"""Writes the daemon config of tests/suites/conformance.sh to stdout.

It is the config `fedimds sim` prints for itself (the demo world of crates/fedimds/src/demo.rs,
pointed at that simulator), so the demo's ids are written in one place, with what the drivers
need on top: the listen address, a fixed caller secret, no admin listener (its default port
could be taken when the suite runs on the host's loopback), and the aliases the drivers send
for contoso. Fails, naming what is missing, when the printed config no longer has what the
drivers rely on.

usage: daemon_config.py SIM_STDOUT SIM_URL LISTEN SECRET
"""

import json
import sys
import tomllib

# What `fedimds sim` prints before its config (crates/fedimds/src/demo.rs, run_sim).
MARKER = "A daemon config for it:\n"

# The aliases the drivers select contoso by; the same values are in
# tests/conformance/python/conftest.py (CONTOSO_*) and tests/conformance/node/lib.mjs (CONTOSO).
CONTOSO_OBJECT_ID = "0c0c0c0c-0000-4000-8000-0000000c0c01"
CONTOSO_RESOURCE_ID = (
    "/subscriptions/dddddddd-0000-4000-8000-00000000d001/resourceGroups/conformance"
    "/providers/Microsoft.ManagedIdentity/userAssignedIdentities/contoso"
)


def toml_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "[" + ", ".join(json.dumps(v) for v in value) + "]"
    raise SystemExit(f"daemon_config.py: cannot write {value!r} as TOML")


def toml_table(header, table):
    lines = [header]
    for key, value in table.items():
        if isinstance(value, dict):
            raise SystemExit(f"daemon_config.py: nested table {key} under {header}")
        lines.append(f"{key} = {toml_value(value)}")
    return "\n".join(lines)


def dumps(config):
    parts = []
    for name, value in config.items():
        if isinstance(value, dict):
            parts.append(toml_table(f"[{name}]", value))
        elif isinstance(value, list) and all(isinstance(v, dict) for v in value):
            parts.extend(toml_table(f"[[{name}]]", v) for v in value)
        else:
            raise SystemExit(f"daemon_config.py: top-level key {name} is not a table")
    return "\n\n".join(parts) + "\n"


def main():
    sim_stdout, sim_url, listen, secret = sys.argv[1:]
    _, found, printed = open(sim_stdout).read().partition(MARKER)
    if not found:
        sys.exit(f"daemon_config.py: {sim_stdout} has no {MARKER.strip()!r}: not `fedimds sim`'s output")
    config = tomllib.loads(printed)

    problems = []
    for table, key in (("source", "endpoint"), ("cloud", "authority_host")):
        got = config.get(table, {}).get(key)
        if got != sim_url:
            problems.append(f"{table}.{key} is {got!r}, not the simulator's {sim_url}")
    targets = {t.get("name"): t for t in config.get("targets", [])}
    for name in ("litware", "contoso", "unconsented"):
        if name not in targets:
            problems.append(f"no target {name} (the drivers use it)")
    if problems:
        sys.exit("daemon_config.py: the config `fedimds sim` printed:\n  " + "\n  ".join(problems))

    config.setdefault("server", {}).update(listen=listen, identity_header=secret)
    config["admin"] = {"listen": "off"}
    targets["contoso"].update(object_id=CONTOSO_OBJECT_ID, resource_id=CONTOSO_RESOURCE_ID)
    sys.stdout.write(dumps(config))


main()
