//! The HTTP side: the token router (every dialect's endpoints, also under `/targets/{name}`),
//! the admin router (health, readiness, metrics), binding the sockets, and serving them until
//! shutdown. One token request's path is [`call`]'s; accepting connections is [`listener`]'s.

pub mod call;
pub mod door;
pub mod listener;
pub mod passthrough;
pub mod tls;

use std::future::Future;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use tokio::net::{TcpListener, UnixListener};

use crate::app::App;
use crate::caller::{host_allowed, HostRule};
use crate::config::{Config, RESERVED_FDS, SHUTDOWN_GRACE};
use crate::dialect;
use call::{app_service_token, arc_token, imds_token, service_fabric_token};
use listener::{Limits, Listener};
use tls::{CertError, ServerCert};

/// The token router: every dialect's endpoint (also under `/targets/{name}`), and health.
pub fn router(app: Arc<App>) -> Router {
    let mut router = Router::new();
    for prefix in ["", "/targets/{name}"] {
        // msal4j joins AZURE_POD_IDENTITY_AUTHORITY_HOST and the path with an extra `/`
        // (docs/client-protocols.md#java-azure-identity-and-msal4j).
        for path in [
            "/metadata/identity/oauth2/token",
            "/metadata/identity/oauth2/token/",
            "//metadata/identity/oauth2/token",
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
        // The rest of IMDS, at the root only (a captured 169.254.169.254 has no prefix).
        .route("/metadata/{*path}", any(passthrough::forward))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .with_state(app)
}

/// The Service Fabric listener's router: its one token path (also under `/targets/{name}`).
pub fn service_fabric_router(app: Arc<App>) -> Router {
    let mut router = Router::new();
    for prefix in ["", "/targets/{name}"] {
        for path in [
            "/metadata/identity/oauth2/token",
            "/metadata/identity/oauth2/token/",
        ] {
            router = router.route(&format!("{prefix}{path}"), any(service_fabric_token));
        }
    }
    router.fallback(service_fabric_not_found).with_state(app)
}

/// The admin router: liveness, readiness, metrics.
pub fn admin_router(app: Arc<App>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route_layer(axum::middleware::from_fn_with_state(
            app.clone(),
            admin_host_check,
        ))
        .with_state(app)
}

/// The admin listener's Host check: a DNS-rebinding page must not read `/metrics` (tenants,
/// apps and resources). Addresses pass, for the kubelet's probes (see [`HostRule::Admin`]).
async fn admin_host_check(
    State(app): State<Arc<App>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let config = &app.settings().config;
    if host_allowed(
        request.headers(),
        request.version(),
        config,
        HostRule::Admin,
    ) {
        next.run(request).await
    } else {
        (
            StatusCode::FORBIDDEN,
            "The Host header must name this host: a loopback name, an IP address, or a name in server.allowed_hosts\n",
        )
            .into_response()
    }
}

/// Ready once prefetched. An audit log that cannot record makes it not ready only with
/// `audit.fail_closed`, when no token is served: otherwise tokens still are, and taking the pod
/// out of service would do more harm than the lost lines (counted in
/// `fedimds_audit_failures_total`), so the body says so and the status stays 200.
async fn readyz(State(app): State<Arc<App>>) -> Response {
    if !app.is_ready() {
        return (StatusCode::SERVICE_UNAVAILABLE, "prefetching tokens").into_response();
    }
    match (
        app.audit_is_healthy(),
        app.settings().config.audit.fail_closed,
    ) {
        (true, _) => (StatusCode::OK, "ready").into_response(),
        (false, true) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the audit log cannot record lines and audit.fail_closed is set: no token is served",
        )
            .into_response(),
        (false, false) => (
            StatusCode::OK,
            "ready; the audit log cannot record lines (fedimds_audit_failures_total)",
        )
            .into_response(),
    }
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        )],
        app.metrics.render(&app.cache.figures()),
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

async fn service_fabric_not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        dialect::no_store_json(),
        r#"{"error":{"code":"NotFound","message":"No such endpoint. The Service Fabric token endpoint is /metadata/identity/oauth2/token"}}"#,
    )
        .into_response()
}

/// Why the listeners could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// A socket could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Socket {
        /// The address or socket path, and the key that named it.
        address: String,
        /// Why.
        source: std::io::Error,
    },
    /// The open-file limit leaves no room for `server.max_connections`.
    #[error("config key `server.max_connections` = {max_connections}: expected at most {fits} (the open-file limit is {limit}, and fedimds keeps {reserved} descriptors for itself); lower it, or raise the limit (LimitNOFILE= in systemd, ulimit -n)")]
    FileLimit {
        /// The configured cap.
        max_connections: usize,
        /// The largest cap that fits.
        fits: u64,
        /// The soft limit after raising it as far as allowed.
        limit: u64,
        /// Kept free beside the connections.
        reserved: u64,
    },
    /// The Service Fabric listener's certificate.
    #[error(transparent)]
    Certificate(#[from] CertError),
}

/// Raises the open-file soft limit as far as the hard limit allows, and checks that
/// `max_connections` fits under it with [`RESERVED_FDS`] to spare: past the limit, accepting
/// fails with EMFILE and every caller waits.
pub fn fit_file_limit(max_connections: usize) -> Result<(), BindError> {
    // Where the limit cannot be read or raised (not Linux), there is nothing to check.
    let Ok(limit) = rlimit::increase_nofile_limit(u64::MAX) else {
        return Ok(());
    };
    check_file_limit(max_connections, limit)
}

fn check_file_limit(max_connections: usize, limit: u64) -> Result<(), BindError> {
    let fits = limit.saturating_sub(RESERVED_FDS);
    if u64::try_from(max_connections).unwrap_or(u64::MAX) > fits {
        return Err(BindError::FileLimit {
            max_connections,
            fits,
            limit,
            reserved: RESERVED_FDS,
        });
    }
    Ok(())
}

/// The sockets to serve on, bound before serving so a bad address fails at start.
#[derive(Debug)]
pub struct Listeners {
    /// The token endpoints.
    pub token: TcpListener,
    /// The token endpoints on a Unix socket.
    pub unix: Option<UnixListener>,
    /// Health, readiness and metrics.
    pub admin: Option<TcpListener>,
    /// The Service Fabric dialect's HTTPS listener.
    pub service_fabric: Option<ServiceFabricListener>,
}

/// The Service Fabric listener: its socket and its certificate.
#[derive(Debug)]
pub struct ServiceFabricListener {
    /// The socket.
    pub socket: TcpListener,
    /// The certificate it serves.
    pub cert: ServerCert,
}

impl ServiceFabricListener {
    /// Binds `[service_fabric] listen`, when set, with its certificate (read, or generated and
    /// written where the config asks).
    pub async fn bind(config: &Config) -> Result<Option<ServiceFabricListener>, BindError> {
        let Some(addr) = config.service_fabric.listen else {
            return Ok(None);
        };
        let cert = ServerCert::for_config(&config.service_fabric)?;
        let socket = TcpListener::bind(addr)
            .await
            .map_err(|source| BindError::Socket {
                address: format!("{addr} (service_fabric.listen)"),
                source,
            })?;
        Ok(Some(ServiceFabricListener { socket, cert }))
    }
}

impl Listeners {
    /// Binds every listener the config names.
    pub async fn bind(config: &Config) -> Result<Listeners, BindError> {
        fit_file_limit(config.server.max_connections)?;
        let token = TcpListener::bind(config.server.listen)
            .await
            .map_err(|source| BindError::Socket {
                address: config.server.listen.to_string(),
                source,
            })?;
        let unix = match &config.server.unix_socket {
            Some(path) => Some(
                listener::bind_unix(path, config.server.unix_socket_mode).map_err(|source| {
                    BindError::Socket {
                        address: path.display().to_string(),
                        source,
                    }
                })?,
            ),
            None => None,
        };
        let admin = match config.admin.listen {
            Some(addr) => {
                Some(
                    TcpListener::bind(addr)
                        .await
                        .map_err(|source| BindError::Socket {
                            address: format!("{addr} (admin.listen)"),
                            source,
                        })?,
                )
            }
            None => None,
        };
        let service_fabric = ServiceFabricListener::bind(config).await?;
        Ok(Listeners {
            token,
            unix,
            admin,
            service_fabric,
        })
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
        max_connections_per_peer: config.server.max_connections_per_peer,
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
    if let Some(sf) = listeners.service_fabric {
        // What IDENTITY_SERVER_THUMBPRINT must hold: a certificate's hash, not a secret.
        tracing::info!(
            listen = %sf.socket.local_addr()?,
            thumbprint = %sf.cert.thumbprint,
            "serving Service Fabric tokens over HTTPS (IDENTITY_SERVER_THUMBPRINT={})",
            sf.cert.thumbprint
        );
        sockets.push((
            Listener::Tls(sf.socket, sf.cert.acceptor),
            service_fabric_router(app.clone()),
        ));
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (socket, routes) in sockets {
        tasks.spawn(listener::serve(
            socket,
            routes,
            limits,
            app.owners_wanted(),
            stop_rx.clone(),
            SHUTDOWN_GRACE,
        ));
    }
    shutdown.await;
    tracing::info!("shutting down: no new connections; finishing requests in flight");
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
    // The process may exit before the last `App` is dropped (the reload task holds one).
    app.arc_keys.clear();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_connections_must_fit_under_the_file_limit() {
        assert!(check_file_limit(1024, 1024 * 1024).is_ok());
        assert!(check_file_limit(960, 1024).is_ok());
        let err = check_file_limit(1024, 1024).unwrap_err().to_string();
        assert!(
            err.contains("server.max_connections") && err.contains("960"),
            "{err}"
        );
    }
}
