//! The door, black-box: on every token dialect, what no SDK sends but a proxy, a browser or a
//! smuggler would is refused with a 400 in the dialect's own error shape, naming what was
//! refused; the same request without it is served. Requests are written by hand on a raw TCP
//! connection, so headers can repeat and the target can be in absolute form.

use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::support::*;

/// One dialect's request, as head lines after the request line, and its body.
struct Dialect {
    name: &'static str,
    method: &'static str,
    path: String,
    headers: Vec<String>,
    body: &'static str,
    /// The status of the request as it is (200, or Arc's 401 challenge).
    ok: u16,
    /// The key of the error body's message.
    message_key: &'static str,
}

fn dialects(secret: &str) -> Vec<Dialect> {
    vec![
        Dialect {
            name: "imds",
            method: "GET",
            path: format!(
                "/metadata/identity/oauth2/token?api-version=2018-02-01&resource={GRAPH}"
            ),
            headers: vec!["Metadata: true".into()],
            body: "",
            ok: 200,
            message_key: "error_description",
        },
        Dialect {
            name: "app-service",
            method: "GET",
            path: format!("/msi/token?api-version=2019-08-01&resource={GRAPH}"),
            headers: vec![format!("X-IDENTITY-HEADER: {secret}")],
            body: "",
            ok: 200,
            message_key: "message",
        },
        Dialect {
            name: "app-service-2017",
            method: "GET",
            path: format!("/msi/token?api-version=2017-09-01&resource={GRAPH}"),
            headers: vec![format!("secret: {secret}")],
            body: "",
            ok: 200,
            message_key: "message",
        },
        Dialect {
            name: "cloud-shell",
            method: "POST",
            path: "/msi/token".into(),
            headers: vec![
                "Metadata: true".into(),
                "Content-Type: application/x-www-form-urlencoded".into(),
            ],
            body: "resource=https://graph.microsoft.com",
            ok: 200,
            message_key: "error_description",
        },
        Dialect {
            name: "arc",
            method: "GET",
            path: format!(
                "/arc/metadata/identity/oauth2/token?api-version=2020-06-01&resource={GRAPH}"
            ),
            headers: vec!["Metadata: true".into()],
            body: "",
            ok: 401,
            message_key: "error_description",
        },
    ]
}

/// Sends one hand-written request and reads the whole answer: status and JSON body.
async fn send(addr: &str, target: &str, d: &Dialect, extra: &[&str]) -> (u16, Value) {
    let mut head = format!("{} {target} HTTP/1.1\r\n", d.method);
    let has_host = extra
        .iter()
        .any(|h| h.to_ascii_lowercase().starts_with("host:"));
    if !has_host {
        head.push_str("Host: localhost\r\n");
    }
    for line in d
        .headers
        .iter()
        .map(String::as_str)
        .chain(extra.iter().copied())
    {
        head.push_str(line);
        head.push_str("\r\n");
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n{}",
        d.body.len(),
        d.body
    ));
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_door_refuses_proxies_browsers_and_ambiguity_on_every_dialect() {
    let dir = temp_dir("door-arc");
    let h = start_with(fedimds_sim::SimConfig::demo(), |raw| {
        raw.server.arc_key_dir = Some(dir.clone());
    })
    .await;
    let addr = h.url.trim_start_matches("http://").to_owned();
    let secret = h.app.identity_header().expose().to_owned();
    let doubled_secret = format!("X-IDENTITY-HEADER: {secret}");
    let doubled_legacy = format!("secret: {secret}");
    for d in dialects(&secret) {
        // As an SDK sends it, it is served (Arc: challenged).
        let (status, body) = send(&addr, &d.path, &d, &[]).await;
        assert_eq!(status, d.ok, "{}: {body}", d.name);

        let absolute_elsewhere = format!("http://evil.example{}", d.path);
        let absolute_here = format!("http://localhost{}", d.path);
        let cases: Vec<(&str, &str, Vec<&str>, &str)> = vec![
            (
                "Forwarded",
                &d.path,
                vec!["Forwarded: for=10.0.0.1"],
                "Forwarded",
            ),
            (
                "X-Forwarded-For",
                &d.path,
                vec!["X-Forwarded-For: 10.0.0.1"],
                "X-Forwarded-For",
            ),
            (
                "Origin",
                &d.path,
                vec!["Origin: https://evil.example"],
                "Origin",
            ),
            (
                "Sec-Fetch-Site",
                &d.path,
                vec!["Sec-Fetch-Site: cross-site"],
                "Sec-Fetch-Site",
            ),
            (
                "Sec-Fetch-Mode",
                &d.path,
                vec!["Sec-Fetch-Mode: no-cors"],
                "Sec-Fetch-Mode",
            ),
            (
                "Metadata twice",
                &d.path,
                vec!["Metadata: false"],
                "Metadata header is given more than once",
            ),
            (
                "Host twice",
                &d.path,
                vec!["Host: localhost", "Host: evil.example"],
                "Host header is given more than once",
            ),
            (
                "X-IDENTITY-HEADER twice",
                &d.path,
                vec![&doubled_secret, &doubled_secret],
                "X-IDENTITY-HEADER header is given more than once",
            ),
            (
                "secret twice",
                &d.path,
                vec![&doubled_legacy, &doubled_legacy],
                "secret header is given more than once",
            ),
            (
                "Authorization twice",
                &d.path,
                vec!["Authorization: Basic a", "Authorization: Basic b"],
                "Authorization header is given more than once",
            ),
            (
                "absolute form, another host",
                &absolute_elsewhere,
                vec![],
                "absolute form",
            ),
        ];
        for (case, target, extra, named) in cases {
            // "Metadata twice" adds a second one only where the dialect sends a first.
            if case == "Metadata twice" && !d.headers.iter().any(|h| h.starts_with("Metadata")) {
                continue;
            }
            let (status, body) = send(&addr, target, &d, &extra).await;
            assert_eq!(status, 400, "{} {case}: {body}", d.name);
            assert!(
                body.get("access_token").is_none(),
                "{} {case}: {body}",
                d.name
            );
            // A secret header makes a Cloud Shell request one of the App Service family's,
            // answered in their shape.
            let key = if d.name == "cloud-shell"
                && case.contains("twice")
                && !case.starts_with("Metadata")
                && !case.starts_with("Host")
                && !case.starts_with("Authorization")
            {
                "message"
            } else {
                d.message_key
            };
            let message = body[key].as_str().unwrap_or_default();
            assert!(message.contains(named), "{} {case}: {body}", d.name);
        }
        // An absolute target naming the Host header's own host means one thing: served.
        let (status, body) = send(&addr, &absolute_here, &d, &[]).await;
        assert_eq!(status, d.ok, "{} absolute form, this host: {body}", d.name);
    }
}
