//! The whole chain: assertion from the simulated IMDS, exchange at the simulated Entra, cache.

use crate::support::*;

#[tokio::test]
async fn imds_round_trip_serves_the_target_tenant_token() {
    let h = start().await;
    let (status, body) = h.imds_token(GRAPH, "").await;
    assert_eq!(status, 200, "{body}");
    assert_client_safe(&body, GRAPH);
    let token = body["access_token"].as_str().unwrap();
    assert_eq!(token, h.last_issued(), "exactly the token Entra issued");
    let c = claims(token);
    assert_eq!(c["tid"], demo::TARGET_TENANT);
    assert_eq!(c["appid"], demo::APP_CLIENT_ID);
    assert_eq!(c["aud"], GRAPH);
    let ex = h.sim.exchanges();
    assert_eq!(ex.len(), 1);
    assert_eq!(ex[0].scope, "https://graph.microsoft.com/.default");
    assert_eq!(ex[0].tenant, demo::TARGET_TENANT);
}

#[tokio::test]
async fn app_service_round_trip_get_and_post() {
    let h = start().await;
    let secret = h.app.identity_header().expose().to_owned();
    let r = h
        .http
        .get(format!(
            "{}/msi/token?api-version=2019-08-01&resource={GRAPH}",
            h.url
        ))
        .header("X-IDENTITY-HEADER", &secret)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["cache-control"], "no-store");
    let (status, body) = status_json(r).await;
    assert_eq!(status, 200, "{body}");
    assert_client_safe(&body, GRAPH);
    assert_eq!(body["access_token"].as_str().unwrap(), h.last_issued());
    assert_eq!(
        claims(body["access_token"].as_str().unwrap())["tid"],
        demo::TARGET_TENANT
    );

    // Azure Automation: a form POST, no api-version, Metadata: True.
    let r = h
        .http
        .post(format!("{}/msi/token", h.url))
        .header("X-IDENTITY-HEADER", &secret)
        .header("Metadata", "True")
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(format!("resource={ARM}"))
        .send()
        .await
        .unwrap();
    let (status, body) = status_json(r).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["resource"], ARM,
        "resource echoed exactly, trailing slash kept"
    );
    assert_eq!(claims(body["access_token"].as_str().unwrap())["aud"], ARM);
    assert!(h
        .sim
        .exchanges()
        .iter()
        .any(|e| e.scope == "https://management.core.windows.net//.default"));
}

#[tokio::test]
async fn app_service_refuses_a_wrong_or_missing_secret() {
    let h = start().await;
    for secret in [Some("wrong"), None] {
        let mut req = h.http.get(format!(
            "{}/msi/token?api-version=2019-08-01&resource={GRAPH}",
            h.url
        ));
        if let Some(s) = secret {
            req = req.header("X-IDENTITY-HEADER", s);
        }
        let (status, body) = status_json(req.send().await.unwrap()).await;
        assert_eq!(status, 401);
        assert_eq!(body["statusCode"], 401);
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("X-IDENTITY-HEADER"),
            "{body}"
        );
        assert!(body["correlationId"].is_string());
        assert!(body.get("access_token").is_none());
    }
    assert_eq!(h.sim.counters().entra, 0);
}

#[tokio::test]
async fn two_resources_two_exchanges_one_assertion_and_hits_are_free() {
    let h = start().await;
    let (s1, a) = h.imds_token(GRAPH, "").await;
    let (s2, b) = h.imds_token("https://vault.azure.net", "").await;
    let (s3, c) = h.imds_token(GRAPH, "").await;
    assert_eq!((s1, s2, s3), (200, 200, 200));
    assert_ne!(a["access_token"], b["access_token"]);
    assert_eq!(
        a["access_token"], c["access_token"],
        "second request for a resource is a cache hit"
    );
    let n = h.sim.counters();
    assert_eq!(n.entra, 2, "one exchange per resource");
    assert_eq!(n.imds, 1, "one assertion for both");
}

#[tokio::test]
async fn concurrent_cold_requests_share_one_exchange() {
    let h = std::sync::Arc::new(start().await);
    let mut tasks = Vec::new();
    for _ in 0..500 {
        let h = h.clone();
        tasks.push(tokio::spawn(async move { h.imds_token(GRAPH, "").await }));
    }
    let mut tokens = std::collections::HashSet::new();
    for t in tasks {
        let (status, body) = t.await.unwrap();
        assert_eq!(status, 200, "{body}");
        tokens.insert(body["access_token"].as_str().unwrap().to_owned());
    }
    assert_eq!(tokens.len(), 1, "every caller got the same token");
    assert_eq!(h.sim.counters().entra, 1, "one exchange");
    assert_eq!(h.sim.counters().imds, 1, "one assertion fetch");
}

#[tokio::test]
async fn unknown_identity_gets_imds_identity_not_found() {
    let h = start().await;
    let (status, body) = h
        .imds_token(GRAPH, "&client_id=00000000-0000-0000-0000-000000000000")
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        serde_json::json!({"error":"invalid_request","error_description":"Identity not found"})
    );
    let (status, body) = h
        .imds(&format!(
            "/targets/nope/metadata/identity/oauth2/token?api-version=2018-02-01&resource={GRAPH}"
        ))
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["error_description"], "Identity not found");
    assert_eq!(h.sim.counters().entra, 0);
}

#[tokio::test]
async fn resource_outside_the_allow_list_is_refused() {
    let h = start_with(fedimds_sim::SimConfig::demo(), |raw| {
        target(raw, "litware").resources = strings(&["https://graph.microsoft.com"]);
    })
    .await;
    let (status, body) = h.imds_token("https://vault.azure.net", "").await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_resource");
    let msg = body["error_description"].as_str().unwrap();
    assert!(
        msg.contains("https://vault.azure.net") && msg.contains("https://graph.microsoft.com"),
        "{msg}"
    );
    assert_eq!(
        h.sim.counters().entra,
        0,
        "refused before any upstream call"
    );
    assert_eq!(h.imds_token(GRAPH, "").await.0, 200);
}

#[tokio::test]
async fn missing_consent_is_a_400_with_the_code_and_the_consent_url() {
    let h = start().await;
    let (status, body) = h.imds(&format!("/targets/unconsented/metadata/identity/oauth2/token?api-version=2018-02-01&resource={GRAPH}")).await;
    assert_eq!(
        status, 400,
        "permanent errors are 400, never retried by clients"
    );
    let msg = body["error_description"].as_str().unwrap();
    assert!(msg.contains("AADSTS700016"), "{msg}");
    let consent = format!(
        "{}/{}/adminconsent?client_id={}",
        h.sim.url(),
        demo::TARGET_TENANT,
        demo::UNCONSENTED_APP_CLIENT_ID
    );
    assert!(
        msg.contains(&consent),
        "names the consent URL {consent}: {msg}"
    );
    // Remembered: a second request does not go to Entra again.
    let before = h.sim.counters().entra;
    let (status, _) = h.imds(&format!("/targets/unconsented/metadata/identity/oauth2/token?api-version=2018-02-01&resource={GRAPH}")).await;
    assert_eq!(status, 400);
    assert_eq!(h.sim.counters().entra, before);
}

#[tokio::test]
async fn path_prefix_and_tenant_id_select_the_target() {
    let h = start().await;
    let (status, body) = h.imds(&format!("/targets/contoso/metadata/identity/oauth2/token?api-version=2018-02-01&resource={GRAPH}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        claims(body["access_token"].as_str().unwrap())["tid"],
        demo::OTHER_TARGET_TENANT
    );

    // tenant_id picks among the tenants the default target allows.
    let (status, body) = h
        .imds_token(GRAPH, &format!("&tenant_id={}", demo::OTHER_TARGET_TENANT))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        claims(body["access_token"].as_str().unwrap())["tid"],
        demo::OTHER_TARGET_TENANT
    );

    // client_id shared by two targets: tenant_id tells them apart, and is required.
    let (status, body) = h
        .imds_token(GRAPH, &format!("&client_id={}", demo::APP_CLIENT_ID))
        .await;
    assert_eq!(status, 400);
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("tenant_id"),
        "{body}"
    );
    let (status, body) = h
        .imds_token(
            GRAPH,
            &format!(
                "&client_id={}&tenant_id={}",
                demo::APP_CLIENT_ID,
                demo::TARGET_TENANT
            ),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        claims(body["access_token"].as_str().unwrap())["tid"],
        demo::TARGET_TENANT
    );
    assert_eq!(body["client_id"], demo::APP_CLIENT_ID);

    // A target name works as a client_id.
    let (status, body) = h.imds_token(GRAPH, "&client_id=contoso").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        claims(body["access_token"].as_str().unwrap())["tid"],
        demo::OTHER_TARGET_TENANT
    );

    // A tenant the target does not allow.
    let (status, body) = h.imds(&format!("/targets/contoso/metadata/identity/oauth2/token?api-version=2018-02-01&resource={GRAPH}&tenant_id=evil")).await;
    assert_eq!(status, 400);
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("allowed_tenants"),
        "{body}"
    );

    // App Service under a prefix too.
    let r = h
        .http
        .get(format!(
            "{}/targets/contoso/msi/token?api-version=2019-08-01&resource={GRAPH}",
            h.url
        ))
        .header("X-IDENTITY-HEADER", h.app.identity_header().expose())
        .send()
        .await
        .unwrap();
    let (status, body) = status_json(r).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        claims(body["access_token"].as_str().unwrap())["tid"],
        demo::OTHER_TARGET_TENANT
    );
}
