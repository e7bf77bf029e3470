//! A per-route latency with uniform jitter: real IMDS answers in about 5–20 ms and Entra in
//! about 80–250 ms, so a benchmark against a simulator that answers in microseconds would
//! understate what every upstream call costs a caller (BENCHMARKS.md, "Fleet" and "Economy").

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How long a route waits before each answer: uniformly between `min` and `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Latency {
    /// The shortest wait.
    pub min: Duration,
    /// The longest wait (at least `min`).
    pub max: Duration,
}

// === impl Latency ===

impl Latency {
    /// A wait between `min` and `max`, in either order.
    pub fn between(min: Duration, max: Duration) -> Latency {
        Latency {
            min: min.min(max),
            max: min.max(max),
        }
    }

    /// Always the same wait.
    pub fn fixed(wait: Duration) -> Latency {
        Latency::between(wait, wait)
    }

    /// Parses `MIN..MAX` or a single `WAIT`, each read by `duration` (e.g. `humantime`):
    /// `5ms..20ms`, `80ms..250ms`, `100ms`.
    pub fn parse<E: std::fmt::Display>(
        text: &str,
        duration: impl Fn(&str) -> Result<Duration, E>,
    ) -> Result<Latency, String> {
        let read = |part: &str| {
            duration(part.trim()).map_err(|e| {
                format!("{part:?} is not a duration ({e}); write MIN..MAX, e.g. 80ms..250ms")
            })
        };
        match text.split_once("..") {
            Some((min, max)) => Ok(Latency::between(read(min)?, read(max)?)),
            None => Ok(Latency::fixed(read(text)?)),
        }
    }

    /// The wait for one answer, `unit` in `[0, 1)` placing it between `min` and `max`.
    pub fn at(&self, unit: f64) -> Duration {
        let span = self.max.saturating_sub(self.min);
        self.min + span.mul_f64(unit.clamp(0.0, 1.0))
    }
}

impl std::fmt::Display for Latency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}..{:?}", self.min, self.max)
    }
}

/// Uniform numbers in `[0, 1)` for the jitter: splitmix64 over a shared counter, seeded once.
/// Not for secrets; it only spreads waits.
#[derive(Debug)]
pub(crate) struct Jitter(AtomicU64);

// === impl Jitter ===

impl Jitter {
    pub(crate) fn new(seed: u64) -> Jitter {
        Jitter(AtomicU64::new(seed))
    }

    pub(crate) fn next_unit(&self) -> f64 {
        let mut z = self
            .0
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        // The top 53 bits, as a fraction of 2^53: exactly representable, below 1.
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn parse_ms(text: &str) -> Result<Duration, String> {
        text.strip_suffix("ms")
            .and_then(|n| n.parse().ok())
            .map(ms)
            .ok_or_else(|| "no ms".to_owned())
    }

    #[test]
    fn parses_a_range_or_one_value() {
        assert_eq!(
            Latency::parse("80ms..250ms", parse_ms),
            Ok(Latency::between(ms(80), ms(250)))
        );
        assert_eq!(Latency::parse(" 7ms ", parse_ms), Ok(Latency::fixed(ms(7))));
        // Written backwards still means the same range.
        assert_eq!(
            Latency::parse("20ms..5ms", parse_ms),
            Ok(Latency::between(ms(5), ms(20)))
        );
        let error = Latency::parse("fast..250ms", parse_ms).unwrap_err();
        assert!(
            error.contains("\"fast\"") && error.contains("MIN..MAX"),
            "{error}"
        );
    }

    #[test]
    fn jitter_spreads_waits_over_the_whole_range() {
        let latency = Latency::between(ms(80), ms(250));
        let jitter = Jitter::new(7);
        let waits: Vec<Duration> = (0..10_000)
            .map(|_| latency.at(jitter.next_unit()))
            .collect();
        assert!(waits.iter().all(|w| (ms(80)..=ms(250)).contains(w)));
        // Uniform: about a tenth in each tenth of the range, and both ends reached.
        for decile in 0..10u64 {
            let low = ms(80) + ms(17 * decile);
            let in_decile = waits
                .iter()
                .filter(|w| (low..low + ms(17)).contains(*w))
                .count();
            assert!(
                (800..1200).contains(&in_decile),
                "decile {decile}: {in_decile}"
            );
        }
        assert!(waits.iter().any(|w| *w < ms(82)) && waits.iter().any(|w| *w > ms(248)));
    }
}
