//! The first step: get the home-tenant assertion from its source and show its claims beside
//! the federated credential the app needs, flagging the known traps before Entra is asked.

use std::io::Write;
use std::time::Duration;

use super::report::{date, field, time_left, wrapped, Report};
use crate::cloud::CloudName;
use crate::config::{Config, Source, SourceKind, Target};
use crate::token::{unix_now, Claims};
use crate::upstream::assertion::{self, Assertion, AssertionError, AssertionProvider};
use crate::upstream::diagnosis::home_tenant;

/// An assertion this close to expiry is worth a warning: fedimds refuses to present one with
/// less than [`assertion::MIN_REMAINING`] left, so this warns before that starts to bite.
const EXPIRY_WARNING: Duration = Duration::from_secs(2 * assertion::MIN_REMAINING.as_secs());
/// AKS's OIDC issuers live under this host suffix and always end in `/`.
const AKS_ISSUER_HOST: &str = ".oic.prod-aks.azure.com";
/// The prefix of a Kubernetes service-account subject.
const K8S_SUBJECT_PREFIX: &str = "system:serviceaccount:";

/// `source`'s assertion, for the exchanging `targets` that use it.
pub(super) async fn check_assertion(
    config: &Config,
    provider: &AssertionProvider,
    targets: &[&Target],
    report: &mut Report,
    out: &mut impl Write,
) -> Option<Assertion> {
    let source = provider.source();
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

    let assertion = match provider.get(None).await {
        Ok(a) => a,
        Err(e) => {
            report.fail(out, &e);
            if let Some(hint) = assertion_hint(&e, source) {
                field(out, 4, "fix", hint);
            }
            return None;
        }
    };
    report.pass(
        out,
        format!(
            "fetched from {} (fingerprint {})",
            match source.kind {
                SourceKind::Imds { .. } => "IMDS".to_owned(),
                _ => format!("the {}", provider.source_name()),
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
    let apps = apps_and_targets(targets);
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
pub(super) fn assertion_hint(error: &AssertionError, source: &Source) -> Option<String> {
    let client_id = match &source.kind {
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
        AssertionError::Unreachable { .. } => match &source.kind {
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
        // check waits for its turn as long as it takes: this is never its answer.
        AssertionError::OverBudget { .. } => return None,
    })
}

/// `app X (a, b) and app Y (c)`: each distinct app with the targets that use it.
fn apps_and_targets(targets: &[&Target]) -> String {
    let mut apps: Vec<(&str, Vec<&str>)> = Vec::new();
    for t in targets.iter().filter(|t| t.exchange) {
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
