//! The memory soak on the real binary (issue 16): `cache.idle_ttl = "5s"`, a batch of new
//! resources every half second for a while, `VmRSS` sampled throughout and for a while after
//! the churn stops. Every key ages out within `idle_ttl` plus the idle sweep (README, "How it
//! behaves": within ten seconds), so memory should come back to what it was once the churn had
//! reached its steady state.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::client::encode;
use crate::load::Conn;
use crate::{procs, Result, World};

/// Connections the batches are sent over.
const CONNS: usize = 16;
/// How often RSS is sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(500);

/// How hard and how long.
#[derive(Debug, Clone)]
pub struct SoakSettings {
    /// New resources per batch.
    pub batch: usize,
    /// Between two batches.
    pub every: Duration,
    /// How long batches keep coming.
    pub churn: Duration,
    /// When, into the churn, memory is taken as warmed up: `idle_ttl` plus the idle sweep,
    /// after which as many keys leave as arrive.
    pub warmup: Duration,
    /// How long RSS is watched after the last batch.
    pub after: Duration,
}

/// What the soak measured.
#[derive(Debug, Clone, Default)]
pub struct Soak {
    /// (seconds since the first batch, KiB).
    pub samples: Vec<(f64, u64)>,
    /// KiB right after start, before any key.
    pub start_rss: u64,
    /// KiB at the warm-up point.
    pub warm_rss: u64,
    /// KiB at the end.
    pub final_rss: u64,
    /// KiB, the highest seen.
    pub peak_rss: u64,
    /// Keys ever fetched.
    pub keys: usize,
}

impl Soak {
    /// Final RSS over the warmed-up level (goal: ≤ 1.10).
    pub fn ratio(&self) -> f64 {
        self.final_rss as f64 / self.warm_rss.max(1) as f64
    }
}

/// Runs the soak against the quick simulator.
pub async fn run(world: &World, s: &SoakSettings) -> Result<Soak> {
    progress!(
        "memory soak: {} new resources every {:?} for {:?}, then {:?} idle",
        s.batch,
        s.every,
        s.churn,
        s.after
    );
    let addr = procs::free_port()?;
    let mut daemon = world.daemon_with("soak", addr, &config(addr, world.sim_url()))?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let pid = daemon.proc.pid();
    let mut soak = Soak {
        start_rss: procs::rss_kib(pid)?,
        ..Soak::default()
    };
    let mut conns = Vec::with_capacity(CONNS);
    for _ in 0..CONNS {
        conns.push(Arc::new(tokio::sync::Mutex::new(Conn::open(addr).await?)));
    }
    let started = Instant::now();
    let mut next_batch = started;
    let mut next_sample = started;
    let end_churn = started + s.churn;
    let end = end_churn + s.after;
    let mut batch_tasks: Vec<tokio::task::JoinHandle<Result<()>>> = Vec::new();
    while Instant::now() < end {
        let now = Instant::now();
        if now >= next_sample {
            let rss = procs::rss_kib(pid)?;
            let at = (now - started).as_secs_f64();
            soak.samples.push((at, rss));
            soak.peak_rss = soak.peak_rss.max(rss);
            if soak.warm_rss == 0 && now - started >= s.warmup {
                soak.warm_rss = rss;
            }
            next_sample += SAMPLE_EVERY;
        }
        if now >= next_batch && now < end_churn {
            let first = soak.keys;
            soak.keys += s.batch;
            // A daemon that falls behind only slows the churn; each connection's share waits
            // its turn on that connection.
            for (c, conn) in conns.iter().enumerate() {
                let conn = conn.clone();
                let paths: Vec<String> = (first + c..first + s.batch)
                    .step_by(CONNS)
                    .map(path)
                    .collect();
                batch_tasks.push(tokio::spawn(async move {
                    let mut conn = conn.lock().await;
                    for path in paths {
                        conn.get_ok(&path).await?;
                    }
                    Ok(())
                }));
            }
            next_batch += s.every;
        }
        let wake = if now < end_churn {
            next_sample.min(next_batch)
        } else {
            next_sample
        };
        tokio::time::sleep_until(wake).await;
        daemon.proc.check_alive()?;
    }
    for task in batch_tasks {
        task.await??;
    }
    soak.final_rss = procs::rss_kib(pid)?;
    Ok(soak)
}

fn path(i: usize) -> String {
    format!(
        "/metadata/identity/oauth2/token?api-version=2018-02-01&resource={}",
        encode(&format!("https://soak{i}.example"))
    )
}

/// The daemon as a new user would try it, with a short `idle_ttl`; the budget of new keys per
/// caller and the budget of Entra calls raised past the churn's 300 a second (the defaults, 50
/// and 20, would refuse or queue most of it, and the soak would measure the budgets).
fn config(listen: SocketAddr, sim_url: &str) -> String {
    format!(
        r#"[server]
listen = "{listen}"
new_keys_per_second = 100000.0

[admin]
listen = "off"

[cache]
idle_ttl = "5s"

[upstream]
max_requests_per_second = 100000.0
burst = 100000
"#
    ) + &crate::demo_world(sim_url)
}
