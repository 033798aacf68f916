//! nRPC wire vocabulary: call ids, service names, status codes and the RPC frames.
//!
//! An RPC frame is the body of a [`Subprotocol::RPC`] envelope (so the caller's trace
//! context rides the envelope, sealed, and relays never see it). The frame is a fixed
//! little-endian layout — not rmp-serde — because it sits on the unary round-trip path:
//! encoding is a handful of stores and decoding borrows (or, from [`Bytes`], slices) the
//! service name and body without copying them.
//!
//! ```text
//!  every frame
//!  off size field     notes
//!    0   1  version   = RPC_VERSION (1); anything else is refused
//!    1   1  kind      1 REQUEST, 2 RESPONSE, 3 CANCEL, 4 STREAM_ITEM, 5 STREAM_END, 6 CREDIT
//!    2   2  arg       u16 LE: REQUEST flags; RESPONSE / STREAM_END status; otherwise 0
//!    4   8  call id   u64 LE, drawn at random by the caller
//!  REQUEST (21 + s + n bytes)
//!   12   4  deadline  u32 LE milliseconds of budget left when sent; 0 = no deadline
//!   16   4  window    u32 LE initial stream credit in items; 0 unless flag STREAMING
//!   20   1  s         service name length, 1..=MAX_SERVICE_LEN
//!   21   s  service   printable ASCII (0x21..=0x7E)
//!    …   n  body      n ≤ MAX_RPC_BODY_LEN, up to the end of the envelope body
//!  RESPONSE (12 + n): status Ok → body (n ≤ MAX_RPC_BODY_LEN);
//!                     otherwise an error message, UTF-8, n ≤ MAX_MESSAGE_LEN
//!  CANCEL (12): nothing
//!  STREAM_ITEM (20 + n)
//!   12   8  seq       item number in the call, from 0
//!   20   n  body      n ≤ MAX_RPC_BODY_LEN
//!  STREAM_END (20 + n)
//!   12   8  items     how many items the server sent (seq 0..items)
//!   20   n  message   UTF-8, n ≤ MAX_MESSAGE_LEN (empty when the status is Ok)
//!  CREDIT (20)
//!   12   8  grant     the server may send items with seq < grant (a total, never a delta)
//! ```
//!
//! Every length is bounded so that the largest frame fits in one envelope
//! ([`MAX_FRAME_LEN`]). Decoding refuses unknown versions and kinds, set reserved bits,
//! over-long or short input, non-UTF-8 messages and bad service names.
//!
//! [`Subprotocol::RPC`]: crate::envelope::Subprotocol::RPC
//! [`Bytes`]: bytes::Bytes

mod frame;
#[cfg(test)]
mod tests;

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};

use bytes::Bytes;
use thiserror::Error;

pub use frame::{
    CANCEL_LEN, CREDIT_LEN, Credit, FRAME_HEADER_LEN, FrameError, FrameKind, ITEM_FIXED_LEN,
    REQUEST_FIXED_LEN, Request, RequestFlags, Response, RpcFrame, StreamEnd, StreamItem,
    bounded_message,
};

use crate::envelope::MAX_BODY_LEN;

/// Version byte of every RPC frame.
pub const RPC_VERSION: u8 = 1;
/// Longest service name. `nrpc:` plus the name stays within a capability tag (128 bytes).
pub const MAX_SERVICE_LEN: usize = 96;
/// Longest error message a RESPONSE or STREAM_END carries; longer text is cut by the sender.
pub const MAX_MESSAGE_LEN: usize = 1024;
/// Largest frame: one envelope body.
pub const MAX_FRAME_LEN: usize = MAX_BODY_LEN;
/// Largest request, response or stream-item body. Leaves 1 KiB of the envelope for the
/// largest header (a REQUEST with the longest service name needs 117 bytes).
pub const MAX_RPC_BODY_LEN: usize = MAX_FRAME_LEN - 1024;

/// Correlates every frame of one call. The caller draws it at random, so it cannot be
/// guessed by a third node; the server keys calls by (caller, call id).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct CallId(pub u64);

impl CallId {
    /// The raw value.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CallId({:016x})", self.0)
    }
}

/// The outcome code of a call. Codes 0..=8 are defined here, 0x0009..=0x7FFF are reserved
/// for future protocol codes (they decode and are reported as is), and 0x8000..=0xFFFF is
/// the application band, free for services to define.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Status(u16);

impl Status {
    /// The call succeeded.
    pub const OK: Self = Self(0);
    /// The call was cancelled (the caller sent CANCEL, or the server dropped it).
    pub const CANCELLED: Self = Self(1);
    /// The deadline passed before the handler finished.
    pub const DEADLINE_EXCEEDED: Self = Self(2);
    /// The node serves no such service.
    pub const NOT_FOUND: Self = Self(3);
    /// The handler failed unexpectedly (it panicked).
    pub const INTERNAL: Self = Self(4);
    /// The service is not accepting calls now (draining or shutting down); try elsewhere.
    pub const UNAVAILABLE: Self = Self(5);
    /// The request body was refused by the handler (for typed services: did not decode).
    pub const INVALID_ARGUMENT: Self = Self(6);
    /// The server's in-flight limit is reached; try later or elsewhere.
    pub const RESOURCE_EXHAUSTED: Self = Self(7);
    /// The caller lacks the capability the service requires.
    pub const CAPABILITY_DENIED: Self = Self(8);
    /// First code of the application band.
    pub const APPLICATION_MIN: u16 = 0x8000;

    /// An application-defined status; `code` must lie in 0x8000..=0xFFFF.
    pub const fn application(code: u16) -> Result<Self, StatusError> {
        if code >= Self::APPLICATION_MIN {
            Ok(Self(code))
        } else {
            Err(StatusError::NotApplication(code))
        }
    }

    /// The status with this raw code (any value: reserved codes are kept as is).
    pub const fn from_code(code: u16) -> Self {
        Self(code)
    }

    /// The raw code.
    pub const fn code(self) -> u16 {
        self.0
    }

    /// Whether this is [`Status::OK`].
    pub const fn is_ok(self) -> bool {
        self.0 == 0
    }

    /// Whether the code lies in the application band.
    pub const fn is_application(self) -> bool {
        self.0 >= Self::APPLICATION_MIN
    }

    /// The protocol name of a defined code, `None` for reserved and application codes.
    pub const fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0 => "ok",
            1 => "cancelled",
            2 => "deadline_exceeded",
            3 => "not_found",
            4 => "internal",
            5 => "unavailable",
            6 => "invalid_argument",
            7 => "resource_exhausted",
            8 => "capability_denied",
            _ => return None,
        })
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None if self.is_application() => write!(f, "application({:#06x})", self.0),
            None => write!(f, "reserved({:#06x})", self.0),
        }
    }
}

impl fmt::Debug for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Status({self})")
    }
}

/// Why a status code was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum StatusError {
    /// [`Status::application`] takes codes 0x8000..=0xFFFF only.
    #[error("status {0:#06x} is outside the application band 0x8000..=0xffff")]
    NotApplication(u16),
}

/// A validated service name: 1..=[`MAX_SERVICE_LEN`] bytes of printable ASCII without
/// spaces (0x21..=0x7E). Names compare exactly (case-sensitive, like capability tags).
/// Cloning is a reference-count bump; names decoded from a frame share its buffer.
#[derive(Clone)]
pub struct ServiceName(Bytes);

impl ServiceName {
    /// Validates and copies `name`.
    pub fn new(name: &str) -> Result<Self, ServiceNameError> {
        validate_service(name.as_bytes())?;
        Ok(Self(Bytes::copy_from_slice(name.as_bytes())))
    }

    /// Validates a static name without copying it.
    pub fn from_static(name: &'static str) -> Result<Self, ServiceNameError> {
        validate_service(name.as_bytes())?;
        Ok(Self(Bytes::from_static(name.as_bytes())))
    }

    /// Validates bytes (for instance a slice of a received frame) without copying them.
    pub fn from_bytes(bytes: Bytes) -> Result<Self, ServiceNameError> {
        validate_service(&bytes)?;
        Ok(Self(bytes))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        // Validated as ASCII at construction, so this never falls back.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The name's bytes, shared.
    pub fn to_bytes(&self) -> Bytes {
        self.0.clone()
    }

    /// The capability tag a node serving this service announces: `nrpc:<name>`.
    pub fn capability_tag(&self) -> String {
        format!("nrpc:{}", self.as_str())
    }
}

/// Checks the service-name rules on raw bytes.
pub fn validate_service(name: &[u8]) -> Result<(), ServiceNameError> {
    if name.is_empty() {
        return Err(ServiceNameError::Empty);
    }
    if name.len() > MAX_SERVICE_LEN {
        return Err(ServiceNameError::TooLong(name.len()));
    }
    if let Some(at) = name.iter().position(|b| !(0x21..=0x7E).contains(b)) {
        return Err(ServiceNameError::BadByte { at, byte: name[at] });
    }
    Ok(())
}

impl PartialEq for ServiceName {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl Eq for ServiceName {}

impl Hash for ServiceName {
    // Hashes as `str` does, so that `Borrow<str>` lookups in hash maps agree.
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl PartialOrd for ServiceName {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ServiceName {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl Borrow<str> for ServiceName {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServiceName({:?})", self.as_str())
    }
}

/// Why a service name was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ServiceNameError {
    /// Names are at least one byte.
    #[error("empty service name")]
    Empty,
    /// Longer than [`MAX_SERVICE_LEN`].
    #[error("service name of {0} bytes exceeds {MAX_SERVICE_LEN}")]
    TooLong(usize),
    /// A byte outside printable ASCII (or a space).
    #[error("service name byte {byte:#04x} at {at} is not printable ascii")]
    BadByte {
        /// Offset of the byte.
        at: usize,
        /// The byte.
        byte: u8,
    },
}
