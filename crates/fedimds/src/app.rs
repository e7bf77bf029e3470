//! The daemon's shared state: [`App`] (the settings in force, swapped whole on reload; the
//! token cache; metrics; the audit log; readiness), how it is built and reloaded, the caller
//! secret file, and start-up prefetch.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::audit::Audit;
use crate::cache::{Lookup, TokenCache};
use crate::caller::RateLimits;
use crate::config::{
    AuditSink, CallerSecret, Config, SecretFile, Target, PREFETCH_SPREAD, SECRET_FILE_POLL,
};
use crate::dialect::arc::ArcKeys;
use crate::dialect::{Dialect, TokenRequest};
use crate::fsutil::{self, Private};
use crate::metrics::Metrics;
use crate::refusal::Refusal;
use crate::target::{self, Selector};
use crate::token::{AccessToken, Secret};
use crate::upstream::{KeyParts, Upstream};

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The upstream HTTP client could not be built (TLS roots).
    #[error("cannot build the upstream HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    /// A file could not be written or opened.
    #[error("cannot open {what} {path}: {source}")]
    File {
        /// Which file.
        what: &'static str,
        /// Where.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The OS random source failed.
    #[error("cannot generate the identity header secret: {0}")]
    Random(String),
    /// A reload changed something only a restart can apply.
    #[error("{0} changed: restart fedimds to apply it (the running config stays in force)")]
    NeedsRestart(&'static str),
}

/// What a reload replaces at once.
#[derive(Debug)]
pub struct Settings {
    /// The validated config.
    pub config: Config,
    /// The App Service-style caller secret.
    pub identity_header: Secret,
    /// Whether fedimds generated it (none configured).
    generated: bool,
    pub(crate) rate_limits: RateLimits,
    /// Each caller's budget of new keys.
    pub(crate) new_keys: crate::caller::NewKeys,
    /// Per target name: its metric label and counters, made once.
    pub(crate) ids: TargetIdsByName,
}

/// Each target's [`TargetIds`] by name: looked up on every cache hit, so hashed with foldhash
/// (its keys are the config's target names; a caller only looks one up).
pub(crate) type TargetIdsByName = HashMap<String, TargetIds, foldhash::fast::RandomState>;

/// One target's metric label and counters, made once per config so requests share rather than
/// copy them.
#[derive(Debug)]
pub(crate) struct TargetIds {
    /// The target's name as a metric label.
    pub(crate) label: Arc<str>,
    /// Whether the target exchanges (false: it serves the home identity's own tokens).
    exchange: bool,
    /// Its tenant, app and source, which its new cache keys share (and
    /// `fedimds_target_info` names the source).
    names: crate::upstream::SharedNames,
    /// Its "answered 200" counter per dialect, in `Dialect::ALL` order.
    pub(crate) served: Vec<prometheus_client::metrics::counter::Counter>,
}

/// Everything a request handler needs.
#[derive(Debug)]
pub struct App {
    settings: ArcSwap<Settings>,
    /// The token cache, in front of the upstream.
    pub cache: TokenCache,
    /// The Arc dialect's outstanding challenge keys.
    pub arc_keys: ArcKeys,
    /// Counters and histograms.
    pub metrics: Arc<Metrics>,
    pub(crate) audit: Audit,
    ready: AtomicBool,
    /// Whether a rule names a uid or gid, so the listeners find each TCP peer's owner.
    owners_wanted: Arc<crate::peer::Wanted>,
    /// Places for requests forwarded to the real IMDS, a bound of their own
    /// ([`crate::config::PASSTHROUGH_MAX_IN_FLIGHT`]) so a slow one never holds the token paths.
    pub passthrough_slots: Arc<tokio::sync::Semaphore>,
    /// The 200 bodies rendered lately, sent again to requests that ask for the same within
    /// the second.
    pub(crate) recent_bodies: crate::dialect::RecentBodies,
}

impl App {
    /// Builds the state: upstream client, cache, audit log, and the caller secret (generated
    /// and written to `identity_header_file` when not configured). Call within the runtime.
    pub fn new(config: Config) -> Result<Arc<App>, StartError> {
        warn_about(&config);
        let metrics = Arc::new(Metrics::default());
        let upstream = Arc::new(Upstream::with_metrics(&config, metrics.clone())?);
        let cache = TokenCache::new(
            upstream,
            &config.cache,
            config.upstream.max_concurrent_fetches,
        );
        tokio::spawn(cache.housekeeping());
        let (identity_header, generated) = match &config.server.identity_header {
            Some(s) => (s.clone(), false),
            None => (generate_secret()?, true),
        };
        if let Some(path) = &config.server.identity_header_file {
            write_secret_file(path, &identity_header)?;
        }
        let audit =
            Audit::start(&config.audit.sink, metrics.audit_failures()).map_err(|source| {
                StartError::File {
                    what: "the audit log (audit.path)",
                    path: match &config.audit.sink {
                        AuditSink::File(path) => path.display().to_string(),
                        AuditSink::Off | AuditSink::Stdout => "-".to_owned(),
                    },
                    source,
                }
            })?;
        let ready = config.targets.iter().all(|t| t.prefetch.is_empty());
        let owners_wanted = Arc::new(crate::peer::Wanted::default());
        wants_owners(&config, &owners_wanted);
        let arc_keys = ArcKeys::new(
            config.server.arc_key_dir.clone(),
            config.server.arc_key_group,
        );
        let app = Arc::new(App {
            settings: ArcSwap::from_pointee(Settings::new(
                config,
                identity_header,
                generated,
                &metrics,
            )),
            cache,
            arc_keys,
            metrics,
            audit,
            ready: AtomicBool::new(ready),
            owners_wanted,
            passthrough_slots: Arc::new(tokio::sync::Semaphore::new(
                crate::config::PASSTHROUGH_MAX_IN_FLIGHT,
            )),
            recent_bodies: Default::default(),
        });
        tokio::spawn(watch_secret_files(Arc::downgrade(&app)));
        Ok(app)
    }

    /// The settings in force.
    pub fn settings(&self) -> arc_swap::Guard<Arc<Settings>> {
        self.settings.load()
    }

    /// The App Service-style caller secret in force.
    pub fn identity_header(&self) -> Secret {
        self.settings.load().identity_header.clone()
    }

    /// Whether the audit log records lines (true when it is off).
    pub fn audit_is_healthy(&self) -> bool {
        self.audit.is_healthy()
    }

    /// Whether the listeners should find each TCP peer's owner: a `[[callers]]` rule names a
    /// uid or a gid. Follows reloads.
    pub fn owners_wanted(&self) -> Arc<crate::peer::Wanted> {
        self.owners_wanted.clone()
    }

    /// True once every prefetch succeeded.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Swaps in a new, already validated config. Cached tokens survive: they are keyed by
    /// tenant, app and resource, so every target that did not change keeps its tokens. The
    /// listeners, the admin address and the audit sink stay as they were started.
    pub fn reload(&self, config: Config) -> Result<(), StartError> {
        let old = self.settings.load();
        // What the sockets were bound with must not change under them: a reload that turned
        // allow_remote off while 0.0.0.0 stays bound would drop the secret requirement.
        // The same for what the listeners, the Arc key table and the cache were built with
        // at start: a reload that seemed to apply them would report one thing and do another.
        let (new, was) = (&config.server, &old.config.server);
        for (changed, key) in [
            (new.listen != was.listen, "server.listen"),
            (new.allow_remote != was.allow_remote, "server.allow_remote"),
            (new.unix_socket != was.unix_socket, "server.unix_socket"),
            (
                new.unix_socket_mode != was.unix_socket_mode,
                "server.unix_socket_mode",
            ),
            (
                new.max_connections != was.max_connections,
                "server.max_connections",
            ),
            (
                new.max_connections_per_peer != was.max_connections_per_peer,
                "server.max_connections_per_peer",
            ),
            (
                new.header_read_timeout != was.header_read_timeout,
                "server.header_read_timeout",
            ),
            (
                new.max_header_bytes != was.max_header_bytes,
                "server.max_header_bytes",
            ),
            (new.arc_key_dir != was.arc_key_dir, "server.arc_key_dir"),
            (
                new.arc_key_group != was.arc_key_group,
                "server.arc_key_group",
            ),
            (
                config.upstream.max_concurrent_fetches
                    != old.config.upstream.max_concurrent_fetches,
                "upstream.max_concurrent_fetches",
            ),
            (config.cache != old.config.cache, "cache"),
            (
                config.admin.listen != old.config.admin.listen,
                "admin.listen",
            ),
            (config.audit.sink != old.config.audit.sink, "audit.path"),
            (
                config.service_fabric != old.config.service_fabric,
                "service_fabric",
            ),
        ] {
            if changed {
                return Err(StartError::NeedsRestart(key));
            }
        }
        // Every step that can fail comes first, so a failed reload leaves the old config wholly
        // in force; only then is anything swapped.
        let upstream = Upstream::reloaded(&config, self.metrics.clone(), &self.cache.upstream())?;
        // A secret removed from the config is no longer the secret: a leaked one must stop
        // working when it is taken out. A generated one stays across reloads.
        let (identity_header, generated) = match (&config.server.identity_header, old.generated) {
            (Some(configured), _) => (configured.clone(), false),
            (None, true) => (old.identity_header.clone(), true),
            (None, false) => {
                tracing::warn!("server.identity_header was removed: a new random secret is in force, and the old one no longer works");
                (generate_secret()?, true)
            }
        };
        if let Some(path) = &config.server.identity_header_file {
            write_secret_file(path, &identity_header)?;
        }
        warn_about(&config);
        for widened in config.widened_from(&old.config) {
            tracing::warn!(%widened, "the reload widens access");
        }
        self.cache.set_upstream(Arc::new(upstream));
        wants_owners(&config, &self.owners_wanted);
        self.settings.store(Arc::new(Settings::new(
            config,
            identity_header,
            generated,
            &self.metrics,
        )));
        // A failure remembered under the old config (a wrong source, a wrong tenant) must not
        // outlive the config that caused it.
        self.cache.forget_failures();
        Ok(())
    }

    /// Whether `presented` is the identity header or a caller's own secret.
    pub(crate) fn secret_known(settings: &Settings, presented: &[u8]) -> bool {
        settings.identity_header.matches(presented)
            || settings
                .config
                .callers
                .iter()
                .any(|c| c.secret.as_ref().is_some_and(|s| s.matches(presented)))
    }

    /// Resolves the target and gets its token, with no caller checks: prefetch's path.
    async fn token_for(
        &self,
        settings: &Settings,
        prefix: Option<&str>,
        req: &TokenRequest,
    ) -> Result<(Arc<AccessToken>, Lookup), Refusal> {
        let resolved = target::resolve(&settings.config, &selector(prefix, req), &req.resource)
            .map_err(Refusal::Target)?;
        self.cache_get(
            settings,
            settings.ids.get(&resolved.target.name),
            resolved.target,
            resolved.tenant,
            resolved.resource,
            req,
            // Prefetch is the config's own: no caller's budget.
            None,
        )
        .await
    }

    /// The token for `target`'s key; `ids` are the target's (looked up once by the caller,
    /// which counts with them too).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn cache_get(
        &self,
        settings: &Settings,
        ids: Option<&TargetIds>,
        target: &Target,
        tenant: &str,
        resource: &str,
        req: &TokenRequest,
        who: Option<crate::caller::Counted>,
    ) -> Result<(Arc<AccessToken>, Lookup), Refusal> {
        // Borrowed, not built: this is the hit path (`cache::key`).
        let key = KeyParts {
            cloud: settings.config.cloud.name,
            tenant,
            client_id: &target.client_id,
            resource,
            // Client capabilities are Entra's; IMDS takes none, so a home token has none, and
            // asking for some makes no key of its own.
            capabilities: req.capabilities.as_deref().filter(|_| target.exchange),
            home: !target.exchange,
            source: &target.source,
            shared: ids.map(|ids| &ids.names),
        };
        self.cache
            .get(
                key,
                settings.config.server.miss_timeout,
                req.refused_token.as_ref(),
                &|| who.map_or(Ok(()), |who| settings.new_keys.take(who)),
            )
            .await
            .map_err(Refusal::Upstream)
    }

    /// Fetches every `prefetch` resource, retrying until all succeed, then marks ready.
    pub async fn prefetch(self: Arc<Self>) {
        /// Between rounds of failed prefetches: the fetch itself already retried.
        const PAUSE: Duration = Duration::from_secs(5);
        // Replicas started together (a rollout, a node pool coming up) would otherwise all
        // ask Entra in the same instant, and then refresh in step.
        tokio::time::sleep(PREFETCH_SPREAD.mul_f64(fastrand::f64())).await;
        let mut done: std::collections::HashSet<(String, String)> = Default::default();
        loop {
            // The settings in force this round: a reload that fixes or drops a broken
            // prefetch entry is honoured at the next round.
            let settings = self.settings.load_full();
            let pending: Vec<(String, String)> = settings
                .config
                .targets
                .iter()
                .flat_map(|t| t.prefetch.iter().map(move |r| (t.name.clone(), r.clone())))
                .filter(|pair| !done.contains(pair))
                .collect();
            if pending.is_empty() {
                break;
            }
            let mut failed = false;
            for (target, resource) in pending {
                let req = TokenRequest {
                    resource: resource.clone(),
                    ..Default::default()
                };
                match self.token_for(&settings, Some(&target), &req).await {
                    Ok(_) => {
                        tracing::info!(target = %target, resource = %resource, "prefetched");
                        done.insert((target, resource));
                    }
                    Err(refusal) => {
                        tracing::warn!(target = %target, resource = %resource, error = %refusal.message(), "prefetch failed; will retry");
                        failed = true;
                    }
                }
            }
            if failed {
                // Jittered too, so replicas that failed together do not retry together.
                tokio::time::sleep(PAUSE.mul_f64(0.5 + fastrand::f64())).await;
            }
        }
        self.ready.store(true, Ordering::Release);
        tracing::info!("ready");
    }
}

impl Settings {
    fn new(
        config: Config,
        identity_header: Secret,
        generated: bool,
        metrics: &Metrics,
    ) -> Settings {
        let ids = config
            .targets
            .iter()
            .map(|t| {
                let label: Arc<str> = t.name.as_str().into();
                let ids = TargetIds {
                    served: Dialect::ALL
                        .iter()
                        .map(|d| metrics.served_counter(d.as_str(), &label))
                        .collect(),
                    label,
                    exchange: t.exchange,
                    names: crate::upstream::SharedNames {
                        tenant: t.tenant_id.as_str().into(),
                        client_id: t.client_id.as_str().into(),
                        source: t.source.as_str().into(),
                    },
                };
                (t.name.clone(), ids)
            })
            .collect::<TargetIdsByName>();
        metrics.set_targets(
            ids.values()
                .map(|ids| (&ids.label, ids.exchange, &ids.names.source)),
        );
        Settings {
            rate_limits: RateLimits::new(&config),
            new_keys: crate::caller::NewKeys::new(config.server.new_keys_per_second),
            ids,
            config,
            identity_header,
            generated,
        }
    }
}

/// Tells the listeners what the `[[callers]]` rules need to know of a TCP peer.
fn wants_owners(config: &Config, wanted: &crate::peer::Wanted) {
    let uid = config
        .callers
        .iter()
        .any(|c| c.uid.is_some() || c.gid.is_some());
    let gid = config.callers.iter().any(|c| c.gid.is_some());
    wanted.uid.store(uid, Ordering::Relaxed);
    wanted.gid.store(gid, Ordering::Relaxed);
}

/// Says, once per start or reload, what in the config is valid but probably not meant, and
/// whether what it prefetches fits the upstream budget.
fn warn_about(config: &Config) {
    for warning in config
        .warnings()
        .into_iter()
        .chain(crate::upstream::budget::warnings(config))
    {
        tracing::warn!(%warning, "config");
    }
}

pub(crate) fn selector<'a>(prefix: Option<&'a str>, req: &'a TokenRequest) -> Selector<'a> {
    Selector {
        prefix,
        client_id: req.client_id.as_deref(),
        object_id: req.object_id.as_deref(),
        resource_id: req.resource_id.as_deref(),
        tenant_id: req.tenant_id.as_deref(),
    }
}

/// Reads every `callers[].secret_file` of the settings in force again every
/// [`SECRET_FILE_POLL`], so a rotated secret (a Kubernetes Secret's new value reaching its
/// mounted file) lets in whom it names, and no longer whom it named, without a restart. A file
/// that cannot be read accepts no secret until it can. Ends with the `App`.
async fn watch_secret_files(app: std::sync::Weak<App>) {
    loop {
        tokio::time::sleep(SECRET_FILE_POLL).await;
        let Some(app) = app.upgrade() else { return };
        let settings = app.settings.load_full();
        drop(app);
        let files: Vec<(String, SecretFile)> = settings
            .config
            .callers
            .iter()
            .filter_map(|rule| match &rule.secret {
                Some(CallerSecret::File(file)) => Some((rule.name.clone(), file.clone())),
                _ => None,
            })
            .collect();
        if files.is_empty() {
            continue;
        }
        // Small files, but file reads all the same: off the runtime's workers.
        let changes = tokio::task::spawn_blocking(move || {
            files
                .into_iter()
                .map(|(name, file)| {
                    let (changed, error) = file.reload();
                    (name, file, changed, error)
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        for (name, file, changed, error) in changes {
            match (changed, error) {
                (true, None) => tracing::info!(
                    caller = %name,
                    key = %file.key,
                    path = %file.path.display(),
                    secrets = file.current.load().len(),
                    "caller secret file changed: its new secrets are in force"
                ),
                (true, Some(why)) => tracing::warn!(
                    caller = %name,
                    key = %file.key,
                    path = %file.path.display(),
                    error = %why,
                    "caller secret file cannot be read: the caller is refused until it can"
                ),
                (false, _) => {}
            }
        }
    }
}

fn generate_secret() -> Result<Secret, StartError> {
    // 256 bits from the OS, hex-encoded: safe in a header and in an environment variable.
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).map_err(|e| StartError::Random(e.to_string()))?;
    Ok(Secret::new(
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>(),
    ))
}

fn write_secret_file(path: &Path, secret: &Secret) -> Result<(), StartError> {
    fsutil::replace(path, secret.expose().as_bytes(), Private::OWNER_ONLY).map_err(|source| {
        StartError::File {
            what: "the identity header file (server.identity_header_file)",
            path: path.display().to_string(),
            source,
        }
    })
}
