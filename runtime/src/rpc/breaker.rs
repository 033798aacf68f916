//! Circuit breakers: stop calling a node that keeps failing, then probe it once.
//!
//! ```text
//!  Closed ── failure_threshold node failures within `window` ──▶ Open{until = now + cooldown}
//!  Open ── now ≥ until ──▶ HalfOpen: exactly one call (the probe) is admitted
//!  HalfOpen ── probe succeeds ──▶ Closed        HalfOpen ── probe fails ──▶ Open (new cooldown)
//! ```
//!
//! Calls ask for a [`Permit`] before sending and report the outcome with it. Only node
//! failures ([`RpcError::is_node_failure`]) count; an application error proves the node
//! answered and closes a half-open breaker like a success does. A probe that ends without
//! an answer either way (cancelled by the caller) gives the probe slot back. Results of
//! ordinary calls that finish while the breaker is open or half-open are ignored: only the
//! probe decides.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use netrun_messages::NodeId;
use thiserror::Error;

use super::RpcError;

/// Nodes a [`Breakers`] map tracks by default.
pub const DEFAULT_MAX_BREAKERS: usize = 4096;

/// When a breaker trips and how long it stays open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Node failures within `window` that open the breaker (at least 1). Default 5.
    pub failure_threshold: u32,
    /// How far back failures count. Default 10 s.
    pub window: Duration,
    /// How long the breaker stays open before admitting a probe. Default 30 s.
    pub cooldown: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            window: Duration::from_secs(10),
            cooldown: Duration::from_secs(30),
        }
    }
}

/// A breaker's state as seen at some instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls flow.
    Closed,
    /// Calls are refused until `until`.
    Open {
        /// End of the cooldown.
        until: Instant,
    },
    /// One probe call may go (or is in flight, when `probing`).
    HalfOpen {
        /// The probe is in flight; other calls are refused.
        probing: bool,
    },
}

/// Leave to send one call; report its outcome with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "report the call's outcome with the permit"]
pub struct Permit {
    probe: bool,
}

impl Permit {
    /// Whether this call is the half-open probe.
    pub fn is_probe(self) -> bool {
        self.probe
    }
}

/// The breaker refused the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("circuit breaker open")]
pub struct BreakerOpen {
    /// When a probe will be admitted (`None`: a probe is in flight now).
    pub retry_at: Option<Instant>,
}

/// One node's breaker.
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    state: BreakerState,
    /// Times of recent node failures while closed, oldest first, at most the threshold.
    failures: VecDeque<Instant>,
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Self {
        let config = BreakerConfig {
            failure_threshold: config.failure_threshold.max(1),
            ..config
        };
        Self {
            config,
            state: BreakerState::Closed,
            failures: VecDeque::new(),
        }
    }

    /// The state at `now` (an expired cooldown reads as half-open).
    pub fn state(&self, now: Instant) -> BreakerState {
        match self.state {
            BreakerState::Open { until } if now >= until => {
                BreakerState::HalfOpen { probing: false }
            }
            state => state,
        }
    }

    /// Whether a call at `now` would be admitted.
    pub fn allows(&self, now: Instant) -> bool {
        matches!(
            self.state(now),
            BreakerState::Closed | BreakerState::HalfOpen { probing: false }
        )
    }

    /// Asks to send one call at `now`. Half-open admits exactly one probe.
    pub fn try_acquire(&mut self, now: Instant) -> Result<Permit, BreakerOpen> {
        self.state = self.state(now);
        match self.state {
            BreakerState::Closed => Ok(Permit { probe: false }),
            BreakerState::Open { until } => Err(BreakerOpen {
                retry_at: Some(until),
            }),
            BreakerState::HalfOpen { probing: false } => {
                self.state = BreakerState::HalfOpen { probing: true };
                Ok(Permit { probe: true })
            }
            BreakerState::HalfOpen { probing: true } => Err(BreakerOpen { retry_at: None }),
        }
    }

    /// Reports a call's outcome: node failures count against the node, local outcomes
    /// (cancelled, not sent) release a probe, anything else is a sign of life.
    pub fn record(&mut self, now: Instant, permit: Permit, outcome: Result<(), &RpcError>) {
        match outcome {
            Ok(()) => self.on_success(permit),
            Err(e) if e.is_node_failure() => self.on_failure(now, permit),
            Err(
                RpcError::Cancelled
                | RpcError::Overloaded
                | RpcError::CircuitOpen
                | RpcError::NoRoute
                | RpcError::TooLarge { .. }
                | RpcError::Transport(super::TransportError::Stopped),
            ) => self.on_abandoned(permit),
            Err(_) => self.on_success(permit),
        }
    }

    /// The call reached the node and it answered.
    pub fn on_success(&mut self, permit: Permit) {
        if permit.probe && matches!(self.state, BreakerState::HalfOpen { .. }) {
            self.state = BreakerState::Closed;
            self.failures.clear();
        }
    }

    /// The call failed because of the node (or the path to it).
    pub fn on_failure(&mut self, now: Instant, permit: Permit) {
        match self.state {
            BreakerState::HalfOpen { .. } if permit.probe => self.trip(now),
            BreakerState::Closed => {
                while self
                    .failures
                    .front()
                    .is_some_and(|t| now.saturating_duration_since(*t) > self.config.window)
                {
                    self.failures.pop_front();
                }
                self.failures.push_back(now);
                if self.failures.len() >= self.config.failure_threshold as usize {
                    self.trip(now);
                }
            }
            _ => {}
        }
    }

    /// The call ended without telling anything about the node; a probe slot is released.
    pub fn on_abandoned(&mut self, permit: Permit) {
        if permit.probe && self.state == (BreakerState::HalfOpen { probing: true }) {
            self.state = BreakerState::HalfOpen { probing: false };
        }
    }

    /// Whether the breaker is closed with no failure inside the window at `now` (nothing
    /// worth remembering).
    pub fn is_quiet(&self, now: Instant) -> bool {
        self.state == BreakerState::Closed
            && self
                .failures
                .back()
                .is_none_or(|t| now.saturating_duration_since(*t) > self.config.window)
    }

    fn trip(&mut self, now: Instant) {
        self.failures.clear();
        self.state = BreakerState::Open {
            until: now.checked_add(self.config.cooldown).unwrap_or(now),
        };
    }
}

/// Breakers for many nodes. A node without an entry is closed; entries appear with the
/// first failure and quiet ones are evicted (smallest node id first) when the map is full.
/// When every entry is busy the new node is admitted untracked (fail open: a full map
/// never blocks calls).
#[derive(Debug, Clone)]
pub struct Breakers {
    config: BreakerConfig,
    max_nodes: usize,
    nodes: HashMap<NodeId, CircuitBreaker>,
}

impl Breakers {
    /// An empty map of at most `max_nodes` breakers.
    pub fn new(config: BreakerConfig, max_nodes: usize) -> Self {
        Self {
            config,
            max_nodes: max_nodes.max(1),
            nodes: HashMap::new(),
        }
    }

    /// Asks to send one call to `node` at `now`.
    pub fn try_acquire(&mut self, now: Instant, node: NodeId) -> Result<Permit, BreakerOpen> {
        match self.nodes.get_mut(&node) {
            Some(breaker) => breaker.try_acquire(now),
            None => Ok(Permit { probe: false }),
        }
    }

    /// Reports the outcome of a call to `node`.
    pub fn record(
        &mut self,
        now: Instant,
        node: NodeId,
        permit: Permit,
        outcome: Result<(), &RpcError>,
    ) {
        if let Some(breaker) = self.nodes.get_mut(&node) {
            breaker.record(now, permit, outcome);
            return;
        }
        if !matches!(outcome, Err(e) if e.is_node_failure()) {
            return;
        }
        if self.nodes.len() >= self.max_nodes {
            // The smallest quiet id, not the first in hash order: the same inputs evict
            // the same entry.
            let quiet = self
                .nodes
                .iter()
                .filter(|(_, b)| b.is_quiet(now))
                .map(|(id, _)| *id)
                .min();
            match quiet {
                Some(id) => {
                    self.nodes.remove(&id);
                }
                None => return,
            }
        }
        let mut breaker = CircuitBreaker::new(self.config);
        breaker.on_failure(now, permit);
        self.nodes.insert(node, breaker);
    }

    /// Whether a call to `node` at `now` would be admitted (what node selection calls
    /// "healthy").
    pub fn allows(&self, now: Instant, node: NodeId) -> bool {
        self.nodes.get(&node).is_none_or(|b| b.allows(now))
    }

    /// The breaker state of `node` at `now`.
    pub fn state(&self, now: Instant, node: NodeId) -> BreakerState {
        self.nodes
            .get(&node)
            .map_or(BreakerState::Closed, |b| b.state(now))
    }

    /// Nodes tracked.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether no node is tracked.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_clock::t0;
    use netrun_messages::rpc::Status;

    fn config() -> BreakerConfig {
        BreakerConfig {
            failure_threshold: 3,
            window: Duration::from_secs(10),
            cooldown: Duration::from_secs(30),
        }
    }

    fn fail(b: &mut CircuitBreaker, now: Instant) {
        let permit = b.try_acquire(now).expect("admitted");
        b.record(now, permit, Err(&RpcError::Timeout));
    }

    #[test]
    fn breaker_transitions_with_a_single_half_open_probe() {
        let t0 = t0();
        let mut b = CircuitBreaker::new(config());
        fail(&mut b, t0);
        fail(&mut b, t0 + Duration::from_secs(1));
        assert_eq!(b.state(t0), BreakerState::Closed);
        fail(&mut b, t0 + Duration::from_secs(2));
        let until = t0 + Duration::from_secs(32);
        assert_eq!(
            b.state(t0 + Duration::from_secs(2)),
            BreakerState::Open { until }
        );
        assert_eq!(
            b.try_acquire(t0 + Duration::from_secs(31)),
            Err(BreakerOpen {
                retry_at: Some(until)
            })
        );
        assert!(!b.allows(t0 + Duration::from_secs(31)));
        // Cooldown over: exactly one probe.
        let probe = b.try_acquire(until).expect("probe admitted");
        assert!(probe.is_probe());
        assert_eq!(b.try_acquire(until), Err(BreakerOpen { retry_at: None }));
        assert!(!b.allows(until));
        // The probe fails: open again for a new cooldown.
        b.record(until, probe, Err(&RpcError::Timeout));
        let until2 = until + Duration::from_secs(30);
        assert_eq!(b.state(until), BreakerState::Open { until: until2 });
        // Next probe succeeds: closed, failures forgotten.
        let probe = b.try_acquire(until2).expect("probe");
        let other = b.try_acquire(until2);
        assert!(other.is_err());
        b.record(until2, probe, Ok(()));
        assert_eq!(b.state(until2), BreakerState::Closed);
        fail(&mut b, until2);
        fail(&mut b, until2);
        assert_eq!(b.state(until2), BreakerState::Closed);
    }

    #[test]
    fn only_failures_inside_the_window_count() {
        let t0 = t0();
        let mut b = CircuitBreaker::new(config());
        fail(&mut b, t0);
        fail(&mut b, t0 + Duration::from_secs(5));
        // The first failure is 11 s old when the third arrives.
        fail(&mut b, t0 + Duration::from_secs(11));
        assert_eq!(b.state(t0 + Duration::from_secs(11)), BreakerState::Closed);
        fail(&mut b, t0 + Duration::from_secs(12));
        assert!(matches!(
            b.state(t0 + Duration::from_secs(12)),
            BreakerState::Open { .. }
        ));
    }

    #[test]
    fn application_errors_do_not_count_and_prove_life() {
        let t0 = t0();
        let mut b = CircuitBreaker::new(config());
        let app = RpcError::from_status(Status::application(0x8000).expect("band"), "bad");
        for _ in 0..10 {
            let p = b.try_acquire(t0).expect("closed");
            b.record(t0, p, Err(&app));
        }
        assert_eq!(b.state(t0), BreakerState::Closed);
        for _ in 0..3 {
            fail(&mut b, t0);
        }
        let later = t0 + Duration::from_secs(30);
        let probe = b.try_acquire(later).expect("probe");
        b.record(later, probe, Err(&app));
        assert_eq!(b.state(later), BreakerState::Closed);
    }

    #[test]
    fn an_abandoned_probe_frees_the_slot_and_stale_results_are_ignored() {
        let t0 = t0();
        let mut b = CircuitBreaker::new(config());
        let early = b.try_acquire(t0).expect("closed");
        for _ in 0..3 {
            fail(&mut b, t0);
        }
        // A call admitted while closed succeeds after the trip: ignored.
        b.record(t0, early, Ok(()));
        assert!(matches!(b.state(t0), BreakerState::Open { .. }));
        let later = t0 + Duration::from_secs(30);
        let probe = b.try_acquire(later).expect("probe");
        b.record(later, probe, Err(&RpcError::Cancelled));
        assert_eq!(b.state(later), BreakerState::HalfOpen { probing: false });
        assert!(b.try_acquire(later).expect("probe again").is_probe());
    }

    #[test]
    fn breakers_map_tracks_failing_nodes_only_and_stays_bounded() {
        let t0 = t0();
        let mut map = Breakers::new(config(), 2);
        let a = NodeId(1);
        for _ in 0..3 {
            let p = map.try_acquire(t0, a).expect("closed");
            map.record(t0, a, p, Err(&RpcError::Timeout));
        }
        assert!(!map.allows(t0, a));
        let b = NodeId(2);
        let p = map.try_acquire(t0, b).expect("closed");
        map.record(t0, b, p, Ok(()));
        assert_eq!(map.len(), 1, "successes create no entry");
        map.record(t0, b, p, Err(&RpcError::Timeout));
        assert_eq!(map.len(), 2);
        // Full, and neither entry is quiet: a third failing node is not tracked.
        map.record(t0, NodeId(3), p, Err(&RpcError::Timeout));
        assert_eq!(map.len(), 2);
        assert!(map.allows(t0, NodeId(3)));
        // Once b's failure is outside the window it is evicted for a new node.
        let later = t0 + Duration::from_secs(11);
        map.record(later, NodeId(3), p, Err(&RpcError::Timeout));
        assert_eq!(map.len(), 2);
        assert_eq!(map.state(later, b), BreakerState::Closed);
        assert!(matches!(map.state(later, a), BreakerState::Open { .. }));
        // Several quiet entries: the smallest id goes, whatever the map's order.
        let mut map = Breakers::new(config(), 3);
        for id in [9, 4, 7] {
            let p = map.try_acquire(t0, NodeId(id)).expect("closed");
            map.record(t0, NodeId(id), p, Err(&RpcError::Timeout));
        }
        map.record(later, NodeId(1), p, Err(&RpcError::Timeout));
        let tracked: Vec<bool> = [4, 7, 9, 1]
            .map(|id| map.nodes.contains_key(&NodeId(id)))
            .to_vec();
        assert_eq!(tracked, [false, true, true, true]);
    }
}
