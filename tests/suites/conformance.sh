#!/usr/bin/env bash
# The real Azure SDKs against fedimds (issues 3 and 12): curl, Python azure-identity (sync and
# async), msal's ManagedIdentityClient, Node @azure/identity, the Rust azure_identity crate, Go
# azidentity and Java azure-identity, every dialect each of them speaks; and azure-identity 1.5.0
# on the legacy 2017 dialect. The drivers live in tests/conformance/ (README: "SDK × dialect").
#
# Phase 1 installs the clients, versions pinned (PyPI, npm, crates.io, the Go module proxy,
# Maven Central; Debian apt only when a tool is missing). Phase 2 re-runs this script inside a private network and mount namespace
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
# shellcheck source=tests/suites/lib.sh
source "$(dirname "$0")/lib.sh"
suite_init conformance
SELF=$ROOT/tests/suites/conformance.sh   # phase 2 runs it again, from the root
CONF=$ROOT/tests/conformance
VENV=$TARGET_DIR/conformance-venv
# azure-identity 1.5.0, which parses only App Service's date in the 2017 dialect, cannot share
# a venv with the current one: a venv of its own, pinned by its own requirements file.
VENV_AZID_1_5=$TARGET_DIR/conformance-venv-azure-identity-1.5
NODE_DIR=$TARGET_DIR/conformance-node
# @azure/identity 4.14.1 wants Node >= 22 (engines); Debian 12 ships 18. When the machine's
# node is older, this exact Node from the npm registry (the node-linux-* packages) is used.
NODE_RUNTIME_VERSION=22.23.3
NODE_RUNTIME_DIR=$TARGET_DIR/conformance-node-runtime
# The Go and Java drivers are built from copies here, so a build never touches the work tree
# (go.mod and go.sum, and the pom, pin every version); Maven's local repository is here too, so
# a warm run downloads nothing. Each is rebuilt only when its sources change.
GO_DIR=$TARGET_DIR/conformance-go
GO_CLIENT=$GO_DIR/conformance-go
JAVA_DIR=$TARGET_DIR/conformance-java
JAVA_CLIENT=$JAVA_DIR/conformance-java
MAVEN_REPO=$TARGET_DIR/conformance-m2

# A stamp of the files given (paths relative to the current directory): what a build was made
# from.
sources_stamp() { { printf '%s\n' "$@"; cat "$@"; } | sha256sum | cut -d' ' -f1; }

# Go azidentity, pinned by tests/conformance/go/go.sum; the modules come from the Go proxy the
# machine is set up with.
build_go_client() {
  local stamp
  stamp=$(cd "$CONF/go" && sources_stamp go.mod go.sum ./*.go)
  [ "$(cat "$GO_DIR/.stamp" 2>/dev/null)" != "$stamp" ] || return 0
  say "go build (tests/conformance/go: Go azidentity)"
  rm -rf "$GO_DIR"
  mkdir -p "$GO_DIR"
  cp "$CONF"/go/go.mod "$CONF"/go/go.sum "$CONF"/go/*.go "$GO_DIR/"
  (cd "$GO_DIR" && GOFLAGS="-mod=mod -buildvcs=false" go build -trimpath -o "$GO_CLIENT" .)
  echo "$stamp" >"$GO_DIR/.stamp"
}

# Java azure-identity, pinned by azure-sdk-bom in tests/conformance/java/pom.xml; $JAVA_CLIENT
# runs it with the class path Maven copied next to it.
build_java_client() {
  local stamp
  # shellcheck disable=SC2046 # file names without spaces
  stamp=$(cd "$CONF/java" && sources_stamp pom.xml $(find src -type f | sort))
  [ "$(cat "$JAVA_DIR/.stamp" 2>/dev/null)" != "$stamp" ] || return 0
  say "mvn package (tests/conformance/java: Java azure-identity)"
  rm -rf "$JAVA_DIR"
  mkdir -p "$JAVA_DIR"
  cp -r "$CONF"/java/pom.xml "$CONF"/java/src "$JAVA_DIR/"
  (cd "$JAVA_DIR" && mvn -q -B -Dmaven.repo.local="$MAVEN_REPO" package)
  # C1 only: each run is short, so a quick JIT start beats a fast steady state.
  printf '#!/bin/sh\nexec java -XX:TieredStopAtLevel=1 -cp %s fedimds.conformance.Main "$@"\n' \
    "'$JAVA_DIR/target/classes:$JAVA_DIR/target/lib/*'" >"$JAVA_CLIENT"
  chmod +x "$JAVA_CLIENT"
  echo "$stamp" >"$JAVA_DIR/.stamp"
}

# --- phase 1: install (needs the package registries) -------------------------------------
install_clients() {
  need_tools curl ip=iproute2 unshare=util-linux node=nodejs npm go=golang-go mvn=maven \
    java=default-jdk-headless
  build_fedimds
  build_rust_client
  build_go_client
  build_java_client
  # Reinstall only when the pins change: a warm run skips pip and npm entirely.
  make_venv "$VENV" -r tests/conformance/python/requirements.txt
  make_venv "$VENV_AZID_1_5" -r tests/conformance/python/requirements-azure-identity-1.5.txt

  local node_major stamp
  node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
  if [ "$node_major" -lt 22 ]; then
    local arch
    case "$(uname -m)" in x86_64) arch=x64 ;; aarch64) arch=arm64 ;; *) arch=$(uname -m) ;; esac
    if [ "$(cat "$NODE_RUNTIME_DIR/.stamp" 2>/dev/null)" != "$arch-$NODE_RUNTIME_VERSION" ]; then
      say "node $(node --version 2>/dev/null || echo missing) < 22: npm install node-linux-$arch@$NODE_RUNTIME_VERSION"
      rm -rf "$NODE_RUNTIME_DIR"
      npm install --prefix "$NODE_RUNTIME_DIR" --no-save --no-audit --no-fund --loglevel=error \
        "node-linux-$arch@$NODE_RUNTIME_VERSION" >/dev/null
      echo "$arch-$NODE_RUNTIME_VERSION" >"$NODE_RUNTIME_DIR/.stamp"
    fi
    ln -sfn "$NODE_RUNTIME_DIR/node_modules/node-linux-$arch/bin" "$NODE_RUNTIME_DIR/bin"
  fi

  stamp=$(cat "$CONF/node/package.json" "$CONF/node/package-lock.json" | sha256sum | cut -d' ' -f1)
  if [ "$(cat "$NODE_DIR/.stamp" 2>/dev/null)" != "$stamp" ]; then
    say "npm ci (@azure/identity, tests/conformance/node)"
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
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# `fedimds sim` prints the daemon config for itself once it listens (the last line blank);
# daemon_config.py builds the suite's from it.
sim_printed_config() {
  awk '/^A daemon config for it:$/ { found = 1 } found { n++; last = $0 } END { exit !(n > 3 && last == "") }' "$1"
}

run_inner() {
  local netns=$1
  make_work
  local secret="conformance-identity-header-0123456789"

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

  "$FEDIMDS" sim --listen "127.0.0.1:$sim_port" >"$WORK/sim.out" 2>"$WORK/sim.log" &
  PIDS+=($!)
  wait_for "the simulator" "$!" answers_ok "$SIM_URL/_sim/exchanges"
  wait_for "the simulator's printed config" "$!" sim_printed_config "$WORK/sim.out"

  python3 "$CONF/daemon_config.py" "$WORK/sim.out" "$SIM_URL" "127.0.0.1:$daemon_port" "$secret" \
    >"$WORK/daemon.toml" || die "cannot make the daemon config from the simulator's"
  # Service Fabric mode: its HTTPS listener, with the generated certificate and its thumbprint
  # written where the clients' settings are read from (README "Service Fabric mode").
  local sf_port
  sf_port=$(free_port)
  cat >>"$WORK/daemon.toml" <<EOF

[service_fabric]
listen = "127.0.0.1:$sf_port"
served_cert_file = "$WORK/sf.crt"
thumbprint_file = "$WORK/sf.thumbprint"
EOF
  FEDIMDS_LOG=fedimds=debug,warn FEDIMDS_LOG_FORMAT=json "$FEDIMDS" serve --config "$WORK/daemon.toml" \
    >/dev/null 2>"$WORK/daemon.log" &
  PIDS+=($!)
  wait_for "the daemon" "$!" answers_ok "http://127.0.0.1:$daemon_port/healthz"
  if [ -n "$imds_url" ]; then
    python3 "$CONF/imds_forward.py" 169.254.169.254 80 127.0.0.1 "$daemon_port" \
      2>"$WORK/forward.log" &
    PIDS+=($!)
    wait_for "the daemon through 169.254.169.254" "$!" answers_ok "$imds_url/healthz"
  fi

  export FEDIMDS_URL="http://127.0.0.1:$daemon_port" FEDIMDS_LOG_FILE="$WORK/daemon.log"
  export FEDIMDS_IMDS_URL="$imds_url" FEDIMDS_IMDS_LOG_FILE="$WORK/daemon.log"
  export FEDIMDS_IMDS_FORWARD_LOG_FILE="$WORK/forward.log"
  export FEDIMDS_SECRET="$secret" SIM_URL FEDIMDS_ARC="$arc"
  export FEDIMDS_SF_URL="https://127.0.0.1:$sf_port" FEDIMDS_SF_CERT="$WORK/sf.crt"
  FEDIMDS_SF_THUMBPRINT=$(cat "$WORK/sf.thumbprint") || die "the daemon wrote no thumbprint file"
  export FEDIMDS_SF_THUMBPRINT
  export AZURE_IDENTITY_RS="$RUST_CLIENT" AZURE_IDENTITY_GO="$GO_CLIENT" AZURE_IDENTITY_JAVA="$JAVA_CLIENT"
  # No ambient Azure settings may leak into the clients' credential choice.
  unset IDENTITY_ENDPOINT IDENTITY_HEADER IMDS_ENDPOINT MSI_ENDPOINT MSI_SECRET \
    AZURE_POD_IDENTITY_AUTHORITY_HOST AZURE_CLIENT_ID AZURE_TENANT_ID AZURE_CLIENT_SECRET \
    AZURE_FEDERATED_TOKEN_FILE AZURE_AUTHORITY_HOST AZURE_TOKEN_CREDENTIALS \
    IDENTITY_SERVER_THUMBPRINT || true

  # Both runners run even when the first fails, so one CI log shows every broken client.
  local failed=()
  say "Python (azure-identity sync and async, msal), curl; Rust, Go and Java azure-identity"
  (cd "$CONF/python" && PYTHONDONTWRITEBYTECODE=1 "$VENV/bin/python" -m pytest -q -p no:cacheprovider -rs \
    --ignore=test_azure_identity_1_5.py .) || failed+=(python)
  say "Python azure-identity 1.5.0 (the legacy 2017 dialect's date), in its own venv"
  (cd "$CONF/python" && PYTHONDONTWRITEBYTECODE=1 "$VENV_AZID_1_5/bin/python" -m pytest -q -p no:cacheprovider -rs \
    -W ignore::DeprecationWarning test_azure_identity_1_5.py) || failed+=(python-azure-identity-1.5)
  say "Node (@azure/identity)"
  local node=node
  [ -x "$NODE_RUNTIME_DIR/bin/node" ] && node=$NODE_RUNTIME_DIR/bin/node
  # --test-force-exit: idle keep-alive sockets would hold each file's process for seconds.
  # Node checks the Service Fabric certificate's chain (not its thumbprint): trust it as a CA,
  # as the README tells users to.
  (cd "$NODE_DIR" && NODE_EXTRA_CA_CERTS="$FEDIMDS_SF_CERT" \
    "$node" --test --test-force-exit --test-reporter=dot ./*.test.mjs) ||
    failed+=(node)
  [ ${#failed[@]} -eq 0 ] || die "${failed[*]}"
  say "all clients passed"
}

case "${1:-}" in
  --inner) run_inner yes ;;
  --inner-host) run_inner no ;;
  "")
    install_clients
    if [ "$(id -u)" -eq 0 ] && unshare --net --mount true 2>/dev/null; then
      exec unshare --net --mount --propagation private bash "$SELF" --inner
    elif unshare --map-root-user --net --mount true 2>/dev/null; then
      exec unshare --map-root-user --net --mount --propagation private bash "$SELF" --inner
    else
      say "cannot create a network namespace (unshare); probe, Rust-IMDS and Arc tests will be SKIPPED"
      exec bash "$SELF" --inner-host
    fi
    ;;
  *) echo "usage: $0" >&2; exit 64 ;;
esac
