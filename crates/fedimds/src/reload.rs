//! Reload: on SIGHUP, or when the config file changes, the new config is validated and swapped
//! in atomically; an invalid one is refused and logged, and the old one keeps serving.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::signal::unix::{signal, SignalKind};

use crate::app::App;
use crate::config::{self, Config};

/// How often the config file's modification time is looked at: cheap, and quick enough for a
/// ConfigMap update (which itself takes up to a minute to reach the pod).
const POLL: Duration = Duration::from_secs(2);

/// Watches for SIGHUP and changes to `path`, reloading `app` on either. Runs until the
/// process ends.
pub async fn watch(app: Arc<App>, path: PathBuf) {
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; reloading on file changes only");
            None
        }
    };
    let mut seen = modified(&path);
    let mut tick = tokio::time::interval(POLL);
    loop {
        let why = tokio::select! {
            Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => "SIGHUP",
            _ = tick.tick() => {
                let now = modified(&path);
                if now == seen { continue; }
                seen = now;
                "the config file changed"
            }
        };
        reload(&app, &path, why);
    }
}

/// Loads, validates and swaps in the config at `path`; logs and keeps the old one on failure.
/// Returns whether the new config is in force.
pub fn reload(app: &App, path: &std::path::Path, why: &str) -> bool {
    match Config::load(path, &config::process_env) {
        Ok(config) => match app.reload(config) {
            Ok(()) => {
                tracing::info!(reason = why, path = %path.display(), "config reloaded");
                true
            }
            Err(e) => {
                tracing::error!(reason = why, error = %e, "reload failed; the previous config keeps serving");
                false
            }
        },
        Err(e) => {
            tracing::error!(reason = why, error = %e, "the new config is invalid; the previous config keeps serving");
            false
        }
    }
}

fn modified(path: &std::path::Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}
