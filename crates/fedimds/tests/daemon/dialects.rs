//! IMDS faithfulness that SDKs depend on.

use std::time::Duration;

use tokio::time::Instant;

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
        .imds_request()
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

#[tokio::test]
async fn legacy_2017_uses_the_secret_header_and_clientid() {
    let h = start().await;
    let secret = h.app.identity_header().expose().to_owned();
    let r = h
        .http
        .get(format!(
            "{}/msi/token?api-version=2017-09-01&resource={GRAPH}&clientid=contoso",
            h.url
        ))
        .header("secret", &secret)
        .send()
        .await
        .unwrap();
    let (status, body) = status_json(r).await;
    assert_eq!(status, 200, "{body}");
    assert_client_safe(&body, GRAPH);
    assert_eq!(
        claims(body["access_token"].as_str().unwrap())["tid"],
        demo::OTHER_TARGET_TENANT
    );
    // expires_on is epoch seconds, not the old date form that breaks MSAL Python.
    assert!(body["expires_on"]
        .as_str()
        .unwrap()
        .chars()
        .all(|c| c.is_ascii_digit()));

    let r = h
        .http
        .get(format!(
            "{}/msi/token?api-version=2017-09-01&resource={GRAPH}",
            h.url
        ))
        .header("secret", "not-the-secret")
        .send()
        .await
        .unwrap();
    let (status, body) = status_json(r).await;
    assert_eq!(status, 401);
    assert!(
        body["message"].as_str().unwrap().contains("MSI_SECRET"),
        "{body}"
    );
}

#[tokio::test]
async fn cloud_shell_form_post() {
    let h = start().await;
    let r = h
        .http
        .post(format!("{}/msi/token", h.url))
        .header("Metadata", "true")
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("resource=https%3A%2F%2Fgraph.microsoft.com")
        .send()
        .await
        .unwrap();
    let (status, body) = status_json(r).await;
    assert_eq!(status, 200, "{body}");
    assert_client_safe(&body, GRAPH);
    assert_eq!(body["access_token"].as_str().unwrap(), h.last_issued());

    // Without Metadata (and without any secret) it is not Cloud Shell, and gets no token.
    let r = h
        .http
        .post(format!("{}/msi/token", h.url))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("resource=https%3A%2F%2Fgraph.microsoft.com")
        .send()
        .await
        .unwrap();
    let (status, body) = status_json(r).await;
    assert_eq!(status, 401, "{body}");
}

#[tokio::test]
async fn arc_challenge_then_key_file_then_token() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = temp_dir("arc");
    let dir_text = dir.display().to_string();
    let h = start_with(fedimds_sim::SimConfig::demo(), |raw| {
        raw.server.arc_key_dir = Some(dir.clone());
        target(raw, "contoso").object_id = Some("obj-contoso".into());
    })
    .await;
    let url = format!("{}/arc/metadata/identity/oauth2/token?api-version=2020-06-01&resource={GRAPH}&object_id=obj-contoso", h.url);

    let r = h
        .http
        .get(&url)
        .header("Metadata", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let realm = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
    let path = realm
        .strip_prefix("Basic realm=")
        .expect("Basic realm=<path>");
    assert!(
        path.starts_with(&dir_text) && path.ends_with(".key"),
        "{path}"
    );
    let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode, 0o600,
        "only fedimds's user may read the key by default"
    );
    let key = std::fs::read_to_string(path).unwrap();

    // A wrong key gets no token.
    let r = h
        .http
        .get(&url)
        .header("Metadata", "true")
        .header("Authorization", "Basic wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);

    let r = h
        .http
        .get(&url)
        .header("Metadata", "true")
        .header("Authorization", format!("Basic {key}"))
        .send()
        .await
        .unwrap();
    let (status, body) = status_json(r).await;
    assert_eq!(status, 200, "{body}");
    assert_client_safe(&body, GRAPH);
    assert_eq!(
        body["object_id"], "obj-contoso",
        "the user-assigned id is echoed"
    );
    assert_eq!(
        claims(body["access_token"].as_str().unwrap())["tid"],
        demo::OTHER_TARGET_TENANT
    );

    // Each key works once, and its file is gone.
    assert!(!std::path::Path::new(path).exists());
    let r = h
        .http
        .get(&url)
        .header("Metadata", "true")
        .header("Authorization", format!("Basic {key}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_tenant_id_that_is_not_a_tenant_is_refused() {
    let h = start_with(fedimds_sim::SimConfig::demo(), |raw| {
        let litware = target(raw, "litware");
        let allowed = litware.allowed_tenants.get_or_insert_with(Vec::new);
        allowed.insert(0, "*".into());
    })
    .await;
    // `.` and `..` would drop the tenant from Entra's URL path.
    for bad in [
        ".",
        "..",
        "%2e%2e",
        "a..b",
        "..%2F..",
        "x%20y",
        "t%2Fv2.0",
        "-x.example",
    ] {
        let (status, body) = h.imds_token(GRAPH, &format!("&tenant_id={bad}")).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(
            body["error_description"]
                .as_str()
                .unwrap()
                .contains("tenant_id"),
            "{body}"
        );
    }
    assert_eq!(h.sim.counters().entra, 0);
    let (status, body) = h.imds_token(GRAPH, "&tenant_id=a%0Ab").await;
    assert_eq!(status, 400, "{body}");
    // Nor can a resource carry a line break into the logs.
    let (status, _) = h
        .imds_token("https://x%0A2026-11-22T00:00:00Z%20INFO%20forged", "")
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn today_s_clients_requests_are_answered() {
    let h = start().await;
    // App Service's revocation-capable api-version, with the revocation parameters.
    let secret = h.app.identity_header().expose().to_owned();
    let r = h
        .http
        .get(format!(
            "{}/msi/token?api-version=2025-03-30&resource={GRAPH}&xms_cc=cp1",
            h.url
        ))
        .header("X-IDENTITY-HEADER", &secret)
        .send()
        .await
        .unwrap();
    let (status, body) = status_json(r).await;
    assert_eq!(status, 200, "{body}");
    // A bare-GUID resource, as kubelogin sends for AKS's server app.
    let aks = "6dae42f8-4368-4678-94ff-3960e28e3630";
    let (status, body) = h.imds_token(aks, "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["resource"], aks);
    assert_eq!(claims(body["access_token"].as_str().unwrap())["aud"], aks);
    assert_eq!(
        h.sim.exchanges().last().unwrap().scope,
        format!("{aks}/.default")
    );
}

#[tokio::test]
async fn imds_v2_paths_get_imds_s_own_not_found_never_a_400() {
    let h = start().await;
    for path in [
        "/metadata/identity/getplatformmetadata?cred-api-version=2.0",
        "/metadata/identity/issuecredential?cred-api-version=2.0",
    ] {
        for metadata in [true, false] {
            for post in [false, true] {
                let url = format!("{}{path}", h.url);
                let request = if post {
                    h.http.post(&url)
                } else {
                    h.http.get(&url)
                };
                let request = if metadata {
                    request.header("Metadata", "true")
                } else {
                    request
                };
                let r = request.send().await.unwrap();
                // MSAL.NET reads a 400 (and a Server header naming IMDS) as "IMDS v2 is here".
                assert_eq!(
                    r.status().as_u16(),
                    404,
                    "{path} metadata={metadata} post={post}"
                );
                let server = r
                    .headers()
                    .get("server")
                    .map(|v| v.to_str().unwrap_or_default().to_owned());
                assert!(!server.unwrap_or_default().contains("IMDS"));
            }
        }
    }
    assert_eq!(h.sim.counters().entra, 0);
}

#[tokio::test]
async fn msal4j_double_slash_after_the_pod_host_is_imds() {
    // msal4j builds `AZURE_POD_IDENTITY_AUTHORITY_HOST + "/" + "/metadata/identity/oauth2/token"`,
    // so Java's IMDS requests arrive with an empty first path segment, also under a prefix.
    let h = start().await;
    for (prefix, tenant) in [
        ("", demo::TARGET_TENANT),
        ("/targets/contoso", demo::OTHER_TARGET_TENANT),
    ] {
        let (status, body) = h
            .imds(&format!(
                "{prefix}//metadata/identity/oauth2/token?api-version=2018-02-01&resource={GRAPH}"
            ))
            .await;
        assert_eq!(status, 200, "{prefix}: {body}");
        assert_eq!(
            claims(body["access_token"].as_str().unwrap())["tid"],
            tenant,
            "{prefix}"
        );
    }
}
