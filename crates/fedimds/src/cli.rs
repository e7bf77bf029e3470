//! The command line.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand, ValueEnum};

use crate::config::provenance::Origin;

/// A local Azure managed-identity endpoint that serves tokens for a target tenant.
#[derive(Debug, Parser)]
#[command(name = "fedimds", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Log line format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = crate::config::ENV_LOG_FORMAT)]
    pub log_format: LogFormat,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve tokens as configured.
    Serve {
        /// The TOML config file.
        #[arg(long, short, env = crate::config::ENV_CONFIG)]
        config: PathBuf,
    },
    /// Run the built-in simulator and a daemon wired to it: try fedimds with no Azure at all.
    Demo {
        /// Where the daemon listens.
        #[arg(long, default_value = crate::config::DEFAULT_LISTEN)]
        listen: SocketAddr,
    },
    /// Validate the config, then walk the chain for real (assertion, then each target's
    /// exchange) and say what is wrong and how to fix it. Exit 0 when everything passed.
    Check {
        /// The TOML config file.
        #[arg(long, short, env = crate::config::ENV_CONFIG)]
        config: PathBuf,
    },
    /// Print the effective config, secrets redacted, with where each value came from.
    Config {
        /// The TOML config file.
        #[arg(long, short, env = crate::config::ENV_CONFIG)]
        config: PathBuf,
    },
    /// Run only the simulator of IMDS, the App Service identity endpoint and Entra.
    Sim {
        /// Where the simulator listens.
        #[arg(long, default_value = crate::config::DEFAULT_SIM_LISTEN)]
        listen: SocketAddr,
        /// IMDS waits this long before every answer: MIN..MAX (uniform jitter) or one
        /// duration, e.g. 5ms..20ms (real IMDS's range). Default: at once.
        #[arg(long, value_parser = parse_latency)]
        imds_latency: Option<fedimds_sim::Latency>,
        /// The same for the App Service identity endpoint.
        #[arg(long, value_parser = parse_latency)]
        app_service_latency: Option<fedimds_sim::Latency>,
        /// The same for Entra's token endpoint, e.g. 80ms..250ms (real Entra's range).
        #[arg(long, value_parser = parse_latency)]
        entra_latency: Option<fedimds_sim::Latency>,
    },
}

/// `5ms..20ms` or `100ms`, each part a humantime duration.
fn parse_latency(text: &str) -> Result<fedimds_sim::Latency, String> {
    fedimds_sim::Latency::parse(text, humantime::parse_duration)
}

/// Log line formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl Cli {
    /// Parses the command line once: the arguments, and where the subcommand's `--config`
    /// came from (the flag or `FEDIMDS_CONFIG`), which `fedimds config` reports.
    pub fn parse_with_origin() -> (Cli, Origin) {
        let matches = Cli::command().get_matches();
        // Only the subcommands that take `--config` are asked about it (clap panics, in debug
        // builds, when asked about an argument a subcommand does not have).
        let origin = match matches
            .subcommand()
            .filter(|(_, m)| m.ids().any(|id| id == "config"))
            .and_then(|(_, m)| m.value_source("config"))
        {
            Some(ValueSource::EnvVariable) => Origin::Env(crate::config::ENV_CONFIG),
            Some(ValueSource::CommandLine) => Origin::Flag("--config"),
            _ => Origin::Default,
        };
        let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
        (cli, origin)
    }
}
