# shellcheck shell=bash
# Shared by the suites in tests/suites/ (sourced, never run): how a suite reports and fails, its
# work directory and the processes it starts (stopped, and the directory removed, on any exit),
# waiting for something to come up, running a function in a fresh namespace, and what several
# suites install or build. A suite starts with
#
#   set -euo pipefail
#   source "$(dirname "$0")/lib.sh"
#   suite_init NAME        # "NAME: ..." on every line; cd to the repository root
#   make_work              # $WORK, and the EXIT trap that cleans up (not before an exec)
#
# Globals set here are upper case: ROOT, TARGET_DIR, FEDIMDS, RUST_CLIENT, SUITE, WORK, PIDS.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  echo "tests/suites/lib.sh is sourced by the suites, not run; see tests/run" >&2
  exit 64
fi

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# Where cargo puts what it builds: $CARGO_TARGET_DIR when set (cargo reads a relative one from
# the directory it runs in, the root here), else target/.
TARGET_DIR=${CARGO_TARGET_DIR:-target}
[[ $TARGET_DIR == /* ]] || TARGET_DIR=$ROOT/$TARGET_DIR
# shellcheck disable=SC2034 # for the suites
FEDIMDS=$TARGET_DIR/release/fedimds                            # build_fedimds
# shellcheck disable=SC2034 # for the suites
RUST_CLIENT=$TARGET_DIR/clients/release/azure-identity-rs      # build_rust_client
SUITE=suite
WORK=
PIDS=()
ON_EXIT=()

suite_init() {
  SUITE=$1
  cd "$ROOT" || exit
}

say() { echo "$SUITE: $*"; }
die() { echo "$SUITE: FAIL: $*" >&2; exit 1; }

need_root() {
  [ "$(id -u)" = 0 ] || die "needs root ($*)"
}

# --- the work directory and what the suite starts --------------------------------------------

# Makes $WORK and sets the traps: on any exit the processes in PIDS (append each one started in
# the background: PIDS+=($!)) are stopped, the functions given to on_exit run, the *.log files
# in $WORK are shown when the suite failed (the daemon redacts tokens and secrets, so they
# hold none), and $WORK is removed. The exit status is kept.
make_work() {
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/fedimds-$SUITE.XXXXXX")
  trap suite_cleanup EXIT
  trap 'exit 130' INT TERM
}

# on_exit FUNC: FUNC runs at exit, after the processes are stopped.
on_exit() { ON_EXIT+=("$1"); }

stop_started() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  PIDS=()
}

suite_cleanup() {
  local rc=$? func log
  stop_started
  for func in "${ON_EXIT[@]}"; do "$func" || true; done
  if [ "$rc" != 0 ] && [ -n "$WORK" ]; then
    for log in "$WORK"/*.log; do
      [ -e "$log" ] || continue
      echo "--- last lines of ${log#"$WORK"/}"
      tail -n 40 "$log"
    done
  fi
  [ -z "$WORK" ] || rm -rf "$WORK"
  exit "$rc"
}

# --- waiting -----------------------------------------------------------------------------

# wait_for WHAT PID CMD…: runs CMD every 0.1 s until it succeeds. Fails the suite when process
# PID (a child of this shell; empty: none to watch) exits first, or after 15 s.
wait_for() {
  local what=$1 pid=$2 _
  shift 2
  for _ in $(seq 1 150); do
    if "$@" 2>/dev/null; then return 0; fi
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then die "$what exited before it was ready"; fi
    sleep 0.1
  done
  die "$what not ready after 15 s (waited for: $*)"
}

# Whether URL answers HTTP at all (any status) / with a 2xx status.
answers() { curl -s -o /dev/null --max-time 1 "$1"; }
answers_ok() { curl -fs -o /dev/null --max-time 1 "$1"; }

# --- fresh namespaces ----------------------------------------------------------------------

# in_netns FUNC ARG…: runs the suite's function FUNC in a fresh network and mount namespace:
# what it starts listens only in there, what it mounts is gone with it. in_mountns: a fresh
# mount namespace only. FUNC runs in a new bash (set -euo pipefail, cwd the root) that has every
# function of the suite (export -f) but none of its variables, so FUNC takes what it needs as
# arguments; the processes it adds to PIDS are stopped when it ends.
in_netns() { in_unshared "--net --mount" "$@"; }
in_mountns() { in_unshared "--mount" "$@"; }

in_unshared() {
  local -a flags
  read -ra flags <<<"$1"
  shift
  (
    # shellcheck disable=SC2046 # function names are single words
    export -f $(compgen -A function)
    export SUITE
    exec unshare "${flags[@]}" --propagation private \
      bash -c 'set -euo pipefail; PIDS=(); trap stop_started EXIT; "$@"' "$SUITE" "$@"
  )
}

# --- what the suites install and build -------------------------------------------------------

# apt_install PACKAGE…: from Debian's apt, quietly.
apt_install() {
  say "apt-get install $*"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# need_tools COMMAND[=PACKAGE]…: installs the package of each missing command (the command's own
# name when no package is given), all in one apt-get.
need_tools() {
  local want missing=()
  for want in "$@"; do
    command -v "${want%%=*}" >/dev/null || missing+=("${want#*=}")
  done
  [ ${#missing[@]} -eq 0 ] || apt_install "${missing[@]}"
}

# make_venv DIR PIP-ARG…: a Python venv at DIR holding what `pip install PIP-ARG…` installs. It
# is made again only when the arguments or a file they name (a requirements file, given relative
# to the root) change: a stamp of them is written last, so an interrupted install is redone and
# a warm run skips pip.
make_venv() {
  local dir=$1 stamp arg
  shift
  stamp=$({
    printf '%s\n' "$@"
    for arg in "$@"; do
      if [ -f "$arg" ]; then cat "$arg"; fi
    done
  } | sha256sum | cut -d' ' -f1)
  [ "$(cat "$dir/.stamp" 2>/dev/null)" != "$stamp" ] || return 0
  say "pip install $* (into $dir)"
  python3 -c 'import ensurepip, venv' 2>/dev/null || apt_install python3-venv
  rm -rf "$dir"
  python3 -m venv "$dir"
  "$dir/bin/pip" install -q --disable-pip-version-check "$@"
  echo "$stamp" >"$dir/.stamp"
}

# The release daemon at $FEDIMDS (cargo makes it a no-op when it is up to date).
build_fedimds() {
  say "cargo build --release -p fedimds"
  cargo build --release --locked -q -p fedimds
}

# The Rust azure_identity client at $RUST_CLIENT: tests/clients/azure-identity-rs is a workspace
# of its own, with its own Cargo.lock, so it gets a target directory of its own too.
build_rust_client() {
  say "cargo build --release (tests/clients/azure-identity-rs: the Rust azure_identity client)"
  CARGO_TARGET_DIR=$TARGET_DIR/clients cargo build --release --locked -q \
    --manifest-path tests/clients/azure-identity-rs/Cargo.toml
}
