//! IMDS faithfulness that SDKs depend on.

use std::time::{Duration, Instant};

use crate::support::*;

#[tokio::test]
async fn probe_without_metadata_gets_imds_answer_at_once() {
    let h = start().await;
    // Upstream hangs: the probe must not wait on it.
    h.sim.push_fault(
        fedimds_sim::fault::Route::Imds,
        fedimds_sim::fault::Fault::slow(Duration::from_secs(30)),
    );
    for path in ["/metadata/identity/oauth2/token", "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://graph.microsoft.com"] {
        let started = Instant::now();
        let r = h.http.get(format!("{}{path}", h.url)).send().await.unwrap();
        let (status, body) = status_json(r).await;
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(status, 400);
        assert_eq!(body, serde_json::json!({"error":"invalid_request","error_description":"Required metadata header not specified"}));
    }
}

#[tokio::test]
async fn imds_rules() {
    let h = start().await;
    // Metadata value in any case; trailing slash on the path; percent-encoded values.
    let r = h
        .http
        .get(format!("{}/metadata/identity/oauth2/token/?api-version=2018-02-01&resource=https%3A%2F%2Fgraph.microsoft.com&xms_cc=cp1", h.url))
        .header("metadata", "TRUE")
        .send()
        .await
        .unwrap();
    let (status, body) = status_json(r).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["resource"], GRAPH);

    // X-Forwarded-For refused.
    let r = h
        .http
        .get(format!(
            "{}/metadata/identity/oauth2/token?api-version=2018-02-01&resource={GRAPH}",
            h.url
        ))
        .header("Metadata", "true")
        .header("X-Forwarded-For", "10.0.0.1")
        .send()
        .await
        .unwrap();
    let (status, body) = status_json(r).await;
    assert_eq!(status, 400);
    assert!(body.get("access_token").is_none());

    // Duplicate key refused.
    let (status, body) = h
        .imds_token(GRAPH, "&resource=https://vault.azure.net")
        .await;
    assert_eq!(status, 400);
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("resource"),
        "{body}"
    );

    // POST is 405.
    let r = h
        .http
        .post(format!(
            "{}/metadata/identity/oauth2/token?api-version=2018-02-01&resource={GRAPH}",
            h.url
        ))
        .header("Metadata", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 405);

    // Missing api-version: IMDS's own error.
    let (status, body) = h
        .imds(&format!("/metadata/identity/oauth2/token?resource={GRAPH}"))
        .await;
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap().contains("api-version"),
        "{body}"
    );
    assert!(body["newest-versions"].is_array());

    // Missing resource.
    let (status, body) = h
        .imds("/metadata/identity/oauth2/token?api-version=2018-02-01")
        .await;
    assert_eq!(status, 400);
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("resource"),
        "{body}"
    );
}
