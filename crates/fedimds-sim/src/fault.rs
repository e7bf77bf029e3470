//! Scripted replies: a FIFO queue of [`Fault`]s per [`Route`], consulted before normal handling,
//! like linkerd's identity controller that answers from a queue of scripted replies.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

/// The three upstreams the simulator serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Route {
    /// `GET /metadata/identity/oauth2/token`.
    Imds,
    /// `GET /msi/token`.
    AppService,
    /// `POST /{tenant}/oauth2/v2.0/token`.
    Entra,
    /// The rest of IMDS: instance metadata, attested document, scheduled events, versions.
    Metadata,
}

/// One scripted reply. Status 200 with a `delay` means "wait, then answer normally".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// HTTP status to answer, e.g. 429, 503, 410, 400; 200 answers normally after `delay`.
    pub status: u16,
    /// `Retry-After` header value, sent verbatim.
    pub retry_after: Option<String>,
    /// How long to wait before answering; uses tokio time, so paused test time works.
    pub delay: Option<Duration>,
    /// Entra only: answer Entra's error JSON for this AADSTS code (with `status`).
    pub aadsts: Option<u32>,
    /// How many requests this fault answers; `usize::MAX` means forever.
    pub times: usize,
    /// Entra only, on a normal answer: the token's `expires_in` instead of the configured one.
    pub expires_in: Option<u64>,
    /// Entra only, on a normal answer: this many bytes of padding in an extra field, for an
    /// answer larger than any real one.
    pub padding: usize,
}

// === impl Fault ===

impl Fault {
    /// A fault answering `status` once.
    pub fn status(status: u16) -> Fault {
        Fault {
            status,
            retry_after: None,
            delay: None,
            aadsts: None,
            times: 1,
            expires_in: None,
            padding: 0,
        }
    }

    /// An Entra rejection with this AADSTS code, HTTP 400, once.
    pub fn aadsts(code: u32) -> Fault {
        Fault {
            aadsts: Some(code),
            ..Fault::status(400)
        }
    }

    /// A slow but otherwise normal answer.
    pub fn slow(delay: Duration) -> Fault {
        Fault::status(200).delay(delay)
    }

    /// Sends `Retry-After: value`.
    pub fn retry_after(mut self, value: &str) -> Fault {
        self.retry_after = Some(value.to_owned());
        self
    }

    /// A normal Entra answer whose token lives `seconds`.
    pub fn expires_in(seconds: u64) -> Fault {
        Fault {
            expires_in: Some(seconds),
            ..Fault::status(200)
        }
    }

    /// A normal Entra answer padded with `bytes` more.
    pub fn padded(bytes: usize) -> Fault {
        Fault {
            padding: bytes,
            ..Fault::status(200)
        }
    }

    /// Waits `delay` before answering.
    pub fn delay(mut self, delay: Duration) -> Fault {
        self.delay = Some(delay);
        self
    }

    /// Answers `n` requests (`usize::MAX` = forever).
    pub fn times(mut self, n: usize) -> Fault {
        self.times = n;
        self
    }

    /// Answers every request until the queue is cleared.
    pub fn forever(self) -> Fault {
        self.times(usize::MAX)
    }

    /// Whether this fault replaces the normal answer rather than only delaying or shaping it.
    pub fn replaces_answer(&self) -> bool {
        self.status != 200
    }
}

/// The per-route queues.
#[derive(Debug, Default)]
pub(crate) struct FaultQueues {
    queues: HashMap<Route, VecDeque<Fault>>,
}

// === impl FaultQueues ===

impl FaultQueues {
    pub(crate) fn push(&mut self, route: Route, fault: Fault) {
        // A fault that answers nothing would only confuse the script.
        if fault.times > 0 {
            self.queues.entry(route).or_default().push_back(fault);
        }
    }

    pub(crate) fn clear(&mut self) {
        self.queues.clear();
    }

    /// Takes one use of the head fault of `route`, dropping it once used up.
    pub(crate) fn next(&mut self, route: Route) -> Option<Fault> {
        let queue = self.queues.get_mut(&route)?;
        let head = queue.front_mut()?;
        let fault = head.clone();
        if head.times != usize::MAX {
            head.times -= 1;
            if head.times == 0 {
                queue.pop_front();
            }
        }
        Some(fault)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_is_fifo_and_counts_down() {
        let mut queues = FaultQueues::default();
        queues.push(Route::Entra, Fault::status(429).times(2));
        queues.push(Route::Entra, Fault::status(503));
        let statuses: Vec<_> = std::iter::from_fn(|| queues.next(Route::Entra))
            .map(|f| f.status)
            .collect();
        assert_eq!(statuses, [429, 429, 503]);
        assert!(queues.next(Route::Imds).is_none());
    }

    #[test]
    fn forever_never_runs_out() {
        let mut queues = FaultQueues::default();
        queues.push(Route::Imds, Fault::status(410).forever());
        for _ in 0..10 {
            assert_eq!(queues.next(Route::Imds).map(|f| f.status), Some(410));
        }
    }
}
