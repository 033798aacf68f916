//! The bounds-checked byte cursor and writers shared by the capability codecs.
//!
//! Every read checks the remaining length first, so a decoder built on it never panics
//! and never reads past its input; counts are compared with their limits before the
//! caller allocates anything for them.

use std::collections::BTreeSet;

use crate::error::DecodeError;

use super::{FORMAT_VERSION, MAX_TAG_LEN};

/// Writes a string whose length was checked to fit a u8.
pub(super) fn push_u8_string(out: &mut Vec<u8>, s: &str) {
    out.push(s.len() as u8);
    out.extend_from_slice(s.as_bytes());
}

pub(super) fn push_tags(out: &mut Vec<u8>, tags: &BTreeSet<String>) {
    out.extend_from_slice(&(tags.len() as u16).to_le_bytes());
    for tag in tags {
        push_u8_string(out, tag);
    }
}

/// A bounds-checked cursor over untrusted bytes.
pub(super) struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub(super) fn new(buf: &'a [u8]) -> Self {
        Self { buf, at: 0 }
    }

    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
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

    pub(super) fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub(super) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    pub(super) fn u16(&mut self) -> Result<u16, DecodeError> {
        self.array::<2>().map(u16::from_le_bytes)
    }

    pub(super) fn u32(&mut self) -> Result<u32, DecodeError> {
        self.array::<4>().map(u32::from_le_bytes)
    }

    pub(super) fn u64(&mut self) -> Result<u64, DecodeError> {
        self.array::<8>().map(u64::from_le_bytes)
    }

    pub(super) fn format(&mut self, what: &'static str) -> Result<(), DecodeError> {
        match self.u8()? {
            FORMAT_VERSION => Ok(()),
            version => Err(DecodeError::UnknownVersion { what, version }),
        }
    }

    pub(super) fn count(&mut self, what: &'static str, max: usize) -> Result<usize, DecodeError> {
        let len = self.u16()? as usize;
        if len > max {
            return Err(DecodeError::TooLong { what, len, max });
        }
        Ok(len)
    }

    pub(super) fn utf8(&mut self, len: usize) -> Result<&'a str, DecodeError> {
        std::str::from_utf8(self.take(len)?).map_err(|_| DecodeError::Invalid("utf-8"))
    }

    /// A u8-length-prefixed string, bounded by `max` and optionally allowed to be empty.
    pub(super) fn str_u8(
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

    pub(super) fn string_u8(
        &mut self,
        what: &'static str,
        max: usize,
        empty_ok: bool,
    ) -> Result<String, DecodeError> {
        self.str_u8(what, max, empty_ok).map(str::to_owned)
    }

    /// A u16 count then that many non-empty tags in strictly ascending byte order.
    pub(super) fn sorted_tags(&mut self, max: usize) -> Result<BTreeSet<String>, DecodeError> {
        let count = self.count("tag count", max)?;
        let mut tags = BTreeSet::new();
        let mut last: Option<&str> = None;
        for _ in 0..count {
            let tag = self.str_u8("tag", MAX_TAG_LEN, false)?;
            if last.is_some_and(|prev| prev >= tag) {
                return Err(DecodeError::Invalid("tag order"));
            }
            last = Some(tag);
            tags.insert(tag.to_owned());
        }
        Ok(tags)
    }

    pub(super) fn finish(&self) -> Result<(), DecodeError> {
        match self.buf.len() - self.at {
            0 => Ok(()),
            extra => Err(DecodeError::TrailingBytes(extra)),
        }
    }
}
