//! Why a request gets no token, and the one table that turns each reason into an HTTP status,
//! an OAuth-style error code and a message a person can act on. The dialects choose only the
//! body's shape ([`crate::dialect::error`]).
//!
//! Every `match` here names every variant: a new reason must be given its status on purpose,
//! never inherit one from a wildcard. The statuses keep the meaning clients give them
//! (`docs/client-protocols.md#status-codes-and-retries`): 400 for anything permanent, so clients stop
//! and show the message; 503 with `Retry-After` only for transient upstream trouble (fedimds's
//! own budget of upstream calls with no turn in time among it, and an audit log that cannot
//! record, with `audit.fail_closed`); 500 only for a fault on fedimds's
//! own side.

use std::time::Duration;

use axum::http::StatusCode;

use crate::cache::CacheError;
use crate::config::PASSTHROUGH_MAX_IN_FLIGHT;
use crate::retry::Transience;
use crate::target::TargetError;

/// When a caller waited its bound and the fetch is still going: come back soon.
const BUSY_RETRY: Duration = Duration::from_secs(5);

/// Why a request gets no token.
#[derive(Debug, Clone)]
pub enum Refusal {
    /// IMDS: no `Metadata: true` (also the answer to the SDKs' probes).
    MissingMetadata,
    /// The request came through a proxy (`X-Forwarded-For` or `Forwarded`, the header named):
    /// an SSRF attempt, most likely.
    Forwarded(&'static str),
    /// A browser made the request (it sent the header named: `Origin`, `Sec-Fetch-Site`,
    /// `Sec-Fetch-Mode`): a web page, maybe after DNS rebinding; no SDK sends these.
    Browser(&'static str),
    /// The request could mean two things to two parsers (a header that decides something given
    /// twice, a request target naming another host than `Host`): what is wrong, and why.
    Ambiguous(&'static str),
    /// A method the endpoint does not take.
    MethodNotAllowed,
    /// IMDS: api-version missing or unknown.
    ApiVersion,
    /// A malformed request, with what is wrong.
    BadRequest(String),
    /// The caller secret is missing (or, on a listener others can reach, not known).
    Unauthorized(&'static str),
    /// A dialect's secret header was sent, with a value this endpoint does not know.
    SecretNotKnown(&'static str),
    /// No `resource` parameter.
    MissingResource,
    /// The Host header names neither this host nor an allowed name (DNS rebinding).
    ForeignHost,
    /// The caller may not have what it asked for (`[[callers]]` policy).
    Forbidden(String),
    /// The caller's request rate is over its limit; try again after this.
    RateLimited(Duration),
    /// The request body did not arrive within this.
    RequestTimeout(Duration),
    /// No target fits.
    Target(TargetError),
    /// Upstream failed.
    Upstream(CacheError),
    /// fedimds itself could not do its part (an Arc key file it cannot write): the caller's
    /// request was fine, the operator has something to fix.
    Internal(String),
    /// `audit.fail_closed`: the token's audit line cannot be recorded, so it is not served.
    AuditUnavailable,
    /// A path under `/metadata/` that is not forwarded to the real IMDS (passthrough off, an
    /// identity path, a path that could mean another one), with why: IMDS's own 404.
    NotForwarded(&'static str),
    /// The real IMDS could not be reached, or failed to answer (`[imds] upstream`).
    ImdsUnreachable(String),
    /// The real IMDS did not connect or answer in time.
    ImdsTimeout(String),
    /// Forwarded requests are at their bound (a slow real IMDS): try again shortly.
    PassthroughBusy,
}

impl Refusal {
    /// The HTTP status, and the Retry-After to send with it.
    pub fn status(&self) -> (StatusCode, Option<Duration>) {
        match self {
            Refusal::MissingMetadata
            | Refusal::Forwarded(_)
            | Refusal::Browser(_)
            | Refusal::Ambiguous(_)
            | Refusal::ApiVersion
            | Refusal::BadRequest(_)
            | Refusal::MissingResource
            | Refusal::Target(_) => (StatusCode::BAD_REQUEST, None),
            Refusal::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, None),
            Refusal::RequestTimeout(_) => (StatusCode::REQUEST_TIMEOUT, None),
            Refusal::Unauthorized(_) | Refusal::SecretNotKnown(_) => {
                (StatusCode::UNAUTHORIZED, None)
            }
            Refusal::ForeignHost | Refusal::Forbidden(_) => (StatusCode::FORBIDDEN, None),
            Refusal::RateLimited(wait) => (StatusCode::TOO_MANY_REQUESTS, Some(*wait)),
            Refusal::Upstream(CacheError::Timeout) => {
                (StatusCode::SERVICE_UNAVAILABLE, Some(BUSY_RETRY))
            }
            Refusal::Upstream(CacheError::NewKeysLimited(wait)) => {
                (StatusCode::TOO_MANY_REQUESTS, Some(*wait))
            }
            // The caller did nothing wrong: fedimds spaces its own upstream calls, and the
            // SDK's retry after Retry-After gets the next turn.
            Refusal::Upstream(CacheError::OverBudget { retry_in, .. }) => (
                StatusCode::SERVICE_UNAVAILABLE,
                Some((*retry_in).max(Duration::from_secs(1))),
            ),
            Refusal::Upstream(CacheError::Upstream { error, retry_in }) => match error.transience()
            {
                Transience::Transient { .. } => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    Some((*retry_in).max(Duration::from_secs(1))),
                ),
                Transience::Permanent => (StatusCode::BAD_REQUEST, None),
            },
            Refusal::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, None),
            Refusal::NotForwarded(_) => (StatusCode::NOT_FOUND, None),
            // A gateway whose upstream failed: the caller's request was fine.
            Refusal::ImdsUnreachable(_) => (StatusCode::BAD_GATEWAY, None),
            Refusal::ImdsTimeout(_) => (StatusCode::GATEWAY_TIMEOUT, None),
            Refusal::PassthroughBusy => (StatusCode::SERVICE_UNAVAILABLE, Some(BUSY_RETRY)),
            // The log recovers on its own (a reopen, space freed) or an operator fixes it.
            Refusal::AuditUnavailable => (StatusCode::SERVICE_UNAVAILABLE, Some(BUSY_RETRY)),
        }
    }

    /// The OAuth-style error code.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::MissingMetadata
            | Refusal::Forwarded(_)
            | Refusal::Browser(_)
            | Refusal::Ambiguous(_)
            | Refusal::ApiVersion
            | Refusal::BadRequest(_)
            | Refusal::MissingResource
            | Refusal::RequestTimeout(_) => "invalid_request",
            Refusal::Target(TargetError::ResourceNotAllowed { .. }) => "invalid_resource",
            Refusal::Target(
                TargetError::IdentityNotFound
                | TargetError::TenantNotAnId { .. }
                | TargetError::Ambiguous { .. }
                | TargetError::TenantNotAllowed { .. },
            ) => "invalid_request",
            Refusal::Upstream(CacheError::Upstream { error, .. }) => match error.transience() {
                Transience::Permanent => "invalid_request",
                Transience::Transient { .. } => "temporarily_unavailable",
            },
            Refusal::Upstream(CacheError::Timeout | CacheError::OverBudget { .. })
            | Refusal::AuditUnavailable
            | Refusal::PassthroughBusy => "temporarily_unavailable",
            Refusal::NotForwarded(_) => "not_found",
            Refusal::ImdsUnreachable(_) => "bad_gateway",
            Refusal::ImdsTimeout(_) => "gateway_timeout",
            Refusal::Unauthorized(_)
            | Refusal::SecretNotKnown(_)
            | Refusal::Forbidden(_)
            | Refusal::ForeignHost => "unauthorized_client",
            Refusal::RateLimited(_) | Refusal::Upstream(CacheError::NewKeysLimited(_)) => {
                "slow_down"
            }
            Refusal::MethodNotAllowed => "method_not_allowed",
            Refusal::Internal(_) => "server_error",
        }
    }

    /// A message a person can act on. Never contains a token or a secret.
    pub fn message(&self) -> String {
        match self {
            Refusal::MissingMetadata => "Required metadata header not specified".to_owned(),
            Refusal::Forwarded(header) => format!("Requests with a {header} header are refused: it means the request came through a proxy, and a token endpoint (like IMDS) serves only callers on this host"),
            Refusal::Browser(header) => format!("Requests a browser made (they carry {header}) are refused: no SDK sends it, and a web page must not get tokens"),
            Refusal::Ambiguous(why) => (*why).to_owned(),
            Refusal::MethodNotAllowed => "The method is not allowed on this endpoint".to_owned(),
            Refusal::ApiVersion => "Bad request. api-version is invalid or was not specified in the request.".to_owned(),
            Refusal::BadRequest(m)
            | Refusal::Forbidden(m)
            | Refusal::Internal(m)
            | Refusal::ImdsUnreachable(m)
            | Refusal::ImdsTimeout(m) => m.clone(),
            Refusal::NotForwarded(why) => (*why).to_owned(),
            Refusal::PassthroughBusy => format!("Too many requests to the real IMDS are in flight (at most {PASSTHROUGH_MAX_IN_FLIGHT}); it is slow or not answering. Retry shortly"),
            Refusal::Unauthorized(m) | Refusal::SecretNotKnown(m) => (*m).to_owned(),
            Refusal::MissingResource => {
                "Required audience parameter 'resource' not specified".to_owned()
            }
            Refusal::ForeignHost => "The Host header must name this host (localhost, 127.0.0.1, 169.254.169.254 or a name in server.allowed_hosts)".to_owned(),
            Refusal::RateLimited(wait) => format!("Too many requests from this caller; retry in {} ms", wait.as_millis()),
            Refusal::RequestTimeout(limit) => format!("The request body did not arrive within {} ms (server.header_read_timeout)", limit.as_millis()),
            Refusal::Target(e) => e.to_string(),
            Refusal::Upstream(CacheError::Timeout) => {
                "The upstream has not answered yet; the token is still being fetched. Retry shortly.".to_owned()
            }
            Refusal::Upstream(
                CacheError::Upstream { error, .. } | CacheError::OverBudget { error, .. },
            ) => error.to_string(),
            Refusal::Upstream(CacheError::NewKeysLimited(wait)) => format!(
                "This caller asked for too many tokens fedimds did not hold (new resources or tenants) too fast; retry in {} ms (server.new_keys_per_second)",
                wait.as_millis()
            ),
            Refusal::AuditUnavailable => "The audit log cannot record this token, and audit.fail_closed is set: no token is served until it can. Retry shortly; the operator should check audit.path".to_owned(),
        }
    }
}

impl Refusal {
    /// Service Fabric's status and error code (`docs/client-protocols.md#service-fabric`):
    /// its own where it has one (an unknown secret is 404 `ManagedIdentityNotFound`, as
    /// Service Fabric answers it), else the general status under a code of the same form.
    /// Retry-After is [`Refusal::status`]'s.
    pub fn service_fabric(&self) -> (StatusCode, &'static str) {
        let (status, _) = self.status();
        let code = match self {
            Refusal::Unauthorized(_) => "SecretHeaderNotFound",
            Refusal::SecretNotKnown(_) | Refusal::Target(TargetError::IdentityNotFound) => {
                return (StatusCode::NOT_FOUND, "ManagedIdentityNotFound")
            }
            Refusal::MissingResource => "ArgumentNullOrEmpty",
            Refusal::ApiVersion => "InvalidApiVersion",
            Refusal::Target(TargetError::ResourceNotAllowed { .. }) => "InvalidResource",
            Refusal::MissingMetadata
            | Refusal::Forwarded(_)
            | Refusal::Browser(_)
            | Refusal::Ambiguous(_)
            | Refusal::BadRequest(_)
            | Refusal::Target(
                TargetError::TenantNotAnId { .. }
                | TargetError::Ambiguous { .. }
                | TargetError::TenantNotAllowed { .. },
            ) => "BadRequest",
            Refusal::MethodNotAllowed => "MethodNotAllowed",
            Refusal::ForeignHost | Refusal::Forbidden(_) => "Forbidden",
            Refusal::RateLimited(_) | Refusal::Upstream(CacheError::NewKeysLimited(_)) => {
                "TooManyRequests"
            }
            Refusal::RequestTimeout(_) => "RequestTimeout",
            Refusal::Upstream(CacheError::Upstream { error, .. }) => match error.transience() {
                Transience::Permanent => "BadRequest",
                Transience::Transient { .. } => "ServiceUnavailable",
            },
            Refusal::Upstream(CacheError::Timeout | CacheError::OverBudget { .. })
            | Refusal::AuditUnavailable
            | Refusal::PassthroughBusy => "ServiceUnavailable",
            Refusal::Internal(_) => "InternalServerError",
            Refusal::NotForwarded(_) => "NotFound",
            Refusal::ImdsUnreachable(_) => "BadGateway",
            Refusal::ImdsTimeout(_) => "GatewayTimeout",
        };
        (status, code)
    }
}

#[cfg(test)]
mod tests;
