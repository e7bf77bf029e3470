#!/usr/bin/env bash
# Renders the Prometheus operator's PrometheusRule from rules.yaml, the one source of truth:
#
#   deploy/monitoring/render-prometheusrule.sh > deploy/monitoring/prometheusrule.yaml
#
# The rule file's `groups:` is the PrometheusRule's spec as it stands, so this indents it under
# `spec:` line by line (its comments come along) and needs nothing but sed.
# tests/suites/monitoring.sh fails when the committed prometheusrule.yaml differs from this.
set -euo pipefail
rules=$(dirname "$0")/rules.yaml
grep -q '^groups:$' "$rules" || { echo "$0: $rules has no top-level 'groups:' line" >&2; exit 1; }
cat <<'HEADER'
# Generated from rules.yaml by render-prometheusrule.sh: edit rules.yaml, then run
#   deploy/monitoring/render-prometheusrule.sh > deploy/monitoring/prometheusrule.yaml
# Your Prometheus's ruleSelector must match this object's labels (add yours with kustomize or
# kubectl label).
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: fedimds
  labels:
    app.kubernetes.io/name: fedimds
    app.kubernetes.io/component: monitoring
spec:
HEADER
# From the `groups:` line on, every non-empty line two spaces deeper.
sed -n '/^groups:$/,$ { s/^./  &/; p }' "$rules"
