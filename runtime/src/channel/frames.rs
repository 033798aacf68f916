//! Event frames on streams: packing a publish batch into stream sends, and reassembling the
//! frames a subscriber reads back out of stream chunks.
//!
//! ```text
//!  publisher: frames f0 f1 f2 … encoded back to back in one buffer
//!             pack(ends, max_send, split) ─► pieces [f0 f1 f2][f3][f4a][f4b] …
//!             (whole frames per piece; a frame larger than a send is split only where
//!              the stream is reliable, else skipped)
//!  subscriber: stream chunks ─► FrameReassembler::push ─► Event { channel, seq, payload }
//! ```
//!
//! Frames are self-delimiting ([`EventFrame::decode_prefix`]), so a reliable stream may cut
//! its bytes anywhere: the reassembler keeps an incomplete frame until the rest arrives. A
//! best-effort stream loses whole segments, so on it every chunk must hold whole frames: a
//! frame cut at the end of a chunk is refused rather than joined with an unrelated chunk.

use std::ops::Range;

use bytes::Bytes;
use netrun_messages::channel::event::{EVENT_HEADER_LEN, EventFrame, MAX_EVENT_PAYLOAD};
use netrun_messages::envelope::TRACE_CONTEXT_LEN;
use netrun_messages::{ChannelHash, DecodeError, TraceContext};

/// Largest encoded frame: the fixed part, a trace context and the largest payload.
pub const MAX_FRAME_LEN: usize = EVENT_HEADER_LEN + TRACE_CONTEXT_LEN + MAX_EVENT_PAYLOAD;

/// One stream send of a packed batch: a byte range of the batch buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    /// The bytes to send.
    pub range: Range<usize>,
    /// Frames whose last byte is in this piece (delivered once this piece is).
    pub frames: usize,
    /// The piece ends inside a frame that the next piece continues: if this piece is
    /// sent and the next is not, the stream's framing is broken and the stream must be
    /// abandoned.
    pub mid_frame: bool,
}

/// A batch cut into stream sends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Packed {
    /// The sends, in order.
    pub pieces: Vec<Piece>,
    /// Frames left out because they exceed one send and splitting was not allowed.
    pub skipped: usize,
}

/// Cuts a batch of encoded frames into stream sends of at most `max_send` bytes.
///
/// Frame `i` occupies `ends[i - 1]..ends[i]` of the batch buffer (`0..ends[0]` for the
/// first); `ends` must be strictly increasing. Consecutive whole frames share a send while
/// they fit. A frame longer than `max_send` is cut into `max_send`-byte pieces when
/// `split` is true (reliable streams deliver bytes in order, so the subscriber joins them)
/// and skipped otherwise (a best-effort stream could lose one piece and deliver the rest).
pub fn pack(ends: &[usize], max_send: usize, split: bool) -> Packed {
    let max_send = max_send.max(1);
    let mut packed = Packed::default();
    let mut start = 0;
    // The open piece: start offset and frames in it.
    let mut open: Option<(usize, usize)> = None;
    for &end in ends {
        let len = end.saturating_sub(start);
        if len > max_send {
            if let Some((from, frames)) = open.take() {
                packed.pieces.push(whole(from..start, frames));
            }
            if split {
                let mut at = start;
                while at < end {
                    let to = (at + max_send).min(end);
                    packed.pieces.push(Piece {
                        range: at..to,
                        frames: usize::from(to == end),
                        mid_frame: to < end,
                    });
                    at = to;
                }
            } else {
                packed.skipped += 1;
            }
        } else {
            match &mut open {
                Some((from, frames)) if end - *from <= max_send => *frames += 1,
                _ => {
                    if let Some((from, frames)) = open.take() {
                        packed.pieces.push(whole(from..start, frames));
                    }
                    open = Some((start, 1));
                }
            }
        }
        start = end;
    }
    if let Some((from, frames)) = open {
        packed.pieces.push(whole(from..start, frames));
    }
    packed
}

fn whole(range: Range<usize>, frames: usize) -> Piece {
    Piece {
        range,
        frames,
        mid_frame: false,
    }
}

/// One event read back from a stream, owning its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The channel hash the frame names.
    pub channel: ChannelHash,
    /// The publisher's per-channel counter.
    pub seq: u64,
    /// The publishing span's trace context, if any.
    pub trace: Option<TraceContext>,
    /// The application bytes.
    pub payload: Bytes,
}

/// Why a stream's bytes are not a sequence of event frames. The stream should be dropped.
#[derive(Debug, thiserror::Error)]
pub enum ReassemblyError {
    /// A frame does not decode (bad version, reserved bits, a length over the limit).
    #[error("malformed event frame: {0}")]
    Malformed(DecodeError),
    /// A best-effort chunk ends inside a frame.
    #[error("best-effort chunk ends inside a frame ({0} bytes left over)")]
    CutFrame(usize),
}

/// Turns the chunks a subscriber reads from one stream back into events.
///
/// Complete frames in a chunk are sliced out of it without copying; only a frame that
/// spans chunks (reliable streams) is copied into the reassembly buffer, which never holds
/// more than one incomplete frame ([`MAX_FRAME_LEN`]) because the length is checked
/// against the limit before anything waits for it.
#[derive(Debug)]
pub struct FrameReassembler {
    reliable: bool,
    pending: Vec<u8>,
}

impl FrameReassembler {
    /// A reassembler for a reliable stream (frames may span chunks) or a best-effort one
    /// (every chunk holds whole frames).
    pub fn new(reliable: bool) -> Self {
        Self {
            reliable,
            pending: Vec::new(),
        }
    }

    /// Bytes of an incomplete frame waiting for the rest.
    pub fn buffered(&self) -> usize {
        self.pending.len()
    }

    /// Feeds one chunk and appends every event it completes to `out`. After an error the
    /// events appended before it are valid; the rest of the stream is not.
    pub fn push(&mut self, mut chunk: Bytes, out: &mut Vec<Event>) -> Result<(), ReassemblyError> {
        if !self.pending.is_empty() {
            // Complete the frame that spans chunks, copying only the bytes it still needs:
            // each `Truncated` says how long the frame must be to decode further.
            loop {
                match EventFrame::decode_prefix(&self.pending) {
                    Ok(_) => break,
                    Err(DecodeError::Truncated { need, .. }) => {
                        if chunk.is_empty() {
                            return Ok(());
                        }
                        let missing = need.saturating_sub(self.pending.len()).max(1);
                        let part = chunk.split_to(missing.min(chunk.len()));
                        self.pending.extend_from_slice(&part);
                    }
                    Err(e) => return Err(ReassemblyError::Malformed(e)),
                }
            }
            let frame = Bytes::from(std::mem::take(&mut self.pending));
            Self::split(&frame, out)?;
        }
        let used = Self::split(&chunk, out)?;
        let rest = &chunk[used..];
        if !rest.is_empty() {
            if !self.reliable {
                return Err(ReassemblyError::CutFrame(rest.len()));
            }
            self.pending.extend_from_slice(rest);
        }
        Ok(())
    }

    /// Slices every complete frame at the start of `buf` into `out`; returns the bytes used.
    fn split(buf: &Bytes, out: &mut Vec<Event>) -> Result<usize, ReassemblyError> {
        let mut at = 0;
        while at < buf.len() {
            match EventFrame::decode_prefix(&buf[at..]) {
                Ok((frame, used)) => {
                    let payload_end = at + used;
                    let payload_start = payload_end - frame.payload.len();
                    out.push(Event {
                        channel: frame.channel,
                        seq: frame.seq,
                        trace: frame.trace,
                        payload: buf.slice(payload_start..payload_end),
                    });
                    at = payload_end;
                }
                Err(DecodeError::Truncated { .. }) => break,
                Err(e) => return Err(ReassemblyError::Malformed(e)),
            }
        }
        Ok(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encode(frames: &[(u64, Vec<u8>)]) -> (Bytes, Vec<usize>) {
        let mut buf = Vec::new();
        let mut ends = Vec::new();
        for (seq, payload) in frames {
            EventFrame {
                channel: ChannelHash(7),
                seq: *seq,
                trace: None,
                payload,
            }
            .encode_into(&mut buf)
            .expect("small");
            ends.push(buf.len());
        }
        (Bytes::from(buf), ends)
    }

    #[test]
    fn small_frames_share_sends() {
        let frames: Vec<_> = (0..10).map(|i| (i, vec![i as u8; 44])).collect();
        let (_, ends) = encode(&frames);
        // 64-byte frames, 200-byte sends: three per send.
        let packed = pack(&ends, 200, false);
        assert_eq!(packed.skipped, 0);
        let counts: Vec<usize> = packed.pieces.iter().map(|p| p.frames).collect();
        assert_eq!(counts, vec![3, 3, 3, 1]);
        assert!(
            packed
                .pieces
                .iter()
                .all(|p| p.range.len() <= 200 && !p.mid_frame)
        );
        assert_eq!(packed.pieces.last().map(|p| p.range.end), Some(640));
    }

    #[test]
    fn large_frames_split_only_when_allowed() {
        let frames = vec![(0, vec![1; 10]), (1, vec![2; 500]), (2, vec![3; 10])];
        let (buf, ends) = encode(&frames);
        let best_effort = pack(&ends, 100, false);
        assert_eq!(best_effort.skipped, 1);
        assert_eq!(
            best_effort.pieces.iter().map(|p| p.frames).sum::<usize>(),
            2
        );
        let reliable = pack(&ends, 100, true);
        assert_eq!(reliable.skipped, 0);
        assert_eq!(reliable.pieces.iter().map(|p| p.frames).sum::<usize>(), 3);
        assert!(reliable.pieces.iter().any(|p| p.mid_frame));
        // The pieces cover the buffer exactly, in order.
        let mut at = 0;
        for p in &reliable.pieces {
            assert_eq!(p.range.start, at);
            at = p.range.end;
        }
        assert_eq!(at, buf.len());
    }

    #[test]
    fn best_effort_refuses_a_cut_frame() {
        let (buf, _) = encode(&[(0, vec![9; 30])]);
        let mut r = FrameReassembler::new(false);
        let mut out = Vec::new();
        assert!(matches!(
            r.push(buf.slice(..20), &mut out),
            Err(ReassemblyError::CutFrame(20))
        ));
        assert!(out.is_empty());
    }

    #[test]
    fn a_large_frame_arrives_in_small_chunks() {
        let frames = vec![(0, vec![5; 200_000]), (1, vec![6; 10])];
        let (buf, _) = encode(&frames);
        let mut r = FrameReassembler::new(true);
        let mut out = Vec::new();
        for piece in buf.chunks(1000) {
            r.push(Bytes::copy_from_slice(piece), &mut out)
                .expect("valid frames");
            // Only the bytes of the incomplete frame wait, never a later one's.
            assert!(r.buffered() <= 200_000 + EVENT_HEADER_LEN);
        }
        assert_eq!(r.buffered(), 0);
        assert_eq!(out.len(), 2);
        assert_eq!(&out[0].payload[..], &frames[0].1[..]);
        assert_eq!(&out[1].payload[..], &frames[1].1[..]);
    }

    #[test]
    fn malformed_frames_are_refused() {
        let mut r = FrameReassembler::new(true);
        let mut out = Vec::new();
        let bad = Bytes::from_static(&[2; 40]);
        assert!(matches!(
            r.push(bad, &mut out),
            Err(ReassemblyError::Malformed(
                DecodeError::UnknownVersion { .. }
            ))
        ));
    }

    proptest! {
        /// Whatever the send size, packing then reassembling from arbitrary chunk cuts of
        /// the pieces gives back every frame, in order, with its payload.
        #[test]
        fn pack_and_reassemble_round_trip(
            payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..20),
            max_send in 30usize..400,
            cuts in proptest::collection::vec(1usize..200, 0..20),
        ) {
            let frames: Vec<(u64, Vec<u8>)> =
                payloads.into_iter().enumerate().map(|(i, p)| (i as u64, p)).collect();
            let (buf, ends) = encode(&frames);
            let packed = pack(&ends, max_send, true);
            prop_assert_eq!(packed.skipped, 0);
            let mut stream = Vec::new();
            for p in &packed.pieces {
                prop_assert!(p.range.len() <= max_send);
                stream.extend_from_slice(&buf[p.range.clone()]);
            }
            prop_assert_eq!(&stream[..], &buf[..]);
            // A reliable stream may re-cut the bytes anywhere.
            let stream = Bytes::from(stream);
            let mut r = FrameReassembler::new(true);
            let mut out = Vec::new();
            let mut at = 0;
            for cut in cuts.iter().chain(std::iter::repeat(&64)) {
                if at >= stream.len() {
                    break;
                }
                let to = (at + cut).min(stream.len());
                r.push(stream.slice(at..to), &mut out).expect("valid frames");
                at = to;
            }
            prop_assert_eq!(r.buffered(), 0);
            prop_assert_eq!(out.len(), frames.len());
            for (event, (seq, payload)) in out.iter().zip(&frames) {
                prop_assert_eq!(event.seq, *seq);
                prop_assert_eq!(&event.payload[..], &payload[..]);
            }
        }

        /// Best effort: each whole-frame piece decodes on its own, whatever was lost before.
        #[test]
        fn best_effort_pieces_stand_alone(
            payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..100), 1..20),
            keep in proptest::collection::vec(any::<bool>(), 20),
        ) {
            let frames: Vec<(u64, Vec<u8>)> =
                payloads.into_iter().enumerate().map(|(i, p)| (i as u64, p)).collect();
            let (buf, ends) = encode(&frames);
            let packed = pack(&ends, 300, false);
            let mut r = FrameReassembler::new(false);
            let mut out = Vec::new();
            let mut expected = 0;
            for (p, keep) in packed.pieces.iter().zip(keep.iter().cycle()) {
                if *keep {
                    r.push(buf.slice(p.range.clone()), &mut out).expect("whole frames");
                    expected += p.frames;
                }
            }
            prop_assert_eq!(out.len(), expected);
            prop_assert!(out.windows(2).all(|w| w[0].seq < w[1].seq));
        }

        #[test]
        fn arbitrary_bytes_never_panic(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..100), 0..8),
            reliable: bool,
        ) {
            let mut r = FrameReassembler::new(reliable);
            let mut out = Vec::new();
            for chunk in chunks {
                if r.push(Bytes::from(chunk), &mut out).is_err() {
                    break;
                }
                prop_assert!(r.buffered() <= MAX_FRAME_LEN);
            }
        }
    }
}
