//! The target-token cache: bounded, one upstream fetch per key at a time, refresh ahead of
//! expiry in the background, failures remembered so a crowd of callers cannot hammer Entra.
//!
//! The hit path is one lock-free load in the front (`front.rs`: the slots of keys asked for
//! lately; other keys are looked up in moka), one lock-free `ArcSwap` load and relaxed atomic
//! reads.
//! Fetches run in their own task, so a caller that gives up (its wait bound, or its connection
//! closing) never cancels the fetch that other callers, and the next one, are waiting for.
//!
//! Refresh ahead: when a token is stored, a timer is set for its refresh point. When it fires,
//! the key is refreshed only if a caller used it since the last fetch; an idle key is left to
//! expire and age out of the cache. A failed refresh keeps the old token in service while it
//! is valid, and is retried when the remembered failure lapses, whether or not another caller
//! came meanwhile (the use that made the refresh still stands).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::cloud::CloudName;
use crate::config::{
    housekeeping_interval, CacheSettings, CACHE_ENTRY_OVERHEAD, MAX_EXPIRY_SERIES,
};
use crate::metrics::CacheFigures;
use crate::token::AccessToken;
use crate::upstream::{FetchError, KeyParts, TokenKey, Upstream};

mod fetch;
mod front;
mod key;
mod throttle;

use fetch::{spawn_fetch, start_refresh};
use front::Front;
use key::AsParts;
use throttle::Parked;

/// How a token was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Served from the cache.
    Hit,
    /// Served from the cache while a refresh is due, running, or failing: the token is valid
    /// but older than its refresh point.
    Stale,
    /// Fetched while the caller waited.
    Miss,
    /// Fetched while the caller waited, because it presented the cached token's hash: a
    /// resource refused that token (revocation), so it was dropped.
    Forced,
}

impl Lookup {
    /// For logs, and the metric's label (one of [`crate::metrics::LOOKUP_RESULTS`]).
    pub fn as_str(self) -> &'static str {
        match self {
            Lookup::Hit => "hit",
            Lookup::Stale => "stale",
            Lookup::Miss => "miss",
            Lookup::Forced => "forced",
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
    /// fedimds's own budget of upstream calls had no turn free for this key before the caller's
    /// wait would end: no call was made (now, or recently enough that it is remembered).
    OverBudget {
        /// The refusal, naming the budget and the key.
        error: Arc<FetchError>,
        /// Until a turn would come: the caller's Retry-After.
        retry_in: Duration,
    },
    /// The caller asked for too many keys the cache did not hold, too fast; try again after
    /// this. No key was made.
    NewKeysLimited(Duration),
}

type Outcome = Result<Arc<AccessToken>, Arc<FetchError>>;

/// The part of a caller's wait (`server.miss_timeout`) a cold miss may spend waiting for its
/// turn in the Entra budget; the rest is for the assertion and the exchange themselves.
const MISS_TURN_SHARE: f64 = 0.75;

/// The refusal for a failed fetch: an over-budget one is told apart, so it reads as such.
fn failed(error: Arc<FetchError>, retry_in: Duration) -> CacheError {
    if matches!(*error, FetchError::OverBudget { .. }) {
        CacheError::OverBudget { error, retry_in }
    } else {
        CacheError::Upstream { error, retry_in }
    }
}

/// One key's state.
struct Slot {
    /// Its key: housekeeping walks the slots, not the keys, and evicts an idle one by it.
    key: TokenKey,
    /// Set when the key left the cache: the front (`front.rs`) passes the slot over, and
    /// housekeeping's next pass drops it from its list.
    left: AtomicBool,
    /// The current token; read lock-free on every hit.
    token: ArcSwapOption<AccessToken>,
    /// Set by callers, cleared by the refresh timer: "someone still wants this key".
    used: AtomicBool,
    /// Set by callers, cleared by housekeeping, which notes when it last saw it set: the
    /// cache's idle clock (on tokio's time, which tests can pause; moka's would run on the
    /// wall clock, and cost every hit a clock read).
    seen: AtomicBool,
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
    /// Failed fetches in a row, for backing off through a long outage.
    failures_in_a_row: u32,
    /// When a caller last had the token dropped and fetched anew (revocation), so a caller
    /// cannot use it to call Entra more than once per `cache.min_forced_refresh`.
    last_forced: Option<Instant>,
    /// The key's refresh timer, aborted when the key leaves the cache (so neither the task nor
    /// what it holds outlives the key) or when a newer fetch sets the next one.
    timer: Option<tokio::task::AbortHandle>,
    /// When housekeeping last found the key used.
    last_seen: Option<Instant>,
}

impl Slot {
    fn new(key: TokenKey) -> Self {
        Slot {
            key,
            left: AtomicBool::new(false),
            token: ArcSwapOption::empty(),
            used: AtomicBool::new(false),
            seen: AtomicBool::new(false),
            state: Mutex::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, SlotState> {
        // A panic elsewhere cannot leave SlotState inconsistent (every write is one field).
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What the entry costs in bytes: its key, its token, and [`CACHE_ENTRY_OVERHEAD`].
    fn weight(&self, key: &TokenKey) -> u32 {
        let token = self
            .token
            .load()
            .as_ref()
            .map_or(0, |t| t.secret.expose().len());
        let bytes = key.tenant.len() + key.client_id.len() + key.resource.len() + token;
        u32::try_from(bytes)
            .unwrap_or(u32::MAX)
            .saturating_add(CACHE_ENTRY_OVERHEAD)
    }

    /// Whether the key has not been asked for in `ttl`, as housekeeping sees it.
    fn idle_past(&self, ttl: Duration, now: Instant) -> bool {
        let mut state = self.state();
        if self.seen.swap(false, Ordering::Relaxed) || state.last_seen.is_none() {
            state.last_seen = Some(now);
            return false;
        }
        state
            .last_seen
            .is_some_and(|seen| now.duration_since(seen) >= ttl)
    }

    /// The key left the cache: its timer stops and its token goes now, not at its refresh
    /// point (a fetch still running may hold the slot a little longer; it holds no token).
    fn evicted(&self) {
        self.left.store(true, Ordering::Relaxed);
        if let Some(timer) = self.state().timer.take() {
            timer.abort();
        }
        self.token.store(None);
    }

    /// Whether the key's last fetch failed (see [`TokenCache::remembered_failures`]).
    fn remembers_failure(&self) -> bool {
        self.state().failure.is_some()
    }

    fn mark_used(&self) {
        // Read first: on the hot path the flag is almost always set already, and a plain load
        // keeps the cache line shared between cores.
        if !self.used.load(Ordering::Relaxed) {
            self.used.store(true, Ordering::Relaxed);
        }
        if !self.seen.load(Ordering::Relaxed) {
            self.seen.store(true, Ordering::Relaxed);
        }
    }
}

/// Counts of what the cache did, for metrics.
#[derive(Debug, Default)]
struct CacheStats {
    /// Background refreshes started.
    refreshes: std::sync::atomic::AtomicU64,
    /// Background refreshes that failed while a valid token stayed in service.
    refresh_failures: std::sync::atomic::AtomicU64,
    /// Tokens dropped because a caller presented their hash (revocation).
    forced: std::sync::atomic::AtomicU64,
    /// Refresh timers alive: one per key holding a token, never more.
    timers: Arc<std::sync::atomic::AtomicI64>,
    /// Throttles opened (an app's, or the assertion source's).
    throttles: std::sync::atomic::AtomicU64,
    /// Keys held beyond what the Entra budget can refresh in one refresh window.
    shortfall: std::sync::atomic::AtomicU64,
}

/// The slots, by key.
type Slots = moka::sync::Cache<TokenKey, Arc<Slot>, foldhash::fast::RandomState>;

struct Inner {
    slots: Slots,
    /// The slots of keys asked for lately, found without moka.
    front: Front,
    /// Every slot in the cache, for housekeeping's pass: a pointer a key, where moka's
    /// iterator hashes and looks up every key again (0.4 µs a key optimized, so 40 ms every
    /// ten seconds for 100,000 keys; it was nearly half the time of the thirty-day soak,
    /// `tests/soak.rs`). A slot joins when its key is made, and leaves at the first pass after
    /// its key left the cache.
    listed: Mutex<Vec<Arc<Slot>>>,
    /// Each cold miss waits for its first turn in the Entra budget at most this part of the
    /// caller's wait, leaving the rest for the calls themselves.
    miss_turn_share: f64,
    /// Upstream fetches in flight at most; the rest wait their turn.
    fetches: tokio::sync::Semaphore,
    /// Swapped on reload; each fetch uses the one in force when it starts.
    upstream: arc_swap::ArcSwap<Upstream>,
    error_ttl: Duration,
    min_forced_refresh: Duration,
    idle_ttl: Duration,
    /// Apps (and the assertion source) the upstream throttles, until when.
    parked: Mutex<Parked>,
    stats: CacheStats,
}

impl Inner {
    /// A new key's slot, listed for housekeeping.
    fn new_slot(&self, key: &TokenKey) -> Arc<Slot> {
        let slot = Arc::new(Slot::new(key.clone()));
        self.listed().push(slot.clone());
        slot
    }

    fn listed(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Slot>>> {
        // Each write is one push or one retain: a panic cannot leave the list half-written.
        self.listed.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the `keys` holding a token could all be refreshed within the Entra budget if
    /// they came due together, in one refresh window of the shortest-lived of them (`shortest`;
    /// housekeeping): the gauge, and a log line when that changes, with the arithmetic.
    fn check_budget(&self, keys: u64, shortest: Option<Duration>) {
        let rate = self.upstream.load().budgets.entra.rate();
        let short =
            shortest.and_then(|lifetime| crate::upstream::budget::shortfall(keys, lifetime, rate));
        let beyond = short.as_ref().map_or(0, |s| s.beyond());
        let was = self.stats.shortfall.swap(beyond, Ordering::Relaxed);
        match short {
            Some(s) if was == 0 => tracing::warn!(
                shortfall = %s,
                "the budget of Entra calls is too small for the keys held: refreshes will queue for their turn, and cold keys with them"
            ),
            None if was > 0 => {
                tracing::info!(keys, "the keys held fit the budget of Entra calls again")
            }
            _ => {}
        }
    }
}

/// The cache of target-tenant tokens. Cheap to clone.
#[derive(Clone)]
pub struct TokenCache {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("keys", &self.inner.slots.entry_count())
            .finish()
    }
}

impl TokenCache {
    /// An empty cache in front of `upstream`, with at most `max_fetches` fetches in flight.
    pub fn new(upstream: Arc<Upstream>, settings: &CacheSettings, max_fetches: usize) -> Self {
        // One capacity, in bytes, bounds both the bytes and the keys: an entry weighs its
        // bytes, but never less than the bytes divided by the keys.
        let floor =
            u32::try_from(settings.max_bytes / settings.max_keys.max(1)).unwrap_or(u32::MAX);
        TokenCache {
            inner: Arc::new(Inner {
                slots: moka::sync::Cache::builder()
                    .max_capacity(settings.max_bytes)
                    .weigher(move |key: &TokenKey, slot: &Arc<Slot>| slot.weight(key).max(floor))
                    // No `time_to_idle`: housekeeping's idle sweep (on tokio's clock, which tests
                    // pause) already evicts idle keys, and moka's would read the clock and
                    // stamp the entry on every hit.
                    .eviction_listener(|_key, slot: Arc<Slot>, cause| {
                        // Re-weighing re-inserts the same slot: that is no leaving.
                        if cause != moka::notification::RemovalCause::Replaced {
                            slot.evicted();
                        }
                    })
                    // SipHash of the key was a tenth of a hit's instructions; foldhash, seeded
                    // per process, is a fraction of that (`BENCHMARKS.md`).
                    .build_with_hasher(foldhash::fast::RandomState::default()),
                front: Front::new(),
                listed: Mutex::default(),
                miss_turn_share: MISS_TURN_SHARE,
                fetches: tokio::sync::Semaphore::new(max_fetches),
                upstream: arc_swap::ArcSwap::new(upstream),
                error_ttl: settings.error_ttl,
                min_forced_refresh: settings.min_forced_refresh,
                idle_ttl: settings.idle_ttl,
                parked: Mutex::default(),
                stats: CacheStats::default(),
            }),
        }
    }

    /// Runs the cache's own bookkeeping every [`housekeeping_interval`]: keys idle past
    /// `cache.idle_ttl` leave (and their timers and tokens with them) even when no request
    /// comes to make moka do it. Holds the cache weakly: it ends when the cache is dropped.
    pub fn housekeeping(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let inner = Arc::downgrade(&self.inner);
        async move {
            let every = match inner.upgrade() {
                Some(inner) => housekeeping_interval(inner.idle_ttl),
                None => return,
            };
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(inner) = inner.upgrade() else { return };
                let now = Instant::now();
                // One pass over the keys: the idle ones, and what the others hold (for the
                // budget check).
                let mut idle = Vec::new();
                let (mut held, mut shortest) = (0u64, None::<Duration>);
                // Slots whose keys left the cache leave the list.
                inner.listed().retain(|slot| {
                    if slot.left.load(Ordering::Relaxed) {
                        return false;
                    }
                    if slot.idle_past(inner.idle_ttl, now) {
                        idle.push(slot.clone());
                    } else if let Some(token) = slot.token.load().as_ref() {
                        held += 1;
                        shortest = Some(shortest.map_or(token.lifetime, |s| s.min(token.lifetime)));
                    }
                    true
                });
                // Outside the list's lock: eviction runs the listener, which takes each slot's.
                for slot in idle {
                    inner.slots.invalidate(&slot.key);
                }
                inner.front.sweep(&inner.slots);
                inner.lift_throttles(now);
                inner.check_budget(held, shortest);
                inner.slots.run_pending_tasks();
            }
        }
    }

    /// Refresh timers alive (for metrics and tests): never more than the keys holding a token.
    pub fn timers(&self) -> u64 {
        u64::try_from(self.inner.stats.timers.load(Ordering::Relaxed)).unwrap_or(0)
    }

    /// The upstream behind the cache.
    pub fn upstream(&self) -> Arc<Upstream> {
        self.inner.upstream.load_full()
    }

    /// Puts a new upstream behind the cache (reload); fetches in flight finish on the old one.
    pub fn set_upstream(&self, upstream: Arc<Upstream>) {
        self.inner.upstream.store(upstream);
    }

    /// A valid token for `key`: from the cache, or fetched while the caller waits at most `wait`.
    ///
    /// `refused` is the SHA-256 of a token a resource refused (`token_sha256_to_refresh`):
    /// when it is the cached token's, that token is dropped, never to be served again, and a
    /// new one fetched (one fetch for every caller presenting it), at most once per
    /// `cache.min_forced_refresh`; any other hash is of a token already replaced, and the
    /// cached one is served.
    ///
    /// `admit_new` is asked, only when the cache does not hold `key`, whether the caller may
    /// make one more key now (its budget of new keys): `Err(wait)` refuses, and no key is made.
    pub async fn get(
        &self,
        key: KeyParts<'_>,
        wait: Duration,
        refused: Option<&[u8; 32]>,
        admit_new: &(dyn Fn() -> Result<(), Duration> + Sync),
    ) -> Result<(Arc<AccessToken>, Lookup), CacheError> {
        let slot = match self.inner.front.get(&key) {
            Some(slot) => slot,
            None => {
                let slot = match self.inner.slots.get(&key as &dyn AsParts) {
                    Some(slot) => slot,
                    None => {
                        admit_new().map_err(CacheError::NewKeysLimited)?;
                        let key = key.to_key();
                        self.inner
                            .slots
                            .get_with_by_ref(&key, || self.inner.new_slot(&key))
                    }
                };
                self.inner.front.offer(&key, &slot);
                slot
            }
        };
        slot.mark_used();
        let now = Instant::now();
        let forced = refused.is_some_and(|hash| self.drop_refused(&slot, hash, now));
        if let Some(token) = slot.token.load_full() {
            if token.is_valid(now) {
                if now < token.refresh_at {
                    return Ok((token, Lookup::Hit));
                }
                // Past its refresh point: the timer's refresh is running, failing, or was
                // skipped while the key was idle. Serve this one; make sure one is under way.
                self.refresh(&slot, now);
                return Ok((token, Lookup::Stale));
            }
        }
        let mut rx = {
            let mut state = slot.state();
            if let Some((error, until)) = &state.failure {
                if now < *until {
                    return Err(failed(error.clone(), *until - now));
                }
            }
            match &state.inflight {
                Some(rx) => rx.clone(),
                None => {
                    let deadline = now + wait.mul_f64(self.inner.miss_turn_share);
                    spawn_fetch(
                        &self.inner,
                        slot.key.clone(),
                        slot.clone(),
                        &mut state,
                        deadline,
                    )
                }
            }
        };
        let outcome = tokio::time::timeout(wait, rx.wait_for(Option::is_some)).await;
        match outcome {
            Ok(Ok(done)) => match done.as_ref() {
                // A token that expired while it was being fetched (a zero lifetime, or long
                // retries) is not served.
                Some(Ok(token)) if token.is_valid(Instant::now()) => {
                    let lookup = if forced { Lookup::Forced } else { Lookup::Miss };
                    Ok((token.clone(), lookup))
                }
                Some(Ok(_)) => Err(CacheError::Timeout),
                Some(Err(error)) => {
                    let until = slot.state().failure.as_ref().map(|(_, until)| *until);
                    Err(failed(
                        error.clone(),
                        until.map_or(Duration::from_secs(1), |u| {
                            u.saturating_duration_since(Instant::now())
                        }),
                    ))
                }
                None => Err(CacheError::Timeout),
            },
            // Timed out, or the fetch task vanished (runtime shutting down).
            Ok(Err(_)) | Err(_) => Err(CacheError::Timeout),
        }
    }

    /// Drops the slot's token if `hash` is its hash and a forced refresh is allowed now; true
    /// when it did.
    fn drop_refused(&self, slot: &Slot, hash: &[u8; 32], now: Instant) -> bool {
        let mut state = slot.state();
        let current = slot.token.load();
        let is_it = current.as_ref().is_some_and(|t| t.sha256 == *hash);
        // While a failure is remembered no new token could come: the old one stays in service
        // rather than every caller of the key getting the failure.
        let failing = state
            .failure
            .as_ref()
            .is_some_and(|(_, until)| now < *until);
        let allowed = !failing
            && state
                .last_forced
                .is_none_or(|at| now.duration_since(at) >= self.inner.min_forced_refresh);
        if !(is_it && allowed) {
            return false;
        }
        drop(current);
        slot.token.store(None);
        state.last_forced = Some(now);
        self.inner.stats.forced.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Starts a background refresh unless one is running or a remembered failure says wait.
    fn refresh(&self, slot: &Arc<Slot>, now: Instant) {
        start_refresh(&self.inner, slot, now);
    }

    /// Clears every remembered failure (after a reload: the config that caused them is gone).
    pub fn forget_failures(&self) {
        for (_, slot) in self.inner.slots.iter() {
            let mut state = slot.state();
            state.failure = None;
            state.failures_in_a_row = 0;
        }
    }

    /// Keys whose last fetch failed. Each remembers its failure (to answer with while it
    /// stands, and to back off from) until a fetch for it succeeds or it leaves the cache, so
    /// once an outage is over and every key in use has been fetched again this is zero; a
    /// count that stays up names keys that are failing still. For metrics and tests.
    pub fn remembered_failures(&self) -> u64 {
        let failing = self
            .inner
            .slots
            .iter()
            .filter(|(_, slot)| slot.remembers_failure())
            .count();
        u64::try_from(failing).unwrap_or(u64::MAX)
    }

    /// Number of keys held (approximate; for metrics and tests).
    pub fn key_count(&self) -> u64 {
        self.inner.slots.run_pending_tasks();
        self.inner.slots.entry_count()
    }

    /// What the cache did and holds, for `/metrics`: the [`MAX_EXPIRY_SERIES`] tokens that
    /// expire soonest one by one, and the soonest of all.
    pub fn figures(&self) -> CacheFigures {
        let now = Instant::now();
        let stats = &self.inner.stats;
        let mut expiries: Vec<(&TokenKey, u64)> = Vec::new();
        let mut remembered_failures = 0;
        let slots: Vec<_> = self.inner.slots.iter().collect();
        for (key, slot) in &slots {
            if let Some(t) = slot.token.load().as_ref() {
                expiries.push((key, t.expires_in(now)));
            }
            remembered_failures += u64::from(slot.remembers_failure());
        }
        expiries.sort_unstable_by_key(|(_, seconds)| *seconds);
        CacheFigures {
            refreshes: stats.refreshes.load(Ordering::Relaxed),
            refresh_failures: stats.refresh_failures.load(Ordering::Relaxed),
            forced_refreshes: stats.forced.load(Ordering::Relaxed),
            keys: self.key_count(),
            timers: self.timers(),
            remembered_failures,
            throttled: self.inner.throttled(),
            throttles: self.inner.stats.throttles.load(Ordering::Relaxed),
            budget_shortfall: self.inner.stats.shortfall.load(Ordering::Relaxed),
            bytes: self.inner.slots.weighted_size(),
            soonest_expiry: expiries.first().map(|(_, seconds)| *seconds),
            expiries: expiries
                .iter()
                .take(MAX_EXPIRY_SERIES)
                .map(|(key, seconds)| {
                    let labels = [
                        key.tenant.clone(),
                        key.client_id.clone(),
                        Arc::from(&*key.resource),
                    ];
                    (labels, *seconds)
                })
                .collect(),
        }
    }
}
