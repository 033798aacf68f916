//! The per-peer failure detector: Healthy → Suspected → Failed by silence, back to Healthy
//! on any authenticated packet; heartbeat probes measure RTT on the way.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use thiserror::Error;

use super::probe::HeartbeatProbe;
use super::rtt::{RttConfig, RttEstimator};

/// Timing of one peer's liveness. Silence is measured from the last authenticated packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LivenessConfig {
    /// How often a heartbeat probe is sent. Default 1 s.
    pub heartbeat_interval: Duration,
    /// Silence after which the peer is Suspected (traffic may be rerouted). Default 3 s:
    /// three missed heartbeats.
    pub suspect_after: Duration,
    /// Silence after which the peer is Failed. Default 8 s.
    pub fail_after: Duration,
    /// Silence after which the session itself is over ([`LivenessEvent::IdleTimeout`]);
    /// also the responder's rotation timeout. Default 30 s.
    pub idle_timeout: Duration,
    /// RTT estimator clamps.
    pub rtt: RttConfig,
}

impl Default for LivenessConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(1),
            suspect_after: Duration::from_secs(3),
            fail_after: Duration::from_secs(8),
            idle_timeout: Duration::from_secs(30),
            rtt: RttConfig::default(),
        }
    }
}

/// Largest accepted `idle_timeout`: a session silent for a day is not "alive".
pub const MAX_IDLE_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);
/// Smallest accepted `heartbeat_interval`: below it heartbeats become a flood.
pub const MIN_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(10);

/// A [`LivenessConfig`] was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum LivenessConfigError {
    /// A duration is zero.
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
    /// The heartbeat interval is below [`MIN_HEARTBEAT_INTERVAL`].
    #[error("heartbeat_interval must be at least {MIN_HEARTBEAT_INTERVAL:?}")]
    HeartbeatTooFast,
    /// The idle timeout exceeds [`MAX_IDLE_TIMEOUT`].
    #[error("idle_timeout must be at most {MAX_IDLE_TIMEOUT:?}")]
    IdleTooLong,
    /// The thresholds are not ordered
    /// `heartbeat_interval < suspect_after < fail_after <= idle_timeout`.
    #[error("{earlier} must be less than {later}")]
    Inconsistent {
        /// The field that must be smaller.
        earlier: &'static str,
        /// The field that must be larger.
        later: &'static str,
    },
}

impl LivenessConfig {
    /// Checks every field is non-zero, bounded and ordered.
    pub fn validate(&self) -> Result<(), LivenessConfigError> {
        for (name, value) in [
            ("heartbeat_interval", self.heartbeat_interval),
            ("suspect_after", self.suspect_after),
            ("fail_after", self.fail_after),
            ("idle_timeout", self.idle_timeout),
        ] {
            if value.is_zero() {
                return Err(LivenessConfigError::Zero(name));
            }
        }
        if self.heartbeat_interval < MIN_HEARTBEAT_INTERVAL {
            return Err(LivenessConfigError::HeartbeatTooFast);
        }
        if self.idle_timeout > MAX_IDLE_TIMEOUT {
            return Err(LivenessConfigError::IdleTooLong);
        }
        let order = |earlier, later| LivenessConfigError::Inconsistent { earlier, later };
        if self.heartbeat_interval >= self.suspect_after {
            return Err(order("heartbeat_interval", "suspect_after"));
        }
        if self.suspect_after >= self.fail_after {
            return Err(order("suspect_after", "fail_after"));
        }
        if self.fail_after > self.idle_timeout {
            return Err(order("fail_after", "idle_timeout (or equal)"));
        }
        Ok(())
    }
}

/// What the detector believes about the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LivenessState {
    /// Heard from within `suspect_after`.
    Healthy,
    /// Silent for `suspect_after`: route around it if possible.
    Suspected,
    /// Silent for `fail_after`.
    Failed,
}

/// A state change to act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LivenessEvent {
    /// Healthy → Suspected.
    Suspected,
    /// → Failed.
    Failed,
    /// Suspected or Failed → Healthy (an authenticated packet arrived).
    Recovered,
    /// Silent for `idle_timeout`: tear the session down.
    IdleTimeout,
}

/// Probes kept awaiting a reply; older unanswered probes are forgotten (they count as lost).
const MAX_OUTSTANDING: usize = 8;
/// Events a caller can leave unpolled; each input produces at most 3.
const MAX_EVENTS: usize = 8;

/// The failure detector and RTT estimator of one peer (sans-IO).
///
/// Drive it with [`on_authenticated_packet`](Self::on_authenticated_packet) for every
/// packet that opened, [`on_heartbeat`](Self::on_heartbeat) for heartbeats, and at
/// [`poll_timeout`](Self::poll_timeout) call [`poll_heartbeat`](Self::poll_heartbeat) and
/// [`poll`](Self::poll) until it returns `None`.
#[derive(Debug, Clone)]
pub struct Liveness {
    config: LivenessConfig,
    state: LivenessState,
    last_heard: Instant,
    idle_reported: bool,
    next_heartbeat: Instant,
    next_probe: u64,
    outstanding: [Option<(u64, Instant)>; MAX_OUTSTANDING],
    rtt: RttEstimator,
    events: VecDeque<LivenessEvent>,
}

impl Liveness {
    /// A detector for a session established at `now` (which counts as hearing the peer).
    /// The first heartbeat is due at once: it doubles as the initiator's key confirmation.
    pub fn new(config: LivenessConfig, now: Instant) -> Result<Self, LivenessConfigError> {
        config.validate()?;
        Ok(Self {
            rtt: RttEstimator::new(config.rtt),
            config,
            state: LivenessState::Healthy,
            last_heard: now,
            idle_reported: false,
            next_heartbeat: now,
            next_probe: 0,
            outstanding: [None; MAX_OUTSTANDING],
            events: VecDeque::with_capacity(MAX_EVENTS),
        })
    }

    /// Records an authenticated packet from the peer (any kind).
    pub fn on_authenticated_packet(&mut self, now: Instant) {
        self.last_heard = self.last_heard.max(now);
        self.idle_reported = false;
        if self.state != LivenessState::Healthy {
            self.state = LivenessState::Healthy;
            self.push(LivenessEvent::Recovered);
        }
    }

    /// Records an authenticated heartbeat (call this instead of
    /// [`on_authenticated_packet`](Self::on_authenticated_packet) for heartbeats). Returns
    /// the reply to send when the heartbeat was a ping; a reply feeds the RTT estimator.
    pub fn on_heartbeat(&mut self, now: Instant, probe: HeartbeatProbe) -> Option<HeartbeatProbe> {
        self.on_authenticated_packet(now);
        if !probe.is_reply {
            return Some(probe.reply());
        }
        let slot = self
            .outstanding
            .iter_mut()
            .find(|s| s.is_some_and(|(id, _)| id == probe.id))?;
        if let Some((_, sent)) = slot.take() {
            self.rtt.on_sample(now.saturating_duration_since(sent));
        }
        None
    }

    /// Returns a ping to send if a heartbeat is due, and schedules the next.
    pub fn poll_heartbeat(&mut self, now: Instant) -> Option<HeartbeatProbe> {
        if now < self.next_heartbeat {
            return None;
        }
        self.next_heartbeat = now + self.config.heartbeat_interval;
        let probe = HeartbeatProbe::ping(self.next_probe);
        self.next_probe = (self.next_probe + 1) & HeartbeatProbe::MAX_ID;
        let index = (probe.id % MAX_OUTSTANDING as u64) as usize;
        self.outstanding[index] = Some((probe.id, now));
        Some(probe)
    }

    /// The next state change due at `now`, if any.
    pub fn poll(&mut self, now: Instant) -> Option<LivenessEvent> {
        self.update(now);
        self.events.pop_front()
    }

    /// When the detector next needs [`poll`](Self::poll) or
    /// [`poll_heartbeat`](Self::poll_heartbeat).
    pub fn poll_timeout(&self) -> Instant {
        let transition = match self.state {
            LivenessState::Healthy => Some(self.last_heard + self.config.suspect_after),
            LivenessState::Suspected => Some(self.last_heard + self.config.fail_after),
            LivenessState::Failed if !self.idle_reported => {
                Some(self.last_heard + self.config.idle_timeout)
            }
            LivenessState::Failed => None,
        };
        transition.map_or(self.next_heartbeat, |t| t.min(self.next_heartbeat))
    }

    /// Current state.
    pub fn state(&self) -> LivenessState {
        self.state
    }

    /// When the peer was last heard.
    pub fn last_heard(&self) -> Instant {
        self.last_heard
    }

    /// The RTT estimator.
    pub fn rtt(&self) -> &RttEstimator {
        &self.rtt
    }

    /// The configuration in use.
    pub fn config(&self) -> &LivenessConfig {
        &self.config
    }

    fn update(&mut self, now: Instant) {
        let silent = now.saturating_duration_since(self.last_heard);
        if self.state == LivenessState::Healthy && silent >= self.config.suspect_after {
            self.state = LivenessState::Suspected;
            self.push(LivenessEvent::Suspected);
        }
        if self.state == LivenessState::Suspected && silent >= self.config.fail_after {
            self.state = LivenessState::Failed;
            self.push(LivenessEvent::Failed);
        }
        if !self.idle_reported && silent >= self.config.idle_timeout {
            self.idle_reported = true;
            self.push(LivenessEvent::IdleTimeout);
        }
    }

    fn push(&mut self, event: LivenessEvent) {
        if self.events.len() == MAX_EVENTS {
            // Unpolled history is stale; the newest event reflects the current state.
            self.events.pop_front();
        }
        self.events.push_back(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_clock::t0;

    const S: Duration = Duration::from_secs(1);

    fn drain(l: &mut Liveness, now: Instant) -> Vec<LivenessEvent> {
        std::iter::from_fn(|| l.poll(now)).collect()
    }

    #[test]
    fn validate_rejects_zero_and_disorder() {
        assert_eq!(LivenessConfig::default().validate(), Ok(()));
        let d = LivenessConfig::default();
        let zero = LivenessConfig {
            heartbeat_interval: Duration::ZERO,
            ..d
        };
        assert_eq!(
            zero.validate(),
            Err(LivenessConfigError::Zero("heartbeat_interval"))
        );
        let zero = LivenessConfig {
            idle_timeout: Duration::ZERO,
            ..d
        };
        assert_eq!(
            zero.validate(),
            Err(LivenessConfigError::Zero("idle_timeout"))
        );
        let bad = LivenessConfig {
            suspect_after: 9 * S,
            ..d
        };
        assert!(matches!(
            bad.validate(),
            Err(LivenessConfigError::Inconsistent { .. })
        ));
        let bad = LivenessConfig {
            heartbeat_interval: 3 * S,
            ..d
        };
        assert!(matches!(
            bad.validate(),
            Err(LivenessConfigError::Inconsistent { .. })
        ));
        let bad = LivenessConfig {
            idle_timeout: 7 * S,
            ..d
        };
        assert!(matches!(
            bad.validate(),
            Err(LivenessConfigError::Inconsistent { .. })
        ));
        let bad = LivenessConfig {
            heartbeat_interval: Duration::from_millis(1),
            ..d
        };
        assert_eq!(bad.validate(), Err(LivenessConfigError::HeartbeatTooFast));
        let bad = LivenessConfig {
            idle_timeout: MAX_IDLE_TIMEOUT + S,
            ..d
        };
        assert_eq!(bad.validate(), Err(LivenessConfigError::IdleTooLong));
        assert!(Liveness::new(bad, t0()).is_err());
    }

    #[test]
    fn silence_walks_the_states_at_the_configured_times() {
        let now = t0();
        let mut l = Liveness::new(LivenessConfig::default(), now).unwrap();
        assert_eq!(l.poll_timeout(), now);
        assert!(l.poll_heartbeat(now).is_some());
        assert_eq!(l.poll_timeout(), now + S);
        assert_eq!(
            drain(&mut l, now + 3 * S - Duration::from_millis(1)),
            vec![]
        );
        assert_eq!(drain(&mut l, now + 3 * S), vec![LivenessEvent::Suspected]);
        assert_eq!(
            l.poll_timeout(),
            now + S,
            "the overdue heartbeat comes first"
        );
        assert!(l.poll_heartbeat(now + 3 * S).is_some());
        assert_eq!(l.poll_timeout(), now + 4 * S);
        assert_eq!(drain(&mut l, now + 8 * S), vec![LivenessEvent::Failed]);
        assert_eq!(l.state(), LivenessState::Failed);
        assert_eq!(
            drain(&mut l, now + 30 * S),
            vec![LivenessEvent::IdleTimeout]
        );
        assert_eq!(drain(&mut l, now + 60 * S), vec![]);
        l.on_authenticated_packet(now + 61 * S);
        assert_eq!(drain(&mut l, now + 61 * S), vec![LivenessEvent::Recovered]);
        assert_eq!(l.state(), LivenessState::Healthy);
    }

    #[test]
    fn late_poll_reports_every_step_in_order() {
        let now = t0();
        let mut l = Liveness::new(LivenessConfig::default(), now).unwrap();
        assert_eq!(
            drain(&mut l, now + 40 * S),
            vec![
                LivenessEvent::Suspected,
                LivenessEvent::Failed,
                LivenessEvent::IdleTimeout
            ]
        );
    }

    #[test]
    fn heartbeat_ping_pong_measures_rtt() {
        let now = t0();
        let mut a = Liveness::new(LivenessConfig::default(), now).unwrap();
        let mut b = Liveness::new(LivenessConfig::default(), now).unwrap();
        let ping = a.poll_heartbeat(now).unwrap();
        assert!(a.poll_heartbeat(now).is_none());
        let t1 = now + Duration::from_millis(20);
        let reply = b
            .on_heartbeat(t1, HeartbeatProbe::from_stream(ping.to_stream()))
            .unwrap();
        assert!(reply.is_reply);
        let t2 = now + Duration::from_millis(40);
        assert_eq!(a.on_heartbeat(t2, reply), None);
        assert_eq!(a.rtt().srtt(), Some(Duration::from_millis(40)));
        // A duplicate reply is not a second sample.
        assert_eq!(a.on_heartbeat(t2 + S, reply), None);
        assert_eq!(a.rtt().latest(), Some(Duration::from_millis(40)));
        assert_eq!(a.last_heard(), t2 + S);
    }
}
