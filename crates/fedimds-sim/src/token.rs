//! Signing keys, the claim sets of the tokens the simulator issues, and small JWT and id helpers.

use std::collections::hash_map::{DefaultHasher, RandomState};
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{json, Value};

use crate::config::mi_issuer;

/// The key every genuine token is signed with; Entra verifies assertions against its public half.
const SIGNING_KEY: &[u8] = include_bytes!("../keys/signing.pem");
const SIGNING_PUBLIC_KEY: &[u8] = include_bytes!("../keys/signing.pub.pem");
/// A different key, for assertions whose signature must not verify.
const ROGUE_KEY: &[u8] = include_bytes!("../keys/rogue.pem");
/// The `kid` both keys claim; a forged token names the genuine key id, as an attacker would.
const KEY_ID: &str = "fedimds-sim-1";
/// The HMAC secret of [`TokenSigning::Hs256`](crate::config::TokenSigning::Hs256) access
/// tokens: nobody verifies them, so it need not be secret, only fixed.
const SHARED_SECRET: &[u8] = b"fedimds-sim soak-test access tokens";

/// Verified assertions remembered at most (see [`Keys::verify`]): a daemon presents one per
/// identity and audience, replaced every few hours; past this the memory starts afresh.
const MAX_VERIFIED: usize = 64;

/// Why an assertion was rejected before its claims were looked at.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum VerifyError {
    /// Not a well-formed RS256 JWT.
    Malformed,
    /// Well-formed, but the signature does not verify with the simulator's key.
    BadSignature,
}

/// Which key signs a token.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Signer {
    /// RS256, the simulator's key: what Entra verifies assertions against.
    Genuine,
    /// RS256, another key under the same `kid`: a forgery.
    Rogue,
    /// HS256 with [`SHARED_SECRET`]: cheap access tokens for soak tests.
    Shared,
}

/// The parsed keys and the id generator.
pub(crate) struct Keys {
    genuine: EncodingKey,
    rogue: EncodingKey,
    shared: EncodingKey,
    public: DecodingKey,
    /// Tokens whose signature verified, by their exact text, with their claims.
    verified: Mutex<HashMap<String, Arc<Value>>>,
    /// Makes every `uti` differ even within one second.
    serial: AtomicU64,
    random: RandomState,
}

// === impl Keys ===

impl Keys {
    pub(crate) fn load() -> std::io::Result<Keys> {
        let invalid = |e: jsonwebtoken::errors::Error| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("embedded key: {e}"),
            )
        };
        Ok(Keys {
            genuine: EncodingKey::from_rsa_pem(SIGNING_KEY).map_err(invalid)?,
            rogue: EncodingKey::from_rsa_pem(ROGUE_KEY).map_err(invalid)?,
            shared: EncodingKey::from_secret(SHARED_SECRET),
            public: DecodingKey::from_rsa_pem(SIGNING_PUBLIC_KEY).map_err(invalid)?,
            verified: Mutex::default(),
            serial: AtomicU64::new(0),
            random: RandomState::new(),
        })
    }

    /// Signs `claims` as a JWT: RS256 under the simulator's `kid`, or HS256 for [`Signer::Shared`].
    pub(crate) fn sign(
        &self,
        claims: &Value,
        signer: Signer,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let (algorithm, key) = match signer {
            Signer::Genuine => (Algorithm::RS256, &self.genuine),
            Signer::Rogue => (Algorithm::RS256, &self.rogue),
            Signer::Shared => (Algorithm::HS256, &self.shared),
        };
        let mut header = Header::new(algorithm);
        // The `kid` names the RSA key; an HMAC token has no key anyone could look up.
        if algorithm == Algorithm::RS256 {
            header.kid = Some(KEY_ID.to_owned());
        }
        jsonwebtoken::encode(&header, claims, key)
    }

    /// Verifies the signature only; time and audience are Entra's business and checked by the
    /// caller, so that each failure gets its own AADSTS code.
    ///
    /// A signature that verified is remembered by the token's exact text: the same bytes
    /// verify the same way every time, and a daemon presents the assertion it holds for hours,
    /// to every exchange. So a soak's hundreds of thousands of exchanges cost one RSA
    /// verification per assertion (Entra, likewise, keeps the keys it has fetched), while the
    /// caller still checks each exchange's time window and federated credential.
    pub(crate) fn verify(&self, token: &str) -> Result<Arc<Value>, VerifyError> {
        if let Some(claims) = self.verified().get(token) {
            return Ok(claims.clone());
        }
        let mut validation = Validation::new(Algorithm::RS256);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        match jsonwebtoken::decode::<Value>(token, &self.public, &validation) {
            Ok(data) => {
                let claims = Arc::new(data.claims);
                let mut verified = self.verified();
                if verified.len() >= MAX_VERIFIED {
                    verified.clear();
                }
                verified.insert(token.to_owned(), claims.clone());
                Ok(claims)
            }
            Err(e) => match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature
                | jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => {
                    Err(VerifyError::BadSignature)
                }
                _ => Err(VerifyError::Malformed),
            },
        }
    }

    fn verified(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Value>>> {
        // Each write is one insert or a clear: a panic cannot leave the map half-written.
        self.verified.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A unique token id (`uti`): a serial number plus randomness, base64url like Entra's.
    pub(crate) fn unique_id(&self) -> String {
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        let mut bytes = serial.to_be_bytes().to_vec();
        bytes.extend_from_slice(&self.random_u64(serial).to_be_bytes());
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// A fresh GUID-looking id, for trace and correlation ids.
    pub(crate) fn guid(&self) -> String {
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        format_guid(self.random_u64(serial), self.random_u64(!serial))
    }

    fn random_u64(&self, salt: u64) -> u64 {
        let mut hasher = self.random.build_hasher();
        salt.hash(&mut hasher);
        now_nanos().hash(&mut hasher);
        hasher.finish()
    }
}

/// A stable GUID-looking id derived from `parts`, e.g. an app's service principal in a tenant.
pub(crate) fn stable_guid(parts: &[&str]) -> String {
    // DefaultHasher::new() has fixed keys, so the id is the same on every call and every run.
    let hash = |salt: u8| {
        let mut hasher = DefaultHasher::new();
        salt.hash(&mut hasher);
        for part in parts {
            part.to_ascii_lowercase().hash(&mut hasher);
        }
        hasher.finish()
    };
    format_guid(hash(1), hash(2))
}

fn format_guid(hi: u64, lo: u64) -> String {
    let hex = format!("{hi:016x}{lo:016x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Wall-clock seconds since the epoch; token claims use the wall clock, as real issuers do.
pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// The payload of a JWT, without verification.
pub(crate) fn decode_payload(token: &str) -> Option<Value> {
    let mut parts = token.split('.');
    let (_header, payload) = (parts.next()?, parts.next()?);
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The claims of a managed-identity token, as Entra issues them for IMDS and App Service.
pub(crate) fn mi_claims(
    tenant: &str,
    client_id: &str,
    object_id: &str,
    audience: &str,
    now: u64,
    lifetime_secs: u64,
    uti: String,
) -> Value {
    json!({
        "aud": audience,
        "iss": mi_issuer(tenant),
        "iat": now,
        "nbf": now,
        "exp": now + lifetime_secs,
        "sub": object_id,
        "oid": object_id,
        "tid": tenant,
        "appid": client_id,
        "azp": client_id,
        "appidacr": "2",
        "idtyp": "app",
        "uti": uti,
        "ver": "2.0",
    })
}

/// The claims of a projected service-account token.
pub(crate) fn k8s_claims(issuer: &str, subject: &str, audience: &str, lifetime_secs: u64) -> Value {
    let now = now();
    json!({
        "aud": [audience],
        "iss": issuer,
        "sub": subject,
        "iat": now,
        "nbf": now,
        "exp": now + lifetime_secs,
    })
}

/// Entra's "2024-05-01 12:34:56Z" timestamp for `secs` since the epoch.
pub(crate) fn entra_timestamp(secs: u64) -> String {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    format!("{year:04}-{month:02}-{day:02} {h:02}:{m:02}:{s:02}Z")
}

/// Howard Hinnant's days-to-civil algorithm, for days since 1970-01-01 (no date crate needed).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_civil_dates() {
        assert_eq!(entra_timestamp(0), "1970-01-01 00:00:00Z");
        assert_eq!(entra_timestamp(951_782_400), "2000-02-29 00:00:00Z");
        assert_eq!(entra_timestamp(1_735_689_599), "2024-12-31 23:59:59Z");
    }

    #[test]
    fn genuine_verifies_and_rogue_does_not() {
        let keys = Keys::load().expect("embedded keys parse");
        let claims = json!({"sub": "x"});
        let genuine = keys.sign(&claims, Signer::Genuine).expect("sign");
        let rogue = keys.sign(&claims, Signer::Rogue).expect("sign");
        assert_eq!(keys.verify(&genuine), Ok(Arc::new(claims.clone())));
        assert_eq!(keys.verify(&rogue), Err(VerifyError::BadSignature));
        // A soak test's cheap token is no assertion Entra would take.
        let shared = keys.sign(&claims, Signer::Shared).expect("sign");
        assert_eq!(keys.verify(&shared), Err(VerifyError::BadSignature));
        assert_eq!(decode_payload(&shared), Some(json!({"sub": "x"})));
        assert_eq!(keys.verify("not.a.jwt"), Err(VerifyError::Malformed));
        assert_eq!(decode_payload(&rogue), Some(json!({"sub": "x"})));
    }

    #[test]
    fn a_remembered_signature_is_of_exactly_those_bytes() {
        let keys = Keys::load().expect("embedded keys parse");
        let genuine = keys
            .sign(&json!({"sub": "x"}), Signer::Genuine)
            .expect("sign");
        let claims = Ok(Arc::new(json!({"sub": "x"})));
        assert_eq!(keys.verify(&genuine), claims);
        assert_eq!(keys.verify(&genuine), claims, "remembered");
        // The remembered token with another payload, or another signature, is checked anew.
        let (head, rest) = genuine.split_once('.').expect("a JWT");
        let (_, signature) = rest.split_once('.').expect("a JWT");
        let payload = URL_SAFE_NO_PAD.encode(br#"{"sub":"y"}"#);
        let swapped = format!("{head}.{payload}.{signature}");
        assert_eq!(keys.verify(&swapped), Err(VerifyError::BadSignature));
        let mut forged = genuine.clone();
        forged.pop();
        forged.push(if genuine.ends_with('A') { 'B' } else { 'A' });
        assert_ne!(keys.verify(&forged), claims);
        // Bounded: past MAX_VERIFIED tokens it starts afresh, and still verifies.
        for i in 0..2 * MAX_VERIFIED {
            let token = keys.sign(&json!({"i": i}), Signer::Genuine).expect("sign");
            assert_eq!(keys.verify(&token), Ok(Arc::new(json!({"i": i}))));
        }
        assert!(keys.verified().len() <= MAX_VERIFIED);
    }

    #[test]
    fn ids_are_unique_and_stable_ids_stable() {
        let keys = Keys::load().expect("embedded keys parse");
        assert_ne!(keys.unique_id(), keys.unique_id());
        assert_ne!(keys.guid(), keys.guid());
        assert_eq!(stable_guid(&["a", "b"]), stable_guid(&["A", "B"]));
        assert_ne!(stable_guid(&["a", "b"]), stable_guid(&["a", "c"]));
    }
}
