//! Token revocation as MSAL plays it: a resource refuses token T with a claims challenge, the
//! client asks again with `token_sha256_to_refresh=SHA-256(T)` and its capabilities
//! (`xms_cc=cp1`); fedimds drops T, fetches T' (asking Entra with the capabilities as
//! `claims`), and never serves T again.

use fedimds_sim::SimConfig;

use crate::support::*;

fn sha256_hex(token: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, token.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn token_of(body: &serde_json::Value) -> String {
    body["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("a token: {body}"))
        .to_owned()
}

#[tokio::test]
async fn a_token_the_resource_refused_is_never_served_again() {
    let h = start().await;
    let cp1 = "&xms_cc=cp1";
    let (status, body) = h.imds_token(GRAPH, cp1).await;
    assert_eq!(status, 200, "{body}");
    let first = token_of(&body);
    // Asked for with the client's capabilities: Entra got them as claims, and says so.
    let exchanges = h.sim.exchanges();
    assert_eq!(
        exchanges.last().unwrap().claims.as_deref(),
        Some(r#"{"access_token":{"xms_cc":{"values":["cp1"]}}}"#)
    );
    assert_eq!(claims(&first)["xms_cc"], serde_json::json!(["cp1"]));
    // xms_cc alone never bypasses the cache.
    let (_, body) = h.imds_token(GRAPH, "&xms_cc=CP1").await;
    assert_eq!(
        token_of(&body),
        first,
        "capabilities in any case are the same key"
    );
    assert_eq!(h.sim.exchanges().len(), 1);

    // The resource refuses T; the client presents its hash.
    h.sim.revoke(&first);
    assert!(!h.sim.resource_accepts(&first));
    let refused = format!("{cp1}&token_sha256_to_refresh={}", sha256_hex(&first));
    let (status, body) = h.imds_token(GRAPH, &refused).await;
    assert_eq!(status, 200, "{body}");
    let second = token_of(&body);
    assert_ne!(second, first, "a new token");
    assert!(h.sim.resource_accepts(&second));
    assert_eq!(
        h.sim.exchanges().len(),
        2,
        "one exchange for the refused token"
    );

    // The next caller that presents the same hash (in upper case, as some clients write it)
    // gets T' from the cache: T was already replaced.
    let again = format!(
        "{cp1}&token_sha256_to_refresh={}",
        sha256_hex(&first).to_uppercase()
    );
    let (_, body) = h.imds_token(GRAPH, &again).await;
    assert_eq!(token_of(&body), second);
    let (_, body) = h.imds_token(GRAPH, cp1).await;
    assert_eq!(token_of(&body), second, "T is never served again");
    assert_eq!(
        h.sim.exchanges().len(),
        2,
        "no Entra call for a hash already replaced"
    );

    // Tokens without capabilities are other tokens, with no xms_cc claim.
    let (_, body) = h.imds_token(GRAPH, "").await;
    let plain = token_of(&body);
    assert_ne!(plain, second);
    assert!(claims(&plain).get("xms_cc").is_none());
    assert_eq!(h.sim.exchanges().last().unwrap().claims, None);
}

#[tokio::test]
async fn a_crowd_presenting_one_refused_token_costs_one_exchange_and_a_loop_costs_nothing() {
    let dir = temp_dir("revocation-audit");
    let audit = dir.join("audit.jsonl");
    let h = std::sync::Arc::new(
        start_with(SimConfig::demo(), |raw| {
            raw.cache.min_forced_refresh = Some(std::time::Duration::from_secs(3600).into());
            raw.audit.path = Some(audit.display().to_string());
        })
        .await,
    );
    let (_, body) = h.imds_token(GRAPH, "").await;
    let first = token_of(&body);
    let refused = format!("&token_sha256_to_refresh={}", sha256_hex(&first));
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let (h, refused) = (h.clone(), refused.clone());
        tasks.push(tokio::spawn(
            async move { h.imds_token(GRAPH, &refused).await },
        ));
    }
    let mut tokens = std::collections::HashSet::new();
    for t in tasks {
        let (status, body) = t.await.unwrap();
        assert_eq!(status, 200, "{body}");
        tokens.insert(token_of(&body));
    }
    assert_eq!(tokens.len(), 1, "every caller got the one new token");
    assert!(!tokens.contains(&first));
    assert_eq!(
        h.sim.exchanges().len(),
        2,
        "one exchange for a hundred callers"
    );
    // Presenting the new token's hash at once, and again and again: within
    // cache.min_forced_refresh a key's token is dropped at most once; the current one is served.
    let second = tokens.into_iter().next().unwrap();
    let loop_hash = format!("&token_sha256_to_refresh={}", sha256_hex(&second));
    for _ in 0..5 {
        let (_, body) = h.imds_token(GRAPH, &loop_hash).await;
        assert_eq!(token_of(&body), second);
    }
    assert_eq!(
        h.sim.exchanges().len(),
        2,
        "a caller cannot drive Entra in a loop"
    );

    // Counted, and audited as such.
    let text = h.metrics().await;
    assert!(
        text.contains("fedimds_cache_forced_refreshes_total 1"),
        "{text}"
    );
    assert!(
        text.contains(r#"fedimds_cache_lookups_total{result="forced"} 1"#),
        "{text}"
    );
    let mut forced = Vec::new();
    for _ in 0..100 {
        forced = std::fs::read_to_string(&audit)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|l| l["cache"] == "forced")
            .collect();
        if !forced.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(forced.len(), 1, "one audit line for the forced refresh");
    let line = &forced[0];
    assert_eq!(line["target"], "litware");
    assert_eq!(line["resource"], GRAPH);
    assert!(!line.to_string().contains(&first) && !line.to_string().contains(&second));
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_hash_that_is_no_hash_names_no_token_and_a_bad_capability_is_refused() {
    let h = start().await;
    let (_, body) = h.imds_token(GRAPH, "").await;
    let first = token_of(&body);
    // Lenient on the way in: a value that is no SHA-256 matches nothing.
    let (status, body) = h.imds_token(GRAPH, "&token_sha256_to_refresh=ab").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(token_of(&body), first);
    assert_eq!(h.sim.exchanges().len(), 1);
    // A capability Entra could not make sense of is refused before it gets there.
    let (status, body) = h.imds_token(GRAPH, "&xms_cc=cp1,a%20b").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(h.sim.exchanges().len(), 1);
}

#[tokio::test]
async fn unknown_capabilities_make_no_keys_of_their_own() {
    let h = start().await;
    let mut tokens = std::collections::HashSet::new();
    for caps in ["", "&xms_cc=a1", "&xms_cc=a2", "&xms_cc=zz9,x"] {
        let (status, body) = h.imds_token(GRAPH, caps).await;
        assert_eq!(status, 200, "{body}");
        tokens.insert(token_of(&body));
    }
    assert_eq!(
        tokens.len(),
        1,
        "one key: capabilities Entra does not know are dropped"
    );
    assert_eq!(h.sim.exchanges().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_refused_token_stays_in_service_while_no_new_one_can_come() {
    use fedimds_sim::fault::{Fault, Route};
    let h = start_with(SimConfig::demo(), |raw| {
        raw.cache.error_ttl = Some(std::time::Duration::from_secs(3600).into());
    })
    .await;
    let (_, body) = h.imds_token(GRAPH, "").await;
    let first = token_of(&body);
    // Used after its fetch, so it is refreshed ahead of expiry.
    tokio::time::sleep(std::time::Duration::from_secs(60)).await;
    assert_eq!(token_of(&h.imds_token(GRAPH, "").await.1), first);
    // Entra starts refusing; the background refresh before expiry fails, and the failure is
    // remembered (for an hour here) while the token is still good.
    h.sim
        .push_fault(Route::Entra, Fault::aadsts(700016).forever());
    tokio::time::sleep(std::time::Duration::from_secs(58 * 60)).await;
    let refused = format!("&token_sha256_to_refresh={}", sha256_hex(&first));
    let (status, body) = h.imds_token(GRAPH, &refused).await;
    assert_eq!(
        status, 200,
        "the token still served rather than the failure: {body}"
    );
    assert_eq!(token_of(&body), first);
}
