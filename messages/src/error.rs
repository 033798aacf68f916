//! The one error every wire decoder returns.

use thiserror::Error;

/// Why bytes could not be decoded. Every decoder of untrusted input returns this (or a type
/// that wraps it) instead of panicking.
#[derive(Debug, Error)]
pub enum DecodeError {
    /// The input ended before a fixed-size part was complete.
    #[error("truncated: need {need} bytes, have {have}")]
    Truncated {
        /// Bytes the decoder needed.
        need: usize,
        /// Bytes that were there.
        have: usize,
    },
    /// The format version byte is not one this build speaks.
    #[error("unknown {what} version {version}")]
    UnknownVersion {
        /// Which format.
        what: &'static str,
        /// The version byte found.
        version: u8,
    },
    /// A packet kind byte is not defined.
    #[error("unknown packet kind {0:#04x}")]
    UnknownKind(u8),
    /// A control envelope names a subprotocol this build does not know.
    #[error("unknown subprotocol {0:#06x}")]
    UnknownSubprotocol(u16),
    /// A field that must be zero (reserved bits or bytes) is not.
    #[error("reserved field `{0}` is not zero")]
    Reserved(&'static str),
    /// A declared length exceeds its limit; nothing was allocated for it.
    #[error("{what} length {len} exceeds limit {max}")]
    TooLong {
        /// Which length.
        what: &'static str,
        /// The declared length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A declared length disagrees with the bytes present.
    #[error("{what} declares {declared} bytes but {actual} are present")]
    LengthMismatch {
        /// Which length.
        what: &'static str,
        /// The declared length.
        declared: usize,
        /// The bytes actually present.
        actual: usize,
    },
    /// Bytes follow a complete message that must end exactly.
    #[error("{0} trailing bytes after the message")]
    TrailingBytes(usize),
    /// A field holds a value outside its domain.
    #[error("invalid {0}")]
    Invalid(&'static str),
    /// The rmp-serde body did not decode as the expected type.
    #[error("body: {0}")]
    Body(#[from] rmp_serde::decode::Error),
}

/// Reads exactly `N` bytes at `at`, or reports how many were needed. With its little-endian
/// siblings below, the reader of every fixed-layout header (here and in the runtime's
/// records).
#[inline]
pub fn array_at<const N: usize>(buf: &[u8], at: usize) -> Result<[u8; N], DecodeError> {
    // The error is built only on the failure arm: `ok_or(DecodeError::…)` would construct
    // and drop one per field on the per-packet path, because the enum has drop glue.
    let end = at.saturating_add(N);
    match buf.get(at..end).and_then(|s| <[u8; N]>::try_from(s).ok()) {
        Some(bytes) => Ok(bytes),
        None => Err(DecodeError::Truncated {
            need: end,
            have: buf.len(),
        }),
    }
}

/// Reads a little-endian u64 at `at`.
#[inline]
pub fn u64_le_at(buf: &[u8], at: usize) -> Result<u64, DecodeError> {
    array_at::<8>(buf, at).map(u64::from_le_bytes)
}

/// Reads a little-endian u32 at `at`.
#[inline]
pub fn u32_le_at(buf: &[u8], at: usize) -> Result<u32, DecodeError> {
    array_at::<4>(buf, at).map(u32::from_le_bytes)
}

/// Reads a little-endian u16 at `at`.
#[inline]
pub fn u16_le_at(buf: &[u8], at: usize) -> Result<u16, DecodeError> {
    array_at::<2>(buf, at).map(u16::from_le_bytes)
}
