//! The economy table (issue 16): what fedimds saves against what users do instead, against the
//! simulator with a realistic latency.
//!
//! - A cron fleet: short-lived Python processes (`tests/bench/python/cron_job.py`), a few
//!   resources each, every one doing the two hops itself with the real azure-identity
//!   (`ManagedIdentityCredential` for the exchange audience, then `ClientAssertionCredential`)
//!   versus every one asking fedimds with `ManagedIdentityCredential`.
//! - A long-lived process with no token cache, asking on every call (ms-rest style): plain
//!   HTTP, both hops per call, versus one GET to fedimds per call.

use std::io::BufRead as _;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::client::{encode, Client};
use crate::load::Latencies;
use crate::{procs, Result, SimProc, World, APP_CLIENT_ID, MI_CLIENT_ID, TARGET_TENANT};

/// The cron jobs' resources (each a key of its own).
const RESOURCES: [&str; 3] = [
    "https://management.azure.com/",
    "https://graph.microsoft.com/",
    "https://vault.azure.net/",
];

/// How big.
#[derive(Debug, Clone)]
pub struct EconomySettings {
    /// Cron jobs per side.
    pub processes: usize,
    /// Resources per job.
    pub resources: usize,
    /// Jobs running at once.
    pub concurrency: usize,
    /// Token calls of the long-lived process, per side.
    pub calls: usize,
}

/// One side of the cron fleet.
#[derive(Debug, Clone)]
pub struct CronFleet {
    pub mode: &'static str,
    pub exchanges: u64,
    pub assertions: u64,
    /// Spawn to the first token, per process.
    pub first_token: Latencies,
    pub wall: Duration,
}

/// One side of the long-lived process.
#[derive(Debug, Clone)]
pub struct LongLived {
    pub mode: &'static str,
    pub exchanges: u64,
    pub assertions: u64,
    /// Per token call.
    pub latency: Latencies,
    pub wall: Duration,
}

/// Everything the economy measured.
#[derive(Debug, Clone, Default)]
pub struct Economy {
    pub cron: Vec<CronFleet>,
    pub long_lived: Vec<LongLived>,
    pub settings: Option<EconomySettings>,
}

/// Runs both measurements against `sim`.
pub async fn run(
    world: &World,
    sim: &SimProc,
    python: &Path,
    root: &Path,
    s: &EconomySettings,
) -> Result<Economy> {
    let mut economy = Economy {
        settings: Some(s.clone()),
        ..Economy::default()
    };
    let script = root.join("tests/bench/python/cron_job.py");
    let resources = &RESOURCES[..s.resources.min(RESOURCES.len())];
    for mode in ["direct", "fedimds"] {
        progress!(
            "economy: {} cron jobs ({mode}), {} at once",
            s.processes,
            s.concurrency
        );
        // Through fedimds: one daemon, cold, for the whole fleet, as on one VM.
        let daemon = match mode {
            "fedimds" => {
                let addr = procs::free_port()?;
                let config = crate::fleet::sidecar_config(addr, &sim.url);
                Some(world.daemon_with("economy-cron", addr, &config)?)
            }
            _ => None,
        };
        let host = match &daemon {
            Some(d) => format!("http://{}", d.addr),
            None => sim.url.clone(),
        };
        let env: Arc<Vec<(String, String)>> = Arc::new(vec![
            ("AZURE_POD_IDENTITY_AUTHORITY_HOST".into(), host),
            ("BENCH_ENTRA".into(), sim.url.clone()),
            ("BENCH_TENANT".into(), TARGET_TENANT.into()),
            ("BENCH_APP_ID".into(), APP_CLIENT_ID.into()),
            ("BENCH_MI_CLIENT_ID".into(), MI_CLIENT_ID.into()),
            // No proxy from the environment may carry loopback calls elsewhere.
            ("NO_PROXY".into(), "*".into()),
        ]);
        let before = sim.counters().await?;
        let started = Instant::now();
        let gate = Arc::new(tokio::sync::Semaphore::new(s.concurrency));
        let mut jobs = Vec::new();
        for _ in 0..s.processes {
            let gate = gate.clone();
            let env = env.clone();
            let mut command = Command::new(python);
            command
                .arg(&script)
                .arg(mode)
                .args(resources)
                .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            // SAFETY: prctl is async-signal-safe, and nothing else runs between fork and exec.
            unsafe {
                command.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
            jobs.push(tokio::spawn(async move {
                let _permit = gate.acquire().await?;
                tokio::task::spawn_blocking(move || job(command)).await?
            }));
        }
        let mut first = Vec::new();
        for job in jobs {
            first.push(job.await??.as_nanos() as u64);
        }
        let wall = started.elapsed();
        let after = sim.counters().await?;
        economy.cron.push(CronFleet {
            mode,
            exchanges: after.entra - before.entra,
            assertions: after.imds - before.imds,
            first_token: Latencies::new(first),
            wall,
        });
        if let Some(mut daemon) = daemon {
            daemon.proc.check_alive()?;
        }
    }

    for mode in ["direct", "fedimds"] {
        progress!(
            "economy: a long-lived process, {} token calls ({mode})",
            s.calls
        );
        let daemon = match mode {
            "fedimds" => {
                let addr = procs::free_port()?;
                let config = crate::fleet::sidecar_config(addr, &sim.url);
                Some(world.daemon_with("economy-long", addr, &config)?)
            }
            _ => None,
        };
        let before = sim.counters().await?;
        let mut samples = Vec::with_capacity(s.calls);
        let started = Instant::now();
        match &daemon {
            Some(d) => {
                let mut client = Client::open(d.addr).await?;
                let path = format!(
                    "/metadata/identity/oauth2/token?api-version=2018-02-01&resource={}",
                    encode(RESOURCES[0])
                );
                for _ in 0..s.calls {
                    let t = Instant::now();
                    client
                        .get(&path, &[("metadata", "true")])
                        .await?
                        .json_ok("fedimds")?;
                    samples.push(t.elapsed().as_nanos() as u64);
                }
            }
            None => {
                let mut client = Client::open(sim.addr).await?;
                for _ in 0..s.calls {
                    let t = Instant::now();
                    two_hops(&mut client, RESOURCES[0]).await?;
                    samples.push(t.elapsed().as_nanos() as u64);
                }
            }
        }
        let wall = started.elapsed();
        let after = sim.counters().await?;
        economy.long_lived.push(LongLived {
            mode,
            exchanges: after.entra - before.entra,
            assertions: after.imds - before.imds,
            latency: Latencies::new(samples),
            wall,
        });
        if let Some(mut daemon) = daemon {
            daemon.proc.check_alive()?;
        }
    }
    Ok(economy)
}

/// Runs one cron job (on a blocking thread); spawn to its `first` line. The job dies with the
/// driver (`PR_SET_PDEATHSIG`); each ends by itself once its three tokens are in hand.
fn job(mut command: Command) -> Result<Duration> {
    let spawned = Instant::now();
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start the cron job's python: {e}"))?;
    let stdout = child.stdout.take().ok_or("no stdout pipe")?;
    let mut first = None;
    let mut done = false;
    for line in std::io::BufReader::new(stdout).lines() {
        match line?.trim() {
            "first" => first = Some(spawned.elapsed()),
            "done" => done = true,
            _ => {}
        }
    }
    let output = child.wait_with_output()?;
    match first {
        Some(first) if done && output.status.success() => Ok(first),
        _ => Err(format!(
            "a cron job failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
                .lines()
                .last()
                .unwrap_or_default()
        )
        .into()),
    }
}

/// Both hops, as a client with no cache does them on every call: the assertion from IMDS,
/// then the exchange at Entra.
async fn two_hops(client: &mut Client, resource: &str) -> Result<()> {
    let imds = format!(
        "/metadata/identity/oauth2/token?api-version=2018-02-01&resource={}&client_id={MI_CLIENT_ID}",
        encode("api://AzureADTokenExchange")
    );
    let assertion = client.get(&imds, &[("metadata", "true")]).await?;
    let assertion = assertion.json_ok("IMDS")?;
    let assertion = assertion["access_token"]
        .as_str()
        .ok_or("IMDS answered without access_token")?;
    let scope = format!("{}/.default", resource.trim_end_matches('/'));
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", APP_CLIENT_ID),
        ("scope", scope.as_str()),
        (
            "client_assertion_type",
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        ),
        ("client_assertion", assertion),
    ];
    client
        .post_form(&format!("/{TARGET_TENANT}/oauth2/v2.0/token"), &form)
        .await?
        .json_ok("Entra")?;
    Ok(())
}
