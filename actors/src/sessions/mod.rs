//! `Sessions`: the parent of every session actor and the responder side of handshakes.
//!
//! The actor owns the handshake responder core. Handshake datagrams arrive from the
//! transport in batches; first messages are answered here (rotation and replay rules are
//! decided by the core, with the live session's facts as input, so decision and insert
//! happen in one actor turn), responses are forwarded to the initiating session actor.
//! `connect` requests spawn initiator sessions; static peers are reconnected with backoff
//! when their session ends. Session actors are linked children: when one stops, its entry
//! is removed.
//!
//! Simultaneous open: if both nodes initiate at once, the initiation of the node with the
//! lower node id wins; the other node answers it and hands the keys to its own session
//! actor.
//!
//! Routed sessions: `ConnectRouted` opens a session with a node known only by its key,
//! reached through relays. The handshake datagrams go to the current next hop toward it,
//! and relays forward them like any packet. A first message that arrives with
//! `hop_count > 0` came through relays: the answer goes to this node's own next hop toward
//! the initiator (or back to the relay it came from, when there is no route yet), and the
//! session is marked routed.

mod actor;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use netrun_messages::{EntityId, Identity, NodeId};
use netrun_runtime::liveness::LivenessConfig;
use ractor::RpcReplyPort;
use zeroize::Zeroizing;

pub use actor::SessionsActor;

use crate::session::{ConnectError, PeerInfo};
use crate::wire::Wire;

/// Startup inputs of the Sessions actor.
#[derive(Debug)]
pub struct SessionsArgs {
    /// The shared data path.
    pub wire: Arc<Wire>,
    /// This node's identity.
    pub identity: Arc<Identity>,
    /// The mesh PSK.
    pub psk: Arc<Zeroizing<[u8; 32]>>,
    /// Liveness timing for every session.
    pub liveness: LivenessConfig,
    /// Peers to connect at start and to reconnect whenever their session ends.
    pub static_peers: Vec<(SocketAddr, EntityId)>,
}

/// Messages the Sessions actor handles.
#[derive(Debug)]
pub enum SessionsMsg {
    /// Handshake datagrams from one receive batch.
    Handshakes(Vec<(SocketAddr, Bytes)>),
    /// Open (or join) a session with `peer` at `addr`.
    Connect {
        /// The peer's address.
        addr: SocketAddr,
        /// The peer's public key.
        peer: EntityId,
        /// Answered when the session is up or has failed.
        reply: RpcReplyPort<Result<NodeId, ConnectError>>,
    },
    /// Open (or join) a session with `peer`, reached through relays (no address needed: its
    /// packets go to the current next hop toward it).
    ConnectRouted {
        /// The peer's public key.
        peer: EntityId,
        /// Answered when the session is up or has failed.
        reply: RpcReplyPort<Result<NodeId, ConnectError>>,
    },
    /// Report every session.
    Peers(RpcReplyPort<Vec<PeerInfo>>),
    /// Periodic reconnect work.
    Tick,
}
