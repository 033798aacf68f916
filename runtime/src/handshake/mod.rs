//! The Noise handshake that turns two identities and the mesh PSK into session keys.
//!
//! Pattern `Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s` (one round trip; the initiator knows the
//! responder's key; see `docs/adr/0002-noise-handshake.md`):
//!
//! ```text
//!  initiator                                               responder
//!  Initiator::start ──HandshakeInit(stream = id)──────────▶ Responder::handle_init
//!     msg1 = e, es, s, ss + payload: initiator's ed25519 key   checks identity, rotation
//!  Initiator::handle_response ◀──HandshakeResponse(stream = id)── msg2 = e, ee, se, psk
//!     → Established (confirmed)                             → Established (unconfirmed)
//!  send a heartbeat at once ──Heartbeat (sealed)──────────▶ first authenticated packet:
//!                                                           RxKey::has_authenticated → confirmed
//! ```
//!
//! - Static keys are the X25519 forms of the ed25519 identities
//!   ([`Identity::x25519_secret`](netrun_messages::Identity::x25519_secret)).
//! - The prologue binds `b"netrun/1"`, the initiator's and the responder's node ids.
//! - The responder requires the ed25519 key in message 1 to map to the Noise static key the
//!   initiator proved, and to hash to the header's source node id.
//! - The PSK enters at the end of message 2, so a wrong PSK is detected by the initiator
//!   reading message 2. The responder cannot tell, which is why its side stays unconfirmed
//!   until a packet sealed with the new keys arrives.
//! - Session swap rule for callers: an unconfirmed session never replaces a confirmed one;
//!   it is promoted on its first authenticated packet and dropped at its confirm deadline.
//!
//! ```
//! use std::time::Instant;
//! use netrun_messages::Identity;
//! use netrun_runtime::crypto::{open_heartbeat, seal_heartbeat};
//! use netrun_runtime::handshake::{Initiator, Responder, ResponderConfig};
//! use netrun_runtime::rand_core::OsRng;
//!
//! let (alice, bob) = (Identity::generate(), Identity::generate());
//! let psk = [7u8; 32];
//! let now = Instant::now(); // callers read the clock; cores only receive it
//!
//! let (mut dial, msg1) = Initiator::start(now, &alice, bob.entity_id(), &psk, 42, &mut OsRng)?;
//! let mut responder = Responder::new(bob.clone(), &psk, ResponderConfig::default());
//! let (bob_side, msg2) = responder.handle_init(now, &msg1, None, &mut OsRng)?;
//! let alice_side = dial.handle_response(now, &msg2)?;
//! assert!(alice_side.is_confirmed() && !bob_side.is_confirmed());
//!
//! // Key confirmation: the initiator's first heartbeat.
//! let mut datagram = Vec::new();
//! seal_heartbeat(&alice_side.tx, alice.node_id(), bob.node_id(), 0, &mut datagram)?;
//! open_heartbeat(&bob_side.rx, &datagram)?;
//! assert!(bob_side.is_confirmed());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod backoff;
mod error;
mod initiator;
mod noise;
mod responder;
mod rotation;

use std::time::Instant;

use netrun_messages::{EntityId, NodeId};

use crate::crypto::{RxKey, TxKey};

pub use backoff::{BackoffConfig, HandshakeBackoff};
pub use error::HandshakeError;
pub use initiator::Initiator;
pub use noise::{INIT_LEN, PATTERN, PROLOGUE_LEN, PROLOGUE_TAG, RESPONSE_LEN, prologue};
pub use responder::{Responder, ResponderConfig};
pub use rotation::{LiveSession, Rotation, keeps_own_initiation, rotation};

/// A completed handshake: the peer's identity and this side's session keys.
#[derive(Debug)]
pub struct Established {
    /// The peer's ed25519 identity.
    pub peer: EntityId,
    /// The peer's node id (derived from `peer`).
    pub peer_node: NodeId,
    /// The peer's Noise static key (X25519 form of `peer`).
    pub remote_static: [u8; 32],
    /// Seals packets to the peer.
    pub tx: TxKey,
    /// Opens packets from the peer.
    pub rx: RxKey,
    /// Whether this side initiated.
    pub initiator: bool,
    /// The initiator's ephemeral key of this handshake (for the rotation rules).
    pub initiator_ephemeral: [u8; 32],
    /// The handshake id carried in the handshake packets' `stream` field.
    pub handshake_id: u64,
    /// When the handshake completed on this side.
    pub established_at: Instant,
    /// Responder only: the session is dropped if still unconfirmed at this time.
    pub confirm_deadline: Option<Instant>,
}

impl Established {
    /// Whether both sides provably hold the same keys: always for the initiator (message 2
    /// authenticated them), for the responder once a packet from the peer opened under `rx`.
    pub fn is_confirmed(&self) -> bool {
        self.initiator || self.rx.has_authenticated()
    }

    /// Whether an unconfirmed session has outlived its confirm deadline and must be dropped.
    pub fn is_unconfirmed_expired(&self, now: Instant) -> bool {
        !self.is_confirmed() && self.confirm_deadline.is_some_and(|d| now >= d)
    }

    /// The record the [`Responder`] needs about this session, as of `last_heard`.
    pub fn live(&self, last_heard: Instant) -> LiveSession {
        LiveSession {
            static_key: self.remote_static,
            initiator_ephemeral: self.initiator_ephemeral,
            last_heard,
        }
    }
}

#[cfg(test)]
mod tests;
