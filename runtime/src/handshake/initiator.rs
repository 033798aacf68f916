//! The initiating side: knows the responder's identity, sends message 1, reads message 2.

use std::time::Instant;

use netrun_messages::header::HEADER_LEN;
use netrun_messages::{EntityId, Header, Identity, NodeId, PacketKind};
use rand_core::CryptoRngCore;
use snow::HandshakeState;
use zeroize::Zeroizing;

use super::noise::{self, INIT_LEN, RESPONSE_LEN};
use super::{Established, HandshakeError};

/// An initiation in flight. Created by [`Initiator::start`], completed by
/// [`Initiator::handle_response`]. A retry is a *new* `Initiator` (fresh ephemeral, fresh
/// handshake id): resending an old message 1 would be dropped by the responder as a replay.
pub struct Initiator {
    state: Option<HandshakeState>,
    local_node: NodeId,
    remote: EntityId,
    remote_node: NodeId,
    remote_static: [u8; 32],
    handshake_id: u64,
    ephemeral: [u8; 32],
    started_at: Instant,
}

impl Initiator {
    /// Starts a handshake with `remote` and returns the message-1 datagram to send.
    ///
    /// `handshake_id` is echoed by the response (put a random value here; it correlates
    /// retries). `rng` seeds the ephemeral key.
    pub fn start<R: CryptoRngCore + ?Sized>(
        now: Instant,
        local: &Identity,
        remote: EntityId,
        psk: &[u8; 32],
        handshake_id: u64,
        rng: &mut R,
    ) -> Result<(Self, Vec<u8>), HandshakeError> {
        let remote_static = remote
            .x25519_public()
            .map_err(|_| HandshakeError::InvalidKey)?;
        let local_node = local.node_id();
        let remote_node = remote.node_id();
        let mut seed = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(seed.as_mut());
        let mut state = noise::build(
            true,
            &local.x25519_secret(),
            Some(&remote_static),
            psk,
            &noise::prologue(local_node, remote_node),
            seed,
        )?;

        let mut header = Header::new(PacketKind::HandshakeInit, local_node, remote_node);
        header.stream = handshake_id;
        header.payload_len = INIT_LEN as u32;
        let mut datagram = vec![0u8; HEADER_LEN + INIT_LEN];
        datagram[..HEADER_LEN].copy_from_slice(&header.encode());
        let written = state
            .write_message(&local.public_key(), &mut datagram[HEADER_LEN..])
            .map_err(HandshakeError::Noise)?;
        if written != INIT_LEN {
            return Err(HandshakeError::BadLength {
                len: written,
                expected: INIT_LEN,
            });
        }
        let mut ephemeral = [0u8; 32];
        ephemeral.copy_from_slice(&datagram[HEADER_LEN..HEADER_LEN + 32]);
        let initiator = Self {
            state: Some(state),
            local_node,
            remote,
            remote_node,
            remote_static,
            handshake_id,
            ephemeral,
            started_at: now,
        };
        Ok((initiator, datagram))
    }

    /// Reads the responder's message 2 and derives the session keys.
    ///
    /// Header checks (kind, handshake id, source, destination, length) fail without
    /// consuming the handshake, so a stray or spoofed packet cannot cancel it. A Noise
    /// failure ([`HandshakeError::Authentication`]: usually a different mesh PSK) ends it;
    /// later calls return [`HandshakeError::Finished`].
    ///
    /// On success the caller should send an authenticated packet right away (a heartbeat):
    /// that is the responder's key confirmation.
    pub fn handle_response(
        &mut self,
        now: Instant,
        datagram: &[u8],
    ) -> Result<Established, HandshakeError> {
        let (header, payload) = Header::parse(datagram)?;
        if header.kind != PacketKind::HandshakeResponse {
            return Err(HandshakeError::UnexpectedKind {
                expected: PacketKind::HandshakeResponse,
                got: header.kind,
            });
        }
        if header.stream != self.handshake_id {
            return Err(HandshakeError::UnknownHandshake(header.stream));
        }
        if header.src != self.remote_node {
            return Err(HandshakeError::WrongPeer(header.src));
        }
        if header.dst != self.local_node {
            return Err(HandshakeError::NotForUs(header.dst));
        }
        if payload.len() != RESPONSE_LEN {
            return Err(HandshakeError::BadLength {
                len: payload.len(),
                expected: RESPONSE_LEN,
            });
        }
        let mut state = self.state.take().ok_or(HandshakeError::Finished)?;
        let mut plain = [0u8; RESPONSE_LEN];
        let read = state
            .read_message(payload, &mut plain)
            .map_err(|_| HandshakeError::Authentication)?;
        if read != 0 {
            return Err(HandshakeError::BadLength {
                len: read,
                expected: 0,
            });
        }
        let (tx, rx) = noise::split(&mut state, true);
        Ok(Established {
            peer: self.remote,
            peer_node: self.remote_node,
            remote_static: self.remote_static,
            tx,
            rx,
            initiator: true,
            initiator_ephemeral: self.ephemeral,
            handshake_id: self.handshake_id,
            established_at: now,
            confirm_deadline: None,
        })
    }

    /// The id the response must echo.
    pub fn handshake_id(&self) -> u64 {
        self.handshake_id
    }

    /// The node being dialed.
    pub fn remote_node(&self) -> NodeId {
        self.remote_node
    }

    /// When [`Initiator::start`] ran.
    pub fn started_at(&self) -> Instant {
        self.started_at
    }

    /// Whether the handshake already completed or failed.
    pub fn is_finished(&self) -> bool {
        self.state.is_none()
    }
}

impl std::fmt::Debug for Initiator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Initiator")
            .field("remote_node", &self.remote_node)
            .field("handshake_id", &self.handshake_id)
            .field("finished", &self.is_finished())
            .finish_non_exhaustive()
    }
}
