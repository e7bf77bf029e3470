//! The wire dialects. Each dialect module parses and checks its own requests and renders its
//! own answers; what they share is here: the request every dialect boils down to
//! ([`TokenRequest`]), the query parser, the 200 body every client accepts, and the choice of
//! error shape per dialect. Why a request is refused, and with which status, is
//! [`crate::refusal`]'s.

pub mod app_service;
pub mod arc;
pub mod imds;
pub mod service_fabric;

use std::borrow::Cow;

use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};

use crate::config::MAX_RESOURCE_LEN;
pub use crate::refusal::Refusal;
use crate::token::AccessToken;

/// The dialects, for logs, metrics and audit lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// `GET /metadata/identity/oauth2/token`.
    Imds,
    /// App Service / Functions / Automation 2019-08-01 at `/msi/token`.
    AppService,
    /// Legacy App Service 2017-09-01 (`MSI_ENDPOINT` + `MSI_SECRET`) at `/msi/token`.
    AppService2017,
    /// Cloud Shell (`MSI_ENDPOINT` alone): form POST at `/msi/token`.
    CloudShell,
    /// Azure Arc's challenge flow at `/arc/metadata/identity/oauth2/token`.
    Arc,
    /// Service Fabric, over HTTPS on its own listener (`[service_fabric]`).
    ServiceFabric,
}

impl Dialect {
    /// Every dialect, in [`Dialect::index`] order.
    pub const ALL: [Dialect; 6] = [
        Dialect::Imds,
        Dialect::AppService,
        Dialect::AppService2017,
        Dialect::CloudShell,
        Dialect::Arc,
        Dialect::ServiceFabric,
    ];

    /// Its position in [`Dialect::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// A stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Dialect::Imds => "imds",
            Dialect::AppService => "app-service",
            Dialect::AppService2017 => "app-service-2017",
            Dialect::CloudShell => "cloud-shell",
            Dialect::Arc => "arc",
            Dialect::ServiceFabric => "service-fabric",
        }
    }
}

/// A token request, whatever the dialect.
#[derive(Debug, Clone, Default)]
pub struct TokenRequest {
    /// The resource, decoded, exactly as sent (echoed back in the answer).
    pub resource: String,
    /// `client_id`.
    pub client_id: Option<String>,
    /// `object_id` and its aliases.
    pub object_id: Option<String>,
    /// `msi_res_id` and its aliases.
    pub resource_id: Option<String>,
    /// `tenant_id`.
    pub tenant_id: Option<String>,
    /// `xms_cc`: the client's capabilities (`cp1`, …), lower case, sorted, comma separated.
    pub capabilities: Option<String>,
    /// `token_sha256_to_refresh`: the SHA-256 of a token a resource refused (revocation).
    pub refused_token: Option<[u8; 32]>,
}

/// Query or form parameters, decoded once. Values borrow the request's text unless they are
/// percent-encoded: this runs on every cache hit.
#[derive(Debug)]
pub struct Params<'a>(Vec<(Cow<'a, str>, Cow<'a, str>)>);

/// More pairs than any client sends; beyond this a request is refused, which also bounds the
/// duplicate check below.
const MAX_PAIRS: usize = 32;

impl<'a> Params<'a> {
    /// Parses `a=b&c=d` (raw or percent-encoded values). With `unique`, a key given twice is
    /// refused, as real IMDS refuses it (two `resource`s could otherwise mean two things).
    pub fn parse(text: &'a str, unique: bool) -> Result<Params<'a>, Refusal> {
        let mut pairs: Vec<(Cow<'a, str>, Cow<'a, str>)> = Vec::with_capacity(4);
        for (key, value) in form_urlencoded::parse(text.as_bytes()) {
            if pairs.len() >= MAX_PAIRS {
                return Err(Refusal::BadRequest(format!(
                    "More than {MAX_PAIRS} parameters"
                )));
            }
            // No control characters in any key or value: they have no place in a resource, an
            // id or an api-version, and echoed in a message or a text log they would forge
            // lines or drive a terminal.
            if key.chars().chain(value.chars()).any(char::is_control) {
                return Err(Refusal::BadRequest(
                    "Parameters must not contain control characters".to_owned(),
                ));
            }
            if unique && pairs.iter().any(|(seen, _)| *seen == key) {
                return Err(Refusal::BadRequest(format!(
                    "The query parameter {key:?} is given more than once"
                )));
            }
            pairs.push((key, value));
        }
        Ok(Params(pairs))
    }

    /// The first value of any of `keys`, if non-empty.
    pub fn get(&self, keys: &[&str]) -> Option<Cow<'a, str>> {
        self.0
            .iter()
            .find(|(k, v)| !v.is_empty() && keys.contains(&k.as_ref()))
            .map(|(_, v)| v.clone())
    }

    /// Builds the dialect-independent request; `resource` is required.
    pub fn token_request(&self) -> Result<TokenRequest, Refusal> {
        let resource = self.get(&["resource"]).ok_or(Refusal::MissingResource)?;
        let mut req = TokenRequest {
            resource: resource.into_owned(),
            client_id: self.get(id_keys::CLIENT_ID).map(Cow::into_owned),
            object_id: self.get(id_keys::OBJECT_ID).map(Cow::into_owned),
            resource_id: self.get(id_keys::RESOURCE_ID).map(Cow::into_owned),
            // Tenant ids and domain names are case-insensitive: one spelling, one cache key.
            tenant_id: self.get(&["tenant_id"]).map(|t| t.to_ascii_lowercase()),
            capabilities: None,
            refused_token: None,
        };
        req.capabilities = self
            .get(&["xms_cc"])
            .map(|v| capabilities(&v))
            .transpose()?
            .flatten();
        // A value that is no SHA-256 names no token: it matches nothing, and the cached token
        // is served, as for a hash of a token already replaced.
        req.refused_token = self
            .get(&["token_sha256_to_refresh"])
            .and_then(|v| sha256_hex(&v).ok());
        if req.resource.len() > MAX_RESOURCE_LEN {
            return Err(Refusal::BadRequest(format!(
                "The resource is longer than {MAX_RESOURCE_LEN} bytes; real resource URIs are far shorter"
            )));
        }
        // A tenant is a GUID or a domain name: it becomes a segment of Entra's URL path, where
        // `.` or `..` would drop the tenant altogether.
        if let Some(t) = &req.tenant_id {
            if !is_tenant(t) {
                return Err(Refusal::BadRequest(
                    "tenant_id must be a tenant id (GUID) or a domain name".to_owned(),
                ));
            }
        }
        let ids = [&req.client_id, &req.object_id, &req.resource_id]
            .iter()
            .filter(|v| v.is_some())
            .count();
        if ids > 1 {
            return Err(Refusal::BadRequest(
                "Only one of client_id, object_id or a resource id may be given".to_owned(),
            ));
        }
        Ok(req)
    }
}

/// The client capabilities Entra acts on (`cp1`: the client handles claims challenges, so
/// Entra may issue tokens that CAE can revoke); others are dropped.
const KNOWN_CAPABILITIES: [&str; 1] = ["cp1"];

/// At most this many client capabilities in `xms_cc` (MSAL sends one, `cp1`).
const MAX_CAPABILITIES: usize = 8;

/// `xms_cc` (already percent-decoded): split on commas, trimmed, empties dropped, lower case
/// (.NET sends `CP1`), sorted and deduplicated, so one set of capabilities is one cache key.
/// `None` when it names none.
fn capabilities(value: &str) -> Result<Option<String>, Refusal> {
    let mut caps: Vec<String> = value
        .split(',')
        .map(|c| c.trim().to_ascii_lowercase())
        .filter(|c| !c.is_empty())
        .collect();
    let well_formed = |c: &String| {
        c.len() <= 32
            && c.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    if caps.len() > MAX_CAPABILITIES || !caps.iter().all(well_formed) {
        return Err(Refusal::BadRequest(format!(
            "xms_cc must be at most {MAX_CAPABILITIES} client capabilities such as cp1, separated by commas"
        )));
    }
    // Only the capabilities Entra knows are kept: any other would be a cache key (and an
    // Entra call) of its own for nothing, and a caller could mint them without end.
    caps.retain(|c| KNOWN_CAPABILITIES.contains(&c.as_str()));
    caps.sort_unstable();
    caps.dedup();
    Ok((!caps.is_empty()).then(|| caps.join(",")))
}

/// `token_sha256_to_refresh`: the 64 hex digits (either case) of a SHA-256.
fn sha256_hex(value: &str) -> Result<[u8; 32], Refusal> {
    let bad = || {
        Refusal::BadRequest(
            "token_sha256_to_refresh must be the SHA-256 of the refused token, as 64 hex digits"
                .to_owned(),
        )
    };
    let bytes = value.trim().as_bytes();
    if bytes.len() != 64 {
        return Err(bad());
    }
    let mut hash = [0u8; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let text = std::str::from_utf8(pair).map_err(|_| bad())?;
        hash[i] = u8::from_str_radix(text, 16).map_err(|_| bad())?;
    }
    Ok(hash)
}

/// A GUID, or a DNS name of non-empty labels of letters, digits and inner hyphens.
fn is_tenant(t: &str) -> bool {
    t.len() <= 253
        && t.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Every alias any client sends for each kind of identity id
/// (`docs/client-protocols.md#identity-parameters`), accepted in every dialect: being lenient
/// on the way in costs nothing and saves a user a puzzling "Identity not found".
mod id_keys {
    /// Client id names.
    pub(super) const CLIENT_ID: &[&str] = &["client_id", "clientid"];
    /// Object (principal) id names.
    pub(super) const OBJECT_ID: &[&str] = &["object_id", "principal_id", "principalId"];
    /// ARM resource id names.
    pub(super) const RESOURCE_ID: &[&str] =
        &["msi_res_id", "mi_res_id", "resource_id", "msi-res-id"];
}

/// How a 200 body writes `expires_on`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpiresOn {
    /// Unix seconds, as a string: every dialect, every current client.
    Epoch,
    /// The date the real App Service 2017-09-01 endpoint wrote, `MM/DD/YYYY HH:MM:SS +00:00`
    /// (UTC), for the clients that parse nothing else (`docs/client-protocols.md#app-service-2017`).
    AppServiceDate,
}

/// Renders the one 200 body every client accepts (`docs/client-protocols.md#token-response`):
/// all values strings, both `expires_in` and `expires_on`, `resource` echoed exactly,
/// `token_type`, `client_id`, and the user-assigned id echoed when the caller named one (Arc
/// clients check).
///
/// Written by hand into one buffer sized up front: this is the cache-hit path, and a JWT
/// needs no JSON escaping (checked once, when the token was stored), so the token, by far the
/// largest part, is copied rather than scanned.
pub fn token_response(token: &AccessToken, req: &TokenRequest, client_id: &str) -> Response {
    token_response_with(token, req, client_id, ExpiresOn::Epoch)
}

/// [`token_response`] with `expires_on` written as `form` says (only the legacy App Service
/// dialect asks for anything but epoch seconds); the date is written into the same buffer.
pub fn token_response_with(
    token: &AccessToken,
    req: &TokenRequest,
    client_id: &str,
    form: ExpiresOn,
) -> Response {
    let now = tokio::time::Instant::now();
    let expires_in = token.expires_in(now);
    let secret = token.secret.expose();
    let mut b = String::with_capacity(secret.len() + req.resource.len() + client_id.len() + 220);
    b.push_str(r#"{"access_token":"#);
    if token.json_safe {
        b.push('"');
        b.push_str(secret);
        b.push('"');
    } else {
        push_json_str(&mut b, secret);
    }
    b.push_str(r#","client_id":"#);
    push_json_str(&mut b, client_id);
    push_number_field(&mut b, "expires_in", expires_in);
    match form {
        ExpiresOn::Epoch => push_number_field(&mut b, "expires_on", token.expires_on),
        ExpiresOn::AppServiceDate => {
            b.push_str(r#","expires_on":""#);
            push_app_service_date(&mut b, token.expires_on);
            b.push('"');
        }
    }
    push_number_field(&mut b, "ext_expires_in", expires_in);
    push_number_field(
        &mut b,
        "not_before",
        token.expires_on.saturating_sub(token.lifetime.as_secs()),
    );
    b.push_str(r#","resource":"#);
    push_json_str(&mut b, &req.resource);
    b.push_str(r#","token_type":"Bearer""#);
    if let Some(id) = &req.object_id {
        b.push_str(r#","object_id":"#);
        push_json_str(&mut b, id);
    }
    if let Some(id) = &req.resource_id {
        b.push_str(r#","msi_res_id":"#);
        push_json_str(&mut b, id);
    }
    b.push('}');
    (no_store_json(), b).into_response()
}

/// Unix seconds as App Service 2017-09-01 wrote them on Linux, `06/20/2019 02:57:58 +00:00`:
/// zero-padded month, day, 24-hour time, always UTC. The form every client of that dialect
/// parses (Windows hosts wrote `1/16/2020 5:24:12 AM +00:00`, which only some do).
fn push_app_service_date(b: &mut String, unix: u64) {
    let (days, secs) = (unix / 86_400, unix % 86_400);
    let (year, month, day) = civil_from_days(days);
    let two = |b: &mut String, n: u64| {
        b.push(char::from(b'0' + (n / 10 % 10) as u8));
        b.push(char::from(b'0' + (n % 10) as u8));
    };
    two(b, month);
    b.push('/');
    two(b, day);
    b.push('/');
    b.push_str(itoa::Buffer::new().format(year));
    b.push(' ');
    two(b, secs / 3600);
    b.push(':');
    two(b, secs / 60 % 60);
    b.push(':');
    two(b, secs % 60);
    b.push_str(" +00:00");
}

/// The proleptic Gregorian (year, month, day) of a count of days since 1970-01-01: Howard
/// Hinnant's `civil_from_days`, for days on or after the epoch.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// `,"name":"123"`: a number as a JSON string, as IMDS sends it (Rust's SDK insists).
fn push_number_field(b: &mut String, name: &str, value: u64) {
    b.push_str(",\"");
    b.push_str(name);
    b.push_str("\":\"");
    b.push_str(itoa::Buffer::new().format(value));
    b.push('"');
}

/// A JSON string literal, escaped.
fn push_json_str(b: &mut String, s: &str) {
    b.push('"');
    // Resources and ids almost never need escaping: copy them whole when they do not.
    if !s.bytes().any(|c| c == b'"' || c == b'\\' || c < 0x20) {
        b.push_str(s);
        b.push('"');
        return;
    }
    for c in s.chars() {
        match c {
            '"' => b.push_str("\\\""),
            '\\' => b.push_str("\\\\"),
            '\n' => b.push_str("\\n"),
            '\r' => b.push_str("\\r"),
            '\t' => b.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                b.push_str("\\u00");
                b.push(char::from_digit((c as u32) >> 4, 16).unwrap_or('0'));
                b.push(char::from_digit((c as u32) & 0xf, 16).unwrap_or('0'));
            }
            c => b.push(c),
        }
    }
    b.push('"');
}

/// Renders a refusal in `dialect`'s error shape: OAuth-style for IMDS, Cloud Shell and Arc;
/// `statusCode`/`message` for the App Service family; `{"error":{"code",…}}` for Service
/// Fabric.
pub fn error(dialect: Dialect, refusal: &Refusal) -> Response {
    match dialect {
        Dialect::Imds | Dialect::CloudShell => imds::error(refusal),
        Dialect::Arc => arc::error(refusal),
        Dialect::AppService | Dialect::AppService2017 => app_service::error(refusal),
        Dialect::ServiceFabric => service_fabric::error(refusal),
    }
}

/// Headers on every token endpoint answer: JSON, and never stored by a proxy or cache.
pub fn no_store_json() -> [(header::HeaderName, HeaderValue); 2] {
    [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        ),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
    ]
}

/// Renders an error answer: status, Retry-After if any, JSON body.
pub fn error_response(refusal: &Refusal, body: serde_json::Value) -> Response {
    error_response_with(refusal, refusal.status().0, body)
}

/// [`error_response`] with a dialect's own status for the refusal.
pub fn error_response_with(
    refusal: &Refusal,
    status: axum::http::StatusCode,
    body: serde_json::Value,
) -> Response {
    let (_, retry_after) = refusal.status();
    let mut response = (status, no_store_json(), body.to_string()).into_response();
    if let Some(wait) = retry_after {
        // Whole seconds, rounded up: "0" would invite a hot loop.
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    }
    response
}

/// Whether a header holds `true` in any case (`Metadata: true`, Automation's `Metadata: True`).
pub fn header_is_true(headers: &HeaderMap, name: &str) -> bool {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn params_decode_and_refuse_duplicates() {
        let p = Params::parse("resource=https://x&client_id=a%2Fb", true).unwrap();
        assert_eq!(p.get(&["resource"]).as_deref(), Some("https://x"));
        assert_eq!(p.get(&["client_id"]).as_deref(), Some("a/b"));
        assert!(Params::parse("resource=a&resource=b", true).is_err());
        assert!(Params::parse("resource=a&resource=b", false).is_ok());
    }

    #[test]
    fn the_body_is_valid_json_with_string_values() {
        use crate::token::Secret;
        let tricky = TokenRequest {
            resource: "https://x/\"quoted\"\\\u{1}é".to_owned(),
            object_id: Some("obj".to_owned()),
            ..Default::default()
        };
        for secret in ["eyJhbGciOi.eyJzdWIiOi.sig-_", "not \"json\" safe\n"] {
            let token = AccessToken::new(
                Secret::new(secret),
                tokio::time::Instant::now(),
                Duration::from_secs(3599),
                None,
            );
            let response = token_response(&token, &tricky, "c\"id");
            let body = futures_body(response);
            let v: serde_json::Value = serde_json::from_slice(&body).expect("valid JSON");
            assert_eq!(v["access_token"], secret);
            assert_eq!(v["resource"], tricky.resource.as_str());
            assert_eq!(v["client_id"], "c\"id");
            assert_eq!(v["object_id"], "obj");
            assert!(v.get("msi_res_id").is_none());
            for k in [
                "expires_in",
                "expires_on",
                "ext_expires_in",
                "not_before",
                "token_type",
            ] {
                assert!(v[k].is_string(), "{k}");
            }
            let left: u64 = v["expires_in"].as_str().unwrap().parse().unwrap();
            assert!((3590..=3599).contains(&left), "{left}");
        }
    }

    fn futures_body(response: Response) -> Vec<u8> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .unwrap()
                .to_vec()
        })
    }

    #[test]
    fn app_service_dates_are_utc_in_the_linux_form() {
        let date = |unix| {
            let mut b = String::new();
            push_app_service_date(&mut b, unix);
            b
        };
        // Checked against `date -u -d @N '+%m/%d/%Y %H:%M:%S +00:00'`.
        assert_eq!(date(0), "01/01/1970 00:00:00 +00:00");
        assert_eq!(date(1_561_000_678), "06/20/2019 03:17:58 +00:00");
        assert_eq!(date(1_709_164_800), "02/29/2024 00:00:00 +00:00");
        assert_eq!(date(1_798_761_599), "12/31/2026 23:59:59 +00:00");
        assert_eq!(date(4_107_542_400), "03/01/2100 00:00:00 +00:00");
        // Every day for 200 years: one day after another, months and leap years right.
        let mut last = (1969, 12, 31);
        for days in 0..73_000 {
            let (y, m, d) = civil_from_days(days);
            let next_day = (y, m, d) == (last.0, last.1, last.2 + 1);
            let next_month = (y, m, d) == (last.0, last.1 + 1, 1);
            let next_year = (y, m, d) == (last.0 + 1, 1, 1);
            assert!(
                next_day || next_month || next_year,
                "{last:?} then {y}-{m}-{d}"
            );
            let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
            let month_len = [
                31,
                28 + u64::from(leap),
                31,
                30,
                31,
                30,
                31,
                31,
                30,
                31,
                30,
                31,
            ];
            assert!(d <= month_len[m as usize - 1], "{y}-{m}-{d}");
            last = (y, m, d);
        }
    }

    #[test]
    fn the_date_form_changes_expires_on_alone() {
        use crate::token::Secret;
        let req = TokenRequest {
            resource: "https://x".to_owned(),
            ..Default::default()
        };
        let token = AccessToken::new(
            Secret::new("eyJhbGciOi.eyJzdWIiOi.sig"),
            tokio::time::Instant::now(),
            Duration::from_secs(3599),
            None,
        );
        let body = |form| {
            let response = token_response_with(&token, &req, "c", form);
            serde_json::from_slice::<serde_json::Value>(&futures_body(response)).unwrap()
        };
        let (epoch, dated) = (body(ExpiresOn::Epoch), body(ExpiresOn::AppServiceDate));
        let mut want = String::new();
        push_app_service_date(&mut want, token.expires_on);
        assert_eq!(dated["expires_on"], want.as_str());
        assert_eq!(epoch["expires_on"], token.expires_on.to_string().as_str());
        let (mut epoch, mut dated) = (epoch, dated);
        epoch["expires_on"].take();
        dated["expires_on"].take();
        assert_eq!(epoch, dated);
    }

    #[test]
    fn control_characters_are_refused_in_keys_and_values() {
        for query in [
            "resource=r&api-version=2019%0d%0aX",
            "resource=r&%1b%5b2J=1",
            "resource=r&k%0aforged=1&k%0aforged=2",
        ] {
            let refusal = Params::parse(query, true).unwrap_err();
            assert!(refusal.message().contains("control characters"), "{query}");
        }
    }

    #[test]
    fn capabilities_are_one_canonical_set() {
        assert_eq!(
            capabilities(" CP1 , cp2,,cp1").unwrap().as_deref(),
            Some("cp1")
        );
        // Unknown ones would be keys (and Entra calls) of their own: dropped.
        assert_eq!(capabilities("a1").unwrap(), None);
        assert_eq!(capabilities(",").unwrap(), None);
        assert!(capabilities("cp1,a b").is_err());
        let p = Params::parse("resource=r&xms_cc=CP1%2Ccp2", true).unwrap();
        assert_eq!(
            p.token_request().unwrap().capabilities.as_deref(),
            Some("cp1")
        );
    }

    #[test]
    fn a_refused_token_is_named_by_its_sha256() {
        let hex = "00ff".repeat(16);
        let query = format!("resource=r&token_sha256_to_refresh={}", hex.to_uppercase());
        let p = Params::parse(&query, true).unwrap();
        let hash = p.token_request().unwrap().refused_token.unwrap();
        assert_eq!(hash[0..2], [0x00, 0xff]);
        // Anything else names no token.
        for bad in ["abc", "zz".repeat(32).as_str()] {
            let query = format!("resource=r&token_sha256_to_refresh={bad}");
            let p = Params::parse(&query, true).unwrap();
            assert_eq!(p.token_request().unwrap().refused_token, None, "{bad}");
        }
    }

    #[test]
    fn tenants_are_guids_or_domain_names() {
        for ok in [
            "22222222-2222-4222-8222-222222222222",
            "contoso.onmicrosoft.com",
            "x",
        ] {
            assert!(is_tenant(ok), "{ok}");
        }
        for bad in [
            ".", "..", "a..b", ".a", "a.", "-a.b", "a-.b", "a/b", "a b", "",
        ] {
            assert!(!is_tenant(bad), "{bad}");
        }
    }

    #[test]
    fn one_id_only() {
        let p = Params::parse("resource=r&client_id=a&object_id=b", true).unwrap();
        assert!(p.token_request().is_err());
        let p = Params::parse("resource=r&mi_res_id=/x", true).unwrap();
        assert_eq!(
            p.token_request().unwrap().resource_id.as_deref(),
            Some("/x")
        );
        let p = Params::parse("client_id=a", true).unwrap();
        assert!(p.token_request().is_err());
    }
}
