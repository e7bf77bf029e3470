# shellcheck shell=bash
# deploy.sh's systemd checks: the hardening directives, `systemd-analyze verify` silent, and
# `systemd-analyze security` exposure <= 2.0.
check_systemd() {
  local key out
  for key in DynamicUser=yes ProtectSystem=strict NoNewPrivileges=yes 'CapabilityBoundingSet=$' \
             RestrictAddressFamilies= StateDirectory= RuntimeDirectory=; do
    grep -q "^$key" deploy/systemd/fedimds.service || die "fedimds.service lacks $key"
  done
  grep -q '^ExecStart=/usr/local/lib/fedimds/capture-imds.sh$' deploy/systemd/fedimds-capture.service \
    || die "fedimds-capture.service must run the repo's capture script"

  out=$(in_mountns verify_units "$FEDIMDS" deploy/systemd/*.service) \
    || die "cannot run systemd-analyze in a private mount namespace"
  [ -z "$out" ] || die "systemd-analyze: $out"
  # Negative control: verify warns about a broken directive (and exits 0, hence the output check).
  mkdir -p "$WORK/units"
  sed 's/^ProtectSystem=strict/ProtectSystem=bogus/' deploy/systemd/fedimds.service >"$WORK/units/fedimds.service"
  out=$(in_mountns verify_units "$FEDIMDS" "$WORK/units/fedimds.service") \
    || die "cannot run systemd-analyze in a private mount namespace"
  [ -n "$out" ] || die "systemd-analyze verify missed a broken directive"
  say "ok: systemd units verify cleanly; fedimds.service exposure <= 2.0"
}

# In a fresh mount namespace (in_mountns): verify needs the ExecStart paths to exist, so a
# private /usr/local holds the real files. Prints what verify and security find; nothing when
# all is well.
verify_units() {
  local bin=$1 rc
  shift
  mount -t tmpfs tmpfs /usr/local
  install -D -m 0755 "$bin" /usr/local/bin/fedimds
  install -D -m 0755 deploy/capture/capture-imds.sh /usr/local/lib/fedimds/capture-imds.sh
  systemd-analyze verify "$@" 2>&1 || { rc=$?; echo "systemd-analyze verify exited $rc"; }
  systemd-analyze security --offline=yes --threshold=20 deploy/systemd/fedimds.service >/dev/null 2>&1 \
    || echo "exposure above 2.0: $(systemd-analyze security --offline=yes deploy/systemd/fedimds.service 2>&1 | tail -n 1)"
}
