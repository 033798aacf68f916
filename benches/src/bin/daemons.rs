//! Daemon hosting through the `DaemonHost` actor of a real node: event delivery, spawn
//! latency and restart-from-snapshot latency. Prints one JSON line.
//!
//! - `deliver`: one `DaemonHandle::deliver` per event (an actor call each): events/s and
//!   the per-event p50/p99 of the call.
//! - `deliver_many`: chunks of N events per actor message: events/s and the per-chunk
//!   p50/p99 (divide by N for the amortized per-event cost). Inputs are either bytes
//!   (linked into the node's input chain by the actor: two more BLAKE3 hashes per event)
//!   or pre-linked `CausalEvent`s.
//! - `spawn`: `Node::spawn_daemon` (factory, host with its first signed snapshot,
//!   supervisor child start) until the first `deliver` is answered.
//! - `restart`: from sending the poison event until the restarted daemon (fresh
//!   daemon from its factory, snapshot restored, log replayed) answers a `deliver`; a new
//!   daemon per sample so the supervisor's backoff (which doubles from the second crash
//!   of a streak) never applies. With an empty log and with 1,000 logged events.
//! - `served`: a second node on loopback calls the daemon as nRPC service
//!   (`Node::serve_daemon`, reply `Last`): sequential round trips (p50/p99) and calls/s
//!   with 32 concurrent callers, next to a plain `serve` echo handler on the same node so
//!   the daemon's share is visible. Both nodes share the one runtime thread.
//!
//! The daemon is a counter (one 8-byte output per event) with the default host
//! configuration (batch signing, 256 events / 2 ms, a snapshot every 1,024 events); one
//! subscriber drains its outputs. Everything runs on one current-thread runtime: one core.
//!
//! `cargo run --release -p netrun-benches --bin daemons [-- EVENTS]`

use std::time::{Duration, Instant};

use bytes::Bytes;
use netrun::daemons::DaemonReply;
use netrun::daemons::{
    CausalChain, CausalEvent, DaemonCallError, DaemonConfig, DaemonError, DaemonHandle,
    DaemonInput, DaemonOptions, MeshDaemon, factory,
};
use netrun::rpc::{CallOptions, HandlerError, RequestContext};
use netrun::{Identity, Node, PeerState};
use netrun_benches::{micros, percentile};

const DEFAULT_EVENTS: usize = 1_000_000;
const SPAWN_SAMPLES: usize = 300;
const RESTART_SAMPLES: usize = 200;
const SERVED_CALLS: usize = 20_000;
const SERVED_CALLERS: usize = 32;

struct Counter(u64);

impl MeshDaemon for Counter {
    fn name(&self) -> &str {
        "counter"
    }

    fn process(&mut self, event: &CausalEvent) -> Result<Vec<Bytes>, DaemonError> {
        if &event.payload[..] == b"boom" {
            return Err(DaemonError::Failed("poison".into()));
        }
        self.0 += 1;
        Ok(vec![Bytes::copy_from_slice(&self.0.to_le_bytes())])
    }

    fn snapshot(&self) -> Option<Bytes> {
        Some(Bytes::copy_from_slice(&self.0.to_le_bytes()))
    }

    fn restore(&mut self, state: Bytes) -> Result<(), DaemonError> {
        let bytes: [u8; 8] = state[..]
            .try_into()
            .map_err(|_| DaemonError::InvalidState("8 bytes".into()))?;
        self.0 = u64::from_le_bytes(bytes);
        Ok(())
    }
}

fn summary(sorted: &[Duration]) -> serde_json::Value {
    let mean = sorted.iter().sum::<Duration>().as_secs_f64() * 1e6 / sorted.len().max(1) as f64;
    serde_json::json!({
        "samples": sorted.len(),
        "p50_us": micros(percentile(sorted, 50.0)),
        "p99_us": micros(percentile(sorted, 99.0)),
        "max_us": micros(percentile(sorted, 100.0)),
        "mean_us": mean,
    })
}

async fn spawn(node: &Node) -> anyhow::Result<DaemonHandle> {
    let handle = node
        .spawn_daemon("counter", Identity::generate(), DaemonConfig::empty())
        .await?;
    // Drain outputs like a subscriber would.
    let mut outputs = handle.outputs();
    tokio::spawn(async move { while outputs.recv().await.is_ok() {} });
    Ok(handle)
}

async fn deliver_one_by_one(node: &Node, events: usize) -> anyhow::Result<serde_json::Value> {
    let daemon = spawn(node).await?;
    let payload = Bytes::from_static(b"event");
    let mut samples = Vec::with_capacity(events);
    let start = Instant::now();
    for _ in 0..events {
        let t = Instant::now();
        daemon.deliver(payload.clone()).await?;
        samples.push(t.elapsed());
    }
    let elapsed = start.elapsed();
    daemon.stop().await?;
    samples.sort();
    Ok(serde_json::json!({
        "events": events,
        "events_per_s": events as f64 / elapsed.as_secs_f64(),
        "per_event": summary(&samples),
    }))
}

async fn deliver_chunks(
    node: &Node,
    events: usize,
    chunk: usize,
    prelinked: bool,
) -> anyhow::Result<serde_json::Value> {
    let daemon = spawn(node).await?;
    let producer = Identity::generate();
    let mut chain = CausalChain::new(producer.origin_hash());
    let payload = Bytes::from_static(b"event");
    let chunks = events / chunk;
    let mut samples = Vec::with_capacity(chunks);
    for _ in 0..chunks {
        // Built outside the timed part; only the actor round trip is measured.
        let batch = (0..chunk)
            .map(|_| {
                if prelinked {
                    chain.append(payload.clone()).map(DaemonInput::Event)
                } else {
                    Ok(DaemonInput::Bytes(payload.clone()))
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let t = Instant::now();
        let done = daemon.deliver_many(batch).await?;
        samples.push(t.elapsed());
        anyhow::ensure!(done.error.is_none() && done.processed == chunk, "{done:?}");
    }
    let elapsed: Duration = samples.iter().sum();
    daemon.stop().await?;
    samples.sort();
    let total = chunks * chunk;
    Ok(serde_json::json!({
        "events": total,
        "chunk": chunk,
        "inputs": if prelinked { "causal_events" } else { "bytes" },
        "events_per_s": total as f64 / elapsed.as_secs_f64(),
        "per_event_mean_ns": elapsed.as_secs_f64() * 1e9 / total as f64,
        "per_chunk": summary(&samples),
    }))
}

async fn spawn_latency(node: &Node) -> anyhow::Result<serde_json::Value> {
    let mut samples = Vec::with_capacity(SPAWN_SAMPLES);
    for _ in 0..SPAWN_SAMPLES {
        let t = Instant::now();
        let daemon = node
            .spawn_daemon("counter", Identity::generate(), DaemonConfig::empty())
            .await?;
        daemon.deliver("first").await?;
        samples.push(t.elapsed());
        daemon.stop().await?;
    }
    samples.sort();
    Ok(summary(&samples))
}

async fn restart_latency(node: &Node, logged: usize) -> anyhow::Result<serde_json::Value> {
    let mut samples = Vec::with_capacity(RESTART_SAMPLES);
    let mut replayed = 0;
    for _ in 0..RESTART_SAMPLES {
        let daemon = node
            .spawn_daemon_with(
                "counter",
                Identity::generate(),
                DaemonConfig::empty(),
                DaemonOptions::default(),
            )
            .await?;
        if logged > 0 {
            let inputs: Vec<DaemonInput> = (0..logged).map(|_| DaemonInput::from("x")).collect();
            daemon.deliver_many(inputs).await?;
        }
        // From sending the poison event: its failure reply may only reach this task after
        // the supervisor has already restarted the daemon (one thread runs everything).
        let t = Instant::now();
        let failed = daemon.deliver("boom").await;
        anyhow::ensure!(
            matches!(failed, Err(DaemonCallError::Deliver(_))),
            "{failed:?}"
        );
        loop {
            match daemon.deliver("after").await {
                Ok(_) => break,
                Err(DaemonCallError::NotRunning) => tokio::task::yield_now().await,
                Err(e) => anyhow::bail!("restart: {e}"),
            }
        }
        samples.push(t.elapsed());
        replayed = daemon.status().await?.events_processed;
        daemon.stop().await?;
    }
    samples.sort();
    let mut out = summary(&samples);
    out["logged_events"] = serde_json::json!(logged);
    out["events_processed_after_restart"] = serde_json::json!(replayed);
    Ok(out)
}

/// Round trips and calls/s of `service` on `server`, called from `client`.
async fn calls(client: &Node, server: &Node, service: &str) -> anyhow::Result<serde_json::Value> {
    let target = server.node_id();
    let options = CallOptions::default();
    let body = Bytes::from_static(b"request");
    for _ in 0..1_000 {
        client.call(target, service, body.clone(), &options).await?;
    }
    let mut samples = Vec::with_capacity(SERVED_CALLS);
    for _ in 0..SERVED_CALLS {
        let t = Instant::now();
        client.call(target, service, body.clone(), &options).await?;
        samples.push(t.elapsed());
    }
    samples.sort();
    let start = Instant::now();
    let mut callers = tokio::task::JoinSet::new();
    for _ in 0..SERVED_CALLERS {
        let client = client.clone();
        let service = service.to_owned();
        let body = body.clone();
        callers.spawn(async move {
            let options = CallOptions::default();
            for _ in 0..SERVED_CALLS / SERVED_CALLERS {
                client
                    .call(target, &service, body.clone(), &options)
                    .await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = callers.join_next().await {
        done??;
    }
    let concurrent = (SERVED_CALLS / SERVED_CALLERS) * SERVED_CALLERS;
    Ok(serde_json::json!({
        "service": service,
        "round_trip": summary(&samples),
        "callers": SERVED_CALLERS,
        "calls_per_s": concurrent as f64 / start.elapsed().as_secs_f64(),
    }))
}

async fn served(node: &Node) -> anyhow::Result<serde_json::Value> {
    let client = Node::builder().start().await?;
    client.connect(node.local_addr(), node.public_key()).await?;
    while !node
        .peers()
        .await
        .iter()
        .any(|p| p.node == client.node_id() && p.state == PeerState::Up)
    {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let _echo = node.serve("bench.echo", |request: RequestContext| async move {
        Ok::<_, HandlerError>(request.body().clone())
    })?;
    let daemon = spawn(node).await?;
    node.serve_daemon(daemon.origin_hash(), "bench.counter", DaemonReply::Last)?;
    let echo = calls(&client, node, "bench.echo").await?;
    let counter = calls(&client, node, "bench.counter").await?;
    daemon.stop().await?;
    client.shutdown().await;
    Ok(serde_json::json!([echo, counter]))
}

async fn run(events: usize) -> anyhow::Result<serde_json::Value> {
    let node = Node::builder().start().await?;
    node.register_daemon_kind("counter", factory(|_| Ok(Box::new(Counter(0)))))?;
    // Warm up allocators, the supervisor and the runtime.
    deliver_chunks(&node, 50_000, 1024, true).await?;
    let one_by_one = deliver_one_by_one(&node, (events / 5).max(1)).await?;
    let mut many = Vec::new();
    for (chunk, prelinked) in [(64, true), (256, true), (1024, true), (1024, false)] {
        many.push(deliver_chunks(&node, events, chunk, prelinked).await?);
    }
    let spawn = spawn_latency(&node).await?;
    let restart_empty = restart_latency(&node, 0).await?;
    let restart_logged = restart_latency(&node, 1000).await?;
    let served = served(&node).await?;
    node.shutdown().await;
    Ok(serde_json::json!({
        "bench": "daemons",
        "runtime": "current_thread",
        "daemon": "counter, one 8-byte output per event, default host config (batch 256 / 2 ms)",
        "deliver": one_by_one,
        "deliver_many": many,
        "spawn_until_first_delivery": spawn,
        "restart_until_delivery": [restart_empty, restart_logged],
        "served": served,
    }))
}

fn main() -> anyhow::Result<()> {
    let events = std::env::args()
        .nth(1)
        .map(|s| s.parse::<usize>())
        .transpose()?
        .unwrap_or(DEFAULT_EVENTS);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let line = runtime.block_on(run(events))?;
    println!("{line}");
    Ok(())
}
