//! The `/msi/token` family, told apart by headers and api-version:
//! - **App Service 2019-08-01** (Functions, Automation): `X-IDENTITY-HEADER`; GET with a query,
//!   or Automation's form POST, where api-version may be absent and `Metadata: True` is sent.
//! - **Legacy 2017-09-01** (`MSI_ENDPOINT` + `MSI_SECRET`, which SDKs call "Azure ML"): the
//!   `secret` header (the same secret) and `clientid`.
//! - **Cloud Shell** (`MSI_ENDPOINT` alone): a form POST with `resource=` and `Metadata: true`,
//!   no secret; trusted like IMDS (loopback plus the Metadata header). msal4j sends it as a GET
//!   with the resource in the query (`docs/client-protocols.md#go-and-java`), taken the same way.

use axum::http::{HeaderMap, Method};
use axum::response::Response;
use serde_json::json;

use super::{error_response, header_is_true, Dialect, ExpiresOn, Params, Refusal, TokenRequest};
use crate::config::LegacyExpiresOn;

/// The current App Service api-version.
pub const API_VERSION: &str = "2019-08-01";
/// Every App Service api-version a client sends: 2019-08-01, and 2025-03-30, the revocation-
/// capable one (`docs/client-protocols.md#token-revocation`), which answers the same.
pub const API_VERSIONS: [&str; 2] = [API_VERSION, "2025-03-30"];
/// The legacy api-version.
pub const LEGACY_API_VERSION: &str = "2017-09-01";

/// Which member of the family a request speaks.
pub fn dialect_of(method: &Method, headers: &HeaderMap, query: Option<&str>) -> Dialect {
    if headers.contains_key(crate::header::X_IDENTITY_HEADER) {
        Dialect::AppService
    } else if headers.contains_key(crate::header::SECRET)
        || query.is_some_and(|q| q.contains(LEGACY_API_VERSION))
    {
        Dialect::AppService2017
    } else if (method == Method::POST || method == Method::GET)
        && header_is_true(headers, crate::header::METADATA)
    {
        Dialect::CloudShell
    } else {
        Dialect::AppService
    }
}

/// The checks on the request head, for the member `dialect` (see [`dialect_of`]): a method
/// the endpoint takes, and the secret (a proxy's headers were refused at the shared door,
/// `http::door`). Made before a body is read, so a caller that
/// cannot get in cannot hold a connection by dribbling one.
pub fn door(
    dialect: Dialect,
    method: &Method,
    headers: &HeaderMap,
    secret_known: &dyn Fn(&[u8]) -> bool,
) -> Result<(), Refusal> {
    match *method {
        Method::GET | Method::POST => {}
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
        Method::GET => query.unwrap_or_default(),
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

/// How a 2017-09-01 answer writes `expires_on` for the caller that sent `headers`.
///
/// The real App Service wrote a date there; the clients written for it parse that date and
/// some of them nothing else, while the MSAL-era clients of the same dialect (which call it
/// "Azure ML") parse only epoch seconds (`docs/client-protocols.md#app-service-2017`). What
/// tells them apart is the `User-Agent` the old azure-identity libraries send, with their
/// version: see [`parses_the_date`]. Only this dialect reads it, so the others pay nothing.
pub fn legacy_expires_on(choice: LegacyExpiresOn, headers: &HeaderMap) -> ExpiresOn {
    let date = match choice {
        LegacyExpiresOn::Date => true,
        LegacyExpiresOn::Epoch => false,
        LegacyExpiresOn::Auto => headers
            .get(axum::http::header::USER_AGENT)
            .and_then(|ua| ua.to_str().ok())
            .is_some_and(parses_the_date),
    };
    if date {
        ExpiresOn::AppServiceDate
    } else {
        ExpiresOn::Epoch
    }
}

/// Whether a `User-Agent` is that of a client that was written for the real App Service's
/// date, read from each version's own source (`docs/client-protocols.md#app-service-2017`):
/// - azure-identity for Python 1.0–1.8 (`azsdk-python-identity/1.N`, N < 9): 1.5.0 parses
///   only the date (an epoch raises `ValueError`); the others parse it as well as epoch
///   seconds. From 1.9.0 the pair is "Azure ML", whose answer is epoch seconds.
/// - @azure/identity for JS 1.x and 2.x (`azsdk-js-identity/1.…`, `/2.…`): `Date.parse` of
///   the value, which gives NaN for epoch seconds. From 3.0.0, epoch seconds.
///
/// The product token may stand anywhere: azure-core puts an application id and
/// `$AZURE_HTTP_USER_AGENT` around it.
pub fn parses_the_date(user_agent: &str) -> bool {
    let version = |product: &str| {
        let at = user_agent.find(product)? + product.len();
        let mut numbers = user_agent[at..]
            .split(|c: char| !c.is_ascii_digit())
            .map(|n| n.parse::<u32>().ok());
        Some((numbers.next()??, numbers.next()??))
    };
    matches!(version("azsdk-python-identity/"), Some((1, minor)) if minor < 9)
        || matches!(version("azsdk-js-identity/"), Some((1 | 2, _)))
}

fn check_secret(
    headers: &HeaderMap,
    name: &'static str,
    secret_known: &dyn Fn(&[u8]) -> bool,
) -> Result<(), Refusal> {
    match headers.get(name) {
        None if name == "secret" => Err(Refusal::Unauthorized("The secret header is missing")),
        None => Err(Refusal::Unauthorized("The X-IDENTITY-HEADER header is missing")),
        Some(v) if !secret_known(v.as_bytes()) => Err(Refusal::SecretNotKnown(
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
        assert_eq!(
            dialect_of(&get, &headers(&[("metadata", "true")]), Some("resource=r")),
            Dialect::CloudShell
        );
    }

    #[test]
    fn old_azure_identity_user_agents_get_the_date() {
        for ua in [
            "azsdk-python-identity/1.5.0 Python/3.11.2 (Linux-6.1.0-x86_64-with-glibc2.36)",
            "azsdk-python-identity/1.0.0 Python/3.7.3 (Windows-10)",
            "azsdk-python-identity/1.8.0 Python/3.9.1 (Linux)",
            "myapp/2.0 azsdk-python-identity/1.5.0 Python/3.8.0 (Linux) extra/1",
            "azsdk-js-identity/1.5.2 core-rest-pipeline/1.1.0 Node/v14.17.0 OS/(x64-Linux-5.4)",
            "azsdk-js-identity/2.1.0 core-rest-pipeline/1.9.2 Node/v18.0.0 OS/(x64-Linux)",
        ] {
            assert!(parses_the_date(ua), "{ua}");
        }
        for ua in [
            "azsdk-python-identity/1.9.0 Python/3.10.0 (Linux)",
            "azsdk-python-identity/1.27.0 Python/3.11.2 (Linux)",
            "azsdk-python-identity/2.0.0 Python/3.13.0 (Linux)",
            "azsdk-js-identity/3.0.0 core-rest-pipeline/1.10.0 Node/v18.0.0",
            "azsdk-js-identity/4.14.1 core-rest-pipeline/1.24.0 Node/v22.0.0",
            "python-requests/2.34.2",
            "azsdk-python-identity/",
            "azsdk-python-identity/1",
            "azsdk-python-identity/1.x",
            "",
        ] {
            assert!(!parses_the_date(ua), "{ua}");
        }
        let old = headers(&[("user-agent", "azsdk-python-identity/1.5.0 Python/3.11.2")]);
        let new = headers(&[("user-agent", "python-requests/2.34.2")]);
        let none = headers(&[]);
        for (choice, h, want) in [
            (LegacyExpiresOn::Auto, &old, ExpiresOn::AppServiceDate),
            (LegacyExpiresOn::Auto, &new, ExpiresOn::Epoch),
            (LegacyExpiresOn::Auto, &none, ExpiresOn::Epoch),
            (LegacyExpiresOn::Date, &new, ExpiresOn::AppServiceDate),
            (LegacyExpiresOn::Date, &none, ExpiresOn::AppServiceDate),
            (LegacyExpiresOn::Epoch, &old, ExpiresOn::Epoch),
        ] {
            assert_eq!(legacy_expires_on(choice, h), want, "{choice:?} {h:?}");
        }
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
            Err(Refusal::SecretNotKnown(_))
        ));
    }

    #[test]
    fn cloud_shell_is_a_form_post_or_msal4js_get() {
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
        // msal4j's Cloud Shell request: a GET, the resource in the query.
        assert_eq!(
            dialect_of(&Method::GET, &h, Some("resource=r")),
            Dialect::CloudShell
        );
        let req = parse(
            Dialect::CloudShell,
            &Method::GET,
            &h,
            Some("resource=r"),
            b"",
            &secret,
        )
        .unwrap();
        assert_eq!(req.resource, "r");
        assert!(matches!(
            parse(Dialect::CloudShell, &Method::PUT, &h, None, b"", &secret),
            Err(Refusal::MethodNotAllowed)
        ));
    }
}
