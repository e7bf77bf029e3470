//! The [`Sim`] handle, the state its routes share, and the axum router.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::config::{Identity, SimConfig};
use crate::fault::{Fault, FaultQueues, Route};
use crate::token::{self, Keys, Signer};
use crate::{app_service, entra, imds};

/// How long [`Sim::shutdown`] lets open connections finish before it aborts the server task.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Requests received per route, faulted ones included.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Requests to the IMDS token route.
    pub imds: u64,
    /// Requests to the App Service token route.
    pub app_service: u64,
    /// Requests to Entra's token route.
    pub entra: u64,
}

/// One request to Entra's token endpoint and how it ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExchangeRecord {
    /// The tenant in the request path.
    pub tenant: String,
    /// The `client_id` form field (empty when missing).
    pub client_id: String,
    /// The `scope` form field (empty when missing).
    pub scope: String,
    /// The issued access token, or the error: `"AADSTS700016"`-style codes for rejections,
    /// `"fault:503"` for scripted faults.
    pub outcome: Result<String, String>,
}

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

/// What the route handlers share.
pub(crate) struct State {
    pub(crate) config: SimConfig,
    pub(crate) keys: Keys,
    // std's Mutex rather than tokio's: every critical section is short and never awaits.
    counters: Mutex<Counters>,
    faults: Mutex<FaultQueues>,
    exchanges: Mutex<Vec<ExchangeRecord>>,
    issued: Mutex<Vec<String>>,
}

/// A freshly issued managed-identity token and the times its 200 body reports.
pub(crate) struct MiToken {
    pub(crate) token: String,
    pub(crate) not_before: u64,
    pub(crate) expires_on: u64,
    pub(crate) expires_in: u64,
}

/// How a request names a managed identity.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Selector<'a> {
    System,
    ClientId(&'a str),
    ObjectId(&'a str),
    ResourceId(&'a str),
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
        let state = Arc::new(State {
            config,
            keys: Keys::load()?,
            counters: Mutex::default(),
            faults: Mutex::default(),
            exchanges: Mutex::default(),
            issued: Mutex::default(),
        });
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
        lock(&self.inner.state.counters).clone()
    }

    /// Queues a scripted reply for `route`; faults answer in FIFO order.
    pub fn push_fault(&self, route: Route, fault: Fault) {
        lock(&self.inner.state.faults).push(route, fault);
    }

    /// Drops every queued fault on every route.
    pub fn clear_faults(&self) {
        lock(&self.inner.state.faults).clear();
    }

    /// Every request Entra's route received, in order.
    pub fn exchanges(&self) -> Vec<ExchangeRecord> {
        lock(&self.inner.state.exchanges).clone()
    }

    /// Every token string the simulator ever issued, for leak scans.
    pub fn issued(&self) -> Vec<String> {
        lock(&self.inner.state.issued).clone()
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

// === impl State ===

impl State {
    /// Counts the request and applies the route's scripted fault: sleeps its delay and returns
    /// it when it replaces the normal answer.
    pub(crate) async fn arrive(&self, route: Route) -> Option<Fault> {
        {
            let mut counters = lock(&self.counters);
            match route {
                Route::Imds => counters.imds += 1,
                Route::AppService => counters.app_service += 1,
                Route::Entra => counters.entra += 1,
            }
        }
        let fault = lock(&self.faults).next(route)?;
        if let Some(delay) = fault.delay {
            tokio::time::sleep(delay).await;
        }
        fault.replaces_answer().then_some(fault)
    }

    /// Signs and remembers the token, so leak scans can look for it.
    pub(crate) fn sign(
        &self,
        claims: &Value,
        signer: Signer,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let token = self.keys.sign(claims, signer)?;
        lock(&self.issued).push(token.clone());
        Ok(token)
    }

    pub(crate) fn record(&self, record: ExchangeRecord) {
        lock(&self.exchanges).push(record);
    }

    /// GUIDs and ARM ids compare without regard to case, as Azure does.
    pub(crate) fn find_identity(&self, selector: Selector<'_>) -> Option<&Identity> {
        let identities = &self.config.identities;
        match selector {
            Selector::System => identities.iter().find(|i| i.system_assigned),
            Selector::ClientId(id) => identities
                .iter()
                .find(|i| i.client_id.eq_ignore_ascii_case(id)),
            Selector::ObjectId(id) => identities
                .iter()
                .find(|i| i.object_id.eq_ignore_ascii_case(id)),
            Selector::ResourceId(id) => identities
                .iter()
                .find(|i| i.resource_id.eq_ignore_ascii_case(id)),
        }
    }

    /// A managed-identity token for `identity` whose `aud` is `resource` exactly.
    pub(crate) fn issue_mi_token(
        &self,
        identity: &Identity,
        resource: &str,
    ) -> Result<MiToken, jsonwebtoken::errors::Error> {
        let now = token::now();
        let lifetime = self.config.mi_token_lifetime.as_secs();
        let claims = token::mi_claims(
            &self.config.home_tenant,
            &identity.client_id,
            &identity.object_id,
            resource,
            now,
            lifetime,
            self.keys.unique_id(),
        );
        Ok(MiToken {
            token: self.sign(&claims, Signer::Genuine)?,
            not_before: now,
            expires_on: now + lifetime,
            expires_in: lifetime,
        })
    }
}

fn router(state: Arc<State>) -> Router {
    Router::new()
        .route("/metadata/identity/oauth2/token", get(imds::token))
        // Clients that take the host from AZURE_POD_IDENTITY_AUTHORITY_HOST may add a slash.
        .route("/metadata/identity/oauth2/token/", get(imds::token))
        .route("/msi/token", get(app_service::token))
        .route("/msi/token/", get(app_service::token))
        .route("/{tenant}/oauth2/v2.0/token", post(entra::token))
        // For processes outside this one (the benchmark): the per-route request counts.
        .route("/_sim/counters", get(counters))
        // For the SDK conformance suite: what Entra issued, to compare with what clients got.
        .route("/_sim/exchanges", get(exchanges))
        .fallback(not_found)
        .with_state(state)
}

async fn counters(axum::extract::State(state): axum::extract::State<Arc<State>>) -> Response {
    let c = lock(&state.counters).clone();
    Json(json!({"imds": c.imds, "app_service": c.app_service, "entra": c.entra})).into_response()
}

/// Every Entra exchange so far, in order: `tenant`, `client_id`, `scope`, and either the issued
/// `access_token` or the `error` (an AADSTS code, or `fault:<status>`).
async fn exchanges(axum::extract::State(state): axum::extract::State<Arc<State>>) -> Response {
    let records: Vec<Value> = lock(&state.exchanges)
        .iter()
        .map(|r| {
            let mut record =
                json!({"tenant": r.tenant, "client_id": r.client_id, "scope": r.scope});
            match &r.outcome {
                Ok(token) => record["access_token"] = json!(token),
                Err(error) => record["error"] = json!(error),
            }
            record
        })
        .collect();
    Json(Value::Array(records)).into_response()
}

async fn not_found(uri: Uri) -> Response {
    let body =
        json!({"error": "not_found", "error_description": format!("No route for {}", uri.path())});
    (StatusCode::NOT_FOUND, Json(body)).into_response()
}

/// Query parameters by name; real IMDS rejects a repeated name, so this returns it as the error.
pub(crate) fn parse_query(raw: Option<&str>) -> Result<HashMap<String, String>, String> {
    let mut params = HashMap::new();
    for (key, value) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        if params.insert(key.to_string(), value.into_owned()).is_some() {
            return Err(key.into_owned());
        }
    }
    Ok(params)
}

/// A JSON reply with `status`, plus the fault's `Retry-After` when it has one.
pub(crate) fn reply(status: u16, body: Value, retry_after: Option<&str>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, Json(body)).into_response();
    if let Some(value) = retry_after.and_then(|v| HeaderValue::from_str(v).ok()) {
        response.headers_mut().insert("retry-after", value);
    }
    response
}

/// Locks `mutex`, ignoring poisoning: the data are plain records that stay consistent.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
