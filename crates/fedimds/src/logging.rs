//! Diagnostic logs: tracing with an env filter (`FEDIMDS_LOG`, then `RUST_LOG`), text or JSON.

use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

/// The filter when no variable sets one: our own info lines, others' warnings.
const DEFAULT_FILTER: &str = "fedimds=info,fedimds_sim=info,warn";

/// Installs the global subscriber, writing to stderr (stdout is for `demo`'s instructions).
pub fn init(format: LogFormat) {
    let filter = std::env::var("FEDIMDS_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .or_else(|| EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
