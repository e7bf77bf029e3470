//! The upstream budget: a token bucket per upstream (Entra, the assertion source) that every
//! call fedimds makes takes its turn from, so a burst of cold keys, a rollout or a refresh
//! wave never sends an upstream more than `rate` calls a second after `burst`.
//!
//! A call reserves its turn: the bucket says when it may go, and a turn later than the caller's
//! deadline is refused at once (nothing taken), so a cold miss learns in a moment that it would
//! wait past `server.miss_timeout` and gets 503 + `Retry-After` rather than a long wait. Turns
//! are handed out in the order they are asked for.
//!
//! A bucket of its own on tokio's clock rather than `governor`: governor is not in the tree,
//! its clocks are `std`'s or quanta's and its async wait sleeps on `futures-timer`, so paused
//! time in tests would not move it; and the reservation with a deadline is the one operation
//! needed.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

pub use crate::config::Rate;

/// One upstream's bucket.
#[derive(Debug)]
pub struct Budget {
    rate: Rate,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// Turns left; below zero, turns handed out ahead (the callers are waiting for them).
    tokens: f64,
    at: Instant,
}

impl Budget {
    /// A full bucket.
    pub fn new(rate: Rate) -> Self {
        Budget {
            rate,
            state: Mutex::new(State {
                tokens: f64::from(rate.burst),
                at: Instant::now(),
            }),
        }
    }

    /// The rate it was built with.
    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// Reserves the next turn: `Ok(when)` it may go, or `Err(wait)` when that would be after
    /// `deadline` (then nothing is taken, and `wait` is how long until the turn would come).
    pub fn reserve(&self, deadline: Option<Instant>) -> Result<Instant, Duration> {
        let now = Instant::now();
        // Each write is whole: a panic elsewhere cannot leave the bucket inconsistent.
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let refill = now.duration_since(state.at).as_secs_f64() * self.rate.per_second;
        state.tokens = (state.tokens + refill).min(f64::from(self.rate.burst));
        state.at = now;
        let short = 1.0 - state.tokens;
        let wait = if short <= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(short / self.rate.per_second)
        };
        let when = now + wait;
        if deadline.is_some_and(|deadline| when > deadline) {
            return Err(wait);
        }
        state.tokens -= 1.0;
        Ok(when)
    }

    /// Waits for the next turn, or says at once that it would come after `deadline`.
    pub async fn turn(&self, deadline: Option<Instant>) -> Result<(), Duration> {
        let when = self.reserve(deadline)?;
        tokio::time::sleep_until(when).await;
        Ok(())
    }
}

/// The two buckets, kept across reloads that do not change them.
#[derive(Debug)]
pub struct Budgets {
    /// Calls to Entra's token endpoint (`upstream.max_requests_per_second`, `upstream.burst`).
    pub entra: Budget,
    /// Calls to the assertion source (`upstream.assertion_requests_per_second`,
    /// `upstream.assertion_burst`); a token file is read, not called, and takes no turn.
    pub assertion: Budget,
}

impl Budgets {
    /// Full buckets for these rates.
    pub fn new(entra: Rate, assertion: Rate) -> Self {
        Budgets {
            entra: Budget::new(entra),
            assertion: Budget::new(assertion),
        }
    }
}

/// The lifetime the prefetch check assumes: Entra's access tokens live 60 to 90 minutes, and
/// the shortest gives the shortest refresh window (`docs/entra-exchange.md#refresh`).
pub const ASSUMED_LIFETIME: Duration = Duration::from_secs(3600);

/// Whether `keys` keys, all come due together (as after a start, a rollout, a burst of cold
/// keys), can be refreshed within the Entra budget inside the refresh window of a token of
/// `lifetime`: `None` when they can, else the arithmetic, for a warning.
pub fn shortfall(keys: u64, lifetime: Duration, rate: Rate) -> Option<Shortfall> {
    let (start, window) = crate::token::refresh_window(lifetime, None);
    let allowed = rate.calls_within(window).floor();
    let allowed = if allowed >= u64::MAX as f64 {
        u64::MAX
    } else {
        allowed as u64
    };
    (keys > allowed).then_some(Shortfall {
        keys,
        allowed,
        rate,
        lifetime,
        start,
        window,
    })
}

/// Keys the Entra budget cannot refresh in one refresh window, and why.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shortfall {
    /// Keys that come due.
    pub keys: u64,
    /// Calls the budget allows within the window.
    pub allowed: u64,
    /// The budget.
    pub rate: Rate,
    /// The token lifetime the window is of.
    pub lifetime: Duration,
    /// When the window opens after the token is issued.
    pub start: Duration,
    /// How long it lasts.
    pub window: Duration,
}

impl Shortfall {
    /// Keys beyond what the budget can refresh.
    pub fn beyond(&self) -> u64 {
        self.keys - self.allowed
    }
}

impl std::fmt::Display for Shortfall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let minutes = |d: Duration| d.as_secs_f64() / 60.0;
        write!(
            f,
            "{} keys need {} calls to Entra within the {:.1} min refresh window of a {:.0} min token (from {:.1} to {:.1} min after it is issued, when keys fetched together come due together), but upstream.max_requests_per_second = {} with upstream.burst = {} allows {} + {} x {} s = {}: {} keys would be refreshed late or expire first; raise upstream.max_requests_per_second to at least {:.1}",
            self.keys,
            self.keys,
            minutes(self.window),
            minutes(self.lifetime),
            minutes(self.start),
            minutes(self.start + self.window),
            self.rate.per_second,
            self.rate.burst,
            self.rate.burst,
            self.rate.per_second,
            self.window.as_secs(),
            self.allowed,
            self.beyond(),
            (self.keys.saturating_sub(u64::from(self.rate.burst))) as f64
                / self.window.as_secs_f64().max(1.0),
        )
    }
}

/// What start-up, reload and `fedimds check` say about the budget: whether the keys the config
/// prefetches could all be refreshed within it, each come due in the same window as the others
/// (they are fetched together at start).
pub fn warnings(config: &crate::config::Config) -> Vec<String> {
    let keys: usize = config.targets.iter().map(|t| t.prefetch.len()).sum();
    shortfall(
        u64::try_from(keys).unwrap_or(u64::MAX),
        ASSUMED_LIFETIME,
        config.upstream.entra_rate,
    )
    .map(|s| format!("the budget of Entra calls is too small for what is prefetched: {s}"))
    .into_iter()
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn turns_come_at_the_rate_after_the_burst_and_in_order() {
        let budget = Budget::new(Rate {
            per_second: 10.0,
            burst: 5,
        });
        let start = Instant::now();
        let turns: Vec<Duration> = (0..25)
            .map(|_| budget.reserve(None).unwrap() - start)
            .collect();
        // Five at once, then one every 100 ms.
        assert!(turns[..5].iter().all(|t| t.is_zero()), "{turns:?}");
        for (i, turn) in turns[5..].iter().enumerate() {
            let expected = Duration::from_millis(100 * (i as u64 + 1));
            let off = turn.abs_diff(expected);
            assert!(off < Duration::from_millis(1), "turn {i}: {turn:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_turn_past_the_deadline_is_refused_at_once_and_takes_nothing() {
        let budget = Budget::new(Rate {
            per_second: 1.0,
            burst: 1,
        });
        let deadline = Some(Instant::now() + Duration::from_secs(3));
        assert!(budget.reserve(deadline).is_ok());
        assert!(budget.reserve(deadline).is_ok()); // at 1 s
        assert!(budget.reserve(deadline).is_ok()); // at 2 s
        assert!(budget.reserve(deadline).is_ok()); // at 3 s
        let wait = budget.reserve(deadline).unwrap_err();
        assert!(wait > Duration::from_secs(3), "{wait:?}");
        // The refusal took nothing: the next turn is still at 4 s.
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert_eq!(budget.reserve(Some(Instant::now())), Ok(Instant::now()));
    }

    #[test]
    fn the_shortfall_states_its_arithmetic() {
        let rate = Rate {
            per_second: 1.0,
            burst: 40,
        };
        // An hour's token: a 5-minute window, 40 + 1 x 300 = 340 calls.
        assert_eq!(shortfall(340, ASSUMED_LIFETIME, rate), None);
        let s = shortfall(1000, ASSUMED_LIFETIME, rate).unwrap();
        assert_eq!((s.allowed, s.beyond()), (340, 660));
        let text = s.to_string();
        for part in [
            "1000 keys need 1000 calls to Entra within the 5.0 min refresh window of a 60 min token",
            "from 50.0 to 55.0 min",
            "upstream.max_requests_per_second = 1 with upstream.burst = 40 allows 40 + 1 x 300 s = 340",
            "660 keys would be refreshed late",
            "at least 3.2",
        ] {
            assert!(text.contains(part), "{part:?} in {text}");
        }
    }

    #[test]
    fn calls_within_a_window() {
        let rate = Rate {
            per_second: 20.0,
            burst: 40,
        };
        assert_eq!(rate.calls_within(Duration::from_secs(300)), 6040.0);
    }
}
