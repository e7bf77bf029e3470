//! The App Service identity route (api 2019-08-01), `GET /msi/token`: the `X-IDENTITY-HEADER`
//! secret, App Service's 200 body (`expires_on` only) and its `statusCode`/`message` errors.

use std::sync::Arc;

use axum::extract::{self, RawQuery};
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{json, Value};

use crate::fault::{Fault, Route};
use crate::state::{Selector, State};
use crate::wire::{parse_query, reply};

/// Handles one App Service token request.
pub(crate) async fn token(
    extract::State(state): extract::State<Arc<State>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    if let Some(fault) = state
        .arrive(Route::AppService)
        .await
        .filter(Fault::replaces_answer)
    {
        let message = match fault.status {
            429 => "Too many requests",
            500..=599 => "An unexpected error occurred while fetching the AAD token",
            _ => "Simulated fault",
        };
        return error(&state, fault.status, message, &fault);
    }
    match answer(&state, &headers, query.as_deref()) {
        Ok(body) => reply(200, body, None),
        Err((status, message)) => error(&state, status, &message, &Fault::status(status)),
    }
}

/// The 200 body, or the error status and message.
fn answer(state: &State, headers: &HeaderMap, query: Option<&str>) -> Result<Value, (u16, String)> {
    let fail = |status, message: &str| (status, message.to_owned());
    match headers.get("x-identity-header").map(|v| v.as_bytes()) {
        None => return Err(fail(401, "The X-IDENTITY-HEADER header was not specified")),
        Some(secret) if secret != state.config.identity_header.as_bytes() => {
            return Err(fail(401, "The X-IDENTITY-HEADER value is invalid"));
        }
        Some(_) => {}
    }
    let params = parse_query(query)
        .map_err(|name| fail(400, &format!("Duplicate query parameter '{name}'")))?;
    if params.get("api-version").is_none_or(|v| v.is_empty()) {
        return Err(fail(400, "The api-version parameter was not specified"));
    }
    let resource = match params.get("resource") {
        Some(resource) if !resource.is_empty() => resource,
        _ => return Err(fail(400, "The resource parameter was not specified")),
    };
    // `principal_id` is the documented alias of `object_id`; only one id may be given.
    let ids = [
        params.get("client_id").map(|v| Selector::ClientId(v)),
        params.get("object_id").map(|v| Selector::ObjectId(v)),
        params.get("principal_id").map(|v| Selector::ObjectId(v)),
        params.get("mi_res_id").map(|v| Selector::ResourceId(v)),
    ];
    let mut named = ids.into_iter().flatten();
    let selector = match (named.next(), named.next()) {
        (None, _) => Selector::System,
        (Some(selector), None) => selector,
        (Some(_), Some(_)) => {
            return Err(fail(400, "Only one identity parameter may be specified"))
        }
    };
    let identity = state.find_identity(selector).ok_or_else(|| {
        fail(
            400,
            "Unable to load the proper Managed Identity. Identity not found",
        )
    })?;
    let issued = state.issue_mi_token(identity, resource).map_err(|e| {
        tracing::error!(error = %e, "signing an App Service token failed");
        fail(500, "Signing failed")
    })?;
    tracing::debug!(client_id = %identity.client_id, %resource, "App Service issued a token");
    let body = json!({
        "access_token": issued.token,
        "expires_on": issued.expires_on.to_string(),
        "not_before": issued.not_before.to_string(),
        "resource": resource,
        "token_type": "Bearer",
        "client_id": identity.client_id,
    });
    Ok(body)
}

/// App Service's error shape.
fn error(state: &State, status: u16, message: &str, fault: &Fault) -> Response {
    let body =
        json!({"statusCode": status, "message": message, "correlationId": state.keys.guid()});
    reply(status, body, fault.retry_after.as_deref())
}
