//! One exchange per target, no retries: the token's lifetime and fingerprint, or Entra's
//! answer with its diagnosis.

use std::io::Write;

use super::report::{duration, field, or_none, Report, KEY_WIDTH};
use crate::cloud::CloudName;
use crate::config::{Config, Target};
use crate::token::Claims;
use crate::upstream::assertion::{Assertion, AssertionProvider};
use crate::upstream::diagnosis::home_tenant;
use crate::upstream::exchange::{self, ExchangeError, ExchangeRequest, Turn};
use crate::upstream::Upstream;

pub(super) async fn check_target(
    config: &Config,
    upstream: &Upstream,
    provider: &AssertionProvider,
    target: &Target,
    assertion: &Assertion,
    report: &mut Report,
    out: &mut impl Write,
) {
    let (resource, why) = resource_for(target, config.cloud.name);
    let scope = exchange::scope_for(resource);
    let req = ExchangeRequest {
        claims: None,
        tenant: &target.tenant_id,
        client_id: &target.client_id,
        scope: &scope,
    };
    let outcome = upstream
        .exchange
        .token_once(req, &assertion.token, Turn::Until(None))
        .await;
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
            let d = upstream.diagnose(r.code, req, Some(&assertion.claims), provider);
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
        ExchangeError::Proxy { proxy, .. } => {
            field(out, 6, "error", &error);
            field(
                out,
                6,
                "fix",
                format!(
                    "check the proxy at {proxy} (upstream.entra_proxy): that it runs, lets this \
                     host through, and allows CONNECT to {}",
                    config.cloud.authority_host.host_str().unwrap_or_default()
                ),
            );
        }
        // check waits for its turn as long as it takes, so this is never its answer.
        ExchangeError::Malformed { .. } | ExchangeError::OverBudget { .. } => {
            field(out, 6, "error", &error)
        }
    }
}

/// A home-identity target (`exchange = false`): the source's own token for the target's
/// resource, its issuer's tenant beside the configured `tenant_id`.
pub(super) async fn check_home_target(
    config: &Config,
    provider: &AssertionProvider,
    target: &Target,
    report: &mut Report,
    out: &mut impl Write,
) {
    let (resource, why) = resource_for(target, config.cloud.name);
    let outcome = provider.home_token(resource, None).await;
    report.target(out, &target.name, outcome.is_ok());
    field(
        out,
        6,
        "kind",
        "home identity's own token (exchange = false): no exchange, served to any caller that may use this target",
    );
    field(out, 6, "tenant", format!("{} (home)", target.tenant_id));
    field(
        out,
        6,
        "identity",
        format!("{} (source '{}')", target.client_id, target.source),
    );
    field(out, 6, "resource", format!("{resource} ({why})"));
    match outcome {
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
            let claims = Claims::peek(token.secret.expose()).unwrap_or_default();
            if let Some(tenant) = home_tenant(&claims.iss) {
                if !tenant.eq_ignore_ascii_case(&target.tenant_id) {
                    report.warn_at(
                        out,
                        6,
                        format!(
                            "the token's issuer is tenant {tenant}, not tenant_id {}: set tenant_id to the identity's home tenant, so audit lines and grants name the tenant served",
                            target.tenant_id
                        ),
                    );
                }
            }
        }
        Err(e) => {
            field(out, 6, "error", &e);
            if let Some(hint) = super::assertion::assertion_hint(&e, provider.source()) {
                field(out, 6, "fix", hint);
            }
        }
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
