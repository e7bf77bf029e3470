//! `fedimds check`: walks the chain for real, once, and says what is wrong and how to fix it.
//!
//! The config was already validated (main exits 64 otherwise). Then: the assertion source and
//! the assertion's claims, shown beside the federated identity credential (FIC) the app must
//! carry to accept them, with the known traps flagged; then one exchange per target, with no
//! retries, each reported as OK (lifetime, fingerprint) or as the diagnosis of Entra's AADSTS
//! code. Never prints a token, an assertion or a secret: only claims and fingerprints.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use crate::cloud::CloudName;
use crate::config::{Config, SourceKind, Target};
use crate::token::{unix_now, Claims};
use crate::upstream::assertion::{self, Assertion, AssertionError};
use crate::upstream::exchange::{self, ExchangeError, ExchangeRequest};
use crate::upstream::Upstream;

/// An assertion this close to expiry is worth a warning: fedimds refuses to present one with
/// less than [`assertion::MIN_REMAINING`] left, so this warns before that starts to bite.
const EXPIRY_WARNING: Duration = Duration::from_secs(2 * assertion::MIN_REMAINING.as_secs());
/// AKS's OIDC issuers live under this host suffix and always end in `/`.
const AKS_ISSUER_HOST: &str = ".oic.prod-aks.azure.com";
/// The prefix of a Kubernetes service-account subject.
const K8S_SUBJECT_PREFIX: &str = "system:serviceaccount:";

/// Writes a line; a closed stdout must not turn a check into a panic.
macro_rules! say {
    ($out:expr) => { let _ = writeln!($out); };
    ($out:expr, $($arg:tt)*) => { let _ = writeln!($out, $($arg)*); };
}

mod report;

use report::{date, duration, field, or_none, time_left, wrapped, Report, KEY_WIDTH};

/// Checks `config` read from `path`: a heading naming the file, then [`run`].
pub async fn run_file(path: &Path, config: &Config, out: &mut impl Write) -> bool {
    say!(out, "fedimds check · {}", path.display());
    run(config, out).await
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
    let upstream = match Upstream::new(config) {
        Ok(u) => u,
        Err(e) => {
            report.fail(out, format!("cannot build the HTTP client: {e}"));
            return report.summary(out, config);
        }
    };

    say!(out);
    say!(out, "Home-tenant assertion");
    let assertion = check_assertion(config, &upstream, &mut report, out).await;

    say!(out);
    say!(out, "Targets (one exchange each, no retries)");
    match &assertion {
        Some(assertion) => {
            for target in &config.targets {
                check_target(config, &upstream, target, assertion, &mut report, out).await;
            }
        }
        None => {
            report.fail(
                out,
                "not checked: there is no assertion to exchange (see above)",
            );
        }
    }
    report.summary(out, config)
}

// === the assertion ===

async fn check_assertion(
    config: &Config,
    upstream: &Upstream,
    report: &mut Report,
    out: &mut impl Write,
) -> Option<Assertion> {
    let source = &config.source;
    let system_assigned = match &source.kind {
        SourceKind::Imds {
            endpoint,
            client_id,
        } => {
            field(out, 2, "source", format!("imds at {endpoint}"));
            identity_field(out, client_id.as_deref());
            client_id.is_none()
        }
        SourceKind::AppService {
            endpoint,
            client_id,
            ..
        } => {
            field(
                out,
                2,
                "source",
                format!("app-service at {endpoint} (header set, redacted)"),
            );
            identity_field(out, client_id.as_deref());
            client_id.is_none()
        }
        SourceKind::TokenFile { path } => {
            field(out, 2, "source", format!("token-file {}", path.display()));
            false
        }
    };
    if !matches!(source.kind, SourceKind::TokenFile { .. }) {
        field(out, 2, "audience", &source.audience);
    }
    if system_assigned {
        report.warn(
            out,
            "no source.client_id: the system-assigned identity is used, and Entra accepts only \
             user-assigned identities in a federated credential; set source.client_id",
        );
    }

    let assertion = match upstream.assertion.get().await {
        Ok(a) => a,
        Err(e) => {
            report.fail(out, &e);
            if let Some(hint) = assertion_hint(&e, config) {
                field(out, 4, "fix", hint);
            }
            return None;
        }
    };
    report.pass(
        out,
        format!(
            "fetched from {} (fingerprint {})",
            match config.source.kind {
                SourceKind::Imds { .. } => "IMDS".to_owned(),
                _ => format!("the {}", upstream.assertion.source_name()),
            },
            assertion.token.fingerprint()
        ),
    );
    let claims = &assertion.claims;
    if *claims == Claims::default() {
        report.warn(
            out,
            "the assertion is not a JWT: its issuer, subject and audience cannot be shown",
        );
        return Some(assertion);
    }
    field(out, 4, "iss", &claims.iss);
    field(out, 4, "sub", &claims.sub);
    field(out, 4, "aud", &claims.aud);
    match claims.exp {
        Some(exp) => field(
            out,
            4,
            "exp",
            format!("{} ({})", date(exp), time_left(exp, unix_now())),
        ),
        None => field(out, 4, "exp", "(none)"),
    }
    warn_traps(config, claims, report, out);

    say!(out);
    say!(
        out,
        "  The app of each target must carry a federated identity credential with exactly:"
    );
    field(out, 4, "issuer", &claims.iss);
    field(out, 4, "subject", &claims.sub);
    field(out, 4, "audience", &claims.aud);
    let is_mi = !matches!(source.kind, SourceKind::TokenFile { .. });
    let apps = apps_and_targets(&config.targets);
    let home = if is_mi {
        home_tenant(&claims.iss)
    } else {
        None
    };
    let mut on = format!("on {apps}");
    if let Some(home) = home {
        on.push_str(&format!(
            ", registered in the identity's home tenant {home} (not in a target tenant)"
        ));
    }
    wrapped(out, 2, &format!("{on}."));
    if is_mi {
        wrapped(
            out,
            2,
            "The subject is the identity's object (principal) id, not its client id.",
        );
    } else if claims.sub.starts_with(K8S_SUBJECT_PREFIX) {
        wrapped(
            out,
            2,
            "The issuer is the cluster's OIDC issuer, byte for byte, with its trailing '/' if it \
             has one: a missing slash is the most common cause of AADSTS70021/700211.",
        );
    }
    Some(assertion)
}

fn identity_field(out: &mut impl Write, client_id: Option<&str>) {
    match client_id {
        Some(id) => field(out, 2, "identity", format!("user-assigned, client_id {id}")),
        None => field(out, 2, "identity", "system-assigned (no source.client_id)"),
    }
}

/// The known traps a set of claims can reveal before Entra is even asked.
fn warn_traps(config: &Config, claims: &Claims, report: &mut Report, out: &mut impl Write) {
    let expected_aud = config.cloud.name.exchange_audience();
    if claims.aud != expected_aud {
        report.warn(
            out,
            format!(
                "the audience is \"{}\", not the {} cloud's exchange audience \"{expected_aud}\": \
                 the credential must carry this exact audience, and the assertion must be asked \
                 for it (source.audience, or the token file's audience)",
                claims.aud,
                config.cloud.name.as_str()
            ),
        );
    }
    let host = url::Url::parse(&claims.iss)
        .ok()
        .and_then(|u| u.host_str().map(str::to_ascii_lowercase));
    if let Some(host) = &host {
        if host.ends_with(AKS_ISSUER_HOST) && !claims.iss.ends_with('/') {
            report.warn(
                out,
                "this AKS issuer does not end in '/', yet AKS issuers do: compare it with \
                 `az aks show --query oidcIssuerProfile.issuerUrl`; the credential's issuer must \
                 equal the token's iss exactly",
            );
        }
        if let Some(theirs) = CloudName::of_issuer_host(host) {
            if theirs != config.cloud.name {
                report.warn(
                    out,
                    format!(
                        "the issuer belongs to the {} cloud but cloud.name is {}: exchanges \
                         across clouds are not supported",
                        theirs.as_str(),
                        config.cloud.name.as_str()
                    ),
                );
            }
        }
    }
    if let Some(exp) = claims.exp {
        if exp <= unix_now() + EXPIRY_WARNING.as_secs() {
            report.warn(
                out,
                format!(
                    "the assertion expires {}: fedimds needs {} min left to present it; is the \
                     token file being rotated?",
                    time_left(exp, unix_now()),
                    assertion::MIN_REMAINING.as_secs() / 60
                ),
            );
        }
    } else {
        report.warn(out, "the assertion has no exp claim");
    }
}

/// What to do about an assertion failure.
fn assertion_hint(error: &AssertionError, config: &Config) -> Option<String> {
    let client_id = match &config.source.kind {
        SourceKind::Imds { client_id, .. } | SourceKind::AppService { client_id, .. } => {
            client_id.as_deref()
        }
        SourceKind::TokenFile { .. } => None,
    };
    Some(match error {
        AssertionError::Status { detail, .. } if detail.contains("Identity not found") => {
            match client_id {
                Some(id) => format!(
                    "no identity with client_id {id} is attached here: attach the user-assigned \
                     identity to this VM/app, or correct source.client_id"
                ),
                None => "no system-assigned identity here: attach a user-assigned identity and \
                         set source.client_id"
                    .to_owned(),
            }
        }
        AssertionError::Status {
            status: 401 | 403, ..
        } => "the identity endpoint refused the secret: check source.header ($IDENTITY_HEADER)"
            .to_owned(),
        AssertionError::Status { status, .. } if *status == 429 || *status >= 500 => {
            "the source is failing transiently; try again in a minute".to_owned()
        }
        AssertionError::Status { .. } | AssertionError::Malformed { .. } => return None,
        AssertionError::Unreachable { .. } => match &config.source.kind {
            SourceKind::Imds { .. } => "no IMDS answers here: this must run on an Azure VM, \
                                        VM scale set or AKS node (or set source.endpoint)"
                .to_owned(),
            _ => "the identity endpoint does not answer: check source.endpoint \
                  ($IDENTITY_ENDPOINT)"
                .to_owned(),
        },
        AssertionError::File { .. } => "is the projected service-account token mounted? \
                                        (source.path, or $AZURE_FEDERATED_TOKEN_FILE)"
            .to_owned(),
        AssertionError::Stale { .. } => "the token is too close to expiry: the file is not \
                                         being rotated, or the host clock is wrong"
            .to_owned(),
    })
}

// === the targets ===

async fn check_target(
    config: &Config,
    upstream: &Upstream,
    target: &Target,
    assertion: &Assertion,
    report: &mut Report,
    out: &mut impl Write,
) {
    let (resource, why) = resource_for(target, config.cloud.name);
    let scope = exchange::scope_for(resource);
    let req = ExchangeRequest {
        tenant: &target.tenant_id,
        client_id: &target.client_id,
        scope: &scope,
    };
    let outcome = upstream.exchange.token_once(req, &assertion.token).await;
    report.target(out, &target.name, outcome.is_ok());
    field(out, 6, "tenant", &target.tenant_id);
    field(out, 6, "app", &target.client_id);
    field(out, 6, "resource", format!("{resource} ({why})"));
    let error = match outcome {
        Ok(token) => {
            field(
                out,
                6,
                "token",
                format!(
                    "valid for {}, fingerprint {}",
                    duration(token.lifetime),
                    token.secret.fingerprint()
                ),
            );
            return;
        }
        Err(e) => e,
    };
    match &error {
        ExchangeError::Rejected(r) => {
            let d = upstream.diagnose(r.code, req, Some(&assertion.claims));
            let code = r.code.map_or_else(String::new, |c| format!("AADSTS{c} "));
            field(
                out,
                6,
                "error",
                format!("{code}({}, HTTP {})", r.error, r.status),
            );
            field(out, 6, "meaning", d.meaning);
            field(out, 6, "fix", &d.fix);
            if let Some(url) = &d.consent_url {
                // The URL gets a line of its own, to copy; the fix points at it.
                field(out, 6, "consent", url);
            }
            let said = r.description.lines().next().unwrap_or_default();
            field(
                out,
                6,
                "Entra",
                if said.is_empty() {
                    "(no description)"
                } else {
                    said
                },
            );
            // Microsoft support asks for these two; they are never secret.
            let pad = " ".repeat(6 + KEY_WIDTH);
            say!(out, "{pad}trace_id {}", or_none(&r.trace_id));
            say!(out, "{pad}correlation_id {}", or_none(&r.correlation_id));
        }
        ExchangeError::Unavailable { status, detail, .. } => {
            field(
                out,
                6,
                "error",
                format!("Entra answered HTTP {status}: {detail}"),
            );
            field(
                out,
                6,
                "fix",
                "Entra is throttling or failing transiently; the daemon retries with backoff. \
                 Run check again in a minute.",
            );
        }
        ExchangeError::Unreachable { detail } => {
            field(
                out,
                6,
                "error",
                format!("Entra could not be reached: {detail}"),
            );
            field(
                out,
                6,
                "fix",
                format!(
                    "check that this host can reach {} (DNS, firewall, egress proxy rules) and \
                     cloud.authority_host",
                    config.cloud.authority_host.as_str().trim_end_matches('/')
                ),
            );
        }
        ExchangeError::Malformed { .. } => field(out, 6, "error", &error),
    }
}

/// The resource a target is checked with, and why that one.
fn resource_for(target: &Target, cloud: CloudName) -> (&str, &'static str) {
    if let Some(r) = target.prefetch.first() {
        return (r, "its first prefetch");
    }
    if let Some(r) = target.resources.as_ref().and_then(|l| l.first()) {
        return (r, "the first of its resources");
    }
    (
        cloud.arm_resource(),
        "ARM: the target lists no prefetch or resources",
    )
}

/// `app X (a, b) and app Y (c)`: each distinct app with the targets that use it.
fn apps_and_targets(targets: &[Target]) -> String {
    let mut apps: Vec<(&str, Vec<&str>)> = Vec::new();
    for t in targets {
        match apps.iter_mut().find(|(app, _)| *app == t.client_id) {
            Some((_, names)) => names.push(&t.name),
            None => apps.push((&t.client_id, vec![&t.name])),
        }
    }
    let parts: Vec<String> = apps
        .iter()
        .map(|(app, names)| format!("app {app} ({})", names.join(", ")))
        .collect();
    match parts.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
        None => String::new(),
    }
}

/// The tenant in an Entra issuer, `https://{host}/{tenant}/v2.0` or `https://sts.windows.net/{tenant}/`.
fn home_tenant(iss: &str) -> Option<String> {
    let url = url::Url::parse(iss).ok()?;
    let tenant = url.path_segments()?.next()?;
    (!tenant.is_empty()).then(|| tenant.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn home_tenant_from_issuers() {
        assert_eq!(
            home_tenant("https://login.microsoftonline.com/t1/v2.0").as_deref(),
            Some("t1")
        );
        assert_eq!(
            home_tenant("https://sts.windows.net/t2/").as_deref(),
            Some("t2")
        );
    }
}
