//! Days of service on paused time: keys in use stay served through hourly token lifetimes,
//! upstream outages and throttling, and everything a key holds (its slot, its token, its
//! refresh timer) leaves with it, so memory follows the keys in use.

use std::time::Duration;

use fedimds_sim::fault::{Fault, Route};
use fedimds_sim::SimConfig;
use tokio::time::sleep;

use crate::support::*;

fn path(resource: &str) -> String {
    format!("/metadata/identity/oauth2/token?api-version=2018-02-01&resource={resource}")
}

#[tokio::test(start_paused = true)]
async fn three_days_of_hourly_tokens_keep_only_what_is_in_use() {
    let mut sim = SimConfig::demo();
    sim.entra_token_lifetime = Duration::from_secs(3600);
    let h = start_with(sim, |raw| {
        raw.cache.idle_ttl = Some(Duration::from_secs(15 * 60).into());
    })
    .await;
    const IN_USE: usize = 20;
    const CHURN: usize = 200;
    let in_use: Vec<String> = (0..IN_USE)
        .map(|i| format!("https://in-use-{i}.example"))
        .collect();

    // A burst of keys that are asked for once and never again.
    for i in 0..CHURN {
        let (status, body) = h.oneshot(&path(&format!("https://once-{i}.example"))).await;
        assert_eq!(status, 200, "{body}");
    }
    let mut served = 0usize;
    let mut outages = 0usize;
    // Three days minute by minute; every key in use asked for every ten minutes.
    for minute in 0..(3 * 24 * 60) {
        // A three-minute Entra outage every eight hours, and a throttle (429, Retry-After)
        // for three minutes on the second day: cached tokens, refreshed ahead, carry the keys
        // through.
        match minute % (8 * 60) {
            200 => {
                h.sim.push_fault(Route::Entra, Fault::status(503).forever());
                outages += 1;
            }
            203 => h.sim.clear_faults(),
            _ => {}
        }
        if minute == 24 * 60 + 500 {
            h.sim.push_fault(
                Route::Entra,
                Fault::status(429).retry_after("120").forever(),
            );
        }
        if minute == 24 * 60 + 503 {
            h.sim.clear_faults();
        }
        if minute % 10 == 0 {
            for resource in &in_use {
                let (status, body) = h.oneshot(&path(resource)).await;
                assert_eq!(status, 200, "minute {minute}, {resource}: {body}");
                served += 1;
            }
        }
        sleep(Duration::from_secs(60)).await;
    }
    assert_eq!(served, IN_USE * 3 * 24 * 6);
    assert_eq!(outages, 9);
    // The burst's keys went idle three days ago; the keys in use were asked for eleven
    // minutes ago, within the idle time: only they are left, each with one timer.
    sleep(Duration::from_secs(60)).await;
    let (keys, timers) = (h.app.cache.key_count(), h.app.cache.timers());
    assert_eq!(
        keys, IN_USE as u64,
        "slots of keys no longer used were kept"
    );
    assert!(timers <= IN_USE as u64, "{timers} timers for {IN_USE} keys");
    // Tokens were refreshed ahead throughout, not fetched on demand after expiry.
    let exchanges = h
        .sim
        .exchanges()
        .iter()
        .filter(|e| e.outcome.is_ok())
        .count();
    assert!(
        exchanges >= IN_USE * 3 * 24,
        "{exchanges} exchanges: hourly tokens of {IN_USE} keys over three days need one an hour each"
    );
}

#[tokio::test(start_paused = true)]
async fn a_key_that_leaves_the_cache_takes_its_timer_and_token_with_it() {
    let h = start_with(SimConfig::demo(), |raw| {
        raw.cache.idle_ttl = Some(Duration::from_secs(60).into());
    })
    .await;
    for i in 0..50 {
        let (status, _) = h.oneshot(&path(&format!("https://r{i}.example"))).await;
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
