//! Pins the status, code and body shape of every refusal in every dialect, so a change to the
//! table is a change someone meant. A new variant fails to compile in [`every_refusal`]'s
//! match until it is added here with its row.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use serde_json::Value;

use super::Refusal;
use crate::cache::CacheError;
use crate::dialect::{self, Dialect};
use crate::target::TargetError;
use crate::upstream::exchange::{ExchangeError, Rejection};
use crate::upstream::FetchError;

/// One row: the refusal, its status, Retry-After seconds, its OAuth code, and its Service
/// Fabric code (`docs/client-protocols.md#service-fabric`).
struct Row {
    refusal: Refusal,
    status: StatusCode,
    retry_after: Option<&'static str>,
    code: &'static str,
    service_fabric: &'static str,
}

fn upstream(error: FetchError, retry_in: Duration) -> Refusal {
    Refusal::Upstream(CacheError::Upstream {
        error: Arc::new(error),
        retry_in,
    })
}

fn rejected(code: u32) -> FetchError {
    FetchError::Exchange {
        error: ExchangeError::Rejected(Rejection {
            status: 400,
            error: "unauthorized_client".to_owned(),
            code: Some(code),
            description: format!("AADSTS{code}: described"),
            trace_id: String::new(),
            correlation_id: String::new(),
        }),
        diagnosis: None,
    }
}

/// Every variant, each with the row it must produce.
fn every_refusal() -> Vec<Row> {
    let row = |refusal: Refusal, status, retry_after, code, service_fabric| Row {
        refusal,
        status,
        retry_after,
        code,
        service_fabric,
    };
    let rows = vec![
        row(
            Refusal::MissingMetadata,
            StatusCode::BAD_REQUEST,
            None,
            "invalid_request",
            "BadRequest",
        ),
        row(
            Refusal::Forwarded("Forwarded"),
            StatusCode::BAD_REQUEST,
            None,
            "invalid_request",
            "BadRequest",
        ),
        row(
            Refusal::Browser("Origin"),
            StatusCode::BAD_REQUEST,
            None,
            "invalid_request",
            "BadRequest",
        ),
        row(
            Refusal::Ambiguous("The Metadata header is given more than once"),
            StatusCode::BAD_REQUEST,
            None,
            "invalid_request",
            "BadRequest",
        ),
        row(
            Refusal::MethodNotAllowed,
            StatusCode::METHOD_NOT_ALLOWED,
            None,
            "method_not_allowed",
            "MethodNotAllowed",
        ),
        row(
            Refusal::ApiVersion,
            StatusCode::BAD_REQUEST,
            None,
            "invalid_request",
            "InvalidApiVersion",
        ),
        row(
            Refusal::BadRequest("bad".to_owned()),
            StatusCode::BAD_REQUEST,
            None,
            "invalid_request",
            "BadRequest",
        ),
        row(
            Refusal::Unauthorized("no secret"),
            StatusCode::UNAUTHORIZED,
            None,
            "unauthorized_client",
            "SecretHeaderNotFound",
        ),
        row(
            Refusal::SecretNotKnown("wrong secret"),
            StatusCode::UNAUTHORIZED,
            None,
            "unauthorized_client",
            "ManagedIdentityNotFound",
        ),
        row(
            Refusal::MissingResource,
            StatusCode::BAD_REQUEST,
            None,
            "invalid_request",
            "ArgumentNullOrEmpty",
        ),
        row(
            Refusal::ForeignHost,
            StatusCode::FORBIDDEN,
            None,
            "unauthorized_client",
            "Forbidden",
        ),
        row(
            Refusal::Forbidden("not yours".to_owned()),
            StatusCode::FORBIDDEN,
            None,
            "unauthorized_client",
            "Forbidden",
        ),
        row(
            Refusal::RateLimited(Duration::from_millis(1500)),
            StatusCode::TOO_MANY_REQUESTS,
            Some("2"),
            "slow_down",
            "TooManyRequests",
        ),
        row(
            Refusal::Target(TargetError::TenantNotAnId {
                tenant: "contoso.example".to_owned(),
            }),
            StatusCode::BAD_REQUEST,
            None,
            "invalid_request",
            "BadRequest",
        ),
        row(
            Refusal::Target(TargetError::IdentityNotFound),
            StatusCode::BAD_REQUEST,
            None,
            "invalid_request",
            "ManagedIdentityNotFound",
        ),
        row(
            Refusal::Target(TargetError::Ambiguous {
                id: "x".to_owned(),
                tenants: "a, b".to_owned(),
            }),
            StatusCode::BAD_REQUEST,
            None,
            "invalid_request",
            "BadRequest",
        ),
        row(
            Refusal::Target(TargetError::TenantNotAllowed {
                target: "t".to_owned(),
                tenant: "x".to_owned(),
            }),
            StatusCode::BAD_REQUEST,
            None,
            "invalid_request",
            "BadRequest",
        ),
        row(
            Refusal::Target(TargetError::ResourceNotAllowed {
                resource: "r".to_owned(),
                target: "t".to_owned(),
                allowed: "s".to_owned(),
            }),
            StatusCode::BAD_REQUEST,
            None,
            "invalid_resource",
            "InvalidResource",
        ),
        row(
            Refusal::Upstream(CacheError::Timeout),
            StatusCode::SERVICE_UNAVAILABLE,
            Some("5"),
            "temporarily_unavailable",
            "ServiceUnavailable",
        ),
        row(
            upstream(
                FetchError::Internal("boom".to_owned()),
                Duration::from_secs(7),
            ),
            StatusCode::SERVICE_UNAVAILABLE,
            Some("7"),
            "temporarily_unavailable",
            "ServiceUnavailable",
        ),
        // A transient failure remembered for less than a second still asks for a second.
        row(
            upstream(
                FetchError::Internal("boom".to_owned()),
                Duration::from_millis(10),
            ),
            StatusCode::SERVICE_UNAVAILABLE,
            Some("1"),
            "temporarily_unavailable",
            "ServiceUnavailable",
        ),
        row(
            upstream(rejected(700016), Duration::from_secs(30)),
            StatusCode::BAD_REQUEST,
            None,
            "invalid_request",
            "BadRequest",
        ),
        row(
            Refusal::RequestTimeout(Duration::from_secs(5)),
            StatusCode::REQUEST_TIMEOUT,
            None,
            "invalid_request",
            "RequestTimeout",
        ),
        row(
            Refusal::Upstream(CacheError::NewKeysLimited(Duration::from_millis(200))),
            StatusCode::TOO_MANY_REQUESTS,
            Some("1"),
            "slow_down",
            "TooManyRequests",
        ),
        // fedimds's own budget of upstream calls had no turn: 503 with the wait, the key and
        // the budget's keys named.
        row(
            Refusal::Upstream(CacheError::OverBudget {
                error: Arc::new(FetchError::OverBudget {
                    upstream: crate::metrics::UpstreamName::Entra,
                    rate: crate::config::Rate {
                        per_second: 20.0,
                        burst: 40,
                    },
                    key: "app a in tenant t for resource https://r.example".to_owned(),
                    wait: Duration::from_secs(12),
                }),
                retry_in: Duration::from_secs(12),
            }),
            StatusCode::SERVICE_UNAVAILABLE,
            Some("12"),
            "temporarily_unavailable",
            "ServiceUnavailable",
        ),
        row(
            Refusal::Internal("cannot write a key file".to_owned()),
            StatusCode::INTERNAL_SERVER_ERROR,
            None,
            "server_error",
            "InternalServerError",
        ),
        row(
            Refusal::AuditUnavailable,
            StatusCode::SERVICE_UNAVAILABLE,
            Some("5"),
            "temporarily_unavailable",
            "ServiceUnavailable",
        ),
        row(
            Refusal::NotForwarded("passthrough is off"),
            StatusCode::NOT_FOUND,
            None,
            "not_found",
            "NotFound",
        ),
        row(
            Refusal::ImdsUnreachable("connection refused".to_owned()),
            StatusCode::BAD_GATEWAY,
            None,
            "bad_gateway",
            "BadGateway",
        ),
        row(
            Refusal::ImdsTimeout("did not answer".to_owned()),
            StatusCode::GATEWAY_TIMEOUT,
            None,
            "gateway_timeout",
            "GatewayTimeout",
        ),
        row(
            Refusal::PassthroughBusy,
            StatusCode::SERVICE_UNAVAILABLE,
            Some("5"),
            "temporarily_unavailable",
            "ServiceUnavailable",
        ),
    ];
    // Exhaustive on purpose: a new variant stops this compiling until it has a row above.
    for r in &rows {
        match r.refusal {
            Refusal::MissingMetadata
            | Refusal::Forwarded(_)
            | Refusal::Browser(_)
            | Refusal::Ambiguous(_)
            | Refusal::MethodNotAllowed
            | Refusal::ApiVersion
            | Refusal::BadRequest(_)
            | Refusal::Unauthorized(_)
            | Refusal::SecretNotKnown(_)
            | Refusal::MissingResource
            | Refusal::ForeignHost
            | Refusal::Forbidden(_)
            | Refusal::RateLimited(_)
            | Refusal::RequestTimeout(_)
            | Refusal::Target(_)
            | Refusal::Upstream(
                CacheError::Timeout
                | CacheError::Upstream { .. }
                | CacheError::NewKeysLimited(_)
                | CacheError::OverBudget { .. },
            )
            | Refusal::Internal(_)
            | Refusal::AuditUnavailable
            | Refusal::NotForwarded(_)
            | Refusal::ImdsUnreachable(_)
            | Refusal::ImdsTimeout(_)
            | Refusal::PassthroughBusy => {}
        }
    }
    rows
}

fn body_of(response: axum::response::Response) -> (StatusCode, Option<String>, Value) {
    let status = response.status();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(response.headers()["cache-control"], "no-store");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let bytes = rt
        .block_on(axum::body::to_bytes(response.into_body(), 1 << 16))
        .unwrap();
    (
        status,
        retry_after,
        serde_json::from_slice(&bytes).expect("a JSON body"),
    )
}

#[test]
fn every_refusal_has_its_status_code_and_shape_in_every_dialect() {
    for row in every_refusal() {
        let (status, retry_after) = row.refusal.status();
        assert_eq!(status, row.status, "{:?}", row.refusal);
        assert_eq!(row.refusal.code(), row.code, "{:?}", row.refusal);
        assert!(!row.refusal.message().is_empty(), "{:?}", row.refusal);
        assert_eq!(
            retry_after.is_some(),
            row.retry_after.is_some(),
            "{:?}",
            row.refusal
        );
        for dialect in Dialect::ALL {
            let (status, retry_after, body) = body_of(dialect::error(dialect, &row.refusal));
            let case = format!("{:?} in {}", row.refusal, dialect.as_str());
            // Service Fabric answers a secret or identity it does not know with 404.
            let expected = match dialect {
                Dialect::ServiceFabric if row.service_fabric == "ManagedIdentityNotFound" => {
                    StatusCode::NOT_FOUND
                }
                _ => row.status,
            };
            assert_eq!(status, expected, "{case}");
            assert_eq!(retry_after.as_deref(), row.retry_after, "{case}");
            let object = body.as_object().expect("an object");
            match dialect {
                Dialect::ServiceFabric => {
                    // `{"error":{"correlationId","code","message"}}`, as Service Fabric sends.
                    assert_eq!(object.keys().collect::<Vec<_>>(), ["error"], "{case}");
                    let error = body["error"].as_object().expect("an error object");
                    let mut keys: Vec<&str> = error.keys().map(String::as_str).collect();
                    keys.sort_unstable();
                    assert_eq!(keys, ["code", "correlationId", "message"], "{case}");
                    assert_eq!(body["error"]["code"], row.service_fabric, "{case}");
                    assert_eq!(
                        body["error"]["message"],
                        row.refusal.message().as_str(),
                        "{case}"
                    );
                }
                Dialect::AppService | Dialect::AppService2017 => {
                    // `statusCode`/`message`/`correlationId`, as App Service sends.
                    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
                    keys.sort_unstable();
                    assert_eq!(keys, ["correlationId", "message", "statusCode"], "{case}");
                    assert_eq!(body["statusCode"], row.status.as_u16(), "{case}");
                    assert_eq!(body["message"], row.refusal.message().as_str(), "{case}");
                }
                Dialect::Imds | Dialect::CloudShell | Dialect::Arc => {
                    if matches!(row.refusal, Refusal::ApiVersion) {
                        // IMDS's own body for a bad api-version.
                        assert!(
                            body["error"].as_str().unwrap().contains("api-version"),
                            "{case}"
                        );
                        assert!(body["newest-versions"].is_array(), "{case}");
                    } else {
                        let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
                        keys.sort_unstable();
                        assert_eq!(keys, ["error", "error_description"], "{case}");
                        assert_eq!(body["error"], row.code, "{case}");
                        assert_eq!(
                            body["error_description"],
                            row.refusal.message().as_str(),
                            "{case}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn an_over_budget_refusal_names_the_key_the_budget_and_the_wait() {
    let rows = every_refusal();
    let refusal = rows
        .iter()
        .map(|r| &r.refusal)
        .find(|r| matches!(r, Refusal::Upstream(CacheError::OverBudget { .. })))
        .expect("a row for it");
    let message = refusal.message();
    for part in [
        "budget of calls to Entra",
        "20 a second, bursts of 40",
        "upstream.max_requests_per_second",
        "app a in tenant t for resource https://r.example",
        "in 12 s",
    ] {
        assert!(message.contains(part), "{part:?} in {message}");
    }
}
