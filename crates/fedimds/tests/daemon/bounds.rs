//! A caller cannot turn the cache into a flood: spellings of one resource share one key, cold
//! keys wait for a bounded number of fetches, the cache is weighed in bytes, and `/metrics`
//! stays small whatever the number of keys.

use std::time::Duration;

use fedimds_sim::fault::{Fault, Route};
use fedimds_sim::SimConfig;

use crate::support::*;

#[tokio::test]
async fn spellings_of_an_allowed_resource_share_one_key_and_one_exchange() {
    let h = start_with(SimConfig::demo(), |raw| {
        target(raw, "litware").resources = strings(&["https://graph.microsoft.com"]);
    })
    .await;
    let mut asked = Vec::new();
    for i in 0..60u32 {
        // Case changed letter by letter, and up to two trailing slashes.
        let spelling: String = "https://graph.microsoft.com"
            .chars()
            .enumerate()
            .map(|(n, c)| {
                if (i >> (n % 7)) & 1 == 1 {
                    c.to_ascii_uppercase()
                } else {
                    c
                }
            })
            .collect::<String>()
            + &"/".repeat((i % 3) as usize);
        let (status, body) = h.imds_token(&spelling, "").await;
        assert_eq!(status, 200, "{spelling}: {body}");
        // The answer echoes the caller's own spelling, as clients expect.
        assert_eq!(body["resource"], spelling.as_str());
        asked.push(spelling);
    }
    asked.sort();
    asked.dedup();
    assert!(asked.len() > 20, "the spellings differ: {}", asked.len());
    let exchanges = h.sim.exchanges();
    assert_eq!(exchanges.len(), 1, "one Entra call for every spelling");
    assert_eq!(exchanges[0].scope, "https://graph.microsoft.com/.default");
    assert_eq!(h.app.cache.key_count(), 1);
}

#[tokio::test(start_paused = true)]
async fn cold_keys_wait_for_a_bounded_number_of_fetches() {
    let h = start_with(SimConfig::demo(), |raw| {
        raw.upstream.max_concurrent_fetches = Some(2);
    })
    .await;
    // Warm the assertion, so only exchanges remain.
    assert_eq!(h.imds_token(GRAPH, "").await.0, 200);
    h.sim
        .push_fault(Route::Entra, Fault::slow(Duration::from_secs(2)).times(8));
    let started = tokio::time::Instant::now();
    let calls: Vec<_> = (0..8)
        .map(|i| {
            let url = format!(
                "{}/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://r{i}.example",
                h.url
            );
            let http = h.http.clone();
            tokio::spawn(async move {
                http.get(url).header("Metadata", "true").send().await.unwrap().status()
            })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap().as_u16(), 200);
    }
    // Eight slow exchanges, two at a time: four rounds of two seconds (on paused time).
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(8),
        "{took:?}: more than two ran at once"
    );
}

#[tokio::test]
async fn the_cache_is_bounded_in_bytes_and_metrics_stay_small() {
    let h = start_with(SimConfig::demo(), |raw| {
        raw.cache.max_bytes = Some(1024 * 1024);
    })
    .await;
    // Long resources, each a key of its own: about 3.5 KB an entry with its token.
    let padding = "p".repeat(900);
    for i in 0..400 {
        let resource = format!("https://r{i}.example/{padding}");
        let (status, body) = h.imds_token(&resource, "").await;
        assert_eq!(status, 200, "{body}");
    }
    let keys = h.app.cache.key_count();
    assert!(keys < 400, "{keys} keys: the byte bound evicted none");
    let text = h.metrics().await;
    let bytes: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("fedimds_cache_bytes "))
        .expect("the cache's weight is exported")
        .parse()
        .unwrap();
    assert!(bytes <= 1024.0 * 1024.0, "{bytes}");
    let series = text
        .lines()
        .filter(|l| l.starts_with("fedimds_token_expiry_seconds{"))
        .count();
    assert!(series <= 64, "{series} expiry series");
    assert!(
        text.contains("fedimds_token_expiry_min_seconds "),
        "the soonest is its own gauge"
    );
    assert!(text.len() < 200_000, "/metrics is {} bytes", text.len());
}

#[tokio::test]
async fn an_overlong_resource_is_refused_before_any_fetch() {
    let h = start().await;
    let resource = format!("https://x.example/{}", "a".repeat(1100));
    let (status, body) = h.imds_token(&resource, "").await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("longer than 1024"),
        "{body}"
    );
    assert!(h.sim.exchanges().is_empty());
}

#[tokio::test]
async fn a_caller_has_a_budget_of_new_keys_and_others_keep_theirs() {
    const A: &str = "secret-of-app-a-0123456789";
    const B: &str = "secret-of-app-b-0123456789";
    let h = start_with(SimConfig::demo(), |raw| {
        raw.server.new_keys_per_second = Some(1.0);
        for (name, secret) in [("a", A), ("b", B)] {
            raw.callers.push(RawCaller {
                name: Some(name.into()),
                secret: Some(secret.into()),
                targets: strings(&["*"]),
                ..RawCaller::default()
            });
        }
    })
    .await;
    let msi = |secret: &'static str, resource: String| {
        let (http, url) = (h.http.clone(), h.url.clone());
        async move {
            let r = http
                .get(format!(
                    "{url}/msi/token?api-version=2019-08-01&resource={resource}"
                ))
                .header("X-IDENTITY-HEADER", secret)
                .send()
                .await
                .unwrap();
            let retry_after = r.headers().get("retry-after").is_some();
            let (status, body) = status_json(r).await;
            (status, retry_after, body)
        }
    };
    // A burst of ten seconds' worth, then refused with the reason and a Retry-After.
    for i in 0..10 {
        let (status, _, body) = msi(A, format!("https://a{i}.example")).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, retry_after, body) = msi(A, "https://a10.example".to_owned()).await;
    assert_eq!(status, 429, "{body}");
    assert!(retry_after);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("new_keys_per_second"),
        "{body}"
    );
    let exchanges = h.sim.exchanges().len();
    assert_eq!(exchanges, 10, "no key, no Entra call for the refused one");
    // Its cached tokens are still served; another caller keeps its own budget.
    assert_eq!(msi(A, "https://a0.example".to_owned()).await.0, 200);
    assert_eq!(msi(B, "https://b0.example".to_owned()).await.0, 200);
}

fn token_path(resource: &str) -> String {
    format!("/metadata/identity/oauth2/token?api-version=2018-02-01&resource={resource}")
}

fn exchanges_for(h: &Harness, resource: &str) -> usize {
    let scope = format!("{resource}/.default");
    h.sim
        .exchanges()
        .iter()
        .filter(|e| e.scope == scope && e.outcome.is_ok())
        .count()
}

#[tokio::test(start_paused = true)]
async fn a_key_that_left_the_cache_is_fetched_anew_into_the_cache() {
    // A hit finds a recent key's slot without moka (`cache/front.rs`): once the key leaves,
    // that slot must not be served, nor fetched into outside the cache.
    let h = start_with(SimConfig::demo(), |raw| {
        raw.cache.idle_ttl = Some(Duration::from_secs(60).into());
    })
    .await;
    let resource = "https://again.example";
    for _ in 0..3 {
        assert_eq!(h.oneshot(&token_path(resource)).await.0, 200);
    }
    assert_eq!(exchanges_for(&h, resource), 1);
    tokio::time::sleep(Duration::from_secs(90)).await;
    assert_eq!(h.app.cache.key_count(), 0, "idle, so evicted");
    assert_eq!(h.oneshot(&token_path(resource)).await.0, 200);
    assert_eq!(exchanges_for(&h, resource), 2, "fetched anew");
    assert_eq!(
        h.app.cache.key_count(),
        1,
        "into the cache, not a slot it let go"
    );
    tokio::task::yield_now().await;
    assert_eq!(h.app.cache.timers(), 1);
    assert_eq!(h.oneshot(&token_path(resource)).await.0, 200);
    assert_eq!(exchanges_for(&h, resource), 2, "and served from it");
}

#[tokio::test(start_paused = true)]
async fn a_key_in_use_stays_when_the_byte_bound_evicts() {
    // Hits on a recent key bypass moka, whose eviction would then see the key as unused;
    // housekeeping reads it there every ten seconds, so the bound evicts the cold keys.
    let h = start_with(SimConfig::demo(), |raw| {
        raw.cache.max_bytes = Some(1024 * 1024);
    })
    .await;
    // Long resources: about 3.5 KB an entry, so some 300 fit.
    let padding = "p".repeat(900);
    let hot = "https://hot.example";
    assert_eq!(h.oneshot(&token_path(hot)).await.0, 200);
    for round in 0..12 {
        for i in 0..40 {
            let cold = format!("https://cold-{round}-{i}.example/{padding}");
            assert_eq!(h.oneshot(&token_path(&cold)).await.0, 200);
        }
        for _ in 0..20 {
            assert_eq!(h.oneshot(&token_path(hot)).await.0, 200);
        }
        tokio::time::sleep(Duration::from_secs(11)).await;
    }
    let keys = h.app.cache.key_count();
    assert!(keys < 12 * 40, "{keys} keys: the byte bound evicted none");
    assert_eq!(exchanges_for(&h, hot), 1, "the key in use was evicted");
}

#[tokio::test(start_paused = true)]
async fn with_a_short_idle_time_idle_keys_leave_soon_after_it() {
    // Housekeeping runs every quarter of `cache.idle_ttl` (at most ten seconds): with five
    // seconds, a key not asked for again leaves within about seven and a half, not twenty.
    let h = start_with(SimConfig::demo(), |raw| {
        raw.cache.idle_ttl = Some(Duration::from_secs(5).into());
    })
    .await;
    let (idle, busy) = ("https://idle.example", "https://busy.example");
    assert_eq!(h.oneshot(&token_path(idle)).await.0, 200);
    for _ in 0..16 {
        assert_eq!(h.oneshot(&token_path(busy)).await.0, 200);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Eight seconds on: the idle key is gone, the busy one (asked every half second) stays.
    assert_eq!(h.app.cache.key_count(), 1, "the idle key is still held");
    assert_eq!(h.oneshot(&token_path(busy)).await.0, 200);
    assert_eq!(exchanges_for(&h, busy), 1, "the busy key was evicted");
}
