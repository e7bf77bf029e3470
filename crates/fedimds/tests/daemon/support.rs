//! Starting a simulator and a daemon wired to it.

use std::net::SocketAddr;
use std::sync::Arc;

use fedimds::app::App;
pub use fedimds::config::raw::{
    RawCaller, RawConfig, RawNamedSource, RawServer, RawSource, RawTarget,
};
use fedimds::config::Config;
use fedimds::http;
use fedimds_sim::{Sim, SimConfig};
use serde_json::Value;
use tokio::sync::oneshot;

pub use fedimds_sim::demo;

pub const GRAPH: &str = "https://graph.microsoft.com";
pub const ARM: &str = "https://management.core.windows.net/";

/// A running simulator and daemon. Dropping it stops both.
pub struct Harness {
    pub sim: Sim,
    pub app: Arc<App>,
    pub url: String,
    pub admin_url: String,
    pub http: reqwest::Client,
    /// `https://127.0.0.1:PORT` of the Service Fabric listener, when the config turns it on.
    pub service_fabric_url: Option<String>,
    /// The daemon's router, built once: [`Harness::oneshot`] calls a clone (building one per
    /// request would cost more than the request, and soak tests make a million).
    router: axum::Router,
    _stop: oneshot::Sender<()>,
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// The demo world with the demo config.
pub async fn start() -> Harness {
    start_with(SimConfig::demo(), |_| {}).await
}

/// A simulator world and the demo daemon config as changed by `edit`.
pub async fn start_with(sim_config: SimConfig, edit: impl FnOnce(&mut RawConfig)) -> Harness {
    start_with_env(sim_config, &|_| None, edit).await
}

/// [`start_with`], the config read with `env` as the environment.
pub async fn start_with_env(
    sim_config: SimConfig,
    env: fedimds::config::Env<'_>,
    edit: impl FnOnce(&mut RawConfig),
) -> Harness {
    let sim = Sim::start(sim_config, loopback())
        .await
        .expect("simulator starts");
    let listener = tokio::net::TcpListener::bind(loopback()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut raw = fedimds::demo::raw_config(&sim.url(), addr);
    edit(&mut raw);
    let config = load_with_env(&raw, env);
    let unix = config.server.unix_socket.as_ref().map(|path| {
        fedimds::http::listener::bind_unix(path, config.server.unix_socket_mode)
            .expect("unix socket binds")
    });
    let service_fabric = http::ServiceFabricListener::bind(&config)
        .await
        .expect("the Service Fabric listener binds");
    let service_fabric_url = service_fabric
        .as_ref()
        .map(|sf| format!("https://{}", sf.socket.local_addr().unwrap()));
    let app = App::new(config).expect("daemon state builds");
    let admin = tokio::net::TcpListener::bind(loopback()).await.unwrap();
    let admin_url = format!("http://{}", admin.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let listeners = http::Listeners {
        token: listener,
        unix,
        admin: Some(admin),
        service_fabric,
    };
    tokio::spawn(http::run(app.clone(), listeners, async move {
        let _ = stopped.await;
    }));
    let router = http::router(app.clone());
    Harness {
        sim,
        app,
        url: format!("http://{addr}"),
        admin_url,
        // No pooled connections: on paused time a jump past the daemon's keep-alive deadline
        // closes an idle connection just as the pool hands it out again ("connection reset").
        // Each request on a fresh connection is what an SDK's first call does anyway.
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .expect("an HTTP client"),
        service_fabric_url,
        router,
        _stop: stop,
    }
}

impl Harness {
    /// The admin listener's `/metrics` exposition, as text.
    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.admin_url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// GET an IMDS token: `path_and_query` after the base URL.
    pub async fn imds(&self, path_and_query: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path_and_query}", self.url))
            .header("Metadata", "true")
            .send()
            .await
            .unwrap();
        status_json(r).await
    }

    /// The IMDS request for a Graph token, `Metadata: true` set, to add headers to.
    pub fn imds_request(&self) -> reqwest::RequestBuilder {
        self.http
            .get(format!(
                "{}/metadata/identity/oauth2/token?api-version=2018-02-01&resource={GRAPH}",
                self.url
            ))
            .header("Metadata", "true")
    }

    /// GET an IMDS token for `resource` with extra query parameters.
    pub async fn imds_token(&self, resource: &str, extra: &str) -> (u16, Value) {
        self.imds(&format!(
            "/metadata/identity/oauth2/token?api-version=2018-02-01&resource={resource}{extra}"
        ))
        .await
    }

    /// A request straight into the router, no socket: for crowds of callers on paused time,
    /// where a thousand TCP connects would depend on the kernel's accept backlog.
    pub async fn oneshot(&self, path_and_query: &str) -> (u16, Value) {
        use tower::ServiceExt as _;
        let request = axum::http::Request::get(path_and_query)
            .header("Host", "localhost")
            .header("Metadata", "true")
            .body(axum::body::Body::empty())
            .unwrap();
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// The access token Entra issued last, from the simulator's record.
    pub fn last_issued(&self) -> String {
        self.sim
            .exchanges()
            .into_iter()
            .rev()
            .find_map(|e| e.outcome.ok())
            .expect("Entra issued a token")
    }
}

pub async fn status_json(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or_else(|_| Value::String(text.clone()));
    (status, body)
}

/// The claims of a token Entra issued.
pub fn claims(token: &str) -> Value {
    Sim::decode(token).expect("a JWT")
}

/// Asserts a 200 body is the one every client accepts: every value a string.
pub fn assert_client_safe(body: &Value, resource: &str) {
    for key in [
        "access_token",
        "client_id",
        "expires_in",
        "expires_on",
        "ext_expires_in",
        "not_before",
        "resource",
        "token_type",
    ] {
        assert!(body[key].is_string(), "{key} must be a string in {body}");
    }
    assert_eq!(body["resource"], resource);
    assert_eq!(body["token_type"], "Bearer");
    let expires_in: u64 = body["expires_in"].as_str().unwrap().parse().unwrap();
    let expires_on: u64 = body["expires_on"].as_str().unwrap().parse().unwrap();
    assert!(
        expires_in > 3000 && expires_in <= 3599,
        "expires_in {expires_in}"
    );
    assert!(
        expires_on > 1_700_000_000,
        "expires_on is epoch seconds: {expires_on}"
    );
}

/// A fresh temporary directory for one test.
pub fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "fedimds-test-{name}-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

// === typed config edits ===

/// `raw` rendered as the TOML a config file holds.
pub fn render(raw: &RawConfig) -> String {
    toml::to_string(raw).unwrap_or_else(|e| panic!("the config renders as TOML: {e}\n{raw:#?}"))
}

/// `raw` the way the daemon reads a config file: rendered, parsed and validated.
pub fn load(raw: &RawConfig) -> Config {
    load_with_env(raw, &|_| None)
}

/// [`load`], with `env` as the environment.
pub fn load_with_env(raw: &RawConfig, env: fedimds::config::Env<'_>) -> Config {
    let toml = render(raw);
    let reread: RawConfig = toml::from_str(&toml).unwrap_or_else(|e| panic!("{e}\n{toml}"));
    assert_eq!(
        &reread, raw,
        "the rendered TOML reads back as the typed config:\n{toml}"
    );
    Config::from_toml(&toml, "test", env).unwrap_or_else(|e| panic!("{e}\n{toml}"))
}

/// The target named `name`. A name the config does not have fails the test: an edit meant
/// for a target never silently does nothing.
pub fn target<'r>(raw: &'r mut RawConfig, name: &str) -> &'r mut RawTarget {
    let at = target_position(raw, name);
    &mut raw.targets[at]
}

/// Removes the target named `name`, which the config must have.
pub fn remove_target(raw: &mut RawConfig, name: &str) {
    let at = target_position(raw, name);
    raw.targets.remove(at);
}

fn target_position(raw: &RawConfig, name: &str) -> usize {
    raw.targets
        .iter()
        .position(|t| t.name.as_deref() == Some(name))
        .unwrap_or_else(|| {
            let names: Vec<_> = raw
                .targets
                .iter()
                .filter_map(|t| t.name.as_deref())
                .collect();
            panic!("the config has no target {name:?}, only {names:?}")
        })
}

/// `items` as owned strings, for the config's lists.
pub fn strings(items: &[&str]) -> Option<Vec<String>> {
    Some(items.iter().map(|s| (*s).to_owned()).collect())
}

#[test]
#[should_panic(
    expected = "the config has no target \"fabrikam\", only [\"litware\", \"contoso\", \"unconsented\"]"
)]
fn an_edit_of_a_target_the_config_lacks_fails_the_test() {
    let mut raw = fedimds::demo::raw_config("http://127.0.0.1:8282", loopback());
    target(&mut raw, "fabrikam").object_id = Some("obj".into());
}

/// Every diagnostic log line, at TRACE, from the moment [`LogCapture::install`] is called
/// until its guard drops. The subscriber is thread-local, so tests that use it run on one
/// thread (`flavor = "current_thread"`) to see every task's lines.
#[derive(Clone, Default)]
pub struct LogCapture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl LogCapture {
    /// Installs the capture as this thread's subscriber; it listens while the guard lives.
    pub fn install() -> (LogCapture, tracing::subscriber::DefaultGuard) {
        let logs = LogCapture::default();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(logs.clone())
            .finish();
        (logs, tracing::subscriber::set_default(subscriber))
    }

    /// What has been logged so far.
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogCapture {
    type Writer = LogCapture;
    fn make_writer(&'a self) -> LogCapture {
        self.clone()
    }
}
