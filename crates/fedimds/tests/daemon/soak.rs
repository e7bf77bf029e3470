//! Days of service on paused time: the soak scenario ([`scenario`]) for a hundred keys over
//! three days (the soak target runs it for a thousand over thirty), and eviction.

use std::time::Duration;

use fedimds_sim::SimConfig;
use tokio::time::sleep;

use crate::support::*;

pub mod scenario;

#[tokio::test(start_paused = true)]
async fn three_days_of_hourly_tokens_for_a_hundred_keys_keep_only_what_is_in_use() {
    scenario::run(3, 100).await;
}

#[tokio::test(start_paused = true)]
async fn a_key_that_leaves_the_cache_takes_its_timer_and_token_with_it() {
    let h = start_with(SimConfig::demo(), |raw| {
        raw.cache.idle_ttl = Some(Duration::from_secs(60).into());
    })
    .await;
    for i in 0..50 {
        let resource = format!("https://r{i}.example");
        let (status, _) = h
            .oneshot(&format!(
                "/metadata/identity/oauth2/token?api-version=2018-02-01&resource={resource}"
            ))
            .await;
        assert_eq!(status, 200);
    }
    assert_eq!(h.app.cache.timers(), 50, "one refresh timer per key");
    // Idle past the TTL; nobody asks: housekeeping evicts them, and their timers go too,
    // long before the tokens' refresh points (half an hour away).
    sleep(Duration::from_secs(90)).await;
    assert_eq!(h.app.cache.key_count(), 0);
    tokio::task::yield_now().await;
    assert_eq!(h.app.cache.timers(), 0, "timers outlived their keys");
}
