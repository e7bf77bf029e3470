#!/usr/bin/env bash
# The real Azure SDKs against fedimds (issue 3): curl, Python azure-identity (sync and async),
# msal's ManagedIdentityClient, Node @azure/identity and the Rust azure_identity crate, every
# dialect each of them speaks. The drivers live in tests/conformance/ (README: "SDK × dialect").
#
# Phase 1 installs the clients, versions pinned (PyPI, npm, crates.io, Debian apt only when a
# tool is missing). Phase 2 re-runs this script inside a private network and mount namespace
# (`unshare`), where it
#   - adds 169.254.169.254 to the namespace's own loopback, so the default credential chains'
#     IMDS probes and the Rust crate (whose IMDS address is fixed) reach a daemon there;
#   - mounts a tmpfs on /var/opt, so Arc key files go to /var/opt/azcmagent/tokens, where the
#     clients insist on reading them, without touching the host;
# then starts `fedimds sim`, the daemon wired to it on 127.0.0.1:8181 and a byte forwarder from
# 169.254.169.254:80 to it (tests/conformance/imds_forward.py, the deployment's capture rule in
# miniature), runs the drivers, and stops everything on exit. If no namespace can be made,
# phase 2 runs on the host's loopback and the tests that need the namespace say SKIPPED.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
CONF=$ROOT/tests/conformance
VENV=$ROOT/target/conformance-venv
NODE_DIR=$ROOT/target/conformance-node
# @azure/identity 4.14.1 wants Node >= 22 (engines); Debian 12 ships 18. When the machine's
# node is older, this exact Node from the npm registry (the node-linux-* packages) is used.
NODE_RUNTIME_VERSION=22.23.3
NODE_RUNTIME_DIR=$ROOT/target/conformance-node-runtime
RS_CLIENT=$ROOT/target/clients/release/azure-identity-rs
FEDIMDS=$ROOT/target/release/fedimds

# --- phase 1: install (needs the package registries) -------------------------------------
install_clients() {
  local missing=()
  command -v curl >/dev/null || missing+=(curl)
  command -v ip >/dev/null || missing+=(iproute2)
  command -v unshare >/dev/null || missing+=(util-linux)
  command -v node >/dev/null || missing+=(nodejs)
  command -v npm >/dev/null || missing+=(npm)
  python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "conformance: apt-get install ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi

  echo "conformance: cargo build --release -p fedimds"
  cargo build --release -p fedimds --locked --quiet

  echo "conformance: Rust client (azure_identity, tests/clients/azure-identity-rs)"
  CARGO_TARGET_DIR=$ROOT/target/clients cargo build --release --locked --quiet \
    --manifest-path tests/clients/azure-identity-rs/Cargo.toml

  # Reinstall only when the pins change: a warm run skips pip and npm entirely.
  local stamp
  stamp=$(sha256sum "$CONF/python/requirements.txt" | cut -d' ' -f1)
  if [ "$(cat "$VENV/.stamp" 2>/dev/null)" != "$stamp" ]; then
    echo "conformance: pip install -r tests/conformance/python/requirements.txt"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$CONF/python/requirements.txt"
    echo "$stamp" >"$VENV/.stamp"
  fi

  local node_major
  node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
  if [ "$node_major" -lt 22 ]; then
    local arch
    case "$(uname -m)" in x86_64) arch=x64 ;; aarch64) arch=arm64 ;; *) arch=$(uname -m) ;; esac
    if [ "$(cat "$NODE_RUNTIME_DIR/.stamp" 2>/dev/null)" != "$arch-$NODE_RUNTIME_VERSION" ]; then
      echo "conformance: node $(node --version 2>/dev/null || echo missing) < 22: npm install node-linux-$arch@$NODE_RUNTIME_VERSION"
      rm -rf "$NODE_RUNTIME_DIR"
      npm install --prefix "$NODE_RUNTIME_DIR" --no-save --no-audit --no-fund --loglevel=error \
        "node-linux-$arch@$NODE_RUNTIME_VERSION" >/dev/null
      echo "$arch-$NODE_RUNTIME_VERSION" >"$NODE_RUNTIME_DIR/.stamp"
    fi
    ln -sfn "$NODE_RUNTIME_DIR/node_modules/node-linux-$arch/bin" "$NODE_RUNTIME_DIR/bin"
  fi

  stamp=$(cat "$CONF/node/package.json" "$CONF/node/package-lock.json" | sha256sum | cut -d' ' -f1)
  if [ "$(cat "$NODE_DIR/.stamp" 2>/dev/null)" != "$stamp" ]; then
    echo "conformance: npm ci (@azure/identity, tests/conformance/node)"
    rm -rf "$NODE_DIR"
    mkdir -p "$NODE_DIR"
    cp "$CONF/node/package.json" "$CONF/node/package-lock.json" "$NODE_DIR/"
    (cd "$NODE_DIR" && npm ci --no-audit --no-fund --loglevel=error --engine-strict=false >/dev/null)
    echo "$stamp" >"$NODE_DIR/.stamp"
  fi
  # The drivers run from next to node_modules, so `import "@azure/identity"` resolves there.
  rm -f "$NODE_DIR"/*.mjs
  cp "$CONF"/node/*.mjs "$NODE_DIR/"
}

# --- phase 2: run (loopback only) --------------------------------------------------------
PIDS=()
WORK=""
cleanup() {
  local status=$?
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "$status" -ne 0 ] && [ -n "$WORK" ]; then
    # Logs hold no tokens or secrets (the daemon redacts them); they help read a failure.
    for log in "$WORK"/*.log; do
      [ -e "$log" ] || continue
      echo "--- last lines of ${log#"$WORK"/}"
      tail -n 20 "$log"
    done
  fi
  [ -n "$WORK" ] && rm -rf "$WORK"
  exit "$status"
}

# Polls `url` until it answers 200, at most ~10 s.
wait_ready() {
  local url=$1 what=$2
  for _ in $(seq 1 100); do
    if curl -fsS -o /dev/null --max-time 1 "$url" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "conformance: $what did not become ready at $url" >&2
  return 1
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# The daemon config: config/demo.toml's world (see crates/fedimds-sim/src/demo.rs), pointed at
# the simulator, with a fixed caller secret and selection aliases on the second target. No
# admin listener: its default port could be taken on the host fallback.
write_config() {
  local file=$1 listen=$2
  cat >"$file" <<EOF
[server]
listen = "$listen"
identity_header = "$SECRET"

[admin]
listen = "off"

[source]
kind = "imds"
endpoint = "$SIM_URL"
client_id = "bbbbbbbb-0000-4000-8000-00000000b001"

[cloud]
name = "public"
authority_host = "$SIM_URL"

[[targets]]
name = "litware"
tenant_id = "22222222-2222-4222-8222-222222222222"
client_id = "aaaaaaaa-0000-4000-8000-00000000a001"
default = true
allowed_tenants = ["33333333-3333-4333-8333-333333333333"]

[[targets]]
name = "contoso"
tenant_id = "33333333-3333-4333-8333-333333333333"
client_id = "aaaaaaaa-0000-4000-8000-00000000a001"
object_id = "0c0c0c0c-0000-4000-8000-0000000c0c01"
resource_id = "/subscriptions/dddddddd-0000-4000-8000-00000000d001/resourceGroups/conformance/providers/Microsoft.ManagedIdentity/userAssignedIdentities/contoso"

[[targets]]
name = "unconsented"
tenant_id = "22222222-2222-4222-8222-222222222222"
client_id = "aaaaaaaa-0000-4000-8000-00000000a002"
EOF
}

start_daemon() {
  local config=$1 log=$2
  FEDIMDS_LOG=fedimds=debug,warn FEDIMDS_LOG_FORMAT=json "$FEDIMDS" serve --config "$config" \
    >/dev/null 2>"$log" &
  PIDS+=($!)
}

run_inner() {
  local netns=$1
  trap cleanup EXIT
  WORK=$(mktemp -d "$ROOT/target/conformance-run.XXXXXX")
  SECRET="conformance-identity-header-0123456789"

  local sim_port daemon_port imds_url="" arc="no"
  if [ "$netns" = yes ]; then
    ip link set lo up
    ip addr add 169.254.169.254/32 dev lo
    imds_url="http://169.254.169.254"
    sim_port=8282
    daemon_port=8181
    if [ -d /var/opt ] && mount -t tmpfs -o mode=0755 tmpfs /var/opt; then
      mkdir -p /var/opt/azcmagent/tokens
      arc="yes"
    fi
  else
    sim_port=$(free_port)
    daemon_port=$(free_port)
  fi
  SIM_URL="http://127.0.0.1:$sim_port"

  "$FEDIMDS" sim --listen "127.0.0.1:$sim_port" >/dev/null 2>"$WORK/sim.log" &
  PIDS+=($!)
  wait_ready "$SIM_URL/_sim/exchanges" "the simulator"

  write_config "$WORK/daemon.toml" "127.0.0.1:$daemon_port"
  start_daemon "$WORK/daemon.toml" "$WORK/daemon.log"
  wait_ready "http://127.0.0.1:$daemon_port/healthz" "the daemon"
  if [ -n "$imds_url" ]; then
    python3 "$CONF/imds_forward.py" 169.254.169.254 80 127.0.0.1 "$daemon_port" \
      2>"$WORK/forward.log" &
    PIDS+=($!)
    wait_ready "$imds_url/healthz" "the daemon through 169.254.169.254"
  fi

  export FEDIMDS_URL="http://127.0.0.1:$daemon_port" FEDIMDS_LOG_FILE="$WORK/daemon.log"
  export FEDIMDS_IMDS_URL="$imds_url" FEDIMDS_IMDS_LOG_FILE="$WORK/daemon.log"
  export FEDIMDS_SECRET="$SECRET" SIM_URL FEDIMDS_ARC="$arc"
  export AZURE_IDENTITY_RS="$RS_CLIENT"
  # No ambient Azure settings may leak into the clients' credential choice.
  unset IDENTITY_ENDPOINT IDENTITY_HEADER IMDS_ENDPOINT MSI_ENDPOINT MSI_SECRET \
    AZURE_POD_IDENTITY_AUTHORITY_HOST AZURE_CLIENT_ID AZURE_TENANT_ID AZURE_CLIENT_SECRET \
    AZURE_FEDERATED_TOKEN_FILE AZURE_AUTHORITY_HOST AZURE_TOKEN_CREDENTIALS \
    IDENTITY_SERVER_THUMBPRINT || true

  # Both runners run even when the first fails, so one CI log shows every broken client.
  local failed=()
  echo "conformance: Python (azure-identity sync and async, msal), curl, Rust azure_identity"
  (cd "$CONF/python" && PYTHONDONTWRITEBYTECODE=1 "$VENV/bin/python" -m pytest -q -p no:cacheprovider -rs .) ||
    failed+=(python)
  echo "conformance: Node (@azure/identity)"
  local node=node
  [ -x "$NODE_RUNTIME_DIR/bin/node" ] && node=$NODE_RUNTIME_DIR/bin/node
  # --test-force-exit: idle keep-alive sockets would hold each file's process for seconds.
  (cd "$NODE_DIR" && "$node" --test --test-force-exit --test-reporter=dot ./*.test.mjs) ||
    failed+=(node)
  if [ ${#failed[@]} -gt 0 ]; then
    echo "conformance: FAILED: ${failed[*]}" >&2
    return 1
  fi
  echo "conformance: all clients passed"
}

case "${1:-}" in
  --inner) run_inner yes ;;
  --inner-host) run_inner no ;;
  "")
    install_clients
    if [ "$(id -u)" -eq 0 ] && unshare --net --mount true 2>/dev/null; then
      exec unshare --net --mount --propagation private bash "$0" --inner
    elif unshare --map-root-user --net --mount true 2>/dev/null; then
      exec unshare --map-root-user --net --mount --propagation private bash "$0" --inner
    else
      echo "conformance: cannot create a network namespace (unshare); probe, Rust-IMDS and Arc tests will be SKIPPED"
      exec bash "$0" --inner-host
    fi
    ;;
  *) echo "usage: $0" >&2; exit 64 ;;
esac
