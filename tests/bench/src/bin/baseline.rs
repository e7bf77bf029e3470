//! The baseline: the fastest plausible answer a localhost token endpoint could give on the same
//! HTTP stack as fedimds (axum 0.8 over hyper 1, tokio's default multi-thread runtime). It makes
//! the one check of the dialect it serves and returns a fixed JSON body with the same headers as
//! fedimds's 200 (`Content-Type`, `Cache-Control: no-store`):
//!
//! - `imds` (the default): `GET /metadata/identity/oauth2/token` with `Metadata: true`, else 400;
//! - `app-service`: `GET /msi/token` with `X-IDENTITY-HEADER` equal to the secret, else 401;
//! - `service-fabric`: `GET /metadata/identity/oauth2/token` over TLS with the `secret` header
//!   equal to the secret, else 401. TLS is the daemon's own (crates/fedimds/src/http/tls.rs):
//!   tokio-rustls on ring, safe default protocol versions, ALPN `http/1.1`, the certificate
//!   and key from PEM files; each connection's handshake in its own task, as fedimds's
//!   listener makes it (crates/fedimds/src/http/listener.rs).
//!
//! The secret is compared in constant time on equal lengths, as fedimds's `Secret::matches`
//! does (crates/fedimds/src/token.rs), so the check costs what the daemon's costs.
//!
//! `baseline --listen 127.0.0.1:0 --body FILE [--dialect imds|app-service|service-fabric]
//! [--secret-file FILE] [--cert PEM --key PEM]`; prints `listening on ADDR` once bound.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;

/// What every answer is made from.
struct Answer {
    body: Bytes,
    /// The secret of the App Service and Service Fabric checks.
    secret: Vec<u8>,
}

#[tokio::main]
async fn main() {
    let mut listen: SocketAddr = ([127, 0, 0, 1], 0).into();
    let mut dialect = "imds".to_owned();
    let (mut body_file, mut secret_file, mut cert, mut key) = (None, None, None, None);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = &mut || args.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--listen" => listen = value().parse().expect("--listen ADDR"),
            "--body" => body_file = Some(value()),
            "--dialect" => dialect = value(),
            "--secret-file" => secret_file = Some(value()),
            "--cert" => cert = Some(value()),
            "--key" => key = Some(value()),
            other => panic!("baseline: unknown argument {other}"),
        }
    }
    let body = std::fs::read(body_file.expect("--body FILE")).expect("the body file is readable");
    let secret = secret_file
        .map(|f| std::fs::read(f).expect("the secret file is readable"))
        .unwrap_or_default();
    let needs_secret = dialect != "imds";
    assert!(
        !needs_secret || !secret.is_empty(),
        "--dialect {dialect} needs --secret-file"
    );
    let state = Arc::new(Answer {
        body: Bytes::from(body),
        secret,
    });
    let router = match dialect.as_str() {
        "imds" => Router::new().route("/metadata/identity/oauth2/token", get(imds)),
        "app-service" => Router::new().route("/msi/token", get(app_service)),
        "service-fabric" => Router::new().route("/metadata/identity/oauth2/token", get(fabric)),
        other => panic!("baseline: unknown dialect {other}"),
    }
    .with_state(state);
    let listener = tokio::net::TcpListener::bind(listen).await.expect("bind");
    println!(
        "listening on {}",
        listener.local_addr().expect("local addr")
    );
    if dialect == "service-fabric" {
        let acceptor = acceptor(
            &cert.expect("--cert PEM for service-fabric"),
            &key.expect("--key PEM for service-fabric"),
        );
        serve_tls(listener, acceptor, router).await;
    } else {
        axum::serve(listener, router).await.expect("serve");
    }
}

/// The daemon's TLS server settings (crates/fedimds/src/http/tls.rs, `ServerCert::new`).
fn acceptor(cert: &str, key: &str) -> TlsAcceptor {
    let chain = CertificateDer::pem_file_iter(cert)
        .expect("the certificate file is readable")
        .collect::<Result<Vec<_>, _>>()
        .expect("PEM certificates");
    let key = PrivateKeyDer::from_pem_file(key).expect("a PEM private key");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("the certificate and key serve TLS");
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsAcceptor::from(Arc::new(tls))
}

/// Accepts connections (with `TCP_NODELAY`, as fedimds's listener sets it), each served in a
/// task of its own: the TLS handshake, then hyper's HTTP/1.1 with keep-alive.
async fn serve_tls(listener: tokio::net::TcpListener, acceptor: TlsAcceptor, router: Router) {
    let http = hyper::server::conn::http1::Builder::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (acceptor, router, http) = (acceptor.clone(), router.clone(), http.clone());
        tokio::spawn(async move {
            let Ok(stream) = acceptor.accept(stream).await else {
                return;
            };
            let service = TowerToHyperService::new(router);
            let _ = http.serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

async fn imds(State(answer): State<Arc<Answer>>, headers: HeaderMap) -> Response {
    let metadata = headers
        .get("metadata")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    if !metadata {
        return (
            StatusCode::BAD_REQUEST,
            "Required metadata header not specified",
        )
            .into_response();
    }
    ok(&answer)
}

async fn app_service(State(answer): State<Arc<Answer>>, headers: HeaderMap) -> Response {
    secret_checked(&answer, &headers, "x-identity-header")
}

async fn fabric(State(answer): State<Arc<Answer>>, headers: HeaderMap) -> Response {
    secret_checked(&answer, &headers, "secret")
}

/// The body when header `name` holds the secret, else 401.
fn secret_checked(answer: &Answer, headers: &HeaderMap, name: &str) -> Response {
    use subtle::ConstantTimeEq as _;
    let known = headers.get(name).is_some_and(|v| {
        let presented = v.as_bytes();
        presented.len() == answer.secret.len() && bool::from(presented.ct_eq(&answer.secret))
    });
    if !known {
        return (StatusCode::UNAUTHORIZED, "unknown secret").into_response();
    }
    ok(answer)
}

fn ok(answer: &Answer) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        Bytes::clone(&answer.body),
    )
        .into_response()
}
