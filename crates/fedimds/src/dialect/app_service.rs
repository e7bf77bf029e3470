//! The App Service dialect (Functions and Automation use it too): `/msi/token` with the
//! `X-IDENTITY-HEADER` secret, api-version 2019-08-01; GET with a query, or Automation's POST
//! with a form body (and no api-version at all in Automation's own examples).

use axum::http::{HeaderMap, Method};
use axum::response::Response;
use serde_json::json;

use super::{error_response, Params, Refusal, TokenRequest, ALL_ID_KEYS};
use crate::token::Secret;

/// The api-version of this dialect.
pub const API_VERSION: &str = "2019-08-01";

/// Checks the caller secret and parses the request.
pub fn parse(
    method: &Method,
    headers: &HeaderMap,
    query: Option<&str>,
    body: &[u8],
    secret: &Secret,
) -> Result<TokenRequest, Refusal> {
    if headers.contains_key("x-forwarded-for") {
        return Err(Refusal::Forwarded);
    }
    match headers.get("x-identity-header") {
        None => {
            return Err(Refusal::Unauthorized(
                "The X-IDENTITY-HEADER header is missing",
            ))
        }
        Some(v) if !secret.matches(v.as_bytes()) => {
            return Err(Refusal::Unauthorized(
                "The X-IDENTITY-HEADER value is not the one this endpoint expects",
            ))
        }
        Some(_) => {}
    }
    let params = match *method {
        Method::GET => Params::parse(query.unwrap_or_default(), true)?,
        Method::POST => {
            let form = std::str::from_utf8(body)
                .map_err(|_| Refusal::BadRequest("The form body is not UTF-8".to_owned()))?;
            // Automation scripts put everything in the body; a query is accepted too.
            let joined = match query {
                Some(q) if !q.is_empty() => format!("{q}&{form}"),
                _ => form.to_owned(),
            };
            Params::parse(&joined, true)?
        }
        _ => return Err(Refusal::MethodNotAllowed),
    };
    match params.get(&["api-version"]) {
        None | Some(API_VERSION) => {}
        Some(other) => {
            return Err(Refusal::BadRequest(format!(
                "api-version '{other}' is not supported here; use {API_VERSION}"
            )))
        }
    }
    params.token_request(&ALL_ID_KEYS)
}

/// App Service's error shape: `{"statusCode","message","correlationId"}`.
pub fn error(refusal: &Refusal) -> Response {
    let (status, _) = refusal.status();
    let body = json!({
        "statusCode": status.as_u16(),
        "message": refusal.message(),
        "correlationId": correlation_id(),
    });
    error_response(refusal, body)
}

/// A random id in UUID form, so an error a user reports can be found in our log.
pub fn correlation_id() -> String {
    let (a, b) = (fastrand::u64(..), fastrand::u64(..));
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0x0fff,
        (b >> 48) & 0x3fff | 0x8000,
        b & 0xffff_ffff_ffff
    )
}
