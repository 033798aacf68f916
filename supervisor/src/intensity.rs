//! Restart intensity: at most `max_restarts` restarts within `period`, else escalate.
//!
//! The default is 10 restarts in 60 s. OTP's 3 in 5 s suits a local process tree, but a
//! network node sees bursts of peer failures (a flapping link drops several sessions at
//! once), and the per-child crash-loop gate already stops one bad child from spinning; the
//! supervisor-wide limit only has to catch a subtree that cannot reach a stable state.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Default restarts allowed per period (see the module docs for why 10).
pub const DEFAULT_MAX_RESTARTS: u32 = 10;
/// Default intensity period; matches the crash-loop window of the MeshOS defaults.
pub const DEFAULT_PERIOD: Duration = Duration::from_secs(60);

/// Restart intensity limit of one supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartIntensity {
    /// Restarts allowed within `period`; one more escalates.
    pub max_restarts: u32,
    /// Sliding window the restarts are counted in.
    pub period: Duration,
}

impl Default for RestartIntensity {
    fn default() -> Self {
        Self {
            max_restarts: DEFAULT_MAX_RESTARTS,
            period: DEFAULT_PERIOD,
        }
    }
}

/// The limit was exceeded: the supervisor must fail and let its parent decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exceeded {
    /// Restarts counted in the window, including the refused one.
    pub restarts: u32,
}

/// Sliding-window restart counter. Holds at most `max_restarts + 1` timestamps.
#[derive(Debug, Clone)]
pub struct IntensityTracker {
    limit: RestartIntensity,
    window: VecDeque<Instant>,
}

impl IntensityTracker {
    /// A tracker with no restarts recorded.
    pub fn new(limit: RestartIntensity) -> Self {
        Self {
            limit,
            window: VecDeque::new(),
        }
    }

    /// Records a restart at `now`; `Err` when it is one too many for the window.
    pub fn record(&mut self, now: Instant) -> Result<(), Exceeded> {
        self.prune(now);
        self.window.push_back(now);
        let count = u32::try_from(self.window.len()).unwrap_or(u32::MAX);
        if count > self.limit.max_restarts {
            // Keep the window bounded even if the caller ignores the error.
            self.window.pop_front();
            return Err(Exceeded { restarts: count });
        }
        Ok(())
    }

    /// Restarts counted in the window ending at `now`.
    pub fn count(&mut self, now: Instant) -> u32 {
        self.prune(now);
        u32::try_from(self.window.len()).unwrap_or(u32::MAX)
    }

    fn prune(&mut self, now: Instant) {
        while let Some(&oldest) = self.window.front() {
            if now.saturating_duration_since(oldest) >= self.limit.period {
                self.window.pop_front();
            } else {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exceeds_on_one_more_than_max() {
        let t0 = Instant::now();
        let mut tr = IntensityTracker::new(RestartIntensity {
            max_restarts: 3,
            period: Duration::from_secs(5),
        });
        for i in 0..3 {
            assert!(tr.record(t0 + Duration::from_secs(i)).is_ok());
        }
        assert_eq!(
            tr.record(t0 + Duration::from_secs(3)),
            Err(Exceeded { restarts: 4 })
        );
    }

    #[test]
    fn old_restarts_leave_the_window() {
        let t0 = Instant::now();
        let mut tr = IntensityTracker::new(RestartIntensity {
            max_restarts: 2,
            period: Duration::from_secs(5),
        });
        assert!(tr.record(t0).is_ok());
        assert!(tr.record(t0 + Duration::from_secs(1)).is_ok());
        // The first one is exactly one period old: it no longer counts.
        assert!(tr.record(t0 + Duration::from_secs(5)).is_ok());
        assert_eq!(tr.count(t0 + Duration::from_secs(5)), 2);
        assert_eq!(tr.count(t0 + Duration::from_secs(60)), 0);
    }
}
