//! The fixed 48-byte packet header that starts every netrun datagram.
//!
//! ```text
//!  off size field        notes
//!    0   1  version      = WIRE_VERSION (1); anything else is refused
//!    1   1  kind         PacketKind
//!    2   1  flags        PacketFlags; undefined bits must be zero
//!    3   1  ttl          hops left; rewritten by relays       ┐ relay-mutable,
//!    4   1  hop_count    hops taken; rewritten by relays      ┘ zeroed in the AAD
//!    5   3  reserved     zero
//!    8   8  src          source NodeId, little-endian
//!   16   8  dst          destination NodeId, little-endian
//!   24   8  stream       stream or channel id, little-endian
//!   32   8  counter      64-bit AEAD nonce counter, little-endian
//!   40   4  payload_len  bytes after the header (ciphertext + tag for sealed kinds)
//!   44   4  reserved     zero
//!   48   …  payload
//! ```
//!
//! Bytes `0..24` are the [routing header](crate::routing) a relay reads. The AEAD associated
//! data is the whole header with `ttl` and `hop_count` zeroed ([`Header::aad`]), so a relay
//! can rewrite them without breaking the tag while every other field stays authenticated.
//! All integers are little-endian.

use crate::error::{DecodeError, u32_le_at, u64_le_at};
use crate::ids::NodeId;

/// Wire format version carried in byte 0 of every datagram.
pub const WIRE_VERSION: u8 = 1;
/// Encoded header size.
pub const HEADER_LEN: usize = 48;
/// ChaCha20-Poly1305 tag size.
pub const TAG_LEN: usize = 16;
/// Largest payload (plaintext) one datagram carries. Chosen with the reference system so a
/// sealed packet fits an 8 KiB receive buffer: 48 + 8112 + 16 = 8176.
pub const MAX_PAYLOAD_LEN: usize = 8112;
/// Largest datagram netrun sends or accepts.
pub const MAX_PACKET_LEN: usize = HEADER_LEN + MAX_PAYLOAD_LEN + TAG_LEN;
/// TTL a source stamps on a packet: enough for any path the router keeps.
pub const DEFAULT_TTL: u8 = 16;

const TTL_OFFSET: usize = 3;
const HOPS_OFFSET: usize = 4;

/// What a datagram carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PacketKind {
    /// Noise handshake, first message (initiator → responder); payload is the Noise message.
    HandshakeInit = 1,
    /// Noise handshake, second message (responder → initiator).
    HandshakeResponse = 2,
    /// Application datagram, sealed.
    Data = 3,
    /// Authenticated heartbeat: an empty plaintext, so the payload is exactly the tag.
    Heartbeat = 4,
    /// A sealed [control envelope](crate::envelope).
    Control = 5,
    /// A sealed stream segment.
    Stream = 6,
}

impl PacketKind {
    /// Decodes a kind byte.
    #[inline]
    pub const fn from_u8(byte: u8) -> Result<Self, DecodeError> {
        Ok(match byte {
            1 => Self::HandshakeInit,
            2 => Self::HandshakeResponse,
            3 => Self::Data,
            4 => Self::Heartbeat,
            5 => Self::Control,
            6 => Self::Stream,
            other => return Err(DecodeError::UnknownKind(other)),
        })
    }

    /// Whether the payload is sealed with the session's packet cipher.
    pub const fn is_sealed(self) -> bool {
        !matches!(self, Self::HandshakeInit | Self::HandshakeResponse)
    }
}

/// Per-packet flags. Undefined bits are refused on decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PacketFlags(u8);

impl PacketFlags {
    /// No flags.
    pub const NONE: Self = Self(0);
    /// The payload belongs to a reliable stream (retransmitted on loss).
    pub const RELIABLE: Self = Self(1);
    /// Scheduled ahead of normal traffic.
    pub const PRIORITY: Self = Self(1 << 1);
    /// The payload is a trace-carrying event frame.
    pub const TRACED: Self = Self(1 << 2);
    const ALL: u8 = 0b111;

    /// The raw bits.
    #[inline]
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// Flags from bits; `None` if an undefined bit is set.
    #[inline]
    pub const fn from_bits(bits: u8) -> Option<Self> {
        if bits & !Self::ALL == 0 {
            Some(Self(bits))
        } else {
            None
        }
    }

    /// Whether every flag of `other` is set.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// The union of two flag sets.
    #[must_use]
    pub const fn with(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
}

/// A decoded packet header. See the [module docs](self) for the layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Header {
    /// What the packet carries.
    pub kind: PacketKind,
    /// Per-packet flags.
    pub flags: PacketFlags,
    /// Hops left before a relay drops the packet.
    pub ttl: u8,
    /// Hops taken so far.
    pub hop_count: u8,
    /// The node that sealed the packet.
    pub src: NodeId,
    /// The node that can open it.
    pub dst: NodeId,
    /// Stream or channel id (0 for session-level packets).
    pub stream: u64,
    /// AEAD nonce counter (0 for handshake packets).
    pub counter: u64,
    /// Bytes of payload after the header.
    pub payload_len: u32,
}

impl Header {
    /// A header with the default TTL, no hops and no flags.
    pub const fn new(kind: PacketKind, src: NodeId, dst: NodeId) -> Self {
        Self {
            kind,
            flags: PacketFlags::NONE,
            ttl: DEFAULT_TTL,
            hop_count: 0,
            src,
            dst,
            stream: 0,
            counter: 0,
            payload_len: 0,
        }
    }

    /// Encoded size (always [`HEADER_LEN`]).
    pub const fn encoded_len(&self) -> usize {
        HEADER_LEN
    }

    /// Encodes the header.
    #[inline]
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        self.write(&mut out);
        out
    }

    /// Writes the header into the first [`HEADER_LEN`] bytes of `out`.
    #[inline]
    pub fn write(&self, out: &mut [u8; HEADER_LEN]) {
        out[0] = WIRE_VERSION;
        out[1] = self.kind as u8;
        out[2] = self.flags.bits();
        out[TTL_OFFSET] = self.ttl;
        out[HOPS_OFFSET] = self.hop_count;
        out[5..8].fill(0);
        out[8..16].copy_from_slice(&self.src.0.to_le_bytes());
        out[16..24].copy_from_slice(&self.dst.0.to_le_bytes());
        out[24..32].copy_from_slice(&self.stream.to_le_bytes());
        out[32..40].copy_from_slice(&self.counter.to_le_bytes());
        out[40..44].copy_from_slice(&self.payload_len.to_le_bytes());
        out[44..48].fill(0);
    }

    /// Parses a datagram into its header and payload without copying the payload.
    ///
    /// Checks the version, kind, flags and reserved bytes, bounds `payload_len` by
    /// [`MAX_PAYLOAD_LEN`] + tag, and requires it to equal the bytes present.
    #[inline]
    pub fn parse(buf: &[u8]) -> Result<(Self, &[u8]), DecodeError> {
        if buf.len() < HEADER_LEN {
            return Err(DecodeError::Truncated {
                need: HEADER_LEN,
                have: buf.len(),
            });
        }
        if buf[0] != WIRE_VERSION {
            return Err(DecodeError::UnknownVersion {
                what: "packet",
                version: buf[0],
            });
        }
        let kind = PacketKind::from_u8(buf[1])?;
        let flags = PacketFlags::from_bits(buf[2]).ok_or(DecodeError::Reserved("flags"))?;
        if buf[5..8] != [0; 3] || buf[44..48] != [0; 4] {
            return Err(DecodeError::Reserved("header"));
        }
        let payload_len = u32_le_at(buf, 40)?;
        let max = MAX_PAYLOAD_LEN + TAG_LEN;
        if payload_len as usize > max {
            return Err(DecodeError::TooLong {
                what: "payload",
                len: payload_len as usize,
                max,
            });
        }
        let payload = &buf[HEADER_LEN..];
        if payload.len() != payload_len as usize {
            return Err(DecodeError::LengthMismatch {
                what: "payload",
                declared: payload_len as usize,
                actual: payload.len(),
            });
        }
        let header = Self {
            kind,
            flags,
            ttl: buf[TTL_OFFSET],
            hop_count: buf[HOPS_OFFSET],
            src: NodeId(u64_le_at(buf, 8)?),
            dst: NodeId(u64_le_at(buf, 16)?),
            stream: u64_le_at(buf, 24)?,
            counter: u64_le_at(buf, 32)?,
            payload_len,
        };
        Ok((header, payload))
    }

    /// The AEAD associated data: the encoded header with `ttl` and `hop_count` zeroed.
    #[inline]
    pub fn aad(&self) -> [u8; HEADER_LEN] {
        let mut out = self.encode();
        out[TTL_OFFSET] = 0;
        out[HOPS_OFFSET] = 0;
        out
    }

    /// The AEAD associated data of an already-encoded header (see [`Header::aad`]).
    #[inline]
    pub fn aad_of(encoded: &[u8; HEADER_LEN]) -> [u8; HEADER_LEN] {
        let mut out = *encoded;
        out[TTL_OFFSET] = 0;
        out[HOPS_OFFSET] = 0;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn kind_strategy() -> impl Strategy<Value = PacketKind> {
        (1u8..=6).prop_map(|b| PacketKind::from_u8(b).expect("valid kind"))
    }

    prop_compose! {
        fn header_strategy()(
            kind in kind_strategy(), flags in 0u8..8, ttl: u8, hop_count: u8, src: u64, dst: u64,
            stream: u64, counter: u64, payload_len in 0u32..=(MAX_PAYLOAD_LEN + TAG_LEN) as u32,
        ) -> Header {
            Header {
                kind, flags: PacketFlags::from_bits(flags).expect("defined bits"), ttl, hop_count,
                src: NodeId(src), dst: NodeId(dst), stream, counter, payload_len,
            }
        }
    }

    proptest! {
        #[test]
        fn round_trip(header in header_strategy()) {
            let mut datagram = header.encode().to_vec();
            prop_assert_eq!(header.encoded_len(), datagram.len());
            datagram.resize(HEADER_LEN + header.payload_len as usize, 0xab);
            let (parsed, payload) = Header::parse(&datagram).expect("parses");
            prop_assert_eq!(parsed, header);
            prop_assert_eq!(payload.len(), header.payload_len as usize);
        }

        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Header::parse(&bytes);
        }

        #[test]
        fn aad_ignores_only_routing_mutable_fields(header in header_strategy(), ttl: u8, hops: u8) {
            let mut moved = header;
            moved.ttl = ttl;
            moved.hop_count = hops;
            prop_assert_eq!(header.aad(), moved.aad());
            let mut other = header;
            other.counter = header.counter.wrapping_add(1);
            prop_assert_ne!(header.aad(), other.aad());
        }
    }

    #[test]
    fn rejects_bad_input() {
        let header = Header::new(PacketKind::Data, NodeId(1), NodeId(2));
        let bytes = header.encode();
        assert!(matches!(
            Header::parse(&bytes[..47]),
            Err(DecodeError::Truncated { .. })
        ));
        let mut v = bytes;
        v[0] = 2;
        assert!(matches!(
            Header::parse(&v),
            Err(DecodeError::UnknownVersion { .. })
        ));
        let mut v = bytes;
        v[1] = 0;
        assert!(matches!(
            Header::parse(&v),
            Err(DecodeError::UnknownKind(0))
        ));
        let mut v = bytes;
        v[2] = 0x80;
        assert!(matches!(Header::parse(&v), Err(DecodeError::Reserved(_))));
        let mut v = bytes;
        v[6] = 1;
        assert!(matches!(Header::parse(&v), Err(DecodeError::Reserved(_))));
        let mut v = bytes;
        v[40..44].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            Header::parse(&v),
            Err(DecodeError::TooLong { .. })
        ));
        let mut v = bytes.to_vec();
        v.push(0);
        assert!(matches!(
            Header::parse(&v),
            Err(DecodeError::LengthMismatch { .. })
        ));
    }
}
