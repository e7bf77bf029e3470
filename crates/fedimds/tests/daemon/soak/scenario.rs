//! The soak scenario (issue 16), for any number of keys and days: keys in use stay served
//! through hourly token lifetimes, Entra outages and throttling, refreshed ahead; and
//! everything a key holds (its slot, its token, its refresh timer, its remembered failure, its
//! tasks) leaves with it, so what the daemon holds follows the keys in use.
//!
//! Shared by the daemon suite (`tests/daemon/soak.rs`: three days, a hundred keys) and the
//! soak target (`tests/soak.rs`: thirty days, a thousand keys, optimized by
//! `tests/suites/soak.sh`).

use std::time::Duration;

use fedimds_sim::fault::{Fault, Route};
use fedimds_sim::{Sim, SimConfig, TokenSigning};
use tokio::time::sleep;

use crate::support::*;

/// Entra's tokens live an hour; fedimds refreshes each at 50 to 55 minutes
/// (`fedimds::token::refresh_window`), if it was asked for since its last fetch.
const LIFETIME: Duration = Duration::from_secs(3600);
/// The refresh points' range, in seconds after a fetch.
const REFRESH_AFTER: (f64, f64) = (3000.0, 3300.0);
/// Each key in use is asked for every 45 minutes, at a minute of its own: always once between
/// two refresh points, the least that keeps a key refreshed ahead (asking every minute would
/// only cost time).
const ASK_EVERY: u64 = 45;
/// Past the 45 minutes between asks (and housekeeping's 10 s), so keys in use stay; short of
/// the 50 minutes to a refresh point, so a key asked once leaves while its timer is pending:
/// a timer its eviction failed to stop would still be alive at the end.
const IDLE_TTL: Duration = Duration::from_secs(46 * 60);
/// Keys asked for once, each day at 10:00, to age out.
const CHURN_PER_DAY: usize = 50;
/// The last churn, this many minutes before the end: aged out by then (46), its timers not
/// yet due (50).
const LAST_CHURN_BEFORE_END: u64 = 48;
const LAST_CHURN: usize = 100;
/// Trouble ends this long before the end at least, so that every key has been fetched again
/// since (its refresh came due within the hour) and nothing is remembered.
const QUIET_AT_THE_END: u64 = 2 * 60;

const MINUTE: Duration = Duration::from_secs(60);

/// The scripted upstream trouble: (start minute, minutes, fault). Entra down (503) for three
/// minutes, and Entra throttling (429, `Retry-After: 120`, which parks the app for two minutes
/// from each 429) for two: both end before a token refreshed ahead would expire (its refresh
/// point is five minutes or more before expiry), so every caller is still served. The first
/// two days have one of each.
fn trouble() -> Vec<(u64, u64, Fault)> {
    let at = |day: u64, hour: u64, min: u64| (day * 24 + hour) * 60 + min;
    let down = || Fault::status(503).forever();
    let throttled = || Fault::status(429).retry_after("120").forever();
    vec![
        (at(1, 3, 17), 3, down()),
        (at(2, 9, 5), 2, throttled()),
        (at(8, 14, 2), 3, down()),
        (at(11, 18, 40), 2, throttled()),
        (at(15, 22, 41), 3, down()),
        (at(18, 1, 15), 2, throttled()),
        (at(22, 7, 30), 3, down()),
        (at(25, 16, 20), 2, throttled()),
        (at(29, 11, 11), 3, down()),
    ]
}

fn path(resource: &str) -> String {
    format!("/metadata/identity/oauth2/token?api-version=2018-02-01&resource={resource}")
}

/// Tasks alive on this test's runtime: the daemon's, the simulator's, and their connections'.
fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// Lets every task run until all of them wait (paused time moves only when none can run).
async fn settle() {
    sleep(Duration::from_millis(1)).await;
}

/// "day 3 14:05" for a minute of the run.
fn when(minute: u64) -> String {
    let (day, hour, min) = (minute / (24 * 60), minute / 60 % 24, minute % 60);
    format!("day {day} {hour:02}:{min:02}")
}

/// The value of the sample `name` (labels included, as written) in a `/metrics` exposition.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

/// Runs the scenario: `keys` keys in use for `days` days. Call on paused time.
pub async fn run(days: u64, keys: usize) {
    // The simulator's own tasks (its server), which leave with it at the end.
    let before = alive_tasks();
    let probe = Sim::start(SimConfig::demo(), ([127, 0, 0, 1], 0).into())
        .await
        .expect("simulator starts");
    let sim_tasks = alive_tasks() - before;
    probe.shutdown().await;
    settle().await;

    let mut sim = SimConfig::demo();
    sim.entra_token_lifetime = LIFETIME;
    // Up to 800,000 tokens: an HMAC each, not an RSA signature (fedimds never verifies one),
    // counted, not kept.
    sim.entra_token_signing = TokenSigning::Hs256;
    sim.keep_records = false;
    let h = start_with(sim, |raw| {
        raw.cache.idle_ttl = Some(IDLE_TTL.into());
    })
    .await;
    settle().await;
    // The daemon's fixed background tasks (listeners, housekeeping, ...) and the simulator's.
    let at_start = alive_tasks();

    let in_use: Vec<(String, String)> = (0..keys)
        .map(|i| {
            let resource = format!("https://in-use-{i}.example");
            (path(&resource), resource)
        })
        .collect();
    let end = days * 24 * 60;
    let trouble: Vec<_> = trouble()
        .into_iter()
        .filter(|(start, minutes, _)| start + minutes + QUIET_AT_THE_END <= end)
        .collect();
    assert!(
        !trouble.is_empty(),
        "{days} days are too few for any trouble"
    );
    let (mut served, mut churned, mut windows) = (0usize, 0usize, 0usize);
    let (mut entra_at_window_start, mut failed_windows) = (0, 0usize);
    for minute in 0..end {
        for (start, minutes, fault) in &trouble {
            if minute == *start {
                h.sim.push_fault(Route::Entra, fault.clone());
                entra_at_window_start = h.sim.counters().entra;
            }
            if minute == start + minutes {
                // Refreshes that came due in the window (the Entra requests it saw; in a
                // short window there may be none, refresh points being random) failed, and
                // are remembered.
                let failing = h.app.cache.remembered_failures();
                let asked = h.sim.counters().entra - entra_at_window_start;
                assert!(
                    asked == 0 || failing > 0,
                    "{}: {asked} Entra requests failed, no failure remembered",
                    when(minute)
                );
                h.sim.clear_faults();
                windows += 1;
                failed_windows += usize::from(asked > 0);
            }
        }
        let churn = if minute == end - LAST_CHURN_BEFORE_END {
            LAST_CHURN
        } else if minute % (24 * 60) == 10 * 60 {
            CHURN_PER_DAY
        } else {
            0
        };
        for j in 0..churn {
            let resource = format!("https://once-{minute}-{j}.example");
            let (status, body) = h.oneshot(&path(&resource)).await;
            assert_eq!(
                status,
                200,
                "{}, {resource} (asked once): {body}",
                when(minute)
            );
            churned += 1;
        }
        for (i, (path, resource)) in in_use.iter().enumerate() {
            if i as u64 % ASK_EVERY == minute % ASK_EVERY {
                let (status, body) = h.oneshot(path).await;
                assert_eq!(status, 200, "{}, {resource}: {body}", when(minute));
                served += 1;
            }
        }
        sleep(MINUTE).await;
    }
    assert_eq!(windows, trouble.len());
    assert!(
        failed_windows > 0,
        "no trouble window saw a refresh fail: the remembered failures were never tested"
    );
    assert_eq!(served, keys * (end / ASK_EVERY) as usize);

    // Refreshed ahead: one exchange per key every 50 to 55 minutes, give or take the few the
    // outages put off, plus one per churned key. Fetching only on demand after expiry would
    // make one per 90 minutes (asks are 45 apart); a refresh at every ask, or two timers per
    // key, one per 45 minutes or less. (Entra's requests: the refused ones count too, a few
    // per key an outage caught.)
    let exchanges = h.sim.counters().entra as usize;
    let seconds = (end * 60) as f64;
    let fewest = (keys as f64 * seconds / REFRESH_AFTER.1 * 0.99) as usize;
    let most = (keys as f64 * seconds / REFRESH_AFTER.0 * 1.01) as usize + churned;
    let text = h.metrics().await;
    let misses = metric(&text, "fedimds_cache_lookups_total{result=\"miss\"}") as usize;
    let failed = metric(&text, "fedimds_cache_refresh_failures_total") as usize;
    println!(
        "{days} days, {keys} keys in use, {churned} asked once: {served} served, {exchanges} \
         Entra requests, {misses} misses, {failed} refreshes failed in {windows} windows"
    );
    assert!(
        (fewest..=most).contains(&exchanges),
        "{exchanges} Entra requests for {keys} keys over {days} days, not in {fewest}..={most}"
    );
    // A miss is a caller waiting on a fetch: the first ask of each key, and a key whose
    // refresh an outage failed and whose token then lapsed before it was asked for again.
    assert!(failed > 0, "no refresh failed: the trouble missed");
    assert!(
        misses <= keys + churned + failed,
        "{misses} misses: {keys} keys and {churned} first asks, {failed} failed refreshes"
    );

    // The last churn aged out two minutes ago, its timers not yet due; the keys in use were
    // each asked for within the last 45 minutes, and the last trouble is long over.
    let (slots, timers) = (h.app.cache.key_count(), h.app.cache.timers());
    assert_eq!(slots, keys as u64, "slots held for {keys} keys in use");
    assert_eq!(timers, keys as u64, "refresh timers for {keys} keys in use");
    assert_eq!(
        h.app.cache.remembered_failures(),
        0,
        "failures remembered long after the last trouble"
    );

    // The simulator stops, and with it every upstream connection (and the daemon's task for
    // each): left are the daemon's own fixed tasks and one timer per key in use.
    h.sim.clone().shutdown().await;
    settle().await;
    assert_eq!(
        alive_tasks(),
        at_start - sim_tasks + keys,
        "tasks alive, with {at_start} at start (the simulator's {sim_tasks} among them) and \
         {keys} keys in use"
    );
}
