#!/usr/bin/env bash
# upstream.entra_proxy against a real proxy (issue 15): Debian's tinyproxy on loopback, in a
# fresh network namespace, with basic-auth credentials and a log file.
#
# - The release daemon runs against `fedimds sim` with upstream.entra_proxy naming tinyproxy
#   (credentials in the URL) and, in its environment, HTTP_PROXY/HTTPS_PROXY/ALL_PROXY (both
#   cases) naming tinyproxy too. A curl token request gets 200; tinyproxy's log shows the Entra
#   token request (`POST http://127.0.0.1:8282/<tenant>/oauth2/v2.0/token`: the simulator's
#   Entra is http://, so the proxy gets absolute-form requests rather than CONNECT) and no IMDS
#   request (`/metadata/`); the simulator's own log shows its IMDS issued the assertion.
# - `fedimds check` prints the assertion leg direct and the Entra leg through 127.0.0.1:3128;
#   neither it, `fedimds config`, nor the daemon's log shows the proxy's password.
# - The same daemon without the credentials: tinyproxy answers 407, and the caller's 400 names
#   the proxy and says what to check. Then a tinyproxy that allows only another address (it
#   answers 403): the same diagnosis. With no proxy listening at all, `fedimds check` says
#   there is no connection to the proxy.
#
# Every check can fail: the first request's log lines are looked for by path, the control
# (`Allow` elsewhere) must change the caller's answer, and the password is looked for in every
# output.
set -euo pipefail
# shellcheck source=tests/suites/lib.sh
source "$(dirname "$0")/lib.sh"
suite_init proxy
need_root "a network namespace for the proxy, the simulator and the daemon"
need_tools curl ip=iproute2 unshare=util-linux tinyproxy
make_work
build_fedimds

PROXY_USER=fedimds
PROXY_PASSWORD=pr0xy-pa55-never-shown
PROXY_PORT=3128
# run_all runs in a new bash (in_netns), which sees exported variables only.
export PROXY_USER PROXY_PASSWORD PROXY_PORT

# write_tinyproxy FILE ALLOW LOG [AUTH]: a tinyproxy config on 127.0.0.1:$PROXY_PORT that
# accepts clients from ALLOW, logs to LOG at Info, and asks for basic auth when AUTH is "auth".
write_tinyproxy() {
  local file=$1 allow=$2 log=$3 auth=${4:-}
  {
    echo "Port $PROXY_PORT"
    echo "Listen 127.0.0.1"
    echo "Allow $allow"
    echo "LogFile \"$log\""
    echo "LogLevel Info"
    echo "MaxClients 20"
    echo "Timeout 30"
    # CONNECT (an https:// Entra) only to 443; the simulator's http:// Entra needs none.
    echo "ConnectPort 443"
    if [ "$auth" = auth ]; then echo "BasicAuth $PROXY_USER $PROXY_PASSWORD"; fi
  } >"$file"
}

sim_printed_config() {
  awk '/^A daemon config for it:$/ { found = 1 } found { n++; last = $0 } END { exit !(n > 3 && last == "") }' "$1"
}

# daemon_config OUT PROXY-URL: the simulator's printed config with upstream.entra_proxy set.
daemon_config() {
  local sim_out=$1 out=$2 proxy=$3
  sed -n '/^A daemon config for it:$/,$p' "$sim_out" | tail -n +2 >"$out"
  grep -q '^\[upstream\]' "$out" && die "the simulator's config sets [upstream]: the suite appends its own"
  printf '\n[upstream]\nentra_proxy = "%s"\n' "$proxy" >>"$out"
}

token() {
  curl -sS --max-time 30 -o "$1" -w '%{http_code}' -H 'Metadata: true' \
    "http://127.0.0.1:8181/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://graph.microsoft.com"
}

# no_password FILE…: none of the files holds the proxy's password.
no_password() {
  local f
  for f in "$@"; do
    if grep -qF "$PROXY_PASSWORD" "$f"; then die "the proxy's password is in ${f##*/}"; fi
  done
}

# start_daemon BIN DIR CONFIG: `fedimds serve` with every proxy variable pointing at tinyproxy.
start_daemon() {
  local bin=$1 dir=$2 config=$3 proxy=http://127.0.0.1:$PROXY_PORT
  HTTP_PROXY=$proxy HTTPS_PROXY=$proxy ALL_PROXY=$proxy \
    http_proxy=$proxy https_proxy=$proxy all_proxy=$proxy \
    "$bin" serve --config "$config" >/dev/null 2>>"$dir/daemon.log" &
  PIDS+=($!)
  wait_for "the daemon" "$!" answers_ok http://127.0.0.1:8182/healthz
  DAEMON=$!
}

stop_daemon() {
  kill "$DAEMON" 2>/dev/null || true
  wait "$DAEMON" 2>/dev/null || true
}

# In a fresh namespace (in_netns), everything; files in DIR for the checks outside.
run_all() {
  local bin=$1 dir=$2 sim tp code proxy_url
  ip link set lo up
  # At debug, the simulator logs each token its IMDS issues.
  FEDIMDS_LOG=fedimds_sim=debug "$bin" sim --listen 127.0.0.1:8282 >"$dir/sim.out" 2>"$dir/sim.log" &
  PIDS+=($!)
  sim=$!
  wait_for "the simulator's printed config" "$sim" sim_printed_config "$dir/sim.out"

  # 1. Through a proxy that asks for credentials, which the URL carries.
  write_tinyproxy "$dir/tinyproxy.conf" 127.0.0.1 "$dir/tinyproxy.log" auth
  tinyproxy -d -c "$dir/tinyproxy.conf" >"$dir/tinyproxy.out.log" 2>&1 &
  PIDS+=($!)
  tp=$!
  wait_for "tinyproxy" "$tp" answers "http://127.0.0.1:$PROXY_PORT/"
  proxy_url="http://$PROXY_USER:$PROXY_PASSWORD@127.0.0.1:$PROXY_PORT"
  daemon_config "$dir/sim.out" "$dir/daemon.toml" "$proxy_url"
  "$bin" config --config "$dir/daemon.toml" >"$dir/config.out" 2>&1 || die "fedimds config failed"
  # The simulator's "unconsented" target fails by design, so check exits non-zero.
  "$bin" check --config "$dir/daemon.toml" >"$dir/check.out" 2>&1 || true
  start_daemon "$bin" "$dir" "$dir/daemon.toml"
  code=$(token "$dir/token.json")
  [ "$code" = 200 ] || die "the token request through the proxy got $code: $(cat "$dir/token.json")"
  stop_daemon
  cp "$dir/tinyproxy.log" "$dir/served.tinyproxy.txt"

  # 2. The same proxy, the URL without credentials: 407.
  daemon_config "$dir/sim.out" "$dir/nocreds.toml" "http://127.0.0.1:$PROXY_PORT"
  start_daemon "$bin" "$dir" "$dir/nocreds.toml"
  token "$dir/nocreds.json" >"$dir/nocreds.code" || true
  stop_daemon
  kill "$tp" 2>/dev/null || true
  wait "$tp" 2>/dev/null || true

  # 3. A proxy that allows only another address: 403.
  write_tinyproxy "$dir/deny.conf" 127.0.0.2 "$dir/deny.tinyproxy.log"
  tinyproxy -d -c "$dir/deny.conf" >"$dir/deny.out.log" 2>&1 &
  PIDS+=($!)
  tp=$!
  wait_for "the denying tinyproxy" "$tp" answers "http://127.0.0.1:$PROXY_PORT/"
  start_daemon "$bin" "$dir" "$dir/daemon.toml"
  token "$dir/denied.json" >"$dir/denied.code" || true
  stop_daemon
  kill "$tp" 2>/dev/null || true
  wait "$tp" 2>/dev/null || true

  # 4. No proxy at all.
  "$bin" check --config "$dir/daemon.toml" >"$dir/noproxy.check.out" 2>&1 && die "fedimds check passed with no proxy listening"
  return 0
}

started=$(date +%s)
in_netns run_all "$FEDIMDS" "$WORK" || die "the run in the namespace failed"

# fedimds check wraps long lines: its reports are read with the whitespace collapsed.
for report in check noproxy.check; do
  tr -s ' \n' '  ' <"$WORK/$report.out" >"$WORK/$report.flat"
done

# --- 1: Entra through the proxy, IMDS not -----------------------------------------------------
log=$WORK/served.tinyproxy.txt
grep -qE 'Request \(file descriptor [0-9]+\): POST http://127\.0\.0\.1:8282/[^ ]+/oauth2/v2\.0/token HTTP/1\.1' "$log" \
  || die "tinyproxy's log shows no Entra token request: $(grep -c . "$log") lines"
if grep -q '/metadata/' "$log"; then die "an IMDS request went through the proxy: $(grep '/metadata/' "$log")"; fi
grep -q 'IMDS issued a token' "$WORK/sim.log" \
  || die "the simulator's log shows no IMDS request: was the assertion fetched at all?"
say "ok: the Entra token request is in tinyproxy's log, no IMDS request is (despite HTTP(S)_PROXY/ALL_PROXY set)"

grep -qF "through the proxy 127.0.0.1:$PROXY_PORT (upstream.entra_proxy)" "$WORK/check.flat" \
  || die "fedimds check does not show the Entra leg through the proxy: $(cat "$WORK/check.out")"
grep -qF "direct to 127.0.0.1:8282 (never through a proxy)" "$WORK/check.flat" \
  || die "fedimds check does not show the assertion leg direct: $(cat "$WORK/check.out")"
grep -q 'entra_proxy.*(redacted)' "$WORK/config.out" || die "fedimds config does not show entra_proxy redacted: $(cat "$WORK/config.out")"
no_password "$WORK/check.out" "$WORK/config.out" "$WORK/daemon.log" "$WORK/token.json"
say "ok: fedimds check shows each leg's path; the password is in neither check, config nor the daemon's log"

# --- 2, 3: a proxy that refuses ----------------------------------------------------------------
expect_diagnosis() {
  local what=$1 code=$2 body=$3 status=$4
  [ "$(cat "$code")" = 400 ] || die "$what: the caller got HTTP $(cat "$code"), not 400: $(cat "$body")"
  grep -qF "Entra could not be reached through the proxy 127.0.0.1:$PROXY_PORT" "$body" \
    || die "$what: the answer does not name the proxy: $(cat "$body")"
  grep -qF "the proxy answered HTTP $status" "$body" || die "$what: the answer does not say $status: $(cat "$body")"
  grep -qF "check that the proxy is running" "$body" || die "$what: the answer says not what to check: $(cat "$body")"
  no_password "$body"
  say "ok: $what: 400, naming the proxy and its $status, and what to check"
}
expect_diagnosis "a proxy asking for credentials the URL lacks" "$WORK/nocreds.code" "$WORK/nocreds.json" 407
expect_diagnosis "a proxy that allows another address" "$WORK/denied.code" "$WORK/denied.json" 403
grep -qi 'denied\|not allowed\|Unauthorized' "$WORK/deny.tinyproxy.log" \
  || die "the denying tinyproxy did not log a refusal: was it the one asked?"

# --- 4: no proxy -------------------------------------------------------------------------------
grep -qF "no connection to the proxy" "$WORK/noproxy.check.flat" \
  || die "fedimds check with no proxy listening does not say so: $(cat "$WORK/noproxy.check.out")"
grep -qF "check the proxy at 127.0.0.1:$PROXY_PORT" "$WORK/noproxy.check.flat" \
  || die "fedimds check with no proxy does not say what to check"
no_password "$WORK/noproxy.check.out" "$WORK/daemon.log"
say "ok: with no proxy listening, fedimds check says so and names it"
say "passed in $(($(date +%s) - started)) s"
