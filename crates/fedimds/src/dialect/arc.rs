//! The Azure Arc dialect (`IDENTITY_ENDPOINT` + `IMDS_ENDPOINT`), at a path of its own because
//! its first answer is a challenge, not a token: `401` with
//! `WWW-Authenticate: Basic realm=<key file>`. The client reads the file and asks again with
//! `Authorization: Basic <file contents>`.
//!
//! This is the one dialect that authenticates the caller by **file permission**: whoever can
//! read the key file gets a token. Clients insist the file lives in `/var/opt/azcmagent/tokens/`,
//! so fedimds must be able to write there; `server.arc_key_group` makes the files readable by a
//! group (mode 0640), else only fedimds's own user can read them (0600).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::time::Instant;

use super::{imds, Refusal, TokenRequest};
use crate::config::{ARC_KEY_TTL as KEY_TTL, ARC_MAX_KEYS as MAX_KEYS};
use crate::fsutil::{self, Private};
use crate::token::Secret;

/// api-versions Arc clients send: 2020-06-01 (Python, JS, .NET), 2021-02-01 (Rust).
pub const API_VERSIONS: [&str; 3] = ["2019-11-01", "2020-06-01", "2021-02-01"];

/// The key files handed out and not yet used.
#[derive(Debug)]
pub struct ArcKeys {
    dir: PathBuf,
    group: Option<u32>,
    issued: Mutex<VecDeque<Issued>>,
}

#[derive(Debug)]
struct Issued {
    key: Secret,
    path: PathBuf,
    at: Instant,
}

/// What an Arc request turned out to be.
#[derive(Debug)]
pub enum ArcRequest {
    /// No credentials yet: answer with this challenge.
    Challenge(Response),
    /// A verified request.
    Token(TokenRequest),
}

impl ArcKeys {
    /// Key files go in `dir`, readable by `group` when given.
    pub fn new(dir: PathBuf, group: Option<u32>) -> Self {
        ArcKeys {
            dir,
            group,
            issued: Mutex::new(VecDeque::new()),
        }
    }

    /// Checks an Arc request: the Metadata header, then the challenge or its answer.
    pub fn parse(
        &self,
        method: &Method,
        headers: &HeaderMap,
        query: Option<&str>,
    ) -> Result<ArcRequest, Refusal> {
        let request = imds::checked(method, headers, query, &API_VERSIONS)?;
        let Some(auth) = headers.get(header::AUTHORIZATION) else {
            return self.challenge().map(ArcRequest::Challenge);
        };
        let presented = auth
            .as_bytes()
            .strip_prefix(b"Basic ")
            .ok_or(Refusal::Unauthorized(
                "The Authorization header must be 'Basic <key file contents>'",
            ))?;
        if self.redeem(presented) {
            Ok(ArcRequest::Token(request))
        } else {
            Err(Refusal::Unauthorized(
                "The key presented is unknown or expired; ask again for a new challenge",
            ))
        }
    }

    fn challenge(&self) -> Result<Response, Refusal> {
        let key = random_hex(32)
            .map_err(|e| Refusal::Internal(format!("cannot generate an Arc key: {e}")))?;
        let name = random_hex(8)
            .map_err(|e| Refusal::Internal(format!("cannot generate an Arc key name: {e}")))?;
        let path = self.dir.join(format!("{name}.key"));
        write_key(&path, &key, self.group).map_err(|e| {
            Refusal::Internal(format!(
                "the Arc dialect is unavailable: cannot write a key file in {} ({e}); fedimds needs write access there (server.arc_key_dir)",
                self.dir.display()
            ))
        })?;
        let realm = format!("Basic realm={}", path.display());
        let mut issued = lock(&self.issued);
        self.expire(&mut issued);
        if issued.len() >= MAX_KEYS {
            if let Some(old) = issued.pop_front() {
                let _ = std::fs::remove_file(old.path);
            }
        }
        issued.push_back(Issued {
            key: Secret::new(key),
            path,
            at: Instant::now(),
        });
        let mut response = (
            StatusCode::UNAUTHORIZED,
            super::no_store_json(),
            r#"{"error":"unauthorized_client","error_description":"Read the key file named in WWW-Authenticate and retry with Authorization: Basic <contents>"}"#,
        )
            .into_response();
        if let Ok(v) = HeaderValue::from_str(&realm) {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
        Ok(response)
    }

    /// True when `presented` is an outstanding key; each key works once.
    fn redeem(&self, presented: &[u8]) -> bool {
        let mut issued = lock(&self.issued);
        self.expire(&mut issued);
        // Compare against every outstanding key, each in constant time.
        let found = issued
            .iter()
            .position(|i| i.key.matches(presented.trim_ascii()));
        if let Some(index) = found {
            if let Some(used) = issued.remove(index) {
                let _ = std::fs::remove_file(used.path);
            }
        }
        found.is_some()
    }

    fn expire(&self, issued: &mut VecDeque<Issued>) {
        let now = Instant::now();
        while issued
            .front()
            .is_some_and(|i| now.duration_since(i.at) > KEY_TTL)
        {
            if let Some(old) = issued.pop_front() {
                let _ = std::fs::remove_file(old.path);
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn random_hex(bytes: usize) -> Result<String, getrandom::Error> {
    let mut buf = vec![0u8; bytes];
    getrandom::getrandom(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

fn write_key(path: &Path, key: &str, group: Option<u32>) -> std::io::Result<()> {
    let mode = if group.is_some() { 0o640 } else { 0o600 };
    // A new name every time, so created exclusively in place: no rename needed, since the
    // client learns the name only once the file is whole.
    fsutil::create(path, key.as_bytes(), Private { mode, group }).map(drop)
}

/// Arc's errors have IMDS's shape.
pub fn error(refusal: &Refusal) -> Response {
    imds::error(refusal)
}
