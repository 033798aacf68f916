//! netrun's shell: ractor actors, each owning one resource and driving one runtime core.
//!
//! ```text
//!            Node::send ──seal──▶ UDP socket ◀── UdpTransport (owns the socket)
//!                                    │ recv batches
//!                                    ▼
//!                  receive loop: parse header ─ lookup PeerTable ─ open in place
//!                     │ data ──▶ bounded inbound queue ──▶ Node::recv
//!                     │ heartbeats/control (one message per session per batch)
//!                     ▼
//!                  Session{peer} actor: liveness core, heartbeats, PeerUp/Suspected/Down,
//!                     stream table (segments, grants, retransmits) ◀──▶ StreamHandle
//!                     ▲ spawns, rotates, forwards handshakes
//!                  Sessions actor: handshake responder core, connect requests
//! ```
//!
//! Packets for other nodes are relayed by the receive loop itself, against the routing
//! snapshot the `Router` actor publishes in the wire; the `Pingwave` actor probes
//! neighbours and feeds the router.
//!
//! Per-packet work never crosses a mailbox: the receive loop and `Node::send` use the keys
//! that session actors publish, and the routes the router publishes, in the shared
//! [`wire::Wire`]. Actors own lifecycles and decisions that are not per packet.

pub mod capability;
pub mod channel;
mod clock;
pub mod control;
pub mod daemon;
pub mod discovery;
pub mod events;
pub mod pingwave;
pub mod pump;
pub mod router;
pub mod rpc;
pub mod session;
pub mod sessions;
pub mod stats;
pub mod stream;
pub mod transport;
pub mod wire;
