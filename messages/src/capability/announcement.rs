//! Signed capability announcements: how a node tells the mesh what it offers.
//!
//! Wire layout: see [`CapabilityAnnouncement`].
//!
//! The signed bytes are a prefix of the encoding, so a receiver verifies exactly what it
//! decoded; only `hop_count`, which forwarders rewrite, sits outside them.

use thiserror::Error;

use super::{CapabilityError, CapabilitySet, FORMAT_VERSION, MAX_SET_LEN};
use crate::error::DecodeError;
use crate::identity::{Identity, Signature};
use crate::ids::{EntityId, NodeId};
use crate::reader::Reader;

/// Fixed part of an announcement (everything but the set bytes).
const ANNOUNCE_FIXED_LEN: usize = 1 + 8 + 32 + 8 + 8 + 4 + 2 + 64 + 1;
/// Largest encoded [`CapabilityAnnouncement`].
pub const MAX_ANNOUNCEMENT_LEN: usize = ANNOUNCE_FIXED_LEN + MAX_SET_LEN;
/// Domain-separation prefix of the announcement signature.
const ANNOUNCE_TAG: &[u8; 24] = b"netrun announcement v1\0\0";

/// Why an announcement was refused.
#[derive(Debug, Error)]
pub enum AnnouncementError {
    /// The format byte is not one this build speaks.
    #[error("unknown announcement format {0}")]
    UnknownVersion(u8),
    /// The bytes are not a well-formed announcement.
    #[error("malformed announcement: {0}")]
    Decode(#[from] DecodeError),
    /// The capability set breaks a limit (encoding side).
    #[error("oversize capability set: {0}")]
    Oversize(#[from] CapabilityError),
    /// The claimed node id is not the signer's.
    #[error("announced node id {claimed} is not the signer's {derived}")]
    NodeIdMismatch {
        /// The `node_id` field.
        claimed: NodeId,
        /// `entity_id.node_id()`.
        derived: NodeId,
    },
    /// The signature does not verify under `entity_id`.
    #[error("announcement signature does not verify")]
    BadSignature,
}

/// A node's signed statement of its capabilities.
///
/// ```text
///   1  format = 1
///   8  node_id u64           must equal entity_id.node_id()
///  32  entity_id             the signer
///   8  version u64           monotonic per node
///   8  announced_at_unix u64
///   4  ttl_secs u32
///   2  set_len u16           ≤ MAX_SET_LEN
///   n  CapabilitySet encoding
///  64  signature             ed25519 over ANNOUNCE_TAG ‖ every byte before the signature
///   1  hop_count             not signed: forwarders bump it
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapabilityAnnouncement {
    /// The announcing node; must equal `entity_id.node_id()`.
    pub node_id: NodeId,
    /// The signer's public key.
    pub entity_id: EntityId,
    /// Monotonic per node: a receiver keeps the highest version it has seen.
    pub version: u64,
    /// When it was signed (unix seconds).
    pub announced_at_unix: u64,
    /// How long receivers may keep it.
    pub ttl_secs: u32,
    /// What the node offers.
    pub capabilities: CapabilitySet,
    /// Hops travelled. Not signed: each forwarder adds one.
    pub hop_count: u8,
    /// ed25519 signature by `entity_id` over the signed prefix (see the layout above).
    pub signature: Signature,
}

impl CapabilityAnnouncement {
    /// Signs an announcement of `capabilities` by `identity` (hop count 0).
    pub fn sign(
        identity: &Identity,
        version: u64,
        now_unix: u64,
        ttl_secs: u32,
        capabilities: CapabilitySet,
    ) -> Result<Self, AnnouncementError> {
        let mut announcement = Self {
            node_id: identity.node_id(),
            entity_id: identity.entity_id(),
            version,
            announced_at_unix: now_unix,
            ttl_secs,
            capabilities,
            hop_count: 0,
            signature: Signature([0; 64]),
        };
        let message = announcement.signed_message()?;
        announcement.signature = identity.sign(&message);
        Ok(announcement)
    }

    /// Encoded size, or the limit the capability set breaks.
    pub fn encoded_len(&self) -> Result<usize, CapabilityError> {
        Ok(ANNOUNCE_FIXED_LEN + self.capabilities.encoded_len()?)
    }

    /// The encoding (see [`CapabilityAnnouncement`]).
    pub fn to_bytes(&self) -> Result<Vec<u8>, CapabilityError> {
        let set_len = self.capabilities.encoded_len()?;
        let mut out = Vec::with_capacity(ANNOUNCE_FIXED_LEN + set_len);
        self.write_signed_part(&mut out, set_len);
        out.extend_from_slice(&self.signature.0);
        out.push(self.hop_count);
        Ok(out)
    }

    /// Decodes an announcement. Does not verify it: call [`CapabilityAnnouncement::verify`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, AnnouncementError> {
        if bytes.len() > MAX_ANNOUNCEMENT_LEN {
            return Err(DecodeError::TooLong {
                what: "announcement",
                len: bytes.len(),
                max: MAX_ANNOUNCEMENT_LEN,
            }
            .into());
        }
        let mut r = Reader::new(bytes);
        let format = r.u8()?;
        if format != FORMAT_VERSION {
            return Err(AnnouncementError::UnknownVersion(format));
        }
        let node_id = NodeId(r.u64()?);
        let entity_id = EntityId(r.array::<32>()?);
        let version = r.u64()?;
        let announced_at_unix = r.u64()?;
        let ttl_secs = r.u32()?;
        let set_len = r.u16()? as usize;
        let capabilities = CapabilitySet::from_bytes(r.take(set_len)?)?;
        let signature = Signature(r.array::<64>()?);
        let hop_count = r.u8()?;
        r.finish()?;
        Ok(Self {
            node_id,
            entity_id,
            version,
            announced_at_unix,
            ttl_secs,
            capabilities,
            hop_count,
            signature,
        })
    }

    /// Checks that the claimed node id is the signer's and that the signature verifies.
    pub fn verify(&self) -> Result<(), AnnouncementError> {
        let derived = self.entity_id.node_id();
        if self.node_id != derived {
            return Err(AnnouncementError::NodeIdMismatch {
                claimed: self.node_id,
                derived,
            });
        }
        let message = self.signed_message()?;
        self.entity_id
            .verify(&message, &self.signature)
            .map_err(|_| AnnouncementError::BadSignature)
    }

    /// Whether the announcement is past its TTL at `now_unix`.
    pub fn is_expired(&self, now_unix: u64) -> bool {
        now_unix
            >= self
                .announced_at_unix
                .saturating_add(u64::from(self.ttl_secs))
    }

    fn signed_message(&self) -> Result<Vec<u8>, CapabilityError> {
        let set_len = self.capabilities.encoded_len()?;
        let mut message = Vec::with_capacity(ANNOUNCE_TAG.len() + ANNOUNCE_FIXED_LEN + set_len);
        message.extend_from_slice(ANNOUNCE_TAG);
        self.write_signed_part(&mut message, set_len);
        Ok(message)
    }

    fn write_signed_part(&self, out: &mut Vec<u8>, set_len: usize) {
        out.push(FORMAT_VERSION);
        out.extend_from_slice(&self.node_id.0.to_le_bytes());
        out.extend_from_slice(&self.entity_id.0);
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&self.announced_at_unix.to_le_bytes());
        out.extend_from_slice(&self.ttl_secs.to_le_bytes());
        // set_len ≤ MAX_SET_LEN < u16::MAX, checked by encoded_len.
        out.extend_from_slice(&(set_len as u16).to_le_bytes());
        self.capabilities.write(out);
    }
}

#[cfg(test)]
mod tests {
    use super::super::{GpuInfo, GpuVendor, Hardware, MAX_TAGS};
    use super::*;

    fn gpu_box() -> CapabilitySet {
        CapabilitySet::new()
            .with_tag("nrpc:inference")
            .with_hardware(
                Hardware::new(16, 32)
                    .with_memory_gb(128)
                    .with_gpu(GpuInfo::new(GpuVendor::Nvidia, "RTX 4090", 24)),
            )
    }

    #[test]
    fn announcement_sign_verify_and_forgeries() {
        let id = Identity::from_seed([5; 32]);
        let ann =
            CapabilityAnnouncement::sign(&id, 3, 1_800_000_000, 300, gpu_box()).expect("signs");
        assert_eq!(ann.node_id, id.node_id());
        ann.verify().expect("verifies");
        let bytes = ann.to_bytes().expect("encodes");
        assert_eq!(ann.encoded_len(), Ok(bytes.len()));
        let back = CapabilityAnnouncement::from_bytes(&bytes).expect("decodes");
        assert_eq!(back, ann);
        back.verify().expect("verifies after decode");

        // hop_count is outside the signature.
        let mut hopped = back.clone();
        hopped.hop_count = 7;
        hopped.verify().expect("forwarded copy still verifies");

        // Changed capabilities: bad signature.
        let mut widened = ann.clone();
        widened.capabilities.hardware.memory_gb = 4096;
        assert!(matches!(
            widened.verify(),
            Err(AnnouncementError::BadSignature)
        ));
        let mut bent = bytes.clone();
        let sig_at = bytes.len() - 65;
        bent[sig_at] ^= 1;
        let bent = CapabilityAnnouncement::from_bytes(&bent).expect("decodes");
        assert!(matches!(
            bent.verify(),
            Err(AnnouncementError::BadSignature)
        ));

        // Claimed node id is not the signer's, even if the signer signed it.
        let other = Identity::from_seed([6; 32]);
        let mut lying = ann.clone();
        lying.node_id = other.node_id();
        assert!(matches!(
            lying.verify(),
            Err(AnnouncementError::NodeIdMismatch { .. })
        ));
        // Someone else's key over our node id.
        let mut swapped = ann.clone();
        swapped.entity_id = other.entity_id();
        assert!(matches!(
            swapped.verify(),
            Err(AnnouncementError::NodeIdMismatch { .. })
        ));
        swapped.node_id = other.node_id();
        assert!(matches!(
            swapped.verify(),
            Err(AnnouncementError::BadSignature)
        ));

        let mut v = bytes.clone();
        v[0] = 9;
        assert!(matches!(
            CapabilityAnnouncement::from_bytes(&v),
            Err(AnnouncementError::UnknownVersion(9))
        ));
        let mut v = bytes.clone();
        v.push(0);
        assert!(CapabilityAnnouncement::from_bytes(&v).is_err());
        for cut in 0..bytes.len() {
            assert!(CapabilityAnnouncement::from_bytes(&bytes[..cut]).is_err());
        }
        assert!(matches!(
            CapabilityAnnouncement::from_bytes(&vec![1; MAX_ANNOUNCEMENT_LEN + 1]),
            Err(AnnouncementError::Decode(DecodeError::TooLong { .. }))
        ));
    }

    #[test]
    fn announcement_oversize_and_expiry() {
        let id = Identity::from_seed([5; 32]);
        let mut huge = CapabilitySet::new();
        for i in 0..=MAX_TAGS {
            huge.tags.insert(format!("t{i}"));
        }
        assert!(matches!(
            CapabilityAnnouncement::sign(&id, 1, 0, 10, huge),
            Err(AnnouncementError::Oversize(_))
        ));
        let ann =
            CapabilityAnnouncement::sign(&id, 1, 100, 10, CapabilitySet::new()).expect("signs");
        assert!(!ann.is_expired(109));
        assert!(ann.is_expired(110));
        let mut stretched = ann.clone();
        stretched.announced_at_unix = u64::MAX;
        assert!(!stretched.is_expired(u64::MAX - 1));
    }
}
