//! Black-box tests: the simulator over real HTTP on 127.0.0.1:0, driven with reqwest.

use std::time::Duration;

use base64::Engine as _;
use fedimds_sim::demo::{
    APP_CLIENT_ID, HOME_TENANT, IDENTITY_HEADER, K8S_ISSUER, K8S_SUBJECT, MI_CLIENT_ID,
    MI_OBJECT_ID, MI_RESOURCE_ID, OTHER_TARGET_TENANT, SYSTEM_MI_OBJECT_ID, TARGET_TENANT,
    UNCONSENTED_APP_CLIENT_ID,
};
use fedimds_sim::{Fault, Latency, Route, Sim, SimConfig, TokenSigning};
use serde_json::{json, Value};

const EXCHANGE_AUDIENCE: &str = "api://AzureADTokenExchange";
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const ARM_SCOPE: &str = "https://management.core.windows.net//.default";

async fn start(config: SimConfig) -> Sim {
    let addr = "127.0.0.1:0".parse().expect("literal address");
    Sim::start(config, addr).await.expect("simulator starts")
}

/// GET on IMDS with `Metadata: true`; returns status and JSON body.
async fn imds(sim: &Sim, query: &str) -> (u16, Value) {
    let url = format!(
        "{}/metadata/identity/oauth2/token?{query}",
        sim.imds_endpoint()
    );
    let response = reqwest::Client::new()
        .get(url)
        .header("Metadata", "true")
        .send()
        .await
        .expect("request");
    (
        response.status().as_u16(),
        response.json().await.expect("json body"),
    )
}

/// An MI token for `resource` from the user-assigned identity, via IMDS.
async fn mi_token(sim: &Sim, resource: &str) -> String {
    let query = format!("api-version=2018-02-01&resource={resource}&client_id={MI_CLIENT_ID}");
    let (status, body) = imds(sim, &query).await;
    assert_eq!(status, 200, "{body}");
    body["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned()
}

/// POSTs a client-credentials request with `assertion`; returns status, Retry-After and body.
async fn exchange_raw(
    sim: &Sim,
    tenant: &str,
    client_id: &str,
    scope: &str,
    assertion: &str,
) -> (u16, Option<String>, Value) {
    let url = format!("{}/{tenant}/oauth2/v2.0/token", sim.authority_host());
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", client_id),
        ("scope", scope),
        ("client_assertion_type", JWT_BEARER),
        ("client_assertion", assertion),
    ];
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let response = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (
        status,
        retry_after,
        response.json().await.expect("json body"),
    )
}

async fn exchange(
    sim: &Sim,
    tenant: &str,
    client_id: &str,
    scope: &str,
    assertion: &str,
) -> (u16, Value) {
    let (status, _, body) = exchange_raw(sim, tenant, client_id, scope, assertion).await;
    (status, body)
}

fn now() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since.expect("clock after 1970").as_secs() as i64
}

fn claims(token: &str) -> Value {
    Sim::decode(token).expect("a JWT")
}

/// Asserts an Entra rejection: HTTP status, `error`, `error_codes[0]` and the description shape.
fn assert_rejected(status: u16, body: &Value, want_status: u16, error: &str, code: u32) {
    assert_eq!(
        (status, body["error"].as_str()),
        (want_status, Some(error)),
        "{body}"
    );
    assert_eq!(body["error_codes"], json!([code]), "{body}");
    let description = body["error_description"]
        .as_str()
        .expect("error_description");
    assert!(
        description.starts_with(&format!("AADSTS{code}: ")),
        "{description}"
    );
    assert!(description.contains("\r\nTrace ID: "), "{description}");
    for field in ["timestamp", "trace_id", "correlation_id", "error_uri"] {
        assert!(body[field].is_string(), "{field} missing in {body}");
    }
}

#[tokio::test]
async fn imds_issues_a_managed_identity_token() {
    let sim = start(SimConfig::demo()).await;
    let query =
        format!("api-version=2018-02-01&resource={EXCHANGE_AUDIENCE}&client_id={MI_CLIENT_ID}");
    let (status, body) = imds(&sim, &query).await;
    assert_eq!(status, 200, "{body}");
    for field in [
        "access_token",
        "client_id",
        "expires_in",
        "expires_on",
        "ext_expires_in",
        "not_before",
        "resource",
        "token_type",
    ] {
        assert!(body[field].is_string(), "{field} is not a string in {body}");
    }
    assert_eq!(body["client_id"], MI_CLIENT_ID);
    assert_eq!(body["resource"], EXCHANGE_AUDIENCE);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], "86400");

    let token = body["access_token"].as_str().expect("token");
    let c = claims(token);
    assert_eq!(
        c["iss"],
        format!("https://login.microsoftonline.com/{HOME_TENANT}/v2.0")
    );
    assert_eq!(
        (&c["sub"], &c["oid"]),
        (&json!(MI_OBJECT_ID), &json!(MI_OBJECT_ID))
    );
    assert_eq!(
        (&c["aud"], &c["tid"], &c["appid"]),
        (
            &json!(EXCHANGE_AUDIENCE),
            &json!(HOME_TENANT),
            &json!(MI_CLIENT_ID)
        )
    );
    let exp = c["exp"].as_i64().expect("exp");
    assert!(
        (exp - now() - 86_400).abs() <= 5,
        "exp {exp} is not about 24 h away"
    );
    assert_eq!(body["expires_on"], exp.to_string());
    assert!(sim.issued().contains(&token.to_owned()));

    // The same request again gives a different token string.
    assert_ne!(mi_token(&sim, EXCHANGE_AUDIENCE).await, token);
    assert_eq!(sim.counters().imds, 2);
    sim.shutdown().await;
}

#[tokio::test]
async fn imds_selects_identities() {
    let sim = start(SimConfig::demo()).await;
    let subject =
        |body: &Value| claims(body["access_token"].as_str().expect("token"))["sub"].clone();

    let (status, body) = imds(
        &sim,
        "api-version=2019-08-01&resource=https://vault.azure.net",
    )
    .await;
    assert_eq!(
        (status, subject(&body)),
        (200, json!(SYSTEM_MI_OBJECT_ID)),
        "no id means system-assigned"
    );

    let query = format!("api-version=2018-02-01&resource=x&object_id={MI_OBJECT_ID}");
    assert_eq!(subject(&imds(&sim, &query).await.1), json!(MI_OBJECT_ID));
    // Python sends the resource id unencoded.
    let query = format!("api-version=2018-02-01&resource=x&msi_res_id={MI_RESOURCE_ID}");
    assert_eq!(subject(&imds(&sim, &query).await.1), json!(MI_OBJECT_ID));

    let (status, body) = imds(
        &sim,
        "api-version=2018-02-01&resource=x&client_id=00000000-0000-0000-0000-000000000000",
    )
    .await;
    assert_eq!(
        (status, body),
        (
            400,
            json!({"error": "invalid_request", "error_description": "Identity not found"})
        )
    );

    let (status, body) = imds(&sim, "api-version=2018-02-01").await;
    assert_eq!(
        (status, &body["error"]),
        (400, &json!("invalid_request")),
        "resource is required"
    );
    let (status, _) = imds(&sim, "resource=x").await;
    assert_eq!(status, 400, "api-version is required");
    sim.shutdown().await;
}

#[tokio::test]
async fn imds_requires_the_metadata_header() {
    let sim = start(SimConfig::demo()).await;
    let url = format!(
        "{}/metadata/identity/oauth2/token?api-version=2018-02-01&resource=x",
        sim.url()
    );
    let response = reqwest::get(url).await.expect("request");
    assert_eq!(response.status().as_u16(), 400);
    let body: Value = response.json().await.expect("json");
    assert_eq!(
        body,
        json!({"error": "invalid_request", "error_description": "Required metadata header not specified"})
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn app_service_checks_the_identity_header() {
    let sim = start(SimConfig::demo()).await;
    let url = format!(
        "{}?api-version=2019-08-01&resource={EXCHANGE_AUDIENCE}&client_id={MI_CLIENT_ID}",
        sim.app_service_endpoint()
    );
    let client = reqwest::Client::new();

    let response = client
        .get(&url)
        .header("X-IDENTITY-HEADER", "wrong")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status().as_u16(), 401);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["statusCode"], 401);
    assert!(
        body["message"].is_string() && body["correlationId"].is_string(),
        "{body}"
    );

    let response = client
        .get(&url)
        .header("x-identity-header", IDENTITY_HEADER)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status().as_u16(), 200);
    let body: Value = response.json().await.expect("json");
    let expires_on: i64 = body["expires_on"]
        .as_str()
        .expect("string expires_on")
        .parse()
        .expect("epoch");
    assert!((expires_on - now() - 86_400).abs() <= 5);
    assert!(body["not_before"].is_string());
    assert_eq!(
        (&body["resource"], &body["token_type"], &body["client_id"]),
        (
            &json!(EXCHANGE_AUDIENCE),
            &json!("Bearer"),
            &json!(MI_CLIENT_ID)
        )
    );
    assert_eq!(
        claims(body["access_token"].as_str().expect("token"))["sub"],
        MI_OBJECT_ID
    );
    assert_eq!(sim.counters().app_service, 2);
    sim.shutdown().await;
}

#[tokio::test]
async fn entra_exchanges_an_mi_assertion() {
    let sim = start(SimConfig::demo()).await;
    let assertion = mi_token(&sim, EXCHANGE_AUDIENCE).await;
    let (status, body) = exchange(
        &sim,
        TARGET_TENANT,
        APP_CLIENT_ID,
        "https://vault.azure.net/.default",
        &assertion,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (
            &body["token_type"],
            &body["expires_in"],
            &body["ext_expires_in"]
        ),
        (&json!("Bearer"), &json!(3599), &json!(3599))
    );
    assert!(body.get("refresh_in").is_none());

    let token = body["access_token"].as_str().expect("token");
    let c = claims(token);
    assert_eq!(
        (&c["tid"], &c["appid"], &c["aud"]),
        (
            &json!(TARGET_TENANT),
            &json!(APP_CLIENT_ID),
            &json!("https://vault.azure.net")
        )
    );
    assert_eq!(
        c["iss"],
        format!("https://sts.windows.net/{TARGET_TENANT}/")
    );
    assert_eq!(c["roles"], json!([]));

    let records = sim.exchanges();
    assert_eq!(records.len(), 1);
    assert_eq!(
        (records[0].tenant.as_str(), records[0].client_id.as_str()),
        (TARGET_TENANT, APP_CLIENT_ID)
    );
    assert_eq!(records[0].scope, "https://vault.azure.net/.default");
    assert_eq!(records[0].outcome, Ok(token.to_owned()));
    assert!(sim.issued().contains(&token.to_owned()));
    assert_eq!(sim.counters().entra, 1);

    // The service principal's id is stable per tenant and differs between tenants.
    let (_, again) = exchange(&sim, TARGET_TENANT, APP_CLIENT_ID, ARM_SCOPE, &assertion).await;
    let (_, other) = exchange(
        &sim,
        OTHER_TARGET_TENANT,
        APP_CLIENT_ID,
        ARM_SCOPE,
        &assertion,
    )
    .await;
    let oid = |body: &Value| claims(body["access_token"].as_str().expect("token"))["oid"].clone();
    assert_eq!(oid(&again), c["oid"]);
    assert_ne!(oid(&other), c["oid"]);
    sim.shutdown().await;
}

#[tokio::test]
async fn entra_strips_exactly_one_default_suffix() {
    let sim = start(SimConfig::demo()).await;
    let assertion = mi_token(&sim, EXCHANGE_AUDIENCE).await;
    let (status, body) = exchange(&sim, TARGET_TENANT, APP_CLIENT_ID, ARM_SCOPE, &assertion).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        claims(body["access_token"].as_str().expect("token"))["aud"],
        "https://management.core.windows.net/"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn entra_accepts_a_kubernetes_assertion() {
    let sim = start(SimConfig::demo()).await;
    let assertion = sim.issue_k8s_token(
        K8S_ISSUER,
        K8S_SUBJECT,
        EXCHANGE_AUDIENCE,
        Duration::from_secs(3600),
    );
    assert_eq!(claims(&assertion)["aud"], json!([EXCHANGE_AUDIENCE]));
    let (status, body) = exchange(
        &sim,
        OTHER_TARGET_TENANT,
        APP_CLIENT_ID,
        ARM_SCOPE,
        &assertion,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        claims(body["access_token"].as_str().expect("token"))["tid"],
        OTHER_TARGET_TENANT
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn entra_rejects_like_entra() {
    let sim = start(SimConfig::demo()).await;
    let good = mi_token(&sim, EXCHANGE_AUDIENCE).await;
    let wrong_audience = mi_token(&sim, "https://management.azure.com").await;
    let k8s = |issuer: &str, subject: &str, lifetime: u64| {
        sim.issue_k8s_token(
            issuer,
            subject,
            EXCHANGE_AUDIENCE,
            Duration::from_secs(lifetime),
        )
    };
    let unknown_issuer = k8s("https://oidc.other.invalid/", K8S_SUBJECT, 3600);
    // A missing trailing slash is the classic AKS mistake: a different issuer to Entra.
    let issuer_without_slash = k8s(K8S_ISSUER.trim_end_matches('/'), K8S_SUBJECT, 3600);
    let wrong_subject = k8s(K8S_ISSUER, "system:serviceaccount:default:other", 3600);
    let subject_wrong_case = k8s(K8S_ISSUER, &K8S_SUBJECT.to_uppercase(), 3600);
    let expired = k8s(K8S_ISSUER, K8S_SUBJECT, 0);
    let mut future = claims(&good);
    future["nbf"] = json!(now() + 3600);
    future["exp"] = json!(now() + 7200);
    let not_yet_valid = sim.sign_claims(&future);
    let forged = sim.issue_forged_assertion(MI_OBJECT_ID, EXCHANGE_AUDIENCE);
    let vault = "https://vault.azure.net/.default";

    let cases: [(&str, &str, &str, &str, u16, &str, u32); 13] = [
        (
            "common",
            APP_CLIENT_ID,
            vault,
            &good,
            400,
            "invalid_request",
            9001023,
        ),
        (
            "organizations",
            APP_CLIENT_ID,
            vault,
            &good,
            400,
            "invalid_request",
            9001023,
        ),
        (
            TARGET_TENANT,
            UNCONSENTED_APP_CLIENT_ID,
            vault,
            &good,
            400,
            "unauthorized_client",
            700016,
        ),
        (
            HOME_TENANT,
            APP_CLIENT_ID,
            vault,
            &good,
            400,
            "unauthorized_client",
            700016,
        ),
        (
            TARGET_TENANT,
            APP_CLIENT_ID,
            "https://vault.azure.net",
            &good,
            400,
            "invalid_scope",
            1002012,
        ),
        (
            TARGET_TENANT,
            APP_CLIENT_ID,
            "https://vault.azure.net/.default https://graph.microsoft.com/.default",
            &good,
            400,
            "invalid_scope",
            700022,
        ),
        (
            TARGET_TENANT,
            APP_CLIENT_ID,
            vault,
            "not-a-jwt",
            400,
            "invalid_request",
            50027,
        ),
        (
            TARGET_TENANT,
            APP_CLIENT_ID,
            vault,
            &forged,
            401,
            "invalid_client",
            7000274,
        ),
        (
            TARGET_TENANT,
            APP_CLIENT_ID,
            vault,
            &expired,
            401,
            "invalid_client",
            700024,
        ),
        (
            TARGET_TENANT,
            APP_CLIENT_ID,
            vault,
            &not_yet_valid,
            401,
            "invalid_client",
            700024,
        ),
        (
            TARGET_TENANT,
            APP_CLIENT_ID,
            vault,
            &unknown_issuer,
            401,
            "invalid_client",
            700211,
        ),
        (
            TARGET_TENANT,
            APP_CLIENT_ID,
            vault,
            &wrong_subject,
            401,
            "invalid_client",
            700213,
        ),
        (
            TARGET_TENANT,
            APP_CLIENT_ID,
            vault,
            &wrong_audience,
            401,
            "invalid_client",
            700212,
        ),
    ];
    for (tenant, client_id, scope, assertion, want_status, error, code) in cases {
        let (status, body) = exchange(&sim, tenant, client_id, scope, assertion).await;
        assert_rejected(status, &body, want_status, error, code);
        let record = sim.exchanges().pop().expect("recorded");
        assert_eq!(
            (record.tenant.as_str(), record.outcome),
            (tenant, Err(format!("AADSTS{code}")))
        );
    }
    for (assertion, code) in [
        (&issuer_without_slash, 700211),
        (&subject_wrong_case, 7002138),
    ] {
        let (status, body) = exchange(&sim, TARGET_TENANT, APP_CLIENT_ID, vault, assertion).await;
        assert_rejected(status, &body, 401, "invalid_client", code);
    }
    // A subject that differs only in letter case is told apart, as Entra does.
    let (_, body) = exchange(
        &sim,
        TARGET_TENANT,
        APP_CLIENT_ID,
        vault,
        &subject_wrong_case,
    )
    .await;
    let said = body["error_description"].as_str().unwrap();
    assert!(
        said.contains("The subject matches with case-insensitive comparison, but not with case-sensitive comparison."),
        "{said}"
    );
    // Forged claims are otherwise perfect: only the signature is wrong.
    let (status, _) = exchange(
        &sim,
        TARGET_TENANT,
        APP_CLIENT_ID,
        vault,
        &sim.sign_claims(&claims(&forged)),
    )
    .await;
    assert_eq!(status, 200);
    sim.shutdown().await;
}

#[tokio::test]
async fn entra_checks_the_protocol_fields() {
    let sim = start(SimConfig::demo()).await;
    let assertion = mi_token(&sim, EXCHANGE_AUDIENCE).await;
    let url = format!("{}/{TARGET_TENANT}/oauth2/v2.0/token", sim.authority_host());
    let post = |pairs: Vec<(&'static str, String)>| {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        reqwest::Client::new().post(&url).body(body).send()
    };
    let full = |skip: &str, replace: Option<(&'static str, &str)>| {
        let mut pairs: Vec<(&'static str, String)> = [
            ("grant_type", "client_credentials"),
            ("client_id", APP_CLIENT_ID),
            ("scope", ARM_SCOPE),
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", assertion.as_str()),
        ]
        .into_iter()
        .filter(|(k, _)| *k != skip)
        .map(|(k, v)| (k, v.to_owned()))
        .collect();
        if let Some((k, v)) = replace {
            pairs.retain(|(key, _)| *key != k);
            pairs.push((k, v.to_owned()));
        }
        pairs
    };
    let cases = [
        (
            full("", Some(("grant_type", "password"))),
            "unsupported_grant_type",
            70003,
        ),
        (full("grant_type", None), "invalid_request", 900144),
        (full("client_assertion", None), "invalid_request", 90014),
        (
            full("", Some(("client_assertion_type", "urn:other"))),
            "invalid_request",
            700023,
        ),
        (
            full("", Some(("client_secret", "s3cret"))),
            "invalid_client",
            7000215,
        ),
    ];
    for (pairs, error, code) in cases {
        let response = post(pairs).await.expect("request");
        let status = response.status().as_u16();
        let body: Value = response.json().await.expect("json");
        assert_rejected(
            status,
            &body,
            if error == "invalid_client" { 401 } else { 400 },
            error,
            code,
        );
    }
    let response = post(full("", None)).await.expect("request");
    assert_eq!(response.status().as_u16(), 200);
    sim.shutdown().await;
}

/// Each scripted AADSTS code answers Entra's class and words for it, with the request's values.
#[tokio::test]
async fn scripted_codes_answer_entra_words() {
    let sim = start(SimConfig::demo()).await;
    let assertion = mi_token(&sim, EXCHANGE_AUDIENCE).await;
    let issuer = fedimds_sim::config::mi_issuer(HOME_TENANT);
    let cases: [(u32, &str, String); 10] = [
        (7002138, "invalid_client", format!("assertion subject '{MI_OBJECT_ID}'. The subject matches with case-insensitive comparison")),
        (7002137, "invalid_client", format!("Please make sure the federated identity credential Subject is '/eid1/c/pub/t/{HOME_TENANT}/a/{APP_CLIENT_ID}/{MI_OBJECT_ID}'.")),
        (700236, "invalid_client", format!("Entra ID tokens issued by issuer '{issuer}' may not be used for federated identity credential flows")),
        (700222, "invalid_client", "AAD-issued tokens may not be used for federated identity flows.".to_owned()),
        (700229, "invalid_grant", "Only app-only tokens may be used as Federated Identity Credentials for AAD issuer.".to_owned()),
        (501661, "invalid_request", "Request to External OIDC endpoint failed.".to_owned()),
        (50196, "invalid_grant", "encountered a client request loop".to_owned()),
        (90055, "temporarily_unavailable", "This exception is thrown for blocked tenants.".to_owned()),
        (7000112, "unauthorized_client", format!("Application '{APP_CLIENT_ID}'")),
        (500011, "invalid_resource", format!("The resource principal named https://management.core.windows.net/ was not found in the tenant named {TARGET_TENANT}.")),
    ];
    for (code, error, words) in cases {
        sim.push_fault(Route::Entra, Fault::aadsts(code));
        let (status, body) =
            exchange(&sim, TARGET_TENANT, APP_CLIENT_ID, ARM_SCOPE, &assertion).await;
        assert_rejected(status, &body, 400, error, code);
        let said = body["error_description"].as_str().unwrap();
        assert!(said.starts_with(&format!("AADSTS{code}: ")), "{said}");
        assert!(said.contains(&words), "AADSTS{code}: {said}");
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn faults_are_scripted_per_route() {
    let sim = start(SimConfig::demo()).await;
    let assertion = mi_token(&sim, EXCHANGE_AUDIENCE).await;
    sim.push_fault(Route::Entra, Fault::status(429).retry_after("2"));
    sim.push_fault(Route::Entra, Fault::aadsts(700016));

    let (status, retry_after, body) =
        exchange_raw(&sim, TARGET_TENANT, APP_CLIENT_ID, ARM_SCOPE, &assertion).await;
    assert_eq!((status, retry_after.as_deref()), (429, Some("2")));
    assert_eq!(body["error"], "temporarily_unavailable");
    let (status, body) = exchange(&sim, TARGET_TENANT, APP_CLIENT_ID, ARM_SCOPE, &assertion).await;
    assert_rejected(status, &body, 400, "unauthorized_client", 700016);
    let (status, retry_after, _) =
        exchange_raw(&sim, TARGET_TENANT, APP_CLIENT_ID, ARM_SCOPE, &assertion).await;
    assert_eq!((status, retry_after), (200, None));

    let outcomes: Vec<_> = sim
        .exchanges()
        .into_iter()
        .map(|r| r.outcome.err())
        .collect();
    assert_eq!(
        outcomes,
        [
            Some("fault:429".to_owned()),
            Some("fault:400".to_owned()),
            None
        ]
    );
    let counters = sim.counters();
    assert_eq!(
        (counters.imds, counters.app_service, counters.entra),
        (1, 0, 3)
    );

    // A fault on one route leaves the others alone, and lasts until cleared.
    sim.push_fault(Route::Imds, Fault::status(503).forever());
    let query = format!("api-version=2018-02-01&resource=x&client_id={MI_CLIENT_ID}");
    for _ in 0..3 {
        let (status, body) = imds(&sim, &query).await;
        assert_eq!((status, body["error"].is_string()), (503, true));
    }
    assert_eq!(
        exchange(&sim, TARGET_TENANT, APP_CLIENT_ID, ARM_SCOPE, &assertion)
            .await
            .0,
        200
    );
    sim.clear_faults();
    assert_eq!(imds(&sim, &query).await.0, 200);
    assert_eq!(sim.counters().imds, 5);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_slow_fault_delays_a_normal_answer() {
    let sim = start(SimConfig::demo()).await;
    sim.push_fault(Route::Imds, Fault::slow(Duration::from_millis(300)));
    let started = tokio::time::Instant::now();
    let query = format!("api-version=2018-02-01&resource=x&client_id={MI_CLIENT_ID}");
    assert_eq!(imds(&sim, &query).await.0, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
    sim.shutdown().await;
}

#[tokio::test]
async fn a_configured_latency_delays_every_answer_of_its_route() {
    let wait = Duration::from_millis(250);
    let config = SimConfig {
        entra_latency: Some(Latency::fixed(wait)),
        ..SimConfig::demo()
    };
    let sim = start(config).await;
    let assertion = mi_token(&sim, EXCHANGE_AUDIENCE).await;
    let started = tokio::time::Instant::now();
    let (status, body) = exchange(&sim, TARGET_TENANT, APP_CLIENT_ID, ARM_SCOPE, &assertion).await;
    assert_eq!(status, 200, "{body}");
    assert!(started.elapsed() >= wait, "a normal answer waited");
    // A scripted fault's answer waits too: latency is the route's, whatever it answers.
    sim.push_fault(Route::Entra, Fault::status(429).retry_after("30"));
    let started = tokio::time::Instant::now();
    let (status, _) = exchange(&sim, TARGET_TENANT, APP_CLIENT_ID, ARM_SCOPE, &assertion).await;
    assert_eq!(status, 429);
    assert!(started.elapsed() >= wait, "a fault's answer waited");
    sim.shutdown().await;
}

#[tokio::test]
async fn faults_are_scripted_and_cleared_from_other_processes() {
    let sim = start(SimConfig::demo()).await;
    let http = reqwest::Client::new();
    let faults = format!("{}/_sim/faults", sim.url());
    let push = |query: &'static str| {
        let request = http.post(format!("{faults}?{query}"));
        async move { request.send().await.expect("request").status().as_u16() }
    };
    assert_eq!(
        push("route=entra&status=429&retry_after=30&times=forever").await,
        204
    );
    let assertion = mi_token(&sim, EXCHANGE_AUDIENCE).await;
    for _ in 0..3 {
        let (status, retry_after, _) =
            exchange_raw(&sim, TARGET_TENANT, APP_CLIENT_ID, ARM_SCOPE, &assertion).await;
        assert_eq!((status, retry_after.as_deref()), (429, Some("30")));
    }
    let cleared = http.delete(&faults).send().await.expect("request");
    assert_eq!(cleared.status().as_u16(), 204);
    let (status, body) = exchange(&sim, TARGET_TENANT, APP_CLIENT_ID, ARM_SCOPE, &assertion).await;
    assert_eq!(status, 200, "{body}");
    // A mistake is named, and queues nothing.
    assert_eq!(push("route=dns&status=429").await, 400);
    assert_eq!(push("route=imds&status=42").await, 400);
    assert_eq!(push("route=imds&status=503&times=0").await, 400);
    mi_token(&sim, EXCHANGE_AUDIENCE).await;
    sim.shutdown().await;
}

#[tokio::test]
async fn refresh_in_is_sent_when_configured() {
    let config = SimConfig {
        entra_refresh_in: Some(Duration::from_secs(1800)),
        entra_token_lifetime: Duration::from_secs(7200),
        ..SimConfig::demo()
    };
    let sim = start(config).await;
    let assertion = mi_token(&sim, EXCHANGE_AUDIENCE).await;
    let (status, body) = exchange(&sim, TARGET_TENANT, APP_CLIENT_ID, ARM_SCOPE, &assertion).await;
    assert_eq!(
        (status, &body["refresh_in"], &body["expires_in"]),
        (200, &json!(1800), &json!(7200))
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn a_soak_world_signs_cheaply_and_keeps_no_records() {
    let header = |token: &str| -> Value {
        let head = token.split('.').next().expect("a JWT");
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(head)
            .expect("base64url");
        serde_json::from_slice(&bytes).expect("a JSON header")
    };
    let sim = start(SimConfig::demo()).await;
    let assertion = mi_token(&sim, EXCHANGE_AUDIENCE).await;
    let (_, body) = exchange(&sim, TARGET_TENANT, APP_CLIENT_ID, ARM_SCOPE, &assertion).await;
    let token = body["access_token"].as_str().expect("access_token");
    assert_eq!(
        header(token)["alg"],
        "RS256",
        "Entra's algorithm by default"
    );
    assert_eq!(sim.exchanges().len(), 1);
    assert_eq!(sim.issued().len(), 2, "the assertion and the access token");
    sim.shutdown().await;

    let config = SimConfig {
        entra_token_signing: TokenSigning::Hs256,
        keep_records: false,
        ..SimConfig::demo()
    };
    let sim = start(config).await;
    let assertion = mi_token(&sim, EXCHANGE_AUDIENCE).await;
    assert_eq!(
        header(&assertion)["alg"],
        "RS256",
        "assertions stay genuine"
    );
    for _ in 0..3 {
        let (status, body) =
            exchange(&sim, TARGET_TENANT, APP_CLIENT_ID, ARM_SCOPE, &assertion).await;
        assert_eq!(status, 200, "{body}");
        let token = body["access_token"].as_str().expect("access_token");
        assert_eq!(header(token)["alg"], "HS256");
        assert_eq!(claims(token)["aud"], "https://management.core.windows.net/");
    }
    assert!(sim.exchanges().is_empty() && sim.issued().is_empty());
    assert_eq!(sim.counters().entra, 3, "counted, not kept");
    sim.shutdown().await;
}

#[tokio::test]
async fn counters_are_served_for_other_processes() {
    let sim = start(SimConfig::demo()).await;
    let counters = || async {
        let response = reqwest::get(format!("{}/_sim/counters", sim.url()))
            .await
            .expect("request");
        assert_eq!(response.status().as_u16(), 200);
        response.json::<Value>().await.expect("json")
    };
    assert_eq!(
        counters().await,
        json!({"imds": 0, "app_service": 0, "entra": 0})
    );
    let assertion = mi_token(&sim, EXCHANGE_AUDIENCE).await;
    let (status, body) = exchange(&sim, TARGET_TENANT, APP_CLIENT_ID, ARM_SCOPE, &assertion).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        counters().await,
        json!({"imds": 1, "app_service": 0, "entra": 1})
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn unknown_paths_are_json_404_and_shutdown_stops_serving() {
    let sim = start(SimConfig::demo()).await;
    let url = sim.url();
    assert!(!url.ends_with('/'));
    let response = reqwest::get(format!("{url}/nope")).await.expect("request");
    assert_eq!(response.status().as_u16(), 404);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"], "not_found");
    sim.shutdown().await;
    assert!(reqwest::get(format!("{url}/nope")).await.is_err());
}

#[tokio::test]
async fn exchanges_are_served_for_other_processes() {
    let sim = start(SimConfig::demo()).await;
    let exchanges = || async {
        let response = reqwest::get(format!("{}/_sim/exchanges", sim.url()))
            .await
            .expect("request");
        assert_eq!(response.status().as_u16(), 200);
        response.json::<Value>().await.expect("json")
    };
    assert_eq!(exchanges().await, json!([]));
    let assertion = mi_token(&sim, EXCHANGE_AUDIENCE).await;
    let (status, body) = exchange(&sim, TARGET_TENANT, APP_CLIENT_ID, ARM_SCOPE, &assertion).await;
    assert_eq!(status, 200, "{body}");
    let (status, _, _) = exchange_raw(
        &sim,
        TARGET_TENANT,
        UNCONSENTED_APP_CLIENT_ID,
        ARM_SCOPE,
        &assertion,
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        exchanges().await,
        json!([
            {"tenant": TARGET_TENANT, "client_id": APP_CLIENT_ID, "scope": ARM_SCOPE,
             "access_token": body["access_token"]},
            {"tenant": TARGET_TENANT, "client_id": UNCONSENTED_APP_CLIENT_ID, "scope": ARM_SCOPE,
             "error": "AADSTS700016"},
        ])
    );
    sim.shutdown().await;
}
