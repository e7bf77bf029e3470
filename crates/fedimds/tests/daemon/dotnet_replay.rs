//! .NET cannot run here, so the exact requests Azure.Identity (current) and MSAL.NET send are
//! replayed, as read from their source, and each answer is checked the way they read it.
//! What each sends is in `docs/client-protocols.md#net-replayed`; the sources:
//!
//! - MSAL.NET, AzureAD/microsoft-authentication-library-for-dotnet @39d20011 (2026-07-24),
//!   `src/client/Microsoft.Identity.Client/`: `ManagedIdentity/{Imds,AppService,
//!   MachineLearning,CloudShell,AzureArc}ManagedIdentitySource.cs` (paths, api-versions,
//!   headers, parameters), `ManagedIdentity/ManagedIdentityRequest.cs` and
//!   `Utils/UriBuilderExtensions.cs` (query values joined unencoded), `Internal/MsalIdHelper.cs`
//!   (`x-client-SKU`, `x-client-Ver`), `OAuth2/OAuthConstants.cs` (`x-ms-client-request-id`),
//!   `ManagedIdentity/ManagedIdentityResponse.cs` and `Utils/DateTimeHelpers.cs`
//!   (`GetDurationFromManagedIdentityTimestamp`: how the answer is read),
//!   `ManagedIdentity/ManagedIdentitySourceExtensions.cs` (`xms_cc` and the hash only to
//!   Service Fabric).
//! - Azure.Identity, Azure/azure-sdk-for-net `sdk/identity/Azure.Identity/src/`:
//!   `ImdsManagedIdentityProbeSource.cs` @0176b6c4 (DefaultAzureCredential's probe and how
//!   it reads the answer), `ManagedIdentitySource.cs` @08527179 (`GetTokenFromResponse`),
//!   `MsalManagedIdentityClient.cs` @14452551 (every request after the probe goes through
//!   MSAL.NET, through Azure.Core's pipeline: its `User-Agent` and request id).

use serde_json::Value;

use crate::support::*;

/// Azure.Core's pipeline headers, on every request Azure.Identity sends (its own probe, and
/// MSAL.NET's requests through `HttpPipelineClientFactory`).
const PIPELINE: [(&str, &str); 3] = [
    (
        "User-Agent",
        "azsdk-net-Identity/1.17.1 (.NET 8.0.11; Ubuntu 24.04.1 LTS)",
    ),
    (
        "x-ms-client-request-id",
        "5f0c5c0e-3d2a-4e1b-9a57-1b2c3d4e5f60",
    ),
    ("x-ms-return-client-request-id", "true"),
];
/// MSAL.NET's id headers, on its IMDS requests (`ImdsManagedIdentitySource.CreateRequestAsync`).
const MSAL_ID: [(&str, &str); 3] = [
    ("x-client-SKU", "MSAL.NetCore"),
    ("x-client-Ver", "4.77.1.0"),
    (
        "x-ms-client-request-id",
        "0b1d6c55-8f7e-4a0a-b3b4-7f5a2c1d9e01",
    ),
];
const CONTOSO_OBJECT_ID: &str = "0c0c0c0c-0000-4000-8000-0000000c0c01";
const CONTOSO_RESOURCE_ID: &str = "/subscriptions/dddddddd-0000-4000-8000-00000000d001/resourceGroups/replay/providers/Microsoft.ManagedIdentity/userAssignedIdentities/contoso";

async fn start_replay() -> Harness {
    start_with(fedimds_sim::SimConfig::demo(), |raw| {
        let contoso = target(raw, "contoso");
        contoso.object_id = Some(CONTOSO_OBJECT_ID.to_owned());
        contoso.resource_id = Some(CONTOSO_RESOURCE_ID.to_owned());
    })
    .await
}

/// A GET with `headers`, as the client sends it; the status and the body as text (the order of
/// its keys matters to MSAL.NET).
async fn send(h: &Harness, path_and_query: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut request = h.http.get(format!("{}{path_and_query}", h.url));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let r = request.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// What MSAL.NET takes from a 200 (`ManagedIdentityResponse`, `MsalTokenResponse.
/// CreateFromManagedIdentityResponse`): `access_token`; `expires_on` and `expires_in` both
/// land in one property, so the one written last wins, and it must give a lifetime over zero
/// (`GetDurationFromManagedIdentityTimestamp`: an integer of 978307200 or more is an epoch,
/// less is seconds from now; else a `DateTimeOffset`); `token_type`. Returns the lifetime and
/// the body.
fn msal_net_reads(text: &str) -> (i64, Value) {
    let body: Value = serde_json::from_str(text).expect("a JSON body");
    assert!(
        body["access_token"].as_str().is_some_and(|t| !t.is_empty()),
        "access_token"
    );
    let last = ["\"expires_on\":", "\"expires_in\":"]
        .into_iter()
        .filter_map(|k| text.rfind(k).map(|at| (at, &k[1..k.len() - 2])))
        .max()
        .expect("expires_on or expires_in")
        .1;
    let value: i64 = body[last]
        .as_str()
        .expect("a string")
        .parse()
        // fedimds writes an integer, the form MSAL.NET tries first (a date would go on to
        // `DateTimeOffset.TryParse`, whose reading depends on the culture).
        .expect("an integer");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let lifetime = if value >= 978_307_200 {
        value - now
    } else {
        value
    };
    assert!(lifetime > 300, "{last} = {value}: lifetime {lifetime}");
    assert_eq!(body["token_type"], "Bearer");
    (lifetime, body)
}

/// What Azure.Identity's own probe source takes from a 200 (`GetTokenFromResponse`):
/// `access_token` and `expires_on`, a number or an integer string, else a `DateTimeOffset`.
fn azure_identity_reads(body: &Value) {
    assert!(body["access_token"].is_string());
    let on: i64 = body["expires_on"].as_str().unwrap().parse().unwrap();
    assert!(on > 1_700_000_000);
}

fn tenant_of(body: &Value) -> Value {
    claims(body["access_token"].as_str().unwrap())["tid"].clone()
}

#[tokio::test]
async fn default_azure_credential_probes_imds_then_msal_net_asks() {
    let h = start_replay().await;
    // DefaultAzureCredential (chained, MSAL's source DefaultToImds): Azure.Identity's probe, at
    // http://169.254.169.254/metadata/identity/oauth2/token, values percent-encoded by
    // Azure.Core's `AppendQuery`, no Metadata header.
    for (id, expected_tenant) in [
        ("", demo::TARGET_TENANT),
        ("&client_id=contoso", demo::OTHER_TARGET_TENANT),
        // The probe's resource-id parameter has hyphens; MSAL.NET's has underscores.
        (
            &*format!("&msi-res-id={}", CONTOSO_RESOURCE_ID.replace('/', "%2F")),
            demo::OTHER_TARGET_TENANT,
        ),
        (
            "&object_id=0c0c0c0c-0000-4000-8000-0000000c0c01",
            demo::OTHER_TARGET_TENANT,
        ),
    ] {
        let mut headers = vec![("Host", "169.254.169.254")];
        headers.extend(PIPELINE);
        let probe = format!(
            "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fgraph.microsoft.com{id}"
        );
        let (status, text) = send(&h, &probe, &headers).await;
        // `IsRetriableProbeRequest`: a 400 without "Identity not found", to a request without
        // Metadata, means "IMDS is here": MSAL.NET's request follows. Anything else ends the
        // credential ("identity not assigned", 502/504 "gateway error").
        assert_eq!(status, 400, "{text}");
        assert!(!text.contains("Identity not found"), "{text}");

        // MSAL.NET's IMDS request: values joined unencoded (`UriBuilderExtensions`), the
        // resource-id parameter `msi_res_id`.
        let msal_id = id.replace("msi-res-id=", "msi_res_id=").replace("%2F", "/");
        let request = format!(
            "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://graph.microsoft.com{msal_id}"
        );
        let mut headers = vec![("Host", "169.254.169.254"), ("Metadata", "true")];
        headers.extend(MSAL_ID);
        headers.extend(PIPELINE[..1].iter().copied());
        let (status, text) = send(&h, &request, &headers).await;
        assert_eq!(status, 200, "{text}");
        let (lifetime, body) = msal_net_reads(&text);
        assert!(lifetime > 3000, "{lifetime}");
        assert_eq!(tenant_of(&body), expected_tenant, "{id}");
    }
}

#[tokio::test]
async fn with_azure_token_credentials_there_is_no_probe_and_msal_net_asks_at_once() {
    // AZURE_TOKEN_CREDENTIALS=ManagedIdentityCredential (Azure.Identity, PR #52545): no probe,
    // the MSAL.NET request alone, which must not depend on a probe having come first.
    let h = start_replay().await;
    let mut headers = vec![("Metadata", "true")];
    headers.extend(MSAL_ID);
    let (status, text) = send(
        &h,
        "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://management.azure.com/",
        &headers,
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let (_, body) = msal_net_reads(&text);
    assert_eq!(body["resource"], "https://management.azure.com/");
    assert_eq!(h.sim.counters().entra, 1);
}

#[tokio::test]
async fn an_identity_imds_does_not_know_is_the_answer_net_gives_up_on() {
    let h = start_replay().await;
    let mut headers = vec![("Metadata", "true")];
    headers.extend(MSAL_ID);
    let (status, text) = send(
        &h,
        "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://graph.microsoft.com&client_id=ffffffff-0000-4000-8000-00000000ffff",
        &headers,
    )
    .await;
    // MSAL.NET: 400 → "identity unavailable", never retried; the probe source: the body's
    // "Identity not found" makes DefaultAzureCredential move on.
    assert_eq!(status, 400, "{text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("Identity not found"),
        "{text}"
    );
}

#[tokio::test]
async fn msal_net_app_service_2019() {
    let h = start_replay().await;
    let secret = h.app.identity_header().expose().to_owned();
    // `AppServiceManagedIdentitySource`: X-IDENTITY-HEADER, api-version 2019-08-01, the ids
    // client_id, mi_res_id, object_id.
    for (id, expected_tenant) in [
        ("", demo::TARGET_TENANT),
        ("&client_id=contoso", demo::OTHER_TARGET_TENANT),
        (
            &*format!("&mi_res_id={CONTOSO_RESOURCE_ID}"),
            demo::OTHER_TARGET_TENANT,
        ),
        (
            &*format!("&object_id={CONTOSO_OBJECT_ID}"),
            demo::OTHER_TARGET_TENANT,
        ),
    ] {
        let mut headers = vec![("X-IDENTITY-HEADER", secret.as_str())];
        headers.extend(PIPELINE);
        let (status, text) = send(
            &h,
            &format!("/msi/token?api-version=2019-08-01&resource=https://vault.azure.net{id}"),
            &headers,
        )
        .await;
        assert_eq!(status, 200, "{text}");
        let (_, body) = msal_net_reads(&text);
        assert_eq!(tenant_of(&body), expected_tenant, "{id}");
    }
    // A wrong secret: MSAL.NET's error text is built from `message` and `correlationId`
    // (`ManagedIdentityErrorResponse`).
    let (status, text) = send(
        &h,
        "/msi/token?api-version=2019-08-01&resource=https://vault.azure.net",
        &[("X-IDENTITY-HEADER", "not-the-secret-at-all-0123")],
    )
    .await;
    assert!((400..500).contains(&status), "{status}");
    let body: Value = serde_json::from_str(&text).unwrap();
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("IDENTITY_HEADER"));
    assert!(body["correlationId"].is_string());
}

#[tokio::test]
async fn msal_net_machine_learning_is_the_2017_dialect_with_epoch_seconds() {
    let h = start_replay().await;
    let secret = h.app.identity_header().expose().to_owned();
    // `MachineLearningManagedIdentitySource`: MSI_ENDPOINT + MSI_SECRET, api-version
    // 2017-09-01, `Metadata: true` and `secret`, and `clientid` always: for a system-assigned
    // identity it is $DEFAULT_IDENTITY_CLIENT_ID (MSAL.NET throws when that is unset), so a
    // user sets it to a target's name (or its client id when no other target shares the app).
    for (clientid, expected_tenant) in [
        ("litware", demo::TARGET_TENANT),
        ("contoso", demo::OTHER_TARGET_TENANT),
    ] {
        let mut headers = vec![("Metadata", "true"), ("secret", secret.as_str())];
        headers.extend(PIPELINE);
        let (status, text) = send(
            &h,
            &format!(
                "/msi/token?api-version=2017-09-01&resource=https://storage.azure.com&clientid={clientid}"
            ),
            &headers,
        )
        .await;
        assert_eq!(status, 200, "{text}");
        let (_, body) = msal_net_reads(&text);
        assert_eq!(tenant_of(&body), expected_tenant, "{clientid}");
    }
}

#[tokio::test]
async fn msal_net_cloud_shell_is_a_form_post() {
    let h = start_replay().await;
    // `CloudShellManagedIdentitySource`: POST MSI_ENDPOINT, a literal `ContentType` header as
    // well as the real one (`FormUrlEncodedContent`), `Metadata: true`, body `resource=…`.
    let r = h
        .http
        .post(format!("{}/msi/token", h.url))
        .header("ContentType", "application/x-www-form-urlencoded")
        .header("Content-Type", "application/x-www-form-urlencoded")
        .header("Metadata", "true")
        .header(PIPELINE[0].0, PIPELINE[0].1)
        .body("resource=https%3A%2F%2Fgraph.microsoft.com")
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    assert_eq!(status, 200, "{text}");
    msal_net_reads(&text);
}

#[tokio::test]
async fn msal_net_arc_challenge_then_basic_key() {
    let dir = temp_dir("dotnet-arc");
    let h = start_with(fedimds_sim::SimConfig::demo(), |raw| {
        raw.server.arc_key_dir = Some(dir.clone());
    })
    .await;
    // `AzureArcManagedIdentitySource`: api-version 2020-06-01, `Metadata: true`; a 401 with
    // `WWW-Authenticate: Basic realm=<file>` (split on '='; MSAL.NET insists the file is in
    // /var/opt/azcmagent/tokens/, ends in .key and holds at most 4096 bytes), then the same
    // request with `Authorization: Basic <the file's contents>`. System-assigned only.
    let url = format!(
        "{}/arc/metadata/identity/oauth2/token?api-version=2020-06-01&resource=https://graph.microsoft.com",
        h.url
    );
    let r = h
        .http
        .get(&url)
        .header("Metadata", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
    let path = challenge.split('=').nth(1).expect("Basic realm=<file>");
    assert!(path.ends_with(".key"), "{path}");
    let key = std::fs::read_to_string(path).unwrap();
    assert!(key.len() <= 4096);
    let r = h
        .http
        .get(&url)
        .header("Metadata", "true")
        .header("Authorization", format!("Basic {key}"))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    assert_eq!(status, 200, "{text}");
    msal_net_reads(&text);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn msal_net_extra_query_parameters_are_ignored() {
    // `WithExtraQueryParameters` lands on every managed-identity request
    // (`ManagedIdentityRequest.AddExtraQueryParams`); `xms_cc` and the hash are added only
    // for Service Fabric, but a request that carries them elsewhere is served all the same.
    let h = start_replay().await;
    let mut headers = vec![("Metadata", "true")];
    headers.extend(MSAL_ID);
    let (status, text) = send(
        &h,
        "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://graph.microsoft.com&dc=ESTS-PUB-WUS2-AZ1-FD000-TEST1&slice=testslice",
        &headers,
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let (_, first) = msal_net_reads(&text);
    let (status, text) = send(
        &h,
        "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://graph.microsoft.com&xms_cc=CP1",
        &headers,
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let (_, with_cp1) = msal_net_reads(&text);
    assert_eq!(first["resource"], with_cp1["resource"]);
}

#[tokio::test]
async fn the_probe_source_reads_a_token_answer_as_azure_identity_does() {
    // When the probe's own request gets a 200, Azure.Identity uses that answer as is
    // (`ManagedIdentitySource.GetTokenFromResponse`). fedimds never answers a request without
    // Metadata with a token, but the same reader takes MSAL.NET's IMDS answer: check it.
    let h = start_replay().await;
    let mut headers = vec![("Metadata", "true")];
    headers.extend(PIPELINE);
    let (status, text) = send(
        &h,
        "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fgraph.microsoft.com",
        &headers,
    )
    .await;
    assert_eq!(status, 200, "{text}");
    azure_identity_reads(&serde_json::from_str(&text).unwrap());
}

/// A daemon with the Service Fabric listener on, its thumbprint written to a fresh directory.
async fn start_service_fabric() -> (Harness, std::path::PathBuf) {
    let dir = temp_dir("dotnet-sf");
    let files = dir.clone();
    let h = start_with(fedimds_sim::SimConfig::demo(), move |raw| {
        raw.service_fabric = fedimds::config::raw::RawServiceFabric {
            listen: Some("127.0.0.1:0".to_owned()),
            thumbprint_file: Some(files.join("sf.thumbprint")),
            ..Default::default()
        };
        let contoso = target(raw, "contoso");
        contoso.object_id = Some(CONTOSO_OBJECT_ID.to_owned());
    })
    .await;
    (h, dir)
}

/// MSAL.NET's Service Fabric request (`ServiceFabricManagedIdentitySource.CreateRequestAsync`):
/// `GET {IDENTITY_ENDPOINT}?api-version=2020-05-01&resource=<raw>[&principalId=…]`, then
/// `xms_cc` and `token_sha256_to_refresh` (`AddClaimsAndCapabilities`), with `secret`; over
/// Azure.Core's pipeline. Its certificate check (`ValidateServerCertificateCallback`): a chain
/// that does not validate (the generated, self-signed one) is accepted when
/// `GetCertHashString()`, the SHA-1 in upper-case hex, equals `IDENTITY_SERVER_THUMBPRINT`
/// ignoring case. Returns the status and the body as text.
async fn msal_net_service_fabric(
    h: &Harness,
    thumbprint: &str,
    query: &str,
    secret: &str,
) -> (u16, String) {
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .tls_info(true)
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let url = format!(
        "{}/metadata/identity/oauth2/token?{query}",
        h.service_fabric_url
            .as_ref()
            .expect("the Service Fabric listener")
    );
    let mut request = client.get(url).header("secret", secret);
    for (name, value) in PIPELINE {
        request = request.header(name, value);
    }
    let response = request.send().await.expect("an HTTPS answer");
    let der = response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|info| info.peer_certificate())
        .expect("the server's certificate")
        .to_vec();
    let hash: String = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect();
    assert!(
        hash.eq_ignore_ascii_case(thumbprint.trim()),
        "MSAL.NET would refuse this certificate: {hash} is not {thumbprint}"
    );
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// `CommonCryptographyManager.CreateSha256HashHex`: lowercase hex, no separators.
fn sha256_hex(token: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, token.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn msal_net_service_fabric_pins_the_thumbprint_and_selects_by_principal_id() {
    let (h, dir) = start_service_fabric().await;
    let thumbprint = std::fs::read_to_string(dir.join("sf.thumbprint")).unwrap();
    let secret = h.app.identity_header().expose().to_owned();
    for (id, expected_tenant) in [
        ("", demo::TARGET_TENANT),
        // User-assigned: an object id alone, as principalId (MSAL.NET throws for the others).
        (
            &*format!("&principalId={CONTOSO_OBJECT_ID}"),
            demo::OTHER_TARGET_TENANT,
        ),
    ] {
        let (status, text) = msal_net_service_fabric(
            &h,
            // Any case: MSAL.NET compares ignoring it.
            &thumbprint.to_ascii_lowercase(),
            &format!("api-version=2020-05-01&resource=https://vault.azure.net{id}"),
            &secret,
        )
        .await;
        assert_eq!(status, 200, "{text}");
        let (_, body) = msal_net_reads(&text);
        assert_eq!(tenant_of(&body), expected_tenant, "{id}");
    }
    // A wrong secret: MSAL.NET reads the nested `error.code` and `error.message`
    // (`AbstractManagedIdentity.GetMessageFromErrorResponse`).
    let (status, text) = msal_net_service_fabric(
        &h,
        &thumbprint,
        "api-version=2020-05-01&resource=https://vault.azure.net",
        "not-the-secret-at-all-0123",
    )
    .await;
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(status, 404, "{text}");
    assert_eq!(body["error"]["code"], "ManagedIdentityNotFound");
    assert!(body["error"]["message"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn azure_identity_cae_sends_cp1_and_revokes_over_service_fabric() {
    let (h, dir) = start_service_fabric().await;
    let thumbprint = std::fs::read_to_string(dir.join("sf.thumbprint")).unwrap();
    let secret = h.app.identity_header().expose().to_owned();
    let base = "api-version=2020-05-01&resource=https://vault.azure.net";
    // Azure.Identity keeps a CAE and a non-CAE MSAL client (`MsalManagedIdentityClient`): the
    // first sends no capabilities, the second `xms_cc=CP1` (upper case) on every request, e.g.
    // for Key Vault, whose challenge policy turns CAE on. Their tokens are kept apart.
    let (status, text) = msal_net_service_fabric(&h, &thumbprint, base, &secret).await;
    assert_eq!(status, 200, "{text}");
    let (_, plain) = msal_net_reads(&text);
    let cae = format!("{base}&xms_cc=CP1");
    let (status, text) = msal_net_service_fabric(&h, &thumbprint, &cae, &secret).await;
    assert_eq!(status, 200, "{text}");
    let (_, first) = msal_net_reads(&text);
    let first = first["access_token"].as_str().unwrap().to_owned();
    assert_ne!(
        plain["access_token"],
        first.as_str(),
        "CAE tokens are their own"
    );
    let exchanges = h.sim.exchanges();
    assert_eq!(exchanges.len(), 2);
    assert_eq!(exchanges[0].claims, None);
    assert_eq!(
        exchanges[1].claims.as_deref(),
        Some(r#"{"access_token":{"xms_cc":{"values":["cp1"]}}}"#)
    );

    // Key Vault refuses the token with a claims challenge: MSAL.NET asks again with the claims
    // and its cached token, so `token_sha256_to_refresh` follows `xms_cc`.
    h.sim.revoke(&first);
    let refused = format!("{cae}&token_sha256_to_refresh={}", sha256_hex(&first));
    let (status, text) = msal_net_service_fabric(&h, &thumbprint, &refused, &secret).await;
    assert_eq!(status, 200, "{text}");
    let (_, body) = msal_net_reads(&text);
    let second = body["access_token"].as_str().unwrap().to_owned();
    assert_ne!(second, first);
    assert!(h.sim.resource_accepts(&second));
    assert_eq!(h.sim.exchanges().len(), 3);
    // Another instance presenting the same hash gets the new token with no Entra call, and
    // the non-CAE token was never touched.
    let (_, text) = msal_net_service_fabric(&h, &thumbprint, &refused, &secret).await;
    assert_eq!(msal_net_reads(&text).1["access_token"], second.as_str());
    let (_, text) = msal_net_service_fabric(&h, &thumbprint, base, &secret).await;
    assert_eq!(
        msal_net_reads(&text).1["access_token"],
        plain["access_token"]
    );
    assert_eq!(h.sim.exchanges().len(), 3);
    let _ = std::fs::remove_dir_all(dir);
}
