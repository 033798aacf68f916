//! Multi-hop routing over real UDP on 127.0.0.1: routes learned from pingwaves, relays that
//! forward without holding keys, routed Noise sessions, reroute around a dead relay (at
//! once for a node two hops away, through withdrawals), and the relay's drop counters.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use netrun::config::{PingwaveSettings, SessionTiming};
use netrun::{BlockingPolicy, EntityId, Identity, Node, NodeId, RouteSource, StreamConfig};
use netrun_messages::header::{Header, PacketKind, TAG_LEN};
use netrun_tests::{Relay, builder, eventually_async, fast_pingwave, has_up_peer, next_datagram};
use tokio::net::UdpSocket;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(10);

/// Session timing for these tests: fast, with room for a loaded machine (a neighbour is
/// suspected after 500 ms of silence, a routed session fails after 2 s). Routes live
/// 300 ms ([`fast_pingwave`]), so a reroute completes well inside a session's lifetime.
fn timing() -> SessionTiming {
    SessionTiming {
        heartbeat_interval: Duration::from_millis(100),
        suspect_after: Duration::from_millis(500),
        fail_after: Duration::from_millis(2000),
        idle_timeout: Duration::from_millis(5000),
    }
}

async fn start(timing: SessionTiming, peers: &[(SocketAddr, EntityId)]) -> Node {
    start_with(timing, fast_pingwave(), peers).await
}

async fn start_with(
    timing: SessionTiming,
    pingwave: PingwaveSettings,
    peers: &[(SocketAddr, EntityId)],
) -> Node {
    let mut builder = builder()
        .identity(Identity::generate())
        .session_timing(timing)
        .pingwave(pingwave);
    for &(addr, key) in peers {
        builder = builder.peer(addr, key);
    }
    netrun_tests::start(builder).await
}

/// Nodes connected in a line (each one's static peer is the one before it), closed into a
/// ring when `ring` is set.
async fn chain(n: usize, timing: SessionTiming, ring: bool) -> Vec<Node> {
    chain_with(n, timing, fast_pingwave(), ring).await
}

async fn chain_with(
    n: usize,
    timing: SessionTiming,
    pingwave: PingwaveSettings,
    ring: bool,
) -> Vec<Node> {
    let mut nodes: Vec<Node> = Vec::with_capacity(n);
    for i in 0..n {
        let mut peers = Vec::new();
        if let Some(prev) = i.checked_sub(1).map(|p| &nodes[p]) {
            peers.push((prev.local_addr(), prev.public_key()));
        }
        if ring && i == n - 1 {
            peers.push((nodes[0].local_addr(), nodes[0].public_key()));
        }
        nodes.push(start_with(timing, pingwave, &peers).await);
    }
    nodes
}

/// Opens a routed session from `from` to `to` and waits until `to` holds it too.
async fn connect_routed(from: &Node, to: &Node) {
    let peer = timeout(WAIT, from.connect_routed(to.public_key()))
        .await
        .expect("routed handshake in time")
        .expect("routed session");
    assert_eq!(peer, to.node_id());
    eventually_async(WAIT, "the far end to hold the routed session", || {
        has_up_peer(to, from.node_id())
    })
    .await;
}

async fn next_hop(node: &Node, dst: NodeId) -> Option<(NodeId, u32)> {
    node.routes()
        .await
        .into_iter()
        .find(|r| r.destination == dst)
        .map(|r| (r.next_hop, r.metric))
}

async fn every_node_routes_to_every_other(nodes: &[Node]) -> bool {
    for node in nodes {
        let routes: BTreeSet<NodeId> = node.routes().await.iter().map(|r| r.destination).collect();
        if nodes
            .iter()
            .any(|o| o.node_id() != node.node_id() && !routes.contains(&o.node_id()))
        {
            return false;
        }
    }
    true
}

/// Sends `count` numbered datagrams from `tx` to `rx` and checks each arrives.
async fn exchange(tx: &Node, rx: &Node, count: u32) {
    for i in 0..count {
        tx.send(rx.node_id(), &i.to_le_bytes())
            .await
            .expect("send over the routed session");
        let got = next_datagram(rx).await;
        assert_eq!(got.peer, tx.node_id());
        assert_eq!(&got.payload[..], &i.to_le_bytes());
    }
}

/// Sends 256 KiB over a reliable stream from `tx` to `rx` and checks every byte.
async fn stream_through(tx: &Node, rx: &Node) {
    let data: Vec<u8> = (0..256 * 1024u32).map(|i| (i % 251) as u8).collect();
    let stream = tx
        .open_stream(rx.node_id(), 1, StreamConfig::default())
        .await
        .expect("open a stream over the routed session");
    let reader = {
        let rx = rx.clone();
        tokio::spawn(async move {
            let mut incoming = timeout(WAIT, rx.accept_stream())
                .await
                .expect("accept in time")
                .expect("a stream");
            let mut got = Vec::new();
            while let Some(chunk) = timeout(WAIT, incoming.recv()).await.expect("data in time") {
                got.extend_from_slice(&chunk);
            }
            got
        })
    };
    for chunk in data.chunks(4000) {
        stream
            .send_blocking(Bytes::copy_from_slice(chunk), BlockingPolicy::default())
            .await
            .expect("stream send");
    }
    stream
        .close_graceful(WAIT)
        .await
        .expect("close acknowledged");
    let got = timeout(WAIT, reader)
        .await
        .expect("reader ends")
        .expect("reader");
    assert!(
        got == data,
        "stream bytes differ ({} of {})",
        got.len(),
        data.len()
    );
}

async fn peer_ids(node: &Node) -> BTreeSet<NodeId> {
    node.peers().await.iter().map(|p| p.node).collect()
}

#[tokio::test]
async fn line_of_five_a_routed_session_runs_through_three_relays_that_hold_no_keys() {
    let nodes = chain(5, timing(), false).await;
    let [a, b, c, d, e] = [&nodes[0], &nodes[1], &nodes[2], &nodes[3], &nodes[4]];
    eventually_async(WAIT, "routes across the line", || {
        every_node_routes_to_every_other(&nodes)
    })
    .await;
    assert_eq!(next_hop(a, e.node_id()).await, Some((b.node_id(), 4)));
    assert_eq!(next_hop(e, a.node_id()).await, Some((d.node_id(), 4)));
    let direct = a
        .routes()
        .await
        .into_iter()
        .find(|r| r.destination == b.node_id())
        .expect("route to the neighbour");
    assert_eq!(direct.source, RouteSource::Direct);
    assert_eq!(direct.metric, 1);
    // The proximity graph behind the routes: E is four hops out through B, and the path
    // RTT sums the links' measured RTTs once every relay has measured its link.
    eventually_async(WAIT, "A's pingwaves measured the path to E", || async {
        a.pingwave_seen().iter().any(|n| {
            n.node == e.node_id() && n.hops == 4 && n.via == b.node_id() && !n.rtt.is_zero()
        })
    })
    .await;
    let status = a.pingwave_status().expect("pingwaves on");
    assert!(status.waves_started > 0 && status.received > 0 && status.sent > 0);
    assert_eq!(status.malformed, 0);
    assert_eq!((status.nodes, status.edges), (4, 1));

    connect_routed(a, e).await;

    exchange(a, e, 100).await;
    exchange(e, a, 100).await;
    stream_through(a, e).await;

    // Both ends know the session is routed.
    let a_view = a.peers().await;
    let to_e = a_view.iter().find(|p| p.node == e.node_id()).expect("A–E");
    assert!(to_e.routed);
    let e_view = e.peers().await;
    assert!(
        e_view
            .iter()
            .find(|p| p.node == a.node_id())
            .expect("E–A")
            .routed
    );

    // No relay holds keys for A–E: each has sessions with its two neighbours only, none
    // routed, and none delivered a datagram; they relayed every one.
    for (relay, neighbours) in [(b, [a, c]), (c, [b, d]), (d, [c, e])] {
        let expected: BTreeSet<NodeId> = neighbours.iter().map(|n| n.node_id()).collect();
        assert_eq!(peer_ids(relay).await, expected);
        assert!(relay.peers().await.iter().all(|p| !p.routed));
        let stats = relay.stats();
        assert!(
            stats.forwarded >= 200,
            "{} forwarded {}",
            relay.node_id(),
            stats.forwarded
        );
        assert_eq!(stats.delivered, 0, "a relay never opens the A–E payloads");
    }
    assert!(!peer_ids(c).await.contains(&a.node_id()));
    assert!(!peer_ids(c).await.contains(&e.node_id()));
    assert_eq!(a.stats().delivered, 100);
    assert_eq!(e.stats().delivered, 100);
    for node in &nodes {
        node.shutdown().await;
    }
}

#[tokio::test]
async fn killing_a_relay_in_a_ring_reroutes_a_live_routed_session() {
    // Ring A–B–C–E–G–F–D–A: A reaches E in 3 hops through B and C, or in 4 through D, F, G.
    let nodes = chain(7, timing(), true).await;
    let [a, b, c, e, g, f, d] = [
        &nodes[0], &nodes[1], &nodes[2], &nodes[3], &nodes[4], &nodes[5], &nodes[6],
    ];
    eventually_async(
        WAIT,
        "A routes to E through B, and E to A through C",
        || async {
            next_hop(a, e.node_id()).await == Some((b.node_id(), 3))
                && next_hop(e, a.node_id()).await == Some((c.node_id(), 3))
                && next_hop(b, e.node_id()).await.is_some()
                && next_hop(c, a.node_id()).await.is_some()
        },
    )
    .await;
    connect_routed(a, e).await;
    exchange(a, e, 20).await;
    exchange(e, a, 20).await;
    let epoch = |peers: Vec<netrun::PeerInfo>, of: NodeId| {
        peers.iter().find(|p| p.node == of).map(|p| p.epoch)
    };
    let a_epoch = epoch(a.peers().await, e.node_id()).expect("A–E session");
    let long_way_before: u64 = [d, f, g].iter().map(|n| n.stats().forwarded).sum();

    c.shutdown().await;

    // Traffic resumes once both ends' routes through the dead relay are gone: E's when its
    // failure detector suspects C; A's when B's withdrawal arrives or it expires, whichever
    // comes first (routes live 300 ms here, less than the 500 ms to suspicion).
    eventually_async(WAIT, "A–E datagrams flow the long way", || async {
        next_hop(a, e.node_id()).await == Some((d.node_id(), 4))
            && next_hop(e, a.node_id()).await == Some((g.node_id(), 4))
    })
    .await;
    // Datagrams sent during the switch may have been lost; drain them.
    while timeout(Duration::from_millis(100), e.recv()).await.is_ok() {}
    while timeout(Duration::from_millis(100), a.recv()).await.is_ok() {}
    exchange(a, e, 20).await;
    exchange(e, a, 20).await;

    // The relay's neighbours declared it down and withdrew every route through it, the
    // direct ones included (those only go when the failure detector says so).
    eventually_async(WAIT, "B and E dropped every route through C", || async {
        for node in [b, e] {
            if node
                .routes()
                .await
                .iter()
                .any(|r| r.next_hop == c.node_id())
            {
                return false;
            }
        }
        true
    })
    .await;
    let long_way_after: u64 = [d, f, g].iter().map(|n| n.stats().forwarded).sum();
    assert!(
        long_way_after >= long_way_before + 3 * 40,
        "the long way relayed {} packets",
        long_way_after - long_way_before
    );
    assert_eq!(
        epoch(a.peers().await, e.node_id()),
        Some(a_epoch),
        "the same routed session survived the reroute"
    );
    for node in [a, b, e, g, f, d] {
        node.shutdown().await;
    }
}

#[tokio::test]
async fn a_node_two_hops_from_a_dead_relay_reroutes_before_its_route_expires() {
    // Ring A–B–C–E–G–F–D–A with slow waves: routes live 3 s (three 1 s intervals) while a
    // silent neighbour is suspected after 500 ms. When C dies, B suspects it and, having no
    // other path to E within the radius, withdraws E toward A; A moves to D long before its
    // route through B would have expired.
    let slow = PingwaveSettings {
        enabled: true,
        interval: Duration::from_secs(1),
        radius: 4,
    };
    let nodes = chain_with(7, timing(), slow, true).await;
    let [a, b, c, e, d] = [&nodes[0], &nodes[1], &nodes[2], &nodes[3], &nodes[6]];
    eventually_async(
        WAIT,
        "A routes to E through B, with a fresh route",
        || async {
            let route = a
                .routes()
                .await
                .into_iter()
                .find(|r| r.destination == e.node_id());
            route.is_some_and(|r| {
                (r.next_hop, r.metric) == (b.node_id(), 3)
                    && r.expires_in > Duration::from_millis(2500)
            })
        },
    )
    .await;
    let route = a
        .routes()
        .await
        .into_iter()
        .find(|r| r.destination == e.node_id())
        .expect("A routes to E");
    let killed_at = tokio::time::Instant::now();
    let expires_at = killed_at + route.expires_in;
    c.shutdown().await;
    eventually_async(WAIT, "A routes to E through D", || async {
        next_hop(a, e.node_id()).await == Some((d.node_id(), 4))
    })
    .await;
    let switched_at = tokio::time::Instant::now();
    eprintln!(
        "A rerouted {:?} after C died; its route through B had {:?} left",
        switched_at - killed_at,
        route.expires_in
    );
    assert!(
        switched_at < expires_at,
        "A moved {:?} after the kill, the old route would have expired after {:?}",
        switched_at - killed_at,
        route.expires_in
    );
    // The counters are published once per wave interval.
    eventually_async(WAIT, "A counted the withdrawal it accepted", || async {
        a.pingwave_status()
            .is_some_and(|s| s.withdrawals_accepted >= 1)
    })
    .await;
    for node in nodes.iter().filter(|n| n.node_id() != c.node_id()) {
        node.shutdown().await;
    }
}

/// A raw datagram as a relay sees it: a sealed-kind header and a bogus payload (the relay
/// never checks it).
fn datagram(src: NodeId, dst: NodeId, ttl: u8, counter: u64) -> Vec<u8> {
    let mut header = Header::new(PacketKind::Data, src, dst);
    header.ttl = ttl;
    header.counter = counter;
    header.payload_len = (4 + TAG_LEN) as u32;
    let mut bytes = header.encode().to_vec();
    bytes.resize(bytes.len() + 4 + TAG_LEN, 0xAB);
    bytes
}

#[tokio::test]
async fn relay_counts_every_drop_reason() {
    // A reaches B through a test relay, so datagrams the relay injects come from A's
    // session address: B takes them as from its neighbour A. C is B's other neighbour.
    let b = start(timing(), &[]).await;
    let c = start(timing(), &[(b.local_addr(), b.public_key())]).await;
    let relay = Relay::start(b.local_addr()).await;
    let a = start(timing(), &[(relay.addr(), b.public_key())]).await;
    eventually_async(WAIT, "B routes to A and C", || async {
        next_hop(&b, a.node_id()).await.is_some() && next_hop(&b, c.node_id()).await.is_some()
    })
    .await;
    let before = b.stats();

    let (src, to_c) = (a.node_id(), c.node_id());
    relay.inject(&datagram(src, to_c, 4, 1)).await; // forwarded
    relay.inject(&datagram(src, to_c, 4, 1)).await; // duplicate
    relay.inject(&datagram(src, to_c, 0, 2)).await; // TTL expired
    relay.inject(&datagram(src, NodeId(7), 4, 3)).await; // no route
    relay.inject(&datagram(b.node_id(), to_c, 4, 4)).await; // looped back to its source
    let stranger = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    stranger
        .send_to(&datagram(src, to_c, 4, 5), b.local_addr())
        .await
        .expect("send");

    eventually_async(WAIT, "every outcome counted", || async {
        let s = b.stats();
        s.dropped_duplicate > before.dropped_duplicate
            && s.dropped_ttl_expired > before.dropped_ttl_expired
            && s.dropped_no_route > before.dropped_no_route
            && s.dropped_looped > before.dropped_looped
            && s.dropped_not_neighbour > before.dropped_not_neighbour
    })
    .await;
    let s = b.stats();
    assert!(s.forwarded > before.forwarded);
    assert_eq!(s.dropped_duplicate - before.dropped_duplicate, 1);
    assert_eq!(s.dropped_ttl_expired - before.dropped_ttl_expired, 1);
    assert_eq!(s.dropped_no_route - before.dropped_no_route, 1);
    assert_eq!(s.dropped_looped - before.dropped_looped, 1);
    assert_eq!(s.dropped_not_neighbour - before.dropped_not_neighbour, 1);
    // C got the forwarded copy and, holding no A–C session, dropped it.
    eventually_async(WAIT, "C saw the forwarded datagram", || async {
        c.stats().dropped_no_session >= 1
    })
    .await;
    for node in [&a, &b, &c] {
        node.shutdown().await;
    }
}

#[tokio::test]
async fn a_killed_router_restarts_with_its_transport_and_relaying_carries_on() {
    let nodes = chain(3, timing(), false).await;
    let [a, b, c] = [&nodes[0], &nodes[1], &nodes[2]];
    eventually_async(WAIT, "routes across the line", || {
        every_node_routes_to_every_other(&nodes)
    })
    .await;
    connect_routed(a, c).await;
    exchange(a, c, 10).await;

    let router = &b.supervision().router;
    let generation = router.generation().expect("router running");
    router.cell().expect("router running").kill();
    // one_for_all: the transport restarts with it (same port, sessions kept), and the new
    // router rebuilds its table from the sessions and the next pingwaves.
    eventually_async(
        WAIT,
        "B's router restarted and relearned its routes",
        || async {
            router.generation().is_some_and(|g| g != generation)
                && next_hop(b, a.node_id()).await.is_some()
                && next_hop(b, c.node_id()).await.is_some()
        },
    )
    .await;
    exchange(a, c, 10).await;
    exchange(c, a, 10).await;
    assert!(b.stats().forwarded >= 30);
    for node in &nodes {
        node.shutdown().await;
    }
}
