//! Mesh convergence: how long a mesh whose nodes only know one bootstrap node takes until
//! every node has a session with every other, through peer exchange.
//!
//! Each run starts a bootstrap node, then `NODES - 1` nodes seeded with it (in-process,
//! real UDP on 127.0.0.1), and stops the clock when every node has seen `NODES - 1`
//! sessions come up (its own `PeerEvent`s, counted as they happen). Peer exchange sends a
//! list to every new session peer, plus one list per `INTERVAL` to a peer in turn. Prints
//! one JSON line.
//!
//! `cargo run --release -p netrun-benches --bin converge [-- NODES [RUNS]]`

use std::collections::HashSet;
use std::time::{Duration, Instant};

use netrun::config::DiscoveryConfig;
use netrun::{Node, NodeId, PeerEvent, PeerState};
use serde_json::json;
use tokio::sync::watch;

const DEFAULT_NODES: usize = 20;
const DEFAULT_RUNS: usize = 5;
/// The periodic peer-exchange interval (a safety net; new sessions get a list at once).
const INTERVAL: Duration = Duration::from_secs(1);
/// A run that has not converged by then is reported as failed.
const LIMIT: Duration = Duration::from_secs(120);
const PSK: [u8; 32] = [0x5c; 32];

/// Counts one node's sessions from its own events; publishes the count.
fn track(node: &Node) -> watch::Receiver<usize> {
    let mut events = node.events();
    let (tx, rx) = watch::channel(0);
    let node = node.clone();
    tokio::spawn(async move {
        let mut up: HashSet<NodeId> = node
            .peers()
            .await
            .into_iter()
            .filter(|p| p.state == PeerState::Up)
            .map(|p| p.node)
            .collect();
        let _ = tx.send(up.len());
        loop {
            match events.recv().await {
                Ok(PeerEvent::Up { node, .. }) => {
                    up.insert(node);
                }
                Ok(PeerEvent::Down { node }) => {
                    up.remove(&node);
                }
                Ok(_) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => return,
            }
            if tx.send(up.len()).is_err() {
                return;
            }
        }
    });
    rx
}

async fn one_run(n: usize) -> anyhow::Result<(Duration, Duration)> {
    let mut config = DiscoveryConfig::manual();
    config.peer_exchange.enabled = true;
    config.peer_exchange.interval = INTERVAL;
    let start = Instant::now();
    let boot = Node::builder()
        .psk(PSK)
        .discovery(config.clone())
        .start()
        .await?;
    let mut trackers = vec![track(&boot)];
    let mut nodes = vec![boot.clone()];
    for _ in 1..n {
        let node = Node::builder()
            .psk(PSK)
            .discovery(config.clone())
            .seed(boot.local_addr(), boot.public_key())
            .start()
            .await?;
        trackers.push(track(&node));
        nodes.push(node);
    }
    let all_started = start.elapsed();
    let deadline = tokio::time::Instant::now() + LIMIT;
    for tracker in &mut trackers {
        tokio::time::timeout_at(deadline, tracker.wait_for(|c| *c >= n - 1))
            .await
            .map_err(|_| anyhow::anyhow!("no convergence within {LIMIT:?}"))??;
    }
    let converged = start.elapsed();
    for node in &nodes {
        node.shutdown().await;
    }
    Ok((converged, all_started))
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let n = args
        .next()
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(DEFAULT_NODES);
    let runs = args
        .next()
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(DEFAULT_RUNS);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut times = Vec::new();
    let mut startups = Vec::new();
    for _ in 0..runs {
        let (converged, started) = rt.block_on(one_run(n))?;
        times.push(converged.as_secs_f64() * 1e3);
        startups.push(started.as_secs_f64() * 1e3);
    }
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let line = json!({
        "bench": "mesh_convergence",
        "what": "first node started -> every node has a session with every other (peer exchange from one bootstrap node)",
        "nodes": n,
        "pairs": n * (n - 1) / 2,
        "px_interval_ms": INTERVAL.as_millis() as u64,
        "runtime": "multi_thread_2",
        "runs_ms": times,
        "startup_ms": startups,
        "median_ms": sorted[sorted.len() / 2],
        "max_ms": sorted[sorted.len() - 1],
    });
    println!("{line}");
    Ok(())
}
