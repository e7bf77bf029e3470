#!/usr/bin/env bash
# The legacy-IMDS capture, on real Linux networking (needs root):
#
# In a fresh network namespace, 169.254.169.254 is a local address where the simulator plays
# the real IMDS and Entra (`fedimds sim`; its IMDS issues *home-tenant* tokens). The repo's one
# capture script (deploy/capture/capture-imds.sh) installs the nat rule, fedimds runs as an
# unprivileged uid (65534, excluded from the rule) with the shipped Kubernetes listeners (tokens
# on 127.0.0.1:8181, no allow_remote; admin on 8182) and a caller secret, and clients that know
# nothing of fedimds and set no variables ask "IMDS" for a token: curl, Python azure-identity's
# ManagedIdentityCredential() and the Rust azure_identity crate (which hard-codes
# 169.254.169.254). Each must get the *target-tenant* token: only fedimds serves those, so the
# capture worked, and fedimds's own upstream calls (to 169.254.169.254, as uid 65534) were not
# captured, or it could not have got one. Controls: before the rule, after its removal, and from
# the excluded uid, the same request gets the home-tenant token.
#
# The rest of IMDS is passed through (`[imds] passthrough = true`): a captured caller's instance
# metadata (JSON, `format=text`, azcopy's vmSize query), attested document, scheduled events
# (GET and POST) and versions come back exactly as the "real IMDS" sent them to fedimds's
# uid, the only one that reaches it; counted by fedimds, so they went through it. Turned off
# by a reload, the same paths get IMDS's 404; with the "real IMDS" down, a 502 at once.
#
# Everything runs inside the namespace, which is deleted at the end: no traffic leaves it.
set -euo pipefail
# shellcheck source=tests/suites/lib.sh
source "$(dirname "$0")/lib.sh"
suite_init capture

HOME_TENANT=11111111-1111-4111-8111-111111111111
TARGET_TENANT=22222222-2222-4222-8222-222222222222
APP_CLIENT_ID=aaaaaaaa-0000-4000-8000-00000000a001
MI_CLIENT_ID=bbbbbbbb-0000-4000-8000-00000000b001
RESOURCE=https://graph.microsoft.com
IMDS_URL="http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource=$RESOURCE"
FEDIMDS_UID=65534

need_root "network namespaces, iptables"

# --- what the test needs -------------------------------------------------------------------
need_tools iptables ip=iproute2 setpriv=util-linux curl
build_fedimds
build_rust_client
venv=$TARGET_DIR/capture-venv
make_venv "$venv" azure-identity==1.27.0

# --- the namespace and its cleanup ---------------------------------------------------------
ns="fedimds-capture-$$"
delete_ns() { if ip netns list | grep -qw "$ns"; then ip netns delete "$ns"; fi; }
make_work
on_exit delete_ns

# (Background processes are started with `ip netns exec` itself, not through this function, so
# that $! is the process: ip and setpriv exec it.)
in_ns() { ip netns exec "$ns" "$@"; }
# A client with an empty environment: it knows nothing of fedimds.
bare() { in_ns env -i PATH=/usr/bin:/bin HOME="$WORK/home" "$@"; }

ip netns add "$ns"
in_ns ip link set lo up
# The "real IMDS" address, local to the namespace (a dummy interface when the kernel has one).
if in_ns ip link add imds0 type dummy 2>/dev/null; then
  in_ns ip link set imds0 up
  in_ns ip addr add 169.254.169.254/32 dev imds0
else
  in_ns ip addr add 169.254.169.254/32 dev lo
fi
mkdir -p "$WORK/home"

# Prints tid and aud of the token a client printed (as JSON under KEY) on stdin.
claims() { "$venv/bin/python" tests/capture/jwt_claims.py "$1" tid aud; }
expect_tenant() {
  local who=$1 want=$2 got=$3
  local tid aud
  tid=$(sed -n 's/^tid=//p' <<<"$got")
  aud=$(sed -n 's/^aud=//p' <<<"$got")
  [ "$tid" = "$want" ] || die "$who got a token for tenant '$tid', expected $want"
  [ "${aud%/}" = "$RESOURCE" ] || die "$who got a token for audience '$aud', expected $RESOURCE"
  say "ok: $who -> tid=$tid aud=$aud"
}

# --- the real IMDS (and Entra) --------------------------------------------------------------
start_sim() {
  ip netns exec "$ns" "$FEDIMDS" sim --listen 169.254.169.254:80 >>"$WORK/sim.log" 2>&1 &
  PIDS+=($!)
  sim_pid=$!
  wait_for "the simulator" "$sim_pid" in_ns curl -s -o /dev/null --max-time 1 http://169.254.169.254/
}
start_sim

out=$(bare curl -sS --max-time 10 -H Metadata:true "$IMDS_URL")
expect_tenant "curl before capture (control)" "$HOME_TENANT" "$(claims access_token <<<"$out")"

# --- fedimds, unprivileged, wired to the "real IMDS" -----------------------------------------
# Its listeners are the shipped Kubernetes ones (the [server] and [admin] tables of
# deploy/kubernetes/common/configmap.yaml, which the capture variant mounts), so the captured
# callers, which send no caller secret, meet the layout a pod would give them.
install -m 0755 "$FEDIMDS" "$WORK/fedimds"
listeners=$(sed -n '/^    \[server\]$/,/^    \[source\]$/p' deploy/kubernetes/common/configmap.yaml \
  | sed -e '$d' -e 's/^    //')
if ! grep -q '^\[server\]$' <<<"$listeners" || ! grep -q '^\[admin\]$' <<<"$listeners"; then
  die "no [server] and [admin] tables before [source] in deploy/kubernetes/common/configmap.yaml"
fi
cat >"$WORK/fedimds.toml" <<EOF
$listeners

[source]
kind = "imds"
endpoint = "http://169.254.169.254"
client_id = "$MI_CLIENT_ID"

[cloud]
name = "public"
authority_host = "http://169.254.169.254"

[[targets]]
name = "litware"
tenant_id = "$TARGET_TENANT"
client_id = "$APP_CLIENT_ID"
default = true

[imds]
passthrough = true
EOF
chmod 0755 "$WORK"
chmod 0644 "$WORK/fedimds.toml"

# --- the capture: the repo's one script, run twice (idempotent) ------------------------------
in_ns sh deploy/capture/capture-imds.sh --uid "$FEDIMDS_UID" --port 8181 >/dev/null
in_ns sh deploy/capture/capture-imds.sh --uid "$FEDIMDS_UID" --port 8181 | grep -q "already installed" \
  || die "the second run did not find the rule installed"
rules=$(in_ns iptables -t nat -S OUTPUT | grep -c -- '-d 169.254.169.254/32' || true)
[ "$rules" = 1 ] || die "expected exactly one capture rule, found $rules"
in_ns sh deploy/capture/capture-imds.sh --uid "$FEDIMDS_UID" --port 8181 --check \
  || die "--check does not see the rule"
say "ok: capture rule installed once"

# As the pod's sidecar: the caller secret from the Secret, which the captured callers never see.
FEDIMDS_IDENTITY_HEADER=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n') \
  ip netns exec "$ns" setpriv --reuid="$FEDIMDS_UID" --regid="$FEDIMDS_UID" --clear-groups \
  "$WORK/fedimds" serve --config "$WORK/fedimds.toml" >"$WORK/fedimds.log" 2>&1 &
PIDS+=($!)
fedimds_pid=$!
# Where the kubelet's probes go: the admin listener.
wait_for "fedimds" "$fedimds_pid" in_ns curl -s -o /dev/null --max-time 1 http://127.0.0.1:8182/healthz
daemon_uid=$(awk '/^Uid:/ {print $3}' "/proc/$fedimds_pid/status")   # the effective uid
[ "$daemon_uid" = "$FEDIMDS_UID" ] || die "fedimds runs as uid $daemon_uid, expected $FEDIMDS_UID"

# --- clients that know nothing of fedimds ----------------------------------------------------
out=$(bare curl -sS --max-time 30 -H Metadata:true "$IMDS_URL")
expect_tenant "curl" "$TARGET_TENANT" "$(claims access_token <<<"$out")"

out=$(bare "$venv/bin/python" tests/capture/python_client.py "$RESOURCE/.default")
expect_tenant "python azure-identity ManagedIdentityCredential()" "$TARGET_TENANT" "$(claims token <<<"$out")"

out=$(bare "$RUST_CLIENT" "$RESOURCE/.default")
expect_tenant "rust azure_identity ManagedIdentityCredential" "$TARGET_TENANT" "$(claims token <<<"$out")"

# fedimds's own uid is not captured: it still reaches the real IMDS.
out=$(bare setpriv --reuid="$FEDIMDS_UID" --regid="$FEDIMDS_UID" --clear-groups \
  curl -sS --max-time 10 -H Metadata:true "$IMDS_URL")
expect_tenant "curl as fedimds's uid (excluded)" "$HOME_TENANT" "$(claims access_token <<<"$out")"

# --- the rest of IMDS, passed through -------------------------------------------------------
as_fedimds() { bare setpriv --reuid="$FEDIMDS_UID" --regid="$FEDIMDS_UID" --clear-groups "$@"; }
# The body, then a line with the status and the content type, of a GET with Metadata: true.
get_md=(curl -sS --max-time 10 -H Metadata:true -w '\n%{http_code} %{content_type}')
# What fedimds has forwarded so far, from its metrics: the sum over classes and statuses.
forwarded() {
  in_ns curl -s --max-time 5 http://127.0.0.1:8182/metrics \
    | awk '/^fedimds_passthrough_requests_total\{/ {n += $2} END {print n + 0}'
}
before=$(forwarded)
paths=(
  "/metadata/instance?api-version=2021-02-01"
  "/metadata/instance/compute?api-version=2021-02-01&format=json"
  "/metadata/instance/compute/vmSize?api-version=2019-03-11&format=text"   # azcopy's query
  "/metadata/attested/document?api-version=2020-09-01&nonce=1234567890"
  "/metadata/scheduledevents?api-version=2020-07-01"
  "/metadata/versions"
)
for path in "${paths[@]}"; do
  via=$(bare "${get_md[@]}" "http://169.254.169.254$path")
  real=$(as_fedimds "${get_md[@]}" "http://169.254.169.254$path")
  [ "$via" = "$real" ] || die "$path through fedimds differs from the real IMDS's answer:
$via
---
$real"
  [[ $(tail -n1 <<<"$via") == "200 "* ]] || die "$path: $(tail -n1 <<<"$via")"
  say "ok: $path as the real IMDS sent it ($(tail -n1 <<<"$via"))"
done
vm_size=$(bare curl -sS --max-time 3 -H Metadata:true \
  "http://169.254.169.254/metadata/instance/compute/vmSize?api-version=2019-03-11&format=text")
[ "$vm_size" = "Standard_D2s_v5" ] || die "azcopy's vmSize query got '$vm_size'"
after=$(forwarded)
[ "$after" -eq $((before + ${#paths[@]} + 1)) ] \
  || die "fedimds counted $((after - before)) forwarded requests, expected $((${#paths[@]} + 1)): the captured calls did not go through it"
say "ok: every one went through fedimds (fedimds_passthrough_requests_total +$((after - before)))"

events_url="http://169.254.169.254/metadata/scheduledevents?api-version=2020-07-01"
event=$(as_fedimds curl -sS --max-time 10 -H Metadata:true "$events_url" \
  | "$venv/bin/python" -c 'import json, sys; print(json.load(sys.stdin)["Events"][0]["EventId"])')
status=$(bare curl -sS --max-time 10 -o /dev/null -w '%{http_code}' -X POST -H Metadata:true \
  -H 'Content-Type: application/json' -d "{\"StartRequests\":[{\"EventId\":\"$event\"}]}" "$events_url")
[ "$status" = 200 ] || die "starting a scheduled event through fedimds gave $status"
left=$(as_fedimds curl -sS --max-time 10 -H Metadata:true "$events_url" \
  | "$venv/bin/python" -c 'import json, sys; d = json.load(sys.stdin); print(d["DocumentIncarnation"], len(d["Events"]))')
[ "$left" = "2 0" ] || die "the real IMDS did not see the event started: incarnation and events $left"
say "ok: scheduled event $event started through fedimds"

status=$(bare curl -s --max-time 10 -o /dev/null -w '%{http_code}' "http://169.254.169.254${paths[0]}")
[ "$status" = 400 ] || die "instance metadata without Metadata: true gave $status, expected IMDS's 400"

# Off, by a reload: IMDS's 404 on the same paths, while the real IMDS still answers its own uid.
captured_status() {
  bare curl -s --max-time 10 -o /dev/null -w '%{http_code}' -H Metadata:true "http://169.254.169.254$1"
}
set_passthrough() {
  sed -i "s/^passthrough = .*/passthrough = $1/" "$WORK/fedimds.toml"
  kill -HUP "$fedimds_pid"
  for _ in $(seq 50); do
    [ "$(captured_status "${paths[2]}")" = "$2" ] && return 0
    sleep 0.1
  done
  die "after passthrough = $1 and a reload, ${paths[2]} still does not give $2"
}
set_passthrough false 404
for path in "${paths[@]}"; do
  [ "$(captured_status "$path")" = 404 ] || die "$path with passthrough off: not 404"
done
[[ $(as_fedimds "${get_md[@]}" "http://169.254.169.254${paths[2]}" | tail -n1) == "200 "* ]] \
  || die "the real IMDS stopped answering fedimds's uid"
say "ok: passthrough off -> 404 on every path"
set_passthrough true 200

# The real IMDS down: a 502 at once, in IMDS's shape; tokens still served from the cache.
kill "$sim_pid"
wait "$sim_pid" 2>/dev/null || true
down=$(bare curl -s --max-time 10 -H Metadata:true -w '\n%{http_code} %{time_total}' \
  "http://169.254.169.254${paths[2]}")
read -r status took <<<"$(tail -n1 <<<"$down")"
[ "$status" = 502 ] || die "with the real IMDS down: $status, expected 502 ($down)"
awk -v t="$took" 'BEGIN { exit !(t < 2) }' || die "with the real IMDS down the 502 took ${took}s"
grep -q '"error":"bad_gateway"' <<<"$down" || die "the 502 is not in IMDS's shape: $down"
out=$(bare curl -sS --max-time 10 -H Metadata:true "$IMDS_URL")
expect_tenant "curl for a cached token with the real IMDS down" "$TARGET_TENANT" "$(claims access_token <<<"$out")"
say "ok: real IMDS down -> 502 in ${took}s"
start_sim

# --- home-identity targets and several home identities (issue 13) --------------------------
# A reload adds a home-identity target (the identity's own Key Vault token, no exchange) and a
# second source (the system-assigned identity) for a second target; a captured curl gets the
# untouched home token, and each target's token comes from the identity it names, which
# `fedimds check` shows by the assertion's subject.
reloaded_since() { [ "$(grep -c "config reloaded" "$WORK/fedimds.log" || true)" -gt "$1" ]; }
home_sources_cases() {
  local vault=https://vault.azure.net other_tenant=33333333-3333-4333-8333-333333333333
  local system_object_id=cccccccc-0000-4000-8000-00000000c002
  cat >>"$WORK/fedimds.toml" <<EOF

[[sources]]
name = "system"
kind = "imds"
endpoint = "http://169.254.169.254"

[[targets]]
name = "home"
tenant_id = "$HOME_TENANT"
exchange = false
resources = ["$vault"]

[[targets]]
name = "contoso"
tenant_id = "$other_tenant"
client_id = "$APP_CLIENT_ID"
source = "system"
EOF
  # Earlier cases reloaded too: wait for one more "config reloaded" than there were.
  local reloads
  reloads=$(grep -c "config reloaded" "$WORK/fedimds.log" || true)
  kill -HUP "$fedimds_pid"
  wait_for "the reload" "$fedimds_pid" reloaded_since "$reloads"
  local got out report
  got=$(claims access_token <<<"$(bare curl -sS --max-time 30 -H Metadata:true \
    "http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource=$vault")")
  [ "$got" = "$(printf 'tid=%s\naud=%s' "$HOME_TENANT" "$vault")" ] \
    || die "the home-identity target gave: $got"
  say "ok: captured curl, a resource of the home-identity target -> the home token ($vault)"
  out=$(bare curl -sS --max-time 30 -H Metadata:true "$IMDS_URL&client_id=contoso")
  expect_tenant "captured curl, the target on the second source" "$other_tenant" \
    "$(claims access_token <<<"$out")"
  out=$(bare curl -sS --max-time 30 -H Metadata:true "$IMDS_URL")
  expect_tenant "captured curl, the default target after the reload" "$TARGET_TENANT" \
    "$(claims access_token <<<"$out")"
  report=$(in_ns setpriv --reuid="$FEDIMDS_UID" --regid="$FEDIMDS_UID" --clear-groups \
    "$WORK/fedimds" check --config "$WORK/fedimds.toml") || die "fedimds check failed: $report"
  grep -q "Home-tenant assertion · source 'system'" <<<"$report" \
    || die "check names no second source: $report"
  grep -q "sub  *$system_object_id" <<<"$report" \
    || die "the second source's assertion is not the system identity's: $report"
  grep -q "✔ home" <<<"$report" || die "check did not fetch the home token: $report"
  say "ok: fedimds check walks both sources and the home-identity target"
}
home_sources_cases

# --- removal ---------------------------------------------------------------------------------
in_ns sh deploy/capture/capture-imds.sh --uid "$FEDIMDS_UID" --port 8181 --remove >/dev/null
if in_ns sh deploy/capture/capture-imds.sh --uid "$FEDIMDS_UID" --port 8181 --check; then
  die "the rule is still there after --remove"
fi
out=$(bare curl -sS --max-time 10 -H Metadata:true "$IMDS_URL")
expect_tenant "curl after --remove (control)" "$HOME_TENANT" "$(claims access_token <<<"$out")"

say "all passed"
