//! A key's fetch, in a task of its own, and its refresh timer: one fetch per key at a time,
//! watched by every waiting caller; one chain of refresh timers per key.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::time::Instant;

use super::*;
use crate::upstream::exchange::Turn;
use crate::upstream::failure_ttl;

pub(super) fn start_refresh(inner: &Arc<Inner>, slot: &Arc<Slot>, now: Instant) {
    let mut state = slot.state();
    let backing_off = state
        .failure
        .as_ref()
        .is_some_and(|(_, until)| now < *until);
    if state.inflight.is_none() && !backing_off {
        inner.stats.refreshes.fetch_add(1, Ordering::Relaxed);
        // A refresh may wait for its turn in the budget while the token it replaces is valid;
        // past that it is a cold miss's job.
        let deadline = slot.token.load().as_ref().map_or(now, |t| t.expires_at);
        // The slot's own key: its names are shared, not copied again for the fetch and its timer.
        spawn_fetch(inner, slot.key.clone(), slot.clone(), &mut state, deadline);
    }
}

pub(super) fn spawn_fetch(
    inner: &Arc<Inner>,
    key: TokenKey,
    slot: Arc<Slot>,
    state: &mut SlotState,
    deadline: Instant,
) -> watch::Receiver<Option<Outcome>> {
    let (tx, rx) = watch::channel(None);
    state.inflight = Some(rx.clone());
    let inner = inner.clone();
    let span = tracing::info_span!("fetch", tenant = %key.tenant, resource = %key.resource);
    let task = async move {
        // The timer below decides on "used since this fetch", so clear the flag first.
        slot.used.store(false, Ordering::Relaxed);
        // The first Entra call's turn in the budget comes first: a turn past the deadline is
        // refused at once, and a fetch waiting for its turn holds no place among the fetches.
        // A throttled app or source takes no turn at all.
        let upstream = inner.upstream.load_full();
        let turn = match inner.parked_for(&key, Instant::now()) {
            Some(parked) => Err(parked),
            None => upstream
                .entra_turn(Some(deadline))
                .map_err(|wait| upstream.refused_turn(&key, wait)),
        };
        let fetched = match turn {
            Err(refused) => Ok(Err(refused)),
            Ok(when) => {
                tokio::time::sleep_until(when).await;
                // Wait for a place among the fetches in flight; the callers' own wait bound
                // holds meanwhile. (The semaphore is never closed.)
                let _place = inner.fetches.acquire().await.ok();
                let parked = inner.parked_for(&key, Instant::now());
                // The fetch runs in a task of its own, so that even a panic in it ends here as
                // a failure; otherwise this key's in-flight marker would never clear.
                let key = key.clone();
                tokio::spawn(async move {
                    match parked {
                        Some(parked) => Err(parked),
                        None => upstream.fetch(&key, Some(deadline), Turn::Taken).await,
                    }
                })
                .await
            }
        };
        let fetched = match fetched {
            Ok(result) => result,
            Err(join) => Err(FetchError::Internal(if join.is_panic() {
                "the fetch task panicked".to_owned()
            } else {
                "the fetch task was cancelled".to_owned()
            })),
        };
        let outcome = match fetched {
            Ok(token) => {
                let token = Arc::new(token);
                slot.token.store(Some(token.clone()));
                // Weighed again now that it holds a token (moka weighs on insert). Only if the
                // key is still cached with this slot: a key evicted meanwhile is not brought
                // back, nor a newer slot made for it since replaced by this one.
                if !slot.left.load(Ordering::Relaxed) && inner.slots.contains_key(&key) {
                    inner.slots.insert(key.clone(), slot.clone());
                }
                tracing::debug!(tenant = %key.tenant, resource = %key.resource, expires_in_s = token.lifetime.as_secs(), "token fetched");
                Ok(token)
            }
            Err(error) => Err(Arc::new(error)),
        };
        let next_attempt = {
            let mut state = slot.state();
            state.inflight = None;
            state.failure = match &outcome {
                Ok(_) => None,
                Err(e) => {
                    let ttl = failure_ttl(e, inner.error_ttl, state.failures_in_a_row);
                    inner.park_on(&key, e, ttl, Instant::now());
                    Some((e.clone(), Instant::now() + ttl))
                }
            };
            state.failures_in_a_row = if outcome.is_ok() {
                0
            } else {
                state.failures_in_a_row.saturating_add(1)
            };
            match (&outcome, slot.token.load_full()) {
                (Ok(token), _) => Some(token.refresh_at),
                // A failed refresh with a valid token in service: log it (once, here), keep
                // serving, and try again when the failure lapses.
                (Err(error), Some(old)) if old.is_valid(Instant::now()) => {
                    inner.stats.refresh_failures.fetch_add(1, Ordering::Relaxed);
                    // The use that made this refresh is still unanswered: the retry must not
                    // wait for another caller (a key asked for every 45 minutes would let its
                    // hourly token lapse after any failed refresh, and its next caller wait).
                    slot.used.store(true, Ordering::Relaxed);
                    let (trace_id, correlation_id) = error.entra_ids();
                    tracing::warn!(
                        tenant = %key.tenant, client_id = %key.client_id, resource = %key.resource,
                        expires_in_s = old.expires_in(Instant::now()), error = %error,
                        trace_id, correlation_id,
                        "token refresh failed; serving the cached token until it expires"
                    );
                    state.failure.as_ref().map(|(_, until)| *until)
                }
                (Err(error), _) => {
                    let (trace_id, correlation_id) = error.entra_ids();
                    tracing::warn!(
                        tenant = %key.tenant, client_id = %key.client_id, resource = %key.resource,
                        error = %error, trace_id, correlation_id, "token fetch failed"
                    );
                    None
                }
            }
        };
        // Nobody waiting is fine: the token is stored in the slot either way.
        let _ = tx.send(Some(outcome));
        if let Some(at) = next_attempt {
            let alive = TimerAlive::new(&inner.stats.timers);
            let timer = tokio::spawn(refresh_timer(
                Arc::downgrade(&inner),
                key,
                Arc::downgrade(&slot),
                at,
                alive,
            ));
            // One chain of refreshes per key: a newer timer replaces the one before.
            if let Some(before) = slot.state().timer.replace(timer.abort_handle()) {
                before.abort();
            }
        }
    };
    tokio::spawn(tracing::Instrument::instrument(task, span));
    rx
}

/// Counts a timer as alive from its spawn until its task ends or is aborted.
struct TimerAlive(Arc<std::sync::atomic::AtomicI64>);

impl TimerAlive {
    fn new(count: &Arc<std::sync::atomic::AtomicI64>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        TimerAlive(count.clone())
    }
}

impl Drop for TimerAlive {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Sleeps until `at`, then refreshes the key if it is still cached and was used since the
/// last fetch. Holds the cache and the slot only weakly: a key that left the cache, or a
/// dropped cache, keeps nothing alive through its timer.
async fn refresh_timer(
    inner: std::sync::Weak<Inner>,
    key: TokenKey,
    slot: std::sync::Weak<Slot>,
    at: Instant,
    _alive: TimerAlive,
) {
    tokio::time::sleep_until(at).await;
    let (Some(inner), Some(slot)) = (inner.upgrade(), slot.upgrade()) else {
        return;
    };
    // contains_key does not count as a use for the idle timeout; get would.
    let still_cached = inner.slots.contains_key(&key);
    // A fetch that finished since this timer was set has set its own timer: only one chain
    // of refreshes per key.
    let now = Instant::now();
    let due = slot
        .token
        .load()
        .as_ref()
        .is_none_or(|t| now >= t.refresh_at);
    if still_cached && due && slot.used.load(Ordering::Relaxed) {
        start_refresh(&inner, &slot, now);
    }
}
