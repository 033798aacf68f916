//! The proximity graph: every node a pingwave reached us from, how far and through whom.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use netrun_messages::NodeId;
use netrun_messages::discovery::Pingwave;

/// What this node knows about one pingwave origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProximityNode {
    /// Freshest wave sequence seen from the origin.
    pub last_seq: u64,
    /// Hops from this node to the origin on the recorded path (1 = direct neighbour).
    pub hops: u8,
    /// The neighbour the recorded path goes through.
    pub via: NodeId,
    /// Sum of link RTTs along the recorded path, as far as they were measured.
    pub path_rtt: Duration,
    /// When the last fresh wave arrived.
    pub last_seen: Instant,
    /// When the recorded path may be replaced by a worse one.
    pub path_expires_at: Instant,
}

/// How a pingwave changed the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Acceptance {
    /// A fresher sequence with a path not worse than the recorded one (or the recorded path
    /// was stale, or the update came through the recorded neighbour): path updated.
    Fresh,
    /// A fresher sequence over a worse path: freshness recorded, path kept.
    FreshSeqOnly,
    /// The same sequence over a strictly shorter path: path updated.
    Improved,
    /// The same sequence, not shorter: suppressed.
    Duplicate,
    /// An older sequence: ignored entirely.
    Stale,
    /// The wave is ours, or claims to come from us.
    SelfEdge,
    /// `hops == 0` but the sender is not the origin: a spoofed direct claim.
    Spoofed,
    /// The graph is full and the origin is new: not recorded.
    Full,
}

impl Acceptance {
    /// Whether the wave is propagated further (once per sequence, again on improvement).
    pub fn propagates(self) -> bool {
        matches!(self, Self::Fresh | Self::FreshSeqOnly | Self::Improved)
    }

    /// Whether the wave is evidence of a usable path through its sender.
    pub fn is_path(self) -> bool {
        self.propagates() || self == Self::Duplicate
    }
}

/// Pingwave origins and direct neighbour edges, bounded by `max_nodes`.
#[derive(Debug)]
pub struct ProximityGraph {
    local: NodeId,
    max_nodes: usize,
    nodes: HashMap<NodeId, ProximityNode>,
    edges: HashMap<NodeId, Option<Duration>>,
}

impl ProximityGraph {
    /// An empty graph around `local`.
    pub fn new(local: NodeId, max_nodes: usize) -> Self {
        Self {
            local,
            max_nodes,
            nodes: HashMap::new(),
            edges: HashMap::new(),
        }
    }

    /// Applies the acceptance rule to `wave`, received from neighbour `from`.
    ///
    /// Freshness and path quality are separate: the freshest sequence is always recorded,
    /// but the path (hops, neighbour, RTT) changes only for a path that is not worse, unless
    /// the recorded path has aged past `path_ttl` or the wave came through the recorded
    /// neighbour. An older sequence never changes anything, so a replayed or spoofed old
    /// wave cannot move a node's path.
    pub fn update_from_pingwave(
        &mut self,
        now: Instant,
        from: NodeId,
        wave: &Pingwave,
        path_rtt: Duration,
        path_ttl: Duration,
    ) -> Acceptance {
        if wave.origin == self.local || from == self.local {
            return Acceptance::SelfEdge;
        }
        if wave.hops == 0 && from != wave.origin {
            return Acceptance::Spoofed;
        }
        let hops = wave.hops.saturating_add(1);
        let path = ProximityNode {
            last_seq: wave.seq,
            hops,
            via: from,
            path_rtt,
            last_seen: now,
            path_expires_at: now + path_ttl,
        };
        let full = self.nodes.len() >= self.max_nodes;
        let acceptance = match self.nodes.get_mut(&wave.origin) {
            None if full => return Acceptance::Full,
            None => {
                self.nodes.insert(wave.origin, path);
                Acceptance::Fresh
            }
            Some(n) if wave.seq < n.last_seq => Acceptance::Stale,
            Some(n) if wave.seq == n.last_seq => {
                if hops < n.hops {
                    *n = path;
                    Acceptance::Improved
                } else {
                    Acceptance::Duplicate
                }
            }
            Some(n) => {
                if hops <= n.hops || from == n.via || now >= n.path_expires_at {
                    *n = path;
                    Acceptance::Fresh
                } else {
                    n.last_seq = wave.seq;
                    n.last_seen = now;
                    Acceptance::FreshSeqOnly
                }
            }
        };
        if wave.hops == 0 && acceptance.is_path() && (self.edges.len() < self.max_nodes) {
            self.edges.entry(from).or_insert(None);
        }
        acceptance
    }

    /// Records a measured RTT on the direct edge to `neighbour`.
    pub fn insert_or_update_edge(&mut self, neighbour: NodeId, rtt: Duration) {
        if neighbour == self.local {
            return;
        }
        if self.edges.contains_key(&neighbour) || self.edges.len() < self.max_nodes {
            self.edges.insert(neighbour, Some(rtt));
        }
    }

    /// Forgets origins not heard from within `ttl`; returns how many were removed.
    pub fn expire(&mut self, now: Instant, ttl: Duration) -> usize {
        let before = self.nodes.len();
        self.nodes
            .retain(|_, n| now.saturating_duration_since(n.last_seen) < ttl);
        let nodes = &self.nodes;
        self.edges.retain(|id, _| nodes.contains_key(id));
        before - self.nodes.len()
    }

    /// Removes a neighbour the failure detector declared down, and every path through it.
    pub fn remove_neighbour(&mut self, neighbour: NodeId) {
        self.edges.remove(&neighbour);
        self.nodes
            .retain(|id, n| *id != neighbour && n.via != neighbour);
    }

    /// What is known about `origin`.
    pub fn node(&self, origin: NodeId) -> Option<&ProximityNode> {
        self.nodes.get(&origin)
    }

    /// Every known origin.
    pub fn nodes(&self) -> impl Iterator<Item = (NodeId, &ProximityNode)> {
        self.nodes.iter().map(|(id, n)| (*id, n))
    }

    /// Measured RTT of the direct edge to `neighbour` (`Some(None)`: an edge, not measured).
    pub fn edge(&self, neighbour: NodeId) -> Option<Option<Duration>> {
        self.edges.get(&neighbour).copied()
    }

    /// Known origins (O(1)).
    pub fn num_nodes(&self) -> usize {
        self.nodes.len()
    }

    /// Direct edges (O(1)).
    pub fn num_edges(&self) -> usize {
        self.edges.len()
    }
}
