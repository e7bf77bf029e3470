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

def node_caller(d):
    """An app pod of node mode: it calls the daemon on its node, with no sidecar."""
    return d["spec"]["template"]["metadata"].get("labels", {}).get("fedimds.io/node-caller") == "true"

workloads = [(f, d) for f, d in docs if d["kind"] in ("Deployment", "Job") and not node_caller(d)]
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
        need(config.get("imds", {}).get("passthrough") is True,
             f"{where}: a captured pod's fedimds must pass the rest of IMDS through ([imds] passthrough = true), or the app loses its instance metadata")
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

# Node mode (deploy/kubernetes/node): one daemon per node that pods reach at the node's address
# through a hostPort, never the host network; callers told apart by their own secrets, each a
# file of a mounted Secret; the app pods need no NET_ADMIN and no host network.
NODE_MOUNT = "/var/run/secrets/fedimds-callers"
daemonsets = by_kind.get("DaemonSet", {})
need(len(daemonsets) == 1, f"expected one DaemonSet (node mode), found {sorted(daemonsets)}")
for name, (f, ds) in daemonsets.items():
    where = f"{f}: DaemonSet {name}"
    spec = ds["spec"]["template"]["spec"]
    pod_sc = spec.get("securityContext", {})
    need(spec.get("hostNetwork", False) is False, f"{where}: no hostNetwork (a hostPort reaches it; see the comment)")
    need(spec.get("automountServiceAccountToken") is False, f"{where}: no service account token (fedimds needs no API access)")
    need(pod_sc.get("runAsNonRoot") is True, f"{where}: pod runAsNonRoot must be true")
    fed = [c for c in spec["containers"] if c["name"] == "fedimds"]
    need(len(fed) == 1 and not spec.get("initContainers"), f"{where}: one container, fedimds")
    if not fed:
        continue
    fed = fed[0]
    restricted(f, fed, pod_sc)
    uid = fed.get("securityContext", {}).get("runAsUser")
    need(isinstance(uid, int) and uid != 0, f"{where}: fedimds runAsUser must be a non-zero uid")
    ports = {p["name"]: p for p in fed.get("ports", [])}
    need(set(ports) == {"tokens", "admin"}, f"{where}: ports tokens and admin, got {sorted(ports)}")
    need(ports.get("tokens", {}).get("containerPort") == 8181 and ports.get("tokens", {}).get("hostPort") == 8181,
         f"{where}: the token port is 8181 on the node (hostPort 8181)")
    need("hostPort" not in ports.get("admin", {}), f"{where}: the admin port must not be on the node")
    for probe_kind, path in (("startupProbe", "/readyz"), ("livenessProbe", "/healthz")):
        probe = fed.get(probe_kind, {}).get("httpGet", {})
        need((probe.get("path"), probe.get("port")) == (path, "admin"), f"{where}: {probe_kind} on {path} at the admin port")
    fenv = env_of(fed)
    ref = fenv.get("FEDIMDS_IDENTITY_HEADER", {}).get("valueFrom", {}).get("secretKeyRef")
    need(ref and ref["name"] in secret_names, f"{where}: FEDIMDS_IDENTITY_HEADER from a Secret in the kustomization (allow_remote needs it)")
    mounts = {m["name"]: m for m in fed.get("volumeMounts", [])}
    vols = {v["name"]: v for v in spec.get("volumes", [])}
    secret_mounts = [m for n, m in mounts.items() if "secret" in vols.get(n, {})]
    need(len(secret_mounts) == 1 and secret_mounts[0]["mountPath"] == NODE_MOUNT and "subPath" not in secret_mounts[0],
         f"{where}: the callers' Secret mounted whole at {NODE_MOUNT} (a subPath mount is never updated)")
    need(all(m.get("readOnly") is True for m in mounts.values()), f"{where}: every mount read-only")
    cms = [vols[n]["configMap"]["name"] for n in mounts if "configMap" in vols.get(n, {})]
    need(len(cms) == 1 and cms[0] in by_kind.get("ConfigMap", {}), f"{where}: fedimds must mount its ConfigMap")
    if not cms or cms[0] not in by_kind.get("ConfigMap", {}):
        continue
    config = tomllib.loads(by_kind["ConfigMap"][cms[0]][1]["data"]["fedimds.toml"])
    server = config.get("server", {})
    need((server.get("listen"), server.get("allow_remote")) == ("0.0.0.0:8181", True),
         f"{where}: tokens on 0.0.0.0:8181 with allow_remote (pods call the node's address)")
    need(config.get("admin", {}).get("listen") == "0.0.0.0:8182", f"{where}: admin.listen 0.0.0.0:8182")
    callers = config.get("callers", [])
    need(callers, f"{where}: node mode needs [[callers]] (who may have what)")
    secret_keys = set(by_kind.get("Secret", {}).get(vols[secret_mounts[0]["name"]]["secret"]["secretName"], (None, {}))[1].get("stringData", {})) if secret_mounts else set()
    for c in callers:
        sf = c.get("secret_file", "")
        need(sf.startswith(NODE_MOUNT + "/") and sf[len(NODE_MOUNT) + 1:] in secret_keys,
             f"{where}: caller {c.get('name')}: secret_file must be a key of the mounted Secret, got {sf!r}")
        need(not ({"uid", "gid", "secret"} & set(c)), f"{where}: caller {c.get('name')}: recognised by its secret file only (uids mean nothing across pods)")
        need(c.get("targets") and "*" not in c["targets"], f"{where}: caller {c.get('name')}: grant named targets, not all")

node_apps = [(f, d) for f, d in docs if d["kind"] in ("Deployment", "Job") and node_caller(d)]
need(node_apps, "node mode needs an example caller (a Deployment labelled fedimds.io/node-caller)")
namespaces = by_kind.get("Namespace", {})
policies = by_kind.get("NetworkPolicy", {})
for f, d in node_apps:
    where = f"{f}: {d['kind']} {d['metadata']['name']}"
    spec = d["spec"]["template"]["spec"]
    ns = d["metadata"].get("namespace")
    need(spec.get("hostNetwork", False) is False, f"{where}: no hostNetwork")
    need(namespaces.get(ns, (None, {}))[1].get("metadata", {}).get("labels", {}).get("fedimds.io/caller") == "true",
         f"{where}: its namespace {ns} must be labelled fedimds.io/caller=true (the network policy lets only those in)")
    for c in spec["containers"]:
        restricted(f, c, spec.get("securityContext", {}))
        cenv = env_of(c)
        need(cenv.get("HOST_IP", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "status.hostIP",
             f"{where}: HOST_IP from the downward API (status.hostIP)")
        need(cenv.get("IDENTITY_ENDPOINT", {}).get("value") == "http://$(HOST_IP):8181/msi/token", f"{where}: IDENTITY_ENDPOINT at the node's address")
        ref = cenv.get("IDENTITY_HEADER", {}).get("valueFrom", {}).get("secretKeyRef", {})
        theirs = by_kind.get("Secret", {}).get(ref.get("name"))
        need(theirs is not None and theirs[1]["metadata"].get("namespace") == ns,
             f"{where}: IDENTITY_HEADER from a Secret of its own namespace {ns}")
node_policy = [p for _, p in policies.values() if p["metadata"].get("namespace") == "fedimds-system"]
need(len(node_policy) == 1, "node mode needs one NetworkPolicy in fedimds-system")
for p in node_policy:
    rules = p["spec"].get("ingress", [])
    need(len(rules) == 1 and rules[0].get("ports") == [{"protocol": "TCP", "port": 8181}]
         and rules[0].get("from") == [{"namespaceSelector": {"matchLabels": {"fedimds.io/caller": "true"}}}],
         "the node NetworkPolicy must let in only namespaces labelled fedimds.io/caller=true, on 8181")
if problems:
    sys.exit("\n".join(problems))
