//! The two upstream legs together: the home-tenant assertion, then the exchange at Entra.
//! This is what a cache miss or a refresh runs, once per key at a time.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

pub mod assertion;
pub mod budget;
pub mod diagnosis;
pub mod exchange;
mod wire;

use crate::cloud::CloudName;
use crate::config::Config;
use crate::config::Rate;
use crate::metrics::Metrics;
use crate::metrics::UpstreamName;
use crate::retry::Transience;
use crate::token::{AccessToken, Claims};
use assertion::{AssertionError, AssertionProvider};
use budget::Budgets;
use diagnosis::Diagnosis;
use exchange::{Exchange, ExchangeError, ExchangeRequest, Turn};
use tokio::time::Instant;

/// User agent on every upstream call, so Entra and IMDS logs show who asked.
const USER_AGENT: &str = concat!("fedimds/", env!("CARGO_PKG_VERSION"));

/// AADSTS codes after which a fresh assertion is worth one more try.
const FRESH_ASSERTION_CODES: [u32; 3] = [700024, 700027, 7000274];

/// Federated-credential mismatches, which Entra also reports for a few minutes after a
/// credential is added (propagation) and, rarely, intermittently: worth one retry, a little later.
const FIC_CODES: [u32; 4] = [70021, 700211, 700212, 700213];

/// The wait before that retry.
const FIC_RETRY_AFTER: Duration = Duration::from_secs(5);

/// What a cached token is for: the cache key. Compared and hashed as its [`KeyParts`], so a
/// hit can look it up by borrowed parts without building one (`cache::key`).
#[derive(Debug, Clone)]
pub struct TokenKey {
    /// The cloud (Entra's host).
    pub cloud: CloudName,
    /// The target tenant.
    pub tenant: Arc<str>,
    /// The multi-tenant app.
    pub client_id: Arc<str>,
    /// The resource, exactly as asked (the scope is derived from it).
    pub resource: Arc<str>,
    /// The client capabilities the token is asked for (`cp1`, …; lower case, sorted, comma
    /// separated), sent to Entra as the `claims` parameter; `None` for none. Tokens with and
    /// without capabilities are different tokens.
    pub capabilities: Option<Arc<str>>,
    /// The name of the source whose identity the token comes from: its assertion, or its own
    /// token (`home`).
    pub source: Arc<str>,
    /// The home identity's own token for the resource, no exchange (`targets[].exchange =
    /// false`; `tenant` is then the home tenant, `client_id` the identity's): never the same
    /// key as a target-tenant token for the same resource.
    pub home: bool,
}

/// The names a target's keys share (its tenant, app and source), made once per config: a new
/// key clones these rather than allocating copies of its own (three allocations a key, some
/// 2 MiB at 10,000 keys).
#[derive(Debug, Clone)]
pub struct SharedNames {
    /// The target's tenant.
    pub tenant: Arc<str>,
    /// The target's app.
    pub client_id: Arc<str>,
    /// The target's source.
    pub source: Arc<str>,
}

/// A [`TokenKey`]'s parts, borrowed: what a request has at hand. Equal parts are equal keys
/// (`shared` is where a new key's names come from, not part of the key).
#[derive(Debug, Clone, Copy)]
pub struct KeyParts<'a> {
    /// [`TokenKey::cloud`].
    pub cloud: CloudName,
    /// [`TokenKey::tenant`].
    pub tenant: &'a str,
    /// [`TokenKey::client_id`].
    pub client_id: &'a str,
    /// [`TokenKey::resource`].
    pub resource: &'a str,
    /// [`TokenKey::capabilities`].
    pub capabilities: Option<&'a str>,
    /// [`TokenKey::source`].
    pub source: &'a str,
    /// [`TokenKey::home`].
    pub home: bool,
    /// The target's names, which [`KeyParts::to_key`] shares when they are the key's.
    pub shared: Option<&'a SharedNames>,
}

impl KeyParts<'_> {
    /// What equality and the hash are taken over.
    #[allow(clippy::type_complexity)]
    fn identity(&self) -> (CloudName, &str, &str, &str, Option<&str>, &str, bool) {
        (
            self.cloud,
            self.tenant,
            self.client_id,
            self.resource,
            self.capabilities,
            self.source,
            self.home,
        )
    }

    /// The owned key (a miss, a refresh: not the hit path), sharing the target's names.
    pub fn to_key(&self) -> TokenKey {
        let share = |name: &str, shared: Option<&Arc<str>>| match shared {
            Some(arc) if **arc == *name => arc.clone(),
            _ => Arc::from(name),
        };
        let shared = self.shared;
        TokenKey {
            cloud: self.cloud,
            tenant: share(self.tenant, shared.map(|s| &s.tenant)),
            client_id: share(self.client_id, shared.map(|s| &s.client_id)),
            resource: self.resource.into(),
            capabilities: self.capabilities.map(Arc::from),
            source: share(self.source, shared.map(|s| &s.source)),
            home: self.home,
        }
    }
}

impl PartialEq for KeyParts<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.identity() == other.identity()
    }
}

impl Eq for KeyParts<'_> {}

impl std::hash::Hash for KeyParts<'_> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.identity().hash(state);
    }
}

impl PartialEq for TokenKey {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for TokenKey {}

impl std::hash::Hash for TokenKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.parts().hash(state);
    }
}

impl TokenKey {
    /// The key's parts, borrowed.
    pub fn parts(&self) -> KeyParts<'_> {
        KeyParts {
            cloud: self.cloud,
            tenant: &self.tenant,
            client_id: &self.client_id,
            resource: &self.resource,
            capabilities: self.capabilities.as_deref(),
            source: &self.source,
            home: self.home,
            shared: None,
        }
    }

    /// The v2 scope for this key.
    pub fn scope(&self) -> String {
        exchange::scope_for(&self.resource)
    }

    /// The exchange's `claims` parameter for the key's capabilities:
    /// `{"access_token":{"xms_cc":{"values":["cp1"]}}}`, as MSAL builds it.
    pub fn claims(&self) -> Option<String> {
        let caps = self.capabilities.as_deref()?;
        let values: Vec<&str> = caps.split(',').collect();
        Some(serde_json::json!({"access_token": {"xms_cc": {"values": values}}}).to_string())
    }
}

/// Why no token could be had from upstream.
#[derive(Debug, Clone)]
pub enum FetchError {
    /// The assertion source failed.
    Assertion(AssertionError),
    /// The source failed to give the home identity's own token (`exchange = false`).
    Home {
        /// The resource asked for.
        resource: Box<str>,
        /// Why.
        error: AssertionError,
    },
    /// Entra refused or failed; the diagnosis says what to do.
    Exchange {
        /// Entra's answer.
        error: ExchangeError,
        /// The AADSTS code explained for this set-up.
        diagnosis: Option<Diagnosis>,
    },
    /// fedimds itself failed (a bug): treated as transient, and logged.
    Internal(String),
    /// Not asked: fedimds's own budget of calls to that upstream had no turn free before the
    /// caller's deadline (`server.miss_timeout` for a cold miss, the token's expiry for a
    /// refresh).
    OverBudget {
        /// Which upstream.
        upstream: UpstreamName,
        /// The budget, for the message.
        rate: Rate,
        /// The key, in words: "app … in tenant … for resource …".
        key: String,
        /// Until a turn would come.
        wait: Duration,
    },
    /// Not asked: the upstream throttles this app (or the assertion source) for a while, and
    /// no call is made for any of its keys until it lapses.
    Parked {
        /// What is throttled, for the message: "Entra, for app … in tenant …" or the source.
        what: String,
        /// What it said: "answered 429 (too many requests)", "blocked a request loop
        /// (AADSTS50196)", "throttles the tenant (AADSTS90055)".
        why: &'static str,
        /// Until the throttle lapses.
        retry_after: Duration,
    },
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FetchError::Assertion(e) => write!(f, "could not get the home-tenant assertion: {e}"),
            FetchError::Home { resource, error } => write!(
                f,
                "could not get the home identity's own token for {resource}: {error}"
            ),
            FetchError::Exchange {
                diagnosis: Some(d), ..
            } => write!(f, "{d}"),
            FetchError::Exchange {
                error,
                diagnosis: None,
            } => write!(f, "{error}"),
            FetchError::Internal(what) => write!(f, "internal error: {what}"),
            FetchError::OverBudget {
                upstream,
                rate,
                key,
                wait,
            } => {
                let (whom, keys) = match upstream {
                    UpstreamName::Entra => (
                        "Entra",
                        "upstream.max_requests_per_second and upstream.burst",
                    ),
                    UpstreamName::Assertion | UpstreamName::Home => (
                        "the assertion source",
                        "upstream.assertion_requests_per_second and upstream.assertion_burst",
                    ),
                };
                write!(
                    f,
                    "fedimds's budget of calls to {whom} ({} a second, bursts of {}; {keys}) has no turn free for the token of {key} within this request's wait; the next turn comes in {} s: retry then, or raise the budget if this is no passing burst",
                    rate.per_second,
                    rate.burst,
                    wait.as_secs().max(1)
                )
            }
            FetchError::Parked {
                what,
                why,
                retry_after,
            } => write!(
                f,
                "{what} {why} and is not asked again, for any resource, for {} s; cached tokens are still served",
                retry_after.as_secs().max(1)
            ),
        }
    }
}

impl std::error::Error for FetchError {}

impl FetchError {
    /// Whether trying again may succeed, and when.
    pub fn transience(&self) -> Transience {
        match self {
            FetchError::Assertion(e) | FetchError::Home { error: e, .. } => e.transience(),
            FetchError::Exchange { error, .. } => error.transience(),
            FetchError::Internal(_) => Transience::Transient { retry_after: None },
            FetchError::OverBudget { wait, .. } => Transience::Transient {
                retry_after: Some(*wait),
            },
            FetchError::Parked { retry_after, .. } => Transience::Transient {
                retry_after: Some(*retry_after),
            },
        }
    }

    /// Entra's `trace_id` and `correlation_id`, for every log line about this failure.
    pub fn entra_ids(&self) -> (&str, &str) {
        match self {
            FetchError::Exchange {
                error: ExchangeError::Rejected(r),
                ..
            } => (&r.trace_id, &r.correlation_id),
            _ => ("-", "-"),
        }
    }

    /// The AADSTS code, if Entra gave one.
    pub fn code(&self) -> Option<u32> {
        match self {
            FetchError::Exchange { error, .. } => error.code(),
            FetchError::Assertion(_)
            | FetchError::Home { .. }
            | FetchError::Internal(_)
            | FetchError::OverBudget { .. }
            | FetchError::Parked { .. } => None,
        }
    }

    /// Whether Entra blocks this request for a while ([`exchange::BLOCK_CODES`]).
    pub fn is_block(&self) -> bool {
        matches!(self, FetchError::Exchange { error, .. } if error.is_block())
    }
}

/// The upstream: one assertion provider per source (each with its own assertion cache),
/// shared by every exchange of the targets that use it.
#[derive(Debug)]
pub struct Upstream {
    /// The sources, `[source]` ("default") first, then `[[sources]]` in file order.
    sources: Vec<AssertionProvider>,
    /// Entra.
    pub exchange: Exchange,
    cloud: CloudName,
    /// The budgets of calls to Entra and to the assertion source, which every call takes its
    /// turn from; kept across a reload that does not change them.
    pub budgets: Arc<Budgets>,
    metrics: Arc<Metrics>,
}

impl Upstream {
    /// Builds the HTTP client and both legs from the config.
    pub fn new(config: &Config) -> Result<Upstream, reqwest::Error> {
        Upstream::with_metrics(config, Arc::new(Metrics::default()))
    }

    /// The same, counting upstream calls into `metrics`.
    pub fn with_metrics(
        config: &Config,
        metrics: Arc<Metrics>,
    ) -> Result<Upstream, reqwest::Error> {
        Upstream::build(config, metrics, None)
    }

    /// The upstream of a reloaded config: the budgets of `old` carry over when their rates are
    /// unchanged, so a reload hands out no fresh burst.
    pub fn reloaded(
        config: &Config,
        metrics: Arc<Metrics>,
        old: &Upstream,
    ) -> Result<Upstream, reqwest::Error> {
        Upstream::build(config, metrics, Some(old.budgets.clone()))
    }

    fn build(
        config: &Config,
        metrics: Arc<Metrics>,
        old_budgets: Option<Arc<Budgets>>,
    ) -> Result<Upstream, reqwest::Error> {
        let (entra_rate, assertion_rate) =
            (config.upstream.entra_rate, config.upstream.assertion_rate);
        let budgets = old_budgets
            .filter(|b| b.entra.rate() == entra_rate && b.assertion.rate() == assertion_rate)
            .unwrap_or_else(|| Arc::new(Budgets::new(entra_rate, assertion_rate)));
        let client = || {
            reqwest::Client::builder()
                .user_agent(USER_AGENT)
                .connect_timeout(config.upstream.connect_timeout)
                .timeout(config.upstream.request_timeout)
                // A redirect from IMDS or Entra is never legitimate; following one could send
                // the assertion to another host.
                .redirect(reqwest::redirect::Policy::none())
                // No proxy from the environment, ever: reqwest would otherwise read
                // HTTPS_PROXY and friends itself. Only the Entra leg gets one, below.
                .no_proxy()
        };
        // IMDS, the App Service endpoint and the token file's host never go through a proxy:
        // IMDS refuses proxied requests, and the assertion is the identity itself.
        let assertion_http = client().build()?;
        let entra_http = match config.upstream.entra_route.proxy() {
            None => client().build()?,
            // `Proxy::all` sends an https:// Entra through CONNECT (the assertion stays inside
            // TLS to Entra), and an http:// one (the simulator) as absolute-form requests.
            Some(proxy) => client()
                .proxy(reqwest::Proxy::all(proxy.url.expose())?)
                .build()?,
        };
        Ok(Upstream {
            sources: config
                .all_sources()
                .map(|source| {
                    AssertionProvider::new(
                        source.clone(),
                        assertion_http.clone(),
                        metrics.clone(),
                        budgets.clone(),
                    )
                })
                .collect(),
            exchange: Exchange::new(
                entra_http,
                config.cloud.authority_host.clone(),
                config.upstream.entra_route.proxy().map(|p| p.shown.clone()),
                metrics.clone(),
                budgets.clone(),
            ),
            cloud: config.cloud.name,
            budgets,
            metrics,
        })
    }

    /// Reserves `key`'s first turn in the Entra budget, before its fetch waits for a place
    /// among the fetches in flight: `Ok(when)` it may go, or, when that would be after
    /// `deadline`, `Err(wait)` (then [`Upstream::refused_turn`] is the answer to give at once).
    pub fn entra_turn(&self, deadline: Option<Instant>) -> Result<Instant, Duration> {
        self.budgets.entra.reserve(deadline)
    }

    /// The refusal for `key`'s first Entra call, which the budget had no turn for within `wait`.
    pub fn refused_turn(&self, key: &TokenKey, wait: Duration) -> FetchError {
        self.over_budget(UpstreamName::Entra, key, wait)
    }

    /// The refusal for a call the budget had no turn for, counted.
    fn over_budget(&self, upstream: UpstreamName, key: &TokenKey, wait: Duration) -> FetchError {
        self.metrics.over_budget(upstream);
        let rate = match upstream {
            UpstreamName::Entra => self.budgets.entra.rate(),
            UpstreamName::Assertion | UpstreamName::Home => self.budgets.assertion.rate(),
        };
        FetchError::OverBudget {
            upstream,
            rate,
            key: format!(
                "app {} in tenant {} for resource {}",
                key.client_id, key.tenant, key.resource
            ),
            wait,
        }
    }

    /// The source with this name ("default" is `[source]`).
    pub fn source(&self, name: &str) -> Option<&AssertionProvider> {
        self.sources.iter().find(|s| s.source().name == name)
    }

    /// Gets a token for `key`: assertion, then exchange; one retry with a fresh assertion when
    /// Entra says the assertion was expired or badly signed. Every call waits for its turn in
    /// the budgets until `deadline`; the first exchange's turn is `first` (taken already by
    /// the cache, or to wait for). A home key (`exchange = false`) is the source's own token
    /// for the resource, with no exchange.
    pub async fn fetch(
        &self,
        key: &TokenKey,
        deadline: Option<Instant>,
        first: Turn,
    ) -> Result<AccessToken, FetchError> {
        // The config names only sources it has; a reload that dropped one fetches no more
        // for a key of it.
        let Some(source) = self.source(&key.source) else {
            return Err(FetchError::Internal(format!(
                "the source '{}' is not in the config in force",
                key.source
            )));
        };
        if key.home {
            return source
                .home_token(&key.resource, deadline)
                .await
                .map_err(|error| match error {
                    AssertionError::OverBudget { wait, .. } => {
                        self.over_budget(UpstreamName::Home, key, wait)
                    }
                    error => FetchError::Home {
                        resource: key.resource.as_ref().into(),
                        error,
                    },
                });
        }
        let (scope, claims) = (key.scope(), key.claims());
        let req = ExchangeRequest {
            tenant: &key.tenant,
            client_id: &key.client_id,
            scope: &scope,
            claims: claims.as_deref(),
        };
        let (mut fresh_retry_left, mut fic_retry_left) = (true, true);
        let mut turn = first;
        loop {
            let assertion = source.get(deadline).await.map_err(|e| match e {
                AssertionError::OverBudget { wait, .. } => {
                    self.over_budget(UpstreamName::Assertion, key, wait)
                }
                e => FetchError::Assertion(e),
            })?;
            let exchanged = self.exchange.token(req, &assertion.token, turn).await;
            turn = Turn::Until(deadline);
            match exchanged {
                Ok(token) => return Ok(token),
                Err(ExchangeError::OverBudget { wait }) => {
                    return Err(self.over_budget(UpstreamName::Entra, key, wait))
                }
                Err(e)
                    if fresh_retry_left
                        && e.code().is_some_and(|c| FRESH_ASSERTION_CODES.contains(&c)) =>
                {
                    tracing::warn!(error = %e, "Entra refused the assertion; retrying once with a fresh one");
                    fresh_retry_left = false;
                    source.invalidate().await;
                }
                Err(e) if fic_retry_left && e.code().is_some_and(|c| FIC_CODES.contains(&c)) => {
                    tracing::warn!(error = %e, retry_in_s = FIC_RETRY_AFTER.as_secs(), "no federated credential matched; retrying once in case one was just added");
                    fic_retry_left = false;
                    tokio::time::sleep(FIC_RETRY_AFTER).await;
                }
                Err(error) => {
                    let diagnosis = match &error {
                        ExchangeError::Rejected(r) => {
                            Some(self.diagnose(r.code, req, Some(&assertion.claims), source))
                        }
                        _ => None,
                    };
                    return Err(FetchError::Exchange { error, diagnosis });
                }
            }
        }
    }

    /// Explains an AADSTS code for this upstream and request.
    pub fn diagnose(
        &self,
        code: Option<u32>,
        req: ExchangeRequest<'_>,
        claims: Option<&Claims>,
        source: &AssertionProvider,
    ) -> Diagnosis {
        diagnosis::diagnose(
            code,
            &diagnosis::Context {
                authority_host: self.exchange.authority_host(),
                cloud: self.cloud,
                tenant: req.tenant,
                client_id: req.client_id,
                scope: req.scope,
                claims,
                audience: &source.source().audience,
            },
        )
    }
}

/// How long to remember a failure before asking upstream again for that key: a permanent
/// error for `permanent_ttl`; an Entra block (a request loop, a throttled tenant) for
/// [`exchange::BLOCK_WAIT`], doubled with each block in a row up to 8 times that; another
/// transient one for the upstream's Retry-After, else a backoff that doubles with each failure
/// in a row (5 s up to 5 min), so a long outage costs Entra a trickle of requests, not a stream.
pub fn failure_ttl(error: &FetchError, permanent_ttl: Duration, failures_before: u32) -> Duration {
    const FIRST: Duration = Duration::from_secs(5);
    const MAX: Duration = Duration::from_secs(300);
    if error.is_block() {
        return exchange::BLOCK_WAIT.saturating_mul(1 << failures_before.min(3));
    }
    match error.transience() {
        Transience::Permanent => permanent_ttl,
        Transience::Transient { retry_after } => retry_after
            .unwrap_or_else(|| FIRST.saturating_mul(1 << failures_before.min(6)).min(MAX)),
    }
}
