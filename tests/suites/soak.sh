#!/usr/bin/env bash
# Thirty days on paused time (issue 16): crates/fedimds/tests/soak.rs runs the soak scenario
# (crates/fedimds/tests/daemon/soak/scenario.rs) for a thousand keys in use over thirty days of
# hourly tokens, with Entra outages and 429 windows scripted in, and checks that every ask was
# served, that tokens were refreshed ahead (Entra requests between the bounds that a failure
# to refresh and a refresh storm would each cross), and that at the end the slots, the refresh
# timers, the tasks and the remembered failures are those of the keys in use, none more.
#
# It is `cargo test`, with the daemon and the simulator compiled at opt-level 1 (the test
# profile's dependencies are at 2 already, Cargo.toml): unoptimized, its 800,000 exchanges and
# 960,000 requests take five minutes; optimized, a minute and a quarter. Only those two
# packages are built again (half a minute), in the test profile, so the dependencies that
# `cargo test --workspace` built are reused; `cargo test --release` would build every
# dependency again (ten minutes on a 2-core machine). The daemon suite runs the same scenario
# unoptimized, for three days and a hundred keys.
set -euo pipefail
# shellcheck source=tests/suites/lib.sh
source "$(dirname "$0")/lib.sh"
suite_init soak

# No debug info for them either: a third less to build, and a failure still names its line.
optimized=(
  --config 'profile.test.package.fedimds.opt-level=1'
  --config 'profile.test.package.fedimds-sim.opt-level=1'
  --config 'profile.test.package.fedimds.debug=0'
  --config 'profile.test.package.fedimds-sim.debug=0'
)
started=$(date +%s)
say "cargo test --no-run -p fedimds --test soak (fedimds and fedimds-sim at opt-level 1, no debug info)"
cargo test --locked -q -p fedimds --test soak "${optimized[@]}" --no-run
built=$(date +%s)
say "built in $((built - started)) s; thirty days for a thousand keys"
# --nocapture: the scenario prints what it counted (served, Entra requests, misses, failures).
cargo test --locked -q -p fedimds --test soak "${optimized[@]}" -- --nocapture thirty_days
say "passed in $(($(date +%s) - built)) s"
