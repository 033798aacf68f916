//! Channel names: canonical, validated, hashed.
//!
//! A channel name is 1 to [`MAX_NAME_LEN`] bytes of ASCII. ASCII letters are folded to
//! lowercase (so `FOO.bar` and `foo.bar` are one channel); the allowed characters are
//! `a-z 0-9 - _ : . /`. Dots and slashes separate segments: a name must not start or end
//! with a separator, nor hold two in a row, so empty, `.` and `..` segments cannot occur.
//! Every decision (ACL, storage, config) is made on the canonical name or its
//! [`ChannelHash`]: the first 4 bytes, little-endian, of BLAKE3 `derive_key(CONTEXT, name)`.
//!
//! Submodules hold the channel subprotocol's wire messages:
//!
//! - [`membership`]: `Subscribe` / `Unsubscribe` / `Ack` / `Evicted`, rmp-serde bodies of
//!   [`Subprotocol::MEMBERSHIP`](crate::Subprotocol::MEMBERSHIP) envelopes;
//! - [`event`]: the fixed-layout frame that carries one published event to a subscriber.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

pub mod event;
pub mod membership;

/// Longest channel name in bytes.
pub const MAX_NAME_LEN: usize = 255;
/// BLAKE3 key-derivation context for channel hashes.
const CONTEXT: &str = "netrun 2026-11 channel hash v1";

/// A canonical channel name.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChannelName(String);

/// The 32-bit hash of a canonical channel name (carried in tokens and stream ids).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ChannelHash(pub u32);

/// Why a string is not a channel name.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ChannelNameError {
    /// The name is empty.
    #[error("channel name is empty")]
    Empty,
    /// The name exceeds [`MAX_NAME_LEN`] bytes.
    #[error("channel name is {0} bytes; the limit is 255")]
    TooLong(usize),
    /// A character outside `a-z A-Z 0-9 - _ : . /`.
    #[error("channel name has invalid character {0:?}")]
    InvalidChar(char),
    /// An empty segment: a leading, trailing or doubled separator.
    #[error("channel name has an empty segment")]
    EmptySegment,
}

impl ChannelName {
    /// Validates and canonicalizes a name.
    pub fn new(name: &str) -> Result<Self, ChannelNameError> {
        if name.is_empty() {
            return Err(ChannelNameError::Empty);
        }
        if name.len() > MAX_NAME_LEN {
            return Err(ChannelNameError::TooLong(name.len()));
        }
        let mut canonical = String::with_capacity(name.len());
        let mut previous_separator = true;
        for c in name.chars() {
            let is_separator = c == '.' || c == '/';
            if is_separator && previous_separator {
                return Err(ChannelNameError::EmptySegment);
            }
            if !(is_separator || c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ':')) {
                return Err(ChannelNameError::InvalidChar(c));
            }
            previous_separator = is_separator;
            canonical.push(c.to_ascii_lowercase());
        }
        if previous_separator {
            return Err(ChannelNameError::EmptySegment);
        }
        Ok(Self(canonical))
    }

    /// The canonical form.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The channel's 32-bit hash.
    pub fn hash(&self) -> ChannelHash {
        let derived = blake3::derive_key(CONTEXT, self.0.as_bytes());
        ChannelHash(u32::from_le_bytes([
            derived[0], derived[1], derived[2], derived[3],
        ]))
    }
}

impl fmt::Display for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChannelName({:?})", self.0)
    }
}

impl std::str::FromStr for ChannelName {
    type Err = ChannelNameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl Serialize for ChannelName {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ChannelName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::new(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn case_folds_to_one_channel() {
        let a = ChannelName::new("FOO.bar").expect("valid");
        let b = ChannelName::new("foo.bar").expect("valid");
        assert_eq!(a, b);
        assert_eq!(a.hash(), b.hash());
        assert_eq!(a.as_str(), "foo.bar");
        assert_ne!(a.hash(), ChannelName::new("foo.baz").expect("valid").hash());
    }

    #[test]
    fn rejects_malformed() {
        assert_eq!(ChannelName::new(""), Err(ChannelNameError::Empty));
        for bad in [".a", "a.", "a..b", "a/./b", "a/../b", "/", "a//b", "a./b"] {
            assert_eq!(
                ChannelName::new(bad),
                Err(ChannelNameError::EmptySegment),
                "{bad}"
            );
        }
        assert_eq!(
            ChannelName::new("a b"),
            Err(ChannelNameError::InvalidChar(' '))
        );
        assert_eq!(
            ChannelName::new("é"),
            Err(ChannelNameError::InvalidChar('é'))
        );
        assert!(matches!(
            ChannelName::new(&"a".repeat(256)),
            Err(ChannelNameError::TooLong(256))
        ));
        assert!(ChannelName::new(&"a".repeat(255)).is_ok());
        assert!(ChannelName::new("nrpc:echo.requests").is_ok());
        assert!(ChannelName::new("sensors/temp-1_x").is_ok());
    }

    proptest! {
        #[test]
        fn canonical_is_fixed_point(s in "[a-zA-Z0-9_:-]{1,8}([./][a-zA-Z0-9_:-]{1,8}){0,4}") {
            let name = ChannelName::new(&s).expect("valid by construction");
            let again = ChannelName::new(name.as_str()).expect("canonical is valid");
            prop_assert_eq!(&again, &name);
            let bytes = rmp_serde::to_vec(&name).expect("ser");
            prop_assert_eq!(rmp_serde::from_slice::<ChannelName>(&bytes).expect("de"), name);
        }

        #[test]
        fn never_panics(s in ".{0,300}") {
            let _ = ChannelName::new(&s);
        }
    }
}
