//! The [`Sim`] handle and the axum router: binding, serving and stopping, the routes of each
//! upstream, and the `/_sim/*` debug routes.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::config::SimConfig;
use crate::fault::{Fault, Route};
use crate::state::{lock, Counters, ExchangeRecord, MetadataRecord, Selector, State};
use crate::token::{self, Signer};
use crate::{app_service, entra, imds, metadata};

/// How long [`Sim::shutdown`] lets open connections finish before it aborts the server task.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// A running simulator. Cheap to clone; the server stops on [`Sim::shutdown`] or when the last
/// clone is dropped.
#[derive(Clone)]
pub struct Sim {
    inner: Arc<Inner>,
}

struct Inner {
    state: Arc<State>,
    addr: SocketAddr,
    stop: Mutex<Option<oneshot::Sender<()>>>,
    task: Mutex<Option<JoinHandle<()>>>,
}

// === impl Sim ===

impl Sim {
    /// Binds `addr` (use `127.0.0.1:0` in tests), spawns the server task and returns.
    pub async fn start(config: SimConfig, addr: SocketAddr) -> std::io::Result<Sim> {
        let listener = TcpListener::bind(addr).await?;
        Sim::serve(config, listener)
    }

    /// Serves on an already bound listener; spawns the server task (so it must run inside a
    /// tokio runtime) and returns.
    pub fn serve(config: SimConfig, listener: TcpListener) -> std::io::Result<Sim> {
        let addr = listener.local_addr()?;
        let state = Arc::new(State::new(config)?);
        let app = router(state.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async {
                // A dropped sender means the handle is gone; stop either way.
                let _ = stopped.await;
            });
            if let Err(error) = serve.await {
                tracing::error!(%error, "simulator server failed");
            }
        });
        tracing::debug!(%addr, "simulator listening");
        Ok(Sim {
            inner: Arc::new(Inner {
                state,
                addr,
                stop: Mutex::new(Some(stop)),
                task: Mutex::new(Some(task)),
            }),
        })
    }

    /// Stops the server: open connections get a short grace period, then the task is aborted.
    pub async fn shutdown(self) {
        if let Some(stop) = lock(&self.inner.stop).take() {
            let _ = stop.send(());
        }
        let task = lock(&self.inner.task).take();
        if let Some(mut task) = task {
            if tokio::time::timeout(SHUTDOWN_GRACE, &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// `http://HOST:PORT`, without a trailing slash; an unspecified bind address becomes 127.0.0.1.
    pub fn url(&self) -> String {
        let mut addr = self.inner.addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(Ipv4Addr::LOCALHOST.into());
        }
        format!("http://{addr}")
    }

    /// The IMDS base URL (what `AZURE_POD_IDENTITY_AUTHORITY_HOST` would hold).
    pub fn imds_endpoint(&self) -> String {
        self.url()
    }

    /// The App Service identity endpoint (what `IDENTITY_ENDPOINT` would hold).
    pub fn app_service_endpoint(&self) -> String {
        format!("{}/msi/token", self.url())
    }

    /// The Entra authority host; token requests go to `{authority_host}/{tenant}/oauth2/v2.0/token`.
    pub fn authority_host(&self) -> String {
        self.url()
    }

    /// The world the simulator was started with.
    pub fn config(&self) -> &SimConfig {
        &self.inner.state.config
    }

    /// A snapshot of the per-route request counters.
    pub fn counters(&self) -> Counters {
        self.inner.state.counters()
    }

    /// Queues a scripted reply for `route`; faults answer in FIFO order.
    pub fn push_fault(&self, route: Route, fault: Fault) {
        self.inner.state.push_fault(route, fault);
    }

    /// Drops every queued fault on every route.
    pub fn clear_faults(&self) {
        self.inner.state.clear_faults();
    }

    /// Every request to the rest of IMDS (instance metadata, scheduled events, …), in order,
    /// as it arrived.
    pub fn metadata_requests(&self) -> Vec<MetadataRecord> {
        lock(&self.inner.state.metadata_records).clone()
    }

    /// Every request Entra's route received, in order (none when the world keeps no
    /// records: [`SimConfig::keep_records`]).
    pub fn exchanges(&self) -> Vec<ExchangeRecord> {
        self.inner.state.exchanges()
    }

    /// Revokes `token`: the simulated resource refuses it from now on (what a resource does
    /// when Entra tells it a token is no longer good, e.g. after the app was disabled).
    pub fn revoke(&self, token: &str) {
        self.inner.state.revoke(token);
    }

    /// What the simulated resource says to `token`: `false` once it was revoked.
    pub fn resource_accepts(&self, token: &str) -> bool {
        !self.inner.state.is_revoked(token)
    }

    /// Every token string the simulator ever issued, for leak scans (none when the world keeps
    /// no records: [`SimConfig::keep_records`]).
    pub fn issued(&self) -> Vec<String> {
        self.inner.state.issued()
    }

    /// A projected service-account token, signed with the simulator's key. A zero `lifetime`
    /// gives a token that is already expired by the time Entra sees it.
    pub fn issue_k8s_token(
        &self,
        issuer: &str,
        subject: &str,
        audience: &str,
        lifetime: Duration,
    ) -> String {
        let claims = token::k8s_claims(issuer, subject, audience, lifetime.as_secs());
        self.sign_claims(&claims)
    }

    /// A managed-identity token for the identity with `object_id` and audience `audience`, as
    /// IMDS would issue it; `None` when the simulator knows no such identity.
    pub fn issue_mi_token(&self, object_id: &str, audience: &str) -> Option<String> {
        let state = &self.inner.state;
        let identity = state.find_identity(Selector::ObjectId(object_id))?;
        state
            .issue_mi_token(identity, audience)
            .ok()
            .map(|t| t.token)
    }

    /// The claims of a managed-identity token for `object_id` and `audience`, signed with the
    /// rogue key, so Entra rejects the signature (AADSTS7000274).
    pub fn issue_forged_assertion(&self, object_id: &str, audience: &str) -> String {
        let state = &self.inner.state;
        let client_id = state
            .find_identity(Selector::ObjectId(object_id))
            .map_or(object_id, |identity| identity.client_id.as_str());
        let claims = token::mi_claims(
            &state.config.home_tenant,
            client_id,
            object_id,
            audience,
            token::now(),
            state.config.mi_token_lifetime.as_secs(),
            state.keys.unique_id(),
        );
        state
            .sign(&claims, Signer::Rogue)
            .expect("RS256 signing with an embedded key fails only if the system RNG does")
    }

    /// Any claims, signed with the simulator's genuine key: for crafting assertions in tests.
    pub fn sign_claims(&self, claims: &Value) -> String {
        self.inner
            .state
            .sign(claims, Signer::Genuine)
            .expect("RS256 signing with an embedded key fails only if the system RNG does")
    }

    /// The payload claims of a JWT, without verification (for tests).
    pub fn decode(token: &str) -> Option<Value> {
        token::decode_payload(token)
    }
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("addr", &self.inner.addr)
            .finish_non_exhaustive()
    }
}

// === impl Inner ===

impl Drop for Inner {
    fn drop(&mut self) {
        // The last handle is gone: nobody can shut the server down any more, so stop it now.
        if let Some(task) = lock(&self.task).take() {
            task.abort();
        }
    }
}

fn router(state: Arc<State>) -> Router {
    Router::new()
        .route("/metadata/identity/oauth2/token", get(imds::token))
        // Clients that take the host from AZURE_POD_IDENTITY_AUTHORITY_HOST may add a slash.
        .route("/metadata/identity/oauth2/token/", get(imds::token))
        // The rest of IMDS (the token route above takes precedence).
        .route("/metadata/{*path}", any(metadata::handle))
        .route("/msi/token", get(app_service::token))
        .route("/msi/token/", get(app_service::token))
        .route("/{tenant}/oauth2/v2.0/token", post(entra::token))
        // For processes outside this one (the benchmark): the per-route request counts.
        .route("/_sim/counters", get(counters))
        // For the SDK conformance suite: what Entra issued, to compare with what clients got.
        .route("/_sim/exchanges", get(exchanges))
        // For the benchmark in another process: script a fault (an Entra 429 window) and end it.
        .route("/_sim/faults", post(push_fault).delete(clear_faults))
        .fallback(not_found)
        .with_state(state)
}

async fn counters(extract::State(state): extract::State<Arc<State>>) -> Response {
    let c = state.counters();
    Json(json!({"imds": c.imds, "app_service": c.app_service, "entra": c.entra})).into_response()
}

/// Every Entra exchange so far, in order: `tenant`, `client_id`, `scope`, the `claims` sent
/// (when any), and either the issued `access_token` or the `error` (an AADSTS code, or
/// `fault:<status>`).
async fn exchanges(extract::State(state): extract::State<Arc<State>>) -> Response {
    let records: Vec<Value> = state
        .exchanges()
        .iter()
        .map(|r| {
            let mut record =
                json!({"tenant": r.tenant, "client_id": r.client_id, "scope": r.scope});
            if let Some(claims) = &r.claims {
                record["claims"] = json!(claims);
            }
            match &r.outcome {
                Ok(token) => record["access_token"] = json!(token),
                Err(error) => record["error"] = json!(error),
            }
            record
        })
        .collect();
    Json(Value::Array(records)).into_response()
}

/// `POST /_sim/faults?route=entra&status=429&retry_after=30&times=forever`: queues a fault, as
/// [`Sim::push_fault`] does (`route` is `imds`, `app_service` or `entra`; `times` a count or
/// `forever`, default 1; `retry_after` optional). 204, or 400 naming what is wrong.
async fn push_fault(
    extract::State(state): extract::State<Arc<State>>,
    extract::RawQuery(query): extract::RawQuery,
) -> Response {
    match fault_from_query(query.as_deref()) {
        Ok((route, fault)) => {
            state.push_fault(route, fault);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(message) => {
            let body = json!({"error": "invalid_request", "error_description": message});
            (StatusCode::BAD_REQUEST, Json(body)).into_response()
        }
    }
}

/// `DELETE /_sim/faults`: drops every queued fault, as [`Sim::clear_faults`] does.
async fn clear_faults(extract::State(state): extract::State<Arc<State>>) -> Response {
    state.clear_faults();
    StatusCode::NO_CONTENT.into_response()
}

fn fault_from_query(query: Option<&str>) -> Result<(Route, Fault), String> {
    let params =
        crate::wire::parse_query(query).map_err(|name| format!("{name} is given twice"))?;
    let route = match params.get("route").map(String::as_str) {
        Some("imds") => Route::Imds,
        Some("app_service") => Route::AppService,
        Some("entra") => Route::Entra,
        Some("metadata") => Route::Metadata,
        other => {
            return Err(format!(
                "route must be imds, app_service, entra or metadata, not {other:?}"
            ))
        }
    };
    let status = params
        .get("status")
        .and_then(|s| s.parse::<u16>().ok())
        .filter(|s| (200..600).contains(s))
        .ok_or("status must be an HTTP status, e.g. status=429")?;
    let mut fault = Fault::status(status);
    if let Some(value) = params.get("retry_after") {
        fault = fault.retry_after(value);
    }
    match params.get("times").map(String::as_str) {
        None => {}
        Some("forever") => fault = fault.forever(),
        Some(n) => match n.parse::<usize>() {
            Ok(n) if n > 0 => fault = fault.times(n),
            _ => {
                return Err(format!(
                    "times must be a positive count or forever, not {n:?}"
                ))
            }
        },
    }
    Ok((route, fault))
}

async fn not_found(uri: Uri) -> Response {
    let body =
        json!({"error": "not_found", "error_description": format!("No route for {}", uri.path())});
    (StatusCode::NOT_FOUND, Json(body)).into_response()
}
