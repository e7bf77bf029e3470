//! The validated configuration the daemon runs on: typed, defaults filled in.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use super::same_resource;
use crate::cloud::CloudName;
use crate::token::Secret;

/// The validated configuration the daemon runs on.
#[derive(Debug, Clone)]
pub struct Config {
    /// The token listener.
    pub server: Server,
    /// Where the home-tenant assertion comes from: `[source]`, the source named "default".
    pub source: Source,
    /// The `[[sources]]` entries, in file order: more home identities, by name.
    pub sources: Vec<Source>,
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
    /// The Service Fabric dialect's HTTPS listener.
    pub service_fabric: ServiceFabric,
    /// The App Service family's dialects.
    pub app_service: AppService,
    /// The rest of IMDS, passed through.
    pub imds: Imds,
}

/// `[imds]`: the paths under `/metadata/` that are not identity tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imds {
    /// Whether they are forwarded to the real IMDS (else IMDS's own 404).
    pub passthrough: bool,
    /// The real IMDS's address: an IP literal, so no name is resolved and no proxy applies.
    pub upstream: SocketAddr,
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
    /// New keys (tokens the cache does not hold) a caller may ask for per second.
    pub new_keys_per_second: f64,
    /// Time to send a request head, and then a request body.
    pub header_read_timeout: Duration,
    /// Largest request head.
    pub max_header_bytes: usize,
}

/// The Service Fabric dialect's HTTPS listener (`docs/client-protocols.md#service-fabric`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceFabric {
    /// Its address; `None` = no Service Fabric listener.
    pub listen: Option<SocketAddr>,
    /// Its certificate.
    pub certificate: Certificate,
    /// Where the certificate served is written (PEM) at start, for clients to trust it.
    pub served_cert_file: Option<PathBuf>,
    /// Where the certificate's SHA-1 thumbprint is written at start.
    pub thumbprint_file: Option<PathBuf>,
}

/// The Service Fabric listener's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Certificate {
    /// Read from PEM files.
    Files {
        /// The certificate chain, leaf first.
        cert: PathBuf,
        /// The private key.
        key: PathBuf,
    },
    /// Generated at each start: self-signed, for `localhost` and `127.0.0.1`.
    Generated,
}

/// `[app_service]`: how the App Service family of dialects answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppService {
    /// How the legacy 2017-09-01 dialect writes `expires_on`.
    pub legacy_expires_on: LegacyExpiresOn,
}

/// `app_service.legacy_expires_on`: the App Service 2017-09-01 answer's `expires_on`, which
/// no one form serves every client (`docs/client-protocols.md#app-service-2017`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegacyExpiresOn {
    /// Chosen per request by the caller's `User-Agent`: the date for the clients that parse
    /// only it, epoch seconds for every other.
    Auto,
    /// Always the date App Service wrote (`MM/DD/YYYY HH:MM:SS +00:00`).
    Date,
    /// Always epoch seconds, as every other dialect.
    Epoch,
}

impl LegacyExpiresOn {
    /// The config's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            LegacyExpiresOn::Auto => "auto",
            LegacyExpiresOn::Date => "date",
            LegacyExpiresOn::Epoch => "epoch",
        }
    }
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
    /// The caller's own secret (sent as X-IDENTITY-HEADER or secret), or a file of them.
    pub secret: Option<CallerSecret>,
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

/// A caller's secret: written in the config, or read from a file (a mounted Kubernetes Secret)
/// and read again when it changes, so a rotation takes effect without a restart.
#[derive(Debug, Clone)]
pub enum CallerSecret {
    /// `callers[].secret`.
    Value(Secret),
    /// `callers[].secret_file`.
    File(SecretFile),
}

impl CallerSecret {
    /// Whether `presented` is this caller's secret (one of the file's, for a file), compared
    /// in constant time.
    pub fn matches(&self, presented: &[u8]) -> bool {
        match self {
            CallerSecret::Value(secret) => secret.matches(presented),
            // Every line is compared, so the time taken says nothing of which one matched.
            CallerSecret::File(file) => file
                .current
                .load()
                .iter()
                .fold(false, |any, s| s.matches(presented) | any),
        }
    }

    /// The secrets it accepts now.
    pub fn accepted(&self) -> Vec<Secret> {
        match self {
            CallerSecret::Value(secret) => vec![secret.clone()],
            CallerSecret::File(file) => file.current.load().as_ref().clone(),
        }
    }
}

/// A file of caller secrets, one per line (so a rotation can add the new secret before the old
/// one is removed), as last read.
#[derive(Debug, Clone)]
pub struct SecretFile {
    /// Where it is.
    pub path: PathBuf,
    /// The config key that names it, for messages.
    pub key: String,
    /// The secrets it held when last read; empty when it could not be read.
    pub current: std::sync::Arc<arc_swap::ArcSwap<Vec<Secret>>>,
}

impl SecretFile {
    /// Reads `path`: one secret per non-empty line (trimmed), each at least
    /// [`MIN_SECRET_LEN`] characters.
    pub fn read(path: &std::path::Path) -> Result<Vec<Secret>, String> {
        use std::io::Read as _;
        let mut text = String::new();
        std::fs::File::open(path)
            .and_then(|f| {
                f.take(super::MAX_SECRET_FILE_BYTES as u64)
                    .read_to_string(&mut text)
            })
            .map_err(|e| e.to_string())?;
        let secrets: Vec<Secret> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(Secret::new)
            .collect();
        if secrets.iter().any(|s| s.expose().len() < MIN_SECRET_LEN) {
            return Err(format!(
                "every secret in it must be at least {MIN_SECRET_LEN} characters"
            ));
        }
        if secrets.is_empty() {
            return Err("it holds no secret".to_owned());
        }
        Ok(secrets)
    }

    /// Reads the file again; returns whether what it holds changed, and the error if it could
    /// not be read (then no secret of it is accepted until it can).
    pub fn reload(&self) -> (bool, Option<String>) {
        let (new, error) = match SecretFile::read(&self.path) {
            Ok(secrets) => (secrets, None),
            Err(e) => (Vec::new(), Some(e)),
        };
        let old = self.current.load();
        let same = old.len() == new.len()
            && old
                .iter()
                .zip(&new)
                .all(|(a, b)| a.matches(b.expose().as_bytes()));
        if !same {
            self.current.store(std::sync::Arc::new(new));
        }
        (!same, error)
    }
}

/// The shortest caller secret accepted, in the config or in a file.
pub const MIN_SECRET_LEN: usize = 16;

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
    /// Its name: "default" for `[source]`, else its `[[sources]]` entry's.
    pub name: String,
    /// Which source.
    pub kind: SourceKind,
    /// The resource the managed-identity token is requested for.
    pub audience: String,
}

impl Source {
    /// The user-assigned identity's client id, when the source names one.
    pub fn client_id(&self) -> Option<&str> {
        match &self.kind {
            SourceKind::Imds { client_id, .. } | SourceKind::AppService { client_id, .. } => {
                client_id.as_deref()
            }
            SourceKind::TokenFile { .. } => None,
        }
    }

    /// Whether the source can be asked for a token for any resource (a managed-identity
    /// endpoint), not only for the one audience its file was minted for.
    pub fn serves_any_resource(&self) -> bool {
        !matches!(self.kind, SourceKind::TokenFile { .. })
    }
}

/// The cloud profile in force.
#[derive(Debug, Clone)]
pub struct Cloud {
    /// Its name.
    pub name: CloudName,
    /// Entra's base URL (no trailing slash).
    pub authority_host: Url,
}

/// Timeouts, concurrency and budgets of upstream calls.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// Fetches in flight at most.
    pub max_concurrent_fetches: usize,
    /// Calls to Entra: `upstream.max_requests_per_second`, `upstream.burst`.
    pub entra_rate: Rate,
    /// Calls to the assertion source: `upstream.assertion_requests_per_second`,
    /// `upstream.assertion_burst`.
    pub assertion_rate: Rate,
    /// TCP+TLS connect.
    pub connect_timeout: Duration,
    /// One whole attempt.
    pub request_timeout: Duration,
    /// How Entra calls leave the host (the assertion leg always goes direct).
    pub entra_route: EntraRoute,
}

/// A budget of calls: a sustained rate and a burst.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Calls per second, sustained.
    pub per_second: f64,
    /// Calls at once after a quiet spell.
    pub burst: u32,
}

impl Rate {
    /// Calls this budget allows within `window`, starting full: the burst, plus the rate for
    /// the rest.
    pub fn calls_within(&self, window: Duration) -> f64 {
        f64::from(self.burst) + self.per_second * window.as_secs_f64()
    }
}

/// How Entra calls leave the host.
#[derive(Debug, Clone)]
pub enum EntraRoute {
    /// Straight to Entra; `why` says so in `fedimds check`.
    Direct {
        /// Why no proxy: none configured, or the environment's.
        why: String,
    },
    /// Through an HTTP(S) proxy, with CONNECT for an `https://` Entra.
    Proxy(EntraProxy),
}

/// The proxy of Entra calls.
#[derive(Clone)]
pub struct EntraProxy {
    /// Its URL, credentials and all: only for the HTTP client.
    pub url: Secret,
    /// `host:port`, what errors and `fedimds check` name: never the credentials.
    pub shown: String,
    /// Where it was configured: `upstream.entra_proxy` or `$HTTPS_PROXY`.
    pub from: String,
}

impl std::fmt::Debug for EntraProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EntraProxy({} from {})", self.shown, self.from)
    }
}

impl EntraRoute {
    /// The proxy, if Entra calls go through one.
    pub fn proxy(&self) -> Option<&EntraProxy> {
        match self {
            EntraRoute::Proxy(p) => Some(p),
            EntraRoute::Direct { .. } => None,
        }
    }
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
    /// How often a caller may have a key's token dropped and fetched anew (revocation).
    pub min_forced_refresh: Duration,
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
    /// `true`: the home assertion is exchanged for a token of `tenant_id` and `client_id`.
    /// `false`: the home identity's own token for the resource is served as it comes
    /// (`tenant_id` is then the home tenant, `client_id` the identity's).
    pub exchange: bool,
    /// The name of the source whose identity it uses (its assertion, or its own token).
    pub source: String,
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
    /// What it hands out, as audit lines and `fedimds check` name it: `exchange` or `home`.
    pub fn kind(&self) -> &'static str {
        if self.exchange {
            "exchange"
        } else {
            "home"
        }
    }

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
