//! The responding side: reads message 1, checks the claimed identity and the rotation
//! rules, answers with message 2.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use netrun_messages::header::HEADER_LEN;
use netrun_messages::{EntityId, Header, Identity, NodeId, PacketKind};
use rand_core::CryptoRngCore;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::noise::{self, INIT_LEN, INIT_PAYLOAD_LEN, RESPONSE_LEN};
use super::rotation::{LiveSession, Rotation, rotation};
use super::{Established, HandshakeError};

/// Parameters of a [`Responder`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponderConfig {
    /// A session unheard for this long no longer blocks a different key for its node id
    /// (see [`rotation`](super::rotation())). Default 30 s, the liveness idle timeout.
    pub session_timeout: Duration,
    /// How long a responder-side session may stay unconfirmed before it is dropped.
    /// Default 10 s.
    pub confirm_timeout: Duration,
    /// Node ids whose recent initiations are remembered (up to 4 each) to drop replays
    /// before any DH work. Default 4096; the least recently active is forgotten first.
    pub max_recent: usize,
    /// How long an initiation is remembered. Default 120 s.
    pub replay_memory: Duration,
}

impl Default for ResponderConfig {
    fn default() -> Self {
        Self {
            session_timeout: Duration::from_secs(30),
            confirm_timeout: Duration::from_secs(10),
            max_recent: 4096,
            replay_memory: Duration::from_secs(120),
        }
    }
}

/// Accepted initiator ephemerals remembered per node id. More than one, so that replaying
/// the message 1 of a session that was already rotated away is still dropped cheaply.
const RECENT_PER_NODE: usize = 4;

#[derive(Debug, Clone, Copy)]
struct RecentInit {
    /// Ring of the last accepted ephemerals with their times.
    ephemerals: [Option<([u8; 32], Instant)>; RECENT_PER_NODE],
    next: usize,
    /// When the newest was accepted (eviction order of the table).
    at: Instant,
}

/// Answers handshake initiations addressed to this node.
pub struct Responder {
    local: Identity,
    local_node: NodeId,
    psk: Zeroizing<[u8; 32]>,
    config: ResponderConfig,
    recent: HashMap<NodeId, RecentInit>,
}

impl Responder {
    /// A responder for `local` gated by the mesh `psk`.
    pub fn new(local: Identity, psk: &[u8; 32], config: ResponderConfig) -> Self {
        Self {
            local_node: local.node_id(),
            local,
            psk: Zeroizing::new(*psk),
            config,
            recent: HashMap::new(),
        }
    }

    /// Handles a message-1 datagram. `live` is the caller's current session with the
    /// initiating node (`Header::parse(datagram)?.0.src`), if any.
    ///
    /// On success returns the new session, **unconfirmed** (see
    /// [`Established::is_confirmed`]), and the message-2 datagram to send. The caller keeps
    /// any existing session until the new one is confirmed, and drops the new one at
    /// [`Established::confirm_deadline`] if it never is.
    pub fn handle_init<R: CryptoRngCore + ?Sized>(
        &mut self,
        now: Instant,
        datagram: &[u8],
        live: Option<&LiveSession>,
        rng: &mut R,
    ) -> Result<(Established, Vec<u8>), HandshakeError> {
        let (header, payload) = Header::parse(datagram)?;
        if header.kind != PacketKind::HandshakeInit {
            return Err(HandshakeError::UnexpectedKind {
                expected: PacketKind::HandshakeInit,
                got: header.kind,
            });
        }
        if header.dst != self.local_node {
            return Err(HandshakeError::NotForUs(header.dst));
        }
        if payload.len() != INIT_LEN {
            return Err(HandshakeError::BadLength {
                len: payload.len(),
                expected: INIT_LEN,
            });
        }
        let mut ephemeral = [0u8; 32];
        ephemeral.copy_from_slice(&payload[..32]);
        if self.is_recent_replay(header.src, &ephemeral, now) {
            return Err(HandshakeError::Replay);
        }

        let mut seed = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(seed.as_mut());
        let mut state = noise::build(
            false,
            &self.local.x25519_secret(),
            None,
            &self.psk,
            &noise::prologue(header.src, self.local_node),
            seed,
        )?;
        let mut plain = [0u8; INIT_LEN];
        let read = state
            .read_message(payload, &mut plain)
            .map_err(|_| HandshakeError::Authentication)?;
        if read != INIT_PAYLOAD_LEN {
            return Err(HandshakeError::BadLength {
                len: read,
                expected: INIT_PAYLOAD_LEN,
            });
        }
        let mut claimed = [0u8; 32];
        claimed.copy_from_slice(&plain[..32]);
        let claimed = EntityId(claimed);
        let remote_static: [u8; 32] = state
            .get_remote_static()
            .and_then(|s| s.try_into().ok())
            .ok_or(HandshakeError::IdentityMismatch)?;
        let owns_static = claimed
            .x25519_public()
            .map(|x| bool::from(x.ct_eq(&remote_static)))
            .unwrap_or(false);
        if !owns_static || claimed.node_id() != header.src {
            return Err(HandshakeError::IdentityMismatch);
        }

        match rotation(
            live,
            &remote_static,
            &ephemeral,
            now,
            self.config.session_timeout,
        ) {
            Rotation::Accept | Rotation::AcceptRotation => {}
            Rotation::DropReplay => return Err(HandshakeError::Replay),
            Rotation::RefuseFresh => return Err(HandshakeError::LiveSessionExists(header.src)),
        }

        let mut reply = Header::new(PacketKind::HandshakeResponse, self.local_node, header.src);
        reply.stream = header.stream;
        reply.payload_len = RESPONSE_LEN as u32;
        let mut response = vec![0u8; HEADER_LEN + RESPONSE_LEN];
        response[..HEADER_LEN].copy_from_slice(&reply.encode());
        let written = state
            .write_message(&[], &mut response[HEADER_LEN..])
            .map_err(HandshakeError::Noise)?;
        if written != RESPONSE_LEN {
            return Err(HandshakeError::BadLength {
                len: written,
                expected: RESPONSE_LEN,
            });
        }
        let (tx, rx) = noise::split(&mut state, false);
        self.remember(header.src, ephemeral, now);
        let established = Established {
            peer: claimed,
            peer_node: header.src,
            remote_static,
            tx,
            rx,
            initiator: false,
            initiator_ephemeral: ephemeral,
            handshake_id: header.stream,
            established_at: now,
            confirm_deadline: Some(now + self.config.confirm_timeout),
        };
        Ok((established, response))
    }

    /// This node's id.
    pub fn local_node(&self) -> NodeId {
        self.local_node
    }

    /// Initiations currently remembered for replay detection.
    pub fn recent_len(&self) -> usize {
        self.recent.len()
    }

    fn is_recent_replay(&self, node: NodeId, ephemeral: &[u8; 32], now: Instant) -> bool {
        self.recent.get(&node).is_some_and(|r| {
            r.ephemerals.iter().flatten().any(|(seen, at)| {
                bool::from(seen.ct_eq(ephemeral))
                    && now.saturating_duration_since(*at) < self.config.replay_memory
            })
        })
    }

    /// Remembers an accepted initiation. Only authenticated initiations are recorded, so
    /// forged packets cannot fill the table or block a real initiator.
    fn remember(&mut self, node: NodeId, ephemeral: [u8; 32], now: Instant) {
        if !self.recent.contains_key(&node) && self.recent.len() >= self.config.max_recent {
            let oldest = self
                .recent
                .iter()
                .min_by_key(|(_, r)| r.at)
                .map(|(n, _)| *n);
            if let Some(oldest) = oldest {
                self.recent.remove(&oldest);
            }
        }
        let entry = self.recent.entry(node).or_insert(RecentInit {
            ephemerals: [None; RECENT_PER_NODE],
            next: 0,
            at: now,
        });
        entry.ephemerals[entry.next] = Some((ephemeral, now));
        entry.next = (entry.next + 1) % RECENT_PER_NODE;
        entry.at = now;
    }
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Responder")
            .field("local_node", &self.local_node)
            .field("recent", &self.recent.len())
            .finish_non_exhaustive()
    }
}
