//! Diagnostic logs: tracing with an env filter (`FEDIMDS_LOG`, then `RUST_LOG`), text or JSON.
//! Colour only when standard error is a terminal: a log file or a collector gets plain text.

use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;
use crate::config::{DEFAULT_LOG_FILTER, ENV_LOG};

/// Installs the global subscriber, writing to stderr (stdout is for `demo`'s instructions).
pub fn init(format: LogFormat) {
    let filter = std::env::var(ENV_LOG)
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .or_else(|| EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| EnvFilter::new(DEFAULT_LOG_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
