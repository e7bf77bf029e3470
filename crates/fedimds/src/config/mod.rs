//! Configuration in one place, in two stages: [`RawConfig`] ([`raw`]) is what the TOML file
//! says, [`Config`] is what the daemon runs on, validated and typed (`validate.rs`). Every
//! environment variable, default and fixed limit the daemon reads is named once, at the top of
//! this file. The loader records where each value came from as it reads it, which is what
//! `fedimds config` prints ([`provenance`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use url::Url;

use crate::cloud::CloudName;
use crate::token::Secret;

pub mod provenance;
pub mod raw;
mod validate;

pub use raw::RawConfig;

/// Environment variable naming the config file.
pub const ENV_CONFIG: &str = "FEDIMDS_CONFIG";
/// App Service-style source: the endpoint, as App Service sets it.
pub const ENV_IDENTITY_ENDPOINT: &str = "IDENTITY_ENDPOINT";
/// App Service-style source: the secret, as App Service sets it.
pub const ENV_IDENTITY_HEADER: &str = "IDENTITY_HEADER";
/// Token-file source: the projected service-account token, as workload identity sets it.
pub const ENV_FEDERATED_TOKEN_FILE: &str = "AZURE_FEDERATED_TOKEN_FILE";
/// `server.identity_header` when the file has none, so a Kubernetes Secret can supply it.
pub const ENV_SERVER_IDENTITY_HEADER: &str = "FEDIMDS_IDENTITY_HEADER";
/// The log filter (tracing's env-filter syntax), before `RUST_LOG`.
pub const ENV_LOG: &str = "FEDIMDS_LOG";
/// `--log-format` when the flag is not given: `text` or `json`.
pub const ENV_LOG_FORMAT: &str = "FEDIMDS_LOG_FORMAT";

/// The log filter when no variable sets one: our own info lines (the daemon's and the
/// simulator's), others' warnings.
pub const DEFAULT_LOG_FILTER: &str = "fedimds=info,fedimds_sim=info,warn";
/// Where `fedimds sim` listens.
pub const DEFAULT_SIM_LISTEN: &str = "127.0.0.1:8282";
/// Loopback only, on a port nothing of Azure's uses.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8181";
/// The admin listener (health, readiness, metrics): loopback, next to the token port.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:8182";
/// Open connections at most; past this, accepting waits (backpressure, not failure).
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Open connections from one peer at most (a local uid, or a remote address): half the
/// overall cap, so one caller can never take every place.
pub const DEFAULT_MAX_CONNECTIONS_PER_PEER: usize = DEFAULT_MAX_CONNECTIONS / 2;
/// File descriptors kept free beside the connections: sockets to upstreams, files, the
/// listeners, the runtime's own.
pub const RESERVED_FDS: u64 = 64;
/// Upstream fetches in flight at most: cold keys beyond this wait their turn (within
/// `server.miss_timeout`), so a flood of new keys cannot open a connection to Entra each.
pub const DEFAULT_MAX_CONCURRENT_FETCHES: usize = 16;
/// The cache's size bound in bytes (keys and tokens, with moka's own overhead).
pub const DEFAULT_CACHE_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// What an entry weighs besides its key and token: the slot, its timers, moka's bookkeeping.
pub const CACHE_ENTRY_OVERHEAD: u32 = 1024;
/// Tokens `fedimds_token_expiry_seconds` shows one by one (the soonest to expire), so
/// `/metrics` stays small whatever the number of keys; the soonest of all is its own gauge.
pub const MAX_EXPIRY_SERIES: usize = 64;
/// The largest upstream answer read: token answers are a few KB.
pub const MAX_UPSTREAM_BODY: usize = 1024 * 1024;
/// The shortest token lifetime accepted from Entra: anything shorter could not be served
/// before it expired, and would cost an exchange per request.
pub const MIN_TOKEN_LIFETIME: std::time::Duration = std::time::Duration::from_secs(60);
/// The longest resource accepted: real resource URIs are well under it, and a longer one can
/// only cost memory and an Entra call.
pub const MAX_RESOURCE_LEN: usize = 1024;
/// A client must send its whole request head within this, or is dropped (slowloris).
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request head (request line plus headers); SDK requests are under 2 KiB.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;
/// Mode of the Unix socket: owner and group may connect.
pub const DEFAULT_UNIX_SOCKET_MODE: u32 = 0o660;
/// Where Arc clients insist on reading challenge key files.
pub const DEFAULT_ARC_KEY_DIR: &str = "/var/opt/azcmagent/tokens";
/// Real IMDS.
pub const DEFAULT_IMDS_ENDPOINT: &str = "http://169.254.169.254";
/// Upstream connect timeout: a local IMDS or a healthy Entra front door answers in
/// milliseconds; a dead route should fail fast so the retry can go elsewhere.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Upstream total timeout per attempt: Entra's p99 is well under this.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a caller waits on a cold miss before it gets 503 + Retry-After and its SDK's own
/// retry takes over. Below every SDK's own timeout, so callers see our answer, not theirs.
pub const DEFAULT_MISS_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a permanent upstream error (a configuration error in Entra) is remembered, so a
/// crowd of callers sends Entra a handful of requests, never enough to trip its loop detection
/// (15 identical requests in 5 minutes).
pub const DEFAULT_ERROR_TTL: Duration = Duration::from_secs(30);
/// Cached (target, resource) keys at most; an entry is a few hundred bytes.
pub const DEFAULT_MAX_KEYS: u64 = 100_000;
/// Keys not asked for in this long are dropped and no longer refreshed.
pub const DEFAULT_IDLE_TTL: Duration = Duration::from_secs(24 * 3600);

/// Largest form body accepted (Automation's POST carries two short parameters).
pub const MAX_BODY: usize = 16 * 1024;
/// How long in-flight requests get to finish after shutdown is asked for: short, so a
/// Kubernetes Job with fedimds as a sidecar finishes promptly.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// An Arc challenge key is good for this long: a client reads it and retries at once.
pub const ARC_KEY_TTL: Duration = Duration::from_secs(60);
/// Outstanding Arc challenges at most; past this, new challenges are refused (429) until keys
/// are used or expire, rather than outstanding ones dropped: a flood must not cost another
/// caller the key it is about to present.
pub const ARC_MAX_KEYS: usize = 256;
/// Outstanding Arc challenges per caller at most (a `[[callers]]` rule, else a peer address or
/// uid): a quarter of [`ARC_MAX_KEYS`], so one caller cannot take every place. A client
/// presents its key at once, so a caller rarely holds more than one.
pub const ARC_MAX_KEYS_PER_CALLER: usize = ARC_MAX_KEYS / 4;
/// The smallest request-head bound that still fits every SDK's request with room to spare.
pub const MIN_HEADER_BYTES: usize = 8 * 1024;

/// A way to read environment variables, so tests never touch the process environment.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Whether two spellings name the same resource: case and trailing slashes do not matter,
/// as for Entra. The one rule the allow-lists and grants share.
pub fn same_resource(a: &str, b: &str) -> bool {
    a.trim_end_matches('/')
        .eq_ignore_ascii_case(b.trim_end_matches('/'))
}

/// Whether `s` is a GUID (`8-4-4-4-12` hex digits), as tenant ids are.
pub fn is_guid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// What can be wrong with a config. Each names the key, the value, and what was expected.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown keys.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The TOML parser's message, which names the line and the key.
        message: String,
    },
    /// A value is out of its domain.
    #[error("config key `{key}` = {value:?}: expected {expected}")]
    Invalid {
        /// Dotted path of the key.
        key: String,
        /// The offending value.
        value: String,
        /// What would be accepted.
        expected: String,
    },
}

pub(crate) fn invalid(
    key: impl Into<String>,
    value: impl Into<String>,
    expected: impl Into<String>,
) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        value: value.into(),
        expected: expected.into(),
    }
}

/// The validated configuration the daemon runs on.
#[derive(Debug, Clone)]
pub struct Config {
    /// The token listener.
    pub server: Server,
    /// Where the home-tenant assertion comes from.
    pub source: Source,
    /// Which Azure cloud.
    pub cloud: Cloud,
    /// Timeouts for every upstream call.
    pub upstream: Upstream,
    /// Cache bounds.
    pub cache: CacheSettings,
    /// The target tenants and apps, in file order.
    pub targets: Vec<Target>,
    /// Per-caller policy; empty = every caller may use every target.
    pub callers: Vec<CallerRule>,
    /// The admin listener.
    pub admin: Admin,
    /// The audit log.
    pub audit: Audit,
}

/// The token listener.
#[derive(Debug, Clone)]
pub struct Server {
    /// Address of the token endpoints.
    pub listen: SocketAddr,
    /// The App Service-style caller secret; generated per start when unset.
    pub identity_header: Option<Secret>,
    /// Where a generated secret is written (mode 0600).
    pub identity_header_file: Option<PathBuf>,
    /// Longest a caller waits on a cold miss.
    pub miss_timeout: Duration,
    /// Where the Arc dialect writes its challenge key files.
    pub arc_key_dir: PathBuf,
    /// The group that may read them (mode 0640); none = fedimds's user only (0600).
    pub arc_key_group: Option<u32>,
    /// A Unix socket to serve on as well, callers identified by their uid/gid.
    pub unix_socket: Option<PathBuf>,
    /// Its mode.
    pub unix_socket_mode: u32,
    /// Host header values accepted besides loopback names and 169.254.169.254 (DNS rebinding).
    pub allowed_hosts: Vec<String>,
    /// Whether this listener can be reached from off the host (then every request needs a secret).
    pub allow_remote: bool,
    /// Open connections at most.
    pub max_connections: usize,
    /// Open connections from one peer at most.
    pub max_connections_per_peer: usize,
    /// Time to send a request head, and then a request body.
    pub header_read_timeout: Duration,
    /// Largest request head.
    pub max_header_bytes: usize,
}

/// The admin listener.
#[derive(Debug, Clone)]
pub struct Admin {
    /// Its address; `None` = no admin listener.
    pub listen: Option<SocketAddr>,
}

/// The audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audit {
    /// Where its lines go; a restart applies a change.
    pub sink: AuditSink,
    /// Whether a token whose line cannot be recorded is refused (503) rather than served.
    pub fail_closed: bool,
}

/// Where audit lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditSink {
    /// Nowhere.
    Off,
    /// Standard output (diagnostic logs go to standard error).
    Stdout,
    /// A file, appended to.
    File(PathBuf),
}

/// Who a caller is and what it may have.
#[derive(Debug, Clone)]
pub struct CallerRule {
    /// For audit lines and errors.
    pub name: String,
    /// The caller's own secret (sent as X-IDENTITY-HEADER or secret).
    pub secret: Option<Secret>,
    /// Unix socket peer uid.
    pub uid: Option<u32>,
    /// Unix socket peer gid.
    pub gid: Option<u32>,
    /// Source network: address and prefix length.
    pub source: Option<(std::net::IpAddr, u8)>,
    /// Target names it may use; `None` = any.
    pub targets: Option<Vec<String>>,
    /// Resources it may ask for; `None` = any.
    pub resources: Option<Vec<String>>,
    /// Requests per second (burst of the same size); `None` = unlimited.
    pub rate: Option<f64>,
}

/// Where the home-tenant assertion comes from.
#[derive(Debug, Clone)]
pub enum SourceKind {
    /// A managed-identity token from IMDS.
    Imds {
        /// Base URL, e.g. `http://169.254.169.254`.
        endpoint: Url,
        /// A user-assigned identity's client id.
        client_id: Option<String>,
    },
    /// A managed-identity token from an App Service-style `IDENTITY_ENDPOINT`.
    AppService {
        /// The full token URL.
        endpoint: Url,
        /// The `X-IDENTITY-HEADER` secret.
        header: Secret,
        /// A user-assigned identity's client id.
        client_id: Option<String>,
    },
    /// A token file, e.g. a Kubernetes projected service-account token.
    TokenFile {
        /// The file, re-read when it changes.
        path: PathBuf,
    },
}

/// The assertion source and the audience it is asked for.
#[derive(Debug, Clone)]
pub struct Source {
    /// Which source.
    pub kind: SourceKind,
    /// The resource the managed-identity token is requested for.
    pub audience: String,
}

/// The cloud profile in force.
#[derive(Debug, Clone)]
pub struct Cloud {
    /// Its name.
    pub name: CloudName,
    /// Entra's base URL (no trailing slash).
    pub authority_host: Url,
}

/// Timeouts and concurrency of upstream calls.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// Fetches in flight at most.
    pub max_concurrent_fetches: usize,
    /// TCP+TLS connect.
    pub connect_timeout: Duration,
    /// One whole attempt.
    pub request_timeout: Duration,
}

/// Cache bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheSettings {
    /// Most keys held.
    pub max_keys: u64,
    /// Most bytes held (keys, tokens and overhead).
    pub max_bytes: u64,
    /// Keys idle this long are dropped.
    pub idle_ttl: Duration,
    /// How long a permanent upstream error is remembered.
    pub error_ttl: Duration,
}

/// A target: a tenant and the multi-tenant app whose tokens fedimds serves for it.
#[derive(Debug, Clone)]
pub struct Target {
    /// Unique name, used in `/targets/{name}` and as a `client_id` alias.
    pub name: String,
    /// The target tenant.
    pub tenant_id: String,
    /// The multi-tenant app registration.
    pub client_id: String,
    /// Allowed resources; `None` = any.
    pub resources: Option<Vec<String>>,
    /// Other tenants a caller may name with `tenant_id=`.
    pub allowed_tenants: AllowedTenants,
    /// Chosen when a request names no target.
    pub default: bool,
    /// An `object_id` alias callers may select this target by.
    pub object_id: Option<String>,
    /// A `msi_res_id` alias callers may select this target by.
    pub resource_id: Option<String>,
    /// Resources to fetch at start, before `/readyz` says ready.
    pub prefetch: Vec<String>,
}

/// Tenants other than its own that a target may be asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedTenants {
    /// Only the target's own.
    None,
    /// These.
    Listed(Vec<String>),
    /// Any (`["*"]`).
    Any,
}

impl Target {
    /// Whether `tenant` may be asked for through this target.
    pub fn allows_tenant(&self, tenant: &str) -> bool {
        tenant.eq_ignore_ascii_case(&self.tenant_id)
            || match &self.allowed_tenants {
                AllowedTenants::None => false,
                AllowedTenants::Any => true,
                AllowedTenants::Listed(list) => list.iter().any(|t| t.eq_ignore_ascii_case(tenant)),
            }
    }

    /// Whether `resource` is on the allow-list (case and a trailing `/` do not matter).
    pub fn allows_resource(&self, resource: &str) -> bool {
        self.allowed_spelling(resource).is_some()
    }

    /// The allow-list's spelling of `resource` (case and a trailing `/` aside), `resource`
    /// itself when the target has no list, `None` when it is not allowed.
    pub fn allowed_spelling<'a>(&'a self, resource: &'a str) -> Option<&'a str> {
        match &self.resources {
            None => Some(resource),
            Some(list) => list
                .iter()
                .find(|r| same_resource(r, resource))
                .map(String::as_str),
        }
    }
}

impl Config {
    /// Reads and validates the config file.
    pub fn load(path: &Path, env: Env<'_>) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_toml(&text, &path.display().to_string(), env)
    }

    /// Parses and validates TOML text; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str, env: Env<'_>) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_owned(),
            message: parse_message(text, &e),
        })?;
        raw.validate(env)
    }

    /// Parses and validates TOML text, recording where each value came from.
    pub fn from_toml_recorded(
        text: &str,
        origin: &str,
        env: Env<'_>,
    ) -> Result<(Config, Vec<provenance::Entry>), ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_owned(),
            message: parse_message(text, &e),
        })?;
        raw.validate_recorded(env)
    }

    /// The target with this name.
    pub fn target(&self, name: &str) -> Option<&Target> {
        self.targets.iter().find(|t| t.name == name)
    }

    /// What this config opens that `old` kept shut, for a reload to warn about: every
    /// `[[callers]]` rule gone, a caller granted more targets, more Host names accepted,
    /// `allowed_tenants = ["*"]` where there was none.
    pub fn widened_from(&self, old: &Config) -> Vec<String> {
        let mut widened = Vec::new();
        if self.callers.is_empty() && !old.callers.is_empty() {
            widened.push("every [[callers]] rule was removed: any caller that reaches the listener may now use every target".to_owned());
        }
        // A list that was None allowed everything; one that grew allows more.
        let more = |was: &Option<Vec<String>>, now: &Option<Vec<String>>| match (was, now) {
            (Some(_), None) => true,
            (Some(was), Some(now)) => now.iter().any(|t| !was.contains(t)),
            (None, _) => false,
        };
        for rule in &self.callers {
            let Some(before) = old.callers.iter().find(|o| o.name == rule.name) else {
                if !old.callers.is_empty() {
                    widened.push(format!(
                        "a new [[callers]] rule '{}' grants access",
                        rule.name
                    ));
                }
                continue;
            };
            if more(&before.targets, &rule.targets) {
                widened.push(format!("caller '{}' is granted more targets", rule.name));
            }
            if more(&before.resources, &rule.resources) {
                widened.push(format!("caller '{}' is granted more resources", rule.name));
            }
            // A rule that stops asking for an identifier matches more callers.
            let dropped = [
                (before.secret.is_some() && rule.secret.is_none(), "secret"),
                (before.uid.is_some() && rule.uid.is_none(), "uid"),
                (before.gid.is_some() && rule.gid.is_none(), "gid"),
                (before.source.is_some() && rule.source.is_none(), "source"),
            ];
            for (gone, what) in dropped {
                if gone {
                    widened.push(format!(
                        "caller '{}' no longer needs a {what} to match",
                        rule.name
                    ));
                }
            }
        }
        let new_hosts: Vec<&String> = self
            .server
            .allowed_hosts
            .iter()
            .filter(|h| !old.server.allowed_hosts.contains(h))
            .collect();
        if !new_hosts.is_empty() {
            widened.push(format!(
                "server.allowed_hosts now also accepts {new_hosts:?}"
            ));
        }
        for target in &self.targets {
            let was_any = old
                .target(&target.name)
                .is_some_and(|t| t.allowed_tenants == AllowedTenants::Any);
            if target.allowed_tenants == AllowedTenants::Any && !was_any {
                widened.push(format!(
                    "target '{}' now has allowed_tenants = [\"*\"]",
                    target.name
                ));
            }
        }
        widened
    }

    /// What is valid but probably not meant, for start-up, reload and `check` to say: targets
    /// whose tenants overlap with the same app, and `allowed_tenants = ["*"]` beside per-caller
    /// grants.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        for (i, a) in self.targets.iter().enumerate() {
            for b in self.targets.iter().skip(i + 1) {
                let same_app = a.client_id.eq_ignore_ascii_case(&b.client_id);
                if same_app && a.tenant_id.eq_ignore_ascii_case(&b.tenant_id) {
                    warnings.push(format!(
                        "targets '{}' and '{}' are the same tenant and app: they hand out the same tokens, so a grant of either is a grant of both",
                        a.name, b.name
                    ));
                }
            }
            for b in &self.targets {
                let overlaps = !std::ptr::eq(a, b)
                    && a.client_id.eq_ignore_ascii_case(&b.client_id)
                    && !a.tenant_id.eq_ignore_ascii_case(&b.tenant_id)
                    && a.allowed_tenants != AllowedTenants::Any
                    && a.allows_tenant(&b.tenant_id);
                if overlaps && !self.callers.is_empty() {
                    warnings.push(format!(
                        "target '{}' allows tenant {}, which target '{}' owns with the same app: a caller gets it through '{}' only if also granted '{}'",
                        a.name, b.tenant_id, b.name, a.name, b.name
                    ));
                }
            }
            if a.allowed_tenants == AllowedTenants::Any && !self.callers.is_empty() {
                warnings.push(format!(
                    "target '{}' has allowed_tenants = [\"*\"] beside [[callers]] grants: a caller granted '{}' may ask for any tenant that consented to app {} (except those another target owns and the caller is not granted)",
                    a.name, a.name, a.client_id
                ));
            }
        }
        warnings
    }
}

/// The TOML parser's message with its line and column, but not the quoted source line it
/// would print: that line may hold a secret (an `identity_header` under the wrong table). Nor
/// the value serde quotes ([`redact_value`]).
fn parse_message(text: &str, e: &toml::de::Error) -> String {
    let message = redact_value(e.message().trim_end());
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("line {line}, column {column}: {message}")
        }
        None => message,
    }
}

/// serde's message without the value it found: "invalid type: integer `4839…`, expected a
/// string" becomes "invalid type: integer, expected a string". A secret written without
/// quotes is such a value, and a reload logs this message at ERROR level. The message does not
/// reliably say which key it is about, so every key's value is redacted; the kind of value and
/// what was expected stay, which is what the reader needs. Key names (`unknown field`) stay.
fn redact_value(message: &str) -> String {
    // serde's wording (`serde::de::Error`): the value found, then `, expected …` from our
    // own types, which holds no value from the file.
    const ECHOING: [&str; 3] = ["invalid type: ", "invalid value: ", "unknown variant "];
    let Some(prefix) = ECHOING.iter().find(|p| message.starts_with(**p)) else {
        return message.to_owned();
    };
    // The last `, expected`: a quoted string value may itself contain one.
    let (found, expected) = match message.rfind(", expected") {
        Some(at) => message.split_at(at),
        None => (message, ""),
    };
    // The value is quoted last: integer `5`, string "x", unknown variant `x`.
    let kind = found[prefix.len()..]
        .split(['`', '"'])
        .next()
        .unwrap_or_default()
        .trim_end();
    let label = prefix.trim_end();
    if kind.is_empty() {
        format!("{label}{expected}")
    } else {
        format!("{label} {kind}{expected}")
    }
}

#[cfg(test)]
mod tests;
