//! Who is asking, and what they may have: the connection's peer ([`crate::peer`]), the secret
//! it presented, and the `[[callers]]` rule that matches; grants, Host checks, rate limits.

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use axum::http::HeaderMap;
use tokio::time::Instant;

use crate::config::{same_resource, CallerRule, Config, Target};
pub use crate::peer::Peer;

/// A caller recognised by a `[[callers]]` rule (or anyone, when there are no rules).
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    /// The rule, `None` when no rules are configured.
    pub rule: Option<&'a CallerRule>,
    /// Its index in `config.callers` (for the rate limiter).
    pub index: Option<usize>,
}

impl Caller<'_> {
    /// The name for audit lines.
    pub fn name(&self) -> &str {
        self.rule.map_or("-", |r| r.name.as_str())
    }

    /// Why this caller may not have the token of `tenant` and `target`'s app for `resource`,
    /// reached through `target`; `None` when it may.
    ///
    /// Grants name targets, but what is handed out is a (tenant, app) token. A target's
    /// `allowed_tenants` can reach a tenant that another target owns with the same app; the
    /// caller then gets that other target's tokens byte for byte. So a tenant reached through
    /// `allowed_tenants` is granted only when every target that owns it with the same app is
    /// granted too: a grant means what the operator wrote, with no new key to learn.
    pub fn refusal(
        &self,
        config: &Config,
        target: &Target,
        tenant: &str,
        resource: &str,
    ) -> Option<String> {
        let rule = self.rule?;
        let granted = |name: &str| {
            rule.targets
                .as_ref()
                .is_none_or(|list| list.iter().any(|t| t == name))
        };
        let resource_ok = rule
            .resources
            .as_ref()
            .is_none_or(|list| list.iter().any(|r| same_resource(r, resource)));
        if !granted(&target.name) || !resource_ok {
            return Some(format!(
                "caller '{}' may not get tokens for target '{}' and resource '{resource}' (see its [[callers]] entry)",
                rule.name, target.name
            ));
        }
        if tenant.eq_ignore_ascii_case(&target.tenant_id) {
            return None;
        }
        let owner = config.targets.iter().find(|other| {
            other.client_id.eq_ignore_ascii_case(&target.client_id)
                && other.tenant_id.eq_ignore_ascii_case(tenant)
                && !granted(&other.name)
        })?;
        Some(format!(
            "caller '{}' may not get tenant {tenant}'s tokens through target '{}': target '{}' owns that tenant with the same app, and the caller's [[callers]] entry does not grant it",
            rule.name, target.name, owner.name
        ))
    }
}

/// The caller secret from whichever header the dialect uses for it.
pub fn presented_secret(headers: &HeaderMap) -> Option<&[u8]> {
    headers
        .get(crate::header::X_IDENTITY_HEADER)
        .or_else(|| headers.get(crate::header::SECRET))
        .map(|v| v.as_bytes())
}

/// Finds the caller: the first rule whose every stated identifier matches. `None` when rules
/// exist and none matches (such callers are refused).
pub fn identify<'c>(config: &'c Config, peer: &Peer, secret: Option<&[u8]>) -> Option<Caller<'c>> {
    if config.callers.is_empty() {
        return Some(Caller {
            rule: None,
            index: None,
        });
    }
    // A local TCP peer whose socket's owner is not known (a connection from before a reload
    // added a uid rule, or a socket that could not be told for certain) cannot be judged by a
    // rule that names a uid or gid: it is refused, not judged by the next rule instead, which
    // could be a broader one.
    let owner_unknown = match peer {
        Peer::Tcp { addr, owner: None } => is_local(addr.ip()),
        _ => false,
    };
    for (index, rule) in config.callers.iter().enumerate() {
        if owner_unknown && (rule.uid.is_some() || rule.gid.is_some()) {
            return None;
        }
        let secret_ok = rule
            .secret
            .as_ref()
            .is_none_or(|s| secret.is_some_and(|p| s.matches(p)));
        let uid_ok = rule.uid.is_none_or(|want| peer.uid() == Some(want));
        let gid_ok = rule.gid.is_none_or(|want| peer.gid() == Some(want));
        let source_ok = rule
            .source
            .is_none_or(|(net, len)| peer.addr().is_some_and(|a| in_network(a.ip(), net, len)));
        if secret_ok && uid_ok && gid_ok && source_ok {
            return Some(Caller {
                rule: Some(rule),
                index: Some(index),
            });
        }
    }
    None
}

/// A loopback address, IPv4-mapped IPv6 forms included: a socket of this host.
pub fn is_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// Whether `ip` is in the network `net`/`len` (an IPv4-mapped IPv6 address as IPv4).
pub(crate) fn in_network(ip: IpAddr, net: IpAddr, len: u8) -> bool {
    // Compare IPv4-mapped IPv6 peers as IPv4.
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// Which listener a Host header is checked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostRule {
    /// The token endpoints: loopback names, IMDS's address, the listen address, and
    /// `server.allowed_hosts`; with `server.allow_remote`, any IP address too (callers on
    /// other hosts or pods name the listener by an address, the node's in node mode, and every
    /// request there carries a secret anyway).
    Token,
    /// The admin listener: the same names, and any IP address. The kubelet probes with the
    /// pod's IP as Host, and an address is no DNS-rebinding attack: a page can make a browser
    /// send only its own name.
    Admin,
}

/// Whether a request's `Host` names this host (DNS rebinding): exactly one Host header, valid
/// text, present on HTTP/1.1, naming a loopback name, IMDS's address, or one the config
/// allows. Anything else is a rebinding attempt from a browser, or a mistake.
pub fn host_allowed(
    headers: &HeaderMap,
    version: axum::http::Version,
    config: &Config,
    rule: HostRule,
) -> bool {
    let mut hosts = headers.get_all(axum::http::header::HOST).iter();
    let (first, second) = (hosts.next(), hosts.next());
    let host = match (first, second) {
        // Two Host headers could mean two things to two parsers.
        (_, Some(_)) => return false,
        (Some(value), None) => match value.to_str() {
            Ok(text) => text,
            Err(_) => return false,
        },
        // HTTP/1.1 requires Host; only an HTTP/1.0 client may leave it out.
        (None, None) => return version == axum::http::Version::HTTP_10,
    };
    let Some(name) = host_name(host) else {
        return false;
    };
    let listen_ip = config.server.listen.ip();
    let ip = name.parse::<IpAddr>().ok();
    name.eq_ignore_ascii_case("localhost")
        || name == "169.254.169.254"
        || ip.is_some_and(|ip| ip.is_loopback() || (!listen_ip.is_unspecified() && ip == listen_ip))
        || ((rule == HostRule::Admin || config.server.allow_remote) && ip.is_some())
        || config
            .server
            .allowed_hosts
            .iter()
            .any(|h| h.eq_ignore_ascii_case(name))
}

/// The name in a Host value: `name`, `name:port`, `[v6]` or `[v6]:port`; `None` for anything
/// else (`[::1].evil.example`, an empty name, a port that is not a number).
fn host_name(host: &str) -> Option<&str> {
    let port_ok = |port: &str| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit());
    let name = match host.strip_prefix('[') {
        Some(rest) => {
            let (v6, after) = rest.split_once(']')?;
            match after.strip_prefix(':') {
                Some(port) if port_ok(port) => {}
                None if after.is_empty() => {}
                _ => return None,
            }
            v6.parse::<std::net::Ipv6Addr>().ok()?;
            v6
        }
        None => match host.rsplit_once(':') {
            Some((name, port)) if port_ok(port) => name,
            Some(_) => return None,
            None => host,
        },
    };
    (!name.is_empty()).then_some(name)
}

/// Who a budget of new keys is counted against: the `[[callers]]` rule that matched, else a
/// local uid, else a remote address; local callers of unknown uid share one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Counted {
    /// A rule, by index.
    Rule(usize),
    /// A local uid.
    Uid(u32),
    /// A remote address.
    Addr(IpAddr),
    /// Local callers of unknown uid, together.
    Local,
}

impl Counted {
    /// Whom `caller`, connected as `peer`, is counted as.
    pub fn of(caller: &Caller<'_>, peer: &Peer) -> Counted {
        match (caller.index, peer.uid(), peer.addr()) {
            (Some(index), _, _) => Counted::Rule(index),
            (None, Some(uid), _) => Counted::Uid(uid),
            (None, None, Some(addr)) if !is_local(addr.ip()) => Counted::Addr(addr.ip()),
            (None, None, _) => Counted::Local,
        }
    }
}

/// A budget of new keys per caller: a token bucket each (`server.new_keys_per_second`, a burst
/// of ten seconds' worth), so no caller can turn the cache into a flood of new keys and of
/// Entra calls. Buckets are kept for at most `MAX_COUNTED` callers; past that the oldest
/// full ones go.
#[derive(Debug)]
pub struct NewKeys {
    rate: f64,
    buckets: Mutex<std::collections::HashMap<Counted, Bucket>>,
}

/// Callers whose budgets of new keys are kept at once.
const MAX_COUNTED: usize = 4096;

impl NewKeys {
    /// Budgets of `rate` new keys per second.
    pub fn new(rate: f64) -> Self {
        NewKeys {
            rate,
            buckets: Mutex::default(),
        }
    }

    /// Takes one new key from `who`'s budget; `Err(wait)` when it is spent.
    pub fn take(&self, who: Counted) -> Result<(), Duration> {
        let now = Instant::now();
        let burst = self.rate * 10.0;
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() >= MAX_COUNTED && !buckets.contains_key(&who) {
            // Full buckets hold nothing worth keeping: a caller who comes back starts full.
            let rate = self.rate;
            buckets.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * rate < burst);
        }
        let bucket = buckets.entry(who).or_insert(Bucket {
            rate: self.rate,
            tokens: burst,
            at: now,
        });
        bucket.tokens =
            (bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * bucket.rate).min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / bucket.rate))
        }
    }
}

/// Token buckets, one per `[[callers]]` rule that sets `rate`.
#[derive(Debug)]
pub struct RateLimits {
    buckets: Vec<Option<Mutex<Bucket>>>,
}

#[derive(Debug)]
struct Bucket {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl RateLimits {
    /// Buckets for the config's callers, full.
    pub fn new(config: &Config) -> Self {
        let now = Instant::now();
        RateLimits {
            buckets: config
                .callers
                .iter()
                .map(|c| {
                    c.rate.map(|rate| {
                        Mutex::new(Bucket {
                            rate,
                            tokens: rate.max(1.0),
                            at: now,
                        })
                    })
                })
                .collect(),
        }
    }

    /// Takes one request from the caller's bucket; `Err(wait)` when it is empty.
    pub fn take(&self, caller: &Caller<'_>) -> Result<(), Duration> {
        let Some(Some(bucket)) = caller.index.and_then(|i| self.buckets.get(i)) else {
            return Ok(());
        };
        let mut b = bucket
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        let burst = b.rate.max(1.0);
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * b.rate).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / b.rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(callers: &str) -> Config {
        let no_env = |_: &str| None;
        Config::from_toml(
            &format!(
                "{callers}\n[[targets]]\nname = \"a\"\ntenant_id = \"t\"\nclient_id = \"c\"\n[[targets]]\nname = \"b\"\ntenant_id = \"t2\"\nclient_id = \"c2\"\n"
            ),
            "t",
            &no_env,
        )
        .unwrap()
    }

    const RULES: &str = r#"
[[callers]]
name = "by-secret"
secret = "0123456789abcdef-a"
targets = ["a"]

[[callers]]
name = "by-uid"
uid = 1000
targets = ["b"]
resources = ["https://graph.microsoft.com"]

[[callers]]
name = "by-net"
source = "10.1.0.0/16"
targets = ["*"]
rate = 2
"#;

    #[test]
    fn rules_match_by_every_stated_identifier() {
        let c = config(RULES);
        let tcp = |ip: &str| Peer::Tcp {
            addr: std::net::SocketAddr::new(ip.parse().unwrap(), 5000),
            owner: None,
        };
        let unix = |uid| Peer::Unix {
            uid,
            gid: 1,
            pid: None,
        };
        assert_eq!(
            identify(&c, &tcp("127.0.0.1"), Some(b"0123456789abcdef-a"))
                .unwrap()
                .name(),
            "by-secret"
        );
        assert!(identify(&c, &tcp("127.0.0.1"), Some(b"wrong")).is_none());
        assert_eq!(identify(&c, &unix(1000), None).unwrap().name(), "by-uid");
        assert!(identify(&c, &unix(1001), None).is_none());
        assert_eq!(
            identify(&c, &tcp("10.1.2.3"), None).unwrap().name(),
            "by-net"
        );
        assert_eq!(
            identify(&c, &tcp("::ffff:10.1.2.3"), None).unwrap().name(),
            "by-net"
        );
        assert!(identify(&c, &tcp("10.2.0.1"), None).is_none());
        // No rules: everyone.
        let open = config("");
        assert!(identify(&open, &tcp("127.0.0.1"), None)
            .unwrap()
            .rule
            .is_none());
    }

    #[test]
    fn grants() {
        let c = config(RULES);
        let by_uid = identify(
            &c,
            &Peer::Unix {
                uid: 1000,
                gid: 1,
                pid: None,
            },
            None,
        )
        .unwrap();
        let (a, b) = (c.target("a").unwrap(), c.target("b").unwrap());
        let may = |t: &Target, r: &str| by_uid.refusal(&c, t, &t.tenant_id, r).is_none();
        assert!(may(b, "https://graph.microsoft.com/"));
        assert!(may(b, "https://GRAPH.microsoft.com"));
        assert!(!may(b, "https://vault.azure.net"));
        assert!(!may(a, "https://graph.microsoft.com"));
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limit_refills() {
        let c = config(RULES);
        let limits = RateLimits::new(&c);
        let peer = Peer::Tcp {
            addr: "10.1.0.1:1".parse().unwrap(),
            owner: None,
        };
        let caller = identify(&c, &peer, None).unwrap();
        assert!(limits.take(&caller).is_ok());
        assert!(limits.take(&caller).is_ok());
        let wait = limits.take(&caller).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(limits.take(&caller).is_ok());
    }

    #[test]
    fn host_header_rules() {
        let c = config("[server]\nallowed_hosts = [\"fedimds.internal\"]\n");
        let with = |h: &str| {
            let mut m = HeaderMap::new();
            m.insert(axum::http::header::HOST, h.parse().unwrap());
            host_allowed(&m, axum::http::Version::HTTP_11, &c, HostRule::Token)
        };
        for ok in [
            "localhost",
            "localhost:8181",
            "127.0.0.1:8181",
            "[::1]:8181",
            "169.254.169.254",
            "fedimds.internal:8181",
        ] {
            assert!(with(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:8181",
            "10.0.0.5",
            "localhost.evil.example",
            "[::1].evil.example",
            "[::1]x",
            "localhost:80x",
            "",
        ] {
            assert!(!with(bad), "{bad}");
        }
    }

    #[test]
    fn a_host_header_that_is_not_one_clear_name_is_refused() {
        use axum::http::{header::HOST, HeaderValue, Version};
        let c = config("");
        let check = |m: &HeaderMap, v| host_allowed(m, v, &c, HostRule::Token);
        // Not valid text.
        let mut m = HeaderMap::new();
        m.insert(HOST, HeaderValue::from_bytes(b"localhost\xff").unwrap());
        assert!(!check(&m, Version::HTTP_11));
        // Two of them.
        let mut m = HeaderMap::new();
        m.append(HOST, HeaderValue::from_static("localhost"));
        m.append(HOST, HeaderValue::from_static("evil.example"));
        assert!(!check(&m, Version::HTTP_11));
        // None, on HTTP/1.1; HTTP/1.0 had no Host header.
        assert!(!check(&HeaderMap::new(), Version::HTTP_11));
        assert!(check(&HeaderMap::new(), Version::HTTP_10));
    }

    #[test]
    fn the_admin_listener_also_takes_addresses() {
        use axum::http::{header::HOST, HeaderValue, Version};
        let c = config("");
        let with = |h: &'static str, rule| {
            let mut m = HeaderMap::new();
            m.insert(HOST, HeaderValue::from_static(h));
            host_allowed(&m, Version::HTTP_11, &c, rule)
        };
        // The kubelet's probe names the pod's IP.
        assert!(with("10.244.1.7:8182", HostRule::Admin));
        assert!(!with("10.244.1.7:8182", HostRule::Token));
        assert!(!with("rebind.evil.example:8182", HostRule::Admin));
    }

    #[test]
    fn a_listener_others_reach_takes_addresses_but_still_no_foreign_names() {
        use axum::http::{header::HOST, HeaderValue, Version};
        // Node mode: pods name the node's address.
        let c = config(
            "[server]\nlisten = \"0.0.0.0:8181\"\nallow_remote = true\nidentity_header = \"a-secret-of-16-chars-or-more\"\n",
        );
        let with = |h: &'static str| {
            let mut m = HeaderMap::new();
            m.insert(HOST, HeaderValue::from_static(h));
            host_allowed(&m, Version::HTTP_11, &c, HostRule::Token)
        };
        assert!(with("10.240.0.4:8181"));
        assert!(with("[fd00::4]:8181"));
        assert!(!with("rebind.evil.example:8181"));
    }

    #[test]
    fn a_local_peer_of_unknown_owner_is_not_judged_by_a_later_rule() {
        let c = config(
            "[[callers]]\nname = \"dev\"\nuid = 1001\ntargets = [\"a\"]\n\n[[callers]]\nname = \"local\"\nsource = \"127.0.0.0/8\"\ntargets = [\"*\"]\n",
        );
        let local = |owner| Peer::Tcp {
            addr: "127.0.0.1:40000".parse().unwrap(),
            owner,
        };
        // Its owner unknown, it could be uid 1001: refused, not given the broader rule.
        assert!(identify(&c, &local(None), None).is_none());
        let known = |uid| {
            Some(crate::peer::Owner {
                uid,
                inode: 1,
                gid: None,
            })
        };
        let dev = identify(&c, &local(known(1001)), None).unwrap();
        assert_eq!(dev.name(), "dev");
        assert_eq!(
            identify(&c, &local(known(1002)), None).unwrap().name(),
            "local"
        );
    }
}
