//! The `[[targets]]` and `[[callers]]` lists, each entry read through the `Reader` and
//! checked: names unique, tenants specific (and ids, where grants must tell them apart),
//! grants naming real targets, rates sane.

use std::collections::HashSet;

use super::provenance::{Reader, NONE, REDACTED};
use super::raw::{RawCaller, RawTarget};
use super::*;

/// Tenants that Entra refuses for client credentials (AADSTS9001023).
const MULTI_TENANT_ALIASES: [&str; 3] = ["common", "consumers", "organizations"];

/// With `[[callers]]` grants, a target that lets callers name other tenants must have every
/// tenant it can reach, and every tenant of a target with the same app, spelled as an id:
/// the grant check tells tenants apart by spelling, and a domain name could be another name
/// of a tenant a caller is not granted.
pub(super) fn tenants_are_ids(targets: &[Target]) -> Result<(), ConfigError> {
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

pub(super) fn validate_targets(
    r: &mut Reader<'_>,
    raw: Vec<RawTarget>,
    sources: &[&Source],
) -> Result<Vec<Target>, ConfigError> {
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
        let source_name = r.or(&key("source"), t.source, DEFAULT_SOURCE.to_owned());
        let Some(source) = sources.iter().find(|s| s.name == source_name) else {
            let known: Vec<&str> = sources.iter().map(|s| s.name.as_str()).collect();
            return Err(invalid(
                key("source"),
                &source_name,
                format!(
                    "the name of a source: one of {} (\"default\" is [source], the others [[sources]] entries)",
                    known.join(", ")
                ),
            ));
        };
        let exchange = r.or(&key("exchange"), t.exchange, true);
        if !exchange && !source.serves_any_resource() {
            return Err(invalid(
                key("exchange"),
                "false",
                "true: the source is a token file (kind = \"token-file\"), which holds one token for one audience and cannot be asked for another resource; a home-identity target needs kind = \"imds\" or \"app-service\"",
            ));
        }
        let given_client = t
            .client_id
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty());
        // A home-identity target serves the source's identity: its client id is that one's.
        let identity = (!exchange).then(|| source.client_id()).flatten();
        if let (Some(given), Some(id)) = (&given_client, identity) {
            if !given.eq_ignore_ascii_case(id) {
                return Err(invalid(
                    key("client_id"),
                    given,
                    format!("the client id of the identity it serves, {id} (source '{}'): with exchange = false the target hands out that identity's own tokens", source.name),
                ));
            }
        }
        let derived_client = given_client.clone().or(identity.map(str::to_owned));
        // The name is shown first; its default is the app's client id, checked just below.
        let default_name = derived_client.clone().unwrap_or_default();
        let name = r.or(&key("name"), t.name, default_name);
        let tenant_id = required(
            r,
            t.tenant_id,
            "tenant_id",
            if exchange {
                "the target tenant's id or verified domain"
            } else {
                "the home tenant's id: with exchange = false the target serves the home identity's own tokens"
            },
        )?;
        if MULTI_TENANT_ALIASES.contains(&tenant_id.to_ascii_lowercase().as_str()) {
            return Err(invalid(
                key("tenant_id"),
                &tenant_id,
                "a specific tenant: Entra refuses common/consumers/organizations for app tokens",
            ));
        }
        let client_id = if exchange || given_client.is_some() {
            required(
                r,
                given_client,
                "client_id",
                if exchange {
                    "the multi-tenant app's client id"
                } else {
                    "the managed identity's client id (the source names none: the system-assigned identity's), which callers select this target by"
                },
            )?
        } else {
            let id = derived_client.unwrap_or_default();
            if id.is_empty() {
                return Err(invalid(
                    key("client_id"),
                    "",
                    "the managed identity's client id (the source names none: the system-assigned identity's), which callers select this target by",
                ));
            }
            r.or(&key("client_id"), None, id)
        };
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
            Some(_) if !exchange => {
                return Err(invalid(
                    key("allowed_tenants"),
                    "(set)",
                    "nothing: with exchange = false the target serves the home identity's own tenant only",
                ))
            }
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
            exchange,
            source: source_name,
        });
    }
    if targets.iter().filter(|t| t.default).count() > 1 {
        return Err(invalid(
            "targets[].default",
            "true",
            "at most one target with default = true",
        ));
    }
    // A request that names no target goes to the home-identity target listing its resource
    // (target.rs): two listing one resource would make that a guess.
    let homes: Vec<&Target> = targets.iter().filter(|t| !t.exchange).collect();
    for (i, a) in homes.iter().enumerate() {
        for b in &homes[i + 1..] {
            if let Some(res) = a
                .resources
                .iter()
                .flatten()
                .find(|res| b.resources.as_ref().is_some_and(|_| b.allows_resource(res)))
            {
                return Err(invalid(
                    format!("targets.{}.resources", b.name),
                    res,
                    format!("a resource no other home-identity target lists: target '{}' (exchange = false) lists it too, and a request naming no target is routed to the one home-identity target that lists its resource", a.name),
                ));
            }
        }
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

pub(super) fn validate_callers(
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
        let secret_file = r.opt(&key("secret_file"), c.secret_file, NONE);
        let uid = r.opt(&key("uid"), c.uid, NONE);
        let gid = r.opt(&key("gid"), c.gid, NONE);
        let source_text = r.opt(&key("source"), c.source, NONE);
        if secret.is_none()
            && secret_file.is_none()
            && uid.is_none()
            && gid.is_none()
            && source_text.is_none()
        {
            return Err(invalid(
                key("secret"),
                "",
                "at least one of secret, secret_file, uid, gid or source to recognise the caller by",
            ));
        }
        if secret.as_ref().is_some_and(|s| s.len() < MIN_SECRET_LEN) {
            return Err(invalid(
                key("secret"),
                REDACTED,
                format!("a secret of at least {MIN_SECRET_LEN} characters"),
            ));
        }
        let secret = match (secret, secret_file) {
            (Some(_), Some(path)) => {
                return Err(invalid(
                    key("secret_file"),
                    path.display().to_string(),
                    format!("unset: {} is given", key("secret")),
                ))
            }
            (Some(value), None) => Some(CallerSecret::Value(Secret::new(value))),
            (None, Some(path)) => {
                // Read now, so a file that cannot serve fails the start (or the reload) with
                // its key named; afterwards it is read again as it changes.
                let secrets = SecretFile::read(&path).map_err(|why| {
                    invalid(
                        key("secret_file"),
                        path.display().to_string(),
                        format!("a readable file of caller secrets, one per line ({why})"),
                    )
                })?;
                Some(CallerSecret::File(SecretFile {
                    path,
                    key: key("secret_file"),
                    current: std::sync::Arc::new(arc_swap::ArcSwap::from_pointee(secrets)),
                }))
            }
            (None, None) => None,
        };
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
            secret,
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
