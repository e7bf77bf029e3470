//! From [`RawConfig`] to [`Config`]: each key read once, through the [`Reader`] that records
//! its origin, checked, and given its default. A value out of its range is an error naming
//! the key; nothing is clamped silently.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use super::provenance::{Entry, Mode, Reader, SecretOrEnv, NONE, REDACTED};
use super::raw::{
    RawAdmin, RawAppService, RawAudit, RawCache, RawCloud, RawDuration, RawImds, RawNamedSource,
    RawServer, RawServiceFabric, RawSource, RawUpstream,
};
use super::rules::{tenants_are_ids, validate_callers, validate_targets};
use super::*;

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
        let source = self
            .source
            .validate(&mut r, &cloud, "source", DEFAULT_SOURCE.to_owned())?;
        let sources = validate_sources(&mut r, self.sources, &cloud)?;
        let upstream = self.upstream.validate(&mut r, &cloud)?;
        let cache = self.cache.validate(&mut r)?;
        let app_service = self.app_service.validate(&mut r)?;
        let all: Vec<&Source> = std::iter::once(&source).chain(&sources).collect();
        let targets = validate_targets(&mut r, self.targets, &all)?;
        let callers = validate_callers(&mut r, self.callers, &targets)?;
        if !callers.is_empty() {
            tenants_are_ids(&targets)?;
        }
        let admin = self.admin.validate(&mut r)?;
        let audit = self.audit.validate(&mut r);
        let service_fabric = self.service_fabric.validate(&mut r, &server)?;
        let imds = self.imds.validate(&mut r)?;
        let config = Config {
            server,
            source,
            sources,
            cloud,
            upstream,
            cache,
            targets,
            callers,
            admin,
            audit,
            service_fabric,
            app_service,
            imds,
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

/// A rate of calls: a positive, finite number per second.
fn per_second(key: &str, rate: f64) -> Result<f64, ConfigError> {
    if !(rate >= 0.1 && rate.is_finite()) {
        return Err(invalid(
            key,
            format!("{rate:?}"),
            "a positive number of calls per second (0.1 or more)",
        ));
    }
    Ok(rate)
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
            new_keys_per_second: {
                let rate = r.or(
                    "server.new_keys_per_second",
                    self.new_keys_per_second,
                    DEFAULT_NEW_KEYS_PER_SECOND,
                );
                if !(rate >= 0.1 && rate.is_finite()) {
                    return Err(invalid(
                        "server.new_keys_per_second",
                        format!("{rate:?}"),
                        "a positive number of new keys per second (0.1 or more)",
                    ));
                }
                rate
            },
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
    /// `[source]` (`prefix` "source", named "default") or a `[[sources]]` entry
    /// (`prefix` "sources[i]").
    fn validate(
        self,
        r: &mut Reader<'_>,
        cloud: &Cloud,
        prefix: &str,
        name: String,
    ) -> Result<Source, ConfigError> {
        let key = |k: &str| format!("{prefix}.{k}");
        let kind_text = r.or(&key("kind"), self.kind, "imds".to_owned());
        // A key the chosen kind does not read is a mistake to point out, not to ignore.
        let unused = |key: &str, set: bool, kinds: &str| {
            if set {
                Err(invalid(
                    format!("{prefix}.{key}"),
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
                    &key("endpoint"),
                    self.endpoint,
                    DEFAULT_IMDS_ENDPOINT.to_owned(),
                );
                SourceKind::Imds {
                    endpoint: upstream_url(&key("endpoint"), &endpoint)?,
                    client_id: r.opt(&key("client_id"), self.client_id, NONE),
                }
            }
            "app-service" => {
                unused("path", self.path.is_some(), "\"token-file\"")?;
                let endpoint = r
                    .or_env(&key("endpoint"), self.endpoint, ENV_IDENTITY_ENDPOINT, NONE)
                    .ok_or_else(|| {
                        invalid(
                            key("endpoint"),
                            "",
                            format!("the identity endpoint URL (or ${ENV_IDENTITY_ENDPOINT})"),
                        )
                    })?;
                let header = r
                    .secret(
                        &key("header"),
                        self.header.map(|s| s.0),
                        Some(ENV_IDENTITY_HEADER),
                        NONE,
                    )
                    .ok_or_else(|| {
                        invalid(
                            key("header"),
                            "",
                            format!("the identity header secret (or ${ENV_IDENTITY_HEADER})"),
                        )
                    })?;
                SourceKind::AppService {
                    endpoint: upstream_url(&key("endpoint"), &endpoint)?,
                    header: Secret::new(header),
                    client_id: r.opt(&key("client_id"), self.client_id, NONE),
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
                        &key("path"),
                        self.path.map(|p| p.display().to_string()),
                        ENV_FEDERATED_TOKEN_FILE,
                        NONE,
                    )
                    .ok_or_else(|| {
                        invalid(
                            key("path"),
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
                    key("kind"),
                    other,
                    "one of \"imds\", \"app-service\", \"token-file\"",
                ))
            }
        };
        let audience = r.or(
            &key("audience"),
            self.audience,
            cloud.name.exchange_audience().to_owned(),
        );
        Ok(Source {
            name,
            kind,
            audience,
        })
    }
}

/// The `[[sources]]` entries: each named (uniquely, and never "default", which is `[source]`),
/// then read as a `[source]` table under its own key prefix.
fn validate_sources(
    r: &mut Reader<'_>,
    raw: Vec<RawNamedSource>,
    cloud: &Cloud,
) -> Result<Vec<Source>, ConfigError> {
    let mut names = std::collections::HashSet::new();
    let mut sources = Vec::with_capacity(raw.len());
    for (i, entry) in raw.into_iter().enumerate() {
        let prefix = format!("sources[{i}]");
        let (name, table) = entry.split();
        let name = r.or(&format!("{prefix}.name"), name, String::new());
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(invalid(
                format!("{prefix}.name"),
                &name,
                "a name of letters, digits, '-', '_' or '.', for targets[].source to use",
            ));
        }
        if name == DEFAULT_SOURCE {
            return Err(invalid(
                format!("{prefix}.name"),
                &name,
                "another name: \"default\" is the [source] table's",
            ));
        }
        if !names.insert(name.clone()) {
            return Err(invalid(
                format!("{prefix}.name"),
                &name,
                "a name no other [[sources]] entry uses",
            ));
        }
        sources.push(table.validate(r, cloud, &prefix, name)?);
    }
    Ok(sources)
}

impl RawUpstream {
    fn validate(self, r: &mut Reader<'_>, cloud: &Cloud) -> Result<Upstream, ConfigError> {
        let entra_route = entra_route(r, self.entra_proxy.map(|s| s.0), cloud)?;
        Ok(Upstream {
            entra_route,
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
            entra_rate: Rate {
                per_second: per_second(
                    "upstream.max_requests_per_second",
                    r.or(
                        "upstream.max_requests_per_second",
                        self.max_requests_per_second,
                        DEFAULT_MAX_REQUESTS_PER_SECOND,
                    ),
                )?,
                burst: at_least(
                    "upstream.burst",
                    r.or("upstream.burst", self.burst, DEFAULT_BURST),
                    1,
                    "with none, no call to Entra is ever made",
                )?,
            },
            assertion_rate: Rate {
                per_second: per_second(
                    "upstream.assertion_requests_per_second",
                    r.or(
                        "upstream.assertion_requests_per_second",
                        self.assertion_requests_per_second,
                        DEFAULT_ASSERTION_REQUESTS_PER_SECOND,
                    ),
                )?,
                burst: at_least(
                    "upstream.assertion_burst",
                    r.or(
                        "upstream.assertion_burst",
                        self.assertion_burst,
                        DEFAULT_ASSERTION_BURST,
                    ),
                    1,
                    "with none, no assertion is ever fetched",
                )?,
            },
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
            min_forced_refresh: duration(
                r,
                "cache.min_forced_refresh",
                self.min_forced_refresh,
                DEFAULT_MIN_FORCED_REFRESH,
            )?,
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

impl RawServiceFabric {
    fn validate(self, r: &mut Reader<'_>, server: &Server) -> Result<ServiceFabric, ConfigError> {
        let listen = match r.opt("service_fabric.listen", self.listen, "off") {
            None => None,
            Some(text) => {
                let addr: SocketAddr = text.parse().map_err(|_| {
                    invalid(
                        "service_fabric.listen",
                        &text,
                        "an IP address and port, e.g. \"127.0.0.1:2377\"",
                    )
                })?;
                // The same door as the token listener's: loopback unless asked otherwise, and
                // then `server.identity_header` is required (checked with `[server]`).
                if !addr.ip().is_loopback() && !server.allow_remote {
                    return Err(invalid(
                        "service_fabric.listen",
                        &text,
                        "a loopback address; to listen elsewhere set server.allow_remote = true and server.identity_header",
                    ));
                }
                Some(addr)
            }
        };
        let cert = r.opt(
            "service_fabric.cert_file",
            self.cert_file,
            "(generated at start)",
        );
        let key = r.opt("service_fabric.key_file", self.key_file, NONE);
        let certificate =
            match (cert, key) {
                (Some(cert), Some(key)) => Certificate::Files { cert, key },
                (None, None) => Certificate::Generated,
                (Some(_), None) => return Err(invalid(
                    "service_fabric.key_file",
                    "",
                    "the certificate's private key (PEM), required with service_fabric.cert_file",
                )),
                (None, Some(key)) => {
                    return Err(invalid(
                        "service_fabric.cert_file",
                        "",
                        format!(
                            "the certificate (PEM) that goes with service_fabric.key_file = {:?}",
                            key.display()
                        ),
                    ))
                }
            };
        let served_cert_file = r.opt(
            "service_fabric.served_cert_file",
            self.served_cert_file,
            NONE,
        );
        let thumbprint_file = r.opt("service_fabric.thumbprint_file", self.thumbprint_file, NONE);
        Ok(ServiceFabric {
            listen,
            certificate,
            served_cert_file,
            thumbprint_file,
        })
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

impl RawImds {
    fn validate(self, r: &mut Reader<'_>) -> Result<Imds, ConfigError> {
        let passthrough = r.or("imds.passthrough", self.passthrough, false);
        let text = r.or(
            "imds.upstream",
            self.upstream,
            DEFAULT_IMDS_UPSTREAM.to_owned(),
        );
        Ok(Imds {
            passthrough,
            upstream: imds_upstream(&text)?,
        })
    }
}

/// `imds.upstream`: `http://` to an IP literal that never leaves the host, link-local (IMDS's
/// own 169.254.169.254) or loopback (tests), with no path, query or credentials: what the
/// passthrough forwards is metadata of this machine, and it must go nowhere else.
fn imds_upstream(text: &str) -> Result<SocketAddr, ConfigError> {
    let expected =
        "http:// and a link-local or loopback IP address, e.g. \"http://169.254.169.254\"";
    let url = Url::parse(text).map_err(|_| invalid("imds.upstream", text, expected))?;
    let ip: Option<std::net::IpAddr> = match url.host() {
        Some(url::Host::Ipv4(ip)) if ip.is_link_local() || ip.is_loopback() => Some(ip.into()),
        Some(url::Host::Ipv6(ip)) if ip.is_loopback() => Some(ip.into()),
        _ => None,
    };
    let bare = url.username().is_empty()
        && url.password().is_none()
        && url.path() == "/"
        && url.query().is_none()
        && url.fragment().is_none();
    match (url.scheme(), ip) {
        ("http", Some(ip)) if bare => Ok(SocketAddr::new(ip, url.port().unwrap_or(80))),
        _ => Err(invalid("imds.upstream", text, expected)),
    }
}

impl RawAppService {
    fn validate(self, r: &mut Reader<'_>) -> Result<AppService, ConfigError> {
        const KEY: &str = "app_service.legacy_expires_on";
        let text = r.or(
            KEY,
            self.legacy_expires_on,
            DEFAULT_LEGACY_EXPIRES_ON.as_str().to_owned(),
        );
        let legacy_expires_on = match text.as_str() {
            "auto" => LegacyExpiresOn::Auto,
            "date" => LegacyExpiresOn::Date,
            "epoch" => LegacyExpiresOn::Epoch,
            other => return Err(invalid(KEY, other, "one of \"auto\", \"date\", \"epoch\"")),
        };
        Ok(AppService { legacy_expires_on })
    }
}

/// How Entra calls leave: `upstream.entra_proxy` as a URL, or `"env"` for `$HTTPS_PROXY`
/// unless `$NO_PROXY` names Entra's host; direct when unset.
fn entra_route(
    r: &mut Reader<'_>,
    raw: Option<String>,
    cloud: &Cloud,
) -> Result<EntraRoute, ConfigError> {
    const KEY: &str = "upstream.entra_proxy";
    let direct = |why: String| Ok(EntraRoute::Direct { why });
    let (text, from) = match r.secret_or_env(
        KEY,
        raw,
        ENTRA_PROXY_FROM_ENV,
        &ENV_HTTPS_PROXY,
        "(none: Entra direct)",
    ) {
        SecretOrEnv::Unset => return direct("upstream.entra_proxy is not set".to_owned()),
        SecretOrEnv::Literal(None) => {
            return direct(format!(
                "upstream.entra_proxy = \"env\" and ${} is not set",
                ENV_HTTPS_PROXY[0]
            ))
        }
        SecretOrEnv::Literal(Some((var, text))) => {
            let host = cloud.authority_host.host_str().unwrap_or_default();
            if let Some((no_proxy_var, list)) = r.var(&ENV_NO_PROXY) {
                if no_proxy_names(&list, host) {
                    return direct(format!("${no_proxy_var} names {host}"));
                }
            }
            (text, format!("${var}"))
        }
        SecretOrEnv::Value(text) => (text, KEY.to_owned()),
    };
    proxy_url(&text, from).map(EntraRoute::Proxy)
}

/// A proxy URL: `http://` or `https://` (a bare `host:port` is taken as `http://`, as curl
/// does), with a host. Errors never quote it: it may carry credentials.
fn proxy_url(text: &str, from: String) -> Result<EntraProxy, ConfigError> {
    let expected = |why: &str| {
        invalid(
            &from,
            REDACTED,
            format!(
                "an http:// or https:// proxy URL such as \"http://proxy.example:3128\" ({why})"
            ),
        )
    };
    let text = text.trim();
    let with_scheme = if text.contains("://") {
        text.to_owned()
    } else {
        format!("http://{text}")
    };
    let url = Url::parse(&with_scheme).map_err(|e| expected(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(expected("another scheme"));
    }
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| expected("no host"))?;
    let port = url
        .port_or_known_default()
        .ok_or_else(|| expected("no port"))?;
    Ok(EntraProxy {
        shown: format!("{host}:{port}"),
        url: Secret::new(url.as_str()),
        from,
    })
}

/// Whether a `NO_PROXY` list names `host`: `*`, the host itself, or a domain it is in
/// (`example.com` and `.example.com` both cover `login.example.com`); ports are ignored.
/// Address ranges are not read (Entra is reached by name).
pub(super) fn no_proxy_names(list: &str, host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    list.split(',').map(str::trim).any(|entry| {
        let entry = entry.split(':').next().unwrap_or_default();
        let domain = entry
            .trim_start_matches('.')
            .trim_end_matches('.')
            .to_ascii_lowercase();
        entry == "*"
            || (!domain.is_empty() && (host == domain || host.ends_with(&format!(".{domain}"))))
    })
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
