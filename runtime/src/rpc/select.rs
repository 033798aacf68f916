//! Choosing which node serves a `call_service`.
//!
//! The caller gives the candidates (nodes announcing `nrpc:<service>`) with their health
//! (breaker admits calls, session up) and measured latency, plus nodes to exclude (targets
//! a hedged call already tried). Unhealthy and excluded nodes are never picked; when none
//! is left the answer is `None` (the caller reports `NoRoute`). Every policy is
//! independent of the order the candidates come in:
//!
//! - `RoundRobin`: the next node id after the one picked last, wrapping; calls spread
//!   evenly and membership changes do not reset the rotation.
//! - `Random`: uniform among the eligible nodes, from the caller's RNG.
//! - `Sticky(key)`: rendezvous hashing — the node with the highest `hash(key, node)`;
//!   the same key keeps its node while that node stays eligible, and removing a node only
//!   moves the keys that were on it.
//! - `LowestLatency`: the smallest measured latency (ties to the lower node id); nodes
//!   without a measurement come after every measured one, lowest node id first.

use std::time::Duration;

use netrun_messages::NodeId;
use rand_core::RngCore;

use super::mix64;

/// How to choose among candidate nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SelectPolicy {
    /// Rotate through the nodes by id.
    #[default]
    RoundRobin,
    /// Uniformly at random.
    Random,
    /// Always the same node for the same key hash (see [`SelectPolicy::sticky`]).
    Sticky(u64),
    /// The node with the lowest measured latency.
    LowestLatency,
}

impl SelectPolicy {
    /// Sticky routing for an application key (a user id, a session id, …).
    pub fn sticky(key: &[u8]) -> Self {
        let hash = blake3::hash(key);
        let mut first = [0u8; 8];
        first.copy_from_slice(&hash.as_bytes()[..8]);
        Self::Sticky(u64::from_le_bytes(first))
    }
}

/// One node that serves the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// The node.
    pub node: NodeId,
    /// Whether calls to it are admitted now (session up, breaker not open).
    pub healthy: bool,
    /// Measured round-trip time, if any.
    pub latency: Option<Duration>,
}

impl Candidate {
    /// A healthy candidate without a latency measurement.
    pub fn new(node: NodeId) -> Self {
        Self {
            node,
            healthy: true,
            latency: None,
        }
    }
}

/// Picks nodes by a [`SelectPolicy`]; holds the round-robin position (one per service).
#[derive(Debug, Clone, Default)]
pub struct Selector {
    last: Option<NodeId>,
}

impl Selector {
    /// A selector that has picked nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Picks an eligible node: healthy and not in `exclude`. `None` when there is none.
    pub fn pick<R: RngCore + ?Sized>(
        &mut self,
        policy: SelectPolicy,
        candidates: &[Candidate],
        exclude: &[NodeId],
        rng: &mut R,
    ) -> Option<NodeId> {
        let eligible = || {
            candidates
                .iter()
                .filter(|c| c.healthy && !exclude.contains(&c.node))
        };
        let picked = match policy {
            SelectPolicy::RoundRobin => {
                let after = |c: &&Candidate| self.last.is_none_or(|last| c.node > last);
                eligible()
                    .filter(after)
                    .map(|c| c.node)
                    .min()
                    .or_else(|| eligible().map(|c| c.node).min())
            }
            SelectPolicy::Random => {
                let mut nodes: Vec<NodeId> = eligible().map(|c| c.node).collect();
                // Sorted and deduplicated, so the draw does not depend on input order.
                nodes.sort_unstable();
                nodes.dedup();
                if nodes.is_empty() {
                    None
                } else {
                    let at = uniform_below(rng.next_u64(), nodes.len() as u64);
                    nodes.get(at as usize).copied()
                }
            }
            SelectPolicy::Sticky(key) => eligible()
                .map(|c| (mix64(key ^ mix64(c.node.0)), c.node))
                .max_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)))
                .map(|(_, node)| node),
            SelectPolicy::LowestLatency => eligible()
                .min_by_key(|c| (c.latency.is_none(), c.latency, c.node))
                .map(|c| c.node),
        };
        if policy == SelectPolicy::RoundRobin && picked.is_some() {
            self.last = picked;
        }
        picked
    }
}

/// Maps a uniform u64 onto `0..n` (multiply-shift: no modulo bias worth speaking of).
fn uniform_below(x: u64, n: u64) -> u64 {
    ((u128::from(x) * u128::from(n)) >> 64) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use std::collections::HashMap;

    fn three() -> Vec<Candidate> {
        // Deliberately out of id order.
        vec![
            Candidate::new(NodeId(30)),
            Candidate::new(NodeId(10)),
            Candidate::new(NodeId(20)),
        ]
    }

    fn counts(picks: impl Iterator<Item = Option<NodeId>>) -> HashMap<NodeId, u32> {
        let mut out = HashMap::new();
        for p in picks {
            *out.entry(p.expect("a node")).or_insert(0) += 1;
        }
        out
    }

    #[test]
    fn round_robin_spreads_evenly_across_three() {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let mut s = Selector::new();
        let c = three();
        let seq: Vec<_> = (0..6)
            .map(|_| s.pick(SelectPolicy::RoundRobin, &c, &[], &mut rng))
            .collect();
        let ids: Vec<_> = [10, 20, 30, 10, 20, 30].map(|i| Some(NodeId(i))).to_vec();
        assert_eq!(seq, ids);
        let spread = counts((0..300).map(|_| s.pick(SelectPolicy::RoundRobin, &c, &[], &mut rng)));
        assert!(spread.values().all(|n| *n == 100), "{spread:?}");
    }

    #[test]
    fn unhealthy_and_excluded_nodes_are_skipped() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut c = three();
        c[1].healthy = false; // node 10
        for policy in [
            SelectPolicy::RoundRobin,
            SelectPolicy::Random,
            SelectPolicy::Sticky(42),
            SelectPolicy::LowestLatency,
        ] {
            let mut s = Selector::new();
            for _ in 0..50 {
                let p = s.pick(policy, &c, &[NodeId(20)], &mut rng);
                assert_eq!(p, Some(NodeId(30)), "{policy:?}");
            }
            assert_eq!(
                s.pick(policy, &c, &[NodeId(20), NodeId(30)], &mut rng),
                None
            );
        }
        assert_eq!(
            Selector::new().pick(SelectPolicy::Random, &[], &[], &mut rng),
            None
        );
    }

    #[test]
    fn round_robin_survives_membership_changes() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let mut s = Selector::new();
        let c = three();
        assert_eq!(
            s.pick(SelectPolicy::RoundRobin, &c, &[], &mut rng),
            Some(NodeId(10))
        );
        // Node 20 leaves, node 15 joins: rotation continues after 10.
        let changed = [Candidate::new(NodeId(30)), Candidate::new(NodeId(15))];
        assert_eq!(
            s.pick(SelectPolicy::RoundRobin, &changed, &[], &mut rng),
            Some(NodeId(15))
        );
        assert_eq!(
            s.pick(SelectPolicy::RoundRobin, &changed, &[], &mut rng),
            Some(NodeId(30))
        );
        assert_eq!(
            s.pick(SelectPolicy::RoundRobin, &changed, &[], &mut rng),
            Some(NodeId(15))
        );
    }

    #[test]
    fn random_covers_all_nodes() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut s = Selector::new();
        let c = three();
        let spread = counts((0..3000).map(|_| s.pick(SelectPolicy::Random, &c, &[], &mut rng)));
        assert_eq!(spread.len(), 3);
        assert!(
            spread.values().all(|n| (800..1200).contains(n)),
            "{spread:?}"
        );
    }

    #[test]
    fn sticky_keeps_a_key_on_its_node_and_moves_only_displaced_keys() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let mut s = Selector::new();
        let c = three();
        let mut reversed = c.clone();
        reversed.reverse();
        let mut moved = 0;
        let mut per_node = HashMap::new();
        for key in 0..300u32 {
            let policy = SelectPolicy::sticky(&key.to_le_bytes());
            let home = s.pick(policy, &c, &[], &mut rng).expect("node");
            assert_eq!(s.pick(policy, &reversed, &[], &mut rng), Some(home));
            *per_node.entry(home).or_insert(0) += 1;
            // Remove node 20: only keys that lived there move.
            let without: Vec<_> = c.iter().copied().filter(|c| c.node != NodeId(20)).collect();
            let after = s.pick(policy, &without, &[], &mut rng).expect("node");
            if home == NodeId(20) {
                moved += 1;
            } else {
                assert_eq!(after, home);
            }
        }
        assert_eq!(per_node.len(), 3, "keys spread over every node");
        assert!(moved > 0);
    }

    #[test]
    fn lowest_latency_prefers_measured_then_lowest_id() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let mut s = Selector::new();
        let mut c = three();
        assert_eq!(
            s.pick(SelectPolicy::LowestLatency, &c, &[], &mut rng),
            Some(NodeId(10))
        );
        c[0].latency = Some(Duration::from_micros(900)); // 30
        c[2].latency = Some(Duration::from_micros(300)); // 20
        assert_eq!(
            s.pick(SelectPolicy::LowestLatency, &c, &[], &mut rng),
            Some(NodeId(20))
        );
        c[0].latency = Some(Duration::from_micros(300));
        assert_eq!(
            s.pick(SelectPolicy::LowestLatency, &c, &[], &mut rng),
            Some(NodeId(20))
        );
        assert_eq!(
            s.pick(SelectPolicy::LowestLatency, &c, &[NodeId(20)], &mut rng),
            Some(NodeId(30))
        );
    }
}
