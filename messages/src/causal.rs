//! Causal chains: a daemon's history as a hash-linked, signed sequence of events.
//!
//! Every event a daemon produces carries a [`CausalLink`]: its origin, a sequence number,
//! the hash of the previous link and the hash of its own payload. The hash of an event is
//! BLAKE3 of its link encoding, so a link commits to the whole history before it.
//!
//! ```text
//! CausalLink (LINK_LEN = 80)        CausalEvent               ChainHead (HEAD_LEN = 112)
//!   8  origin   OriginHash u64 LE     80  link                  8  origin u64 LE
//!   8  seq      u64 LE                 4  payload_len u32 LE    8  seq u64 LE
//!  32  parent_hash                     n  payload (≤ 64 KiB)   32  head_hash
//!  32  payload_hash = BLAKE3(payload)                          64  signature
//!
//! SignedEvent = CausalEvent ‖ 64 signature
//! ```
//!
//! Genesis is canonical: seq 0, an empty payload, and
//! `parent_hash = BLAKE3 derive_key(GENESIS_CONTEXT, origin as u64 LE)`. Anything else at
//! seq 0 is refused, so two honest verifiers always agree where a chain starts.
//!
//! Two ways to sign: per event ([`SignedEvent`]: the signature covers the link, which
//! commits to the payload), or per batch ([`ChainHead`]: one signature over the last link's
//! seq and hash, which commits to every event before it). Both signatures are made by the
//! daemon key whose [`OriginHash`] the events carry.

use bytes::Bytes;
use thiserror::Error;

use crate::error::{DecodeError, array_at, u32_le_at, u64_le_at};
use crate::identity::{Identity, Signature};
use crate::ids::{EntityId, OriginHash};

/// Encoded [`CausalLink`] size.
pub const LINK_LEN: usize = 80;
/// Encoded [`ChainHead`] size.
pub const HEAD_LEN: usize = 112;
/// Largest event payload. Events ride control envelopes, whose body limit is 64 KiB.
pub const MAX_EVENT_PAYLOAD: usize = 64 * 1024;
/// BLAKE3 key-derivation context for the genesis parent hash.
pub const GENESIS_CONTEXT: &str = "netrun causal genesis v1";
const EVENT_SIGNING_TAG: &[u8; 16] = b"netrun event v1\0";
const HEAD_SIGNING_TAG: &[u8; 16] = b"netrun head v1\0\0";
const EVENT_FIXED_LEN: usize = LINK_LEN + 4;

/// The header of one event in a causal chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CausalLink {
    /// The producing daemon.
    pub origin: OriginHash,
    /// Position in the chain; genesis is 0.
    pub seq: u64,
    /// Hash of the previous link (or the genesis parent at seq 0).
    pub parent_hash: [u8; 32],
    /// BLAKE3 of the payload.
    pub payload_hash: [u8; 32],
}

/// One event: its link and its payload.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CausalEvent {
    /// The link.
    pub link: CausalLink,
    /// The payload (shared, not copied, when cloned).
    pub payload: Bytes,
}

/// An event with the producer's signature over its link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedEvent {
    /// The event.
    pub event: CausalEvent,
    /// ed25519 over `EVENT_SIGNING_TAG ‖ link encoding`.
    pub signature: Signature,
}

/// A signed statement of where a chain stands: one signature for a batch of events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainHead {
    /// The chain's daemon.
    pub origin: OriginHash,
    /// Seq of the last event.
    pub seq: u64,
    /// Hash of the last event's link.
    pub head_hash: [u8; 32],
    /// ed25519 over `HEAD_SIGNING_TAG ‖ first 48 bytes of the encoding`.
    pub signature: Signature,
}

/// The producer side of a chain: remembers the head and links each new payload to it.
#[derive(Debug, Clone)]
pub struct CausalChain {
    head: CausalLink,
}

/// Why a chain, event or head was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ChainError {
    /// An event's seq is not the one after its predecessor.
    #[error("gap: expected seq {expected}, found {found}")]
    Gap {
        /// The seq that should have come next.
        expected: u64,
        /// The seq that came.
        found: u64,
    },
    /// An event's parent hash is not the hash of its predecessor.
    #[error("fork at seq {0}: parent hash does not match")]
    Fork(u64),
    /// A seq-0 event is not the canonical genesis.
    #[error("non-canonical genesis")]
    NonCanonicalGenesis,
    /// A payload does not hash to its link's `payload_hash`.
    #[error("payload does not match its hash at seq {0}")]
    PayloadMismatch(u64),
    /// An event or head is for another origin than the signer's.
    #[error("origin does not match the signer")]
    WrongOrigin,
    /// A signature does not verify under the signer's key.
    #[error("chain signature does not verify")]
    BadSignature,
    /// The signed head is not the last verified event.
    #[error("signed head does not match the last event")]
    HeadMismatch,
    /// The chain has used every sequence number.
    #[error("chain sequence exhausted")]
    Exhausted,
}

impl CausalLink {
    /// The canonical genesis link of `origin`.
    pub fn genesis(origin: OriginHash) -> Self {
        Self {
            origin,
            seq: 0,
            parent_hash: genesis_parent(origin),
            payload_hash: *blake3::hash(&[]).as_bytes(),
        }
    }

    /// Encodes the fixed [`LINK_LEN`]-byte form.
    pub fn to_bytes(&self) -> [u8; LINK_LEN] {
        let mut out = [0u8; LINK_LEN];
        out[0..8].copy_from_slice(&self.origin.0.to_le_bytes());
        out[8..16].copy_from_slice(&self.seq.to_le_bytes());
        out[16..48].copy_from_slice(&self.parent_hash);
        out[48..80].copy_from_slice(&self.payload_hash);
        out
    }

    /// Decodes exactly [`LINK_LEN`] bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        exact_len(bytes, LINK_LEN)?;
        Self::read(bytes)
    }

    /// The hash of this link: BLAKE3 of its encoding. The next event's `parent_hash`.
    pub fn hash(&self) -> [u8; 32] {
        *blake3::hash(&self.to_bytes()).as_bytes()
    }

    /// Whether this is the canonical genesis of its origin.
    pub fn is_canonical_genesis(&self) -> bool {
        *self == Self::genesis(self.origin)
    }

    fn read(bytes: &[u8]) -> Result<Self, DecodeError> {
        Ok(Self {
            origin: OriginHash(u64_le_at(bytes, 0)?),
            seq: u64_le_at(bytes, 8)?,
            parent_hash: array_at::<32>(bytes, 16)?,
            payload_hash: array_at::<32>(bytes, 48)?,
        })
    }
}

impl CausalEvent {
    /// The canonical genesis event of `origin`.
    pub fn genesis(origin: OriginHash) -> Self {
        Self {
            link: CausalLink::genesis(origin),
            payload: Bytes::new(),
        }
    }

    /// The event's hash (its link's hash).
    pub fn hash(&self) -> [u8; 32] {
        self.link.hash()
    }

    /// Encoded size.
    pub fn encoded_len(&self) -> usize {
        EVENT_FIXED_LEN + self.payload.len()
    }

    /// Encodes the event. Fails if the payload exceeds [`MAX_EVENT_PAYLOAD`].
    pub fn to_bytes(&self) -> Result<Vec<u8>, DecodeError> {
        check_payload_len(self.payload.len())?;
        let mut out = Vec::with_capacity(self.encoded_len());
        self.write(&mut out);
        Ok(out)
    }

    /// Decodes exactly one event; checks the payload bound before copying it. Does not
    /// check that the payload matches its hash: that is the verifier's job.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (event, used) = Self::decode_prefix(bytes)?;
        if used != bytes.len() {
            return Err(DecodeError::TrailingBytes(bytes.len() - used));
        }
        Ok(event)
    }

    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.link.to_bytes());
        // Bounded by MAX_EVENT_PAYLOAD, checked by the caller.
        out.extend_from_slice(&(self.payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.payload);
    }

    /// Decodes one event from the front of `bytes` (as in a batch, where events follow one
    /// another); returns it and the bytes it used. Checks the payload bound before copying.
    pub fn decode_prefix(bytes: &[u8]) -> Result<(Self, usize), DecodeError> {
        let link = CausalLink::read(bytes)?;
        let len = u32_le_at(bytes, LINK_LEN)? as usize;
        check_payload_len(len)?;
        let end = EVENT_FIXED_LEN + len;
        let payload = bytes
            .get(EVENT_FIXED_LEN..end)
            .ok_or(DecodeError::Truncated {
                need: end,
                have: bytes.len(),
            })?;
        let event = Self {
            link,
            payload: Bytes::copy_from_slice(payload),
        };
        Ok((event, end))
    }
}

impl SignedEvent {
    /// Signs `event` with the daemon identity.
    pub fn sign(identity: &Identity, event: CausalEvent) -> Self {
        let signature = identity.sign(&event_message(&event.link));
        Self { event, signature }
    }

    /// Encoded size.
    pub fn encoded_len(&self) -> usize {
        self.event.encoded_len() + 64
    }

    /// Encodes event ‖ signature.
    pub fn to_bytes(&self) -> Result<Vec<u8>, DecodeError> {
        check_payload_len(self.event.payload.len())?;
        let mut out = Vec::with_capacity(self.encoded_len());
        self.event.write(&mut out);
        out.extend_from_slice(&self.signature.0);
        Ok(out)
    }

    /// Decodes event ‖ signature; nothing may follow.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (event, used) = CausalEvent::decode_prefix(bytes)?;
        let signature = Signature(array_at::<64>(bytes, used)?);
        let end = used + 64;
        if end != bytes.len() {
            return Err(DecodeError::TrailingBytes(bytes.len() - end));
        }
        Ok(Self { event, signature })
    }

    /// Verifies this event as the successor of `prev` (or as genesis when `prev` is
    /// `None`), signed by `signer`.
    pub fn verify(&self, signer: &EntityId, prev: Option<&CausalLink>) -> Result<(), ChainError> {
        let origin = signer.origin_hash();
        check_link(origin, prev, &self.event)?;
        signer
            .verify(&event_message(&self.event.link), &self.signature)
            .map_err(|_| ChainError::BadSignature)
    }
}

impl ChainHead {
    /// Signs the head of a chain whose last link is `head`.
    pub fn sign(identity: &Identity, head: &CausalLink) -> Self {
        let mut out = Self {
            origin: head.origin,
            seq: head.seq,
            head_hash: head.hash(),
            signature: Signature([0; 64]),
        };
        out.signature = identity.sign(&out.signed_message());
        out
    }

    /// Encodes the fixed [`HEAD_LEN`]-byte form.
    pub fn to_bytes(&self) -> [u8; HEAD_LEN] {
        let mut out = [0u8; HEAD_LEN];
        out[..48].copy_from_slice(&self.signed_part());
        out[48..].copy_from_slice(&self.signature.0);
        out
    }

    /// Decodes exactly [`HEAD_LEN`] bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        exact_len(bytes, HEAD_LEN)?;
        Ok(Self {
            origin: OriginHash(u64_le_at(bytes, 0)?),
            seq: u64_le_at(bytes, 8)?,
            head_hash: array_at::<32>(bytes, 16)?,
            signature: Signature(array_at::<64>(bytes, 48)?),
        })
    }

    /// Verifies the signature and that the origin is `signer`'s.
    pub fn verify(&self, signer: &EntityId) -> Result<(), ChainError> {
        if self.origin != signer.origin_hash() {
            return Err(ChainError::WrongOrigin);
        }
        signer
            .verify(&self.signed_message(), &self.signature)
            .map_err(|_| ChainError::BadSignature)
    }

    /// Whether this head names `link`.
    pub fn names(&self, link: &CausalLink) -> bool {
        self.origin == link.origin && self.seq == link.seq && self.head_hash == link.hash()
    }

    fn signed_part(&self) -> [u8; 48] {
        let mut out = [0u8; 48];
        out[0..8].copy_from_slice(&self.origin.0.to_le_bytes());
        out[8..16].copy_from_slice(&self.seq.to_le_bytes());
        out[16..48].copy_from_slice(&self.head_hash);
        out
    }

    fn signed_message(&self) -> [u8; 64] {
        let mut out = [0u8; 64];
        out[..16].copy_from_slice(HEAD_SIGNING_TAG);
        out[16..].copy_from_slice(&self.signed_part());
        out
    }
}

impl CausalChain {
    /// A new chain for `origin`, standing at its genesis.
    pub fn new(origin: OriginHash) -> Self {
        Self {
            head: CausalLink::genesis(origin),
        }
    }

    /// Resumes a chain whose last link is `head` (after a restore or migration).
    pub fn resume(head: CausalLink) -> Self {
        Self { head }
    }

    /// The genesis event of this chain's origin (what a verifier expects first).
    pub fn genesis(&self) -> CausalEvent {
        CausalEvent::genesis(self.head.origin)
    }

    /// The last link.
    pub fn head(&self) -> &CausalLink {
        &self.head
    }

    /// Links `payload` after the head and makes it the new head.
    ///
    /// Fails with [`ChainError::Exhausted`] only after `u64::MAX` events.
    pub fn append(&mut self, payload: Bytes) -> Result<CausalEvent, ChainError> {
        let seq = self.head.seq.checked_add(1).ok_or(ChainError::Exhausted)?;
        let link = CausalLink {
            origin: self.head.origin,
            seq,
            parent_hash: self.head.hash(),
            payload_hash: *blake3::hash(&payload).as_bytes(),
        };
        self.head = link;
        Ok(CausalEvent { link, payload })
    }
}

/// Verifies a batch of events signed once through `head`.
///
/// `prev` is the last link the verifier already trusts; `None` means `events` must start at
/// the canonical genesis. Every event must be the successor of the one before it, and
/// `head` must name the last one (or `prev` when `events` is empty) and be signed by
/// `signer`, whose origin hash every event must carry.
pub fn verify_chain(
    signer: &EntityId,
    prev: Option<&CausalLink>,
    events: &[CausalEvent],
    head: &ChainHead,
) -> Result<(), ChainError> {
    let origin = signer.origin_hash();
    if head.origin != origin {
        return Err(ChainError::WrongOrigin);
    }
    let mut last = prev.copied();
    for event in events {
        check_link(origin, last.as_ref(), event)?;
        last = Some(event.link);
    }
    match &last {
        Some(link) if head.names(link) => head.verify(signer),
        _ => Err(ChainError::HeadMismatch),
    }
}

/// Checks one event against its predecessor (no signature).
fn check_link(
    origin: OriginHash,
    prev: Option<&CausalLink>,
    event: &CausalEvent,
) -> Result<(), ChainError> {
    let link = &event.link;
    if link.origin != origin || prev.is_some_and(|p| p.origin != origin) {
        return Err(ChainError::WrongOrigin);
    }
    let expected = match prev {
        None => 0,
        Some(p) => p.seq.checked_add(1).ok_or(ChainError::Exhausted)?,
    };
    if link.seq != expected {
        return Err(ChainError::Gap {
            expected,
            found: link.seq,
        });
    }
    if link.payload_hash != *blake3::hash(&event.payload).as_bytes() {
        return Err(ChainError::PayloadMismatch(link.seq));
    }
    match prev {
        None => {
            if !event.payload.is_empty() || !link.is_canonical_genesis() {
                return Err(ChainError::NonCanonicalGenesis);
            }
        }
        Some(p) => {
            if link.parent_hash != p.hash() {
                return Err(ChainError::Fork(link.seq));
            }
        }
    }
    Ok(())
}

fn genesis_parent(origin: OriginHash) -> [u8; 32] {
    blake3::derive_key(GENESIS_CONTEXT, &origin.0.to_le_bytes())
}

fn event_message(link: &CausalLink) -> [u8; 16 + LINK_LEN] {
    let mut out = [0u8; 16 + LINK_LEN];
    out[..16].copy_from_slice(EVENT_SIGNING_TAG);
    out[16..].copy_from_slice(&link.to_bytes());
    out
}

fn check_payload_len(len: usize) -> Result<(), DecodeError> {
    if len > MAX_EVENT_PAYLOAD {
        return Err(DecodeError::TooLong {
            what: "event payload",
            len,
            max: MAX_EVENT_PAYLOAD,
        });
    }
    Ok(())
}

fn exact_len(bytes: &[u8], len: usize) -> Result<(), DecodeError> {
    if bytes.len() < len {
        return Err(DecodeError::Truncated {
            need: len,
            have: bytes.len(),
        });
    }
    if bytes.len() > len {
        return Err(DecodeError::TrailingBytes(bytes.len() - len));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn daemon() -> Identity {
        Identity::from_seed([21; 32])
    }

    /// Genesis plus `n` events, and a head signed over the last.
    fn chain(id: &Identity, n: usize) -> (Vec<CausalEvent>, ChainHead) {
        let mut c = CausalChain::new(id.origin_hash());
        let mut events = vec![c.genesis()];
        for i in 0..n {
            events.push(c.append(Bytes::from(format!("event {i}"))).expect("append"));
        }
        let head = ChainHead::sign(id, c.head());
        (events, head)
    }

    #[test]
    fn genesis_is_canonical_and_chain_verifies() {
        let id = daemon();
        let g = CausalLink::genesis(id.origin_hash());
        assert_eq!(g.seq, 0);
        assert_eq!(
            g.parent_hash,
            blake3::derive_key(
                "netrun causal genesis v1",
                &id.origin_hash().0.to_le_bytes()
            )
        );
        assert!(g.is_canonical_genesis());
        let (events, head) = chain(&id, 5);
        assert_eq!(events[3].link.parent_hash, events[2].hash());
        verify_chain(&id.entity_id(), None, &events, &head).expect("verifies");
        // A later batch, verified from a trusted prefix.
        verify_chain(&id.entity_id(), Some(&events[2].link), &events[3..], &head)
            .expect("suffix verifies");
        // An empty batch: the head must name the trusted link.
        let at = ChainHead::sign(&id, &events[2].link);
        verify_chain(&id.entity_id(), Some(&events[2].link), &[], &at).expect("empty batch");
        assert_eq!(
            verify_chain(&id.entity_id(), None, &[], &at),
            Err(ChainError::HeadMismatch)
        );
    }

    #[test]
    fn chain_rejections() {
        let id = daemon();
        let signer = id.entity_id();
        let (events, head) = chain(&id, 4);

        let mut gap = events.clone();
        gap.remove(2);
        assert_eq!(
            verify_chain(&signer, None, &gap, &head),
            Err(ChainError::Gap {
                expected: 2,
                found: 3
            })
        );
        assert_eq!(
            verify_chain(&signer, None, &events[1..], &head),
            Err(ChainError::Gap {
                expected: 0,
                found: 1
            })
        );

        let mut fork = events.clone();
        fork[2].link.parent_hash[0] ^= 1;
        assert_eq!(
            verify_chain(&signer, None, &fork, &head),
            Err(ChainError::Fork(2))
        );

        let mut tampered = events.clone();
        tampered[3].payload = Bytes::from_static(b"rewritten");
        assert_eq!(
            verify_chain(&signer, None, &tampered, &head),
            Err(ChainError::PayloadMismatch(3))
        );

        let mut genesis_payload = events.clone();
        genesis_payload[0].payload = Bytes::from_static(b"x");
        genesis_payload[0].link.payload_hash = *blake3::hash(b"x").as_bytes();
        assert_eq!(
            verify_chain(&signer, None, &genesis_payload, &head),
            Err(ChainError::NonCanonicalGenesis)
        );
        let mut genesis_parent = events.clone();
        genesis_parent[0].link.parent_hash = [0; 32];
        assert_eq!(
            verify_chain(&signer, None, &genesis_parent, &head),
            Err(ChainError::NonCanonicalGenesis)
        );

        let other = Identity::from_seed([22; 32]);
        assert_eq!(
            verify_chain(&other.entity_id(), None, &events, &head),
            Err(ChainError::WrongOrigin)
        );
        // The other key re-signs our head: its origin is still not ours.
        let (other_events, _) = chain(&other, 1);
        let mut mixed = vec![events[0].clone()];
        mixed.push(other_events[1].clone());
        assert_eq!(
            verify_chain(&signer, None, &mixed, &head),
            Err(ChainError::WrongOrigin)
        );

        let mut bad_sig = head;
        bad_sig.signature.0[5] ^= 1;
        assert_eq!(
            verify_chain(&signer, None, &events, &bad_sig),
            Err(ChainError::BadSignature)
        );
        let forged = {
            let mut h = ChainHead::sign(&other, events.last().map(|e| &e.link).expect("events"));
            h.origin = id.origin_hash();
            h
        };
        assert_eq!(
            verify_chain(&signer, None, &events, &forged),
            Err(ChainError::BadSignature)
        );
        assert_eq!(
            verify_chain(&signer, None, &events[..3], &head),
            Err(ChainError::HeadMismatch)
        );
    }

    #[test]
    fn per_event_signatures() {
        let id = daemon();
        let signer = id.entity_id();
        let (events, _) = chain(&id, 2);
        let signed: Vec<SignedEvent> = events
            .iter()
            .cloned()
            .map(|e| SignedEvent::sign(&id, e))
            .collect();
        signed[0].verify(&signer, None).expect("genesis");
        signed[1]
            .verify(&signer, Some(&events[0].link))
            .expect("first");
        signed[2]
            .verify(&signer, Some(&events[1].link))
            .expect("second");
        assert_eq!(
            signed[2].verify(&signer, Some(&events[0].link)),
            Err(ChainError::Gap {
                expected: 1,
                found: 2
            })
        );
        let mut bent = signed[1].clone();
        bent.signature.0[0] ^= 1;
        assert_eq!(
            bent.verify(&signer, Some(&events[0].link)),
            Err(ChainError::BadSignature)
        );
        let other = Identity::from_seed([22; 32]);
        let resigned = SignedEvent::sign(&other, events[1].clone());
        assert_eq!(
            resigned.verify(&signer, Some(&events[0].link)),
            Err(ChainError::BadSignature)
        );
        assert_eq!(
            signed[1].verify(&other.entity_id(), Some(&events[0].link)),
            Err(ChainError::WrongOrigin)
        );
        let mut swapped = signed[1].clone();
        swapped.event.payload = Bytes::from_static(b"other");
        assert_eq!(
            swapped.verify(&signer, Some(&events[0].link)),
            Err(ChainError::PayloadMismatch(1))
        );
    }

    #[test]
    fn exhausted_sequence() {
        let mut link = CausalLink::genesis(OriginHash(1));
        link.seq = u64::MAX;
        let mut c = CausalChain::resume(link);
        assert_eq!(c.append(Bytes::new()), Err(ChainError::Exhausted));
        let event = CausalEvent {
            link,
            payload: Bytes::new(),
        };
        assert_eq!(
            check_link(OriginHash(1), Some(&link), &event),
            Err(ChainError::Exhausted)
        );
    }

    #[test]
    fn decoders_bound_and_refuse() {
        let id = daemon();
        let (events, head) = chain(&id, 1);
        let link = events[1].link;
        assert_eq!(
            CausalLink::from_bytes(&link.to_bytes()).expect("link"),
            link
        );
        assert!(CausalLink::from_bytes(&link.to_bytes()[..79]).is_err());
        assert!(ChainHead::from_bytes(&[0; HEAD_LEN + 1]).is_err());
        assert_eq!(ChainHead::from_bytes(&head.to_bytes()).expect("head"), head);
        let bytes = events[1].to_bytes().expect("event");
        assert_eq!(CausalEvent::from_bytes(&bytes).expect("event"), events[1]);
        let mut v = bytes.clone();
        v[LINK_LEN..LINK_LEN + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            CausalEvent::from_bytes(&v),
            Err(DecodeError::TooLong { .. })
        ));
        let mut v = bytes.clone();
        v.push(1);
        assert!(matches!(
            CausalEvent::from_bytes(&v),
            Err(DecodeError::TrailingBytes(1))
        ));
        assert!(CausalEvent::from_bytes(&bytes[..bytes.len() - 1]).is_err());
        let big = CausalEvent {
            link,
            payload: Bytes::from(vec![0; MAX_EVENT_PAYLOAD + 1]),
        };
        assert!(big.to_bytes().is_err());
        let signed = SignedEvent::sign(&id, events[1].clone());
        let sbytes = signed.to_bytes().expect("signed");
        assert_eq!(signed.encoded_len(), sbytes.len());
        assert_eq!(SignedEvent::from_bytes(&sbytes).expect("signed"), signed);
        assert!(SignedEvent::from_bytes(&sbytes[..sbytes.len() - 1]).is_err());
    }

    proptest! {
        #[test]
        fn round_trips(origin: u64, seq: u64, parent: [u8; 32], payload in proptest::collection::vec(any::<u8>(), 0..256), sig: [u8; 32]) {
            let link = CausalLink {
                origin: OriginHash(origin), seq, parent_hash: parent,
                payload_hash: *blake3::hash(&payload).as_bytes(),
            };
            prop_assert_eq!(CausalLink::from_bytes(&link.to_bytes()).expect("link"), link);
            let event = CausalEvent { link, payload: Bytes::from(payload) };
            let bytes = event.to_bytes().expect("event");
            prop_assert_eq!(event.encoded_len(), bytes.len());
            prop_assert_eq!(CausalEvent::from_bytes(&bytes).expect("event"), event.clone());
            let mut signature = [0u8; 64];
            signature[..32].copy_from_slice(&sig);
            let signed = SignedEvent { event, signature: Signature(signature) };
            prop_assert_eq!(SignedEvent::from_bytes(&signed.to_bytes().expect("enc")).expect("dec"), signed);
            let head = ChainHead { origin: OriginHash(origin), seq, head_hash: parent, signature: Signature(signature) };
            prop_assert_eq!(ChainHead::from_bytes(&head.to_bytes()).expect("head"), head);
        }

        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = CausalLink::from_bytes(&bytes);
            let _ = ChainHead::from_bytes(&bytes);
            if let Ok(e) = CausalEvent::from_bytes(&bytes) {
                prop_assert_eq!(e.to_bytes().expect("re-encodes"), bytes.clone());
            }
            let _ = SignedEvent::from_bytes(&bytes);
        }
    }
}
