//! Stream benchmark on loopback: reliable-stream goodput against plain UDP, and ping-pong
//! latency over a reliable stream, two nodes in one process.
//!
//! Goodput: 1 KiB messages one way; the clock runs from the first send until the receiver
//! holds every delivered byte. Plain UDP uses the same message size with an application
//! window (`UDP_WINDOW` messages unacknowledged, cumulative acks every `ACK_EVERY`) so it
//! does not measure its own socket-buffer drops. Loss is injected on the sending side of
//! both ends (`Node::set_loss` for netrun; the same seeded coin for UDP, whose sender then
//! treats the message as gone). Latency: a 64-byte message and its echo on one reliable
//! stream (and the same over plain UDP). One JSON line per result; the last compares.
//! Netrun runs with the default stream timers and with loopback-tuned ones (NACK interval
//! and RTO floor 2 ms). `STREAMS_BENCH_DEBUG=1` prints both ends' stream counters.
//!
//! ```sh
//! cargo run --release -p netrun-benches --bin streams            # 64 MiB per run
//! cargo run --release -p netrun-benches --bin streams -- --quick # 8 MiB per run
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use bytes::Bytes;
use netrun::{BlockingPolicy, Identity, Node, NodeId, StreamConfig, StreamHandle};
use netrun_benches::{micros, percentile};
use serde_json::json;
use tokio::net::UdpSocket;

const PSK: [u8; 32] = [0x5b; 32];
const MSG: usize = 1024;
/// Plain UDP: messages the sender may have unacknowledged.
const UDP_WINDOW: u64 = 128;
/// Plain UDP: the receiver acknowledges every this many messages.
const ACK_EVERY: u64 = 32;
const PING: usize = 64;
const DEFAULT_NACK: Duration = netrun_runtime::stream::DEFAULT_NACK_INTERVAL;
const DEFAULT_MIN_RTO: Duration = netrun_runtime::stream::stream_rtt_config().min_rto;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let bytes: u64 = if quick { 8 << 20 } else { 64 << 20 };
    let pings = if quick { 2_000 } else { 10_000 };
    // The defaults, then loopback-tuned timers: the receiver NACKs a gap after
    // `nack_interval / 4` and a lost final grant costs one RTO, and at the defaults (5 ms,
    // RTO floor 10 ms) both dwarf a sub-millisecond loopback RTT.
    let tuned = Duration::from_millis(2);
    let configs = [
        (64 * 1024u32, DEFAULT_NACK, DEFAULT_MIN_RTO),
        (1024 * 1024, DEFAULT_NACK, DEFAULT_MIN_RTO),
        (64 * 1024, tuned, tuned),
        (256 * 1024, tuned, tuned),
    ];

    let mut udp0 = 0.0;
    for loss in [0.0, 0.01] {
        let mbps = udp_goodput(bytes, loss).await?;
        if loss == 0.0 {
            udp0 = mbps;
        }
        println!(
            "{}",
            json!({"bench": "goodput", "transport": "udp", "msg": MSG, "loss": loss, "bytes": bytes, "mb_per_s": mbps})
        );
    }
    let mut best0: f64 = 0.0;
    for (window, nack, min_rto) in configs {
        let mut config = StreamConfig {
            nack_interval: nack,
            ..StreamConfig::default().with_window_bytes(window)
        };
        config.rtt.min_rto = min_rto;
        for loss in [0.0, 0.01] {
            let (mbps, retransmits) = stream_goodput(bytes, loss, config).await?;
            if loss == 0.0 {
                best0 = best0.max(mbps);
            }
            println!(
                "{}",
                json!({"bench": "goodput", "transport": "netrun-stream", "reliable": true, "window": window, "nack_interval_ms": micros(nack) / 1000.0, "min_rto_ms": micros(min_rto) / 1000.0, "msg": MSG, "loss": loss, "bytes": bytes, "mb_per_s": mbps, "retransmits": retransmits})
            );
        }
    }
    let udp_rtt = udp_pingpong(pings).await?;
    let stream_rtt = stream_pingpong(pings).await?;
    for (transport, samples) in [("udp", &udp_rtt), ("netrun-stream", &stream_rtt)] {
        println!(
            "{}",
            json!({"bench": "pingpong", "transport": transport, "msg": PING, "iterations": samples.len(),
                   "p50_us": micros(percentile(samples, 50.0)), "p99_us": micros(percentile(samples, 99.0))})
        );
    }
    println!(
        "{}",
        json!({"bench": "summary", "stream_vs_udp_goodput_at_0_loss": best0 / udp0, "goal": 0.6})
    );
    Ok(())
}

async fn nodes(config: StreamConfig) -> Result<(Node, Node, NodeId)> {
    let start = |identity| {
        Node::builder()
            .identity(identity)
            .psk(PSK)
            .stream_accept_config(config)
            .start()
    };
    let a = start(Identity::generate()).await?;
    let b = start(Identity::generate()).await?;
    let peer = a.connect(b.local_addr(), b.public_key()).await?;
    // The responder installs its keys a moment after `connect` returns.
    while !b.peers().await.iter().any(|p| p.node == a.node_id()) {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok((a, b, peer))
}

/// Opens a stream a → b and hands back both ends (b learns of it from a first byte).
async fn stream_pair(
    a: &Node,
    b: &Node,
    peer: NodeId,
    config: StreamConfig,
) -> Result<(StreamHandle, StreamHandle)> {
    let tx = a.open_stream(peer, 1, config).await?;
    tx.send_blocking(Bytes::from_static(b"!"), BlockingPolicy::default())
        .await?;
    let mut rx = b
        .accept_stream()
        .await
        .ok_or_else(|| anyhow!("no stream"))?;
    rx.recv().await.ok_or_else(|| anyhow!("no first byte"))?;
    Ok((tx, rx))
}

async fn stream_goodput(bytes: u64, loss: f64, config: StreamConfig) -> Result<(f64, u64)> {
    let (a, b, peer) = nodes(config).await?;
    let (tx, mut rx) = stream_pair(&a, &b, peer, config).await?;
    a.set_loss(loss, 11);
    b.set_loss(loss, 12);
    let reader = tokio::spawn(async move {
        let mut got = 0u64;
        while got < bytes {
            match rx.recv().await {
                Some(chunk) => got += chunk.len() as u64,
                None => break,
            }
        }
        (got, Instant::now(), rx)
    });
    let msg = Bytes::from(vec![0xcd; MSG]);
    let start = Instant::now();
    for _ in 0..bytes / MSG as u64 {
        tx.send_blocking(msg.clone(), BlockingPolicy::default())
            .await?;
    }
    let (got, end, _rx) = tokio::time::timeout(Duration::from_secs(120), reader)
        .await
        .context("reader timed out")??;
    let stats = tx.stats().await;
    if std::env::var_os("STREAMS_BENCH_DEBUG").is_some() {
        eprintln!("sender {stats:?}");
        eprintln!("receiver {:?}", b.streams().await);
    }
    let retransmits = stats.retransmits;
    a.shutdown().await;
    b.shutdown().await;
    Ok((mb_per_s(got, end - start), retransmits))
}

async fn udp_goodput(bytes: u64, loss: f64) -> Result<f64> {
    let server = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
    let client = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
    let server_addr = server.local_addr()?;
    let messages = bytes / MSG as u64;
    let received = Arc::new(AtomicU64::new(0));
    let serve = {
        let server = Arc::clone(&server);
        let received = Arc::clone(&received);
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65_536];
            let mut count = 0u64;
            while let Ok((_, from)) = server.recv_from(&mut buf).await {
                count += 1;
                received.store(count, Ordering::Release);
                if count % ACK_EVERY == 0 {
                    let _ = server.send_to(&count.to_le_bytes(), from).await;
                }
            }
        })
    };
    let acked = Arc::new(AtomicU64::new(0));
    let (ack_tx, mut ack_rx) = tokio::sync::mpsc::channel::<()>(1);
    let acks = {
        let client = Arc::clone(&client);
        let acked = Arc::clone(&acked);
        tokio::spawn(async move {
            let mut buf = [0u8; 64];
            while let Ok((8, _)) = client.recv_from(&mut buf).await {
                let mut n = [0u8; 8];
                n.copy_from_slice(&buf[..8]);
                acked.fetch_max(u64::from_le_bytes(n), Ordering::AcqRel);
                let _ = ack_tx.try_send(());
            }
        })
    };
    let mut coin = Coin::new(loss, 13);
    let msg = vec![0xcd; MSG];
    let mut forgiven = 0u64;
    let start = Instant::now();
    for sent in 0..messages {
        while sent.saturating_sub(acked.load(Ordering::Acquire) + forgiven) >= UDP_WINDOW {
            if tokio::time::timeout(Duration::from_millis(20), ack_rx.recv())
                .await
                .is_err()
            {
                forgiven = sent.saturating_sub(acked.load(Ordering::Acquire));
            }
        }
        if coin.lose() {
            forgiven += 1;
            continue;
        }
        client.send_to(&msg, server_addr).await?;
    }
    // Until the receiver stops making progress for 20 ms.
    let mut last = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = received.load(Ordering::Acquire);
        if now == last {
            break;
        }
        last = now;
    }
    let elapsed = start.elapsed().saturating_sub(Duration::from_millis(20));
    serve.abort();
    acks.abort();
    Ok(mb_per_s(last * MSG as u64, elapsed))
}

async fn stream_pingpong(iterations: usize) -> Result<Vec<Duration>> {
    let config = StreamConfig::default();
    let (a, b, peer) = nodes(config).await?;
    let (mut tx, mut rx) = stream_pair(&a, &b, peer, config).await?;
    let echo = tokio::spawn(async move {
        while let Some(msg) = rx.recv().await {
            if rx_send(&rx, msg).is_err() {
                break;
            }
        }
    });
    let ping = Bytes::from(vec![0x11; PING]);
    let mut samples = Vec::with_capacity(iterations);
    for i in 0..iterations + iterations / 10 {
        let start = Instant::now();
        tx.send_blocking(ping.clone(), BlockingPolicy::default())
            .await?;
        tokio::time::timeout(Duration::from_secs(2), tx.recv())
            .await
            .context("echo lost")?
            .ok_or_else(|| anyhow!("stream ended"))?;
        if i >= iterations / 10 {
            samples.push(start.elapsed());
        }
    }
    echo.abort();
    a.shutdown().await;
    b.shutdown().await;
    samples.sort();
    Ok(samples)
}

fn rx_send(stream: &StreamHandle, msg: Bytes) -> Result<(), netrun::StreamError> {
    stream.send(msg)
}

async fn udp_pingpong(iterations: usize) -> Result<Vec<Duration>> {
    let server = UdpSocket::bind("127.0.0.1:0").await?;
    let client = UdpSocket::bind("127.0.0.1:0").await?;
    let server_addr: SocketAddr = server.local_addr()?;
    let echo = tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = server.recv_from(&mut buf).await {
            let _ = server.send_to(&buf[..n], from).await;
        }
    });
    let ping = [0x11u8; PING];
    let mut buf = [0u8; 2048];
    let mut samples = Vec::with_capacity(iterations);
    for i in 0..iterations + iterations / 10 {
        let start = Instant::now();
        client.send_to(&ping, server_addr).await?;
        tokio::time::timeout(Duration::from_secs(2), client.recv_from(&mut buf))
            .await
            .context("udp echo lost")??;
        if i >= iterations / 10 {
            samples.push(start.elapsed());
        }
    }
    echo.abort();
    samples.sort();
    Ok(samples)
}

fn mb_per_s(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / 1e6 / elapsed.as_secs_f64().max(1e-9)
}

/// A seeded loss coin (splitmix64), the same kind of draw as the node's test hook.
struct Coin {
    threshold: u64,
    state: u64,
}

impl Coin {
    fn new(p: f64, seed: u64) -> Self {
        Self {
            threshold: (p.clamp(0.0, 1.0) * u64::MAX as f64) as u64,
            state: seed,
        }
    }

    fn lose(&mut self) -> bool {
        if self.threshold == 0 {
            return false;
        }
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        z < self.threshold
    }
}
