//! Configuration in one place, in two stages: [`RawConfig`] is what the TOML file says,
//! [`Config`] is what the daemon runs on, validated and typed. Every environment variable and
//! default is named once, at the top of this file.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use crate::cloud::CloudName;
use crate::token::Secret;

/// The config file, when `--config` is not given.
pub const ENV_CONFIG: &str = "FEDIMDS_CONFIG";
/// App Service-style source: the endpoint, as App Service sets it.
pub const ENV_IDENTITY_ENDPOINT: &str = "IDENTITY_ENDPOINT";
/// App Service-style source: the secret, as App Service sets it.
pub const ENV_IDENTITY_HEADER: &str = "IDENTITY_HEADER";
/// Token-file source: the projected service-account token, as workload identity sets it.
pub const ENV_FEDERATED_TOKEN_FILE: &str = "AZURE_FEDERATED_TOKEN_FILE";
/// `server.identity_header` when the file has none, so a Kubernetes Secret can supply it.
pub const ENV_SERVER_IDENTITY_HEADER: &str = "FEDIMDS_IDENTITY_HEADER";

/// Loopback only, on a port nothing of Azure's uses.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8181";
/// The admin listener (health, readiness, metrics): loopback, next to the token port.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:8182";
/// Open connections at most; past this, accepting waits (backpressure, not failure).
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
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

/// A way to read environment variables, so tests never touch the process environment.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
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

fn invalid(
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

// === raw: the file as written ===

/// The TOML file as written. Unknown keys are errors: a typo must not silently become a default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    source: RawSource,
    #[serde(default)]
    cloud: RawCloud,
    #[serde(default)]
    upstream: RawUpstream,
    #[serde(default)]
    cache: RawCache,
    #[serde(default)]
    targets: Vec<RawTarget>,
    #[serde(default)]
    callers: Vec<RawCaller>,
    #[serde(default)]
    admin: RawAdmin,
    #[serde(default)]
    audit: RawAudit,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    listen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    path: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCaller {
    name: Option<String>,
    secret: Option<String>,
    uid: Option<u32>,
    gid: Option<u32>,
    source: Option<String>,
    targets: Option<Vec<String>>,
    resources: Option<Vec<String>>,
    rate: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<String>,
    allow_remote: Option<bool>,
    identity_header: Option<String>,
    identity_header_file: Option<PathBuf>,
    miss_timeout: Option<RawDuration>,
    arc_key_dir: Option<PathBuf>,
    arc_key_group: Option<u32>,
    unix_socket: Option<PathBuf>,
    unix_socket_mode: Option<u32>,
    allowed_hosts: Option<Vec<String>>,
    max_connections: Option<usize>,
    header_read_timeout: Option<RawDuration>,
    max_header_bytes: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    kind: Option<String>,
    endpoint: Option<String>,
    client_id: Option<String>,
    header: Option<String>,
    path: Option<PathBuf>,
    audience: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCloud {
    name: Option<String>,
    authority_host: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    connect_timeout: Option<RawDuration>,
    request_timeout: Option<RawDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCache {
    max_keys: Option<u64>,
    idle_ttl: Option<RawDuration>,
    error_ttl: Option<RawDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    name: Option<String>,
    tenant_id: Option<String>,
    client_id: Option<String>,
    resources: Option<Vec<String>>,
    allowed_tenants: Option<Vec<String>>,
    default: Option<bool>,
    object_id: Option<String>,
    resource_id: Option<String>,
    #[serde(default)]
    prefetch: Vec<String>,
}

/// A duration as `"500ms"`, `"10s"`, `"5m"`, `"1h"`, or a number of seconds.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum RawDuration {
    Seconds(u64),
    Text(String),
}

impl RawDuration {
    fn parse(&self, key: &str) -> Result<Duration, ConfigError> {
        let text = match self {
            RawDuration::Seconds(s) => return Ok(Duration::from_secs(*s)),
            RawDuration::Text(t) => t.trim(),
        };
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (digits, unit) = text.split_at(split);
        let n: u64 = digits.parse().map_err(|_| {
            invalid(
                key,
                text,
                "a duration such as \"500ms\", \"10s\", \"5m\" or \"1h\"",
            )
        })?;
        match unit.trim() {
            "ms" => Ok(Duration::from_millis(n)),
            "" | "s" => Ok(Duration::from_secs(n)),
            "m" | "h" => {
                let unit_s = if unit.trim() == "m" { 60 } else { 3600 };
                n.checked_mul(unit_s)
                    .map(Duration::from_secs)
                    .ok_or_else(|| invalid(key, text, "a duration that fits in 64 bits of seconds"))
            }
            _ => Err(invalid(key, text, "a duration unit of ms, s, m or h")),
        }
    }
}

// === validated ===

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
    pub audit: AuditSink,
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
    /// Time to send a request head.
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

/// Timeouts on every upstream call.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// TCP+TLS connect.
    pub connect_timeout: Duration,
    /// One whole attempt.
    pub request_timeout: Duration,
}

/// Cache bounds.
#[derive(Debug, Clone)]
pub struct CacheSettings {
    /// Most keys held.
    pub max_keys: u64,
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

    /// Whether `resource` is on the allow-list (a trailing `/` does not matter).
    pub fn allows_resource(&self, resource: &str) -> bool {
        let Some(list) = &self.resources else {
            return true;
        };
        let trim = |r: &str| r.trim_end_matches('/').to_ascii_lowercase();
        let wanted = trim(resource);
        list.iter().any(|r| trim(r) == wanted)
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

    /// The target with this name.
    pub fn target(&self, name: &str) -> Option<&Target> {
        self.targets.iter().find(|t| t.name == name)
    }
}

impl RawConfig {
    /// Checks every value and fills in defaults.
    pub fn validate(self, env: Env<'_>) -> Result<Config, ConfigError> {
        let cloud = self.cloud.validate()?;
        Ok(Config {
            server: self.server.validate(env)?,
            source: self.source.validate(&cloud, env)?,
            upstream: Upstream {
                connect_timeout: duration(
                    &self.upstream.connect_timeout,
                    "upstream.connect_timeout",
                    DEFAULT_CONNECT_TIMEOUT,
                )?,
                request_timeout: duration(
                    &self.upstream.request_timeout,
                    "upstream.request_timeout",
                    DEFAULT_REQUEST_TIMEOUT,
                )?,
            },
            cache: CacheSettings {
                max_keys: self.cache.max_keys.unwrap_or(DEFAULT_MAX_KEYS).max(1),
                idle_ttl: duration(&self.cache.idle_ttl, "cache.idle_ttl", DEFAULT_IDLE_TTL)?,
                error_ttl: duration(&self.cache.error_ttl, "cache.error_ttl", DEFAULT_ERROR_TTL)?,
            },
            callers: Vec::new(),
            targets: validate_targets(self.targets)?,
            admin: Admin {
                listen: match self.admin.listen.as_deref() {
                    Some("off") => None,
                    other => {
                        let text = other.unwrap_or(DEFAULT_ADMIN_LISTEN);
                        Some(text.parse().map_err(|_| {
                            invalid("admin.listen", text, "an IP address and port, or \"off\"")
                        })?)
                    }
                },
            },
            audit: match self.audit.path.as_deref() {
                None | Some("off") => AuditSink::Off,
                Some("-") | Some("stdout") => AuditSink::Stdout,
                Some(path) => AuditSink::File(PathBuf::from(path)),
            },
            cloud,
        })
        .and_then(|mut config: Config| {
            config.callers = validate_callers(self.callers, &config.targets)?;
            Ok(config)
        })
    }
}

/// The TOML parser's message with its line and column, but not the quoted source line it
/// would print: that line may hold a secret (an `identity_header` under the wrong table).
pub(crate) fn parse_message(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim_end();
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("line {line}, column {column}: {message}")
        }
        None => message.to_owned(),
    }
}

fn duration(
    raw: &Option<RawDuration>,
    key: &str,
    default: Duration,
) -> Result<Duration, ConfigError> {
    raw.as_ref().map_or(Ok(default), |d| d.parse(key))
}

impl RawServer {
    fn validate(mut self, env: Env<'_>) -> Result<Server, ConfigError> {
        if self.identity_header.is_none() {
            self.identity_header = env(ENV_SERVER_IDENTITY_HEADER);
        }
        let listen_text = self.listen.unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
        let listen: SocketAddr = listen_text.parse().map_err(|_| {
            invalid(
                "server.listen",
                &listen_text,
                "an IP address and port, e.g. \"127.0.0.1:8181\"",
            )
        })?;
        // Tokens for another company's tenant must not be reachable from the network by a
        // slip of the config: anything but loopback has to be asked for, and then needs a secret.
        if !listen.ip().is_loopback() {
            if self.allow_remote != Some(true) {
                return Err(invalid(
                    "server.listen",
                    &listen_text,
                    "a loopback address; to listen elsewhere set server.allow_remote = true and server.identity_header",
                ));
            }
            if self.identity_header.is_none() {
                return Err(invalid(
                    "server.identity_header",
                    "",
                    "a caller secret, required when server.allow_remote = true",
                ));
            }
        }
        let identity_header = match self.identity_header {
            Some(h) if h.len() < 16 => {
                return Err(invalid(
                    "server.identity_header",
                    "(redacted)",
                    "a secret of at least 16 characters",
                ))
            }
            other => other.map(Secret::new),
        };
        Ok(Server {
            listen,
            identity_header,
            identity_header_file: self.identity_header_file,
            miss_timeout: duration(
                &self.miss_timeout,
                "server.miss_timeout",
                DEFAULT_MISS_TIMEOUT,
            )?,
            arc_key_dir: self
                .arc_key_dir
                .unwrap_or_else(|| PathBuf::from(DEFAULT_ARC_KEY_DIR)),
            arc_key_group: self.arc_key_group,
            unix_socket: self.unix_socket,
            unix_socket_mode: self.unix_socket_mode.unwrap_or(DEFAULT_UNIX_SOCKET_MODE),
            allowed_hosts: self.allowed_hosts.unwrap_or_default(),
            allow_remote: self.allow_remote == Some(true),
            max_connections: self
                .max_connections
                .unwrap_or(DEFAULT_MAX_CONNECTIONS)
                .max(1),
            header_read_timeout: duration(
                &self.header_read_timeout,
                "server.header_read_timeout",
                DEFAULT_HEADER_READ_TIMEOUT,
            )?,
            max_header_bytes: self
                .max_header_bytes
                .unwrap_or(DEFAULT_MAX_HEADER_BYTES)
                .max(8192),
        })
    }
}

impl RawCloud {
    fn validate(self) -> Result<Cloud, ConfigError> {
        let name_text = self.name.unwrap_or_else(|| "public".to_owned());
        let name = CloudName::parse(&name_text).ok_or_else(|| {
            invalid(
                "cloud.name",
                &name_text,
                "one of \"public\", \"usgov\", \"china\"",
            )
        })?;
        let host = self
            .authority_host
            .unwrap_or_else(|| name.authority_host().to_owned());
        Ok(Cloud {
            name,
            authority_host: upstream_url("cloud.authority_host", &host)?,
        })
    }
}

impl RawSource {
    fn validate(self, cloud: &Cloud, env: Env<'_>) -> Result<Source, ConfigError> {
        let audience = self
            .audience
            .unwrap_or_else(|| cloud.name.exchange_audience().to_owned());
        let kind_text = self.kind.unwrap_or_else(|| "imds".to_owned());
        let kind = match kind_text.as_str() {
            "imds" => SourceKind::Imds {
                endpoint: upstream_url(
                    "source.endpoint",
                    self.endpoint.as_deref().unwrap_or(DEFAULT_IMDS_ENDPOINT),
                )?,
                client_id: self.client_id,
            },
            "app-service" => {
                let endpoint = self
                    .endpoint
                    .or_else(|| env(ENV_IDENTITY_ENDPOINT))
                    .ok_or_else(|| {
                        invalid(
                            "source.endpoint",
                            "",
                            format!("the identity endpoint URL (or ${ENV_IDENTITY_ENDPOINT})"),
                        )
                    })?;
                let header = self
                    .header
                    .or_else(|| env(ENV_IDENTITY_HEADER))
                    .ok_or_else(|| {
                        invalid(
                            "source.header",
                            "",
                            format!("the identity header secret (or ${ENV_IDENTITY_HEADER})"),
                        )
                    })?;
                SourceKind::AppService {
                    endpoint: upstream_url("source.endpoint", &endpoint)?,
                    header: Secret::new(header),
                    client_id: self.client_id,
                }
            }
            "token-file" => SourceKind::TokenFile {
                path: self
                    .path
                    .or_else(|| env(ENV_FEDERATED_TOKEN_FILE).map(PathBuf::from))
                    .ok_or_else(|| {
                        invalid(
                            "source.path",
                            "",
                            format!("the token file's path (or ${ENV_FEDERATED_TOKEN_FILE})"),
                        )
                    })?,
            },
            other => {
                return Err(invalid(
                    "source.kind",
                    other,
                    "one of \"imds\", \"app-service\", \"token-file\"",
                ))
            }
        };
        Ok(Source { kind, audience })
    }
}

/// An upstream URL: https, or http only to a loopback host (the simulator and tests), so a
/// token is never sent in clear text over a network by a config slip.
fn upstream_url(key: &str, text: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(text).map_err(|e| invalid(key, text, format!("an absolute URL ({e})")))?;
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    // IMDS itself is plain http on a link-local address that never leaves the host.
    let imds = url.host_str() == Some("169.254.169.254");
    match url.scheme() {
        "https" => Ok(url),
        "http" if loopback || imds => Ok(url),
        _ => Err(invalid(
            key,
            text,
            "an https:// URL (http:// only for loopback hosts)",
        )),
    }
}

/// Tenants that Entra refuses for client credentials (AADSTS9001023).
const MULTI_TENANT_ALIASES: [&str; 3] = ["common", "consumers", "organizations"];

fn validate_targets(raw: Vec<RawTarget>) -> Result<Vec<Target>, ConfigError> {
    if raw.is_empty() {
        return Err(invalid("targets", "[]", "at least one [[targets]] entry"));
    }
    let mut names = HashSet::new();
    let mut targets = Vec::with_capacity(raw.len());
    for (i, t) in raw.into_iter().enumerate() {
        let key = |k: &str| format!("targets[{i}].{k}");
        let required = |v: Option<String>, k: &str, what: &str| {
            v.filter(|v| !v.trim().is_empty())
                .map(|v| v.trim().to_owned())
                .ok_or_else(|| invalid(key(k), "", what))
        };
        let tenant_id = required(
            t.tenant_id,
            "tenant_id",
            "the target tenant's id or verified domain",
        )?;
        if MULTI_TENANT_ALIASES.contains(&tenant_id.to_ascii_lowercase().as_str()) {
            return Err(invalid(
                key("tenant_id"),
                &tenant_id,
                "a specific tenant: Entra refuses common/consumers/organizations for app tokens",
            ));
        }
        let client_id = required(t.client_id, "client_id", "the multi-tenant app's client id")?;
        let name = t.name.unwrap_or_else(|| client_id.clone());
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(invalid(
                key("name"),
                &name,
                "letters, digits, '-', '_' or '.' (it appears in URL paths)",
            ));
        }
        if !names.insert(name.clone()) {
            return Err(invalid(key("name"), &name, "a name no other target uses"));
        }
        let allowed_tenants = match t.allowed_tenants {
            None => AllowedTenants::None,
            Some(list) if list.iter().any(|t| t == "*") => AllowedTenants::Any,
            Some(list) => AllowedTenants::Listed(list),
        };
        for r in t.resources.iter().flatten().chain(&t.prefetch) {
            if r.trim().is_empty() || r.ends_with("/.default") {
                return Err(invalid(
                    key("resources"),
                    r,
                    "a resource URI without /.default, e.g. \"https://graph.microsoft.com\"",
                ));
            }
        }
        targets.push(Target {
            name,
            tenant_id,
            client_id,
            resources: t.resources,
            allowed_tenants,
            default: t.default.unwrap_or(false),
            object_id: t.object_id,
            resource_id: t.resource_id,
            prefetch: t.prefetch,
        });
    }
    if targets.iter().filter(|t| t.default).count() > 1 {
        return Err(invalid(
            "targets[].default",
            "true",
            "at most one target with default = true",
        ));
    }
    for t in &targets {
        for r in &t.prefetch {
            if !t.allows_resource(r) {
                return Err(invalid(
                    format!("targets.{}.prefetch", t.name),
                    r,
                    "a resource in the target's resources list",
                ));
            }
        }
    }
    Ok(targets)
}

fn validate_callers(
    raw: Vec<RawCaller>,
    targets: &[Target],
) -> Result<Vec<CallerRule>, ConfigError> {
    let mut names = HashSet::new();
    raw.into_iter()
        .enumerate()
        .map(|(i, c)| {
            let key = |k: &str| format!("callers[{i}].{k}");
            let name = c.name.unwrap_or_else(|| format!("caller-{i}"));
            if !names.insert(name.clone()) {
                return Err(invalid(key("name"), &name, "a name no other caller uses"));
            }
            if c.secret.is_none() && c.uid.is_none() && c.gid.is_none() && c.source.is_none() {
                return Err(invalid(
                    key("secret"),
                    "",
                    "at least one of secret, uid, gid or source to recognise the caller by",
                ));
            }
            if c.secret.as_ref().is_some_and(|s| s.len() < 16) {
                return Err(invalid(
                    key("secret"),
                    "(redacted)",
                    "a secret of at least 16 characters",
                ));
            }
            let source = c
                .source
                .as_deref()
                .map(|text| {
                    parse_cidr(text).ok_or_else(|| {
                        invalid(
                            key("source"),
                            text,
                            "an IP address or network, e.g. \"10.0.0.0/8\"",
                        )
                    })
                })
                .transpose()?;
            let targets_allowed = match c.targets {
                Some(list) if list.iter().any(|t| t == "*") => None,
                Some(list) => {
                    for t in &list {
                        if !targets.iter().any(|known| &known.name == t) {
                            return Err(invalid(
                                key("targets"),
                                t,
                                "the name of a configured target, or \"*\"",
                            ));
                        }
                    }
                    Some(list)
                }
                None => {
                    return Err(invalid(
                        key("targets"),
                        "",
                        "the target names this caller may use ([\"*\"] for all)",
                    ))
                }
            };
            // Below one request in about 17 minutes a "rate" is a typo, and its refill time
            // would not fit a Duration.
            if c.rate.is_some_and(|r| !(r >= 0.001 && r.is_finite())) {
                return Err(invalid(
                    key("rate"),
                    format!("{:?}", c.rate),
                    "a positive number of requests per second",
                ));
            }
            Ok(CallerRule {
                name,
                secret: c.secret.map(Secret::new),
                uid: c.uid,
                gid: c.gid,
                source,
                targets: targets_allowed,
                resources: c.resources,
                rate: c.rate,
            })
        })
        .collect()
}

/// `10.0.0.0/8`, `::1/128`, or a bare address (a /32 or /128).
fn parse_cidr(text: &str) -> Option<(std::net::IpAddr, u8)> {
    let (addr, len) = match text.split_once('/') {
        Some((a, l)) => (a.parse::<std::net::IpAddr>().ok()?, l.parse::<u8>().ok()?),
        None => {
            let a: std::net::IpAddr = text.parse().ok()?;
            (a, if a.is_ipv4() { 32 } else { 128 })
        }
    };
    let max = if addr.is_ipv4() { 32 } else { 128 };
    (len <= max).then_some((addr, len))
}

pub mod provenance;

#[cfg(test)]
mod tests;
