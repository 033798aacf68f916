//! Peer lifecycle events published by session actors.

use std::net::SocketAddr;

use netrun_messages::NodeId;

/// What happened to a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerEvent {
    /// A session is established and confirmed.
    Up {
        /// The peer.
        node: NodeId,
        /// Its address.
        addr: SocketAddr,
    },
    /// The peer missed heartbeats; traffic may be rerouted.
    Suspected {
        /// The peer.
        node: NodeId,
    },
    /// The peer was heard from again after being suspected.
    Recovered {
        /// The peer.
        node: NodeId,
    },
    /// The session is gone (failed, idle, closed or replaced by nothing).
    Down {
        /// The peer.
        node: NodeId,
    },
}

/// Capacity of the event broadcast. A subscriber that falls further behind loses the oldest
/// events and is told how many it missed (tokio broadcast semantics).
pub const EVENT_CAPACITY: usize = 1024;
