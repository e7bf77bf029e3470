//! Prometheus metrics (OpenMetrics text at the admin listener's `/metrics`). No token data:
//! labels are dialects, target names, tenants, resources and statuses.
//!
//! A leaf: it imports nothing from the crate. The cache hands it figures ([`CacheFigures`])
//! when `/metrics` is rendered, and the request path names lookups by their label.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// What the cache reports at each scrape.
#[derive(Debug, Default)]
pub struct CacheFigures {
    /// Background refreshes started since start.
    pub refreshes: u64,
    /// Background refreshes that failed while a valid token stayed in service.
    pub refresh_failures: u64,
    /// Tokens dropped and fetched anew because a caller presented their hash (revocation).
    pub forced_refreshes: u64,
    /// Keys held.
    pub keys: u64,
    /// Refresh timers alive.
    pub timers: u64,
    /// Keys whose last fetch failed (the failure remembered until a fetch succeeds).
    pub remembered_failures: u64,
    /// Apps (and the assertion source) the upstream throttles now.
    pub throttled: u64,
    /// Throttles opened since start.
    pub throttles: u64,
    /// Keys held beyond what the Entra budget can refresh in one refresh window.
    pub budget_shortfall: u64,
    /// What they weigh, in bytes.
    pub bytes: u64,
    /// Seconds until the soonest cached token expires.
    pub soonest_expiry: Option<u64>,
    /// Per cached token, for a bounded number of the soonest: (tenant, client id, resource)
    /// and seconds until it expires.
    pub expiries: Vec<([Arc<str>; 3], u64)>,
}

/// The `result` label values of `fedimds_cache_lookups`, each resolved once at start.
pub const LOOKUP_RESULTS: [&str; 4] = ["hit", "stale", "miss", "forced"];

/// A label value shared, not copied, on every request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Shared(pub Arc<str>);

impl EncodeLabelValue for Shared {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        std::fmt::Write::write_str(encoder, &self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    dialect: &'static str,
    target: Shared,
    status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct LookupLabels {
    result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct UpstreamLabels {
    upstream: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct UpstreamKind {
    upstream: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ExpiryLabels {
    tenant: Shared,
    client_id: Shared,
    resource: Shared,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PassthroughLabels {
    class: &'static str,
    status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TargetLabels {
    target: Shared,
    kind: &'static str,
    source: Shared,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

/// The upstreams whose calls are measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamName {
    /// The assertion source (IMDS, identity endpoint, token file).
    Assertion,
    /// Entra's token endpoint.
    Entra,
    /// The assertion source asked for a home-identity target's own token (`exchange = false`).
    Home,
}

impl UpstreamName {
    fn as_str(self) -> &'static str {
        match self {
            UpstreamName::Assertion => "assertion",
            UpstreamName::Entra => "entra",
            UpstreamName::Home => "home",
        }
    }
}

/// Every metric fedimds keeps.
#[derive(Debug)]
pub struct Metrics {
    requests: Family<RequestLabels, Counter>,
    lookups: Family<LookupLabels, Counter>,
    upstream_calls: Family<UpstreamLabels, Counter>,
    upstream_latency: Family<UpstreamKind, Histogram>,
    over_budget: Family<UpstreamKind, Counter>,
    build: Family<BuildLabels, Gauge>,
    passthrough: Family<PassthroughLabels, Counter>,
    /// One series per configured target, replaced whole on reload.
    targets: Family<TargetLabels, Gauge>,
    audit_failures: Counter,
    /// The lookup counters, resolved once: a hit then costs one atomic add.
    by_lookup: [Counter; 4],
}

impl Default for Metrics {
    fn default() -> Self {
        let lookups = Family::<LookupLabels, Counter>::default();
        let by_lookup =
            LOOKUP_RESULTS.map(|result| lookups.get_or_create(&LookupLabels { result }).clone());
        Metrics {
            by_lookup,
            requests: Family::default(),
            lookups,
            upstream_calls: Family::default(),
            upstream_latency: Family::new_with_constructor(|| {
                Histogram::new([
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                ])
            }),
            over_budget: Family::default(),
            build: Family::default(),
            passthrough: Family::default(),
            targets: Family::default(),
            audit_failures: Counter::default(),
        }
    }
}

impl Metrics {
    /// One token request answered.
    pub fn request(&self, dialect: &'static str, target: &Arc<str>, status: u16) {
        self.requests
            .get_or_create(&RequestLabels {
                dialect,
                target: Shared(target.clone()),
                status,
            })
            .inc();
    }

    /// How the cache answered a served request: one of [`LOOKUP_RESULTS`] (a resolved
    /// counter, one atomic add), or any other label (looked up).
    pub fn lookup(&self, result: &'static str) {
        match LOOKUP_RESULTS.iter().position(|r| *r == result) {
            Some(index) => self.by_lookup[index].inc(),
            None => self.lookups.get_or_create(&LookupLabels { result }).inc(),
        };
    }

    /// The counter of requests answered 200 for this dialect and target, to keep and bump
    /// without a lookup on every hit.
    pub fn served_counter(&self, dialect: &'static str, target: &Arc<str>) -> Counter {
        self.requests
            .get_or_create(&RequestLabels {
                dialect,
                target: Shared(target.clone()),
                status: 200,
            })
            .clone()
    }

    /// The targets in force, each with its kind: `exchange` (a target-tenant token) or `home`
    /// (the home identity's own, `exchange = false`). Replaces the set before (reload).
    /// The name of the source whose identity it uses is its `source` label.
    pub fn set_targets<'t>(
        &self,
        targets: impl IntoIterator<Item = (&'t Arc<str>, bool, &'t Arc<str>)>,
    ) {
        self.targets.clear();
        for (target, exchange, source) in targets {
            self.targets
                .get_or_create(&TargetLabels {
                    target: Shared(target.clone()),
                    kind: if exchange { "exchange" } else { "home" },
                    source: Shared(source.clone()),
                })
                .set(1);
        }
    }

    /// The counter of audit lines not recorded, for the audit writer to keep and bump.
    pub fn audit_failures(&self) -> Counter {
        self.audit_failures.clone()
    }

    /// One upstream call and how long it took.
    pub fn upstream(&self, upstream: UpstreamName, ok: bool, took: Duration) {
        let name = upstream.as_str();
        self.upstream_calls
            .get_or_create(&UpstreamLabels {
                upstream: name,
                outcome: if ok { "ok" } else { "error" },
            })
            .inc();
        self.upstream_latency
            .get_or_create(&UpstreamKind { upstream: name })
            .observe(took.as_secs_f64());
    }

    /// One request to a passthrough path answered: its class (a fixed set of names, so the
    /// labels stay bounded) and the status the caller got.
    pub fn passthrough(&self, class: &'static str, status: u16) {
        self.passthrough
            .get_or_create(&PassthroughLabels { class, status })
            .inc();
    }

    /// One call not made: the upstream's budget had no turn free before the caller's deadline.
    pub fn over_budget(&self, upstream: UpstreamName) {
        self.over_budget
            .get_or_create(&UpstreamKind {
                upstream: upstream.as_str(),
            })
            .inc();
    }

    /// The OpenMetrics text: the standing metrics, plus the cache's figures read now.
    pub fn render(&self, cache: &CacheFigures) -> String {
        let mut registry = Registry::with_prefix("fedimds");
        registry.register(
            "requests",
            "Token requests answered, by dialect, target and HTTP status",
            self.requests.clone(),
        );
        registry.register(
            "cache_lookups",
            "Served tokens by how the cache had them: hit, stale (past its refresh point), miss, or forced (fetched anew because a resource refused the cached one)",
            self.lookups.clone(),
        );
        registry.register(
            "upstream_requests",
            "Upstream calls by upstream (assertion source, Entra) and outcome",
            self.upstream_calls.clone(),
        );
        registry.register(
            "upstream_duration_seconds",
            "Upstream call latency",
            self.upstream_latency.clone(),
        );
        registry.register(
            "upstream_budget_refusals",
            "Upstream calls not made because fedimds's budget of calls to that upstream (upstream.max_requests_per_second, upstream.assertion_requests_per_second) had no turn free before the caller's deadline",
            self.over_budget.clone(),
        );
        self.build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register("build_info", "The running version", self.build.clone());
        registry.register(
            "passthrough_requests",
            "Requests to IMDS paths other than tokens, by path class and the HTTP status answered (the real IMDS's, or fedimds's own when it did not forward or the real IMDS failed)",
            self.passthrough.clone(),
        );
        registry.register(
            "target_info",
            "The targets in force: kind exchange serves a target-tenant token, kind home the home identity's own token (exchange = false); source names the home identity used",
            self.targets.clone(),
        );
        registry.register(
            "audit_failures",
            "Audit lines not recorded: the queue was full, or the log could not be written or reopened",
            self.audit_failures.clone(),
        );

        let refreshes = Counter::<u64>::default();
        refreshes.inc_by(cache.refreshes);
        registry.register("cache_refreshes", "Background refreshes started", refreshes);
        let failures = Counter::<u64>::default();
        failures.inc_by(cache.refresh_failures);
        registry.register(
            "cache_refresh_failures",
            "Background refreshes that failed while the cached token stayed in service",
            failures,
        );
        let forced = Counter::<u64>::default();
        forced.inc_by(cache.forced_refreshes);
        registry.register(
            "cache_forced_refreshes",
            "Tokens dropped and fetched anew because a caller presented their SHA-256 (a resource refused them)",
            forced,
        );
        let keys = Gauge::<i64>::default();
        keys.set(i64::try_from(cache.keys).unwrap_or(i64::MAX));
        registry.register("cache_keys", "Cached (tenant, app, resource) keys", keys);
        let throttled = Gauge::<i64>::default();
        throttled.set(i64::try_from(cache.throttled).unwrap_or(i64::MAX));
        registry.register(
            "upstream_throttled",
            "Apps (and the assertion source) the upstream throttles now: none of their keys is fetched",
            throttled,
        );
        let throttles = Counter::<u64>::default();
        throttles.inc_by(cache.throttles);
        registry.register(
            "upstream_throttles",
            "Throttles opened: an Entra 429 for an app, or an IMDS 429 for the assertion source",
            throttles,
        );
        let shortfall = Gauge::<i64>::default();
        shortfall.set(i64::try_from(cache.budget_shortfall).unwrap_or(i64::MAX));
        registry.register(
            "upstream_budget_shortfall",
            "Keys held beyond what the budget of Entra calls (upstream.max_requests_per_second, upstream.burst) can refresh in one refresh window, were they to come due together",
            shortfall,
        );
        let timers = Gauge::<i64>::default();
        timers.set(i64::try_from(cache.timers).unwrap_or(i64::MAX));
        registry.register(
            "cache_timers",
            "Refresh timers alive: at most one per cached key holding a token",
            timers,
        );
        let remembered = Gauge::<i64>::default();
        remembered.set(i64::try_from(cache.remembered_failures).unwrap_or(i64::MAX));
        registry.register(
            "cache_remembered_failures",
            "Cached keys whose last fetch failed: each remembers the failure until a fetch succeeds, so this falls back to 0 after an outage",
            remembered,
        );
        let bytes = Gauge::<i64>::default();
        bytes.set(i64::try_from(cache.bytes).unwrap_or(i64::MAX));
        registry.register(
            "cache_bytes",
            "What the cached keys and tokens weigh, in bytes (bounded by cache.max_bytes)",
            bytes,
        );
        if let Some(soonest) = cache.soonest_expiry {
            let gauge = Gauge::<i64>::default();
            gauge.set(i64::try_from(soonest).unwrap_or(i64::MAX));
            registry.register(
                "token_expiry_min_seconds",
                "Seconds until the soonest cached token expires",
                gauge,
            );
        }
        let expiry = Family::<ExpiryLabels, Gauge>::default();
        for ([tenant, client_id, resource], seconds) in &cache.expiries {
            expiry
                .get_or_create(&ExpiryLabels {
                    tenant: Shared(tenant.clone()),
                    client_id: Shared(client_id.clone()),
                    resource: Shared(resource.clone()),
                })
                .set(i64::try_from(*seconds).unwrap_or(i64::MAX));
        }
        registry.register(
            "token_expiry_seconds",
            "Seconds until each cached token expires, for the soonest 64",
            expiry,
        );

        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &registry).is_err() {
            text.clear();
        }
        text
    }
}
