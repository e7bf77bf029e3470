# shellcheck shell=bash
# deploy.sh's check of README's "## Deploy" snippets (readme.py prints how many it checked).
check_readme() {
  "$PY" tests/suites/deploy/readme.py || die "README.md's '## Deploy' section is not what it copies"
}
