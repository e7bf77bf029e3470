//! Signing keys, the claim sets of the tokens the simulator issues, and small JWT and id helpers.

use std::collections::hash_map::{DefaultHasher, RandomState};
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
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
    Genuine,
    Rogue,
}

/// The parsed keys and the id generator.
pub(crate) struct Keys {
    genuine: EncodingKey,
    rogue: EncodingKey,
    public: DecodingKey,
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
            public: DecodingKey::from_rsa_pem(SIGNING_PUBLIC_KEY).map_err(invalid)?,
            serial: AtomicU64::new(0),
            random: RandomState::new(),
        })
    }

    /// Signs `claims` as an RS256 JWT.
    pub(crate) fn sign(
        &self,
        claims: &Value,
        signer: Signer,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(KEY_ID.to_owned());
        let key = match signer {
            Signer::Genuine => &self.genuine,
            Signer::Rogue => &self.rogue,
        };
        jsonwebtoken::encode(&header, claims, key)
    }

    /// Verifies the signature only; time and audience are Entra's business and checked by the
    /// caller, so that each failure gets its own AADSTS code.
    pub(crate) fn verify(&self, token: &str) -> Result<Value, VerifyError> {
        let mut validation = Validation::new(Algorithm::RS256);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        match jsonwebtoken::decode::<Value>(token, &self.public, &validation) {
            Ok(data) => Ok(data.claims),
            Err(e) => match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature
                | jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => {
                    Err(VerifyError::BadSignature)
                }
                _ => Err(VerifyError::Malformed),
            },
        }
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
        assert_eq!(keys.verify(&genuine), Ok(claims));
        assert_eq!(keys.verify(&rogue), Err(VerifyError::BadSignature));
        assert_eq!(keys.verify("not.a.jwt"), Err(VerifyError::Malformed));
        assert_eq!(decode_payload(&rogue), Some(json!({"sub": "x"})));
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
