//! Capability sets, filters over them, and signed capability announcements.
//!
//! A node describes itself with a [`CapabilitySet`] (free-form tags, string metadata and a
//! typed [`Hardware`] record) and tells the mesh with a signed [`CapabilityAnnouncement`].
//! Schedulers and discovery select nodes with a [`CapabilityFilter`]; a filter is
//! matchmaking, not access control (that is what [tokens](crate::token) are for).
//!
//! # Encodings
//!
//! Hand-written, canonical and deterministic: one value has exactly one encoding, and the
//! decoder refuses every other byte string (unsorted or duplicate tags and keys, non-zero
//! padding, trailing bytes). Integers are little-endian. Strings are UTF-8.
//!
//! ```text
//! CapabilitySet                           CapabilityFilter
//!   1  format = 1                           1  format = 1
//!   4  cpu_cores u32                        1  flags: bit0 require_gpu, bit1 gpu_vendor set
//!   4  cpu_threads u32                      1  gpu_vendor (0 when not set)
//!   4  memory_gb u32                        4  min_memory_gb u32 (0 = any)
//!   1  gpu present (0 or 1)                 4  min_vram_gb u32 (0 = any)
//!  [1  vendor  1 model_len  n model         4  min_cpu_cores u32 (0 = any)
//!   4  vram_gb]            (if present)     2  tag count u16, ≤ MAX_FILTER_TAGS
//!   2  tag count u16, ≤ MAX_TAGS            per tag: 1 len (1..=128) ‖ bytes, ascending
//!   per tag: 1 len (1..=128) ‖ bytes, strictly ascending
//!   2  metadata count u16, ≤ MAX_METADATA
//!   per entry: 1 key len (1..=64) ‖ key ‖ 2 value len u16 (≤ 1024) ‖ value,
//!              keys strictly ascending
//! ```
//!
//! A whole set encoding is at most [`MAX_SET_LEN`] bytes. Limits are checked on encode too,
//! so anything this build can send, it can also receive.
//!
//! [`CapabilityAnnouncement`] (signing, its layout and checks) lives in a submodule; the byte
//! reader shared by the decoders is private.

use std::collections::{BTreeMap, BTreeSet};

use thiserror::Error;

use crate::error::DecodeError;
use crate::reader::Reader;

mod announcement;
mod reader;

pub use announcement::{AnnouncementError, CapabilityAnnouncement, MAX_ANNOUNCEMENT_LEN};
use reader::{push_tags, push_u8_string, read_sorted_tags};

/// Format byte of every encoding in this module.
pub const FORMAT_VERSION: u8 = 1;
/// Most tags in a set.
pub const MAX_TAGS: usize = 256;
/// Most tags a filter can require.
pub const MAX_FILTER_TAGS: usize = 64;
/// Longest tag in bytes.
pub const MAX_TAG_LEN: usize = 128;
/// Most metadata entries in a set.
pub const MAX_METADATA: usize = 64;
/// Longest metadata key in bytes.
pub const MAX_KEY_LEN: usize = 64;
/// Longest metadata value in bytes.
pub const MAX_VALUE_LEN: usize = 1024;
/// Longest GPU model string in bytes.
pub const MAX_MODEL_LEN: usize = 128;
/// Largest encoded [`CapabilitySet`]: keeps an announcement inside two datagrams' worth of
/// control payload and bounds what a peer can make us hold per node.
pub const MAX_SET_LEN: usize = 16 * 1024;
const FILTER_REQUIRE_GPU: u8 = 1;
const FILTER_VENDOR: u8 = 1 << 1;

/// A GPU maker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GpuVendor {
    /// NVIDIA.
    Nvidia,
    /// AMD.
    Amd,
    /// Intel.
    Intel,
    /// Apple silicon.
    Apple,
    /// Anything else.
    Other,
}

/// One GPU.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GpuInfo {
    /// Who made it.
    pub vendor: GpuVendor,
    /// Model name (at most [`MAX_MODEL_LEN`] bytes on the wire).
    pub model: String,
    /// Video memory in GB.
    pub vram_gb: u32,
}

/// A node's hardware, in whole units (cores, GB).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Hardware {
    /// Physical cores.
    pub cpu_cores: u32,
    /// Hardware threads.
    pub cpu_threads: u32,
    /// Main memory in GB.
    pub memory_gb: u32,
    /// The GPU, if any.
    pub gpu: Option<GpuInfo>,
}

/// What a node offers: tags, metadata and hardware.
///
/// Collections are ordered (`BTree*`), so iteration and encoding are the same on every run.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct CapabilitySet {
    /// Free-form tags (`nrpc:echo`, `software.os=linux`, …).
    pub tags: BTreeSet<String>,
    /// Free-form key/value metadata.
    pub metadata: BTreeMap<String, String>,
    /// Typed hardware description.
    pub hardware: Hardware,
}

/// A predicate over a [`CapabilitySet`]: every stated requirement must hold.
///
/// Zero means "no requirement" for the numeric minimums.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct CapabilityFilter {
    /// Tags the set must carry.
    pub require_tags: BTreeSet<String>,
    /// The node must have a GPU.
    pub require_gpu: bool,
    /// The node's GPU must be from this vendor (implies a GPU).
    pub gpu_vendor: Option<GpuVendor>,
    /// Least main memory in GB.
    pub min_memory_gb: u32,
    /// Least GPU memory in GB (a non-zero value implies a GPU).
    pub min_vram_gb: u32,
    /// Least physical cores.
    pub min_cpu_cores: u32,
}

/// A set or filter breaks a documented limit, so it cannot be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum CapabilityError {
    /// A count, string or the whole encoding exceeds its limit.
    #[error("{what} {len} exceeds limit {max}")]
    Limit {
        /// What is too large.
        what: &'static str,
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A tag or metadata key is empty.
    #[error("empty {0}")]
    Empty(&'static str),
}

impl GpuVendor {
    const fn to_u8(self) -> u8 {
        match self {
            Self::Nvidia => 0,
            Self::Amd => 1,
            Self::Intel => 2,
            Self::Apple => 3,
            Self::Other => 4,
        }
    }

    const fn from_u8(byte: u8) -> Result<Self, DecodeError> {
        Ok(match byte {
            0 => Self::Nvidia,
            1 => Self::Amd,
            2 => Self::Intel,
            3 => Self::Apple,
            4 => Self::Other,
            _ => return Err(DecodeError::Invalid("gpu vendor")),
        })
    }
}

impl GpuInfo {
    /// A GPU description.
    pub fn new(vendor: GpuVendor, model: impl Into<String>, vram_gb: u32) -> Self {
        Self {
            vendor,
            model: model.into(),
            vram_gb,
        }
    }
}

impl Hardware {
    /// Hardware with this many cores and threads and no memory or GPU stated.
    pub fn new(cpu_cores: u32, cpu_threads: u32) -> Self {
        Self {
            cpu_cores,
            cpu_threads,
            ..Self::default()
        }
    }

    /// Sets the main memory.
    #[must_use]
    pub fn with_memory_gb(mut self, memory_gb: u32) -> Self {
        self.memory_gb = memory_gb;
        self
    }

    /// Sets the GPU.
    #[must_use]
    pub fn with_gpu(mut self, gpu: GpuInfo) -> Self {
        self.gpu = Some(gpu);
        self
    }
}

impl CapabilitySet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a tag.
    #[must_use]
    pub fn with_tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.insert(tag.into());
        self
    }

    /// Sets a metadata entry.
    #[must_use]
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Sets the hardware description.
    #[must_use]
    pub fn with_hardware(mut self, hardware: Hardware) -> Self {
        self.hardware = hardware;
        self
    }

    /// Whether the set carries `tag` (exact match, no allocation).
    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.contains(tag)
    }

    /// Checks every limit; `Ok` means [`CapabilitySet::to_bytes`] succeeds.
    pub fn validate(&self) -> Result<(), CapabilityError> {
        self.encoded_len().map(|_| ())
    }

    /// Encoded size, or the first limit the set breaks.
    pub fn encoded_len(&self) -> Result<usize, CapabilityError> {
        limit("tag count", self.tags.len(), MAX_TAGS)?;
        limit("metadata count", self.metadata.len(), MAX_METADATA)?;
        let mut len = 1 + 12 + 1 + 2 + 2;
        if let Some(gpu) = &self.hardware.gpu {
            limit("gpu model length", gpu.model.len(), MAX_MODEL_LEN)?;
            len += 1 + 1 + gpu.model.len() + 4;
        }
        for tag in &self.tags {
            len += 1 + short_string_len("tag", tag, MAX_TAG_LEN)?;
        }
        for (key, value) in &self.metadata {
            len += 1 + short_string_len("metadata key", key, MAX_KEY_LEN)?;
            limit("metadata value length", value.len(), MAX_VALUE_LEN)?;
            len += 2 + value.len();
        }
        limit("capability set length", len, MAX_SET_LEN)?;
        Ok(len)
    }

    /// The canonical encoding (see the [module docs](self)).
    pub fn to_bytes(&self) -> Result<Vec<u8>, CapabilityError> {
        let mut out = Vec::with_capacity(self.encoded_len()?);
        self.write(&mut out);
        Ok(out)
    }

    /// Decodes a canonical encoding; refuses anything over the limits before allocating.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() > MAX_SET_LEN {
            return Err(DecodeError::TooLong {
                what: "capability set",
                len: bytes.len(),
                max: MAX_SET_LEN,
            });
        }
        let mut r = Reader::new(bytes);
        r.version(FORMAT_VERSION, "capability set")?;
        let cpu_cores = r.u32()?;
        let cpu_threads = r.u32()?;
        let memory_gb = r.u32()?;
        let gpu = match r.u8()? {
            0 => None,
            1 => {
                let vendor = GpuVendor::from_u8(r.u8()?)?;
                let model = r.string_u8("gpu model", MAX_MODEL_LEN, true)?;
                let vram_gb = r.u32()?;
                Some(GpuInfo {
                    vendor,
                    model,
                    vram_gb,
                })
            }
            _ => return Err(DecodeError::Invalid("gpu presence byte")),
        };
        let tags = read_sorted_tags(&mut r, MAX_TAGS)?;
        let count = r.count("metadata count", MAX_METADATA)?;
        let mut metadata = BTreeMap::new();
        let mut last: Option<&str> = None;
        for _ in 0..count {
            let key = r.str_u8("metadata key", MAX_KEY_LEN, false)?;
            if last.is_some_and(|prev| prev >= key) {
                return Err(DecodeError::Invalid("metadata key order"));
            }
            last = Some(key);
            let len = r.u16()? as usize;
            if len > MAX_VALUE_LEN {
                return Err(DecodeError::TooLong {
                    what: "metadata value",
                    len,
                    max: MAX_VALUE_LEN,
                });
            }
            let value = r.utf8(len)?;
            metadata.insert(key.to_owned(), value.to_owned());
        }
        r.finish()?;
        Ok(Self {
            tags,
            metadata,
            hardware: Hardware {
                cpu_cores,
                cpu_threads,
                memory_gb,
                gpu,
            },
        })
    }

    /// Appends the encoding; the caller has checked the limits.
    fn write(&self, out: &mut Vec<u8>) {
        let hw = &self.hardware;
        out.push(FORMAT_VERSION);
        out.extend_from_slice(&hw.cpu_cores.to_le_bytes());
        out.extend_from_slice(&hw.cpu_threads.to_le_bytes());
        out.extend_from_slice(&hw.memory_gb.to_le_bytes());
        match &hw.gpu {
            None => out.push(0),
            Some(gpu) => {
                out.push(1);
                out.push(gpu.vendor.to_u8());
                push_u8_string(out, &gpu.model);
                out.extend_from_slice(&gpu.vram_gb.to_le_bytes());
            }
        }
        push_tags(out, &self.tags);
        out.extend_from_slice(&(self.metadata.len() as u16).to_le_bytes());
        for (key, value) in &self.metadata {
            push_u8_string(out, key);
            out.extend_from_slice(&(value.len() as u16).to_le_bytes());
            out.extend_from_slice(value.as_bytes());
        }
    }
}

impl CapabilityFilter {
    /// A filter that matches every set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Requires a tag.
    #[must_use]
    pub fn require_tag(mut self, tag: impl Into<String>) -> Self {
        self.require_tags.insert(tag.into());
        self
    }

    /// Requires a GPU.
    #[must_use]
    pub fn require_gpu(mut self) -> Self {
        self.require_gpu = true;
        self
    }

    /// Requires a GPU from `vendor`.
    #[must_use]
    pub fn gpu_vendor(mut self, vendor: GpuVendor) -> Self {
        self.gpu_vendor = Some(vendor);
        self
    }

    /// Requires at least `gb` of main memory.
    #[must_use]
    pub fn min_memory_gb(mut self, gb: u32) -> Self {
        self.min_memory_gb = gb;
        self
    }

    /// Requires a GPU with at least `gb` of video memory.
    #[must_use]
    pub fn min_vram_gb(mut self, gb: u32) -> Self {
        self.min_vram_gb = gb;
        self
    }

    /// Requires at least `cores` physical cores.
    #[must_use]
    pub fn min_cpu_cores(mut self, cores: u32) -> Self {
        self.min_cpu_cores = cores;
        self
    }

    /// Whether `set` meets every requirement. Cheap numeric checks run first; allocates
    /// nothing.
    pub fn matches(&self, set: &CapabilitySet) -> bool {
        let hw = &set.hardware;
        if hw.memory_gb < self.min_memory_gb || hw.cpu_cores < self.min_cpu_cores {
            return false;
        }
        let needs_gpu = self.require_gpu || self.gpu_vendor.is_some() || self.min_vram_gb > 0;
        if needs_gpu {
            let Some(gpu) = &hw.gpu else {
                return false;
            };
            if gpu.vram_gb < self.min_vram_gb
                || self.gpu_vendor.is_some_and(|vendor| vendor != gpu.vendor)
            {
                return false;
            }
        }
        self.require_tags.iter().all(|tag| set.tags.contains(tag))
    }

    /// Encoded size, or the first limit the filter breaks.
    pub fn encoded_len(&self) -> Result<usize, CapabilityError> {
        limit("filter tag count", self.require_tags.len(), MAX_FILTER_TAGS)?;
        let mut len = 1 + 1 + 1 + 12 + 2;
        for tag in &self.require_tags {
            len += 1 + short_string_len("tag", tag, MAX_TAG_LEN)?;
        }
        Ok(len)
    }

    /// The canonical encoding (see the [module docs](self)).
    pub fn to_bytes(&self) -> Result<Vec<u8>, CapabilityError> {
        let mut out = Vec::with_capacity(self.encoded_len()?);
        out.push(FORMAT_VERSION);
        let mut flags = 0;
        if self.require_gpu {
            flags |= FILTER_REQUIRE_GPU;
        }
        if self.gpu_vendor.is_some() {
            flags |= FILTER_VENDOR;
        }
        out.push(flags);
        out.push(self.gpu_vendor.map_or(0, GpuVendor::to_u8));
        out.extend_from_slice(&self.min_memory_gb.to_le_bytes());
        out.extend_from_slice(&self.min_vram_gb.to_le_bytes());
        out.extend_from_slice(&self.min_cpu_cores.to_le_bytes());
        push_tags(&mut out, &self.require_tags);
        Ok(out)
    }

    /// Decodes a canonical encoding.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        r.version(FORMAT_VERSION, "capability filter")?;
        let flags = r.u8()?;
        if flags & !(FILTER_REQUIRE_GPU | FILTER_VENDOR) != 0 {
            return Err(DecodeError::Reserved("filter flags"));
        }
        let vendor_byte = r.u8()?;
        let gpu_vendor = if flags & FILTER_VENDOR != 0 {
            Some(GpuVendor::from_u8(vendor_byte)?)
        } else if vendor_byte != 0 {
            return Err(DecodeError::Reserved("filter vendor"));
        } else {
            None
        };
        let min_memory_gb = r.u32()?;
        let min_vram_gb = r.u32()?;
        let min_cpu_cores = r.u32()?;
        let require_tags = read_sorted_tags(&mut r, MAX_FILTER_TAGS)?;
        r.finish()?;
        Ok(Self {
            require_tags,
            require_gpu: flags & FILTER_REQUIRE_GPU != 0,
            gpu_vendor,
            min_memory_gb,
            min_vram_gb,
            min_cpu_cores,
        })
    }
}

fn limit(what: &'static str, len: usize, max: usize) -> Result<(), CapabilityError> {
    if len > max {
        Err(CapabilityError::Limit { what, len, max })
    } else {
        Ok(())
    }
}

fn short_string_len(what: &'static str, s: &str, max: usize) -> Result<usize, CapabilityError> {
    if s.is_empty() {
        return Err(CapabilityError::Empty(what));
    }
    limit(what, s.len(), max)?;
    Ok(s.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;
    use proptest::prelude::*;

    fn gpu_box() -> CapabilitySet {
        CapabilitySet::new()
            .with_tag("nrpc:inference")
            .with_tag("software.os=linux")
            .with_metadata("owner", "lab-3")
            .with_hardware(
                Hardware::new(16, 32)
                    .with_memory_gb(128)
                    .with_gpu(GpuInfo::new(GpuVendor::Nvidia, "RTX 4090", 24)),
            )
    }

    #[test]
    fn filter_semantics() {
        let gpu = gpu_box();
        let cpu = CapabilitySet::new()
            .with_tag("software.os=linux")
            .with_hardware(Hardware::new(4, 8).with_memory_gb(16));
        let any = CapabilityFilter::new();
        assert!(any.matches(&gpu) && any.matches(&cpu));
        let f = CapabilityFilter::new().require_gpu();
        assert!(f.matches(&gpu) && !f.matches(&cpu));
        assert!(!CapabilityFilter::new().min_vram_gb(1).matches(&cpu));
        assert!(
            !CapabilityFilter::new()
                .gpu_vendor(GpuVendor::Amd)
                .matches(&cpu)
        );
        assert!(
            !CapabilityFilter::new()
                .gpu_vendor(GpuVendor::Amd)
                .matches(&gpu)
        );
        assert!(
            CapabilityFilter::new()
                .gpu_vendor(GpuVendor::Nvidia)
                .min_vram_gb(24)
                .matches(&gpu)
        );
        assert!(!CapabilityFilter::new().min_vram_gb(25).matches(&gpu));
        assert!(CapabilityFilter::new().min_memory_gb(16).matches(&cpu));
        assert!(!CapabilityFilter::new().min_memory_gb(17).matches(&cpu));
        assert!(!CapabilityFilter::new().min_cpu_cores(5).matches(&cpu));
        let tags = CapabilityFilter::new().require_tag("software.os=linux");
        assert!(tags.matches(&gpu) && tags.matches(&cpu));
        let tags = tags.require_tag("nrpc:inference");
        assert!(tags.matches(&gpu) && !tags.matches(&cpu));
        assert!(gpu.has_tag("nrpc:inference") && !cpu.has_tag("nrpc:inference"));
    }

    #[test]
    fn set_encoding_is_canonical() {
        let set = gpu_box();
        let bytes = set.to_bytes().expect("encodes");
        assert_eq!(bytes[0], FORMAT_VERSION);
        assert_eq!(set.encoded_len(), Ok(bytes.len()));
        assert_eq!(CapabilitySet::from_bytes(&bytes).expect("decodes"), set);
        // Insertion order does not matter.
        let other = CapabilitySet::new()
            .with_hardware(set.hardware.clone())
            .with_metadata("owner", "lab-3")
            .with_tag("software.os=linux")
            .with_tag("nrpc:inference");
        assert_eq!(other.to_bytes().expect("encodes"), bytes);
    }

    #[test]
    fn set_decoder_refuses_non_canonical_and_oversize() {
        let set = CapabilitySet::new().with_tag("a").with_tag("b");
        let bytes = set.to_bytes().expect("encodes");
        // Header is 1 + 12 + 1 = 14 bytes; tags follow: count, 1 "a", 1 "b".
        let mut swapped = bytes.clone();
        swapped[17] = b'b';
        swapped[19] = b'a';
        assert!(matches!(
            CapabilitySet::from_bytes(&swapped),
            Err(DecodeError::Invalid("tag order"))
        ));
        let mut dup = bytes.clone();
        dup[19] = b'a';
        assert!(CapabilitySet::from_bytes(&dup).is_err());
        let mut v = bytes.clone();
        v.push(0);
        assert!(matches!(
            CapabilitySet::from_bytes(&v),
            Err(DecodeError::TrailingBytes(1))
        ));
        let mut v = bytes.clone();
        v[0] = 2;
        assert!(matches!(
            CapabilitySet::from_bytes(&v),
            Err(DecodeError::UnknownVersion { version: 2, .. })
        ));
        let mut v = bytes.clone();
        v[14..16].copy_from_slice(&u16::MAX.to_le_bytes());
        assert!(matches!(
            CapabilitySet::from_bytes(&v),
            Err(DecodeError::TooLong {
                what: "tag count",
                ..
            })
        ));
        let mut v = bytes.clone();
        v[13] = 2;
        assert!(matches!(
            CapabilitySet::from_bytes(&v),
            Err(DecodeError::Invalid(_))
        ));
        assert!(matches!(
            CapabilitySet::from_bytes(&vec![1; MAX_SET_LEN + 1]),
            Err(DecodeError::TooLong { .. })
        ));
        for cut in 0..bytes.len() {
            assert!(CapabilitySet::from_bytes(&bytes[..cut]).is_err());
        }
    }

    #[test]
    fn encode_enforces_the_decode_limits() {
        let mut many = CapabilitySet::new();
        for i in 0..=MAX_TAGS {
            many.tags.insert(format!("t{i}"));
        }
        assert!(matches!(
            many.to_bytes(),
            Err(CapabilityError::Limit {
                what: "tag count",
                ..
            })
        ));
        let long = CapabilitySet::new().with_tag("x".repeat(MAX_TAG_LEN + 1));
        assert!(matches!(
            long.to_bytes(),
            Err(CapabilityError::Limit { .. })
        ));
        assert_eq!(
            CapabilitySet::new().with_tag("").to_bytes(),
            Err(CapabilityError::Empty("tag"))
        );
        let mut meta = CapabilitySet::new();
        for i in 0..=MAX_METADATA {
            meta.metadata.insert(format!("k{i}"), String::new());
        }
        assert!(meta.to_bytes().is_err());
        let big_value = CapabilitySet::new().with_metadata("k", "v".repeat(MAX_VALUE_LEN + 1));
        assert!(big_value.to_bytes().is_err());
        // Each entry within limits, but the whole set is over 16 KiB.
        let mut bulky = CapabilitySet::new();
        for i in 0..20 {
            bulky
                .metadata
                .insert(format!("k{i:02}"), "v".repeat(MAX_VALUE_LEN));
        }
        assert!(matches!(
            bulky.to_bytes(),
            Err(CapabilityError::Limit {
                what: "capability set length",
                ..
            })
        ));
        let mut filter = CapabilityFilter::new();
        for i in 0..=MAX_FILTER_TAGS {
            filter.require_tags.insert(format!("t{i}"));
        }
        assert!(filter.to_bytes().is_err());
    }

    #[test]
    fn filter_round_trip_and_rejects() {
        let f = CapabilityFilter::new()
            .require_gpu()
            .gpu_vendor(GpuVendor::Apple)
            .min_memory_gb(8)
            .min_vram_gb(4)
            .min_cpu_cores(2)
            .require_tag("x")
            .require_tag("y");
        let bytes = f.to_bytes().expect("encodes");
        assert_eq!(f.encoded_len(), Ok(bytes.len()));
        assert_eq!(CapabilityFilter::from_bytes(&bytes).expect("decodes"), f);
        let plain = CapabilityFilter::new().to_bytes().expect("encodes");
        let mut v = plain.clone();
        v[1] = 0x80;
        assert!(matches!(
            CapabilityFilter::from_bytes(&v),
            Err(DecodeError::Reserved(_))
        ));
        let mut v = plain.clone();
        v[2] = 3;
        assert!(matches!(
            CapabilityFilter::from_bytes(&v),
            Err(DecodeError::Reserved(_))
        ));
        let mut v = plain;
        v[1] = FILTER_VENDOR;
        v[2] = 9;
        assert!(matches!(
            CapabilityFilter::from_bytes(&v),
            Err(DecodeError::Invalid("gpu vendor"))
        ));
    }

    fn vendor() -> impl Strategy<Value = GpuVendor> {
        prop_oneof![
            Just(GpuVendor::Nvidia),
            Just(GpuVendor::Amd),
            Just(GpuVendor::Intel),
            Just(GpuVendor::Apple),
            Just(GpuVendor::Other),
        ]
    }

    prop_compose! {
        fn set_strategy()(
            tags in proptest::collection::btree_set("[a-z0-9:.=_-]{1,24}", 0..24),
            metadata in proptest::collection::btree_map("[a-z_]{1,16}", ".{0,40}", 0..8),
            cores: u32, threads: u32, memory: u32,
            gpu in proptest::option::of((vendor(), ".{0,30}", any::<u32>())),
        ) -> CapabilitySet {
            CapabilitySet {
                tags,
                metadata,
                hardware: Hardware {
                    cpu_cores: cores, cpu_threads: threads, memory_gb: memory,
                    gpu: gpu.map(|(v, m, vram)| GpuInfo::new(v, m, vram)),
                },
            }
        }
    }

    proptest! {
        #[test]
        fn set_round_trip(set in set_strategy()) {
            let bytes = set.to_bytes().expect("within limits");
            prop_assert_eq!(set.encoded_len(), Ok(bytes.len()));
            prop_assert_eq!(CapabilitySet::from_bytes(&bytes).expect("decodes"), set);
        }

        #[test]
        fn filter_round_trip(
            tags in proptest::collection::btree_set("[a-z]{1,12}", 0..10),
            gpu: bool, v in proptest::option::of(vendor()), mem: u32, vram: u32, cores: u32,
        ) {
            let f = CapabilityFilter {
                require_tags: tags, require_gpu: gpu, gpu_vendor: v,
                min_memory_gb: mem, min_vram_gb: vram, min_cpu_cores: cores,
            };
            let bytes = f.to_bytes().expect("within limits");
            prop_assert_eq!(f.encoded_len(), Ok(bytes.len()));
            prop_assert_eq!(CapabilityFilter::from_bytes(&bytes).expect("decodes"), f);
        }

        #[test]
        fn announcement_round_trip(seed: [u8; 32], version: u64, now: u64, ttl: u32, hops: u8, set in set_strategy()) {
            let id = Identity::from_seed(seed);
            let mut ann = CapabilityAnnouncement::sign(&id, version, now, ttl, set).expect("signs");
            ann.hop_count = hops;
            let bytes = ann.to_bytes().expect("encodes");
            prop_assert_eq!(ann.encoded_len(), Ok(bytes.len()));
            let back = CapabilityAnnouncement::from_bytes(&bytes).expect("decodes");
            prop_assert!(back.verify().is_ok());
            prop_assert_eq!(back, ann);
        }

        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(set) = CapabilitySet::from_bytes(&bytes) {
                prop_assert_eq!(set.to_bytes().expect("re-encodes"), bytes.clone());
            }
            if let Ok(f) = CapabilityFilter::from_bytes(&bytes) {
                prop_assert_eq!(f.to_bytes().expect("re-encodes"), bytes.clone());
            }
            if let Ok(a) = CapabilityAnnouncement::from_bytes(&bytes) {
                prop_assert_eq!(a.to_bytes().expect("re-encodes"), bytes);
            }
        }
    }
}
