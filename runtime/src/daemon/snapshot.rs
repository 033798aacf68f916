//! The daemon snapshot record: state plus where the daemon's chain and input stood, signed
//! with the daemon's key.
//!
//! ```text
//! DaemonSnapshot v1 (SNAPSHOT_FIXED_LEN = 126, then state, then signature)
//!    1  version = SNAPSHOT_VERSION
//!   32  entity: the daemon's ed25519 public key
//!   80  head: CausalLink of the last output (the canonical genesis if none yet)
//!    8  last_input_seq u64 LE: every input up to it is reflected in the state (or failed)
//!    1  flags: bit0 = state present; other bits zero
//!    4  state_len u32 LE, ≤ MAX_STATE_LEN; 0 when no state
//!    n  state
//!   64  signature: ed25519 over SNAPSHOT_TAG ‖ the 126 fixed bytes ‖ BLAKE3(state)
//! ```
//!
//! The signature covers a digest of the state rather than the state itself, so signing
//! and verifying cost the same for a 16 MiB state as for an empty one. The decoder checks
//! structure only (version, bounds, reserved bits, origin consistency, canonical genesis);
//! [`DaemonSnapshot::verify`] checks the key and the signature.

use bytes::Bytes;
use netrun_messages::causal::LINK_LEN;
use netrun_messages::error::{array_at, u32_le_at, u64_le_at};
use netrun_messages::{CausalLink, DecodeError, EntityId, Identity, OriginHash, Signature};
use thiserror::Error;

/// Version byte of the encoding this build writes and reads.
pub const SNAPSHOT_VERSION: u8 = 1;
/// Largest daemon state in a snapshot. Bounds what a decoder allocates and what a restore
/// or migration moves; a daemon with more state keeps it elsewhere (a log, a blob).
pub const MAX_STATE_LEN: usize = 16 * 1024 * 1024;
const SNAPSHOT_FIXED_LEN: usize = 1 + 32 + LINK_LEN + 8 + 1 + 4;
const SIGNATURE_LEN: usize = 64;
const SNAPSHOT_TAG: &[u8; 16] = b"netrun snap v1\0\0";
const FLAG_STATE: u8 = 1;

/// A signed snapshot of one daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonSnapshot {
    /// The daemon's public key.
    pub entity: EntityId,
    /// The last link of the daemon's chain when the snapshot was taken.
    pub head: CausalLink,
    /// The host's input sequence number the state reflects.
    pub last_input_seq: u64,
    /// The daemon's state; `None` for a stateless daemon.
    pub state: Option<Bytes>,
    /// The daemon key's signature (see the module docs).
    pub signature: Signature,
}

/// A snapshot could not be made or does not check out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum SnapshotError {
    /// The state is larger than [`MAX_STATE_LEN`].
    #[error("snapshot state of {len} bytes exceeds {max}")]
    TooLarge {
        /// The state's size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The snapshot is of another daemon.
    #[error("snapshot belongs to another daemon")]
    WrongEntity,
    /// The signature does not verify.
    #[error("snapshot signature does not verify")]
    BadSignature,
}

impl DaemonSnapshot {
    /// Makes and signs a snapshot with the daemon's identity.
    pub fn sign(
        identity: &Identity,
        head: CausalLink,
        last_input_seq: u64,
        state: Option<Bytes>,
    ) -> Result<Self, SnapshotError> {
        if head.origin != identity.origin_hash() {
            return Err(SnapshotError::WrongEntity);
        }
        let len = state.as_ref().map_or(0, Bytes::len);
        if len > MAX_STATE_LEN {
            return Err(SnapshotError::TooLarge {
                len,
                max: MAX_STATE_LEN,
            });
        }
        let mut out = Self {
            entity: identity.entity_id(),
            head,
            last_input_seq,
            state,
            signature: Signature([0; SIGNATURE_LEN]),
        };
        out.signature = identity.sign(&out.signed_message());
        Ok(out)
    }

    /// The daemon's origin hash.
    pub fn origin(&self) -> OriginHash {
        self.head.origin
    }

    /// Checks that the snapshot is `entity`'s and that its signature verifies.
    pub fn verify(&self, entity: &EntityId) -> Result<(), SnapshotError> {
        if self.entity != *entity || self.head.origin != entity.origin_hash() {
            return Err(SnapshotError::WrongEntity);
        }
        entity
            .verify(&self.signed_message(), &self.signature)
            .map_err(|_| SnapshotError::BadSignature)
    }

    /// Encoded size.
    pub fn encoded_len(&self) -> usize {
        SNAPSHOT_FIXED_LEN + self.state.as_ref().map_or(0, Bytes::len) + SIGNATURE_LEN
    }

    /// Encodes the snapshot. Fails only if the state exceeds [`MAX_STATE_LEN`].
    pub fn to_bytes(&self) -> Result<Vec<u8>, SnapshotError> {
        let len = self.state.as_ref().map_or(0, Bytes::len);
        if len > MAX_STATE_LEN {
            return Err(SnapshotError::TooLarge {
                len,
                max: MAX_STATE_LEN,
            });
        }
        let mut out = Vec::with_capacity(self.encoded_len());
        out.extend_from_slice(&self.fixed_part());
        if let Some(state) = &self.state {
            out.extend_from_slice(state);
        }
        out.extend_from_slice(&self.signature.0);
        Ok(out)
    }

    /// Decodes exactly one snapshot; checks every bound before allocating. Does not verify
    /// the signature (see [`verify`](Self::verify)).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let fixed = bytes
            .get(..SNAPSHOT_FIXED_LEN)
            .ok_or(DecodeError::Truncated {
                need: SNAPSHOT_FIXED_LEN,
                have: bytes.len(),
            })?;
        if fixed[0] != SNAPSHOT_VERSION {
            return Err(DecodeError::UnknownVersion {
                what: "daemon snapshot",
                version: fixed[0],
            });
        }
        let entity = EntityId(array_at::<32>(fixed, 1)?);
        let head = CausalLink::from_bytes(&fixed[33..33 + LINK_LEN])?;
        let at = 33 + LINK_LEN;
        let last_input_seq = u64_le_at(fixed, at)?;
        let flags = fixed[at + 8];
        let state_len = u32_le_at(fixed, at + 9)? as usize;
        if head.origin != entity.origin_hash() {
            return Err(DecodeError::Invalid(
                "snapshot origin does not match its entity",
            ));
        }
        if head.seq == 0 && !head.is_canonical_genesis() {
            return Err(DecodeError::Invalid(
                "snapshot head is a non-canonical genesis",
            ));
        }
        if flags & !FLAG_STATE != 0 {
            return Err(DecodeError::Reserved("snapshot flags"));
        }
        if state_len > MAX_STATE_LEN {
            return Err(DecodeError::TooLong {
                what: "snapshot state",
                len: state_len,
                max: MAX_STATE_LEN,
            });
        }
        let has_state = flags & FLAG_STATE != 0;
        if !has_state && state_len != 0 {
            return Err(DecodeError::Invalid("snapshot state length without state"));
        }
        let end = SNAPSHOT_FIXED_LEN + state_len + SIGNATURE_LEN;
        if bytes.len() < end {
            return Err(DecodeError::Truncated {
                need: end,
                have: bytes.len(),
            });
        }
        if bytes.len() > end {
            return Err(DecodeError::TrailingBytes(bytes.len() - end));
        }
        let state_end = SNAPSHOT_FIXED_LEN + state_len;
        let state =
            has_state.then(|| Bytes::copy_from_slice(&bytes[SNAPSHOT_FIXED_LEN..state_end]));
        Ok(Self {
            entity,
            head,
            last_input_seq,
            state,
            signature: Signature(array_at::<SIGNATURE_LEN>(bytes, state_end)?),
        })
    }

    fn fixed_part(&self) -> [u8; SNAPSHOT_FIXED_LEN] {
        let mut out = [0u8; SNAPSHOT_FIXED_LEN];
        out[0] = SNAPSHOT_VERSION;
        out[1..33].copy_from_slice(self.entity.as_bytes());
        out[33..33 + LINK_LEN].copy_from_slice(&self.head.to_bytes());
        let at = 33 + LINK_LEN;
        out[at..at + 8].copy_from_slice(&self.last_input_seq.to_le_bytes());
        out[at + 8] = if self.state.is_some() { FLAG_STATE } else { 0 };
        // Bounded by MAX_STATE_LEN (< u32::MAX), checked by every constructor and encoder.
        let len = self.state.as_ref().map_or(0, Bytes::len) as u32;
        out[at + 9..at + 13].copy_from_slice(&len.to_le_bytes());
        out
    }

    fn signed_message(&self) -> [u8; 16 + SNAPSHOT_FIXED_LEN + 32] {
        let mut out = [0u8; 16 + SNAPSHOT_FIXED_LEN + 32];
        out[..16].copy_from_slice(SNAPSHOT_TAG);
        out[16..16 + SNAPSHOT_FIXED_LEN].copy_from_slice(&self.fixed_part());
        let digest = blake3::hash(self.state.as_deref().unwrap_or_default());
        out[16 + SNAPSHOT_FIXED_LEN..].copy_from_slice(digest.as_bytes());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netrun_messages::CausalChain;
    use proptest::prelude::*;

    fn daemon() -> Identity {
        Identity::from_seed([40; 32])
    }

    #[test]
    fn signs_verifies_and_rejects() {
        let id = daemon();
        let mut chain = CausalChain::new(id.origin_hash());
        chain.append(Bytes::from_static(b"x")).expect("append");
        let snap = DaemonSnapshot::sign(&id, *chain.head(), 7, Some(Bytes::from_static(b"st")))
            .expect("sign");
        snap.verify(&id.entity_id()).expect("verifies");
        let other = Identity::from_seed([41; 32]);
        assert_eq!(
            snap.verify(&other.entity_id()),
            Err(SnapshotError::WrongEntity)
        );
        let mut tampered = snap.clone();
        tampered.state = Some(Bytes::from_static(b"sT"));
        assert_eq!(
            tampered.verify(&id.entity_id()),
            Err(SnapshotError::BadSignature)
        );
        let mut tampered = snap.clone();
        tampered.last_input_seq = 8;
        assert_eq!(
            tampered.verify(&id.entity_id()),
            Err(SnapshotError::BadSignature)
        );
        // Another daemon's head cannot be signed into our snapshot.
        assert_eq!(
            DaemonSnapshot::sign(&other, *chain.head(), 0, None),
            Err(SnapshotError::WrongEntity)
        );
        let big = Bytes::from(vec![0; MAX_STATE_LEN + 1]);
        assert!(matches!(
            DaemonSnapshot::sign(&id, *chain.head(), 0, Some(big)),
            Err(SnapshotError::TooLarge { .. })
        ));
    }

    #[test]
    fn decoder_refuses() {
        let id = daemon();
        let genesis = CausalLink::genesis(id.origin_hash());
        let snap =
            DaemonSnapshot::sign(&id, genesis, 0, Some(Bytes::from_static(b"abc"))).expect("sign");
        let bytes = snap.to_bytes().expect("encode");
        assert_eq!(bytes.len(), snap.encoded_len());
        assert_eq!(DaemonSnapshot::from_bytes(&bytes).expect("decode"), snap);

        let mut v = bytes.clone();
        v[0] = 2;
        assert!(matches!(
            DaemonSnapshot::from_bytes(&v),
            Err(DecodeError::UnknownVersion { version: 2, .. })
        ));
        let flags_at = 33 + LINK_LEN + 8;
        let mut v = bytes.clone();
        v[flags_at] |= 2;
        assert!(matches!(
            DaemonSnapshot::from_bytes(&v),
            Err(DecodeError::Reserved(_))
        ));
        let mut v = bytes.clone();
        v[flags_at + 1..flags_at + 5].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            DaemonSnapshot::from_bytes(&v),
            Err(DecodeError::TooLong { .. })
        ));
        let mut v = bytes.clone();
        v[flags_at] = 0;
        assert!(matches!(
            DaemonSnapshot::from_bytes(&v),
            Err(DecodeError::Invalid(_))
        ));
        let mut v = bytes.clone();
        v.push(0);
        assert!(matches!(
            DaemonSnapshot::from_bytes(&v),
            Err(DecodeError::TrailingBytes(1))
        ));
        assert!(matches!(
            DaemonSnapshot::from_bytes(&bytes[..bytes.len() - 1]),
            Err(DecodeError::Truncated { .. })
        ));
        assert!(DaemonSnapshot::from_bytes(&bytes[..10]).is_err());
        // The head's origin must be the entity's.
        let mut v = bytes.clone();
        v[1] ^= 1;
        assert!(matches!(
            DaemonSnapshot::from_bytes(&v),
            Err(DecodeError::Invalid(_))
        ));
        // A seq-0 head must be the canonical genesis.
        let mut v = bytes.clone();
        v[33 + 16] ^= 1;
        assert!(matches!(
            DaemonSnapshot::from_bytes(&v),
            Err(DecodeError::Invalid(_))
        ));
    }

    proptest! {
        #[test]
        fn round_trip(seed: [u8; 32], seq in 1u64.., parent: [u8; 32], input: u64,
                      state in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..512))) {
            let id = Identity::from_seed(seed);
            let head = CausalLink {
                origin: id.origin_hash(), seq, parent_hash: parent,
                payload_hash: *blake3::hash(&parent).as_bytes(),
            };
            let snap = DaemonSnapshot::sign(&id, head, input, state.map(Bytes::from)).expect("sign");
            let bytes = snap.to_bytes().expect("encode");
            prop_assert_eq!(bytes.len(), snap.encoded_len());
            let back = DaemonSnapshot::from_bytes(&bytes).expect("decode");
            prop_assert!(back.verify(&id.entity_id()).is_ok());
            prop_assert_eq!(back, snap);
        }

        #[test]
        fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            if let Ok(snap) = DaemonSnapshot::from_bytes(&bytes) {
                prop_assert_eq!(snap.to_bytes().expect("re-encodes"), bytes);
                let _ = snap.verify(&snap.entity);
            }
        }
    }
}
