//! The Entra client: presents the assertion as `client_assertion` for a target-tenant token,
//! and turns Entra's rejections (AADSTS codes) into a diagnosis a person can act on.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::time::Instant;
use url::Url;

use crate::assertion::NumberOrString;
use crate::metrics::{Metrics, UpstreamName};
use crate::retry::{self, Transience};
use crate::token::{AccessToken, Claims, Secret};

const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The v2 scope for a v1 resource: `/.default` appended verbatim, so a resource ending in `/`
/// (ARM's `https://management.core.windows.net/`) gives `…//.default`, as Entra expects.
pub fn scope_for(resource: &str) -> String {
    format!("{resource}/.default")
}

/// What Entra said when it refused a token.
#[derive(Debug, Clone)]
pub struct Rejection {
    /// HTTP status (400 or 401).
    pub status: u16,
    /// The OAuth `error` class.
    pub error: String,
    /// The first AADSTS code.
    pub code: Option<u32>,
    /// Entra's `error_description` (for humans; never branched on).
    pub description: String,
    /// For Microsoft support.
    pub trace_id: String,
    /// For Microsoft support.
    pub correlation_id: String,
}

/// Why the exchange failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ExchangeError {
    /// Entra refused the request (a 4xx with its error JSON).
    #[error("Entra refused the token request: {}", .0.summary())]
    Rejected(Rejection),
    /// Entra answered 429 or 5xx.
    #[error("Entra answered HTTP {status}: {detail}")]
    Unavailable {
        /// HTTP status.
        status: u16,
        /// Its error text.
        detail: String,
        /// Its Retry-After.
        retry_after: Option<Duration>,
    },
    /// Entra could not be reached in time.
    #[error("Entra could not be reached: {detail}")]
    Unreachable {
        /// What failed.
        detail: String,
    },
    /// A 200 without a usable token, or another status without Entra's error JSON.
    #[error("Entra sent an unusable answer (HTTP {status}): {detail}")]
    Malformed {
        /// HTTP status.
        status: u16,
        /// What was wrong.
        detail: String,
    },
}

/// AADSTS codes that clear up after a short while (throttling, service trouble).
const TRANSIENT_CODES: [u32; 7] = [90055, 90024, 50033, 90033, 90006, 90090, 90061];

impl ExchangeError {
    /// Whether trying again may succeed.
    pub fn transience(&self) -> Transience {
        match self {
            ExchangeError::Rejected(r)
                if r.error == "temporarily_unavailable"
                    || r.code.is_some_and(|c| TRANSIENT_CODES.contains(&c)) =>
            {
                Transience::Transient { retry_after: None }
            }
            ExchangeError::Rejected(_) | ExchangeError::Malformed { .. } => Transience::Permanent,
            ExchangeError::Unavailable { retry_after, .. } => Transience::Transient {
                retry_after: *retry_after,
            },
            ExchangeError::Unreachable { .. } => Transience::Transient { retry_after: None },
        }
    }

    /// The AADSTS code, when Entra gave one.
    pub fn code(&self) -> Option<u32> {
        match self {
            ExchangeError::Rejected(r) => r.code,
            _ => None,
        }
    }
}

impl Rejection {
    fn summary(&self) -> String {
        let first_line = self.description.lines().next().unwrap_or_default();
        format!(
            "{} ({first_line}) [trace_id {}, correlation_id {}]",
            self.error, self.trace_id, self.correlation_id
        )
    }
}

/// The Entra v2 token endpoint of one cloud.
#[derive(Debug, Clone)]
pub struct Exchange {
    http: reqwest::Client,
    authority_host: Url,
    metrics: Arc<Metrics>,
}

/// What an exchange is for.
#[derive(Debug, Clone, Copy)]
pub struct ExchangeRequest<'a> {
    /// The target tenant.
    pub tenant: &'a str,
    /// The multi-tenant app.
    pub client_id: &'a str,
    /// `{resource}/.default`.
    pub scope: &'a str,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    token_type: Option<String>,
    expires_in: NumberOrString,
    refresh_in: Option<NumberOrString>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ErrorResponse {
    error: String,
    error_description: String,
    error_codes: Vec<u32>,
    trace_id: String,
    correlation_id: String,
}

impl Exchange {
    /// A client for Entra at `authority_host`.
    pub fn new(http: reqwest::Client, authority_host: Url, metrics: Arc<Metrics>) -> Self {
        Exchange {
            http,
            authority_host,
            metrics,
        }
    }

    /// Entra's base URL.
    pub fn authority_host(&self) -> &Url {
        &self.authority_host
    }

    /// One exchange attempt, retried on 429/5xx/timeouts per [`retry::ENTRA_SCHEDULE`].
    pub async fn token(
        &self,
        req: ExchangeRequest<'_>,
        assertion: &Secret,
    ) -> Result<AccessToken, ExchangeError> {
        retry::run(
            retry::ENTRA_SCHEDULE,
            |_| self.token_once(req, assertion),
            ExchangeError::transience,
        )
        .await
    }

    /// A single request to Entra, no retries, measured.
    pub async fn token_once(
        &self,
        req: ExchangeRequest<'_>,
        assertion: &Secret,
    ) -> Result<AccessToken, ExchangeError> {
        let started = Instant::now();
        let result = self.token_once_unmeasured(req, assertion).await;
        self.metrics
            .upstream(UpstreamName::Entra, result.is_ok(), started.elapsed());
        result
    }

    async fn token_once_unmeasured(
        &self,
        req: ExchangeRequest<'_>,
        assertion: &Secret,
    ) -> Result<AccessToken, ExchangeError> {
        let mut url = self.authority_host.clone();
        url.path_segments_mut()
            .map_err(|()| ExchangeError::Malformed {
                status: 0,
                detail: "authority host cannot be a base URL".to_owned(),
            })?
            .pop_if_empty()
            .extend([req.tenant, "oauth2", "v2.0", "token"]);
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", req.client_id),
            ("scope", req.scope),
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", assertion.expose()),
        ];
        let sent_at = Instant::now();
        let response = self
            .http
            .post(url)
            .form(&form)
            // Tells Entra we honour 429 + Retry-After, so it throttles us rather than failing
            // a loop with invalid_grant.
            .header("x-ms-lib-capability", "retry-after, h429")
            .header("return-client-request-id", "true")
            .send()
            .await
            .map_err(|e| ExchangeError::Unreachable {
                detail: retry::describe(&e),
            })?;
        let status = response.status().as_u16();
        let retry_after = retry::retry_after(response.headers());
        let body = response
            .bytes()
            .await
            .map_err(|e| ExchangeError::Unreachable {
                detail: retry::describe(&e),
            })?;
        if status == 200 {
            return parse_token(&body, sent_at).ok_or_else(|| ExchangeError::Malformed {
                status,
                detail: "a 200 answer without access_token and expires_in".to_owned(),
            });
        }
        if status == 408 || status == 429 || status >= 500 {
            return Err(ExchangeError::Unavailable {
                status,
                detail: retry::error_text(&body),
                retry_after,
            });
        }
        match serde_json::from_slice::<ErrorResponse>(&body) {
            Ok(e) if !e.error.is_empty() => Err(ExchangeError::Rejected(Rejection {
                status,
                code: e
                    .error_codes
                    .first()
                    .copied()
                    .or_else(|| code_in(&e.error_description)),
                error: e.error,
                description: e.error_description,
                trace_id: e.trace_id,
                correlation_id: e.correlation_id,
            })),
            _ => Err(ExchangeError::Malformed {
                status,
                detail: retry::error_text(&body),
            }),
        }
    }
}

fn parse_token(body: &[u8], sent_at: Instant) -> Option<AccessToken> {
    let r: TokenResponse = serde_json::from_slice(body).ok()?;
    if r.access_token.is_empty()
        || !r
            .token_type
            .as_deref()
            .unwrap_or("Bearer")
            .eq_ignore_ascii_case("bearer")
    {
        return None;
    }
    let expires_in = Duration::from_secs(r.expires_in.as_u64()?);
    let refresh_in = r
        .refresh_in
        .and_then(|v| v.as_u64())
        .map(Duration::from_secs);
    Some(AccessToken::new(
        Secret::new(r.access_token),
        sent_at,
        expires_in,
        refresh_in,
    ))
}

/// `AADSTS700016: …` → 700016, for answers that carry no `error_codes`.
fn code_in(description: &str) -> Option<u32> {
    let rest = description.strip_prefix("AADSTS")?;
    rest[..rest.find(|c: char| !c.is_ascii_digit())?]
        .parse()
        .ok()
}

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
    /// The exact fix, with this set-up's values filled in.
    pub fix: String,
}

impl fmt::Display for Diagnosis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.code {
            Some(code) => write!(f, "AADSTS{code}: {} Fix: {}", self.meaning, self.fix),
            None => write!(f, "{} Fix: {}", self.meaning, self.fix),
        }
    }
}

/// Explains an AADSTS code for this set-up (`entra-exchange.md` §2.2).
pub fn diagnose(code: Option<u32>, cx: &Context<'_>) -> Diagnosis {
    let host = cx.authority_host.as_str().trim_end_matches('/');
    let (iss, sub, aud) = cx.claims.map_or(("?", "?", "?"), |c| {
        (c.iss.as_str(), c.sub.as_str(), c.aud.as_str())
    });
    let fic = format!("issuer \"{iss}\", subject \"{sub}\", audience \"{aud}\"");
    let consent_url = format!(
        "{host}/{}/adminconsent?client_id={}",
        cx.tenant, cx.client_id
    );
    let (meaning, fix) = match code {
        Some(700016) => (
            "the app was not found in the target tenant: it has no service principal there (no admin consent).",
            format!(
                "have an administrator of tenant {} grant consent at {consent_url} ; check that client_id {} is right, that the app is multi-tenant, and that this is the right cloud ({host}).",
                cx.tenant, cx.client_id
            ),
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
            format!("grant admin consent at {consent_url} ."),
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
    Diagnosis { code, meaning, fix }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_keeps_trailing_slash() {
        assert_eq!(
            scope_for("https://management.core.windows.net/"),
            "https://management.core.windows.net//.default"
        );
        assert_eq!(
            scope_for("https://vault.azure.net"),
            "https://vault.azure.net/.default"
        );
    }

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
        let d = diagnose(Some(700016), &cx).to_string();
        assert!(d.contains("AADSTS700016"), "{d}");
        assert!(
            d.contains("https://login.microsoftonline.com/t1/adminconsent?client_id=app1"),
            "{d}"
        );
    }

    #[test]
    fn code_from_description() {
        assert_eq!(code_in("AADSTS700016: Application not found"), Some(700016));
        assert_eq!(code_in("nothing"), None);
    }

    #[test]
    fn token_parsing_is_lenient_on_number_types() {
        let t = parse_token(
            br#"{"access_token":"a","token_type":"Bearer","expires_in":"3599"}"#,
            Instant::now(),
        )
        .unwrap();
        assert_eq!(t.lifetime, Duration::from_secs(3599));
        assert!(parse_token(
            br#"{"access_token":"a","token_type":"pop","expires_in":1}"#,
            Instant::now()
        )
        .is_none());
        assert!(
            parse_token(br#"{"token_type":"Bearer","expires_in":1}"#, Instant::now()).is_none()
        );
    }
}
