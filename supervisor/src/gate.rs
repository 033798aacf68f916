//! Crash-loop gate: too many crashes of one child in a window stop its restarts for a
//! cooldown.
//!
//! Backoff slows a crashing child down; the gate stops it. With the defaults, crashes one
//! to five within 60 s are each restarted (after backoff); the sixth engages the gate and
//! no restart happens for 60 s. Crashes older than the window fall out of it, so a stable
//! run of one window clears the history; when the gate releases, the history starts empty.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Crashes within the window that are still restarted; one more engages the gate (MeshOS
/// default: "CrashLooping after 5 crashes in 60 s").
pub const DEFAULT_MAX_CRASHES: u32 = 5;
/// Window the crashes are counted in (MeshOS default).
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(60);
/// How long restarts stay gated; one window, the same as the backoff cap.
pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(60);

/// Crash-loop policy of a supervisor (applied per child).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrashLoopConfig {
    /// Crashes within `window` that are still restarted; crash `max_crashes + 1` within
    /// the window engages the gate. 0 disables the gate.
    pub max_crashes: u32,
    /// Sliding window the crashes are counted in.
    pub window: Duration,
    /// How long restarts stay gated once engaged.
    pub cooldown: Duration,
}

impl Default for CrashLoopConfig {
    fn default() -> Self {
        Self {
            max_crashes: DEFAULT_MAX_CRASHES,
            window: DEFAULT_WINDOW,
            cooldown: DEFAULT_COOLDOWN,
        }
    }
}

impl CrashLoopConfig {
    /// A gate that never engages.
    pub fn disabled() -> Self {
        Self {
            max_crashes: 0,
            ..Self::default()
        }
    }
}

/// What the gate says about a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateDecision {
    /// Restart normally (after backoff).
    Open,
    /// Do not restart before `until`.
    Engaged {
        /// End of the cooldown.
        until: Instant,
    },
}

/// Crash-loop state of one child. Holds at most `max_crashes + 1` timestamps.
#[derive(Debug, Clone)]
pub struct CrashLoopGate {
    config: CrashLoopConfig,
    crashes: VecDeque<Instant>,
    gated_until: Option<Instant>,
}

impl CrashLoopGate {
    /// A gate with no crash recorded.
    pub fn new(config: CrashLoopConfig) -> Self {
        Self {
            config,
            crashes: VecDeque::new(),
            gated_until: None,
        }
    }

    /// Records a crash at `now`; engages the gate if it is one more than `max_crashes`
    /// within the window.
    pub fn on_crash(&mut self, now: Instant) -> GateDecision {
        if let GateDecision::Engaged { until } = self.state(now) {
            return GateDecision::Engaged { until };
        }
        if self.config.max_crashes == 0 {
            return GateDecision::Open;
        }
        while let Some(&oldest) = self.crashes.front() {
            if now.saturating_duration_since(oldest) >= self.config.window {
                self.crashes.pop_front();
            } else {
                break;
            }
        }
        self.crashes.push_back(now);
        if self.crashes.len() > self.config.max_crashes as usize {
            self.crashes.clear();
            let until = now + self.config.cooldown;
            self.gated_until = Some(until);
            return GateDecision::Engaged { until };
        }
        GateDecision::Open
    }

    /// Whether restarts are gated at `now`.
    pub fn state(&mut self, now: Instant) -> GateDecision {
        match self.gated_until {
            Some(until) if now < until => GateDecision::Engaged { until },
            Some(_) => {
                self.gated_until = None;
                GateDecision::Open
            }
            None => GateDecision::Open,
        }
    }

    /// Crashes currently in the window.
    pub fn crashes_in_window(&self) -> usize {
        self.crashes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn engages_on_sixth_crash_within_window() {
        let t0 = Instant::now();
        let mut g = CrashLoopGate::new(CrashLoopConfig::default());
        for i in 0..5 {
            assert_eq!(g.on_crash(t0 + s(i * 10)), GateDecision::Open);
        }
        assert_eq!(g.crashes_in_window(), 5);
        assert_eq!(
            g.on_crash(t0 + s(45)),
            GateDecision::Engaged { until: t0 + s(105) }
        );
        assert_eq!(
            g.state(t0 + s(104)),
            GateDecision::Engaged { until: t0 + s(105) }
        );
        assert_eq!(g.state(t0 + s(105)), GateDecision::Open);
        // Released with an empty history.
        assert_eq!(g.on_crash(t0 + s(106)), GateDecision::Open);
        assert_eq!(g.crashes_in_window(), 1);
    }

    #[test]
    fn crashes_that_left_the_window_do_not_count() {
        let t0 = Instant::now();
        let mut g = CrashLoopGate::new(CrashLoopConfig::default());
        for i in 0..5 {
            assert_eq!(g.on_crash(t0 + s(i * 10)), GateDecision::Open);
        }
        // The crash at t0 is a full window old: five remain in the window, still open.
        assert_eq!(g.on_crash(t0 + s(60)), GateDecision::Open);
        assert_eq!(g.crashes_in_window(), 5);
        // A sixth within the window ending now engages.
        assert_eq!(
            g.on_crash(t0 + s(65)),
            GateDecision::Engaged { until: t0 + s(125) }
        );
    }

    #[test]
    fn one_allowed_crash_engages_on_the_second() {
        let t0 = Instant::now();
        let mut g = CrashLoopGate::new(CrashLoopConfig {
            max_crashes: 1,
            ..CrashLoopConfig::default()
        });
        assert_eq!(g.on_crash(t0), GateDecision::Open);
        assert_eq!(
            g.on_crash(t0 + s(1)),
            GateDecision::Engaged { until: t0 + s(61) }
        );
    }

    #[test]
    fn spread_out_crashes_never_engage() {
        let t0 = Instant::now();
        let mut g = CrashLoopGate::new(CrashLoopConfig::default());
        for i in 0..50 {
            assert_eq!(g.on_crash(t0 + s(i * 15)), GateDecision::Open);
        }
    }

    #[test]
    fn disabled_gate_stays_open() {
        let t0 = Instant::now();
        let mut g = CrashLoopGate::new(CrashLoopConfig::disabled());
        for _ in 0..100 {
            assert_eq!(g.on_crash(t0), GateDecision::Open);
        }
    }
}
