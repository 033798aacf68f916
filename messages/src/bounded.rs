//! [`BoundedSeq`]: a msgpack array decoded with a bound on what it keeps.
//!
//! serde's `Vec` reserves room from the array's declared length (up to 1 MiB) and decodes
//! every element before a caller can check the count. A bounded sequence checks the
//! declared length first, reserves at most `MAX` slots, keeps at most `MAX` elements, and
//! steps over the elements of a longer array without decoding them into `T` (the body
//! bounds how many there can be), reporting its length so the caller can refuse it.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{Deserialize, Deserializer, IgnoredAny, SeqAccess, Visitor};
use serde::ser::{Serialize, Serializer};

/// A sequence of at most `MAX` kept elements and the length the array had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BoundedSeq<T, const MAX: usize> {
    /// The elements, when the array held at most `MAX`; empty otherwise.
    pub(crate) items: Vec<T>,
    /// How many elements the array held.
    pub(crate) len: usize,
}

impl<T, const MAX: usize> BoundedSeq<T, MAX> {
    /// A sequence of `items` (for encoding).
    pub(crate) fn new(items: Vec<T>) -> Self {
        let len = items.len();
        Self { items, len }
    }

    /// The elements, or the array's length if it held more than `MAX`.
    pub(crate) fn into_items(self) -> Result<Vec<T>, usize> {
        if self.len > MAX {
            Err(self.len)
        } else {
            Ok(self.items)
        }
    }
}

impl<T: Serialize, const MAX: usize> Serialize for BoundedSeq<T, MAX> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.items.serialize(serializer)
    }
}

impl<'de, T: Deserialize<'de>, const MAX: usize> Deserialize<'de> for BoundedSeq<T, MAX> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_seq(BoundedVisitor(PhantomData))
    }
}

struct BoundedVisitor<T, const MAX: usize>(PhantomData<T>);

impl<'de, T: Deserialize<'de>, const MAX: usize> Visitor<'de> for BoundedVisitor<T, MAX> {
    type Value = BoundedSeq<T, MAX>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an array of at most {MAX} elements")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        // The declared length is checked before anything is reserved or kept.
        let declared = seq.size_hint();
        let keep = declared.is_none_or(|n| n <= MAX);
        let mut items = Vec::with_capacity(if keep {
            declared.unwrap_or(0).min(MAX)
        } else {
            0
        });
        let mut len = 0;
        loop {
            let more = if keep && len < MAX {
                seq.next_element::<T>()?.map(|item| items.push(item))
            } else {
                seq.next_element::<IgnoredAny>()?.map(drop)
            };
            if more.is_none() {
                break;
            }
            len += 1;
        }
        if len > MAX {
            items.clear();
        }
        Ok(BoundedSeq { items, len })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Three = BoundedSeq<u32, 3>;

    fn decode(bytes: &[u8]) -> Result<Three, rmp_serde::decode::Error> {
        rmp_serde::from_slice(bytes)
    }

    #[test]
    fn keeps_up_to_the_bound_and_reports_longer_arrays() {
        let three = rmp_serde::to_vec(&Three::new(vec![1, 2, 3])).expect("encodes");
        assert_eq!(
            decode(&three).expect("decodes").into_items(),
            Ok(vec![1, 2, 3])
        );
        let five = rmp_serde::to_vec(&vec![1u32, 2, 3, 4, 5]).expect("encodes");
        let long = decode(&five).expect("decodes");
        assert!(long.items.is_empty());
        assert_eq!(long.into_items(), Err(5));
        // Past the bound, elements are not decoded as `T`: nils are stepped over.
        assert_eq!(
            decode(&[0x94, 0xc0, 0xc0, 0xc0, 0xc0])
                .expect("decodes")
                .len,
            4
        );
        // Within it they must be `T`.
        assert!(decode(&[0x91, 0xc0]).is_err());
        // A huge declared length with nothing behind it reserves nothing and fails.
        assert!(decode(&[0xdd, 0xff, 0xff, 0xff, 0xff]).is_err());
    }
}
