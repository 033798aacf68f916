//! Exponential backoff between restarts of one child.
//!
//! The first crash after a stable run restarts at once (as OTP does): a single crash of a
//! long-lived child should cost a restart, not a wait. Each further consecutive crash waits
//! twice as long as the previous one, from `initial` up to `max`. A run of `reset_after`
//! without a crash (measured from the last start) forgets the streak.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// First non-zero delay; short enough that a transient fault costs little.
pub const DEFAULT_INITIAL: Duration = Duration::from_millis(10);
/// Delay cap; the MeshOS daemon backoff cap.
pub const DEFAULT_MAX: Duration = Duration::from_secs(60);
/// Crash-free run that resets the streak; the MeshOS stable-run threshold.
pub const DEFAULT_RESET_AFTER: Duration = Duration::from_secs(60);

/// Backoff policy of a supervisor (applied per child).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackoffConfig {
    /// Restart the first crash of a streak without delay.
    pub immediate_first: bool,
    /// First non-zero delay; doubles per consecutive crash.
    pub initial: Duration,
    /// Upper bound of the delay.
    pub max: Duration,
    /// A run this long since the last start resets the streak.
    pub reset_after: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            immediate_first: true,
            initial: DEFAULT_INITIAL,
            max: DEFAULT_MAX,
            reset_after: DEFAULT_RESET_AFTER,
        }
    }
}

impl BackoffConfig {
    /// No delay at all: every restart is immediate.
    pub fn none() -> Self {
        Self {
            immediate_first: true,
            initial: Duration::ZERO,
            max: Duration::ZERO,
            reset_after: DEFAULT_RESET_AFTER,
        }
    }
}

/// Backoff state of one child.
#[derive(Debug, Clone)]
pub struct Backoff {
    config: BackoffConfig,
    streak: u32,
    last_start: Option<Instant>,
}

impl Backoff {
    /// A child that has not crashed yet.
    pub fn new(config: BackoffConfig) -> Self {
        Self {
            config,
            streak: 0,
            last_start: None,
        }
    }

    /// Notes that the child (re)started at `now`.
    pub fn record_start(&mut self, now: Instant) {
        self.last_start = Some(now);
    }

    /// Notes a crash at `now` and returns how long to wait before restarting.
    pub fn on_crash(&mut self, now: Instant) -> Duration {
        if let Some(start) = self.last_start {
            if now.saturating_duration_since(start) >= self.config.reset_after {
                self.streak = 0;
            }
        }
        self.streak = self.streak.saturating_add(1);
        self.delay_for(self.streak)
    }

    /// Consecutive crashes in the current streak.
    pub fn streak(&self) -> u32 {
        self.streak
    }

    fn delay_for(&self, streak: u32) -> Duration {
        let doublings = if self.config.immediate_first {
            if streak <= 1 {
                return Duration::ZERO;
            }
            streak - 2
        } else {
            streak.saturating_sub(1)
        };
        // 2^31 * any non-zero initial is far past any sane cap; clamp the shift.
        let factor = 1u32 << doublings.min(31);
        self.config
            .initial
            .saturating_mul(factor)
            .min(self.config.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn doubles_from_initial_to_cap() {
        let t0 = Instant::now();
        let cfg = BackoffConfig {
            max: ms(100),
            ..BackoffConfig::default()
        };
        let mut b = Backoff::new(cfg);
        b.record_start(t0);
        let delays: Vec<_> = (0..7).map(|i| b.on_crash(t0 + ms(i))).collect();
        assert_eq!(
            delays,
            vec![ms(0), ms(10), ms(20), ms(40), ms(80), ms(100), ms(100)]
        );
    }

    #[test]
    fn without_immediate_first_starts_at_initial() {
        let t0 = Instant::now();
        let cfg = BackoffConfig {
            immediate_first: false,
            ..BackoffConfig::default()
        };
        let mut b = Backoff::new(cfg);
        assert_eq!(b.on_crash(t0), ms(10));
        assert_eq!(b.on_crash(t0), ms(20));
    }

    #[test]
    fn stable_run_resets_the_streak() {
        let t0 = Instant::now();
        let mut b = Backoff::new(BackoffConfig::default());
        b.record_start(t0);
        b.on_crash(t0);
        b.on_crash(t0);
        assert_eq!(b.streak(), 2);
        b.record_start(t0 + ms(1));
        assert_eq!(b.on_crash(t0 + Duration::from_secs(61)), Duration::ZERO);
        assert_eq!(b.streak(), 1);
    }

    #[test]
    fn huge_streak_saturates_at_cap() {
        let t0 = Instant::now();
        let mut b = Backoff::new(BackoffConfig::default());
        for _ in 0..200 {
            b.on_crash(t0);
        }
        assert_eq!(b.on_crash(t0), DEFAULT_MAX);
    }
}
