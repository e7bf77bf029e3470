//! What an AADSTS code means for this set-up and how to fix it, as structured parts (meaning,
//! fix, consent URL) that the 400 bodies and `fedimds check` lay out each in their own way.
//! `docs/entra-exchange.md#aadsts-codes` lists the codes with their public sources.

use std::fmt;

use url::Url;

use crate::cloud;
use crate::token::Claims;

/// What a diagnosis needs to know to name the exact fix.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// Entra's base URL.
    pub authority_host: &'a Url,
    /// The target tenant.
    pub tenant: &'a str,
    /// The multi-tenant app.
    pub client_id: &'a str,
    /// The scope asked for.
    pub scope: &'a str,
    /// The assertion's claims, when known.
    pub claims: Option<&'a Claims>,
    /// The audience the source is asked for.
    pub audience: &'a str,
}

/// An AADSTS code explained: what it means and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnosis {
    /// The code.
    pub code: Option<u32>,
    /// What it means, in a sentence.
    pub meaning: &'static str,
    /// The exact fix, with this set-up's values filled in. When the fix is an admin consent,
    /// it speaks of "the consent URL" and [`Diagnosis::consent_url`] holds it.
    pub fix: String,
    /// The admin-consent URL to open, when consent is the fix.
    pub consent_url: Option<String>,
}

impl fmt::Display for Diagnosis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(code) = self.code {
            write!(f, "AADSTS{code}: ")?;
        }
        write!(f, "{} Fix: {}", self.meaning, self.fix)?;
        match &self.consent_url {
            Some(url) => write!(f, " Consent URL: {url}"),
            None => Ok(()),
        }
    }
}

/// Explains an AADSTS code for this set-up.
pub fn diagnose(code: Option<u32>, cx: &Context<'_>) -> Diagnosis {
    let host = cx.authority_host.as_str().trim_end_matches('/');
    let (iss, sub, aud) = cx.claims.map_or(("?", "?", "?"), |c| {
        (c.iss.as_str(), c.sub.as_str(), c.aud.as_str())
    });
    let fic = format!("issuer \"{iss}\", subject \"{sub}\", audience \"{aud}\"");
    let consent = || {
        Some(cloud::consent_url(
            cx.authority_host,
            cx.tenant,
            cx.client_id,
        ))
    };
    let mut consent_url = None;
    let (meaning, fix) = match code {
        Some(700016) => (
            "the app was not found in the target tenant: it has no service principal there (no admin consent).",
            {
                consent_url = consent();
                format!(
                    "have an administrator of tenant {} grant consent at the consent URL; check that client_id {} is right, that the app is multi-tenant, and that this is the right cloud ({host}).",
                    cx.tenant, cx.client_id
                )
            },
        ),
        Some(70021) => (
            "no federated identity credential on the app matches the assertion.",
            format!("add a federated credential to app {} with {fic} (exact, case-sensitive; mind a trailing '/' on the issuer). Right after adding one, allow a few minutes to propagate.", cx.client_id),
        ),
        Some(700211) => (
            "no federated identity credential on the app has the assertion's issuer.",
            format!("set the credential's issuer to exactly \"{iss}\" on app {} (byte for byte; for a managed identity it is {host}/{{home-tenant}}/v2.0).", cx.client_id),
        ),
        Some(700212) => (
            "no federated identity credential on the app has the assertion's audience.",
            format!("the credential's audience and the source's audience must be the same value: the assertion carries \"{aud}\", fedimds asks for \"{}\" (source.audience); use {fic}.", cx.audience),
        ),
        Some(700213) => (
            "no federated identity credential on the app has the assertion's subject.",
            format!("set the credential's subject to exactly \"{sub}\" (a managed identity's object/principal id, not its client id; or system:serviceaccount:<ns>:<sa>). If the set-up is right, this can be transient just after a change."),
        ),
        Some(700236) | Some(700222) => (
            "an Entra token was presented to an app registered in another tenant.",
            "register the multi-tenant app in the managed identity's home tenant, put the federated credential there, and provision (consent) the app into the target tenant.".to_owned(),
        ),
        Some(700229) => (
            "a delegated (user) token was presented as the assertion.",
            "use the managed identity's app-only token as the assertion.".to_owned(),
        ),
        Some(700024) => (
            "the assertion is outside its valid time range (expired or not yet valid).",
            "fedimds fetches a fresh assertion and retries once; if this persists, check the host clock and that the token file is being rotated.".to_owned(),
        ),
        Some(700027) | Some(7000274) => (
            "the assertion's signature is invalid.",
            "the issuer's signing keys rotated or the wrong issuer is in use; fedimds retries once with a fresh assertion. Check the issuer's OIDC discovery document and JWKS are public.".to_owned(),
        ),
        Some(500011) => (
            "the resource principal was not found in the target tenant.",
            format!("check the resource in scope \"{}\": a typo, a resource of another cloud, or a trailing slash; the API must exist in tenant {}.", cx.scope, cx.tenant),
        ),
        Some(65001) => (
            "consent is missing for the requested permissions.",
            {
                consent_url = consent();
                "have an administrator of the tenant grant admin consent at the consent URL.".to_owned()
            },
        ),
        Some(90002) => (
            "the target tenant was not found.",
            format!("check tenant_id \"{}\" and that it belongs to this cloud ({host}).", cx.tenant),
        ),
        Some(9001023) => (
            "common/consumers/organizations cannot be used for app tokens.",
            "set tenant_id to the target tenant's id or verified domain.".to_owned(),
        ),
        Some(1002012) | Some(700022) | Some(70011) => (
            "the scope is not valid.",
            format!("ask for one resource; fedimds sends \"{}\".", cx.scope),
        ),
        Some(7000215) | Some(7000222) => (
            "a client secret was sent or is expired.",
            "federated credentials use no client secret; remove it.".to_owned(),
        ),
        Some(90061) => (
            "Entra could not fetch the external issuer's OIDC metadata or keys.",
            format!("the issuer \"{iss}\" must publish its discovery document and JWKS publicly."),
        ),
        Some(50196) => (
            "Entra detected a request loop (too many identical requests).",
            "wait a few minutes; fedimds caches tokens, so check nothing else is requesting the same token in a loop.".to_owned(),
        ),
        _ => (
            "Entra refused the request.",
            "read Entra's description and the trace_id/correlation_id in the log; `fedimds check` walks the chain.".to_owned(),
        ),
    };
    Diagnosis {
        code,
        meaning,
        fix,
        consent_url,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consent_diagnosis_has_url() {
        let host = Url::parse("https://login.microsoftonline.com").unwrap();
        let cx = Context {
            authority_host: &host,
            tenant: "t1",
            client_id: "app1",
            scope: "s",
            claims: None,
            audience: "api://AzureADTokenExchange",
        };
        let diagnosis = diagnose(Some(700016), &cx);
        assert_eq!(
            diagnosis.consent_url.as_deref(),
            Some("https://login.microsoftonline.com/t1/adminconsent?client_id=app1")
        );
        assert!(diagnose(Some(70021), &cx).consent_url.is_none());
        let d = diagnosis.to_string();
        assert!(d.contains("AADSTS700016"), "{d}");
        assert!(
            d.contains("https://login.microsoftonline.com/t1/adminconsent?client_id=app1"),
            "{d}"
        );
    }
}
