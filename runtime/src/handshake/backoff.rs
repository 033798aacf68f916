//! Bounded retry schedule for handshake attempts (a pure helper; the session actor owns
//! the timer).
//!
//! Attempt `n` (1-based) waits `min(step × n, max_wait)` for its response before the next
//! attempt starts; after `max_attempts` the peer is given up (until something new, such as
//! a discovery event, resets the schedule). With the defaults the whole schedule is bounded
//! by 100 ms × (1 + … + 20) = 21 s.

use std::time::Duration;

/// Parameters of [`HandshakeBackoff`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffConfig {
    /// Linear step per attempt. Default 100 ms.
    pub step: Duration,
    /// Cap on the wait of any one attempt. Default 5 s.
    pub max_wait: Duration,
    /// Attempts before giving up. Default 20.
    pub max_attempts: u32,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            step: Duration::from_millis(100),
            max_wait: Duration::from_secs(5),
            max_attempts: 20,
        }
    }
}

/// Counts handshake attempts and says how long each may wait.
#[derive(Debug, Clone)]
pub struct HandshakeBackoff {
    config: BackoffConfig,
    attempts: u32,
}

impl HandshakeBackoff {
    /// A fresh schedule.
    pub fn new(config: BackoffConfig) -> Self {
        Self {
            config,
            attempts: 0,
        }
    }

    /// Starts the next attempt: returns how long to wait for its response, or `None` when
    /// the attempts are used up.
    pub fn next_attempt(&mut self) -> Option<Duration> {
        if self.attempts >= self.config.max_attempts {
            return None;
        }
        self.attempts += 1;
        Some(self.wait_of(self.attempts))
    }

    /// Attempts started so far.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Forgets past attempts (after success, or when the peer is heard from anew).
    pub fn reset(&mut self) {
        self.attempts = 0;
    }

    /// Upper bound on the time the whole schedule can take.
    pub fn total_budget(&self) -> Duration {
        (1..=self.config.max_attempts)
            .map(|n| self.wait_of(n))
            .sum()
    }

    fn wait_of(&self, attempt: u32) -> Duration {
        self.config
            .step
            .saturating_mul(attempt)
            .min(self.config.max_wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_capped_bounded() {
        let mut b = HandshakeBackoff::new(BackoffConfig {
            max_attempts: 60,
            ..BackoffConfig::default()
        });
        assert_eq!(b.next_attempt(), Some(Duration::from_millis(100)));
        assert_eq!(b.next_attempt(), Some(Duration::from_millis(200)));
        let rest: Vec<_> = std::iter::from_fn(|| b.next_attempt()).collect();
        assert_eq!(rest.len(), 58);
        assert_eq!(rest.last(), Some(&Duration::from_secs(5)));
        assert_eq!(b.next_attempt(), None);
        b.reset();
        assert_eq!(b.attempts(), 0);
        assert_eq!(
            HandshakeBackoff::new(BackoffConfig::default()).total_budget(),
            Duration::from_millis(21_000)
        );
    }
}
