"""deploy/compose/compose.yaml: the three services share the sim's network namespace, publish no
ports, mount what exists, and the app waits for fedimds's admin /readyz. Run from the repository
root."""
import os, sys, yaml
f = "deploy/compose/compose.yaml"
c = yaml.safe_load(open(f))
problems = []
def need(cond, msg):
    if not cond:
        problems.append(f"{f}: {msg}")
s = c.get("services", {})
need(set(s) == {"sim", "fedimds", "app"}, f"services {sorted(s)}")
for name, svc in s.items():
    need("ports" not in svc, f"{name} publishes ports")
for name in ("fedimds", "app"):
    need(s[name].get("network_mode") == "service:sim", f"{name} must share the sim's network namespace")
need(s["sim"]["command"][:2] == ["sim", "--listen"] and s["sim"]["command"][2].startswith("127.0.0.1:"), "sim must listen on loopback")
for name, svc in s.items():
    for v in svc.get("volumes", []):
        src = v.split(":")[0]
        if src.startswith("."):
            need(os.path.isfile(os.path.join(os.path.dirname(f), src)), f"{name}: {src} does not exist")
        else:
            need(src in (c.get("volumes") or {}), f"{name}: volume {src} not declared")
need(s["fedimds"]["command"][:3] == ["serve", "--config", "/etc/fedimds/fedimds.toml"], "fedimds command")
need("IDENTITY_ENDPOINT" in s["app"].get("environment", {}), "app IDENTITY_ENDPOINT")
need("http://127.0.0.1:8182/readyz" in "\n".join(s["app"].get("command", [])), "app must wait for readiness on fedimds's admin listener")
if problems:
    sys.exit("\n".join(problems))
