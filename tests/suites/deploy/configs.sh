# shellcheck shell=bash
# deploy.sh's run of every shipped config by the real binary: the ConfigMaps' (which
# check_kubernetes wrote to $WORK/configs) and compose's, each in its own network namespace.
POD_IP=10.89.0.2   # serve_in_pod's "pod IP"

check_configs() {
  local config name admin
  cp deploy/compose/fedimds.toml "$WORK/configs/compose.toml"
  for config in "$WORK"/configs/*.toml; do
    name=$(basename "$config")
    if [ "$name" = k8s-fedimds-node.toml ]; then
      in_netns serve_node_in_pod "$FEDIMDS" "$config" "$WORK/${name%.toml}.log" "$POD_IP" \
        || die "fedimds does not serve as deployed with $name, node mode (see its log)"
      say "ok: fedimds serves with $name: tokens at the node's address to known secrets only, each caller its own grants"
      continue
    fi
    case "$name" in
      k8s-*) admin=$POD_IP:8182 ;;
      *) admin=127.0.0.1:8182 ;;
    esac
    in_netns serve_in_pod "$FEDIMDS" "$config" "$WORK/${name%.toml}.log" "$admin" "$POD_IP" \
      || die "fedimds does not serve as deployed with $name (see its log)"
    say "ok: fedimds serves with $name: tokens on loopback only, admin at $admin"
  done

  # Negative control: a broken config must not start (and fail for that, not for the namespace).
  echo 'listen = [' >"$WORK/negative-control.toml"
  if in_netns serve_in_pod "$FEDIMDS" "$WORK/negative-control.toml" "$WORK/negative-control.log" \
       127.0.0.1:8182 "$POD_IP" 2>"$WORK/negative-control.err"; then
    die "fedimds started on a broken config: the config check is not working"
  fi
  grep -q "fedimds exited before it was ready" "$WORK/negative-control.err" \
    || die "the broken config failed for another reason: $(cat "$WORK/negative-control.err")"
}

# In a fresh namespace (in_netns), which has a "pod IP" (POD_IP on a dummy interface) besides
# loopback: fedimds must start and answer /healthz on 127.0.0.1:8181; an IMDS-mode request
# without the caller secret must get the dialect's answer (400 for the missing api-version), not
# allow_remote's 401; the admin listener must answer /healthz and /metrics (OpenMetrics, no
# token endpoints) at ADMIN (the pod IP for Kubernetes, loopback for compose), and the token
# port must not be reachable at the pod IP.
serve_in_pod() {
  local bin=$1 config=$2 log=$3 admin=$4 pod_ip=$5 code metrics
  ip link set lo up
  if ip link add pod0 type dummy 2>/dev/null; then
    ip link set pod0 up
    ip addr add "$pod_ip/32" dev pod0
  else
    ip addr add "$pod_ip/32" dev lo
  fi
  mount -t tmpfs -o mode=0755 tmpfs /run   # identity_header_file may point under /run
  mkdir -m 0700 /run/fedimds
  FEDIMDS_IDENTITY_HEADER=deploy-suite-caller-secret-0123456789 "$bin" serve --config "$config" >"$log" 2>&1 &
  PIDS+=($!)
  wait_for "fedimds" "$!" answers http://127.0.0.1:8181/healthz

  code=$(curl -s -o /dev/null -w "%{http_code}" --max-time 5 -H "Metadata: true" \
    http://127.0.0.1:8181/metadata/identity/oauth2/token)
  [ "$code" = 400 ] || die "secret-less IMDS request on 127.0.0.1:8181: HTTP $code, expected 400 (401 = allow_remote)"
  code=$(curl -s -o /dev/null -w "%{http_code}" --max-time 2 "http://$admin/healthz")
  [ "$code" = 200 ] || die "admin /healthz not answering at $admin (HTTP $code)"
  metrics=$(curl -fsS --max-time 2 "http://$admin/metrics") || die "admin /metrics not answering at $admin"
  grep -q "^fedimds_build_info" <<<"$metrics" || die "admin /metrics at $admin is not fedimds metrics"
  code=$(curl -s -o /dev/null -w "%{http_code}" --max-time 2 -H "Metadata: true" \
    "http://$admin/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://graph.microsoft.com")
  [ "$code" = 404 ] || die "the admin listener at $admin answers a token request with HTTP $code, expected 404"
  if curl -s -o /dev/null --max-time 2 "http://$pod_ip:8181/healthz"; then
    die "the token port answers at the pod IP $pod_ip:8181"
  fi
}

# Node mode (deploy/kubernetes/node): the daemon as the DaemonSet runs it, the callers' Secret
# files where it mounts them. Pods call it at an address (the node's, here the "pod IP"), so
# every request needs a known secret: none is 401; a caller's secret gets only its own grants
# (team-a asking for team-b's target is 403); the operator's secret matches no caller (403).
serve_node_in_pod() {
  local bin=$1 config=$2 log=$3 pod_ip=$4 code url
  ip link set lo up
  if ip link add pod0 type dummy 2>/dev/null; then
    ip link set pod0 up
    ip addr add "$pod_ip/32" dev pod0
  else
    ip addr add "$pod_ip/32" dev lo
  fi
  mount -t tmpfs -o mode=0755 tmpfs /run
  mkdir -p /run/secrets/fedimds-callers
  echo "deploy-suite-team-a-secret-0123456789" >/run/secrets/fedimds-callers/team-a
  echo "deploy-suite-team-b-secret-0123456789" >/run/secrets/fedimds-callers/team-b
  FEDIMDS_IDENTITY_HEADER=deploy-suite-operator-secret-0123456789 "$bin" serve --config "$config" >"$log" 2>&1 &
  PIDS+=($!)
  wait_for "fedimds" "$!" answers "http://$pod_ip:8182/healthz"
  url="http://$pod_ip:8181/targets/team-b-contoso/msi/token?api-version=2019-08-01&resource=https://graph.microsoft.com"
  code=$(curl -s -o /dev/null -w "%{http_code}" --max-time 5 "$url")
  [ "$code" = 401 ] || die "node mode: a request with no secret at $pod_ip:8181 got HTTP $code, expected 401"
  code=$(curl -s -o /dev/null -w "%{http_code}" --max-time 5 -H "X-IDENTITY-HEADER: deploy-suite-team-a-secret-0123456789" "$url")
  [ "$code" = 403 ] || die "node mode: team-a's secret for team-b's target got HTTP $code, expected 403"
  code=$(curl -s -o /dev/null -w "%{http_code}" --max-time 5 -H "X-IDENTITY-HEADER: deploy-suite-operator-secret-0123456789" "$url")
  [ "$code" = 403 ] || die "node mode: the operator's secret got HTTP $code, expected 403 (no [[callers]] rule)"
  code=$(curl -s -o /dev/null -w "%{http_code}" --max-time 5 -H "X-IDENTITY-HEADER: not-a-secret-anyone-was-given-0123" "$url")
  [ "$code" = 401 ] || die "node mode: an unknown secret got HTTP $code, expected 401"
}
