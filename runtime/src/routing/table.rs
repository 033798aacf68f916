//! The routing table and the snapshot it publishes.
//!
//! Every candidate's expiry is also kept in one ordered set, `(expires_at, destination,
//! next hop)`, updated wherever a candidate is added, refreshed or withdrawn, so the next
//! deadline is the set's first element and a timeout visits only the candidates that
//! expired.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use netrun_messages::NodeId;

/// Where a route was learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteSource {
    /// An authenticated session with the destination itself.
    Direct,
    /// A pingwave that reached us through the next hop.
    Pingwave,
    /// A discovery backend (peer exchange, DHT) suggested the path.
    Discovery,
}

/// One way to reach a destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// The neighbour the packet is handed to.
    pub next_hop: NodeId,
    /// Path cost; lower is better (hop count for pingwave routes, 1 for direct sessions).
    pub metric: u32,
    /// When the route stops being used unless refreshed.
    pub expires_at: Instant,
    /// Where it was learned.
    pub source: RouteSource,
}

/// Table limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoutingConfig {
    /// Candidate routes kept per destination (one per next hop). Four covers a node with a
    /// handful of neighbours and lets a reroute happen without waiting for a new probe.
    pub max_candidates: usize,
    /// Destinations kept; a new destination beyond this is refused and counted.
    pub max_destinations: usize,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        Self {
            max_candidates: 4,
            max_destinations: 65_536,
        }
    }
}

/// The read-only `destination → next hop` map the router publishes for the data path.
///
/// Immutable once built; cloning shares the map. `version` grows with every rebuild so a
/// reader can tell whether it holds the latest.
#[derive(Debug, Clone, Default)]
pub struct RoutingSnapshot {
    version: u64,
    next_hops: Arc<HashMap<NodeId, NodeId>>,
}

impl RoutingSnapshot {
    /// The next hop toward `dst`, if there is a route.
    #[inline]
    pub fn lookup(&self, dst: NodeId) -> Option<NodeId> {
        self.next_hops.get(&dst).copied()
    }

    /// Destinations with a route.
    pub fn len(&self) -> usize {
        self.next_hops.len()
    }

    /// Whether no destination has a route.
    pub fn is_empty(&self) -> bool {
        self.next_hops.is_empty()
    }

    /// The rebuild counter of the table that built this snapshot.
    pub fn version(&self) -> u64 {
        self.version
    }
}

#[derive(Debug, Default)]
struct Entry {
    /// At most `max_candidates`, at most one per next hop.
    candidates: Vec<Route>,
    /// Next hop of the installed route, if any.
    installed: Option<NodeId>,
}

impl Entry {
    fn installed_route(&self) -> Option<&Route> {
        let hop = self.installed?;
        self.candidates.iter().find(|r| r.next_hop == hop)
    }

    /// Re-applies the selection rule; returns whether the installed next hop changed.
    fn reselect(&mut self) -> bool {
        let best = self
            .candidates
            .iter()
            .min_by_key(|r| (r.metric, r.next_hop))
            .copied();
        let before = self.installed;
        self.installed = match (self.installed_route(), best) {
            (_, None) => None,
            (Some(cur), Some(best)) if best.metric >= cur.metric => Some(cur.next_hop),
            (_, Some(best)) => Some(best.next_hop),
        };
        before != self.installed
    }
}

/// Destination → candidate routes, with the strictly-better replacement rule.
///
/// Sans-IO: the router actor feeds it sessions, pingwave route updates, discovery hints and
/// failure-detector verdicts, and publishes [`snapshot`](Self::snapshot) after each change.
#[derive(Debug)]
pub struct RoutingTable {
    local: NodeId,
    config: RoutingConfig,
    entries: HashMap<NodeId, Entry>,
    /// `(expires_at, destination, next hop)` of every candidate in `entries`, and nothing
    /// else: the first element is the next deadline.
    expiries: BTreeSet<(Instant, NodeId, NodeId)>,
    snapshot: RoutingSnapshot,
    dirty: bool,
    refused: u64,
}

impl RoutingTable {
    /// An empty table for node `local`.
    pub fn new(local: NodeId, config: RoutingConfig) -> Self {
        Self {
            local,
            config,
            entries: HashMap::new(),
            expiries: BTreeSet::new(),
            snapshot: RoutingSnapshot::default(),
            dirty: false,
            refused: 0,
        }
    }

    /// Offers a route to `dst`. A candidate through the same next hop is refreshed in place
    /// (metric, expiry, source), except that a [`RouteSource::Direct`] candidate is refreshed
    /// only by another direct offer: a session is better evidence than a probe, and a probe
    /// route would otherwise expire a live session's route when probes stop. A new next hop
    /// joins the candidates, evicting the worst if the set is full. The installed route
    /// changes only when a candidate is strictly better than it. Returns whether the
    /// installed next hop changed.
    pub fn handle_route(&mut self, now: Instant, dst: NodeId, route: Route) -> bool {
        if dst == self.local || route.next_hop == self.local || route.expires_at <= now {
            return false;
        }
        if !self.entries.contains_key(&dst) && self.entries.len() >= self.config.max_destinations {
            self.refused += 1;
            return false;
        }
        let max = self.config.max_candidates.max(1);
        let entry = self.entries.entry(dst).or_default();
        let replaced = if let Some(c) = entry
            .candidates
            .iter_mut()
            .find(|c| c.next_hop == route.next_hop)
        {
            if c.source == RouteSource::Direct && route.source != RouteSource::Direct {
                return false;
            }
            Some(std::mem::replace(c, route))
        } else if entry.candidates.len() < max {
            entry.candidates.push(route);
            None
        } else {
            let worst = entry
                .candidates
                .iter()
                .enumerate()
                .filter(|(_, c)| Some(c.next_hop) != entry.installed)
                .max_by_key(|(_, c)| (c.metric, std::cmp::Reverse(c.expires_at)))
                .map(|(i, c)| (i, c.metric));
            match worst {
                Some((i, metric)) if route.metric < metric => {
                    Some(std::mem::replace(&mut entry.candidates[i], route))
                }
                _ => return false,
            }
        };
        if let Some(old) = replaced {
            self.expiries.remove(&(old.expires_at, dst, old.next_hop));
        }
        self.expiries
            .insert((route.expires_at, dst, route.next_hop));
        let changed = entry.reselect();
        self.dirty |= changed;
        changed
    }

    /// The failure detector declared `next_hop` down: every candidate through it is
    /// withdrawn and each affected destination falls back to its best remaining candidate.
    /// Returns the destinations whose installed route changed (rerouted or now unreachable).
    pub fn handle_peer_down(&mut self, next_hop: NodeId) -> Vec<NodeId> {
        self.withdraw(|c| c.next_hop != next_hop)
    }

    /// Neighbour `next_hop` withdrew its route to `dst`: the pingwave candidate through it
    /// goes and `dst` falls back to its best remaining candidate. Direct and discovery
    /// candidates are not touched (a withdrawal speaks only for what waves taught), and
    /// nothing is ever installed by a withdrawal. Returns whether the installed next hop
    /// changed.
    pub fn handle_withdraw(&mut self, dst: NodeId, next_hop: NodeId) -> bool {
        let Some(entry) = self.entries.get_mut(&dst) else {
            return false;
        };
        let Some(i) = entry
            .candidates
            .iter()
            .position(|c| c.next_hop == next_hop && c.source == RouteSource::Pingwave)
        else {
            return false;
        };
        let gone = entry.candidates.swap_remove(i);
        self.expiries.remove(&(gone.expires_at, dst, gone.next_hop));
        let changed = entry.reselect();
        if entry.candidates.is_empty() {
            self.entries.remove(&dst);
        }
        self.dirty |= changed;
        changed
    }

    /// Drops expired candidates and reselects. Returns the destinations whose installed
    /// route changed, ascending. Visits only the candidates that expired.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<NodeId> {
        let mut touched = Vec::new();
        while let Some(&(expires_at, dst, hop)) = self.expiries.first() {
            if expires_at > now {
                break;
            }
            self.expiries.pop_first();
            if let Some(entry) = self.entries.get_mut(&dst) {
                entry.candidates.retain(|c| c.next_hop != hop);
                touched.push(dst);
            }
        }
        touched.sort_unstable();
        touched.dedup();
        let mut changed = Vec::new();
        for dst in touched {
            let Some(entry) = self.entries.get_mut(&dst) else {
                continue;
            };
            if entry.reselect() {
                changed.push(dst);
            }
            if entry.candidates.is_empty() {
                self.entries.remove(&dst);
            }
        }
        self.dirty |= !changed.is_empty();
        changed
    }

    /// Keeps only the candidates `keep` accepts, reselects where any went and forgets
    /// destinations left without one. Returns the destinations whose installed route
    /// changed, ascending.
    fn withdraw(&mut self, mut keep: impl FnMut(&Route) -> bool) -> Vec<NodeId> {
        let mut changed = Vec::new();
        let expiries = &mut self.expiries;
        self.entries.retain(|dst, entry| {
            let before = entry.candidates.len();
            entry.candidates.retain(|c| {
                let kept = keep(c);
                if !kept {
                    expiries.remove(&(c.expires_at, *dst, c.next_hop));
                }
                kept
            });
            if entry.candidates.len() != before && entry.reselect() {
                changed.push(*dst);
            }
            !entry.candidates.is_empty()
        });
        changed.sort_unstable();
        self.dirty |= !changed.is_empty();
        changed
    }

    /// The earliest candidate expiry, when [`handle_timeout`](Self::handle_timeout) has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.expiries.first().map(|(expires_at, ..)| *expires_at)
    }

    /// The installed route to `dst`.
    pub fn lookup(&self, dst: NodeId) -> Option<&Route> {
        self.entries.get(&dst)?.installed_route()
    }

    /// Every installed route, in no particular order.
    pub fn routes(&self) -> impl Iterator<Item = (NodeId, &Route)> {
        self.entries
            .iter()
            .filter_map(|(dst, e)| Some((*dst, e.installed_route()?)))
    }

    /// Every candidate to `dst` (installed or not).
    pub fn candidates(&self, dst: NodeId) -> &[Route] {
        self.entries
            .get(&dst)
            .map_or(&[][..], |e| e.candidates.as_slice())
    }

    /// Destinations with at least one candidate.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Routes refused because the table was full.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// The current snapshot, rebuilt only if an installed route changed since the last call.
    pub fn snapshot(&mut self) -> RoutingSnapshot {
        if self.dirty {
            let map = self
                .entries
                .iter()
                .filter_map(|(dst, e)| Some((*dst, e.installed?)))
                .collect();
            self.snapshot = RoutingSnapshot {
                version: self.snapshot.version + 1,
                next_hops: Arc::new(map),
            };
            self.dirty = false;
        }
        self.snapshot.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_clock::t0;
    use proptest::prelude::*;
    use std::time::Duration;

    proptest! {
        #[test]
        fn installed_is_always_a_best_candidate_and_snapshot_agrees(
            ops in proptest::collection::vec(
                (0u8..5, 1u64..6, 2u64..8, 1u32..6, 0u64..40, 1u64..20),
                1..80,
            )
        ) {
            let t0 = t0();
            let mut t = RoutingTable::new(NodeId(1), RoutingConfig { max_candidates: 3, max_destinations: 8 });
            for (op, dst, hop, metric, at, ttl) in ops {
                let now = t0 + Duration::from_secs(at);
                let source = match (op, metric % 2) {
                    (0, _) => RouteSource::Direct,
                    (_, 0) => RouteSource::Discovery,
                    _ => RouteSource::Pingwave,
                };
                match op {
                    0 | 1 => { t.handle_route(now, NodeId(dst), Route {
                        next_hop: NodeId(hop), metric, expires_at: now + Duration::from_secs(ttl),
                        source,
                    }); }
                    2 => { t.handle_peer_down(NodeId(hop)); }
                    3 => {
                        let had = t.candidates(NodeId(dst)).iter()
                            .any(|c| c.next_hop == NodeId(hop) && c.source == RouteSource::Pingwave);
                        let others = t.candidates(NodeId(dst)).len() - usize::from(had);
                        t.handle_withdraw(NodeId(dst), NodeId(hop));
                        prop_assert_eq!(t.candidates(NodeId(dst)).len(), others, "only the withdrawn probe route goes");
                    }
                    _ => { t.handle_timeout(now); }
                }
                let snap = t.snapshot();
                for d in 1..6 {
                    let c = t.candidates(NodeId(d));
                    prop_assert!(c.len() <= 3);
                    let mut hops: Vec<NodeId> = c.iter().map(|r| r.next_hop).collect();
                    hops.sort_unstable();
                    hops.dedup();
                    prop_assert_eq!(hops.len(), c.len(), "one candidate per next hop");
                    let best = c.iter().map(|r| r.metric).min();
                    prop_assert_eq!(t.lookup(NodeId(d)).map(|r| r.metric), best);
                    prop_assert_eq!(snap.lookup(NodeId(d)), t.lookup(NodeId(d)).map(|r| r.next_hop));
                }
                // The expiry index holds exactly the candidates' expiries.
                let mut held: Vec<(Instant, NodeId, NodeId)> = t
                    .entries
                    .iter()
                    .flat_map(|(d, e)| e.candidates.iter().map(move |c| (c.expires_at, *d, c.next_hop)))
                    .collect();
                held.sort_unstable();
                prop_assert_eq!(t.poll_timeout(), held.first().map(|h| h.0));
                prop_assert_eq!(held, t.expiries.iter().copied().collect::<Vec<_>>());
            }
        }
    }

    fn route(hop: u64, metric: u32, at: Instant) -> Route {
        Route {
            next_hop: NodeId(hop),
            metric,
            expires_at: at + Duration::from_secs(30),
            source: RouteSource::Pingwave,
        }
    }

    #[test]
    fn replaced_only_by_strictly_better() {
        let now = t0();
        let mut t = RoutingTable::new(NodeId(1), RoutingConfig::default());
        assert!(t.handle_route(now, NodeId(9), route(2, 3, now)));
        assert!(
            !t.handle_route(now, NodeId(9), route(3, 3, now)),
            "a tie keeps the installed"
        );
        assert_eq!(t.lookup(NodeId(9)).map(|r| r.next_hop), Some(NodeId(2)));
        assert!(t.handle_route(now, NodeId(9), route(4, 2, now)));
        assert_eq!(t.snapshot().lookup(NodeId(9)), Some(NodeId(4)));
        assert_eq!(t.candidates(NodeId(9)).len(), 3);
    }

    #[test]
    fn peer_down_falls_back_to_a_candidate_and_expiry_removes() {
        let now = t0();
        let mut t = RoutingTable::new(NodeId(1), RoutingConfig::default());
        t.handle_route(now, NodeId(9), route(2, 2, now));
        t.handle_route(now, NodeId(9), route(3, 4, now));
        t.handle_route(now, NodeId(2), route(2, 1, now));
        let s1 = t.snapshot();
        assert_eq!(t.handle_peer_down(NodeId(2)), vec![NodeId(2), NodeId(9)]);
        let s2 = t.snapshot();
        assert!(s2.version() > s1.version());
        assert_eq!(
            s1.lookup(NodeId(9)),
            Some(NodeId(2)),
            "old snapshots are immutable"
        );
        assert_eq!(s2.lookup(NodeId(9)), Some(NodeId(3)));
        assert_eq!(s2.lookup(NodeId(2)), None);
        assert_eq!(t.poll_timeout(), Some(now + Duration::from_secs(30)));
        assert_eq!(
            t.handle_timeout(now + Duration::from_secs(31)),
            vec![NodeId(9)]
        );
        assert!(t.is_empty());
        assert!(t.snapshot().is_empty());
    }

    #[test]
    fn a_refresh_moves_the_deadline_and_timeouts_take_only_what_expired() {
        let now = t0();
        let mut t = RoutingTable::new(NodeId(1), RoutingConfig::default());
        let at = |secs| now + Duration::from_secs(secs);
        let with_expiry = |hop, metric, secs| Route {
            expires_at: at(secs),
            ..route(hop, metric, now)
        };
        t.handle_route(now, NodeId(9), with_expiry(2, 1, 10));
        t.handle_route(now, NodeId(9), with_expiry(3, 2, 20));
        t.handle_route(now, NodeId(8), with_expiry(3, 1, 30));
        assert_eq!(t.poll_timeout(), Some(at(10)));
        // Refreshing the route through hop 2 replaces its old deadline.
        t.handle_route(now, NodeId(9), with_expiry(2, 1, 40));
        assert_eq!(t.poll_timeout(), Some(at(20)));
        assert!(t.handle_timeout(at(19)).is_empty());
        assert!(
            t.handle_timeout(at(20)).is_empty(),
            "a backup expired, the installed route stays"
        );
        assert_eq!(t.candidates(NodeId(9)).len(), 1);
        assert_eq!(t.poll_timeout(), Some(at(30)));
        assert_eq!(t.handle_timeout(at(35)), vec![NodeId(8)]);
        assert_eq!(t.len(), 1);
        assert_eq!(t.handle_timeout(at(40)), vec![NodeId(9)]);
        assert!(t.is_empty());
        assert_eq!(t.poll_timeout(), None);
    }

    #[test]
    fn a_probe_never_overrides_a_direct_route_through_the_same_hop() {
        let now = t0();
        let mut t = RoutingTable::new(NodeId(1), RoutingConfig::default());
        let direct = Route {
            source: RouteSource::Direct,
            ..route(2, 1, now)
        };
        assert!(t.handle_route(now, NodeId(2), direct));
        let probe = Route {
            expires_at: now + Duration::from_secs(1),
            ..route(2, 1, now)
        };
        assert!(!t.handle_route(now, NodeId(2), probe));
        assert_eq!(t.lookup(NodeId(2)), Some(&direct));
        assert_eq!(t.routes().count(), 1);
        assert!(t.handle_timeout(now + Duration::from_secs(2)).is_empty());
        assert_eq!(t.snapshot().lookup(NodeId(2)), Some(NodeId(2)));
    }

    #[test]
    fn a_withdrawal_drops_only_the_probe_route_through_the_sender() {
        let now = t0();
        let mut t = RoutingTable::new(NodeId(1), RoutingConfig::default());
        t.handle_route(now, NodeId(9), route(2, 2, now));
        t.handle_route(now, NodeId(9), route(3, 4, now));
        let direct = Route {
            source: RouteSource::Direct,
            ..route(2, 1, now)
        };
        t.handle_route(now, NodeId(2), direct);
        assert!(
            !t.handle_withdraw(NodeId(9), NodeId(4)),
            "no route through 4"
        );
        assert!(
            !t.handle_withdraw(NodeId(2), NodeId(2)),
            "a direct route stays"
        );
        assert_eq!(t.lookup(NodeId(2)), Some(&direct));
        assert!(t.handle_withdraw(NodeId(9), NodeId(2)));
        assert_eq!(t.snapshot().lookup(NodeId(9)), Some(NodeId(3)));
        assert!(t.handle_withdraw(NodeId(9), NodeId(3)));
        assert!(t.snapshot().lookup(NodeId(9)).is_none());
        assert_eq!(t.len(), 1);
        assert_eq!(t.poll_timeout(), Some(now + Duration::from_secs(30)));
    }

    #[test]
    fn self_routes_ignored_and_candidates_bounded() {
        let now = t0();
        let config = RoutingConfig {
            max_candidates: 2,
            max_destinations: 1,
        };
        let mut t = RoutingTable::new(NodeId(1), config);
        assert!(!t.handle_route(now, NodeId(1), route(2, 1, now)));
        assert!(!t.handle_route(now, NodeId(9), route(1, 1, now)));
        t.handle_route(now, NodeId(9), route(2, 5, now));
        t.handle_route(now, NodeId(9), route(3, 6, now));
        t.handle_route(now, NodeId(9), route(4, 7, now));
        assert_eq!(t.candidates(NodeId(9)).len(), 2);
        t.handle_route(now, NodeId(9), route(5, 1, now));
        let hops: Vec<u64> = t
            .candidates(NodeId(9))
            .iter()
            .map(|r| r.next_hop.0)
            .collect();
        assert_eq!(hops, vec![2, 5]);
        assert!(!t.handle_route(now, NodeId(8), route(2, 1, now)));
        assert_eq!(t.refused(), 1);
    }
}
