//! The control envelope: how every subprotocol message travels.
//!
//! ```text
//!  off size field
//!    0   2  subprotocol   u16 little-endian; must be a known Subprotocol
//!    2   1  version       must be the version this build speaks for that subprotocol
//!    3   1  flags         bit 0: a trace context follows; other bits must be zero
//!   [4  25  trace context: trace id 16 ‖ span id 8 ‖ trace flags 1]   (only if bit 0)
//!    …   4  body_len      u32 little-endian, at most MAX_BODY_LEN
//!    …   n  body          rmp-serde encoding of the subprotocol's message
//! ```
//!
//! The envelope is the plaintext of a sealed `Control` packet (or of a stream frame); its
//! trace context is how a W3C trace crosses nodes without the relays seeing it. Decoding
//! borrows the body (no allocation) and refuses unknown subprotocols and versions instead
//! of guessing; nothing may follow the body.

use std::io::Cursor;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{DecodeError, array_at, u16_le_at, u32_le_at};

/// Largest envelope body. Control messages are small; bulk data rides streams in chunks.
pub const MAX_BODY_LEN: usize = 64 * 1024;
/// Size of an encoded [`TraceContext`].
pub const TRACE_CONTEXT_LEN: usize = 25;
/// Deepest msgpack nesting [`decode_body`] follows; real bodies nest a few levels.
pub const MAX_BODY_NESTING: usize = 16;
const FLAG_TRACE: u8 = 1;

/// A subprotocol id. Only the ids listed in [`Subprotocol::KNOWN`] decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Subprotocol(pub u16);

impl Subprotocol {
    /// Session control (close, rekey notices).
    pub const SESSION: Self = Self(0x0100);
    /// Peer exchange: signed peer lists.
    pub const PEER_EXCHANGE: Self = Self(0x0200);
    /// Pingwave probes.
    pub const PINGWAVE: Self = Self(0x0300);
    /// Kademlia DHT.
    pub const DHT: Self = Self(0x0400);
    /// Capability announcements.
    pub const CAPABILITY: Self = Self(0x0500);
    /// Channel membership (subscribe / unsubscribe / ack).
    pub const MEMBERSHIP: Self = Self(0x0600);
    /// Channel publications.
    pub const CHANNEL: Self = Self(0x0700);
    /// nRPC frames.
    pub const RPC: Self = Self(0x0800);
    /// Stream control: window grants, NACKs, resets.
    pub const STREAM: Self = Self(0x0900);
    /// Daemon control and remote placement.
    pub const DAEMON: Self = Self(0x0A00);
    /// Daemon migration.
    pub const MIGRATION: Self = Self(0x0B00);
    /// Application datagrams sent with `Node::send` that carry a trace context.
    pub const DATAGRAM: Self = Self(0x0C00);
    /// Log replication.
    pub const REPLICATION: Self = Self(0x0E00);
    /// Blob transfer.
    pub const BLOB: Self = Self(0x0F00);

    /// Every subprotocol this build knows, with the envelope version it speaks.
    pub const KNOWN: &'static [(Self, u8)] = &[
        (Self::SESSION, 1),
        (Self::PEER_EXCHANGE, 1),
        (Self::PINGWAVE, 1),
        (Self::DHT, 1),
        (Self::CAPABILITY, 1),
        (Self::MEMBERSHIP, 1),
        (Self::CHANNEL, 1),
        (Self::RPC, 1),
        (Self::STREAM, 1),
        (Self::DAEMON, 1),
        (Self::MIGRATION, 1),
        (Self::DATAGRAM, 1),
        (Self::REPLICATION, 1),
        (Self::BLOB, 1),
    ];

    /// The version this build speaks for a known subprotocol.
    pub fn version(self) -> Option<u8> {
        Self::KNOWN
            .iter()
            .find(|(s, _)| *s == self)
            .map(|(_, v)| *v)
    }
}

/// A W3C trace context (`traceparent` fields) carried inside encrypted envelopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TraceContext {
    /// 16-byte trace id.
    pub trace_id: [u8; 16],
    /// 8-byte parent span id.
    pub span_id: [u8; 8],
    /// Trace flags (bit 0: sampled).
    pub flags: u8,
}

impl TraceContext {
    /// Encodes the 25-byte form.
    pub fn encode(&self) -> [u8; TRACE_CONTEXT_LEN] {
        let mut out = [0u8; TRACE_CONTEXT_LEN];
        out[..16].copy_from_slice(&self.trace_id);
        out[16..24].copy_from_slice(&self.span_id);
        out[24] = self.flags;
        out
    }

    /// Decodes the 25-byte form.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        Ok(Self {
            trace_id: array_at::<16>(buf, 0)?,
            span_id: array_at::<8>(buf, 16)?,
            flags: array_at::<1>(buf, 24)?[0],
        })
    }

    /// The W3C `traceparent` header value (`00-<trace>-<span>-<flags>`).
    pub fn to_traceparent(&self) -> String {
        let mut s = String::with_capacity(55);
        s.push_str("00-");
        for b in self.trace_id {
            s.push_str(&format!("{b:02x}"));
        }
        s.push('-');
        for b in self.span_id {
            s.push_str(&format!("{b:02x}"));
        }
        s.push_str(&format!("-{:02x}", self.flags));
        s
    }

    /// Whether the ids are valid (W3C: all-zero trace or span ids are invalid).
    pub fn is_valid(&self) -> bool {
        self.trace_id != [0; 16] && self.span_id != [0; 8]
    }
}

/// A decoded envelope borrowing its body from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Envelope<'a> {
    /// Which subprotocol the body belongs to.
    pub subprotocol: Subprotocol,
    /// The subprotocol version the body is encoded in.
    pub version: u8,
    /// Trace context of the sender's span, if it was traced.
    pub trace: Option<TraceContext>,
    /// The rmp-serde body.
    pub body: &'a [u8],
}

/// Why an envelope could not be built.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// The subprotocol is not in [`Subprotocol::KNOWN`].
    #[error("unknown subprotocol {0:#06x}")]
    UnknownSubprotocol(u16),
    /// The body exceeds [`MAX_BODY_LEN`].
    #[error("body of {0} bytes exceeds the envelope limit")]
    TooLong(usize),
    /// The body could not be serialized.
    #[error("body: {0}")]
    Body(#[from] rmp_serde::encode::Error),
}

impl<'a> Envelope<'a> {
    /// An envelope for `body` in the current version of `subprotocol`.
    pub fn new(
        subprotocol: Subprotocol,
        trace: Option<TraceContext>,
        body: &'a [u8],
    ) -> Result<Self, EncodeError> {
        let version = subprotocol
            .version()
            .ok_or(EncodeError::UnknownSubprotocol(subprotocol.0))?;
        if body.len() > MAX_BODY_LEN {
            return Err(EncodeError::TooLong(body.len()));
        }
        Ok(Self {
            subprotocol,
            version,
            trace,
            body,
        })
    }

    /// Encoded size.
    pub fn encoded_len(&self) -> usize {
        4 + if self.trace.is_some() {
            TRACE_CONTEXT_LEN
        } else {
            0
        } + 4
            + self.body.len()
    }

    /// Appends the encoding to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.reserve(self.encoded_len());
        out.extend_from_slice(&self.subprotocol.0.to_le_bytes());
        out.push(self.version);
        match &self.trace {
            Some(trace) => {
                out.push(FLAG_TRACE);
                out.extend_from_slice(&trace.encode());
            }
            None => out.push(0),
        }
        // Bodies are bounded by MAX_BODY_LEN at construction, so the length fits in u32.
        out.extend_from_slice(&(self.body.len() as u32).to_le_bytes());
        out.extend_from_slice(self.body);
    }

    /// Appends an envelope for `subprotocol` whose body `write_body` appends to `out` in
    /// place: a body that is itself an encoding (a frame) is written once, straight after
    /// the header, instead of into a buffer that is then copied. A body over
    /// [`MAX_BODY_LEN`] is refused and `out` is left as it was.
    pub fn encode_with(
        subprotocol: Subprotocol,
        trace: Option<TraceContext>,
        out: &mut Vec<u8>,
        write_body: impl FnOnce(&mut Vec<u8>),
    ) -> Result<(), EncodeError> {
        let start = out.len();
        // The header of an empty body; its length field, the header's last four bytes,
        // is filled in once the body is written.
        Envelope::new(subprotocol, trace, &[])?.encode_into(out);
        let body_start = out.len();
        write_body(out);
        let len = out.len() - body_start;
        if len > MAX_BODY_LEN {
            out.truncate(start);
            return Err(EncodeError::TooLong(len));
        }
        // At most MAX_BODY_LEN, so it fits in u32.
        out[body_start - 4..body_start].copy_from_slice(&(len as u32).to_le_bytes());
        Ok(())
    }

    /// The encoding as a new vector.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode_into(&mut out);
        out
    }

    /// Decodes an envelope. Refuses unknown subprotocols, versions other than the one this
    /// build speaks, set reserved flag bits, bodies over [`MAX_BODY_LEN`] and trailing bytes.
    pub fn decode(buf: &'a [u8]) -> Result<Self, DecodeError> {
        let id = u16_le_at(buf, 0)?;
        let subprotocol = Subprotocol(id);
        let expected = subprotocol
            .version()
            .ok_or(DecodeError::UnknownSubprotocol(id))?;
        let [version, flags] = array_at::<2>(buf, 2)?;
        if version != expected {
            return Err(DecodeError::UnknownVersion {
                what: "envelope",
                version,
            });
        }
        if flags & !FLAG_TRACE != 0 {
            return Err(DecodeError::Reserved("envelope flags"));
        }
        let mut at = 4;
        let trace = if flags & FLAG_TRACE != 0 {
            let trace = TraceContext::decode(buf.get(at..).unwrap_or_default()).map_err(|_| {
                DecodeError::Truncated {
                    need: at + TRACE_CONTEXT_LEN,
                    have: buf.len(),
                }
            })?;
            at += TRACE_CONTEXT_LEN;
            Some(trace)
        } else {
            None
        };
        let len = u32_le_at(buf, at)? as usize;
        at += 4;
        if len > MAX_BODY_LEN {
            return Err(DecodeError::TooLong {
                what: "envelope body",
                len,
                max: MAX_BODY_LEN,
            });
        }
        let rest = &buf[at..];
        if rest.len() < len {
            return Err(DecodeError::Truncated {
                need: at + len,
                have: buf.len(),
            });
        }
        if rest.len() > len {
            return Err(DecodeError::TrailingBytes(rest.len() - len));
        }
        Ok(Self {
            subprotocol,
            version,
            trace,
            body: rest,
        })
    }

    /// Deserializes the body as `T` (see [`decode_body`] for the checks).
    pub fn body_as<T: DeserializeOwned>(&self) -> Result<T, DecodeError> {
        decode_body(self.body, "envelope body")
    }
}

/// Deserializes an rmp-serde body as `T`: the one way every rmp-serde body is read.
///
/// The body must be at most [`MAX_BODY_LEN`] bytes (`what` names it in the error), nesting
/// deeper than [`MAX_BODY_NESTING`] is refused rather than followed, and nothing may follow
/// the message. rmp-serde copies strings and binaries only after reading them whole and
/// serde caps sequence preallocation, so a declared length cannot make this allocate more
/// than the bounded input.
pub fn decode_body<T: DeserializeOwned>(body: &[u8], what: &'static str) -> Result<T, DecodeError> {
    if body.len() > MAX_BODY_LEN {
        return Err(DecodeError::TooLong {
            what,
            len: body.len(),
            max: MAX_BODY_LEN,
        });
    }
    let mut de = rmp_serde::Deserializer::new(Cursor::new(body));
    de.set_max_depth(MAX_BODY_NESTING);
    let value = T::deserialize(&mut de)?;
    // The position is at most body.len(), which fits in usize.
    let used = usize::try_from(de.position()).unwrap_or(usize::MAX);
    if used < body.len() {
        return Err(DecodeError::TrailingBytes(body.len() - used));
    }
    Ok(value)
}

/// Serializes `message` and wraps it in an envelope for `subprotocol`.
pub fn encode_message<T: Serialize>(
    subprotocol: Subprotocol,
    trace: Option<TraceContext>,
    message: &T,
) -> Result<Vec<u8>, EncodeError> {
    let body = rmp_serde::to_vec(message)?;
    Ok(Envelope::new(subprotocol, trace, &body)?.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn known() -> impl Strategy<Value = Subprotocol> {
        (0..Subprotocol::KNOWN.len()).prop_map(|i| Subprotocol::KNOWN[i].0)
    }

    proptest! {
        #[test]
        fn round_trip(
            sub in known(),
            trace in proptest::option::of((any::<[u8; 16]>(), any::<[u8; 8]>(), any::<u8>())),
            body in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            let trace = trace.map(|(t, s, f)| TraceContext { trace_id: t, span_id: s, flags: f });
            let env = Envelope::new(sub, trace, &body).expect("valid");
            let bytes = env.to_vec();
            prop_assert_eq!(env.encoded_len(), bytes.len());
            prop_assert_eq!(Envelope::decode(&bytes).expect("decodes"), env);
        }

        #[test]
        fn encode_with_writes_what_encode_into_does(
            sub in known(),
            traced: bool,
            prefix in proptest::collection::vec(any::<u8>(), 0..8),
            body in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            let trace = traced.then_some(TraceContext { trace_id: [3; 16], span_id: [4; 8], flags: 1 });
            let mut expected = prefix.clone();
            Envelope::new(sub, trace, &body).expect("valid").encode_into(&mut expected);
            let mut out = prefix.clone();
            Envelope::encode_with(sub, trace, &mut out, |out| out.extend_from_slice(&body))
                .expect("valid");
            prop_assert_eq!(out, expected);
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = Envelope::decode(&bytes);
        }
    }

    #[test]
    fn encode_with_refuses_what_encode_refuses() {
        let mut out = vec![9];
        assert!(matches!(
            Envelope::encode_with(Subprotocol::RPC, None, &mut out, |out| {
                out.resize(out.len() + MAX_BODY_LEN + 1, 0);
            }),
            Err(EncodeError::TooLong(len)) if len == MAX_BODY_LEN + 1
        ));
        assert!(matches!(
            Envelope::encode_with(Subprotocol(0x7777), None, &mut out, |_| {}),
            Err(EncodeError::UnknownSubprotocol(0x7777))
        ));
        assert_eq!(out, vec![9], "left as it was");
        Envelope::encode_with(Subprotocol::RPC, None, &mut out, |out| {
            out.resize(out.len() + MAX_BODY_LEN, 1);
        })
        .expect("the largest body fits");
        assert_eq!(
            Envelope::decode(&out[1..]).expect("decodes").body.len(),
            MAX_BODY_LEN
        );
    }

    #[test]
    fn typed_body_round_trip() {
        let bytes = encode_message(Subprotocol::SESSION, None, &("close", 7u32)).expect("enc");
        let env = Envelope::decode(&bytes).expect("dec");
        assert_eq!(
            env.body_as::<(String, u32)>().expect("body"),
            ("close".to_string(), 7)
        );
        assert!(env.body_as::<(u64, u64, u64)>().is_err());
    }

    #[test]
    fn typed_bodies_are_bounded() {
        let mut body = rmp_serde::to_vec(&("close", 7u32)).expect("enc");
        body.push(0xc0);
        assert!(matches!(
            decode_body::<(String, u32)>(&body, "test"),
            Err(DecodeError::TrailingBytes(1))
        ));
        assert!(matches!(
            decode_body::<Vec<u8>>(&vec![0x90; MAX_BODY_LEN + 1], "test"),
            Err(DecodeError::TooLong { what: "test", .. })
        ));
        // Nesting deeper than the cap is refused, not followed.
        assert!(matches!(
            decode_body::<serde::de::IgnoredAny>(&[0x91; 64], "test"),
            Err(DecodeError::Body(_))
        ));
    }

    #[test]
    fn rejects_unknown_and_oversized() {
        let good = Envelope::new(Subprotocol::RPC, None, b"x")
            .expect("ok")
            .to_vec();
        let mut v = good.clone();
        v[0..2].copy_from_slice(&0x7777u16.to_le_bytes());
        assert!(matches!(
            Envelope::decode(&v),
            Err(DecodeError::UnknownSubprotocol(0x7777))
        ));
        let mut v = good.clone();
        v[2] = 9;
        assert!(matches!(
            Envelope::decode(&v),
            Err(DecodeError::UnknownVersion { version: 9, .. })
        ));
        let mut v = good.clone();
        v[3] = 2;
        assert!(matches!(
            Envelope::decode(&v),
            Err(DecodeError::Reserved(_))
        ));
        let mut v = good.clone();
        v[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            Envelope::decode(&v),
            Err(DecodeError::TooLong { .. })
        ));
        let mut v = good.clone();
        v.push(0);
        assert!(matches!(
            Envelope::decode(&v),
            Err(DecodeError::TrailingBytes(1))
        ));
        assert!(matches!(
            Envelope::decode(&good[..6]),
            Err(DecodeError::Truncated { .. })
        ));
        let big = vec![0u8; MAX_BODY_LEN + 1];
        assert!(matches!(
            Envelope::new(Subprotocol::RPC, None, &big),
            Err(EncodeError::TooLong(_))
        ));
        assert!(matches!(
            Envelope::new(Subprotocol(1), None, b""),
            Err(EncodeError::UnknownSubprotocol(1))
        ));
    }

    #[test]
    fn traceparent_form() {
        let t = TraceContext {
            trace_id: [0xab; 16],
            span_id: [0x01; 8],
            flags: 1,
        };
        assert_eq!(
            t.to_traceparent(),
            "00-abababababababababababababababab-0101010101010101-01"
        );
        assert!(t.is_valid());
        assert!(!TraceContext::default().is_valid());
    }
}
