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
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::time::Instant;

use super::{imds, Refusal, TokenRequest};
use crate::caller::is_local;
use crate::caller::Peer;
use crate::config::{
    ARC_KEY_TTL as KEY_TTL, ARC_MAX_KEYS as MAX_KEYS, ARC_MAX_KEYS_PER_CALLER as MAX_PER_CALLER,
};
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
    holder: Holder,
}

/// Who asked for a challenge, for the per-caller bound on outstanding keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    /// The `[[callers]]` rule that matched, by index.
    Rule(usize),
    /// No rules: a remote peer's address.
    Addr(IpAddr),
    /// No rules: a local peer of unknown uid (every one of them together).
    Local,
    /// No rules: the local peer's uid (Unix socket, or a TCP socket of this host).
    Uid(u32),
}

impl Holder {
    /// The holder for a caller admitted with rule `index` (none when there are no rules).
    pub fn of(index: Option<usize>, peer: &Peer) -> Holder {
        match (index, peer.uid(), peer) {
            (Some(index), _, _) => Holder::Rule(index),
            // A local peer, TCP or Unix: its uid, as the kernel says.
            (None, Some(uid), _) => Holder::Uid(uid),
            // Every loopback address (127.0.0.0/8, and its IPv6-mapped forms) is this host: one
            // holder, or a caller could be many by changing its source address.
            (None, None, Peer::Tcp { addr, .. }) if is_local(addr.ip()) => Holder::Local,
            (None, None, Peer::Tcp { addr, .. }) => Holder::Addr(addr.ip()),
            // A Unix peer always has a uid; this arm is for completeness.
            (None, None, Peer::Unix { uid, .. }) => Holder::Uid(*uid),
        }
    }
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
    /// Key files go in `dir`, readable by `group` when given. Key files a previous run left
    /// there are removed (only files named and owned as fedimds makes them).
    pub fn new(dir: PathBuf, group: Option<u32>) -> Self {
        remove_stale(&dir);
        ArcKeys {
            dir,
            group,
            issued: Mutex::new(VecDeque::new()),
        }
    }

    /// Checks an Arc request from `holder`: the Metadata header, then the challenge or its
    /// answer.
    pub fn parse(
        &self,
        method: &Method,
        headers: &HeaderMap,
        query: Option<&str>,
        holder: Holder,
    ) -> Result<ArcRequest, Refusal> {
        let request = imds::checked(method, headers, query, &API_VERSIONS)?;
        let Some(auth) = headers.get(header::AUTHORIZATION) else {
            return self.challenge(holder).map(ArcRequest::Challenge);
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

    fn challenge(&self, holder: Holder) -> Result<Response, Refusal> {
        let mut issued = lock(&self.issued);
        self.expire(&mut issued);
        // Refused, not evicted: an outstanding key is one a client is about to present. The
        // wait is until the oldest key in the way expires.
        let own = || issued.iter().filter(|i| i.holder == holder);
        if own().count() >= MAX_PER_CALLER {
            return Err(Refusal::RateLimited(until_expiry(own().next())));
        }
        if issued.len() >= MAX_KEYS {
            return Err(Refusal::RateLimited(until_expiry(issued.front())));
        }
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
        issued.push_back(Issued {
            key: Secret::new(key),
            path,
            at: Instant::now(),
            holder,
        });
        drop(issued);
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

    /// Removes every outstanding key file: at shutdown, so none outlives the daemon.
    pub fn clear(&self) {
        for used in lock(&self.issued).drain(..) {
            let _ = std::fs::remove_file(used.path);
        }
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

impl Drop for ArcKeys {
    fn drop(&mut self) {
        self.clear();
    }
}

/// How long until `oldest` expires, at least a second (`Retry-After` counts in seconds).
fn until_expiry(oldest: Option<&Issued>) -> Duration {
    let left = oldest.map_or(KEY_TTL, |i| KEY_TTL.saturating_sub(i.at.elapsed()));
    left.max(Duration::from_secs(1))
}

/// Removes the key files a previous run left in `dir` (it stopped before they were used or
/// expired). Only fedimds's own: a regular file (not a link) named as [`ArcKeys`] names them,
/// 16 lowercase hex digits then `.key`, owned by fedimds's uid. Anything else is left alone.
fn remove_stale(dir: &Path) {
    use std::os::unix::fs::MetadataExt as _;
    let (Ok(entries), Ok(ours)) = (std::fs::read_dir(dir), fsutil::euid()) else {
        return;
    };
    let mut removed = 0usize;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let named_ours = name
            .to_str()
            .and_then(|n| n.strip_suffix(".key"))
            .is_some_and(|stem| {
                stem.len() == 16
                    && stem
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            });
        // DirEntry::metadata does not follow a link.
        let owned = entry
            .metadata()
            .is_ok_and(|m| m.file_type().is_file() && m.uid() == ours);
        if named_ours && owned && std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    if removed > 0 {
        tracing::info!(removed, dir = %dir.display(), "removed Arc key files a previous run left");
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
