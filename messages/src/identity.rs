//! One ed25519 keypair per entity, and its X25519 form for Noise.
//!
//! # X25519 derivation
//!
//! Noise needs a Diffie-Hellman static key; netrun does not keep a second secret for it.
//! The X25519 secret is the ed25519 *secret scalar* (the first half of SHA-512 of the seed,
//! which X25519 clamps exactly as ed25519 does), and the X25519 public key is the Montgomery
//! form `u = (1 + y) / (1 - y)` of the ed25519 public point. The two halves agree:
//! `X25519(secret, 9) == to_montgomery(public)`. This is the birational map used by
//! libsodium's `crypto_sign_ed25519_*_to_curve25519`; the handshake checks it in the
//! direction that is unique (ed25519 public key → Montgomery u), so a peer proves that its
//! Noise static key belongs to the ed25519 identity it claims.

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use rand_core::OsRng;
use thiserror::Error;
use zeroize::Zeroizing;

use crate::ids::{EntityId, NodeId, OriginHash};

/// An ed25519 signature (64 bytes).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature(pub [u8; 64]);

/// A signature check failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum SignatureError {
    /// The public key bytes are not a valid ed25519 point.
    #[error("malformed ed25519 public key")]
    MalformedKey,
    /// The signature does not verify under the key.
    #[error("ed25519 signature does not verify")]
    Invalid,
}

/// One ed25519 keypair: the identity of a node, a daemon or an operator.
///
/// The 32-byte seed is secret; [`Identity::seed`] hands it out wrapped in [`Zeroizing`].
#[derive(Clone)]
pub struct Identity {
    signing: SigningKey,
}

impl Identity {
    /// A fresh random identity from the operating system's RNG.
    pub fn generate() -> Self {
        Self {
            signing: SigningKey::generate(&mut OsRng),
        }
    }

    /// The identity of a 32-byte seed. The same seed always gives the same keys and ids.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self {
            signing: SigningKey::from_bytes(&seed),
        }
    }

    /// The secret seed (secret material: store it 0600, never log it).
    pub fn seed(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.signing.to_bytes())
    }

    /// The ed25519 public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.signing.verifying_key().to_bytes()
    }

    /// The public key as an entity id.
    pub fn entity_id(&self) -> EntityId {
        EntityId(self.public_key())
    }

    /// The node id of this identity (see [`NodeId::from_public_key`]).
    pub fn node_id(&self) -> NodeId {
        NodeId::from_public_key(&self.public_key())
    }

    /// The origin hash of this identity when it names a daemon.
    pub fn origin_hash(&self) -> OriginHash {
        OriginHash::from_public_key(&self.public_key())
    }

    /// Signs `message`.
    pub fn sign(&self, message: &[u8]) -> Signature {
        Signature(self.signing.sign(message).to_bytes())
    }

    /// Verifies a signature made by this identity.
    pub fn verify(&self, message: &[u8], signature: &Signature) -> Result<(), SignatureError> {
        verify(&self.public_key(), message, signature)
    }

    /// The X25519 secret derived from this identity (see the module docs).
    pub fn x25519_secret(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.signing.to_scalar_bytes())
    }

    /// The X25519 public key derived from this identity (see the module docs).
    pub fn x25519_public(&self) -> [u8; 32] {
        self.signing.verifying_key().to_montgomery().to_bytes()
    }
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("node_id", &self.node_id())
            .field("public_key", &self.entity_id())
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Signature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Signature({:02x}{:02x}{:02x}{:02x}…)",
            self.0[0], self.0[1], self.0[2], self.0[3]
        )
    }
}

/// Verifies `signature` over `message` under the ed25519 public key `public_key`.
///
/// Uses strict verification (rejects small-order keys and non-canonical signatures), so a
/// signature has exactly one valid encoding.
pub(crate) fn verify(
    public_key: &[u8; 32],
    message: &[u8],
    signature: &Signature,
) -> Result<(), SignatureError> {
    let key = VerifyingKey::from_bytes(public_key).map_err(|_| SignatureError::MalformedKey)?;
    let sig = ed25519_dalek::Signature::from_bytes(&signature.0);
    key.verify_strict(message, &sig)
        .map_err(|_| SignatureError::Invalid)
}

/// The Montgomery form of an ed25519 public key.
pub(crate) fn x25519_public_of(public_key: &[u8; 32]) -> Result<[u8; 32], SignatureError> {
    let key = VerifyingKey::from_bytes(public_key).map_err(|_| SignatureError::MalformedKey)?;
    Ok(key.to_montgomery().to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_ids() {
        let a = Identity::from_seed([3; 32]);
        let b = Identity::from_seed([3; 32]);
        assert_eq!(a.node_id(), b.node_id());
        assert_eq!(a.entity_id(), b.entity_id());
        assert_eq!(a.origin_hash(), b.origin_hash());
        assert_ne!(a.node_id(), Identity::from_seed([4; 32]).node_id());
    }

    #[test]
    fn node_id_is_first_eight_le_bytes_of_blake3() {
        let id = Identity::from_seed([9; 32]);
        let hash = blake3::hash(&id.public_key());
        let mut first = [0u8; 8];
        first.copy_from_slice(&hash.as_bytes()[..8]);
        assert_eq!(id.node_id().get(), u64::from_le_bytes(first));
    }

    #[test]
    fn sign_verify_and_forgery() {
        let id = Identity::generate();
        let sig = id.sign(b"hello");
        assert_eq!(id.verify(b"hello", &sig), Ok(()));
        assert_eq!(id.verify(b"hellO", &sig), Err(SignatureError::Invalid));
        let other = Identity::generate();
        assert_eq!(
            other.entity_id().verify(b"hello", &sig),
            Err(SignatureError::Invalid)
        );
        let mut bent = sig;
        bent.0[10] ^= 1;
        assert_eq!(
            id.entity_id().verify(b"hello", &bent),
            Err(SignatureError::Invalid)
        );
    }

    #[test]
    fn x25519_halves_agree() {
        // X25519(secret, basepoint) must equal the Montgomery form of the ed25519 public key.
        let id = Identity::from_seed([11; 32]);
        let secret = id.x25519_secret();
        let secret = x25519_dalek::StaticSecret::from(*secret);
        let point = x25519_dalek::PublicKey::from(&secret).to_bytes();
        assert_eq!(point, id.x25519_public());
        assert_eq!(id.entity_id().x25519_public(), Ok(id.x25519_public()));
    }
}
