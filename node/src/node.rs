//! The `Node`: a running netrun node and its builder.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use netrun::{Identity, Node};
//!
//! let a = Node::builder().identity(Identity::generate()).bind("127.0.0.1:0".parse()?).psk([7; 32]).start().await?;
//! let b = Node::builder().bind("127.0.0.1:0".parse()?).psk([7; 32]).start().await?;
//! let peer = a.connect(b.local_addr(), b.public_key()).await?;
//! a.send(peer, b"hello").await?;
//! let received = b.recv().await.expect("a datagram");
//! assert_eq!(&received.payload[..], b"hello");
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use netrun_actors::capability::{CapabilityConfig, CapabilityConfigError, CapabilityHandle};
use netrun_actors::channel::{ChannelsConfig, ChannelsHandle};
use netrun_actors::discovery::coordinator::CoordinatorConfig;
use netrun_actors::discovery::kademlia::KademliaSettings;
use netrun_actors::discovery::peer_exchange::PeerExchangeSettings;
use netrun_actors::discovery::{
    DiscoveryBackend, DiscoveryHandle, DiscoveryStatus, FoundPeer, PeerContact,
};
use netrun_actors::events::PeerEvent;
use netrun_actors::pingwave::{PingwaveStatus, SeenNode};
use netrun_actors::router::{RouteInfo, RouterMsg};
use netrun_actors::rpc::{RpcConfig, RpcHandle, RpcMsg, RpcShared, SessionDirectory};
use netrun_actors::session::SessionMsg;
use netrun_actors::session::{ConnectError, PeerInfo};
use netrun_actors::sessions::SessionsMsg;
use netrun_actors::stats::TransportSnapshot;
use netrun_actors::stream::{StreamHandle, StreamOpenError};
use netrun_actors::transport::Received;
use netrun_actors::wire::{SendError, Wire};
use netrun_messages::{CapabilitySet, EntityId, Identity, NodeId, PacketFlags, PacketKind};
use netrun_runtime::liveness::LivenessConfig;
use netrun_runtime::pingwave::PingwaveConfig;
use netrun_runtime::routing::RoutingConfig;
use netrun_runtime::stream::{StreamConfig, StreamStats};
use netrun_supervisor::ChildSpec;
use netrun_supervisor::node_tree::{self, DiscoveryTreeArgs, NodeTree, NodeTreeArgs};
use ractor::RpcReplyPort;
use ractor::rpc::CallResult;
use thiserror::Error;
use tokio::sync::{Mutex, broadcast, mpsc};
use tokio::time::Instant;
use tracing::{Instrument, info};
use zeroize::Zeroizing;

use crate::config::{DiscoveryConfig, PingwaveSettings, SessionTiming};
use crate::daemons::Daemons;

/// Inbound datagrams buffered before the node drops new ones (counted in `stats`).
pub const DEFAULT_INBOUND_CAPACITY: usize = 16 * 1024;

/// Longest a stream request (open, stats) waits for its session actor.
const STREAM_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest `connect` waits for the session layer (the handshake itself gives up sooner).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);

/// Longest `resolve` waits for a DHT lookup (each request times out after 2 s, and a
/// lookup asks a few rounds of α nodes).
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(30);

/// The PSK a node uses when none is configured. Public knowledge: it keeps development
/// meshes apart from nothing, which is why `netrun start` warns loudly when it is used.
pub const DEVELOPMENT_PSK: [u8; 32] = *b"netrun development psk, insecure";

/// Why a node could not start.
#[derive(Debug, Error)]
pub enum StartError {
    /// The session timing is invalid.
    #[error("invalid session timing: {0}")]
    Timing(String),
    /// The configuration for streams peers open is invalid.
    #[error("invalid stream accept config: {0}")]
    StreamConfig(#[from] netrun_runtime::stream::StreamConfigError),
    /// The capability configuration or the initial capability set is invalid.
    #[error(transparent)]
    Capabilities(#[from] CapabilityConfigError),
    /// The channel limits are invalid.
    #[error("invalid channel config: {0}")]
    Channels(#[from] netrun_runtime::channel::RegistryConfigError),
    /// An actor did not start (for example the UDP address could not be bound).
    #[error("{what} did not start: {}", spawn_cause(source))]
    Spawn {
        /// Which part.
        what: &'static str,
        /// Why.
        source: ractor::SpawnErr,
    },
}

/// Builds and starts a [`Node`].
#[derive(Debug)]
pub struct NodeBuilder {
    identity: Option<Identity>,
    bind: SocketAddr,
    bind_fallback: bool,
    psk: Option<[u8; 32]>,
    peers: Vec<(SocketAddr, EntityId)>,
    timing: SessionTiming,
    inbound_capacity: usize,
    control_socket: Option<PathBuf>,
    stream_accept: StreamConfig,
    rpc: RpcConfig,
    pingwave: PingwaveSettings,
    capabilities: CapabilitySet,
    discovery: DiscoveryConfig,
    backends: Vec<BackendFactory>,
    capability_config: CapabilityConfig,
    channels: ChannelsConfig,
    remote_spawns: crate::daemons::RemoteSpawns,
}

/// Builds a discovery backend's child spec once the node's discovery handle exists.
struct BackendFactory(Box<dyn FnOnce(DiscoveryHandle) -> ChildSpec + Send>);

impl BackendFactory {
    /// A child `id` driving the backend `make` builds for each incarnation.
    fn of<B, F>(id: &'static str, make: F) -> Self
    where
        B: DiscoveryBackend,
        F: Fn() -> B + Send + Sync + 'static,
    {
        Self(Box::new(move |handle| {
            node_tree::backend_spec(id, handle, make)
        }))
    }
}

impl std::fmt::Debug for BackendFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BackendFactory")
    }
}

impl Default for NodeBuilder {
    fn default() -> Self {
        Self {
            identity: None,
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            bind_fallback: false,
            psk: None,
            peers: Vec::new(),
            timing: SessionTiming::default(),
            inbound_capacity: DEFAULT_INBOUND_CAPACITY,
            control_socket: None,
            stream_accept: StreamConfig::default(),
            rpc: RpcConfig::default(),
            pingwave: PingwaveSettings::default(),
            capabilities: CapabilitySet::default(),
            discovery: DiscoveryConfig::manual(),
            backends: Vec::new(),
            capability_config: CapabilityConfig::default(),
            channels: ChannelsConfig::default(),
            remote_spawns: crate::daemons::RemoteSpawns::default(),
        }
    }
}

impl NodeBuilder {
    /// The node's identity (default: a new ephemeral one; its node id changes every run).
    #[must_use]
    pub fn identity(mut self, identity: Identity) -> Self {
        self.identity = Some(identity);
        self
    }

    /// UDP address to bind (default `127.0.0.1:0`).
    #[must_use]
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.bind = addr;
        self
    }

    /// If the bind port is taken, bind an ephemeral port instead of failing.
    #[must_use]
    pub fn bind_fallback(mut self, fallback: bool) -> Self {
        self.bind_fallback = fallback;
        self
    }

    /// The 32-byte mesh PSK (default: [`DEVELOPMENT_PSK`]).
    #[must_use]
    pub fn psk(mut self, psk: [u8; 32]) -> Self {
        self.psk = Some(psk);
        self
    }

    /// A static peer: connected at start and reconnected whenever its session ends.
    #[must_use]
    pub fn peer(mut self, addr: SocketAddr, public_key: EntityId) -> Self {
        self.peers.push((addr, public_key));
        self
    }

    /// A seed peer: reported to the discovery coordinator, which connects it (with backoff)
    /// and keeps the record of how it was found. Unlike [`peer`](Self::peer), a seed whose
    /// session ends is retried only a bounded number of times.
    #[must_use]
    pub fn seed(mut self, addr: SocketAddr, public_key: EntityId) -> Self {
        self.discovery
            .seeds
            .push(crate::config::PeerConfig { addr, public_key });
        self
    }

    /// Discovery settings (default [`DiscoveryConfig::manual`]: the coordinator and the
    /// seeds given, no peer exchange or DHT; `netrun start` uses
    /// [`DiscoveryConfig::default`]). Seeds already added with [`seed`](Self::seed) are kept.
    #[must_use]
    pub fn discovery(mut self, config: DiscoveryConfig) -> Self {
        let mut seeds = std::mem::take(&mut self.discovery.seeds);
        seeds.extend(config.seeds.iter().cloned());
        self.discovery = config;
        self.discovery.seeds = seeds;
        self
    }

    /// Runs `make()`'s backend (mDNS, MQTT, …) as a child `id` of the discovery subtree,
    /// rebuilt on every restart and reporting to the coordinator.
    #[must_use]
    pub fn discovery_backend<B, F>(mut self, id: impl Into<String>, make: F) -> Self
    where
        B: DiscoveryBackend,
        F: Fn() -> B + Send + Sync + 'static,
    {
        let id = id.into();
        self.backends.push(BackendFactory(Box::new(move |handle| {
            node_tree::backend_spec(id, handle, make)
        })));
        self
    }

    /// Heartbeat and failure-detection timing.
    #[must_use]
    pub fn session_timing(mut self, timing: SessionTiming) -> Self {
        self.timing = timing;
        self
    }

    /// Capacity of the inbound datagram queue.
    #[must_use]
    pub fn inbound_capacity(mut self, capacity: usize) -> Self {
        self.inbound_capacity = capacity.max(1);
        self
    }

    /// Serve the local control socket (for `netrun status`, `netrun peers`) at `path`.
    #[must_use]
    pub fn control_socket(mut self, path: PathBuf) -> Self {
        self.control_socket = Some(path);
        self
    }

    /// The configuration a stream gets when the peer opens it first (default
    /// [`StreamConfig::default`]: 64 KiB window; the reliability always follows the peer's
    /// first packet). Use the window the openers use.
    #[must_use]
    pub fn stream_accept_config(mut self, config: StreamConfig) -> Self {
        self.stream_accept = config;
        self
    }

    /// Limits of nRPC: pending calls, handlers in flight (total and per caller), served
    /// services, stream windows, circuit breakers (default [`RpcConfig::default`]).
    #[must_use]
    pub fn rpc_config(mut self, config: RpcConfig) -> Self {
        self.rpc = config;
        self
    }

    /// Pingwave probing: interval and hop radius, or off (default: every 2 s, 4 hops).
    /// Multi-hop routes come from pingwaves; without them a node only routes to its direct
    /// session peers.
    #[must_use]
    pub fn pingwave(mut self, settings: PingwaveSettings) -> Self {
        self.pingwave = settings;
        self
    }

    /// What this node offers (tags such as `gpu`, hardware, metadata), announced to the
    /// mesh from the start (change it later with [`Node::set_capabilities`]); placement
    /// puts a daemon only on nodes whose set matches its requirements (default: empty).
    #[must_use]
    pub fn capabilities(mut self, capabilities: CapabilitySet) -> Self {
        self.capabilities = capabilities;
        self
    }

    /// Which peers may place daemons on this node (default: any session peer); a refused
    /// peer gets `SpawnRefusal::NotPermitted` and its placement tries the next node.
    #[must_use]
    pub fn remote_spawns(mut self, policy: crate::daemons::RemoteSpawns) -> Self {
        self.remote_spawns = policy;
        self
    }

    /// Announcement cadence (minimum interval, re-announce interval, TTL) and capability
    /// index limits (default [`CapabilityConfig::default`]: 10 s, 150 s, 300 s).
    #[must_use]
    pub fn capability_config(mut self, config: CapabilityConfig) -> Self {
        self.capability_config = config;
        self
    }

    /// Channel limits and timeouts: published channels, token authorization, publish and
    /// subscribe timeouts, per-subscription queue (default [`ChannelsConfig::default`]).
    #[must_use]
    pub fn channel_config(mut self, config: ChannelsConfig) -> Self {
        self.channels = config;
        self
    }

    /// Starts the node: assembles the supervision tree (binding UDP, starting the session
    /// layer, connecting static peers, serving the control socket if asked).
    pub async fn start(self) -> Result<Node, StartError> {
        let identity = Arc::new(self.identity.unwrap_or_else(Identity::generate));
        let liveness = LivenessConfig {
            heartbeat_interval: self.timing.heartbeat_interval,
            suspect_after: self.timing.suspect_after,
            fail_after: self.timing.fail_after,
            idle_timeout: self.timing.idle_timeout,
            ..LivenessConfig::default()
        };
        liveness
            .validate()
            .map_err(|e| StartError::Timing(e.to_string()))?;
        self.stream_accept.validate()?;
        let wire = Wire::new(identity.node_id());
        wire.set_stream_accept_config(self.stream_accept);
        let (_, unused) = mpsc::channel(1);
        let accept = wire.take_stream_acceptor().unwrap_or(unused);
        let psk = Arc::new(Zeroizing::new(self.psk.unwrap_or(DEVELOPMENT_PSK)));
        let discovery_handle = DiscoveryHandle::new();
        let mut backends = self.backends;
        if let Some(mdns) = crate::lan::mdns(&self.discovery, &identity, &psk, &wire) {
            backends.push(BackendFactory::of("mdns", mdns));
        }
        if let Some(mqtt) = crate::lan::mqtt(&self.discovery, &identity, &psk, &wire) {
            backends.push(BackendFactory::of("mqtt", mqtt));
        }
        let discovery = discovery_args(
            &self.discovery,
            &self.peers,
            &psk,
            discovery_handle.clone(),
            backends,
        );
        let capabilities = CapabilityHandle::new(
            (*identity).clone(),
            self.capability_config,
            self.capabilities,
        )?;
        let channels = ChannelsHandle::new(
            identity.node_id(),
            identity.entity_id(),
            Arc::clone(&wire),
            capabilities.clone(),
            self.channels,
        )?;
        let (inbound_tx, inbound_rx) = mpsc::channel(self.inbound_capacity);
        let node_slot: Arc<OnceLock<Weak<Inner>>> = Arc::new(OnceLock::new());
        let control = self
            .control_socket
            .map(|path| (path, crate::control::service(Arc::clone(&node_slot))));
        let rpc_shared = RpcShared::new(
            identity.node_id(),
            self.rpc,
            Arc::new(crate::rpc::IndexedDirectory {
                local: identity.node_id(),
                capabilities: capabilities.clone(),
                sessions: SessionDirectory(Arc::clone(&wire)),
            }),
        );
        let tree = node_tree::spawn(NodeTreeArgs {
            identity: Arc::clone(&identity),
            psk,
            wire: Arc::clone(&wire),
            bind: self.bind,
            bind_fallback: self.bind_fallback,
            inbound: inbound_tx,
            liveness,
            static_peers: self.peers,
            control,
            rpc: Arc::clone(&rpc_shared),
            routing: RoutingConfig::default(),
            pingwave: self.pingwave.enabled.then(|| PingwaveConfig {
                interval: self.pingwave.interval,
                radius: self.pingwave.radius,
                // Three intervals: two lost waves do not cost a route.
                route_ttl: self.pingwave.interval * 3,
                ..PingwaveConfig::default()
            }),
            discovery,
            capabilities: capabilities.clone(),
            channels: channels.clone(),
        })
        .await
        .map_err(|source| StartError::Spawn {
            what: "node",
            source,
        })?;
        let daemons = match Daemons::start(
            &identity,
            capabilities.clone(),
            self.remote_spawns,
            Arc::clone(&node_slot),
            &wire,
            &tree.root,
        )
        .await
        {
            Ok(daemons) => daemons,
            Err(source) => {
                let _ = tree.root.shutdown().await;
                return Err(StartError::Spawn {
                    what: "daemon control",
                    source,
                });
            }
        };
        let local_addr = wire.local_addr().unwrap_or(self.bind);
        info!(node = %identity.node_id(), addr = %local_addr, "node started");
        let rpc_child = tree.rpc.clone();
        let rpc = RpcHandle::new(rpc_shared, move |msg: RpcMsg| rpc_child.send(msg).is_ok());
        tokio::spawn(crate::rpc::advertise_services(
            rpc.shared().watch_services(),
            capabilities.clone(),
        ));
        let inner = Arc::new(Inner {
            identity,
            wire,
            tree,
            local_addr,
            inbound: Mutex::new(inbound_rx),
            accept: Mutex::new(accept),
            started: Instant::now(),
            rpc,
            daemons,
            discovery: discovery_handle,
            capabilities,
            channels: crate::channels::NodeChannels::new(channels),
        });
        let _ = node_slot.set(Arc::downgrade(&inner));
        let sink = crate::daemons::start_output_channels(Arc::downgrade(&inner));
        inner.daemons.set_sink(Some(sink));
        Ok(Node { inner })
    }
}

/// A running node. Cheap to clone; every clone drives the same node.
#[derive(Debug, Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    identity: Arc<Identity>,
    wire: Arc<Wire>,
    tree: NodeTree,
    local_addr: SocketAddr,
    inbound: Mutex<mpsc::Receiver<Received>>,
    accept: Mutex<mpsc::Receiver<StreamHandle>>,
    started: Instant,
    rpc: RpcHandle,
    daemons: Arc<Daemons>,
    discovery: DiscoveryHandle,
    capabilities: CapabilityHandle,
    channels: crate::channels::NodeChannels,
}

impl Node {
    pub(crate) fn from_inner(inner: Arc<Inner>) -> Self {
        Self { inner }
    }

    /// The capability fold's state (index, local announcer).
    pub(crate) fn capability_state(&self) -> &CapabilityHandle {
        &self.inner.capabilities
    }

    /// The channel state and the control socket's subscriptions.
    pub(crate) fn channel_state(&self) -> &crate::channels::NodeChannels {
        &self.inner.channels
    }

    /// The shared data path.
    pub(crate) fn wire(&self) -> &Arc<Wire> {
        &self.inner.wire
    }

    /// The nRPC actor's handle (the API is in [`crate::rpc`]).
    pub(crate) fn rpc_handle(&self) -> &RpcHandle {
        &self.inner.rpc
    }

    /// The node's daemon registry (the API is in [`crate::daemons`]).
    pub(crate) fn daemon_registry(&self) -> &Arc<Daemons> {
        &self.inner.daemons
    }

    /// Handles on the node's supervision tree (advanced use: add children to a subtree,
    /// resolve an actor's current incarnation, inject faults in tests).
    pub fn supervision(&self) -> &NodeTree {
        &self.inner.tree
    }

    /// The live supervision tree: every supervisor and child with its state, restart
    /// count, generation and last exit reason; the Sessions actor's session children are
    /// listed under it.
    pub async fn tree(&self) -> serde_json::Value {
        let mut tree = match self.inner.tree.root.tree().await {
            Ok(snapshot) => serde_json::to_value(snapshot).unwrap_or_default(),
            Err(e) => return serde_json::json!({ "error": e.to_string() }),
        };
        let sessions: Vec<serde_json::Value> = self
            .peers()
            .await
            .iter()
            .map(|p| {
                serde_json::json!({
                    "id": format!("session/{}", p.node),
                    "state": format!("{:?}", p.state).to_lowercase(),
                })
            })
            .collect();
        if let Some(obj) = tree.as_object_mut() {
            obj.insert("sessions".into(), serde_json::Value::Array(sessions));
        }
        tree
    }

    /// A builder with defaults.
    pub fn builder() -> NodeBuilder {
        NodeBuilder::default()
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.inner.identity.node_id()
    }

    /// This node's public key.
    pub fn public_key(&self) -> EntityId {
        self.inner.identity.entity_id()
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// How long the node has been running.
    pub fn uptime(&self) -> Duration {
        self.inner.started.elapsed()
    }

    /// Opens a session with the node at `addr` whose public key is `public_key`, and waits
    /// until it is established (or has failed: wrong PSK, wrong identity, no answer).
    pub async fn connect(
        &self,
        addr: SocketAddr,
        public_key: EntityId,
    ) -> Result<NodeId, ConnectError> {
        self.open_session(|reply| SessionsMsg::Connect {
            addr,
            peer: public_key,
            reply,
        })
        .await
    }

    /// Opens a session with the node whose public key is `public_key` through relays: no
    /// address needed, only a route (learned from pingwaves) toward it. Handshake and
    /// session packets go to the current next hop, so a reroute applies at once; relays
    /// forward them without being able to open them. Waits until the session is
    /// established, or fails with [`ConnectError::Unreachable`] when no answer comes.
    pub async fn connect_routed(&self, public_key: EntityId) -> Result<NodeId, ConnectError> {
        self.open_session(|reply| SessionsMsg::ConnectRouted {
            peer: public_key,
            reply,
        })
        .await
    }

    /// Sends the sessions actor a connect request built by `connect` and waits up to
    /// [`CONNECT_TIMEOUT`] for the outcome; a sessions actor that is gone or does not
    /// answer reads as [`ConnectError::Closed`].
    async fn open_session(
        &self,
        connect: impl FnOnce(RpcReplyPort<Result<NodeId, ConnectError>>) -> SessionsMsg,
    ) -> Result<NodeId, ConnectError> {
        self.inner
            .tree
            .sessions
            .call(connect, Some(CONNECT_TIMEOUT))
            .await
            .unwrap_or(Err(ConnectError::Closed))
    }

    /// Every installed route: destination, next hop, metric, source, remaining lifetime.
    pub async fn routes(&self) -> Vec<RouteInfo> {
        self.inner
            .tree
            .router
            .call(RouterMsg::Routes, Some(Duration::from_secs(5)))
            .await
            .unwrap_or_default()
    }

    /// Every node this node's pingwaves have heard from: hops, the neighbour the path goes
    /// through, path RTT (as of the last wave interval; empty when pingwaves are off).
    pub fn pingwave_seen(&self) -> Vec<SeenNode> {
        self.inner
            .tree
            .pingwave
            .as_ref()
            .map(|(_, view)| view.seen())
            .unwrap_or_default()
    }

    /// The pingwave actor's counters (`None` when pingwaves are off).
    pub fn pingwave_status(&self) -> Option<PingwaveStatus> {
        let (_, view) = self.inner.tree.pingwave.as_ref()?;
        Some(view.status())
    }

    /// Every peer with a session: id, address, state, RTT.
    pub async fn peers(&self) -> Vec<PeerInfo> {
        self.inner
            .tree
            .sessions
            .call(SessionsMsg::Peers, Some(Duration::from_secs(5)))
            .await
            .unwrap_or_default()
    }

    /// Every peer discovery knows of (sessions included): how it was found, whether it is
    /// connected, and the connect attempts and last error if not.
    pub async fn discovered(&self) -> Vec<FoundPeer> {
        self.inner.discovery.peers().await
    }

    /// What `netrun discovery` shows: each backend's status and the coordinator's counters.
    pub async fn discovery_status(&self) -> DiscoveryStatus {
        self.inner.discovery.status().await
    }

    /// Resolves `node` to a contact (key and addresses): from its session if there is one,
    /// else from the contact record it published in the DHT. `None` if neither has it
    /// (or the DHT is off). A found contact is also handed to the coordinator, which
    /// connects it; the handshake proves the key.
    pub async fn resolve(&self, node: NodeId) -> Option<PeerContact> {
        if let Some(keys) = self.inner.wire.peer(node) {
            return Some(PeerContact {
                node,
                public_key: keys.entity,
                addrs: vec![keys.addr],
            });
        }
        self.inner.discovery.resolve(node, RESOLVE_TIMEOUT).await
    }

    /// Sends one datagram to `peer`, sealed end to end. Best effort: UDP may lose it.
    ///
    /// Inside a `tracing` span, the send runs in a `netrun.datagram.send` child span and,
    /// when OpenTelemetry export is on, carries that span's trace context to the peer
    /// (see [`Node::recv_traced`]). Outside any span it does neither.
    pub async fn send(&self, peer: NodeId, payload: &[u8]) -> Result<(), SendError> {
        let wire = &self.inner.wire;
        if tracing::Span::current().is_disabled() {
            return wire
                .send(peer, PacketKind::Data, 0, PacketFlags::NONE, payload, None)
                .await;
        }
        let span = tracing::info_span!(
            "netrun.datagram.send",
            otel.kind = "producer",
            node = %self.node_id(),
            peer = %peer,
            size = crate::telemetry::size_field(payload.len()),
        );
        let trace = crate::telemetry::outbound_context(&span);
        wire.send(
            peer,
            PacketKind::Data,
            0,
            PacketFlags::NONE,
            payload,
            trace.as_ref(),
        )
        .instrument(span)
        .await
    }

    /// Sends several datagrams to `peer` in one batch (one key lookup, no yield between
    /// datagrams unless the socket is full). Each is sealed separately; UDP may lose any.
    pub async fn send_many(&self, peer: NodeId, payloads: &[&[u8]]) -> Result<(), SendError> {
        self.inner
            .wire
            .send_batch(peer, PacketKind::Data, 0, PacketFlags::NONE, payloads)
            .await
    }

    /// The next datagram received from any peer; `None` after shutdown.
    ///
    /// The sender's trace context, if any, is in [`Received::trace`]; use
    /// [`Node::recv_traced`] to continue that trace here.
    pub async fn recv(&self) -> Option<Received> {
        self.inner.inbound.lock().await.recv().await
    }

    /// Like [`Node::recv`], plus the span to handle the datagram in.
    ///
    /// For a datagram sent inside a traced span, the span is `netrun.datagram.receive`
    /// (fields `node`, `peer`, `size`) and its OpenTelemetry parent is the sender's
    /// `netrun.datagram.send` span, so work done while it is entered joins the sender's
    /// trace. For any other datagram it is [`tracing::Span::none`].
    pub async fn recv_traced(&self) -> Option<(Received, tracing::Span)> {
        let received = self.recv().await?;
        let span = crate::telemetry::receive_span(self.node_id(), &received);
        Some((received, span))
    }

    /// Opens stream `id` with `peer` (which must have a session).
    ///
    /// The caller picks the id. The peer learns of the stream from its first segment and
    /// gets it from [`Node::accept_stream`]; if both sides open the same id, they share one
    /// stream. A convention that avoids that: the side that initiated the session uses odd
    /// ids, the other even ids (see `PeerInfo::initiator`). Both sides should use the same
    /// reliability and window.
    pub async fn open_stream(
        &self,
        peer: NodeId,
        id: u64,
        config: StreamConfig,
    ) -> Result<StreamHandle, StreamOpenError> {
        config.validate()?;
        let keys = self
            .inner
            .wire
            .peer(peer)
            .ok_or(StreamOpenError::NotConnected(peer))?;
        let open = |reply| SessionMsg::StreamOpen { id, config, reply };
        match keys.session.call(open, Some(STREAM_CALL_TIMEOUT)).await {
            Ok(CallResult::Success(result)) => result,
            _ => Err(StreamOpenError::SessionClosed),
        }
    }

    /// The next stream a peer opened; `None` after shutdown. Streams wait in a queue of
    /// [`netrun_actors::stream::ACCEPT_BACKLOG`]; when it is full, new ones are refused
    /// (reset) and counted in `streams_refused`.
    pub async fn accept_stream(&self) -> Option<StreamHandle> {
        self.inner.accept.lock().await.recv().await
    }

    /// The statistics of stream `id` with `peer`, while the session holds it.
    pub async fn stream_stats(&self, peer: NodeId, id: u64) -> Option<StreamStats> {
        let keys = self.inner.wire.peer(peer)?;
        let ask = |reply| SessionMsg::StreamStats { id, reply };
        match keys.session.call(ask, Some(STREAM_CALL_TIMEOUT)).await {
            Ok(CallResult::Success(stats)) => stats,
            _ => None,
        }
    }

    /// Every open stream of every session: `(peer, stream id, statistics)`.
    pub async fn streams(&self) -> Vec<(NodeId, u64, StreamStats)> {
        let mut all = Vec::new();
        for keys in self.inner.wire.peers() {
            let list = keys
                .session
                .call(SessionMsg::StreamList, Some(STREAM_CALL_TIMEOUT))
                .await;
            if let Ok(CallResult::Success(list)) = list {
                all.extend(list.into_iter().map(|(id, s)| (keys.node, id, s)));
            }
        }
        all.sort_by_key(|(peer, id, _)| (*peer, *id));
        all
    }

    /// Subscribes to peer events (up, suspected, recovered, down).
    pub fn events(&self) -> broadcast::Receiver<PeerEvent> {
        self.inner.wire.subscribe()
    }

    /// Transport and session counters.
    pub fn stats(&self) -> TransportSnapshot {
        self.inner.wire.stats().snapshot()
    }

    /// Test hook: drops each sealed packet this node sends with `probability` (seeded; 0
    /// turns it off), as if the network lost it; counted in `dropped_injected`. For loss
    /// tests on loopback, where the kernel does not lose.
    #[doc(hidden)]
    pub fn set_loss(&self, probability: f64, seed: u64) {
        self.inner.wire.set_loss(probability, seed);
    }

    /// Stops the node: the supervision tree shuts down in reverse start order (control,
    /// daemons, …, sessions — whose keys are withdrawn — then the transport).
    pub async fn shutdown(&self) {
        self.inner.daemons.begin_shutdown();
        if let Err(e) = self.inner.tree.root.shutdown().await {
            tracing::debug!(error = %e, "shutdown");
        }
    }
}

/// The discovery subtree for `config`: static peers are seeds too, and the DHT namespace
/// is the mesh fingerprint of `psk`.
fn discovery_args(
    config: &DiscoveryConfig,
    static_peers: &[(SocketAddr, EntityId)],
    psk: &[u8; 32],
    handle: DiscoveryHandle,
    backends: Vec<BackendFactory>,
) -> DiscoveryTreeArgs {
    let mut args = DiscoveryTreeArgs::manual(handle.clone());
    args.coordinator = CoordinatorConfig {
        auto_connect_limit: config.auto_connect_limit,
        ..CoordinatorConfig::default()
    };
    args.seeds = static_peers
        .iter()
        .copied()
        .chain(config.seeds.iter().map(|s| (s.addr, s.public_key)))
        .collect();
    args.reannounce = config.reannounce;
    if config.peer_exchange.enabled {
        args.peer_exchange = Some(PeerExchangeSettings {
            interval: config.peer_exchange.interval,
            ..PeerExchangeSettings::default()
        });
    }
    if config.dht.enabled {
        let mut dht = KademliaSettings::new(netrun_actors::discovery::mesh_fingerprint(psk));
        dht.record_ttl = config.dht.record_ttl;
        dht.republish_interval = config.dht.republish_interval;
        dht.advertise = config.advertise.clone();
        args.dht = Some(dht);
    }
    args.backends = backends
        .into_iter()
        .map(|factory| (factory.0)(handle.clone()))
        .collect();
    args
}

/// The readable cause of a spawn error: ractor's `StartupFailed` display hides the actor's
/// own error behind "panicked during startup".
fn spawn_cause(error: &ractor::SpawnErr) -> String {
    match error {
        ractor::SpawnErr::StartupFailed(inner) => inner.to_string(),
        other => other.to_string(),
    }
}
