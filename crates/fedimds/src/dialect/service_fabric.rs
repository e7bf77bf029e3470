//! Service Fabric's managed-identity endpoint (`docs/client-protocols.md#service-fabric`):
//! `GET {IDENTITY_ENDPOINT}?api-version=…&resource=…` over HTTPS with the secret in a `secret`
//! header (`Secret` to some clients; header names are case-insensitive). It is the dialect in
//! which today's MSAL-based clients send the revocation parameters (`xms_cc`,
//! `token_sha256_to_refresh`), parsed as in every dialect. Its errors are
//! `{"error":{"correlationId","code","message"}}` with Service Fabric's codes.

use axum::http::{HeaderMap, Method};
use axum::response::Response;
use serde_json::json;

use super::{app_service::correlation_id, error_response_with, Params, Refusal, TokenRequest};

/// The api-versions Service Fabric clients send: MSAL Python, Go, Java and Node
/// `2019-07-01-preview`, MSAL.NET `2020-05-01`. Others of the same form are accepted too, so a
/// client that moves to a newer one keeps working; the answer does not depend on it.
pub const API_VERSIONS: [&str; 2] = ["2019-07-01-preview", "2020-05-01"];

/// The checks on the request head: GET, and the secret (proxies, browsers and ambiguous
/// requests were refused at the door every dialect shares, `http::door`).
pub fn door(
    method: &Method,
    headers: &HeaderMap,
    secret_known: &dyn Fn(&[u8]) -> bool,
) -> Result<(), Refusal> {
    if method != Method::GET {
        return Err(Refusal::MethodNotAllowed);
    }
    match headers.get(crate::header::SECRET) {
        None => Err(Refusal::Unauthorized(
            "Secret is not found in the request headers (send IDENTITY_HEADER as the secret header)",
        )),
        Some(v) if !secret_known(v.as_bytes()) => Err(Refusal::SecretNotKnown(
            "The secret header is not the one this endpoint expects (IDENTITY_HEADER)",
        )),
        Some(_) => Ok(()),
    }
}

/// Parses a request that passed [`door`]: an api-version of the form clients send, and a
/// resource.
pub fn parse(query: Option<&str>) -> Result<TokenRequest, Refusal> {
    let params = Params::parse(query.unwrap_or_default(), true)?;
    match params.get(&["api-version"]) {
        Some(v) if is_api_version(&v) => {}
        _ => return Err(Refusal::ApiVersion),
    }
    params.token_request()
}

/// `YYYY-MM-DD`, with an optional `-preview`.
fn is_api_version(v: &str) -> bool {
    let date = v.strip_suffix("-preview").unwrap_or(v).as_bytes();
    date.len() == 10
        && date.iter().enumerate().all(|(i, b)| match i {
            4 | 7 => *b == b'-',
            _ => b.is_ascii_digit(),
        })
}

/// Service Fabric's error shape: `{"error":{"correlationId","code","message"}}`, with its
/// status and code for the refusal.
pub fn error(refusal: &Refusal) -> Response {
    let (status, code) = refusal.service_fabric();
    let body = json!({
        "error": {
            "correlationId": correlation_id(),
            "code": code,
            "message": refusal.message(),
        }
    });
    error_response_with(refusal, status, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn the_secret_header_is_required_and_checked() {
        let known = |p: &[u8]| p == b"0123456789abcdef";
        let get = Method::GET;
        assert!(door(&get, &headers(&[("secret", "0123456789abcdef")]), &known).is_ok());
        assert!(matches!(
            door(&get, &headers(&[]), &known),
            Err(Refusal::Unauthorized(_))
        ));
        assert!(matches!(
            door(&get, &headers(&[("secret", "nope")]), &known),
            Err(Refusal::SecretNotKnown(_))
        ));
        // The App Service header is not Service Fabric's.
        assert!(matches!(
            door(
                &get,
                &headers(&[("x-identity-header", "0123456789abcdef")]),
                &known
            ),
            Err(Refusal::Unauthorized(_))
        ));
        assert!(matches!(
            door(
                &Method::POST,
                &headers(&[("secret", "0123456789abcdef")]),
                &known
            ),
            Err(Refusal::MethodNotAllowed)
        ));
    }

    #[test]
    fn every_api_version_clients_send_is_accepted() {
        for v in API_VERSIONS
            .iter()
            .chain(&["2024-01-01", "2026-06-30-preview"])
        {
            let req = parse(Some(&format!(
                "api-version={v}&resource=https://vault.azure.net"
            )))
            .unwrap_or_else(|e| panic!("{v}: {e:?}"));
            assert_eq!(req.resource, "https://vault.azure.net");
        }
        for bad in [
            "",
            "api-version=",
            "api-version=latest",
            "api-version=2019-7-1",
        ] {
            let query = format!("{bad}&resource=r");
            assert!(
                matches!(parse(Some(&query)), Err(Refusal::ApiVersion)),
                "{bad}"
            );
        }
    }

    #[test]
    fn principal_id_and_the_revocation_parameters_are_read() {
        let hash = "ab".repeat(32);
        let req = parse(Some(&format!(
            "api-version=2020-05-01&resource=r&principalId=p&xms_cc=CP1&token_sha256_to_refresh={hash}"
        )))
        .unwrap();
        assert_eq!(req.object_id.as_deref(), Some("p"));
        assert_eq!(req.capabilities.as_deref(), Some("cp1"));
        assert_eq!(req.refused_token, Some([0xab; 32]));
        assert!(matches!(
            parse(Some("api-version=2020-05-01")),
            Err(Refusal::MissingResource)
        ));
    }
}
