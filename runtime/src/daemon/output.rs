//! What a daemon publishes ([`Output`]), its wire form, and the subscriber-side check
//! ([`ChainVerifier`]).
//!
//! ```text
//! Output v1
//!   1  version = 1
//!   1  kind: 1 = event, 2 = batch
//!   event: SignedEvent (link ‖ payload_len u32 LE ‖ payload ‖ signature 64)
//!   batch: 4  count u32 LE, 1..=MAX_BATCH_LEN
//!          count × (link 80 ‖ payload_len u32 LE ‖ payload ≤ 64 KiB)
//!          ChainHead 112 (signed; names the last event)
//! ```
//!
//! A whole output is at most [`MAX_OUTPUT_LEN`] bytes. A subscriber keeps one
//! [`ChainVerifier`] per daemon: it starts at the canonical genesis (or at a link it trusts,
//! such as a verified snapshot's head) and accepts an output only if it continues the chain
//! without a gap or fork and is signed by the daemon's key.

use netrun_messages::causal::{HEAD_LEN, LINK_LEN};
use netrun_messages::error::u32_le_at;
use netrun_messages::{
    CausalEvent, CausalLink, ChainError, ChainHead, DecodeError, EntityId, SignedEvent,
    verify_chain,
};
use thiserror::Error;

use super::config::{MAX_BATCH_EVENTS, MAX_OUTPUTS_PER_EVENT};
use super::snapshot::{DaemonSnapshot, SnapshotError};

/// Largest encoded output: a batch is sealed at its byte budget (at most 4 MiB) or carries
/// one event's outputs (bounded the same way), plus framing.
pub const MAX_OUTPUT_LEN: usize = 8 * 1024 * 1024;
/// Most events in one batch: the larger of the configurable batch size and one event's
/// outputs.
const MAX_BATCH_LEN: usize = if MAX_BATCH_EVENTS as usize > MAX_OUTPUTS_PER_EVENT {
    MAX_BATCH_EVENTS as usize
} else {
    MAX_OUTPUTS_PER_EVENT
};
const OUTPUT_VERSION: u8 = 1;
const KIND_EVENT: u8 = 1;
const KIND_BATCH: u8 = 2;
const EVENT_FIXED_LEN: usize = LINK_LEN + 4;

/// Events sealed by one signed chain head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedBatch {
    /// Consecutive events of the chain, oldest first.
    pub events: Vec<CausalEvent>,
    /// The daemon's signature over the last event's link.
    pub head: ChainHead,
}

/// One unit a daemon host publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// One event with its own signature ([`ChainSigning::PerEvent`](super::ChainSigning)).
    Event(SignedEvent),
    /// A batch under one signed head ([`ChainSigning::Batch`](super::ChainSigning)).
    Batch(SignedBatch),
}

/// A subscriber's verifier of one daemon's outputs.
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    signer: EntityId,
    last: CausalLink,
    verified: u64,
}

/// Why an output was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum VerifyError {
    /// The output does not continue the chain, or is not signed by the daemon.
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// The output starts at or before what is already verified: a duplicate or a replay.
    #[error("output at seq {seq} is not after the verified seq {last}")]
    Stale {
        /// The output's first seq.
        seq: u64,
        /// The last verified seq.
        last: u64,
    },
    /// A batch without events.
    #[error("empty batch")]
    EmptyBatch,
    /// The snapshot to start from does not verify.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
}

impl Output {
    /// The events this output carries, oldest first.
    pub fn events(&self) -> &[CausalEvent] {
        match self {
            Self::Event(signed) => std::slice::from_ref(&signed.event),
            Self::Batch(batch) => &batch.events,
        }
    }

    /// Encoded size.
    pub fn encoded_len(&self) -> usize {
        2 + match self {
            Self::Event(signed) => signed.encoded_len(),
            Self::Batch(batch) => {
                4 + batch
                    .events
                    .iter()
                    .map(CausalEvent::encoded_len)
                    .sum::<usize>()
                    + HEAD_LEN
            }
        }
    }

    /// Encodes the output; fails if a limit is broken (payload, batch length, total size).
    pub fn to_bytes(&self) -> Result<Vec<u8>, DecodeError> {
        let len = self.encoded_len();
        if len > MAX_OUTPUT_LEN {
            return Err(DecodeError::TooLong {
                what: "daemon output",
                len,
                max: MAX_OUTPUT_LEN,
            });
        }
        let mut out = Vec::with_capacity(len);
        out.push(OUTPUT_VERSION);
        match self {
            Self::Event(signed) => {
                out.push(KIND_EVENT);
                out.extend_from_slice(&signed.to_bytes()?);
            }
            Self::Batch(batch) => {
                check_batch_len(batch.events.len())?;
                if batch.events.is_empty() {
                    return Err(DecodeError::Invalid("empty daemon output batch"));
                }
                out.push(KIND_BATCH);
                // Bounded by MAX_BATCH_LEN, checked above.
                out.extend_from_slice(&(batch.events.len() as u32).to_le_bytes());
                for event in &batch.events {
                    out.extend_from_slice(&event.to_bytes()?);
                }
                out.extend_from_slice(&batch.head.to_bytes());
            }
        }
        Ok(out)
    }

    /// Decodes exactly one output; bounds every count and length before allocating. Does
    /// not verify anything cryptographic (see [`ChainVerifier`]).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() > MAX_OUTPUT_LEN {
            return Err(DecodeError::TooLong {
                what: "daemon output",
                len: bytes.len(),
                max: MAX_OUTPUT_LEN,
            });
        }
        let [version, kind, body @ ..] = bytes else {
            return Err(DecodeError::Truncated {
                need: 2,
                have: bytes.len(),
            });
        };
        if *version != OUTPUT_VERSION {
            return Err(DecodeError::UnknownVersion {
                what: "daemon output",
                version: *version,
            });
        }
        match *kind {
            KIND_EVENT => Ok(Self::Event(SignedEvent::from_bytes(body)?)),
            KIND_BATCH => decode_batch(body).map(Self::Batch),
            _ => Err(DecodeError::Invalid("daemon output kind")),
        }
    }
}

impl ChainVerifier {
    /// A verifier of `signer`'s chain from its canonical genesis.
    pub fn new(signer: EntityId) -> Self {
        Self {
            last: CausalLink::genesis(signer.origin_hash()),
            signer,
            verified: 0,
        }
    }

    /// A verifier that trusts `trusted` as the chain's last link (from a source verified
    /// some other way).
    pub fn resume(signer: EntityId, trusted: CausalLink) -> Result<Self, VerifyError> {
        if trusted.origin != signer.origin_hash() {
            return Err(ChainError::WrongOrigin.into());
        }
        if trusted.seq == 0 && !trusted.is_canonical_genesis() {
            return Err(ChainError::NonCanonicalGenesis.into());
        }
        Ok(Self {
            signer,
            last: trusted,
            verified: 0,
        })
    }

    /// A verifier that starts at the head of a snapshot, after checking the snapshot's
    /// signature.
    pub fn from_snapshot(snapshot: &DaemonSnapshot) -> Result<Self, VerifyError> {
        snapshot.verify(&snapshot.entity)?;
        Self::resume(snapshot.entity, snapshot.head)
    }

    /// Checks that `output` continues the chain and is signed by the daemon; on success it
    /// becomes the new last link. On failure nothing changes.
    pub fn verify(&mut self, output: &Output) -> Result<(), VerifyError> {
        let first = output.events().first().ok_or(VerifyError::EmptyBatch)?;
        if first.link.seq <= self.last.seq {
            return Err(VerifyError::Stale {
                seq: first.link.seq,
                last: self.last.seq,
            });
        }
        match output {
            Output::Event(signed) => signed.verify(&self.signer, Some(&self.last))?,
            Output::Batch(batch) => {
                verify_chain(&self.signer, Some(&self.last), &batch.events, &batch.head)?;
            }
        }
        let events = output.events();
        if let Some(last) = events.last() {
            self.last = last.link;
            self.verified += events.len() as u64;
        }
        Ok(())
    }

    /// The last verified link (the trusted start before any output).
    pub fn last(&self) -> &CausalLink {
        &self.last
    }

    /// Events verified so far.
    pub fn verified(&self) -> u64 {
        self.verified
    }

    /// The daemon whose chain this verifies.
    pub fn signer(&self) -> &EntityId {
        &self.signer
    }
}

fn decode_batch(body: &[u8]) -> Result<SignedBatch, DecodeError> {
    let count = u32_le_at(body, 0)? as usize;
    check_batch_len(count)?;
    if count == 0 {
        return Err(DecodeError::Invalid("empty daemon output batch"));
    }
    let mut at = 4;
    // Every event takes at least EVENT_FIXED_LEN bytes, so the input bounds the allocation.
    let mut events = Vec::with_capacity(count.min(body.len() / EVENT_FIXED_LEN));
    for _ in 0..count {
        let (event, used) = CausalEvent::decode_prefix(body.get(at..).unwrap_or_default())?;
        events.push(event);
        at += used;
    }
    let head = ChainHead::from_bytes(body.get(at..).unwrap_or_default())?;
    Ok(SignedBatch { events, head })
}

fn check_batch_len(count: usize) -> Result<(), DecodeError> {
    if count > MAX_BATCH_LEN {
        return Err(DecodeError::TooLong {
            what: "daemon output batch",
            len: count,
            max: MAX_BATCH_LEN,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use netrun_messages::{CausalChain, Identity};
    use proptest::prelude::*;

    fn batch(id: &Identity, payloads: &[&[u8]]) -> SignedBatch {
        let mut chain = CausalChain::new(id.origin_hash());
        let events: Vec<_> = payloads
            .iter()
            .map(|p| chain.append(Bytes::copy_from_slice(p)).expect("append"))
            .collect();
        SignedBatch {
            head: ChainHead::sign(id, chain.head()),
            events,
        }
    }

    #[test]
    fn codec_round_trip_and_limits() {
        let id = Identity::from_seed([50; 32]);
        let b = Output::Batch(batch(&id, &[b"a", b"", b"ccc"]));
        let bytes = b.to_bytes().expect("encode");
        assert_eq!(bytes.len(), b.encoded_len());
        assert_eq!(Output::from_bytes(&bytes).expect("decode"), b);
        let mut chain = CausalChain::new(id.origin_hash());
        let e = Output::Event(SignedEvent::sign(
            &id,
            chain.append(Bytes::from_static(b"x")).expect("append"),
        ));
        let bytes = e.to_bytes().expect("encode");
        assert_eq!(bytes.len(), e.encoded_len());
        assert_eq!(Output::from_bytes(&bytes).expect("decode"), e);

        assert!(matches!(
            Output::from_bytes(&[2, 1]),
            Err(DecodeError::UnknownVersion { version: 2, .. })
        ));
        assert!(matches!(
            Output::from_bytes(&[1, 9]),
            Err(DecodeError::Invalid(_))
        ));
        assert!(matches!(
            Output::from_bytes(&[1]),
            Err(DecodeError::Truncated { .. })
        ));
        assert!(matches!(
            Output::from_bytes(&[1, 2, 0, 0, 0, 0]),
            Err(DecodeError::Invalid(_))
        ));
        assert!(matches!(
            Output::from_bytes(&[1, 2, 0xff, 0xff, 0xff, 0xff]),
            Err(DecodeError::TooLong { .. })
        ));
        let bytes = b.to_bytes().expect("encode");
        let mut v = bytes.clone();
        v.push(0);
        assert!(Output::from_bytes(&v).is_err());
        assert!(Output::from_bytes(&bytes[..bytes.len() - 1]).is_err());
        let empty = Output::Batch(SignedBatch {
            events: Vec::new(),
            head: ChainHead::sign(&id, &CausalLink::genesis(id.origin_hash())),
        });
        assert!(empty.to_bytes().is_err());
    }

    #[test]
    fn verifier_accepts_continuations_and_rejects_forgeries() {
        let id = Identity::from_seed([51; 32]);
        let signer = id.entity_id();
        let SignedBatch { events, head } = batch(&id, &[b"1", b"2", b"3", b"4"]);
        let mut v = ChainVerifier::new(signer);
        // Batch of the first two.
        let first = Output::Batch(SignedBatch {
            events: events[..2].to_vec(),
            head: ChainHead::sign(&id, &events[1].link),
        });
        v.verify(&first).expect("first batch");
        assert_eq!(
            v.verify(&first),
            Err(VerifyError::Stale { seq: 1, last: 2 })
        );
        // Skipping the third is a gap.
        let skip = Output::Event(SignedEvent::sign(&id, events[3].clone()));
        assert_eq!(
            v.verify(&skip),
            Err(VerifyError::Chain(ChainError::Gap {
                expected: 3,
                found: 4
            }))
        );
        // Signed by another key.
        let other = Identity::from_seed([52; 32]);
        let forged = Output::Event(SignedEvent::sign(&other, events[2].clone()));
        assert_eq!(
            v.verify(&forged),
            Err(VerifyError::Chain(ChainError::BadSignature))
        );
        // Broken parent link, re-signed by the right key is still a fork.
        let mut bent = events[2].clone();
        bent.link.parent_hash[0] ^= 1;
        let bent = Output::Event(SignedEvent::sign(&id, bent));
        assert_eq!(
            v.verify(&bent),
            Err(VerifyError::Chain(ChainError::Fork(3)))
        );
        assert_eq!(v.last().seq, 2);
        let ok = Output::Event(SignedEvent::sign(&id, events[2].clone()));
        v.verify(&ok).expect("third");
        let last = Output::Batch(SignedBatch {
            events: events[3..].to_vec(),
            head,
        });
        v.verify(&last).expect("fourth");
        assert_eq!(v.verified(), 4);
        // Resume from a trusted link; a link of another origin is refused.
        let mut r = ChainVerifier::resume(signer, events[2].link).expect("resume");
        r.verify(&last).expect("continues");
        assert!(ChainVerifier::resume(other.entity_id(), events[2].link).is_err());
    }

    proptest! {
        #[test]
        fn round_trip(payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 1..8), single: bool) {
            let id = Identity::from_seed([53; 32]);
            let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
            let b = batch(&id, &refs);
            let out = if single {
                Output::Event(SignedEvent::sign(&id, b.events[0].clone()))
            } else {
                Output::Batch(b)
            };
            let bytes = out.to_bytes().expect("encode");
            prop_assert_eq!(bytes.len(), out.encoded_len());
            prop_assert_eq!(Output::from_bytes(&bytes).expect("decode"), out.clone());
            let mut v = ChainVerifier::new(id.entity_id());
            prop_assert!(v.verify(&out).is_ok());
        }

        #[test]
        fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            if let Ok(out) = Output::from_bytes(&bytes) {
                prop_assert_eq!(out.to_bytes().expect("re-encodes"), bytes);
            }
        }
    }
}
