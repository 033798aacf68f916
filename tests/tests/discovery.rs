//! Discovery over real UDP on 127.0.0.1: a mesh joined from one bootstrap node converges
//! through peer exchange, seeds are idempotent, a crashed backend restarts alone, and the
//! DHT resolves a node this node never had a session with.

use std::collections::HashMap;
use std::time::Duration;

use netrun::config::DiscoveryConfig;
use netrun::{DiscoverySource, Node, NodeId, PeerEvent, PeerState};
use netrun_actors::discovery::backend::BackendMsg;
use netrun_actors::discovery::coordinator::CoordinatorMsg;
use netrun_actors::discovery::kademlia::KademliaMsg;
use netrun_actors::discovery::peer_exchange::PeerExchangeMsg;
use netrun_tests::{builder, eventually_async, next_datagram};
use tokio::time::{Instant, sleep};

const MESH: usize = 20;

fn with_peer_exchange() -> DiscoveryConfig {
    let mut config = DiscoveryConfig::manual();
    config.peer_exchange.enabled = true;
    config.peer_exchange.interval = Duration::from_secs(1);
    config
}

fn with_dht() -> DiscoveryConfig {
    let mut config = DiscoveryConfig::manual();
    config.dht.enabled = true;
    config
}

async fn start(config: DiscoveryConfig, seed: Option<&Node>) -> Node {
    let mut builder = builder().discovery(config);
    if let Some(seed) = seed {
        builder = builder.seed(seed.local_addr(), seed.public_key());
    }
    netrun_tests::start(builder).await
}

async fn up_peers(node: &Node) -> Vec<NodeId> {
    node.peers()
        .await
        .into_iter()
        .filter(|p| p.state == PeerState::Up)
        .map(|p| p.node)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_nodes_joined_from_one_bootstrap_node_converge() {
    let boot = start(with_peer_exchange(), None).await;
    let mut nodes = vec![boot.clone()];
    for _ in 1..MESH {
        nodes.push(start(with_peer_exchange(), Some(&boot)).await);
    }
    let started = Instant::now();
    let ids: Vec<NodeId> = nodes.iter().map(Node::node_id).collect();
    eventually_async(
        Duration::from_secs(60),
        "every node has a session with every other",
        || {
            let nodes = nodes.clone();
            async move {
                for n in &nodes {
                    if up_peers(n).await.len() < MESH - 1 {
                        return false;
                    }
                }
                true
            }
        },
    )
    .await;
    eprintln!("{MESH} nodes converged in {:?}", started.elapsed());
    // How each node found the others: the bootstrap node as a seed, everyone else through
    // peer exchange (on at least one side of each pair: the side that connected).
    let mut found: Vec<HashMap<NodeId, Vec<DiscoverySource>>> = Vec::new();
    for n in &nodes {
        found.push(
            n.discovered()
                .await
                .into_iter()
                .map(|p| (p.node, p.sources))
                .collect(),
        );
    }
    for (i, table) in found.iter().enumerate().skip(1) {
        assert_eq!(
            table
                .get(&ids[0])
                .map(|s| s.contains(&DiscoverySource::Seed)),
            Some(true),
            "node {i} found the bootstrap node as a seed"
        );
        for j in (i + 1)..MESH {
            let learned = |a: usize, b: usize| {
                found[a]
                    .get(&ids[b])
                    .is_some_and(|s| s.contains(&DiscoverySource::PeerExchange))
            };
            assert!(
                learned(i, j) || learned(j, i),
                "nodes {i} and {j} met through peer exchange"
            );
        }
    }
    // The sessions carry traffic end to end.
    let (first, last) = (&nodes[1], &nodes[MESH - 1]);
    last.send(first.node_id(), b"across the mesh")
        .await
        .expect("send");
    let got = next_datagram(first).await;
    assert_eq!(&got.payload[..], b"across the mesh");
    for n in &nodes {
        n.shutdown().await;
    }
}

#[tokio::test]
async fn seeds_are_idempotent_and_unreachable_seeds_are_not_hammered() {
    let a = start(DiscoveryConfig::manual(), None).await;
    let mut config = DiscoveryConfig::manual();
    config.reannounce = Duration::from_millis(50);
    let nowhere = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let ghost = netrun::Identity::generate().entity_id();
    let b = netrun_tests::start(
        builder()
            .discovery(config)
            .seed(a.local_addr(), a.public_key())
            .seed(a.local_addr(), a.public_key())
            .peer(a.local_addr(), a.public_key())
            .seed(nowhere.local_addr().expect("addr"), ghost),
    )
    .await;
    eventually_async(
        Duration::from_secs(10),
        "b's coordinator sees its seed connected",
        || async {
            b.discovered()
                .await
                .iter()
                .any(|p| p.node == a.node_id() && p.connected && p.attempts == 0)
        },
    )
    .await;
    let before = b.discovered().await;
    let stats_before = b.discovery_status().await.coordinator.expect("running");
    sleep(Duration::from_millis(1500)).await;
    let after = b.discovered().await;
    let status = b.discovery_status().await;
    let stats_after = status.coordinator.expect("running");

    assert_eq!(after.len(), 2, "one entry per seed key: {after:?}");
    let seen_a = after.iter().find(|p| p.node == a.node_id()).expect("a");
    assert_eq!(seen_a.sources, vec![DiscoverySource::Seed]);
    assert!(seen_a.connected);
    assert_eq!(
        before.iter().find(|p| p.node == a.node_id()),
        Some(seen_a),
        "re-reporting a connected seed changes nothing"
    );
    let bootstrap = status
        .backends
        .iter()
        .find(|s| s.name == "bootstrap")
        .expect("bootstrap row");
    assert!(bootstrap.running && bootstrap.found >= 20, "{bootstrap:?}");
    assert!(
        stats_after.table.duplicates >= stats_before.table.duplicates + 20,
        "re-reports counted as duplicates: {stats_before:?} → {stats_after:?}"
    );
    // The unreachable seed was tried once (its handshake is still retrying) while the
    // bootstrap backend reported it dozens of times; `a` was connected once.
    let ghost_entry = after
        .iter()
        .find(|p| p.node == ghost.node_id())
        .expect("ghost");
    assert!(!ghost_entry.connected);
    assert_eq!(ghost_entry.attempts, 1, "{ghost_entry:?}");
    assert!(
        stats_after.table.connects_started <= 3,
        "no hammering: {stats_after:?}"
    );
    assert_eq!(
        up_peers(&b).await,
        vec![a.node_id()],
        "one session, with the seed"
    );
    assert_eq!(
        b.resolve(a.node_id()).await.map(|c| c.addrs),
        Some(vec![a.local_addr()]),
        "a session peer resolves without a DHT"
    );
    assert_eq!(b.resolve(ghost.node_id()).await, None, "no DHT, no session");
    b.shutdown().await;
    a.shutdown().await;
}

#[tokio::test]
async fn a_crashed_backend_restarts_alone() {
    let a = start(DiscoveryConfig::manual(), None).await;
    let mut config = with_peer_exchange();
    config.dht.enabled = true;
    let b = start(config, Some(&a)).await;
    eventually_async(Duration::from_secs(10), "b reaches its seed", || async {
        up_peers(&b).await.contains(&a.node_id())
    })
    .await;
    let discovery = b
        .supervision()
        .root
        .child_supervisor("discovery")
        .await
        .expect("discovery subtree");
    let coordinator = discovery
        .child_ref::<CoordinatorMsg>("coordinator")
        .await
        .expect("coordinator");
    let bootstrap = discovery
        .child_ref::<BackendMsg>("bootstrap")
        .await
        .expect("bootstrap");
    let px = discovery
        .child_ref::<PeerExchangeMsg>("peer_exchange")
        .await
        .expect("peer exchange");
    let dht = discovery
        .child_ref::<KademliaMsg>("dht")
        .await
        .expect("dht");
    let generations = || {
        [
            coordinator.generation(),
            bootstrap.generation(),
            px.generation(),
            dht.generation(),
        ]
    };
    let before = generations();
    assert!(before.iter().all(Option::is_some), "{before:?}");

    for (victim, index) in [(bootstrap.cell(), 1), (px.cell(), 2)] {
        let expected = {
            let mut g = generations();
            g[index] = g[index].map(|g| g + 1);
            g
        };
        victim.expect("running").kill();
        eventually_async(
            Duration::from_secs(10),
            "the killed backend restarts",
            || {
                let now = generations();
                async move { now[index] == expected[index] }
            },
        )
        .await;
        assert_eq!(generations(), expected, "only the killed backend restarted");
        eventually_async(
            Duration::from_secs(5),
            "its status row shows it running",
            || {
                let b = b.clone();
                async move {
                    b.discovery_status()
                        .await
                        .backends
                        .iter()
                        .filter(|s| s.name == "bootstrap" || s.name == "peer_exchange")
                        .all(|s| s.running)
                }
            },
        )
        .await;
    }
    let tree = b.tree().await;
    let subtree = tree["children"]
        .as_array()
        .expect("children")
        .iter()
        .find(|c| c["id"] == "discovery")
        .expect("discovery")["subtree"]
        .clone();
    let restarts: HashMap<String, u64> = subtree["children"]
        .as_array()
        .expect("children")
        .iter()
        .map(|c| {
            (
                c["id"].as_str().expect("id").to_string(),
                c["restarts"].as_u64().expect("restarts"),
            )
        })
        .collect();
    assert_eq!(restarts["coordinator"], 0);
    assert_eq!(restarts["bootstrap"], 1);
    assert_eq!(restarts["peer_exchange"], 1);
    assert_eq!(restarts["dht"], 0);
    assert!(
        up_peers(&b).await.contains(&a.node_id()),
        "sessions are untouched"
    );
    b.shutdown().await;
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dozen_node_dht_resolves_a_node_never_connected() {
    let boot = start(with_dht(), None).await;
    let mut nodes = vec![boot.clone()];
    for _ in 1..10 {
        nodes.push(start(with_dht(), Some(&boot)).await);
    }
    let target = start(with_dht(), Some(&boot)).await;
    let (target_id, target_key, target_addr) =
        (target.node_id(), target.public_key(), target.local_addr());

    // The target publishes its contact record once it has joined, and every STORE has gone
    // out once nothing waits for a session any more.
    eventually_async(
        Duration::from_secs(60),
        "the target publishes its record",
        || {
            let target = target.clone();
            async move {
                target.discovery_status().await.backends.iter().any(|b| {
                    b.name == "dht"
                        && b.detail.contains("published 1×")
                        && b.detail.contains("held for sessions 0 ")
                })
            }
        },
    )
    .await;
    sleep(Duration::from_millis(500)).await;
    target.shutdown().await;

    // A twelfth node joins after the target left: it can only learn the target's contact
    // from the records other nodes hold.
    let late = start(with_dht(), Some(&boot)).await;
    let mut late_events = late.events();
    eventually_async(
        Duration::from_secs(60),
        "the late node resolves the target",
        || {
            let late = late.clone();
            async move {
                late.resolve(target_id)
                    .await
                    .is_some_and(|c| c.public_key == target_key && c.addrs == vec![target_addr])
            }
        },
    )
    .await;
    let found = late.discovered().await;
    let entry = found
        .iter()
        .find(|p| p.node == target_id)
        .expect("the resolved contact went to the coordinator");
    assert!(entry.sources.contains(&DiscoverySource::Dht), "{entry:?}");
    assert!(
        !entry.connected,
        "the target is gone; it was only ever a hint"
    );
    while let Ok(event) = late_events.try_recv() {
        assert!(
            !matches!(event, PeerEvent::Up { node, .. } if node == target_id),
            "never a session with the target"
        );
    }
    let dht = late
        .discovery_status()
        .await
        .backends
        .into_iter()
        .find(|s| s.name == "dht")
        .expect("dht row");
    assert!(dht.running && dht.found >= 1, "{dht:?}");
    for n in nodes.iter().chain([&late]) {
        n.shutdown().await;
    }
}
