"""The promises of the Kubernetes pod specs (tests/suites/deploy.sh lists them), and the fedimds
configs they mount. usage: podspecs.py OUT_DIR MANIFEST...

Writes each ConfigMap's fedimds.toml to OUT_DIR/k8s-NAME.toml, for the binary to run; exits
non-zero with every broken promise otherwise. Run from the repository root."""
import os, sys, tomllib, yaml

out, files = sys.argv[1], sys.argv[2:]
docs = []
for f in files:
    for d in yaml.safe_load_all(open(f)):
        if d:
            docs.append((f, d))
by_kind = {}
for f, d in docs:
    by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = (f, d)

problems = []
def need(cond, msg):
    if not cond:
        problems.append(msg)

# Every ConfigMap with a fedimds.toml: written out for the binary to check.
for name, (f, cm) in by_kind.get("ConfigMap", {}).items():
    text = cm.get("data", {}).get("fedimds.toml")
    need(text is not None, f"{f}: ConfigMap {name} has no fedimds.toml")
    if text:
        tomllib.loads(text)
        open(os.path.join(out, f"k8s-{name}.toml"), "w").write(text)

secret_names = set(by_kind.get("Secret", {}))
ADMIN_PORT = 8182

def check_listeners(where, config, admin_on_pod_ip):
    server = config.get("server", {})
    need(server.get("listen") == "127.0.0.1:8181", f"{where}: server.listen must be 127.0.0.1:8181 (the app's endpoints; loopback only), got {server.get('listen')}")
    need("allow_remote" not in server, f"{where}: no server.allow_remote (it makes IMDS-mode callers need the caller secret)")
    admin = config.get("admin", {}).get("listen", "127.0.0.1:8182")
    if admin_on_pod_ip:
        need(admin == f"0.0.0.0:{ADMIN_PORT}", f"{where}: admin.listen must be 0.0.0.0:{ADMIN_PORT} (the kubelet probes at the pod IP), got {admin}")
    else:
        need(admin.startswith("127.0.0.1:"), f"{where}: admin.listen must stay on loopback, got {admin}")

# compose's config: loopback, both listeners (the app shares fedimds's network namespace).
check_listeners("deploy/compose/fedimds.toml", tomllib.load(open("deploy/compose/fedimds.toml", "rb")), admin_on_pod_ip=False)

def restricted(f, c, pod_sc, allow_caps=()):
    sc = c.get("securityContext", {})
    where = f"{f}: container {c['name']}"
    need(sc.get("allowPrivilegeEscalation") is False, f"{where}: allowPrivilegeEscalation must be false")
    need(sc.get("readOnlyRootFilesystem") is True, f"{where}: readOnlyRootFilesystem must be true")
    caps = sc.get("capabilities", {})
    need(caps.get("drop") == ["ALL"], f"{where}: capabilities must drop ALL")
    need(sorted(caps.get("add", [])) == sorted(allow_caps), f"{where}: capabilities added {caps.get('add')}, allowed {list(allow_caps)}")
    seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {})).get("type")
    need(seccomp == "RuntimeDefault", f"{where}: seccomp must be RuntimeDefault")
    res = c.get("resources", {})
    for kind in ("requests", "limits"):
        need({"cpu", "memory"} <= set(res.get(kind, {})), f"{where}: resources.{kind} needs cpu and memory")

def env_of(c):
    return {e["name"]: e for e in c.get("env", [])}

workloads = [(f, d) for f, d in docs if d["kind"] in ("Deployment", "Job")]
need(any(d["kind"] == "Job" for _, d in workloads), "no Job")
need(any(d["kind"] == "Deployment" for _, d in workloads), "no Deployment")
variants = set()
for f, w in workloads:
    tpl = w["spec"]["template"]
    spec = tpl["spec"]
    pod_sc = spec.get("securityContext", {})
    where = f"{f}: {w['kind']} {w['metadata']['name']}"
    need(pod_sc.get("runAsNonRoot") is True, f"{where}: pod runAsNonRoot must be true")
    if w["kind"] == "Job":
        need(spec.get("restartPolicy") in ("Never", "OnFailure"), f"{where}: restartPolicy Never/OnFailure")
    inits = spec.get("initContainers", [])
    sidecars = [c for c in inits if c["name"] == "fedimds"]
    need(len(sidecars) == 1, f"{where}: needs one init container named fedimds")
    if not sidecars:
        continue
    fed = sidecars[0]
    need(fed.get("restartPolicy") == "Always", f"{where}: fedimds must be a native sidecar (restartPolicy: Always)")
    # The one port on the pod IP is the admin listener's; the token port is loopback-only.
    ports = {p.get("name"): p["containerPort"] for p in fed.get("ports", [])}
    need(ports == {"admin": ADMIN_PORT}, f"{where}: fedimds's container ports must be just admin: {ADMIN_PORT}, got {ports}")
    for probe_kind, path in (("startupProbe", "/readyz"), ("livenessProbe", "/healthz")):
        probe = fed.get(probe_kind, {}).get("httpGet", {})
        need(probe.get("path") == path, f"{where}: fedimds needs a {probe_kind} on {path}")
        need(probe.get("port") == "admin", f"{where}: the {probe_kind} must use the named port admin, got {probe.get('port')}")
    restricted(f, fed, pod_sc)
    fsc = fed.get("securityContext", {})
    fed_uid = fsc.get("runAsUser")
    need(isinstance(fed_uid, int) and fed_uid != 0, f"{where}: fedimds runAsUser must be a non-zero uid")
    need(fsc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True, f"{where}: fedimds must run as non-root")
    fenv = env_of(fed)
    secret_ref = fenv.get("FEDIMDS_IDENTITY_HEADER", {}).get("valueFrom", {}).get("secretKeyRef")
    need(secret_ref and secret_ref["name"] in secret_names, f"{where}: fedimds needs FEDIMDS_IDENTITY_HEADER from a Secret in the kustomization")
    mounts = {m["name"]: m for m in fed.get("volumeMounts", [])}
    vols = {v["name"]: v for v in spec.get("volumes", [])}
    cms = [vols[n]["configMap"]["name"] for n in mounts if n in vols and "configMap" in vols[n]]
    need(len(cms) == 1 and cms[0] in by_kind.get("ConfigMap", {}), f"{where}: fedimds must mount its ConfigMap (found {cms})")
    config = tomllib.loads(by_kind["ConfigMap"][cms[0]][1]["data"]["fedimds.toml"]) if cms and cms[0] in by_kind.get("ConfigMap", {}) else {}
    if config:
        check_listeners(f"{where}: ConfigMap {cms[0]}", config, admin_on_pod_ip=True)

    captures = [c for c in inits if c["name"] != "fedimds"]
    labels = tpl["metadata"].get("labels", {})
    kind = config.get("source", {}).get("kind", "imds")
    if captures:
        variants.add("capture")
        cap = captures[0]
        need(len(captures) == 1 and inits.index(cap) < inits.index(fed), f"{where}: the capture init container must run before the sidecar")
        need("restartPolicy" not in cap, f"{where}: the capture container must exit (no restartPolicy)")
        restricted(f, cap, pod_sc, allow_caps=("NET_ADMIN",))
        cenv = env_of(cap)
        need(cenv.get("FEDIMDS_UID", {}).get("value") == str(fed_uid), f"{where}: FEDIMDS_UID must be fedimds's uid {fed_uid}")
        need(cenv.get("FEDIMDS_PORT", {}).get("value") == "8181", f"{where}: FEDIMDS_PORT must be 8181")
    if labels.get("azure.workload.identity/use") == "true":
        variants.add("workload-identity")
        need(kind == "token-file", f"{where}: workload identity needs source kind token-file, got {kind}")
        skipped = tpl["metadata"].get("annotations", {}).get("azure.workload.identity/skip-containers", "").split(";")
        apps = [c["name"] for c in spec["containers"]]
        need(all(a in skipped for a in apps), f"{where}: the webhook must skip the app containers {apps}")
    else:
        need(kind != "token-file", f"{where}: token-file source without the workload identity label")
    if not captures and labels.get("azure.workload.identity/use") != "true":
        variants.add("plain")

    for c in spec["containers"]:
        restricted(f, c, pod_sc)
        csc = c.get("securityContext", {})
        need(csc.get("runAsUser", pod_sc.get("runAsUser")) != fed_uid, f"{where}: app {c['name']} must not share fedimds's uid (the capture would exclude it)")
        if captures:
            continue
        cenv = env_of(c)
        need(cenv.get("IDENTITY_ENDPOINT", {}).get("value") == "http://127.0.0.1:8181/msi/token", f"{where}: app IDENTITY_ENDPOINT")
        need(cenv.get("AZURE_POD_IDENTITY_AUTHORITY_HOST", {}).get("value") == "http://127.0.0.1:8181", f"{where}: app AZURE_POD_IDENTITY_AUTHORITY_HOST")
        ref = cenv.get("IDENTITY_HEADER", {}).get("valueFrom", {}).get("secretKeyRef")
        need(ref == secret_ref, f"{where}: app IDENTITY_HEADER must come from the same Secret key as fedimds's ({secret_ref}), got {ref}")

need(variants == {"plain", "capture", "workload-identity"}, f"variants found: {sorted(variants)}")
if problems:
    sys.exit("\n".join(problems))
