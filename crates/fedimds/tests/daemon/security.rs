//! Let no one in where they don't belong: each refusal gets its answer and no token.

use std::time::Duration;

use fedimds_sim::SimConfig;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::support::*;

const SECRET_A: &str = "secret-of-app-a-0123456789";
const SECRET_B: &str = "secret-of-app-b-0123456789";

/// Two callers told apart by their secrets: app-a may have litware, app-b contoso for Graph.
fn with_callers(raw: &mut RawConfig) {
    raw.callers.push(RawCaller {
        name: Some("app-a".into()),
        secret: Some(SECRET_A.into()),
        targets: strings(&["litware"]),
        ..RawCaller::default()
    });
    raw.callers.push(RawCaller {
        name: Some("app-b".into()),
        secret: Some(SECRET_B.into()),
        targets: strings(&["contoso"]),
        resources: strings(&["https://graph.microsoft.com"]),
        ..RawCaller::default()
    });
}

/// The caller named `name`, which the config must have.
fn caller<'r>(raw: &'r mut RawConfig, name: &str) -> &'r mut RawCaller {
    raw.callers
        .iter_mut()
        .find(|c| c.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("the config has no caller {name:?}"))
}

async fn msi(h: &Harness, prefix: &str, resource: &str, secret: &str) -> (u16, serde_json::Value) {
    let r = h
        .http
        .get(format!(
            "{}{prefix}/msi/token?api-version=2019-08-01&resource={resource}",
            h.url
        ))
        .header("X-IDENTITY-HEADER", secret)
        .send()
        .await
        .unwrap();
    status_json(r).await
}

fn no_token(body: &serde_json::Value) {
    assert!(
        body.get("access_token").is_none(),
        "no token in a refusal: {body}"
    );
}

#[tokio::test]
async fn a_foreign_host_header_is_refused() {
    let h = start().await;
    for host in ["evil.example", "attacker.example:8181", "10.0.0.9"] {
        let r = h.imds_request().header("Host", host).send().await.unwrap();
        let (status, body) = status_json(r).await;
        assert_eq!(status, 403, "{host}: {body}");
        assert!(
            body["error_description"].as_str().unwrap().contains("Host"),
            "{body}"
        );
        no_token(&body);
    }
    // Names a capture or an SDK uses pass.
    for host in ["169.254.169.254", "localhost:8181", "127.0.0.1"] {
        let r = h.imds_request().header("Host", host).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "{host}");
    }
}

#[tokio::test]
async fn callers_get_only_their_grant() {
    let h = start_with(SimConfig::demo(), with_callers).await;
    // A: litware only.
    let (status, body) = msi(&h, "", GRAPH, SECRET_A).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        claims(body["access_token"].as_str().unwrap())["tid"],
        demo::TARGET_TENANT
    );
    let (status, body) = msi(&h, "/targets/contoso", GRAPH, SECRET_A).await;
    assert_eq!(
        status, 403,
        "caller A cannot obtain caller B's target: {body}"
    );
    assert!(
        body["message"].as_str().unwrap().contains("app-a"),
        "{body}"
    );
    no_token(&body);
    // B: contoso, graph only.
    let (status, body) = msi(&h, "/targets/contoso", GRAPH, SECRET_B).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        claims(body["access_token"].as_str().unwrap())["tid"],
        demo::OTHER_TARGET_TENANT
    );
    let (status, body) = msi(&h, "/targets/contoso", "https://vault.azure.net", SECRET_B).await;
    assert_eq!(status, 403, "{body}");
    no_token(&body);
    let (status, body) = msi(&h, "", GRAPH, SECRET_B).await;
    assert_eq!(
        status, 403,
        "B cannot use the default target litware: {body}"
    );
    // The shared identity header is not a caller: with rules configured, unknown callers are denied.
    let (status, body) = msi(&h, "", GRAPH, h.app.identity_header().expose()).await;
    assert_eq!(status, 403, "{body}");
    // IMDS requests carry no secret: no rule matches, denied.
    let (status, body) = h.imds_token(GRAPH, "").await;
    assert_eq!(status, 403, "{body}");
    no_token(&body);
    // A wrong secret is not even an App Service caller.
    let (status, _) = msi(&h, "", GRAPH, "wrong-secret-0123456789").await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn a_caller_over_its_rate_gets_429_with_retry_after() {
    let h = start_with(SimConfig::demo(), |raw| {
        with_callers(raw);
        caller(raw, "app-b").rate = Some(2.0);
    })
    .await;
    let mut limited = None;
    for _ in 0..5 {
        let r = h
            .http
            .get(format!(
                "{}/targets/contoso/msi/token?api-version=2019-08-01&resource={GRAPH}",
                h.url
            ))
            .header("X-IDENTITY-HEADER", SECRET_B)
            .send()
            .await
            .unwrap();
        if r.status().as_u16() == 429 {
            limited = Some(r);
            break;
        }
    }
    let r = limited.expect("the fifth request within a second is over rate = 2");
    assert!(r.headers().contains_key("retry-after"));
    let (_, body) = status_json(r).await;
    no_token(&body);
}

#[tokio::test]
async fn a_remote_listener_needs_the_secret_on_every_request() {
    let h = start_with(SimConfig::demo(), |raw| {
        raw.server.allow_remote = Some(true);
        raw.server.identity_header = Some("remote-secret-0123456789".into());
        let listen = raw.server.listen.as_mut().expect("the demo sets listen");
        *listen = listen
            .strip_prefix("127.0.0.1:")
            .map(|port| format!("0.0.0.0:{port}"))
            .unwrap_or_else(|| panic!("the demo listens on 127.0.0.1, not {listen}"));
    })
    .await;
    let (status, body) = h.imds_token(GRAPH, "").await;
    assert_eq!(
        status, 401,
        "IMDS without the secret on a remote listener: {body}"
    );
    no_token(&body);
    let r = h
        .imds_request()
        .header("X-IDENTITY-HEADER", "remote-secret-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
}

#[tokio::test]
async fn oversize_headers_are_refused() {
    let h = start().await;
    let r = h
        .imds_request()
        .header("X-Padding", "x".repeat(64 * 1024))
        .send()
        .await;
    match r {
        Ok(r) => {
            assert_eq!(r.status().as_u16(), 431);
            assert!(!r.text().await.unwrap().contains("access_token"));
        }
        // hyper may close the connection before the client finished sending.
        Err(e) => assert!(e.is_request() || e.is_body() || e.is_connect(), "{e}"),
    }
    assert_eq!(h.sim.counters().entra, 0);
}

#[tokio::test]
async fn a_slow_sender_is_dropped() {
    let h = start_with(SimConfig::demo(), |raw| {
        raw.server.header_read_timeout = Some(Duration::from_millis(300).into());
    })
    .await;
    let addr = h.url.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    stream
        .write_all(b"GET /metadata/identity/oauth2/token?api-version=2018-02-01&resource=x HTTP/1.1\r\nHost: localhost\r\nMetadata: true\r\n")
        .await
        .unwrap();
    // ...and never finishes the head. The daemon must hang up on its own.
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buf)).await;
    let _ = read.expect("the daemon closed the connection within the header-read timeout");
    assert!(!String::from_utf8_lossy(&buf).contains("access_token"));
}

async fn curl_unix(
    socket: &std::path::Path,
    path: &str,
    as_nobody: bool,
) -> (u16, serde_json::Value) {
    let socket = socket.to_string_lossy();
    curl(
        &["--unix-socket", &socket, &format!("http://localhost{path}")],
        as_nobody,
    )
    .await
}

/// curl with `Metadata: true` and `args`, as this user or (with `as_nobody`) as uid 65534:
/// the status and the JSON body.
async fn curl(args: &[&str], as_nobody: bool) -> (u16, serde_json::Value) {
    let mut cmd = if as_nobody {
        let mut c = tokio::process::Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "curl"]);
        c
    } else {
        tokio::process::Command::new("curl")
    };
    let out = cmd
        .args(["-s", "-w", "\n%{http_code}", "-H", "Metadata: true"])
        .args(args)
        .output()
        .await
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (
        code.trim().parse().unwrap_or(0),
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

#[tokio::test]
async fn unix_socket_callers_are_told_apart_by_uid() {
    let dir = temp_dir("uds");
    let socket = dir.join("fedimds.sock");
    let h = start_with(SimConfig::demo(), |raw| {
        raw.server.unix_socket = Some(socket.clone());
        raw.server.unix_socket_mode = Some(0o666);
        raw.callers.push(RawCaller {
            name: Some("root".into()),
            uid: Some(0),
            targets: strings(&["litware"]),
            ..RawCaller::default()
        });
        raw.callers.push(RawCaller {
            name: Some("nobody".into()),
            uid: Some(65534),
            targets: strings(&["contoso"]),
            ..RawCaller::default()
        });
    })
    .await;
    let litware =
        format!("/metadata/identity/oauth2/token?api-version=2018-02-01&resource={GRAPH}");
    let contoso = format!("/targets/contoso{litware}");
    let (status, body) = curl_unix(&socket, &litware, false).await;
    assert_eq!(status, 200, "uid 0 gets litware: {body}");
    assert_eq!(
        claims(body["access_token"].as_str().unwrap())["tid"],
        demo::TARGET_TENANT
    );
    let (status, body) = curl_unix(&socket, &contoso, false).await;
    assert_eq!(status, 403, "uid 0 may not have contoso: {body}");
    let (status, body) = curl_unix(&socket, &contoso, true).await;
    assert_eq!(status, 200, "uid 65534 gets contoso: {body}");
    assert_eq!(
        claims(body["access_token"].as_str().unwrap())["tid"],
        demo::OTHER_TARGET_TENANT
    );
    let (status, body) = curl_unix(&socket, &litware, true).await;
    assert_eq!(status, 403, "uid 65534 may not have litware: {body}");
    // Over TCP on this host the kernel knows the uid too: the same rules hold.
    let (status, body) = h.imds_token(GRAPH, "").await;
    assert_eq!(status, 200, "uid 0 gets litware over TCP: {body}");
    assert_eq!(
        claims(body["access_token"].as_str().unwrap())["tid"],
        demo::TARGET_TENANT
    );
    assert_eq!(h.imds(&format!("/targets/contoso{litware}")).await.0, 403);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_generated_secret_is_written_0600_and_is_long() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = temp_dir("secret-file");
    let file = dir.join("identity-header");
    std::fs::write(&file, "old contents, world-readable").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let h = start_with(SimConfig::demo(), |raw| {
        raw.server.identity_header_file = Some(file.clone());
    })
    .await;
    let written = std::fs::read_to_string(&file).unwrap();
    assert_eq!(written, h.app.identity_header().expose());
    assert!(
        written.len() >= 32 && written.chars().all(|c| c.is_ascii_hexdigit()),
        "at least 128 bits, hex"
    );
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let (status, _) = msi(&h, "", GRAPH, &written).await;
    assert_eq!(
        status, 200,
        "the file's secret is the one the endpoint checks"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn an_oversize_form_body_is_refused() {
    let h = start().await;
    let r = h
        .http
        .post(format!("{}/msi/token", h.url))
        .header("X-IDENTITY-HEADER", h.app.identity_header().expose())
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(format!("resource={GRAPH}&pad={}", "x".repeat(64 * 1024)))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("larger than"), "{text}");
    assert_eq!(h.sim.counters().entra, 0);
}

#[tokio::test]
async fn connections_past_the_cap_wait_their_turn() {
    let h = start_with(SimConfig::demo(), |raw| {
        raw.server.max_connections = Some(1);
    })
    .await;
    let addr = h.url.trim_start_matches("http://").to_owned();
    // One idle connection takes the only place.
    let hog = tokio::net::TcpStream::connect(&addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let request = {
        let http = h.http.clone();
        let url = h.url.clone();
        tokio::spawn(async move {
            http.get(format!("{url}/healthz"))
                .send()
                .await
                .map(|r| r.status().as_u16())
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !request.is_finished(),
        "a second connection is not served while the cap is reached"
    );
    drop(hog);
    let status = tokio::time::timeout(Duration::from_secs(5), request)
        .await
        .expect("served once the place is free");
    assert_eq!(status.unwrap().unwrap(), 200);
}

#[tokio::test]
async fn an_arc_client_is_charged_once_per_request() {
    let dir = temp_dir("arc-rate");
    let h = start_with(SimConfig::demo(), |raw| {
        raw.server.arc_key_dir = Some(dir.clone());
        // Prefetched, so the three requests below are cache hits: quick, well within the half
        // second in which a rate of 2 refills one request.
        target(raw, "litware").prefetch = strings(&[GRAPH]);
        raw.callers.push(RawCaller {
            name: Some("arc-agent".into()),
            source: Some("127.0.0.1".into()),
            targets: strings(&["*"]),
            rate: Some(2.0),
            ..RawCaller::default()
        });
    })
    .await;
    for _ in 0..200 {
        if h.app.is_ready() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(h.app.is_ready(), "the prefetch finished");
    let url = format!(
        "{}/arc/metadata/identity/oauth2/token?api-version=2020-06-01&resource={GRAPH}",
        h.url
    );
    let challenge = h
        .http
        .get(&url)
        .header("Metadata", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(challenge.status().as_u16(), 401, "the challenge");
    let realm = challenge.headers()["www-authenticate"].to_str().unwrap();
    let key = std::fs::read_to_string(realm.strip_prefix("Basic realm=").unwrap()).unwrap();
    let answer = h
        .http
        .get(&url)
        .header("Metadata", "true")
        .header("Authorization", format!("Basic {key}"))
        .send()
        .await
        .unwrap();
    let (status, body) = status_json(answer).await;
    assert_eq!(
        status, 200,
        "the follow-up that presents the key, right after its challenge: {body}"
    );
    assert!(body["access_token"].is_string(), "{body}");
    let third = h
        .http
        .get(&url)
        .header("Metadata", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(
        third.status().as_u16(),
        429,
        "a third request within the second is over rate = 2"
    );
    assert!(third.headers().contains_key("retry-after"));
}

#[tokio::test]
async fn a_grant_of_one_target_is_no_way_into_the_tenant_of_another() {
    const SECRET_C: &str = "secret-of-app-c-0123456789";
    let dir = temp_dir("grant-by-tenant");
    let audit = dir.join("audit.jsonl");
    let h = start_with(SimConfig::demo(), |raw| {
        with_callers(raw);
        raw.callers.push(RawCaller {
            name: Some("app-c".into()),
            secret: Some(SECRET_C.into()),
            targets: strings(&["litware", "contoso"]),
            ..RawCaller::default()
        });
        raw.audit.path = Some(audit.display().to_string());
    })
    .await;
    // The demo's litware allows contoso's own tenant, with the same app.
    let config = h.app.settings().config.clone();
    let (litware, contoso) = (
        config.target("litware").unwrap(),
        config.target("contoso").unwrap(),
    );
    assert_eq!(litware.client_id, contoso.client_id);
    assert!(litware.allows_tenant(&contoso.tenant_id));
    let other_tenant = format!("{GRAPH}&tenant_id={}", contoso.tenant_id);

    // app-a, granted litware only, asks litware for contoso's tenant: refused, no token.
    let (status, body) = msi(&h, "", &other_tenant, SECRET_A).await;
    assert_eq!(status, 403, "{body}");
    no_token(&body);
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("'contoso'") && message.contains("does not grant"),
        "{message}"
    );
    // Its own grant still works.
    let (status, body) = msi(&h, "", GRAPH, SECRET_A).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        claims(body["access_token"].as_str().unwrap())["tid"],
        litware.tenant_id.as_str()
    );
    // A caller granted both may name contoso's tenant through litware.
    let (status, body) = msi(&h, "", &other_tenant, SECRET_C).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        claims(body["access_token"].as_str().unwrap())["tid"],
        contoso.tenant_id.as_str()
    );

    // The audit lines name the tenant and app that were served or refused.
    let mut lines = Vec::new();
    for _ in 0..100 {
        lines = std::fs::read_to_string(&audit)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .collect();
        if lines.len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let line = |caller: &str, event: &str| {
        lines
            .iter()
            .find(|l| l["caller"] == caller && l["event"] == event)
            .unwrap_or_else(|| panic!("no {event} line for {caller}: {lines:#?}"))
            .clone()
    };
    let refused = line("app-a", "refused");
    assert_eq!(refused["tenant"], contoso.tenant_id.as_str());
    assert_eq!(refused["app"], litware.client_id.as_str());
    let served = line("app-c", "served");
    assert_eq!(served["target"], "litware");
    assert_eq!(served["tenant"], contoso.tenant_id.as_str());
    assert_eq!(served["app"], contoso.client_id.as_str());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn overlapping_targets_and_a_wildcard_beside_grants_are_warned_about() {
    let sim_url = "http://127.0.0.1:1";
    let listen = "127.0.0.1:0".parse().unwrap();
    let mut raw = fedimds::demo::raw_config(sim_url, listen);
    assert!(
        load(&raw).warnings().is_empty(),
        "without [[callers]] the overlap grants nothing away"
    );
    with_callers(&mut raw);
    let warnings = load(&raw).warnings();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("'litware' allows tenant") && w.contains("'contoso'")),
        "{warnings:#?}"
    );
    target(&mut raw, "contoso").allowed_tenants = strings(&["*"]);
    let warnings = load(&raw).warnings();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("'contoso' has allowed_tenants = [\"*\"]")),
        "{warnings:#?}"
    );
}

/// Opens a connection and starts a POST whose body never finishes.
async fn dribble(addr: &str, host: &str, secret: Option<&str>) -> tokio::net::TcpStream {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let secret = secret.map_or(String::new(), |s| format!("X-IDENTITY-HEADER: {s}\r\n"));
    let head = format!(
        "POST /msi/token HTTP/1.1\r\nHost: {host}\r\n{secret}Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 16000\r\n\r\nresource="
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
}

/// What the daemon answers on `stream` within `within`, if anything: the status line.
async fn answer_within(stream: &mut tokio::net::TcpStream, within: Duration) -> Option<String> {
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(within, stream.read(&mut buf))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    text.lines().next().map(str::to_owned)
}

#[tokio::test]
async fn slow_bodies_without_a_way_in_hold_no_connection() {
    let h = start_with(SimConfig::demo(), |raw| {
        raw.server.max_connections = Some(4);
        raw.server.header_read_timeout = Some(Duration::from_millis(500).into());
    })
    .await;
    let addr = h.url.trim_start_matches("http://").to_owned();
    // Every place taken by a body that will never finish, from a foreign Host or with no
    // secret: each is refused at the door, before its body is read.
    let mut attackers = Vec::new();
    for i in 0..4 {
        let (host, secret) = if i % 2 == 0 {
            ("evil.example", None)
        } else {
            ("localhost", None)
        };
        let mut stream = dribble(&addr, host, secret).await;
        let status = answer_within(&mut stream, Duration::from_secs(2)).await;
        let status = status.expect("refused at once, body unread");
        assert!(status.contains("403") || status.contains("401"), "{status}");
        attackers.push(stream);
    }
    // A real caller still gets in.
    let (status, body) = h.imds_token(GRAPH, "").await;
    assert_eq!(status, 200, "{body}");
    // A caller with the secret whose body stalls gets 408 once the read timeout passes.
    let secret = h.app.identity_header().expose().to_owned();
    let mut slow = dribble(&addr, "localhost", Some(&secret)).await;
    let status = answer_within(&mut slow, Duration::from_secs(3)).await;
    assert!(
        status.as_deref().is_some_and(|s| s.contains("408")),
        "{status:?}"
    );
}

#[tokio::test]
async fn one_peer_cannot_take_every_connection() {
    // Local peers are told apart by uid, which fedimds looks up once a rule names one.
    let me = my_uid();
    let h = start_with(SimConfig::demo(), |raw| {
        raw.server.max_connections_per_peer = Some(2);
        raw.callers.push(RawCaller {
            name: Some("this-user".into()),
            uid: Some(me),
            targets: strings(&["*"]),
            ..RawCaller::default()
        });
    })
    .await;
    let addr = h.url.trim_start_matches("http://").to_owned();
    // Two keep-alive connections, each answered once, so both surely hold their place.
    let held = |addr: String| async move {
        let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 256];
        let n = stream.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        stream
    };
    let first = held(addr.clone()).await;
    let _second = held(addr.clone()).await;
    // The third from the same uid is closed at once.
    let mut third = tokio::net::TcpStream::connect(&addr).await.unwrap();
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(2), third.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok() && buf.is_empty(),
        "closed with no answer: {buf:?}"
    );
    // A place given back is a place to take again (the daemon sees the close soon after).
    drop(first);
    let mut status = 0;
    for _ in 0..50 {
        status = match h.http.get(format!("{}/healthz", h.url)).send().await {
            Ok(r) => r.status().as_u16(),
            Err(_) => 0,
        };
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, 200, "a place came free");
}

/// This process's uid.
fn my_uid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|u| u.parse().ok())
        .unwrap()
}

async fn curl_tcp(url: &str, as_nobody: bool) -> (u16, serde_json::Value) {
    curl(&[url], as_nobody).await
}

#[tokio::test]
async fn uid_rules_tell_imds_callers_apart_over_tcp() {
    let me = my_uid();
    let h = start_with(SimConfig::demo(), |raw| {
        raw.callers.push(RawCaller {
            name: Some("this-user".into()),
            uid: Some(me),
            targets: strings(&["litware"]),
            ..RawCaller::default()
        });
    })
    .await;
    let url = format!(
        "{}/metadata/identity/oauth2/token?api-version=2018-02-01&resource={GRAPH}",
        h.url
    );
    let (status, body) = curl_tcp(&url, false).await;
    assert_eq!(status, 200, "the uid the rule names: {body}");
    // Another user on the host, with the same Metadata header over the same loopback port:
    // no rule matches its uid.
    let (status, body) = curl_tcp(&url, true).await;
    assert_eq!(status, 403, "another uid: {body}");
    no_token(&body);
}

#[tokio::test]
async fn with_grants_a_tenant_is_named_by_its_id_not_by_a_domain() {
    let h = start_with(SimConfig::demo(), |raw| {
        with_callers(raw);
        target(raw, "litware").allowed_tenants = strings(&["*"]);
    })
    .await;
    // contoso's tenant under another name: its domain. The grant check tells tenants apart
    // by id, so a name is refused before anything is fetched.
    let (status, body) = msi(
        &h,
        "",
        &format!("{GRAPH}&tenant_id=contoso.onmicrosoft.com"),
        SECRET_A,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("must be the tenant's id"),
        "{body}"
    );
    no_token(&body);
    assert_eq!(h.sim.counters().entra, 0);
}

#[tokio::test]
async fn spellings_of_a_tenant_share_one_key() {
    let h = start_with(SimConfig::demo(), |raw| {
        target(raw, "litware").allowed_tenants = strings(&["*"]);
    })
    .await;
    // A tenant where the app is not consented: each spelling would cost an Entra call if it
    // were a key of its own.
    let tenant = "abcdef01-abcd-4abc-8abc-abcdefabcdef";
    for spelling in [
        tenant.to_owned(),
        tenant.to_ascii_uppercase(),
        "ABCDEF01-abcd-4ABC-8abc-ABCDEFabcdef".to_owned(),
    ] {
        let (status, body) = h.imds_token(GRAPH, &format!("&tenant_id={spelling}")).await;
        assert_eq!(status, 400, "{body}");
    }
    assert_eq!(h.sim.counters().entra, 1, "one exchange for every spelling");
    let exchanges = h.sim.exchanges();
    assert_eq!(
        exchanges[0].tenant, tenant,
        "Entra is asked for the lower-case id"
    );
}
