#!/usr/bin/env bash
# Checks everything under deploy/, the Dockerfile and README's "## Deploy" section, offline:
#
# - Kubernetes: every kustomization lists files that exist and every manifest is listed; each
#   manifest validates (strict) against the Kubernetes 1.33 schemas (kubernetes-validate, which
#   bundles them); the pod specs keep the promises (native sidecar, startupProbe on /readyz and
#   livenessProbe on /healthz at the admin port, the only container port, requests and limits,
#   restricted security context, the Secret shared as IDENTITY_HEADER, the endpoints set,
#   capture with NET_ADMIN only, workload identity with token-file).
# - Every fedimds config shipped (ConfigMaps, compose) keeps the token listener on loopback with
#   no allow_remote (which would make IMDS-mode callers need the caller secret) and the admin
#   listener where its probes reach it; each is run by the real binary in a namespace with a
#   "pod IP": the admin port answers there, the token port does not, and a secret-less IMDS
#   request is not refused for its missing secret. The compose set-up (sim + fedimds with its
#   secret file) serves a target-tenant token in both modes.
# - compose.yaml parses and its services share one network namespace, publish nothing.
# - systemd: `systemd-analyze verify` is silent, `systemd-analyze security` exposure <= 2.0.
# - Dockerfile: final stage distroless/scratch, numeric non-root USER, no RUN, no EXPOSE.
# - README "## Deploy": each fenced snippet is marked <!-- from: FILE --> and is verbatim in FILE.
#
# Each check has a negative control where a silent pass would be possible.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD

say() { echo "deploy: $*"; }
die() { echo "deploy: FAIL: $*" >&2; exit 1; }

venv=$root/target/deploy-venv
if ! "$venv/bin/python" -c 'import yaml, kubernetes_validate' 2>/dev/null; then
  say "installing kubernetes-validate into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check kubernetes-validate==1.37.0 PyYAML==6.0.2
fi
py=$venv/bin/python
K8S_VERSION=1.33.0

work=$(mktemp -d)
pids=()
cleanup() {
  local rc=$?
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "$rc" != 0 ]; then
    for log in "$work"/*.log; do [ -e "$log" ] && { echo "--- $log"; tail -n 40 "$log"; }; done
  fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- Kubernetes: kustomizations, schemas, promises -----------------------------------------
mapfile -t manifests < <("$py" - <<'EOF'
import os, sys, yaml
base = "deploy/kubernetes"
listed, problems = set(), []
for dirpath, _, files in os.walk(base):
    if "kustomization.yaml" not in files:
        continue
    k = yaml.safe_load(open(os.path.join(dirpath, "kustomization.yaml")))
    if k.get("kind") != "Kustomization":
        problems.append(f"{dirpath}/kustomization.yaml: not a Kustomization")
    for r in k.get("resources", []):
        p = os.path.normpath(os.path.join(dirpath, r))
        if os.path.isdir(p):
            if not os.path.isfile(os.path.join(p, "kustomization.yaml")):
                problems.append(f"{dirpath}: resource {r} is a directory without kustomization.yaml")
        elif os.path.isfile(p):
            if not p.startswith(dirpath.rstrip("/") + "/"):
                problems.append(f"{dirpath}: {r} is a file outside the kustomization (kustomize refuses it)")
            listed.add(p)
        else:
            problems.append(f"{dirpath}: resource {r} does not exist")
for dirpath, _, files in os.walk(base):
    for f in files:
        p = os.path.normpath(os.path.join(dirpath, f))
        if f.endswith((".yaml", ".yml")) and f != "kustomization.yaml" and p not in listed:
            problems.append(f"{p} is in no kustomization")
if problems:
    sys.exit("\n".join(problems))
print("\n".join(sorted(listed)))
EOF
)
[ "${#manifests[@]}" -ge 8 ] || die "expected at least 8 Kubernetes manifests, found ${#manifests[@]}"
say "ok: kustomizations list ${#manifests[@]} manifests, all present, none orphaned"

"$venv/bin/kubernetes-validate" --strict --quiet -k "$K8S_VERSION" "${manifests[@]}" \
  || die "kubernetes-validate rejected a manifest"
# Negative control: a misspelt field must be caught.
sed 's/readOnlyRootFilesystem:/readOnlyRootFileSystem:/' deploy/kubernetes/deployment.yaml >"$work/bad.yaml"
if "$venv/bin/kubernetes-validate" --strict --quiet -k "$K8S_VERSION" "$work/bad.yaml" >/dev/null 2>&1; then
  die "kubernetes-validate accepted a misspelt field: the schema check is not working"
fi
say "ok: manifests valid against the Kubernetes $K8S_VERSION schemas (strict)"

mkdir -p "$work/configs"
cat >"$work/podspecs.py" <<'EOF'
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
EOF
"$py" "$work/podspecs.py" "$work/configs" "${manifests[@]}"
# Negative control: the old layout (tokens on 0.0.0.0:8181 with allow_remote, probed there, no
# admin listener) must be refused on each count.
mkdir -p "$work/old" "$work/old-configs"
cp -r deploy/kubernetes "$work/old/"
for f in "$work"/old/kubernetes/common/configmap.yaml "$work"/old/kubernetes/workload-identity/configmap.yaml; do
  sed -i -e 's/^    listen = "127.0.0.1:8181"$/    listen = "0.0.0.0:8181"\n    allow_remote = true/' \
    -e '/^    \[admin\]$/d' -e '/^    listen = "0.0.0.0:8182"$/d' "$f"
done
for f in "${manifests[@]}"; do
  sed -i -e 's/port: admin$/port: fedimds/' -e 's/- name: admin$/- name: fedimds/' \
    -e 's/containerPort: 8182$/containerPort: 8181/' "$work/old/${f#deploy/}"
done
if "$py" "$work/podspecs.py" "$work/old-configs" "${manifests[@]/#deploy/$work/old}" 2>"$work/old.err"; then
  die "the old layout (allow_remote, probes on the token port) passed the pod-spec checks"
fi
for want in "no server.allow_remote" "server.listen must be 127.0.0.1:8181" "admin.listen must be 0.0.0.0:8182" \
            "container ports must be just admin" "startupProbe must use the named port admin" \
            "livenessProbe must use the named port admin"; do
  grep -qF "$want" "$work/old.err" || die "the old layout was not refused for: $want"
done
say "ok: pod specs: native sidecar, probes on the admin port, tokens on loopback, restricted, secret shared, capture, workload identity"

# --- compose -------------------------------------------------------------------------------
"$py" - <<'EOF'
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
EOF
say "ok: compose.yaml parses; one network namespace, nothing published, volumes exist"

# --- every shipped config, run by the real binary -----------------------------------------
cargo build --release --locked -q -p fedimds
bin=$root/target/release/fedimds
cp deploy/compose/fedimds.toml "$work/configs/compose.toml"
echo 'listen = [' >"$work/configs/negative-control.toml"
# Each config in its own network namespace (nothing listens on the host), which has a "pod IP"
# (10.89.0.2 on a dummy interface) besides loopback. fedimds must start and answer /healthz on
# 127.0.0.1:8181; an IMDS-mode request without the caller secret must get the dialect's answer
# (400 for the missing api-version), not allow_remote's 401; the admin listener must answer
# /healthz and /metrics (OpenMetrics, no token endpoints) at ADMIN (the pod IP for Kubernetes,
# loopback for compose), and the token port must not be reachable at the pod IP. The negative
# control must not start.
run_config() {
  local config=$1 admin=$2
  unshare --net --mount --propagation private bash -c '
    set -euo pipefail
    ip link set lo up
    if ip link add pod0 type dummy 2>/dev/null; then
      ip link set pod0 up; ip addr add 10.89.0.2/32 dev pod0
    else
      ip addr add 10.89.0.2/32 dev lo
    fi
    mount -t tmpfs -o mode=0755 tmpfs /run   # identity_header_file may point under /run
    mkdir -m 0700 /run/fedimds
    FEDIMDS_IDENTITY_HEADER=deploy-suite-caller-secret-0123456789 "$1" serve --config "$2" >"$3" 2>&1 &
    pid=$!
    trap "kill $pid 2>/dev/null; wait $pid 2>/dev/null || true" EXIT
    up=
    for _ in $(seq 1 100); do
      if curl -s -o /dev/null --max-time 1 http://127.0.0.1:8181/healthz; then up=1; break; fi
      kill -0 $pid 2>/dev/null || exit 1
      sleep 0.1
    done
    [ -n "$up" ] || exit 1
    log=$3
    fail() { echo "$*" >>"$log"; echo "$*" >&2; exit 2; }
    code=$(curl -s -o /dev/null -w "%{http_code}" --max-time 5 -H "Metadata: true"       http://127.0.0.1:8181/metadata/identity/oauth2/token)
    [ "$code" = 400 ] || fail "secret-less IMDS request on 127.0.0.1:8181: HTTP $code, expected 400 (401 = allow_remote)"
    [ "$(curl -s -o /dev/null -w "%{http_code}" --max-time 2 "http://$4/healthz")" = 200 ]       || fail "admin /healthz not answering at $4"
    metrics=$(curl -fsS --max-time 2 "http://$4/metrics") || fail "admin /metrics not answering at $4"
    grep -q "^fedimds_build_info" <<<"$metrics" || fail "admin /metrics at $4 is not fedimds metrics"
    code=$(curl -s -o /dev/null -w "%{http_code}" --max-time 2 -H "Metadata: true"       "http://$4/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://graph.microsoft.com")
    [ "$code" = 404 ] || fail "the admin listener at $4 answers a token request with HTTP $code, expected 404"
    if curl -s -o /dev/null --max-time 2 http://10.89.0.2:8181/healthz; then
      fail "the token port answers at the pod IP 10.89.0.2:8181"
    fi
  ' bash "$bin" "$config" "$work/$(basename "$config" .toml).log" "$admin"
}
for config in "$work"/configs/*.toml; do
  name=$(basename "$config")
  case "$name" in
    negative-control.toml)
      if run_config "$config" 127.0.0.1:8182 2>/dev/null; then die "fedimds started on a broken config: the config check is not working"; fi
      continue ;;
    k8s-*) admin=10.89.0.2:8182 ;;
    *) admin=127.0.0.1:8182 ;;
  esac
  run_config "$config" "$admin" || die "fedimds does not serve as deployed with $name (see its log)"
  say "ok: fedimds serves with $name: tokens on loopback only, admin at $admin"
done

# The compose set-up, minus docker: sim and fedimds in one network namespace, the secret file
# under /run/fedimds, the app's two requests; the token must be the demo's target tenant's.
unshare --net --mount --propagation private bash -c '
  set -euo pipefail
  ip link set lo up
  mount -t tmpfs -o mode=0755 tmpfs /run
  mkdir -m 0700 /run/fedimds
  "$1" sim --listen 127.0.0.1:8282 >"$2/compose-sim.log" 2>&1 & sim=$!
  "$1" serve --config deploy/compose/fedimds.toml >"$2/compose-fedimds.log" 2>&1 & fed=$!
  trap "kill $sim $fed 2>/dev/null; wait" EXIT
  # As the app does: readiness on the admin listener (the default, 127.0.0.1:8182).
  for _ in $(seq 1 150); do
    if curl -fs -o /dev/null --max-time 1 http://127.0.0.1:8182/readyz; then break; fi
    kill -0 $fed; sleep 0.1
  done
  [ "$(stat -c %a /run/fedimds/identity-header)" = 600 ] || { echo "secret file not 0600" >&2; exit 1; }
  header=$(cat /run/fedimds/identity-header)
  curl -fsS -H "X-IDENTITY-HEADER: $header" \
    "http://127.0.0.1:8181/msi/token?api-version=2019-08-01&resource=https://graph.microsoft.com" \
    | "$3" tests/capture/jwt_claims.py access_token tid > "$2/compose-claims"
  curl -fsS -H "Metadata: true" \
    "http://127.0.0.1:8181/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://graph.microsoft.com" \
    | "$3" tests/capture/jwt_claims.py access_token tid >> "$2/compose-claims"
' bash "$bin" "$work" "$py" || die "the compose set-up does not serve tokens"
[ "$(cat "$work/compose-claims")" = "$(printf 'tid=22222222-2222-4222-8222-222222222222\ntid=22222222-2222-4222-8222-222222222222')" ] \
  || die "compose set-up served tokens for: $(tr '\n' ' ' <"$work/compose-claims")"
say "ok: the compose set-up serves target-tenant tokens (App Service mode with the secret file, IMDS mode)"

# --- systemd ---------------------------------------------------------------------------------
units=(deploy/systemd/*.service)
for key in DynamicUser=yes ProtectSystem=strict NoNewPrivileges=yes 'CapabilityBoundingSet=$' \
           RestrictAddressFamilies= StateDirectory= RuntimeDirectory=; do
  grep -q "^$key" deploy/systemd/fedimds.service || die "fedimds.service lacks $key"
done
grep -q '^ExecStart=/usr/local/lib/fedimds/capture-imds.sh$' deploy/systemd/fedimds-capture.service \
  || die "fedimds-capture.service must run the repo's capture script"
# The ExecStart paths must exist for verify: a private /usr/local holding the real files.
verify() {
  unshare --mount --propagation private sh -c '
    mount -t tmpfs tmpfs /usr/local
    install -D -m 0755 "$1" /usr/local/bin/fedimds
    install -D -m 0755 deploy/capture/capture-imds.sh /usr/local/lib/fedimds/capture-imds.sh
    shift
    systemd-analyze verify "$@" 2>&1
    systemd-analyze security --offline=yes --threshold=20 deploy/systemd/fedimds.service >/dev/null 2>&1 \
      || echo "exposure above 2.0: $(systemd-analyze security --offline=yes deploy/systemd/fedimds.service 2>&1 | tail -n 1)"
  ' sh "$bin" "$@"
}
out=$(verify "${units[@]}")
[ -z "$out" ] || die "systemd-analyze: $out"
# Negative control: verify warns about a broken directive (and exits 0, hence the output check).
mkdir -p "$work/units"
sed 's/^ProtectSystem=strict/ProtectSystem=bogus/' deploy/systemd/fedimds.service >"$work/units/fedimds.service"
[ -n "$(verify "$work/units/fedimds.service")" ] || die "systemd-analyze verify missed a broken directive"
say "ok: systemd units verify cleanly; fedimds.service exposure <= 2.0"

# --- Dockerfile ------------------------------------------------------------------------------
"$py" - <<'EOF'
import re, sys
lines = [l for l in open("Dockerfile").read().replace("\\\n", " ").splitlines() if l.strip() and not l.lstrip().startswith("#")]
stages, cur = [], None
for l in lines:
    word = l.split()[0].upper()
    if word == "FROM":
        cur = {"from": l, "lines": []}
        stages.append(cur)
    elif cur is not None:
        cur["lines"].append(l)
problems = []
def need(cond, msg):
    if not cond:
        problems.append("Dockerfile: " + msg)
final = stages[-1]
need(re.search(r"gcr\.io/distroless/\S+:nonroot|FROM\s+scratch", final["from"]), "the final stage must be distroless (nonroot) or scratch")
words = [l.split()[0].upper() for l in final["lines"]]
need("RUN" not in words, "no RUN in the final stage (no shell there)")
need("EXPOSE" not in words, "the final stage exposes nothing")
users = [l.split()[1] for l in final["lines"] if l.split()[0].upper() == "USER"]
need(users and re.fullmatch(r"[1-9][0-9]*(:[1-9][0-9]*)?", users[-1]), f"the final stage needs a numeric non-root USER, got {users}")
entry = [l for l in final["lines"] if l.split()[0].upper() == "ENTRYPOINT"]
need(entry and entry[-1].split(None, 1)[1].startswith("["), "ENTRYPOINT in exec form")
need(any("COPY --from=build" in l and "fedimds" in l for l in final["lines"]), "the final stage copies the built binary")
need(any("AS capture" in s["from"] for s in stages), "a `capture` stage (the init container image)")
need(any("--locked" in l for s in stages for l in s["lines"]), "cargo build --locked")
# What COPY takes from the context must survive .dockerignore.
ignore = open(".dockerignore").read()
for s in stages:
    for l in s["lines"]:
        parts = l.split()
        if parts[0].upper() == "COPY" and not any(p.startswith("--from") for p in parts):
            for src in [p for p in parts[1:-1] if not p.startswith("--")]:
                need("!" + src.rstrip("/") in ignore or "!" + src in ignore, f".dockerignore drops {src}")
if problems:
    sys.exit("\n".join(problems))
EOF
say "ok: Dockerfile: distroless final stage, numeric non-root user, no shell, nothing exposed"

# --- README's Deploy section -------------------------------------------------------------------
"$py" - <<'EOF'
import re, sys
readme = open("README.md").read()
m = re.search(r"^## Deploy\n(.*?)(?=^## )", readme, re.S | re.M)
if not m:
    sys.exit("README.md has no '## Deploy' section")
section = m.group(1)
problems, n = [], 0
for block in re.finditer(r"(?:<!-- from: (\S+) -->\n)?```[^\n]*\n(.*?)^```", section, re.S | re.M):
    path, body = block.group(1), block.group(2)
    first = body.splitlines()[0] if body else ""
    if not path:
        problems.append(f"a snippet has no <!-- from: FILE --> marker: {first!r}")
        continue
    try:
        text = open(path).read()
    except OSError:
        problems.append(f"{path} (marked on {first!r}) does not exist")
        continue
    # Commands quoted in a file's comments count with the comment marker taken off.
    decommented = re.sub(r"^[ \t]*#[ \t]*", "", text, flags=re.M)
    if body not in text and body not in decommented:
        problems.append(f"the snippet starting {first!r} is not verbatim in {path}")
    n += 1
if n < 6:
    problems.append(f"only {n} checked snippets in '## Deploy'")
for needle in ("docker buildx build --platform linux/amd64,linux/arm64", "deploy/capture/capture-imds.sh"):
    if needle not in section:
        problems.append(f"'## Deploy' does not mention {needle}")
if problems:
    sys.exit("README.md: " + "\n".join(problems))
print(f"deploy: ok: README '## Deploy': {n} snippets, each verbatim in its file")
EOF
say "all passed"
