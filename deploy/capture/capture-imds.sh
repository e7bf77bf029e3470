#!/bin/sh
# Sends this network namespace's TCP traffic for the legacy IMDS address (169.254.169.254:80)
# to fedimds on 127.0.0.1:PORT, except traffic from fedimds's own user, which still reaches
# the real IMDS for its home-tenant assertion.
#
# One iptables rule in the nat table's OUTPUT chain (locally generated packets; REDIRECT sends
# them to 127.0.0.1):
#
#   -p tcp -d 169.254.169.254 --dport 80 -m owner ! --uid-owner UID -j REDIRECT --to-ports PORT
#
# Idempotent: running it twice leaves one rule. Used by the Kubernetes init container
# (deploy/kubernetes/), the VM set-up (deploy/systemd/fedimds-capture.service, README) and the
# capture test (tests/suites/capture.sh).
#
# Usage: capture-imds.sh [--uid UID] [--port PORT] [--remove] [--check]
#   --uid UID    fedimds's user, a number or a name (env FEDIMDS_UID; default 65532, the
#                container image's non-root user)
#   --port PORT  fedimds's port on 127.0.0.1 (env FEDIMDS_PORT; default 8181)
#   --remove     delete the rule instead (idempotent too)
#   --check      exit 0 if the rule is installed, 1 if not; change nothing
# Needs CAP_NET_ADMIN (and CAP_NET_RAW for iptables-legacy) in the target network namespace.
set -eu

uid="${FEDIMDS_UID:-65532}"
port="${FEDIMDS_PORT:-8181}"
action=add
imds=169.254.169.254

while [ "$#" -gt 0 ]; do
  case "$1" in
    --uid) uid="${2:?--uid needs a value}"; shift 2 ;;
    --port) port="${2:?--port needs a value}"; shift 2 ;;
    --remove) action=remove; shift ;;
    --check) action=check; shift ;;
    -h|--help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "capture-imds: unknown argument: $1 (see --help)" >&2; exit 64 ;;
  esac
done

case "$port" in
  ''|*[!0-9]*) echo "capture-imds: port must be a number, got '$port'" >&2; exit 64 ;;
esac
if [ "$port" -lt 1 ] || [ "$port" -gt 65535 ]; then
  echo "capture-imds: port out of range: $port" >&2; exit 64
fi
case "$uid" in
  '') echo "capture-imds: uid must not be empty" >&2; exit 64 ;;
  0|root) echo "capture-imds: refusing to exclude root: every root process would bypass fedimds" >&2; exit 64 ;;
esac

command -v iptables >/dev/null 2>&1 || { echo "capture-imds: iptables not found" >&2; exit 69; }

# The rule, as arguments after the chain name.
set -- -p tcp -d "$imds/32" --dport 80 -m owner ! --uid-owner "$uid" \
  -m comment --comment fedimds-imds-capture -j REDIRECT --to-ports "$port"

case "$action" in
  check)
    iptables -w 5 -t nat -C OUTPUT "$@" 2>/dev/null
    ;;
  add)
    if iptables -w 5 -t nat -C OUTPUT "$@" 2>/dev/null; then
      echo "capture-imds: already installed: $imds:80 -> 127.0.0.1:$port (except uid $uid)"
    else
      iptables -w 5 -t nat -A OUTPUT "$@"
      echo "capture-imds: installed: $imds:80 -> 127.0.0.1:$port (except uid $uid)"
    fi
    ;;
  remove)
    while iptables -w 5 -t nat -C OUTPUT "$@" 2>/dev/null; do
      iptables -w 5 -t nat -D OUTPUT "$@"
    done
    echo "capture-imds: removed"
    ;;
esac
