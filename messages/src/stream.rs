//! Stream wire frames: the DATA segment header and the stream control frames.
//!
//! A stream segment travels as the plaintext of a sealed [`PacketKind::Stream`] packet. The
//! packet header already names the stream (`Header::stream`) and says whether it is
//! reliable ([`PacketFlags::RELIABLE`]); the plaintext starts with a [`SegmentHeader`] and
//! the rest is application bytes:
//!
//! ```text
//!  DATA segment (plaintext of a Stream packet)
//!  off size field     notes
//!    0   1  version   = SEGMENT_VERSION (1); anything else is refused
//!    1   1  flags     bit 0 FIN (last segment of the sender's direction); others zero
//!    2   2  reserved  zero
//!    4   8  seq       segment sequence number, u64 LE; one per `send`, from 0
//!   12   8  offset    byte offset of the first data byte in the direction, u64 LE
//!   20   …  data      ≤ MAX_SEGMENT_DATA bytes (offset + len must not overflow)
//! ```
//!
//! Control frames are the body of a [`Subprotocol::STREAM`] envelope. The body is this
//! fixed layout (not rmp-serde), so the per-stream feedback path never allocates more than
//! a NACK's bounded range list:
//!
//! ```text
//!  control frame (Subprotocol::STREAM envelope body)
//!  off size field     notes
//!    0   1  version   = FRAME_VERSION (1)
//!    1   1  type      1 GRANT, 2 NACK, 3 RESET, 4 PROBE
//!    2   2  arg       u16 LE: NACK range count (1..=MAX_NACK_RANGES), RESET reason, else 0
//!    4   8  stream    stream id, u64 LE
//!  GRANT (28 bytes):
//!   12   8  consumed       cumulative bytes the receiving application consumed
//!   20   8  next_expected  lowest seq the receiver has not received (cumulative ack)
//!  NACK (12 + 16·n bytes):
//!   12  16·n ranges        [start, end) u64 LE pairs; start < end; strictly ascending and
//!                          non-adjacent (start > previous end)
//!  PROBE (28 bytes):
//!   12   8  next_seq       the sequence number the sender will assign next
//!   20   8  next_offset    the byte offset the sender will assign next
//!  RESET (12 bytes): no body
//! ```
//!
//! A GRANT is authoritative: it carries totals, never deltas, so the newest grant replaces
//! every older one and coalescing or losing grants cannot undercount credit. The stream id,
//! consumed count and cumulative ack make its 24-byte body. A PROBE asks the receiver to
//! repeat its current grant (a sender whose credit is exhausted and whose last grant may
//! have been lost); it says how far the sender has sent, so a best-effort receiver can
//! credit back segments that were lost at the tail and that it would otherwise never learn
//! about.
//!
//! [`PacketKind::Stream`]: crate::header::PacketKind::Stream
//! [`PacketFlags::RELIABLE`]: crate::header::PacketFlags::RELIABLE
//! [`Subprotocol::STREAM`]: crate::envelope::Subprotocol::STREAM

use thiserror::Error;

use crate::error::{DecodeError, array_at, u16_le_at, u64_le_at};
use crate::header::MAX_PAYLOAD_LEN;

/// Version byte of the DATA segment header.
pub const SEGMENT_VERSION: u8 = 1;
/// Encoded size of a [`SegmentHeader`].
pub const SEGMENT_HEADER_LEN: usize = 20;
/// Most application bytes one segment carries: what is left of a packet's plaintext after
/// the segment header, so one segment is one datagram.
pub const MAX_SEGMENT_DATA: usize = MAX_PAYLOAD_LEN - SEGMENT_HEADER_LEN;
/// Version byte of a control frame.
pub const FRAME_VERSION: u8 = 1;
/// Encoded size of the part every control frame starts with.
pub const FRAME_HEADER_LEN: usize = 12;
/// Encoded size of a GRANT frame.
pub const GRANT_LEN: usize = FRAME_HEADER_LEN + 16;
/// Encoded size of a PROBE frame.
pub const PROBE_LEN: usize = FRAME_HEADER_LEN + 16;
/// Most ranges one NACK carries. A receiver reports its first gaps; later gaps follow once
/// these are repaired, so a small fixed bound (1,036 bytes of frame) loses nothing.
pub const MAX_NACK_RANGES: usize = 64;
/// Encoded size of one NACK range.
pub const NACK_RANGE_LEN: usize = 16;

const FLAG_FIN: u8 = 1;
const TYPE_GRANT: u8 = 1;
const TYPE_NACK: u8 = 2;
const TYPE_RESET: u8 = 3;
const TYPE_PROBE: u8 = 4;

/// The header that precedes the application bytes of one stream segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SegmentHeader {
    /// Segment sequence number in this direction (one per send, from 0).
    pub seq: u64,
    /// Byte offset of the segment's first data byte in this direction.
    pub offset: u64,
    /// The sender will send nothing after this segment.
    pub fin: bool,
}

impl SegmentHeader {
    /// Encoded size (always [`SEGMENT_HEADER_LEN`]).
    pub const fn encoded_len(&self) -> usize {
        SEGMENT_HEADER_LEN
    }

    /// Encodes the header.
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut out = [0u8; SEGMENT_HEADER_LEN];
        out[0] = SEGMENT_VERSION;
        out[1] = if self.fin { FLAG_FIN } else { 0 };
        out[4..12].copy_from_slice(&self.seq.to_le_bytes());
        out[12..20].copy_from_slice(&self.offset.to_le_bytes());
        out
    }

    /// Appends the header and `data` to `out` (a packet plaintext).
    pub fn encode_with(&self, data: &[u8], out: &mut Vec<u8>) {
        out.reserve(SEGMENT_HEADER_LEN + data.len());
        out.extend_from_slice(&self.encode());
        out.extend_from_slice(data);
    }

    /// Splits a segment plaintext into its header and data without copying.
    ///
    /// Refuses other versions, set reserved bits or bytes, data over [`MAX_SEGMENT_DATA`],
    /// and an `offset + len` that overflows.
    pub fn parse(buf: &[u8]) -> Result<(Self, &[u8]), DecodeError> {
        let [version, flags, r0, r1] = array_at::<4>(buf, 0)?;
        if version != SEGMENT_VERSION {
            return Err(DecodeError::UnknownVersion {
                what: "stream segment",
                version,
            });
        }
        if flags & !FLAG_FIN != 0 {
            return Err(DecodeError::Reserved("segment flags"));
        }
        if r0 != 0 || r1 != 0 {
            return Err(DecodeError::Reserved("segment header"));
        }
        let seq = u64_le_at(buf, 4)?;
        let offset = u64_le_at(buf, 12)?;
        let data = &buf[SEGMENT_HEADER_LEN..];
        if data.len() > MAX_SEGMENT_DATA {
            return Err(DecodeError::TooLong {
                what: "segment data",
                len: data.len(),
                max: MAX_SEGMENT_DATA,
            });
        }
        if offset.checked_add(data.len() as u64).is_none() {
            return Err(DecodeError::Invalid("segment offset"));
        }
        let header = Self {
            seq,
            offset,
            fin: flags & FLAG_FIN != 0,
        };
        Ok((header, data))
    }
}

/// Credit and cumulative acknowledgement from a stream's receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Grant {
    /// Stream id.
    pub stream: u64,
    /// Total bytes the receiving application has consumed (authoritative, never a delta).
    pub consumed: u64,
    /// Lowest sequence number not yet received: everything below it is acknowledged.
    pub next_expected: u64,
}

/// A half-open range `[start, end)` of segment sequence numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SeqRange {
    /// First sequence number in the range.
    pub start: u64,
    /// One past the last sequence number in the range.
    pub end: u64,
}

impl SeqRange {
    /// Whether `seq` lies in the range.
    pub const fn contains(&self, seq: u64) -> bool {
        self.start <= seq && seq < self.end
    }
}

/// Why a NACK could not be built.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NackError {
    /// A NACK names at least one missing range.
    #[error("a nack needs at least one range")]
    Empty,
    /// More ranges than [`MAX_NACK_RANGES`].
    #[error("{0} nack ranges exceed the limit")]
    TooMany(usize),
    /// A range is empty, or ranges are not strictly ascending and non-adjacent.
    #[error("nack ranges are empty, unordered, overlapping or adjacent")]
    Unordered,
}

/// Sequence ranges a receiver is missing (below the highest sequence it has seen).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Nack {
    stream: u64,
    ranges: Vec<SeqRange>,
}

impl Nack {
    /// A NACK for `stream`; `ranges` must be non-empty, at most [`MAX_NACK_RANGES`], each
    /// non-empty, strictly ascending and non-adjacent (the one canonical form).
    pub fn new(stream: u64, ranges: Vec<SeqRange>) -> Result<Self, NackError> {
        if ranges.is_empty() {
            return Err(NackError::Empty);
        }
        if ranges.len() > MAX_NACK_RANGES {
            return Err(NackError::TooMany(ranges.len()));
        }
        if !canonical(&ranges) {
            return Err(NackError::Unordered);
        }
        Ok(Self { stream, ranges })
    }

    /// Stream id.
    pub fn stream(&self) -> u64 {
        self.stream
    }

    /// The missing ranges, ascending.
    pub fn ranges(&self) -> &[SeqRange] {
        &self.ranges
    }
}

/// Why a stream was reset. An open code space: unknown codes decode and are reported as is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ResetReason(pub u16);

impl ResetReason {
    /// The sender retransmitted past its retry limit without progress.
    pub const MAX_RETRIES: Self = Self(1);
    /// The application aborted the stream.
    pub const ABORTED: Self = Self(2);
    /// The peer broke the stream protocol (e.g. data past its credit).
    pub const PROTOCOL: Self = Self(3);
    /// The receiver refused the stream (table full, or the stream is unknown and closed).
    pub const REFUSED: Self = Self(4);
    /// A graceful close did not finish before its deadline.
    pub const CLOSE_TIMEOUT: Self = Self(5);
    /// A pending read saw no progress within the give-up time.
    pub const READ_TIMEOUT: Self = Self(6);
}

/// A sender's request for a fresh grant, with how far it has sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Probe {
    /// Stream id.
    pub stream: u64,
    /// The sequence number the sender assigns next (everything below was sent).
    pub next_seq: u64,
    /// The byte offset the sender assigns next.
    pub next_offset: u64,
}

/// Tells the peer a stream is dead; its pending reads and sends fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Reset {
    /// Stream id.
    pub stream: u64,
    /// Why.
    pub reason: ResetReason,
}

/// One stream control frame (the body of a `Subprotocol::STREAM` envelope).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum StreamFrame {
    /// Credit and cumulative ack, receiver → sender.
    Grant(Grant),
    /// Missing segments, receiver → sender.
    Nack(Nack),
    /// The stream is dead, either direction.
    Reset(Reset),
    /// "Repeat your grant", sender → receiver, when credit is exhausted.
    Probe(Probe),
}

impl StreamFrame {
    /// The stream the frame is about.
    pub fn stream(&self) -> u64 {
        match self {
            Self::Grant(g) => g.stream,
            Self::Nack(n) => n.stream,
            Self::Reset(r) => r.stream,
            Self::Probe(p) => p.stream,
        }
    }

    /// Encoded size.
    pub fn encoded_len(&self) -> usize {
        match self {
            Self::Grant(_) => GRANT_LEN,
            Self::Nack(n) => FRAME_HEADER_LEN + NACK_RANGE_LEN * n.ranges.len(),
            Self::Reset(_) => FRAME_HEADER_LEN,
            Self::Probe(_) => PROBE_LEN,
        }
    }

    /// Appends the encoding to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.reserve(self.encoded_len());
        let (kind, arg) = match self {
            Self::Grant(_) => (TYPE_GRANT, 0),
            // Bounded by MAX_NACK_RANGES at construction, so the count fits in u16.
            Self::Nack(n) => (TYPE_NACK, n.ranges.len() as u16),
            Self::Reset(r) => (TYPE_RESET, r.reason.0),
            Self::Probe(_) => (TYPE_PROBE, 0),
        };
        out.push(FRAME_VERSION);
        out.push(kind);
        out.extend_from_slice(&arg.to_le_bytes());
        out.extend_from_slice(&self.stream().to_le_bytes());
        match self {
            Self::Grant(g) => {
                out.extend_from_slice(&g.consumed.to_le_bytes());
                out.extend_from_slice(&g.next_expected.to_le_bytes());
            }
            Self::Nack(n) => {
                for r in &n.ranges {
                    out.extend_from_slice(&r.start.to_le_bytes());
                    out.extend_from_slice(&r.end.to_le_bytes());
                }
            }
            Self::Probe(p) => {
                out.extend_from_slice(&p.next_seq.to_le_bytes());
                out.extend_from_slice(&p.next_offset.to_le_bytes());
            }
            Self::Reset(_) => {}
        }
    }

    /// The encoding as a new vector.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode_into(&mut out);
        out
    }

    /// Decodes one frame; the input must end exactly where the frame does.
    ///
    /// Refuses other versions, unknown types, a non-zero `arg` where it is unused, a NACK
    /// range count of 0 or over [`MAX_NACK_RANGES`] (checked before allocating), ranges that
    /// are not canonical, short input and trailing bytes.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let [version, kind] = array_at::<2>(buf, 0)?;
        if version != FRAME_VERSION {
            return Err(DecodeError::UnknownVersion {
                what: "stream frame",
                version,
            });
        }
        let arg = u16_le_at(buf, 2)?;
        let stream = u64_le_at(buf, 4)?;
        let (frame, len) = match kind {
            TYPE_GRANT => {
                if arg != 0 {
                    return Err(DecodeError::Reserved("grant arg"));
                }
                let grant = Grant {
                    stream,
                    consumed: u64_le_at(buf, 12)?,
                    next_expected: u64_le_at(buf, 20)?,
                };
                (Self::Grant(grant), GRANT_LEN)
            }
            TYPE_NACK => {
                let count = usize::from(arg);
                if count == 0 {
                    return Err(DecodeError::Invalid("empty nack"));
                }
                if count > MAX_NACK_RANGES {
                    return Err(DecodeError::TooLong {
                        what: "nack ranges",
                        len: count,
                        max: MAX_NACK_RANGES,
                    });
                }
                let len = FRAME_HEADER_LEN + NACK_RANGE_LEN * count;
                if buf.len() < len {
                    return Err(DecodeError::Truncated {
                        need: len,
                        have: buf.len(),
                    });
                }
                let mut ranges = Vec::with_capacity(count);
                for i in 0..count {
                    let at = FRAME_HEADER_LEN + NACK_RANGE_LEN * i;
                    ranges.push(SeqRange {
                        start: u64_le_at(buf, at)?,
                        end: u64_le_at(buf, at + 8)?,
                    });
                }
                if !canonical(&ranges) {
                    return Err(DecodeError::Invalid("nack ranges"));
                }
                (Self::Nack(Nack { stream, ranges }), len)
            }
            TYPE_RESET => (
                Self::Reset(Reset {
                    stream,
                    reason: ResetReason(arg),
                }),
                FRAME_HEADER_LEN,
            ),
            TYPE_PROBE => {
                if arg != 0 {
                    return Err(DecodeError::Reserved("probe arg"));
                }
                let probe = Probe {
                    stream,
                    next_seq: u64_le_at(buf, 12)?,
                    next_offset: u64_le_at(buf, 20)?,
                };
                (Self::Probe(probe), PROBE_LEN)
            }
            _ => return Err(DecodeError::Invalid("stream frame type")),
        };
        if buf.len() > len {
            return Err(DecodeError::TrailingBytes(buf.len() - len));
        }
        Ok(frame)
    }
}

/// Non-empty ranges, strictly ascending, with a gap between neighbours.
fn canonical(ranges: &[SeqRange]) -> bool {
    ranges.iter().all(|r| r.start < r.end) && ranges.windows(2).all(|w| w[0].end < w[1].start)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ranges() -> impl Strategy<Value = Vec<SeqRange>> {
        // Gaps and lengths ≥ 1 keep the ranges canonical by construction.
        proptest::collection::vec((1u64..1000, 1u64..1000), 1..=MAX_NACK_RANGES).prop_map(|steps| {
            let mut at = 0u64;
            steps
                .into_iter()
                .map(|(gap, len)| {
                    let start = at + gap;
                    at = start + len;
                    SeqRange { start, end: at }
                })
                .collect()
        })
    }

    fn frame() -> impl Strategy<Value = StreamFrame> {
        prop_oneof![
            (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(stream, consumed, n)| {
                StreamFrame::Grant(Grant {
                    stream,
                    consumed,
                    next_expected: n,
                })
            }),
            (any::<u64>(), ranges()).prop_map(|(stream, ranges)| {
                StreamFrame::Nack(Nack::new(stream, ranges).expect("canonical"))
            }),
            (any::<u64>(), any::<u16>()).prop_map(|(stream, r)| {
                StreamFrame::Reset(Reset {
                    stream,
                    reason: ResetReason(r),
                })
            }),
            (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(
                |(stream, next_seq, next_offset)| {
                    StreamFrame::Probe(Probe {
                        stream,
                        next_seq,
                        next_offset,
                    })
                }
            ),
        ]
    }

    proptest! {
        #[test]
        fn frame_round_trip(f in frame()) {
            let bytes = f.to_vec();
            prop_assert_eq!(f.encoded_len(), bytes.len());
            prop_assert_eq!(StreamFrame::decode(&bytes).expect("decodes"), f);
        }

        #[test]
        fn segment_round_trip(
            seq: u64,
            offset in 0u64..u64::MAX / 2,
            fin: bool,
            data in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let h = SegmentHeader { seq, offset, fin };
            let mut bytes = Vec::new();
            h.encode_with(&data, &mut bytes);
            prop_assert_eq!(h.encoded_len() + data.len(), bytes.len());
            let (back, payload) = SegmentHeader::parse(&bytes).expect("parses");
            prop_assert_eq!(back, h);
            prop_assert_eq!(payload, &data[..]);
        }

        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = StreamFrame::decode(&bytes);
            let _ = SegmentHeader::parse(&bytes);
        }
    }

    fn grant_bytes() -> Vec<u8> {
        StreamFrame::Grant(Grant {
            stream: 7,
            consumed: 100,
            next_expected: 3,
        })
        .to_vec()
    }

    #[test]
    fn grant_layout_is_fixed() {
        let b = grant_bytes();
        assert_eq!(b.len(), 28);
        assert_eq!(&b[..4], &[1, 1, 0, 0]);
        assert_eq!(&b[4..12], &7u64.to_le_bytes());
        assert_eq!(&b[12..20], &100u64.to_le_bytes());
        assert_eq!(&b[20..28], &3u64.to_le_bytes());
    }

    #[test]
    fn frame_rejects_malformed() {
        let good = grant_bytes();
        let mut v = good.clone();
        v[0] = 2;
        assert!(matches!(
            StreamFrame::decode(&v),
            Err(DecodeError::UnknownVersion { version: 2, .. })
        ));
        let mut v = good.clone();
        v[1] = 9;
        assert!(matches!(
            StreamFrame::decode(&v),
            Err(DecodeError::Invalid(_))
        ));
        let mut v = good.clone();
        v[2] = 1;
        assert!(matches!(
            StreamFrame::decode(&v),
            Err(DecodeError::Reserved(_))
        ));
        let mut v = good.clone();
        v.push(0);
        assert!(matches!(
            StreamFrame::decode(&v),
            Err(DecodeError::TrailingBytes(1))
        ));
        assert!(matches!(
            StreamFrame::decode(&good[..27]),
            Err(DecodeError::Truncated { .. })
        ));
        assert!(matches!(
            StreamFrame::decode(&[]),
            Err(DecodeError::Truncated { .. })
        ));
    }

    #[test]
    fn nack_bounds_and_canonical_form() {
        let nack = |count: u16, ranges: &[(u64, u64)]| {
            let mut v = vec![FRAME_VERSION, TYPE_NACK];
            v.extend_from_slice(&count.to_le_bytes());
            v.extend_from_slice(&5u64.to_le_bytes());
            for (s, e) in ranges {
                v.extend_from_slice(&s.to_le_bytes());
                v.extend_from_slice(&e.to_le_bytes());
            }
            v
        };
        assert!(StreamFrame::decode(&nack(2, &[(1, 2), (4, 6)])).is_ok());
        assert!(matches!(
            StreamFrame::decode(&nack(0, &[])),
            Err(DecodeError::Invalid(_))
        ));
        // Count over the limit is refused before the ranges are read or allocated.
        assert!(matches!(
            StreamFrame::decode(&nack(u16::MAX, &[])),
            Err(DecodeError::TooLong { .. })
        ));
        assert!(matches!(
            StreamFrame::decode(&nack(2, &[(1, 2)])),
            Err(DecodeError::Truncated { .. })
        ));
        for bad in [[(3, 3), (5, 6)], [(1, 4), (4, 6)], [(5, 6), (1, 2)]] {
            assert!(matches!(
                StreamFrame::decode(&nack(2, &bad)),
                Err(DecodeError::Invalid(_))
            ));
        }
        assert_eq!(Nack::new(1, vec![]), Err(NackError::Empty));
        let many = (0..=MAX_NACK_RANGES as u64)
            .map(|i| SeqRange {
                start: 3 * i,
                end: 3 * i + 1,
            })
            .collect();
        assert_eq!(Nack::new(1, many), Err(NackError::TooMany(65)));
        let adjacent = vec![SeqRange { start: 1, end: 2 }, SeqRange { start: 2, end: 3 }];
        assert_eq!(Nack::new(1, adjacent), Err(NackError::Unordered));
    }

    #[test]
    fn segment_rejects_malformed() {
        let h = SegmentHeader {
            seq: 1,
            offset: 2,
            fin: false,
        };
        let good = h.encode();
        let mut v = good;
        v[0] = 0;
        assert!(matches!(
            SegmentHeader::parse(&v),
            Err(DecodeError::UnknownVersion { .. })
        ));
        let mut v = good;
        v[1] = 2;
        assert!(matches!(
            SegmentHeader::parse(&v),
            Err(DecodeError::Reserved(_))
        ));
        let mut v = good;
        v[3] = 1;
        assert!(matches!(
            SegmentHeader::parse(&v),
            Err(DecodeError::Reserved(_))
        ));
        assert!(matches!(
            SegmentHeader::parse(&good[..19]),
            Err(DecodeError::Truncated { .. })
        ));
        let mut big = good.to_vec();
        big.resize(SEGMENT_HEADER_LEN + MAX_SEGMENT_DATA + 1, 0);
        assert!(matches!(
            SegmentHeader::parse(&big),
            Err(DecodeError::TooLong { .. })
        ));
        let mut v = SegmentHeader {
            seq: 0,
            offset: u64::MAX,
            fin: true,
        }
        .encode()
        .to_vec();
        assert!(SegmentHeader::parse(&v).is_ok());
        v.push(1);
        assert!(matches!(
            SegmentHeader::parse(&v),
            Err(DecodeError::Invalid(_))
        ));
    }
}
