//! The HTTP side: shared state, the router, and the serve loop with graceful shutdown.

use std::future::{Future, IntoFuture as _};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use tokio::net::TcpListener;

use crate::cache::{Lookup, TokenCache};
use crate::config::Config;
use crate::dialect::arc::{self, ArcKeys, ArcRequest};
use crate::dialect::{self, app_service, imds, Dialect, Refusal, TokenRequest};
use crate::target::{self, Selector};
use crate::token::{AccessToken, Secret};
use crate::upstream::{TokenKey, Upstream};

/// Largest form body accepted (Automation's POST carries two short parameters).
const MAX_BODY: usize = 16 * 1024;

/// How long in-flight requests get to finish after shutdown is asked for.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The upstream HTTP client could not be built (TLS roots).
    #[error("cannot build the upstream HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    /// The generated secret could not be written.
    #[error("cannot write the identity header file {path}: {source}")]
    SecretFile {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The OS random source failed.
    #[error("cannot generate the identity header secret: {0}")]
    Random(String),
}

/// Everything a request handler needs.
#[derive(Debug)]
pub struct App {
    /// The validated config.
    pub config: Config,
    /// The token cache, in front of the upstream.
    pub cache: TokenCache,
    /// The App Service-style caller secret.
    pub identity_header: Secret,
    /// The Arc dialect's outstanding challenge keys.
    pub arc_keys: ArcKeys,
    ready: AtomicBool,
}

impl App {
    /// Builds the state: upstream client, cache, and the caller secret (generated and written
    /// to `identity_header_file` when not configured).
    pub fn new(config: Config) -> Result<Arc<App>, StartError> {
        let upstream = Arc::new(Upstream::new(&config)?);
        let cache = TokenCache::new(upstream, &config.cache);
        let identity_header = match &config.server.identity_header {
            Some(s) => s.clone(),
            None => generate_secret()?,
        };
        if let Some(path) = &config.server.identity_header_file {
            write_secret_file(path, &identity_header).map_err(|source| StartError::SecretFile {
                path: path.display().to_string(),
                source,
            })?;
        }
        let ready = config.targets.iter().all(|t| t.prefetch.is_empty());
        let arc_keys = ArcKeys::new(
            config.server.arc_key_dir.clone(),
            config.server.arc_key_group,
        );
        Ok(Arc::new(App {
            arc_keys,
            config,
            cache,
            identity_header,
            ready: AtomicBool::new(ready),
        }))
    }

    /// True once every prefetch succeeded.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Resolves the target and gets the token: the path every dialect shares.
    pub async fn token(
        &self,
        prefix: Option<&str>,
        req: &TokenRequest,
    ) -> Result<(Arc<AccessToken>, Lookup), Refusal> {
        let selector = Selector {
            prefix,
            client_id: req.client_id.as_deref(),
            object_id: req.object_id.as_deref(),
            resource_id: req.resource_id.as_deref(),
            tenant_id: req.tenant_id.as_deref(),
        };
        let resolved =
            target::resolve(&self.config, &selector, &req.resource).map_err(Refusal::Target)?;
        let key = TokenKey {
            cloud: self.config.cloud.name,
            tenant: resolved.tenant.into(),
            client_id: resolved.target.client_id.as_str().into(),
            resource: req.resource.as_str().into(),
        };
        self.cache
            .get(&key, self.config.server.miss_timeout)
            .await
            .map_err(Refusal::Upstream)
    }

    /// Fetches every `prefetch` resource, retrying until all succeed, then marks ready.
    pub async fn prefetch(self: Arc<Self>) {
        /// Between rounds of failed prefetches: the fetch itself already retried.
        const PAUSE: Duration = Duration::from_secs(5);
        let mut pending: Vec<(String, String)> = self
            .config
            .targets
            .iter()
            .flat_map(|t| t.prefetch.iter().map(move |r| (t.name.clone(), r.clone())))
            .collect();
        while !pending.is_empty() {
            let mut still = Vec::new();
            for (target, resource) in pending {
                let req = TokenRequest {
                    resource: resource.clone(),
                    ..Default::default()
                };
                match self.token(Some(&target), &req).await {
                    Ok(_) => tracing::info!(target = %target, resource = %resource, "prefetched"),
                    Err(refusal) => {
                        tracing::warn!(target = %target, resource = %resource, error = %refusal.message(), "prefetch failed; will retry");
                        still.push((target, resource));
                    }
                }
            }
            pending = still;
            if !pending.is_empty() {
                tokio::time::sleep(PAUSE).await;
            }
        }
        self.ready.store(true, Ordering::Release);
        tracing::info!("ready");
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
    use std::os::unix::fs::OpenOptionsExt as _;
    use std::os::unix::fs::PermissionsExt as _;
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

/// The router: token endpoints (also under `/targets/{name}`), and health.
pub fn router(app: Arc<App>) -> Router {
    let endpoints = Router::new()
        .route("/metadata/identity/oauth2/token", any(imds_token))
        .route("/metadata/identity/oauth2/token/", any(imds_token))
        .route("/msi/token", any(app_service_token))
        .route("/msi/token/", any(app_service_token))
        .route("/arc/metadata/identity/oauth2/token", any(arc_token))
        .route("/arc/metadata/identity/oauth2/token/", any(arc_token));
    let prefixed = Router::new()
        .route(
            "/targets/{name}/metadata/identity/oauth2/token",
            any(imds_token_for),
        )
        .route(
            "/targets/{name}/metadata/identity/oauth2/token/",
            any(imds_token_for),
        )
        .route("/targets/{name}/msi/token", any(app_service_token_for))
        .route("/targets/{name}/msi/token/", any(app_service_token_for))
        .route(
            "/targets/{name}/arc/metadata/identity/oauth2/token",
            any(arc_token_for),
        )
        .route(
            "/targets/{name}/arc/metadata/identity/oauth2/token/",
            any(arc_token_for),
        );
    Router::new()
        .merge(endpoints)
        .merge(prefixed)
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(app)
}

async fn readyz(State(app): State<Arc<App>>) -> Response {
    if app.is_ready() {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "prefetching tokens").into_response()
    }
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        dialect::no_store_json(),
        r#"{"error":"not_found","error_description":"No such endpoint. Token endpoints: /metadata/identity/oauth2/token (IMDS), /msi/token (App Service)"}"#,
    )
        .into_response()
}

async fn imds_token(
    State(app): State<Arc<App>>,
    method: Method,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    serve_imds(&app, None, &method, &headers, q.as_deref()).await
}

async fn imds_token_for(
    State(app): State<Arc<App>>,
    UrlPath(name): UrlPath<String>,
    method: Method,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    serve_imds(&app, Some(&name), &method, &headers, q.as_deref()).await
}

async fn app_service_token(
    State(app): State<Arc<App>>,
    method: Method,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    serve_app_service(&app, None, &method, &headers, q.as_deref(), &body).await
}

async fn app_service_token_for(
    State(app): State<Arc<App>>,
    UrlPath(name): UrlPath<String>,
    method: Method,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    serve_app_service(&app, Some(&name), &method, &headers, q.as_deref(), &body).await
}

async fn serve_imds(
    app: &App,
    prefix: Option<&str>,
    method: &Method,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Response {
    let req = match imds::parse(method, headers, query) {
        Ok(req) => req,
        Err(refusal) => return refused(Dialect::Imds, prefix, None, &refusal, imds::error),
    };
    respond(app, Dialect::Imds, prefix, &req, imds::error).await
}

async fn serve_app_service(
    app: &App,
    prefix: Option<&str>,
    method: &Method,
    headers: &HeaderMap,
    query: Option<&str>,
    body: &[u8],
) -> Response {
    let dialect = app_service::dialect_of(method, headers, query);
    // Cloud Shell speaks OAuth-style errors, like IMDS; the rest App Service's shape.
    let render: fn(&Refusal) -> Response = match dialect {
        Dialect::CloudShell => imds::error,
        _ => app_service::error,
    };
    match app_service::parse(dialect, method, headers, query, body, &app.identity_header) {
        Ok(req) => respond(app, dialect, prefix, &req, render).await,
        Err(refusal) => refused(dialect, prefix, None, &refusal, render),
    }
}

async fn arc_token(
    State(app): State<Arc<App>>,
    method: Method,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    serve_arc(&app, None, &method, &headers, q.as_deref()).await
}

async fn arc_token_for(
    State(app): State<Arc<App>>,
    UrlPath(name): UrlPath<String>,
    method: Method,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    serve_arc(&app, Some(&name), &method, &headers, q.as_deref()).await
}

async fn serve_arc(
    app: &App,
    prefix: Option<&str>,
    method: &Method,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Response {
    match app.arc_keys.parse(method, headers, query) {
        Ok(ArcRequest::Challenge(challenge)) => challenge,
        Ok(ArcRequest::Token(req)) => respond(app, Dialect::Arc, prefix, &req, arc::error).await,
        Err(refusal) => refused(Dialect::Arc, prefix, None, &refusal, arc::error),
    }
}

async fn respond(
    app: &App,
    dialect: Dialect,
    prefix: Option<&str>,
    req: &TokenRequest,
    render_error: fn(&Refusal) -> Response,
) -> Response {
    match app.token(prefix, req).await {
        Ok((token, lookup)) => {
            tracing::debug!(dialect = dialect.as_str(), target = prefix.unwrap_or("-"), resource = %req.resource, cache = lookup.as_str(), "token served");
            // Echo the id the caller named (Arc clients insist); else the app's client id.
            let client_id = match req.client_id.as_deref() {
                Some(id) => id,
                None => resolved_client_id(app, prefix, req),
            };
            dialect::token_response(&token, req, client_id)
        }
        Err(refusal) => refused(dialect, prefix, Some(&req.resource), &refusal, render_error),
    }
}

fn resolved_client_id<'a>(app: &'a App, prefix: Option<&str>, req: &TokenRequest) -> &'a str {
    let selector = Selector {
        prefix,
        client_id: None,
        object_id: req.object_id.as_deref(),
        resource_id: req.resource_id.as_deref(),
        tenant_id: req.tenant_id.as_deref(),
    };
    target::resolve(&app.config, &selector, &req.resource)
        .map_or("", |r| r.target.client_id.as_str())
}

/// Logs a refusal once, here where it is handled, and renders it in the dialect's shape.
fn refused(
    dialect: Dialect,
    prefix: Option<&str>,
    resource: Option<&str>,
    refusal: &Refusal,
    render: fn(&Refusal) -> Response,
) -> Response {
    let (status, _) = refusal.status();
    match refusal {
        // Probes arrive on every SDK start: not worth more than debug.
        Refusal::MissingMetadata => tracing::debug!(
            dialect = dialect.as_str(),
            "request without Metadata header (probe)"
        ),
        _ => tracing::info!(
            dialect = dialect.as_str(),
            target = prefix.unwrap_or("-"),
            resource = resource.unwrap_or("-"),
            status = status.as_u16(),
            reason = %refusal.message(),
            "token refused"
        ),
    }
    render(refusal)
}

/// Serves until `shutdown` completes, then drains in-flight requests for at most
/// [`SHUTDOWN_GRACE`]. Prefetch runs alongside.
pub async fn run(
    app: Arc<App>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let addr: SocketAddr = listener.local_addr()?;
    tracing::info!(listen = %addr, targets = app.config.targets.len(), "serving tokens");
    if !app.is_ready() {
        tokio::spawn(app.clone().prefetch());
    }
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let server = axum::serve(listener, router(app)).with_graceful_shutdown(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let server = std::pin::pin!(server.into_future());
    tokio::select! {
        result = server => result,
        () = async {
            let _ = stop_rx.wait_for(|stop| *stop).await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => {
            tracing::warn!(grace_s = SHUTDOWN_GRACE.as_secs(), "in-flight requests did not finish in time; exiting");
            Ok(())
        }
    }
}
