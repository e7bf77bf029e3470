//! The audit log: one JSON line per token served or refused, to its own stream or file,
//! separate from diagnostic logs. It names the caller, the target, tenant and resource, how the
//! cache answered and the token's fingerprint and expiry: never the token.
//!
//! Lines go through a bounded channel to a writer task, so a request never waits on a disk.
//! A line that cannot be recorded (the queue is full, a write fails, the file cannot be
//! reopened) is counted (`fedimds_audit_failures_total`) and marks the log failing until a
//! line is written again; with `audit.fail_closed` the request path then serves no token.
//! The file is reopened on SIGHUP and when `audit.path` no longer names it (logrotate's
//! rename, a removal), checked every [`CHECK`].

use std::io;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use prometheus_client::metrics::counter::Counter;
use serde::Serialize;
use tokio::io::{AsyncWrite, AsyncWriteExt as _};
use tokio::sync::mpsc;

use crate::config::AuditSink;
use crate::fsutil;

/// Lines buffered before new ones are refused (and counted as failures).
const QUEUE: usize = 8192;
/// How often the writer checks that `audit.path` still names the file it has open: quick
/// enough that a rotation loses nothing to the old file for long, one `stat` a second.
pub const CHECK: Duration = Duration::from_secs(1);

/// One audit line.
#[derive(Debug, Serialize)]
pub struct Entry<'a> {
    /// `served` or `refused`.
    pub event: &'static str,
    /// The dialect.
    pub dialect: &'static str,
    /// The caller's rule name, or `-`.
    pub caller: &'a str,
    /// The peer's address (TCP).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub addr: Option<String>,
    /// The peer's uid (Unix socket).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// The target's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<&'a str>,
    /// The tenant whose token was served (or asked for).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<&'a str>,
    /// The app (client id) whose token was served (or asked for).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app: Option<&'a str>,
    /// What the target hands out: `exchange` (a target-tenant token) or `home` (the home
    /// identity's own token, `exchange = false`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    /// The source whose identity the token came from ("default" is `[source]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<&'a str>,
    /// The resource.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<&'a str>,
    /// The path forwarded to the real IMDS (passthrough), without its query or body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<&'a str>,
    /// HTTP status answered.
    pub status: u16,
    /// `hit`, `stale` or `miss` for served tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<&'static str>,
    /// The token's fingerprint (a short hash).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<&'a str>,
    /// The token's expiry, Unix seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_on: Option<u64>,
    /// Why it was refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
}

#[derive(Serialize)]
struct Line<'a> {
    time: String,
    #[serde(flatten)]
    entry: &'a Entry<'a>,
}

/// The audit log's sending side. Cheap to share.
#[derive(Debug, Clone)]
pub struct Audit {
    tx: Option<mpsc::Sender<String>>,
    health: Arc<Health>,
}

/// What the writer and the request path share.
#[derive(Debug)]
struct Health {
    /// The last line could not be recorded; cleared when one is written again.
    failing: AtomicBool,
    /// Lines not recorded.
    failures: Counter,
}

impl Health {
    fn failed(&self, lines: u64, why: &dyn std::fmt::Display) {
        self.failures.inc_by(lines);
        // Logged when the log starts failing, not once per line: 2000 tokens must not make
        // 2000 error lines.
        if !self.failing.swap(true, Ordering::AcqRel) {
            tracing::error!(error = %why, "the audit log cannot record lines; each one lost is counted in fedimds_audit_failures_total");
        }
    }

    fn recorded(&self) {
        if self.failing.swap(false, Ordering::AcqRel) {
            tracing::info!("the audit log records lines again");
        }
    }
}

impl Audit {
    /// Opens the sink and starts its writer task (none when the sink is off); lines not
    /// recorded are counted in `failures`. Call within the runtime.
    pub fn start(sink: &AuditSink, failures: Counter) -> io::Result<Audit> {
        let health = Arc::new(Health {
            failing: AtomicBool::new(false),
            failures,
        });
        let out = match sink {
            AuditSink::Off => return Ok(Audit { tx: None, health }),
            AuditSink::Stdout => Out::Stdout(tokio::io::stdout()),
            AuditSink::File(path) => Out::File(OpenFile::open(path)?),
        };
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(write_lines(out, rx, health.clone()));
        Ok(Audit {
            tx: Some(tx),
            health,
        })
    }

    /// Whether lines are recorded (so callers can skip building them).
    pub fn is_on(&self) -> bool {
        self.tx.is_some()
    }

    /// Whether the log records lines: false from a line that could not be recorded until one
    /// is written again.
    pub fn is_healthy(&self) -> bool {
        !self.health.failing.load(Ordering::Acquire)
    }

    /// Queues one line; false when it cannot be (the queue is full, the writer gone), which
    /// is counted as a failure.
    pub fn record(&self, entry: &Entry<'_>) -> bool {
        let Some(tx) = &self.tx else { return true };
        let line = Line {
            time: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            entry,
        };
        let Ok(mut text) = serde_json::to_string(&line) else {
            self.health.failed(1, &"a line could not be serialized");
            return false;
        };
        text.push('\n');
        match tx.try_send(text) {
            Ok(()) => true,
            Err(e) => {
                let why = match e {
                    mpsc::error::TrySendError::Full(_) => "the audit queue is full",
                    mpsc::error::TrySendError::Closed(_) => "the audit writer stopped",
                };
                self.health.failed(1, &why);
                false
            }
        }
    }
}

/// Where the writer puts lines.
enum Out {
    Stdout(tokio::io::Stdout),
    File(OpenFile),
}

/// The audit file, and which file it is, to tell when `audit.path` names another.
struct OpenFile {
    path: PathBuf,
    /// `None` after a reopen failed: lines are lost (and counted) until one succeeds.
    file: Option<tokio::fs::File>,
    id: (u64, u64),
}

impl OpenFile {
    fn open(path: &Path) -> io::Result<OpenFile> {
        let file = fsutil::open_append(path)?;
        let meta = file.metadata()?;
        Ok(OpenFile {
            path: path.to_owned(),
            file: Some(tokio::fs::File::from_std(file)),
            id: (meta.dev(), meta.ino()),
        })
    }

    /// Whether `audit.path` still names the open file (not renamed away, removed, replaced).
    fn in_place(&self) -> bool {
        self.file.is_some()
            && std::fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.id)
    }

    /// Opens `audit.path` afresh, with the checks of the first open.
    fn reopen(&mut self, health: &Health) {
        match OpenFile::open(&self.path) {
            Ok(fresh) => {
                tracing::info!(path = %self.path.display(), "audit log reopened");
                *self = fresh;
            }
            Err(e) => {
                self.file = None;
                health.failed(0, &format!("cannot reopen {}: {e}", self.path.display()));
            }
        }
    }
}

impl Out {
    fn writer(&mut self) -> Option<&mut (dyn AsyncWrite + Send + Unpin)> {
        match self {
            Out::Stdout(out) => Some(out),
            Out::File(open) => open
                .file
                .as_mut()
                .map(|f| f as &mut (dyn AsyncWrite + Send + Unpin)),
        }
    }

    async fn write(&mut self, line: &str, flush: bool) -> io::Result<()> {
        let Some(writer) = self.writer() else {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "the audit file is not open",
            ));
        };
        writer.write_all(line.as_bytes()).await?;
        if flush {
            writer.flush().await?;
        }
        Ok(())
    }

    /// Reopens the file if `audit.path` names another one now, or `always` (SIGHUP).
    fn check(&mut self, always: bool, health: &Health) {
        if let Out::File(open) = self {
            if always || !open.in_place() {
                open.reopen(health);
            }
        }
    }
}

async fn write_lines(mut out: Out, mut rx: mpsc::Receiver<String>, health: Arc<Health>) {
    use tokio::signal::unix::{signal, SignalKind};
    // logrotate's postrotate sends SIGHUP; the config reload listens for it too.
    let mut hangup = signal(SignalKind::hangup()).ok();
    let mut tick = tokio::time::interval(CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let line = tokio::select! {
            line = rx.recv() => match line {
                Some(line) => line,
                None => break,
            },
            Some(()) = async {
                match hangup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                out.check(true, &health);
                continue;
            }
            _ = tick.tick() => {
                out.check(false, &health);
                continue;
            }
        };
        // Flush when the queue is drained: one write per burst. (The writer is not joined at
        // shutdown, so a line queued in the last moment may be lost.)
        let flush = rx.is_empty();
        let mut result = out.write(&line, flush).await;
        if result.is_err() {
            // Once more into a freshly opened file: the old one may have been rotated away.
            out.check(false, &health);
            result = out.write(&line, flush).await;
        }
        match result {
            Ok(()) => health.recorded(),
            Err(e) => health.failed(1, &format!("cannot write the audit log: {e}")),
        }
    }
}
