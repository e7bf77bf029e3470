//! The life of the process: command line, logging, config (exit 64 when bad), bind, serve
//! (reloading the config on SIGHUP or when its file changes) until SIGTERM/SIGINT, drain.

use std::path::PathBuf;
use std::process::ExitCode;

use fedimds::app::App;
use fedimds::cli::{Cli, Command};
use fedimds::config::{self, Config};
use fedimds::http;

/// `EX_USAGE`: the config is wrong; nothing was started.
const EXIT_CONFIG: u8 = 64;
/// `EX_SOFTWARE`/runtime failure: could not bind, or the server failed.
const EXIT_RUNTIME: u8 = 1;

fn main() -> ExitCode {
    let (cli, config_origin) = Cli::parse_with_origin();
    fedimds::logging::init(cli.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => return fail(EXIT_RUNTIME, format!("cannot start the runtime: {e}")),
    };
    let outcome = match cli.command {
        Command::Serve { config } => match Config::load(&config, &config::process_env) {
            Ok(loaded) => runtime.block_on(serve(config, loaded)),
            Err(e) => return fail(EXIT_CONFIG, e.to_string()),
        },
        Command::Check { config: path } => match Config::load(&path, &config::process_env) {
            Ok(config) => {
                let mut stdout = std::io::stdout();
                let passed =
                    runtime.block_on(fedimds::check::run_file(&path, &config, &mut stdout));
                return if passed {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(EXIT_RUNTIME)
                };
            }
            Err(e) => return fail(EXIT_CONFIG, e.to_string()),
        },
        Command::Config { config: path } => {
            match config::provenance::load(&path, &config::process_env) {
                Ok((_, entries)) => {
                    print!(
                        "{}",
                        config::provenance::render(&entries, &path, &config_origin)
                    );
                    Ok(())
                }
                Err(e) => return fail(EXIT_CONFIG, e.to_string()),
            }
        }
        Command::Demo { listen } => runtime.block_on(fedimds::demo::run(listen, shutdown_signal())),
        Command::Sim {
            listen,
            imds_latency,
            app_service_latency,
            entra_latency,
        } => {
            let world = fedimds_sim::SimConfig {
                imds_latency,
                app_service_latency,
                entra_latency,
                ..fedimds_sim::SimConfig::demo()
            };
            runtime.block_on(fedimds::demo::run_sim(world, listen, shutdown_signal()))
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(EXIT_RUNTIME, e),
    }
}

async fn serve(path: PathBuf, config: Config) -> Result<(), String> {
    let listeners = http::Listeners::bind(&config)
        .await
        .map_err(|e| e.to_string())?;
    let app = App::new(config).map_err(|e| e.to_string())?;
    tokio::spawn(fedimds::reload::watch(app.clone(), path));
    http::run(app, listeners, shutdown_signal())
        .await
        .map_err(|e| e.to_string())
}

/// Completes on SIGTERM (Kubernetes, systemd) or SIGINT (a terminal).
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM; stop with SIGINT");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutting down");
}

fn fail(code: u8, message: String) -> ExitCode {
    eprintln!("fedimds: {message}");
    ExitCode::from(code)
}
