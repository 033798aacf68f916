//! 256-bit ids, XOR distance, bucket indices and namespaced keys.

use std::fmt;

use netrun_messages::NodeId;
use netrun_messages::discovery::DhtId;
use thiserror::Error;

/// XOR distance between two ids, compared as a 256-bit big-endian number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Distance(pub [u8; 32]);

impl Distance {
    /// Leading zero bits (256 for the zero distance).
    pub fn leading_zeros(&self) -> u32 {
        let mut n = 0;
        for b in self.0 {
            if b != 0 {
                return n + b.leading_zeros();
            }
            n += 8;
        }
        n
    }
}

/// The XOR distance between `a` and `b`.
#[inline]
pub fn xor_distance(a: &DhtId, b: &DhtId) -> Distance {
    let mut d = [0u8; 32];
    for (i, out) in d.iter_mut().enumerate() {
        *out = a.0[i] ^ b.0[i];
    }
    Distance(d)
}

/// The k-bucket `other` belongs in, seen from `local`: `i` such that the distance lies in
/// `[2^i, 2^(i+1))`, i.e. `255 - leading_zeros`. `None` for `other == local`.
pub fn bucket_index(local: &DhtId, other: &DhtId) -> Option<usize> {
    let lz = xor_distance(local, other).leading_zeros();
    (lz < 256).then(|| 255 - lz as usize)
}

/// An id at a distance in bucket `index` from `local`, with the lower bits from `noise`.
pub fn id_in_bucket(local: &DhtId, index: usize, noise: &[u8; 32]) -> DhtId {
    let index = index.min(255);
    let mut d = *noise;
    let byte = 31 - index / 8;
    let bit = index % 8;
    for b in d.iter_mut().take(byte) {
        *b = 0;
    }
    let mask = (1u16 << (bit + 1)) as u8;
    d[byte] = (d[byte] & mask.wrapping_sub(1)) | (1 << bit);
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = local.0[i] ^ d[i];
    }
    DhtId(out)
}

/// Longest namespaced key string accepted.
pub const MAX_KEY_LEN: usize = 512;

/// A DHT key `{mesh_prefix}:{key_type}:{key}`; its 256-bit id is BLAKE3 of that string, so
/// the same key under two meshes names two unrelated ids.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NamespacedKey {
    text: String,
}

/// Why a namespaced key was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum KeyError {
    /// The mesh prefix or key type is empty.
    #[error("empty {0}")]
    Empty(&'static str),
    /// The mesh prefix or key type contains `:`, which would make the string ambiguous.
    #[error("{0} contains ':'")]
    Separator(&'static str),
    /// The whole key is longer than [`MAX_KEY_LEN`].
    #[error("key is {0} bytes, longer than allowed")]
    TooLong(usize),
}

impl NamespacedKey {
    /// Builds `{mesh_prefix}:{key_type}:{key}`. The prefix and type are non-empty and free
    /// of `:`; the key may contain anything.
    pub fn new(mesh_prefix: &str, key_type: &str, key: &str) -> Result<Self, KeyError> {
        for (what, part) in [("mesh prefix", mesh_prefix), ("key type", key_type)] {
            if part.is_empty() {
                return Err(KeyError::Empty(what));
            }
            if part.contains(':') {
                return Err(KeyError::Separator(what));
            }
        }
        let text = format!("{mesh_prefix}:{key_type}:{key}");
        if text.len() > MAX_KEY_LEN {
            return Err(KeyError::TooLong(text.len()));
        }
        Ok(Self { text })
    }

    /// The key a node publishes its contact record under: `{mesh_prefix}:node:{node id}`.
    pub fn node_record(mesh_prefix: &str, node: NodeId) -> Result<Self, KeyError> {
        Self::new(mesh_prefix, "node", &node.to_string())
    }

    /// The 256-bit id: BLAKE3 of the string.
    pub fn id(&self) -> DhtId {
        DhtId::of_key(&self.text)
    }

    /// The string form.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for NamespacedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn id_in_bucket_lands_in_the_bucket(local: [u8; 32], noise: [u8; 32], index in 0usize..256) {
            let local = DhtId(local);
            let id = id_in_bucket(&local, index, &noise);
            prop_assert_eq!(bucket_index(&local, &id), Some(index));
        }

        #[test]
        fn xor_is_a_metric(a: [u8; 32], b: [u8; 32]) {
            let (a, b) = (DhtId(a), DhtId(b));
            prop_assert_eq!(xor_distance(&a, &a).leading_zeros(), 256);
            prop_assert_eq!(xor_distance(&a, &b), xor_distance(&b, &a));
        }
    }

    #[test]
    fn namespacing() {
        let a = NamespacedKey::new("meshA", "svc", "x:y").expect("ok");
        let b = NamespacedKey::new("meshB", "svc", "x:y").expect("ok");
        assert_eq!(a.as_str(), "meshA:svc:x:y");
        assert_ne!(a.id(), b.id());
        assert_eq!(
            NamespacedKey::new("a:b", "svc", "k"),
            Err(KeyError::Separator("mesh prefix"))
        );
        assert_eq!(
            NamespacedKey::new("a", "", "k"),
            Err(KeyError::Empty("key type"))
        );
        assert!(matches!(
            NamespacedKey::new("a", "t", &"k".repeat(600)),
            Err(KeyError::TooLong(_))
        ));
        assert_eq!(bucket_index(&DhtId([0; 32]), &DhtId([0; 32])), None);
        let mut one = [0u8; 32];
        one[31] = 1;
        assert_eq!(bucket_index(&DhtId([0; 32]), &DhtId(one)), Some(0));
        assert_eq!(bucket_index(&DhtId([0; 32]), &DhtId([0x80; 32])), Some(255));
    }
}
