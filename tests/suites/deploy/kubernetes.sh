# shellcheck shell=bash
# deploy.sh's Kubernetes checks: kustomizations, schemas, the pod specs' promises.
K8S_VERSION=1.33.0

validate() { "$TARGET_DIR/deploy-venv/bin/kubernetes-validate" --strict --quiet -k "$K8S_VERSION" "$@"; }

check_kubernetes() {
  local listed manifests f want
  listed=$("$PY" tests/suites/deploy/kustomizations.py) || die "the kustomizations are broken"
  mapfile -t manifests <<<"$listed"
  [ "${#manifests[@]}" -ge 8 ] || die "expected at least 8 Kubernetes manifests, found ${#manifests[@]}"
  say "ok: kustomizations list ${#manifests[@]} manifests, all present, none orphaned"

  validate "${manifests[@]}" || die "kubernetes-validate rejected a manifest"
  # Negative control: a misspelt field must be caught.
  sed 's/readOnlyRootFilesystem:/readOnlyRootFileSystem:/' deploy/kubernetes/deployment.yaml >"$WORK/bad.yaml"
  if validate "$WORK/bad.yaml" >/dev/null 2>&1; then
    die "kubernetes-validate accepted a misspelt field: the schema check is not working"
  fi
  say "ok: manifests valid against the Kubernetes $K8S_VERSION schemas (strict)"

  "$PY" tests/suites/deploy/podspecs.py "$WORK/configs" "${manifests[@]}" \
    || die "the pod specs break the promises above"
  # Negative control: the old layout (tokens on 0.0.0.0:8181 with allow_remote, probed there, no
  # admin listener) must be refused on each count.
  mkdir -p "$WORK/old" "$WORK/old-configs"
  cp -r deploy/kubernetes "$WORK/old/"
  for f in "$WORK"/old/kubernetes/common/configmap.yaml "$WORK"/old/kubernetes/workload-identity/configmap.yaml; do
    sed -i -e 's/^    listen = "127.0.0.1:8181"$/    listen = "0.0.0.0:8181"\n    allow_remote = true/' \
      -e '/^    \[admin\]$/d' -e '/^    listen = "0.0.0.0:8182"$/d' "$f"
  done
  for f in "${manifests[@]}"; do
    sed -i -e 's/port: admin$/port: fedimds/' -e 's/- name: admin$/- name: fedimds/' \
      -e 's/containerPort: 8182$/containerPort: 8181/' "$WORK/old/${f#deploy/}"
  done
  if "$PY" tests/suites/deploy/podspecs.py "$WORK/old-configs" "${manifests[@]/#deploy/$WORK/old}" 2>"$WORK/old.err"; then
    die "the old layout (allow_remote, probes on the token port) passed the pod-spec checks"
  fi
  for want in "no server.allow_remote" "server.listen must be 127.0.0.1:8181" "admin.listen must be 0.0.0.0:8182" \
              "container ports must be just admin" "startupProbe must use the named port admin" \
              "livenessProbe must use the named port admin"; do
    grep -qF "$want" "$WORK/old.err" || die "the old layout was not refused for: $want"
  done
  # Negative control for node mode: the host network, a subPath secret, and a grant of all.
  mkdir -p "$WORK/node-bad/kubernetes" "$WORK/node-bad-configs"
  cp -r deploy/kubernetes/. "$WORK/node-bad/kubernetes/"
  sed -i -e 's/hostNetwork: false/hostNetwork: true/' \
    -e 's#mountPath: /var/run/secrets/fedimds-callers#mountPath: /var/run/secrets/fedimds-callers\n              subPath: team-a#' \
    "$WORK/node-bad/kubernetes/node/daemonset.yaml"
  sed -i 's/targets = \["team-a-litware"\]/targets = ["*"]/' "$WORK/node-bad/kubernetes/node/configmap.yaml"
  if "$PY" tests/suites/deploy/podspecs.py "$WORK/node-bad-configs" "${manifests[@]/#deploy/$WORK/node-bad}" 2>"$WORK/node-bad.err"; then
    die "a node DaemonSet on the host network passed the pod-spec checks"
  fi
  for want in "no hostNetwork" "(a subPath mount is never updated)" "grant named targets, not all"; do
    grep -qF "$want" "$WORK/node-bad.err" || die "the bad node layout was not refused for: $want"
  done
  say "ok: pod specs: native sidecar, probes on the admin port, tokens on loopback, restricted, secret shared, capture, workload identity"
  say "ok: node mode: a DaemonSet on a hostPort (no host network), callers by their Secret files, only their namespaces let in"
}
