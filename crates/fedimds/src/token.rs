//! Tokens and secrets as types: whatever holds one redacts it in `Debug`, so no token,
//! assertion or secret can reach a log line, an error body or a panic message by accident.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use tokio::time::Instant;

/// A secret string: an access token, an assertion or a caller secret.
///
/// Cloning is cheap (shared), `Debug` and `Display` never print the value, and the only way
/// to read it is [`Secret::expose`], which makes each use visible in review.
#[derive(Clone)]
pub struct Secret(Arc<str>);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<Arc<str>>) -> Self {
        Secret(value.into())
    }

    /// The secret itself. Call only where it goes on the wire or into a file of mode 0600.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Compares with a candidate in constant time, so a caller cannot learn the secret
    /// byte by byte from response timing.
    pub fn matches(&self, candidate: &[u8]) -> bool {
        use subtle::ConstantTimeEq as _;
        let ours = self.0.as_bytes();
        // Length is not secret worth hiding (generated secrets have a fixed length), but the
        // contents are: ct_eq on equal lengths only.
        ours.len() == candidate.len() && bool::from(ours.ct_eq(candidate))
    }

    /// A short, stable fingerprint for audit lines and diagnostics: the first 12 hex digits
    /// of the value's SHA-256. Enough to tell tokens apart, useless for reconstructing one.
    pub fn fingerprint(&self) -> String {
        let digest = ring::digest::digest(&ring::digest::SHA256, self.0.as_bytes());
        digest.as_ref()[..6]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(…)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("…")
    }
}

/// A target-tenant access token as cached and served.
#[derive(Debug)]
pub struct AccessToken {
    /// The bearer token.
    pub secret: Secret,
    /// When the token stops being valid, on tokio's clock (paused in tests).
    pub expires_at: Instant,
    /// The same moment as Unix seconds, for the wire's `expires_on`.
    pub expires_on: u64,
    /// When a background refresh should start (see [`refresh_delay`]).
    pub refresh_at: Instant,
    /// The lifetime Entra granted, for the wire's `ext_expires_in` and for metrics.
    pub lifetime: Duration,
    /// The token's fingerprint for audit lines, computed once.
    pub fingerprint: String,
    /// SHA-256 of the token's text: what a client presents in `token_sha256_to_refresh` when
    /// a resource refused the token (revocation).
    pub sha256: [u8; 32],
    /// True when the token needs no JSON escaping (every JWT): the body then copies it as is.
    pub json_safe: bool,
}

impl AccessToken {
    /// Builds a token from Entra's answer, timed from `sent_at` (the moment the request left),
    /// as azure-identity does: local clock plus `expires_in`, never the JWT's `exp`.
    pub fn new(
        secret: Secret,
        sent_at: Instant,
        expires_in: Duration,
        refresh_in: Option<Duration>,
    ) -> Self {
        // An absurd lifetime from upstream must not overflow the clock.
        let expires_in = expires_in.min(MAX_LIFETIME);
        let expires_at = sent_at + expires_in;
        let elapsed = Instant::now().saturating_duration_since(sent_at);
        let expires_on = unix_now() + expires_in.saturating_sub(elapsed).as_secs();
        let mut sha256 = [0u8; 32];
        sha256.copy_from_slice(
            ring::digest::digest(&ring::digest::SHA256, secret.expose().as_bytes()).as_ref(),
        );
        AccessToken {
            fingerprint: secret.fingerprint(),
            sha256,
            json_safe: secret
                .expose()
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\'),
            secret,
            expires_at,
            expires_on,
            refresh_at: sent_at + refresh_delay(expires_in, refresh_in, fastrand::f64()),
            lifetime: expires_in,
        }
    }

    /// Whole seconds left before expiry (0 when expired).
    pub fn expires_in(&self, now: Instant) -> u64 {
        self.expires_at.saturating_duration_since(now).as_secs()
    }

    /// True while the token may still be served.
    pub fn is_valid(&self, now: Instant) -> bool {
        now < self.expires_at
    }
}

/// Tokens with less than this left are treated as expired by MSAL and the Rust SDK, which then
/// ask again on every call; a refresh must land before a token enters this window.
pub const CLIENT_EXPIRY_BUFFER: Duration = Duration::from_secs(300);

/// The soonest a `refresh_in` hint is taken to mean: zero would refresh a busy key nonstop.
const MIN_REFRESH_HINT: Duration = Duration::from_secs(60);

/// Longest lifetime believed: upstream values beyond it are clamped (CAE tokens live 28 h).
pub const MAX_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);

/// How long after issue a token's refresh is due, as `docs/entra-exchange.md#refresh` sets it:
/// `refresh_in` when Entra sent it; else half the lifetime when that is 2 h or more; else
/// 5 min before expiry (but not before half of it for very short tokens). The refresh itself
/// is spread over [`refresh_window`], `jitter` in `[0, 1)` choosing where.
pub fn refresh_delay(lifetime: Duration, refresh_in: Option<Duration>, jitter: f64) -> Duration {
    let (start, length) = refresh_window(lifetime, refresh_in);
    start + length.mul_f64(jitter.clamp(0.0, 1.0))
}

/// The stretch of a token's life over which its refresh is spread, as (start, length) after
/// issue, so that keys fetched together (a start-up, a rollout) do not come due together and
/// their refreshes fit the upstream budget (`docs/entra-exchange.md#refresh`).
///
/// It never reaches into the last [`CLIENT_EXPIRY_BUFFER`], which clients treat as expired:
/// that is the safe margin before expiry. Where the refresh point leaves room before it (long
/// tokens, an early `refresh_in`), the window starts at the point and runs for up to a
/// quarter of the lifetime (24 h tokens: from 12 h to 18 h, hours of slack for a refresh that
/// fails). Where the point is the margin already (the common 60-90 minute tokens, due 5 min
/// before expiry), the window ends there and starts a twelfth of the lifetime earlier (from
/// 50 to 55 min of an hour's token): a refresh costs a little token life, never a client.
pub fn refresh_window(lifetime: Duration, refresh_in: Option<Duration>) -> (Duration, Duration) {
    let point = match refresh_in {
        // A hint of zero (or nearly) would refresh a busy key without pause.
        Some(hint) if hint < lifetime => hint.max(MIN_REFRESH_HINT.min(lifetime / 2)),
        _ if lifetime >= Duration::from_secs(2 * 3600) => lifetime / 2,
        _ => lifetime
            .saturating_sub(CLIENT_EXPIRY_BUFFER)
            .max(lifetime / 2),
    };
    let latest = lifetime
        .saturating_sub(CLIENT_EXPIRY_BUFFER)
        .max(lifetime / 2);
    let shortest = lifetime / 12;
    if latest.saturating_sub(point) >= shortest {
        (point, (latest - point).min(lifetime / 4))
    } else {
        let start = latest.saturating_sub(shortest).max(lifetime / 2).min(point);
        (start, latest.max(point) - start)
    }
}

/// Seconds since the Unix epoch, on the wall clock (for wire values only).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The claims of a JWT that fedimds reads: never verified (Entra verifies), only shown in
/// diagnostics and used to know when an assertion expires.
#[derive(Debug, Clone, Default, serde::Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// Issuer.
    #[serde(default)]
    pub iss: String,
    /// Subject.
    #[serde(default)]
    pub sub: String,
    /// Audience (a string, or the first of an array).
    #[serde(default, deserialize_with = "string_or_first")]
    pub aud: String,
    /// Expiry, Unix seconds.
    #[serde(default)]
    pub exp: Option<u64>,
}

impl Claims {
    /// Reads the payload of a compact JWS without verifying it. `None` when it is not a JWT.
    pub fn peek(jwt: &str) -> Option<Claims> {
        let payload = jwt.split('.').nth(1)?;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload.trim_end_matches('='))
            .ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

fn string_or_first<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Aud {
        One(String),
        Many(Vec<String>),
    }
    Ok(match <Aud as serde::Deserialize>::deserialize(d)? {
        Aud::One(s) => s,
        Aud::Many(v) => v.into_iter().next().unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_redact() {
        let s = Secret::new("eyJ-very-secret");
        assert!(!format!("{s:?}").contains("very-secret"));
        assert!(!format!("{s}").contains("very-secret"));
        let t = AccessToken::new(s, Instant::now(), Duration::from_secs(3600), None);
        assert!(!format!("{t:?}").contains("very-secret"));
    }

    #[test]
    fn matches_is_exact() {
        let s = Secret::new("abc");
        assert!(s.matches(b"abc"));
        assert!(!s.matches(b"abd"));
        assert!(!s.matches(b"ab"));
        assert!(!s.matches(b""));
    }

    #[test]
    fn refresh_rule() {
        let h = |s: u64| Duration::from_secs(s);
        // Entra's hint wins: the window starts there, a quarter of the lifetime long.
        assert_eq!(refresh_delay(h(86400), Some(h(3600)), 0.0), h(3600));
        assert_eq!(refresh_window(h(86400), Some(h(3600))), (h(3600), h(21600)));
        // Long tokens: from half-life, for up to a quarter of the lifetime.
        assert_eq!(refresh_window(h(7200), None), (h(3600), h(1800)));
        assert_eq!(refresh_delay(h(7200), None, 0.5), h(4500));
        // Short tokens: the window ends five minutes before expiry and starts a twelfth of
        // the lifetime earlier; never in the clients' five-minute buffer.
        assert_eq!(refresh_window(h(3600), None), (h(3000), h(300)));
        assert_eq!(refresh_delay(h(3600), None, 0.5), h(3150));
        assert!(refresh_delay(h(3599), None, 0.999) < h(3299));
        assert!(refresh_delay(h(3599), None, 0.0) >= h(2999));
        // A zero hint does not make a busy key refresh without pause.
        assert_eq!(refresh_delay(h(3600), Some(h(0)), 0.0), h(60));
        // Very short tokens refresh at half-life rather than immediately.
        assert_eq!(refresh_delay(h(400), None, 0.0), h(200));
        assert_eq!(refresh_delay(h(400), None, 0.9), h(200));
        // A hint past the buffer: the window ends there.
        let (start, length) = refresh_window(h(3600), Some(h(3500)));
        assert_eq!(start + length, h(3500));
        assert!(length >= h(300), "{length:?}");
    }

    #[test]
    fn peek_reads_claims() {
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"iss":"i","sub":"s","aud":["a"],"exp":5}"#);
        let c = Claims::peek(&format!("h.{payload}.sig")).unwrap();
        assert_eq!(
            (c.iss.as_str(), c.sub.as_str(), c.aud.as_str(), c.exp),
            ("i", "s", "a", Some(5))
        );
        assert!(Claims::peek("not a jwt").is_none());
    }
}
