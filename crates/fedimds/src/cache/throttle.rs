//! One throttle per app: an Entra 429 for one key parks every key of that app (Entra counts
//! per app), and so does a block (a request loop, AADSTS50196, or a throttled tenant,
//! AADSTS90055: asking again for another resource of the app prolongs it,
//! `docs/entra-exchange.md#entra-retries`); an IMDS 429 parks the assertion source (IMDS counts
//! per host), until the `Retry-After`.

use std::sync::PoisonError;
use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::upstream::assertion::AssertionError;
use crate::upstream::exchange::ExchangeError;

/// An app as Entra counts it: (cloud, tenant, client id).
type App = (CloudName, Arc<str>, Arc<str>);

/// What the upstream throttles: one throttle for every key of an app (Entra counts per app),
/// and one for the assertion source (IMDS counts per host).
#[derive(Debug, Default)]
pub(super) struct Parked {
    /// Per (cloud, tenant, app): until when, and what Entra said, for the message.
    apps: std::collections::HashMap<App, (Instant, &'static str)>,
    /// Per source (by name): each identity endpoint counts on its own.
    sources: std::collections::HashMap<Arc<str>, Instant>,
}

/// What Entra said, for the message of every key the throttle refuses.
const TOO_MANY: &str = "answered 429 (too many requests)";
const LOOP: &str = "blocked a request loop (AADSTS50196)";
const TENANT: &str = "throttles the tenant (AADSTS90055)";

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
        if let Some((until, why)) = parked
            .apps
            .get(&app)
            .filter(|(until, _)| !key.home && now < *until)
        {
            return Some(FetchError::Parked {
                what: format!("Entra, for app {} in tenant {},", key.client_id, key.tenant),
                why,
                retry_after: *until - now,
            });
        }
        parked
            .sources
            .get(&key.source)
            .filter(|until| now < **until)
            .map(|until| FetchError::Parked {
                what: format!("the assertion source '{}'", key.source),
                why: TOO_MANY,
                retry_after: *until - now,
            })
    }

    /// After a failed fetch: an Entra 429 or block parks every key of the app, an IMDS 429 the
    /// source. `remembered` is how long the key itself remembers the failure: a block parks
    /// the app as long (it doubles while the block lasts).
    pub(super) fn park_on(
        &self,
        key: &TokenKey,
        error: &FetchError,
        remembered: Duration,
        now: Instant,
    ) {
        let (app_wait, source_wait) = match error {
            FetchError::Exchange { error, .. } if error.is_block() => {
                let why = match error.code() {
                    Some(50196) => LOOP,
                    _ => TENANT,
                };
                (Some((remembered, why)), None)
            }
            FetchError::Exchange {
                error:
                    ExchangeError::Unavailable {
                        status: 429,
                        retry_after,
                        ..
                    },
                ..
            } => (
                Some((retry_after.unwrap_or(PARK_WITHOUT_RETRY_AFTER), TOO_MANY)),
                None,
            ),
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
        if let Some((wait, why)) = app_wait {
            let app = (key.cloud, key.tenant.clone(), key.client_id.clone());
            if parked.apps.insert(app, (now + wait, why)).is_none() {
                self.stats.throttles.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(tenant = %key.tenant, client_id = %key.client_id, wait_s = wait.as_secs(), entra = why, "Entra throttles this app: none of its keys is fetched until the wait is over; cached tokens are still served");
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
        parked.apps.retain(|(_, tenant, client_id), (until, _)| {
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
