//! The Service Fabric dialect on its HTTPS listener, as its clients speak it
//! (`docs/client-protocols.md#service-fabric`): a certificate clients can pin by its SHA-1
//! thumbprint or trust as a CA (Node), the `secret` header, any api-version they send, Service
//! Fabric's error codes, and revocation, the reason to use it.

use std::path::PathBuf;

use fedimds::config::raw::RawServiceFabric;
use fedimds_sim::SimConfig;
use serde_json::Value;

use crate::support::*;

/// A daemon with the Service Fabric listener on, writing its certificate and thumbprint to a
/// fresh directory.
async fn start_sf() -> (Harness, PathBuf) {
    let dir = temp_dir("sf");
    let files = dir.clone();
    let h = start_with(SimConfig::demo(), move |raw| {
        raw.service_fabric = RawServiceFabric {
            listen: Some("127.0.0.1:0".to_owned()),
            served_cert_file: Some(files.join("sf.crt")),
            thumbprint_file: Some(files.join("sf.thumbprint")),
            ..Default::default()
        };
    })
    .await;
    (h, dir)
}

/// A client that trusts the served certificate and nothing else, as Node does with
/// `NODE_EXTRA_CA_CERTS`: it checks the chain and that the name is 127.0.0.1.
fn trusting(dir: &std::path::Path) -> reqwest::Client {
    let pem = std::fs::read(dir.join("sf.crt")).unwrap();
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .tls_info(true)
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

async fn sf_get(
    client: &reqwest::Client,
    h: &Harness,
    query: &str,
    secret: Option<&str>,
) -> (u16, Value) {
    let url = format!(
        "{}/metadata/identity/oauth2/token?{query}",
        h.service_fabric_url.as_ref().unwrap()
    );
    let mut req = client.get(url);
    if let Some(secret) = secret {
        req = req.header("Secret", secret);
    }
    status_json(req.send().await.expect("an HTTPS answer")).await
}

fn sha1_upper(der: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect()
}

fn sha256_hex(token: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, token.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn a_service_fabric_client_gets_the_target_token_over_https_and_can_pin_it() {
    let (h, dir) = start_sf().await;
    let secret = h.app.identity_header().expose().to_owned();
    let client = trusting(&dir);
    let url = format!(
        "{}/metadata/identity/oauth2/token?api-version=2019-07-01-preview&resource={GRAPH}",
        h.service_fabric_url.as_ref().unwrap()
    );
    let response = client
        .get(&url)
        .header("secret", &secret)
        .send()
        .await
        .unwrap();
    // The certificate the client saw is the one whose SHA-1 the thumbprint file names: what
    // MSAL Python and Go compare with IDENTITY_SERVER_THUMBPRINT.
    let seen = response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|info| info.peer_certificate())
        .expect("the peer certificate")
        .to_vec();
    let written = std::fs::read_to_string(dir.join("sf.thumbprint")).unwrap();
    assert_eq!(written.trim_end(), sha1_upper(&seen));
    assert_eq!(written.trim_end().len(), 40);
    let (status, body) = status_json(response).await;
    assert_eq!(status, 200, "{body}");
    assert_client_safe(&body, GRAPH);
    let token = claims(body["access_token"].as_str().unwrap());
    assert_eq!(token["tid"], demo::TARGET_TENANT);
    assert_eq!(token["appid"], demo::APP_CLIENT_ID);
    // MSAL.NET's api-version and its principalId for the object id of a target's identity are
    // fine too, and the same token comes from the cache.
    let (status, again) = sf_get(
        &client,
        &h,
        &format!("api-version=2020-05-01&resource={GRAPH}"),
        Some(&secret),
    )
    .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["access_token"], body["access_token"]);
    assert_eq!(h.sim.exchanges().len(), 1);
    let metrics = h.metrics().await;
    assert!(
        metrics.contains("dialect=\"service-fabric\""),
        "the dialect is counted: {metrics}"
    );
}

#[tokio::test]
async fn service_fabric_errors_have_its_codes_and_statuses() {
    let (h, dir) = start_sf().await;
    let secret = h.app.identity_header().expose().to_owned();
    let client = trusting(&dir);
    let ok_query = format!("api-version=2019-07-01-preview&resource={GRAPH}");
    for (query, presented, status, code) in [
        (ok_query.as_str(), None, 401, "SecretHeaderNotFound"),
        (
            ok_query.as_str(),
            Some("not-the-secret-at-all"),
            404,
            "ManagedIdentityNotFound",
        ),
        (
            "api-version=2019-07-01-preview",
            Some(secret.as_str()),
            400,
            "ArgumentNullOrEmpty",
        ),
        (
            "resource=https://vault.azure.net",
            Some(secret.as_str()),
            400,
            "InvalidApiVersion",
        ),
        (
            "api-version=2019-07-01-preview&resource=https://vault.azure.net&principalId=no-such-principal",
            Some(secret.as_str()),
            404,
            "ManagedIdentityNotFound",
        ),
    ] {
        let (got, body) = sf_get(&client, &h, query, presented).await;
        assert_eq!(got, status, "{query} {body}");
        assert_eq!(body["error"]["code"], code, "{query} {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(!message.is_empty() && !message.contains(&secret), "{body}");
        assert_eq!(
            body["error"]["correlationId"].as_str().map(str::len),
            Some(36),
            "{body}"
        );
    }
    // A proxy's header is refused at the door every dialect shares, in Service Fabric's shape.
    let url = format!(
        "{}/metadata/identity/oauth2/token?{ok_query}",
        h.service_fabric_url.as_ref().unwrap()
    );
    let (status, body) = status_json(
        client
            .get(&url)
            .header("secret", &secret)
            .header("X-Forwarded-For", "10.0.0.9")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (400, &serde_json::json!("BadRequest")),
        "{body}"
    );
    assert!(h.sim.exchanges().is_empty());
    // Plain HTTP to the TLS port gets no answer at all.
    let plain = h
        .service_fabric_url
        .as_ref()
        .unwrap()
        .replace("https", "http");
    assert!(h
        .http
        .get(format!("{plain}/metadata/identity/oauth2/token?{ok_query}"))
        .header("secret", &secret)
        .send()
        .await
        .is_err());
}

/// Revocation as .NET's Azure.Identity and MSAL send it to Service Fabric: `xms_cc=CP1` in upper
/// case on every request, and the refused token's hash with the claims challenge.
#[tokio::test]
async fn revocation_over_service_fabric() {
    let (h, dir) = start_sf().await;
    let secret = h.app.identity_header().expose().to_owned();
    let client = trusting(&dir);
    let base = format!("api-version=2020-05-01&resource={GRAPH}&xms_cc=CP1");
    let (status, body) = sf_get(&client, &h, &base, Some(&secret)).await;
    assert_eq!(status, 200, "{body}");
    let first = body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        h.sim.exchanges().last().unwrap().claims.as_deref(),
        Some(r#"{"access_token":{"xms_cc":{"values":["cp1"]}}}"#)
    );
    h.sim.revoke(&first);
    let refused = format!("{base}&token_sha256_to_refresh={}", sha256_hex(&first));
    let (status, body) = sf_get(&client, &h, &refused, Some(&secret)).await;
    assert_eq!(status, 200, "{body}");
    let second = body["access_token"].as_str().unwrap().to_owned();
    assert_ne!(second, first);
    assert!(h.sim.resource_accepts(&second));
    // Another node presenting the same hash gets T' with no Entra call.
    let (_, body) = sf_get(&client, &h, &refused, Some(&secret)).await;
    assert_eq!(body["access_token"], second.as_str());
    assert_eq!(h.sim.exchanges().len(), 2);
}

#[tokio::test]
async fn a_configured_certificate_is_served() {
    // The certificate and key from files: here one the test makes with the same generator a
    // user might use (openssl would do as well), written as PEM.
    let dir = temp_dir("sf-files");
    let generated = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    std::fs::write(dir.join("c.pem"), generated.cert.pem()).unwrap();
    std::fs::write(dir.join("k.pem"), generated.signing_key.serialize_pem()).unwrap();
    let files = dir.clone();
    let h = start_with(SimConfig::demo(), move |raw| {
        raw.service_fabric = RawServiceFabric {
            listen: Some("127.0.0.1:0".to_owned()),
            cert_file: Some(files.join("c.pem")),
            key_file: Some(files.join("k.pem")),
            served_cert_file: Some(files.join("sf.crt")),
            thumbprint_file: Some(files.join("sf.thumbprint")),
        };
    })
    .await;
    let written = std::fs::read_to_string(dir.join("sf.thumbprint")).unwrap();
    assert_eq!(written.trim_end(), sha1_upper(generated.cert.der()));
    let secret = h.app.identity_header().expose().to_owned();
    let (status, body) = sf_get(
        &trusting(&dir),
        &h,
        &format!("api-version=2019-07-01-preview&resource={GRAPH}"),
        Some(&secret),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}
