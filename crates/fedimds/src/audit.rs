//! The audit log: one JSON line per token served or refused, to its own stream or file,
//! separate from diagnostic logs. It names the caller, the target, tenant and resource, how the
//! cache answered and the token's fingerprint and expiry: never the token.
//!
//! Lines go through a bounded channel to a writer task, so a request never waits on a disk.

use std::io;
use std::time::SystemTime;

use serde::Serialize;
use tokio::io::AsyncWriteExt as _;
use tokio::sync::mpsc;

use crate::config::AuditSink;
use crate::fsutil;

/// Lines buffered before new ones are dropped (and counted as dropped in the log).
const QUEUE: usize = 8192;

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
    /// The resource.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<&'a str>,
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
}

impl Audit {
    /// Opens the sink and starts its writer task (none when the sink is off). Call within
    /// the runtime.
    pub fn start(sink: &AuditSink) -> io::Result<Audit> {
        let writer: Box<dyn tokio::io::AsyncWrite + Send + Unpin> = match sink {
            AuditSink::Off => return Ok(Audit { tx: None }),
            AuditSink::Stdout => Box::new(tokio::io::stdout()),
            // Never through a link, and never a file another user made or can read: lines
            // appended to someone else's file reach whoever runs or reads it.
            AuditSink::File(path) => {
                Box::new(tokio::fs::File::from_std(fsutil::open_append(path)?))
            }
        };
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(write_lines(writer, rx));
        Ok(Audit { tx: Some(tx) })
    }

    /// Whether lines are recorded (so callers can skip building them).
    pub fn is_on(&self) -> bool {
        self.tx.is_some()
    }

    /// Records one line.
    pub fn record(&self, entry: &Entry<'_>) {
        let Some(tx) = &self.tx else { return };
        let line = Line {
            time: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            entry,
        };
        let Ok(mut text) = serde_json::to_string(&line) else {
            return;
        };
        text.push('\n');
        if tx.try_send(text).is_err() {
            tracing::warn!("audit queue full or closed; an audit line was dropped");
        }
    }
}

async fn write_lines(
    mut writer: Box<dyn tokio::io::AsyncWrite + Send + Unpin>,
    mut rx: mpsc::Receiver<String>,
) {
    while let Some(line) = rx.recv().await {
        let mut result = writer.write_all(line.as_bytes()).await;
        // Flush when the queue is drained: one write per burst. (The writer is not joined at
        // shutdown, so a line queued in the last moment may be lost.)
        if result.is_ok() && rx.is_empty() {
            result = writer.flush().await;
        }
        if let Err(e) = result {
            tracing::error!(error = %e, "cannot write the audit log");
        }
    }
}
