//! The baseline: the fastest plausible answer a localhost token endpoint could give on the same
//! HTTP stack as fedimds (axum 0.8 over hyper 1, tokio's default multi-thread runtime). It checks
//! one header, `Metadata: true`, and returns a fixed JSON body with the same headers as
//! fedimds's 200 (`Content-Type`, `Cache-Control: no-store`).
//!
//! `baseline --listen 127.0.0.1:0 --body FILE`; prints `listening on ADDR` once bound.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

#[tokio::main]
async fn main() {
    let mut listen: SocketAddr = ([127, 0, 0, 1], 0).into();
    let mut body_file = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => {
                listen = args
                    .next()
                    .and_then(|a| a.parse().ok())
                    .expect("--listen ADDR")
            }
            "--body" => body_file = args.next(),
            other => panic!("baseline: unknown argument {other}"),
        }
    }
    let body = std::fs::read(body_file.expect("--body FILE")).expect("the body file is readable");
    let body = Arc::new(Bytes::from(body));
    let app = Router::new()
        .route("/metadata/identity/oauth2/token", get(token))
        .with_state(body);
    let listener = tokio::net::TcpListener::bind(listen).await.expect("bind");
    println!(
        "listening on {}",
        listener.local_addr().expect("local addr")
    );
    axum::serve(listener, app).await.expect("serve");
}

async fn token(State(body): State<Arc<Bytes>>, headers: HeaderMap) -> Response {
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
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        Bytes::clone(&body),
    )
        .into_response()
}
