//! The HTTP side: shared state ([`App`]), the token and admin routers, the one request path
//! every dialect shares (guards, caller policy, target, cache, audit, metrics), reload, and
//! the serve loop with graceful shutdown.

use std::collections::HashMap;
use std::future::Future;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use tokio::net::{TcpListener, UnixListener};

use crate::audit::{self, Audit};
use crate::cache::{Lookup, TokenCache};
use crate::caller::{self, Caller, Peer, RateLimits};
use crate::config::{Config, Target};
use crate::dialect::arc::{ArcKeys, ArcRequest};
use crate::dialect::{self, app_service, imds, Dialect, Refusal, TokenRequest};
use crate::listener::{self, Limits, Listener};
use crate::metrics::Metrics;
use crate::target::{self, Selector};
use crate::token::{AccessToken, Secret};
use crate::upstream::{TokenKey, Upstream};

/// Largest form body accepted (Automation's POST carries two short parameters).
const MAX_BODY: usize = 16 * 1024;

/// How long in-flight requests get to finish after shutdown is asked for: short, so a
/// Kubernetes Job with fedimds as a sidecar finishes promptly.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The upstream HTTP client could not be built (TLS roots).
    #[error("cannot build the upstream HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    /// A file could not be written or opened.
    #[error("cannot open {what} {path}: {source}")]
    File {
        /// Which file.
        what: &'static str,
        /// Where.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The OS random source failed.
    #[error("cannot generate the identity header secret: {0}")]
    Random(String),
    /// A reload changed something only a restart can apply.
    #[error("{0} changed: restart fedimds to apply it (the running config stays in force)")]
    NeedsRestart(&'static str),
}

/// What a reload replaces at once.
#[derive(Debug)]
pub struct Settings {
    /// The validated config.
    pub config: Config,
    /// The App Service-style caller secret.
    pub identity_header: Secret,
    rate_limits: RateLimits,
    /// Per target name: its name, tenant and app id, shared (metrics labels, cache keys).
    ids: HashMap<String, TargetIds>,
}

#[derive(Debug)]
struct TargetIds {
    label: Arc<str>,
    tenant: Arc<str>,
    client_id: Arc<str>,
    /// Its "answered 200" counter per dialect, in `Dialect::ALL` order.
    served: Vec<prometheus_client::metrics::counter::Counter>,
}

/// Everything a request handler needs.
#[derive(Debug)]
pub struct App {
    settings: ArcSwap<Settings>,
    /// The token cache, in front of the upstream.
    pub cache: TokenCache,
    /// The Arc dialect's outstanding challenge keys.
    pub arc_keys: ArcKeys,
    /// Counters and histograms.
    pub metrics: Arc<Metrics>,
    audit: Audit,
    ready: AtomicBool,
}

impl App {
    /// Builds the state: upstream client, cache, audit log, and the caller secret (generated
    /// and written to `identity_header_file` when not configured). Call within the runtime.
    pub fn new(config: Config) -> Result<Arc<App>, StartError> {
        let metrics = Arc::new(Metrics::default());
        let upstream = Arc::new(Upstream::with_metrics(&config, metrics.clone())?);
        let cache = TokenCache::new(upstream, &config.cache);
        let identity_header = match &config.server.identity_header {
            Some(s) => s.clone(),
            None => generate_secret()?,
        };
        if let Some(path) = &config.server.identity_header_file {
            write_secret_file(path, &identity_header).map_err(|source| StartError::File {
                what: "the identity header file",
                path: path.display().to_string(),
                source,
            })?;
        }
        let audit = Audit::start(&config.audit).map_err(|source| StartError::File {
            what: "the audit log",
            path: format!("{:?}", config.audit),
            source,
        })?;
        let ready = config.targets.iter().all(|t| t.prefetch.is_empty());
        let arc_keys = ArcKeys::new(
            config.server.arc_key_dir.clone(),
            config.server.arc_key_group,
        );
        Ok(Arc::new(App {
            settings: ArcSwap::from_pointee(Settings::new(config, identity_header, &metrics)),
            cache,
            arc_keys,
            metrics,
            audit,
            ready: AtomicBool::new(ready),
        }))
    }

    /// The settings in force.
    pub fn settings(&self) -> arc_swap::Guard<Arc<Settings>> {
        self.settings.load()
    }

    /// The App Service-style caller secret in force.
    pub fn identity_header(&self) -> Secret {
        self.settings.load().identity_header.clone()
    }

    /// True once every prefetch succeeded.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Swaps in a new, already validated config. Cached tokens survive: they are keyed by
    /// tenant, app and resource, so every target that did not change keeps its tokens. The
    /// listeners, the admin address and the audit sink stay as they were started.
    pub fn reload(&self, config: Config) -> Result<(), StartError> {
        let old = self.settings.load();
        // What the sockets were bound with must not change under them: a reload that turned
        // allow_remote off while 0.0.0.0 stays bound would drop the secret requirement.
        let (new, was) = (&config.server, &old.config.server);
        for (changed, key) in [
            (new.listen != was.listen, "server.listen"),
            (new.allow_remote != was.allow_remote, "server.allow_remote"),
            (new.unix_socket != was.unix_socket, "server.unix_socket"),
            (
                config.admin.listen != old.config.admin.listen,
                "admin.listen",
            ),
            (config.audit != old.config.audit, "audit.path"),
        ] {
            if changed {
                return Err(StartError::NeedsRestart(key));
            }
        }
        let upstream = Upstream::with_metrics(&config, self.metrics.clone())?;
        self.cache.set_upstream(Arc::new(upstream));
        let identity_header = config
            .server
            .identity_header
            .clone()
            .unwrap_or_else(|| old.identity_header.clone());
        if let Some(path) = &config.server.identity_header_file {
            write_secret_file(path, &identity_header).map_err(|source| StartError::File {
                what: "the identity header file",
                path: path.display().to_string(),
                source,
            })?;
        }
        self.settings.store(Arc::new(Settings::new(
            config,
            identity_header,
            &self.metrics,
        )));
        // A failure remembered under the old config (a wrong source, a wrong tenant) must not
        // outlive the config that caused it.
        self.cache.forget_failures();
        Ok(())
    }

    /// Whether `presented` is the identity header or a caller's own secret.
    fn secret_known(settings: &Settings, presented: &[u8]) -> bool {
        settings.identity_header.matches(presented)
            || settings
                .config
                .callers
                .iter()
                .any(|c| c.secret.as_ref().is_some_and(|s| s.matches(presented)))
    }

    /// Resolves the target and gets its token, with no caller checks: prefetch's path.
    async fn token_for(
        &self,
        settings: &Settings,
        prefix: Option<&str>,
        req: &TokenRequest,
    ) -> Result<(Arc<AccessToken>, Lookup), Refusal> {
        let resolved = target::resolve(&settings.config, &selector(prefix, req), &req.resource)
            .map_err(Refusal::Target)?;
        self.cache_get(settings, resolved.target, resolved.tenant, &req.resource)
            .await
    }

    async fn cache_get(
        &self,
        settings: &Settings,
        target: &Target,
        tenant: &str,
        resource: &str,
    ) -> Result<(Arc<AccessToken>, Lookup), Refusal> {
        // The target's own tenant and app id are shared, not copied: this is the hit path.
        let ids = settings.ids.get(&target.name);
        let key = TokenKey {
            cloud: settings.config.cloud.name,
            tenant: match ids {
                Some(ids) if *ids.tenant == *tenant => ids.tenant.clone(),
                _ => tenant.into(),
            },
            client_id: ids.map_or_else(
                || target.client_id.as_str().into(),
                |ids| ids.client_id.clone(),
            ),
            resource: resource.into(),
        };
        self.cache
            .get(&key, settings.config.server.miss_timeout)
            .await
            .map_err(Refusal::Upstream)
    }

    /// Fetches every `prefetch` resource, retrying until all succeed, then marks ready.
    pub async fn prefetch(self: Arc<Self>) {
        /// Between rounds of failed prefetches: the fetch itself already retried.
        const PAUSE: Duration = Duration::from_secs(5);
        let mut done: std::collections::HashSet<(String, String)> = Default::default();
        loop {
            // The settings in force this round: a reload that fixes or drops a broken
            // prefetch entry is honoured at the next round.
            let settings = self.settings.load_full();
            let pending: Vec<(String, String)> = settings
                .config
                .targets
                .iter()
                .flat_map(|t| t.prefetch.iter().map(move |r| (t.name.clone(), r.clone())))
                .filter(|pair| !done.contains(pair))
                .collect();
            if pending.is_empty() {
                break;
            }
            let mut failed = false;
            for (target, resource) in pending {
                let req = TokenRequest {
                    resource: resource.clone(),
                    ..Default::default()
                };
                match self.token_for(&settings, Some(&target), &req).await {
                    Ok(_) => {
                        tracing::info!(target = %target, resource = %resource, "prefetched");
                        done.insert((target, resource));
                    }
                    Err(refusal) => {
                        tracing::warn!(target = %target, resource = %resource, error = %refusal.message(), "prefetch failed; will retry");
                        failed = true;
                    }
                }
            }
            if failed {
                tokio::time::sleep(PAUSE).await;
            }
        }
        self.ready.store(true, Ordering::Release);
        tracing::info!("ready");
    }
}

impl Settings {
    fn new(config: Config, identity_header: Secret, metrics: &Metrics) -> Settings {
        let ids = config
            .targets
            .iter()
            .map(|t| {
                let label: Arc<str> = t.name.as_str().into();
                let ids = TargetIds {
                    served: Dialect::ALL
                        .iter()
                        .map(|d| metrics.served_counter(d.as_str(), &label))
                        .collect(),
                    label,
                    tenant: t.tenant_id.as_str().into(),
                    client_id: t.client_id.as_str().into(),
                };
                (t.name.clone(), ids)
            })
            .collect();
        Settings {
            rate_limits: RateLimits::new(&config),
            ids,
            config,
            identity_header,
        }
    }
}

fn selector<'a>(prefix: Option<&'a str>, req: &'a TokenRequest) -> Selector<'a> {
    Selector {
        prefix,
        client_id: req.client_id.as_deref(),
        object_id: req.object_id.as_deref(),
        resource_id: req.resource_id.as_deref(),
        tenant_id: req.tenant_id.as_deref(),
    }
}

fn generate_secret() -> Result<Secret, StartError> {
    // 256 bits from the OS, hex-encoded: safe in a header and in an environment variable.
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).map_err(|e| StartError::Random(e.to_string()))?;
    Ok(Secret::new(
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>(),
    ))
}

fn write_secret_file(path: &Path, secret: &Secret) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    // Write a sibling then rename, so a reader never sees a half-written secret.
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    // An existing file keeps its old mode through open(); force 0600.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(secret.expose().as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

// === routers ===

/// The token router: every dialect's endpoint (also under `/targets/{name}`), and health.
pub fn router(app: Arc<App>) -> Router {
    let mut router = Router::new();
    for prefix in ["", "/targets/{name}"] {
        for path in [
            "/metadata/identity/oauth2/token",
            "/metadata/identity/oauth2/token/",
        ] {
            router = router.route(&format!("{prefix}{path}"), any(imds_token));
        }
        for path in ["/msi/token", "/msi/token/"] {
            router = router.route(&format!("{prefix}{path}"), any(app_service_token));
        }
        for path in [
            "/arc/metadata/identity/oauth2/token",
            "/arc/metadata/identity/oauth2/token/",
        ] {
            router = router.route(&format!("{prefix}{path}"), any(arc_token));
        }
    }
    router
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(app)
}

/// The admin router: liveness, readiness, metrics.
pub fn admin_router(app: Arc<App>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(app)
}

async fn readyz(State(app): State<Arc<App>>) -> Response {
    if app.is_ready() {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "prefetching tokens").into_response()
    }
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        )],
        app.metrics.render(&app.cache),
    )
        .into_response()
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        dialect::no_store_json(),
        r#"{"error":"not_found","error_description":"No such endpoint. Token endpoints: /metadata/identity/oauth2/token (IMDS), /msi/token (App Service), /arc/metadata/identity/oauth2/token (Arc)"}"#,
    )
        .into_response()
}

// === the request path ===

/// Requests reaching the router without a listener (tests' `oneshot`) count as loopback.
fn peer_of(parts: &axum::http::request::Parts) -> Peer {
    parts
        .extensions
        .get::<Peer>()
        .copied()
        .unwrap_or(Peer::Tcp(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))))
}

/// One token request on its way through.
struct Call<'a> {
    app: &'a App,
    settings: arc_swap::Guard<Arc<Settings>>,
    dialect: Dialect,
    prefix: Option<&'a str>,
    peer: Peer,
    headers: &'a HeaderMap,
}

// The handlers take the request whole and read its parts by reference: extracting a
// `HeaderMap`, `Method` and query would copy them on every cache hit.

async fn imds_token(
    State(app): State<Arc<App>>,
    name: Option<UrlPath<String>>,
    req: Request,
) -> Response {
    let prefix = name.as_ref().map(|UrlPath(n)| n.as_str());
    let (parts, _) = req.into_parts();
    let call = Call::new(&app, Dialect::Imds, prefix, &parts);
    let parsed = call
        .guard()
        .and_then(|()| imds::parse(&parts.method, &parts.headers, parts.uri.query()));
    call.answer(parsed).await
}

async fn app_service_token(
    State(app): State<Arc<App>>,
    name: Option<UrlPath<String>>,
    req: Request,
) -> Response {
    let prefix = name.as_ref().map(|UrlPath(n)| n.as_str());
    let (parts, body) = req.into_parts();
    let query = parts.uri.query();
    let dialect = app_service::dialect_of(&parts.method, &parts.headers, query);
    let call = Call::new(&app, dialect, prefix, &parts);
    let body = match parts.method {
        Method::POST => match axum::body::to_bytes(body, MAX_BODY).await {
            Ok(bytes) => bytes,
            Err(_) => {
                let refusal =
                    Refusal::BadRequest(format!("The form body is larger than {MAX_BODY} bytes"));
                return call.answer(Err(refusal)).await;
            }
        },
        _ => Bytes::new(),
    };
    let settings = &call.settings;
    let known = |presented: &[u8]| App::secret_known(settings, presented);
    let parsed = call.guard().and_then(|()| {
        app_service::parse(dialect, &parts.method, &parts.headers, query, &body, &known)
    });
    call.answer(parsed).await
}

async fn arc_token(
    State(app): State<Arc<App>>,
    name: Option<UrlPath<String>>,
    req: Request,
) -> Response {
    let prefix = name.as_ref().map(|UrlPath(n)| n.as_str());
    let (parts, _) = req.into_parts();
    let call = Call::new(&app, Dialect::Arc, prefix, &parts);
    // Callers are checked (policy, rate) before a challenge is issued: a challenge writes a
    // key file, and a flood of them must not push out other callers' keys.
    match call.guard().and_then(|()| call.admit()).and_then(|()| {
        app.arc_keys
            .parse(&parts.method, &parts.headers, parts.uri.query())
    }) {
        Ok(ArcRequest::Challenge(challenge)) => challenge,
        Ok(ArcRequest::Token(req)) => call.answer(Ok(req)).await,
        Err(refusal) => call.answer(Err(refusal)).await,
    }
}

/// A token served, with what the audit line needs.
struct Served<'s> {
    token: Arc<AccessToken>,
    lookup: Lookup,
    target: &'s Target,
    tenant: &'s str,
}

/// A refusal, with whatever was known when it was decided.
struct Refused<'s> {
    refusal: Refusal,
    target: Option<&'s Target>,
    tenant: Option<&'s str>,
}

impl<'s> From<Refusal> for Refused<'s> {
    fn from(refusal: Refusal) -> Self {
        Refused {
            refusal,
            target: None,
            tenant: None,
        }
    }
}

impl<'a> Call<'a> {
    fn new(
        app: &'a App,
        dialect: Dialect,
        prefix: Option<&'a str>,
        parts: &'a axum::http::request::Parts,
    ) -> Self {
        Call {
            app,
            settings: app.settings.load(),
            dialect,
            prefix,
            peer: peer_of(parts),
            headers: &parts.headers,
        }
    }

    /// Checks that come before any dialect parsing: the Host header (DNS rebinding), and on a
    /// listener reachable from off the host, a known secret on every request.
    fn guard(&self) -> Result<(), Refusal> {
        let config = &self.settings.config;
        if matches!(self.peer, Peer::Tcp(_)) && !caller::host_allowed(self.headers, config) {
            return Err(Refusal::ForeignHost);
        }
        if config.server.allow_remote {
            let presented = caller::presented_secret(self.headers);
            if !presented.is_some_and(|p| App::secret_known(&self.settings, p)) {
                return Err(Refusal::Unauthorized("This listener is reachable from the network: every request needs the caller secret in X-IDENTITY-HEADER"));
            }
        }
        Ok(())
    }

    /// The caller policy and rate limit on their own, for the Arc challenge.
    fn admit(&self) -> Result<(), Refusal> {
        let caller = caller::identify(
            &self.settings.config,
            &self.peer,
            caller::presented_secret(self.headers),
        )
        .ok_or(Refusal::Forbidden(
            "no [[callers]] rule matches this caller".to_owned(),
        ))?;
        self.settings
            .rate_limits
            .take(&caller)
            .map_err(Refusal::RateLimited)
    }

    /// Serves a parsed request (or renders its refusal), then audits and counts it.
    async fn answer(&self, parsed: Result<TokenRequest, Refusal>) -> Response {
        use tracing::Instrument as _;
        let req = match parsed {
            Ok(req) => req,
            Err(refusal) => return self.refused(None, &refusal.into()),
        };
        // One span per request: every line logged on its behalf names the dialect, target and
        // resource. (Fetches run in their own task, under a `fetch` span of their own.) At
        // debug level: an enabled span costs an allocation on every cache hit, and the info
        // lines (refusals) carry these fields themselves.
        let span = tracing::debug_span!(
            "request",
            dialect = self.dialect.as_str(),
            target = self.prefix.unwrap_or("-"),
            resource = %req.resource,
        );
        // A disabled span (the default level) is not worth instrumenting the future with.
        let outcome = if span.is_disabled() {
            self.serve(&req).await
        } else {
            self.serve(&req).instrument(span.clone()).await
        };
        match outcome {
            Ok(served) => span.in_scope(|| self.served(&req, &served)),
            Err(refused) => span.in_scope(|| self.refused(Some(&req), &refused)),
        }
    }

    async fn serve<'s>(&'s self, req: &'s TokenRequest) -> Result<Served<'s>, Refused<'s>> {
        let settings: &Settings = &self.settings;
        let config = &settings.config;
        let caller = caller::identify(config, &self.peer, caller::presented_secret(self.headers))
            .ok_or(Refusal::Forbidden(
            "no [[callers]] rule matches this caller".to_owned(),
        ))?;
        settings
            .rate_limits
            .take(&caller)
            .map_err(Refusal::RateLimited)?;
        let resolved = target::resolve(config, &selector(self.prefix, req), &req.resource)
            .map_err(Refusal::Target)?;
        let (target, tenant) = (resolved.target, resolved.tenant);
        let refused = |refusal| Refused {
            refusal,
            target: Some(target),
            tenant: Some(tenant),
        };
        if !caller.may_use(&target.name, &req.resource) {
            return Err(refused(Refusal::Forbidden(outside_grant(
                &caller,
                target,
                &req.resource,
            ))));
        }
        let (token, lookup) = self
            .app
            .cache_get(settings, target, tenant, &req.resource)
            .await
            .map_err(refused)?;
        Ok(Served {
            token,
            lookup,
            target,
            tenant,
        })
    }

    fn served(&self, req: &TokenRequest, served: &Served<'_>) -> Response {
        let app = self.app;
        app.metrics.lookup(served.lookup);
        if let Some(counter) = self
            .settings
            .ids
            .get(&served.target.name)
            .and_then(|ids| ids.served.get(self.dialect.index()))
        {
            counter.inc();
        }
        if app.audit.is_on() {
            app.audit.record(&audit::Entry {
                event: "served",
                dialect: self.dialect.as_str(),
                caller: &self.caller_name(),
                addr: self.peer.addr().map(|a| a.to_string()),
                uid: self.peer.uid(),
                target: Some(&served.target.name),
                tenant: Some(served.tenant),
                resource: Some(&req.resource),
                status: 200,
                cache: Some(served.lookup.as_str()),
                fingerprint: Some(&served.token.fingerprint),
                expires_on: Some(served.token.expires_on),
                reason: None,
            });
        }
        tracing::debug!(dialect = self.dialect.as_str(), target = %served.target.name, resource = %req.resource, cache = served.lookup.as_str(), "token served");
        // Echo the id the caller named (Arc clients insist); else the app's client id.
        let client_id = req.client_id.as_deref().unwrap_or(&served.target.client_id);
        dialect::token_response(&served.token, req, client_id)
    }

    fn caller_name(&self) -> String {
        caller::identify(
            &self.settings.config,
            &self.peer,
            caller::presented_secret(self.headers),
        )
        .map_or_else(|| "-".to_owned(), |c| c.name().to_owned())
    }

    /// Logs a refusal once, here where it is handled, audits and counts it, and renders it.
    fn refused(&self, req: Option<&TokenRequest>, refused: &Refused<'_>) -> Response {
        let refusal = &refused.refusal;
        let (status, _) = refusal.status();
        let target = refused.target.map(|t| t.name.as_str()).or(self.prefix);
        let resource = req.map(|r| r.resource.as_str());
        match refusal {
            // Probes arrive on every SDK start: not worth more than debug.
            Refusal::MissingMetadata => tracing::debug!(
                dialect = self.dialect.as_str(),
                "request without Metadata header (probe)"
            ),
            _ => tracing::info!(
                dialect = self.dialect.as_str(),
                target = target.unwrap_or("-"),
                resource = resource.unwrap_or("-"),
                status = status.as_u16(),
                reason = %refusal.message(),
                "token refused"
            ),
        }
        let label = target
            .and_then(|t| self.settings.ids.get(t))
            .map_or_else(|| Arc::from("-"), |ids| ids.label.clone());
        self.app
            .metrics
            .request(self.dialect.as_str(), &label, status.as_u16());
        if self.app.audit.is_on() {
            let reason = refusal.message();
            self.app.audit.record(&audit::Entry {
                event: "refused",
                dialect: self.dialect.as_str(),
                caller: &self.caller_name(),
                addr: self.peer.addr().map(|a| a.to_string()),
                uid: self.peer.uid(),
                target,
                tenant: refused.tenant,
                resource,
                status: status.as_u16(),
                cache: None,
                fingerprint: None,
                expires_on: None,
                reason: Some(&reason),
            });
        }
        dialect::error(self.dialect, refusal)
    }
}

fn outside_grant(caller: &Caller<'_>, target: &Target, resource: &str) -> String {
    format!(
        "caller '{}' may not get tokens for target '{}' and resource '{resource}' (see its [[callers]] entry)",
        caller.name(),
        target.name
    )
}

// === serving ===

/// The sockets to serve on, bound before serving so a bad address fails at start.
#[derive(Debug)]
pub struct Listeners {
    /// The token endpoints.
    pub token: TcpListener,
    /// The token endpoints on a Unix socket.
    pub unix: Option<UnixListener>,
    /// Health, readiness and metrics.
    pub admin: Option<TcpListener>,
}

impl Listeners {
    /// Binds every listener the config names.
    pub async fn bind(config: &Config) -> Result<Listeners, String> {
        let token = TcpListener::bind(config.server.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", config.server.listen))?;
        let unix = match &config.server.unix_socket {
            Some(path) => Some(
                listener::bind_unix(path, config.server.unix_socket_mode)
                    .map_err(|e| format!("cannot listen on {}: {e}", path.display()))?,
            ),
            None => None,
        };
        let admin = match config.admin.listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|e| format!("cannot listen on {addr} (admin.listen): {e}"))?,
            ),
            None => None,
        };
        Ok(Listeners { token, unix, admin })
    }
}

/// Serves until `shutdown` completes, then drains in-flight requests for at most
/// [`SHUTDOWN_GRACE`]. Prefetch runs alongside.
pub async fn run(
    app: Arc<App>,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let config = &app.settings().config;
    let limits = Limits {
        max_connections: config.server.max_connections,
        header_read_timeout: config.server.header_read_timeout,
        max_header_bytes: config.server.max_header_bytes,
    };
    tracing::info!(
        listen = %listeners.token.local_addr()?,
        unix = ?config.server.unix_socket,
        admin = ?listeners.admin.as_ref().and_then(|l| l.local_addr().ok()),
        targets = config.targets.len(),
        "serving tokens"
    );
    if !app.is_ready() {
        tokio::spawn(app.clone().prefetch());
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut sockets = vec![(Listener::Tcp(listeners.token), router(app.clone()))];
    sockets.extend(
        listeners
            .unix
            .map(|unix| (Listener::Unix(unix), router(app.clone()))),
    );
    sockets.extend(
        listeners
            .admin
            .map(|admin| (Listener::Tcp(admin), admin_router(app.clone()))),
    );
    let mut tasks = tokio::task::JoinSet::new();
    for (socket, routes) in sockets {
        tasks.spawn(listener::serve(
            socket,
            routes,
            limits,
            stop_rx.clone(),
            SHUTDOWN_GRACE,
        ));
    }
    shutdown.await;
    tracing::info!("shutting down: no new connections; finishing requests in flight");
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
    Ok(())
}
