#!/usr/bin/env bash
# Checks everything under deploy/ (but deploy/monitoring/: tests/suites/monitoring.sh), the
# Dockerfile and README's "## Deploy" section, offline:
#
# - Kubernetes: every kustomization lists files that exist and every manifest is listed; each
#   manifest validates (strict) against the Kubernetes 1.33 schemas (kubernetes-validate, which
#   bundles them); the pod specs keep the promises (native sidecar, startupProbe on /readyz and
#   livenessProbe on /healthz at the admin port, the only container port, requests and limits,
#   restricted security context, the Secret shared as IDENTITY_HEADER, the endpoints set,
#   capture with NET_ADMIN only, workload identity with token-file).
# - compose.yaml parses and its services share one network namespace, publish nothing; the
#   compose set-up (sim + fedimds with its secret file) serves a target-tenant token in both
#   modes.
# - Every fedimds config shipped (ConfigMaps, compose) keeps the token listener on loopback with
#   no allow_remote (which would make IMDS-mode callers need the caller secret) and the admin
#   listener where its probes reach it; each is run by the real binary in a namespace with a
#   "pod IP": the admin port answers there, the token port does not, and a secret-less IMDS
#   request is not refused for its missing secret.
# - systemd: `systemd-analyze verify` is silent, `systemd-analyze security` exposure <= 2.0.
# - Dockerfile: final stage distroless/scratch, numeric non-root USER, no RUN, no EXPOSE.
# - README "## Deploy": each fenced snippet is marked <!-- from: FILE --> and is verbatim in FILE.
#
# One file per group in tests/suites/deploy/ (NAME.sh, with its Python checks beside it); each
# defines check_NAME, run below in order. Each check has a negative control where a silent pass
# would be possible.
set -euo pipefail
# shellcheck source=tests/suites/lib.sh source-path=SCRIPTDIR/../..
source "$(dirname "$0")/lib.sh"
suite_init deploy
need_root "network and mount namespaces"
need_tools curl ip=iproute2 unshare=util-linux systemd-analyze=systemd

source tests/suites/deploy/kubernetes.sh
source tests/suites/deploy/compose.sh
source tests/suites/deploy/configs.sh
source tests/suites/deploy/systemd.sh
source tests/suites/deploy/dockerfile.sh
source tests/suites/deploy/readme.sh

make_venv "$TARGET_DIR/deploy-venv" kubernetes-validate==1.37.0 PyYAML==6.0.2
PY=$TARGET_DIR/deploy-venv/bin/python
make_work
build_fedimds
# kubernetes writes each ConfigMap's fedimds.toml into $WORK/configs, which configs runs.
mkdir -p "$WORK/configs"
check_kubernetes
check_compose
check_configs
check_systemd
check_dockerfile
check_readme
say "all passed"
