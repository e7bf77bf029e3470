//! The `/msi/token` family, told apart by headers and api-version:
//! - **App Service 2019-08-01** (Functions, Automation): `X-IDENTITY-HEADER`; GET with a query,
//!   or Automation's form POST, where api-version may be absent and `Metadata: True` is sent.
//! - **Legacy 2017-09-01** (`MSI_ENDPOINT` + `MSI_SECRET`, which SDKs call "Azure ML"): the
//!   `secret` header (the same secret) and `clientid`.
//! - **Cloud Shell** (`MSI_ENDPOINT` alone): a form POST with `resource=` and `Metadata: true`,
//!   no secret; trusted like IMDS (loopback plus the Metadata header).

use axum::http::{HeaderMap, Method};
use axum::response::Response;
use serde_json::json;

use super::{error_response, header_is_true, Dialect, Params, Refusal, TokenRequest};

/// The current App Service api-version.
pub const API_VERSION: &str = "2019-08-01";
/// Every App Service api-version a client sends: 2019-08-01, and 2025-03-30, the revocation-
/// capable one (`docs/client-protocols.md#token-revocation`), which answers the same.
pub const API_VERSIONS: [&str; 2] = [API_VERSION, "2025-03-30"];
/// The legacy api-version.
pub const LEGACY_API_VERSION: &str = "2017-09-01";

/// Which member of the family a request speaks.
pub fn dialect_of(method: &Method, headers: &HeaderMap, query: Option<&str>) -> Dialect {
    if headers.contains_key("x-identity-header") {
        Dialect::AppService
    } else if headers.contains_key("secret")
        || query.is_some_and(|q| q.contains(LEGACY_API_VERSION))
    {
        Dialect::AppService2017
    } else if method == Method::POST && header_is_true(headers, "metadata") {
        Dialect::CloudShell
    } else {
        Dialect::AppService
    }
}

/// The checks on the request head, for the member `dialect` (see [`dialect_of`]): no proxy, a
/// method the endpoint takes, and the secret. Made before a body is read, so a caller that
/// cannot get in cannot hold a connection by dribbling one.
pub fn door(
    dialect: Dialect,
    method: &Method,
    headers: &HeaderMap,
    secret_known: &dyn Fn(&[u8]) -> bool,
) -> Result<(), Refusal> {
    if headers.contains_key("x-forwarded-for") {
        return Err(Refusal::Forwarded("X-Forwarded-For"));
    }
    match *method {
        Method::GET if dialect != Dialect::CloudShell => {}
        Method::POST => {}
        _ => return Err(Refusal::MethodNotAllowed),
    }
    match dialect {
        Dialect::AppService2017 => check_secret(headers, "secret", secret_known),
        Dialect::CloudShell => Ok(()),
        _ => check_secret(headers, "x-identity-header", secret_known),
    }
}

/// Parses a request that passed [`door`]: the query, or the form body of a POST.
pub fn parse(
    dialect: Dialect,
    method: &Method,
    query: Option<&str>,
    body: &[u8],
) -> Result<TokenRequest, Refusal> {
    let versions: &[&str] = match dialect {
        Dialect::AppService2017 => &[LEGACY_API_VERSION],
        Dialect::CloudShell => &[],
        _ => &API_VERSIONS,
    };
    let joined;
    let text = match *method {
        Method::GET if dialect != Dialect::CloudShell => query.unwrap_or_default(),
        Method::POST => {
            let form = std::str::from_utf8(body)
                .map_err(|_| Refusal::BadRequest("The form body is not UTF-8".to_owned()))?;
            // Automation scripts put everything in the body; a query is accepted too.
            match query {
                Some(q) if !q.is_empty() => {
                    joined = format!("{q}&{form}");
                    joined.as_str()
                }
                _ => form,
            }
        }
        _ => return Err(Refusal::MethodNotAllowed),
    };
    let params = Params::parse(text, true)?;
    match params.get(&["api-version"]).as_deref() {
        Some(v) if !versions.is_empty() && !versions.contains(&v) => {
            return Err(Refusal::BadRequest(format!(
                "api-version {v:?} is not supported here; use {}",
                versions.join(" or ")
            )))
        }
        _ => {}
    }
    params.token_request()
}

fn check_secret(
    headers: &HeaderMap,
    name: &'static str,
    secret_known: &dyn Fn(&[u8]) -> bool,
) -> Result<(), Refusal> {
    match headers.get(name) {
        None if name == "secret" => Err(Refusal::Unauthorized("The secret header is missing")),
        None => Err(Refusal::Unauthorized("The X-IDENTITY-HEADER header is missing")),
        Some(v) if !secret_known(v.as_bytes()) => Err(Refusal::Unauthorized(
            "The X-IDENTITY-HEADER (or secret) value is not the one this endpoint expects (IDENTITY_HEADER / MSI_SECRET)",
        )),
        Some(_) => Ok(()),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The door, then the parse, as the handler runs them.
    fn parse(
        dialect: Dialect,
        method: &Method,
        headers: &HeaderMap,
        query: Option<&str>,
        body: &[u8],
        secret_known: &dyn Fn(&[u8]) -> bool,
    ) -> Result<TokenRequest, Refusal> {
        door(dialect, method, headers, secret_known)?;
        super::parse(dialect, method, query, body)
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn family_members_are_told_apart() {
        let get = Method::GET;
        let post = Method::POST;
        assert_eq!(
            dialect_of(&get, &headers(&[("x-identity-header", "s")]), None),
            Dialect::AppService
        );
        assert_eq!(
            dialect_of(&get, &headers(&[("secret", "s")]), None),
            Dialect::AppService2017
        );
        assert_eq!(
            dialect_of(&get, &headers(&[]), Some("api-version=2017-09-01")),
            Dialect::AppService2017
        );
        assert_eq!(
            dialect_of(&post, &headers(&[("metadata", "true")]), None),
            Dialect::CloudShell
        );
        assert_eq!(
            dialect_of(
                &post,
                &headers(&[("metadata", "True"), ("x-identity-header", "s")]),
                None
            ),
            Dialect::AppService
        );
        assert_eq!(dialect_of(&get, &headers(&[]), None), Dialect::AppService);
    }

    #[test]
    fn legacy_checks_the_secret_header_and_takes_clientid() {
        let secret = |p: &[u8]| p == b"0123456789abcdef";
        let h = headers(&[("secret", "0123456789abcdef")]);
        let req = parse(
            Dialect::AppService2017,
            &Method::GET,
            &h,
            Some("api-version=2017-09-01&resource=r&clientid=c"),
            b"",
            &secret,
        )
        .unwrap();
        assert_eq!(req.client_id.as_deref(), Some("c"));
        let bad = headers(&[("secret", "nope")]);
        assert!(matches!(
            parse(
                Dialect::AppService2017,
                &Method::GET,
                &bad,
                Some("api-version=2017-09-01&resource=r"),
                b"",
                &secret
            ),
            Err(Refusal::Unauthorized(_))
        ));
    }

    #[test]
    fn cloud_shell_is_a_form_post() {
        let secret = |p: &[u8]| p == b"0123456789abcdef";
        let h = headers(&[("metadata", "true")]);
        let req = parse(
            Dialect::CloudShell,
            &Method::POST,
            &h,
            None,
            b"resource=https%3A%2F%2Fx",
            &secret,
        )
        .unwrap();
        assert_eq!(req.resource, "https://x");
        assert!(matches!(
            parse(
                Dialect::CloudShell,
                &Method::GET,
                &h,
                Some("resource=r"),
                b"",
                &secret
            ),
            Err(Refusal::MethodNotAllowed)
        ));
    }
}
