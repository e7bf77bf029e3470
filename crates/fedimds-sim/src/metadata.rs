//! The rest of IMDS, for passthrough tests: instance metadata (JSON, and `format=text` for a
//! leaf such as `compute/vmSize`), the attested document, scheduled events (GET, and the POST
//! that starts them), versions and the load balancer, with IMDS's rules (`Metadata: true`, no
//! `X-Forwarded-For`, an api-version but for `/metadata/versions`).
//!
//! Every request is recorded as it arrived (method, target, each header, body), so a test can
//! prove what a forwarder added or dropped; answers carry a `Server` header of their own, so a
//! test can see it passed back.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{json, Value};

use crate::fault::{Fault, Route};
use crate::state::{lock, MetadataRecord, State};
use crate::wire::parse_query;

/// The `Server` header of every answer here.
pub const SERVER: &str = "fedimds-sim-imds";

/// The instance document: what `GET /metadata/instance` answers.
pub fn instance() -> Value {
    json!({
        "compute": {
            "azEnvironment": "AzurePublicCloud",
            "location": "westeurope",
            "name": "sim-vm",
            "osType": "Linux",
            "resourceGroupName": "sim-rg",
            "subscriptionId": "44444444-4444-4444-8444-444444444444",
            "tagsList": [{"name": "env", "value": "sim"}],
            "vmId": "55555555-5555-4555-8555-555555555555",
            "vmSize": "Standard_D2s_v5",
            "zone": "1"
        },
        "network": {
            "interface": [{
                "ipv4": {
                    "ipAddress": [{"privateIpAddress": "10.0.0.4", "publicIpAddress": ""}],
                    "subnet": [{"address": "10.0.0.0", "prefix": "24"}]
                },
                "macAddress": "000D3A000001"
            }]
        }
    })
}

/// api-versions the simulated IMDS lists at `/metadata/versions`.
const VERSIONS: [&str; 5] = [
    "2019-03-11",
    "2020-09-01",
    "2021-02-01",
    "2021-12-13",
    "2023-07-01",
];

/// Any request under `/metadata/` the token route does not take.
pub(crate) async fn handle(
    extract::State(state): extract::State<Arc<State>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    lock(&state.metadata_records).push(MetadataRecord {
        method: method.to_string(),
        target: uri.to_string(),
        headers: headers
            .iter()
            .map(|(name, value)| (name.to_string(), value.as_bytes().to_vec()))
            .collect(),
        body: body.to_vec(),
    });
    if let Some(fault) = state
        .arrive(Route::Metadata)
        .await
        .filter(Fault::replaces_answer)
    {
        return error(fault.status, "Simulated fault");
    }
    answer(&state, &method, &uri, &headers, &body)
}

fn answer(state: &State, method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Response {
    let metadata = headers.get("metadata").and_then(|v| v.to_str().ok());
    if !metadata.is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
        return error(400, "Bad request. Required metadata header not specified");
    }
    if headers.contains_key("x-forwarded-for") {
        return error(400, "Bad request. Request contains X-Forwarded-For header");
    }
    let Ok(params) = parse_query(uri.query()) else {
        return error(400, "Bad request. Duplicate query parameter");
    };
    let path = uri.path().trim_end_matches('/');
    if path == "/metadata/versions" {
        return json_reply(&json!({ "apiVersions": VERSIONS }));
    }
    if params.get("api-version").is_none_or(|v| v.is_empty()) {
        let body = json!({
            "error": "Bad request. api-version was not specified in the request. For more information refer to aka.ms/azureimds",
            "newest-versions": ["2023-07-01", "2021-12-13", "2021-11-15"],
        });
        return with_server(
            (StatusCode::BAD_REQUEST, body.to_string()).into_response(),
            "application/json; charset=utf-8",
        );
    }
    let text = params.get("format").is_some_and(|f| f == "text");
    match (method, path) {
        (&Method::GET, "/metadata/attested/document") => {
            let nonce = params.get("nonce").map_or("", String::as_str);
            let signature = base64::engine::general_purpose::STANDARD
                .encode(format!("simulated pkcs7 signature over nonce {nonce}"));
            json_reply(&json!({ "encoding": "pkcs7", "signature": signature }))
        }
        (&Method::GET, "/metadata/scheduledevents") => {
            let events = lock(&state.scheduled_events);
            json_reply(&json!({
                "DocumentIncarnation": events.incarnation,
                "Events": events.pending.iter().map(|id| json!({
                    "EventId": id,
                    "EventStatus": "Scheduled",
                    "EventType": "Freeze",
                    "ResourceType": "VirtualMachine",
                    "Resources": ["sim-vm"],
                    "NotBefore": "Mon, 19 Sep 2016 18:29:47 GMT",
                    "Description": "Host server is undergoing maintenance.",
                    "EventSource": "Platform",
                    "DurationInSeconds": 9
                })).collect::<Vec<_>>(),
            }))
        }
        (&Method::POST, "/metadata/scheduledevents") => start_events(state, body),
        (&Method::GET, "/metadata/loadbalancer") => json_reply(&json!({
            "loadbalancer": {"publicIpAddresses": [], "inboundRules": [], "outboundRules": []}
        })),
        (&Method::GET, _) => match path.strip_prefix("/metadata/instance") {
            Some(rest) if rest.is_empty() || rest.starts_with('/') => {
                instance_node(&instance(), rest, text)
            }
            _ => error(404, "Not found"),
        },
        _ => error(405, "Method not allowed"),
    }
}

/// `POST /metadata/scheduledevents` with `{"StartRequests":[{"EventId":…}]}`: the events named
/// start now, and leave the document.
fn start_events(state: &State, body: &[u8]) -> Response {
    let ids: Option<Vec<String>> = serde_json::from_slice::<Value>(body).ok().and_then(|v| {
        v["StartRequests"].as_array().map(|starts| {
            starts
                .iter()
                .filter_map(|s| s["EventId"].as_str().map(str::to_owned))
                .collect()
        })
    });
    let Some(ids) = ids.filter(|ids| !ids.is_empty()) else {
        return error(
            400,
            "Bad request. Expected {\"StartRequests\":[{\"EventId\":…}]}",
        );
    };
    let mut events = lock(&state.scheduled_events);
    if !ids.iter().all(|id| events.pending.contains(id)) {
        return error(400, "Bad request. Unknown EventId");
    }
    events.pending.retain(|id| !ids.contains(id));
    events.incarnation += 1;
    with_server(
        StatusCode::OK.into_response(),
        "application/json; charset=utf-8",
    )
}

/// A node of the instance document by its path (`/compute/vmSize`, array indexes as numbers):
/// JSON, or with `format=text` a leaf's bare value.
fn instance_node(document: &Value, rest: &str, text: bool) -> Response {
    let mut node = document;
    for segment in rest.split('/').filter(|s| !s.is_empty()) {
        let next = match node {
            Value::Object(map) => map.get(segment),
            Value::Array(items) => segment.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        };
        match next {
            Some(next) => node = next,
            None => return error(404, "Not found"),
        }
    }
    if !text {
        return json_reply(node);
    }
    let leaf = match node {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => {
            return error(
                400,
                "Bad request. format=text is only supported for leaf nodes",
            )
        }
    };
    with_server(leaf.into_response(), "text/plain; charset=utf-8")
}

fn json_reply(value: &Value) -> Response {
    with_server(
        value.to_string().into_response(),
        "application/json; charset=utf-8",
    )
}

/// IMDS's error shape for these paths: `{"error": "…"}`.
fn error(status: u16, message: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = json!({ "error": message }).to_string();
    with_server(
        (status, body).into_response(),
        "application/json; charset=utf-8",
    )
}

fn with_server(mut response: Response, content_type: &'static str) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::SERVER, HeaderValue::from_static(SERVER));
    response
}
