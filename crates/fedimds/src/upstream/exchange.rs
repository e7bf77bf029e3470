//! The Entra client: presents the assertion as `client_assertion` for a target-tenant token,
//! and reads Entra's answer (a token, or a rejection with its AADSTS code; [`super::diagnosis`]
//! explains the code).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use url::Url;

use super::budget::Budgets;
use super::wire::{ErrorResponse, TokenResponse};
use crate::config::MIN_TOKEN_LIFETIME;
use crate::metrics::{Metrics, UpstreamName};
use crate::retry::{self, Transience};
use crate::token::{AccessToken, Secret};

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
    /// The proxy of Entra calls (`upstream.entra_proxy`) refused or could not be reached.
    #[error(
        "Entra could not be reached through the proxy {proxy}: {detail}; check that the proxy \
         is running, that it allows this host and CONNECT to Entra's host on port 443, and, if it \
         asks for credentials, that upstream.entra_proxy carries the right ones"
    )]
    Proxy {
        /// The proxy's `host:port` (never its credentials).
        proxy: String,
        /// What failed.
        detail: String,
        /// Whether it said no (a 403 or 407: asking again gets the same answer) rather than
        /// failed (no connection: it may be back soon).
        refused: bool,
    },
    /// fedimds's own budget of Entra calls has no turn free before the caller's deadline: the
    /// call was not made. Never retried within the exchange (waiting is what was refused).
    #[error("no turn is free in fedimds's budget of Entra calls before this request's deadline; the next comes in {} s", .wait.as_secs().max(1))]
    OverBudget {
        /// Until the next turn would come.
        wait: Duration,
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

/// AADSTS codes that clear up after a short while (service trouble, an issuer's endpoint that
/// Entra could not reach: 90061 and 501661).
const TRANSIENT_CODES: [u32; 7] = [90024, 50033, 90033, 90006, 90090, 90061, 501661];

/// AADSTS codes by which Entra blocks requests for a while: 50196, a request loop (the same
/// request too often within minutes), and 90055, a throttled or blocked tenant. Asking again
/// soon prolongs the block (`docs/entra-exchange.md#entra-retries`), so these are transient
/// with a wait of [`BLOCK_WAIT`], longer than any retry schedule's deadline: the exchange is
/// not retried, and the failure is remembered ([`crate::upstream::failure_ttl`]).
pub const BLOCK_CODES: [u32; 2] = [50196, 90055];

/// How long a block is waited out before its key asks Entra again (doubled while it lasts):
/// Entra counts a loop over about 5 minutes.
pub const BLOCK_WAIT: Duration = Duration::from_secs(300);

impl ExchangeError {
    /// Whether trying again may succeed.
    pub fn transience(&self) -> Transience {
        match self {
            ExchangeError::Rejected(_) if self.is_block() => Transience::Transient {
                retry_after: Some(BLOCK_WAIT),
            },
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
            ExchangeError::OverBudget { wait } => Transience::Transient {
                retry_after: Some(*wait),
            },
            ExchangeError::Proxy { refused: true, .. } => Transience::Permanent,
            ExchangeError::Proxy { refused: false, .. } => {
                Transience::Transient { retry_after: None }
            }
        }
    }

    /// Whether Entra blocks this request for a while ([`BLOCK_CODES`]).
    pub fn is_block(&self) -> bool {
        self.code().is_some_and(|c| BLOCK_CODES.contains(&c))
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
    /// The proxy's `host:port`, when Entra calls go through one.
    proxy: Option<String>,
    metrics: Arc<Metrics>,
    budgets: Arc<Budgets>,
}

/// How a call to Entra takes its turn in the budget.
#[derive(Debug, Clone, Copy)]
pub enum Turn {
    /// Already taken (the cache takes a cold miss's first turn before it waits for a place
    /// among the fetches, so a turn past the deadline is refused at once).
    Taken,
    /// Wait for one, at most until the deadline (`None`: as long as it takes).
    Until(Option<Instant>),
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
    /// The `claims` parameter (client capabilities), if any.
    pub claims: Option<&'a str>,
}

impl Exchange {
    /// A client for Entra at `authority_host`.
    pub fn new(
        http: reqwest::Client,
        authority_host: Url,
        proxy: Option<String>,
        metrics: Arc<Metrics>,
        budgets: Arc<Budgets>,
    ) -> Self {
        Exchange {
            http,
            authority_host,
            proxy,
            metrics,
            budgets,
        }
    }

    /// The proxy's `host:port`, when Entra calls go through one.
    pub fn proxy(&self) -> Option<&str> {
        self.proxy.as_deref()
    }

    /// A transport error in words: through a proxy, a failed connection is the proxy's (every
    /// connection goes to it), and a refused CONNECT shows as a tunnel error.
    fn unreachable(&self, e: &reqwest::Error) -> ExchangeError {
        let detail = retry::describe(e);
        match &self.proxy {
            Some(proxy) if e.is_connect() => {
                let refused = detail.contains("tunnel");
                ExchangeError::Proxy {
                    proxy: proxy.clone(),
                    detail: if refused {
                        format!("the proxy refused the CONNECT ({detail})")
                    } else {
                        format!("no connection to the proxy ({detail})")
                    },
                    refused,
                }
            }
            _ => ExchangeError::Unreachable { detail },
        }
    }

    /// Entra's base URL.
    pub fn authority_host(&self) -> &Url {
        &self.authority_host
    }

    /// A token for `req`: the exchange, retried on 429/5xx/timeouts per
    /// [`retry::ENTRA_SCHEDULE`]; the first attempt takes `turn`, each retry waits for one
    /// until the deadline.
    pub async fn token(
        &self,
        req: ExchangeRequest<'_>,
        assertion: &Secret,
        turn: Turn,
    ) -> Result<AccessToken, ExchangeError> {
        let deadline = match turn {
            Turn::Taken => None,
            Turn::Until(deadline) => deadline,
        };
        retry::run(
            retry::ENTRA_SCHEDULE,
            |n| {
                let turn = if n == 0 { turn } else { Turn::Until(deadline) };
                self.token_once(req, assertion, turn)
            },
            // A turn refused is not retried: waiting longer is what the budget refused.
            |e| match e {
                ExchangeError::OverBudget { .. } => Transience::Permanent,
                e => e.transience(),
            },
        )
        .await
    }

    /// A single request to Entra, no retries, measured, once it has its turn in the budget.
    pub async fn token_once(
        &self,
        req: ExchangeRequest<'_>,
        assertion: &Secret,
        turn: Turn,
    ) -> Result<AccessToken, ExchangeError> {
        if let Turn::Until(deadline) = turn {
            self.budgets
                .entra
                .turn(deadline)
                .await
                .map_err(|wait| ExchangeError::OverBudget { wait })?;
        }
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
        let mut form = vec![
            ("grant_type", "client_credentials"),
            ("client_id", req.client_id),
            ("scope", req.scope),
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", assertion.expose()),
        ];
        if let Some(claims) = req.claims {
            form.push(("claims", claims));
        }
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
            .map_err(|e| self.unreachable(&e))?;
        let status = response.status().as_u16();
        let retry_after = retry::retry_after(response.headers());
        // A proxy's 407 (only ever a proxy's) may come with a body it does not finish
        // (tinyproxy closes the connection), and a 403 from it too: the status says enough.
        let refusal = |detail: String| {
            self.proxy.as_ref().map(|proxy| ExchangeError::Proxy {
                proxy: proxy.clone(),
                detail: format!("the proxy answered HTTP {status}{detail}"),
                refused: true,
            })
        };
        if status == 407 {
            if let Some(e) = refusal(" (it asks for credentials)".to_owned()) {
                return Err(e);
            }
        }
        let body = retry::body(response).await.map_err(|e| match e {
            retry::BodyError::Transport(_) if status == 403 && self.proxy.is_some() => {
                refusal(String::new()).unwrap_or(ExchangeError::Unreachable {
                    detail: "unreachable".to_owned(),
                })
            }
            retry::BodyError::Transport(detail) => ExchangeError::Unreachable { detail },
            retry::BodyError::TooLarge(detail) => ExchangeError::Malformed { status, detail },
        })?;
        if status == 200 {
            return parse_token(&body, sent_at).ok_or_else(|| ExchangeError::Malformed {
                status,
                detail: format!(
                    "a 200 answer without a bearer access_token and an expires_in of at least {} s",
                    MIN_TOKEN_LIFETIME.as_secs()
                ),
            });
        }
        // A proxy that forwards plain requests (an http:// Entra) refuses with its own page:
        // 407 is only ever a proxy's, and a 403 without Entra's error JSON is the proxy's too.
        if let Some(proxy) = &self.proxy {
            let entra_json =
                serde_json::from_slice::<ErrorResponse>(&body).is_ok_and(|e| !e.error.is_empty());
            if status == 407 || (status == 403 && !entra_json) {
                return Err(ExchangeError::Proxy {
                    proxy: proxy.clone(),
                    detail: format!(
                        "the proxy answered HTTP {status}: {}",
                        retry::error_text(&body)
                    ),
                    refused: true,
                });
            }
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
    // A token that would expire before it could be served is no token: refused as malformed,
    // so the failure is remembered rather than fetched again on every request.
    if expires_in < MIN_TOKEN_LIFETIME {
        return None;
    }
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

    fn rejected(code: u32) -> ExchangeError {
        ExchangeError::Rejected(Rejection {
            status: 400,
            error: "invalid_grant".to_owned(),
            code: Some(code),
            description: String::new(),
            trace_id: String::new(),
            correlation_id: String::new(),
        })
    }

    #[test]
    fn blocks_wait_longer_than_any_retry_and_transient_codes_retry() {
        for code in BLOCK_CODES {
            assert!(rejected(code).is_block(), "{code}");
            assert_eq!(
                rejected(code).transience(),
                Transience::Transient {
                    retry_after: Some(BLOCK_WAIT)
                },
                "{code}"
            );
        }
        // retry::run gives up at once on a wait past its deadline: a block is never retried
        // within an exchange.
        assert!(BLOCK_WAIT > retry::ENTRA_SCHEDULE.deadline);
        for code in [501661, 90061, 90033] {
            assert!(!rejected(code).is_block(), "{code}");
            assert_eq!(
                rejected(code).transience(),
                Transience::Transient { retry_after: None },
                "{code}"
            );
        }
        assert_eq!(rejected(700016).transience(), Transience::Permanent);
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
