//! [`DiscoveryHandle`]: the one shared entry point of the discovery subsystem.
//!
//! Backends report through it, the node asks through it. It holds no discovery state of
//! its own: it points at the *current* coordinator and DHT actors (each incarnation
//! attaches itself in `pre_start`), bounds the reports queued for the coordinator, and
//! keeps the status board the backends publish to, so `netrun discovery` can show a
//! crashed backend as not running without asking it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use netrun_messages::NodeId;
use ractor::rpc::CallResult;
use ractor::{ActorCell, ActorRef, ActorStatus};

use super::coordinator::{CoordinatorMsg, CoordinatorStats};
use super::kademlia::KademliaMsg;
use super::{BackendStatus, DiscoveryEvent, FoundPeer, PeerContact};

/// Reports queued for the coordinator at most; further ones are dropped and counted
/// (policy: drop newest). A burst of a few full peer lists and DHT answers fits easily.
pub const REPORT_QUEUE: usize = 4096;

/// Longest a question to the coordinator waits.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);

/// Most backends on the status board (there are six kinds; the bound keeps a misuse from
/// growing it).
const MAX_BACKENDS: usize = 32;

/// What `netrun discovery` shows: every backend and the coordinator's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryStatus {
    /// One row per backend, by name.
    pub backends: Vec<BackendStatus>,
    /// The coordinator's counters; `None` while it is not running.
    pub coordinator: Option<CoordinatorStats>,
}

/// The discovery subsystem's shared handle. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct DiscoveryHandle {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    coordinator: ArcSwapOption<ActorRef<CoordinatorMsg>>,
    dht: ArcSwapOption<ActorRef<KademliaMsg>>,
    queued: AtomicUsize,
    dropped: AtomicU64,
    board: Mutex<BTreeMap<String, Row>>,
}

#[derive(Debug)]
struct Row {
    status: BackendStatus,
    cell: ActorCell,
}

impl DiscoveryHandle {
    /// A handle with nothing attached yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Hands `event` to the coordinator without waiting. Returns `false` (and counts it)
    /// when it was dropped: no coordinator is running or [`REPORT_QUEUE`] reports wait.
    pub fn report(&self, event: DiscoveryEvent) -> bool {
        let shared = &self.shared;
        let Some(coordinator) = shared.coordinator.load_full() else {
            shared.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        };
        if shared.queued.fetch_add(1, Ordering::AcqRel) >= REPORT_QUEUE {
            shared.queued.fetch_sub(1, Ordering::AcqRel);
            shared.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        if coordinator
            .send_message(CoordinatorMsg::Report(event))
            .is_err()
        {
            shared.queued.fetch_sub(1, Ordering::AcqRel);
            shared.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Reports dropped since the node started.
    pub fn dropped_reports(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Every peer the coordinator knows, with how it was found; empty while it is not
    /// running.
    pub async fn peers(&self) -> Vec<FoundPeer> {
        let Some(coordinator) = self.shared.coordinator.load_full() else {
            return Vec::new();
        };
        match coordinator
            .call(CoordinatorMsg::Peers, Some(ASK_TIMEOUT))
            .await
        {
            Ok(CallResult::Success(peers)) => peers,
            _ => Vec::new(),
        }
    }

    /// The backends' status rows and the coordinator's counters.
    pub async fn status(&self) -> DiscoveryStatus {
        let coordinator = match self.shared.coordinator.load_full() {
            Some(c) => match c.call(CoordinatorMsg::Stats, Some(ASK_TIMEOUT)).await {
                Ok(CallResult::Success(mut stats)) => {
                    stats.dropped_reports = self.dropped_reports();
                    Some(stats)
                }
                _ => None,
            },
            None => None,
        };
        DiscoveryStatus {
            backends: self.backends(),
            coordinator,
        }
    }

    /// The status board: what each backend last published, with `running` false for a
    /// backend whose actor is not running (crashed and not yet restarted, or stopped).
    pub fn backends(&self) -> Vec<BackendStatus> {
        self.board()
            .values()
            .map(|row| {
                let mut status = row.status.clone();
                status.running &= matches!(row.cell.get_status(), ActorStatus::Running);
                status
            })
            .collect()
    }

    /// Resolves `node` to a contact through the DHT (its published contact record), or from
    /// the session when there is one. `None` when it cannot be found within `timeout` or no
    /// DHT runs.
    pub async fn resolve(&self, node: NodeId, timeout: Duration) -> Option<PeerContact> {
        let dht = self.shared.dht.load_full()?;
        let ask = |reply| KademliaMsg::Resolve { node, reply };
        match dht.call(ask, Some(timeout)).await {
            Ok(CallResult::Success(contact)) => contact,
            _ => None,
        }
    }

    /// Publishes a backend's status row (the backend actor calls this as its state changes;
    /// `cell` is the incarnation, so a crash shows as not running).
    pub fn publish_status(&self, cell: &ActorCell, status: BackendStatus) {
        let mut board = self.board();
        if board.len() >= MAX_BACKENDS && !board.contains_key(&status.name) {
            return;
        }
        board.insert(
            status.name.clone(),
            Row {
                status,
                cell: cell.clone(),
            },
        );
    }

    pub(crate) fn attach_coordinator(&self, coordinator: Option<ActorRef<CoordinatorMsg>>) {
        // Reports queued for a previous incarnation died with its mailbox.
        self.shared.queued.store(0, Ordering::Release);
        self.shared.coordinator.store(coordinator.map(Arc::new));
    }

    /// Detaches `coordinator` if it is still the attached one (a new incarnation may
    /// already have attached itself).
    pub(crate) fn detach_coordinator(&self, coordinator: &ActorRef<CoordinatorMsg>) {
        let current = self.shared.coordinator.load();
        if current
            .as_ref()
            .is_some_and(|c| c.get_id() == coordinator.get_id())
        {
            self.shared.coordinator.store(None);
        }
    }

    /// The coordinator took one report off its queue.
    pub(crate) fn report_taken(&self) {
        let _ = self
            .shared
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| q.checked_sub(1));
    }

    pub(crate) fn attach_dht(&self, dht: &ActorRef<KademliaMsg>) {
        self.shared.dht.store(Some(Arc::new(dht.clone())));
    }

    pub(crate) fn detach_dht(&self, dht: &ActorRef<KademliaMsg>) {
        let current = self.shared.dht.load();
        if current.as_ref().is_some_and(|c| c.get_id() == dht.get_id()) {
            self.shared.dht.store(None);
        }
    }

    fn board(&self) -> MutexGuard<'_, BTreeMap<String, Row>> {
        // A poisoned board only means a panic elsewhere while inserting a row; every row is
        // whole, so keep using it.
        self.shared.board.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::{DiscoveredPeer, DiscoverySource};
    use netrun_messages::Identity;

    #[test]
    fn reports_without_a_coordinator_are_dropped_and_counted() {
        let handle = DiscoveryHandle::new();
        let entity = Identity::from_seed([3; 32]).entity_id();
        let event = DiscoveryEvent::Found(DiscoveredPeer {
            node: entity.node_id(),
            entity,
            addrs: Vec::new(),
            source: DiscoverySource::Seed,
        });
        assert!(!handle.report(event.clone()));
        assert!(!handle.report(event));
        assert_eq!(handle.dropped_reports(), 2);
        assert!(handle.backends().is_empty());
    }
}
