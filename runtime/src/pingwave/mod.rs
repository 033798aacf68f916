//! Pingwaves: periodic probes flooded to a hop radius that build the proximity graph and
//! feed the routing table.
//!
//! ```text
//!  poll_wave(now) ──▶ Pingwave{seq+1, ttl = radius, hops 0} ──▶ every neighbour
//!  handle_wave(now, from, link_rtt, wave)
//!      ├─ ProximityGraph::update_from_pingwave  (acceptance rule, duplicates, self-edges)
//!      ├─ echo   ──▶ back to `from` when it is the origin (hops 0), for the RTT
//!      ├─ forward──▶ every neighbour but `from` while ttl > 1: ttl - 1, hops + 1, path RTT + link RTT
//!      └─ route  ──▶ RoutingTable::handle_route(origin via from, metric = hops + 1)
//!  handle_echo(now, from, echo) ──▶ link RTT sample for the edge to `from`
//!  handle_withdraw(now, from, w) ──▶ drop the route to `w.origin` through `from`
//!  handle_peer_down / handle_timeout / handle_withdraw ──▶ poll_withdraw(): withdrawals owed
//! ```
//!
//! Every wave that is not stale, spoofed or self-originated yields a route candidate, so
//! the routing table learns every neighbour a destination can be reached through, not only
//! the one the graph records; that is what lets it reroute without a new probe.
//!
//! Withdrawals carry a failure beyond the nodes adjacent to it: when a node loses its last
//! path to an origin, or its best path moves to another neighbour, it tells its neighbours
//! at once instead of letting their routes through it expire (see `paths`).

mod graph;
mod paths;

use std::time::{Duration, Instant};

use netrun_messages::NodeId;
use netrun_messages::discovery::{Pingwave, PingwaveEcho, PingwaveWithdraw};

pub use graph::{Acceptance, ProximityGraph, ProximityNode};
pub use paths::Target;

use crate::routing::{Route, RouteSource};

/// Pingwave timing and bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PingwaveConfig {
    /// Time between this node's waves.
    pub interval: Duration,
    /// Hop radius (initial TTL): how far a wave travels.
    pub radius: u8,
    /// How long a route or path learned from a wave lives unless refreshed; three intervals
    /// tolerate two lost waves.
    pub route_ttl: Duration,
    /// Most origins the proximity graph records.
    pub max_nodes: usize,
    /// Echoes are accepted for this many of the most recent waves.
    pub echo_window: u64,
}

impl Default for PingwaveConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(2),
            radius: 4,
            route_ttl: Duration::from_secs(6),
            max_nodes: 4096,
            echo_window: 4,
        }
    }
}

/// What the caller does after [`Pingwaves::handle_wave`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaveOutcome {
    /// How the graph took the wave.
    pub acceptance: Acceptance,
    /// Send back to `from` (it is the origin) so it can measure the link RTT.
    pub echo: Option<PingwaveEcho>,
    /// Send to every neighbour except `from`.
    pub forward: Option<Pingwave>,
    /// Offer to the routing table: `(destination, route)`.
    pub route: Option<(NodeId, Route)>,
}

/// The pingwave core of one node.
#[derive(Debug)]
pub struct Pingwaves {
    local: NodeId,
    config: PingwaveConfig,
    epoch: Instant,
    seq: u64,
    next_wave_at: Instant,
    graph: ProximityGraph,
    paths: paths::Paths,
}

impl Pingwaves {
    /// A core for node `local` whose first wave is due at `now`.
    pub fn new(local: NodeId, config: PingwaveConfig, now: Instant) -> Self {
        Self {
            local,
            config,
            epoch: now,
            seq: 0,
            next_wave_at: now,
            graph: ProximityGraph::new(local, config.max_nodes),
            paths: paths::Paths::new(config.max_nodes),
        }
    }

    /// This node's next wave, if one is due.
    pub fn poll_wave(&mut self, now: Instant) -> Option<Pingwave> {
        if now < self.next_wave_at {
            return None;
        }
        self.next_wave_at = now + self.config.interval;
        self.seq += 1;
        Some(Pingwave {
            origin: self.local,
            seq: self.seq,
            ttl: self.config.radius,
            hops: 0,
            path_rtt_micros: 0,
            sent_at_micros: self.micros(now),
        })
    }

    /// When the next wave is due.
    pub fn poll_timeout(&self) -> Instant {
        self.next_wave_at
    }

    /// Takes a wave received from neighbour `from`; `link_rtt` is the measured RTT of that
    /// link, if known.
    pub fn handle_wave(
        &mut self,
        now: Instant,
        from: NodeId,
        link_rtt: Option<Duration>,
        wave: &Pingwave,
    ) -> WaveOutcome {
        let link_micros = link_rtt.map_or(0, |d| u32::try_from(d.as_micros()).unwrap_or(u32::MAX));
        let path_micros = wave.path_rtt_micros.saturating_add(link_micros);
        let acceptance = self.graph.update_from_pingwave(
            now,
            from,
            wave,
            Duration::from_micros(u64::from(path_micros)),
            self.config.route_ttl,
        );
        let direct = wave.hops == 0 && from == wave.origin;
        let echo = (direct && acceptance.is_path()).then_some(PingwaveEcho {
            seq: wave.seq,
            sent_at_micros: wave.sent_at_micros,
        });
        let forward = (acceptance.propagates() && wave.ttl > 1).then(|| Pingwave {
            ttl: wave.ttl.saturating_sub(1),
            hops: wave.hops.saturating_add(1),
            path_rtt_micros: path_micros,
            ..*wave
        });
        let route = acceptance.is_path().then(|| {
            let hops = wave.hops.saturating_add(1);
            self.paths.heard(now, wave.origin, from, wave.seq, hops);
            (
                wave.origin,
                Route {
                    next_hop: from,
                    metric: u32::from(hops),
                    expires_at: now + self.config.route_ttl,
                    source: RouteSource::Pingwave,
                },
            )
        });
        WaveOutcome {
            acceptance,
            echo,
            forward,
            route,
        }
    }

    /// Takes an echo of one of this node's recent waves from `from`; returns the link RTT
    /// sample, or `None` for an echo of an unknown, too old or future wave.
    pub fn handle_echo(
        &mut self,
        now: Instant,
        from: NodeId,
        echo: &PingwaveEcho,
    ) -> Option<Duration> {
        let oldest = self.seq.saturating_sub(self.config.echo_window);
        let now_micros = self.micros(now);
        if echo.seq == 0
            || echo.seq > self.seq
            || echo.seq <= oldest
            || echo.sent_at_micros > now_micros
        {
            return None;
        }
        let rtt = Duration::from_micros(now_micros - echo.sent_at_micros);
        self.graph.insert_or_update_edge(from, rtt);
        Some(rtt)
    }

    /// Takes a withdrawal from neighbour `from`. Returns the destination whose route
    /// through `from` the routing table should drop
    /// ([`RoutingTable::handle_withdraw`](crate::routing::RoutingTable::handle_withdraw)),
    /// or `None` when no path to it through `from` is known or a wave fresher than the
    /// withdrawal came through `from` since. Losing that path may owe withdrawals in turn
    /// ([`poll_withdraw`](Self::poll_withdraw)).
    pub fn handle_withdraw(&mut self, from: NodeId, withdraw: &PingwaveWithdraw) -> Option<NodeId> {
        if withdraw.origin == self.local || from == self.local {
            return None;
        }
        self.paths
            .withdrawn(from, withdraw)
            .then_some(withdraw.origin)
    }

    /// Forgets origins not heard from within `route_ttl`, and paths through a neighbour
    /// not refreshed within it (which may owe withdrawals). Returns how many origins the
    /// proximity graph forgot.
    pub fn handle_timeout(&mut self, now: Instant) -> usize {
        self.paths.expire(now, self.config.route_ttl);
        self.graph.expire(now, self.config.route_ttl)
    }

    /// The failure detector declared `neighbour` down (or suspects it): every path through
    /// it is forgotten, which may owe withdrawals.
    pub fn handle_peer_down(&mut self, neighbour: NodeId) {
        self.graph.remove_neighbour(neighbour);
        self.paths.remove_neighbour(neighbour);
    }

    /// The next withdrawal owed to neighbours: send it to [`Target`] as
    /// `PingwaveMessage::Withdraw`. Call until `None` after every `handle_*`.
    pub fn poll_withdraw(&mut self) -> Option<(Target, PingwaveWithdraw)> {
        self.paths.poll()
    }

    /// The proximity graph.
    pub fn graph(&self) -> &ProximityGraph {
        &self.graph
    }

    fn micros(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_micros()).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_clock::t0;

    fn wave(origin: u64, seq: u64, hops: u8) -> Pingwave {
        Pingwave {
            origin: NodeId(origin),
            seq,
            ttl: 3,
            hops,
            path_rtt_micros: 0,
            sent_at_micros: 0,
        }
    }

    #[test]
    fn acceptance_rule() {
        let now = t0();
        let mut p = Pingwaves::new(NodeId(1), PingwaveConfig::default(), now);
        let a = |p: &mut Pingwaves, from, w| p.handle_wave(now, NodeId(from), None, &w).acceptance;
        assert_eq!(a(&mut p, 9, wave(9, 5, 0)), Acceptance::Fresh);
        assert_eq!(a(&mut p, 9, wave(9, 5, 0)), Acceptance::Duplicate);
        assert_eq!(a(&mut p, 9, wave(9, 4, 0)), Acceptance::Stale);
        assert_eq!(a(&mut p, 3, wave(9, 6, 0)), Acceptance::Spoofed);
        assert_eq!(a(&mut p, 3, wave(9, 6, 2)), Acceptance::FreshSeqOnly);
        assert_eq!(
            p.graph()
                .node(NodeId(9))
                .map(|n| (n.hops, n.via, n.last_seq)),
            Some((1, NodeId(9), 6))
        );
        assert_eq!(
            a(&mut p, 9, wave(9, 6, 0)),
            Acceptance::Duplicate,
            "same seq, same hops"
        );
        assert_eq!(a(&mut p, 3, wave(1, 7, 1)), Acceptance::SelfEdge);
        assert_eq!(a(&mut p, 1, wave(8, 7, 1)), Acceptance::SelfEdge);
        // Same seq over a shorter path improves; the old path is replaced.
        assert_eq!(a(&mut p, 4, wave(7, 1, 3)), Acceptance::Fresh);
        assert_eq!(a(&mut p, 5, wave(7, 1, 1)), Acceptance::Improved);
        assert_eq!(
            p.graph().node(NodeId(7)).map(|n| (n.hops, n.via)),
            Some((2, NodeId(5)))
        );
        assert_eq!(p.graph().num_edges(), 1);
    }

    #[test]
    fn outcomes_echo_forward_and_route() {
        let now = t0();
        let mut p = Pingwaves::new(NodeId(1), PingwaveConfig::default(), now);
        let out = p.handle_wave(
            now,
            NodeId(9),
            Some(Duration::from_micros(300)),
            &wave(9, 1, 0),
        );
        assert_eq!(out.echo.map(|e| e.seq), Some(1));
        let fwd = out.forward.expect("propagates");
        assert_eq!((fwd.ttl, fwd.hops, fwd.path_rtt_micros), (2, 1, 300));
        let (dst, route) = out.route.expect("route");
        assert_eq!(
            (dst, route.next_hop, route.metric),
            (NodeId(9), NodeId(9), 1)
        );
        let dup = p.handle_wave(now, NodeId(4), None, &wave(9, 1, 1));
        assert!(dup.forward.is_none() && dup.echo.is_none());
        assert_eq!(
            dup.route.map(|(_, r)| (r.next_hop, r.metric)),
            Some((NodeId(4), 2))
        );
        let mut last = wave(6, 1, 2);
        last.ttl = 1;
        assert!(p.handle_wave(now, NodeId(4), None, &last).forward.is_none());
    }

    fn drain(p: &mut Pingwaves) -> Vec<(Target, u64, u64)> {
        std::iter::from_fn(|| p.poll_withdraw())
            .map(|(to, w)| (to, w.origin.0, w.seq))
            .collect()
    }

    #[test]
    fn losing_paths_owes_withdrawals_and_stale_withdrawals_are_ignored() {
        let now = t0();
        let mut p = Pingwaves::new(NodeId(1), PingwaveConfig::default(), now);
        // Origin 9: through 2 (2 hops, best) and through 3 (4 hops). Origin 8: only through 2.
        p.handle_wave(now, NodeId(2), None, &wave(9, 5, 1));
        p.handle_wave(now, NodeId(3), None, &wave(9, 5, 3));
        p.handle_wave(now, NodeId(2), None, &wave(8, 7, 1));
        assert!(drain(&mut p).is_empty(), "waves owe nothing");

        p.handle_peer_down(NodeId(2));
        let mut owed = drain(&mut p);
        owed.sort_by_key(|o| o.1);
        assert_eq!(
            owed,
            vec![
                (Target::Neighbours, 8, 7),
                (Target::Neighbour(NodeId(3)), 9, 5),
            ],
            "lost → everyone; moved → the new next hop (poison reverse)"
        );

        // A withdrawal from 3 no fresher than the last wave through it is stale.
        let old = PingwaveWithdraw {
            origin: NodeId(9),
            seq: 4,
        };
        assert_eq!(p.handle_withdraw(NodeId(3), &old), None);
        assert_eq!(
            p.handle_withdraw(NodeId(4), &PingwaveWithdraw { seq: 9, ..old }),
            None
        );
        let fresh = PingwaveWithdraw { seq: 5, ..old };
        assert_eq!(p.handle_withdraw(NodeId(3), &fresh), Some(NodeId(9)));
        assert_eq!(drain(&mut p), vec![(Target::Neighbours, 9, 5)]);
        assert_eq!(p.handle_withdraw(NodeId(3), &fresh), None, "already gone");
        assert!(drain(&mut p).is_empty());

        // Paths not refreshed within route_ttl expire and owe their withdrawal too.
        p.handle_wave(now, NodeId(3), None, &wave(7, 1, 2));
        p.handle_timeout(now + PingwaveConfig::default().route_ttl);
        assert_eq!(drain(&mut p), vec![(Target::Neighbours, 7, 1)]);
    }

    #[test]
    fn waves_are_periodic_and_echoes_measure_rtt() {
        let now = t0();
        let config = PingwaveConfig::default();
        let mut p = Pingwaves::new(NodeId(1), config, now);
        let w1 = p.poll_wave(now).expect("first wave is due");
        assert!(p.poll_wave(now).is_none());
        assert_eq!(p.poll_timeout(), now + config.interval);
        let echo = PingwaveEcho {
            seq: w1.seq,
            sent_at_micros: w1.sent_at_micros,
        };
        let later = now + Duration::from_millis(3);
        assert_eq!(
            p.handle_echo(later, NodeId(2), &echo),
            Some(Duration::from_millis(3))
        );
        assert_eq!(
            p.graph().edge(NodeId(2)),
            Some(Some(Duration::from_millis(3)))
        );
        let future = PingwaveEcho {
            seq: 9,
            sent_at_micros: 0,
        };
        assert_eq!(p.handle_echo(later, NodeId(2), &future), None);
    }
}
