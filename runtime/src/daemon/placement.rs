//! Choosing a node for a daemon: capability filter, then lowest RTT, then least
//! saturation, then node id.
//!
//! The order is total and deterministic, so every node that ranks the same candidates
//! picks the same target:
//! 1. nodes whose capability set does not match the daemon's requirements are out;
//! 2. a node with a known RTT beats one without (unknown is not "close"), and lower RTT wins;
//! 3. lower saturation wins (clamped to 0.0..=1.0; a NaN saturation vetoes the node,
//!    because a poisoned number must never win a comparison);
//! 4. the lower node id breaks the remaining ties.

use std::cmp::Ordering;
use std::time::Duration;

use netrun_messages::{CapabilityFilter, CapabilitySet, NodeId};

/// One node that could host a daemon, as the capability index and liveness see it.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    /// The node.
    pub node: NodeId,
    /// What it announced.
    pub caps: &'a CapabilitySet,
    /// Smoothed round-trip time from the placing node; `None` if never measured (and
    /// `Some(ZERO)` for the placing node itself).
    pub rtt: Option<Duration>,
    /// Its reported load, 0.0 (idle) to 1.0 (saturated).
    pub saturation: f32,
}

/// The best node for a daemon with requirements `filter`, or `None` if no candidate
/// qualifies. O(n), no allocation.
pub fn place(filter: &CapabilityFilter, candidates: &[Candidate<'_>]) -> Option<NodeId> {
    candidates
        .iter()
        .filter(|c| eligible(filter, c))
        .min_by(|a, b| compare(a, b))
        .map(|c| c.node)
}

/// Every qualifying node, best first (for trying the next one when the best refuses).
pub fn rank(filter: &CapabilityFilter, candidates: &[Candidate<'_>]) -> Vec<NodeId> {
    let mut eligible: Vec<&Candidate<'_>> =
        candidates.iter().filter(|c| eligible(filter, c)).collect();
    eligible.sort_by(|a, b| compare(a, b));
    eligible.into_iter().map(|c| c.node).collect()
}

fn eligible(filter: &CapabilityFilter, candidate: &Candidate<'_>) -> bool {
    !candidate.saturation.is_nan() && filter.matches(candidate.caps)
}

/// Placement order between two eligible candidates (less is better).
fn compare(a: &Candidate<'_>, b: &Candidate<'_>) -> Ordering {
    rtt_order(a.rtt, b.rtt)
        .then_with(|| clamp(a.saturation).total_cmp(&clamp(b.saturation)))
        .then_with(|| a.node.cmp(&b.node))
}

fn rtt_order(a: Option<Duration>, b: Option<Duration>) -> Ordering {
    match (a, b) {
        (Some(a), Some(b)) => a.cmp(&b),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}

fn clamp(saturation: f32) -> f32 {
    saturation.clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use netrun_messages::{GpuInfo, GpuVendor, Hardware};

    fn ms(n: u64) -> Option<Duration> {
        Some(Duration::from_millis(n))
    }

    fn cand(node: u64, caps: &CapabilitySet, rtt: Option<Duration>, sat: f32) -> Candidate<'_> {
        Candidate {
            node: NodeId(node),
            caps,
            rtt,
            saturation: sat,
        }
    }

    #[test]
    fn filter_first() {
        let plain = CapabilitySet::new();
        let gpu = CapabilitySet::new().with_hardware(Hardware::new(8, 16).with_gpu(GpuInfo::new(
            GpuVendor::Nvidia,
            "a100",
            80,
        )));
        let filter = CapabilityFilter::new().require_gpu();
        // The GPU node is farther and busier, but the only one that qualifies.
        let cs = [cand(1, &plain, ms(1), 0.0), cand(2, &gpu, ms(90), 0.9)];
        assert_eq!(place(&filter, &cs), Some(NodeId(2)));
        assert_eq!(rank(&filter, &cs), vec![NodeId(2)]);
        assert_eq!(place(&filter, &cs[..1]), None);
        assert_eq!(place(&CapabilityFilter::new(), &[]), None);
        assert_eq!(place(&CapabilityFilter::new(), &cs), Some(NodeId(1)));
    }

    #[test]
    fn rtt_then_saturation_then_node_id() {
        let caps = CapabilitySet::new();
        let any = CapabilityFilter::new();
        // Lowest RTT wins even when busier.
        let cs = [cand(1, &caps, ms(20), 0.0), cand(2, &caps, ms(5), 0.8)];
        assert_eq!(place(&any, &cs), Some(NodeId(2)));
        // Unknown RTT after every known one, even a slow one.
        let cs = [cand(1, &caps, None, 0.0), cand(2, &caps, ms(500), 0.5)];
        assert_eq!(place(&any, &cs), Some(NodeId(2)));
        // Equal RTT: least saturation.
        let cs = [cand(1, &caps, ms(5), 0.7), cand(2, &caps, ms(5), 0.2)];
        assert_eq!(place(&any, &cs), Some(NodeId(2)));
        // Equal RTT and saturation: lower node id.
        let cs = [cand(9, &caps, ms(5), 0.2), cand(3, &caps, ms(5), 0.2)];
        assert_eq!(place(&any, &cs), Some(NodeId(3)));
        // Both unknown: saturation, then id.
        let cs = [
            cand(4, &caps, None, 0.3),
            cand(5, &caps, None, 0.1),
            cand(6, &caps, None, 0.1),
        ];
        assert_eq!(place(&any, &cs), Some(NodeId(5)));
        // The whole order.
        let cs = [
            cand(7, &caps, None, 0.0),
            cand(4, &caps, ms(10), 0.5),
            cand(3, &caps, ms(10), 0.5),
            cand(2, &caps, ms(10), 0.1),
            cand(1, &caps, ms(30), 0.0),
        ];
        assert_eq!(
            rank(&any, &cs),
            vec![NodeId(2), NodeId(3), NodeId(4), NodeId(1), NodeId(7)]
        );
        // The answer does not depend on input order.
        let mut rev = cs;
        rev.reverse();
        assert_eq!(rank(&any, &rev), rank(&any, &cs));
        assert_eq!(place(&any, &rev), Some(NodeId(2)));
    }

    #[test]
    fn nan_vetoes_and_out_of_range_clamps() {
        let caps = CapabilitySet::new();
        let any = CapabilityFilter::new();
        let cs = [cand(1, &caps, ms(1), f32::NAN), cand(2, &caps, ms(9), 0.9)];
        assert_eq!(place(&any, &cs), Some(NodeId(2)));
        assert_eq!(rank(&any, &cs), vec![NodeId(2)]);
        // Negative saturation counts as idle, above one as saturated.
        let cs = [
            cand(3, &caps, ms(1), -5.0),
            cand(2, &caps, ms(1), 0.0),
            cand(1, &caps, ms(1), 7.0),
        ];
        assert_eq!(rank(&any, &cs), vec![NodeId(2), NodeId(3), NodeId(1)]);
    }
}
