//! The config file as written: every key, optional, with its meaning. Unknown keys are errors,
//! so a typo never silently becomes a default. README's "Configuration" table and
//! `config/fedimds.example.toml` describe the same keys; a test checks the example names them
//! all.
//!
//! The types also serialize, so tests and tools build a config from typed values and render it
//! as TOML instead of editing text.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{invalid, ConfigError};

/// The TOML file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `[server]`: the token listener.
    #[serde(default, skip_serializing_if = "is_default")]
    pub server: RawServer,
    /// `[source]`: where the home-tenant assertion comes from (the source named "default").
    #[serde(default, skip_serializing_if = "is_default")]
    pub source: RawSource,
    /// `[[sources]]`: more home identities, by name, for targets that name one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<RawNamedSource>,
    /// `[cloud]`: which Azure cloud.
    #[serde(default, skip_serializing_if = "is_default")]
    pub cloud: RawCloud,
    /// `[upstream]`: timeouts of every upstream call.
    #[serde(default, skip_serializing_if = "is_default")]
    pub upstream: RawUpstream,
    /// `[cache]`: cache bounds.
    #[serde(default, skip_serializing_if = "is_default")]
    pub cache: RawCache,
    /// `[[targets]]`: the target tenants and apps.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<RawTarget>,
    /// `[[callers]]`: per-caller policy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub callers: Vec<RawCaller>,
    /// `[admin]`: the admin listener.
    #[serde(default, skip_serializing_if = "is_default")]
    pub admin: RawAdmin,
    /// `[audit]`: the audit log.
    #[serde(default, skip_serializing_if = "is_default")]
    pub audit: RawAudit,
    /// `[service_fabric]`: the Service Fabric dialect's HTTPS listener.
    #[serde(default, skip_serializing_if = "is_default")]
    pub service_fabric: RawServiceFabric,
    /// `[app_service]`: the App Service family of dialects.
    #[serde(default, skip_serializing_if = "is_default")]
    pub app_service: RawAppService,
    /// `[imds]`: the rest of IMDS, passed through.
    #[serde(default, skip_serializing_if = "is_default")]
    pub imds: RawImds,
}

/// `[imds]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawImds {
    /// Forward the non-token paths under `/metadata/` to the real IMDS.
    pub passthrough: Option<bool>,
    /// The real IMDS: `http://` to a link-local or loopback address.
    pub upstream: Option<String>,
}

/// Whether a section is all unset, so it renders as nothing rather than an empty table.
fn is_default<T: Default + PartialEq>(section: &T) -> bool {
    *section == T::default()
}

/// `[admin]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// Address of health, readiness and metrics, or `"off"`.
    pub listen: Option<String>,
}

/// `[audit]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    /// A file to append JSON lines to, `"-"`/`"stdout"`, or `"off"`.
    pub path: Option<String>,
    /// Serve no token whose line cannot be recorded (503) rather than serve it unrecorded.
    pub fail_closed: Option<bool>,
}

/// `[service_fabric]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawServiceFabric {
    /// Address of the HTTPS listener; unset = none.
    pub listen: Option<String>,
    /// Its certificate chain (PEM); unset = one generated at start.
    pub cert_file: Option<PathBuf>,
    /// Its private key (PEM).
    pub key_file: Option<PathBuf>,
    /// Where the certificate served is written (PEM), for `NODE_EXTRA_CA_CERTS`.
    pub served_cert_file: Option<PathBuf>,
    /// Where the certificate's SHA-1 thumbprint is written (`IDENTITY_SERVER_THUMBPRINT`).
    pub thumbprint_file: Option<PathBuf>,
}

/// `[app_service]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawAppService {
    /// `expires_on` in the legacy 2017-09-01 dialect: `"auto"`, `"date"` or `"epoch"`.
    pub legacy_expires_on: Option<String>,
}

/// One `[[callers]]` entry.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawCaller {
    /// For audit lines and errors.
    pub name: Option<String>,
    /// The caller's own secret, sent as `X-IDENTITY-HEADER` or `secret`.
    pub secret: Option<RawSecret>,
    /// A file holding it (one secret per line), read again when it changes.
    pub secret_file: Option<PathBuf>,
    /// Unix-socket peer uid.
    pub uid: Option<u32>,
    /// Unix-socket peer gid.
    pub gid: Option<u32>,
    /// Source address or network.
    pub source: Option<String>,
    /// Target names it may use (`["*"]` for all).
    pub targets: Option<Vec<String>>,
    /// Resources it may ask for.
    pub resources: Option<Vec<String>>,
    /// Requests per second.
    pub rate: Option<f64>,
}

/// `[server]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// Address of the token endpoints.
    pub listen: Option<String>,
    /// Whether a non-loopback `listen` is meant.
    pub allow_remote: Option<bool>,
    /// The App Service-style caller secret.
    pub identity_header: Option<RawSecret>,
    /// Where to write the caller secret (mode 0600).
    pub identity_header_file: Option<PathBuf>,
    /// Longest a caller waits on a cold miss.
    pub miss_timeout: Option<RawDuration>,
    /// Where Arc challenge key files go.
    pub arc_key_dir: Option<PathBuf>,
    /// The group that may read Arc key files.
    pub arc_key_group: Option<u32>,
    /// A Unix socket to serve on as well.
    pub unix_socket: Option<PathBuf>,
    /// Its mode.
    pub unix_socket_mode: Option<u32>,
    /// Host header values accepted besides the loopback names.
    pub allowed_hosts: Option<Vec<String>>,
    /// Open connections at most.
    pub max_connections: Option<usize>,
    /// Open connections from one peer (a local uid, or a remote address) at most.
    pub max_connections_per_peer: Option<usize>,
    /// New keys a caller may ask for per second (a burst of ten seconds' worth).
    pub new_keys_per_second: Option<f64>,
    /// Time to send a request head, and then a request body.
    pub header_read_timeout: Option<RawDuration>,
    /// Largest request head.
    pub max_header_bytes: Option<usize>,
}

/// `[source]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawSource {
    /// `imds`, `app-service` or `token-file`.
    pub kind: Option<String>,
    /// IMDS's base URL, or the identity endpoint's token URL.
    pub endpoint: Option<String>,
    /// A user-assigned identity's client id.
    pub client_id: Option<String>,
    /// The identity endpoint's secret.
    pub header: Option<RawSecret>,
    /// The token file.
    pub path: Option<PathBuf>,
    /// The audience the managed-identity token is asked for.
    pub audience: Option<String>,
}

/// One `[[sources]]` entry: a name and the keys of `[source]`. The keys are written out again
/// rather than `#[serde(flatten)]`ed from [`RawSource`]: serde does not refuse unknown keys
/// inside a flattened struct, and a typo here must be an error as everywhere else;
/// [`RawNamedSource::split`] hands them to the one `[source]` validator.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawNamedSource {
    /// What targets call it (`targets[].source`).
    pub name: Option<String>,
    /// `imds`, `app-service` or `token-file`.
    pub kind: Option<String>,
    /// IMDS's base URL, or the identity endpoint's token URL.
    pub endpoint: Option<String>,
    /// A user-assigned identity's client id.
    pub client_id: Option<String>,
    /// The identity endpoint's secret.
    pub header: Option<RawSecret>,
    /// The token file.
    pub path: Option<PathBuf>,
    /// The audience the managed-identity token is asked for.
    pub audience: Option<String>,
}

impl RawNamedSource {
    /// Its name, and its keys as a `[source]` table.
    pub fn split(self) -> (Option<String>, RawSource) {
        let source = RawSource {
            kind: self.kind,
            endpoint: self.endpoint,
            client_id: self.client_id,
            header: self.header,
            path: self.path,
            audience: self.audience,
        };
        (self.name, source)
    }
}

/// `[cloud]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawCloud {
    /// `public`, `usgov` or `china`.
    pub name: Option<String>,
    /// Entra's base URL, when not the cloud's own.
    pub authority_host: Option<String>,
}

/// `[upstream]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    /// Fetches in flight at most.
    pub max_concurrent_fetches: Option<usize>,
    /// Calls to Entra per second, sustained.
    pub max_requests_per_second: Option<f64>,
    /// Calls to Entra at once after a quiet spell.
    pub burst: Option<u32>,
    /// Calls to the assertion source (IMDS, the identity endpoint) per second, sustained.
    pub assertion_requests_per_second: Option<f64>,
    /// Calls to the assertion source at once after a quiet spell.
    pub assertion_burst: Option<u32>,
    /// TCP and TLS connect.
    pub connect_timeout: Option<RawDuration>,
    /// One whole attempt.
    pub request_timeout: Option<RawDuration>,
    /// The HTTP(S) proxy Entra calls go through (a URL, which may carry credentials), or
    /// `"env"` for `$HTTPS_PROXY`/`$NO_PROXY`. The assertion leg never uses one.
    pub entra_proxy: Option<RawSecret>,
}

/// `[cache]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawCache {
    /// Most keys held.
    pub max_keys: Option<u64>,
    /// Most bytes held.
    pub max_bytes: Option<u64>,
    /// Keys idle this long are dropped.
    pub idle_ttl: Option<RawDuration>,
    /// How long a permanent upstream error is remembered.
    pub error_ttl: Option<RawDuration>,
    /// How often a key's token may be dropped and fetched anew because a caller presented
    /// its hash (revocation).
    pub min_forced_refresh: Option<RawDuration>,
}

/// One `[[targets]]` entry.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawTarget {
    /// Unique name.
    pub name: Option<String>,
    /// The target tenant.
    pub tenant_id: Option<String>,
    /// The multi-tenant app.
    pub client_id: Option<String>,
    /// Allowed resources.
    pub resources: Option<Vec<String>>,
    /// Other tenants callers may name.
    pub allowed_tenants: Option<Vec<String>>,
    /// Chosen when a request names no target.
    pub default: Option<bool>,
    /// An `object_id` alias.
    pub object_id: Option<String>,
    /// A `msi_res_id` alias.
    pub resource_id: Option<String>,
    /// Resources fetched at start.
    pub prefetch: Option<Vec<String>>,
    /// `false`: serve the home identity's own token for the resource, with no exchange.
    pub exchange: Option<bool>,
    /// The `[[sources]]` entry whose identity it uses; unset = `[source]` ("default").
    pub source: Option<String>,
}

/// A secret as the file writes it: serialized as itself (a rendered config must keep it), but
/// its `Debug` prints `…`, so a raw config in a log or a panic message shows no secret.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct RawSecret(pub String);

impl std::fmt::Debug for RawSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("…")
    }
}

impl From<&str> for RawSecret {
    fn from(s: &str) -> Self {
        RawSecret(s.to_owned())
    }
}

impl From<String> for RawSecret {
    fn from(s: String) -> Self {
        RawSecret(s)
    }
}

/// A duration as `"500ms"`, `"10s"`, `"5m"`, `"1h"`, or a number of seconds.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum RawDuration {
    /// A number of seconds.
    Seconds(u64),
    /// A number with a unit.
    Text(String),
}

impl From<Duration> for RawDuration {
    fn from(d: Duration) -> Self {
        RawDuration::Text(show_duration(d))
    }
}

impl RawDuration {
    /// The duration, or an error naming `key`.
    pub fn parse(&self, key: &str) -> Result<Duration, ConfigError> {
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

/// A duration as the config writes it: `500ms`, `20s`, `5m`, `24h`.
pub fn show_duration(d: Duration) -> String {
    let s = d.as_secs();
    match (d.subsec_millis(), s % 3600, s % 60) {
        (0, 0, _) if s > 0 => format!("{}h", s / 3600),
        (0, _, 0) if s > 0 => format!("{}m", s / 60),
        (0, _, _) => format!("{s}s"),
        _ => format!("{}ms", d.as_millis()),
    }
}
