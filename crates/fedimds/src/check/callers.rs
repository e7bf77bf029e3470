//! The `[[callers]]` rules: for each caller, how it is recognised (never a secret), which
//! targets and resources it may have, and a warning where a grant cannot give what it names.
//!
//! The config loader already refuses a grant of a target that does not exist. What it lets
//! through, and this reports, is a grant that gives less than it says: a resource that none of
//! the caller's targets allows, a target whose resources exclude every resource of the
//! caller's, an empty list, and a caller that is never recognised because a rule before it
//! matches every request it would (the first matching rule is the caller,
//! [`crate::caller::identify`]).

use std::io::Write;

use super::report::{field, wrapped, Report};
use crate::caller::in_network;
use crate::config::{CallerRule, CallerSecret, Config, Target};

/// What a caller may have through one target.
enum Reach<'c> {
    /// Any resource the caller asks for.
    Any,
    /// These resources (the target's spelling where it has a list).
    Only(Vec<&'c str>),
}

pub(super) fn check_callers(config: &Config, report: &mut Report, out: &mut impl Write) {
    if config.callers.is_empty() {
        wrapped(
            out,
            2,
            "no [[callers]] rules: every caller that can reach the listener may have every \
             target's tokens (see README, Security).",
        );
        return;
    }
    wrapped(
        out,
        2,
        "The first rule a request matches is its caller; a request that matches none is refused \
         (403).",
    );
    for (i, rule) in config.callers.iter().enumerate() {
        check_caller(config, i, rule, report, out);
    }
}

fn check_caller(
    config: &Config,
    index: usize,
    rule: &CallerRule,
    report: &mut Report,
    out: &mut impl Write,
) {
    let name = &rule.name;
    let targets: Vec<&Target> = match &rule.targets {
        None => config.targets.iter().collect(),
        Some(names) => config
            .targets
            .iter()
            .filter(|t| names.contains(&t.name))
            .collect(),
    };
    let warnings = grant_warnings(config, index, rule, &targets);
    // ⚠ on the caller's line when a warning follows; the warnings are counted, not the line.
    let mark = if warnings.is_empty() { "✔" } else { "⚠" };
    say!(out, "  {mark} caller {name}");
    field(out, 6, "matched", recognised_by(rule));
    field(
        out,
        6,
        "targets",
        match &rule.targets {
            None => format!("all ({})", names(&targets)),
            Some(_) if targets.is_empty() => "none".to_owned(),
            Some(_) => names(&targets),
        },
    );
    field(
        out,
        6,
        "resources",
        match &rule.resources {
            None => "any the target allows".to_owned(),
            Some(list) if list.is_empty() => "none".to_owned(),
            Some(list) => list.join(", "),
        },
    );
    let reachable: Vec<(&Target, Reach<'_>)> = targets
        .iter()
        .map(|t| (*t, reach(rule, t)))
        .filter(|(_, r)| !matches!(r, Reach::Only(list) if list.is_empty()))
        .collect();
    let may_have = if reachable.is_empty() {
        "nothing".to_owned()
    } else {
        reachable
            .iter()
            .map(|(t, r)| match r {
                Reach::Any => format!("{}: any resource", t.name),
                Reach::Only(list) => format!("{}: {}", t.name, list.join(", ")),
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    field(out, 6, "may have", may_have);
    if let Some(rate) = rule.rate {
        field(
            out,
            6,
            "rate",
            format!("{rate} requests/s (burst of as many)"),
        );
    }

    for warning in warnings {
        report.warn_at(out, 6, warning);
    }
}

/// Where `rule`'s grant gives less than it names, in words.
fn grant_warnings(
    config: &Config,
    index: usize,
    rule: &CallerRule,
    targets: &[&Target],
) -> Vec<String> {
    let name = &rule.name;
    let mut warnings = Vec::new();
    if let Some(earlier) = config.callers[..index]
        .iter()
        .find(|earlier| shadows(earlier, rule))
    {
        warnings.push(format!(
            "caller '{name}' is never recognised: caller '{}', listed before it, matches every \
                 request it would; list '{name}' first, or give '{}' an identifier '{name}' lacks",
            earlier.name, earlier.name
        ));
    }
    if rule.targets.as_ref().is_some_and(Vec::is_empty) {
        warnings.push(format!(
            "caller '{name}' has targets = []: it is granted no target and gets no token"
        ));
    }
    if rule.resources.as_ref().is_some_and(Vec::is_empty) {
        warnings.push(format!(
            "caller '{name}' has resources = []: it may ask for no resource and gets no token"
        ));
    }
    let caller_resources = rule.resources.as_deref().unwrap_or_default();
    for target in targets {
        if let (Some(theirs), false) = (&target.resources, caller_resources.is_empty()) {
            if matches!(reach(rule, target), Reach::Only(list) if list.is_empty()) {
                warnings.push(format!(
                    "caller '{name}' is granted target '{}', but that target allows none of \
                         the caller's resources ({}; the target allows {}): the grant gives \
                         nothing",
                    target.name,
                    caller_resources.join(", "),
                    theirs.join(", ")
                ));
            }
        }
    }
    if !targets.is_empty() {
        for resource in caller_resources {
            if !targets.iter().any(|t| t.allows_resource(resource)) {
                warnings.push(format!(
                    "caller '{name}' may ask for {resource}, but none of its targets allows \
                         it ({}): add it to a target's resources, or remove it from the caller's",
                    targets
                        .iter()
                        .map(|t| format!(
                            "'{}' allows {}",
                            t.name,
                            t.resources
                                .as_ref()
                                .map_or("any".to_owned(), |l| l.join(", "))
                        ))
                        .collect::<Vec<_>>()
                        .join("; ")
                ));
            }
        }
    }
    warnings
}

/// How the rule recognises a caller, every identifier it states; a secret only by its presence.
fn recognised_by(rule: &CallerRule) -> String {
    let mut by = Vec::new();
    match &rule.secret {
        Some(CallerSecret::Value(_)) => {
            by.push("a secret (X-IDENTITY-HEADER or secret; not shown)".to_owned())
        }
        Some(CallerSecret::File(file)) => by.push(format!(
            "a secret from {} ({} in it now, read again as it changes; not shown)",
            file.path.display(),
            file.current.load().len()
        )),
        None => {}
    }
    if let Some(uid) = rule.uid {
        by.push(format!("uid {uid}"));
    }
    if let Some(gid) = rule.gid {
        by.push(format!("gid {gid}"));
    }
    if let Some((net, len)) = rule.source {
        by.push(format!("source {net}/{len}"));
    }
    by.join(" and ")
}

/// What `rule` may have through `target`: the resources both allow.
fn reach<'c>(rule: &'c CallerRule, target: &'c Target) -> Reach<'c> {
    match (&rule.resources, &target.resources) {
        (None, None) => Reach::Any,
        (None, Some(theirs)) => Reach::Only(theirs.iter().map(String::as_str).collect()),
        (Some(mine), None) => Reach::Only(mine.iter().map(String::as_str).collect()),
        (Some(mine), Some(_)) => Reach::Only(
            mine.iter()
                .filter_map(|r| target.allowed_spelling(r))
                .collect(),
        ),
    }
}

/// Whether every request `later` would match is matched by `earlier` too: each identifier
/// `earlier` states, `later` states as well, the same or narrower.
fn shadows(earlier: &CallerRule, later: &CallerRule) -> bool {
    let secret = match (&earlier.secret, &later.secret) {
        (None, _) => true,
        (Some(a), Some(b)) => b
            .accepted()
            .iter()
            .all(|s| a.matches(s.expose().as_bytes())),
        (Some(_), None) => false,
    };
    let id = |a: Option<u32>, b: Option<u32>| a.is_none() || a == b;
    let source = match (earlier.source, later.source) {
        (None, _) => true,
        (Some((net, len)), Some((inner, inner_len))) => {
            inner_len >= len && in_network(inner, net, len)
        }
        (Some(_), None) => false,
    };
    secret && id(earlier.uid, later.uid) && id(earlier.gid, later.gid) && source
}

fn names(targets: &[&Target]) -> String {
    targets
        .iter()
        .map(|t| t.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::Secret;

    fn rule(secret: Option<&str>, uid: Option<u32>, source: Option<&str>) -> CallerRule {
        CallerRule {
            name: "r".to_owned(),
            secret: secret.map(|s| CallerSecret::Value(Secret::new(s))),
            uid,
            gid: None,
            source: source.map(|s| {
                let (a, l) = s.split_once('/').unwrap();
                (a.parse().unwrap(), l.parse().unwrap())
            }),
            targets: None,
            resources: None,
            rate: None,
        }
    }

    #[test]
    fn a_broader_earlier_rule_shadows() {
        let any_local = rule(None, None, Some("127.0.0.0/8"));
        let one_user = rule(None, Some(1000), Some("127.0.0.1/32"));
        assert!(shadows(&any_local, &one_user));
        assert!(!shadows(&one_user, &any_local));
        // A secret or a uid the earlier rule states and the later one does not: no shadow.
        let with_secret = rule(Some("0123456789abcdef"), None, None);
        assert!(!shadows(&with_secret, &one_user));
        assert!(shadows(
            &with_secret,
            &rule(Some("0123456789abcdef"), Some(7), None)
        ));
        assert!(!shadows(
            &with_secret,
            &rule(Some("fedcba9876543210"), None, None)
        ));
        assert!(!shadows(
            &rule(None, Some(1), None),
            &rule(None, Some(2), None)
        ));
        assert!(!shadows(
            &rule(None, None, Some("10.0.0.0/16")),
            &rule(None, None, Some("10.0.0.0/8"))
        ));
    }
}
