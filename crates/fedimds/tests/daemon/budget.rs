//! The upstream budget, on paused time: however many keys are asked for at once, fedimds calls
//! Entra and the assertion source no faster than `upstream.max_requests_per_second` (and
//! `upstream.assertion_requests_per_second`) after their bursts; a cold miss waits its turn
//! within `server.miss_timeout` or is told at once to come back; refreshes are spread over
//! their window so they fit the budget and leave room for cold keys.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use fedimds_sim::fault::{Fault, Route};
use fedimds_sim::SimConfig;
use tokio::time::{sleep, Instant};

use crate::support::*;

const MISS_TIMEOUT: Duration = Duration::from_secs(20);

fn path(resource: &str) -> String {
    format!("/metadata/identity/oauth2/token?api-version=2018-02-01&resource={resource}")
}

/// One answer as a caller saw it: status, Retry-After, the message, and how long it took.
struct Answer {
    status: u16,
    retry_after: Option<u64>,
    message: String,
    took: Duration,
}

/// A request straight into the router (no socket: ten thousand connects on paused time
/// would depend on the accept backlog), with its headers.
async fn ask(h: &Harness, resource: &str) -> Answer {
    use tower::ServiceExt as _;
    let started = Instant::now();
    let request = axum::http::Request::get(path(resource))
        .header("Host", "localhost")
        .header("Metadata", "true")
        .body(axum::body::Body::empty())
        .unwrap();
    let response = fedimds::http::router(h.app.clone())
        .oneshot(request)
        .await
        .unwrap();
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok()?.parse().ok());
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    Answer {
        status,
        retry_after,
        message: body["error_description"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        took: started.elapsed(),
    }
}

/// Samples a counter of the simulator every `every` until dropped: (when, count) pairs.
struct Sampler {
    samples: Arc<Mutex<Vec<(Instant, u64)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    fn start(count: impl Fn() -> u64 + Send + 'static, every: Duration) -> Sampler {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let samples = samples.clone();
            async move {
                loop {
                    samples.lock().unwrap().push((Instant::now(), count()));
                    sleep(every).await;
                }
            }
        });
        Sampler { samples, task }
    }

    /// Stops sampling, takes a last sample, and returns them all.
    fn stop(self, count: u64) -> Vec<(Instant, u64)> {
        self.task.abort();
        let mut samples = self.samples.lock().unwrap().clone();
        samples.push((Instant::now(), count));
        samples
    }
}

/// Asserts that between every two samples no more calls were counted than the budget allows
/// in that time (the burst, plus the rate), with one call of slack for a call counted just
/// after its turn. Returns the most calls seen in any second.
fn assert_within(samples: &[(Instant, u64)], rate: f64, burst: u64, what: &str) -> u64 {
    let mut busiest = 0;
    for (i, (from, before)) in samples.iter().enumerate() {
        for (to, after) in &samples[i + 1..] {
            let calls = after - before;
            let allowed = burst as f64 + rate * (*to - *from).as_secs_f64() + 1.0;
            assert!(
                calls as f64 <= allowed,
                "{what}: {calls} calls in {:?} (from {:?}), the budget allows {allowed}",
                *to - *from,
                *from - samples[0].0,
            );
            if *to - *from <= Duration::from_secs(1) {
                busiest = busiest.max(calls);
            }
        }
    }
    busiest
}

#[tokio::test(start_paused = true)]
async fn ten_thousand_cold_keys_at_once_stay_within_the_entra_budget() {
    const KEYS: usize = 10_000;
    let h = start_with(SimConfig::demo(), |raw| {
        raw.upstream.max_requests_per_second = Some(20.0);
        raw.upstream.burst = Some(40);
        raw.server.miss_timeout = Some(MISS_TIMEOUT.into());
        // One caller asking for ten thousand keys: its own budget of new keys is not what
        // this test is about.
        raw.server.new_keys_per_second = Some(100_000.0);
    })
    .await;
    let h = Arc::new(h);
    let sampler = {
        let sim = h.sim.clone();
        Sampler::start(move || sim.counters().entra, Duration::from_millis(100))
    };
    let callers: Vec<_> = (0..KEYS)
        .map(|i| {
            let h = h.clone();
            tokio::spawn(async move { ask(&h, &format!("https://r{i}.example")).await })
        })
        .collect();
    let mut answers = Vec::with_capacity(KEYS);
    for caller in callers {
        answers.push(caller.await.unwrap());
    }
    let samples = sampler.stop(h.sim.counters().entra);
    let busiest = assert_within(&samples, 20.0, 40, "Entra");

    let served = answers.iter().filter(|a| a.status == 200).count();
    let refused: Vec<&Answer> = answers.iter().filter(|a| a.status != 200).collect();
    for a in &answers {
        assert!(
            a.took <= MISS_TIMEOUT,
            "a caller waited {:?}, past server.miss_timeout",
            a.took
        );
    }
    for a in &refused {
        assert_eq!(a.status, 503, "{}", a.message);
        assert!(a.retry_after.is_some_and(|s| s >= 1), "{}", a.message);
    }
    // Those the budget had no turn for are told so at once, with the key and the budget named.
    let over_budget: Vec<&&Answer> = refused
        .iter()
        .filter(|a| a.message.contains("budget of calls to Entra"))
        .collect();
    assert!(
        over_budget.len() >= KEYS / 2,
        "{} of {} refusals name the budget: {}",
        over_budget.len(),
        refused.len(),
        refused[0].message
    );
    for a in &over_budget {
        assert!(
            a.took < Duration::from_secs(1),
            "refused after {:?}",
            a.took
        );
        assert!(a.message.contains("upstream.max_requests_per_second"));
        assert!(
            a.message.contains("for resource https://r"),
            "{}",
            a.message
        );
    }
    // The budget was used, not merely refused: about its burst and 15 s of its rate.
    assert!(
        (200..=40 + 20 * 20).contains(&served),
        "{served} served, busiest second {busiest} calls"
    );
    let text = h.metrics().await;
    assert!(
        text.contains("fedimds_upstream_budget_refusals_total{upstream=\"entra\"}"),
        "{text}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_assertion_source_gets_no_more_than_its_budget() {
    let h = start_with(SimConfig::demo(), |raw| {
        raw.upstream.assertion_requests_per_second = Some(10.0);
        raw.upstream.assertion_burst = Some(5);
        raw.upstream.max_requests_per_second = Some(100_000.0);
        raw.upstream.burst = Some(100_000);
        raw.server.new_keys_per_second = Some(100_000.0);
    })
    .await;
    let h = Arc::new(h);
    // Entra refuses every assertion as expired: each key asks for a fresh one (keys failing
    // together share one), so the assertion source is asked for one every few keys, as fast
    // as the keys come: more than its budget has turns for within the callers' wait.
    h.sim
        .push_fault(Route::Entra, Fault::aadsts(700024).forever());
    let sampler = {
        let sim = h.sim.clone();
        Sampler::start(move || sim.counters().imds, Duration::from_millis(100))
    };
    let callers: Vec<_> = (0..1500)
        .map(|i| {
            let h = h.clone();
            tokio::spawn(async move { ask(&h, &format!("https://r{i}.example")).await })
        })
        .collect();
    let mut answers = Vec::new();
    for caller in callers {
        answers.push(caller.await.unwrap());
    }
    let imds = h.sim.counters().imds;
    let samples = sampler.stop(imds);
    assert_within(&samples, 10.0, 5, "IMDS");
    assert!(imds > 20, "the assertion source was asked {imds} times");
    assert!(
        answers.iter().any(|a| a.status == 503
            && a.message
                .contains("budget of calls to the assertion source")
            && a.message.contains("upstream.assertion_requests_per_second")),
        "some callers are told the assertion budget is spent"
    );
    for a in &answers {
        assert!(a.took <= Duration::from_secs(20), "{:?}", a.took);
    }
}

#[tokio::test(start_paused = true)]
async fn refreshes_of_five_thousand_keys_spread_within_budget_and_leave_room_for_cold_keys() {
    const KEYS: usize = 5_000;
    const RATE: f64 = 50.0;
    let mut sim = SimConfig::demo();
    sim.entra_token_lifetime = Duration::from_secs(3600);
    let mut raw = None;
    let h = start_with(sim, |r| {
        // The keys are fetched in one burst (a start-up, a rollout), so without spreading
        // their refreshes would come due together.
        r.upstream.max_requests_per_second = Some(100_000.0);
        r.upstream.burst = Some(100_000);
        r.server.new_keys_per_second = Some(100_000.0);
        raw = Some(r.clone());
    })
    .await;
    let h = Arc::new(h);
    let keys: Vec<usize> = (0..KEYS).collect();
    for chunk in keys.chunks(250) {
        let callers: Vec<_> = chunk
            .iter()
            .map(|&i| {
                let h = h.clone();
                tokio::spawn(async move { ask(&h, &format!("https://r{i}.example")).await })
            })
            .collect();
        for caller in callers {
            let a = caller.await.unwrap();
            assert_eq!(a.status, 200, "{}", a.message);
        }
    }
    let fetched_at = Instant::now();
    // Then the budget the test is about: 50 calls a second, bursts of 50. Over the 5 minutes
    // of an hour's token's refresh window that is 15,050 calls, room enough for 5,000 keys
    // if they are spread, and not if they come due within a minute (83 a second).
    let mut raw = raw.unwrap();
    raw.upstream.max_requests_per_second = Some(RATE);
    raw.upstream.burst = Some(50);
    h.app.reload(load(&raw)).expect("the reload applies");
    // Every key in use (a refresh is only for keys used since their fetch).
    sleep(Duration::from_secs(60)).await;
    for i in 0..KEYS {
        assert_eq!(ask(&h, &format!("https://r{i}.example")).await.status, 200);
    }
    let exchanges_before = h.sim.counters().entra;
    sleep(Duration::from_secs(48 * 60) - fetched_at.elapsed()).await;
    let sampler = {
        let sim = h.sim.clone();
        Sampler::start(move || sim.counters().entra, Duration::from_secs(1))
    };
    // Through the refresh window and past it, a cold key every second: each is served.
    let mut cold = 0;
    while fetched_at.elapsed() < Duration::from_secs(57 * 60) {
        let a = ask(&h, &format!("https://cold-{cold}.example")).await;
        assert_eq!(
            a.status,
            200,
            "a cold key {:?} after the burst: {}",
            fetched_at.elapsed(),
            a.message
        );
        cold += 1;
        sleep(Duration::from_secs(1)).await;
    }
    let samples = sampler.stop(h.sim.counters().entra);
    let busiest = assert_within(&samples, RATE, 50, "Entra");
    let text = h.metrics().await;
    let figure = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} in {text}"))
    };
    assert_eq!(
        figure("fedimds_cache_refresh_failures_total "),
        0.0,
        "every refresh landed"
    );
    assert!(figure("fedimds_cache_refreshes_total ") >= KEYS as f64);
    let calls = h.sim.counters().entra - exchanges_before;
    assert!(
        calls as usize >= KEYS + cold,
        "{calls} calls for {KEYS} refreshes and {cold} cold keys"
    );
    // Spread: the refreshes came at about 5,000 over 5 minutes, well under the budget.
    assert!(busiest <= 40, "{busiest} calls in one second: bunched");
    // Every key still has its token, none expired and fetched on demand.
    for i in (0..KEYS).step_by(97) {
        assert_eq!(ask(&h, &format!("https://r{i}.example")).await.status, 200);
    }
    assert_eq!(h.sim.counters().entra - exchanges_before, calls);
}

/// Replicas started together do not prefetch in step: each waits a random part of two
/// seconds first.
#[tokio::test(start_paused = true)]
async fn replicas_started_together_prefetch_apart() {
    const REPLICAS: usize = 20;
    let sim = fedimds_sim::Sim::start(SimConfig::demo(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let apps: Vec<_> = (0..REPLICAS)
        .map(|_| {
            let mut raw = fedimds::demo::raw_config(&sim.url(), "127.0.0.1:0".parse().unwrap());
            target(&mut raw, "litware").prefetch = strings(&[GRAPH]);
            let app = fedimds::app::App::new(load(&raw)).unwrap();
            tokio::spawn(app.clone().prefetch());
            app
        })
        .collect();
    let started = Instant::now();
    let mut ready_at = vec![None; REPLICAS];
    while ready_at.iter().any(Option::is_none) && started.elapsed() < Duration::from_secs(10) {
        for (app, at) in apps.iter().zip(&mut ready_at) {
            if at.is_none() && app.is_ready() {
                *at = Some(started.elapsed());
            }
        }
        sleep(Duration::from_millis(100)).await;
    }
    let ready_at: Vec<Duration> = ready_at.into_iter().map(Option::unwrap).collect();
    let (first, last) = (
        ready_at.iter().min().unwrap(),
        ready_at.iter().max().unwrap(),
    );
    assert!(
        *last - *first >= Duration::from_millis(500),
        "{REPLICAS} replicas all ready within {:?}: {ready_at:?}",
        *last - *first
    );
    assert!(*last <= Duration::from_secs(3), "{ready_at:?}");
    let mut tenths: Vec<u128> = ready_at.iter().map(|d| d.as_millis() / 100).collect();
    tenths.dedup();
    tenths.sort_unstable();
    tenths.dedup();
    assert!(tenths.len() >= 5, "{ready_at:?}");
}

/// Start-up and `fedimds check` say when what is prefetched cannot all be refreshed within the
/// budget, with the arithmetic.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_prefetch_the_budget_cannot_refresh_is_warned_about_with_the_arithmetic() {
    let sim = fedimds_sim::Sim::start(SimConfig::demo(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut raw = fedimds::demo::raw_config(&sim.url(), "127.0.0.1:0".parse().unwrap());
    let resources: Vec<String> = (0..400).map(|i| format!("https://r{i}.example")).collect();
    target(&mut raw, "contoso").prefetch = Some(resources);
    raw.upstream.max_requests_per_second = Some(0.5);
    raw.upstream.burst = Some(1);
    let config = load(&raw);
    let expected = [
        "400 keys need 400 calls to Entra within the 5.0 min refresh window of a 60 min token",
        "upstream.max_requests_per_second = 0.5 with upstream.burst = 1 allows 1 + 0.5 x 300 s = 151",
        "raise upstream.max_requests_per_second to at least 1.3",
    ];
    let (logs, guard) = LogCapture::install();
    let app = fedimds::app::App::new(config.clone()).unwrap();
    drop(guard);
    let logged = logs.text();
    for part in expected {
        assert!(
            logged.contains(part),
            "{part:?} in the start-up log:\n{logged}"
        );
    }
    // A reload says it again.
    let (logs, guard) = LogCapture::install();
    app.reload(config.clone()).unwrap();
    drop(guard);
    let logged = logs.text();
    for part in expected {
        assert!(
            logged.contains(part),
            "{part:?} in the reload's log:\n{logged}"
        );
    }
    drop(app);
    let mut out = Vec::new();
    fedimds::check::run(&config, &mut out).await;
    // The report wraps its lines: compare with the wrapping undone.
    let report = String::from_utf8(out).unwrap();
    let flat = report.split_whitespace().collect::<Vec<_>>().join(" ");
    for part in expected {
        assert!(flat.contains(part), "{part:?} in the report:\n{report}");
    }
    // Within budget, nothing is said.
    raw.upstream.max_requests_per_second = Some(2.0);
    let (logs, guard) = LogCapture::install();
    let _app = fedimds::app::App::new(load(&raw)).unwrap();
    drop(guard);
    assert!(!logs.text().contains("too small"), "{}", logs.text());
}

/// At runtime, a gauge (and one log line) says when the keys held could not all be refreshed
/// within the budget, and again when they fit.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_keys_held_are_weighed_against_the_budget_at_runtime() {
    let mut raw = None;
    let h = start_with(SimConfig::demo(), |r| {
        r.upstream.max_requests_per_second = Some(1000.0);
        r.upstream.burst = Some(1000);
        r.server.new_keys_per_second = Some(1000.0);
        raw = Some(r.clone());
    })
    .await;
    for i in 0..100 {
        assert_eq!(ask(&h, &format!("https://r{i}.example")).await.status, 200);
    }
    let gauge = |text: &str| -> f64 {
        text.lines()
            .find_map(|l| {
                l.strip_prefix("fedimds_upstream_budget_shortfall ")?
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|| panic!("the gauge in {text}"))
    };
    sleep(Duration::from_secs(11)).await;
    assert_eq!(gauge(&h.metrics().await), 0.0);
    // 0.1 calls a second, bursts of 1: 1 + 0.1 x 299 s (the window of the simulator's
    // 3599 s tokens) = 30 refreshes, for 100 keys.
    let mut raw = raw.unwrap();
    raw.upstream.max_requests_per_second = Some(0.1);
    raw.upstream.burst = Some(1);
    let (logs, guard) = LogCapture::install();
    h.app.reload(load(&raw)).unwrap();
    sleep(Duration::from_secs(11)).await;
    assert_eq!(gauge(&h.metrics().await), 70.0);
    sleep(Duration::from_secs(30)).await;
    raw.upstream.max_requests_per_second = Some(10.0);
    h.app.reload(load(&raw)).unwrap();
    sleep(Duration::from_secs(11)).await;
    drop(guard);
    assert_eq!(gauge(&h.metrics().await), 0.0);
    let text = logs.text();
    assert_eq!(
        text.matches("the budget of Entra calls is too small for the keys held")
            .count(),
        1,
        "logged once while it lasts:\n{text}"
    );
    assert!(text.contains("100 keys need 100 calls"), "{text}");
    assert!(
        text.contains("fit the budget of Entra calls again"),
        "{text}"
    );
}
