//! [`DaemonRecord`]: everything about one daemon that must outlive an actor incarnation.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use netrun_messages::{CausalChain, CausalEvent, EntityId, OriginHash};
use netrun_runtime::daemon::{
    DaemonConfig, DaemonFactory, DaemonHealth, DaemonHost, DaemonSnapshot, DaemonStats, HostState,
    MeshDaemon, Output, Recovery,
};
use tokio::sync::broadcast;

use super::DaemonOptions;
use super::actor::HostStatus;

/// Where a daemon's outputs go besides the local broadcast: the seam for publishing them
/// on a channel. Called from the host actor for every output, in chain order; it must not
/// block (queue and count drops instead).
pub trait OutputSink: Send + Sync + 'static {
    /// Publishes one output of daemon `origin`.
    fn publish(&self, origin: OriginHash, output: &Arc<Output>);

    /// Daemon `origin` has stopped: nothing follows the outputs already published (the
    /// sink may release what it holds for the daemon once they are out).
    fn retire(&self, origin: OriginHash) {
        let _ = origin;
    }
}

/// One input to a daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DaemonInput {
    /// Raw bytes: the host actor links them into the node's input chain for this daemon
    /// (origin = the delivering node's origin hash, seq 1, 2, … across restarts).
    Bytes(Bytes),
    /// An event of some producer's causal chain, delivered as is.
    Event(CausalEvent),
}

/// The lifecycle of a record, as the node sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordState {
    /// Hosted (by a running incarnation, or waiting for the next one).
    Hosted,
    /// A stop was requested; deliveries are refused.
    Stopping,
}

/// The state of one daemon shared by the node and every incarnation of its host actor (see
/// the [module docs](super) for why it exists).
pub struct DaemonRecord {
    origin: OriginHash,
    entity: EntityId,
    kind: String,
    name: String,
    factory: DaemonFactory,
    config: DaemonConfig,
    options: DaemonOptions,
    cell: Mutex<Cell>,
    outputs: broadcast::Sender<Arc<Output>>,
    sink: Option<Arc<dyn OutputSink>>,
    incarnations: AtomicU32,
    queued: AtomicUsize,
    next_control: AtomicU64,
    published: AtomicU64,
    stopping: std::sync::atomic::AtomicBool,
}

/// What the record's mutex guards.
pub(super) struct Cell {
    pub(super) slot: Slot,
    /// Links byte inputs into a chain of the delivering node's.
    pub(super) input: InputChain,
}

/// The chain byte inputs are linked into (origin: the delivering node).
pub(super) struct InputChain(CausalChain);

/// The daemon's host, or what is needed to rebuild it.
pub(super) enum Slot {
    /// A host (running, or failed and waiting to be turned into a recovery).
    Live(Box<DaemonHost>),
    /// A recovery waiting for the next incarnation (a restore failed or is pending).
    Recovering(Box<Recovery>),
    /// Taken out while being converted (never observed outside one critical section).
    Empty,
}

impl DaemonRecord {
    /// A record for `host`, freshly built (or restored) by the node from `factory` and
    /// `config`. `input_origin` is the origin byte inputs are linked under (the node's).
    pub fn new(
        kind: String,
        factory: DaemonFactory,
        config: DaemonConfig,
        options: DaemonOptions,
        host: DaemonHost,
        input_origin: OriginHash,
        sink: Option<Arc<dyn OutputSink>>,
    ) -> Arc<Self> {
        let (outputs, _) = broadcast::channel(options.output_capacity.max(1));
        Arc::new(Self {
            origin: host.origin(),
            entity: host.entity_id(),
            name: host.name().to_owned(),
            next_control: AtomicU64::new(host.last_control_id() + 1),
            kind,
            factory,
            config,
            options,
            cell: Mutex::new(Cell {
                slot: Slot::Live(Box::new(host)),
                input: InputChain(CausalChain::new(input_origin)),
            }),
            outputs,
            sink,
            incarnations: AtomicU32::new(0),
            queued: AtomicUsize::new(0),
            published: AtomicU64::new(0),
            stopping: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The daemon's origin hash (stable across restarts and moves).
    pub fn origin(&self) -> OriginHash {
        self.origin
    }

    /// The daemon's public key.
    pub fn entity(&self) -> EntityId {
        self.entity
    }

    /// The kind it was spawned as.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The daemon's own name (`MeshDaemon::name`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How it is hosted.
    pub fn options(&self) -> &DaemonOptions {
        &self.options
    }

    /// A new subscription to its outputs (from now on; see [`DEFAULT_OUTPUT_CAPACITY`](super::DEFAULT_OUTPUT_CAPACITY)
    /// for what a slow subscriber loses).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Output>> {
        self.outputs.subscribe()
    }

    /// Incarnations started so far (restarts = incarnations − 1).
    pub fn incarnations(&self) -> u32 {
        self.incarnations.load(Ordering::Acquire)
    }

    /// Outputs published so far.
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }

    /// Whether a stop was requested.
    pub fn state(&self) -> RecordState {
        if self.stopping.load(Ordering::Acquire) {
            RecordState::Stopping
        } else {
            RecordState::Hosted
        }
    }

    /// Marks the daemon as stopping; returns whether it already was.
    pub fn begin_stop(&self) -> bool {
        self.stopping.swap(true, Ordering::AcqRel)
    }

    /// Reserves room for `n` events in the actor's mailbox; `false` if the queue bound
    /// would be exceeded. Each reservation is released when the actor handles the message
    /// (or by [`release`](Self::release) when the send fails).
    pub fn try_reserve(&self, n: usize) -> bool {
        let cap = self.options.queue_capacity;
        self.queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                q.checked_add(n).filter(|total| *total <= cap)
            })
            .is_ok()
    }

    /// Releases `n` reserved events (saturating: a new incarnation resets the count, so a
    /// late release of a message lost with the old mailbox must not underflow).
    pub fn release(&self, n: usize) {
        let _ = self
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                Some(q.saturating_sub(n))
            });
    }

    /// The next control id (ids increase per daemon; the host drops repeats).
    pub fn next_control_id(&self) -> u64 {
        self.next_control.fetch_add(1, Ordering::AcqRel)
    }

    /// The last snapshot the host holds (or the recovery's), for a stopped or restarting
    /// daemon.
    pub fn last_snapshot(&self) -> Option<DaemonSnapshot> {
        match &self.lock().slot {
            Slot::Live(host) => Some(host.last_snapshot().clone()),
            Slot::Recovering(recovery) => Some(recovery.snapshot.clone()),
            Slot::Empty => None,
        }
    }

    /// The daemon's status read from the record itself, for when no incarnation runs
    /// (restarting, backing off, gated). Calls the daemon's `health`/`saturation` only if
    /// the host is live, under `catch_unwind` like every host call.
    pub fn peek_status(&self) -> HostStatus {
        let mut cell = self.lock();
        match &mut cell.slot {
            Slot::Live(host) => HostStatus::of(host),
            Slot::Recovering(recovery) => HostStatus {
                state: HostState::Failed,
                health: DaemonHealth::Unhealthy {
                    reason: recovery
                        .stats
                        .last_failure
                        .as_ref()
                        .map_or_else(|| "restarting".to_owned(), ToString::to_string),
                },
                saturation: 1.0,
                head_seq: recovery.produced.seq,
                input_seq: recovery.accepted_through,
                log_len: recovery.log.len(),
                stats: recovery.stats.clone(),
            },
            Slot::Empty => HostStatus {
                state: HostState::Failed,
                health: DaemonHealth::Unhealthy {
                    reason: "no host".to_owned(),
                },
                saturation: 1.0,
                head_seq: 0,
                input_seq: 0,
                log_len: 0,
                stats: DaemonStats::default(),
            },
        }
    }

    /// Counts a new incarnation and resets the mailbox count (messages queued to the old
    /// incarnation died with it). Returns the incarnation number (1 for the first).
    pub(super) fn begin_incarnation(&self) -> u32 {
        self.queued.store(0, Ordering::Release);
        self.incarnations.fetch_add(1, Ordering::AcqRel) + 1
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Cell> {
        // The host catches every panic of user code, so a poisoned lock means a bug in the
        // host itself while it was between consistent states only in its own call; the
        // slot is still one of its variants, so keep going.
        self.cell
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Builds a fresh daemon from the factory; a panicking factory is an error.
    pub(super) fn build(&self) -> Result<Box<dyn MeshDaemon>, String> {
        match catch_unwind(AssertUnwindSafe(|| (self.factory)(&self.config))) {
            Ok(Ok(daemon)) => Ok(daemon),
            Ok(Err(error)) => Err(format!("factory failed: {error}")),
            Err(_) => Err("factory panicked".to_owned()),
        }
    }

    /// Hands outputs to the sink and the broadcast, in order.
    pub(super) fn publish(&self, outputs: Vec<Output>) {
        for output in outputs {
            let output = Arc::new(output);
            if let Some(sink) = &self.sink {
                sink.publish(self.origin, &output);
            }
            // No subscriber is not an error: outputs are also in the sink, if any.
            let _ = self.outputs.send(output);
            self.published.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl InputChain {
    /// The event for `input`: events pass through, bytes are linked into the input chain.
    /// `None` only after `u64::MAX` byte inputs.
    pub(super) fn event(&mut self, input: DaemonInput) -> Option<CausalEvent> {
        match input {
            DaemonInput::Event(event) => Some(event),
            DaemonInput::Bytes(bytes) => self.0.append(bytes).ok(),
        }
    }
}

impl std::fmt::Debug for DaemonRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DaemonRecord")
            .field("origin", &self.origin)
            .field("kind", &self.kind)
            .field("incarnations", &self.incarnations())
            .finish_non_exhaustive()
    }
}

impl From<Bytes> for DaemonInput {
    fn from(bytes: Bytes) -> Self {
        Self::Bytes(bytes)
    }
}

impl From<Vec<u8>> for DaemonInput {
    fn from(bytes: Vec<u8>) -> Self {
        Self::Bytes(Bytes::from(bytes))
    }
}

impl From<&'static [u8]> for DaemonInput {
    fn from(bytes: &'static [u8]) -> Self {
        Self::Bytes(Bytes::from_static(bytes))
    }
}

impl From<&'static str> for DaemonInput {
    fn from(text: &'static str) -> Self {
        Self::Bytes(Bytes::from_static(text.as_bytes()))
    }
}

impl From<String> for DaemonInput {
    fn from(text: String) -> Self {
        Self::Bytes(Bytes::from(text))
    }
}

impl From<CausalEvent> for DaemonInput {
    fn from(event: CausalEvent) -> Self {
        Self::Event(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netrun_messages::Identity;
    use netrun_runtime::daemon::{DaemonError, HostConfig, factory};

    struct Echo;

    impl MeshDaemon for Echo {
        fn name(&self) -> &str {
            "echo"
        }

        fn process(&mut self, event: &CausalEvent) -> Result<Vec<Bytes>, DaemonError> {
            Ok(vec![event.payload.clone()])
        }
    }

    fn record(queue_capacity: usize) -> Arc<DaemonRecord> {
        let host = DaemonHost::new(
            Box::new(Echo),
            Identity::from_seed([3; 32]),
            HostConfig::default(),
        )
        .expect("host");
        let options = DaemonOptions {
            queue_capacity,
            ..DaemonOptions::default()
        };
        DaemonRecord::new(
            "echo".into(),
            factory(|_| Ok(Box::new(Echo))),
            DaemonConfig::empty(),
            options,
            host,
            Identity::from_seed([4; 32]).origin_hash(),
            None,
        )
    }

    #[test]
    fn the_queue_bound_holds_and_releases_saturate() {
        let r = record(10);
        assert!(r.try_reserve(6));
        assert!(!r.try_reserve(5), "6 + 5 exceeds 10");
        assert!(r.try_reserve(4));
        assert!(!r.try_reserve(1));
        r.release(3);
        assert!(r.try_reserve(3));
        // A new incarnation forgets what died with the old mailbox; late releases of it
        // must not wrap the count.
        assert_eq!(r.begin_incarnation(), 1);
        r.release(100);
        assert!(r.try_reserve(10));
        assert!(!r.try_reserve(1));
    }

    #[test]
    fn byte_inputs_are_linked_into_one_chain_and_events_pass_through() {
        let r = record(10);
        let mut cell = r.lock();
        let first = cell.input.event(DaemonInput::from("a")).expect("linked");
        let second = cell.input.event(DaemonInput::from("b")).expect("linked");
        assert_eq!((first.link.seq, second.link.seq), (1, 2));
        assert_eq!(second.link.parent_hash, first.link.hash());
        assert_eq!(
            first.link.origin,
            Identity::from_seed([4; 32]).origin_hash()
        );
        let foreign = CausalChain::new(OriginHash(9)).append(Bytes::from_static(b"x"));
        let foreign = foreign.expect("append");
        assert_eq!(
            cell.input.event(DaemonInput::Event(foreign.clone())),
            Some(foreign)
        );
    }

    #[test]
    fn controls_ids_continue_from_the_host() {
        let r = record(1);
        assert_eq!(r.next_control_id(), 1);
        assert_eq!(r.next_control_id(), 2);
        assert_eq!(r.origin(), Identity::from_seed([3; 32]).origin_hash());
        assert!(r.last_snapshot().is_some_and(|s| s.head.seq == 0));
        assert!(!r.begin_stop());
        assert!(r.begin_stop());
        assert_eq!(r.state(), RecordState::Stopping);
    }
}
