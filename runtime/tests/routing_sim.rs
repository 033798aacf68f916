//! Deterministic simulation of routing: pingwaves build routes, relays forward by rewriting
//! only the routing header, a dead relay is routed around, withdrawals carry a failure to
//! nodes that are not adjacent to it, loops and TTL are bounded.
//!
//! Virtual clock in 50 ms ticks; every link delivers the next tick; messages between nodes
//! go through the real wire codecs. Each node runs the pingwave core, the routing table,
//! the recently-seen memory and one failure detector (`Liveness`) per neighbour; the loop
//! below plays the role of the router and transport actors. Invariants are named in the
//! assertion messages.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use netrun_messages::NodeId;
use netrun_messages::discovery::PingwaveMessage;
use netrun_messages::header::{HEADER_LEN, Header, PacketKind};
use netrun_messages::routing::RoutingHeader;
use netrun_runtime::liveness::{Liveness, LivenessConfig, LivenessEvent};
use netrun_runtime::pingwave::{PingwaveConfig, Pingwaves, Target};
use netrun_runtime::routing::{
    Decision, DropReason, RecentlySeen, Route, RouteSource, RoutingConfig, RoutingTable,
    forward_decision,
};

const TICK: Duration = Duration::from_millis(50);

#[allow(clippy::disallowed_methods)] // the simulation's arbitrary origin; only offsets matter
fn origin() -> Instant {
    Instant::now()
}

enum Msg {
    Pingwave(Vec<u8>),
    Packet(Vec<u8>),
}

struct Node {
    id: NodeId,
    neighbours: Vec<usize>,
    pingwaves: Pingwaves,
    table: RoutingTable,
    seen: RecentlySeen,
    liveness: HashMap<usize, Liveness>,
    alive: bool,
    delivered: Vec<Vec<u8>>,
    drops: HashMap<DropReason, u32>,
    forwarded: u32,
}

struct Sim {
    now: Instant,
    nodes: Vec<Node>,
    in_flight: Vec<(usize, usize, Msg)>,
    /// Pingwave, echo and withdrawal messages carried, for the flood-cost figure.
    control_messages: u64,
    /// Whether nodes send the withdrawals their cores owe (off: routes only expire).
    withdrawals: bool,
    /// Withdrawals sent.
    withdrawals_sent: u64,
}

fn id_of(i: usize) -> NodeId {
    NodeId(0xA0 + i as u64)
}

impl Sim {
    fn new(n: usize, edges: &[(usize, usize)], radius: u8) -> Self {
        let now = origin();
        let config = PingwaveConfig {
            interval: Duration::from_millis(500),
            radius,
            route_ttl: Duration::from_millis(1500),
            ..PingwaveConfig::default()
        };
        let liveness = LivenessConfig {
            heartbeat_interval: Duration::from_millis(500),
            suspect_after: Duration::from_millis(1200),
            fail_after: Duration::from_secs(3),
            ..LivenessConfig::default()
        };
        let mut nodes: Vec<Node> = (0..n)
            .map(|i| Node {
                id: id_of(i),
                neighbours: Vec::new(),
                // Stagger first waves so the run is not lock-step.
                pingwaves: Pingwaves::new(id_of(i), config, now + TICK * (i as u32 % 7)),
                table: RoutingTable::new(id_of(i), RoutingConfig::default()),
                seen: RecentlySeen::new(4096, Duration::from_secs(2)),
                liveness: HashMap::new(),
                alive: true,
                delivered: Vec::new(),
                drops: HashMap::new(),
                forwarded: 0,
            })
            .collect();
        for &(a, b) in edges {
            nodes[a].neighbours.push(b);
            nodes[b].neighbours.push(a);
            nodes[a]
                .liveness
                .insert(b, Liveness::new(liveness, now).expect("config"));
            nodes[b]
                .liveness
                .insert(a, Liveness::new(liveness, now).expect("config"));
        }
        Self {
            now,
            nodes,
            in_flight: Vec::new(),
            control_messages: 0,
            withdrawals: true,
            withdrawals_sent: 0,
        }
    }

    fn send(&mut self, from: usize, to: usize, msg: Msg) {
        if matches!(msg, Msg::Pingwave(_)) {
            self.control_messages += 1;
        }
        self.in_flight.push((from, to, msg));
    }

    /// Returns the (node, neighbour) pairs whose detector declared the neighbour down.
    fn step(&mut self) -> Vec<(usize, usize)> {
        self.now += TICK;
        let now = self.now;
        let mut downs = Vec::new();
        for i in 0..self.nodes.len() {
            if !self.nodes[i].alive {
                continue;
            }
            if let Some(wave) = self.nodes[i].pingwaves.poll_wave(now) {
                for j in self.nodes[i].neighbours.clone() {
                    self.send(i, j, Msg::Pingwave(PingwaveMessage::Wave(wave).to_vec()));
                }
            }
            let node = &mut self.nodes[i];
            let mut down = Vec::new();
            for (&j, l) in node.liveness.iter_mut() {
                while let Some(ev) = l.poll(now) {
                    if ev == LivenessEvent::Suspected {
                        down.push(j);
                    }
                }
            }
            down.sort_unstable();
            for j in down {
                let peer = id_of(j);
                node.table.handle_peer_down(peer);
                node.pingwaves.handle_peer_down(peer);
                downs.push((i, j));
            }
            node.table.handle_timeout(now);
            node.pingwaves.handle_timeout(now);
            node.seen.handle_tick(now);
        }
        let batch = std::mem::take(&mut self.in_flight);
        for (from, to, msg) in batch {
            if !self.nodes[to].alive || !self.nodes[from].alive {
                continue;
            }
            self.receive(from, to, msg);
        }
        for i in 0..self.nodes.len() {
            if self.nodes[i].alive {
                self.send_withdrawals(i);
            }
        }
        downs
    }

    /// Sends what node `i`'s pingwave core owes its neighbours (delivered next tick).
    fn send_withdrawals(&mut self, i: usize) {
        while let Some((target, withdraw)) = self.nodes[i].pingwaves.poll_withdraw() {
            if !self.withdrawals {
                continue;
            }
            let body = PingwaveMessage::Withdraw(withdraw).to_vec();
            let to: Vec<usize> = match target {
                Target::Neighbours => self.nodes[i].neighbours.clone(),
                Target::Neighbour(n) => vec![(n.0 - 0xA0) as usize],
            };
            for j in to {
                assert!(
                    self.nodes[i].neighbours.contains(&j),
                    "withdrawal-to-a-neighbour"
                );
                self.withdrawals_sent += 1;
                self.send(i, j, Msg::Pingwave(body.clone()));
            }
        }
    }

    fn receive(&mut self, from: usize, to: usize, msg: Msg) {
        let now = self.now;
        let from_id = id_of(from);
        let node = &mut self.nodes[to];
        if let Some(l) = node.liveness.get_mut(&from) {
            l.on_authenticated_packet(now);
        }
        match msg {
            Msg::Pingwave(bytes) => match PingwaveMessage::decode(&bytes).expect("valid wave") {
                PingwaveMessage::Wave(wave) => {
                    let rtt = node.pingwaves.graph().edge(from_id).flatten();
                    let out = node.pingwaves.handle_wave(now, from_id, rtt, &wave);
                    if let Some((dst, route)) = out.route {
                        node.table.handle_route(now, dst, route);
                    }
                    let neighbours = node.neighbours.clone();
                    if let Some(echo) = out.echo {
                        self.send(
                            to,
                            from,
                            Msg::Pingwave(PingwaveMessage::Echo(echo).to_vec()),
                        );
                    }
                    if let Some(fwd) = out.forward {
                        for j in neighbours.into_iter().filter(|&j| j != from) {
                            self.send(to, j, Msg::Pingwave(PingwaveMessage::Wave(fwd).to_vec()));
                        }
                    }
                }
                PingwaveMessage::Echo(echo) => {
                    node.pingwaves.handle_echo(now, from_id, &echo);
                }
                PingwaveMessage::Withdraw(withdraw) => {
                    if let Some(dst) = node.pingwaves.handle_withdraw(from_id, &withdraw) {
                        node.table.handle_withdraw(dst, from_id);
                    }
                }
            },
            Msg::Packet(mut packet) => {
                let snapshot = node.table.snapshot();
                match forward_decision(node.id, &snapshot, &mut packet, &mut node.seen) {
                    Decision::Deliver => node.delivered.push(packet),
                    Decision::Forward { next_hop } => {
                        node.forwarded += 1;
                        let j = (next_hop.0 - 0xA0) as usize;
                        assert!(node.neighbours.contains(&j), "next-hop-is-a-neighbour");
                        self.send(to, j, Msg::Packet(packet));
                    }
                    Decision::Drop(reason) => *node.drops.entry(reason).or_default() += 1,
                }
            }
        }
    }

    fn run(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.step();
        }
    }

    /// The source side: look the destination up and hand the packet to the next hop.
    fn originate(&mut self, src: usize, packet: Vec<u8>) -> bool {
        let dst = RoutingHeader::parse(&packet).expect("header").dst;
        let Some(route) = self.nodes[src].table.lookup(dst).copied() else {
            return false;
        };
        let j = (route.next_hop.0 - 0xA0) as usize;
        self.send(src, j, Msg::Packet(packet));
        true
    }

    fn drops(&self, i: usize, reason: DropReason) -> u32 {
        self.nodes[i].drops.get(&reason).copied().unwrap_or(0)
    }
}

fn packet(src: usize, dst: usize, kind: PacketKind, counter: u64, ttl: u8) -> Vec<u8> {
    let payload: Vec<u8> = (0..200u32)
        .map(|i| (i as u8) ^ (counter as u8) ^ 0x5c)
        .collect();
    let mut h = Header::new(kind, id_of(src), id_of(dst));
    h.ttl = ttl;
    h.stream = 7;
    h.counter = counter;
    h.payload_len = payload.len() as u32;
    let mut p = h.encode().to_vec();
    p.extend_from_slice(&payload);
    p
}

const A: usize = 0;
const B: usize = 1;
const C: usize = 2;
const D: usize = 3;
const E: usize = 4;

#[test]
fn line_converges_and_relays_touch_only_routing_bytes() {
    let mut sim = Sim::new(5, &[(A, B), (B, C), (C, D), (D, E)], 4);
    sim.run(Duration::from_secs(2));
    let route = *sim.nodes[A]
        .table
        .lookup(id_of(E))
        .expect("routes-converge: A knows E");
    assert_eq!(
        (route.next_hop, route.metric, route.source),
        (id_of(B), 4, RouteSource::Pingwave)
    );
    assert_eq!(
        sim.nodes[E].table.lookup(id_of(A)).map(|r| r.next_hop),
        Some(id_of(D))
    );
    let node = sim.nodes[A]
        .pingwaves
        .graph()
        .node(id_of(E))
        .expect("proximity graph has E");
    assert_eq!((node.hops, node.via), (4, id_of(B)));
    assert!(
        node.path_rtt > Duration::ZERO,
        "path RTT accumulates measured link RTTs"
    );
    assert!(
        sim.nodes[A]
            .pingwaves
            .graph()
            .edge(id_of(B))
            .flatten()
            .is_some(),
        "echo measured the A–B link"
    );

    let sent: Vec<Vec<u8>> = (1..=10)
        .map(|c| packet(A, E, PacketKind::Data, c, 16))
        .collect();
    for p in &sent {
        assert!(sim.originate(A, p.clone()));
    }
    for _ in 0..6 {
        sim.step();
    }
    let got = &sim.nodes[E].delivered;
    assert_eq!(got.len(), sent.len(), "all-delivered");
    for (before, after) in sent.iter().zip(got) {
        assert_eq!(
            &after[HEADER_LEN..],
            &before[HEADER_LEN..],
            "payload-untouched"
        );
        let changed: Vec<usize> = (0..before.len())
            .filter(|&i| before[i] != after[i])
            .collect();
        assert_eq!(changed, vec![3, 4], "only-ttl-and-hop-count-rewritten");
        let (h, _) = Header::parse(after).expect("parses");
        assert_eq!((h.ttl, h.hop_count), (13, 3), "three relays");
    }
    assert_eq!(
        (
            sim.nodes[B].forwarded,
            sim.nodes[C].forwarded,
            sim.nodes[D].forwarded
        ),
        (10, 10, 10)
    );
}

#[test]
fn ttl_expires_and_duplicates_are_dropped() {
    let mut sim = Sim::new(5, &[(A, B), (B, C), (C, D), (D, E)], 4);
    sim.run(Duration::from_secs(2));
    assert!(sim.originate(A, packet(A, E, PacketKind::Data, 1, 2)));
    for _ in 0..6 {
        sim.step();
    }
    assert!(sim.nodes[E].delivered.is_empty());
    assert_eq!(
        sim.drops(D, DropReason::TtlExpired),
        1,
        "ttl-bounds-the-path"
    );
    // The same (src, stream, counter) twice: the second copy dies at the first relay.
    let p = packet(A, E, PacketKind::Data, 2, 16);
    sim.originate(A, p.clone());
    sim.originate(A, p);
    for _ in 0..6 {
        sim.step();
    }
    assert_eq!(sim.nodes[E].delivered.len(), 1);
    assert_eq!(
        sim.drops(B, DropReason::Duplicate),
        1,
        "duplicate-suppressed"
    );
}

#[test]
fn loops_are_broken_by_self_origin_duplicates_and_ttl() {
    // X, Y and W with a deliberately inconsistent table: X sends Z's traffic to Y and Y
    // sends it back to X. No pingwaves run (radius 0 and no waves delivered to Z).
    let (x, y, w, z) = (0, 1, 2, 3);
    let mut sim = Sim::new(4, &[(x, y), (w, x)], 0);
    let now = sim.now;
    let route = |hop| Route {
        next_hop: id_of(hop),
        metric: 1,
        expires_at: now + Duration::from_secs(3600),
        source: RouteSource::Discovery,
    };
    sim.nodes[x].table.handle_route(now, id_of(z), route(y));
    sim.nodes[y].table.handle_route(now, id_of(z), route(x));
    sim.nodes[w].table.handle_route(now, id_of(z), route(x));

    sim.originate(x, packet(x, z, PacketKind::Data, 1, 16));
    sim.originate(w, packet(w, z, PacketKind::Data, 1, 16));
    // A handshake packet carries counter 0 and is not deduplicated: TTL ends its loop.
    sim.originate(w, packet(w, z, PacketKind::HandshakeInit, 0, 6));
    for _ in 0..20 {
        sim.step();
    }
    assert_eq!(
        sim.drops(x, DropReason::SelfOriginated),
        1,
        "self-originated-dropped"
    );
    assert_eq!(
        sim.drops(x, DropReason::Duplicate),
        1,
        "looping-copy-dropped-as-duplicate"
    );
    assert_eq!(
        sim.drops(x, DropReason::TtlExpired) + sim.drops(y, DropReason::TtlExpired),
        1
    );
    assert_eq!(
        sim.nodes[x].forwarded + sim.nodes[y].forwarded,
        1 + 2 + 6,
        "ttl-bounds-forwards"
    );
}

#[test]
fn dead_relay_is_routed_around_once_declared_down() {
    // Ring A–C–E–D–B–A: A reaches E through C (2 hops) or through B, D (3 hops).
    let mut sim = Sim::new(5, &[(A, C), (C, E), (E, D), (D, B), (B, A)], 4);
    sim.run(Duration::from_secs(2));
    assert_eq!(
        sim.nodes[A]
            .table
            .lookup(id_of(E))
            .map(|r| (r.next_hop, r.metric)),
        Some((id_of(C), 2))
    );
    let hops: Vec<NodeId> = sim.nodes[A]
        .table
        .candidates(id_of(E))
        .iter()
        .map(|r| r.next_hop)
        .collect();
    assert!(
        hops.contains(&id_of(B)),
        "alternative-candidate-kept: {hops:?}"
    );

    sim.nodes[C].alive = false;
    let killed_at = sim.now;
    let mut counter = 100;
    let mut declared = None;
    let mut rerouted = None;
    while sim.now < killed_at + Duration::from_secs(5) {
        counter += 1;
        sim.originate(A, packet(A, E, PacketKind::Data, counter, 16));
        let downs = sim.step();
        if declared.is_none() && downs.contains(&(A, C)) {
            declared = Some(sim.now);
            // Rerouted in the same step, from a kept candidate: no new probe was needed.
            assert_eq!(
                sim.nodes[A].table.lookup(id_of(E)).map(|r| r.next_hop),
                Some(id_of(B))
            );
            rerouted = Some(sim.nodes[E].delivered.len());
        }
    }
    let declared = declared.expect("failure detector declared C down");
    assert!(declared - killed_at <= Duration::from_millis(1300));
    let before = rerouted.expect("rerouted");
    let after = sim.nodes[E].delivered.len();
    assert!(
        after - before >= 60,
        "traffic-flows-on-the-other-path: {before} → {after}"
    );
    let last = Header::parse(sim.nodes[E].delivered.last().expect("one"))
        .expect("parses")
        .0;
    assert_eq!(last.hop_count, 2, "A→B→D→E: two relays");
}

#[test]
fn pingwave_flood_is_bounded_by_radius() {
    // A line of 12 with radius 3: each wave reaches at most 3 hops.
    let edges: Vec<(usize, usize)> = (0..11).map(|i| (i, i + 1)).collect();
    let mut sim = Sim::new(12, &edges, 3);
    sim.run(Duration::from_secs(3));
    assert!(sim.nodes[0].table.lookup(id_of(3)).is_some());
    assert!(
        sim.nodes[0].table.lookup(id_of(4)).is_none(),
        "radius-bounds-discovery"
    );
    let g = sim.nodes[5].pingwaves.graph();
    assert_eq!(g.num_edges(), 2);
    assert_eq!(g.num_nodes(), 6, "nodes within the radius only");
    assert!(sim.control_messages > 0);
}

/// Ring of nine, C dies: how long after C's death A's route to E leaves B, and how long
/// after B's verdict about C. A reaches E clockwise through B, C, D (4 hops) or
/// counter-clockwise through the other four nodes (5 hops). With `closed`, C's sessions
/// end cleanly as it dies (B and D get a `Down` at once) instead of B and D waiting for
/// their failure detectors. Also returns E's delivered packet count from A since the
/// failure.
fn ring_of_nine_reroute(withdrawals: bool, closed: bool) -> (Duration, Duration, usize) {
    let edges: Vec<(usize, usize)> = (0..9).map(|i| (i, (i + 1) % 9)).collect();
    let mut sim = Sim::new(9, &edges, 6);
    sim.withdrawals = withdrawals;
    sim.run(Duration::from_secs(3));
    let via_b = sim.nodes[A]
        .table
        .lookup(id_of(E))
        .map(|r| (r.next_hop, r.metric));
    assert_eq!(via_b, Some((id_of(B), 4)));
    sim.nodes[C].alive = false;
    let killed_at = sim.now;
    let mut declared = None;
    if closed {
        for n in [B, D] {
            sim.nodes[n].table.handle_peer_down(id_of(C));
            sim.nodes[n].pingwaves.handle_peer_down(id_of(C));
            sim.nodes[n].liveness.remove(&C);
        }
        declared = Some(killed_at);
    }
    let mut counter = 1000;
    let mut switched = None;
    while sim.now < killed_at + Duration::from_secs(6) {
        counter += 1;
        sim.originate(A, packet(A, E, PacketKind::Data, counter, 16));
        let downs = sim.step();
        if declared.is_none() && downs.contains(&(B, C)) {
            declared = Some(sim.now);
        }
        let hop = sim.nodes[A].table.lookup(id_of(E)).map(|r| r.next_hop);
        if switched.is_none() && hop == Some(id_of(8)) {
            switched = Some(sim.now);
        }
    }
    let declared = declared.expect("B declared C down");
    let switched = switched.expect("A switched to the other side");
    let resumed = sim.nodes[E]
        .delivered
        .iter()
        .filter(|p| Header::parse(p).is_ok_and(|(h, _)| h.counter > 1000))
        .count();
    (
        switched - killed_at,
        switched.saturating_duration_since(declared),
        resumed,
    )
}

#[test]
fn a_failure_two_hops_away_is_routed_around_when_the_route_expires() {
    // Without withdrawals A has no verdict about C: its route through B stops being
    // refreshed and expires at most route_ttl (1.5 s) after the last wave C relayed, plus a
    // wave interval of slack.
    let (switched, _, resumed) = ring_of_nine_reroute(false, false);
    assert!(
        switched <= Duration::from_millis(2100),
        "reroute took {switched:?}"
    );
    assert!(resumed > 60, "traffic-resumes-on-the-other-side: {resumed}");
    eprintln!("ring of 9, expiry only: A rerouted {switched:?} after C died (route_ttl 1.5 s)");
}

#[test]
fn a_withdrawal_moves_a_node_two_hops_from_the_failure_within_a_round() {
    let (expiry, _, _) = ring_of_nine_reroute(false, false);
    let (switched, after_verdict, resumed) = ring_of_nine_reroute(true, false);
    // B's verdict makes it withdraw toward A (its new next hop to E); A drops its route
    // through B on the next tick, long before that route would have expired.
    assert!(
        after_verdict <= TICK,
        "one-round-after-the-verdict: {after_verdict:?}"
    );
    assert!(
        switched < expiry,
        "faster-than-expiry: {switched:?} vs {expiry:?}"
    );
    assert!(resumed > 60, "traffic-resumes-on-the-other-side: {resumed}");
    eprintln!(
        "ring of 9: A rerouted {switched:?} after C died with withdrawals \
         ({after_verdict:?} after B's verdict), {expiry:?} with expiry only"
    );
}

#[test]
fn a_closed_session_two_hops_away_moves_traffic_at_once() {
    // C's sessions end as it dies: B and D reroute at once, and their withdrawals reach A
    // (and E) on the next tick. Without withdrawals A still waits for its route to expire.
    let (expiry, _, _) = ring_of_nine_reroute(false, true);
    let (switched, _, resumed) = ring_of_nine_reroute(true, true);
    assert!(
        switched <= TICK * 2,
        "one-round-after-the-failure: {switched:?}"
    );
    assert!(
        expiry >= Duration::from_millis(1000),
        "expiry-is-slow-without-withdrawals: {expiry:?}"
    );
    assert!(
        resumed > 100,
        "traffic-resumes-on-the-other-side: {resumed}"
    );
    eprintln!(
        "ring of 9, sessions closed: A rerouted {switched:?} with withdrawals, {expiry:?} without"
    );
}

#[test]
fn an_unreachable_destination_is_withdrawn_along_a_line_and_the_cascade_ends() {
    let mut sim = Sim::new(5, &[(A, B), (B, C), (C, D), (D, E)], 4);
    sim.run(Duration::from_secs(2));
    assert!(sim.nodes[A].table.lookup(id_of(E)).is_some());
    sim.nodes[E].alive = false;
    sim.nodes[D].table.handle_peer_down(id_of(E));
    sim.nodes[D].pingwaves.handle_peer_down(id_of(E));
    sim.nodes[D].liveness.remove(&E);
    let before = sim.withdrawals_sent;
    // One hop per tick: A, three hops from D, has heard within four ticks.
    for _ in 0..4 {
        sim.step();
    }
    for n in [A, B, C, D] {
        assert!(
            sim.nodes[n].table.candidates(id_of(E)).is_empty(),
            "withdrawn-everywhere: node {n}"
        );
    }
    // D tells C and E; C, B and A each tell both their neighbours: no withdrawal echoes
    // back and forth, because only an accepted one (a path removed) owes another.
    sim.run(Duration::from_millis(400));
    assert_eq!(sim.withdrawals_sent - before, 2 + 2 + 2 + 1, "cascade-ends");
}
