//! The home-tenant assertion: a managed-identity token for the exchange audience (from IMDS or
//! an App Service-style endpoint) or a projected service-account token file. Fetched once,
//! cached, shared by every exchange, and replaced well before it expires.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::Mutex;
use tokio::time::Instant;

use super::budget::Budgets;
use super::wire::{MiTokenResponse, NumberOrString};
use crate::config::{Source, SourceKind};
use crate::metrics::{Metrics, UpstreamName};
use crate::retry::{self, Attempt, Transience};
use crate::token::{refresh_delay, unix_now, AccessToken, Claims, Secret};

/// An assertion is never presented with less than this left: Entra checks `exp` against its
/// own clock, and a request may spend seconds in retries.
pub const MIN_REMAINING: Duration = Duration::from_secs(300);

/// A file token that is not a JWT has no visible expiry; re-read it this often.
const OPAQUE_FILE_TTL: Duration = Duration::from_secs(300);

/// Why no assertion could be had.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AssertionError {
    /// The source answered with an error status.
    #[error("the {source_name} answered HTTP {status}: {detail}")]
    Status {
        /// Which source.
        source_name: &'static str,
        /// HTTP status.
        status: u16,
        /// The source's own error text (never a token), shortened.
        detail: String,
        /// Its Retry-After, if any.
        retry_after: Option<Duration>,
    },
    /// The source could not be reached, or did not answer in time.
    #[error("the {source_name} could not be reached: {detail}")]
    Unreachable {
        /// Which source.
        source_name: &'static str,
        /// What failed (connect, timeout), without URLs carrying secrets.
        detail: String,
    },
    /// The source answered 200 with something that is not a token.
    #[error("the {source_name} sent an unusable answer: {detail}")]
    Malformed {
        /// Which source.
        source_name: &'static str,
        /// What was wrong with it.
        detail: String,
    },
    /// The token file could not be read or is empty.
    #[error("cannot read token file {path}: {detail}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        detail: String,
        /// Missing or empty (the kubelet may be about to write it), rather than unreadable.
        transient: bool,
    },
    /// fedimds's own budget of calls to the source has no turn free before the caller's
    /// deadline: the call was not made.
    #[error("no turn is free in fedimds's budget of calls to the {source_name} before this request's deadline; the next comes in {} s", .wait.as_secs().max(1))]
    OverBudget {
        /// Which source.
        source_name: &'static str,
        /// Until the next turn would come.
        wait: Duration,
    },
    /// The token there has already expired (or nearly): the file is stale.
    #[error(
        "the assertion from the {source_name} expires in {remaining_s} s; a fresher one is needed"
    )]
    Stale {
        /// Which source.
        source_name: &'static str,
        /// Seconds it had left.
        remaining_s: u64,
    },
}

impl AssertionError {
    /// Whether trying again later may succeed (IMDS's own guidance: 404, 410, 429, 5xx, timeouts).
    pub fn transience(&self) -> Transience {
        match self {
            AssertionError::Status {
                status,
                retry_after,
                ..
            } => match status {
                404 | 408 | 410 | 429 | 500..=599 => Transience::Transient {
                    retry_after: *retry_after,
                },
                _ => Transience::Permanent,
            },
            AssertionError::OverBudget { wait, .. } => Transience::Transient {
                retry_after: Some(*wait),
            },
            AssertionError::Unreachable { .. } | AssertionError::Stale { .. } => {
                Transience::Transient { retry_after: None }
            }
            // A token file is written by the kubelet; a missing or empty one usually appears
            // soon. Permission and type errors do not fix themselves.
            AssertionError::File {
                transient: true, ..
            } => Transience::Transient { retry_after: None },
            AssertionError::File { .. } => Transience::Permanent,
            AssertionError::Malformed { .. } => Transience::Permanent,
        }
    }
}

/// A home-tenant assertion ready to present.
#[derive(Debug, Clone)]
pub struct Assertion {
    /// The JWT.
    pub token: Secret,
    /// Its claims, for diagnostics (`iss`, `sub`, `aud`, `exp`).
    pub claims: Claims,
    /// When it expires, on tokio's clock.
    pub expires_at: Instant,
    /// When to fetch a new one.
    pub refresh_at: Instant,
    /// For a file: what the file looked like when read.
    stamp: Option<FileStamp>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
}

impl Assertion {
    fn new(token: String, fallback_lifetime: Option<Duration>, stamp: Option<FileStamp>) -> Self {
        let now = Instant::now();
        let claims = Claims::peek(&token).unwrap_or_default();
        // The JWT's own `exp` is what Entra checks; the source's expires_in is a fallback.
        let lifetime = claims
            .exp
            .map(|exp| Duration::from_secs(exp.saturating_sub(unix_now())))
            .or(fallback_lifetime)
            .unwrap_or(OPAQUE_FILE_TTL)
            .min(crate::token::MAX_LIFETIME);
        Assertion {
            token: Secret::new(token),
            claims,
            expires_at: now + lifetime,
            refresh_at: now + refresh_delay(lifetime, None, 0.0),
            stamp,
        }
    }

    /// Usable now: more than [`MIN_REMAINING`] left.
    pub fn is_usable(&self, now: Instant) -> bool {
        now + MIN_REMAINING < self.expires_at
    }
}

/// Fetches and caches the assertion.
#[derive(Debug)]
pub struct AssertionProvider {
    source: Source,
    http: reqwest::Client,
    metrics: Arc<Metrics>,
    budgets: Arc<Budgets>,
    /// One lock for fetch and cache: concurrent exchanges all wait on the one fetch in flight,
    /// so a stampede costs one upstream call.
    cached: Mutex<Option<Assertion>>,
}

impl AssertionProvider {
    /// A provider for this source, using the shared upstream HTTP client.
    pub fn new(
        source: Source,
        http: reqwest::Client,
        metrics: Arc<Metrics>,
        budgets: Arc<Budgets>,
    ) -> Self {
        AssertionProvider {
            source,
            http,
            metrics,
            budgets,
            cached: Mutex::new(None),
        }
    }

    /// The source it fetches from.
    pub fn source(&self) -> &Source {
        &self.source
    }

    /// A short name of the source for messages and metrics.
    pub fn source_name(&self) -> &'static str {
        source_name(&self.source.kind)
    }

    /// The cached assertion if it is still good, else a fresh one, each call to the source
    /// waiting for its turn in the budget until `deadline` (`None`: as long as it takes).
    pub async fn get(&self, deadline: Option<Instant>) -> Result<Assertion, AssertionError> {
        let mut cached = self.cached.lock().await;
        let now = Instant::now();
        if let Some(a) = cached.as_ref() {
            let file_changed = match (&self.source.kind, a.stamp) {
                (SourceKind::TokenFile { path }, Some(stamp)) => {
                    file_stamp(path).await != Some(stamp)
                }
                _ => false,
            };
            if now < a.refresh_at && a.is_usable(now) && !file_changed {
                return Ok(a.clone());
            }
        }
        let fresh = self.fetch(deadline).await;
        match fresh {
            Ok(a) => {
                *cached = Some(a.clone());
                Ok(a)
            }
            // A failed refresh keeps the old assertion while it is still usable.
            Err(e) => match cached.as_ref() {
                Some(a) if a.is_usable(now) => {
                    tracing::warn!(error = %e, "assertion refresh failed; using the cached one");
                    Ok(a.clone())
                }
                _ => Err(e),
            },
        }
    }

    /// Drops the cached assertion (after Entra said it was expired or its signature bad).
    pub async fn invalidate(&self) {
        *self.cached.lock().await = None;
    }

    async fn fetch(&self, deadline: Option<Instant>) -> Result<Assertion, AssertionError> {
        let name = self.source_name();
        // Over HTTP, or the token file to read.
        let http = match &self.source.kind {
            SourceKind::TokenFile { path } => Err(path),
            SourceKind::Imds {
                endpoint,
                client_id,
            } => Ok(HttpSource::Imds {
                endpoint,
                client_id: client_id.as_deref(),
            }),
            SourceKind::AppService {
                endpoint,
                header,
                client_id,
            } => Ok(HttpSource::AppService {
                endpoint,
                header,
                client_id: client_id.as_deref(),
            }),
        };
        let assertion = match http {
            Err(path) => read_token_file(path).await?,
            Ok(source) => {
                let audience = self.source.audience.as_str();
                let (token, lifetime, _) = retry::run(
                    retry::IMDS_SCHEDULE,
                    |_| self.fetch_once(source, audience, UpstreamName::Assertion, deadline),
                    // A turn refused is not retried: waiting longer is what the budget refused.
                    |e| match e {
                        AssertionError::OverBudget { .. } => Transience::Permanent,
                        e => e.transience(),
                    },
                )
                .await?;
                Assertion::new(token, lifetime, None)
            }
        };
        if !assertion.is_usable(Instant::now()) {
            return Err(AssertionError::Stale {
                source_name: name,
                remaining_s: assertion
                    .expires_at
                    .saturating_duration_since(Instant::now())
                    .as_secs(),
            });
        }
        tracing::debug!(source = name, iss = %assertion.claims.iss, sub = %assertion.claims.sub, "assertion fetched");
        Ok(assertion)
    }

    /// The home identity's own token for `resource`, not cached here (the token cache holds
    /// it, under a key of its own): what a target with `exchange = false` serves.
    pub async fn home_token(
        &self,
        resource: &str,
        deadline: Option<Instant>,
    ) -> Result<AccessToken, AssertionError> {
        let source = match &self.source.kind {
            SourceKind::Imds {
                endpoint,
                client_id,
            } => HttpSource::Imds {
                endpoint,
                client_id: client_id.as_deref(),
            },
            SourceKind::AppService {
                endpoint,
                header,
                client_id,
            } => HttpSource::AppService {
                endpoint,
                header,
                client_id: client_id.as_deref(),
            },
            // The config refuses exchange = false on a token file (targets[].exchange).
            SourceKind::TokenFile { .. } => {
                return Err(AssertionError::Malformed {
                    source_name: self.source_name(),
                    detail: "a token file holds one token for one audience; it cannot be asked for another resource".to_owned(),
                })
            }
        };
        let (token, lifetime, sent_at) = retry::run(
            retry::IMDS_SCHEDULE,
            |_| self.fetch_once(source, resource, UpstreamName::Home, deadline),
            |e| match e {
                AssertionError::OverBudget { .. } => Transience::Permanent,
                e => e.transience(),
            },
        )
        .await?;
        let lifetime = lifetime.unwrap_or_else(|| {
            Claims::peek(&token)
                .and_then(|c| c.exp)
                .map_or(Duration::ZERO, |exp| {
                    Duration::from_secs(exp.saturating_sub(unix_now()))
                })
        });
        Ok(AccessToken::new(
            Secret::new(token),
            sent_at,
            lifetime,
            None,
        ))
    }

    async fn fetch_once(
        &self,
        source: HttpSource<'_>,
        resource: &str,
        upstream: UpstreamName,
        deadline: Option<Instant>,
    ) -> Attempt<(String, Option<Duration>, Instant), AssertionError> {
        // The home identity's tokens come from the same endpoint: one budget for both.
        self.budgets
            .assertion
            .turn(deadline)
            .await
            .map_err(|wait| AssertionError::OverBudget {
                source_name: self.source_name(),
                wait,
            })?;
        let started = Instant::now();
        let result = self
            .fetch_once_unmeasured(source, resource)
            .await
            .map(|(token, lifetime)| (token, lifetime, started));
        self.metrics
            .upstream(upstream, result.is_ok(), started.elapsed());
        result
    }

    /// One request for a managed-identity token for `resource`: the token and its lifetime.
    async fn fetch_once_unmeasured(
        &self,
        source: HttpSource<'_>,
        audience: &str,
    ) -> Attempt<(String, Option<Duration>), AssertionError> {
        let name = self.source_name();
        let request = match source {
            HttpSource::Imds {
                endpoint,
                client_id,
            } => {
                let mut url = endpoint.clone();
                url.set_path("/metadata/identity/oauth2/token");
                url.query_pairs_mut()
                    .append_pair("api-version", "2018-02-01")
                    .append_pair("resource", audience);
                if let Some(id) = client_id {
                    url.query_pairs_mut().append_pair("client_id", id);
                }
                self.http.get(url).header("Metadata", "true")
            }
            HttpSource::AppService {
                endpoint,
                header,
                client_id,
            } => {
                let mut url = endpoint.clone();
                url.query_pairs_mut()
                    .append_pair("api-version", "2019-08-01")
                    .append_pair("resource", audience);
                if let Some(id) = client_id {
                    url.query_pairs_mut().append_pair("client_id", id);
                }
                self.http
                    .get(url)
                    .header("X-IDENTITY-HEADER", header.expose())
            }
        };
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => {
                return Err(AssertionError::Unreachable {
                    source_name: name,
                    detail: retry::describe(&e),
                })
            }
        };
        let status = response.status().as_u16();
        let retry_after = retry::retry_after(response.headers());
        let body = match retry::body(response).await {
            Ok(b) => b,
            Err(retry::BodyError::Transport(detail)) => {
                return Err(AssertionError::Unreachable {
                    source_name: name,
                    detail,
                })
            }
            Err(retry::BodyError::TooLarge(detail)) => {
                return Err(AssertionError::Malformed {
                    source_name: name,
                    detail,
                })
            }
        };
        if status != 200 {
            return Err(AssertionError::Status {
                source_name: name,
                status,
                detail: retry::error_text(&body),
                retry_after,
            });
        }
        match serde_json::from_slice::<MiTokenResponse>(&body) {
            Ok(r) if !r.access_token.is_empty() => {
                let lifetime = r
                    .expires_in
                    .as_ref()
                    .and_then(NumberOrString::as_u64)
                    .or_else(|| {
                        r.expires_on
                            .as_ref()
                            .and_then(NumberOrString::as_u64)
                            .map(|on| on.saturating_sub(unix_now()))
                    })
                    .map(Duration::from_secs);
                Ok((r.access_token, lifetime))
            }
            _ => Err(AssertionError::Malformed {
                source_name: name,
                detail: "no access_token in a 200 answer".to_owned(),
            }),
        }
    }
}

/// The sources fetched over HTTP, borrowed from the config (a token file is read instead).
#[derive(Debug, Clone, Copy)]
enum HttpSource<'a> {
    Imds {
        endpoint: &'a url::Url,
        client_id: Option<&'a str>,
    },
    AppService {
        endpoint: &'a url::Url,
        header: &'a Secret,
        client_id: Option<&'a str>,
    },
}

fn source_name(kind: &SourceKind) -> &'static str {
    match kind {
        SourceKind::Imds { .. } => "IMDS",
        SourceKind::AppService { .. } => "identity endpoint",
        SourceKind::TokenFile { .. } => "token file",
    }
}

async fn file_stamp(path: &Path) -> Option<FileStamp> {
    let meta = tokio::fs::metadata(path).await.ok()?;
    Some(FileStamp {
        modified: meta.modified().ok(),
        len: meta.len(),
    })
}

async fn read_token_file(path: &Path) -> Result<Assertion, AssertionError> {
    let file_error = |detail: String, transient: bool| AssertionError::File {
        path: path.to_owned(),
        detail,
        transient,
    };
    // Stamp first: if the file changes while we read it, the next get() sees a new stamp.
    let stamp = file_stamp(path).await;
    let text = tokio::fs::read_to_string(path)
        .await
        .map_err(|e| file_error(e.to_string(), e.kind() == std::io::ErrorKind::NotFound))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(file_error("the file is empty".to_owned(), true));
    }
    Ok(Assertion::new(token.to_owned(), None, stamp))
}
