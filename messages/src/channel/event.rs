//! The event frame: one published event on its way to one subscriber.
//!
//! A publisher sends each event to each subscriber as an [`EventFrame`], over a stream
//! (reliable channels) or as the body of a [`Subprotocol::CHANNEL`] envelope (best effort).
//! The frame is hand-encoded, little-endian, and self-delimiting, so frames can follow one
//! another on a byte stream:
//!
//! ```text
//!  off size field
//!    0   1  version      = EVENT_VERSION (1)
//!    1   1  flags        bit 0: a trace context follows the fixed part; others zero
//!    2   2  reserved     zero
//!    4   4  channel      ChannelHash u32
//!    8   8  seq          the publisher's per-channel event counter, u64
//!   16   4  payload_len  u32, ≤ MAX_EVENT_PAYLOAD
//!  [20  25  trace context: trace id 16 ‖ span id 8 ‖ flags 1]        (only if bit 0)
//!    …   n  payload
//! ```
//!
//! The frame does not name the publisher: that is the authenticated session peer the
//! frame arrived from, and a self-declared publisher field could only be a lie to check.
//! The channel is the 32-bit hash; a publisher refuses to register two channels with one
//! hash, so the pair (publisher, hash) names one channel the subscriber asked for.
//!
//! [`Subprotocol::CHANNEL`]: crate::Subprotocol::CHANNEL

use thiserror::Error;

use super::ChannelHash;
use crate::envelope::{TRACE_CONTEXT_LEN, TraceContext};
use crate::error::{DecodeError, array_at, u16_le_at, u32_le_at, u64_le_at};

/// Version byte of the event frame.
pub const EVENT_VERSION: u8 = 1;
/// Size of the fixed part (without trace context and payload).
pub const EVENT_HEADER_LEN: usize = 20;
/// Largest event payload: 1 MiB. Larger data belongs in a blob with a reference published.
pub const MAX_EVENT_PAYLOAD: usize = 1024 * 1024;
const FLAG_TRACE: u8 = 1;

/// One event, borrowing its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventFrame<'a> {
    /// The channel's hash.
    pub channel: ChannelHash,
    /// The publisher's per-channel counter (lets a best-effort subscriber see gaps).
    pub seq: u64,
    /// The publishing span's trace context, if it was traced.
    pub trace: Option<TraceContext>,
    /// The application bytes, at most [`MAX_EVENT_PAYLOAD`].
    pub payload: &'a [u8],
}

/// The payload exceeds [`MAX_EVENT_PAYLOAD`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("event payload of {0} bytes exceeds the 1 MiB limit")]
pub struct EventTooLong(pub usize);

impl<'a> EventFrame<'a> {
    /// Encoded size.
    pub fn encoded_len(&self) -> usize {
        EVENT_HEADER_LEN
            + if self.trace.is_some() {
                TRACE_CONTEXT_LEN
            } else {
                0
            }
            + self.payload.len()
    }

    /// Appends the encoding to `out`; refuses a payload over [`MAX_EVENT_PAYLOAD`].
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), EventTooLong> {
        if self.payload.len() > MAX_EVENT_PAYLOAD {
            return Err(EventTooLong(self.payload.len()));
        }
        out.reserve(self.encoded_len());
        out.push(EVENT_VERSION);
        out.push(if self.trace.is_some() { FLAG_TRACE } else { 0 });
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&self.channel.0.to_le_bytes());
        out.extend_from_slice(&self.seq.to_le_bytes());
        // ≤ MAX_EVENT_PAYLOAD, so it fits in u32.
        out.extend_from_slice(&(self.payload.len() as u32).to_le_bytes());
        if let Some(trace) = &self.trace {
            out.extend_from_slice(&trace.encode());
        }
        out.extend_from_slice(self.payload);
        Ok(())
    }

    /// The encoding as a new vector.
    pub fn to_vec(&self) -> Result<Vec<u8>, EventTooLong> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode_into(&mut out)?;
        Ok(out)
    }

    /// Decodes one frame at the start of `buf` and returns it with the number of bytes it
    /// used. `Truncated` means the frame is not complete yet (on a stream: read more).
    pub fn decode_prefix(buf: &'a [u8]) -> Result<(Self, usize), DecodeError> {
        let version = array_at::<1>(buf, 0)?[0];
        if version != EVENT_VERSION {
            return Err(DecodeError::UnknownVersion {
                what: "event frame",
                version,
            });
        }
        let flags = array_at::<1>(buf, 1)?[0];
        if flags & !FLAG_TRACE != 0 {
            return Err(DecodeError::Reserved("event flags"));
        }
        if u16_le_at(buf, 2)? != 0 {
            return Err(DecodeError::Reserved("event reserved"));
        }
        let channel = ChannelHash(u32_le_at(buf, 4)?);
        let seq = u64_le_at(buf, 8)?;
        let len = u32_le_at(buf, 16)? as usize;
        if len > MAX_EVENT_PAYLOAD {
            return Err(DecodeError::TooLong {
                what: "event payload",
                len,
                max: MAX_EVENT_PAYLOAD,
            });
        }
        let mut at = EVENT_HEADER_LEN;
        let trace = if flags & FLAG_TRACE != 0 {
            let bytes = array_at::<TRACE_CONTEXT_LEN>(buf, at)?;
            at += TRACE_CONTEXT_LEN;
            Some(TraceContext::decode(&bytes)?)
        } else {
            None
        };
        let end = at + len;
        let Some(payload) = buf.get(at..end) else {
            return Err(DecodeError::Truncated {
                need: end,
                have: buf.len(),
            });
        };
        Ok((
            Self {
                channel,
                seq,
                trace,
                payload,
            },
            end,
        ))
    }

    /// Decodes a frame that must fill `buf` exactly (an envelope body).
    pub fn decode(buf: &'a [u8]) -> Result<Self, DecodeError> {
        let (frame, used) = Self::decode_prefix(buf)?;
        if used < buf.len() {
            return Err(DecodeError::TrailingBytes(buf.len() - used));
        }
        Ok(frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip(
            channel: u32, seq: u64,
            trace in proptest::option::of((any::<[u8; 16]>(), any::<[u8; 8]>(), any::<u8>())),
            payload in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let trace = trace.map(|(t, s, f)| TraceContext { trace_id: t, span_id: s, flags: f });
            let frame = EventFrame { channel: ChannelHash(channel), seq, trace, payload: &payload };
            let bytes = frame.to_vec().expect("within limit");
            prop_assert_eq!(bytes.len(), frame.encoded_len());
            prop_assert_eq!(EventFrame::decode(&bytes).expect("decodes"), frame);
            // Concatenated frames split back apart; every strict prefix is Truncated.
            let mut two = bytes.clone();
            two.extend_from_slice(&bytes);
            let (first, used) = EventFrame::decode_prefix(&two).expect("decodes");
            prop_assert_eq!(first, frame);
            prop_assert_eq!(EventFrame::decode(&two[used..]).expect("decodes"), frame);
            for cut in 0..bytes.len() {
                let is_truncated = matches!(
                    EventFrame::decode_prefix(&bytes[..cut]),
                    Err(DecodeError::Truncated { .. })
                );
                prop_assert!(is_truncated);
            }
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(frame) = EventFrame::decode(&bytes) {
                prop_assert_eq!(frame.to_vec().expect("re-encodes"), bytes);
            }
        }
    }

    #[test]
    fn rejects_malformed() {
        let frame = EventFrame {
            channel: ChannelHash(7),
            seq: 1,
            trace: None,
            payload: b"hi",
        };
        let good = frame.to_vec().expect("ok");
        let mut v = good.clone();
        v[0] = 2;
        assert!(matches!(
            EventFrame::decode(&v),
            Err(DecodeError::UnknownVersion { version: 2, .. })
        ));
        let mut v = good.clone();
        v[1] = 2;
        assert!(matches!(
            EventFrame::decode(&v),
            Err(DecodeError::Reserved(_))
        ));
        let mut v = good.clone();
        v[3] = 1;
        assert!(matches!(
            EventFrame::decode(&v),
            Err(DecodeError::Reserved(_))
        ));
        let mut v = good.clone();
        v[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            EventFrame::decode(&v),
            Err(DecodeError::TooLong { .. })
        ));
        let mut v = good;
        v.push(0);
        assert!(matches!(
            EventFrame::decode(&v),
            Err(DecodeError::TrailingBytes(1))
        ));
        let big = vec![0u8; MAX_EVENT_PAYLOAD + 1];
        let frame = EventFrame {
            payload: &big,
            ..frame
        };
        assert_eq!(frame.to_vec(), Err(EventTooLong(MAX_EVENT_PAYLOAD + 1)));
    }
}
