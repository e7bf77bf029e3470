//! Retrying upstream calls the way the upstream asks: only transient failures, with
//! exponential backoff and jitter, `Retry-After` obeyed, within a deadline.

use std::future::Future;
use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, RETRY_AFTER};
use tokio::time::Instant;

use crate::config::MAX_UPSTREAM_BODY;

/// Whether a failure is worth trying again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transience {
    /// A configuration or protocol error: trying again gives the same answer.
    Permanent,
    /// May succeed later; `retry_after` is the upstream's own wish.
    Transient {
        /// The upstream's `Retry-After`.
        retry_after: Option<Duration>,
    },
}

/// The result of one attempt.
pub type Attempt<T, E> = Result<T, E>;

/// A retry schedule: the waits before each retry, and the time after which no retry starts.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// Wait before retry n (then the last one repeats while the deadline allows).
    pub waits: &'static [Duration],
    /// No retry starts after this much time since the first attempt.
    pub deadline: Duration,
}

const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// IMDS: retry 404/410/429/5xx and timeouts; a 410 means "back within 70 s", so the schedule
/// spans more than that even with jitter (Microsoft's guidance: 0, 2, 6, 14, 30 s, then longer).
pub const IMDS_SCHEDULE: Schedule = Schedule {
    waits: &[secs(1), secs(2), secs(4), secs(8), secs(16), secs(32)],
    deadline: secs(100),
};

/// Entra: retry 429/5xx/timeouts, the first retry at least 5 s after the answer (Entra's
/// resilience guidance), exponential after that.
pub const ENTRA_SCHEDULE: Schedule = Schedule {
    waits: &[secs(5), secs(10), secs(20)],
    deadline: secs(45),
};

/// Runs `attempt` until it succeeds, fails permanently, or the schedule runs out. The last
/// error is returned; its `retry_after`, if any, is for the caller to remember.
pub async fn run<T, E, F, Fut>(
    schedule: Schedule,
    mut attempt: F,
    classify: impl Fn(&E) -> Transience,
) -> Result<T, E>
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = Attempt<T, E>>,
{
    let start = Instant::now();
    let mut n = 0;
    loop {
        let err = match attempt(n).await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        let Transience::Transient { retry_after } = classify(&err) else {
            return Err(err);
        };
        let base = schedule.waits[n.min(schedule.waits.len() - 1)];
        // ±20 % jitter so many daemons (or keys) do not retry in lockstep.
        let wait = retry_after
            .unwrap_or(Duration::ZERO)
            .max(base.mul_f64(0.8 + 0.4 * fastrand::f64()));
        if start.elapsed() + wait > schedule.deadline {
            return Err(err);
        }
        tokio::time::sleep(wait).await;
        n += 1;
    }
}

/// Cap on a `Retry-After` we obey, as MSAL caps it: a broken upstream must not park a key for a day.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// `Retry-After` as delta-seconds or an HTTP date.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let wait = match value.parse::<u64>() {
        Ok(s) => Duration::from_secs(s),
        Err(_) => httpdate::parse_http_date(value)
            .ok()?
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// An upstream answer's body, at most [`MAX_UPSTREAM_BODY`] bytes: a token answer is a few
/// KB, and one an upstream makes huge (by fault or on purpose) must not take the daemon's
/// memory with it.
pub async fn body(mut response: reqwest::Response) -> Result<Vec<u8>, BodyError> {
    let too_large = || {
        BodyError::TooLarge(format!(
            "the answer is larger than {MAX_UPSTREAM_BODY} bytes"
        ))
    };
    if response
        .content_length()
        .is_some_and(|n| n > MAX_UPSTREAM_BODY as u64)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| BodyError::Transport(describe(&e)))?
    {
        if body.len() + chunk.len() > MAX_UPSTREAM_BODY {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Why an upstream answer's body could not be had, in words.
#[derive(Debug)]
pub enum BodyError {
    /// The transport failed while reading it (may pass).
    Transport(String),
    /// It is larger than any real answer (will not pass: the answer is unusable).
    TooLarge(String),
}

/// A transport error in words, without the URL (which may carry identifiers).
pub fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_decode() || e.is_body() {
        "the answer could not be read"
    } else {
        "request failed"
    };
    let mut detail = kind.to_owned();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        source = s.source();
    }
    detail
}

/// An upstream error body in a line: its `error_description`/`message`/`error` when JSON,
/// else its start. Error bodies carry no tokens, and are shortened all the same.
pub fn error_text(body: &[u8]) -> String {
    const MAX: usize = 300;
    let text = match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(v) => ["error_description", "message", "Message", "error"]
            .iter()
            .find_map(|k| v.get(*k).and_then(|x| x.as_str().map(str::to_owned)))
            // Any other JSON could be a token answer: never echo it.
            .unwrap_or_else(|| format!("(an unrecognised JSON answer, {} bytes)", body.len())),
        Err(_) => String::from_utf8_lossy(body).into_owned(),
    };
    let mut line: String = text.chars().filter(|c| !c.is_control()).take(MAX).collect();
    if line.is_empty() {
        line.push_str("(empty body)");
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Debug, PartialEq)]
    struct E(Transience);

    #[tokio::test(start_paused = true)]
    async fn retries_transient_until_success() {
        let calls = AtomicUsize::new(0);
        let started = Instant::now();
        let out = run(
            IMDS_SCHEDULE,
            |_| async {
                if calls.fetch_add(1, Ordering::SeqCst) < 3 {
                    Err(E(Transience::Transient { retry_after: None }))
                } else {
                    Ok(7)
                }
            },
            |e| e.0,
        )
        .await;
        assert_eq!(out, Ok(7));
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        // Waits of about 1 + 2 + 4 s, jittered by ±20 %.
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(5600) && waited <= Duration::from_millis(8400),
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_is_not_retried() {
        let calls = AtomicUsize::new(0);
        let out: Result<(), E> = run(
            ENTRA_SCHEDULE,
            |_| async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(E(Transience::Permanent))
            },
            |e| e.0,
        )
        .await;
        assert!(out.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_obeyed_and_deadline_holds() {
        let started = Instant::now();
        let calls = AtomicUsize::new(0);
        let out: Result<(), E> = run(
            ENTRA_SCHEDULE,
            |_| async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(E(Transience::Transient {
                    retry_after: Some(Duration::from_secs(30)),
                }))
            },
            |e| e.0,
        )
        .await;
        assert!(out.is_err());
        // 30 s wait fits the 45 s deadline once; a second 30 s wait would not.
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert!(started.elapsed() >= Duration::from_secs(30));
    }

    #[test]
    fn parses_retry_after() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, "30".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(30)));
        h.insert(RETRY_AFTER, "99999".parse().unwrap());
        assert_eq!(retry_after(&h), Some(MAX_RETRY_AFTER));
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
        h.insert(RETRY_AFTER, later.parse().unwrap());
        let d = retry_after(&h).unwrap();
        assert!(
            d > Duration::from_secs(100) && d <= Duration::from_secs(120),
            "{d:?}"
        );
    }

    #[test]
    fn error_text_prefers_description() {
        assert_eq!(
            error_text(br#"{"error":"x","error_description":"Identity not found"}"#),
            "Identity not found"
        );
        assert_eq!(error_text(b"plain\nfailure"), "plainfailure");
        assert_eq!(error_text(b""), "(empty body)");
        // A JSON answer without an error field might be a token: never echoed.
        let t = error_text(br#"{"access_token":"eyJsecret","expires_in":3599}"#);
        assert!(!t.contains("eyJsecret"), "{t}");
    }
}
