//! The signed payload of MQTT discovery: an announce (here I am, try these addresses) or a
//! goodbye (I am leaving), published under `netrun/<mesh>/nodes/<node>/{announce,goodbye}`.
//!
//! The broker is not trusted: it can drop, delay or replay messages, but it cannot make up
//! a peer, because every payload is signed by the node it names and the node id must be
//! the one derived from the signing key. The payload also names the mesh fingerprint and a
//! per-process *incarnation*, so a signed message cannot be moved to another mesh's topics,
//! and a goodbye (the last will, fixed when the process connects) only ends the
//! incarnation that wrote it, never a later restart of the same node.
//!
//! Layout (little-endian, hand-encoded like the other discovery messages; see
//! `docs/protocol/discovery-lan.md`):
//!
//! | off | size | field |
//! |---:|---:|---|
//! | 0 | 1 | version = 1 |
//! | 1 | 1 | kind: 1 announce, 2 goodbye |
//! | 2 | 1 | address count, ≤ [`MAX_ANNOUNCE_ADDRS`]; 0 for a goodbye |
//! | 3 | 1 | reserved, zero |
//! | 4 | 8 | node id |
//! | 12 | 32 | ed25519 public key |
//! | 44 | 16 | mesh fingerprint |
//! | 60 | 8 | incarnation |
//! | 68 | 8 | issued_at_ms (signer's wall clock, ms since the Unix epoch) |
//! | 76 | … | addresses: family byte (4 or 6), IP, port (u16) |
//! | end−64 | 64 | ed25519 signature over `"netrun mqtt announce v1\0"` ‖ bytes 0..end−64 |

use std::net::SocketAddr;

use thiserror::Error;

use crate::discovery::{put_socket_addr, read_socket_addr, socket_addr_len};
use crate::error::DecodeError;
use crate::identity::{Identity, Signature, SignatureError};
use crate::ids::{EntityId, NodeId};
use crate::mesh_fingerprint::{MESH_FINGERPRINT_LEN, MeshFingerprint};
use crate::reader::Reader;

/// Version byte of an MQTT discovery payload.
pub const MQTT_ANNOUNCE_VERSION: u8 = 1;
/// Most addresses one announce carries: a v4 and a v6 per interface for a few interfaces.
pub const MAX_ANNOUNCE_ADDRS: usize = 8;
/// Size of everything before the addresses.
const FIXED_LEN: usize = 76;
/// Largest encoded payload (every address IPv6); anything longer is refused unread.
pub const MAX_MQTT_ANNOUNCE_LEN: usize = FIXED_LEN + MAX_ANNOUNCE_ADDRS * 19 + 64;
/// Smallest encoded payload (no addresses).
pub const MIN_MQTT_ANNOUNCE_LEN: usize = FIXED_LEN + 64;

const KIND_ANNOUNCE: u8 = 1;
const KIND_GOODBYE: u8 = 2;
const SIGNING_CONTEXT: &[u8] = b"netrun mqtt announce v1\0";

/// Whether a payload says hello or goodbye.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AnnounceKind {
    /// The node is reachable at the listed addresses (published retained).
    Announce,
    /// The node's incarnation has ended (a clean shutdown or the broker-sent last will).
    Goodbye,
}

/// A signed MQTT discovery payload (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttAnnounce {
    /// Hello or goodbye.
    pub kind: AnnounceKind,
    /// The signer's node id; must derive from `public_key`.
    pub node: NodeId,
    /// The signer's ed25519 public key.
    pub public_key: EntityId,
    /// The mesh the signer belongs to.
    pub mesh: MeshFingerprint,
    /// Chosen at random by the signer's process; a goodbye ends only this incarnation.
    pub incarnation: u64,
    /// The signer's wall clock at signing, in milliseconds since the Unix epoch.
    pub issued_at_ms: u64,
    /// Addresses to try, best first; at most [`MAX_ANNOUNCE_ADDRS`], none in a goodbye.
    pub addrs: Vec<SocketAddr>,
    /// ed25519 signature over the domain-separated encoding of everything above.
    pub signature: Signature,
}

/// Why an MQTT discovery payload could not be built or was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum MqttAnnounceError {
    /// More addresses than [`MAX_ANNOUNCE_ADDRS`].
    #[error("announce has {0} addresses, more than allowed")]
    TooManyAddrs(usize),
    /// A goodbye carries addresses.
    #[error("goodbye carries addresses")]
    GoodbyeWithAddrs,
    /// The node id does not derive from the public key.
    #[error("node id does not match the public key")]
    NodeIdMismatch,
    /// The signature does not verify under the public key.
    #[error("announce signature: {0}")]
    Signature(#[from] SignatureError),
}

impl MqttAnnounce {
    /// Signs an announce or a goodbye as `identity` at wall-clock time `issued_at_ms`.
    pub fn sign(
        identity: &Identity,
        kind: AnnounceKind,
        mesh: MeshFingerprint,
        incarnation: u64,
        issued_at_ms: u64,
        addrs: Vec<SocketAddr>,
    ) -> Result<Self, MqttAnnounceError> {
        check_addrs(kind, &addrs)?;
        let mut msg = Self {
            kind,
            node: identity.node_id(),
            public_key: identity.entity_id(),
            mesh,
            incarnation,
            issued_at_ms,
            addrs,
            signature: Signature([0; 64]),
        };
        let mut signed = SIGNING_CONTEXT.to_vec();
        msg.encode_unsigned(&mut signed);
        msg.signature = identity.sign(&signed);
        Ok(msg)
    }

    /// Checks the node id against the key and the signature against the contents.
    ///
    /// It does not check the mesh, the topic or the time: the receiver compares those
    /// with its own configuration and clock.
    pub fn verify(&self) -> Result<(), MqttAnnounceError> {
        check_addrs(self.kind, &self.addrs)?;
        if self.public_key.node_id() != self.node {
            return Err(MqttAnnounceError::NodeIdMismatch);
        }
        let mut signed = SIGNING_CONTEXT.to_vec();
        self.encode_unsigned(&mut signed);
        self.public_key.verify(&signed, &self.signature)?;
        Ok(())
    }

    /// Encoded size.
    pub fn encoded_len(&self) -> usize {
        FIXED_LEN + self.addrs_len() + 64
    }

    /// Encodes the payload with its signature.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode_unsigned(&mut out);
        out.extend_from_slice(&self.signature.0);
        out
    }

    /// Decodes a payload (the signature is not checked here; call [`verify`](Self::verify)).
    ///
    /// Refuses anything longer than [`MAX_MQTT_ANNOUNCE_LEN`] before reading it, unknown
    /// versions and kinds, too many addresses, addresses in a goodbye, non-zero reserved
    /// bytes and trailing bytes.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        if buf.len() > MAX_MQTT_ANNOUNCE_LEN {
            return Err(DecodeError::TooLong {
                what: "mqtt announce",
                len: buf.len(),
                max: MAX_MQTT_ANNOUNCE_LEN,
            });
        }
        let mut r = Reader::new(buf);
        r.version(MQTT_ANNOUNCE_VERSION, "mqtt announce")?;
        let kind = match r.u8()? {
            KIND_ANNOUNCE => AnnounceKind::Announce,
            KIND_GOODBYE => AnnounceKind::Goodbye,
            _ => return Err(DecodeError::Invalid("mqtt announce kind")),
        };
        let count = usize::from(r.u8()?);
        if count > MAX_ANNOUNCE_ADDRS {
            return Err(DecodeError::TooLong {
                what: "mqtt announce addresses",
                len: count,
                max: MAX_ANNOUNCE_ADDRS,
            });
        }
        if kind == AnnounceKind::Goodbye && count != 0 {
            return Err(DecodeError::Invalid("goodbye with addresses"));
        }
        r.reserved::<1>("mqtt announce")?;
        let node = NodeId(r.u64()?);
        let public_key = EntityId(r.array::<32>()?);
        let mesh = MeshFingerprint(r.array::<MESH_FINGERPRINT_LEN>()?);
        let incarnation = r.u64()?;
        let issued_at_ms = r.u64()?;
        let mut addrs = Vec::with_capacity(count);
        for _ in 0..count {
            addrs.push(read_socket_addr(&mut r)?);
        }
        let signature = Signature(r.array::<64>()?);
        r.finish()?;
        Ok(Self {
            kind,
            node,
            public_key,
            mesh,
            incarnation,
            issued_at_ms,
            addrs,
            signature,
        })
    }

    fn addrs_len(&self) -> usize {
        self.addrs
            .iter()
            .take(MAX_ANNOUNCE_ADDRS)
            .map(socket_addr_len)
            .sum()
    }

    /// Everything but the signature. Addresses beyond the limit are left out (a signed
    /// message never has them: [`sign`](Self::sign) refuses them).
    fn encode_unsigned(&self, out: &mut Vec<u8>) {
        let addrs = match self.kind {
            AnnounceKind::Announce => &self.addrs[..self.addrs.len().min(MAX_ANNOUNCE_ADDRS)],
            AnnounceKind::Goodbye => &[][..],
        };
        out.push(MQTT_ANNOUNCE_VERSION);
        out.push(match self.kind {
            AnnounceKind::Announce => KIND_ANNOUNCE,
            AnnounceKind::Goodbye => KIND_GOODBYE,
        });
        out.push(addrs.len() as u8);
        out.push(0);
        out.extend_from_slice(&self.node.0.to_le_bytes());
        out.extend_from_slice(&self.public_key.0);
        out.extend_from_slice(&self.mesh.0);
        out.extend_from_slice(&self.incarnation.to_le_bytes());
        out.extend_from_slice(&self.issued_at_ms.to_le_bytes());
        for addr in addrs {
            put_socket_addr(out, addr);
        }
    }
}

fn check_addrs(kind: AnnounceKind, addrs: &[SocketAddr]) -> Result<(), MqttAnnounceError> {
    if addrs.len() > MAX_ANNOUNCE_ADDRS {
        return Err(MqttAnnounceError::TooManyAddrs(addrs.len()));
    }
    if kind == AnnounceKind::Goodbye && !addrs.is_empty() {
        return Err(MqttAnnounceError::GoodbyeWithAddrs);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn addr() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::from((ip, p))),
            (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::from((ip, p))),
        ]
    }

    fn mesh() -> MeshFingerprint {
        MeshFingerprint::from_psk(&[1; 32])
    }

    proptest! {
        #[test]
        fn announce_round_trip(seed: [u8; 32], inc: u64, at: u64, fp: [u8; 16],
                               addrs in proptest::collection::vec(addr(), 0..=MAX_ANNOUNCE_ADDRS)) {
            let id = Identity::from_seed(seed);
            let msg = MqttAnnounce::sign(&id, AnnounceKind::Announce, MeshFingerprint(fp), inc, at, addrs)
                .expect("in bounds");
            let bytes = msg.to_vec();
            prop_assert_eq!(bytes.len(), msg.encoded_len());
            prop_assert!(bytes.len() <= MAX_MQTT_ANNOUNCE_LEN);
            let decoded = MqttAnnounce::decode(&bytes).expect("decodes");
            prop_assert_eq!(&decoded, &msg);
            prop_assert!(decoded.verify().is_ok());
        }

        #[test]
        fn goodbye_round_trip(seed: [u8; 32], inc: u64, at: u64) {
            let id = Identity::from_seed(seed);
            let msg = MqttAnnounce::sign(&id, AnnounceKind::Goodbye, mesh(), inc, at, vec![])
                .expect("signs");
            let bytes = msg.to_vec();
            prop_assert_eq!(bytes.len(), MIN_MQTT_ANNOUNCE_LEN);
            let decoded = MqttAnnounce::decode(&bytes).expect("decodes");
            prop_assert_eq!(&decoded, &msg);
            prop_assert!(decoded.verify().is_ok());
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            if let Ok(msg) = MqttAnnounce::decode(&bytes) {
                prop_assert_eq!(msg.to_vec(), bytes);
                let _ = msg.verify();
            }
        }

        #[test]
        fn any_flipped_bit_breaks_the_signature(byte in 0usize..MIN_MQTT_ANNOUNCE_LEN + 7, bit in 0u8..8) {
            let id = Identity::from_seed([5; 32]);
            let msg = MqttAnnounce::sign(&id, AnnounceKind::Announce, mesh(), 9, 1_000,
                vec!["10.0.0.1:4000".parse().expect("addr")]).expect("signs");
            let mut bytes = msg.to_vec();
            bytes[byte] ^= 1 << bit;
            if let Ok(bent) = MqttAnnounce::decode(&bytes) {
                prop_assert!(bent.verify().is_err());
            }
        }
    }

    #[test]
    fn forged_announces_are_refused() {
        let honest = Identity::from_seed([1; 32]);
        let forger = Identity::from_seed([2; 32]);
        let addrs = vec!["192.0.2.1:7000".parse().expect("addr")];
        let msg = MqttAnnounce::sign(&forger, AnnounceKind::Announce, mesh(), 1, 5, addrs.clone())
            .expect("signs");

        // Claiming the honest node's id with the forger's key: the id does not derive.
        let mut relabelled = msg.clone();
        relabelled.node = honest.node_id();
        assert_eq!(relabelled.verify(), Err(MqttAnnounceError::NodeIdMismatch));

        // Claiming the honest node's id and key with the forger's signature.
        let mut stolen = msg.clone();
        stolen.node = honest.node_id();
        stolen.public_key = honest.entity_id();
        assert_eq!(
            stolen.verify(),
            Err(MqttAnnounceError::Signature(SignatureError::Invalid))
        );

        // Moving a signed announce to another mesh or incarnation, or turning it into a goodbye.
        let mut moved = msg.clone();
        moved.mesh = MeshFingerprint::from_psk(&[2; 32]);
        assert!(moved.verify().is_err());
        let mut reborn = msg.clone();
        reborn.incarnation = 2;
        assert!(reborn.verify().is_err());
        let mut turned = msg;
        turned.kind = AnnounceKind::Goodbye;
        turned.addrs.clear();
        assert!(turned.verify().is_err());
    }

    #[test]
    fn bounds_are_enforced_before_reading() {
        let id = Identity::from_seed([3; 32]);
        let many = vec!["10.0.0.1:1".parse().expect("addr"); MAX_ANNOUNCE_ADDRS + 1];
        assert_eq!(
            MqttAnnounce::sign(&id, AnnounceKind::Announce, mesh(), 1, 1, many),
            Err(MqttAnnounceError::TooManyAddrs(MAX_ANNOUNCE_ADDRS + 1))
        );
        let one = vec!["10.0.0.1:1".parse().expect("addr")];
        assert_eq!(
            MqttAnnounce::sign(&id, AnnounceKind::Goodbye, mesh(), 1, 1, one),
            Err(MqttAnnounceError::GoodbyeWithAddrs)
        );
        let msg =
            MqttAnnounce::sign(&id, AnnounceKind::Announce, mesh(), 1, 1, vec![]).expect("signs");
        let mut bytes = msg.to_vec();
        bytes[2] = (MAX_ANNOUNCE_ADDRS + 1) as u8;
        assert!(matches!(
            MqttAnnounce::decode(&bytes),
            Err(DecodeError::TooLong { .. })
        ));
        let huge = vec![0u8; MAX_MQTT_ANNOUNCE_LEN + 1];
        assert!(matches!(
            MqttAnnounce::decode(&huge),
            Err(DecodeError::TooLong { .. })
        ));
        let mut trailing = msg.to_vec();
        trailing.push(0);
        assert!(matches!(
            MqttAnnounce::decode(&trailing),
            Err(DecodeError::TrailingBytes(1))
        ));
        let mut reserved = msg.to_vec();
        reserved[3] = 1;
        assert!(matches!(
            MqttAnnounce::decode(&reserved),
            Err(DecodeError::Reserved(_))
        ));
        assert!(matches!(
            MqttAnnounce::decode(&[]),
            Err(DecodeError::Truncated { .. })
        ));
    }
}
