//! The capability index: verified announcements, their secondary indexes and TTL expiry.

use std::collections::{BTreeSet, HashMap};

use netrun_messages::capability::MAX_ANNOUNCEMENT_LEN;
use netrun_messages::{
    AnnouncementError, CapabilityAnnouncement, CapabilityFilter, DecodeError, EntityId, GpuVendor,
    Hardware, NodeId,
};
use thiserror::Error;

use super::postings;
use super::service_tag;

/// Limits of a [`CapabilityIndex`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexConfig {
    /// Most remote nodes indexed (the local node is admitted on top); a new node beyond
    /// it is refused and counted.
    pub max_nodes: usize,
    /// Most node-id → key pins remembered; must exceed `max_nodes`. When full, the pin of
    /// the longest-unseen node that is no longer indexed is forgotten.
    pub max_pins: usize,
    /// Longest lifetime granted to an entry, whatever TTL the announcement asks for.
    pub max_ttl_secs: u32,
    /// How far in the future `announced_at_unix` may be (clock difference with the
    /// announcer) before the announcement is refused.
    pub max_clock_skew_secs: u64,
    /// Largest encoded announcement accepted (at most [`MAX_ANNOUNCEMENT_LEN`]).
    pub max_announcement_len: usize,
    /// Announcements that travelled this many hops or more are refused.
    pub max_hops: u8,
}

impl Default for IndexConfig {
    fn default() -> Self {
        Self {
            // Room for the 10,000-node meshes the reference measures, with headroom.
            max_nodes: 16_384,
            max_pins: 65_536,
            // Announcers re-announce every few minutes; an hour bounds stale entries from
            // a node that asked for a long TTL and then vanished.
            max_ttl_secs: 3_600,
            // The same tolerance tokens get.
            max_clock_skew_secs: 300,
            max_announcement_len: MAX_ANNOUNCEMENT_LEN,
            // The reference's bound on capability gossip.
            max_hops: 16,
        }
    }
}

/// An [`IndexConfig`] that cannot work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum IndexConfigError {
    /// `max_nodes` is zero.
    #[error("max_nodes must be at least 1")]
    NoNodes,
    /// `max_pins` does not exceed `max_nodes`.
    #[error("max_pins ({pins}) must exceed max_nodes ({nodes})")]
    TooFewPins {
        /// Configured pins.
        pins: usize,
        /// Configured nodes.
        nodes: usize,
    },
    /// `max_ttl_secs` is zero.
    #[error("max_ttl_secs must be at least 1")]
    ZeroTtl,
    /// `max_announcement_len` exceeds what the decoder accepts.
    #[error("max_announcement_len {0} exceeds the wire limit")]
    AnnouncementLen(usize),
    /// `max_hops` is zero.
    #[error("max_hops must be at least 1")]
    NoHops,
}

impl IndexConfig {
    /// Checks the limits fit together.
    pub fn validate(&self) -> Result<(), IndexConfigError> {
        if self.max_nodes == 0 {
            return Err(IndexConfigError::NoNodes);
        }
        if self.max_pins <= self.max_nodes {
            return Err(IndexConfigError::TooFewPins {
                pins: self.max_pins,
                nodes: self.max_nodes,
            });
        }
        if self.max_ttl_secs == 0 {
            return Err(IndexConfigError::ZeroTtl);
        }
        if self.max_announcement_len > MAX_ANNOUNCEMENT_LEN {
            return Err(IndexConfigError::AnnouncementLen(self.max_announcement_len));
        }
        if self.max_hops == 0 {
            return Err(IndexConfigError::NoHops);
        }
        Ok(())
    }
}

/// An announcement as it reaches the index: still encoded, or already decoded.
#[derive(Debug, Clone)]
pub enum Incoming<'a> {
    /// Encoded bytes (from the wire).
    Bytes(&'a [u8]),
    /// A decoded announcement (the local announcer's, or one decoded elsewhere).
    Decoded(Box<CapabilityAnnouncement>),
}

impl<'a> From<&'a [u8]> for Incoming<'a> {
    fn from(bytes: &'a [u8]) -> Self {
        Self::Bytes(bytes)
    }
}

impl<'a> From<&'a Vec<u8>> for Incoming<'a> {
    fn from(bytes: &'a Vec<u8>) -> Self {
        Self::Bytes(bytes)
    }
}

impl From<CapabilityAnnouncement> for Incoming<'static> {
    fn from(announcement: CapabilityAnnouncement) -> Self {
        Self::Decoded(Box::new(announcement))
    }
}

/// What an accepted or ignored announcement did to the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A node not indexed before.
    Inserted {
        /// Forward a copy (hop count + 1) to the other peers: the hop budget allows it.
        forward: bool,
    },
    /// A newer version replaced the stored one.
    Replaced {
        /// As for [`Outcome::Inserted`].
        forward: bool,
        /// The capability set differs from the replaced one (else only the version,
        /// timestamp or TTL moved).
        changed: bool,
    },
    /// The stored version already; nothing changed (no signature work was done).
    Duplicate,
    /// Older than the stored version; nothing changed (no signature work was done).
    Stale,
}

impl Outcome {
    /// Whether the caller should forward the announcement to its other peers.
    pub fn forward(&self) -> bool {
        matches!(
            self,
            Self::Inserted { forward: true } | Self::Replaced { forward: true, .. }
        )
    }
}

/// Why an announcement was refused. Each refusal is also counted in [`Rejections`].
#[derive(Debug, Error)]
pub enum IndexError {
    /// The encoding exceeds the configured size bound.
    #[error("announcement of {len} bytes exceeds the limit of {max}")]
    Oversize {
        /// Its size (or none could be computed: `usize::MAX`).
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The bytes are not a well-formed announcement.
    #[error("malformed announcement: {0}")]
    Malformed(#[source] DecodeError),
    /// The announcement format byte is unknown.
    #[error("unknown announcement format {0}")]
    UnknownVersion(u8),
    /// The claimed node id is not the signer's.
    #[error("announced node id {claimed} is not the signer's {derived}")]
    NodeIdMismatch {
        /// The claimed node id.
        claimed: NodeId,
        /// The id the signing key derives.
        derived: NodeId,
    },
    /// The signature does not verify.
    #[error("announcement signature does not verify")]
    BadSignature,
    /// The announcement has travelled too many hops.
    #[error("announcement travelled {0} hops")]
    TooManyHops(u8),
    /// The announcement's own TTL has passed.
    #[error("announcement expired")]
    Expired,
    /// `announced_at_unix` is further ahead of our clock than the allowed skew.
    #[error("announcement is dated {announced_at}, ahead of now {now}")]
    FromFuture {
        /// The announcement's timestamp.
        announced_at: u64,
        /// Our clock.
        now: u64,
    },
    /// The node id is pinned to another key.
    #[error("node {node} is pinned to another key")]
    RebindRefused {
        /// The node id.
        node: NodeId,
        /// The key first seen for it.
        pinned: EntityId,
        /// The key that tried to take it over.
        presented: EntityId,
    },
    /// The index holds `max_nodes` nodes already.
    #[error("capability index is full ({0} nodes)")]
    Full(usize),
}

/// Refusals, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rejections {
    /// [`IndexError::Oversize`].
    pub oversize: u64,
    /// [`IndexError::Malformed`].
    pub malformed: u64,
    /// [`IndexError::UnknownVersion`].
    pub unknown_version: u64,
    /// [`IndexError::NodeIdMismatch`] (forgeries).
    pub node_id_mismatch: u64,
    /// [`IndexError::BadSignature`].
    pub bad_signature: u64,
    /// [`IndexError::TooManyHops`].
    pub too_many_hops: u64,
    /// [`IndexError::Expired`].
    pub expired: u64,
    /// [`IndexError::FromFuture`].
    pub from_future: u64,
    /// [`IndexError::RebindRefused`].
    pub rebind_refused: u64,
    /// [`IndexError::Full`].
    pub full: u64,
}

/// Running totals of what the index did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CapabilityCounters {
    /// Announcements stored (new nodes and newer versions).
    pub accepted: u64,
    /// Of those, newer versions that replaced a stored one.
    pub replaced: u64,
    /// Copies of the stored version.
    pub duplicates: u64,
    /// Older than the stored version.
    pub stale: u64,
    /// Entries dropped because their TTL ran out.
    pub expired: u64,
    /// Entries removed on request.
    pub removed: u64,
    /// Refusals by reason.
    pub rejected: Rejections,
}

/// One indexed node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    /// The verified announcement.
    pub announcement: CapabilityAnnouncement,
    /// When it was stored (unix seconds, our clock).
    pub received_at: u64,
    /// When it expires (unix seconds, our clock): the announcement's own expiry, never
    /// later than `received_at` plus the capped TTL.
    pub expires_at: u64,
    /// The peer that forwarded it, if it did not come from the node itself.
    pub via: Option<NodeId>,
}

#[derive(Debug, Clone, Copy)]
struct Pin {
    entity: EntityId,
    last_seen: u64,
}

/// The capability fold of one node.
///
/// ```text
///  bytes / announcement ─► size ─► decode ─► hops ─► node id = signer? ─► pin ─► fresh?
///      ─► newer than stored? (else Stale / Duplicate, no signature work) ─► signature
///      ─► room? ─► store: entries + posting lists (all, gpu, per tag) + expiry queue
/// ```
///
/// Every check that can refuse runs before anything is stored, cheap checks first: an
/// announcement that is not newer than the stored one is answered without verifying its
/// signature and changes nothing. A node id is pinned to the first key seen signing for it
/// (trust on first use; pins outlive entries and are bounded separately), so a later
/// announcement for that id under another key is refused even if it verifies. The
/// forwarder an announcement arrived through (`via`) is recorded as a hint and never
/// pinned: only the signer's own id is.
///
/// Queries never scan the entries: [`CapabilityIndex::find`] intersects sorted posting
/// lists (one per tag, one of GPU nodes, one of all nodes) smallest first and applies the
/// remaining hardware minimums to the survivors only, reading them from a dense array kept
/// parallel to the list of all nodes.
#[derive(Debug)]
pub struct CapabilityIndex {
    local: NodeId,
    config: IndexConfig,
    entries: HashMap<NodeId, IndexEntry>,
    all: Vec<NodeId>,
    /// Hardware of `all[i]` at `hw[i]`: filters read it from a dense array.
    hw: Vec<HardwareSummary>,
    gpu: Vec<NodeId>,
    tags: HashMap<String, Vec<NodeId>>,
    expiry: BTreeSet<(u64, NodeId)>,
    pins: HashMap<NodeId, Pin>,
    pin_order: BTreeSet<(u64, NodeId)>,
    counters: CapabilityCounters,
    mutations: u64,
}

impl CapabilityIndex {
    /// An empty index on node `local` (whose own announcements are admitted even when the
    /// index is full).
    pub fn new(local: NodeId, config: IndexConfig) -> Result<Self, IndexConfigError> {
        config.validate()?;
        Ok(Self {
            local,
            config,
            entries: HashMap::new(),
            all: Vec::new(),
            hw: Vec::new(),
            gpu: Vec::new(),
            tags: HashMap::new(),
            expiry: BTreeSet::new(),
            pins: HashMap::new(),
            pin_order: BTreeSet::new(),
            counters: CapabilityCounters::default(),
            mutations: 0,
        })
    }

    /// Folds in an announcement received at `now_unix`, directly from its node
    /// (`via = None`) or forwarded by peer `via`. Verifies before storing; see the
    /// [type docs](Self) for the order of checks.
    pub fn handle_announcement<'a>(
        &mut self,
        now_unix: u64,
        incoming: impl Into<Incoming<'a>>,
        via: Option<NodeId>,
    ) -> Result<Outcome, IndexError> {
        let result = self
            .admit(incoming.into())
            .and_then(|announcement| self.fold(now_unix, announcement, via));
        match &result {
            Ok(Outcome::Inserted { .. }) => self.counters.accepted += 1,
            Ok(Outcome::Replaced { .. }) => {
                self.counters.accepted += 1;
                self.counters.replaced += 1;
            }
            Ok(Outcome::Duplicate) => self.counters.duplicates += 1,
            Ok(Outcome::Stale) => self.counters.stale += 1,
            Err(error) => self.count_rejection(error),
        }
        result
    }

    /// Drops every entry whose TTL ran out by `now_unix`; returns their node ids.
    pub fn handle_timeout(&mut self, now_unix: u64) -> Vec<NodeId> {
        let mut expired = Vec::new();
        while let Some(&(at, node)) = self.expiry.first() {
            if at > now_unix {
                break;
            }
            self.remove_entry(node);
            expired.push(node);
        }
        self.counters.expired += expired.len() as u64;
        expired
    }

    /// When the next entry expires (unix seconds), if any.
    pub fn poll_timeout(&self) -> Option<u64> {
        self.expiry.first().map(|&(at, _)| at)
    }

    /// Removes a node's entry (its pin stays). Returns the entry if there was one.
    pub fn remove(&mut self, node: NodeId) -> Option<IndexEntry> {
        let entry = self.remove_entry(node);
        if entry.is_some() {
            self.counters.removed += 1;
        }
        entry
    }

    /// The nodes whose capabilities meet every requirement of `filter`, ascending.
    ///
    /// Intersects the posting lists of the required tags (and of GPU nodes when the filter
    /// needs a GPU), shortest first, then checks memory, cores, vendor and VRAM on the
    /// survivors. A filter with no tag and no GPU requirement starts from all nodes.
    pub fn find(&self, filter: &CapabilityFilter) -> Vec<NodeId> {
        let needs_gpu = filter.require_gpu || filter.gpu_vendor.is_some() || filter.min_vram_gb > 0;
        let mut lists: Vec<&[NodeId]> = Vec::with_capacity(filter.require_tags.len() + 1);
        for tag in &filter.require_tags {
            match self.tags.get(tag.as_str()) {
                Some(list) => lists.push(list),
                None => return Vec::new(),
            }
        }
        if needs_gpu {
            lists.push(&self.gpu);
        }
        if lists.is_empty() {
            lists.push(&self.all);
        }
        let hardware_checks = filter.min_memory_gb > 0
            || filter.min_cpu_cores > 0
            || filter.gpu_vendor.is_some()
            || filter.min_vram_gb > 0;
        if !hardware_checks {
            return postings::intersect(&mut lists, |_| true);
        }
        if lists.len() == 1 && std::ptr::eq(lists[0], self.all.as_slice()) {
            // No list narrows the search: one pass over the dense hardware array.
            return self
                .all
                .iter()
                .zip(&self.hw)
                .filter(|(_, hw)| hw.matches(filter))
                .map(|(&node, _)| node)
                .collect();
        }
        // Survivors arrive ascending, so one cursor walks `all` forward to find each one's
        // hardware.
        let mut cursor = 0;
        postings::intersect(&mut lists, |node| {
            cursor += postings::gallop(&self.all[cursor..], node);
            self.all.get(cursor) == Some(&node) && self.hw[cursor].matches(filter)
        })
    }

    /// The nodes that serve nRPC `service` (they carry the tag `nrpc:<service>`), ascending.
    pub fn find_service(&self, service: &str) -> Vec<NodeId> {
        self.tagged(&service_tag(service)).to_vec()
    }

    /// The nodes carrying exactly `tag`, ascending, borrowed from the index.
    pub fn tagged(&self, tag: &str) -> &[NodeId] {
        self.tags.get(tag).map_or(&[], Vec::as_slice)
    }

    /// A node's entry.
    pub fn get(&self, node: NodeId) -> Option<&IndexEntry> {
        self.entries.get(&node)
    }

    /// Every indexed node, ascending.
    pub fn nodes(&self) -> &[NodeId] {
        &self.all
    }

    /// The key a node id is pinned to, if it was ever seen.
    pub fn pinned_key(&self, node: NodeId) -> Option<EntityId> {
        self.pins.get(&node).map(|pin| pin.entity)
    }

    /// Number of indexed nodes.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no node is indexed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bumped on every insert, replace, removal and expiry (for caches of query results).
    pub fn mutation_version(&self) -> u64 {
        self.mutations
    }

    /// Running totals.
    pub fn counters(&self) -> &CapabilityCounters {
        &self.counters
    }

    /// The limits in force.
    pub fn config(&self) -> &IndexConfig {
        &self.config
    }

    /// Size bound and decoding.
    fn admit(&self, incoming: Incoming<'_>) -> Result<CapabilityAnnouncement, IndexError> {
        let max = self.config.max_announcement_len;
        match incoming {
            Incoming::Bytes(bytes) => {
                if bytes.len() > max {
                    return Err(IndexError::Oversize {
                        len: bytes.len(),
                        max,
                    });
                }
                CapabilityAnnouncement::from_bytes(bytes).map_err(|error| match error {
                    AnnouncementError::UnknownVersion(v) => IndexError::UnknownVersion(v),
                    AnnouncementError::Decode(e) => IndexError::Malformed(e),
                    AnnouncementError::Oversize(_) => IndexError::Oversize {
                        len: bytes.len(),
                        max,
                    },
                    AnnouncementError::NodeIdMismatch { claimed, derived } => {
                        IndexError::NodeIdMismatch { claimed, derived }
                    }
                    AnnouncementError::BadSignature => IndexError::BadSignature,
                })
            }
            Incoming::Decoded(announcement) => {
                let len = announcement.encoded_len().unwrap_or(usize::MAX);
                if len > max {
                    return Err(IndexError::Oversize { len, max });
                }
                Ok(*announcement)
            }
        }
    }

    /// Every remaining check, then the store.
    fn fold(
        &mut self,
        now: u64,
        announcement: CapabilityAnnouncement,
        via: Option<NodeId>,
    ) -> Result<Outcome, IndexError> {
        let node = announcement.node_id;
        if announcement.hop_count >= self.config.max_hops {
            return Err(IndexError::TooManyHops(announcement.hop_count));
        }
        let derived = announcement.entity_id.node_id();
        if node != derived {
            return Err(IndexError::NodeIdMismatch {
                claimed: node,
                derived,
            });
        }
        if let Some(pin) = self.pins.get(&node)
            && pin.entity != announcement.entity_id
        {
            return Err(IndexError::RebindRefused {
                node,
                pinned: pin.entity,
                presented: announcement.entity_id,
            });
        }
        if announcement.is_expired(now) {
            return Err(IndexError::Expired);
        }
        if announcement.announced_at_unix > now.saturating_add(self.config.max_clock_skew_secs) {
            return Err(IndexError::FromFuture {
                announced_at: announcement.announced_at_unix,
                now,
            });
        }
        let stored_version = self.entries.get(&node).map(|e| e.announcement.version);
        match stored_version {
            Some(v) if announcement.version < v => return Ok(Outcome::Stale),
            Some(v) if announcement.version == v => return Ok(Outcome::Duplicate),
            _ => {}
        }
        announcement.verify().map_err(|error| match error {
            AnnouncementError::NodeIdMismatch { claimed, derived } => {
                IndexError::NodeIdMismatch { claimed, derived }
            }
            _ => IndexError::BadSignature,
        })?;
        let is_new = stored_version.is_none();
        let remote = self.entries.len() - usize::from(self.entries.contains_key(&self.local));
        if is_new && node != self.local && remote >= self.config.max_nodes {
            return Err(IndexError::Full(self.config.max_nodes));
        }
        self.pin(now, node, announcement.entity_id)?;

        let ttl = announcement.ttl_secs.min(self.config.max_ttl_secs);
        let expires_at = announcement
            .announced_at_unix
            .min(now)
            .saturating_add(u64::from(ttl));
        let forward = announcement.hop_count.saturating_add(1) < self.config.max_hops;
        let entry = IndexEntry {
            announcement,
            received_at: now,
            expires_at,
            via: via.filter(|&v| v != node),
        };
        self.mutations += 1;
        match self.entries.remove(&node) {
            None => {
                self.index_new(node, &entry);
                self.expiry.insert((expires_at, node));
                self.entries.insert(node, entry);
                Ok(Outcome::Inserted { forward })
            }
            Some(old) => {
                self.expiry.remove(&(old.expires_at, node));
                self.expiry.insert((expires_at, node));
                let changed = old.announcement.capabilities != entry.announcement.capabilities;
                if changed {
                    self.reindex(node, &old, &entry);
                }
                self.entries.insert(node, entry);
                Ok(Outcome::Replaced { forward, changed })
            }
        }
    }

    /// Records (or refreshes) `node`'s pin, forgetting the longest-unseen unindexed pin if
    /// the pin table is full.
    fn pin(&mut self, now: u64, node: NodeId, entity: EntityId) -> Result<(), IndexError> {
        if let Some(pin) = self.pins.get_mut(&node) {
            self.pin_order.remove(&(pin.last_seen, node));
            pin.last_seen = now;
            self.pin_order.insert((now, node));
            return Ok(());
        }
        if self.pins.len() >= self.config.max_pins {
            let victim = self
                .pin_order
                .iter()
                .find(|(_, id)| !self.entries.contains_key(id))
                .copied();
            // Unreachable while max_pins > max_nodes (validated); refusing is the safe way out.
            let Some((seen, old)) = victim else {
                return Err(IndexError::Full(self.config.max_nodes));
            };
            self.pin_order.remove(&(seen, old));
            self.pins.remove(&old);
        }
        self.pins.insert(
            node,
            Pin {
                entity,
                last_seen: now,
            },
        );
        self.pin_order.insert((now, node));
        Ok(())
    }

    fn index_new(&mut self, node: NodeId, entry: &IndexEntry) {
        let caps = &entry.announcement.capabilities;
        if let Err(at) = self.all.binary_search(&node) {
            self.all.insert(at, node);
            self.hw.insert(at, HardwareSummary::of(&caps.hardware));
        }
        if caps.hardware.gpu.is_some() {
            postings::insert(&mut self.gpu, node);
        }
        for tag in &caps.tags {
            postings::insert(self.tags.entry(tag.clone()).or_default(), node);
        }
    }

    /// Moves `node` between posting lists as its capabilities changed from `old` to `new`.
    fn reindex(&mut self, node: NodeId, old: &IndexEntry, new: &IndexEntry) {
        let (old, new) = (
            &old.announcement.capabilities,
            &new.announcement.capabilities,
        );
        if old.hardware != new.hardware
            && let Ok(at) = self.all.binary_search(&node)
        {
            self.hw[at] = HardwareSummary::of(&new.hardware);
        }
        match (old.hardware.gpu.is_some(), new.hardware.gpu.is_some()) {
            (false, true) => postings::insert(&mut self.gpu, node),
            (true, false) => postings::remove(&mut self.gpu, node),
            _ => {}
        }
        for gone in old.tags.difference(&new.tags) {
            self.untag(gone, node);
        }
        for added in new.tags.difference(&old.tags) {
            postings::insert(self.tags.entry(added.clone()).or_default(), node);
        }
    }

    fn untag(&mut self, tag: &str, node: NodeId) {
        if let Some(list) = self.tags.get_mut(tag) {
            postings::remove(list, node);
            if list.is_empty() {
                self.tags.remove(tag);
            }
        }
    }

    fn remove_entry(&mut self, node: NodeId) -> Option<IndexEntry> {
        let entry = self.entries.remove(&node)?;
        self.mutations += 1;
        self.expiry.remove(&(entry.expires_at, node));
        if let Ok(at) = self.all.binary_search(&node) {
            self.all.remove(at);
            self.hw.remove(at);
        }
        if entry.announcement.capabilities.hardware.gpu.is_some() {
            postings::remove(&mut self.gpu, node);
        }
        for tag in &entry.announcement.capabilities.tags {
            self.untag(tag, node);
        }
        Some(entry)
    }

    fn count_rejection(&mut self, error: &IndexError) {
        let r = &mut self.counters.rejected;
        let slot = match error {
            IndexError::Oversize { .. } => &mut r.oversize,
            IndexError::Malformed(_) => &mut r.malformed,
            IndexError::UnknownVersion(_) => &mut r.unknown_version,
            IndexError::NodeIdMismatch { .. } => &mut r.node_id_mismatch,
            IndexError::BadSignature => &mut r.bad_signature,
            IndexError::TooManyHops(_) => &mut r.too_many_hops,
            IndexError::Expired => &mut r.expired,
            IndexError::FromFuture { .. } => &mut r.from_future,
            IndexError::RebindRefused { .. } => &mut r.rebind_refused,
            IndexError::Full(_) => &mut r.full,
        };
        *slot += 1;
    }

    /// Test hook: pin `node` to `entity` as if it had been seen, to stand in for a node-id
    /// collision (which cannot be produced on demand).
    #[cfg(test)]
    pub(super) fn force_pin(&mut self, node: NodeId, entity: EntityId) {
        self.pins.insert(
            node,
            Pin {
                entity,
                last_seen: 0,
            },
        );
        self.pin_order.insert((0, node));
    }
}

/// The hardware fields filters test, packed for a dense array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct HardwareSummary {
    memory_gb: u32,
    cpu_cores: u32,
    gpu: Option<(GpuVendor, u32)>,
}

impl HardwareSummary {
    fn of(hw: &Hardware) -> Self {
        Self {
            memory_gb: hw.memory_gb,
            cpu_cores: hw.cpu_cores,
            gpu: hw.gpu.as_ref().map(|gpu| (gpu.vendor, gpu.vram_gb)),
        }
    }

    /// The non-tag part of [`CapabilityFilter::matches`].
    fn matches(&self, filter: &CapabilityFilter) -> bool {
        if self.memory_gb < filter.min_memory_gb || self.cpu_cores < filter.min_cpu_cores {
            return false;
        }
        let needs_gpu = filter.require_gpu || filter.gpu_vendor.is_some() || filter.min_vram_gb > 0;
        if !needs_gpu {
            return true;
        }
        self.gpu.is_some_and(|(vendor, vram)| {
            vram >= filter.min_vram_gb && filter.gpu_vendor.is_none_or(|v| v == vendor)
        })
    }
}
