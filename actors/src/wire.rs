//! The shared data path: the socket, the keys session actors publish, the routing snapshot
//! the router publishes, and the counters.
//!
//! [`Wire`] is what lets per-packet work skip mailboxes. Session actors insert and remove
//! [`PeerKeys`]; the router replaces the [`RoutingSnapshot`]; the transport's receive loop
//! and [`Wire::send`] read both. Keys and snapshots are replaced as a whole (a new `Arc`),
//! so a reader never sees half a rotation or half a table.
//!
//! Where a sealed packet goes: a direct session's packets go to its [`PeerKeys::addr`]
//! with no lookup; a routed session's ([`PeerKeys::routed`]) go to the address of the
//! current next hop toward the peer, looked up in the snapshot on every send, so a reroute
//! applies to the very next packet.

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use arc_swap::{ArcSwap, ArcSwapOption};
use bytes::Bytes;
use dashmap::DashMap;
use netrun_messages::envelope::{EncodeError, Envelope, Subprotocol, TRACE_CONTEXT_LEN};
use netrun_messages::header::{DEFAULT_TTL, HEADER_LEN, MAX_PAYLOAD_LEN, TAG_LEN};
use netrun_messages::{EntityId, Header, NodeId, PacketFlags, PacketKind, TraceContext};
use netrun_runtime::crypto::{RxKey, SealError, TxKey, seal_datagram, seal_in_place};
use netrun_runtime::routing::RoutingSnapshot;
use ractor::ActorRef;
use thiserror::Error;
use tokio::net::UdpSocket;
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;

use crate::events::{EVENT_CAPACITY, PeerEvent};
use crate::router::RouterMsg;
use crate::session::SessionMsg;
use crate::sessions::SessionsMsg;
use crate::stats::TransportStats;
use crate::stream::{ACCEPT_BACKLOG, StreamHandle};

/// One direction pair of session keys from one handshake.
pub struct KeyPair {
    /// Sealing key and counter.
    pub tx: TxKey,
    /// Opening key and replay window.
    pub rx: RxKey,
    /// Which handshake produced it (unique per wire).
    pub id: u64,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPair")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Keys and address of one established session, as the data path needs them.
///
/// `next` holds the keys of a rotation the peer started (a fresh handshake from the same
/// static key) that has not yet been confirmed: the receive loop tries them when the
/// current keys refuse a packet, and the first packet they open promotes them. Until then
/// the confirmed keys stay in use, so a stale or replayed handshake can never cut a live
/// session.
pub struct PeerKeys {
    /// The peer's node id.
    pub node: NodeId,
    /// The peer's public key.
    pub entity: EntityId,
    /// Where to send, for a direct session. For a routed session: the neighbour the
    /// handshake went through (informational; sends follow the current route).
    pub addr: SocketAddr,
    /// Whether the peer is reached through relays: packets go to the current next hop
    /// toward it rather than to `addr`, and it is never used as a next hop itself.
    pub routed: bool,
    /// The keys in use.
    pub pair: Arc<KeyPair>,
    /// Keys of an unconfirmed rotation, if one is pending.
    pub next: ArcSwapOption<KeyPair>,
    /// The session actor that owns these keys.
    pub session: ActorRef<SessionMsg>,
    /// Incremented on every rotation of this peer's session.
    pub epoch: u64,
    /// When an authenticated packet was last received (ms on the wire clock).
    pub last_heard_ms: AtomicU64,
    /// Whether the peer has proven it holds these keys (any authenticated packet).
    pub confirmed: AtomicBool,
}

impl PeerKeys {
    /// Records an authenticated packet.
    #[inline]
    pub fn touch(&self, now_ms: u64) {
        self.last_heard_ms.store(now_ms, Ordering::Relaxed);
        if !self.confirmed.load(Ordering::Relaxed) {
            self.confirmed.store(true, Ordering::Release);
        }
    }
}

impl std::fmt::Debug for PeerKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerKeys")
            .field("node", &self.node)
            .field("addr", &self.addr)
            .field("routed", &self.routed)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

/// Why a datagram could not be sent.
#[derive(Debug, Error)]
pub enum SendError {
    /// There is no established session with that node.
    #[error("no session with node {0}")]
    NotConnected(NodeId),
    /// The session is routed and the routing table has no next hop toward the node now.
    #[error("no route to node {0}")]
    NoRoute(NodeId),
    /// The payload is larger than one datagram carries.
    #[error("payload of {len} bytes exceeds the {max}-byte datagram limit")]
    TooLarge {
        /// The payload size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The session's keys are exhausted; it is rekeying.
    #[error("session keys need rotation: {0}")]
    Seal(#[from] SealError),
    /// The transport is not running.
    #[error("the transport is not running")]
    Closed,
    /// The socket refused the datagram.
    #[error("socket: {0}")]
    Io(#[from] io::Error),
    /// The control message could not be encoded.
    #[error("encode: {0}")]
    Encode(#[from] EncodeError),
}

/// A control envelope a session peer sent, for the subsystem serving its subprotocol.
///
/// The receive loop opens the packet, decodes the envelope and hands it here without
/// copying the body.
#[derive(Debug, Clone)]
pub struct Inbound {
    /// The authenticated sender.
    pub peer: NodeId,
    /// The subprotocol of the body.
    pub subprotocol: Subprotocol,
    /// The sender's trace context, if its span was traced.
    pub trace: Option<TraceContext>,
    /// The envelope body (subprotocol-specific encoding).
    pub body: Bytes,
}

/// Handler slots: one per subprotocol id high byte (ids are `0xNN00`).
const HANDLER_SLOTS: usize = 32;

/// Queue capacity a subsystem should give its inbound envelope queue unless it has a
/// reason to differ: a burst of one receive batch per peer for a few dozen peers.
pub const INBOUND_CAPACITY: usize = 1024;

/// Stream ids with this bit set belong to node subsystems (channel fan-out, …), never to
/// the application: [`Wire::serve_streams`] routes them by class, and the application's
/// accept queue never sees them. Applications choose ids below it.
pub const SUBSYSTEM_STREAM_BIT: u64 = 1 << 63;
/// Subsystem stream classes: bits 56..=62 of the id.
const STREAM_CLASSES: usize = 128;

/// The subsystem class of stream `id`, if it is a subsystem stream.
pub fn stream_class(id: u64) -> Option<u8> {
    // Seven bits: the cast keeps them all.
    (id & SUBSYSTEM_STREAM_BIT != 0).then_some(((id >> 56) & 0x7F) as u8)
}

/// A subsystem stream id of class `class` (seven bits) carrying `low` (56 bits, the
/// subsystem's own numbering).
pub fn subsystem_stream_id(class: u8, low: u64) -> u64 {
    SUBSYSTEM_STREAM_BIT | (u64::from(class & 0x7F) << 56) | (low & ((1 << 56) - 1))
}

/// The state shared by the transport, the session actors and the node handle.
#[derive(Debug)]
pub struct Wire {
    local: NodeId,
    socket: ArcSwapOption<UdpSocket>,
    peers: DashMap<NodeId, Arc<PeerKeys>>,
    /// Addresses of direct session peers: the senders this node relays for.
    neighbours: DashMap<SocketAddr, NodeId>,
    routes: ArcSwap<RoutingSnapshot>,
    router: ArcSwapOption<ActorRef<RouterMsg>>,
    stats: TransportStats,
    origin: Instant,
    events: broadcast::Sender<PeerEvent>,
    epochs: AtomicU64,
    sessions: ArcSwapOption<ActorRef<SessionsMsg>>,
    bound: std::sync::Mutex<Option<SocketAddr>>,
    receiver: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    accept_tx: mpsc::Sender<StreamHandle>,
    accept_rx: std::sync::Mutex<Option<mpsc::Receiver<StreamHandle>>>,
    stream_accept: std::sync::Mutex<netrun_runtime::stream::StreamConfig>,
    loss: LossHook,
    handlers: [ArcSwapOption<mpsc::Sender<Inbound>>; HANDLER_SLOTS],
    /// Accept queues of subsystem stream classes (ids with [`SUBSYSTEM_STREAM_BIT`]).
    stream_classes: [ArcSwapOption<mpsc::Sender<StreamHandle>>; STREAM_CLASSES],
}

/// The test-only send-side loss injector: a drop threshold and a splitmix64 state.
#[derive(Debug, Default)]
struct LossHook {
    /// Drop when the next random `u64` is below this; 0 disables the hook.
    threshold: AtomicU64,
    state: AtomicU64,
}

impl LossHook {
    /// Whether to drop the next sealed packet.
    #[inline]
    fn drop_next(&self) -> bool {
        let threshold = self.threshold.load(Ordering::Relaxed);
        if threshold == 0 {
            return false;
        }
        let mut z = self
            .state
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        z < threshold
    }
}

thread_local! {
    /// One send buffer per thread: sealing never allocates on the fast path.
    static SEND_BUF: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(netrun_messages::header::MAX_PACKET_LEN));
}

impl Wire {
    /// A wire for the node `local`, with no socket yet.
    pub fn new(local: NodeId) -> Arc<Self> {
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        let (accept_tx, accept_rx) = mpsc::channel(ACCEPT_BACKLOG);
        Arc::new(Self {
            local,
            socket: ArcSwapOption::empty(),
            peers: DashMap::new(),
            neighbours: DashMap::new(),
            routes: ArcSwap::from_pointee(RoutingSnapshot::default()),
            router: ArcSwapOption::empty(),
            stats: TransportStats::default(),
            origin: Instant::now(),
            events,
            epochs: AtomicU64::new(0),
            sessions: ArcSwapOption::empty(),
            bound: std::sync::Mutex::new(None),
            receiver: std::sync::Mutex::new(None),
            accept_tx,
            accept_rx: std::sync::Mutex::new(Some(accept_rx)),
            stream_accept: std::sync::Mutex::new(netrun_runtime::stream::StreamConfig::default()),
            loss: LossHook::default(),
            handlers: std::array::from_fn(|_| ArcSwapOption::empty()),
            stream_classes: std::array::from_fn(|_| ArcSwapOption::empty()),
        })
    }

    /// Routes every control envelope of `subprotocol` that session peers send to `queue`
    /// (replacing any earlier handler). The queue is bounded; an envelope that finds it
    /// full is dropped and counted in `dropped_handler_full` (policy: drop newest).
    /// `STREAM` envelopes belong to sessions and cannot be served here.
    pub fn serve(&self, subprotocol: Subprotocol, queue: mpsc::Sender<Inbound>) {
        if let Some(slot) = Self::slot(subprotocol).and_then(|i| self.handlers.get(i)) {
            slot.store(Some(Arc::new(queue)));
        }
    }

    /// Stops routing `subprotocol` envelopes (they are then dropped and counted in
    /// `dropped_no_handler`).
    pub fn unserve(&self, subprotocol: Subprotocol) {
        if let Some(slot) = Self::slot(subprotocol).and_then(|i| self.handlers.get(i)) {
            slot.store(None);
        }
    }

    fn slot(subprotocol: Subprotocol) -> Option<usize> {
        if subprotocol == Subprotocol::STREAM || subprotocol.0 & 0xFF != 0 {
            return None;
        }
        let slot = usize::from(subprotocol.0 >> 8);
        (slot < HANDLER_SLOTS).then_some(slot)
    }

    /// Hands one decoded envelope from `peer` to its subprotocol's handler. `payload` is
    /// the packet plaintext the envelope was decoded from (the body is sliced, not copied).
    pub(crate) fn dispatch(&self, peer: NodeId, envelope: &Envelope<'_>, payload: &Bytes) {
        let handler = Self::slot(envelope.subprotocol)
            .and_then(|i| self.handlers.get(i))
            .and_then(|slot| slot.load_full());
        let Some(handler) = handler else {
            TransportStats::bump(&self.stats.dropped_no_handler);
            return;
        };
        let inbound = Inbound {
            peer,
            subprotocol: envelope.subprotocol,
            trace: envelope.trace,
            body: payload.slice_ref(envelope.body),
        };
        if handler.try_send(inbound).is_err() {
            TransportStats::bump(&self.stats.dropped_handler_full);
        }
    }

    /// Sends one control envelope to a session peer: `body` wrapped for `subprotocol`
    /// (with the trace context, if given) in a sealed `Control` packet.
    pub async fn send_envelope(
        &self,
        peer: NodeId,
        subprotocol: Subprotocol,
        trace: Option<TraceContext>,
        body: &[u8],
    ) -> Result<(), SendError> {
        let envelope = Envelope::new(subprotocol, trace, body)?.to_vec();
        self.send(
            peer,
            PacketKind::Control,
            0,
            PacketFlags::RELIABLE,
            &envelope,
            None,
        )
        .await
    }

    /// Takes the receiving end of the queue of streams peers opened (once; `None` after).
    /// The queue holds [`ACCEPT_BACKLOG`] streams; a stream that finds it full is refused
    /// (reset) and counted in `streams_refused`.
    pub fn take_stream_acceptor(&self) -> Option<mpsc::Receiver<StreamHandle>> {
        self.accept_rx.lock().ok().and_then(|mut rx| rx.take())
    }

    /// Routes every stream a peer opens with an id of subsystem class `class` (see
    /// [`subsystem_stream_id`]) to `queue` instead of the application's accept queue
    /// (replacing any earlier handler). A stream that finds the queue full, or a class
    /// nobody serves, is refused (reset) and counted in `streams_refused`.
    pub fn serve_streams(&self, class: u8, queue: mpsc::Sender<StreamHandle>) {
        if let Some(slot) = self.stream_classes.get(usize::from(class)) {
            slot.store(Some(Arc::new(queue)));
        }
    }

    /// Stops routing streams of subsystem class `class` (they are then refused).
    pub fn unserve_streams(&self, class: u8) {
        if let Some(slot) = self.stream_classes.get(usize::from(class)) {
            slot.store(None);
        }
    }

    /// Hands a stream a peer opened to whoever accepts its id: the application's queue, or
    /// the subsystem serving its class. Returns whether it was taken (else it is dropped,
    /// which resets it).
    pub(crate) fn accept_stream(&self, handle: StreamHandle) -> bool {
        match stream_class(handle.id()) {
            None => self.accept_tx.try_send(handle).is_ok(),
            Some(class) => self
                .stream_classes
                .get(usize::from(class))
                .and_then(ArcSwapOption::load_full)
                .is_some_and(|queue| queue.try_send(handle).is_ok()),
        }
    }

    /// The configuration a session gives a stream the peer opens (its reliability comes
    /// from the first packet). Sessions read it when they start.
    pub fn set_stream_accept_config(&self, config: netrun_runtime::stream::StreamConfig) {
        if let Ok(mut slot) = self.stream_accept.lock() {
            *slot = config;
        }
    }

    pub(crate) fn stream_accept_config(&self) -> netrun_runtime::stream::StreamConfig {
        self.stream_accept.lock().map(|c| *c).unwrap_or_default()
    }

    /// Test hook: drops each sealed packet this node sends with `probability` (0 turns it
    /// off), drawing from a generator seeded with `seed`. The packet is sealed first (its
    /// counter is used), then not handed to the socket, exactly as if the network lost it;
    /// `dropped_injected` counts it. Handshake datagrams are never dropped.
    #[doc(hidden)]
    pub fn set_loss(&self, probability: f64, seed: u64) {
        let p = probability.clamp(0.0, 1.0);
        // u64::MAX as f64 rounds up to 2^64; the cast back saturates, which is what p = 1 means.
        let threshold = (p * u64::MAX as f64) as u64;
        self.loss.state.store(seed, Ordering::Relaxed);
        self.loss.threshold.store(threshold, Ordering::Relaxed);
    }

    /// This node's id.
    pub fn local(&self) -> NodeId {
        self.local
    }

    /// Milliseconds since the wire was created (monotonic; follows tokio's paused clock).
    pub fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The instant `ms` milliseconds after the wire was created.
    pub fn instant_of(&self, ms: u64) -> Instant {
        self.origin + std::time::Duration::from_millis(ms)
    }

    /// The Sessions actor, where handshake datagrams go (set while it runs).
    pub fn sessions(&self) -> Option<Arc<ActorRef<SessionsMsg>>> {
        self.sessions.load_full()
    }

    pub(crate) fn set_sessions(&self, sessions: Option<ActorRef<SessionsMsg>>) {
        self.sessions.store(sessions.map(Arc::new));
    }

    /// The router actor, where route offers go (set while it runs).
    pub fn router(&self) -> Option<Arc<ActorRef<RouterMsg>>> {
        self.router.load_full()
    }

    pub(crate) fn set_router(&self, router: Option<ActorRef<RouterMsg>>) {
        self.router.store(router.map(Arc::new));
    }

    /// The routing snapshot the router published last (empty before it first runs).
    #[inline]
    pub fn routes(&self) -> Arc<RoutingSnapshot> {
        self.routes.load_full()
    }

    pub(crate) fn set_routes(&self, snapshot: RoutingSnapshot) {
        self.routes.store(Arc::new(snapshot));
    }

    /// The address of the direct session neighbour `node`, if it is one.
    #[inline]
    pub fn neighbour_addr(&self, node: NodeId) -> Option<SocketAddr> {
        let keys = self.peers.get(&node)?;
        (!keys.routed).then_some(keys.addr)
    }

    /// Whether `addr` is a direct session neighbour's address (a sender this node relays for).
    #[inline]
    pub fn is_neighbour(&self, addr: SocketAddr) -> bool {
        self.neighbours.contains_key(&addr)
    }

    /// Where a packet for `dst` goes next: the address of the next hop the current
    /// snapshot names, if that hop is a direct neighbour.
    #[inline]
    pub fn next_hop_addr(&self, dst: NodeId) -> Option<SocketAddr> {
        let hop = self.routes.load().lookup(dst)?;
        self.neighbour_addr(hop)
    }

    /// Where `keys`' packets go: its address for a direct session (no lookup), the next
    /// hop's for a routed one.
    #[inline]
    fn target(&self, keys: &PeerKeys) -> Result<SocketAddr, SendError> {
        if !keys.routed {
            return Ok(keys.addr);
        }
        self.next_hop_addr(keys.node)
            .ok_or(SendError::NoRoute(keys.node))
    }

    /// A key epoch no other session of this wire has used.
    pub(crate) fn next_epoch(&self) -> u64 {
        self.epochs.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The current socket, if the transport is running.
    pub fn socket(&self) -> Option<Arc<UdpSocket>> {
        self.socket.load_full()
    }

    pub(crate) fn set_socket(&self, socket: Option<Arc<UdpSocket>>) {
        if let Some(addr) = socket.as_ref().and_then(|s| s.local_addr().ok()) {
            if let Ok(mut bound) = self.bound.lock() {
                *bound = Some(addr);
            }
        }
        self.socket.store(socket);
    }

    /// Records the running receive task, so that whoever binds next can stop it first.
    pub(crate) fn set_receiver(&self, task: tokio::task::JoinHandle<()>) {
        if let Ok(mut slot) = self.receiver.lock() {
            if let Some(old) = slot.replace(task) {
                old.abort();
            }
        }
    }

    /// Stops the receive task of a previous transport incarnation (a killed actor never
    /// ran its cleanup) and waits until it, and its socket, are gone.
    pub(crate) async fn stop_receiver(&self) {
        let task = self.receiver.lock().ok().and_then(|mut slot| slot.take());
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
        self.socket.store(None);
    }

    /// The address a previous transport incarnation bound, so a restart keeps the port
    /// its peers know.
    pub(crate) fn previously_bound(&self) -> Option<SocketAddr> {
        self.bound.lock().ok().and_then(|b| *b)
    }

    /// The counters.
    pub fn stats(&self) -> &TransportStats {
        &self.stats
    }

    /// The keys of an established session.
    #[inline]
    pub fn peer(&self, node: NodeId) -> Option<Arc<PeerKeys>> {
        self.peers.get(&node).map(|e| Arc::clone(e.value()))
    }

    /// Every established session.
    pub fn peers(&self) -> Vec<Arc<PeerKeys>> {
        self.peers.iter().map(|e| Arc::clone(e.value())).collect()
    }

    /// How many sessions are established.
    pub fn session_count(&self) -> usize {
        self.peers.len()
    }

    pub(crate) fn publish(&self, keys: Arc<PeerKeys>) {
        let (node, addr, routed) = (keys.node, keys.addr, keys.routed);
        if let Some(old) = self.peers.insert(node, keys) {
            if old.addr != addr || routed {
                self.forget_neighbour(&old);
            }
        }
        if !routed {
            self.neighbours.insert(addr, node);
        }
    }

    /// Removes `node`'s keys if they are still the given epoch's (a newer rotation stays).
    pub(crate) fn withdraw(&self, node: NodeId, epoch: u64) {
        if let Some((_, old)) = self.peers.remove_if(&node, |_, keys| keys.epoch == epoch) {
            self.forget_neighbour(&old);
        }
    }

    /// Removes `node`'s keys if they belong to the session actor `actor` (used when that
    /// actor died without cleaning up). Returns whether anything was removed.
    pub(crate) fn withdraw_session(&self, node: NodeId, actor: ractor::ActorId) -> bool {
        match self
            .peers
            .remove_if(&node, |_, keys| keys.session.get_id() == actor)
        {
            Some((_, old)) => {
                self.forget_neighbour(&old);
                true
            }
            None => false,
        }
    }

    /// Removes `old`'s address from the neighbour set, unless another direct session
    /// shares it (two sessions behind one address: a NAT, or a tampered hop count).
    fn forget_neighbour(&self, old: &PeerKeys) {
        if old.routed
            || self
                .neighbours
                .remove_if(&old.addr, |_, n| *n == old.node)
                .is_none()
        {
            return;
        }
        let other = self
            .peers
            .iter()
            .find(|k| !k.routed && k.addr == old.addr && k.node != old.node)
            .map(|k| k.node);
        if let Some(other) = other {
            self.neighbours.insert(old.addr, other);
        }
    }

    /// The bound UDP address, while the transport runs.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.socket().and_then(|s| s.local_addr().ok())
    }

    /// Subscribes to peer events.
    pub fn subscribe(&self) -> broadcast::Receiver<PeerEvent> {
        self.events.subscribe()
    }

    pub(crate) fn emit(&self, event: PeerEvent) {
        // No subscriber is not an error: events are advisory.
        let _ = self.events.send(event);
    }

    /// Seals `payload` for `peer` and sends it, without any actor hop.
    ///
    /// With a trace context, the plaintext is the 25-byte context followed by the payload
    /// and the header carries [`PacketFlags::TRACED`].
    pub async fn send(
        &self,
        peer: NodeId,
        kind: PacketKind,
        stream: u64,
        flags: PacketFlags,
        payload: &[u8],
        trace: Option<&TraceContext>,
    ) -> Result<(), SendError> {
        let max = if trace.is_some() {
            MAX_PAYLOAD_LEN - TRACE_CONTEXT_LEN
        } else {
            MAX_PAYLOAD_LEN
        };
        if payload.len() > max {
            return Err(SendError::TooLarge {
                len: payload.len(),
                max,
            });
        }
        let keys = self.peer(peer).ok_or(SendError::NotConnected(peer))?;
        self.send_traced(&keys, kind, stream, flags, payload, trace)
            .await
    }

    /// Seals and sends with known keys.
    pub async fn send_with(
        &self,
        keys: &PeerKeys,
        kind: PacketKind,
        stream: u64,
        flags: PacketFlags,
        payload: &[u8],
    ) -> Result<(), SendError> {
        self.send_traced(keys, kind, stream, flags, payload, None)
            .await
    }

    async fn send_traced(
        &self,
        keys: &PeerKeys,
        kind: PacketKind,
        stream: u64,
        flags: PacketFlags,
        payload: &[u8],
        trace: Option<&TraceContext>,
    ) -> Result<(), SendError> {
        let socket = self.socket().ok_or(SendError::Closed)?;
        let addr = self.target(keys)?;
        let header = self.header_for(keys, kind, stream, flags);
        if let Some(datagram) = self.try_seal_send(&socket, keys, addr, header, payload, trace)? {
            self.send_pending(&socket, addr, &datagram).await?;
        }
        Ok(())
    }

    /// Seals and sends several datagrams to one peer with one key lookup and one socket
    /// handle; each is sealed into the thread's buffer and handed to the kernel without
    /// yielding unless the socket is full.
    pub async fn send_batch(
        &self,
        peer: NodeId,
        kind: PacketKind,
        stream: u64,
        flags: PacketFlags,
        payloads: &[&[u8]],
    ) -> Result<(), SendError> {
        if let Some(big) = payloads.iter().find(|p| p.len() > MAX_PAYLOAD_LEN) {
            return Err(SendError::TooLarge {
                len: big.len(),
                max: MAX_PAYLOAD_LEN,
            });
        }
        let keys = self.peer(peer).ok_or(SendError::NotConnected(peer))?;
        let socket = self.socket().ok_or(SendError::Closed)?;
        let addr = self.target(&keys)?;
        let header = self.header_for(&keys, kind, stream, flags);
        for payload in payloads {
            if let Some(datagram) =
                self.try_seal_send(&socket, &keys, addr, header, payload, None)?
            {
                self.send_pending(&socket, addr, &datagram).await?;
            }
        }
        Ok(())
    }

    fn header_for(
        &self,
        keys: &PeerKeys,
        kind: PacketKind,
        stream: u64,
        flags: PacketFlags,
    ) -> Header {
        let mut header = Header::new(kind, self.local, keys.node);
        header.ttl = DEFAULT_TTL;
        header.stream = stream;
        header.flags = flags;
        header
    }

    /// The fast path: seals into the thread's buffer and tries a non-blocking send.
    /// Returns the sealed datagram when the socket would block, for an awaited send.
    fn try_seal_send(
        &self,
        socket: &UdpSocket,
        keys: &PeerKeys,
        addr: SocketAddr,
        mut header: Header,
        payload: &[u8],
        trace: Option<&TraceContext>,
    ) -> Result<Option<Vec<u8>>, SendError> {
        SEND_BUF.with(|buf| {
            let mut buf = buf.borrow_mut();
            buf.clear();
            match trace {
                None => seal_datagram(&keys.pair.tx, header, payload, &mut buf)?,
                Some(trace) => {
                    header.flags = header.flags.with(PacketFlags::TRACED);
                    let len = TRACE_CONTEXT_LEN + payload.len();
                    buf.resize(HEADER_LEN + len + TAG_LEN, 0);
                    buf[HEADER_LEN..HEADER_LEN + TRACE_CONTEXT_LEN]
                        .copy_from_slice(&trace.encode());
                    buf[HEADER_LEN + TRACE_CONTEXT_LEN..HEADER_LEN + len].copy_from_slice(payload);
                    seal_in_place(&keys.pair.tx, header, &mut buf, len)?
                }
            };
            if self.loss.drop_next() {
                TransportStats::bump(&self.stats.dropped_injected);
                return Ok(None);
            }
            match socket.try_send_to(&buf, addr) {
                Ok(_) => {
                    self.count_tx(buf.len());
                    Ok(None)
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Some(buf.clone())),
                Err(e) => {
                    TransportStats::bump(&self.stats.socket_errors);
                    Err(SendError::Io(e))
                }
            }
        })
    }

    async fn send_pending(
        &self,
        socket: &UdpSocket,
        addr: SocketAddr,
        datagram: &[u8],
    ) -> Result<(), SendError> {
        socket.send_to(datagram, addr).await.inspect_err(|_| {
            TransportStats::bump(&self.stats.socket_errors);
        })?;
        self.count_tx(datagram.len());
        Ok(())
    }

    /// Sends an already-built datagram (handshake messages).
    pub async fn send_raw(&self, addr: SocketAddr, datagram: &[u8]) -> Result<(), SendError> {
        let socket = self.socket().ok_or(SendError::Closed)?;
        socket.send_to(datagram, addr).await.inspect_err(|_| {
            TransportStats::bump(&self.stats.socket_errors);
        })?;
        self.count_tx(datagram.len());
        Ok(())
    }

    fn count_tx(&self, len: usize) {
        self.stats.tx_packets.fetch_add(1, Ordering::Relaxed);
        self.stats.tx_bytes.fetch_add(len as u64, Ordering::Relaxed);
    }
}
