//! Operating it: metrics on the admin listener, reload.

use crate::support::*;

fn sample(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

async fn scrape(h: &Harness) -> prometheus_parse::Scrape {
    let text = h.metrics().await;
    assert!(!text.contains("eyJ"), "no token data in metrics");
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    prometheus_parse::Scrape::parse(lines).expect("a Prometheus text-format parser reads it")
}

#[tokio::test]
async fn metrics_move_as_requests_are_made() {
    let h = start().await;
    let before = scrape(&h).await;
    assert_eq!(
        sample(
            &before,
            "fedimds_requests_total",
            &[("dialect", "imds"), ("status", "200")]
        ),
        0.0
    );
    assert_eq!(sample(&before, "fedimds_build_info", &[]), 1.0);

    assert_eq!(h.imds_token(GRAPH, "").await.0, 200);
    assert_eq!(h.imds_token(GRAPH, "").await.0, 200);
    assert_eq!(h.imds_token(GRAPH, "&client_id=nobody").await.0, 400);
    let after = scrape(&h).await;
    assert_eq!(
        sample(
            &after,
            "fedimds_requests_total",
            &[
                ("dialect", "imds"),
                ("target", "litware"),
                ("status", "200")
            ]
        ),
        2.0
    );
    assert_eq!(
        sample(
            &after,
            "fedimds_requests_total",
            &[("dialect", "imds"), ("status", "400")]
        ),
        1.0
    );
    assert_eq!(
        sample(&after, "fedimds_cache_lookups_total", &[("result", "miss")]),
        1.0
    );
    assert_eq!(
        sample(&after, "fedimds_cache_lookups_total", &[("result", "hit")]),
        1.0
    );
    assert_eq!(
        sample(
            &after,
            "fedimds_upstream_requests_total",
            &[("upstream", "entra"), ("outcome", "ok")]
        ),
        1.0
    );
    assert_eq!(
        sample(
            &after,
            "fedimds_upstream_requests_total",
            &[("upstream", "assertion"), ("outcome", "ok")]
        ),
        1.0
    );
    assert_eq!(
        sample(
            &after,
            "fedimds_upstream_duration_seconds_count",
            &[("upstream", "entra")]
        ),
        1.0
    );
    let expiry = sample(
        &after,
        "fedimds_token_expiry_seconds",
        &[("tenant", demo::TARGET_TENANT), ("resource", GRAPH)],
    );
    assert!(expiry > 3000.0 && expiry <= 3599.0, "{expiry}");
    assert_eq!(sample(&after, "fedimds_cache_keys", &[]), 1.0);
}

#[tokio::test]
async fn reload_swaps_valid_configs_and_keeps_tokens_of_unchanged_targets() {
    let h = start().await;
    let (_, first) = h.imds_token(GRAPH, "").await;
    let dir = temp_dir("reload");
    let path = dir.join("fedimds.toml");

    // A valid new config: contoso becomes the default target; litware is unchanged.
    let mut raw = fedimds::demo::raw_config(&h.sim.url(), h.app.settings().config.server.listen);
    make_contoso_the_default(&mut raw);
    std::fs::write(&path, render(&raw)).unwrap();
    assert!(fedimds::reload::reload(&h.app, &path, "test"));
    let (status, body) = h.imds_token(GRAPH, "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        claims(body["access_token"].as_str().unwrap())["tid"],
        demo::OTHER_TARGET_TENANT,
        "the new default"
    );
    let before = h.sim.counters().entra;
    let (_, again) = h.imds(&format!("/targets/litware/metadata/identity/oauth2/token?api-version=2018-02-01&resource={GRAPH}")).await;
    assert_eq!(
        again["access_token"], first["access_token"],
        "litware's cached token survived the reload"
    );
    assert_eq!(h.sim.counters().entra, before);

    // An invalid one is refused; the previous config keeps serving.
    std::fs::write(
        &path,
        "[[targets]]\ntenant_id = \"common\"\nclient_id = \"x\"\n",
    )
    .unwrap();
    assert!(!fedimds::reload::reload(&h.app, &path, "test"));
    let (status, body) = h.imds_token(GRAPH, "").await;
    assert_eq!(status, 200);
    assert_eq!(
        claims(body["access_token"].as_str().unwrap())["tid"],
        demo::OTHER_TARGET_TENANT
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn sigterm_finishes_the_request_in_flight_and_exits_0() {
    use fedimds_sim::fault::{Fault, Route};
    let sim = fedimds_sim::Sim::start(
        fedimds_sim::SimConfig::demo(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    // Entra takes a second and a half: the request is in flight when SIGTERM arrives.
    sim.push_fault(
        Route::Entra,
        Fault::slow(std::time::Duration::from_millis(1500)),
    );
    let raw = fedimds::demo::raw_config(&sim.url(), "127.0.0.1:8181".parse().unwrap());
    let (mut child, url, path) = spawn_daemon(raw, "sigterm").await;
    let dir = path.parent().unwrap().to_owned();
    let http = reqwest::Client::new();
    let request = tokio::spawn({
        let http = http.clone();
        let url = url.clone();
        async move {
            let r = http
                .get(format!(
                    "{url}/metadata/identity/oauth2/token?api-version=2018-02-01&resource={GRAPH}"
                ))
                .header("Metadata", "true")
                .send()
                .await
                .unwrap();
            status_json(r).await
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let (status, body) = request.await.unwrap();
    assert_eq!(status, 200, "the request in flight finished: {body}");
    let exit = tokio::time::timeout(std::time::Duration::from_secs(10), child.wait())
        .await
        .expect("exits promptly")
        .unwrap();
    assert!(exit.success(), "exit 0: {exit:?}");
    // And it no longer listens.
    assert!(http.get(format!("{url}/healthz")).send().await.is_err());
    let _ = std::fs::remove_dir_all(dir);
}

/// Litware is no longer the default target; contoso is.
fn make_contoso_the_default(raw: &mut RawConfig) {
    target(raw, "litware").default = None;
    target(raw, "contoso").default = Some(true);
}

/// Starts the real binary on a free port with `raw` (admin off); returns it, its URL and the
/// config path.
async fn spawn_daemon(
    mut raw: RawConfig,
    name: &str,
) -> (tokio::process::Child, String, std::path::PathBuf) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = temp_dir(name);
    let path = dir.join("fedimds.toml");
    raw.server.listen = Some(format!("127.0.0.1:{port}"));
    raw.admin.listen = Some("off".into());
    std::fs::write(&path, render(&raw)).unwrap();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_fedimds"))
        .args(["serve", "--config"])
        .arg(&path)
        .env("FEDIMDS_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    for _ in 0..100 {
        if reqwest::get(format!("{url}/healthz")).await.is_ok() {
            return (child, url, path);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the daemon did not come up");
}

#[tokio::test]
async fn sighup_reloads_and_an_invalid_file_is_refused() {
    let sim = fedimds_sim::Sim::start(
        fedimds_sim::SimConfig::demo(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let raw = fedimds::demo::raw_config(&sim.url(), "127.0.0.1:8181".parse().unwrap());
    let (child, url, path) = spawn_daemon(raw, "sighup").await;
    let tid = |url: String| async move {
        let r = reqwest::Client::new()
            .get(format!(
                "{url}/metadata/identity/oauth2/token?api-version=2018-02-01&resource={GRAPH}"
            ))
            .header("Metadata", "true")
            .send()
            .await
            .unwrap();
        let (_, body) = status_json(r).await;
        body["access_token"]
            .as_str()
            .map(|t| claims(t)["tid"].as_str().unwrap().to_owned())
    };
    assert_eq!(tid(url.clone()).await.as_deref(), Some(demo::TARGET_TENANT));
    let pid = child.id().unwrap().to_string();
    let hup = || {
        assert!(std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success())
    };
    // Rewrite the file but keep its modification time, so only SIGHUP can trigger the reload.
    let keep_mtime = |text: &str| {
        let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
        std::fs::write(&path, text).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
    };
    let mut current: RawConfig = toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    make_contoso_the_default(&mut current);
    keep_mtime(&render(&current));
    hup();
    let mut switched = false;
    for _ in 0..40 {
        if tid(url.clone()).await.as_deref() == Some(demo::OTHER_TARGET_TENANT) {
            switched = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(switched, "SIGHUP reloaded the config");
    keep_mtime("[[targets]]\ntenant_id = \"common\"\nclient_id = \"x\"\n");
    hup();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        tid(url.clone()).await.as_deref(),
        Some(demo::OTHER_TARGET_TENANT),
        "the old config keeps serving"
    );
    drop(child);
}

#[tokio::test]
async fn reload_refuses_what_only_a_restart_can_apply_and_forgets_old_failures() {
    let h = start().await;
    let unconsented = format!("/targets/unconsented/metadata/identity/oauth2/token?api-version=2018-02-01&resource={GRAPH}");
    assert_eq!(h.imds(&unconsented).await.0, 400);
    let dir = temp_dir("reload-restart");
    let path = dir.join("fedimds.toml");
    let base = fedimds::demo::raw_config(&h.sim.url(), h.app.settings().config.server.listen);

    // Turning allow_remote (or the listen address) around under a bound socket is refused.
    let mut remote = base.clone();
    remote.server.allow_remote = Some(true);
    remote.server.identity_header = Some("remote-secret-0123456789".into());
    std::fs::write(&path, render(&remote)).unwrap();
    assert!(!fedimds::reload::reload(&h.app, &path, "test"));
    assert!(
        !h.app.settings().config.server.allow_remote,
        "the running config stays"
    );

    // The unconsented target now points at the consented app: the remembered 700016 must not
    // outlive the config that caused it.
    let mut fixed = base;
    let unconsented_target = target(&mut fixed, "unconsented");
    assert_eq!(
        unconsented_target.client_id.as_deref(),
        Some(demo::UNCONSENTED_APP_CLIENT_ID)
    );
    unconsented_target.client_id = Some(demo::APP_CLIENT_ID.into());
    std::fs::write(&path, render(&fixed)).unwrap();
    assert!(fedimds::reload::reload(&h.app, &path, "test"));
    let (status, body) = h.imds(&unconsented).await;
    assert_eq!(status, 200, "{body}");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(start_paused = true)]
async fn a_reload_that_drops_a_broken_prefetch_makes_the_daemon_ready() {
    let broken = |raw: &mut RawConfig| {
        target(raw, "unconsented").prefetch = strings(&["https://graph.microsoft.com"]);
    };
    let h = start_with(fedimds_sim::SimConfig::demo(), broken).await;
    let ready = || {
        let (http, url) = (h.http.clone(), h.admin_url.clone());
        async move {
            http.get(format!("{url}/readyz"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    tokio::time::sleep(std::time::Duration::from_secs(30)).await;
    assert_eq!(
        ready().await,
        503,
        "the unconsented app can never be prefetched"
    );
    let dir = temp_dir("reload-prefetch");
    let path = dir.join("fedimds.toml");
    let listen = h.app.settings().config.server.listen;
    std::fs::write(&path, fedimds::demo::config_toml(&h.sim.url(), listen)).unwrap();
    assert!(fedimds::reload::reload(&h.app, &path, "test"));
    tokio::time::sleep(std::time::Duration::from_secs(10)).await;
    assert_eq!(
        ready().await,
        200,
        "the next prefetch round follows the new config"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_secret_taken_out_of_the_config_stops_working_at_the_reload() {
    const LEAKED: &str = "leaked-secret-0123456789";
    let dir = temp_dir("reload-secret");
    let file = dir.join("identity-header");
    let base = |h: &Harness| {
        let mut raw =
            fedimds::demo::raw_config(&h.sim.url(), h.app.settings().config.server.listen);
        raw.server.identity_header_file = Some(file.clone());
        raw
    };
    let h = start_with(fedimds_sim::SimConfig::demo(), |raw| {
        raw.server.identity_header = Some(LEAKED.into());
        raw.server.identity_header_file = Some(file.clone());
    })
    .await;
    let msi = |secret: String| {
        let (http, url) = (h.http.clone(), h.url.clone());
        async move {
            http.get(format!(
                "{url}/msi/token?api-version=2019-08-01&resource={GRAPH}"
            ))
            .header("X-IDENTITY-HEADER", secret)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
        }
    };
    assert_eq!(msi(LEAKED.into()).await, 200);
    // The leaked secret is removed from the file and the config reloaded.
    h.app.reload(load(&base(&h))).expect("the reload applies");
    assert_eq!(
        msi(LEAKED.into()).await,
        401,
        "the removed secret no longer works"
    );
    let fresh = h.app.identity_header().expose().to_owned();
    assert_ne!(fresh, LEAKED);
    assert_eq!(msi(fresh.clone()).await, 200);
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        fresh,
        "the file holds the new one"
    );
    // A generated secret stays the same across reloads that do not name one.
    h.app.reload(load(&base(&h))).expect("the reload applies");
    assert_eq!(h.app.identity_header().expose(), fresh);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_reload_refuses_each_key_it_cannot_apply_and_names_it() {
    let h = start().await;
    let base = fedimds::demo::raw_config(&h.sim.url(), h.app.settings().config.server.listen);
    type Edit = fn(&mut RawConfig);
    let cases: [(&str, Edit); 8] = [
        ("server.max_connections", |r| {
            r.server.max_connections = Some(7)
        }),
        ("server.max_connections_per_peer", |r| {
            r.server.max_connections_per_peer = Some(7)
        }),
        ("server.header_read_timeout", |r| {
            r.server.header_read_timeout = Some(std::time::Duration::from_secs(9).into())
        }),
        ("server.unix_socket_mode", |r| {
            r.server.unix_socket_mode = Some(0o600)
        }),
        ("server.arc_key_group", |r| {
            r.server.arc_key_group = Some(4242)
        }),
        ("upstream.max_concurrent_fetches", |r| {
            r.upstream.max_concurrent_fetches = Some(3)
        }),
        ("cache", |r| r.cache.max_keys = Some(10)),
        ("service_fabric", |r| {
            r.service_fabric.listen = Some("127.0.0.1:2377".to_owned())
        }),
    ];
    for (key, edit) in cases {
        let mut raw = base.clone();
        edit(&mut raw);
        let err = h.app.reload(load(&raw)).expect_err(key).to_string();
        assert!(err.contains(key) && err.contains("restart"), "{key}: {err}");
    }
    // The running config is what it was.
    assert_eq!(
        h.app.settings().config.server.max_connections,
        fedimds::config::DEFAULT_MAX_CONNECTIONS
    );
}

#[tokio::test]
async fn the_simulator_command_starts() {
    use tokio::io::AsyncBufReadExt as _;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_fedimds"))
        .args(["sim", "--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let first = tokio::time::timeout(std::time::Duration::from_secs(10), lines.next_line())
        .await
        .expect("it says where it listens")
        .unwrap()
        .unwrap_or_default();
    assert!(
        first.starts_with("fedimds simulator on http://127.0.0.1:"),
        "{first}"
    );
    child.kill().await.unwrap();
}
