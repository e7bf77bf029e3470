//! Refresh ahead and resilience, on paused tokio time with scripted simulator faults.
//! The simulator runs in the same paused runtime, so its scripted delays are paused too.

use std::time::Duration;

use fedimds_sim::fault::{Fault, Route};
use fedimds_sim::SimConfig;
use tokio::time::{sleep, Instant};

use crate::support::*;

fn token_of(body: &serde_json::Value) -> String {
    body["access_token"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test(start_paused = true)]
async fn refresh_happens_before_expiry_with_no_caller_waiting() {
    let h = start().await;
    let (_, first) = h.imds_token(GRAPH, "").await;
    let (_, _) = h.imds_token("https://vault.azure.net", "").await; // asked once, then idle
    sleep(Duration::from_secs(100)).await;
    assert_eq!(
        token_of(&h.imds_token(GRAPH, "").await.1),
        token_of(&first),
        "a hit"
    );
    assert_eq!(h.sim.counters().entra, 2);

    // The 3599 s token's refresh point is 5 minutes before expiry (3299 s).
    sleep(Duration::from_secs(3310 - 100)).await;
    let scopes: Vec<String> = h.sim.exchanges().iter().map(|e| e.scope.clone()).collect();
    assert_eq!(
        scopes,
        [
            "https://graph.microsoft.com/.default",
            "https://vault.azure.net/.default",
            "https://graph.microsoft.com/.default"
        ],
        "the used key was refreshed in the background; the idle one was not"
    );
    let started = Instant::now();
    let (status, now) = h.imds_token(GRAPH, "").await;
    assert_eq!(status, 200);
    assert_eq!(
        started.elapsed(),
        Duration::ZERO,
        "no caller waited on the refresh"
    );
    assert_ne!(
        token_of(&now),
        token_of(&first),
        "the refreshed token is served"
    );
    assert_eq!(h.sim.counters().entra, 3);
}

#[tokio::test(start_paused = true)]
async fn entra_down_two_hours_with_a_warm_cache() {
    let h = start().await;
    let (status, first) = h.imds_token(GRAPH, "").await;
    assert_eq!(status, 200);
    h.sim.push_fault(Route::Entra, Fault::status(503).forever());
    let start = Instant::now();
    let mut served_after_expiry = 0;
    let mut refused_before_expiry = 0;
    while start.elapsed() < Duration::from_secs(2 * 3600) {
        sleep(Duration::from_secs(60)).await;
        let age = start.elapsed();
        let (status, body) = h.imds_token(GRAPH, "").await;
        if age < Duration::from_secs(3599) {
            if status != 200 || token_of(&body) != token_of(&first) {
                refused_before_expiry += 1;
            }
            let left: u64 = body["expires_in"].as_str().unwrap_or("0").parse().unwrap();
            assert!(
                left > 0 && left <= 3599 - age.as_secs() + 1,
                "expires_in {left} at {age:?}"
            );
        } else if status == 200 {
            served_after_expiry += 1;
        } else {
            assert_eq!(status, 503, "{body}");
        }
    }
    assert_eq!(
        refused_before_expiry, 0,
        "every request succeeded until the token's real expiry"
    );
    assert_eq!(served_after_expiry, 0, "no expired token was served");
    // Backoff across failed fetches: a trickle, not a stream (2 h = 120 requests here).
    let calls = h.sim.counters().entra;
    assert!(calls < 80, "{calls} calls to Entra in two hours of outage");
}

#[tokio::test(start_paused = true)]
async fn retry_after_30_means_no_call_for_30_seconds() {
    let h = std::sync::Arc::new(start().await);
    h.sim
        .push_fault(Route::Entra, Fault::status(429).retry_after("30"));
    let caller = {
        let h = h.clone();
        tokio::spawn(async move { h.imds_token(GRAPH, "").await })
    };
    sleep(Duration::from_secs(29)).await;
    assert_eq!(
        h.sim.counters().entra,
        1,
        "no second call before Retry-After passed"
    );
    sleep(Duration::from_secs(2)).await;
    assert_eq!(h.sim.counters().entra, 2, "retried once it passed");
    // The waiting caller was answered within its bound (503 + Retry-After), not after 30 s.
    let (status, _) = caller.await.unwrap();
    assert_eq!(status, 503);
    assert_eq!(h.imds_token(GRAPH, "").await.0, 200);
}

#[tokio::test(start_paused = true)]
async fn a_thousand_callers_for_a_misconfigured_target_send_entra_a_handful() {
    let h = std::sync::Arc::new(start().await);
    let path = format!("/targets/unconsented/metadata/identity/oauth2/token?api-version=2018-02-01&resource={GRAPH}");
    for _round in 0..3 {
        let mut tasks = Vec::new();
        for _ in 0..1000 {
            let (h, path) = (h.clone(), path.clone());
            tasks.push(tokio::spawn(async move { h.oneshot(&path).await }));
        }
        for t in tasks {
            let (status, body) = t.await.unwrap();
            assert_eq!(status, 400);
            assert!(body["error_description"]
                .as_str()
                .unwrap()
                .contains("AADSTS700016"));
        }
        sleep(Duration::from_secs(10)).await;
    }
    let calls = h.sim.counters().entra;
    assert!(
        calls <= 2,
        "3000 callers over 30 s caused {calls} Entra calls"
    );
}

#[tokio::test(start_paused = true)]
async fn imds_410_for_a_minute_is_ridden_out() {
    let h = start().await;
    // Six 410s in a row: the attempts at about 0, 1, 3, 7, 15 and 31 s fail; the one at ~63 s works.
    h.sim.push_fault(Route::Imds, Fault::status(410).times(6));
    let (status, body) = h.imds_token(GRAPH, "").await;
    assert_eq!(
        status, 503,
        "the caller is answered within its bound: {body}"
    );
    sleep(Duration::from_secs(80)).await;
    let (status, body) = h.imds_token(GRAPH, "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(h.sim.counters().imds, 7);
}

#[tokio::test(start_paused = true)]
async fn a_hung_upstream_does_not_hang_callers() {
    let h = start().await;
    h.sim.push_fault(
        Route::Entra,
        Fault::slow(Duration::from_secs(3600)).forever(),
    );
    let started = Instant::now();
    let r = h.imds_request().send().await.unwrap();
    let waited = started.elapsed();
    assert_eq!(r.status().as_u16(), 503);
    assert!(r.headers().contains_key("retry-after"));
    assert!(
        waited <= Duration::from_secs(21),
        "answered after {waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn readiness_follows_prefetch() {
    let h = start_with(SimConfig::demo(), |raw| {
        target(raw, "litware").prefetch = strings(&["https://graph.microsoft.com"]);
    })
    .await;
    h.sim.push_fault(Route::Entra, Fault::status(503).times(2));
    let get = |path: &'static str| {
        let (http, url) = (h.http.clone(), h.url.clone());
        async move {
            http.get(format!("{url}{path}"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(get("/readyz").await, 503);
    assert_eq!(
        get("/healthz").await,
        200,
        "liveness does not wait for tokens"
    );
    sleep(Duration::from_secs(60)).await;
    assert_eq!(get("/readyz").await, 200);
    // The prefetched token is served from the cache.
    let before = h.sim.counters().entra;
    assert_eq!(h.imds_token(GRAPH, "").await.0, 200);
    assert_eq!(h.sim.counters().entra, before);
}

#[tokio::test(start_paused = true)]
async fn a_credential_mismatch_right_after_a_change_is_retried_once() {
    let h = start().await;
    // As Entra answers while a new federated credential propagates.
    h.sim.push_fault(Route::Entra, Fault::aadsts(70021));
    let (status, body) = h.imds_token(GRAPH, "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(h.sim.counters().entra, 2);
}

#[tokio::test(start_paused = true)]
async fn the_assertion_is_reused_then_refreshed_at_half_life() {
    let h = start().await;
    assert_eq!(h.imds_token(GRAPH, "").await.0, 200);
    // Keep the key in use for 13 hours: its token refreshes about every 55 minutes, each time
    // with the cached 24 h assertion until that is half spent.
    for _ in 0..(13 * 60) {
        sleep(Duration::from_secs(60)).await;
        assert_eq!(h.imds_token(GRAPH, "").await.0, 200);
    }
    assert!(h.sim.counters().entra >= 14, "{:?}", h.sim.counters());
    assert_eq!(
        h.sim.counters().imds,
        2,
        "one assertion for 12 hours, then a fresh one"
    );
}

#[tokio::test(start_paused = true)]
async fn an_expired_assertion_is_replaced_and_the_exchange_retried_once() {
    let h = start().await;
    // As Entra answers when the assertion it got had expired.
    h.sim.push_fault(Route::Entra, Fault::aadsts(700024));
    let (status, body) = h.imds_token(GRAPH, "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(h.sim.counters().entra, 2, "one retry");
    assert_eq!(h.sim.counters().imds, 2, "with a freshly fetched assertion");
}

#[tokio::test(start_paused = true)]
async fn a_failed_refresh_is_remembered_until_a_fetch_succeeds() {
    let h = start().await;
    let gauge = |text: String| {
        text.lines()
            .find_map(|l| l.strip_prefix("fedimds_cache_remembered_failures "))
            .map(str::to_owned)
    };
    assert_eq!(h.imds_token(GRAPH, "").await.0, 200);
    assert_eq!(h.app.cache.remembered_failures(), 0);
    // Entra goes down before the refresh window (2999 to 3299 s of the 3599 s token) and the
    // key is asked for meanwhile: its refresh comes due, and fails.
    sleep(Duration::from_secs(2900)).await;
    h.sim.push_fault(Route::Entra, Fault::status(503).forever());
    assert_eq!(h.imds_token(GRAPH, "").await.0, 200);
    sleep(Duration::from_secs(400)).await;
    let (status, body) = h.imds_token(GRAPH, "").await;
    assert_eq!(status, 200, "the cached token carries the key: {body}");
    assert_eq!(h.app.cache.remembered_failures(), 1);
    assert_eq!(gauge(h.metrics().await).as_deref(), Some("1"));
    // Entra is back: the next ask past the backoff refreshes the key, and the failure goes.
    h.sim.clear_faults();
    sleep(Duration::from_secs(60)).await;
    assert_eq!(h.imds_token(GRAPH, "").await.0, 200);
    sleep(Duration::from_secs(1)).await;
    assert_eq!(h.app.cache.remembered_failures(), 0);
    assert_eq!(gauge(h.metrics().await).as_deref(), Some("0"));
}

#[tokio::test(start_paused = true)]
async fn a_failed_refresh_is_retried_without_waiting_for_another_caller() {
    // Asked at 0 and 30 minutes of an hour's token; its refresh (50-55 minutes) meets an Entra
    // outage that ends at 55:10. Nobody asks again until 61 minutes: the retries carry on
    // (the use that made the refresh still stands), so that caller gets a new token from the
    // cache, not a wait for a fetch after the old one lapsed.
    let mut sim = SimConfig::demo();
    sim.entra_token_lifetime = Duration::from_secs(3600);
    let h = start_with(sim, |_| {}).await;
    let path = "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://r.example";
    let fetched = |h: &Harness| {
        h.sim
            .exchanges()
            .iter()
            .filter(|e| e.outcome.is_ok())
            .count()
    };
    let t0 = Instant::now();
    let at = |min: u64, sec: u64| t0 + Duration::from_secs(min * 60 + sec);
    assert_eq!(h.oneshot(path).await.0, 200);
    tokio::time::sleep_until(at(30, 0)).await;
    assert_eq!(h.oneshot(path).await.0, 200);
    tokio::time::sleep_until(at(49, 50)).await;
    h.sim.push_fault(Route::Entra, Fault::status(503).forever());
    tokio::time::sleep_until(at(55, 10)).await;
    h.sim.clear_faults();
    tokio::time::sleep_until(at(60, 59)).await;
    assert_eq!(
        fetched(&h),
        2,
        "the failed refresh was not retried before the token lapsed"
    );
    tokio::time::sleep_until(at(61, 0)).await;
    assert_eq!(h.oneshot(path).await.0, 200);
    assert_eq!(fetched(&h), 2, "the caller waited for a fetch");
}
