//! `Session{peer}`: one actor per peer.
//!
//! The actor drives the handshake (as initiator) and the liveness core for one peer,
//! publishes the established keys in the [`Wire`] for the data path,
//! answers heartbeats, and emits `PeerUp / PeerSuspected / PeerRecovered / PeerDown`.
//! The responder side of a handshake runs in the Sessions actor, which hands the
//! established keys to a new session actor (or to the existing one, for a rotation).
//!
//! Streams live here too (ADR 0005): the actor owns the session's `Streams` table, feeds
//! it the batch's `Stream` packets and `STREAM` envelopes and the handles' requests, and
//! carries out its outputs (see `streams`).
//!
//! Lifecycle: `Handshaking` (initiator only; retries with bounded backoff, a fresh
//! ephemeral per attempt) → `Up` (keys published; for a responder, unconfirmed until the
//! first authenticated packet) → `Suspected` ↔ `Up` → the actor stops when the peer is
//! declared failed, the session idles out, the handshake gives up, or it is closed. Keys
//! are withdrawn from the wire in `post_stop`, so a crashed session never leaves keys
//! behind.

mod actor;
mod streams;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use netrun_messages::{EntityId, Identity, NodeId, PacketFlags, PacketKind};
use netrun_runtime::handshake::{Established, HandshakeError};
use netrun_runtime::liveness::LivenessConfig;
use netrun_runtime::stream::{StreamConfig, StreamError, StreamStats};
use ractor::RpcReplyPort;
use thiserror::Error;
use zeroize::Zeroizing;

pub use actor::SessionActor;

use crate::stream::{StreamHandle, StreamOpenError};
use crate::wire::Wire;

/// A sealed, authenticated packet for a session, opened by the receive loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlFrame {
    /// Heartbeat, Control (always a `STREAM` envelope: the receive loop hands every other
    /// subprotocol to its `Wire::serve` queue) or Stream.
    pub kind: PacketKind,
    /// The header's stream field (for heartbeats: `probe << 1 | is_reply`).
    pub stream: u64,
    /// Header flags.
    pub flags: PacketFlags,
    /// The plaintext.
    pub payload: Bytes,
}

/// Where a session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerState {
    /// Handshake in progress.
    Connecting,
    /// Established and heard from recently.
    Up,
    /// Established but silent past the suspect threshold.
    Suspected,
}

/// What `Node::peers` reports about one peer.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerInfo {
    /// The peer's node id.
    pub node: NodeId,
    /// The peer's public key.
    pub entity: EntityId,
    /// Its address; for a routed session, the neighbour the handshake went through.
    pub addr: SocketAddr,
    /// Whether the session runs through relays (the peer is not a direct neighbour).
    pub routed: bool,
    /// Session state.
    pub state: PeerState,
    /// Smoothed round-trip time, once a heartbeat was answered.
    pub rtt: Option<Duration>,
    /// Whether this node initiated the session.
    pub initiator: bool,
    /// Rotation count of this session's keys.
    pub epoch: u64,
}

/// Why `connect` failed.
#[derive(Debug, Clone, Error)]
pub enum ConnectError {
    /// The handshake completed but authentication failed: wrong mesh PSK, or the peer is
    /// not the identity we expected.
    #[error("handshake with {addr} failed: {source}")]
    Handshake {
        /// The peer address.
        addr: SocketAddr,
        /// What failed.
        source: Arc<HandshakeError>,
    },
    /// No answer after every retry.
    #[error(
        "no handshake answer from {addr} after {attempts} attempts (unreachable, not running, or a different mesh PSK)"
    )]
    Timeout {
        /// The peer address.
        addr: SocketAddr,
        /// Attempts made.
        attempts: u32,
    },
    /// A routed handshake got no answer after every retry.
    #[error(
        "no handshake answer from node {node} through relays after {attempts} attempts (no route, or the node is not running)"
    )]
    Unreachable {
        /// The peer.
        node: NodeId,
        /// Attempts made.
        attempts: u32,
    },
    /// The peer's public key is not a valid ed25519 key.
    #[error("the public key for {0} is not a valid ed25519 key")]
    BadPublicKey(SocketAddr),
    /// Connecting to ourselves.
    #[error("refusing to connect to this node's own identity")]
    SelfConnect,
    /// The session ended before it was established.
    #[error("the session closed before it was established")]
    Closed,
}

/// How a session actor starts.
#[derive(Debug)]
pub enum SessionStart {
    /// Initiate a handshake; reply to these waiters when it completes or fails.
    Initiate {
        /// Callers of `connect`.
        waiters: Vec<RpcReplyPort<Result<NodeId, ConnectError>>>,
    },
    /// The Sessions actor accepted the peer's handshake and sent the response.
    Accepted(Box<Established>),
}

/// Startup inputs of a session actor.
#[derive(Debug)]
pub struct SessionArgs {
    /// The shared data path.
    pub wire: Arc<Wire>,
    /// This node's identity.
    pub identity: Arc<Identity>,
    /// The mesh PSK.
    pub psk: Arc<Zeroizing<[u8; 32]>>,
    /// The peer's public key.
    pub peer: EntityId,
    /// The peer's address; for a routed session, the neighbour the handshake went (or
    /// came) through, replaced on every initiator attempt.
    pub addr: SocketAddr,
    /// Whether the peer is reached through relays: handshake and session packets go to the
    /// current next hop toward it (looked up in the routing snapshot per send).
    pub routed: bool,
    /// Liveness timing.
    pub liveness: LivenessConfig,
    /// Initiator or responder.
    pub start: SessionStart,
}

/// Messages a session actor handles.
#[derive(Debug)]
pub enum SessionMsg {
    /// Authenticated packets from one receive batch, for the keys of `epoch`.
    Control {
        /// Key epoch the frames were opened with.
        epoch: u64,
        /// The frames, in arrival order.
        frames: Vec<ControlFrame>,
    },
    /// A handshake response datagram addressed to this session (initiator side).
    HandshakeResponse(Bytes),
    /// The peer rotated the session (fresh ephemeral, same static): new keys. A confirmed
    /// session keeps its keys until the new ones open a packet.
    Rotate(Box<Established>),
    /// The receive loop opened a packet with the pending rotation's keys.
    Promote {
        /// The pending key pair's id.
        pair: u64,
    },
    /// Periodic liveness work.
    Tick,
    /// Handshake retry timer.
    Retry {
        /// The attempt this timer was set for (stale timers are ignored).
        attempt: u32,
    },
    /// Reply when the session is up (or failed).
    WaitUp(RpcReplyPort<Result<NodeId, ConnectError>>),
    /// Report this session's state.
    Info(RpcReplyPort<PeerInfo>),
    /// Open stream `id` with this peer.
    StreamOpen {
        /// Stream id (chosen by the caller; see ADR 0005).
        id: u64,
        /// Its configuration.
        config: StreamConfig,
        /// The handle, or why not.
        reply: RpcReplyPort<Result<StreamHandle, StreamOpenError>>,
    },
    /// Stream `id` has sends queued (accepted against its published credit) to take.
    StreamSend {
        /// Stream id.
        id: u64,
    },
    /// The application consumed `bytes` more of stream `id` (coalesced by the handle).
    StreamConsumed {
        /// Stream id.
        id: u64,
        /// Bytes consumed since the last report.
        bytes: u64,
    },
    /// Close the send half gracefully; reply when done.
    StreamClose {
        /// Stream id.
        id: u64,
        /// Deadline for the close, from now.
        timeout: Duration,
        /// Answered when the FIN is acknowledged, or the close failed.
        reply: RpcReplyPort<Result<(), StreamError>>,
    },
    /// Abort stream `id` (RESET to the peer).
    StreamAbort {
        /// Stream id.
        id: u64,
    },
    /// The application dropped stream `id`: close it gracefully if the peer finished,
    /// abort it otherwise.
    StreamRelease {
        /// Stream id.
        id: u64,
    },
    /// One stream's statistics (`None` if the session does not hold it).
    StreamStats {
        /// Stream id.
        id: u64,
        /// The statistics.
        reply: RpcReplyPort<Option<StreamStats>>,
    },
    /// Every stream's statistics.
    StreamList(RpcReplyPort<Vec<(u64, StreamStats)>>),
    /// The stream timer (stale tokens are ignored).
    StreamTimer {
        /// Which arming this is.
        token: u64,
    },
}
