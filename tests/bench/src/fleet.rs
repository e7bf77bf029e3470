//! The fleet table (issue 14): N sidecars, each a `fedimds serve` process with its own cache,
//! against one node daemon serving N callers told apart by their own secrets (`[[callers]]`
//! with `secret_file`, App Service mode), every caller asking for the same K resources at once,
//! against the simulator with a realistic latency. Then the same with Entra answering 429 for a
//! window: how many upstream calls land inside it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::client::{encode, Client};
use crate::procs;
use crate::{Daemon, Result, SimProc, World};

/// An impatient client's pause before asking again after a 503 or 429, whatever `Retry-After`
/// says: the worst case for the upstream.
const RETRY_PAUSE: Duration = Duration::from_millis(250);
/// The longest one caller keeps asking before the run is declared broken.
const GIVE_UP: Duration = Duration::from_secs(90);

/// How big the fleet is.
#[derive(Debug, Clone)]
pub struct FleetSettings {
    /// Callers: sidecar processes, or callers of the node daemon.
    pub callers: usize,
    /// Resources each caller asks for at once.
    pub resources: usize,
    /// How long Entra answers 429 (and the `Retry-After` it sends).
    pub window: Duration,
}

/// Which way the fleet is deployed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One `fedimds serve` per caller (IMDS mode).
    Sidecars,
    /// One `fedimds serve` for every caller (App Service mode, a secret file per caller).
    Node,
}

impl Layout {
    pub fn label(self) -> &'static str {
        match self {
            Layout::Sidecars => "sidecars",
            Layout::Node => "node daemon",
        }
    }
}

/// The `Retry-After` of the scripted 429s: Entra's own 60 s, longer than the retry deadline of
/// one exchange (45 s), so a daemon parks the app at the first 429 instead of waiting it out.
pub const RETRY_AFTER: Duration = Duration::from_secs(60);

/// One cold rollout: every caller asks for every resource at once.
#[derive(Debug, Clone)]
pub struct Rollout {
    pub layout: Layout,
    pub processes: usize,
    pub exchanges: u64,
    pub assertions: u64,
    /// From the release of the callers to the last 200.
    pub all_served: Duration,
}

/// The same rollout while Entra answers 429 for a window.
#[derive(Debug, Clone)]
pub struct Throttled {
    pub layout: Layout,
    pub processes: usize,
    /// Entra calls of the first request to each process (one each: its first 429).
    pub first_calls: u64,
    /// Entra calls in the whole window, the first ones included.
    pub calls_in_window: u64,
    /// Requests callers sent after the first ones, during the window (each answered 503 or
    /// 429).
    pub caller_requests_in_window: u64,
}

impl Throttled {
    /// Entra calls in the window after each process's first 429 (goal: 0).
    pub fn beyond_first(&self) -> u64 {
        self.calls_in_window.saturating_sub(self.first_calls)
    }
}

/// Everything the fleet measured.
#[derive(Debug, Clone, Default)]
pub struct Fleet {
    pub rollouts: Vec<Rollout>,
    pub throttled: Vec<Throttled>,
}

fn resource(j: usize) -> String {
    format!("https://fleet{j}.example")
}

fn secret(i: usize) -> String {
    format!("fleet-caller-{i:03}-secret-0123456789abcdef")
}

/// Runs the four measurements against `sim` (which has the realistic latency).
pub async fn run(world: &World, sim: &SimProc, s: &FleetSettings) -> Result<Fleet> {
    let mut fleet = Fleet::default();
    for layout in [Layout::Sidecars, Layout::Node] {
        progress!(
            "fleet: {} for {} callers × {} resources, cold",
            layout.label(),
            s.callers,
            s.resources
        );
        let daemons = start(world, sim, layout, s.callers, "fleet")?;
        let before = sim.counters().await?;
        let started = Instant::now();
        let (served, _, all) = release(&daemons, layout, s, None).await?;
        if !all {
            return Err("a caller of the cold rollout was not served".into());
        }
        let after = sim.counters().await?;
        fleet.rollouts.push(Rollout {
            layout,
            processes: daemons.len(),
            exchanges: after.entra - before.entra,
            assertions: after.imds - before.imds,
            all_served: served - started,
        });
        check_alive(daemons)?;
    }
    for layout in [Layout::Sidecars, Layout::Node] {
        progress!(
            "fleet: {}, Entra answering 429 for {:?}",
            layout.label(),
            s.window
        );
        let daemons = start(world, sim, layout, s.callers, "fleet-429")?;
        let before = sim.counters().await?;
        let mut control = Client::open(sim.addr).await?;
        let push = format!(
            "/_sim/faults?route=entra&status=429&retry_after={}&times=forever",
            RETRY_AFTER.as_secs()
        );
        if control.post(&push).await?.status != 204 {
            return Err("the simulator refused the 429 script".into());
        }
        let started = Instant::now();
        // The first 429 of each process: one caller's first resource, on every daemon at once.
        let mut probes = Vec::new();
        for (i, daemon) in daemons.iter().enumerate() {
            let (path, headers) = request(layout, i, 0);
            let mut client = Client::open(daemon.addr).await?;
            probes.push(tokio::spawn(async move {
                let headers: Vec<(&str, &str)> = headers
                    .iter()
                    .map(|(n, v)| (n.as_str(), v.as_str()))
                    .collect();
                client.get(&path, &headers).await.map(|a| a.status)
            }));
        }
        for probe in probes {
            let status = probe.await??;
            if status != 503 && status != 429 {
                return Err(format!("a first request in the 429 window got {status}").into());
            }
        }
        let after_first = sim.counters().await?;
        let (_, requests, _) = release(&daemons, layout, s, Some(started + s.window)).await?;
        let at_close = sim.counters().await?;
        if control.delete("/_sim/faults").await?.status != 204 {
            return Err("the simulator did not drop its faults".into());
        }
        fleet.throttled.push(Throttled {
            layout,
            processes: daemons.len(),
            first_calls: after_first.entra - before.entra,
            calls_in_window: at_close.entra - before.entra,
            caller_requests_in_window: requests,
        });
        check_alive(daemons)?;
    }
    Ok(fleet)
}

/// Starts the daemons of `layout`.
fn start(
    world: &World,
    sim: &SimProc,
    layout: Layout,
    callers: usize,
    name: &str,
) -> Result<Vec<Daemon>> {
    match layout {
        Layout::Sidecars => (0..callers)
            .map(|i| {
                let addr = procs::free_port()?;
                world.daemon_with(
                    &format!("{name}-sidecar-{i:03}"),
                    addr,
                    &sidecar_config(addr, &sim.url),
                )
            })
            .collect(),
        Layout::Node => {
            let dir = world.run_dir.join(format!("{name}-secrets"));
            std::fs::create_dir_all(&dir)?;
            let mut files = Vec::new();
            for i in 0..callers {
                let file = dir.join(format!("caller-{i:03}"));
                std::fs::write(&file, format!("{}\n", secret(i)))?;
                files.push(file);
            }
            let addr = procs::free_port()?;
            let config = node_config(addr, &sim.url, &files)?;
            Ok(vec![world.daemon_with(
                &format!("{name}-node"),
                addr,
                &config,
            )?])
        }
    }
}

fn check_alive(mut daemons: Vec<Daemon>) -> Result<()> {
    for daemon in &mut daemons {
        daemon.proc.check_alive()?;
    }
    Ok(())
}

/// Every caller asks for every resource at once, each request on its own connection, asking
/// again after [`RETRY_PAUSE`] on a 503 or 429. With a `window_end`, callers stop asking then.
/// Returns when the last was served (or stopped), how many requests were sent, and whether
/// every caller was served.
async fn release(
    daemons: &[Daemon],
    layout: Layout,
    s: &FleetSettings,
    window_end: Option<Instant>,
) -> Result<(Instant, u64, bool)> {
    let mut requests = Vec::new();
    for i in 0..s.callers {
        let addr = match layout {
            Layout::Sidecars => daemons[i].addr,
            Layout::Node => daemons[0].addr,
        };
        for j in 0..s.resources {
            let (path, headers) = request(layout, i, j);
            requests.push((addr, path, headers, Client::open(addr).await?));
        }
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(requests.len()));
    let mut tasks = Vec::new();
    for (addr, path, headers, mut client) in requests {
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let since = Instant::now();
            let mut sent = 0;
            let headers: Vec<(&str, &str)> = headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            loop {
                if window_end.is_some_and(|end| Instant::now() >= end) {
                    return Ok::<_, crate::Error>((Instant::now(), sent, false));
                }
                sent += 1;
                let answer = client.get(&path, &headers).await?;
                match answer.status {
                    200 => return Ok((Instant::now(), sent, true)),
                    429 | 503 if since.elapsed() < GIVE_UP => {
                        tokio::time::sleep(RETRY_PAUSE).await;
                        // A daemon may close a connection after an error; open another.
                        client = Client::open(addr).await?;
                    }
                    status => {
                        return Err(format!(
                            "{addr}{path}: {status} {}",
                            String::from_utf8_lossy(&answer.body[..answer.body.len().min(300)])
                        )
                        .into())
                    }
                }
            }
        }));
    }
    let mut last = Instant::now();
    let mut sent = 0;
    let mut all_served = true;
    for task in tasks {
        let (done, count, served) = task.await??;
        last = last.max(done);
        sent += count;
        all_served &= served;
    }
    Ok((last, sent, all_served))
}

/// The path and headers of caller `i`'s request for resource `j`.
fn request(layout: Layout, i: usize, j: usize) -> (String, Vec<(String, String)>) {
    match layout {
        Layout::Sidecars => (
            format!(
                "/metadata/identity/oauth2/token?api-version=2018-02-01&resource={}",
                encode(&resource(j))
            ),
            vec![("metadata".to_owned(), "true".to_owned())],
        ),
        Layout::Node => (
            format!(
                "/msi/token?api-version=2019-08-01&resource={}",
                encode(&resource(j))
            ),
            vec![("x-identity-header".to_owned(), secret(i))],
        ),
    }
}

/// A sidecar: IMDS mode on loopback, the demo world's default target, admin off (a hundred of
/// them run at once).
pub fn sidecar_config(listen: SocketAddr, sim_url: &str) -> String {
    format!(
        r#"[server]
listen = "{listen}"

[admin]
listen = "off"
"#
    ) + &crate::demo_world(sim_url)
}

/// The node daemon: the same target, and one `[[callers]]` per caller, each recognised by the
/// secret in its own file (as `deploy/kubernetes/node/` mounts them).
fn node_config(listen: SocketAddr, sim_url: &str, files: &[std::path::PathBuf]) -> Result<String> {
    let mut config = sidecar_config(listen, sim_url);
    for (i, file) in files.iter().enumerate() {
        config.push_str(&format!(
            "\n[[callers]]\nname = \"ns-{i:03}\"\nsecret_file = \"{}\"\ntargets = [\"litware\"]\n",
            crate::path_str(file)?
        ));
    }
    Ok(config)
}
