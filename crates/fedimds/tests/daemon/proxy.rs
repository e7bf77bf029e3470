//! `upstream.entra_proxy`: Entra calls go through the proxy, the assertion leg (the
//! simulator's IMDS) never does, whatever the environment says; the proxy's credentials are
//! never shown; a proxy that refuses gives an error that names it. The proxy here is a small
//! one in the test that records each request line and forwards absolute-form requests to the
//! simulator (whose Entra is `http://127.0.0.1`), tunnels a CONNECT (an `https://` Entra), or
//! refuses with 403.
//! `tests/suites/proxy.sh` runs the same against Debian's tinyproxy.

use std::sync::{Arc, Mutex};

use base64::Engine as _;
use fedimds::config::provenance::{self, Origin};
use fedimds::config::Config;
use fedimds_sim::SimConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

const USER: &str = "proxyuser";
const PASSWORD: &str = "pr0xy-pa55word-not-to-be-seen";

/// What the test proxy saw: one entry per request, its request line and whether it carried
/// the expected `Proxy-Authorization`.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<(String, bool)>>>);

impl Seen {
    fn lines(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|(l, _)| l.clone())
            .collect()
    }
    fn all_authorized(&self) -> bool {
        self.0.lock().unwrap().iter().all(|(_, auth)| *auth)
    }
}

struct TestProxy {
    addr: std::net::SocketAddr,
    seen: Seen,
}

impl TestProxy {
    /// A proxy on 127.0.0.1:0 that forwards, or answers every request with 403.
    async fn start(refuse: bool) -> TestProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Seen::default();
        let record = seen.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(serve(conn, record.clone(), refuse));
            }
        });
        TestProxy { addr, seen }
    }

    /// Its URL with credentials.
    fn url(&self) -> String {
        format!("http://{USER}:{PASSWORD}@{}", self.addr)
    }
}

async fn serve(mut conn: TcpStream, seen: Seen, refuse: bool) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if conn.read(&mut byte).await.unwrap_or(0) == 0 {
            return;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_owned();
    let expected = format!(
        "basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
    );
    let headers: Vec<&str> = lines.filter(|l| !l.is_empty()).collect();
    let authorized = headers.iter().any(|h| {
        h.to_ascii_lowercase()
            .strip_prefix("proxy-authorization:")
            .is_some_and(|v| v.trim() == expected.to_ascii_lowercase())
    });
    seen.0
        .lock()
        .unwrap()
        .push((request_line.clone(), authorized));
    if refuse {
        let body = "<html><body>Access denied</body></html>";
        let answer = format!(
            "HTTP/1.1 403 Access denied\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = conn.write_all(answer.as_bytes()).await;
        return;
    }
    // `CONNECT host:port HTTP/1.1` (an https Entra): a tunnel to there.
    if let Some(authority) = request_line
        .strip_prefix("CONNECT ")
        .and_then(|rest| rest.split(' ').next())
    {
        let Ok(mut upstream) = TcpStream::connect(authority).await else {
            return;
        };
        if conn
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await
            .is_ok()
        {
            let _ = tokio::io::copy_bidirectional(&mut conn, &mut upstream).await;
        }
        return;
    }
    // `POST http://127.0.0.1:port/path HTTP/1.1` → connect there, send `POST /path HTTP/1.1`.
    let mut parts = request_line.splitn(3, ' ');
    let (method, target, version) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let Some(rest) = target.strip_prefix("http://") else {
        let _ = conn
            .write_all(
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )
            .await;
        return;
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let Ok(mut upstream) = TcpStream::connect(authority).await else {
        return;
    };
    let mut forwarded = format!("{method} {path} {version}\r\n");
    for h in &headers {
        let name = h.split(':').next().unwrap_or_default().to_ascii_lowercase();
        if !matches!(
            name.as_str(),
            "proxy-authorization" | "connection" | "proxy-connection"
        ) {
            forwarded.push_str(h);
            forwarded.push_str("\r\n");
        }
    }
    // One request per connection, so every request is seen here.
    forwarded.push_str("Connection: close\r\n\r\n");
    if upstream.write_all(forwarded.as_bytes()).await.is_err() {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut conn, &mut upstream).await;
}

/// An environment that asks every client to use `proxy` for everything.
fn proxy_everything(proxy: &str) -> impl Fn(&str) -> Option<String> + '_ {
    move |name: &str| {
        matches!(
            name,
            "HTTPS_PROXY" | "https_proxy" | "HTTP_PROXY" | "http_proxy" | "ALL_PROXY" | "all_proxy"
        )
        .then(|| proxy.to_owned())
    }
}

fn assert_only_entra_went_through(seen: &Seen) {
    let lines = seen.lines();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("POST http://127.0.0.1:") && l.contains("/oauth2/v2.0/token")),
        "the Entra token request went through the proxy: {lines:?}"
    );
    assert!(
        !lines.iter().any(|l| l.contains("/metadata/")),
        "no IMDS request went through the proxy: {lines:?}"
    );
    assert!(
        seen.all_authorized(),
        "credentials sent as Proxy-Authorization"
    );
}

#[tokio::test]
async fn entra_goes_through_the_configured_proxy_and_imds_never_does() {
    let proxy = TestProxy::start(false).await;
    let url = proxy.url();
    let env = proxy_everything(&url);
    let h = start_with_env(SimConfig::demo(), &env, |raw| {
        raw.upstream.entra_proxy = Some(url.as_str().into());
    })
    .await;
    let (status, body) = h.imds_token(GRAPH, "").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        !h.sim.exchanges().is_empty(),
        "the simulator's Entra saw the exchange"
    );
    assert_only_entra_went_through(&proxy.seen);
}

#[tokio::test]
async fn an_https_entra_is_reached_through_the_proxy_with_connect() {
    let proxy = TestProxy::start(false).await;
    let url = proxy.url();
    let h = start_with(SimConfig::demo(), |raw| {
        raw.upstream.entra_proxy = Some(url.as_str().into());
    })
    .await;
    // Entra at an https address (the simulator speaks plain http, so the TLS handshake
    // through the tunnel fails: what matters here is how the tunnel was asked for).
    let sim = h.sim.url();
    let entra = sim
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let mut raw = fedimds::demo::raw_config(&sim, h.app.settings().config.server.listen);
    raw.cloud.authority_host = Some(format!("https://{entra}"));
    raw.upstream.entra_proxy = Some(url.as_str().into());
    // The handshake fails and is retried: no need to wait the default 20 s for the answer.
    raw.server.miss_timeout = Some(std::time::Duration::from_secs(2).into());
    h.app.reload(load(&raw)).expect("the reload applies");
    let (status, body) = h.imds_token(GRAPH, "").await;
    assert_ne!(status, 200, "no TLS server behind the tunnel: {body}");
    let lines = proxy.seen.lines();
    assert!(
        lines
            .iter()
            .any(|l| l == &format!("CONNECT {entra} HTTP/1.1")),
        "the proxy was asked for a tunnel to Entra: {lines:?}"
    );
    assert!(proxy.seen.all_authorized(), "with the proxy's credentials");
    assert!(
        !lines.iter().any(|l| l.contains("/metadata/")),
        "IMDS never through the proxy: {lines:?}"
    );
}

#[tokio::test]
async fn env_reads_https_proxy_and_no_proxy_only_when_asked() {
    // "env": the environment's proxy, for Entra only.
    let proxy = TestProxy::start(false).await;
    let url = proxy.url();
    let env = proxy_everything(&url);
    let h = start_with_env(SimConfig::demo(), &env, |raw| {
        raw.upstream.entra_proxy = Some("env".into());
    })
    .await;
    assert_eq!(h.imds_token(GRAPH, "").await.0, 200);
    assert_only_entra_went_through(&proxy.seen);

    // Not set: the environment's proxy is not read at all.
    let unused = TestProxy::start(false).await;
    let url = unused.url();
    let env = proxy_everything(&url);
    let h = start_with_env(SimConfig::demo(), &env, |_| {}).await;
    assert_eq!(h.imds_token(GRAPH, "").await.0, 200);
    assert_eq!(unused.seen.lines(), Vec::<String>::new(), "no proxy used");

    // "env" with NO_PROXY naming Entra's host: direct.
    let bypassed = TestProxy::start(false).await;
    let url = bypassed.url();
    let everything = proxy_everything(&url);
    let env = |name: &str| match name {
        "NO_PROXY" => Some("localhost,127.0.0.1".to_owned()),
        other => everything(other),
    };
    let h = start_with_env(SimConfig::demo(), &env, |raw| {
        raw.upstream.entra_proxy = Some("env".into());
    })
    .await;
    assert_eq!(h.imds_token(GRAPH, "").await.0, 200);
    assert_eq!(
        bypassed.seen.lines(),
        Vec::<String>::new(),
        "NO_PROXY honoured"
    );
}

// One thread, so the thread-local subscriber sees every task (reqwest's and hyper's too).
#[tokio::test(flavor = "current_thread")]
async fn a_refusing_proxy_is_named_without_its_credentials() {
    let (logs, _guard) = LogCapture::install();
    let proxy = TestProxy::start(true).await;
    let url = proxy.url();
    let h = start_with(SimConfig::demo(), |raw| {
        raw.upstream.entra_proxy = Some(url.as_str().into());
    })
    .await;
    let (status, body) = h.imds_token(GRAPH, "").await;
    let text = body.to_string();
    assert_eq!(status, 400, "a refusal is remembered, not retried: {text}");
    assert!(
        text.contains(&format!(
            "Entra could not be reached through the proxy {}",
            proxy.addr
        )),
        "{text}"
    );
    assert!(text.contains("the proxy answered HTTP 403"), "{text}");
    assert!(text.contains("check that the proxy is running"), "{text}");
    assert!(!text.contains(PASSWORD) && !text.contains(USER), "{text}");
    assert!(h.sim.exchanges().is_empty(), "nothing reached Entra");
    let logged = logs.text();
    assert!(
        logged.contains("through the proxy"),
        "the failure was logged: {logged}"
    );
    assert!(
        !logged.contains(PASSWORD),
        "credentials in the logs: {logged}"
    );
    let lines = proxy.seen.lines();
    assert!(
        !lines.is_empty() && !lines.iter().any(|l| l.contains("/metadata/")),
        "{lines:?}"
    );
}

#[tokio::test]
async fn check_shows_each_path_and_a_proxy_that_is_not_there() {
    // A port with nothing behind it.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let url = format!("http://{USER}:{PASSWORD}@{addr}");
    let sim = fedimds_sim::Sim::start(SimConfig::demo(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let daemon: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut raw = fedimds::demo::raw_config(&sim.url(), daemon);
    raw.upstream.entra_proxy = Some(url.as_str().into());
    let config = load(&raw);
    let mut out = Vec::new();
    let passed = fedimds::check::run(&config, &mut out).await;
    // The report wraps long lines: compare with the whitespace collapsed.
    let text = String::from_utf8(out)
        .unwrap()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(!passed, "{text}");
    let sim_host = sim
        .url()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    assert!(
        text.contains(&format!("direct to {sim_host} (never through a proxy)")),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "to {sim_host} through the proxy {addr} (upstream.entra_proxy)"
        )),
        "{text}"
    );
    assert!(text.contains("no connection to the proxy"), "{text}");
    assert!(
        text.contains(&format!("check the proxy at {addr}")),
        "{text}"
    );
    assert!(!text.contains(PASSWORD) && !text.contains(USER), "{text}");
}

#[test]
fn config_output_and_errors_never_show_the_credentials() {
    let url = format!("http://{USER}:{PASSWORD}@127.0.0.1:3128");
    let daemon: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut raw = fedimds::demo::raw_config("http://127.0.0.1:1", daemon);
    raw.upstream.entra_proxy = Some(url.as_str().into());
    let toml = render(&raw);
    let no_env = |_: &str| None;
    let (config, entries) = Config::from_toml_recorded(&toml, "test", &no_env).unwrap();
    let shown = provenance::render(&entries, std::path::Path::new("test.toml"), &Origin::File);
    assert!(shown.contains("entra_proxy"), "{shown}");
    assert!(
        !shown.contains(PASSWORD) && !shown.contains(USER),
        "{shown}"
    );
    let debug = format!("{config:?} {raw:?}");
    assert!(!debug.contains(PASSWORD), "{debug}");

    // From the environment: shown redacted, its origin named.
    let env = |name: &str| (name == "HTTPS_PROXY").then(|| url.clone());
    raw.upstream.entra_proxy = Some("env".into());
    let (_, entries) = Config::from_toml_recorded(&render(&raw), "test", &env).unwrap();
    let shown = provenance::render(&entries, std::path::Path::new("test.toml"), &Origin::File);
    assert!(shown.contains("env HTTPS_PROXY"), "{shown}");
    assert!(!shown.contains(PASSWORD), "{shown}");

    // A bad URL is refused without being quoted.
    for bad in [
        format!("ftp://{USER}:{PASSWORD}@proxy:21"),
        format!("http://{USER}:{PASSWORD}@"),
    ] {
        raw.upstream.entra_proxy = Some(bad.as_str().into());
        let err = Config::from_toml(&render(&raw), "test", &no_env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("upstream.entra_proxy"), "{err}");
        assert!(err.contains("http:// or https:// proxy URL"), "{err}");
        assert!(!err.contains(PASSWORD), "{err}");
    }
}
