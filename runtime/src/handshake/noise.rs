//! Thin glue over `snow`: the pattern, the prologue, a deterministic RNG and the split.

use netrun_messages::NodeId;
use snow::params::{CipherChoice, DHChoice, HashChoice};
use snow::resolvers::{CryptoResolver, DefaultResolver};
use snow::types::{Cipher, Dh, Hash, Random};
use snow::{Builder, HandshakeState};
use zeroize::Zeroizing;

use super::HandshakeError;
use crate::crypto::{RxKey, TxKey};

/// The Noise protocol name. See `docs/adr/0002-noise-handshake.md`.
pub const PATTERN: &str = "Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s";
/// Protocol tag at the start of the prologue; a new handshake version changes it.
pub const PROLOGUE_TAG: &[u8; 8] = b"netrun/1";
/// Prologue length: tag ‖ initiator node id (LE) ‖ responder node id (LE).
pub const PROLOGUE_LEN: usize = 24;
/// IKpsk2 message 1: e (32) ‖ encrypted s (32 + 16) ‖ encrypted 32-byte payload (32 + 16).
pub const INIT_LEN: usize = 128;
/// IKpsk2 message 2: e (32) ‖ encrypted empty payload (16).
pub const RESPONSE_LEN: usize = 48;
/// The initiator's message-1 payload: its ed25519 public key.
pub(crate) const INIT_PAYLOAD_LEN: usize = 32;
/// Position of the PSK token: end of message 2 (psk2).
const PSK_LOCATION: u8 = 2;

/// The prologue both sides mix in before message 1; any disagreement fails message 1.
pub fn prologue(initiator: NodeId, responder: NodeId) -> [u8; PROLOGUE_LEN] {
    let mut out = [0u8; PROLOGUE_LEN];
    out[..8].copy_from_slice(PROLOGUE_TAG);
    out[8..16].copy_from_slice(&initiator.0.to_le_bytes());
    out[16..24].copy_from_slice(&responder.0.to_le_bytes());
    out
}

/// Builds one side's handshake state. `seed` feeds the ephemeral key generation, so the
/// caller's RNG is the only source of randomness.
pub(crate) fn build(
    initiator: bool,
    local_secret: &[u8; 32],
    remote_static: Option<&[u8; 32]>,
    psk: &[u8; 32],
    prologue: &[u8; PROLOGUE_LEN],
    seed: Zeroizing<[u8; 32]>,
) -> Result<HandshakeState, HandshakeError> {
    let params = PATTERN.parse().map_err(HandshakeError::Noise)?;
    let mut builder = Builder::with_resolver(params, Box::new(SeededResolver { seed }))
        .local_private_key(local_secret)
        .and_then(|b| b.psk(PSK_LOCATION, psk))
        .and_then(|b| b.prologue(prologue))
        .map_err(HandshakeError::Noise)?;
    if let Some(remote) = remote_static {
        builder = builder
            .remote_public_key(remote)
            .map_err(HandshakeError::Noise)?;
    }
    let state = if initiator {
        builder.build_initiator()
    } else {
        builder.build_responder()
    };
    state.map_err(HandshakeError::Noise)
}

/// Splits a finished handshake into this side's send and receive keys. Noise's first key
/// protects initiator → responder traffic, the second responder → initiator.
pub(crate) fn split(state: &mut HandshakeState, initiator: bool) -> (TxKey, RxKey) {
    let (first, second) = state.dangerously_get_raw_split();
    let first = Zeroizing::new(first);
    let second = Zeroizing::new(second);
    if initiator {
        (TxKey::new(&first), RxKey::new(&second))
    } else {
        (TxKey::new(&second), RxKey::new(&first))
    }
}

/// A resolver that takes primitives from snow's default set and randomness from a seed
/// drawn from the caller's RNG (BLAKE3 keyed XOF), keeping the core deterministic under
/// simulation and free of hidden OS randomness.
struct SeededResolver {
    seed: Zeroizing<[u8; 32]>,
}

impl CryptoResolver for SeededResolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        let reader = blake3::Hasher::new_keyed(&self.seed).finalize_xof();
        Some(Box::new(XofRng(reader)))
    }

    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        DefaultResolver.resolve_dh(choice)
    }

    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        DefaultResolver.resolve_hash(choice)
    }

    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        DefaultResolver.resolve_cipher(choice)
    }
}

struct XofRng(blake3::OutputReader);

impl Random for XofRng {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        self.0.fill(dest);
        Ok(())
    }
}
