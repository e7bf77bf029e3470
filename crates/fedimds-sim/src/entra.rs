//! Entra's v2 token route, `POST /{tenant}/oauth2/v2.0/token`, for the client-credentials grant
//! with a federated client assertion. Checks run in Entra's order and each failure answers the
//! AADSTS code Entra uses for it.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{self, Path};
use axum::response::Response;
use serde_json::{json, Value};

use crate::config::{App, TokenSigning};
use crate::fault::{Fault, Route};
use crate::state::{ExchangeRecord, State};
use crate::token::{self, Signer, VerifyError};
use crate::wire::reply;

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Entra tolerates this much clock skew on an assertion's `nbf`.
const NBF_SKEW_SECS: u64 = 300;

/// Why Entra refused a request.
#[derive(Debug)]
struct Rejection {
    code: u32,
    error: &'static str,
    text: String,
}

/// Handles one token request.
pub(crate) async fn token(
    extract::State(state): extract::State<Arc<State>>,
    Path(tenant): Path<String>,
    body: Bytes,
) -> Response {
    let form = parse_form(&body);
    let field = |name: &str| form.get(name).cloned().unwrap_or_default();
    let mut record = ExchangeRecord {
        tenant: tenant.clone(),
        client_id: field("client_id"),
        scope: field("scope"),
        claims: form.get("claims").cloned(),
        outcome: Err(String::new()),
    };
    let fault = state.arrive(Route::Entra).await;
    if let Some(fault) = fault.as_ref().filter(|f| f.replaces_answer()) {
        record.outcome = Err(format!("fault:{}", fault.status));
        state.record(record);
        return fault_reply(&state, fault, &tenant, &form);
    }
    let response = match exchange(&state, &tenant, &form) {
        Ok((access_token, mut body)) => {
            // A shaping fault: an odd lifetime, or an answer larger than any real one.
            if let Some(fault) = &fault {
                if let Some(seconds) = fault.expires_in {
                    body["expires_in"] = json!(seconds);
                }
                if fault.padding > 0 {
                    body["padding"] = json!("p".repeat(fault.padding));
                }
            }
            record.outcome = Ok(access_token);
            reply(200, body, None)
        }
        Err(rejection) => {
            record.outcome = Err(format!("AADSTS{}", rejection.code));
            let status = if rejection.error == "invalid_client" {
                401
            } else {
                400
            };
            reply(status, error_body(&state, &rejection), None)
        }
    };
    tracing::debug!(
        %tenant,
        client_id = %record.client_id,
        scope = %record.scope,
        outcome = record.outcome.as_ref().map_or_else(String::as_str, |_| "issued"),
        "Entra token request"
    );
    state.record(record);
    response
}

/// The form fields; the first of a repeated name wins.
fn parse_form(body: &[u8]) -> HashMap<String, String> {
    let mut form = HashMap::new();
    for (key, value) in form_urlencoded::parse(body) {
        form.entry(key.into_owned())
            .or_insert_with(|| value.into_owned());
    }
    form
}

/// Runs Entra's checks in order; on success returns the access token and the 200 body.
fn exchange(
    state: &State,
    tenant: &str,
    form: &HashMap<String, String>,
) -> Result<(String, Value), Rejection> {
    if ["common", "consumers", "organizations"]
        .iter()
        .any(|t| t.eq_ignore_ascii_case(tenant))
    {
        return Err(reject(
            9001023,
            "invalid_request",
            "The grant type is not supported over the /common, /consumers or /organizations endpoints. Please use the tenant-specific endpoint.".to_owned(),
        ));
    }
    let grant_type = required(form, "grant_type")?;
    if grant_type != "client_credentials" {
        let text = format!("The app requested an unsupported grant type '{grant_type}'.");
        return Err(reject(70003, "unsupported_grant_type", text));
    }
    let client_id = required(form, "client_id")?;
    if form.contains_key("client_secret") {
        // The federated apps have no secret, so any secret is a wrong one.
        let text = "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID.".to_owned();
        return Err(reject(7000215, "invalid_client", text));
    }
    match form.get("client_assertion_type").map(String::as_str) {
        None => return Err(missing_credential_field("client_assertion_type")),
        Some(JWT_BEARER) => {}
        Some(other) => {
            let text = format!(
                "The client_assertion_type '{other}' is not supported; use '{JWT_BEARER}'."
            );
            return Err(reject(700023, "invalid_request", text));
        }
    }
    let assertion = match form.get("client_assertion") {
        Some(assertion) if !assertion.is_empty() => assertion,
        _ => return Err(missing_credential_field("client_assertion")),
    };
    let resource = resource_of(required(form, "scope")?)?;
    let app = find_app(state, client_id, tenant)?;
    let claims = verify(state, assertion)?;
    match_federated_credential(app, &claims)?;
    let capabilities = client_capabilities(form.get("claims").map(String::as_str))?;
    issue(state, app, tenant, resource, &capabilities).map_err(|error| {
        tracing::error!(%error, "signing an Entra token failed");
        reject(
            90033,
            "temporarily_unavailable",
            "A transient error has occurred. Please try again.".to_owned(),
        )
    })
}

fn required<'f>(form: &'f HashMap<String, String>, name: &str) -> Result<&'f str, Rejection> {
    match form.get(name) {
        Some(value) if !value.is_empty() => Ok(value),
        _ => {
            let text = format!("The request body must contain the following parameter: '{name}'.");
            Err(reject(900144, "invalid_request", text))
        }
    }
}

fn missing_credential_field(name: &str) -> Rejection {
    reject(90014, "invalid_request", format!("The required field '{name}' is missing from the credential. Ensure that you have all the necessary parameters for the login request."))
}

/// The resource a client-credentials scope names: exactly one scope, ending in `/.default`,
/// minus exactly one `/.default` (so ARM's `…windows.net//.default` keeps its slash).
fn resource_of(scope: &str) -> Result<&str, Rejection> {
    let mut scopes = scope.split_whitespace();
    let (Some(only), None) = (scopes.next(), scopes.next()) else {
        let text = "The provided value for the input parameter 'scope' is not valid because it contains more than one resource. Scope {scope} is not valid.";
        return Err(reject(
            700022,
            "invalid_scope",
            text.replace("{scope}", scope),
        ));
    };
    match only.strip_suffix("/.default") {
        Some(resource) if !resource.is_empty() => Ok(resource),
        _ => Err(reject(
            1002012,
            "invalid_scope",
            format!("The provided value for scope {only} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."),
        )),
    }
}

/// The app, if it has a service principal in `tenant`.
fn find_app<'s>(state: &'s State, client_id: &str, tenant: &str) -> Result<&'s App, Rejection> {
    state
        .config
        .apps
        .iter()
        .find(|app| {
            app.client_id.eq_ignore_ascii_case(client_id)
                && app
                    .consented_tenants
                    .iter()
                    .any(|t| t.eq_ignore_ascii_case(tenant))
        })
        .ok_or_else(|| {
            reject(
                700016,
                "unauthorized_client",
                not_found_text(client_id, tenant),
            )
        })
}

/// AADSTS700016's description.
fn not_found_text(client_id: &str, tenant: &str) -> String {
    format!("Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant.")
}

/// Signature, then the time window.
fn verify(state: &State, assertion: &str) -> Result<Arc<Value>, Rejection> {
    let claims = state.keys.verify(assertion).map_err(|e| match e {
        VerifyError::Malformed => reject(50027, "invalid_request", "JWT token is invalid or malformed.".to_owned()),
        VerifyError::BadSignature => reject(
            7000274,
            "invalid_client",
            "The client assertion's signature is invalid: key was found, but use of the key to verify the signature failed.".to_owned(),
        ),
    })?;
    let now = token::now();
    let exp = claims.get("exp").and_then(Value::as_u64);
    let nbf = claims.get("nbf").and_then(Value::as_u64);
    let expired = exp.is_none_or(|exp| exp <= now);
    let early = nbf.is_some_and(|nbf| nbf > now + NBF_SKEW_SECS);
    if expired || early {
        let show = |t: Option<u64>| t.map_or_else(|| "(none)".to_owned(), token::entra_timestamp);
        let text = format!(
            "Client assertion is not within its valid time range. Current time: {}, assertion valid from {}, expiry time of assertion {}.",
            token::entra_timestamp(now),
            show(nbf),
            show(exp),
        );
        return Err(reject(700024, "invalid_client", text));
    }
    Ok(claims)
}

/// Exact, case-sensitive match in Entra's order: issuer, then subject, then audience.
fn match_federated_credential(app: &App, claims: &Value) -> Result<(), Rejection> {
    let claim = |name: &str| claims.get(name).and_then(Value::as_str).unwrap_or_default();
    let (iss, sub) = (claim("iss"), claim("sub"));
    // `aud` may be a string or, as in Kubernetes tokens, a one-element array.
    let aud = match claims.get("aud") {
        Some(Value::String(aud)) => Some(aud.as_str()),
        Some(Value::Array(auds)) if auds.len() == 1 => auds[0].as_str(),
        _ => None,
    };
    let no_match = |code, what: &str, value: &str| {
        let text = format!("No matching federated identity record found for presented assertion {what} '{value}'. Please check your federated identity credential Subject, Audience and Issuer against the presented assertion. https://learn.microsoft.com/entra/workload-id/workload-identity-federation");
        reject(code, "invalid_client", text)
    };
    let by_issuer: Vec<_> = app
        .federated_credentials
        .iter()
        .filter(|f| f.issuer == iss)
        .collect();
    if by_issuer.is_empty() {
        return Err(no_match(700211, "issuer", iss));
    }
    let by_subject: Vec<_> = by_issuer.iter().filter(|f| f.subject == sub).collect();
    if by_subject.is_empty() {
        // Entra tells a subject that differs only in letter case apart from one that differs.
        if by_issuer
            .iter()
            .any(|f| f.subject.eq_ignore_ascii_case(sub))
        {
            return Err(reject(7002138, "invalid_client", case_only_text(sub)));
        }
        return Err(no_match(700213, "subject", sub));
    }
    if !by_subject.iter().any(|f| Some(f.audience.as_str()) == aud) {
        let shown = claims.get("aud").map(Value::to_string).unwrap_or_default();
        return Err(no_match(700212, "audience", &shown));
    }
    Ok(())
}

/// The client capabilities in a `claims` parameter,
/// `{"access_token":{"xms_cc":{"values":["cp1"]}}}`; a `claims` that is not JSON is refused as
/// Entra refuses it.
fn client_capabilities(claims: Option<&str>) -> Result<Vec<String>, Rejection> {
    let Some(claims) = claims else {
        return Ok(Vec::new());
    };
    let value: Value = serde_json::from_str(claims).map_err(|_| {
        reject(
            70011,
            "invalid_request",
            "The claims parameter is not valid JSON.".to_owned(),
        )
    })?;
    Ok(value["access_token"]["xms_cc"]["values"]
        .as_array()
        .map(|values| {
            values
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default())
}

/// The app-only access token for `resource` in `tenant`, and Entra's 200 body. A token asked
/// for with client capabilities carries them in an `xms_cc` claim, so a test can tell it apart.
fn issue(
    state: &State,
    app: &App,
    tenant: &str,
    resource: &str,
    capabilities: &[String],
) -> Result<(String, Value), jsonwebtoken::errors::Error> {
    let now = token::now();
    let lifetime = state.config.entra_token_lifetime.as_secs();
    // The app's service principal in the tenant: the same id on every exchange.
    let service_principal = token::stable_guid(&["service-principal", &app.client_id, tenant]);
    let claims = json!({
        "aud": resource,
        "iss": format!("https://sts.windows.net/{tenant}/"),
        "iat": now,
        "nbf": now,
        "exp": now + lifetime,
        "tid": tenant,
        "appid": app.client_id,
        "azp": app.client_id,
        "appidacr": "2",
        "oid": service_principal,
        "sub": service_principal,
        "idtyp": "app",
        "roles": [],
        "uti": state.keys.unique_id(),
        "ver": "1.0",
    });
    let mut claims = claims;
    if !capabilities.is_empty() {
        claims["xms_cc"] = json!(capabilities);
    }
    let signer = match state.config.entra_token_signing {
        TokenSigning::Rs256 => Signer::Genuine,
        TokenSigning::Hs256 => Signer::Shared,
    };
    let access_token = state.sign(&claims, signer)?;
    let mut body = json!({
        "token_type": "Bearer",
        "expires_in": lifetime,
        "ext_expires_in": lifetime,
        "access_token": access_token,
    });
    if let Some(refresh_in) = state.config.entra_refresh_in {
        body["refresh_in"] = json!(refresh_in.as_secs());
    }
    Ok((access_token, body))
}

fn reject(code: u32, error: &'static str, text: String) -> Rejection {
    Rejection { code, error, text }
}

/// Entra's error JSON, with fresh trace and correlation ids.
fn error_body(state: &State, rejection: &Rejection) -> Value {
    let (trace_id, correlation_id) = (state.keys.guid(), state.keys.guid());
    let timestamp = token::entra_timestamp(token::now());
    let code = rejection.code;
    json!({
        "error": rejection.error,
        "error_description": format!(
            "AADSTS{code}: {}\r\nTrace ID: {trace_id}\r\nCorrelation ID: {correlation_id}\r\nTimestamp: {timestamp}",
            rejection.text,
        ),
        "error_codes": [code],
        "timestamp": timestamp,
        "trace_id": trace_id,
        "correlation_id": correlation_id,
        "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
    })
}

/// AADSTS7002138's description, as Entra words it (`docs/entra-exchange.md#aadsts-codes`).
fn case_only_text(sub: &str) -> String {
    format!("No matching federated identity record found for presented assertion subject '{sub}'. The subject matches with case-insensitive comparison, but not with case-sensitive comparison. Check your federated identity credential Subject, Audience and Issuer against the presented assertion. See documentation at: https://learn.microsoft.com/entra/workload-id/workload-identity-federation.")
}

/// A scripted fault: the AADSTS error it names, or Entra's answer to an outage or throttle.
fn fault_reply(
    state: &State,
    fault: &Fault,
    tenant: &str,
    form: &HashMap<String, String>,
) -> Response {
    let rejection = match (fault.aadsts, fault.status) {
        (Some(code), _) => reject(code, class_of(code), scripted_text(code, tenant, form)),
        (None, 429) => reject(
            90055,
            "temporarily_unavailable",
            "Too many requests; the request was throttled.".to_owned(),
        ),
        (None, 500..=599) => reject(
            90033,
            "temporarily_unavailable",
            "A transient error has occurred. Please try again.".to_owned(),
        ),
        (None, _) => reject(90014, "invalid_request", "Simulated error.".to_owned()),
    };
    reply(
        fault.status,
        error_body(state, &rejection),
        fault.retry_after.as_deref(),
    )
}

/// The `error` class Entra sends with an AADSTS code.
fn class_of(code: u32) -> &'static str {
    match code {
        700016 | 7000112 => "unauthorized_client",
        70021 | 700024 | 700027 | 7000274 | 700211 | 700212 | 700213 | 7002137 | 7002138
        | 700222 | 700236 | 7000215 | 7000222 => "invalid_client",
        1002012 | 700022 => "invalid_scope",
        500011 => "invalid_resource",
        50196 | 65001 | 700229 => "invalid_grant",
        70003 => "unsupported_grant_type",
        90055 | 90024 | 50033 | 90033 | 90006 | 90090 => "temporarily_unavailable",
        _ => "invalid_request",
    }
}

/// Entra's description of a scripted AADSTS code, worded as Entra words it where the public
/// reports quote it (`docs/entra-exchange.md#aadsts-codes`), with the request's own values.
fn scripted_text(code: u32, tenant: &str, form: &HashMap<String, String>) -> String {
    let claims = form
        .get("client_assertion")
        .and_then(|a| token::decode_payload(a))
        .unwrap_or(Value::Null);
    let claim = |name: &str| match claims.get(name) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(a)) => a.first().and_then(Value::as_str).unwrap_or("").to_owned(),
        _ => String::new(),
    };
    let (iss, sub, aud) = (claim("iss"), claim("sub"), claim("aud"));
    let client_id = form.get("client_id").map_or("", String::as_str);
    let scope = form.get("scope").map_or("", String::as_str);
    let resource = scope.strip_suffix("/.default").unwrap_or(scope);
    let no_match = |what: &str, value: &str| {
        format!("No matching federated identity record found for presented assertion {what} '{value}'. Please check your federated identity credential Subject, Audience and Issuer against the presented assertion. https://learn.microsoft.com/entra/workload-id/workload-identity-federation")
    };
    match code {
        700211 => no_match("issuer", &iss),
        700212 => no_match("audience", &aud),
        700213 => no_match("subject", &sub),
        7002138 => case_only_text(&sub),
        7002137 => {
            let home = iss.split('/').nth(3).unwrap_or_default();
            let form = format!("/eid1/c/pub/t/{home}/a/{client_id}/{sub}");
            format!("No matching federated identity record found for presented assertion subject '{form}'. Please make sure the federated identity credential Subject is '{form}'.")
        }
        700236 => format!("Entra ID tokens issued by issuer '{iss}' may not be used for federated identity credential flows for applications or managed identities registered in this tenant."),
        700222 => "AAD-issued tokens may not be used for federated identity flows.".to_owned(),
        700229 => "Forbidden token type. Only app-only tokens may be used as Federated Identity Credentials for AAD issuer.".to_owned(),
        501661 | 90061 => "Request to External OIDC endpoint failed.".to_owned(),
        50196 => "The server terminated an operation because it encountered a client request loop. Please contact your app vendor.".to_owned(),
        90055 => "There are too many incoming requests. This exception is thrown for blocked tenants.".to_owned(),
        7000112 => format!("Application '{client_id}'(multi-tenant app) is disabled."),
        500011 => format!("The resource principal named {resource} was not found in the tenant named {tenant}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant."),
        65001 => format!("The user or administrator has not consented to use the application with ID '{client_id}'. Send an interactive authorization request for this user and resource."),
        700016 => not_found_text(client_id, tenant),
        _ => "Simulated error.".to_owned(),
    }
}
