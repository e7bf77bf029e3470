//! Thirty days on paused time (issue 16): a thousand keys in use, hourly tokens, Entra outages
//! and throttling; at the end the daemon holds exactly what the keys in use need. The
//! scenario is `tests/daemon/soak/scenario.rs` (the daemon suite runs it for three days).
//!
//! Not run by a plain `cargo test` (`test = false` in Cargo.toml): unoptimized, its 800,000
//! exchanges take five minutes. `tests/suites/soak.sh` runs it with the daemon and the
//! simulator optimized: about half a minute to build, a minute and a quarter to run.

// A test crate has no public API: `pub` in its modules only shares helpers between them.
#![allow(unreachable_pub)]

// The harness of the daemon suite; this target uses a part of it.
#[allow(dead_code, unused_imports)]
#[path = "daemon/support.rs"]
mod support;

#[path = "daemon/soak/scenario.rs"]
mod scenario;

#[tokio::test(start_paused = true)]
async fn thirty_days_of_hourly_tokens_for_a_thousand_keys_keep_only_what_is_in_use() {
    scenario::run(30, 1000).await;
}
