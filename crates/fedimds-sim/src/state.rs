//! What the route handlers share: the world, the signing keys, and the records the [`Sim`]
//! handle reads back (counters, scripted faults, exchanges, issued tokens).
//!
//! The route modules and the router depend on this module; it depends on none of them.
//!
//! [`Sim`]: crate::Sim

use std::sync::{Mutex, MutexGuard};

use serde_json::Value;

use crate::config::{Identity, SimConfig};
use crate::fault::{Fault, FaultQueues, Route};
use crate::latency::Jitter;
use crate::token::{self, Keys, Signer};

/// Requests received per route, faulted ones included.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Requests to the IMDS token route.
    pub imds: u64,
    /// Requests to the App Service token route.
    pub app_service: u64,
    /// Requests to Entra's token route.
    pub entra: u64,
    /// Requests to the rest of IMDS (instance metadata, scheduled events, …).
    pub metadata: u64,
}

/// One request to the rest of IMDS, as it arrived.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetadataRecord {
    /// The method.
    pub method: String,
    /// The request target: path and query.
    pub target: String,
    /// Every header, in the order received (names lower case, as parsed).
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body.
    pub body: Vec<u8>,
}

/// The scheduled events document: its incarnation, and the events not yet started.
#[derive(Clone, Debug)]
pub(crate) struct ScheduledEvents {
    pub(crate) incarnation: u64,
    pub(crate) pending: Vec<String>,
}

impl Default for ScheduledEvents {
    fn default() -> Self {
        ScheduledEvents {
            incarnation: 1,
            pending: vec!["602d9444-d2cd-49c7-8624-8643e7171297".to_owned()],
        }
    }
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
    /// The `claims` form field (client capabilities), when sent.
    pub claims: Option<String>,
    /// The issued access token, or the error: `"AADSTS700016"`-style codes for rejections,
    /// `"fault:503"` for scripted faults.
    pub outcome: Result<String, String>,
}

/// What the route handlers share.
pub(crate) struct State {
    pub(crate) config: SimConfig,
    pub(crate) keys: Keys,
    // std's Mutex rather than tokio's: every critical section is short and never awaits.
    counters: Mutex<Counters>,
    faults: Mutex<FaultQueues>,
    exchanges: Mutex<Vec<ExchangeRecord>>,
    /// Tokens the simulated resource refuses (revoked by the test).
    revoked: Mutex<Vec<String>>,
    issued: Mutex<Vec<String>>,
    /// Requests to the rest of IMDS, in order.
    pub(crate) metadata_records: Mutex<Vec<MetadataRecord>>,
    pub(crate) scheduled_events: Mutex<ScheduledEvents>,
    /// Spreads each route's configured latency.
    jitter: Jitter,
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

// === impl State ===

impl State {
    /// A world with nothing counted, scripted or issued yet.
    pub(crate) fn new(config: SimConfig) -> std::io::Result<State> {
        Ok(State {
            config,
            keys: Keys::load()?,
            counters: Mutex::default(),
            faults: Mutex::default(),
            exchanges: Mutex::default(),
            revoked: Mutex::default(),
            issued: Mutex::default(),
            metadata_records: Mutex::default(),
            scheduled_events: Mutex::default(),
            jitter: Jitter::new(seed()),
        })
    }

    /// Counts the request, waits the route's configured latency, and applies the route's
    /// scripted fault: sleeps its delay and returns it (it may replace the normal answer, or
    /// shape it).
    pub(crate) async fn arrive(&self, route: Route) -> Option<Fault> {
        {
            let mut counters = lock(&self.counters);
            match route {
                Route::Imds => counters.imds += 1,
                Route::AppService => counters.app_service += 1,
                Route::Entra => counters.entra += 1,
                Route::Metadata => counters.metadata += 1,
            }
        }
        if let Some(latency) = self.config.latency(route) {
            tokio::time::sleep(latency.at(self.jitter.next_unit())).await;
        }
        let fault = lock(&self.faults).next(route)?;
        if let Some(delay) = fault.delay {
            tokio::time::sleep(delay).await;
        }
        Some(fault)
    }

    /// Signs and remembers the token (unless told to keep no records), so leak scans can look
    /// for it.
    pub(crate) fn sign(
        &self,
        claims: &Value,
        signer: Signer,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let token = self.keys.sign(claims, signer)?;
        if self.config.keep_records {
            lock(&self.issued).push(token.clone());
        }
        Ok(token)
    }

    pub(crate) fn record(&self, record: ExchangeRecord) {
        if self.config.keep_records {
            lock(&self.exchanges).push(record);
        }
    }

    /// Marks a token revoked: the simulated resource refuses it from now on.
    pub(crate) fn revoke(&self, token: &str) {
        lock(&self.revoked).push(token.to_owned());
    }

    /// Whether a token was revoked.
    pub(crate) fn is_revoked(&self, token: &str) -> bool {
        lock(&self.revoked).iter().any(|t| t == token)
    }

    /// A snapshot of the per-route request counters.
    pub(crate) fn counters(&self) -> Counters {
        lock(&self.counters).clone()
    }

    /// Every request Entra's route received, in order.
    pub(crate) fn exchanges(&self) -> Vec<ExchangeRecord> {
        lock(&self.exchanges).clone()
    }

    /// Every token string ever issued.
    pub(crate) fn issued(&self) -> Vec<String> {
        lock(&self.issued).clone()
    }

    /// Queues a scripted reply for `route`.
    pub(crate) fn push_fault(&self, route: Route, fault: Fault) {
        lock(&self.faults).push(route, fault);
    }

    /// Drops every queued fault on every route.
    pub(crate) fn clear_faults(&self) {
        lock(&self.faults).clear();
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

/// A different jitter sequence for each simulator (two simulators in one test do not wait in
/// step); the clock is only a seed.
fn seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Locks `mutex`, ignoring poisoning. Every mutex in this crate goes through here: each guards
/// plain records (or an `Option` that is only taken) that no panic can leave half-written, so
/// a panicked test handler must not take the whole simulator down with it.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
