//! Encrypted sessions over real UDP on 127.0.0.1.

use std::time::Duration;

use netrun::{ConnectError, Identity, IdentityFile, PeerEvent, PeerState};
use netrun_tests::{
    Relay, TEST_PSK, builder, connected_pair, eventually, eventually_async, fast_timing,
    has_up_peer, next_datagram, node, node_with, start,
};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn two_nodes_exchange_ten_thousand_datagrams_without_loss() {
    let (a, b, b_id) = connected_pair().await;
    assert_eq!(b_id, b.node_id());

    // Both directions, in windows of 100 so the receiver is never more than one window
    // behind (loopback does not lose, but a socket buffer can overflow).
    for (tx, rx, to) in [(&a, &b, b.node_id()), (&b, &a, a.node_id())] {
        let mut next_expected = 0u32;
        for window in 0..100u32 {
            for i in 0..100u32 {
                let n = window * 100 + i;
                tx.send(to, &n.to_le_bytes()).await.expect("send");
            }
            for _ in 0..100 {
                let got = next_datagram(rx).await;
                let n = u32::from_le_bytes(got.payload[..4].try_into().expect("4 bytes"));
                assert_eq!(n, next_expected, "in order on loopback, none lost");
                assert_eq!(got.peer, tx.node_id());
                next_expected += 1;
            }
        }
        assert_eq!(next_expected, 10_000);
    }
    let stats = b.stats();
    assert_eq!(
        stats.dropped_queue_full + stats.dropped_auth + stats.dropped_replay,
        0
    );
    assert!(stats.delivered >= 10_000);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn wrong_psk_gives_no_session_and_a_clear_error() {
    let a = node_with(Identity::generate(), [1; 32], fast_timing()).await;
    let b = node_with(Identity::generate(), [2; 32], fast_timing()).await;
    let err = timeout(WAIT, a.connect(b.local_addr(), b.public_key()))
        .await
        .expect("answer in time")
        .expect_err("must fail");
    assert!(matches!(err, ConnectError::Handshake { .. }), "{err}");
    assert!(err.to_string().contains("handshake"), "{err}");
    assert!(a.stats().handshake_failures >= 1);
    assert!(a.peers().await.is_empty());
    // The responder never confirms the session: it is dropped and counted.
    tokio::time::sleep(fast_timing().fail_after * 3).await;
    assert!(b.peers().await.is_empty(), "{:?}", b.peers().await);
    assert!(b.stats().handshake_failures >= 1);
}

#[tokio::test]
async fn replayed_and_bit_flipped_packets_are_dropped_and_counted() {
    let a = node().await;
    let b = node().await;
    let relay = Relay::start(b.local_addr()).await;
    a.connect(relay.addr(), b.public_key())
        .await
        .expect("connect through relay");
    a.send(b.node_id(), b"original").await.expect("send");
    let got = next_datagram(&b).await;
    assert_eq!(&got.payload[..], b"original");

    let captured = relay
        .to_server
        .lock()
        .await
        .iter()
        .rev()
        .find(|d| d.len() > 48 && d[1] == 3)
        .cloned()
        .expect("a captured data packet");
    let before = b.stats();
    relay.inject(&captured).await;
    let mut flipped = captured.clone();
    let last = flipped.len() - 1;
    flipped[last - 20] ^= 0x01;
    // A fresh counter so the replay window does not catch it first.
    flipped[32] = flipped[32].wrapping_add(100);
    relay.inject(&flipped).await;
    a.send(b.node_id(), b"after").await.expect("send");
    let got = next_datagram(&b).await;
    assert_eq!(&got.payload[..], b"after", "neither forgery was delivered");
    let after = b.stats();
    assert_eq!(after.dropped_replay, before.dropped_replay + 1);
    assert_eq!(after.dropped_auth, before.dropped_auth + 1);
}

#[tokio::test]
async fn silent_peer_becomes_suspected_then_down() {
    let timing = fast_timing();
    let a = node_with(Identity::generate(), TEST_PSK, timing).await;
    let b = node_with(Identity::generate(), TEST_PSK, timing).await;
    let relay = Relay::start(b.local_addr()).await;
    let mut events = a.events();
    a.connect(relay.addr(), b.public_key())
        .await
        .expect("connect");
    tokio::time::sleep(timing.heartbeat_interval * 4).await;
    let peers = a.peers().await;
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0].state, PeerState::Up);
    assert!(peers[0].rtt.is_some(), "heartbeats measured an RTT");

    relay.set_blackhole(true);
    let silent_at = tokio::time::Instant::now();
    let mut suspected_at = None;
    let down_at = loop {
        match timeout(WAIT, events.recv())
            .await
            .expect("event in time")
            .expect("event")
        {
            PeerEvent::Suspected { node } if node == b.node_id() => {
                suspected_at = Some(silent_at.elapsed());
            }
            PeerEvent::Down { node } if node == b.node_id() => break silent_at.elapsed(),
            _ => {}
        }
    };
    let suspected_at = suspected_at.expect("suspected before down");
    let slack = Duration::from_millis(150);
    assert!(
        suspected_at <= timing.suspect_after + slack,
        "suspected after {suspected_at:?}"
    );
    assert!(
        down_at >= timing.fail_after - timing.heartbeat_interval,
        "down too early: {down_at:?}"
    );
    assert!(
        down_at <= timing.fail_after + slack,
        "down after {down_at:?}"
    );
    assert!(a.peers().await.is_empty());
}

#[tokio::test]
async fn node_restarted_from_its_identity_file_is_readmitted() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("identity.key");
    let a = node().await;
    // B keeps its identity in `path` and has A as its static peer.
    let b_with = |identity: Identity| {
        builder()
            .identity(identity)
            .peer(a.local_addr(), a.public_key())
    };
    let b = start(b_with(Identity::load_or_create(&path).expect("identity"))).await;
    let b_addr = b.local_addr();
    let b_id = b.node_id();
    let mut events = a.events();
    wait_up(&mut events, b_id).await;
    b.shutdown().await;

    // Same identity file, same address: B comes back and initiates again; A accepts the
    // fresh ephemeral from the same static key as a rotation.
    let b2 = start(b_with(Identity::load(&path).expect("reload")).bind(b_addr)).await;
    assert_eq!(b2.node_id(), b_id);
    eventually_async(WAIT, "b2 to re-establish the session", || {
        has_up_peer(&b2, a.node_id())
    })
    .await;
    a.send(b_id, b"welcome back")
        .await
        .expect("send to restarted node");
    let got = next_datagram(&b2).await;
    assert_eq!(&got.payload[..], b"welcome back");
}

async fn wait_up(events: &mut tokio::sync::broadcast::Receiver<PeerEvent>, node: netrun::NodeId) {
    loop {
        match timeout(WAIT, events.recv())
            .await
            .expect("event in time")
            .expect("event")
        {
            PeerEvent::Up { node: n, .. } if n == node => return,
            _ => {}
        }
    }
}

#[tokio::test]
async fn identity_claiming_another_nodes_id_is_refused() {
    use netrun_runtime::handshake::Initiator;

    let b = node().await;
    let victim = node().await;
    victim
        .connect(b.local_addr(), b.public_key())
        .await
        .expect("victim connects");
    let failures_before = b.stats().handshake_failures;

    // An attacker with the PSK but its own key writes the victim's node id as the source.
    let attacker = Identity::generate();
    let now = std::time::Instant::now();
    let (_, mut datagram) = Initiator::start(
        now,
        &attacker,
        b.public_key(),
        &TEST_PSK,
        7,
        &mut rand::rngs::OsRng,
    )
    .expect("build message 1");
    datagram[8..16].copy_from_slice(&victim.node_id().get().to_le_bytes());
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    socket
        .send_to(&datagram, b.local_addr())
        .await
        .expect("send");

    eventually("the forged handshake to be counted", || {
        b.stats().handshake_failures != failures_before
    })
    .await;
    let mut buf = [0u8; 2048];
    let answer = timeout(Duration::from_millis(300), socket.recv_from(&mut buf)).await;
    assert!(answer.is_err(), "no handshake response to an impersonator");
    let peers = b.peers().await;
    assert_eq!(peers.len(), 1);
    assert_eq!(
        peers[0].entity,
        victim.public_key(),
        "the victim's session is untouched"
    );
    victim.send(b.node_id(), b"still me").await.expect("send");
    let got = next_datagram(&b).await;
    assert_eq!(got.peer, victim.node_id());
}

#[tokio::test]
async fn a_batch_of_datagrams_arrives_in_order() {
    let (a, b, b_id) = connected_pair().await;
    let payloads: Vec<Vec<u8>> = (0..64u32).map(|i| i.to_le_bytes().repeat(8)).collect();
    let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
    a.send_many(b_id, &refs).await.expect("batch");
    for expected in &payloads {
        let got = next_datagram(&b).await;
        assert_eq!(&got.payload[..], &expected[..]);
    }
    let too_big = vec![0u8; netrun_messages::header::MAX_PAYLOAD_LEN + 1];
    assert!(matches!(
        a.send_many(b_id, &[b"ok", &too_big]).await,
        Err(netrun::SendError::TooLarge { .. })
    ));
}

#[tokio::test]
async fn simultaneous_open_yields_one_working_session() {
    for _ in 0..5 {
        let a = node().await;
        let b = node().await;
        let (ab, ba) = tokio::join!(
            a.connect(b.local_addr(), b.public_key()),
            b.connect(a.local_addr(), a.public_key())
        );
        assert_eq!(ab.expect("a→b"), b.node_id());
        assert_eq!(ba.expect("b→a"), a.node_id());
        for (tx, rx) in [(&a, &b), (&b, &a)] {
            tx.send(rx.node_id(), b"both ways").await.expect("send");
            let got = next_datagram(rx).await;
            assert_eq!(&got.payload[..], b"both ways");
        }
        assert_eq!(a.peers().await.len(), 1);
        assert_eq!(b.peers().await.len(), 1);
    }
}
