//! Retry schedule for failed calls: bounded attempts, exponential backoff with jitter.
//!
//! Attempt `n + 1` after `n` failures waits `min(initial × multiplierⁿ⁻¹, max)` scaled by a
//! jitter factor drawn uniformly from [0.5, 1.0] (so simultaneous callers spread out, and
//! the wait never exceeds the cap). Only errors the policy's `retryable` predicate accepts
//! are retried ([`RpcError::is_retryable`] by default). The caller owns the timer and,
//! for service calls, re-resolves the candidate nodes before each attempt.

use std::time::Duration;

use rand_core::RngCore;

use super::RpcError;

/// When to try a failed call again.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts in total, the first included (1 = never retry). Default 3.
    pub max_attempts: u32,
    /// Wait before the first retry, before jitter. Default 50 ms.
    pub initial_backoff: Duration,
    /// Cap on any wait, before jitter. Default 1 s.
    pub max_backoff: Duration,
    /// Growth factor per retry (1 = constant backoff). Default 2.
    pub multiplier: u32,
    /// Which errors may be retried. Default [`RpcError::is_retryable`].
    pub retryable: fn(&RpcError) -> bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(1),
            multiplier: 2,
            retryable: RpcError::is_retryable,
        }
    }
}

impl RetryPolicy {
    /// A policy that never retries.
    pub fn never() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// Sets the total number of attempts.
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// Sets the first wait and the cap.
    pub fn with_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_backoff = initial;
        self.max_backoff = max;
        self
    }

    /// After `attempts` attempts (≥ 1) the last of which failed with `error`: how long to
    /// wait before the next attempt, or `None` to give up (attempts used up, or the error
    /// is not retryable).
    pub fn next_attempt<R: RngCore + ?Sized>(
        &self,
        attempts: u32,
        error: &RpcError,
        rng: &mut R,
    ) -> Option<Duration> {
        if attempts >= self.max_attempts || !(self.retryable)(error) {
            return None;
        }
        Some(self.backoff(attempts.max(1), rng))
    }

    /// The jittered wait before retry number `retry` (1 = the first retry).
    pub fn backoff<R: RngCore + ?Sized>(&self, retry: u32, rng: &mut R) -> Duration {
        let base = self.base_backoff(retry);
        let nanos = u64::try_from(base.as_nanos()).unwrap_or(u64::MAX);
        let half = nanos / 2;
        // Uniform in [nanos - half, nanos]: the jitter factor lies in [0.5, 1.0].
        let jitter = if half == 0 {
            0
        } else {
            rng.next_u64() % (half + 1)
        };
        Duration::from_nanos(nanos - half + jitter)
    }

    /// The wait before retry number `retry` without jitter (its upper bound).
    pub fn base_backoff(&self, retry: u32) -> Duration {
        let mut wait = self.initial_backoff.min(self.max_backoff);
        for _ in 1..retry {
            if wait >= self.max_backoff {
                break;
            }
            wait = wait
                .saturating_mul(self.multiplier.max(1))
                .min(self.max_backoff);
        }
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::TransportError;
    use netrun_messages::rpc::Status;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn backoff_grows_is_capped_and_jittered_within_half() {
        let policy = RetryPolicy::default()
            .with_backoff(Duration::from_millis(50), Duration::from_millis(300));
        assert_eq!(policy.base_backoff(1), Duration::from_millis(50));
        assert_eq!(policy.base_backoff(2), Duration::from_millis(100));
        assert_eq!(policy.base_backoff(3), Duration::from_millis(200));
        assert_eq!(policy.base_backoff(4), Duration::from_millis(300));
        assert_eq!(policy.base_backoff(u32::MAX), Duration::from_millis(300));
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut seen = std::collections::BTreeSet::new();
        for retry in 1..6 {
            for _ in 0..200 {
                let wait = policy.backoff(retry, &mut rng);
                let base = policy.base_backoff(retry);
                assert!(wait <= base && wait >= base / 2, "{wait:?} vs {base:?}");
                seen.insert(wait);
            }
        }
        assert!(seen.len() > 100, "jitter must spread the waits");
    }

    #[test]
    fn stops_at_the_bound_and_skips_non_retryable() {
        let policy = RetryPolicy::default().with_max_attempts(3);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let timeout = RpcError::Timeout;
        assert!(policy.next_attempt(1, &timeout, &mut rng).is_some());
        assert!(policy.next_attempt(2, &timeout, &mut rng).is_some());
        assert_eq!(policy.next_attempt(3, &timeout, &mut rng), None);
        let transport = RpcError::Transport(TransportError::SessionClosed);
        assert!(policy.next_attempt(1, &transport, &mut rng).is_some());
        let internal = RpcError::from_status(Status::INTERNAL, "panic");
        assert!(policy.next_attempt(1, &internal, &mut rng).is_some());
        for error in [
            RpcError::NoRoute,
            RpcError::Cancelled,
            RpcError::CapabilityDenied,
            RpcError::from_status(Status::NOT_FOUND, ""),
            RpcError::from_status(Status::INVALID_ARGUMENT, ""),
            RpcError::from_status(Status::application(0x8001).expect("band"), "app"),
        ] {
            assert_eq!(policy.next_attempt(1, &error, &mut rng), None, "{error}");
        }
        assert_eq!(
            RetryPolicy::never().next_attempt(1, &timeout, &mut rng),
            None
        );
    }

    #[test]
    fn custom_predicate_is_honoured() {
        let policy = RetryPolicy {
            retryable: |e| matches!(e, RpcError::NoRoute),
            ..RetryPolicy::default()
        };
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        assert!(
            policy
                .next_attempt(1, &RpcError::NoRoute, &mut rng)
                .is_some()
        );
        assert_eq!(policy.next_attempt(1, &RpcError::Timeout, &mut rng), None);
    }

    #[test]
    fn zero_backoff_is_zero() {
        let policy = RetryPolicy::default().with_backoff(Duration::ZERO, Duration::ZERO);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        assert_eq!(policy.backoff(5, &mut rng), Duration::ZERO);
    }
}
