//! The mesh fingerprint: a public tag that tells meshes apart on a shared LAN or broker.
//!
//! LAN and broker discovery (mDNS, MQTT) advertise to everyone who listens, so nodes of
//! different meshes on one network must be able to ignore each other before they try a
//! handshake that would fail anyway. The tag they compare is derived from the mesh PSK with
//! a domain-separated BLAKE3 key derivation, truncated to 128 bits:
//!
//! ```text
//! fingerprint = BLAKE3.derive_key("netrun 2026-11 mesh fingerprint v1", psk)[..16]
//! ```
//!
//! The derivation is one-way, so publishing the fingerprint reveals nothing about the PSK;
//! it does let an observer link nodes of the same mesh, which is the point. It is *not* an
//! authenticator: anyone can copy it. The Noise handshake with the PSK is what admits a peer.

use std::fmt;

use crate::ids::{from_hex, to_hex};

/// BLAKE3 key-derivation context. Changing it changes every mesh's fingerprint, so LAN and
/// broker discovery between old and new builds would stop matching.
const FINGERPRINT_CONTEXT: &str = "netrun 2026-11 mesh fingerprint v1";

/// Length of a fingerprint: 128 bits makes an accidental match between two meshes
/// negligible while keeping TXT records and topic names short (32 hex digits).
pub const MESH_FINGERPRINT_LEN: usize = 16;

/// A public, PSK-derived tag naming one mesh (see the module docs).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MeshFingerprint(pub [u8; MESH_FINGERPRINT_LEN]);

impl MeshFingerprint {
    /// Derives the fingerprint of a mesh PSK.
    pub fn from_psk(psk: &[u8; 32]) -> Self {
        let derived = blake3::derive_key(FINGERPRINT_CONTEXT, psk);
        let mut out = [0u8; MESH_FINGERPRINT_LEN];
        out.copy_from_slice(&derived[..MESH_FINGERPRINT_LEN]);
        Self(out)
    }

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; MESH_FINGERPRINT_LEN] {
        &self.0
    }

    /// 32 lowercase hex digits (the form used in TXT records and MQTT topics).
    pub fn to_hex(&self) -> String {
        to_hex(&self.0)
    }

    /// Parses exactly 32 hex digits (either case).
    pub fn from_hex(text: &str) -> Option<Self> {
        from_hex(text).map(Self)
    }
}

impl fmt::Display for MeshFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for MeshFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MeshFingerprint({})", self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn derivation_is_domain_separated_and_stable() {
        let psk = [0x42; 32];
        let fp = MeshFingerprint::from_psk(&psk);
        assert_eq!(fp, MeshFingerprint::from_psk(&psk));
        assert_ne!(fp, MeshFingerprint::from_psk(&[0x43; 32]));
        // Not a prefix of the PSK, nor of its plain BLAKE3 hash.
        assert_ne!(&fp.0[..], &psk[..MESH_FINGERPRINT_LEN]);
        assert_ne!(
            &fp.0[..],
            &blake3::hash(&psk).as_bytes()[..MESH_FINGERPRINT_LEN]
        );
        let expected = blake3::derive_key("netrun 2026-11 mesh fingerprint v1", &psk);
        assert_eq!(&fp.0[..], &expected[..MESH_FINGERPRINT_LEN]);
    }

    #[test]
    fn hex_rejects_bad_input() {
        assert_eq!(MeshFingerprint::from_hex(""), None);
        assert_eq!(MeshFingerprint::from_hex(&"0".repeat(31)), None);
        assert_eq!(MeshFingerprint::from_hex(&"0".repeat(33)), None);
        assert_eq!(MeshFingerprint::from_hex(&"g".repeat(32)), None);
        assert_eq!(
            MeshFingerprint::from_hex(&"AB".repeat(16)),
            Some(MeshFingerprint([0xab; 16]))
        );
    }

    proptest! {
        #[test]
        fn hex_round_trip(bytes: [u8; 16]) {
            let fp = MeshFingerprint(bytes);
            prop_assert_eq!(MeshFingerprint::from_hex(&fp.to_hex()), Some(fp));
        }

        #[test]
        fn from_hex_never_panics(text in ".{0,40}") {
            let _ = MeshFingerprint::from_hex(&text);
        }
    }
}
