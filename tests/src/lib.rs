//! Shared helpers for netrun's integration tests: quick nodes on loopback, waits that fail
//! the test with what they waited for, and a UDP relay that can record, replay, tamper
//! with and black-hole traffic between two nodes.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use netrun::config::{PingwaveSettings, SessionTiming};
use netrun::{
    CapabilityConfig, CapabilitySet, Identity, Node, NodeBuilder, NodeId, PeerState, Received,
};
use tokio::net::UdpSocket;
use tokio::sync::Mutex;

/// The PSK tests use unless they test a wrong one.
pub const TEST_PSK: [u8; 32] = [0x42; 32];

/// Fast timing so liveness tests finish in well under a second.
pub fn fast_timing() -> SessionTiming {
    SessionTiming {
        heartbeat_interval: Duration::from_millis(50),
        suspect_after: Duration::from_millis(200),
        fail_after: Duration::from_millis(500),
        idle_timeout: Duration::from_millis(2000),
    }
}

/// Pingwaves every 100 ms with a four-hop radius, so routes across a handful of loopback
/// nodes converge in a few hundred milliseconds (routes live 300 ms unless refreshed).
pub fn fast_pingwave() -> PingwaveSettings {
    PingwaveSettings {
        enabled: true,
        interval: Duration::from_millis(100),
        radius: 4,
    }
}

/// Capability announcements for tests: changes announced within a second, re-announced
/// every 2 s, entries live 4 s (the defaults would keep a test waiting for minutes).
pub fn quick_announcements() -> CapabilityConfig {
    CapabilityConfig::with_timing(1, 2, 4)
}

/// A builder for a node on `127.0.0.1:0` (the builder's default) with the test PSK.
pub fn builder() -> NodeBuilder {
    Node::builder().psk(TEST_PSK)
}

/// Starts the node `builder` describes; fails the test if it cannot.
pub async fn start(builder: NodeBuilder) -> Node {
    builder.start().await.expect("node starts on loopback")
}

/// A node on `127.0.0.1:0` with the test PSK.
pub async fn node() -> Node {
    node_with(Identity::generate(), TEST_PSK, SessionTiming::default()).await
}

/// A node on `127.0.0.1:0` with the given identity, PSK and timing.
pub async fn node_with(identity: Identity, psk: [u8; 32], timing: SessionTiming) -> Node {
    start(
        Node::builder()
            .identity(identity)
            .psk(psk)
            .session_timing(timing),
    )
    .await
}

/// A node that announces `capabilities` with [`quick_announcements`].
pub async fn node_announcing(capabilities: CapabilitySet) -> Node {
    start(
        builder()
            .capabilities(capabilities)
            .capability_config(quick_announcements()),
    )
    .await
}

/// Two test nodes with an established session, `a` → `b`, once both sides hold the keys:
/// `connect` returns when `a` does; `b` installs its own a moment later, and a best-effort
/// datagram sent before that would be dropped (counted as no session). Returns `b`'s id.
pub async fn connected_pair() -> (Node, Node, NodeId) {
    let a = node().await;
    let b = node().await;
    let b_id = connect(&a, &b).await;
    (a, b, b_id)
}

/// How long the helpers below wait before failing the test: generous, since CI machines
/// are small and run several test binaries at once.
pub const WAIT: Duration = Duration::from_secs(15);

/// How often [`eventually`] checks its (cheap, synchronous) condition.
const POLL: Duration = Duration::from_millis(20);

/// How often [`eventually_async`] checks its condition, which usually asks an actor or the
/// network and so is not run as often.
const POLL_ASYNC: Duration = Duration::from_millis(50);

/// Connects `a` to `b` and waits until both hold the session; returns `b`'s id.
pub async fn connect(a: &Node, b: &Node) -> NodeId {
    let b_id = tokio::time::timeout(WAIT, a.connect(b.local_addr(), b.public_key()))
        .await
        .expect("connect in time")
        .expect("connect");
    let up = async {
        while !has_up_peer(b, a.node_id()).await {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    tokio::time::timeout(WAIT, up)
        .await
        .expect("b has the session");
    b_id
}

/// Whether `node` holds an established (`Up`) session with `peer`.
pub async fn has_up_peer(node: &Node, peer: NodeId) -> bool {
    node.peers()
        .await
        .iter()
        .any(|p| p.node == peer && p.state == PeerState::Up)
}

/// The next datagram `node` receives; fails the test after [`WAIT`].
pub async fn next_datagram(node: &Node) -> Received {
    tokio::time::timeout(WAIT, node.recv())
        .await
        .expect("datagram in time")
        .expect("node running")
}

/// Polls `check` every 20 ms until it holds; fails the test after [`WAIT`].
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Polls the async `check` every 50 ms until it holds; fails the test after `within`.
pub async fn eventually_async<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(POLL_ASYNC).await;
    }
}

/// Wall-clock seconds since the Unix epoch (what tokens and announcements are stamped with).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs()
}

/// A UDP relay between one client and one server address: datagrams from the client go
/// to `server`, datagrams from the server go back to the last client address. It can
/// record what passes, inject datagrams, and drop everything.
#[derive(Debug)]
pub struct Relay {
    socket: Arc<UdpSocket>,
    /// Datagrams that passed client → server, in order.
    pub to_server: Arc<Mutex<Vec<Vec<u8>>>>,
    blackhole: Arc<AtomicBool>,
    server: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    /// Starts a relay in front of `server`.
    pub async fn start(server: SocketAddr) -> Self {
        let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind relay"));
        let to_server = Arc::new(Mutex::new(Vec::new()));
        let blackhole = Arc::new(AtomicBool::new(false));
        let task = {
            let socket = Arc::clone(&socket);
            let to_server = Arc::clone(&to_server);
            let blackhole = Arc::clone(&blackhole);
            tokio::spawn(async move {
                let mut client: Option<SocketAddr> = None;
                let mut buf = vec![0u8; 65_536];
                loop {
                    let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                        return;
                    };
                    if blackhole.load(Ordering::Relaxed) {
                        continue;
                    }
                    if from == server {
                        if let Some(c) = client {
                            let _ = socket.send_to(&buf[..n], c).await;
                        }
                    } else {
                        client = Some(from);
                        to_server.lock().await.push(buf[..n].to_vec());
                        let _ = socket.send_to(&buf[..n], server).await;
                    }
                }
            })
        };
        Self {
            socket,
            to_server,
            blackhole,
            server,
            task,
        }
    }

    /// The address clients send to.
    pub fn addr(&self) -> SocketAddr {
        self.socket.local_addr().expect("relay addr")
    }

    /// Sends `datagram` to the server as if the client had sent it.
    pub async fn inject(&self, datagram: &[u8]) {
        self.socket
            .send_to(datagram, self.server)
            .await
            .expect("inject");
    }

    /// Drops every datagram in both directions from now on (or passes them again).
    pub fn set_blackhole(&self, on: bool) {
        self.blackhole.store(on, Ordering::Relaxed);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Daemon state as consecutive little-endian `u64` fields (how the test daemons snapshot).
pub fn encode_u64s(fields: &[u64]) -> netrun::Bytes {
    fields.iter().flat_map(|n| n.to_le_bytes()).collect()
}

/// The first `N` little-endian `u64` fields of `state`; `InvalidState` if it is shorter.
pub fn decode_u64s<const N: usize>(state: &[u8]) -> Result<[u64; N], netrun::DaemonError> {
    let mut fields = [0; N];
    for (i, field) in fields.iter_mut().enumerate() {
        let bytes = state
            .get(i * 8..i * 8 + 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .ok_or_else(|| netrun::DaemonError::InvalidState("short state".into()))?;
        *field = u64::from_le_bytes(bytes);
    }
    Ok(fields)
}
