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
//! [`CapabilityAnnouncement`]:
//!
//! ```text
//!   1  format = 1
//!   8  node_id u64           must equal entity_id.node_id()
//!  32  entity_id             the signer
//!   8  version u64           monotonic per node
//!   8  announced_at_unix u64
//!   4  ttl_secs u32
//!   2  set_len u16           ≤ MAX_SET_LEN
//!   n  CapabilitySet encoding
//!  64  signature             ed25519 over ANNOUNCE_TAG ‖ every byte before the signature
//!   1  hop_count             not signed: forwarders bump it
//! ```

use std::collections::{BTreeMap, BTreeSet};

use thiserror::Error;

use crate::error::DecodeError;
use crate::identity::{Identity, Signature};
use crate::ids::{EntityId, NodeId};

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
/// Fixed part of an announcement (everything but the set bytes).
const ANNOUNCE_FIXED_LEN: usize = 1 + 8 + 32 + 8 + 8 + 4 + 2 + 64 + 1;
/// Largest encoded [`CapabilityAnnouncement`].
pub const MAX_ANNOUNCEMENT_LEN: usize = ANNOUNCE_FIXED_LEN + MAX_SET_LEN;
/// Domain-separation prefix of the announcement signature.
const ANNOUNCE_TAG: &[u8; 24] = b"netrun announcement v1\0\0";
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

/// Why an announcement was refused.
#[derive(Debug, Error)]
pub enum AnnouncementError {
    /// The format byte is not one this build speaks.
    #[error("unknown announcement format {0}")]
    UnknownVersion(u8),
    /// The bytes are not a well-formed announcement.
    #[error("malformed announcement: {0}")]
    Decode(#[from] DecodeError),
    /// The capability set breaks a limit (encoding side).
    #[error("oversize capability set: {0}")]
    Oversize(#[from] CapabilityError),
    /// The claimed node id is not the signer's.
    #[error("announced node id {claimed} is not the signer's {derived}")]
    NodeIdMismatch {
        /// The `node_id` field.
        claimed: NodeId,
        /// `entity_id.node_id()`.
        derived: NodeId,
    },
    /// The signature does not verify under `entity_id`.
    #[error("announcement signature does not verify")]
    BadSignature,
}

/// A node's signed statement of its capabilities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapabilityAnnouncement {
    /// The announcing node; must equal `entity_id.node_id()`.
    pub node_id: NodeId,
    /// The signer's public key.
    pub entity_id: EntityId,
    /// Monotonic per node: a receiver keeps the highest version it has seen.
    pub version: u64,
    /// When it was signed (unix seconds).
    pub announced_at_unix: u64,
    /// How long receivers may keep it.
    pub ttl_secs: u32,
    /// What the node offers.
    pub capabilities: CapabilitySet,
    /// Hops travelled. Not signed: each forwarder adds one.
    pub hop_count: u8,
    /// ed25519 signature by `entity_id` (see the [module docs](self)).
    pub signature: Signature,
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
        r.format("capability set")?;
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
        let tags = r.sorted_tags(MAX_TAGS)?;
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
        r.format("capability filter")?;
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
        let require_tags = r.sorted_tags(MAX_FILTER_TAGS)?;
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

impl CapabilityAnnouncement {
    /// Signs an announcement of `capabilities` by `identity` (hop count 0).
    pub fn sign(
        identity: &Identity,
        version: u64,
        now_unix: u64,
        ttl_secs: u32,
        capabilities: CapabilitySet,
    ) -> Result<Self, AnnouncementError> {
        let mut announcement = Self {
            node_id: identity.node_id(),
            entity_id: identity.entity_id(),
            version,
            announced_at_unix: now_unix,
            ttl_secs,
            capabilities,
            hop_count: 0,
            signature: Signature([0; 64]),
        };
        let message = announcement.signed_message()?;
        announcement.signature = identity.sign(&message);
        Ok(announcement)
    }

    /// Encoded size, or the limit the capability set breaks.
    pub fn encoded_len(&self) -> Result<usize, CapabilityError> {
        Ok(ANNOUNCE_FIXED_LEN + self.capabilities.encoded_len()?)
    }

    /// The encoding (see the [module docs](self)).
    pub fn to_bytes(&self) -> Result<Vec<u8>, CapabilityError> {
        let set_len = self.capabilities.encoded_len()?;
        let mut out = Vec::with_capacity(ANNOUNCE_FIXED_LEN + set_len);
        self.write_signed_part(&mut out, set_len);
        out.extend_from_slice(&self.signature.0);
        out.push(self.hop_count);
        Ok(out)
    }

    /// Decodes an announcement. Does not verify it: call [`CapabilityAnnouncement::verify`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, AnnouncementError> {
        if bytes.len() > MAX_ANNOUNCEMENT_LEN {
            return Err(DecodeError::TooLong {
                what: "announcement",
                len: bytes.len(),
                max: MAX_ANNOUNCEMENT_LEN,
            }
            .into());
        }
        let mut r = Reader::new(bytes);
        let format = r.u8()?;
        if format != FORMAT_VERSION {
            return Err(AnnouncementError::UnknownVersion(format));
        }
        let node_id = NodeId(r.u64()?);
        let entity_id = EntityId(r.array::<32>()?);
        let version = r.u64()?;
        let announced_at_unix = r.u64()?;
        let ttl_secs = r.u32()?;
        let set_len = r.u16()? as usize;
        let capabilities = CapabilitySet::from_bytes(r.take(set_len)?)?;
        let signature = Signature(r.array::<64>()?);
        let hop_count = r.u8()?;
        r.finish()?;
        Ok(Self {
            node_id,
            entity_id,
            version,
            announced_at_unix,
            ttl_secs,
            capabilities,
            hop_count,
            signature,
        })
    }

    /// Checks that the claimed node id is the signer's and that the signature verifies.
    pub fn verify(&self) -> Result<(), AnnouncementError> {
        let derived = self.entity_id.node_id();
        if self.node_id != derived {
            return Err(AnnouncementError::NodeIdMismatch {
                claimed: self.node_id,
                derived,
            });
        }
        let message = self.signed_message()?;
        self.entity_id
            .verify(&message, &self.signature)
            .map_err(|_| AnnouncementError::BadSignature)
    }

    /// Whether the announcement is past its TTL at `now_unix`.
    pub fn is_expired(&self, now_unix: u64) -> bool {
        now_unix
            >= self
                .announced_at_unix
                .saturating_add(u64::from(self.ttl_secs))
    }

    fn signed_message(&self) -> Result<Vec<u8>, CapabilityError> {
        let set_len = self.capabilities.encoded_len()?;
        let mut message = Vec::with_capacity(ANNOUNCE_TAG.len() + ANNOUNCE_FIXED_LEN + set_len);
        message.extend_from_slice(ANNOUNCE_TAG);
        self.write_signed_part(&mut message, set_len);
        Ok(message)
    }

    fn write_signed_part(&self, out: &mut Vec<u8>, set_len: usize) {
        out.push(FORMAT_VERSION);
        out.extend_from_slice(&self.node_id.0.to_le_bytes());
        out.extend_from_slice(&self.entity_id.0);
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&self.announced_at_unix.to_le_bytes());
        out.extend_from_slice(&self.ttl_secs.to_le_bytes());
        // set_len ≤ MAX_SET_LEN < u16::MAX, checked by encoded_len.
        out.extend_from_slice(&(set_len as u16).to_le_bytes());
        self.capabilities.write(out);
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

/// Writes a string whose length was checked to fit a u8.
fn push_u8_string(out: &mut Vec<u8>, s: &str) {
    out.push(s.len() as u8);
    out.extend_from_slice(s.as_bytes());
}

fn push_tags(out: &mut Vec<u8>, tags: &BTreeSet<String>) {
    out.extend_from_slice(&(tags.len() as u16).to_le_bytes());
    for tag in tags {
        push_u8_string(out, tag);
    }
}

/// A bounds-checked cursor over untrusted bytes.
struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, at: 0 }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
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

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        self.array::<2>().map(u16::from_le_bytes)
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        self.array::<4>().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        self.array::<8>().map(u64::from_le_bytes)
    }

    fn format(&mut self, what: &'static str) -> Result<(), DecodeError> {
        match self.u8()? {
            FORMAT_VERSION => Ok(()),
            version => Err(DecodeError::UnknownVersion { what, version }),
        }
    }

    fn count(&mut self, what: &'static str, max: usize) -> Result<usize, DecodeError> {
        let len = self.u16()? as usize;
        if len > max {
            return Err(DecodeError::TooLong { what, len, max });
        }
        Ok(len)
    }

    fn utf8(&mut self, len: usize) -> Result<&'a str, DecodeError> {
        std::str::from_utf8(self.take(len)?).map_err(|_| DecodeError::Invalid("utf-8"))
    }

    /// A u8-length-prefixed string, bounded by `max` and optionally allowed to be empty.
    fn str_u8(
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

    fn string_u8(
        &mut self,
        what: &'static str,
        max: usize,
        empty_ok: bool,
    ) -> Result<String, DecodeError> {
        self.str_u8(what, max, empty_ok).map(str::to_owned)
    }

    /// A u16 count then that many non-empty tags in strictly ascending byte order.
    fn sorted_tags(&mut self, max: usize) -> Result<BTreeSet<String>, DecodeError> {
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

    fn finish(&self) -> Result<(), DecodeError> {
        match self.buf.len() - self.at {
            0 => Ok(()),
            extra => Err(DecodeError::TrailingBytes(extra)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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

    #[test]
    fn announcement_sign_verify_and_forgeries() {
        let id = Identity::from_seed([5; 32]);
        let ann =
            CapabilityAnnouncement::sign(&id, 3, 1_800_000_000, 300, gpu_box()).expect("signs");
        assert_eq!(ann.node_id, id.node_id());
        ann.verify().expect("verifies");
        let bytes = ann.to_bytes().expect("encodes");
        assert_eq!(ann.encoded_len(), Ok(bytes.len()));
        let back = CapabilityAnnouncement::from_bytes(&bytes).expect("decodes");
        assert_eq!(back, ann);
        back.verify().expect("verifies after decode");

        // hop_count is outside the signature.
        let mut hopped = back.clone();
        hopped.hop_count = 7;
        hopped.verify().expect("forwarded copy still verifies");

        // Changed capabilities: bad signature.
        let mut widened = ann.clone();
        widened.capabilities.hardware.memory_gb = 4096;
        assert!(matches!(
            widened.verify(),
            Err(AnnouncementError::BadSignature)
        ));
        let mut bent = bytes.clone();
        let sig_at = bytes.len() - 65;
        bent[sig_at] ^= 1;
        let bent = CapabilityAnnouncement::from_bytes(&bent).expect("decodes");
        assert!(matches!(
            bent.verify(),
            Err(AnnouncementError::BadSignature)
        ));

        // Claimed node id is not the signer's, even if the signer signed it.
        let other = Identity::from_seed([6; 32]);
        let mut lying = ann.clone();
        lying.node_id = other.node_id();
        assert!(matches!(
            lying.verify(),
            Err(AnnouncementError::NodeIdMismatch { .. })
        ));
        // Someone else's key over our node id.
        let mut swapped = ann.clone();
        swapped.entity_id = other.entity_id();
        assert!(matches!(
            swapped.verify(),
            Err(AnnouncementError::NodeIdMismatch { .. })
        ));
        swapped.node_id = other.node_id();
        assert!(matches!(
            swapped.verify(),
            Err(AnnouncementError::BadSignature)
        ));

        let mut v = bytes.clone();
        v[0] = 9;
        assert!(matches!(
            CapabilityAnnouncement::from_bytes(&v),
            Err(AnnouncementError::UnknownVersion(9))
        ));
        let mut v = bytes.clone();
        v.push(0);
        assert!(CapabilityAnnouncement::from_bytes(&v).is_err());
        for cut in 0..bytes.len() {
            assert!(CapabilityAnnouncement::from_bytes(&bytes[..cut]).is_err());
        }
        assert!(matches!(
            CapabilityAnnouncement::from_bytes(&vec![1; MAX_ANNOUNCEMENT_LEN + 1]),
            Err(AnnouncementError::Decode(DecodeError::TooLong { .. }))
        ));
    }

    #[test]
    fn announcement_oversize_and_expiry() {
        let id = Identity::from_seed([5; 32]);
        let mut huge = CapabilitySet::new();
        for i in 0..=MAX_TAGS {
            huge.tags.insert(format!("t{i}"));
        }
        assert!(matches!(
            CapabilityAnnouncement::sign(&id, 1, 0, 10, huge),
            Err(AnnouncementError::Oversize(_))
        ));
        let ann =
            CapabilityAnnouncement::sign(&id, 1, 100, 10, CapabilitySet::new()).expect("signs");
        assert!(!ann.is_expired(109));
        assert!(ann.is_expired(110));
        let mut stretched = ann.clone();
        stretched.announced_at_unix = u64::MAX;
        assert!(!stretched.is_expired(u64::MAX - 1));
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
