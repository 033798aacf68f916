//! One-call seal and open of whole datagrams (header ‖ ciphertext ‖ tag).
//!
//! Seal: reserve a counter, write the header (counter, payload length), encrypt the payload
//! in place with the header's AAD ([`Header::aad`]), append the tag.
//!
//! Open, cheapest check first: datagram length → header parse (version, kind, flags,
//! reserved bytes, declared length = actual) → kind is sealed → replay pre-check on the
//! counter (lock-free) → AEAD open in place → replay commit (one lock). Nothing is recorded
//! for a packet whose tag did not verify.

use std::ops::Range;

use netrun_messages::header::{HEADER_LEN, MAX_PACKET_LEN, MAX_PAYLOAD_LEN, TAG_LEN};
use netrun_messages::{DecodeError, Header, PacketKind};
use thiserror::Error;

use super::cipher::AeadError;
use super::keys::{CounterExhausted, RxKey, TxKey};
use super::replay::ReplayError;

/// Smallest sealed datagram: a header and a tag (an empty plaintext, e.g. a heartbeat).
pub const MIN_SEALED_LEN: usize = HEADER_LEN + TAG_LEN;

/// Why a datagram could not be sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum SealError {
    /// The plaintext exceeds [`MAX_PAYLOAD_LEN`].
    #[error("plaintext of {len} bytes exceeds the limit of {max}")]
    TooLong {
        /// Plaintext length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The header kind is a handshake kind, which is never sealed with session keys.
    #[error("packet kind {0:?} is not sealed with session keys")]
    NotSealedKind(PacketKind),
    /// The buffer cannot hold header, plaintext and tag.
    #[error("buffer of {have} bytes cannot hold a sealed datagram of {need}")]
    BufferTooSmall {
        /// Bytes needed.
        need: usize,
        /// Bytes available.
        have: usize,
    },
    /// The send counter is used up; re-handshake.
    #[error("send counter exhausted; re-handshake required")]
    CounterExhausted,
    /// The cipher refused the buffer (cannot happen within [`MAX_PAYLOAD_LEN`]).
    #[error("aead refused to seal: {0}")]
    Aead(#[source] AeadError),
}

/// Why a received datagram was dropped.
#[derive(Debug, Error)]
pub enum OpenError {
    /// Shorter than a header and a tag; rejected before parsing.
    #[error("datagram of {0} bytes is shorter than a sealed packet")]
    TooShort(usize),
    /// Longer than any datagram netrun sends; rejected before parsing.
    #[error("datagram of {0} bytes exceeds the maximum packet size")]
    TooLong(usize),
    /// The header does not parse (version, kind, flags, reserved bytes, length).
    #[error("malformed header: {0}")]
    Malformed(#[from] DecodeError),
    /// The packet kind is not sealed with session keys (a handshake packet).
    #[error("packet kind {0:?} is not sealed with session keys")]
    NotSealedKind(PacketKind),
    /// A heartbeat whose payload is not exactly one tag.
    #[error("heartbeat payload of {0} bytes is not a single tag")]
    BadHeartbeat(usize),
    /// The counter was already received.
    #[error("replayed counter {0}")]
    Replay(u64),
    /// The counter is older than the replay window.
    #[error("counter {0} is older than the replay window")]
    TooOld(u64),
    /// The counter jumps too far ahead; the session needs a fresh handshake.
    #[error("counter {0} jumps too far ahead; a fresh handshake is required")]
    TooFarAhead(u64),
    /// The counter is `u64::MAX`.
    #[error("counter space exhausted")]
    CounterExhausted,
    /// The tag does not verify: wrong session, tampered bytes or forged packet.
    #[error("packet failed authentication")]
    Authentication,
}

impl From<ReplayError> for OpenError {
    fn from(e: ReplayError) -> Self {
        match e {
            ReplayError::Duplicate(c) => Self::Replay(c),
            ReplayError::TooOld(c) => Self::TooOld(c),
            ReplayError::TooFarAhead(c) => Self::TooFarAhead(c),
            ReplayError::Exhausted => Self::CounterExhausted,
        }
    }
}

impl From<CounterExhausted> for SealError {
    fn from(_: CounterExhausted) -> Self {
        Self::CounterExhausted
    }
}

/// Seals `plaintext` into `out` (cleared first): header ‖ ciphertext ‖ tag.
///
/// `header` supplies kind, flags, ttl, src, dst and stream; the counter and payload length
/// are filled in. Returns the header as written. `out` is reused across calls, so after
/// the first packet nothing is allocated.
pub fn seal_datagram(
    tx: &TxKey,
    header: Header,
    plaintext: &[u8],
    out: &mut Vec<u8>,
) -> Result<Header, SealError> {
    check_plaintext(header.kind, plaintext.len())?;
    out.clear();
    out.resize(HEADER_LEN, 0);
    out.extend_from_slice(plaintext);
    out.resize(HEADER_LEN + plaintext.len() + TAG_LEN, 0);
    seal_in_place(tx, header, out, plaintext.len())
}

/// Seals in place: `buf[HEADER_LEN..HEADER_LEN + plaintext_len]` holds the plaintext and
/// `buf` has room for the tag after it. Writes the header and tag; returns the header. The
/// sealed datagram is `buf[..HEADER_LEN + plaintext_len + TAG_LEN]`.
pub fn seal_in_place(
    tx: &TxKey,
    mut header: Header,
    buf: &mut [u8],
    plaintext_len: usize,
) -> Result<Header, SealError> {
    check_plaintext(header.kind, plaintext_len)?;
    let need = HEADER_LEN + plaintext_len + TAG_LEN;
    if buf.len() < need {
        return Err(SealError::BufferTooSmall {
            need,
            have: buf.len(),
        });
    }
    header.counter = tx.next_counter()?;
    // Bounded by MAX_PAYLOAD_LEN + TAG_LEN above, so the cast cannot truncate.
    header.payload_len = (plaintext_len + TAG_LEN) as u32;
    let (head, rest) = buf.split_at_mut(HEADER_LEN);
    let head: &mut [u8; HEADER_LEN] = head
        .try_into()
        .map_err(|_| SealError::BufferTooSmall { need, have: 0 })?;
    header.write(head);
    let aad = Header::aad_of(head);
    let (body, tail) = rest.split_at_mut(plaintext_len);
    let tag = tx
        .cipher()
        .seal_in_place(header.counter, &aad, body)
        .map_err(SealError::Aead)?;
    tail[..TAG_LEN].copy_from_slice(&tag);
    Ok(header)
}

/// Opens a sealed datagram in place. Returns the header and the plaintext's byte range
/// inside `datagram` (the plaintext has replaced the ciphertext there).
pub fn open_datagram(rx: &RxKey, datagram: &mut [u8]) -> Result<(Header, Range<usize>), OpenError> {
    check_datagram_len(datagram.len())?;
    let (header, _) = Header::parse(datagram)?;
    if !header.kind.is_sealed() {
        return Err(OpenError::NotSealedKind(header.kind));
    }
    rx.precheck(header.counter)?;
    let (head, payload) = datagram.split_at_mut(HEADER_LEN);
    let aad = aad_of_slice(head);
    let len = rx
        .open_in_place(header.counter, &aad, payload)
        .map_err(|_| OpenError::Authentication)?;
    rx.commit(header.counter)?;
    Ok((header, HEADER_LEN..HEADER_LEN + len))
}

/// Verifies a heartbeat without decrypting anything or touching the caller's buffer: the
/// payload must be exactly one tag over an empty plaintext. Commits the counter.
pub fn open_heartbeat(rx: &RxKey, datagram: &[u8]) -> Result<Header, OpenError> {
    if datagram.len() != MIN_SEALED_LEN {
        check_datagram_len(datagram.len())?;
    }
    let (header, payload) = Header::parse(datagram)?;
    if header.kind != PacketKind::Heartbeat {
        return Err(OpenError::NotSealedKind(header.kind));
    }
    let tag: &[u8; TAG_LEN] = payload
        .try_into()
        .map_err(|_| OpenError::BadHeartbeat(payload.len()))?;
    rx.precheck(header.counter)?;
    let aad = aad_of_slice(&datagram[..HEADER_LEN]);
    rx.verify_empty(header.counter, &aad, tag)
        .map_err(|_| OpenError::Authentication)?;
    rx.commit(header.counter)?;
    Ok(header)
}

/// Seals a heartbeat (empty plaintext; `stream` carries the probe, see
/// [`liveness::HeartbeatProbe`](crate::liveness::HeartbeatProbe)) into `out`.
pub fn seal_heartbeat(
    tx: &TxKey,
    src: netrun_messages::NodeId,
    dst: netrun_messages::NodeId,
    stream: u64,
    out: &mut Vec<u8>,
) -> Result<Header, SealError> {
    let mut header = Header::new(PacketKind::Heartbeat, src, dst);
    header.stream = stream;
    seal_datagram(tx, header, &[], out)
}

fn check_plaintext(kind: PacketKind, len: usize) -> Result<(), SealError> {
    if !kind.is_sealed() {
        return Err(SealError::NotSealedKind(kind));
    }
    if len > MAX_PAYLOAD_LEN {
        return Err(SealError::TooLong {
            len,
            max: MAX_PAYLOAD_LEN,
        });
    }
    Ok(())
}

#[inline]
fn check_datagram_len(len: usize) -> Result<(), OpenError> {
    if len < MIN_SEALED_LEN {
        return Err(OpenError::TooShort(len));
    }
    if len > MAX_PACKET_LEN {
        return Err(OpenError::TooLong(len));
    }
    Ok(())
}

#[inline]
fn aad_of_slice(head: &[u8]) -> [u8; HEADER_LEN] {
    let mut encoded = [0u8; HEADER_LEN];
    encoded.copy_from_slice(&head[..HEADER_LEN]);
    Header::aad_of(&encoded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use netrun_messages::{NodeId, PacketFlags};
    use proptest::prelude::*;
    use zeroize::Zeroizing;

    fn pair() -> (TxKey, RxKey) {
        let key = Zeroizing::new([42u8; 32]);
        (TxKey::new(&key), RxKey::new(&key))
    }

    fn data_header() -> Header {
        let mut h = Header::new(PacketKind::Data, NodeId(1), NodeId(2));
        h.stream = 77;
        h.flags = PacketFlags::RELIABLE;
        h
    }

    #[test]
    fn round_trip_and_replay() {
        let (tx, rx) = pair();
        let mut out = Vec::new();
        let written = seal_datagram(&tx, data_header(), b"payload", &mut out).unwrap();
        assert_eq!(written.counter, 0);
        assert_eq!(out.len(), HEADER_LEN + 7 + TAG_LEN);
        let mut copy = out.clone();
        let (header, range) = open_datagram(&rx, &mut out).unwrap();
        assert_eq!(header, written);
        assert_eq!(&out[range], b"payload");
        assert!(matches!(
            open_datagram(&rx, &mut copy),
            Err(OpenError::Replay(0))
        ));
    }

    #[test]
    fn relay_may_rewrite_ttl_and_hops_only() {
        let (tx, rx) = pair();
        let mut out = Vec::new();
        seal_datagram(&tx, data_header(), b"x", &mut out).unwrap();
        let mut relayed = out.clone();
        relayed[3] = 1;
        relayed[4] = 9;
        assert!(open_datagram(&rx, &mut relayed).is_ok());
        seal_datagram(&tx, data_header(), b"x", &mut out).unwrap();
        out[24] ^= 1; // stream id
        assert!(matches!(
            open_datagram(&rx, &mut out),
            Err(OpenError::Authentication)
        ));
    }

    #[test]
    fn rejects_cheaply_before_aead() {
        let (tx, rx) = pair();
        assert!(matches!(
            open_datagram(&rx, &mut [0u8; 10]),
            Err(OpenError::TooShort(10))
        ));
        let mut big = vec![0u8; MAX_PACKET_LEN + 1];
        assert!(matches!(
            open_datagram(&rx, &mut big),
            Err(OpenError::TooLong(_))
        ));
        let mut junk = [0u8; 80];
        assert!(matches!(
            open_datagram(&rx, &mut junk),
            Err(OpenError::Malformed(_))
        ));
        let mut hs = Header::new(PacketKind::HandshakeInit, NodeId(1), NodeId(2));
        hs.payload_len = 16;
        let mut buf = hs.encode().to_vec();
        buf.extend_from_slice(&[0; 16]);
        assert!(matches!(
            open_datagram(&rx, &mut buf),
            Err(OpenError::NotSealedKind(_))
        ));
        // A forged far-ahead counter is refused without an AEAD attempt.
        let tx_far = TxKey::with_counter(&Zeroizing::new([42u8; 32]), 1 << 40);
        let mut out = Vec::new();
        seal_datagram(&tx_far, data_header(), b"", &mut out).unwrap();
        assert!(matches!(
            open_datagram(&rx, &mut out),
            Err(OpenError::TooFarAhead(_))
        ));
        let _ = tx;
    }

    #[test]
    fn seal_errors() {
        let (tx, _) = pair();
        let mut out = Vec::new();
        let hs = Header::new(PacketKind::HandshakeResponse, NodeId(1), NodeId(2));
        assert_eq!(
            seal_datagram(&tx, hs, b"", &mut out),
            Err(SealError::NotSealedKind(PacketKind::HandshakeResponse))
        );
        let big = vec![0u8; MAX_PAYLOAD_LEN + 1];
        assert!(matches!(
            seal_datagram(&tx, data_header(), &big, &mut out),
            Err(SealError::TooLong { .. })
        ));
        let max = vec![0u8; MAX_PAYLOAD_LEN];
        seal_datagram(&tx, data_header(), &max, &mut out).unwrap();
        assert_eq!(out.len(), MAX_PACKET_LEN);
        let mut small = [0u8; MIN_SEALED_LEN];
        assert!(seal_in_place(&tx, data_header(), &mut small, 0).is_ok());
        assert!(matches!(
            seal_in_place(&tx, data_header(), &mut small, 1),
            Err(SealError::BufferTooSmall { .. })
        ));
    }

    #[test]
    fn heartbeat_verify_only() {
        let (tx, rx) = pair();
        let mut out = Vec::new();
        let written = seal_heartbeat(&tx, NodeId(1), NodeId(2), 5 << 1, &mut out).unwrap();
        assert_eq!(out.len(), MIN_SEALED_LEN);
        assert_eq!(open_heartbeat(&rx, &out).unwrap(), written);
        assert!(matches!(
            open_heartbeat(&rx, &out),
            Err(OpenError::Replay(_))
        ));
        let mut data = Vec::new();
        seal_datagram(&tx, data_header(), b"abc", &mut data).unwrap();
        assert!(matches!(
            open_heartbeat(&rx, &data),
            Err(OpenError::NotSealedKind(_))
        ));
        let mut h = Header::new(PacketKind::Heartbeat, NodeId(1), NodeId(2));
        seal_datagram(&tx, h, b"abc", &mut data).unwrap();
        assert!(matches!(
            open_heartbeat(&rx, &data),
            Err(OpenError::BadHeartbeat(19))
        ));
        h.counter = 99;
        let mut forged = h.encode().to_vec();
        forged[40..44].copy_from_slice(&16u32.to_le_bytes());
        forged.extend_from_slice(&[0; 16]);
        assert!(matches!(
            open_heartbeat(&rx, &forged),
            Err(OpenError::Authentication)
        ));
        // The forged counter was not committed: the genuine packet 99 would still be fresh.
        assert!(rx.precheck(99).is_ok());
    }

    proptest! {
        #[test]
        fn open_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let (_, rx) = pair();
            let mut b = bytes.clone();
            let _ = open_datagram(&rx, &mut b);
            let _ = open_heartbeat(&rx, &bytes);
        }

        #[test]
        fn seal_open_round_trip(text in proptest::collection::vec(any::<u8>(), 0..1500), stream: u64) {
            let (tx, rx) = pair();
            let mut h = data_header();
            h.stream = stream;
            let mut out = Vec::new();
            seal_datagram(&tx, h, &text, &mut out).unwrap();
            let (got, range) = open_datagram(&rx, &mut out).unwrap();
            prop_assert_eq!(got.stream, stream);
            prop_assert_eq!(&out[range], &text[..]);
        }
    }
}
