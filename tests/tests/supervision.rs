//! The node's supervision tree keeps a node working through actor crashes.

use std::time::Duration;

use netrun_tests::{
    connected_pair, eventually, eventually_async, has_up_peer, next_datagram, node,
};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn killed_transport_is_restarted_on_the_same_port_and_sessions_carry_on() {
    let (a, b, b_id) = connected_pair().await;
    let addr_before = b.local_addr();
    let generation = b.supervision().transport.generation().expect("running");

    b.supervision()
        .transport
        .cell()
        .expect("transport running")
        .kill();
    let transport = &b.supervision().transport;
    eventually("the transport to restart", || {
        transport.generation() != Some(generation) && transport.actor().is_some()
    })
    .await;
    // Give the new incarnation a moment to publish its socket.
    tokio::time::sleep(Duration::from_millis(50)).await;

    let tree = b.tree().await;
    let transport = &tree["children"][0]["subtree"]["children"][0];
    assert_eq!(transport["id"], "udp_transport");
    assert_eq!(transport["restarts"], 1, "{transport}");
    assert_eq!(transport["state"]["state"], "running");

    // Same port, same session keys: traffic flows both ways without a new handshake.
    a.send(b_id, b"after restart").await.expect("send");
    let got = next_datagram(&b).await;
    assert_eq!(&got.payload[..], b"after restart");
    b.send(a.node_id(), b"and back").await.expect("send back");
    let got = next_datagram(&a).await;
    assert_eq!(&got.payload[..], b"and back");
    assert_eq!(addr_before, b.local_addr());
}

#[tokio::test]
async fn killed_sessions_actor_restarts_and_static_peers_reconnect() {
    let a = node().await;
    let b = netrun::Node::builder()
        .psk(netrun_tests::TEST_PSK)
        .peer(a.local_addr(), a.public_key())
        .start()
        .await
        .expect("b");
    let mut events = a.events();
    let wait_up = |events: &mut tokio::sync::broadcast::Receiver<netrun::PeerEvent>| {
        let mut events = events.resubscribe();
        async move {
            loop {
                if let netrun::PeerEvent::Up { .. } = events.recv().await.expect("event") {
                    return;
                }
            }
        }
    };
    let first = wait_up(&mut events);
    timeout(WAIT, first).await.ok();
    eventually_async(WAIT, "b to connect", || async {
        !b.peers().await.is_empty()
    })
    .await;

    b.supervision().sessions.cell().expect("sessions").kill();
    // The new Sessions incarnation withdraws the orphaned session and reconnects the
    // static peer with a fresh handshake.
    eventually_async(WAIT, "the static peer to reconnect", || {
        has_up_peer(&b, a.node_id())
    })
    .await;
    b.send(a.node_id(), b"reconnected").await.expect("send");
    let got = next_datagram(&a).await;
    assert_eq!(&got.payload[..], b"reconnected");
}
