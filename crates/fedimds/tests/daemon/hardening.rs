//! The smaller doors: what an upstream sends is bounded, the admin listener checks Host, and
//! nothing a caller sends reaches a log line raw.

use fedimds_sim::fault::{Fault, Route};

use crate::support::*;

#[tokio::test]
async fn an_oversized_upstream_answer_is_refused_not_read() {
    let h = start().await;
    // Two answers, each 2 MiB larger than any token answer (the exchange's one retry sees
    // the second).
    h.sim
        .push_fault(Route::Entra, Fault::padded(2 * 1024 * 1024).times(8));
    let (status, body) = h.imds_token(GRAPH, "").await;
    assert_ne!(status, 200, "{body}");
    let text = body.to_string();
    assert!(text.contains("larger than 1048576 bytes"), "{text}");
}

#[tokio::test]
async fn a_token_too_short_lived_to_serve_is_a_remembered_failure() {
    let h = start().await;
    h.sim
        .push_fault(Route::Entra, Fault::expires_in(0).forever());
    for _ in 0..5 {
        let (status, body) = h.imds_token(GRAPH, "").await;
        assert_ne!(status, 200, "{body}");
        assert!(
            body.to_string().contains("expires_in of at least 60 s"),
            "{body}"
        );
    }
    // One exchange (and its one retry inside the fetch), not one per request.
    let calls = h.sim.counters().entra;
    assert!(calls <= 4, "{calls} Entra calls for 5 requests");
}

#[tokio::test]
async fn the_admin_listener_refuses_a_rebinding_host() {
    let h = start().await;
    let get = |host: &'static str| {
        let (http, url) = (h.http.clone(), h.admin_url.clone());
        async move {
            http.get(format!("{url}/metrics"))
                .header("Host", host)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(get("rebind.evil.example:8182").await, 403);
    // Loopback names and addresses (the kubelet probes with the pod's IP) are fine.
    assert_eq!(get("localhost:8182").await, 200);
    assert_eq!(get("10.244.1.7:8182").await, 200);
}

#[tokio::test]
async fn the_token_listener_refuses_hosts_that_are_not_one_clear_name() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let h = start().await;
    let addr = h.url.trim_start_matches("http://").to_owned();
    let path = format!("/metadata/identity/oauth2/token?api-version=2018-02-01&resource={GRAPH}");
    let mut not_text = format!("GET {path} HTTP/1.1\r\nHost: localhost").into_bytes();
    not_text.push(0xff);
    not_text.extend_from_slice(b"\r\nMetadata: true\r\n\r\n");
    let heads = [
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nHost: evil.example\r\nMetadata: true\r\n\r\n").into_bytes(),
        format!("GET {path} HTTP/1.1\r\nMetadata: true\r\n\r\n").into_bytes(),
        format!("GET {path} HTTP/1.1\r\nHost: [::1].evil.example\r\nMetadata: true\r\n\r\n").into_bytes(),
        not_text,
    ];
    for head in heads {
        let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        stream.write_all(&head).await.unwrap();
        let mut buf = vec![0u8; 8192];
        let n = stream.read(&mut buf).await.unwrap();
        let answer = String::from_utf8_lossy(&buf[..n]);
        let status = answer.lines().next().unwrap_or_default();
        assert!(
            status.contains(" 403 ") || status.contains(" 400 "),
            "{status}"
        );
        assert!(!answer.contains("access_token"), "{answer}");
    }
}
