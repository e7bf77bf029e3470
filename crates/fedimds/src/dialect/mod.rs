//! The wire dialects. Each dialect module parses and checks its own requests and renders its
//! own answers; what they share is here: the request every dialect boils down to
//! ([`TokenRequest`]), the query parser, the 200 body every client accepts, and the choice of
//! error shape per dialect. Why a request is refused, and with which status, is
//! [`crate::refusal`]'s.

pub mod app_service;
pub mod arc;
mod body;
pub mod imds;
pub mod service_fabric;

use std::borrow::Cow;

use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};

use crate::config::MAX_RESOURCE_LEN;
pub use crate::refusal::Refusal;
pub use body::{token_response, ExpiresOn, RecentBodies};

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
        // Split as `form_urlencoded::parse` does (on `&`, empty pairs skipped, a pair without
        // `=` an empty value). A pair of printable ASCII without `%` or `+` decodes to itself
        // and holds no control character: it is borrowed as it is, without the decoder's
        // byte-by-byte passes (what SDKs send, on every cache hit); any other pair is decoded.
        for pair in text.split('&').filter(|p| !p.is_empty()) {
            if pairs.len() >= MAX_PAIRS {
                return Err(Refusal::BadRequest(format!(
                    "More than {MAX_PAIRS} parameters"
                )));
            }
            let plain = pair
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'%' && b != b'+');
            let (key, value) = if plain {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                (Cow::Borrowed(key), Cow::Borrowed(value))
            } else {
                match form_urlencoded::parse(pair.as_bytes()).next() {
                    Some(decoded) => decoded,
                    None => continue,
                }
            };
            // No control characters in any key or value: they have no place in a resource, an
            // id or an api-version, and echoed in a message or a text log they would forge
            // lines or drive a terminal.
            if !plain && key.chars().chain(value.chars()).any(char::is_control) {
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
pub fn header_is_true(headers: &HeaderMap, name: axum::http::HeaderName) -> bool {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn params_split_and_decode_exactly_as_form_urlencoded_does() {
        // The borrowed fast path for plain pairs must agree with the decoder on every input.
        let queries = [
            "",
            "a",
            "a=",
            "=b",
            "a=b=c",
            "&&a=b&&c=d&",
            "a+b=c+d",
            "%41=%42",
            "a=%zz&b=%4",
            "resource=https://management.azure.com/&api-version=2018-02-01",
            "resource=https%3A%2F%2Fvault.azure.net&client_id=x",
            "r=\u{e9}t\u{e9}",
            "r=caf%C3%A9&x=%FF",
            "k=v;w=x",
            "a=b#c",
        ];
        for query in queries {
            let ours: Vec<(String, String)> = Params::parse(query, false)
                .unwrap()
                .0
                .into_iter()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            let theirs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            assert_eq!(ours, theirs, "{query:?}");
        }
        // Control characters are refused whether they come encoded or raw.
        for query in ["r=a%0Ab", "r=a\u{7f}", "r=a\u{85}", "r%09=x"] {
            assert!(Params::parse(query, false).is_err(), "{query:?}");
        }
    }

    #[test]
    fn params_decode_and_refuse_duplicates() {
        let p = Params::parse("resource=https://x&client_id=a%2Fb", true).unwrap();
        assert_eq!(p.get(&["resource"]).as_deref(), Some("https://x"));
        assert_eq!(p.get(&["client_id"]).as_deref(), Some("a/b"));
        assert!(Params::parse("resource=a&resource=b", true).is_err());
        assert!(Params::parse("resource=a&resource=b", false).is_ok());
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
