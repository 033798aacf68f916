//! Identifiers derived from ed25519 public keys.
//!
//! | id | size | derivation |
//! |---|---|---|
//! | [`EntityId`] | 32 B | the ed25519 public key itself |
//! | [`NodeId`] | u64 | first 8 bytes, little-endian, of BLAKE3(public key) |
//! | [`OriginHash`] | u64 | first 8 bytes, little-endian, of BLAKE3 `derive_key(ORIGIN_CONTEXT, public key)` |
//!
//! A node and a daemon are both entities; a node is named on the wire by its `NodeId`, a
//! daemon by its `OriginHash`. The two derivations differ so that a daemon's origin hash
//! never collides with the node id of the same key by construction.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::identity::{Signature, SignatureError};

/// BLAKE3 key-derivation context for [`OriginHash`]. Changing it renames every daemon.
const ORIGIN_CONTEXT: &str = "netrun 2026-11 origin hash v1";

/// A node's address on the mesh: the first 8 bytes (little-endian) of BLAKE3 of its public key.
///
/// Shown as 16 lowercase hex digits, so that JSON consumers never lose precision.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
pub struct NodeId(pub u64);

/// An entity's ed25519 public key (a node, a daemon or an operator).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EntityId(pub [u8; 32]);

/// A daemon's stable name: a u64 projection of its public key that survives restarts and moves.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
pub struct OriginHash(pub u64);

impl NodeId {
    /// Derives the node id of a public key.
    pub fn from_public_key(public_key: &[u8; 32]) -> Self {
        let hash = blake3::hash(public_key);
        Self(first_u64_le(hash.as_bytes()))
    }

    /// The raw value.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// Parses 16 hex digits (the [`Display`](fmt::Display) form) or a decimal number.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        if text.len() == 16 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            u64::from_str_radix(text, 16).ok().map(Self)
        } else {
            text.parse().ok().map(Self)
        }
    }
}

impl EntityId {
    /// The raw public key bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The node id this key has when it names a node.
    pub fn node_id(&self) -> NodeId {
        NodeId::from_public_key(&self.0)
    }

    /// The origin hash this key has when it names a daemon.
    pub fn origin_hash(&self) -> OriginHash {
        OriginHash::from_public_key(&self.0)
    }

    /// Verifies an ed25519 signature made by this entity over `message`.
    pub fn verify(&self, message: &[u8], signature: &Signature) -> Result<(), SignatureError> {
        crate::identity::verify(&self.0, message, signature)
    }

    /// The X25519 (Montgomery) form of this key, used as the Noise static public key.
    ///
    /// Fails when the bytes are not a valid Edwards point.
    pub fn x25519_public(&self) -> Result<[u8; 32], SignatureError> {
        crate::identity::x25519_public_of(&self.0)
    }

    /// Parses 64 hex digits.
    pub fn from_hex(text: &str) -> Option<Self> {
        from_hex(text.trim()).map(Self)
    }

    /// 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        to_hex(&self.0)
    }
}

impl OriginHash {
    /// Derives the origin hash of a public key.
    pub fn from_public_key(public_key: &[u8; 32]) -> Self {
        let derived = blake3::derive_key(ORIGIN_CONTEXT, public_key);
        Self(first_u64_le(&derived))
    }

    /// The raw value.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({:016x})", self.0)
    }
}

impl fmt::Display for OriginHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for OriginHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OriginHash({:016x})", self.0)
    }
}

impl fmt::Display for EntityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for EntityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EntityId({})", self.to_hex())
    }
}

fn first_u64_le(bytes: &[u8; 32]) -> u64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&bytes[..8]);
    u64::from_le_bytes(first)
}

/// Lowercase hex digits of `bytes`, two per byte.
pub(crate) fn to_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(2 * bytes.len());
    for &b in bytes {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    s
}

/// Exactly `2 * N` hex digits (either case) as `N` bytes.
pub(crate) fn from_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let digits = text.as_bytes();
    if digits.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (slot, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        *slot = (hex_val(pair[0])? << 4) | hex_val(pair[1])?;
    }
    Some(out)
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_id_parses_its_display_form() {
        let id = NodeId(0x0123_4567_89ab_cdef);
        assert_eq!(id.to_string(), "0123456789abcdef");
        assert_eq!(NodeId::parse(&id.to_string()), Some(id));
        assert_eq!(NodeId::parse("42"), Some(NodeId(42)));
        assert_eq!(NodeId::parse("zz"), None);
    }

    #[test]
    fn entity_hex_round_trip() {
        let e = EntityId([0xa5; 32]);
        assert_eq!(EntityId::from_hex(&e.to_hex()), Some(e));
        assert_eq!(EntityId::from_hex("00"), None);
        assert_eq!(EntityId::from_hex(&"g".repeat(64)), None);
    }

    #[test]
    fn node_id_and_origin_hash_differ_for_one_key() {
        let key = [7u8; 32];
        assert_ne!(
            NodeId::from_public_key(&key).0,
            OriginHash::from_public_key(&key).0
        );
    }
}
