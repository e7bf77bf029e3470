//! What was measured, the goals it is held to, and the table printed at the end (Markdown, so
//! it can go into BENCHMARKS.md as is).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::economy::Economy;
use crate::fleet::{Fleet, Layout};
use crate::hits::{HitPath, HitTable};
use crate::load::{Latencies, Run};
use crate::soak::Soak;
use crate::{median, median_of, quantiles, Settings};

const MIB: f64 = 1024.0;

/// Everything measured.
pub struct Report {
    pub settings: Settings,
    pub machine: Vec<(String, String)>,
    pub binary_bytes: u64,
    pub binary_stripped: bool,
    pub start_to_ready: Vec<Duration>,
    /// KiB, right after start.
    pub idle_rss_cold: Vec<u64>,
    /// KiB, idle after one token was fetched and served.
    pub idle_rss_warm: Vec<u64>,
    /// KiB, the peak during the cache-hit runs.
    pub load_rss: u64,
    pub stampede: Option<Latencies>,
    pub stampede_exchanges: u64,
    pub stampede_assertions: u64,
    /// Cache hits against the baseline: IMDS, then App Service and Service Fabric.
    pub hits: Vec<HitTable>,
    pub fill_time: Duration,
    pub fill_exchanges: u64,
    pub fill_assertions: u64,
    /// KiB, idle once every key is cached.
    pub keys_rss: u64,
    /// KiB, after the many-keys hit runs.
    pub keys_rss_after: u64,
    /// ("spread" | "single", connections) → one run per round.
    pub keys: BTreeMap<(&'static str, usize), Vec<Run>>,
    pub keys_hit_exchanges: u64,
    pub fleet: Option<Fleet>,
    pub economy: Option<Economy>,
    pub soak: Option<Soak>,
    /// Correctness failures: the run exits non-zero after printing the table.
    pub broken: Vec<String>,
}

/// The heading of the section of BENCHMARKS.md a full run writes.
const LATEST: &str = "## Latest run\n";

/// BENCHMARKS.md with its "Latest run" section (up to the next `## ` heading) replaced by
/// `report`, headed by the commit measured; the rest (what was tried, what is left) is
/// people's prose and stays. `None` when the file has no such section.
pub fn with_latest_run(benchmarks: &str, report: &str, commit: &str) -> Option<String> {
    let start = benchmarks.find(LATEST)? + LATEST.len();
    let end = benchmarks[start..]
        .find("\n## ")
        .map_or(benchmarks.len(), |i| start + i + 1);
    Some(format!(
        "{}\nWritten by `tests/bench/run` (the full run) at commit {commit}; the figures are \
         this one run's, on the machine below.\n\n{}\n\n{}",
        &benchmarks[..start],
        report.trim_end(),
        &benchmarks[end..]
    ))
}

impl Report {
    pub fn new(settings: Settings, root: &Path) -> Report {
        Report {
            machine: machine(root, settings.quick),
            settings,
            binary_bytes: 0,
            binary_stripped: false,
            start_to_ready: Vec::new(),
            idle_rss_cold: Vec::new(),
            idle_rss_warm: Vec::new(),
            load_rss: 0,
            stampede: None,
            stampede_exchanges: 0,
            stampede_assertions: 0,
            hits: Vec::new(),
            fill_time: Duration::ZERO,
            fill_exchanges: 0,
            fill_assertions: 0,
            keys_rss: 0,
            keys_rss_after: 0,
            keys: BTreeMap::new(),
            keys_hit_exchanges: 0,
            fleet: None,
            economy: None,
            soak: None,
            broken: Vec::new(),
        }
    }

    pub fn render(&self) -> String {
        let s = &self.settings;
        let mut out = String::new();
        let w = &mut out;
        let _ = writeln!(
            w,
            "### Machine and command{}\n",
            if s.quick { " (--quick)" } else { "" }
        );
        for (k, v) in &self.machine {
            let _ = writeln!(w, "- {k}: {v}");
        }
        let _ = writeln!(
            w,
            "- runs: {} rounds × {:.1} s measured (+{:.1} s warm-up) per point, medians quoted; \
             fedimds and the baseline alternate, the first of each round flipping",
            s.rounds,
            s.duration.as_secs_f64(),
            s.warmup.as_secs_f64()
        );

        for table in &self.hits {
            self.render_hits(w, table);
        }

        let _ = writeln!(
            w,
            "\n### Cold stampede: {} concurrent callers, one cold key, fresh daemon\n",
            crate::STAMPEDE
        );
        let _ = writeln!(
            w,
            "| exchanges (Entra) | assertion fetches (IMDS) | p50 ms | p99 ms | max ms |"
        );
        let _ = writeln!(w, "|---:|---:|---:|---:|---:|");
        if let Some(l) = &self.stampede {
            let _ = writeln!(
                w,
                "| {} | {} | {:.1} | {:.1} | {:.1} |",
                self.stampede_exchanges,
                self.stampede_assertions,
                l.quantile_us(0.5) / 1000.0,
                l.quantile_us(0.99) / 1000.0,
                l.max_us() / 1000.0
            );
        }

        let _ = writeln!(
            w,
            "\n### Many keys: {} distinct resources cached, fresh daemon\n",
            s.keys
        );
        let _ = writeln!(
            w,
            "Filled in {:.1} s over {} connections: {} exchanges, {} assertion fetches. \
             RSS idle once filled: {:.1} MiB; after the hit runs: {:.1} MiB. \
             Exchanges during the hit runs: {}.\n",
            self.fill_time.as_secs_f64(),
            crate::FILL_CONNS,
            self.fill_exchanges,
            self.fill_assertions,
            self.keys_rss as f64 / MIB,
            self.keys_rss_after as f64 / MIB,
            self.keys_hit_exchanges
        );
        let _ = writeln!(w, "| conns | keys hit | req/s | p50 / p99 / p99.9 µs |");
        let _ = writeln!(w, "|---:|---|---:|---:|");
        for conns in [1, 32] {
            for (name, label) in [
                ("single", "one".to_owned()),
                ("spread", format!("all {} at random", s.keys)),
            ] {
                let p = self.point(&self.keys, name, conns);
                let _ = writeln!(
                    w,
                    "| {conns} | {label} | {:.0} | {} |",
                    p.throughput,
                    us3(p.q)
                );
            }
        }

        let starts: Vec<f64> = self
            .start_to_ready
            .iter()
            .map(|d| d.as_secs_f64() * 1000.0)
            .collect();
        let _ = writeln!(w, "\n### Footprint\n");
        let _ = writeln!(w, "| what | value |");
        let _ = writeln!(w, "|---|---:|");
        let _ = writeln!(
            w,
            "| start to ready (spawn → first 200 on /readyz), median / max of {} | {:.1} / {:.1} ms |",
            starts.len(),
            median(&mut starts.clone()),
            starts.iter().copied().fold(0.0, f64::max)
        );
        let _ = writeln!(
            w,
            "| idle RSS right after start (median) | {:.1} MiB |",
            med_kib(&self.idle_rss_cold) / MIB
        );
        let _ = writeln!(
            w,
            "| idle RSS after one token fetched and served (median) | {:.1} MiB |",
            med_kib(&self.idle_rss_warm) / MIB
        );
        let _ = writeln!(
            w,
            "| peak RSS under load (IMDS cache-hit runs, up to {} conns) | {:.1} MiB |",
            s.conns.iter().max().unwrap_or(&0),
            self.load_rss as f64 / MIB
        );
        let _ = writeln!(
            w,
            "| binary size ({}) | {:.2} MiB |",
            if self.binary_stripped {
                "stripped"
            } else {
                "NOT stripped"
            },
            self.binary_bytes as f64 / MIB / MIB
        );

        self.render_fleet(w);
        self.render_economy(w);
        self.render_soak(w);

        let _ = writeln!(w, "\n### Goals\n");
        let _ = writeln!(w, "| goal | measured | result |");
        let _ = writeln!(w, "|---|---:|:---:|");
        for (goal, measured, pass) in self.goals() {
            let _ = writeln!(
                w,
                "| {goal} | {measured} | {} |",
                if pass { "PASS" } else { "MISS" }
            );
        }
        if !self.broken.is_empty() {
            let _ = writeln!(w, "\nBROKEN: {}", self.broken.join("; "));
        }
        out
    }

    fn render_hits(&self, w: &mut String, t: &HitTable) {
        let s = &self.settings;
        let what = match t.path {
            HitPath::Imds => "IMDS endpoint".to_owned(),
            HitPath::AppService => "App Service endpoint, `X-IDENTITY-HEADER`".to_owned(),
            HitPath::ServiceFabric => {
                "Service Fabric endpoint over TLS, `secret` header".to_owned()
            }
        };
        let _ = writeln!(
            w,
            "\n### Cache hits: fedimds vs baseline ({what}, {} B body, warm cache)\n",
            t.body_bytes
        );
        if t.rounds != s.rounds {
            let rounds = match t.rounds {
                1 => "One round".to_owned(),
                n => format!("{n} rounds"),
            };
            let _ = writeln!(w, "{rounds} per point here.\n");
        }
        let _ = writeln!(w, "| conns | fedimds req/s | baseline req/s | ratio | fedimds p50 / p99 / p99.9 µs | baseline p50 / p99 / p99.9 µs | p99 ratio |");
        let _ = writeln!(w, "|---:|---:|---:|---:|---:|---:|---:|");
        for &conns in &s.conns {
            let f = self.point(&t.runs, "fedimds", conns);
            let b = self.point(&t.runs, "baseline", conns);
            let _ = writeln!(
                w,
                "| {conns} | {:.0} | {:.0} | {:.2} | {} | {} | {:.2} |",
                f.throughput,
                b.throughput,
                f.throughput / b.throughput,
                us3(f.q),
                us3(b.q),
                f.q[1] / b.q[1]
            );
        }
        let _ = writeln!(
            w,
            "\nUpstream exchanges during these runs: {} (0 = every answer a hit).",
            t.exchanges
        );
        if t.path == HitPath::ServiceFabric {
            let _ = writeln!(
                w,
                "TLS 1.3 on both sides (tokio-rustls on ring, one rcgen certificate for both); \
                 the client trusts that certificate, keeps each connection alive and makes its \
                 handshake when opening it, before the warm-up: a handshake per connection, \
                 not per request, as clients pay it."
            );
        }
    }

    fn render_fleet(&self, w: &mut String) {
        let Some(fleet) = &self.fleet else { return };
        let f = &self.settings.fleet;
        let _ = writeln!(
            w,
            "\n### Fleet: {} sidecars vs one node daemon for {} callers, {} resources each \
             (simulator: IMDS {}, Entra {})\n",
            f.callers,
            f.callers,
            f.resources,
            crate::IMDS_LATENCY,
            crate::ENTRA_LATENCY
        );
        let _ = writeln!(
            w,
            "Every caller asks for the same {} resources at once, each request on its own \
             connection, all caches cold. Sidecars: {} `fedimds serve` processes (IMDS mode), \
             one per caller. Node: one process, {} `[[callers]]` each with its own \
             `secret_file`, asked in App Service mode with `X-IDENTITY-HEADER`.\n",
            f.resources, f.callers, f.callers
        );
        let _ = writeln!(
            w,
            "| layout | processes | exchanges (Entra) | assertion fetches (IMDS) | all served after |"
        );
        let _ = writeln!(w, "|---|---:|---:|---:|---:|");
        for r in &fleet.rollouts {
            let _ = writeln!(
                w,
                "| {} | {} | {} | {} | {:.2} s |",
                r.layout.label(),
                r.processes,
                r.exchanges,
                r.assertions,
                r.all_served.as_secs_f64()
            );
        }
        let _ = writeln!(
            w,
            "\nThe same on fresh daemons while Entra answers every exchange 429 with \
             `Retry-After: {}` (a scripted fault) for a {:.0} s window: first one request to \
             each process (its first 429), then every caller asks for every resource, again \
             every 250 ms on a 503 or 429 whatever `Retry-After` says, until the window ends. \
             The daemons keep the app parked for the whole `Retry-After`, so nobody is served \
             within the window.\n",
            crate::fleet::RETRY_AFTER.as_secs(),
            f.window.as_secs_f64()
        );
        let _ = writeln!(w, "| layout | processes | Entra calls: first requests | Entra calls after them, in the window | caller requests after them, in the window |");
        let _ = writeln!(w, "|---|---:|---:|---:|---:|");
        for t in &fleet.throttled {
            let _ = writeln!(
                w,
                "| {} | {} | {} | {} | {} |",
                t.layout.label(),
                t.processes,
                t.first_calls,
                t.beyond_first(),
                t.caller_requests_in_window,
            );
        }
    }

    fn render_economy(&self, w: &mut String) {
        let Some(economy) = &self.economy else { return };
        let Some(e) = &economy.settings else { return };
        let _ = writeln!(
            w,
            "\n### Economy: a cron fleet of {} processes, {} resources each (simulator: IMDS {}, Entra {})\n",
            e.processes,
            e.resources,
            crate::IMDS_LATENCY,
            crate::ENTRA_LATENCY
        );
        let _ = writeln!(
            w,
            "Each process is `python tests/bench/python/cron_job.py` with azure-identity \
             (tests/bench/requirements.txt), {} running at once. *direct*: \
             `ManagedIdentityCredential` for `api://AzureADTokenExchange` at the simulator's \
             IMDS, then `ClientAssertionCredential` at its Entra. *fedimds*: \
             `ManagedIdentityCredential` against one fedimds (cold at the start). Time to first \
             token is from spawn (the interpreter's start and imports included, alike on both \
             sides).\n",
            e.concurrency
        );
        let _ = writeln!(
            w,
            "| each process | exchanges (Entra) | assertion fetches (IMDS) | first token p50 / p99 ms | fleet wall time |"
        );
        let _ = writeln!(w, "|---|---:|---:|---:|---:|");
        for c in &economy.cron {
            let _ = writeln!(
                w,
                "| {} | {} | {} | {:.0} / {:.0} | {:.1} s |",
                c.mode,
                c.exchanges,
                c.assertions,
                c.first_token.quantile_us(0.5) / 1000.0,
                c.first_token.quantile_us(0.99) / 1000.0,
                c.wall.as_secs_f64()
            );
        }
        let _ = writeln!(
            w,
            "\nA long-lived process with no token cache (ms-rest style) making {} token calls in \
             a row on one keep-alive connection: *direct*, both hops per call (GET IMDS, POST \
             Entra); *fedimds*, one GET per call to a fedimds that starts cold.\n",
            e.calls
        );
        let _ = writeln!(
            w,
            "| per call | exchanges (Entra) | assertion fetches (IMDS) | p50 / p99 ms | total |"
        );
        let _ = writeln!(w, "|---|---:|---:|---:|---:|");
        for l in &economy.long_lived {
            let _ = writeln!(
                w,
                "| {} | {} | {} | {:.2} / {:.2} | {:.1} s |",
                l.mode,
                l.exchanges,
                l.assertions,
                l.latency.quantile_us(0.5) / 1000.0,
                l.latency.quantile_us(0.99) / 1000.0,
                l.wall.as_secs_f64()
            );
        }
    }

    fn render_soak(&self, w: &mut String) {
        let Some(soak) = &self.soak else { return };
        let s = &self.settings.soak;
        let _ = writeln!(
            w,
            "\n### Memory soak: `cache.idle_ttl = \"5s\"`, {} new resources every {} ms for {:.0} s, then {:.0} s idle\n",
            s.batch,
            s.every.as_millis(),
            s.churn.as_secs_f64(),
            s.after.as_secs_f64()
        );
        let _ = writeln!(
            w,
            "{} keys fetched in all. RSS after start {:.1} MiB; warmed up ({:.0} s into the \
             churn, when as many keys age out as arrive) {:.1} MiB; peak {:.1} MiB; final {:.1} MiB \
             ({:.2} × the warmed-up level).\n",
            soak.keys,
            soak.start_rss as f64 / MIB,
            s.warmup.as_secs_f64(),
            soak.warm_rss as f64 / MIB,
            soak.peak_rss as f64 / MIB,
            soak.final_rss as f64 / MIB,
            soak.ratio()
        );
        let _ = writeln!(w, "| s | RSS MiB |");
        let _ = writeln!(w, "|---:|---:|");
        let mut next = 0.0;
        for (at, rss) in &soak.samples {
            if *at + 0.01 >= next {
                let _ = writeln!(w, "| {at:.0} | {:.1} |", *rss as f64 / MIB);
                next += 5.0;
            }
        }
        let _ = writeln!(w, "| end | {:.1} |", soak.final_rss as f64 / MIB);
    }

    /// Per path: throughput ≥ 0.9 × the baseline's at 1, 32 and 256 connections, and p99 ≤
    /// 1.2 × at 32 (issue 16).
    fn hit_goals(&self) -> Vec<(String, String, bool)> {
        let mut goals = Vec::new();
        for t in &self.hits {
            let label = t.path.label();
            for &conns in &self.settings.conns {
                let f = self.point(&t.runs, "fedimds", conns);
                let b = self.point(&t.runs, "baseline", conns);
                let tput = f.throughput / b.throughput;
                goals.push((
                    format!(
                        "{label}: cache-hit throughput at {conns} conn{} ≥ 0.9 × baseline",
                        if conns == 1 { "" } else { "s" }
                    ),
                    format!("{tput:.2} ×"),
                    tput >= 0.9,
                ));
            }
            let f = self.point(&t.runs, "fedimds", 32);
            let b = self.point(&t.runs, "baseline", 32);
            let p99 = f.q[1] / b.q[1];
            goals.push((
                format!("{label}: cache-hit p99 at 32 conns ≤ 1.2 × baseline"),
                format!("{p99:.2} ×"),
                p99 <= 1.2,
            ));
        }
        goals
    }

    fn goals(&self) -> Vec<(String, String, bool)> {
        let single = self.point(&self.keys, "single", 1);
        let spread = self.point(&self.keys, "spread", 1);
        let keys_latency = spread.q[0] / single.q[0];
        let keys_rss = self.keys_rss as f64 / MIB;
        let idle = med_kib(&self.idle_rss_warm) / MIB;
        let mut starts: Vec<f64> = self
            .start_to_ready
            .iter()
            .map(|d| d.as_secs_f64() * 1000.0)
            .collect();
        let start = median(&mut starts);
        let size = self.binary_bytes as f64 / MIB / MIB;
        self.hit_goals()
            .into_iter()
            .chain([
                (
                    "stampede: exactly 1 exchange and 1 assertion fetch".into(),
                    format!(
                        "{} and {}",
                        self.stampede_exchanges, self.stampede_assertions
                    ),
                    self.stampede_exchanges == 1 && self.stampede_assertions == 1,
                ),
                (
                    format!("{} keys: RSS ≤ 40 MiB", self.settings.keys),
                    format!("{keys_rss:.1} MiB"),
                    keys_rss <= 40.0,
                ),
                (
                    format!(
                        "{} keys: hit p50 (1 conn) within 10 % of one key",
                        self.settings.keys
                    ),
                    format!("{:+.1} %", (keys_latency - 1.0) * 100.0),
                    keys_latency <= 1.10,
                ),
                (
                    "idle RSS ≤ 10 MiB (after one token)".into(),
                    format!("{idle:.1} MiB"),
                    idle <= 10.0,
                ),
                (
                    "start to ready ≤ 50 ms (median)".into(),
                    format!("{start:.1} ms"),
                    start <= 50.0,
                ),
                (
                    "stripped binary ≤ 15 MiB".into(),
                    format!("{size:.2} MiB"),
                    self.binary_stripped && size <= 15.0,
                ),
            ])
            .chain(self.new_goals())
            .collect()
    }

    fn new_goals(&self) -> Vec<(String, String, bool)> {
        let mut goals = Vec::new();
        if let Some(fleet) = &self.fleet {
            let k = self.settings.fleet.resources as u64;
            if let Some(node) = fleet.rollouts.iter().find(|r| r.layout == Layout::Node) {
                goals.push((
                    format!(
                        "fleet, node daemon: {k} exchanges and 1 assertion fetch for all callers"
                    ),
                    format!("{} and {}", node.exchanges, node.assertions),
                    node.exchanges == k && node.assertions == 1,
                ));
            }
            for t in &fleet.throttled {
                goals.push((
                    format!(
                        "fleet, Entra 429, {}: 0 Entra calls in the window after each process's first 429",
                        t.layout.label()
                    ),
                    format!("{}", t.beyond_first()),
                    t.beyond_first() == 0,
                ));
            }
        }
        if let Some(economy) = &self.economy {
            if let Some(c) = economy.cron.iter().find(|c| c.mode == "fedimds") {
                let k = self
                    .economy
                    .as_ref()
                    .and_then(|e| e.settings.as_ref())
                    .map_or(0, |e| e.resources as u64);
                goals.push((
                    format!(
                        "cron fleet through fedimds: {k} exchanges and 1 assertion fetch in all"
                    ),
                    format!("{} and {}", c.exchanges, c.assertions),
                    c.exchanges == k && c.assertions == 1,
                ));
            }
            if let Some(l) = economy.long_lived.iter().find(|l| l.mode == "fedimds") {
                goals.push((
                    "long-lived process through fedimds: 1 exchange for every call".into(),
                    format!("{}", l.exchanges),
                    l.exchanges == 1,
                ));
            }
        }
        if let Some(soak) = &self.soak {
            goals.push((
                "memory soak: final RSS within 10 % of the warmed-up level".into(),
                format!("{:+.1} %", (soak.ratio() - 1.0) * 100.0),
                soak.ratio() <= 1.10,
            ));
        }
        goals
    }

    fn point(
        &self,
        table: &BTreeMap<(&'static str, usize), Vec<Run>>,
        name: &str,
        conns: usize,
    ) -> Point {
        let runs = table
            .iter()
            .find(|((n, c), _)| *n == name && *c == conns)
            .map_or(&[][..], |(_, runs)| runs.as_slice());
        Point {
            throughput: median_of(runs, |r| r.throughput),
            q: [0, 1, 2].map(|i| median_of(runs, |r| quantiles(&r.latencies)[i])),
        }
    }
}

struct Point {
    throughput: f64,
    /// p50, p99, p99.9 in µs.
    q: [f64; 3],
}

fn us3(q: [f64; 3]) -> String {
    format!("{:.0} / {:.0} / {:.0}", q[0], q[1], q[2])
}

fn med_kib(values: &[u64]) -> f64 {
    median(&mut values.iter().map(|&v| v as f64).collect::<Vec<_>>())
}

/// The machine, and the exact command.
fn machine(root: &Path, quick: bool) -> Vec<(String, String)> {
    let nproc = std::thread::available_parallelism().map_or(0, usize::from);
    let model = command_output("lscpu", &[])
        .and_then(|out| {
            out.lines()
                .find_map(|l| l.trim_start().strip_prefix("Model name:"))
                .map(|model| model.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU (no lscpu)".to_owned());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines().find(|l| l.starts_with("MemTotal:")).map(|l| {
                let kib: f64 = l
                    .split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0.0);
                format!("{:.1} GiB", kib / MIB / MIB)
            })
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let rustc = command_output("rustc", &["--version"]).unwrap_or_default();
    let commit = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(root)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    vec![
        (
            "command".into(),
            format!("`tests/bench/run{}`", if quick { " --quick" } else { "" }),
        ),
        (
            "machine".into(),
            format!("nproc {nproc}; lscpu Model name: {model}; MemTotal {memory}; kernel {kernel}"),
        ),
        ("load average at start (1/5/15 min)".into(), load),
        (
            "toolchain".into(),
            format!("{} (commit {commit})", rustc.trim()),
        ),
    ]
}

fn command_output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}
