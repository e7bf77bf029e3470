//! One throttle per app: an Entra 429 for one key parks every key of that app until its
//! Retry-After lapses; cached tokens keep being served, cold callers get 503 at once.

use std::time::Duration;

use fedimds_sim::fault::{Fault, Route};

use crate::support::*;

const VAULT: &str = "https://vault.azure.net";

async fn get(h: &Harness, resource: &str) -> (u16, Option<String>, serde_json::Value) {
    let r = h
        .http
        .get(format!(
            "{}/metadata/identity/oauth2/token?api-version=2018-02-01&resource={resource}",
            h.url
        ))
        .header("Metadata", "true")
        .send()
        .await
        .unwrap();
    let retry_after = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let (status, body) = status_json(r).await;
    (status, retry_after, body)
}

#[tokio::test(start_paused = true)]
async fn a_429_for_one_key_parks_every_key_of_the_app() {
    let h = start().await;
    let (status, _, body) = get(&h, GRAPH).await;
    assert_eq!(status, 200, "{body}");
    let graph = body["access_token"].as_str().unwrap().to_owned();
    h.sim
        .push_fault(Route::Entra, Fault::status(429).retry_after("120").times(1));
    let (status, retry_after, body) = get(&h, VAULT).await;
    assert_eq!(status, 503, "{body}");
    assert!(retry_after.is_some(), "503 with Retry-After");
    let calls = h.sim.counters().entra;
    assert_eq!(calls, 2);
    // Within the window: another cold key of the same app is refused at once, with no call;
    // a cached token is still served.
    for resource in ["https://r1.example", "https://r2.example", VAULT] {
        let (status, retry_after, body) = get(&h, resource).await;
        assert_eq!(status, 503, "{resource}: {body}");
        let wait: u64 = retry_after.unwrap().parse().unwrap();
        assert!((100..=120).contains(&wait), "Retry-After {wait}");
        assert!(body.to_string().contains("429"), "{body}");
    }
    let (status, _, body) = get(&h, GRAPH).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["access_token"], graph.as_str());
    assert_eq!(
        h.sim.counters().entra,
        calls,
        "no Entra call while the app is throttled"
    );
    // Once it lapses, every key is fetched again.
    tokio::time::sleep(Duration::from_secs(125)).await;
    for resource in [VAULT, "https://r1.example"] {
        let (status, _, body) = get(&h, resource).await;
        assert_eq!(status, 200, "{resource}: {body}");
    }
    let text = h.metrics().await;
    assert!(
        text.contains("fedimds_upstream_throttles_total 1"),
        "{text}"
    );
    assert!(text.contains("fedimds_upstream_throttled 0"), "{text}");
}

/// A loop block (AADSTS50196) or a throttled tenant (AADSTS90055) for one key parks every
/// key of that app as a 429 does: asking Entra for the app's other resources meanwhile would
/// only prolong the block.
#[tokio::test(start_paused = true)]
async fn a_loop_or_tenant_block_for_one_key_parks_every_key_of_the_app() {
    for code in [50196, 90055] {
        let h = start().await;
        let (status, _, body) = get(&h, GRAPH).await;
        assert_eq!(status, 200, "{body}");
        let graph = body["access_token"].as_str().unwrap().to_owned();
        h.sim.push_fault(Route::Entra, Fault::aadsts(code).times(1));
        let (status, retry_after, body) = get(&h, VAULT).await;
        assert_eq!(status, 503, "AADSTS{code}: {body}");
        assert!(retry_after.is_some(), "503 with Retry-After");
        let calls = h.sim.counters().entra;
        assert_eq!(calls, 2, "AADSTS{code}: the block is not retried");
        // Other cold keys of the app: refused at once, no call, the block named.
        for resource in ["https://r1.example", "https://r2.example"] {
            let (status, retry_after, body) = get(&h, resource).await;
            assert_eq!(status, 503, "AADSTS{code}, {resource}: {body}");
            let wait: u64 = retry_after.unwrap().parse().unwrap();
            assert!((290..=300).contains(&wait), "Retry-After {wait}");
            let text = body.to_string();
            assert!(text.contains(&format!("AADSTS{code}")), "{text}");
            assert!(text.contains("for any resource"), "{text}");
        }
        // The token held is still served.
        let (status, _, body) = get(&h, GRAPH).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["access_token"], graph.as_str());
        assert_eq!(
            h.sim.counters().entra,
            calls,
            "AADSTS{code}: no Entra call while the app is blocked"
        );
        let text = h.metrics().await;
        assert!(text.contains("fedimds_upstream_throttled 1"), "{text}");
        // Once the block's wait is over, the app's other keys are fetched again.
        tokio::time::sleep(Duration::from_secs(310)).await;
        let (status, _, body) = get(&h, "https://r1.example").await;
        assert_eq!(status, 200, "AADSTS{code}: {body}");
        let text = h.metrics().await;
        assert!(
            text.contains("fedimds_upstream_throttles_total 1"),
            "{text}"
        );
        assert!(text.contains("fedimds_upstream_throttled 0"), "{text}");
    }
}
