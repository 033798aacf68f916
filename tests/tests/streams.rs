//! Streams between two nodes over real UDP on 127.0.0.1: reliable delivery under injected
//! loss, best effort accounting, backpressure, retry/blocking sends, and failure when the
//! peer disappears. Loss comes from the test-only `Node::set_loss` hook (seeded, on the
//! sending side of each node), because loopback does not lose.

use std::time::Duration;

use bytes::Bytes;
use netrun::{
    BlockingPolicy, Node, NodeId, Reliability, RetryPolicy, StreamConfig, StreamError, StreamHandle,
};
use netrun_tests::connected_pair;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::time::{Instant, timeout};

const WAIT: Duration = Duration::from_secs(10);
const MIB: usize = 1024 * 1024;

/// Opens stream `id` on `a` and sends one byte so `b` learns of it, then accepts it on `b`
/// and reads that byte.
async fn open_pair(
    a: &Node,
    b: &Node,
    peer: NodeId,
    id: u64,
    config: StreamConfig,
) -> (StreamHandle, StreamHandle) {
    let tx = a.open_stream(peer, id, config).await.expect("open");
    tx.send_blocking(Bytes::from_static(b"!"), BlockingPolicy::default())
        .await
        .expect("first byte");
    let mut rx = timeout(WAIT, b.accept_stream())
        .await
        .expect("accept in time")
        .expect("a stream");
    assert_eq!(rx.id(), id);
    let first = timeout(WAIT, rx.recv()).await.expect("first byte in time");
    assert_eq!(first.as_deref(), Some(&b"!"[..]));
    (tx, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reliable_16_mib_under_10_percent_loss_arrives_byte_for_byte() {
    let (a, b, b_id) = connected_pair().await;
    a.set_loss(0.10, 1);
    b.set_loss(0.10, 2);
    let (tx, mut rx) = open_pair(&a, &b, b_id, 1, StreamConfig::default()).await;

    let reader = tokio::spawn(async move {
        let mut hash = blake3::Hasher::new();
        let mut bytes = 0usize;
        while let Some(chunk) = rx.recv().await {
            hash.update(&chunk);
            bytes += chunk.len();
        }
        (bytes, hash.finalize(), rx.failure())
    });

    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut sent = blake3::Hasher::new();
    let mut left = 16 * MIB;
    let start = Instant::now();
    while left > 0 {
        let mut chunk = vec![0u8; left.min(8000)];
        rng.fill_bytes(&mut chunk);
        sent.update(&chunk);
        left -= chunk.len();
        tx.send_blocking(Bytes::from(chunk), BlockingPolicy::default())
            .await
            .expect("send under loss");
    }
    tx.close_graceful(Duration::from_secs(60))
        .await
        .expect("close acknowledged");
    let elapsed = start.elapsed();
    let (bytes, got, failure) = timeout(Duration::from_secs(60), reader)
        .await
        .expect("reader ends")
        .expect("reader task");
    assert_eq!(failure, None);
    assert_eq!(bytes, 16 * MIB);
    assert_eq!(got, sent.finalize(), "byte for byte");
    let stats = tx.stats().await;
    assert!(stats.retransmits > 0, "loss was repaired: {stats:?}");
    assert!(a.stats().dropped_injected > 0 && b.stats().dropped_injected > 0);
    eprintln!(
        "16 MiB at 10 % loss in {elapsed:?}: retransmits {}, injected drops a={} b={}",
        stats.retransmits,
        a.stats().dropped_injected,
        b.stats().dropped_injected
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn best_effort_under_loss_delivers_what_arrives_and_counts_the_rest() {
    let (a, b, b_id) = connected_pair().await;
    let config = StreamConfig::default().with_reliability(Reliability::BestEffort);
    let (tx, mut rx) = open_pair(&a, &b, b_id, 2, config).await;
    a.set_loss(0.10, 3);
    b.set_loss(0.10, 4);

    const COUNT: u64 = 5000;
    let reader = tokio::spawn(async move {
        let mut indices = Vec::new();
        // Best effort may lose the FIN too: stop after a quiet second.
        while let Ok(Some(chunk)) = timeout(Duration::from_secs(1), rx.recv()).await {
            let index = u64::from_le_bytes(chunk[..8].try_into().expect("index"));
            assert!(chunk[8..].iter().all(|&x| x == index as u8), "intact");
            indices.push(index);
        }
        let stats = rx.stats().await;
        (indices, stats)
    });
    for i in 0..COUNT {
        let mut msg = i.to_le_bytes().to_vec();
        msg.extend(std::iter::repeat_n(i as u8, 1016));
        tx.send_blocking(Bytes::from(msg), BlockingPolicy::default())
            .await
            .expect("best-effort send");
    }
    let _ = tx.close_graceful(Duration::from_secs(5)).await;
    let (indices, stats) = reader.await.expect("reader");
    assert!(
        indices.windows(2).all(|w| w[0] < w[1]),
        "arrival order, never backwards, never twice"
    );
    let received = indices.len() as u64;
    assert!(received < COUNT, "10 % loss loses something");
    assert!(received > COUNT * 8 / 10, "most arrive: {received}");
    // Every segment is either delivered or counted as skipped, never both (the tail is
    // accounted by the FIN or the sender's PROBE, which loss may also take).
    let accounted = received + stats.skipped_segments;
    assert!(
        (COUNT * 99 / 100..=COUNT).contains(&accounted),
        "received {received} + skipped {} of {COUNT}",
        stats.skipped_segments
    );
    assert!(stats.skipped_segments > 0, "{stats:?}");
    eprintln!(
        "best effort: sent {COUNT}, received {received}, skipped {}, late {}",
        stats.skipped_segments, stats.late_dropped
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_sender_gets_backpressure_and_buffers_at_most_the_window() {
    let (a, b, b_id) = connected_pair().await;
    let window = 64 * 1024;
    let (tx, mut rx) = open_pair(&a, &b, b_id, 3, StreamConfig::default()).await;

    // The receiver does not read: the sender fills the window and is refused at once.
    let msg = Bytes::from(vec![7u8; 1024]);
    let mut accepted = 1u64; // the opening byte
    loop {
        match tx.send(msg.clone()) {
            Ok(()) => accepted += 1024,
            Err(StreamError::Backpressure) => break,
            Err(e) => panic!("unexpected {e}"),
        }
        assert!(accepted <= window, "never more than the window accepted");
    }
    assert!(accepted > window - 2048, "the window fills: {accepted}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stats = tx.stats().await;
    assert!(stats.buffered <= window, "{stats:?}");
    assert!(stats.backpressure_events >= 1);

    // A slow reader: the sender keeps offering, the buffered bytes stay within the window.
    let reader = tokio::spawn(async move {
        let mut bytes = 0u64;
        while bytes < 2 * MIB as u64 {
            let Some(chunk) = rx.recv().await else { break };
            bytes += chunk.len() as u64;
            if bytes % (64 * 1024) < 1024 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        bytes
    });
    let mut refusals = 0u64;
    let mut max_buffered = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut offered = accepted;
    while offered < 2 * MIB as u64 && Instant::now() < deadline {
        match tx.send(msg.clone()) {
            Ok(()) => offered += 1024,
            Err(StreamError::Backpressure) => {
                refusals += 1;
                if refusals % 64 == 0 {
                    max_buffered = max_buffered.max(tx.stats().await.buffered);
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    let got = timeout(Duration::from_secs(30), reader)
        .await
        .expect("reader done")
        .expect("reader task");
    assert!(got >= 2 * MIB as u64 - 1024);
    assert!(refusals > 0);
    assert!(max_buffered <= window, "memory flat: {max_buffered}");
    assert!(
        tx.stats().await.backpressure_events >= refusals,
        "refusals are counted"
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_with_retry_and_send_blocking_wait_for_credit_and_give_up_on_time() {
    let (a, b, b_id) = connected_pair().await;
    let config = StreamConfig::default().with_window_bytes(4096);
    let (tx, mut rx) = open_pair(&a, &b, b_id, 4, config).await;
    // Fill the window (the opening byte is reported consumed only when b reads again).
    let msg = Bytes::from(vec![1u8; 1024]);
    let mut queued = 0;
    while tx.send(msg.clone()).is_ok() {
        queued += 1;
    }
    assert_eq!(queued, 3, "4 KiB window, one byte outstanding");
    assert_eq!(tx.send(msg.clone()), Err(StreamError::Backpressure));

    // Nobody reads: both give up after their bounds.
    let retry = RetryPolicy {
        initial: Duration::from_millis(1),
        max_delay: Duration::from_millis(8),
        max_attempts: 5,
    };
    let start = Instant::now();
    assert_eq!(
        tx.send_with_retry(msg.clone(), retry).await,
        Err(StreamError::Backpressure)
    );
    assert!(start.elapsed() >= retry.total());
    let blocking = BlockingPolicy {
        budget: Duration::from_millis(200),
        ..BlockingPolicy::default()
    };
    let start = Instant::now();
    assert_eq!(
        tx.send_blocking(msg.clone(), blocking).await,
        Err(StreamError::Backpressure)
    );
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(200) && waited < Duration::from_secs(2),
        "{waited:?}"
    );

    // The receiver drains later: both succeed, woken by the grant.
    let reader = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut bytes = 0;
        while bytes < (queued + 2) * 1024 {
            match rx.recv().await {
                Some(c) => bytes += c.len(),
                None => break,
            }
        }
        bytes
    });
    let start = Instant::now();
    tx.send_blocking(msg.clone(), BlockingPolicy::default())
        .await
        .expect("blocking send succeeds once drained");
    assert!(start.elapsed() >= Duration::from_millis(40));
    tx.send_with_retry(msg.clone(), RetryPolicy::default())
        .await
        .expect("retry send succeeds once drained");
    assert_eq!(
        timeout(WAIT, reader).await.expect("reader").expect("task"),
        (queued + 2) * 1024
    );
    a.shutdown().await;
    b.shutdown().await;
}

/// Stream `id` from `a` to `b` (three retries, so it gives up soon) once 200 KiB went
/// through it; `b`'s end is drained by the returned task.
async fn busy_stream(
    a: &Node,
    b: &Node,
    peer: NodeId,
    id: u64,
) -> (StreamHandle, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = open_pair(a, b, peer, id, give_up_config()).await;
    let reader = tokio::spawn(async move { while rx.recv().await.is_some() {} });
    for _ in 0..200 {
        tx.send_blocking(Bytes::from(vec![3u8; 1024]), BlockingPolicy::default())
            .await
            .expect("healthy transfer");
    }
    (tx, reader)
}

/// What [`busy_stream`] opens with: three retries.
fn give_up_config() -> StreamConfig {
    StreamConfig::default().with_max_retries(3)
}

/// Sends on `tx` from now until it fails, and checks that it failed as `Failed` within
/// the give-up time; `cause` names the peer's fate in the log.
async fn assert_fails_within_the_give_up_time(tx: &StreamHandle, cause: &str) {
    let msg = Bytes::from(vec![9u8; 1024]);
    let cut = Instant::now();
    let error = loop {
        match tx.send(msg.clone()) {
            Ok(()) => {}
            Err(StreamError::Backpressure) => tokio::time::sleep(Duration::from_millis(2)).await,
            Err(e) => break e,
        }
        assert!(cut.elapsed() < Duration::from_secs(60), "the stream hangs");
    };
    let after = cut.elapsed();
    assert!(matches!(error, StreamError::Failed(_)), "{error}");
    assert!(
        after <= give_up_config().give_up_time(),
        "failed after {after:?}"
    );
    eprintln!("{cause}: {error} after {after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn black_holed_peer_fails_the_stream_within_the_give_up_time() {
    let (a, b, b_id) = connected_pair().await;
    let (tx, reader) = busy_stream(&a, &b, b_id, 5).await;
    // b goes silent: nothing it sends (grants, heartbeats) reaches a.
    b.set_loss(1.0, 5);
    assert_fails_within_the_give_up_time(&tx, "black-holed peer").await;
    reader.abort();
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_shut_down_mid_transfer_fails_the_stream_within_the_give_up_time() {
    let (a, b, b_id) = connected_pair().await;
    let (tx, reader) = busy_stream(&a, &b, b_id, 6).await;
    b.shutdown().await;
    assert_fails_within_the_give_up_time(&tx, "shut-down peer").await;
    let _ = reader.await;
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_are_listed_with_their_stats_and_closed_cleanly() {
    let (a, b, b_id) = connected_pair().await;
    let (tx, mut rx) = open_pair(&a, &b, b_id, 7, StreamConfig::default()).await;
    let stats = a.stream_stats(b_id, 7).await.expect("stats while open");
    assert_eq!(stats.window, 64 * 1024);
    let listed = a.streams().await;
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].0, listed[0].1), (b_id, 7));
    // What `netrun peers --streams --json` prints.
    let json = netrun::control::streams(&a).await;
    assert_eq!(json[0]["node_id"], b_id.to_string());
    assert_eq!(json[0]["stream"], 7);
    assert_eq!(json[0]["window"], 64 * 1024);
    assert!(matches!(
        a.open_stream(b_id, 7, StreamConfig::default()).await,
        Err(netrun::StreamOpenError::Exists(7))
    ));
    // Reply on the same stream, then both close: the streams leave the listing (they
    // linger in the tables for the give-up time, to answer late retransmissions).
    rx.send(Bytes::from_static(b"pong")).expect("reply");
    let mut tx = tx;
    assert_eq!(
        timeout(WAIT, tx.recv())
            .await
            .expect("reply in time")
            .as_deref(),
        Some(&b"pong"[..])
    );
    tx.close_graceful(WAIT).await.expect("a closes");
    assert_eq!(timeout(WAIT, rx.recv()).await.expect("end in time"), None);
    rx.close_graceful(WAIT).await.expect("b closes");
    assert_eq!(timeout(WAIT, tx.recv()).await.expect("end in time"), None);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(a.streams().await.is_empty());
    assert!(b.streams().await.is_empty());
    assert_eq!(tx.send(Bytes::from_static(b"x")), Err(StreamError::Closed));
    a.shutdown().await;
    b.shutdown().await;
}
