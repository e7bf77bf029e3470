# shellcheck shell=bash
# deploy.sh's compose checks: compose.yaml itself, then the set-up it describes, minus docker.
DEMO_TARGET_TENANT=22222222-2222-4222-8222-222222222222   # crates/fedimds-sim/src/demo.rs

check_compose() {
  "$PY" tests/suites/deploy/compose.py || die "deploy/compose/compose.yaml breaks the promises above"
  say "ok: compose.yaml parses; one network namespace, nothing published, volumes exist"

  in_netns serve_compose "$FEDIMDS" "$WORK" "$PY" || die "the compose set-up does not serve tokens"
  [ "$(cat "$WORK/compose-claims")" = "$(printf 'tid=%s\ntid=%s' "$DEMO_TARGET_TENANT" "$DEMO_TARGET_TENANT")" ] \
    || die "compose set-up served tokens for: $(tr '\n' ' ' <"$WORK/compose-claims")"
  say "ok: the compose set-up serves target-tenant tokens (App Service mode with the secret file, IMDS mode)"
}

# In a fresh namespace (in_netns): sim and fedimds as compose runs them, the secret file under
# /run/fedimds, the app's two requests. Writes the logs and the tokens' tenants (compose-claims)
# into DIR.
serve_compose() {
  local bin=$1 dir=$2 py=$3 fed header
  ip link set lo up
  mount -t tmpfs -o mode=0755 tmpfs /run
  mkdir -m 0700 /run/fedimds
  "$bin" sim --listen 127.0.0.1:8282 >"$dir/compose-sim.log" 2>&1 &
  PIDS+=($!)
  "$bin" serve --config deploy/compose/fedimds.toml >"$dir/compose-fedimds.log" 2>&1 &
  PIDS+=($!)
  fed=$!
  # As the app does: readiness on the admin listener (the default, 127.0.0.1:8182).
  wait_for "fedimds (compose)" "$fed" answers_ok http://127.0.0.1:8182/readyz
  [ "$(stat -c %a /run/fedimds/identity-header)" = 600 ] || die "the secret file is not 0600"
  header=$(cat /run/fedimds/identity-header)
  curl -fsS -H "X-IDENTITY-HEADER: $header" \
    "http://127.0.0.1:8181/msi/token?api-version=2019-08-01&resource=https://graph.microsoft.com" \
    | "$py" tests/capture/jwt_claims.py access_token tid >"$dir/compose-claims"
  curl -fsS -H "Metadata: true" \
    "http://127.0.0.1:8181/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://graph.microsoft.com" \
    | "$py" tests/capture/jwt_claims.py access_token tid >>"$dir/compose-claims"
}
