//! The target-token cache: bounded, one upstream fetch per key at a time, refresh ahead of
//! expiry in the background, failures remembered so a crowd of callers cannot hammer Entra.
//!
//! The hit path is one moka lookup and one lock-free `ArcSwap` load. Fetches run in their own
//! task, so a caller that gives up (its wait bound, or its connection closing) never cancels
//! the fetch that other callers, and the next one, are waiting for.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::CacheSettings;
use crate::token::AccessToken;
use crate::upstream::{failure_ttl, FetchError, TokenKey, Upstream};

/// How a token was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Served from the cache.
    Hit,
    /// Served from the cache; a background refresh has been started or is running.
    HitRefreshing,
    /// Fetched while the caller waited.
    Miss,
}

impl Lookup {
    /// For logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Lookup::Hit => "hit",
            Lookup::HitRefreshing => "refresh",
            Lookup::Miss => "miss",
        }
    }
}

/// Why no token was served.
#[derive(Debug, Clone)]
pub enum CacheError {
    /// Upstream failed (now, or recently enough that the failure is remembered).
    Upstream {
        /// The failure.
        error: Arc<FetchError>,
        /// Until when it is remembered: the caller's Retry-After.
        retry_in: Duration,
    },
    /// Upstream did not answer within the caller's wait bound; the fetch goes on.
    Timeout,
}

type Outcome = Result<Arc<AccessToken>, Arc<FetchError>>;

/// One key's state.
#[derive(Default)]
struct Slot {
    /// The current token; read lock-free on every hit.
    token: ArcSwapOption<AccessToken>,
    /// Fetch bookkeeping, touched only on misses and refreshes. A std mutex: it is never
    /// held across an await.
    state: Mutex<SlotState>,
}

#[derive(Default)]
struct SlotState {
    /// The fetch in flight, if any.
    inflight: Option<watch::Receiver<Option<Outcome>>>,
    /// The last failure and until when it stands.
    failure: Option<(Arc<FetchError>, Instant)>,
}

impl Slot {
    fn state(&self) -> std::sync::MutexGuard<'_, SlotState> {
        // A panic elsewhere cannot leave SlotState inconsistent (every write is one field).
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The cache of target-tenant tokens.
pub struct TokenCache {
    slots: moka::sync::Cache<TokenKey, Arc<Slot>>,
    upstream: Arc<Upstream>,
    error_ttl: Duration,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("keys", &self.slots.entry_count())
            .finish()
    }
}

impl TokenCache {
    /// An empty cache in front of `upstream`.
    pub fn new(upstream: Arc<Upstream>, settings: &CacheSettings) -> Self {
        TokenCache {
            slots: moka::sync::Cache::builder()
                .max_capacity(settings.max_keys)
                .time_to_idle(settings.idle_ttl)
                .build(),
            upstream,
            error_ttl: settings.error_ttl,
        }
    }

    /// The upstream behind the cache.
    pub fn upstream(&self) -> &Arc<Upstream> {
        &self.upstream
    }

    /// A valid token for `key`: from the cache, or fetched while the caller waits at most `wait`.
    pub async fn get(
        &self,
        key: &TokenKey,
        wait: Duration,
    ) -> Result<(Arc<AccessToken>, Lookup), CacheError> {
        let slot = match self.slots.get(key) {
            Some(slot) => slot,
            None => self.slots.get_with_by_ref(key, Default::default),
        };
        let now = Instant::now();
        if let Some(token) = slot.token.load_full() {
            if token.is_valid(now) {
                if now < token.refresh_at {
                    return Ok((token, Lookup::Hit));
                }
                // Due for refresh: serve this one, refresh behind the caller's back.
                self.start_fetch(key, &slot, now);
                return Ok((token, Lookup::HitRefreshing));
            }
        }
        let mut rx = {
            let mut state = slot.state();
            if let Some((error, until)) = &state.failure {
                if now < *until {
                    return Err(CacheError::Upstream {
                        error: error.clone(),
                        retry_in: *until - now,
                    });
                }
            }
            match &state.inflight {
                Some(rx) => rx.clone(),
                None => self.spawn_fetch(key.clone(), slot.clone(), &mut state),
            }
        };
        let outcome = tokio::time::timeout(wait, rx.wait_for(Option::is_some)).await;
        match outcome {
            Ok(Ok(done)) => match done.as_ref() {
                Some(Ok(token)) => Ok((token.clone(), Lookup::Miss)),
                Some(Err(error)) => Err(CacheError::Upstream {
                    error: error.clone(),
                    retry_in: failure_ttl(error, self.error_ttl),
                }),
                None => Err(CacheError::Timeout),
            },
            // Timed out, or the fetch task vanished (runtime shutting down).
            Ok(Err(_)) | Err(_) => Err(CacheError::Timeout),
        }
    }

    /// Starts a background refresh unless one is running or a remembered failure says wait.
    fn start_fetch(&self, key: &TokenKey, slot: &Arc<Slot>, now: Instant) {
        let mut state = slot.state();
        let backing_off = state
            .failure
            .as_ref()
            .is_some_and(|(_, until)| now < *until);
        if state.inflight.is_none() && !backing_off {
            self.spawn_fetch(key.clone(), slot.clone(), &mut state);
        }
    }

    fn spawn_fetch(
        &self,
        key: TokenKey,
        slot: Arc<Slot>,
        state: &mut SlotState,
    ) -> watch::Receiver<Option<Outcome>> {
        let (tx, rx) = watch::channel(None);
        state.inflight = Some(rx.clone());
        let upstream = self.upstream.clone();
        let error_ttl = self.error_ttl;
        tokio::spawn(async move {
            let outcome = match upstream.fetch(&key).await {
                Ok(token) => {
                    let token = Arc::new(token);
                    slot.token.store(Some(token.clone()));
                    tracing::debug!(tenant = %key.tenant, resource = %key.resource, expires_in_s = token.lifetime.as_secs(), "token fetched");
                    Ok(token)
                }
                Err(error) => {
                    let error = Arc::new(error);
                    tracing::warn!(tenant = %key.tenant, client_id = %key.client_id, resource = %key.resource, error = %error, "token fetch failed");
                    Err(error)
                }
            };
            let mut state = slot.state();
            state.inflight = None;
            state.failure = match &outcome {
                Ok(_) => None,
                Err(e) => Some((e.clone(), Instant::now() + failure_ttl(e, error_ttl))),
            };
            // Nobody waiting is fine: the token is stored in the slot either way.
            let _ = tx.send(Some(outcome));
        });
        rx
    }

    /// Number of keys held (approximate; for metrics and tests).
    pub fn len(&self) -> u64 {
        self.slots.run_pending_tasks();
        self.slots.entry_count()
    }

    /// True when no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
