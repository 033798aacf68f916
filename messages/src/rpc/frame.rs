//! The RPC frames and their fixed-layout codec (layout in the parent module's docs).
//!
//! Frames are generic over the buffer `B` that holds their variable parts (service name,
//! body, message): `&[u8]` when decoded from a borrowed slice, [`Bytes`] when decoded from
//! a shared buffer (the parts are slices of it, no copy), or anything `AsRef<[u8]>` when
//! built for sending. Constructors validate every bound, so encoding cannot fail.

use std::ops::Range;
use std::time::Duration;

use bytes::Bytes;
use thiserror::Error;

use super::{
    CallId, MAX_FRAME_LEN, MAX_MESSAGE_LEN, MAX_RPC_BODY_LEN, RPC_VERSION, ServiceName,
    ServiceNameError, Status, validate_service,
};
use crate::error::{DecodeError, array_at, u16_le_at, u32_le_at, u64_le_at};

/// Encoded size of the part every frame starts with (version, kind, arg, call id).
pub const FRAME_HEADER_LEN: usize = 12;
/// Encoded size of a REQUEST before its service name and body.
pub const REQUEST_FIXED_LEN: usize = 21;
/// Encoded size of a STREAM_ITEM or STREAM_END before its body or message.
pub const ITEM_FIXED_LEN: usize = 20;
/// Encoded size of a CANCEL.
pub const CANCEL_LEN: usize = FRAME_HEADER_LEN;
/// Encoded size of a CREDIT.
pub const CREDIT_LEN: usize = 20;

const KIND_REQUEST: u8 = 1;
const KIND_RESPONSE: u8 = 2;
const KIND_CANCEL: u8 = 3;
const KIND_STREAM_ITEM: u8 = 4;
const KIND_STREAM_END: u8 = 5;
const KIND_CREDIT: u8 = 6;

/// Which frame a [`RpcFrame`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameKind {
    /// Caller → server: start a call.
    Request,
    /// Server → caller: the unary result (or a refusal of any call).
    Response,
    /// Caller → server: abandon the call.
    Cancel,
    /// Server → caller: one item of a streaming response.
    StreamItem,
    /// Server → caller: a streaming response is over.
    StreamEnd,
    /// Caller → server: more stream credit.
    Credit,
}

/// REQUEST flags (the `arg` field of a REQUEST).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct RequestFlags(u16);

impl RequestFlags {
    /// No flags.
    pub const NONE: Self = Self(0);
    /// The caller expects a stream of items (STREAM_ITEM … STREAM_END), not a RESPONSE.
    pub const STREAMING: Self = Self(1);
    /// The envelope carries the caller's trace context; the handler's span is its child.
    pub const TRACED: Self = Self(2);
    const ALL: u16 = Self::STREAMING.0 | Self::TRACED.0;

    /// The raw bits.
    pub const fn bits(self) -> u16 {
        self.0
    }

    /// Whether every bit of `other` is set.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// These flags plus `other`.
    pub const fn with(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
}

/// Why a frame could not be built.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrameError {
    /// The service name breaks the naming rules.
    #[error("service name: {0}")]
    Service(#[from] ServiceNameError),
    /// A body is longer than [`MAX_RPC_BODY_LEN`].
    #[error("body of {len} bytes exceeds {max}")]
    BodyTooLong {
        /// Bytes offered.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// An error message is longer than [`MAX_MESSAGE_LEN`] (see [`bounded_message`]).
    #[error("message of {len} bytes exceeds {max}")]
    MessageTooLong {
        /// Bytes offered.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// An error message is not UTF-8.
    #[error("message is not utf-8")]
    MessageNotUtf8,
    /// [`Response::error`] needs a status other than [`Status::OK`].
    #[error("an error response needs a status other than ok")]
    OkIsNotAnError,
}

/// Start of a call.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Request<B> {
    call_id: CallId,
    flags: RequestFlags,
    deadline_ms: u32,
    window: u32,
    service: B,
    body: B,
}

/// Result of a unary call, or the refusal of any call (a non-Ok status).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Response<B> {
    call_id: CallId,
    status: Status,
    payload: B,
}

/// One item of a streaming response.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StreamItem<B> {
    call_id: CallId,
    seq: u64,
    body: B,
}

/// End of a streaming response: how many items were sent and the final status.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StreamEnd<B> {
    call_id: CallId,
    status: Status,
    items: u64,
    message: B,
}

/// Stream credit: the server may send items with `seq < grant`. A total, so the largest
/// grant seen wins and lost, duplicated or reordered credits never undercount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Credit {
    /// The call.
    pub call_id: CallId,
    /// Items `0..grant` may be sent.
    pub grant: u64,
}

/// One nRPC frame (the body of a `Subprotocol::RPC` envelope).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RpcFrame<B> {
    /// Caller → server: start a call.
    Request(Request<B>),
    /// Server → caller: unary result or refusal.
    Response(Response<B>),
    /// Caller → server: abandon the call (deadline, drop, hedge loser).
    Cancel(CallId),
    /// Server → caller: one stream item.
    StreamItem(StreamItem<B>),
    /// Server → caller: the stream is over.
    StreamEnd(StreamEnd<B>),
    /// Caller → server: stream credit.
    Credit(Credit),
}

impl<B: AsRef<[u8]>> Request<B> {
    /// A unary request without deadline; `service` must be a valid service name and `body`
    /// at most [`MAX_RPC_BODY_LEN`] bytes.
    pub fn new(call_id: CallId, service: B, body: B) -> Result<Self, FrameError> {
        validate_service(service.as_ref())?;
        check_body(body.as_ref().len())?;
        Ok(Self {
            call_id,
            flags: RequestFlags::NONE,
            deadline_ms: 0,
            window: 0,
            service,
            body,
        })
    }

    /// The service name.
    pub fn service(&self) -> &str {
        // Validated as ASCII at construction or decode.
        std::str::from_utf8(self.service.as_ref()).unwrap_or_default()
    }
}

impl<B> Request<B> {
    /// Sets the remaining budget in milliseconds (0 = no deadline).
    pub fn with_deadline_ms(mut self, deadline_ms: u32) -> Self {
        self.deadline_ms = deadline_ms;
        self
    }

    /// Asks for a streaming response with an initial credit of `window` items.
    pub fn with_streaming(mut self, window: u32) -> Self {
        self.flags = self.flags.with(RequestFlags::STREAMING);
        self.window = window;
        self
    }

    /// Marks the request as carrying a trace context in its envelope.
    pub fn with_traced(mut self) -> Self {
        self.flags = self.flags.with(RequestFlags::TRACED);
        self
    }

    /// The call id.
    pub fn call_id(&self) -> CallId {
        self.call_id
    }

    /// The flags.
    pub fn flags(&self) -> RequestFlags {
        self.flags
    }

    /// Whether the caller expects a streaming response.
    pub fn is_streaming(&self) -> bool {
        self.flags.contains(RequestFlags::STREAMING)
    }

    /// Remaining budget in milliseconds when the caller sent the request; 0 = none.
    pub fn deadline_ms(&self) -> u32 {
        self.deadline_ms
    }

    /// The remaining budget, if the call has a deadline.
    pub fn deadline(&self) -> Option<Duration> {
        (self.deadline_ms != 0).then(|| Duration::from_millis(u64::from(self.deadline_ms)))
    }

    /// Initial stream credit in items (0 for unary requests).
    pub fn window(&self) -> u32 {
        self.window
    }

    /// The service name's buffer.
    pub fn service_bytes(&self) -> &B {
        &self.service
    }

    /// The request body.
    pub fn body(&self) -> &B {
        &self.body
    }

    /// Takes the body out.
    pub fn into_body(self) -> B {
        self.body
    }

    /// Converts the buffers.
    pub fn map<C>(self, mut f: impl FnMut(B) -> C) -> Request<C> {
        Request {
            call_id: self.call_id,
            flags: self.flags,
            deadline_ms: self.deadline_ms,
            window: self.window,
            service: f(self.service),
            body: f(self.body),
        }
    }
}

impl Request<Bytes> {
    /// The service name, sharing the frame's buffer.
    pub fn service_name(&self) -> ServiceName {
        ServiceName(self.service.clone())
    }
}

impl<B: AsRef<[u8]>> Response<B> {
    /// A successful response carrying `body` (at most [`MAX_RPC_BODY_LEN`] bytes).
    pub fn ok(call_id: CallId, body: B) -> Result<Self, FrameError> {
        check_body(body.as_ref().len())?;
        Ok(Self {
            call_id,
            status: Status::OK,
            payload: body,
        })
    }

    /// A failed response: `status` is not Ok and `message` is UTF-8 of at most
    /// [`MAX_MESSAGE_LEN`] bytes.
    pub fn error(call_id: CallId, status: Status, message: B) -> Result<Self, FrameError> {
        if status.is_ok() {
            return Err(FrameError::OkIsNotAnError);
        }
        check_message(message.as_ref())?;
        Ok(Self {
            call_id,
            status,
            payload: message,
        })
    }

    /// The error message (`None` when the status is Ok).
    pub fn message(&self) -> Option<&str> {
        if self.status.is_ok() {
            return None;
        }
        // Validated as UTF-8 at construction or decode.
        Some(std::str::from_utf8(self.payload.as_ref()).unwrap_or_default())
    }
}

impl<B> Response<B> {
    /// The call id.
    pub fn call_id(&self) -> CallId {
        self.call_id
    }

    /// The status.
    pub fn status(&self) -> Status {
        self.status
    }

    /// The body (status Ok) or the message bytes (otherwise).
    pub fn payload(&self) -> &B {
        &self.payload
    }

    /// Takes the payload out.
    pub fn into_payload(self) -> B {
        self.payload
    }

    /// Converts the buffer.
    pub fn map<C>(self, f: impl FnOnce(B) -> C) -> Response<C> {
        Response {
            call_id: self.call_id,
            status: self.status,
            payload: f(self.payload),
        }
    }
}

impl<B: AsRef<[u8]>> StreamItem<B> {
    /// Item `seq` of a stream, carrying `body` (at most [`MAX_RPC_BODY_LEN`] bytes).
    pub fn new(call_id: CallId, seq: u64, body: B) -> Result<Self, FrameError> {
        check_body(body.as_ref().len())?;
        Ok(Self { call_id, seq, body })
    }
}

impl<B> StreamItem<B> {
    /// The call id.
    pub fn call_id(&self) -> CallId {
        self.call_id
    }

    /// The item number, from 0.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The item body.
    pub fn body(&self) -> &B {
        &self.body
    }

    /// Takes the body out.
    pub fn into_body(self) -> B {
        self.body
    }

    /// Converts the buffer.
    pub fn map<C>(self, f: impl FnOnce(B) -> C) -> StreamItem<C> {
        StreamItem {
            call_id: self.call_id,
            seq: self.seq,
            body: f(self.body),
        }
    }
}

impl<B: AsRef<[u8]>> StreamEnd<B> {
    /// The end of a stream after `items` items, with its final status and a UTF-8 message
    /// of at most [`MAX_MESSAGE_LEN`] bytes (empty for Ok).
    pub fn new(
        call_id: CallId,
        status: Status,
        items: u64,
        message: B,
    ) -> Result<Self, FrameError> {
        check_message(message.as_ref())?;
        Ok(Self {
            call_id,
            status,
            items,
            message,
        })
    }

    /// The message.
    pub fn message(&self) -> &str {
        // Validated as UTF-8 at construction or decode.
        std::str::from_utf8(self.message.as_ref()).unwrap_or_default()
    }
}

impl<B> StreamEnd<B> {
    /// The call id.
    pub fn call_id(&self) -> CallId {
        self.call_id
    }

    /// The final status.
    pub fn status(&self) -> Status {
        self.status
    }

    /// How many items the server sent (seq `0..items`).
    pub fn items(&self) -> u64 {
        self.items
    }

    /// Converts the buffer.
    pub fn map<C>(self, f: impl FnOnce(B) -> C) -> StreamEnd<C> {
        StreamEnd {
            call_id: self.call_id,
            status: self.status,
            items: self.items,
            message: f(self.message),
        }
    }
}

impl<B> RpcFrame<B> {
    /// Which frame this is.
    pub fn kind(&self) -> FrameKind {
        match self {
            Self::Request(_) => FrameKind::Request,
            Self::Response(_) => FrameKind::Response,
            Self::Cancel(_) => FrameKind::Cancel,
            Self::StreamItem(_) => FrameKind::StreamItem,
            Self::StreamEnd(_) => FrameKind::StreamEnd,
            Self::Credit(_) => FrameKind::Credit,
        }
    }

    /// The call the frame belongs to.
    pub fn call_id(&self) -> CallId {
        match self {
            Self::Request(r) => r.call_id,
            Self::Response(r) => r.call_id,
            Self::Cancel(id) => *id,
            Self::StreamItem(i) => i.call_id,
            Self::StreamEnd(e) => e.call_id,
            Self::Credit(c) => c.call_id,
        }
    }

    /// Converts the buffers (for instance ranges into slices, or slices into `Bytes`).
    pub fn map<C>(self, f: impl FnMut(B) -> C) -> RpcFrame<C> {
        let mut f = f;
        match self {
            Self::Request(r) => RpcFrame::Request(r.map(&mut f)),
            Self::Response(r) => RpcFrame::Response(r.map(&mut f)),
            Self::Cancel(id) => RpcFrame::Cancel(id),
            Self::StreamItem(i) => RpcFrame::StreamItem(i.map(&mut f)),
            Self::StreamEnd(e) => RpcFrame::StreamEnd(e.map(&mut f)),
            Self::Credit(c) => RpcFrame::Credit(c),
        }
    }
}

impl<B: AsRef<[u8]>> RpcFrame<B> {
    /// Encoded size.
    pub fn encoded_len(&self) -> usize {
        match self {
            Self::Request(r) => {
                REQUEST_FIXED_LEN + r.service.as_ref().len() + r.body.as_ref().len()
            }
            Self::Response(r) => FRAME_HEADER_LEN + r.payload.as_ref().len(),
            Self::Cancel(_) => CANCEL_LEN,
            Self::StreamItem(i) => ITEM_FIXED_LEN + i.body.as_ref().len(),
            Self::StreamEnd(e) => ITEM_FIXED_LEN + e.message.as_ref().len(),
            Self::Credit(_) => CREDIT_LEN,
        }
    }

    /// Appends the encoding to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.reserve(self.encoded_len());
        let (kind, arg) = match self {
            Self::Request(r) => (KIND_REQUEST, r.flags.0),
            Self::Response(r) => (KIND_RESPONSE, r.status.code()),
            Self::Cancel(_) => (KIND_CANCEL, 0),
            Self::StreamItem(_) => (KIND_STREAM_ITEM, 0),
            Self::StreamEnd(e) => (KIND_STREAM_END, e.status.code()),
            Self::Credit(_) => (KIND_CREDIT, 0),
        };
        out.push(RPC_VERSION);
        out.push(kind);
        out.extend_from_slice(&arg.to_le_bytes());
        out.extend_from_slice(&self.call_id().0.to_le_bytes());
        match self {
            Self::Request(r) => {
                let service = r.service.as_ref();
                out.extend_from_slice(&r.deadline_ms.to_le_bytes());
                out.extend_from_slice(&r.window.to_le_bytes());
                // Bounded by MAX_SERVICE_LEN (96) at construction, so it fits in a byte.
                out.push(service.len() as u8);
                out.extend_from_slice(service);
                out.extend_from_slice(r.body.as_ref());
            }
            Self::Response(r) => out.extend_from_slice(r.payload.as_ref()),
            Self::Cancel(_) => {}
            Self::StreamItem(i) => {
                out.extend_from_slice(&i.seq.to_le_bytes());
                out.extend_from_slice(i.body.as_ref());
            }
            Self::StreamEnd(e) => {
                out.extend_from_slice(&e.items.to_le_bytes());
                out.extend_from_slice(e.message.as_ref());
            }
            Self::Credit(c) => out.extend_from_slice(&c.grant.to_le_bytes()),
        }
    }

    /// The encoding as a new vector.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode_into(&mut out);
        out
    }

    /// A view of this frame borrowing its buffers.
    pub fn borrowed(&self) -> RpcFrame<&[u8]> {
        match self {
            Self::Request(r) => RpcFrame::Request(Request {
                call_id: r.call_id,
                flags: r.flags,
                deadline_ms: r.deadline_ms,
                window: r.window,
                service: r.service.as_ref(),
                body: r.body.as_ref(),
            }),
            Self::Response(r) => RpcFrame::Response(Response {
                call_id: r.call_id,
                status: r.status,
                payload: r.payload.as_ref(),
            }),
            Self::Cancel(id) => RpcFrame::Cancel(*id),
            Self::StreamItem(i) => RpcFrame::StreamItem(StreamItem {
                call_id: i.call_id,
                seq: i.seq,
                body: i.body.as_ref(),
            }),
            Self::StreamEnd(e) => RpcFrame::StreamEnd(StreamEnd {
                call_id: e.call_id,
                status: e.status,
                items: e.items,
                message: e.message.as_ref(),
            }),
            Self::Credit(c) => RpcFrame::Credit(*c),
        }
    }
}

impl<'a> RpcFrame<&'a [u8]> {
    /// Decodes one frame whose parts borrow from `buf`; the input must end exactly where
    /// the frame does (it is a whole envelope body).
    pub fn decode(buf: &'a [u8]) -> Result<Self, DecodeError> {
        Ok(parse(buf)?.map(|r| buf.get(r).unwrap_or_default()))
    }
}

impl RpcFrame<Bytes> {
    /// Decodes one frame whose parts are slices of `buf` (shared, not copied).
    pub fn decode_bytes(buf: &Bytes) -> Result<Self, DecodeError> {
        let len = buf.len();
        // `parse` only yields ranges inside `buf`; the guard keeps this total regardless.
        Ok(parse(buf)?.map(|r| {
            if r.start <= r.end && r.end <= len {
                buf.slice(r)
            } else {
                Bytes::new()
            }
        }))
    }
}

/// Cuts `text` to at most [`MAX_MESSAGE_LEN`] bytes at a character boundary, so any error
/// text can go into a RESPONSE or STREAM_END.
pub fn bounded_message(text: &str) -> &str {
    if text.len() <= MAX_MESSAGE_LEN {
        return text;
    }
    let mut end = MAX_MESSAGE_LEN;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn check_body(len: usize) -> Result<(), FrameError> {
    if len > MAX_RPC_BODY_LEN {
        return Err(FrameError::BodyTooLong {
            len,
            max: MAX_RPC_BODY_LEN,
        });
    }
    Ok(())
}

fn check_message(message: &[u8]) -> Result<(), FrameError> {
    if message.len() > MAX_MESSAGE_LEN {
        return Err(FrameError::MessageTooLong {
            len: message.len(),
            max: MAX_MESSAGE_LEN,
        });
    }
    if std::str::from_utf8(message).is_err() {
        return Err(FrameError::MessageNotUtf8);
    }
    Ok(())
}

/// Validates a frame and says where its variable parts lie.
fn parse(buf: &[u8]) -> Result<RpcFrame<Range<usize>>, DecodeError> {
    let [version, kind] = array_at::<2>(buf, 0)?;
    if version != RPC_VERSION {
        return Err(DecodeError::UnknownVersion {
            what: "rpc frame",
            version,
        });
    }
    let arg = u16_le_at(buf, 2)?;
    let call_id = CallId(u64_le_at(buf, 4)?);
    let len = buf.len();
    if len > MAX_FRAME_LEN {
        return Err(DecodeError::TooLong {
            what: "rpc frame",
            len,
            max: MAX_FRAME_LEN,
        });
    }
    let frame = match kind {
        KIND_REQUEST => {
            if arg & !RequestFlags::ALL != 0 {
                return Err(DecodeError::Reserved("rpc request flags"));
            }
            let flags = RequestFlags(arg);
            let deadline_ms = u32_le_at(buf, 12)?;
            let window = u32_le_at(buf, 16)?;
            if !flags.contains(RequestFlags::STREAMING) && window != 0 {
                return Err(DecodeError::Reserved("rpc request window"));
            }
            let [service_len] = array_at::<1>(buf, 20)?;
            let service = REQUEST_FIXED_LEN..REQUEST_FIXED_LEN + usize::from(service_len);
            let Some(name) = buf.get(service.clone()) else {
                return Err(DecodeError::Truncated {
                    need: service.end,
                    have: len,
                });
            };
            if validate_service(name).is_err() {
                return Err(DecodeError::Invalid("rpc service name"));
            }
            let body = service.end..len;
            body_bound(&body)?;
            RpcFrame::Request(Request {
                call_id,
                flags,
                deadline_ms,
                window,
                service,
                body,
            })
        }
        KIND_RESPONSE => {
            let status = Status::from_code(arg);
            let payload = FRAME_HEADER_LEN..len;
            if status.is_ok() {
                body_bound(&payload)?;
            } else {
                message_bound(buf, &payload)?;
            }
            RpcFrame::Response(Response {
                call_id,
                status,
                payload,
            })
        }
        KIND_CANCEL => {
            zero_arg(arg, "rpc cancel arg")?;
            exact(len, CANCEL_LEN)?;
            RpcFrame::Cancel(call_id)
        }
        KIND_STREAM_ITEM => {
            zero_arg(arg, "rpc item arg")?;
            let seq = u64_le_at(buf, FRAME_HEADER_LEN)?;
            let body = ITEM_FIXED_LEN..len;
            body_bound(&body)?;
            RpcFrame::StreamItem(StreamItem { call_id, seq, body })
        }
        KIND_STREAM_END => {
            let items = u64_le_at(buf, FRAME_HEADER_LEN)?;
            let message = ITEM_FIXED_LEN..len;
            message_bound(buf, &message)?;
            RpcFrame::StreamEnd(StreamEnd {
                call_id,
                status: Status::from_code(arg),
                items,
                message,
            })
        }
        KIND_CREDIT => {
            zero_arg(arg, "rpc credit arg")?;
            let grant = u64_le_at(buf, FRAME_HEADER_LEN)?;
            exact(len, CREDIT_LEN)?;
            RpcFrame::Credit(Credit { call_id, grant })
        }
        _ => return Err(DecodeError::Invalid("rpc frame kind")),
    };
    Ok(frame)
}

fn body_bound(body: &Range<usize>) -> Result<(), DecodeError> {
    let len = body.len();
    if len > MAX_RPC_BODY_LEN {
        return Err(DecodeError::TooLong {
            what: "rpc body",
            len,
            max: MAX_RPC_BODY_LEN,
        });
    }
    Ok(())
}

fn message_bound(buf: &[u8], message: &Range<usize>) -> Result<(), DecodeError> {
    let len = message.len();
    if len > MAX_MESSAGE_LEN {
        return Err(DecodeError::TooLong {
            what: "rpc message",
            len,
            max: MAX_MESSAGE_LEN,
        });
    }
    match buf.get(message.clone()).map(std::str::from_utf8) {
        Some(Ok(_)) => Ok(()),
        _ => Err(DecodeError::Invalid("rpc message utf-8")),
    }
}

fn zero_arg(arg: u16, what: &'static str) -> Result<(), DecodeError> {
    if arg != 0 {
        return Err(DecodeError::Reserved(what));
    }
    Ok(())
}

fn exact(len: usize, expected: usize) -> Result<(), DecodeError> {
    if len > expected {
        return Err(DecodeError::TrailingBytes(len - expected));
    }
    Ok(())
}
