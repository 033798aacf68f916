//! `UdpTransport`: owns the UDP socket and runs the receive loop.
//!
//! The actor binds the socket in `pre_start` (so a restart rebinds it), publishes it in the
//! [`Wire`] for the send path, and runs a receive task that reads
//! datagrams in batches of up to [`MAX_BATCH`] until the socket would block. For each
//! datagram the loop parses the routing header. A datagram for another node is relayed
//! right there (`forward`: neighbour check, forward decision against the router's
//! snapshot, non-blocking send to the next hop; never opened). For one addressed here the
//! loop finds the session keys and opens the packet in place; application data goes to the
//! bounded inbound queue (full → drop newest, counted), session traffic is grouped into one
//! message per session per batch, and handshake messages go to the Sessions actor, one
//! message per batch.

mod actor;
mod forward;
mod rx;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use netrun_messages::{NodeId, PacketFlags, TraceContext};
use tokio::sync::mpsc;

pub use actor::UdpTransport;

use crate::wire::Wire;

/// Most datagrams read before the loop hands its batch on.
pub const MAX_BATCH: usize = 64;

/// An application datagram received on an established session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The sending node (authenticated).
    pub peer: NodeId,
    /// Stream or channel id from the header.
    pub stream: u64,
    /// Header flags.
    pub flags: PacketFlags,
    /// The plaintext.
    pub payload: Bytes,
    /// The sender's trace context, when it sent inside a traced span.
    pub trace: Option<TraceContext>,
}

/// What the transport needs to start.
#[derive(Debug)]
pub struct TransportArgs {
    /// Address to bind.
    pub bind: SocketAddr,
    /// If binding `bind` fails because the port is taken, bind an ephemeral port instead.
    pub fallback_to_ephemeral: bool,
    /// The shared data path.
    pub wire: Arc<Wire>,
    /// Where application datagrams go.
    pub inbound: mpsc::Sender<Received>,
}

/// Messages the transport handles.
#[derive(Debug)]
pub enum TransportMsg {
    /// Reply with the bound address.
    LocalAddr(ractor::RpcReplyPort<SocketAddr>),
    /// The receive task hit a socket error it cannot recover from; the actor fails so
    /// its supervisor rebinds.
    ReceiveFailed(String),
}
