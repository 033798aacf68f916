//! Loopback benchmark: netrun sessions against plain UDP, measured by the same harness.
//!
//! For each transport (plain UDP, netrun) and each placement (one process, two processes)
//! it measures one-way datagram throughput at 64 B and 1 KiB (messages/s and MB/s, with at
//! most `WINDOW` messages unacknowledged so neither side measures its own drops) and
//! ping-pong round-trip latency at 64 B (p50, p99). Every result is one JSON line on
//! stdout; the last line compares netrun with plain UDP.
//!
//! ```sh
//! cargo run --release -p netrun-benches --bin loopback            # full run
//! cargo run --release -p netrun-benches --bin loopback -- --quick # smaller counts
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use bytes::Bytes;
use netrun::{Identity, Node, NodeId};
use netrun_benches::{ServerProcess, hello, micros, percentile, spawn_server};
use serde_json::json;
use tokio::net::UdpSocket;

/// Unacknowledged messages the sender may have in flight.
const WINDOW: u64 = 128;
/// The receiver acknowledges every this many messages.
const ACK_EVERY: u64 = 32;
const PSK: [u8; 32] = [0x5a; 32];

const TAG_ONEWAY: u8 = 0;
const TAG_PING: u8 = 1;
const TAG_ACK: u8 = 2;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Udp,
    Netrun,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Udp => "udp",
            Kind::Netrun => "netrun",
        }
    }
}

/// One side of a connection, whatever the transport.
#[derive(Clone)]
enum Link {
    Udp {
        socket: Arc<UdpSocket>,
        peer: SocketAddr,
    },
    Netrun {
        node: Node,
        peer: NodeId,
    },
}

impl Link {
    async fn send(&self, payload: &[u8]) -> Result<()> {
        match self {
            Link::Udp { socket, peer } => {
                socket.send_to(payload, *peer).await?;
            }
            Link::Netrun { node, peer } => node.send(*peer, payload).await?,
        }
        Ok(())
    }

    async fn recv(&self, buf: &mut Vec<u8>) -> Result<Bytes> {
        match self {
            Link::Udp { socket, .. } => {
                buf.resize(65_536, 0);
                let (n, _) = socket.recv_from(buf).await?;
                Ok(Bytes::copy_from_slice(&buf[..n]))
            }
            Link::Netrun { node, .. } => Ok(node
                .recv()
                .await
                .ok_or_else(|| anyhow!("node stopped"))?
                .payload),
        }
    }
}

/// The receiving side: counts one-way messages (acknowledging every `ACK_EVERY`) and
/// echoes pings.
async fn serve(link: Link) -> Result<()> {
    let mut buf = Vec::new();
    let mut count = 0u64;
    loop {
        let msg = link.recv(&mut buf).await?;
        match msg.first() {
            Some(&TAG_ONEWAY) => {
                count += 1;
                if count % ACK_EVERY == 0 {
                    let mut ack = vec![TAG_ACK];
                    ack.extend_from_slice(&count.to_le_bytes());
                    link.send(&ack).await?;
                }
            }
            Some(&TAG_PING) => link.send(&msg).await?,
            _ => {}
        }
    }
}

/// Sends `messages` one-way datagrams; `offset` is how many the server already counted on
/// this link (its acknowledgements are cumulative). Returns the time until the last
/// acknowledgement and how many messages were delivered. A message lost on the way (a
/// full socket buffer) is forgiven after `STALL` without progress, so loss lowers the
/// delivered count instead of stalling the run.
async fn oneway(link: &Link, size: usize, messages: u64, offset: u64) -> Result<(Duration, u64)> {
    const STALL: Duration = Duration::from_millis(20);
    let acked = Arc::new(AtomicU64::new(0));
    let last_ack = Arc::new(std::sync::Mutex::new(Instant::now()));
    let (ack_tx, mut ack_rx) = tokio::sync::mpsc::channel::<()>(1);
    let reader = {
        let link = link.clone();
        let acked = Arc::clone(&acked);
        let last_ack = Arc::clone(&last_ack);
        tokio::spawn(async move {
            let mut buf = Vec::new();
            while let Ok(msg) = link.recv(&mut buf).await {
                if msg.first() == Some(&TAG_ACK) && msg.len() == 9 {
                    let n = u64::from_le_bytes(msg[1..9].try_into().unwrap_or_default());
                    acked.fetch_max(n.saturating_sub(offset), Ordering::AcqRel);
                    if let Ok(mut t) = last_ack.lock() {
                        *t = Instant::now();
                    }
                    let _ = ack_tx.try_send(());
                }
            }
        })
    };
    let mut payload = vec![0xab; size];
    payload[0] = TAG_ONEWAY;
    let messages = messages / ACK_EVERY * ACK_EVERY;
    let mut forgiven = 0u64;
    let start = Instant::now();
    for sent in 0..messages {
        while sent.saturating_sub(acked.load(Ordering::Acquire) + forgiven) >= WINDOW {
            if tokio::time::timeout(STALL, ack_rx.recv()).await.is_err() {
                forgiven = sent.saturating_sub(acked.load(Ordering::Acquire));
            }
        }
        link.send(&payload).await?;
    }
    while acked.load(Ordering::Acquire) + forgiven < messages {
        if tokio::time::timeout(Duration::from_millis(200), ack_rx.recv())
            .await
            .is_err()
        {
            break;
        }
    }
    reader.abort();
    let end = last_ack
        .lock()
        .map(|t| *t)
        .unwrap_or_else(|_| Instant::now());
    Ok((
        end.saturating_duration_since(start),
        acked.load(Ordering::Acquire),
    ))
}

async fn pingpong(link: &Link, iterations: usize) -> Result<Vec<Duration>> {
    let mut payload = vec![0x11; 64];
    payload[0] = TAG_PING;
    let mut buf = Vec::new();
    let mut samples = Vec::with_capacity(iterations);
    for i in 0..iterations + iterations / 10 {
        let start = Instant::now();
        link.send(&payload).await?;
        loop {
            let reply = tokio::time::timeout(Duration::from_secs(2), link.recv(&mut buf))
                .await
                .context("ping reply lost")??;
            if reply.first() == Some(&TAG_PING) {
                break;
            }
        }
        if i >= iterations / 10 {
            samples.push(start.elapsed());
        }
    }
    samples.sort();
    Ok(samples)
}

/// A server in this process; returns the client's link to it.
async fn local_pair(kind: Kind) -> Result<(Link, Vec<tokio::task::JoinHandle<()>>)> {
    match kind {
        Kind::Udp => {
            let a = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
            let b = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
            let server = Link::Udp {
                socket: Arc::clone(&b),
                peer: a.local_addr()?,
            };
            let task = tokio::spawn(async move {
                let _ = serve(server).await;
            });
            Ok((
                Link::Udp {
                    socket: a,
                    peer: b.local_addr()?,
                },
                vec![task],
            ))
        }
        Kind::Netrun => {
            let a = Node::builder().psk(PSK).start().await?;
            let b = Node::builder().psk(PSK).start().await?;
            let peer = a.connect(b.local_addr(), b.public_key()).await?;
            let server = Link::Netrun {
                node: b.clone(),
                peer: a.node_id(),
            };
            let task = tokio::spawn(async move {
                let _ = serve(server).await;
            });
            Ok((Link::Netrun { node: a, peer }, vec![task]))
        }
    }
}

/// A server in a child process; returns the client's link to it and the server.
async fn remote_pair(kind: Kind) -> Result<(Link, ServerProcess)> {
    let server = spawn_server(&["--serve", kind.name()]).await?;
    let link = match kind {
        Kind::Udp => {
            let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
            Link::Udp {
                socket,
                peer: server.addr,
            }
        }
        Kind::Netrun => {
            let (node, peer) = server.connect(PSK).await?;
            Link::Netrun { node, peer }
        }
    };
    Ok((link, server))
}

/// Child process: serve until killed.
async fn run_server(kind: &str) -> Result<()> {
    match kind {
        "udp" => {
            let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
            println!("{}", json!({"addr": socket.local_addr()?.to_string()}));
            // Learn the client's address from its first datagram.
            let mut buf = vec![0u8; 65_536];
            let (_, peer) = socket.peek_from(&mut buf).await?;
            serve(Link::Udp { socket, peer }).await
        }
        "netrun" => {
            let node = Node::builder()
                .identity(Identity::generate())
                .psk(PSK)
                .start()
                .await?;
            println!("{}", hello(&node));
            let mut events = node.events();
            let peer = loop {
                if let netrun::PeerEvent::Up { node: peer, .. } = events.recv().await? {
                    break peer;
                }
            };
            serve(Link::Netrun { node, peer }).await
        }
        other => Err(anyhow!("unknown server kind {other}")),
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--serve") {
        return run_server(args.get(i + 1).map(String::as_str).unwrap_or("")).await;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let messages: u64 = if quick { 20_000 } else { 200_000 };
    let iterations: usize = if quick { 2_000 } else { 20_000 };
    let mut results = serde_json::Map::new();

    for placement in ["in-process", "two-process"] {
        for kind in [Kind::Udp, Kind::Netrun] {
            let mut guards = Vec::new();
            let mut _server = None;
            let link = if placement == "in-process" {
                let (link, tasks) = local_pair(kind).await?;
                guards = tasks;
                link
            } else {
                let (link, server) = remote_pair(kind).await?;
                _server = Some(server);
                link
            };
            let mut offset = 0;
            for size in [64usize, 1024] {
                let (elapsed, delivered) = oneway(&link, size, messages, offset).await?;
                offset += delivered;
                let rate = delivered as f64 / elapsed.as_secs_f64();
                let line = json!({
                    "bench": "oneway", "transport": kind.name(), "placement": placement,
                    "size": size, "sent": messages / ACK_EVERY * ACK_EVERY, "delivered": delivered,
                    "seconds": elapsed.as_secs_f64(),
                    "msgs_per_sec": rate, "mb_per_sec": rate * size as f64 / 1e6,
                });
                println!("{line}");
                results.insert(
                    format!("oneway/{placement}/{}/{size}", kind.name()),
                    json!(rate),
                );
            }
            let samples = pingpong(&link, iterations).await?;
            let (p50, p99) = (percentile(&samples, 50.0), percentile(&samples, 99.0));
            let line = json!({
                "bench": "pingpong", "transport": kind.name(), "placement": placement,
                "size": 64, "iterations": samples.len(), "p50_us": micros(p50), "p99_us": micros(p99),
            });
            println!("{line}");
            results.insert(
                format!("p50/{placement}/{}", kind.name()),
                json!(micros(p50)),
            );
            for g in guards {
                g.abort();
            }
        }
    }
    let get = |k: String| {
        results
            .get(&k)
            .and_then(serde_json::Value::as_f64)
            .unwrap_or(f64::NAN)
    };
    let mut summary = serde_json::Map::new();
    summary.insert("bench".into(), json!("summary"));
    for placement in ["in-process", "two-process"] {
        for size in [64, 1024] {
            let ratio = get(format!("oneway/{placement}/netrun/{size}"))
                / get(format!("oneway/{placement}/udp/{size}"));
            summary.insert(format!("{placement}/oneway_{size}_vs_udp"), json!(ratio));
        }
        let ratio = get(format!("p50/{placement}/netrun")) / get(format!("p50/{placement}/udp"));
        summary.insert(format!("{placement}/p50_vs_udp"), json!(ratio));
    }
    println!("{}", serde_json::Value::Object(summary));
    Ok(())
}
