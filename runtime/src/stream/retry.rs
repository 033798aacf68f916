//! Backoff schedules for senders that meet backpressure.
//!
//! The core never retries or buffers on the application's behalf: `send` answers
//! [`StreamError::Backpressure`](super::StreamError::Backpressure) at once. These pure
//! schedules are what the async layer drives:
//!
//! - `send_with_retry(bytes, policy)`: call `send`; on `Backpressure`, wait
//!   `policy.delay(attempt)` *or* until the session actor reports that a grant opened the
//!   stream's credit, whichever comes first, then try again; when `delay` returns `None`
//!   the caller gets `Backpressure`.
//! - `send_blocking(bytes, policy)`: the same loop with a [`BlockingPolicy`], which keeps
//!   retrying with capped backoff until its total wait budget is spent.
//!
//! Any other error (`Closed`, `Failed`, `TooLarge`) ends either loop at once.

use std::time::Duration;

/// Exponential backoff with a bounded number of attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Wait before the first retry.
    pub initial: Duration,
    /// Largest single wait.
    pub max_delay: Duration,
    /// Retries after the first refused send.
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    /// 1 ms doubling to 256 ms, 10 retries: about 0.76 s in all, several round trips of a
    /// slow link, short enough that a caller learns of a stuck peer quickly.
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(1),
            max_delay: Duration::from_millis(256),
            max_attempts: 10,
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `attempt` (0-based), or `None` once the attempts are
    /// spent. Doubles from `initial`, capped at `max_delay`.
    pub fn delay(&self, attempt: u32) -> Option<Duration> {
        if attempt >= self.max_attempts {
            return None;
        }
        Some(backoff(self.initial, self.max_delay, attempt))
    }

    /// Every wait in order.
    pub fn schedule(&self) -> impl Iterator<Item = Duration> + '_ {
        (0..).map_while(|attempt| self.delay(attempt))
    }

    /// Total time the schedule waits.
    pub fn total(&self) -> Duration {
        self.schedule()
            .fold(Duration::ZERO, Duration::saturating_add)
    }
}

/// Capped exponential backoff bounded by total waiting time (`send_blocking`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockingPolicy {
    /// Wait before the first retry.
    pub initial: Duration,
    /// Largest single wait.
    pub max_delay: Duration,
    /// Total wait after which the caller gets `Backpressure`.
    pub budget: Duration,
}

impl Default for BlockingPolicy {
    /// 1 ms doubling to 1 s, for at most 60 s: longer than a reliable stream's default
    /// give-up time (18 s), so a dead peer surfaces as `Failed` rather than a timeout.
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(1),
            max_delay: Duration::from_secs(1),
            budget: Duration::from_secs(60),
        }
    }
}

impl BlockingPolicy {
    /// The wait before retry `attempt` when `waited` has already passed, trimmed so the
    /// total never exceeds the budget; `None` once the budget is spent.
    pub fn delay(&self, attempt: u32, waited: Duration) -> Option<Duration> {
        let left = self.budget.checked_sub(waited).filter(|d| !d.is_zero())?;
        Some(backoff(self.initial, self.max_delay, attempt).min(left))
    }
}

fn backoff(initial: Duration, max: Duration, attempt: u32) -> Duration {
    let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
    initial.saturating_mul(factor).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn retry_schedule_doubles_caps_and_ends() {
        let p = RetryPolicy::default();
        let s: Vec<_> = p.schedule().collect();
        assert_eq!(s.len(), 10);
        assert_eq!(&s[..3], &[MS, 2 * MS, 4 * MS]);
        assert_eq!(s[9], 256 * MS);
        assert_eq!(p.delay(10), None);
        assert_eq!(p.total(), 767 * MS);
        let huge = RetryPolicy {
            max_attempts: 100,
            ..p
        };
        assert_eq!(huge.delay(99), Some(256 * MS));
    }

    #[test]
    fn blocking_respects_budget() {
        let p = BlockingPolicy {
            budget: 100 * MS,
            ..BlockingPolicy::default()
        };
        assert_eq!(p.delay(0, Duration::ZERO), Some(MS));
        assert_eq!(p.delay(9, 90 * MS), Some(10 * MS));
        assert_eq!(p.delay(3, 100 * MS), None);
        let mut waited = Duration::ZERO;
        let mut attempt = 0;
        while let Some(d) = p.delay(attempt, waited) {
            waited += d;
            attempt += 1;
        }
        assert_eq!(waited, 100 * MS);
    }
}
