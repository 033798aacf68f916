//! The lossy link the two-endpoint simulations (`sim.rs`, `stream_sim.rs`) run over: a
//! virtual clock origin and a seeded delay line with per-direction loss, duplication,
//! latency jitter (which reorders) and partition windows.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The simulation's arbitrary origin; only offsets from it matter.
#[allow(clippy::disallowed_methods)]
pub(crate) fn origin() -> Instant {
    Instant::now()
}

/// How one direction of the link treats what is sent on it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LinkConfig {
    /// Probability a send is lost.
    pub(crate) loss: f64,
    /// Probability a send that is not lost arrives twice.
    pub(crate) duplicate: f64,
    /// Fixed delay of every copy.
    pub(crate) latency: Duration,
    /// Extra delay drawn uniformly below this, per copy.
    pub(crate) jitter: Duration,
    /// Offsets from the origin during which everything sent is dropped.
    pub(crate) partition: Option<(Duration, Duration)>,
}

/// One copy in flight, ordered by arrival time then send order.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Flight<T> {
    /// When it arrives.
    pub(crate) at: Instant,
    seq: u64,
    /// The endpoint it arrives at.
    pub(crate) to: usize,
    /// What was sent.
    pub(crate) payload: T,
}

/// Everything in flight, with the one RNG that decides its fate.
pub(crate) struct DelayLine<T> {
    origin: Instant,
    rng: ChaCha8Rng,
    queue: BinaryHeap<Reverse<Flight<T>>>,
    seq: u64,
}

impl<T: Clone + Ord> DelayLine<T> {
    /// An empty line whose partition windows count from `origin`.
    pub(crate) fn new(origin: Instant, seed: u64) -> Self {
        Self {
            origin,
            rng: ChaCha8Rng::seed_from_u64(seed),
            queue: BinaryHeap::new(),
            seq: 0,
        }
    }

    /// Sends `payload` to endpoint `to` under `config`; returns how many copies will
    /// arrive (0, 1 or 2).
    pub(crate) fn send(&mut self, config: &LinkConfig, now: Instant, to: usize, payload: T) -> u32 {
        let t = now - self.origin;
        let cut = config.partition.is_some_and(|(s, e)| s <= t && t < e);
        if cut || self.rng.gen_bool(config.loss) {
            return 0;
        }
        let copies = if self.rng.gen_bool(config.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let jitter = config.jitter.as_nanos() as u64;
            let extra = if jitter == 0 {
                0
            } else {
                self.rng.gen_range(0..jitter)
            };
            self.seq += 1;
            self.queue.push(Reverse(Flight {
                at: now + config.latency + Duration::from_nanos(extra),
                seq: self.seq,
                to,
                payload: payload.clone(),
            }));
        }
        copies
    }

    /// When the next copy arrives.
    pub(crate) fn next_at(&self) -> Option<Instant> {
        self.queue.peek().map(|Reverse(f)| f.at)
    }

    /// The next copy due by `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<Flight<T>> {
        if self.next_at()? <= now {
            self.queue.pop().map(|Reverse(f)| f)
        } else {
            None
        }
    }
}
