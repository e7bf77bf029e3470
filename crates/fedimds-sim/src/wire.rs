//! Wire helpers the route modules share: reading a query string the way IMDS and App Service
//! do, and writing a JSON reply with an optional `Retry-After`.

use std::collections::HashMap;

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::Value;

/// Query parameters by name; real IMDS rejects a repeated name, so this returns it as the error.
pub(crate) fn parse_query(raw: Option<&str>) -> Result<HashMap<String, String>, String> {
    let mut params = HashMap::new();
    for (key, value) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        if params.insert(key.to_string(), value.into_owned()).is_some() {
            return Err(key.into_owned());
        }
    }
    Ok(params)
}

/// A JSON reply with `status`, plus the fault's `Retry-After` when it has one.
pub(crate) fn reply(status: u16, body: Value, retry_after: Option<&str>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, Json(body)).into_response();
    if let Some(value) = retry_after.and_then(|v| HeaderValue::from_str(v).ok()) {
        response.headers_mut().insert("retry-after", value);
    }
    response
}
