//! From [`RawConfig`] to [`Config`]: each key read once, through the [`Reader`] that records
//! its origin, checked, and given its default. A value out of its range is an error naming
//! the key; nothing is clamped silently.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use super::provenance::{Entry, Mode, Reader, NONE, REDACTED};
use super::raw::{
    RawAdmin, RawAudit, RawCache, RawCaller, RawCloud, RawDuration, RawServer, RawSource,
    RawTarget, RawUpstream,
};
use super::*;

/// Tenants that Entra refuses for client credentials (AADSTS9001023).
const MULTI_TENANT_ALIASES: [&str; 3] = ["common", "consumers", "organizations"];

impl RawConfig {
    /// Checks every value and fills in defaults.
    pub fn validate(self, env: Env<'_>) -> Result<Config, ConfigError> {
        self.validate_recorded(env).map(|(config, _)| config)
    }

    /// [`RawConfig::validate`], with where each value came from, in the order read.
    pub fn validate_recorded(self, env: Env<'_>) -> Result<(Config, Vec<Entry>), ConfigError> {
        let mut r = Reader::new(env);
        let server = self.server.validate(&mut r)?;
        let cloud = self.cloud.validate(&mut r)?;
        let source = self.source.validate(&mut r, &cloud)?;
        let upstream = self.upstream.validate(&mut r)?;
        let cache = self.cache.validate(&mut r)?;
        let targets = validate_targets(&mut r, self.targets)?;
        let callers = validate_callers(&mut r, self.callers, &targets)?;
        if !callers.is_empty() {
            tenants_are_ids(&targets)?;
        }
        let admin = self.admin.validate(&mut r)?;
        let audit = self.audit.validate(&mut r);
        let config = Config {
            server,
            source,
            cloud,
            upstream,
            cache,
            targets,
            callers,
            admin,
            audit,
        };
        Ok((config, r.finish()))
    }
}

fn duration(
    r: &mut Reader<'_>,
    key: &str,
    raw: Option<RawDuration>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    r.or(key, raw, default.into()).parse(key)
}

/// A count that must be at least `min`.
fn at_least<T: PartialOrd + Copy + std::fmt::Display>(
    key: &str,
    value: T,
    min: T,
    why: &str,
) -> Result<T, ConfigError> {
    if value < min {
        return Err(invalid(
            key,
            value.to_string(),
            format!("at least {min} ({why})"),
        ));
    }
    Ok(value)
}

impl RawServer {
    fn validate(self, r: &mut Reader<'_>) -> Result<Server, ConfigError> {
        let listen_text = r.or("server.listen", self.listen, DEFAULT_LISTEN.to_owned());
        let listen: SocketAddr = listen_text.parse().map_err(|_| {
            invalid(
                "server.listen",
                &listen_text,
                "an IP address and port, e.g. \"127.0.0.1:8181\"",
            )
        })?;
        let allow_remote = r.or("server.allow_remote", self.allow_remote, false);
        let identity_header = r.secret(
            "server.identity_header",
            self.identity_header.map(|s| s.0),
            Some(ENV_SERVER_IDENTITY_HEADER),
            "(random per start)",
        );
        // Tokens for another company's tenant must not be reachable from the network by a
        // slip of the config: anything but loopback has to be asked for, and then needs a secret.
        if !listen.ip().is_loopback() {
            if !allow_remote {
                return Err(invalid(
                    "server.listen",
                    &listen_text,
                    "a loopback address; to listen elsewhere set server.allow_remote = true and server.identity_header",
                ));
            }
            if identity_header.is_none() {
                return Err(invalid(
                    "server.identity_header",
                    "",
                    "a caller secret, required when server.allow_remote = true",
                ));
            }
        }
        if identity_header.as_ref().is_some_and(|h| h.len() < 16) {
            return Err(invalid(
                "server.identity_header",
                REDACTED,
                "a secret of at least 16 characters",
            ));
        }
        Ok(Server {
            listen,
            identity_header: identity_header.map(Secret::new),
            identity_header_file: r.opt(
                "server.identity_header_file",
                self.identity_header_file,
                NONE,
            ),
            miss_timeout: duration(
                r,
                "server.miss_timeout",
                self.miss_timeout,
                DEFAULT_MISS_TIMEOUT,
            )?,
            arc_key_dir: r.or(
                "server.arc_key_dir",
                self.arc_key_dir,
                PathBuf::from(DEFAULT_ARC_KEY_DIR),
            ),
            arc_key_group: r.opt("server.arc_key_group", self.arc_key_group, NONE),
            unix_socket: r.opt("server.unix_socket", self.unix_socket, NONE),
            unix_socket_mode: r
                .or(
                    "server.unix_socket_mode",
                    self.unix_socket_mode.map(Mode),
                    Mode(DEFAULT_UNIX_SOCKET_MODE),
                )
                .0,
            allowed_hosts: r.or("server.allowed_hosts", self.allowed_hosts, Vec::new()),
            allow_remote,
            max_connections: at_least(
                "server.max_connections",
                r.or(
                    "server.max_connections",
                    self.max_connections,
                    DEFAULT_MAX_CONNECTIONS,
                ),
                1,
                "a listener that takes no connection serves nobody",
            )?,
            max_connections_per_peer: at_least(
                "server.max_connections_per_peer",
                r.or(
                    "server.max_connections_per_peer",
                    self.max_connections_per_peer,
                    DEFAULT_MAX_CONNECTIONS_PER_PEER,
                ),
                1,
                "a peer that may open no connection is refused everything",
            )?,
            header_read_timeout: duration(
                r,
                "server.header_read_timeout",
                self.header_read_timeout,
                DEFAULT_HEADER_READ_TIMEOUT,
            )?,
            max_header_bytes: at_least(
                "server.max_header_bytes",
                r.or(
                    "server.max_header_bytes",
                    self.max_header_bytes,
                    DEFAULT_MAX_HEADER_BYTES,
                ),
                MIN_HEADER_BYTES,
                "smaller bounds refuse real SDK requests",
            )?,
        })
    }
}

impl RawCloud {
    fn validate(self, r: &mut Reader<'_>) -> Result<Cloud, ConfigError> {
        let name_text = r.or("cloud.name", self.name, "public".to_owned());
        let name = CloudName::parse(&name_text).ok_or_else(|| {
            invalid(
                "cloud.name",
                &name_text,
                "one of \"public\", \"usgov\", \"china\"",
            )
        })?;
        let host = r.or(
            "cloud.authority_host",
            self.authority_host,
            name.authority_host().to_owned(),
        );
        Ok(Cloud {
            name,
            authority_host: upstream_url("cloud.authority_host", &host)?,
        })
    }
}

impl RawSource {
    fn validate(self, r: &mut Reader<'_>, cloud: &Cloud) -> Result<Source, ConfigError> {
        let kind_text = r.or("source.kind", self.kind, "imds".to_owned());
        // A key the chosen kind does not read is a mistake to point out, not to ignore.
        let unused = |key: &str, set: bool, kinds: &str| {
            if set {
                Err(invalid(
                    format!("source.{key}"),
                    "(set)",
                    format!(
                        "nothing: it applies only to kind = {kinds}, and kind = \"{kind_text}\""
                    ),
                ))
            } else {
                Ok(())
            }
        };
        let kind = match kind_text.as_str() {
            "imds" => {
                unused("header", self.header.is_some(), "\"app-service\"")?;
                unused("path", self.path.is_some(), "\"token-file\"")?;
                let endpoint = r.or(
                    "source.endpoint",
                    self.endpoint,
                    DEFAULT_IMDS_ENDPOINT.to_owned(),
                );
                SourceKind::Imds {
                    endpoint: upstream_url("source.endpoint", &endpoint)?,
                    client_id: r.opt("source.client_id", self.client_id, NONE),
                }
            }
            "app-service" => {
                unused("path", self.path.is_some(), "\"token-file\"")?;
                let endpoint = r
                    .or_env(
                        "source.endpoint",
                        self.endpoint,
                        ENV_IDENTITY_ENDPOINT,
                        NONE,
                    )
                    .ok_or_else(|| {
                        invalid(
                            "source.endpoint",
                            "",
                            format!("the identity endpoint URL (or ${ENV_IDENTITY_ENDPOINT})"),
                        )
                    })?;
                let header = r
                    .secret(
                        "source.header",
                        self.header.map(|s| s.0),
                        Some(ENV_IDENTITY_HEADER),
                        NONE,
                    )
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
                    client_id: r.opt("source.client_id", self.client_id, NONE),
                }
            }
            "token-file" => {
                unused(
                    "endpoint",
                    self.endpoint.is_some(),
                    "\"imds\" or \"app-service\"",
                )?;
                unused(
                    "client_id",
                    self.client_id.is_some(),
                    "\"imds\" or \"app-service\"",
                )?;
                unused("header", self.header.is_some(), "\"app-service\"")?;
                let path = r
                    .or_env(
                        "source.path",
                        self.path.map(|p| p.display().to_string()),
                        ENV_FEDERATED_TOKEN_FILE,
                        NONE,
                    )
                    .ok_or_else(|| {
                        invalid(
                            "source.path",
                            "",
                            format!("the token file's path (or ${ENV_FEDERATED_TOKEN_FILE})"),
                        )
                    })?;
                SourceKind::TokenFile {
                    path: PathBuf::from(path),
                }
            }
            other => {
                return Err(invalid(
                    "source.kind",
                    other,
                    "one of \"imds\", \"app-service\", \"token-file\"",
                ))
            }
        };
        let audience = r.or(
            "source.audience",
            self.audience,
            cloud.name.exchange_audience().to_owned(),
        );
        Ok(Source { kind, audience })
    }
}

impl RawUpstream {
    fn validate(self, r: &mut Reader<'_>) -> Result<Upstream, ConfigError> {
        Ok(Upstream {
            max_concurrent_fetches: at_least(
                "upstream.max_concurrent_fetches",
                r.or(
                    "upstream.max_concurrent_fetches",
                    self.max_concurrent_fetches,
                    DEFAULT_MAX_CONCURRENT_FETCHES,
                ),
                1,
                "with none, no token is ever fetched",
            )?,
            connect_timeout: duration(
                r,
                "upstream.connect_timeout",
                self.connect_timeout,
                DEFAULT_CONNECT_TIMEOUT,
            )?,
            request_timeout: duration(
                r,
                "upstream.request_timeout",
                self.request_timeout,
                DEFAULT_REQUEST_TIMEOUT,
            )?,
        })
    }
}

impl RawCache {
    fn validate(self, r: &mut Reader<'_>) -> Result<CacheSettings, ConfigError> {
        Ok(CacheSettings {
            max_keys: at_least(
                "cache.max_keys",
                r.or("cache.max_keys", self.max_keys, DEFAULT_MAX_KEYS),
                1,
                "a cache that holds nothing serves nothing",
            )?,
            max_bytes: at_least(
                "cache.max_bytes",
                r.or("cache.max_bytes", self.max_bytes, DEFAULT_CACHE_MAX_BYTES),
                1024 * 1024,
                "a cache smaller than a MiB holds too few tokens to be one",
            )?,
            idle_ttl: duration(r, "cache.idle_ttl", self.idle_ttl, DEFAULT_IDLE_TTL)?,
            error_ttl: duration(r, "cache.error_ttl", self.error_ttl, DEFAULT_ERROR_TTL)?,
        })
    }
}

impl RawAdmin {
    fn validate(self, r: &mut Reader<'_>) -> Result<Admin, ConfigError> {
        let text = r.or("admin.listen", self.listen, DEFAULT_ADMIN_LISTEN.to_owned());
        let listen = match text.as_str() {
            "off" => None,
            text => Some(text.parse().map_err(|_| {
                invalid("admin.listen", text, "an IP address and port, or \"off\"")
            })?),
        };
        Ok(Admin { listen })
    }
}

impl RawAudit {
    fn validate(self, r: &mut Reader<'_>) -> Audit {
        let sink = match r.or("audit.path", self.path, "off".to_owned()).as_str() {
            "off" => AuditSink::Off,
            "-" | "stdout" => AuditSink::Stdout,
            path => AuditSink::File(PathBuf::from(path)),
        };
        let fail_closed = r.or("audit.fail_closed", self.fail_closed, false);
        Audit { sink, fail_closed }
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

/// With `[[callers]]` grants, a target that lets callers name other tenants must have every
/// tenant it can reach, and every tenant of a target with the same app, spelled as an id:
/// the grant check tells tenants apart by spelling, and a domain name could be another name
/// of a tenant a caller is not granted.
fn tenants_are_ids(targets: &[Target]) -> Result<(), ConfigError> {
    let why = "a tenant id (GUID): with [[callers]] grants and allowed_tenants, tenants are told apart by id, and a domain name could name another target's tenant";
    for (i, t) in targets.iter().enumerate() {
        if t.allowed_tenants == AllowedTenants::None {
            continue;
        }
        if let AllowedTenants::Listed(list) = &t.allowed_tenants {
            if let Some(domain) = list.iter().find(|l| !is_guid(l)) {
                return Err(invalid(
                    format!("targets[{i}].allowed_tenants"),
                    domain,
                    why,
                ));
            }
        }
        for (j, same_app) in targets.iter().enumerate() {
            if same_app.client_id.eq_ignore_ascii_case(&t.client_id)
                && !is_guid(&same_app.tenant_id)
            {
                return Err(invalid(
                    format!("targets[{j}].tenant_id"),
                    &same_app.tenant_id,
                    why,
                ));
            }
        }
    }
    Ok(())
}

fn validate_targets(r: &mut Reader<'_>, raw: Vec<RawTarget>) -> Result<Vec<Target>, ConfigError> {
    if raw.is_empty() {
        return Err(invalid("targets", "[]", "at least one [[targets]] entry"));
    }
    let mut names = HashSet::new();
    let mut targets = Vec::with_capacity(raw.len());
    for (i, t) in raw.into_iter().enumerate() {
        let key = |k: &str| format!("targets[{i}].{k}");
        // A required value: trimmed, never empty.
        let required = |r: &mut Reader<'_>, v: Option<String>, k: &str, what: &str| {
            let v = v.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
            r.opt(&key(k), v, NONE)
                .ok_or_else(|| invalid(key(k), "", what))
        };
        // The name is shown first; its default is the app's client id, checked just below.
        let default_name = t.client_id.as_deref().unwrap_or_default().trim().to_owned();
        let name = r.or(&key("name"), t.name, default_name);
        let tenant_id = required(
            r,
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
        let client_id = required(
            r,
            t.client_id,
            "client_id",
            "the multi-tenant app's client id",
        )?;
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
        let resources = r.opt(&key("resources"), t.resources, "(any)");
        let allowed_tenants = match r.opt(&key("allowed_tenants"), t.allowed_tenants, NONE) {
            None => AllowedTenants::None,
            Some(list) if list.iter().any(|t| t == "*") => AllowedTenants::Any,
            Some(list) => AllowedTenants::Listed(list),
        };
        let default = r.or(&key("default"), t.default, false);
        let object_id = r.opt(&key("object_id"), t.object_id, NONE);
        let resource_id = r.opt(&key("resource_id"), t.resource_id, NONE);
        let prefetch = r.or(&key("prefetch"), t.prefetch, Vec::new());
        for res in resources.iter().flatten().chain(&prefetch) {
            if res.trim().is_empty() || res.ends_with("/.default") {
                return Err(invalid(
                    key("resources"),
                    res,
                    "a resource URI without /.default, e.g. \"https://graph.microsoft.com\"",
                ));
            }
        }
        targets.push(Target {
            name,
            tenant_id,
            client_id,
            resources,
            allowed_tenants,
            default,
            object_id,
            resource_id,
            prefetch,
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
        for res in &t.prefetch {
            if !t.allows_resource(res) {
                return Err(invalid(
                    format!("targets.{}.prefetch", t.name),
                    res,
                    "a resource in the target's resources list",
                ));
            }
        }
    }
    Ok(targets)
}

fn validate_callers(
    r: &mut Reader<'_>,
    raw: Vec<RawCaller>,
    targets: &[Target],
) -> Result<Vec<CallerRule>, ConfigError> {
    let mut names = HashSet::new();
    let mut rules = Vec::with_capacity(raw.len());
    for (i, c) in raw.into_iter().enumerate() {
        let key = |k: &str| format!("callers[{i}].{k}");
        let name = r.or(&key("name"), c.name, format!("caller-{i}"));
        if !names.insert(name.clone()) {
            return Err(invalid(key("name"), &name, "a name no other caller uses"));
        }
        let secret = r.secret(&key("secret"), c.secret.map(|s| s.0), None, NONE);
        let uid = r.opt(&key("uid"), c.uid, NONE);
        let gid = r.opt(&key("gid"), c.gid, NONE);
        let source_text = r.opt(&key("source"), c.source, NONE);
        if secret.is_none() && uid.is_none() && gid.is_none() && source_text.is_none() {
            return Err(invalid(
                key("secret"),
                "",
                "at least one of secret, uid, gid or source to recognise the caller by",
            ));
        }
        if secret.as_ref().is_some_and(|s| s.len() < 16) {
            return Err(invalid(
                key("secret"),
                REDACTED,
                "a secret of at least 16 characters",
            ));
        }
        let source = source_text
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
        let targets_allowed = match r.opt(&key("targets"), c.targets, NONE) {
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
        let resources = r.opt(&key("resources"), c.resources, "(any)");
        let rate = r.opt(&key("rate"), c.rate, "(unlimited)");
        // Below one request in about 17 minutes a "rate" is a typo, and its refill time
        // would not fit a Duration.
        if rate.is_some_and(|r| !(r >= 0.001 && r.is_finite())) {
            return Err(invalid(
                key("rate"),
                format!("{rate:?}"),
                "a positive number of requests per second",
            ));
        }
        rules.push(CallerRule {
            name,
            secret: secret.map(Secret::new),
            uid,
            gid,
            source,
            targets: targets_allowed,
            resources,
            rate,
        });
    }
    Ok(rules)
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
