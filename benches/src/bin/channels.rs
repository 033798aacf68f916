//! Channel fan-out on loopback: one publisher, 1 / 10 / 100 subscribers (all in-process
//! nodes), 64-byte events on a reliable channel (and a best-effort one).
//!
//! Each run subscribes every subscriber, then publishes `events` events in `publish_many`
//! batches and stops the clock when every subscriber holds every event (reliable) or when
//! the last one has been idle for 200 ms (best effort: the publisher does not pace, so
//! what finds no credit is dropped and counted, and the line shows how much arrived).
//! One JSON line per run:
//! deliveries per second (events × subscribers ÷ time), publish calls per second, and the
//! publisher's report (delivered / dropped).
//!
//! ```sh
//! cargo run --release -p netrun-benches --bin channels            # 400k deliveries per run
//! cargo run --release -p netrun-benches --bin channels -- --quick # 100k
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use netrun::config::PingwaveSettings;
use netrun::{ChannelConfig, ChannelName, ChannelsConfig, Identity, Node, SubscribeConfig};
use serde_json::json;

const PSK: [u8; 32] = [0x5c; 32];
const EVENT: usize = 64;
const BATCH: usize = 256;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let deliveries: u64 = if quick { 100_000 } else { 400_000 };
    for reliable in [true, false] {
        for subscribers in [1usize, 10, 100] {
            let events = (deliveries / subscribers as u64).max(BATCH as u64);
            run(subscribers, events, reliable).await?;
        }
    }
    Ok(())
}

async fn start() -> Result<Node> {
    Node::builder()
        .identity(Identity::generate())
        .psk(PSK)
        .pingwave(PingwaveSettings {
            enabled: false,
            ..PingwaveSettings::default()
        })
        .channel_config(ChannelsConfig {
            publish_timeout: Duration::from_secs(30),
            ..ChannelsConfig::default()
        })
        .start()
        .await
        .context("node start")
}

async fn run(subscribers: usize, events: u64, reliable: bool) -> Result<()> {
    let publisher = start().await?;
    let channel = ChannelName::new("bench.fanout")?;
    publisher
        .register_channel(ChannelConfig::new(channel.clone()).with_reliable(reliable))
        .await?;
    let received = Arc::new(AtomicU64::new(0));
    let last_seen = Arc::new(AtomicU64::new(0));
    let origin = Instant::now();
    let mut nodes = Vec::with_capacity(subscribers);
    let mut readers = Vec::with_capacity(subscribers);
    for _ in 0..subscribers {
        let node = start().await?;
        node.connect(publisher.local_addr(), publisher.public_key())
            .await?;
        while !publisher
            .peers()
            .await
            .iter()
            .any(|p| p.node == node.node_id())
        {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let mut sub = node
            .subscribe_channel(publisher.node_id(), &channel, SubscribeConfig::new())
            .await?;
        let (received, last_seen) = (Arc::clone(&received), Arc::clone(&last_seen));
        readers.push(tokio::spawn(async move {
            let mut got = 0u64;
            while got < events {
                match tokio::time::timeout(Duration::from_secs(60), sub.recv()).await {
                    Ok(Some(_)) => {
                        got += 1;
                        received.fetch_add(1, Ordering::Relaxed);
                        last_seen.store(origin.elapsed().as_nanos() as u64, Ordering::Relaxed);
                    }
                    _ => break,
                }
            }
            got
        }));
        nodes.push(node);
    }

    let payload = Bytes::from(vec![0x5a; EVENT]);
    let start = Instant::now();
    let mut report = netrun::PublishReport::default();
    let mut calls = 0u64;
    let mut sent = 0u64;
    while sent < events {
        let n = (events - sent).min(BATCH as u64) as usize;
        let batch = vec![payload.clone(); n];
        report += publisher.publish_many(&channel, batch).await?;
        sent += n as u64;
        calls += 1;
    }
    let publish_time = start.elapsed();
    let total = events * subscribers as u64;
    // Reliable: every event arrives. Best effort: wait until nothing moved for 200 ms.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let got = received.load(Ordering::Relaxed);
        if got >= total {
            break;
        }
        let seen = last_seen.load(Ordering::Relaxed);
        let idle = Duration::from_nanos((origin.elapsed().as_nanos() as u64).saturating_sub(seen));
        let waited = start.elapsed().saturating_sub(publish_time);
        if !reliable
            && ((got > 0 && idle > Duration::from_millis(200)) || waited > Duration::from_secs(2))
        {
            break;
        }
        if Instant::now() > deadline {
            if reliable {
                bail!("only {got} of {total} deliveries arrived");
            }
            break;
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    let got = received.load(Ordering::Relaxed);
    let end = Duration::from_nanos(last_seen.load(Ordering::Relaxed));
    let elapsed = end
        .saturating_sub(start.duration_since(origin))
        .max(publish_time);
    let per_sec = got as f64 / elapsed.as_secs_f64();
    println!(
        "{}",
        json!({
            "bench": "channel_fanout",
            "reliable": reliable,
            "subscribers": subscribers,
            "event_bytes": EVENT,
            "events": events,
            "batch": BATCH,
            "deliveries": got,
            "expected": total,
            "secs": elapsed.as_secs_f64(),
            "deliveries_per_s": per_sec.round(),
            "events_per_s": (events as f64 / elapsed.as_secs_f64()).round(),
            "publish_calls_per_s": (calls as f64 / publish_time.as_secs_f64()).round(),
            "report": {"attempted": report.attempted, "delivered": report.delivered, "dropped": report.dropped},
        })
    );
    for reader in readers {
        reader.abort();
    }
    for node in nodes {
        node.shutdown().await;
    }
    publisher.shutdown().await;
    Ok(())
}
