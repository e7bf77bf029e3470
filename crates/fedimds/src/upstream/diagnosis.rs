//! What an AADSTS code means for this set-up and how to fix it, as structured parts (meaning,
//! fix, consent URL) that the 400 bodies and `fedimds check` lay out each in their own way.
//! `docs/entra-exchange.md#aadsts-codes` lists the codes with their public sources.

use std::fmt;

use url::Url;

use super::exchange::BLOCK_WAIT;
use crate::cloud::{self, CloudName};
use crate::token::Claims;

/// Every AADSTS code [`diagnose`] explains on its own; any other gets a general diagnosis.
pub const EXPLAINED: [u32; 32] = [
    700016, 70021, 700211, 700212, 700213, 7002138, 7002137, 700236, 700222, 700229, 700024,
    700027, 7000274, 7000112, 500011, 65001, 90002, 9001023, 1002012, 700022, 70011, 7000215,
    7000222, 90061, 501661, 50196, 90055, 90024, 50033, 90033, 90006, 90090,
];

/// What a diagnosis needs to know to name the exact fix.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// Entra's base URL.
    pub authority_host: &'a Url,
    /// The cloud in force (`cloud.name`).
    pub cloud: CloudName,
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

/// The tenant in an Entra issuer, `https://{host}/{tenant}/v2.0` or `https://sts.windows.net/{tenant}/`.
pub fn home_tenant(iss: &str) -> Option<String> {
    let url = Url::parse(iss).ok()?;
    let tenant = url.path_segments()?.next()?;
    (!tenant.is_empty()).then(|| tenant.to_owned())
}

/// Explains an AADSTS code for this set-up.
pub fn diagnose(code: Option<u32>, cx: &Context<'_>) -> Diagnosis {
    let host = cx.authority_host.as_str().trim_end_matches('/');
    let (iss, sub, aud) = cx.claims.map_or(("?", "?", "?"), |c| {
        (c.iss.as_str(), c.sub.as_str(), c.aud.as_str())
    });
    let (tenant, app, scope) = (cx.tenant, cx.client_id, cx.scope);
    let cloud = cx.cloud.as_str();
    let fic = format!("issuer \"{iss}\", subject \"{sub}\", audience \"{aud}\"");
    let block_min = BLOCK_WAIT.as_secs() / 60;
    let consent = || Some(cloud::consent_url(cx.authority_host, tenant, app));
    let mut consent_url = None;
    let (meaning, fix) = match code {
        Some(700016) => (
            "the app was not found in the target tenant: it has no service principal there (no admin consent).",
            {
                consent_url = consent();
                format!(
                    "have an administrator of tenant {tenant} grant consent at the consent URL; check that client_id {app} is right, that the app is multi-tenant, and that this is the right cloud ({host})."
                )
            },
        ),
        Some(70021) => (
            "no federated identity credential on the app matches the assertion.",
            format!("add a federated credential to app {app} with {fic} (exact, case-sensitive; mind a trailing '/' on the issuer). Right after adding one, allow a few minutes to propagate."),
        ),
        Some(700211) => (
            "no federated identity credential on the app has the assertion's issuer.",
            format!("set the credential's issuer to exactly \"{iss}\" on app {app} (byte for byte; for a managed identity it is {host}/{{home-tenant}}/v2.0)."),
        ),
        Some(700212) => (
            "no federated identity credential on the app has the assertion's audience.",
            {
                let want = cx.cloud.exchange_audience();
                let public = CloudName::Public.exchange_audience();
                let not_public = if cx.cloud == CloudName::Public {
                    String::new()
                } else {
                    format!(" (not the public cloud's \"{public}\", which tools and templates default to)")
                };
                format!(
                    "the {cloud} cloud's exchange audience is \"{want}\"{not_public}: give the credential on app {app} the audience \"{want}\" and ask the source for the same (source.audience, now \"{}\"; for a token file, the projected token's audience); the assertion carries \"{aud}\", and credential and assertion must carry the same value.",
                    cx.audience
                )
            },
        ),
        Some(700213) => (
            "no federated identity credential on the app has the assertion's subject.",
            format!("set the credential's subject to exactly \"{sub}\" (a managed identity's object/principal id, not its client id; or system:serviceaccount:<ns>:<sa>). If the set-up is right, this can be transient just after a change."),
        ),
        Some(7002138) => (
            "a federated credential's subject matches the assertion's only when letter case is ignored, and Entra compares subjects case-sensitively.",
            format!("set that credential's subject on app {app} to exactly \"{sub}\", in the same letter case (or fix the case where the subject is made: a namespace or service-account name); keep issuer \"{iss}\" and audience \"{aud}\"."),
        ),
        Some(7002137) => (
            "the assertion is an Entra token, and no federated credential on the app has the subject Entra requires for an Entra issuer.",
            format!("for the Entra issuer \"{iss}\", set the credential's subject on app {app} to the value Entra's description names (\"Please make sure the federated identity credential Subject is …\"), copied whole; for a managed identity it is the identity's object (principal) id, \"{sub}\" here, never its client id or its name."),
        ),
        Some(700236) | Some(700222) => (
            "Entra refused an Entra-issued assertion: it accepts an Entra token as a federated credential only on an app registered in the token's own tenant.",
            {
                let home = home_tenant(iss).unwrap_or_else(|| "(the tenant in the issuer)".to_owned());
                format!(
                    "the app (client_id {app}) must be a multi-tenant app registered in the identity's home tenant {home} (from issuer \"{iss}\"), not in tenant {tenant} or another: register one there, put the federated credential on it ({fic}), have an administrator of tenant {tenant} consent to it, and set the target's client_id to it."
                )
            },
        ),
        Some(700229) => (
            "the assertion is not an app-only token: for an Entra issuer, Entra accepts only app-only tokens as federated credentials.",
            format!("present the managed identity's own token, not a user's (this one: issuer \"{iss}\", subject \"{sub}\"): source kind imds or app-service with the user-assigned identity's client_id, or a token file that holds a workload's token, never one from a user's sign-in."),
        ),
        Some(700024) => (
            "the assertion is outside its valid time range (expired or not yet valid).",
            "fedimds fetches a fresh assertion and retries once; if this persists, check the host clock and that the token file is being rotated.".to_owned(),
        ),
        Some(700027) | Some(7000274) => (
            "the assertion's signature is invalid.",
            "the issuer's signing keys rotated or the wrong issuer is in use; fedimds retries once with a fresh assertion. Check the issuer's OIDC discovery document and JWKS are public.".to_owned(),
        ),
        Some(7000112) => (
            "the app is disabled: its service principal in the target tenant is disabled, or the app registration itself is.",
            format!("an administrator of tenant {tenant} enables app {app}'s enterprise application (Properties, \"Enabled for users to sign in?\" = Yes; or `az ad sp update --id {app} --set accountEnabled=true`); if the registration itself is disabled (by its owner, or by Microsoft: disabledByMicrosoftStatus), that is fixed in the app's home tenant."),
        ),
        Some(500011) => (
            "the resource principal was not found in the target tenant.",
            format!("check the resource in scope \"{scope}\": a typo, a resource of another cloud (this is the {cloud} cloud, Entra at {host}), or a trailing slash; the API must have a service principal in tenant {tenant} (a Microsoft API, or an app consented there)."),
        ),
        Some(65001) => (
            "consent is missing for the requested permissions.",
            {
                consent_url = consent();
                let resource = scope.strip_suffix("/.default").unwrap_or(scope);
                format!("have an administrator of tenant {tenant} grant admin consent to app {app} at the consent URL; it grants the application permissions the app's registration lists, so if none is listed for {resource}, add it to the registration first.")
            },
        ),
        Some(90002) => (
            "the target tenant was not found.",
            format!("check tenant_id \"{tenant}\" and that it belongs to this cloud ({host})."),
        ),
        Some(9001023) => (
            "common/consumers/organizations cannot be used for app tokens.",
            "set tenant_id to the target tenant's id or verified domain.".to_owned(),
        ),
        Some(1002012) | Some(700022) | Some(70011) => (
            "the scope is not valid.",
            format!("ask for one resource; fedimds sends \"{scope}\"."),
        ),
        Some(7000215) | Some(7000222) => (
            "a client secret was sent or is expired.",
            "federated credentials use no client secret; remove it.".to_owned(),
        ),
        Some(90061) => (
            "Entra could not fetch the external issuer's OIDC metadata or keys.",
            format!("the issuer \"{iss}\" must publish its discovery document and JWKS publicly."),
        ),
        Some(501661) => (
            "Entra's request to the assertion issuer's OIDC endpoint failed; this is usually transient.",
            {
                let base = iss.trim_end_matches('/');
                format!("nothing to change if it passes: fedimds retries with backoff. If it persists, check that {base}/.well-known/openid-configuration and the jwks_uri it names answer from the internet over HTTPS (not only inside a private network), quickly.")
            },
        ),
        Some(50196) => (
            "Entra detected a request loop: the same token request came too often within minutes, and Entra blocks it for a while.",
            format!("fedimds asks no more for this token (tenant {tenant}, app {app}, scope \"{scope}\"), nor for any other resource of the app in this tenant, for {block_min} min, longer while the block lasts, and answers 503 with Retry-After meanwhile (tokens it holds are still served); find what else sends this request in a loop (another fedimds, a client of app {app} without a token cache, a restart loop): a token lasts at least 10 minutes, so nothing needs it more often."),
        ),
        Some(90055) => (
            "Entra is throttling the tenant: too many requests for it (Entra also answers this for a blocked tenant).",
            format!("fedimds asks tenant {tenant} no more for this token, nor for any other resource of app {app} there, for {block_min} min, longer while it lasts, and answers 503 with Retry-After meanwhile (tokens it holds are still served); cut what is sent to Entra for tenant {tenant} (other clients of app {app} included). If it lasts for hours, the tenant may be blocked: open a Microsoft support case with the trace_id and correlation_id."),
        ),
        Some(90024) | Some(50033) | Some(90033) | Some(90006) | Some(90090) => (
            "Entra failed transiently (a service or directory error on its side).",
            "nothing to change: fedimds retries with backoff. If it persists, check the Azure status page and give Microsoft support the trace_id and correlation_id.".to_owned(),
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

    fn context<'a>(host: &'a Url, cloud: CloudName, claims: Option<&'a Claims>) -> Context<'a> {
        Context {
            authority_host: host,
            cloud,
            tenant: "t1",
            client_id: "app1",
            scope: "https://vault.azure.net/.default",
            claims,
            audience: "api://AzureADTokenExchange",
        }
    }

    #[test]
    fn consent_diagnosis_has_url() {
        let host = Url::parse("https://login.microsoftonline.com").unwrap();
        let cx = context(&host, CloudName::Public, None);
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

    #[test]
    fn every_explained_code_has_its_own_diagnosis() {
        let host = Url::parse("https://login.microsoftonline.com").unwrap();
        let cx = context(&host, CloudName::Public, None);
        let general = diagnose(Some(1), &cx).meaning;
        for code in EXPLAINED {
            let d = diagnose(Some(code), &cx);
            assert_ne!(d.meaning, general, "AADSTS{code}");
            assert!(d.to_string().starts_with(&format!("AADSTS{code}: ")));
        }
    }

    #[test]
    fn a_sovereign_audience_is_named_for_its_cloud() {
        let host = Url::parse("https://login.microsoftonline.us").unwrap();
        let claims = Claims {
            iss: "https://login.microsoftonline.us/home/v2.0".to_owned(),
            sub: "oid".to_owned(),
            aud: "api://AzureADTokenExchange".to_owned(),
            exp: None,
        };
        let fix = diagnose(
            Some(700212),
            &context(&host, CloudName::UsGov, Some(&claims)),
        )
        .fix;
        assert!(
            fix.starts_with(
                "the usgov cloud's exchange audience is \"api://AzureADTokenExchangeUSGov\" (not \
                 the public cloud's \"api://AzureADTokenExchange\""
            ),
            "{fix}"
        );
        let public = Url::parse("https://login.microsoftonline.com").unwrap();
        let fix = diagnose(
            Some(700212),
            &context(&public, CloudName::Public, Some(&claims)),
        )
        .fix;
        assert!(!fix.contains("not the public cloud's"), "{fix}");
    }

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
