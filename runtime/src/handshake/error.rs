//! Why a handshake message was refused.

use netrun_messages::{DecodeError, NodeId, PacketKind};
use thiserror::Error;

/// Why a handshake step failed. Every variant means "drop this datagram"; none leaves a
/// half-built session behind.
#[derive(Debug, Error)]
pub enum HandshakeError {
    /// The packet header does not parse.
    #[error("malformed handshake packet: {0}")]
    Malformed(#[from] DecodeError),
    /// The packet is not the handshake kind this step expects.
    #[error("expected a {expected:?} packet, got {got:?}")]
    UnexpectedKind {
        /// The kind this step handles.
        expected: PacketKind,
        /// The kind received.
        got: PacketKind,
    },
    /// The packet is addressed to another node.
    #[error("handshake packet addressed to node {0}, not to this node")]
    NotForUs(NodeId),
    /// A response came from a node other than the one this handshake dialed.
    #[error("handshake response from unexpected node {0}")]
    WrongPeer(NodeId),
    /// A response echoes a handshake id this initiator did not send.
    #[error("handshake response for unknown handshake id {0:#x}")]
    UnknownHandshake(u64),
    /// The Noise message or its payload has the wrong length.
    #[error("handshake message of {len} bytes, expected {expected}")]
    BadLength {
        /// Bytes received.
        len: usize,
        /// Bytes this message always has.
        expected: usize,
    },
    /// Noise decryption failed. At the initiator reading the response this almost always
    /// means the two nodes hold different mesh PSKs; at the responder, that the initiator
    /// used a wrong key for this node or the message was tampered with.
    #[error("handshake failed authentication (mismatched mesh psk or keys)")]
    Authentication,
    /// The ed25519 key in the initiator's payload does not own its Noise static key, or
    /// does not hash to the node id in the packet header.
    #[error("claimed identity does not match the noise static key or the header node id")]
    IdentityMismatch,
    /// A public key is not a valid ed25519 point.
    #[error("invalid ed25519 public key")]
    InvalidKey,
    /// The same initiator message (same static key and ephemeral) was seen already.
    #[error("replayed handshake initiation")]
    Replay,
    /// A different static key claims a node id whose session is still alive.
    #[error("node {0} has a live session with another key; refusing to replace it")]
    LiveSessionExists(NodeId),
    /// The initiator already completed or failed; start a new one.
    #[error("handshake already finished")]
    Finished,
    /// The Noise library refused an operation (a bug or an unsupported build).
    #[error("noise protocol error: {0}")]
    Noise(#[source] snow::Error),
}
