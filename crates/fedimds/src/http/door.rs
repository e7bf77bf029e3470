//! The door every request to the token listener passes first, whatever its dialect, and the
//! IMDS passthrough too: what no SDK sends, but a proxy, a browser or a request smuggler would,
//! is refused before anything else is read (`docs/client-protocols.md#error-bodies` for the
//! shapes; each dialect renders the refusal its own way, with IMDS's 400).
//!
//! - A proxy adds `X-Forwarded-For` or `Forwarded`: an app tricked into fetching a URL (SSRF)
//!   through one reaches us with them, and real IMDS refuses them too.
//! - A browser adds `Origin` to cross-origin requests and `Sec-Fetch-*` to every request: a web
//!   page (after DNS rebinding, or a form posted at localhost) must not get tokens.
//! - A header that decides something, sent twice, could be read as the first by one parser and
//!   the last by another; so could a request target in absolute form
//!   (`GET http://evil/metadata/…`) whose host is not the `Host` header's.

use axum::http::{HeaderMap, Uri};

use crate::refusal::Refusal;

/// Headers only a proxy adds, as named in the refusal.
const PROXY_HEADERS: [(&str, &str); 2] = [
    ("x-forwarded-for", "X-Forwarded-For"),
    ("forwarded", "Forwarded"),
];

/// Headers only a browser adds, as named in the refusal.
const BROWSER_HEADERS: [(&str, &str); 3] = [
    ("origin", "an Origin header"),
    ("sec-fetch-site", "a Sec-Fetch-Site header"),
    ("sec-fetch-mode", "a Sec-Fetch-Mode header"),
];

/// Headers some dialect decides on, each with the refusal's words when it is given twice.
const DECIDING_HEADERS: [(&str, &str); 5] = [
    (
        "host",
        "The Host header is given more than once: send exactly one, naming this host",
    ),
    (
        "metadata",
        "The Metadata header is given more than once: send exactly one, Metadata: true",
    ),
    (
        "x-identity-header",
        "The X-IDENTITY-HEADER header is given more than once: send exactly one, the caller secret",
    ),
    (
        "secret",
        "The secret header is given more than once: send exactly one, the caller secret",
    ),
    (
        "authorization",
        "The Authorization header is given more than once: send exactly one",
    ),
];

/// The refusal for a request target in absolute form that names another host than `Host`.
const OTHER_HOST: &str = "The request target names a host (absolute form, as sent to a proxy) that is not the Host header's: send the path alone, with Host naming this host";

/// Checks the request head; the first thing wrong is the refusal.
///
/// One pass over the headers the request has (an SDK sends a handful), matching each name
/// against the lists above, rather than a lookup by name for each of the ten: this runs
/// before every cache hit (`BENCHMARKS.md`, the hit path). A proxy's header is refused
/// before a browser's, and both before a duplicated one; within a list, the first listed.
pub fn check(headers: &HeaderMap, uri: &Uri) -> Result<(), Refusal> {
    let (mut proxy, mut browser, mut twice) = (None::<usize>, None::<usize>, None::<usize>);
    let mut seen = [false; DECIDING_HEADERS.len()];
    let first = |found: &mut Option<usize>, i: usize| *found = Some(found.map_or(i, |f| f.min(i)));
    // `iter` yields a name once for each of its values: a repeated name is seen twice.
    for (name, _) in headers {
        let name = name.as_str();
        if let Some(i) = PROXY_HEADERS.iter().position(|(h, _)| *h == name) {
            first(&mut proxy, i);
        } else if let Some(i) = BROWSER_HEADERS.iter().position(|(h, _)| *h == name) {
            first(&mut browser, i);
        } else if let Some(i) = DECIDING_HEADERS.iter().position(|(h, _)| *h == name) {
            if std::mem::replace(&mut seen[i], true) {
                first(&mut twice, i);
            }
        }
    }
    if let Some(i) = proxy {
        return Err(Refusal::Forwarded(PROXY_HEADERS[i].1));
    }
    if let Some(i) = browser {
        return Err(Refusal::Browser(BROWSER_HEADERS[i].1));
    }
    if let Some(i) = twice {
        return Err(Refusal::Ambiguous(DECIDING_HEADERS[i].1));
    }
    // An origin-form target (`/metadata/…`) has no authority. An absolute-form one must name
    // the Host header's host, which the Host check then judges.
    if let Some(authority) = uri.authority() {
        let host = headers
            .get(axum::http::header::HOST)
            .and_then(|v| v.to_str().ok());
        if !host.is_some_and(|h| h.eq_ignore_ascii_case(authority.as_str())) {
            return Err(Refusal::Ambiguous(OTHER_HOST));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    const PATH: &str = "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=x";

    fn refused(pairs: &[(&'static str, &'static str)], target: &str) -> Option<String> {
        check(&headers(pairs), &target.parse().unwrap())
            .err()
            .map(|r| {
                assert_eq!(r.status().0, 400, "{r:?}");
                r.message()
            })
    }

    #[test]
    fn what_sdks_send_passes() {
        let sdk = [
            ("host", "169.254.169.254"),
            ("metadata", "true"),
            ("x-identity-header", "s3cret"),
            ("user-agent", "azsdk-python-identity/1.27.0"),
            ("x-ms-client-request-id", "1"),
            ("accept", "application/json"),
        ];
        assert_eq!(refused(&sdk, PATH), None);
        // A request target in absolute form naming the Host header's host is unambiguous.
        let absolute = format!("http://169.254.169.254{PATH}");
        assert_eq!(refused(&[("host", "169.254.169.254")], &absolute), None);
        assert_eq!(
            refused(&[("host", "LOCALHOST:8181")], "http://localhost:8181/x"),
            None
        );
    }

    #[test]
    fn proxy_headers_are_refused_and_named() {
        for (header, named) in [
            ("x-forwarded-for", "X-Forwarded-For"),
            ("forwarded", "Forwarded"),
        ] {
            let message =
                refused(&[("host", "localhost"), (header, "for=10.0.0.1")], PATH).expect("refused");
            assert!(
                message.contains(named) && message.contains("proxy"),
                "{message}"
            );
        }
    }

    #[test]
    fn the_refusal_is_the_same_whatever_order_the_headers_come_in() {
        // A proxy's header is named before a browser's and a duplicate; within a list the
        // first listed, wherever it stands in the request.
        let all = [
            ("host", "localhost"),
            ("host", "localhost"),
            ("origin", "x"),
            ("forwarded", "for=1"),
            ("x-forwarded-for", "1"),
        ];
        let mut reversed = all;
        reversed.reverse();
        for pairs in [&all[..], &reversed[..]] {
            let message = refused(pairs, PATH).expect("refused");
            assert!(message.contains("X-Forwarded-For"), "{message}");
        }
        let browser_and_twice = [
            ("metadata", "true"),
            ("sec-fetch-mode", "cors"),
            ("metadata", "true"),
            ("origin", "x"),
        ];
        let message = refused(&browser_and_twice, PATH).expect("refused");
        assert!(message.contains("Origin"), "{message}");
        let message = refused(
            &[
                ("secret", "a"),
                ("metadata", "a"),
                ("metadata", "b"),
                ("secret", "b"),
            ],
            PATH,
        )
        .expect("refused");
        assert!(message.contains("Metadata header"), "{message}");
    }

    #[test]
    fn browser_requests_are_refused_and_named() {
        for (header, named) in [
            ("origin", "Origin"),
            ("sec-fetch-site", "Sec-Fetch-Site"),
            ("sec-fetch-mode", "Sec-Fetch-Mode"),
        ] {
            let message =
                refused(&[("host", "localhost"), (header, "cross-site")], PATH).expect("refused");
            assert!(
                message.contains(named) && message.contains("browser"),
                "{message}"
            );
        }
    }

    #[test]
    fn a_deciding_header_given_twice_is_refused() {
        for (header, named) in [
            ("host", "Host"),
            ("metadata", "Metadata"),
            ("x-identity-header", "X-IDENTITY-HEADER"),
            ("secret", "secret"),
            ("authorization", "Authorization"),
        ] {
            let mut pairs = vec![(header, "one"), (header, "two")];
            if header != "host" {
                pairs.push(("host", "localhost"));
            }
            let message = refused(&pairs, PATH).expect("refused");
            assert!(
                message.contains(named) && message.contains("more than once"),
                "{message}"
            );
        }
        // Headers that decide nothing may repeat (Accept, a client's own).
        assert_eq!(
            refused(
                &[("host", "localhost"), ("accept", "a"), ("accept", "b")],
                PATH
            ),
            None
        );
    }

    #[test]
    fn an_absolute_target_naming_another_host_is_refused() {
        for (host, target) in [
            ("localhost", format!("http://evil.example{PATH}")),
            ("localhost", format!("http://user@localhost{PATH}")),
            ("localhost:8181", "http://localhost:8182/x".to_owned()),
        ] {
            let message = refused(&[("host", host)], &target).expect("refused");
            assert!(message.contains("absolute form"), "{message}");
        }
        // No Host at all beside an absolute target: the target alone would decide.
        assert!(refused(&[], &format!("http://localhost{PATH}")).is_some());
        // CONNECT's authority form.
        assert!(refused(&[("host", "localhost")], "evil.example:443").is_some());
    }
}
