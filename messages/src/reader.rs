//! The bounds-checked byte cursor every hand-encoded decoder reads with.
//!
//! Every read checks the remaining length first, so a decoder built on it never panics
//! and never reads past its input; counts are compared with their limits before the
//! caller allocates anything for them. Fixed-offset readers that need no cursor use
//! [`array_at`](crate::error::array_at) and friends instead.

use crate::error::DecodeError;

/// A bounds-checked cursor over untrusted bytes.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf, at: 0 }
    }

    /// Bytes read so far.
    pub(crate) fn position(&self) -> usize {
        self.at
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.at.checked_add(n).filter(|&end| end <= self.buf.len());
        let Some(end) = end else {
            return Err(DecodeError::Truncated {
                need: self.at.saturating_add(n),
                have: self.buf.len(),
            });
        };
        let out = &self.buf[self.at..end];
        self.at = end;
        Ok(out)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        self.array::<2>().map(u16::from_le_bytes)
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        self.array::<4>().map(u32::from_le_bytes)
    }

    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        self.array::<8>().map(u64::from_le_bytes)
    }

    /// A version byte that must be `expected`.
    pub(crate) fn version(&mut self, expected: u8, what: &'static str) -> Result<(), DecodeError> {
        match self.u8()? {
            version if version == expected => Ok(()),
            version => Err(DecodeError::UnknownVersion { what, version }),
        }
    }

    /// `N` reserved bytes that must be zero.
    pub(crate) fn reserved<const N: usize>(
        &mut self,
        what: &'static str,
    ) -> Result<(), DecodeError> {
        if self.array::<N>()? == [0u8; N] {
            Ok(())
        } else {
            Err(DecodeError::Reserved(what))
        }
    }

    /// A u16 count, bounded by `max`.
    pub(crate) fn count(&mut self, what: &'static str, max: usize) -> Result<usize, DecodeError> {
        let len = self.u16()? as usize;
        if len > max {
            return Err(DecodeError::TooLong { what, len, max });
        }
        Ok(len)
    }

    pub(crate) fn utf8(&mut self, len: usize) -> Result<&'a str, DecodeError> {
        std::str::from_utf8(self.take(len)?).map_err(|_| DecodeError::Invalid("utf-8"))
    }

    /// A u8-length-prefixed string, bounded by `max` and optionally allowed to be empty.
    pub(crate) fn str_u8(
        &mut self,
        what: &'static str,
        max: usize,
        empty_ok: bool,
    ) -> Result<&'a str, DecodeError> {
        let len = self.u8()? as usize;
        if len > max {
            return Err(DecodeError::TooLong { what, len, max });
        }
        if len == 0 && !empty_ok {
            return Err(DecodeError::Invalid(what));
        }
        self.utf8(len)
    }

    pub(crate) fn string_u8(
        &mut self,
        what: &'static str,
        max: usize,
        empty_ok: bool,
    ) -> Result<String, DecodeError> {
        self.str_u8(what, max, empty_ok).map(str::to_owned)
    }

    /// Nothing may follow what was read.
    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        match self.buf.len() - self.at {
            0 => Ok(()),
            extra => Err(DecodeError::TrailingBytes(extra)),
        }
    }
}
