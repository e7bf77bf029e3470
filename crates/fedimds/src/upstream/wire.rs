//! The JSON the upstream legs read: the managed-identity token answer, Entra's token and error
//! answers, and the number-or-string fields both send. Shared by [`super::assertion`] and
//! [`super::exchange`], so neither leg imports the other.

use serde::Deserialize;

/// The managed-identity token answer; IMDS sends strings, others may send numbers.
#[derive(Deserialize)]
pub(super) struct MiTokenResponse {
    pub(super) access_token: String,
    pub(super) expires_in: Option<NumberOrString>,
    pub(super) expires_on: Option<NumberOrString>,
}

/// A JSON number or a string holding one: both appear on the wire for the same field.
#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
pub(super) enum NumberOrString {
    /// `3599`
    Number(u64),
    /// `"3599"`
    Text(String),
}

impl NumberOrString {
    /// The value, if it is a whole number.
    pub(super) fn as_u64(&self) -> Option<u64> {
        match self {
            NumberOrString::Number(n) => Some(*n),
            NumberOrString::Text(t) => t.trim().parse().ok(),
        }
    }
}

/// Entra's token answer (v2 sends numbers; some proxies send strings).
#[derive(Deserialize)]
pub(super) struct TokenResponse {
    pub(super) access_token: String,
    pub(super) token_type: Option<String>,
    pub(super) expires_in: NumberOrString,
    pub(super) refresh_in: Option<NumberOrString>,
}

/// Entra's error answer: an OAuth `error`, its description, AADSTS codes and the ids a
/// support case needs.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct ErrorResponse {
    pub(super) error: String,
    pub(super) error_description: String,
    pub(super) error_codes: Vec<u32>,
    pub(super) trace_id: String,
    pub(super) correlation_id: String,
}
