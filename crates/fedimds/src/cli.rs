//! The command line.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// A local Azure managed-identity endpoint that serves tokens for a target tenant.
#[derive(Debug, Parser)]
#[command(name = "fedimds", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Log line format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "FEDIMDS_LOG_FORMAT")]
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
    /// Run only the simulator of IMDS, the App Service identity endpoint and Entra.
    Sim {
        /// Where the simulator listens.
        #[arg(long, default_value = "127.0.0.1:8282")]
        listen: SocketAddr,
    },
}

/// Log line formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}
