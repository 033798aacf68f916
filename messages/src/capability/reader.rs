//! The tag and string codecs shared by the capability set, filter and announcement.

use std::collections::BTreeSet;

use crate::error::DecodeError;
use crate::reader::Reader;

use super::MAX_TAG_LEN;

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

/// A u16 count then that many non-empty tags in strictly ascending byte order.
pub(super) fn read_sorted_tags(
    r: &mut Reader<'_>,
    max: usize,
) -> Result<BTreeSet<String>, DecodeError> {
    let count = r.count("tag count", max)?;
    let mut tags = BTreeSet::new();
    let mut last: Option<&str> = None;
    for _ in 0..count {
        let tag = r.str_u8("tag", MAX_TAG_LEN, false)?;
        if last.is_some_and(|prev| prev >= tag) {
            return Err(DecodeError::Invalid("tag order"));
        }
        last = Some(tag);
        tags.insert(tag.to_owned());
    }
    Ok(tags)
}
