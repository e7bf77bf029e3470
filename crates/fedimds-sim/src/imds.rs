//! The IMDS token route, `GET /metadata/identity/oauth2/token`, with real IMDS's checks, 200
//! body (every value a string) and OAuth-style error bodies.

use std::sync::Arc;

use axum::extract::{self, RawQuery};
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{json, Value};

use crate::fault::{Fault, Route};
use crate::state::{Selector, State};
use crate::wire::{parse_query, reply};

/// Real IMDS's text for a request without `Metadata: true`; the .NET probe relies on it not
/// containing "Identity not found".
const NO_METADATA: &str = "Required metadata header not specified";
/// Real IMDS's text for an unknown or unassigned identity; the .NET probe matches it exactly.
const IDENTITY_NOT_FOUND: &str = "Identity not found";

/// Handles one IMDS token request.
pub(crate) async fn token(
    extract::State(state): extract::State<Arc<State>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    if let Some(fault) = state
        .arrive(Route::Imds)
        .await
        .filter(Fault::replaces_answer)
    {
        return fault_reply(&fault);
    }
    match answer(&state, &headers, query.as_deref()) {
        Ok(body) => reply(200, body, None),
        Err((status, body)) => reply(status, body, None),
    }
}

/// The 200 body, or the error status and body.
fn answer(state: &State, headers: &HeaderMap, query: Option<&str>) -> Result<Value, (u16, Value)> {
    let metadata = headers.get("metadata").and_then(|v| v.to_str().ok());
    if !metadata.is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
        return Err(invalid_request(NO_METADATA));
    }
    // IMDS refuses anything that came through a proxy, so a forwarded request cannot steal tokens.
    if headers.contains_key("x-forwarded-for") {
        return Err(invalid_request("Request contains X-Forwarded-For header"));
    }
    let params = parse_query(query)
        .map_err(|name| invalid_request(&format!("Duplicate query parameter '{name}'")))?;
    if params.get("api-version").is_none_or(|v| v.is_empty()) {
        let body = json!({
            "error": "Bad request. api-version is invalid or was not specified in the request. For more information refer to aka.ms/azureimds",
            "newest-versions": ["2023-07-01", "2021-12-13", "2021-11-15"],
        });
        return Err((400, body));
    }
    let resource = match params.get("resource") {
        Some(resource) if !resource.is_empty() => resource,
        _ => return Err(invalid_request("Required audience parameter not specified")),
    };
    let ids = [
        params.get("client_id").map(|v| Selector::ClientId(v)),
        params.get("object_id").map(|v| Selector::ObjectId(v)),
        params.get("msi_res_id").map(|v| Selector::ResourceId(v)),
    ];
    let mut named = ids.into_iter().flatten();
    let selector = match (named.next(), named.next()) {
        (None, _) => Selector::System,
        (Some(selector), None) => selector,
        (Some(_), Some(_)) => {
            return Err(invalid_request("Multiple identity parameters specified"))
        }
    };
    let identity = state
        .find_identity(selector)
        .ok_or_else(|| invalid_request(IDENTITY_NOT_FOUND))?;
    let issued = state.issue_mi_token(identity, resource).map_err(|error| {
        tracing::error!(%error, "signing an IMDS token failed");
        (500, error_body("internal_error", "Signing failed"))
    })?;
    tracing::debug!(client_id = %identity.client_id, %resource, "IMDS issued a token");
    let body = json!({
        "access_token": issued.token,
        "client_id": identity.client_id,
        "expires_in": issued.expires_in.to_string(),
        "expires_on": issued.expires_on.to_string(),
        "ext_expires_in": issued.expires_in.to_string(),
        "not_before": issued.not_before.to_string(),
        "resource": resource,
        "token_type": "Bearer",
    });
    Ok(body)
}

fn invalid_request(description: &str) -> (u16, Value) {
    (400, error_body("invalid_request", description))
}

fn error_body(error: &str, description: &str) -> Value {
    json!({"error": error, "error_description": description})
}

/// A scripted fault in IMDS's error shape.
fn fault_reply(fault: &Fault) -> Response {
    let (error, description) = match fault.status {
        429 => ("too_many_requests", "Too many requests"),
        410 => (
            "service_unavailable",
            "IMDS is being updated; retry for up to 70 seconds",
        ),
        404 => ("not_found", "Managed identity endpoint not found"),
        500..=599 => ("service_unavailable", "Service temporarily unavailable"),
        _ => ("invalid_request", "Simulated fault"),
    };
    reply(
        fault.status,
        error_body(error, description),
        fault.retry_after.as_deref(),
    )
}
