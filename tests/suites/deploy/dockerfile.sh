# shellcheck shell=bash
# deploy.sh's Dockerfile check (dockerfile.py says what it holds the final stage to).
check_dockerfile() {
  "$PY" tests/suites/deploy/dockerfile.py || die "the Dockerfile breaks the promises above"
  say "ok: Dockerfile: distroless final stage, numeric non-root user, no shell, nothing exposed"
}
