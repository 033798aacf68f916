//! Which neighbours each origin's waves arrive through, and the withdrawals owed when one
//! of those paths goes away.
//!
//! This mirrors the pingwave candidates of the routing table (one per origin and
//! neighbour, refreshed by every wave that is evidence of a path, gone after `route_ttl`)
//! together with the wave sequence that last refreshed each, which the table does not keep.
//! When a path is removed (neighbour down, expiry, or a withdrawal from that neighbour):
//!
//! - if no path to the origin is left, every neighbour is told ([`Target::Neighbours`]):
//!   their routes through this node lead nowhere;
//! - if the best remaining path changed, its neighbour is told ([`Target::Neighbour`]):
//!   this node now sends that origin's traffic through it, so its route back through this
//!   node would be a loop (poison reverse).
//!
//! A withdrawal only ever removes a path, never adds one, and one is owed only when a path
//! is removed; every accepted withdrawal removes a path at its receiver. Paths are created
//! only by waves, so a burst of withdrawals ends, and across the mesh they are bounded by
//! the waves that created the paths.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use netrun_messages::NodeId;
use netrun_messages::discovery::PingwaveWithdraw;

/// Paths kept per origin: twice the routing table's default candidates, so the table's
/// choice is almost always among them; a path beyond this is not tracked (its route still
/// expires as usual).
const MAX_PATHS_PER_ORIGIN: usize = 8;

/// Who a withdrawal goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// Every direct neighbour.
    Neighbours,
    /// One neighbour.
    Neighbour(NodeId),
}

#[derive(Debug, Clone, Copy)]
struct Path {
    neighbour: NodeId,
    hops: u8,
    /// Freshest wave sequence that came through `neighbour`.
    seq: u64,
    heard_at: Instant,
}

#[derive(Debug, Default)]
struct Origin {
    /// Freshest wave sequence of the origin heard through any neighbour.
    latest: u64,
    paths: Vec<Path>,
}

impl Origin {
    fn best(&self) -> Option<NodeId> {
        self.paths
            .iter()
            .min_by_key(|p| (p.hops, p.neighbour))
            .map(|p| p.neighbour)
    }
}

/// Per-origin paths, bounded by `max_origins` and [`MAX_PATHS_PER_ORIGIN`], and the queue
/// of withdrawals owed (ordered by origin, so the same events owe the same withdrawals in
/// the same order).
#[derive(Debug)]
pub(crate) struct Paths {
    max_origins: usize,
    origins: BTreeMap<NodeId, Origin>,
    pending: VecDeque<(Target, PingwaveWithdraw)>,
}

impl Paths {
    pub(crate) fn new(max_origins: usize) -> Self {
        Self {
            max_origins,
            origins: BTreeMap::new(),
            pending: VecDeque::new(),
        }
    }

    /// A wave of `origin` with `seq`, `hops` away, came through `neighbour`.
    pub(crate) fn heard(
        &mut self,
        now: Instant,
        origin: NodeId,
        neighbour: NodeId,
        seq: u64,
        hops: u8,
    ) {
        if !self.origins.contains_key(&origin) && self.origins.len() >= self.max_origins {
            return;
        }
        let o = self.origins.entry(origin).or_default();
        o.latest = o.latest.max(seq);
        let path = Path {
            neighbour,
            hops,
            seq,
            heard_at: now,
        };
        if let Some(p) = o.paths.iter_mut().find(|p| p.neighbour == neighbour) {
            *p = Path {
                seq: p.seq.max(seq),
                ..path
            };
        } else if o.paths.len() < MAX_PATHS_PER_ORIGIN {
            o.paths.push(path);
        }
    }

    /// `neighbour` is down: every path through it goes.
    pub(crate) fn remove_neighbour(&mut self, neighbour: NodeId) {
        let affected: Vec<NodeId> = self
            .origins
            .iter()
            .filter(|(_, o)| o.paths.iter().any(|p| p.neighbour == neighbour))
            .map(|(id, _)| *id)
            .collect();
        for origin in affected {
            self.remove(origin, |p| p.neighbour == neighbour);
        }
    }

    /// Removes paths not refreshed within `ttl` of `now`.
    pub(crate) fn expire(&mut self, now: Instant, ttl: Duration) {
        let stale = |p: &Path| now.saturating_duration_since(p.heard_at) >= ttl;
        let affected: Vec<NodeId> = self
            .origins
            .iter()
            .filter(|(_, o)| o.paths.iter().any(stale))
            .map(|(id, _)| *id)
            .collect();
        for origin in affected {
            self.remove(origin, stale);
        }
    }

    /// `from` withdrew `withdraw.origin`. Returns whether the path through `from` went (the
    /// caller then drops the route through it): only if one was known and no wave fresher
    /// than the withdrawal came through `from` since.
    pub(crate) fn withdrawn(&mut self, from: NodeId, withdraw: &PingwaveWithdraw) -> bool {
        let known = self.origins.get(&withdraw.origin).is_some_and(|o| {
            o.paths
                .iter()
                .any(|p| p.neighbour == from && p.seq <= withdraw.seq)
        });
        if known {
            self.remove(withdraw.origin, |p| p.neighbour == from);
        }
        known
    }

    /// The next withdrawal owed.
    pub(crate) fn poll(&mut self) -> Option<(Target, PingwaveWithdraw)> {
        self.pending.pop_front()
    }

    /// Removes the paths to `origin` that `gone` selects and queues what that owes.
    fn remove(&mut self, origin: NodeId, gone: impl Fn(&Path) -> bool) {
        let Some(o) = self.origins.get_mut(&origin) else {
            return;
        };
        let before = o.best();
        o.paths.retain(|p| !gone(p));
        let withdraw = PingwaveWithdraw {
            origin,
            seq: o.latest,
        };
        match o.best() {
            None => {
                self.origins.remove(&origin);
                self.pending.push_back((Target::Neighbours, withdraw));
            }
            Some(best) if Some(best) != before => {
                self.pending.push_back((Target::Neighbour(best), withdraw));
            }
            Some(_) => {}
        }
    }
}
