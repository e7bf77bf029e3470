//! The IMDS dialect, faithful to real IMDS: `GET /metadata/identity/oauth2/token` with
//! `Metadata: true`, no `X-Forwarded-For`, no duplicated query keys, a known api-version.

use axum::http::{HeaderMap, Method};
use axum::response::Response;
use serde_json::json;

use super::{error_response, header_is_true, Params, Refusal, TokenRequest};

/// api-versions real IMDS serves for identity tokens; SDKs send 2018-02-01 (Python, JS, .NET)
/// and 2019-08-01 (Rust).
pub const API_VERSIONS: [&str; 6] = [
    "2018-02-01",
    "2019-03-11",
    "2019-08-01",
    "2019-11-01",
    "2020-06-01",
    "2021-02-01",
];

/// Checks and parses an IMDS token request.
pub fn parse(
    method: &Method,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<TokenRequest, Refusal> {
    checked(method, headers, query, &API_VERSIONS)
}

/// IMDS's request rules (GET, `Metadata: true`, no duplicated keys, a known api-version among
/// `versions`; a proxy's headers were refused at the shared door, `http::door`); Arc's
/// requests follow them too.
pub fn checked(
    method: &Method,
    headers: &HeaderMap,
    query: Option<&str>,
    versions: &[&str],
) -> Result<TokenRequest, Refusal> {
    if method != Method::GET {
        return Err(Refusal::MethodNotAllowed);
    }
    // Checked before anything else so the SDKs' header-less probes get IMDS's own answer at
    // once, whatever their query holds.
    if !header_is_true(headers, crate::header::METADATA) {
        return Err(Refusal::MissingMetadata);
    }
    let params = Params::parse(query.unwrap_or_default(), true)?;
    match params.get(&["api-version"]).as_deref() {
        Some(v) if versions.contains(&v) => {}
        _ => return Err(Refusal::ApiVersion),
    }
    params.token_request()
}

/// IMDS's error shape: `{"error","error_description"}`; a bad api-version gets IMDS's own body.
pub fn error(refusal: &Refusal) -> Response {
    let body = match refusal {
        Refusal::ApiVersion => json!({
            "error": "Bad request. api-version is invalid or was not specified in the request. For more information refer to aka.ms/azureimds",
            "newest-versions": ["2021-02-01", "2020-06-01", "2019-08-01"],
        }),
        other => json!({ "error": other.code(), "error_description": other.message() }),
    };
    error_response(refusal, body)
}
