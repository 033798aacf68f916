//! `CapabilityFold`: the node's capability index and its own announcements.
//!
//! ```text
//!  Announcer (when to announce) ── Tick ──▶ signed announcement ──▶ own index
//!                                                     └──────────▶ every session peer
//!  PeerEvent::Up(peer) ──▶ own announcement + what the index holds (hop + 1) ──▶ peer
//!  Wire::serve(CAPABILITY) ──▶ bounded queue ──▶ pump (one batch in flight) ──▶ actor
//!      CapabilityIndex::handle_announcement(now, bytes, via)
//!          verify → pin → store, rejections counted ── forward? ──▶ other peers (hop + 1)
//!  Tick: index.handle_timeout(now) drops entries past their TTL
//!  queries: CapabilityHandle::{find, find_service, get} read the index under a read
//!           lock, without a message to the actor
//! ```
//!
//! The [`CapabilityHandle`] holds what outlives an incarnation of the actor: the index
//! (with its key pins, so a restart cannot be used to rebind a node id), the announcer
//! (with its version counter and the current capability set) and the last signed
//! announcement. The actor is their only writer; readers take the index's read lock for
//! the length of one query, which walks posting lists and never scans the entries.
//!
//! An announcement from peer `P` whose claimed node id is `P` is folded as direct
//! (`via = None`); any other is a forwarded copy (`via = Some(P)`), and only the signer's
//! own id is ever pinned. Forwarded copies carry `hop_count + 1` (the byte after the
//! signature, outside what is signed) and go to every session peer except the one it came
//! from and its origin.

mod actor;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use arc_swap::{ArcSwapOption, Guard};
use bytes::Bytes;
use netrun_messages::{CapabilityFilter, CapabilitySet, Identity, NodeId};
use netrun_runtime::capability::{
    Announcer, AnnouncerConfig, AnnouncerError, CapabilityCounters, CapabilityIndex, IndexConfig,
    IndexConfigError, IndexEntry,
};
use ractor::ActorRef;
use thiserror::Error;

pub use actor::CapabilityActor;

use crate::events::PeerEvent;
use crate::pump::Credit;
use crate::wire::{Inbound, Wire};

/// How the node announces itself and what its index accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapabilityConfig {
    /// Announcement cadence (minimum interval, re-announce interval, TTL).
    pub announcer: AnnouncerConfig,
    /// Index limits.
    pub index: IndexConfig,
    /// Most stored announcements pushed to a peer whose session just came up (so a late
    /// joiner learns the mesh without waiting for a re-announce round).
    pub sync_on_up: usize,
}

impl Default for CapabilityConfig {
    fn default() -> Self {
        Self {
            announcer: AnnouncerConfig::default(),
            index: IndexConfig::default(),
            sync_on_up: DEFAULT_SYNC_ON_UP,
        }
    }
}

impl CapabilityConfig {
    /// The defaults, with announcement timing `min_interval`, `reannounce` and `ttl`
    /// (seconds).
    pub fn with_timing(min_interval: u64, reannounce: u64, ttl: u32) -> Self {
        Self {
            announcer: AnnouncerConfig {
                min_interval_secs: min_interval,
                reannounce_interval_secs: reannounce,
                ttl_secs: ttl,
            },
            ..Self::default()
        }
    }
}

/// Default of [`CapabilityConfig::sync_on_up`]: enough for meshes of a thousand nodes,
/// small enough that a new session costs at most a few hundred KiB of announcements.
pub const DEFAULT_SYNC_ON_UP: usize = 1024;

/// Why the capability fold could not be set up.
#[derive(Debug, Error)]
pub enum CapabilityConfigError {
    /// The announcement cadence or the initial capability set is invalid.
    #[error("capabilities: {0}")]
    Announcer(#[from] AnnouncerError),
    /// The index limits are invalid.
    #[error("capability index: {0}")]
    Index(#[from] IndexConfigError),
}

/// Startup inputs of the capability fold actor.
#[derive(Debug, Clone)]
pub struct CapabilityArgs {
    /// The shared data path.
    pub wire: Arc<Wire>,
    /// The state the actor drives (shared with readers and later incarnations).
    pub handle: CapabilityHandle,
}

/// Counters of the capability fold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CapabilityStatus {
    /// Nodes in the index (this one included once it has announced).
    pub nodes: usize,
    /// Version of this node's last announcement.
    pub version: Option<u64>,
    /// Index counters: accepted, replaced, duplicates, stale, expired, rejections by reason.
    pub index: CapabilityCounters,
    /// Announcements this node signed.
    pub announced: u64,
    /// Announcement envelopes sent (own, forwarded and synced copies).
    pub sent: u64,
    /// Copies forwarded for other nodes.
    pub forwarded: u64,
    /// Copies pushed to peers whose session came up.
    pub synced: u64,
    /// Announcement envelopes received.
    pub received: u64,
    /// Sends that failed (no session, socket error).
    pub send_errors: u64,
}

/// The capability fold's shared state: the index, the local announcer and counters.
///
/// Cloning shares it. Queries ([`find`](Self::find), [`find_service`](Self::find_service),
/// [`get`](Self::get)) read the index directly; changes to the local set
/// ([`set_capabilities`](Self::set_capabilities), [`add_service`](Self::add_service)) are
/// recorded at once and announced by the actor, rate limited by the announcer.
#[derive(Debug, Clone)]
pub struct CapabilityHandle {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    local: NodeId,
    sync_on_up: usize,
    index: RwLock<CapabilityIndex>,
    announcer: Mutex<Announcer>,
    /// The last announcement this node signed, encoded (hop count 0).
    own: ArcSwapOption<Bytes>,
    actor: ArcSwapOption<ActorRef<CapabilityMsg>>,
    counters: Counters,
}

#[derive(Debug, Default)]
struct Counters {
    announced: AtomicU64,
    sent: AtomicU64,
    forwarded: AtomicU64,
    synced: AtomicU64,
    received: AtomicU64,
    send_errors: AtomicU64,
}

impl CapabilityHandle {
    /// The fold of the node `identity`, starting with `capabilities`.
    pub fn new(
        identity: Identity,
        config: CapabilityConfig,
        capabilities: CapabilitySet,
    ) -> Result<Self, CapabilityConfigError> {
        let local = identity.node_id();
        let index = CapabilityIndex::new(local, config.index)?;
        let announcer = Announcer::new(identity, config.announcer, capabilities)?;
        Ok(Self {
            shared: Arc::new(Shared {
                local,
                sync_on_up: config.sync_on_up,
                index: RwLock::new(index),
                announcer: Mutex::new(announcer),
                own: ArcSwapOption::empty(),
                actor: ArcSwapOption::empty(),
                counters: Counters::default(),
            }),
        })
    }

    /// The local node.
    pub fn local(&self) -> NodeId {
        self.shared.local
    }

    /// The local capability set (as last set; announced within the minimum interval).
    pub fn capabilities(&self) -> CapabilitySet {
        self.announcer().capabilities().clone()
    }

    /// Replaces the application's part of the local capability set (the `nrpc:` tags of
    /// served services and the runtime's metadata stay). Returns whether it changed; a
    /// change is announced as soon as the minimum interval since the previous announcement
    /// allows.
    pub fn set_capabilities(&self, capabilities: CapabilitySet) -> Result<bool, AnnouncerError> {
        let changed = self.announcer().set_capabilities(capabilities)?;
        self.changed(changed);
        Ok(changed)
    }

    /// Sets (`None`: removes) a metadata entry the runtime maintains in the local set (it
    /// survives [`set_capabilities`](Self::set_capabilities)).
    pub fn set_metadata(&self, key: &str, value: Option<String>) -> Result<bool, AnnouncerError> {
        let changed = self.announcer().set_metadata(key, value)?;
        self.changed(changed);
        Ok(changed)
    }

    /// Adds the tag `nrpc:<service>` to the local set (see [`set_capabilities`](Self::set_capabilities)).
    pub fn add_service(&self, service: &str) -> Result<bool, AnnouncerError> {
        let changed = self.announcer().add_service(service)?;
        self.changed(changed);
        Ok(changed)
    }

    /// Removes the tag `nrpc:<service>` from the local set.
    pub fn remove_service(&self, service: &str) -> Result<bool, AnnouncerError> {
        let changed = self.announcer().remove_service(service)?;
        self.changed(changed);
        Ok(changed)
    }

    /// The indexed nodes meeting `filter`, ascending (this node included once announced).
    pub fn find(&self, filter: &CapabilityFilter) -> Vec<NodeId> {
        self.index().find(filter)
    }

    /// The indexed nodes serving nRPC `service`, ascending.
    pub fn find_service(&self, service: &str) -> Vec<NodeId> {
        self.index().find_service(service)
    }

    /// A node's entry: its verified announcement, when it arrived and expires, and the
    /// peer it was forwarded by.
    pub fn get(&self, node: NodeId) -> Option<IndexEntry> {
        self.index().get(node).cloned()
    }

    /// A node's announced capabilities.
    pub fn capabilities_of(&self, node: NodeId) -> Option<CapabilitySet> {
        self.index()
            .get(node)
            .map(|entry| entry.announcement.capabilities.clone())
    }

    /// Runs `f` on the index under its read lock (for several queries at one version).
    pub fn with_index<R>(&self, f: impl FnOnce(&CapabilityIndex) -> R) -> R {
        f(&self.index())
    }

    /// The counters.
    pub fn status(&self) -> CapabilityStatus {
        let c = &self.shared.counters;
        let (nodes, index) = {
            let index = self.index();
            (index.len(), *index.counters())
        };
        CapabilityStatus {
            nodes,
            version: self.announcer().last_version(),
            index,
            announced: c.announced.load(Ordering::Relaxed),
            sent: c.sent.load(Ordering::Relaxed),
            forwarded: c.forwarded.load(Ordering::Relaxed),
            synced: c.synced.load(Ordering::Relaxed),
            received: c.received.load(Ordering::Relaxed),
            send_errors: c.send_errors.load(Ordering::Relaxed),
        }
    }

    fn changed(&self, changed: bool) {
        if changed {
            if let Some(actor) = self.actor().as_ref() {
                let _ = actor.send_message(CapabilityMsg::Changed);
            }
        }
    }

    fn actor(&self) -> Guard<Option<Arc<ActorRef<CapabilityMsg>>>> {
        self.shared.actor.load()
    }

    // A poisoned lock means a panic while holding it; the index and announcer are left
    // consistent by every method (no method panics half way), so keep using them.
    fn index(&self) -> RwLockReadGuard<'_, CapabilityIndex> {
        self.shared
            .index
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn index_mut(&self) -> RwLockWriteGuard<'_, CapabilityIndex> {
        self.shared
            .index
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn announcer(&self) -> MutexGuard<'_, Announcer> {
        self.shared
            .announcer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Messages the capability fold actor handles.
#[derive(Debug)]
pub enum CapabilityMsg {
    /// Announcement envelopes from the bounded queue; the credit is held until they are
    /// handled, so the queue's bound holds.
    Inbound(Vec<Inbound>, Credit),
    /// A session event.
    Peer(PeerEvent),
    /// The timer (announce, expire); a tick with a stale token is ignored.
    Tick(u64),
    /// The local capability set changed: re-arm the timer for the announcement.
    Changed,
}
