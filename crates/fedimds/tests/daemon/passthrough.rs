//! The rest of IMDS, forwarded: what the simulator's IMDS sends comes back byte for byte, with
//! nothing added on the way there; IMDS's own rules hold first; identity paths, and paths that
//! could mean them, are never forwarded; a real IMDS that is down or slow gives a quick 5xx and
//! never holds a token request.

use std::time::Duration;

use fedimds::config::raw::RawImds;
use fedimds_sim::fault::{Fault, Route};
use fedimds_sim::SimConfig;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::time::Instant;

use crate::support::*;

/// The demo daemon with passthrough on, forwarding to the simulator.
async fn start_passthrough() -> Harness {
    start_with(SimConfig::demo(), |raw| {
        raw.imds = RawImds {
            passthrough: Some(true),
            upstream: raw.source.endpoint.clone(),
        }
    })
    .await
}

/// Status, Content-Type, Server and body bytes of a GET with `Metadata: true`.
async fn get(http: &reqwest::Client, url: &str) -> (u16, String, String, Vec<u8>) {
    let r = http
        .get(url)
        .header("Metadata", "true")
        .send()
        .await
        .unwrap();
    let header = |name: &str| {
        r.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    let (content_type, server) = (header("content-type"), header("server"));
    let status = r.status().as_u16();
    (
        status,
        content_type,
        server,
        r.bytes().await.unwrap().to_vec(),
    )
}

/// The paths an app on a captured host asks for, JSON and text.
const PATHS: [&str; 9] = [
    "/metadata/instance?api-version=2021-02-01",
    "/metadata/instance/compute?api-version=2021-02-01&format=json",
    // azcopy's VM-size query.
    "/metadata/instance/compute/vmSize?api-version=2019-03-11&format=text",
    "/metadata/instance/network/interface/0/ipv4/ipAddress/0/privateIpAddress?api-version=2021-02-01&format=text",
    "/metadata/attested/document?api-version=2020-09-01&nonce=1234567890",
    "/metadata/scheduledevents?api-version=2020-07-01",
    "/metadata/versions",
    "/metadata/loadbalancer?api-version=2020-10-01",
    // IMDS's own errors come back as IMDS sent them too.
    "/metadata/instance/compute/noSuchLeaf?api-version=2021-02-01",
];

#[tokio::test]
async fn json_and_text_come_back_as_the_real_imds_sent_them() {
    let h = start_passthrough().await;
    for path in PATHS {
        let direct = get(&h.http, &format!("{}{path}", h.sim.url())).await;
        let forwarded = get(&h.http, &format!("{}{path}", h.url)).await;
        assert_eq!(forwarded, direct, "{path}");
        assert_eq!(forwarded.2, fedimds_sim::METADATA_SERVER, "{path}");
        let expected = if path.contains("noSuchLeaf") {
            404
        } else {
            200
        };
        assert_eq!(forwarded.0, expected, "{path}");
    }
    // The simulator saw each path and query exactly as the caller sent it.
    let targets: Vec<String> = h
        .sim
        .metadata_requests()
        .into_iter()
        .map(|r| r.target)
        .collect();
    for path in PATHS {
        assert_eq!(targets.iter().filter(|t| *t == path).count(), 2, "{path}");
    }
    let (_, content_type, _, body) = get(&h.http, &format!("{}{}", h.url, PATHS[2])).await;
    assert_eq!(body, b"Standard_D2s_v5");
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    // Counted per path class and status.
    let metrics = h.metrics().await;
    for line in [
        r#"fedimds_passthrough_requests_total{class="instance",status="200"} 5"#,
        r#"fedimds_passthrough_requests_total{class="instance",status="404"} 1"#,
        r#"fedimds_passthrough_requests_total{class="scheduledevents",status="200"} 1"#,
        r#"fedimds_passthrough_requests_total{class="versions",status="200"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
}

#[tokio::test]
async fn a_forwarded_request_adds_no_header_and_keeps_only_what_imds_reads() {
    let h = start_passthrough().await;
    let r = h
        .http
        .get(format!("{}{}", h.url, PATHS[0]))
        .header("Metadata", "true")
        .header("User-Agent", "azsdk-python-identity/1.27.0")
        .header("X-Ms-Client-Request-Id", "d0f6a1c4")
        .header("Accept", "application/json")
        .header("Cookie", "session=1")
        .header("X-IDENTITY-HEADER", "not for IMDS")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let records = h.sim.metadata_requests();
    let [record] = records.as_slice() else {
        panic!("one request forwarded: {records:?}")
    };
    assert_eq!(record.method, "GET");
    let names: Vec<&str> = record.headers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["host", "metadata"], "{:?}", record.headers);
    let upstream = h.sim.url();
    let host = upstream.trim_start_matches("http://").trim_end_matches('/');
    assert_eq!(record.headers[0].1, host.as_bytes());
    assert_eq!(record.headers[1].1, b"true");
    assert!(record.body.is_empty());
}

#[tokio::test]
async fn scheduled_events_are_read_and_started_through_the_passthrough() {
    let dir = temp_dir("passthrough-audit");
    let audit = dir.join("audit.jsonl");
    let audit_path = audit.display().to_string();
    let h = start_with(SimConfig::demo(), |raw| {
        raw.imds = RawImds {
            passthrough: Some(true),
            upstream: raw.source.endpoint.clone(),
        };
        raw.audit.path = Some(audit_path);
    })
    .await;
    let url = format!("{}/metadata/scheduledevents?api-version=2020-07-01", h.url);
    let (status, _, _, body) = get(&h.http, &url).await;
    assert_eq!(status, 200);
    let document: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(document["DocumentIncarnation"], 1);
    let id = document["Events"][0]["EventId"]
        .as_str()
        .unwrap()
        .to_owned();
    let start = serde_json::json!({"StartRequests": [{"EventId": id}]}).to_string();
    let r = h
        .http
        .post(&url)
        .header("Metadata", "true")
        .header("Content-Type", "application/json")
        .body(start.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let (_, _, _, body) = get(&h.http, &url).await;
    let document: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(document["DocumentIncarnation"], 2);
    assert_eq!(document["Events"], serde_json::json!([]));
    // The POST arrived with its body and only the headers IMDS reads.
    let post = h
        .sim
        .metadata_requests()
        .into_iter()
        .find(|r| r.method == "POST")
        .expect("the POST was forwarded");
    assert_eq!(post.body, start.as_bytes());
    let mut names: Vec<&str> = post.headers.iter().map(|(n, _)| n.as_str()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["content-length", "content-type", "host", "metadata"],
        "{:?}",
        post.headers
    );
    // Other paths take no POST, and scheduled events take no other method: IMDS's 405.
    for (method, path) in [
        (
            reqwest::Method::POST,
            "/metadata/instance?api-version=2021-02-01",
        ),
        (
            reqwest::Method::PUT,
            "/metadata/scheduledevents?api-version=2020-07-01",
        ),
        (
            reqwest::Method::DELETE,
            "/metadata/scheduledevents?api-version=2020-07-01",
        ),
    ] {
        let r = h
            .http
            .request(method.clone(), format!("{}{path}", h.url))
            .header("Metadata", "true")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 405, "{method} {path}");
    }
    // GET, POST, GET: the 405s were never sent.
    assert_eq!(h.sim.metadata_requests().len(), 3);
    // Each forwarded request has its audit line, with its path and status, never its body.
    let mut lines = Vec::new();
    for _ in 0..200 {
        lines = std::fs::read_to_string(&audit)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .collect::<Vec<_>>();
        if lines.len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let forwarded: Vec<_> = lines.iter().filter(|l| l["event"] == "forwarded").collect();
    assert_eq!(forwarded.len(), 3, "{lines:?}");
    for line in forwarded {
        assert_eq!(line["dialect"], "imds-passthrough");
        assert_eq!(line["path"], "/metadata/scheduledevents");
        assert_eq!(line["status"], 200);
    }
    let text = std::fs::read_to_string(&audit).unwrap();
    assert!(
        !text.contains(&id) && !text.contains("StartRequests"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn imds_s_own_rules_come_first_and_nothing_is_sent() {
    let h = start_passthrough().await;
    let url = format!("{}{}", h.url, PATHS[0]);
    // No Metadata header: IMDS's own 400.
    let r = h.http.get(&url).send().await.unwrap();
    let (status, body) = status_json(r).await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        serde_json::json!({"error":"invalid_request","error_description":"Required metadata header not specified"})
    );
    // What a proxy or a browser sends: the door's 400.
    for (name, value) in [
        ("X-Forwarded-For", "10.0.0.1"),
        ("Forwarded", "for=10.0.0.1"),
        ("Origin", "https://evil.example"),
        ("Sec-Fetch-Site", "cross-site"),
    ] {
        let r = h
            .http
            .get(&url)
            .header("Metadata", "true")
            .header(name, value)
            .send()
            .await
            .unwrap();
        let (status, body) = status_json(r).await;
        assert_eq!(status, 400, "{name}: {body}");
        assert!(
            body["error_description"].as_str().unwrap().contains(name),
            "{body}"
        );
    }
    // A foreign Host (DNS rebinding): refused as on the token path.
    let r = h
        .http
        .get(&url)
        .header("Metadata", "true")
        .header("Host", "rebind.evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    assert!(h.sim.metadata_requests().is_empty());
}

#[tokio::test]
async fn passthrough_off_gives_imds_s_not_found_and_sends_nothing() {
    let h = start().await;
    for path in PATHS {
        let r = h
            .http
            .get(format!("{}{path}", h.url))
            .header("Metadata", "true")
            .send()
            .await
            .unwrap();
        let (status, body) = status_json(r).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert_eq!(body["error"], "not_found", "{body}");
        assert!(
            body["error_description"]
                .as_str()
                .unwrap()
                .contains("[imds] passthrough"),
            "{body}"
        );
    }
    assert!(h.sim.metadata_requests().is_empty());
    assert_eq!(h.sim.counters().metadata, 0);
}

#[tokio::test]
async fn identity_paths_and_paths_that_could_mean_them_are_never_forwarded() {
    let h = start_passthrough().await;
    let addr = h.url.trim_start_matches("http://").to_owned();
    // Sent by hand: an HTTP client would resolve the dot segments itself.
    for target in [
        "/metadata/identity/getplatformmetadata?cred-api-version=2.0",
        "/metadata/identity/issuecredential?cred-api-version=2.0",
        "/metadata/Identity/oauth2/token?api-version=2018-02-01&resource=https://vault.azure.net",
        "/metadata/instance/../identity/oauth2/token?api-version=2018-02-01&resource=https://vault.azure.net",
        "/metadata/%69dentity/oauth2/token?api-version=2018-02-01&resource=https://vault.azure.net",
        "/metadata//identity/oauth2/token?api-version=2018-02-01&resource=https://vault.azure.net",
    ] {
        let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let head = format!(
            "GET {target} HTTP/1.1\r\nHost: 169.254.169.254\r\nMetadata: true\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 404 "), "{target}: {answer}");
        assert!(!answer.contains("access_token"), "{target}: {answer}");
    }
    assert!(h.sim.metadata_requests().is_empty());
    assert_eq!(
        h.sim.counters().imds,
        0,
        "the home token path was never asked"
    );
}

#[tokio::test]
async fn a_real_imds_that_is_down_gives_a_quick_imds_shaped_5xx() {
    // A port on loopback that nothing listens on.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let h = start_with(SimConfig::demo(), |raw| {
        raw.imds = RawImds {
            passthrough: Some(true),
            upstream: Some(format!("http://{closed}")),
        }
    })
    .await;
    let started = Instant::now();
    let r = h
        .http
        .get(format!("{}{}", h.url, PATHS[2]))
        .header("Metadata", "true")
        .send()
        .await
        .unwrap();
    let (status, body) = status_json(r).await;
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"], "bad_gateway");
    let message = body["error_description"].as_str().unwrap();
    assert!(
        message.contains("[imds] upstream") && message.contains(&closed.to_string()),
        "{message}"
    );
    // Token requests are untouched.
    assert_eq!(h.imds_token(GRAPH, "").await.0, 200);
}

#[tokio::test(start_paused = true)]
async fn a_slow_real_imds_gives_a_5xx_in_time_and_never_holds_a_token_request() {
    let h = start_passthrough().await;
    h.sim.push_fault(
        Route::Metadata,
        Fault::slow(Duration::from_secs(600)).forever(),
    );
    let started = Instant::now();
    let slow = (0..fedimds::config::PASSTHROUGH_MAX_IN_FLIGHT)
        .map(|_| {
            let (http, url) = (h.http.clone(), format!("{}{}", h.url, PATHS[0]));
            tokio::spawn(async move {
                let r = http
                    .get(url)
                    .header("Metadata", "true")
                    .send()
                    .await
                    .unwrap();
                (r.status().as_u16(), Instant::now())
            })
        })
        .collect::<Vec<_>>();
    // Every slot is taken once the simulator holds them all (within a bounded wait, so a
    // daemon that answers them otherwise fails here rather than hangs).
    for _ in 0..100 {
        if h.sim.metadata_requests().len() >= fedimds::config::PASSTHROUGH_MAX_IN_FLIGHT {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        h.sim.metadata_requests().len(),
        fedimds::config::PASSTHROUGH_MAX_IN_FLIGHT
    );
    // One more gets a 503 at once, with Retry-After: the bound is the passthrough's own.
    let r = h
        .http
        .get(format!("{}{}", h.url, PATHS[0]))
        .header("Metadata", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    assert!(r.headers().contains_key("retry-after"));
    // A token request is served meanwhile, without waiting on any of them.
    let (status, body) = h.imds_token(GRAPH, "").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    // The slow ones end at the request timeout, with IMDS's shape, not the simulator's 600 s.
    for task in slow {
        let (status, at) = task.await.unwrap();
        assert_eq!(status, 504);
        let took = at - started;
        assert!(
            took >= fedimds::config::PASSTHROUGH_REQUEST_TIMEOUT
                && took < fedimds::config::PASSTHROUGH_REQUEST_TIMEOUT + Duration::from_secs(1),
            "{took:?}"
        );
    }
}

#[tokio::test]
async fn the_passthrough_never_goes_through_a_proxy_whatever_the_environment_says() {
    // A "proxy" that would take any connection: it must get none. The real binary runs with
    // every proxy variable a client library reads pointing at it.
    let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_url = format!("http://{}", proxy.local_addr().unwrap());
    let sim = fedimds_sim::Sim::start(SimConfig::demo(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut raw =
        fedimds::demo::raw_config(&sim.url(), format!("127.0.0.1:{port}").parse().unwrap());
    raw.admin.listen = Some("off".into());
    raw.imds = RawImds {
        passthrough: Some(true),
        upstream: Some(sim.url()),
    };
    let dir = temp_dir("passthrough-proxy");
    let path = dir.join("fedimds.toml");
    std::fs::write(&path, render(&raw)).unwrap();
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_fedimds"));
    command
        .args(["serve", "--config"])
        .arg(&path)
        .env("FEDIMDS_LOG", "warn")
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .kill_on_drop(true);
    for name in [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        command.env(name, &proxy_url);
    }
    let _child = command.spawn().unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let direct = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut up = false;
    for _ in 0..100 {
        if direct.get(format!("{url}/healthz")).send().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "the daemon did not come up");
    let (status, _, _, body) = get(&direct, &format!("{url}{}", PATHS[2])).await;
    assert_eq!(
        (status, body.as_slice()),
        (200, b"Standard_D2s_v5".as_slice())
    );
    assert_eq!(sim.metadata_requests().len(), 1);
    let accepted = tokio::time::timeout(Duration::from_millis(100), proxy.accept()).await;
    assert!(accepted.is_err(), "the proxy was connected to");
    let _ = std::fs::remove_dir_all(dir);
}
