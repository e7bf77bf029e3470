//! `fedimds check`: walks the chain for real, once, and says what is wrong and how to fix it.
//!
//! The config was already validated (main exits 64 otherwise). Then: each `[[callers]]` rule,
//! what it may have and where a grant gives less than it names; the assertion source and
//! the assertion's claims, shown beside the federated identity credential (FIC) the app must
//! carry to accept them, with the known traps flagged; then one exchange per target, with no
//! retries, each reported as OK (lifetime, fingerprint) or as the diagnosis of Entra's AADSTS
//! code. Never prints a token, an assertion or a secret: only claims and fingerprints.

use std::io::Write;
use std::path::Path;

use crate::config::{Config, EntraRoute, Source, SourceKind, Target};
use crate::upstream::Upstream;

/// Writes a line; a closed stdout must not turn a check into a panic.
macro_rules! say {
    ($out:expr) => { let _ = writeln!($out); };
    ($out:expr, $($arg:tt)*) => { let _ = writeln!($out, $($arg)*); };
}

mod assertion;
mod callers;
mod report;
mod target;

use assertion::check_assertion;
use callers::check_callers;
use report::{field, Report};
use target::{check_home_target, check_target};

/// Checks `config` read from `path`: a heading naming the file, then [`run`].
pub async fn run_file(path: &Path, config: &Config, out: &mut impl Write) -> bool {
    say!(out, "fedimds check · {}", path.display());
    run(config, out).await
}

/// The path each upstream leg takes: the assertion leg always direct, Entra direct or through
/// the proxy (its `host:port` only, never its credentials).
fn paths(config: &Config, out: &mut impl Write) {
    let host_port = |url: &url::Url| {
        format!(
            "{}:{}",
            url.host_str().unwrap_or_default(),
            url.port_or_known_default().unwrap_or_default()
        )
    };
    let used = used_sources(config);
    for source in &used {
        let path = match &source.kind {
            SourceKind::Imds { endpoint, .. } | SourceKind::AppService { endpoint, .. } => {
                format!("direct to {} (never through a proxy)", host_port(endpoint))
            }
            SourceKind::TokenFile { .. } => "a local file (no network)".to_owned(),
        };
        match used.as_slice() {
            [_] => field(out, 2, "assertion", path),
            _ => field(
                out,
                2,
                "assertion",
                format!("source '{}': {path}", source.name),
            ),
        }
    }
    let entra = host_port(&config.cloud.authority_host);
    let entra = match &config.upstream.entra_route {
        EntraRoute::Direct { why } => format!("direct to {entra} ({why})"),
        EntraRoute::Proxy(p) => format!("to {entra} through the proxy {} ({})", p.shown, p.from),
    };
    field(out, 2, "entra", entra);
}

/// The sources some target uses, `[source]` first.
fn used_sources(config: &Config) -> Vec<&Source> {
    config
        .all_sources()
        .filter(|s| config.targets.iter().any(|t| t.source == s.name))
        .collect()
}

/// Walks the chain for `config`, writing the report to `out`. True when every step passed.
pub async fn run(config: &Config, out: &mut impl Write) -> bool {
    let mut report = Report::default();
    say!(out);
    say!(out, "Config");
    report.pass(
        out,
        format!(
            "valid: {} target{}, cloud {}, Entra at {}",
            config.targets.len(),
            if config.targets.len() == 1 { "" } else { "s" },
            config.cloud.name.as_str(),
            config.cloud.authority_host.as_str().trim_end_matches('/'),
        ),
    );
    for warning in config
        .warnings()
        .into_iter()
        .chain(crate::upstream::budget::warnings(config))
    {
        report.warn(out, warning);
    }

    say!(out);
    say!(out, "Network paths");
    paths(config, out);

    say!(out);
    say!(out, "Callers");
    check_callers(config, &mut report, out);
    let upstream = match Upstream::new(config) {
        Ok(u) => u,
        Err(e) => {
            report.fail(out, format!("cannot build the HTTP client: {e}"));
            return report.summary(out, config);
        }
    };

    // Each source's assertion is what its exchanging targets need; home-identity targets ask
    // their source for their own resource instead.
    let used = used_sources(config);
    let mut assertions = Vec::new();
    for source in &used {
        let exchanging: Vec<&Target> = config
            .targets
            .iter()
            .filter(|t| t.exchange && t.source == source.name)
            .collect();
        let Some(provider) = upstream.source(&source.name) else {
            continue;
        };
        if exchanging.is_empty() {
            continue;
        }
        say!(out);
        if used.len() == 1 {
            say!(out, "Home-tenant assertion");
        } else {
            say!(out, "Home-tenant assertion · source '{}'", source.name);
        }
        let assertion = check_assertion(config, provider, &exchanging, &mut report, out).await;
        assertions.push((source.name.as_str(), assertion));
    }

    say!(out);
    if config.targets.iter().all(|t| t.exchange) {
        say!(out, "Targets (one exchange each, no retries)");
    } else {
        say!(out, "Targets (one exchange or home token each, no retries)");
    }
    let mut unchecked = false;
    for target in &config.targets {
        let Some(provider) = upstream.source(&target.source) else {
            continue;
        };
        let assertion = assertions
            .iter()
            .find(|(name, _)| *name == target.source)
            .and_then(|(_, a)| a.as_ref());
        match (assertion, target.exchange) {
            (_, false) => check_home_target(config, provider, target, &mut report, out).await,
            (Some(assertion), true) => {
                check_target(
                    config,
                    &upstream,
                    provider,
                    target,
                    assertion,
                    &mut report,
                    out,
                )
                .await
            }
            (None, true) => unchecked = true,
        }
    }
    if unchecked {
        report.fail(
            out,
            "not checked: there is no assertion to exchange (see above)",
        );
    }
    report.summary(out, config)
}
