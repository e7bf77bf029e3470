//! One throttle per app: an Entra 429 for one key parks every key of that app (Entra counts
//! per app), an IMDS 429 the assertion source (IMDS counts per host), until the `Retry-After`.

use std::sync::PoisonError;
use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::upstream::assertion::AssertionError;
use crate::upstream::exchange::ExchangeError;

/// What the upstream throttles: one throttle for every key of an app (Entra counts per app),
/// and one for the assertion source (IMDS counts per host).
#[derive(Debug, Default)]
pub(super) struct Parked {
    apps: std::collections::HashMap<(CloudName, Arc<str>, Arc<str>), Instant>,
    /// Per source (by name): each identity endpoint counts on its own.
    sources: std::collections::HashMap<Arc<str>, Instant>,
}

/// How long an app is left alone after a 429 that names no `Retry-After`.
const PARK_WITHOUT_RETRY_AFTER: Duration = Duration::from_secs(60);

impl Inner {
    fn parked(&self) -> std::sync::MutexGuard<'_, Parked> {
        // Each write is one entry: a panic elsewhere cannot leave the map inconsistent.
        self.parked.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The refusal a fetch for `key` gets while its app or the assertion source is throttled.
    pub(super) fn parked_for(&self, key: &TokenKey, now: Instant) -> Option<FetchError> {
        let parked = self.parked();
        let app = (key.cloud, key.tenant.clone(), key.client_id.clone());
        // A home key asks no app of Entra: only the source's throttle holds it.
        if let Some(until) = parked
            .apps
            .get(&app)
            .filter(|until| !key.home && now < **until)
        {
            return Some(FetchError::Parked {
                what: format!("Entra, for app {} in tenant {},", key.client_id, key.tenant),
                retry_after: *until - now,
            });
        }
        parked
            .sources
            .get(&key.source)
            .filter(|until| now < **until)
            .map(|until| FetchError::Parked {
                what: format!("the assertion source '{}'", key.source),
                retry_after: *until - now,
            })
    }

    /// After a failed fetch: an Entra 429 parks every key of the app, an IMDS 429 the source.
    pub(super) fn park_on(&self, key: &TokenKey, error: &FetchError, now: Instant) {
        let (app_wait, source_wait) = match error {
            FetchError::Exchange {
                error:
                    ExchangeError::Unavailable {
                        status: 429,
                        retry_after,
                        ..
                    },
                ..
            } => (Some(retry_after.unwrap_or(PARK_WITHOUT_RETRY_AFTER)), None),
            FetchError::Assertion(AssertionError::Status {
                status: 429,
                retry_after,
                ..
            })
            | FetchError::Home {
                error:
                    AssertionError::Status {
                        status: 429,
                        retry_after,
                        ..
                    },
                ..
            } => (None, Some(retry_after.unwrap_or(PARK_WITHOUT_RETRY_AFTER))),
            _ => (None, None),
        };
        let mut parked = self.parked();
        if let Some(wait) = app_wait {
            let app = (key.cloud, key.tenant.clone(), key.client_id.clone());
            if parked.apps.insert(app, now + wait).is_none() {
                self.stats.throttles.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(tenant = %key.tenant, client_id = %key.client_id, wait_s = wait.as_secs(), "Entra throttles this app: none of its keys is fetched until the wait is over; cached tokens are still served");
            }
        }
        if let Some(wait) = source_wait {
            if parked
                .sources
                .insert(key.source.clone(), now + wait)
                .is_none()
            {
                self.stats.throttles.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(source = %key.source, wait_s = wait.as_secs(), "the assertion source throttles: no assertion is fetched from it until the wait is over");
            }
        }
    }

    /// Lifts the throttles that lapsed, saying so once each (housekeeping).
    pub(super) fn lift_throttles(&self, now: Instant) {
        let mut parked = self.parked();
        parked.apps.retain(|(_, tenant, client_id), until| {
            let lapsed = now >= *until;
            if lapsed {
                tracing::info!(%tenant, %client_id, "Entra's throttle of this app lapsed; its keys are fetched again");
            }
            !lapsed
        });
        parked.sources.retain(|source, until| {
            let lapsed = now >= *until;
            if lapsed {
                tracing::info!(%source, "the assertion source's throttle lapsed");
            }
            !lapsed
        });
    }

    /// Apps (and the source) throttled now.
    pub(super) fn throttled(&self) -> u64 {
        let parked = self.parked();
        u64::try_from(parked.apps.len() + parked.sources.len()).unwrap_or(u64::MAX)
    }
}
