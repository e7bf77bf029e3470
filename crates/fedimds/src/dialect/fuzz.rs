//! Property tests: arbitrary query strings, headers and form bodies fed to every dialect's
//! parser. Whatever arrives, no panic, and every refusal renders a well-formed answer in its
//! dialect's shape. Seeds are fixed so a failure reproduces; the runs are many and cheap.

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method};

use super::arc::ArcKeys;
use super::{app_service, arc, imds, Dialect, Refusal};

/// Pieces that hit the parsers' edges: separators, escapes, aliases, duplicates, non-UTF-8.
const ATOMS: &[&str] = &[
    "resource", "api-version", "2018-02-01", "2019-08-01", "2017-09-01", "2020-06-01", "client_id", "clientid",
    "object_id", "principal_id", "msi_res_id", "mi_res_id", "resource_id", "msi-res-id", "tenant_id", "=", "&", "&&",
    "==", "%", "%2", "%zz", "%00", "%FF", "%C3%A9", "+", " ", "https://graph.microsoft.com", "/", "//", "?", "#",
    "é", "\u{0}", "\u{202e}", "😀", ";", "\\", "\"", "'", "<", ">", "{}", "[]", "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
];

const HEADER_NAMES: &[&str] = &[
    "metadata",
    "x-identity-header",
    "secret",
    "x-forwarded-for",
    "authorization",
    "content-type",
    "host",
    "x-other",
];

const HEADER_VALUES: &[&[u8]] = &[
    b"true",
    b"True",
    b"TRUE",
    b"false",
    b"",
    b" ",
    b"Basic ",
    b"Basic abc",
    b"0123456789abcdef",
    b"\xff\xfe",
    b"application/x-www-form-urlencoded",
    b"localhost",
    b"evil.example",
];

fn pick<'a, T: ?Sized>(rng: &mut fastrand::Rng, items: &'a [&'a T]) -> &'a T {
    items[rng.usize(..items.len())]
}

fn text(rng: &mut fastrand::Rng) -> String {
    (0..rng.usize(0..12)).map(|_| pick(rng, ATOMS)).collect()
}

fn bytes(rng: &mut fastrand::Rng) -> Vec<u8> {
    let mut b = text(rng).into_bytes();
    if rng.bool() {
        b.extend((0..rng.usize(0..8)).map(|_| rng.u8(..)));
    }
    b
}

fn headers(rng: &mut fastrand::Rng) -> HeaderMap {
    let mut h = HeaderMap::new();
    for _ in 0..rng.usize(0..5) {
        let name = HeaderName::from_static(pick(rng, HEADER_NAMES));
        if let Ok(value) = HeaderValue::from_bytes(pick(rng, HEADER_VALUES)) {
            h.append(name, value);
        }
    }
    h
}

fn assert_well_formed(refusal: &Refusal, dialect: Dialect) {
    let response = super::error(dialect, refusal);
    let status = response.status().as_u16();
    assert!((400..600).contains(&status), "{status}");
    // Permanent mistakes are 4xx without Retry-After (Python would retry a 400 that had one).
    if status == 400 {
        assert!(!response.headers().contains_key("retry-after"));
    }
    let body = refusal.message();
    assert!(!body.is_empty());
}

#[test]
fn every_dialect_parser_survives_arbitrary_input() {
    let methods = [Method::GET, Method::POST, Method::PUT, Method::DELETE];
    let known = |p: &[u8]| p == b"0123456789abcdef";
    let dir = std::env::temp_dir().join(format!("fedimds-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let keys = ArcKeys::new(dir.clone(), None);
    for seed in 0..20_000u64 {
        let mut rng = fastrand::Rng::with_seed(seed);
        let method = methods[rng.usize(..methods.len())].clone();
        let headers = headers(&mut rng);
        let query = rng.bool().then(|| text(&mut rng));
        let body = bytes(&mut rng);

        match imds::parse(&method, &headers, query.as_deref()) {
            Ok(req) => assert!(!req.resource.is_empty(), "seed {seed}"),
            Err(refusal) => assert_well_formed(&refusal, Dialect::Imds),
        }
        let dialect = app_service::dialect_of(&method, &headers, query.as_deref());
        match app_service::door(dialect, &method, &headers, &known)
            .and_then(|()| app_service::parse(dialect, &method, query.as_deref(), &body))
        {
            Ok(req) => assert!(!req.resource.is_empty(), "seed {seed}"),
            Err(refusal) => assert_well_formed(&refusal, dialect),
        }
        match keys.parse(&method, &headers, query.as_deref(), arc::Holder::Uid(0)) {
            Ok(arc::ArcRequest::Challenge(r)) => assert_eq!(r.status().as_u16(), 401),
            Ok(arc::ArcRequest::Token(req)) => assert!(!req.resource.is_empty(), "seed {seed}"),
            Err(refusal) => assert_well_formed(&refusal, Dialect::Arc),
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_token_needs_the_right_secret_whatever_else_is_sent() {
    // Whatever the input, App Service and legacy requests parse only with the known secret.
    let never = |_: &[u8]| false;
    for seed in 0..5_000u64 {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut headers = headers(&mut rng);
        headers.insert("x-identity-header", HeaderValue::from_static("nope"));
        let query = format!("resource=r&{}", text(&mut rng));
        let dialect = app_service::dialect_of(&Method::GET, &headers, Some(&query));
        assert!(
            app_service::door(dialect, &Method::GET, &headers, &never)
                .and_then(|()| app_service::parse(dialect, &Method::GET, Some(&query), b""))
                .is_err(),
            "seed {seed}"
        );
    }
}
