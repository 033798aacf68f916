//! Daemons: write a stateful event processor in Rust, run it on the mesh.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use netrun::daemons::{CausalEvent, DaemonConfig, DaemonError, MeshDaemon, factory};
//! use netrun::{Bytes, Identity, Node};
//!
//! struct Counter(u64);
//! impl MeshDaemon for Counter {
//!     fn name(&self) -> &str { "counter" }
//!     fn process(&mut self, _: &CausalEvent) -> Result<Vec<Bytes>, DaemonError> {
//!         self.0 += 1;
//!         Ok(vec![Bytes::from(self.0.to_le_bytes().to_vec())])
//!     }
//! }
//!
//! let node = Node::builder().start().await?;
//! node.register_daemon_kind("counter", factory(|_| Ok(Box::new(Counter(0)))))?;
//! let counter = node.spawn_daemon("counter", Identity::generate(), DaemonConfig::empty()).await?;
//! let mut outputs = counter.outputs();
//! counter.deliver(Bytes::from_static(b"tick")).await?;
//! let batch = outputs.recv().await?; // sealed within 2 ms (batch signing)
//! assert_eq!(batch.events().len(), 1);
//! # Ok(()) }
//! ```
//!
//! - **Kinds**: [`Node::register_daemon_kind`] names a [`DaemonFactory`]; every spawn,
//!   local, placed or a restart, builds the daemon from it.
//! - **Identity**: a daemon's identity is its own ed25519 key ([`Identity`]); its
//!   [`OriginHash`] and entity id never change when it restarts or moves.
//! - **Hosting**: one `DaemonHost{origin}` actor per daemon in the node's daemons subtree
//!   (see `netrun_actors::daemon`). A panic or error in `process` fails the actor, not the
//!   node; the supervisor restarts it after its backoff (doubling to 60 s) from the last
//!   snapshot plus a replay of the events since, unless it is the daemon's sixth crash
//!   within 60 s (crash loop: restarts are gated for 60 s, visible in [`Node::daemons`]).
//! - **Outputs**: every output is linked into the daemon's causal chain and signed (one
//!   signed head per batch by default); [`DaemonHandle::outputs`] is a bounded local
//!   broadcast, and an [`OutputSink`] set with [`Node::set_daemon_output_sink`] receives
//!   them too (the seam for channel publishing). Check them with a [`ChainVerifier`].
//! - **Placement**: [`Node::spawn_daemon_placed`] ranks candidate nodes by the daemon's
//!   `requirements()`, RTT, load and node id, and spawns it there over the `DAEMON`
//!   control subprotocol.
//!
//! Semantics and guarantees: `docs/daemons.md`.

mod channels;
mod placement;
mod registry;
mod wiring;

use std::sync::{Arc, Weak};
use std::time::Duration;

use netrun_actors::daemon::{DaemonMsg, DaemonRecord, HostStatus, RecordState};
pub use netrun_messages::daemon::SpawnRefusal;
use netrun_supervisor::{ChildRef, ChildState, SendError, SupervisorError};
use ractor::RpcReplyPort;
use thiserror::Error;
use tokio::sync::broadcast;

pub(crate) use channels::start as start_output_channels;
pub use channels::{OUTPUT_QUEUE, output_channel};
pub use netrun_actors::daemon::{
    Answer, DEFAULT_OUTPUT_CAPACITY, DEFAULT_QUEUE_CAPACITY, DEFAULT_SNAPSHOT_INTERVAL,
    DEFAULT_STOP_GRACE, DaemonInput, DaemonOptions, DeliveredMany, MAX_DAEMONS, OutputSink,
    RemoteError, TRACE_EVERY, TRACE_FIRST_EVENTS,
};
pub use netrun_messages::daemon::{MAX_WIRING, StopResult};
pub use netrun_messages::{
    CapabilityFilter, CapabilitySet, CausalChain, CausalEvent, CausalLink, ChainError, ChainHead,
    GpuInfo, GpuVendor, Hardware, SignedEvent,
};
pub use netrun_runtime::daemon::{
    Candidate, ChainSigning, ChainVerifier, ConfigError, ControlError, ControlOutcome,
    DaemonConfig, DaemonControl, DaemonError, DaemonFactories, DaemonFactory, DaemonHealth,
    DaemonSnapshot, DaemonStats, DeliverError, Delivered, ErrorPolicy, FactoryError, Failure,
    FailureReason, FailureStage, HostConfig, HostError, HostState, MeshDaemon, Output,
    RestoreError, SignedBatch, SnapshotRefusal, VerifyError, factory, place, rank,
};
pub use placement::{
    CandidatesFuture, IndexCandidates, PlacedDaemon, PlacementCandidate, PlacementCandidates,
    QUERY_TIMEOUT, REMOTE_SPAWN_TIMEOUT, REMOTE_STOP_TIMEOUT, SessionCandidates,
};

pub(crate) use registry::Daemons;
pub use registry::{LOAD_METADATA_KEY, RemoteSpawns};
pub use wiring::{ChannelInput, DaemonReply, DaemonWiring, ServedService};

use crate::Node;
use crate::{EntityId, Identity, NodeId, OriginHash};

/// Longest a delivery, snapshot or control request waits for the daemon's actor. A daemon
/// that takes longer to process one event is stuck; the request may still complete.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest [`Node::daemons`] waits for one running daemon's status.
const STATUS_TIMEOUT: Duration = Duration::from_secs(1);

/// A daemon hosted on this node. Cheap to clone; every clone refers to the same daemon
/// until it is stopped (then operations fail with [`DaemonCallError::Stale`]).
#[derive(Clone)]
pub struct DaemonHandle {
    record: Arc<DaemonRecord>,
    child: ChildRef<DaemonMsg>,
    node: NodeId,
    daemons: Weak<Daemons>,
}

/// Why a daemon could not be registered or spawned.
#[derive(Debug, Error)]
pub enum DaemonSpawnError {
    /// No factory is registered under this kind (here, or on the chosen remote node).
    #[error("daemon kind `{0}` is not registered")]
    FactoryNotFound(String),
    /// The kind is already registered; registrations are never replaced.
    #[error("daemon kind `{0}` is already registered")]
    FactoryAlreadyRegistered(String),
    /// The daemon runtime is not available (its supervisor is restarting).
    #[error("the daemon runtime is not ready")]
    NotReady,
    /// The node is shutting down.
    #[error("the node is shutting down")]
    ShuttingDown,
    /// A daemon with this identity already runs here.
    #[error("daemon {0} is already running")]
    AlreadyRunning(OriginHash),
    /// The node hosts [`MAX_DAEMONS`] daemons.
    #[error("this node hosts its maximum of {MAX_DAEMONS} daemons")]
    TooMany,
    /// The kind name is invalid, the registry is full, or the factory failed or panicked.
    #[error(transparent)]
    Factory(FactoryError),
    /// The host configuration is out of range.
    #[error("host config: {0}")]
    Config(ConfigError),
    /// The daemon failed while its host was being set up.
    #[error(transparent)]
    Host(#[from] HostError),
    /// The snapshot could not be restored.
    #[error("restore: {0}")]
    Restore(RestoreError),
    /// The snapshot belongs to another identity than the one given.
    #[error("the snapshot belongs to another daemon identity")]
    WrongIdentity,
    /// No candidate node matches the daemon's requirements.
    #[error("no node matches the daemon's requirements")]
    NoCandidate,
    /// A remote spawn failed.
    #[error(transparent)]
    Remote(RemoteError),
    /// The daemon ran but its wiring could not be set up (a service already served here,
    /// a publisher refused a subscription); it was stopped again.
    #[error("daemon wiring: {0}")]
    Wiring(String),
    /// The daemons supervisor refused the child.
    #[error("supervisor: {0}")]
    Supervisor(SupervisorError),
}

/// Why an operation on a hosted daemon failed.
#[derive(Debug, Error)]
pub enum DaemonCallError {
    /// No daemon with this origin is hosted here.
    #[error("no daemon {0} on this node")]
    NotFound(OriginHash),
    /// The handle's daemon was stopped (or stopped and spawned again).
    #[error("stale daemon handle")]
    Stale,
    /// The daemon is stopping, or the node is shutting down.
    #[error("the daemon is shutting down")]
    ShuttingDown,
    /// No incarnation is running (restarting, backing off or crash-loop gated); the input
    /// was not accepted.
    #[error("the daemon is not running")]
    NotRunning,
    /// Too many inputs are queued for the daemon; the input was not accepted.
    #[error("the daemon's input queue is full")]
    Full,
    /// The daemon did not answer in time; the request may still complete.
    #[error("the daemon did not answer in time")]
    Timeout,
    /// The host did not process the input (see [`DeliverError`]).
    #[error(transparent)]
    Deliver(DeliverError),
    /// The host did not take the snapshot.
    #[error(transparent)]
    Snapshot(SnapshotRefusal),
    /// The host did not deliver the control.
    #[error(transparent)]
    Control(ControlError),
    /// The operation needs a subsystem that is not running on this node yet (channel
    /// subscriptions need the channel actor).
    #[error("not ready: {0}")]
    NotReady(&'static str),
    /// The channel's publisher refused or did not answer the subscription.
    #[error("channel subscription: {0}")]
    Subscribe(String),
    /// The service could not be served (already served here, or an invalid name).
    #[error("serve: {0}")]
    Serve(String),
    /// The remote node did not stop the daemon.
    #[error(transparent)]
    Remote(RemoteError),
}

/// One daemon as [`Node::daemons`] reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct DaemonInfo {
    /// The kind it was spawned as.
    pub kind: String,
    /// The daemon's own name.
    pub name: String,
    /// Its origin hash.
    pub origin: OriginHash,
    /// Its public key.
    pub entity: EntityId,
    /// The node hosting it (this one).
    pub node: NodeId,
    /// Where it stands.
    pub state: DaemonState,
    /// Its own view of its health (unhealthy while restarting).
    pub health: DaemonHealth,
    /// Its load, 0.0..=1.0.
    pub saturation: f32,
    /// Restarts so far.
    pub restarts: u32,
    /// Inputs processed (replays not counted).
    pub events_processed: u64,
    /// Inputs accepted (processed or failed).
    pub events_accepted: u64,
    /// Outputs appended to its chain.
    pub outputs: u64,
    /// Failures recorded.
    pub failures: u64,
    /// Snapshots taken.
    pub snapshots: u64,
    /// Its chain's last seq.
    pub head_seq: u64,
    /// The most recent failure.
    pub last_failure: Option<String>,
}

/// Where a hosted daemon stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DaemonState {
    /// Processing inputs.
    Running,
    /// Told to drain; still processing inputs.
    Draining,
    /// Told to shut down, or being stopped.
    ShuttingDown,
    /// Failed; its restart is about to run.
    Restarting,
    /// Failed; restarting after its backoff delay.
    BackingOff {
        /// Time left before the restart.
        remaining: Duration,
    },
    /// Crashed a sixth time within 60 s: restarts are gated for the cooldown.
    CrashLoop {
        /// Time left in the cooldown.
        remaining: Duration,
    },
    /// Not running and not going to be restarted.
    Stopped,
    /// Running, but it did not answer a status request in time (busy in `process`).
    Busy,
}

impl DaemonHandle {
    fn new(
        record: Arc<DaemonRecord>,
        child: ChildRef<DaemonMsg>,
        node: NodeId,
        daemons: Weak<Daemons>,
    ) -> Self {
        Self {
            record,
            child,
            node,
            daemons,
        }
    }

    /// The daemon's origin hash (its identity's; stable across restarts).
    pub fn origin_hash(&self) -> OriginHash {
        self.record.origin()
    }

    /// The daemon's public key (its entity id).
    pub fn entity(&self) -> EntityId {
        self.record.entity()
    }

    /// The kind it was spawned as.
    pub fn kind(&self) -> &str {
        self.record.kind()
    }

    /// Its output channel, `daemons/<origin>`: every output, signed, published by the
    /// hosting node (read it there with `Node::read_channel`, subscribe from elsewhere).
    pub fn output_channel(&self) -> crate::ChannelName {
        output_channel(self.origin_hash())
    }

    /// The node hosting it.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// Restarts so far.
    pub fn restarts(&self) -> u32 {
        self.record.incarnations().saturating_sub(1)
    }

    /// Feeds one input (bytes, or a [`CausalEvent`] of another chain) and waits until the
    /// daemon has processed it. `Ok` means accepted and processed: it will survive any
    /// restart. An error means it was not accepted (or, for
    /// [`DeliverError::Processing`], that the daemon failed on it and restarts without it).
    pub async fn deliver(
        &self,
        input: impl Into<DaemonInput>,
    ) -> Result<Delivered, DaemonCallError> {
        self.call_one(input.into(), DaemonMsg::Deliver).await
    }

    /// Feeds one input like [`deliver`](Self::deliver) and returns the payloads the daemon
    /// produced for it (they are linked, signed and published as usual): request/response
    /// over a daemon, as a served nRPC service uses it.
    pub async fn ask(&self, input: impl Into<DaemonInput>) -> Result<Answer, DaemonCallError> {
        self.call_one(input.into(), DaemonMsg::Ask).await
    }

    /// Sends one input in the message `message` builds and waits for the host's answer.
    async fn call_one<T: Send + 'static>(
        &self,
        input: DaemonInput,
        message: impl FnOnce(DaemonInput, RpcReplyPort<Result<T, DeliverError>>) -> DaemonMsg,
    ) -> Result<T, DaemonCallError> {
        self.check()?;
        if !self.record.try_reserve(1) {
            return Err(DaemonCallError::Full);
        }
        let result = self
            .child
            .call(|reply| message(input, reply), Some(CALL_TIMEOUT))
            .await;
        match result {
            Ok(result) => result.map_err(DaemonCallError::Deliver),
            Err(error) => Err(self.call_failed(error, 1)),
        }
    }

    /// Feeds inputs (bytes, strings, events, …) in order in one actor message (the fast
    /// path for many small events); processing stops at the first input that is not
    /// processed, whose error is in [`DeliveredMany::error`].
    pub async fn deliver_many<I>(&self, inputs: I) -> Result<DeliveredMany, DaemonCallError>
    where
        I: IntoIterator,
        I::Item: Into<DaemonInput>,
    {
        self.check()?;
        let inputs: Vec<DaemonInput> = inputs.into_iter().map(Into::into).collect();
        let n = inputs.len();
        if n == 0 {
            return Ok(DeliveredMany::default());
        }
        if !self.record.try_reserve(n) {
            return Err(DaemonCallError::Full);
        }
        let result = self
            .child
            .call(
                |reply| DaemonMsg::DeliverMany(inputs, reply),
                Some(CALL_TIMEOUT),
            )
            .await;
        result.map_err(|error| self.call_failed(error, n))
    }

    /// A subscription to the daemon's outputs from now on, across restarts. A subscriber
    /// that falls more than the output capacity behind gets `Lagged(n)` and loses the
    /// oldest `n` outputs (its [`ChainVerifier`] then reports a gap).
    pub fn outputs(&self) -> broadcast::Receiver<Arc<Output>> {
        self.record.subscribe()
    }

    /// Takes a snapshot now and returns it (signed with the daemon's key).
    pub async fn snapshot(&self) -> Result<DaemonSnapshot, DaemonCallError> {
        self.check()?;
        let result = self
            .child
            .call(DaemonMsg::Snapshot, Some(CALL_TIMEOUT))
            .await;
        match result {
            Ok(result) => result.map_err(DaemonCallError::Snapshot),
            Err(error) => Err(self.call_failed(error, 0)),
        }
    }

    /// Delivers a control signal to the daemon, at most once (also across restarts). A
    /// `Shutdown` sent this way tells the daemon and stops its input, but keeps it hosted;
    /// [`stop`](Self::stop) is the way to end a daemon.
    pub async fn control(&self, control: DaemonControl) -> Result<ControlOutcome, DaemonCallError> {
        self.check()?;
        let result = self
            .child
            .call(
                |reply| DaemonMsg::Control(control, reply),
                Some(CALL_TIMEOUT),
            )
            .await;
        match result {
            Ok(result) => result.map_err(DaemonCallError::Control),
            Err(error) => Err(self.call_failed(error, 0)),
        }
    }

    /// The daemon's state, health and counters.
    pub async fn status(&self) -> Result<DaemonInfo, DaemonCallError> {
        self.check()?;
        let daemons = self
            .daemons
            .upgrade()
            .ok_or(DaemonCallError::ShuttingDown)?;
        let states = child_states(&daemons).await;
        Ok(info_of(&self.record, &self.child, self.node, &states).await)
    }

    /// Stops the daemon: it gets `Shutdown { grace }` (its stop grace period), seals its
    /// outputs and takes a final snapshot, which is returned; if it has not stopped within
    /// the grace period it is stopped by force and the last snapshot taken is returned.
    /// The daemon is not restarted and the handle becomes stale.
    pub async fn stop(&self) -> Result<Option<DaemonSnapshot>, DaemonCallError> {
        self.check()?;
        let daemons = self
            .daemons
            .upgrade()
            .ok_or(DaemonCallError::ShuttingDown)?;
        if self.record.begin_stop() {
            return Err(DaemonCallError::ShuttingDown);
        }
        let entry = daemons
            .entry(self.origin_hash())
            .ok_or(DaemonCallError::Stale)?;
        Ok(daemons.stop(&entry).await)
    }

    fn check(&self) -> Result<(), DaemonCallError> {
        let daemons = self
            .daemons
            .upgrade()
            .ok_or(DaemonCallError::ShuttingDown)?;
        if !daemons.is_current(&self.record) {
            return Err(DaemonCallError::Stale);
        }
        if self.record.state() == RecordState::Stopping {
            return Err(DaemonCallError::ShuttingDown);
        }
        Ok(())
    }

    /// Maps a failed call; `reserved` inputs are released if they were never queued.
    fn call_failed(&self, error: SendError, reserved: usize) -> DaemonCallError {
        match error {
            SendError::NotRunning | SendError::Closed | SendError::StaleGeneration { .. } => {
                self.record.release(reserved);
                DaemonCallError::NotRunning
            }
            SendError::WrongType => {
                self.record.release(reserved);
                DaemonCallError::NotRunning
            }
            // The incarnation died with the message queued: never accepted. Its reservation
            // went with the old mailbox (the next incarnation resets the count).
            SendError::NoReply => DaemonCallError::NotRunning,
            SendError::Timeout => DaemonCallError::Timeout,
        }
    }
}

impl std::fmt::Debug for DaemonHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DaemonHandle")
            .field("origin_hash", &self.record.origin())
            .field("kind", &self.record.kind())
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl DaemonSpawnError {
    /// The refusal a remote requester gets for this error.
    pub(crate) fn refusal(&self) -> SpawnRefusal {
        match self {
            Self::FactoryNotFound(_) => SpawnRefusal::FactoryNotFound,
            Self::AlreadyRunning(_) => SpawnRefusal::AlreadyRunning,
            Self::TooMany => SpawnRefusal::Full,
            Self::ShuttingDown | Self::NotReady => SpawnRefusal::ShuttingDown,
            Self::Config(_) | Self::WrongIdentity => SpawnRefusal::invalid(self),
            other => SpawnRefusal::failed(other),
        }
    }
}

impl Node {
    /// Registers daemon kind `kind`: every spawn of it (local, placed here by a peer, or a
    /// restart) builds the daemon with `factory`. A kind is registered once; names are
    /// 1..=128 bytes.
    pub fn register_daemon_kind(
        &self,
        kind: impl Into<String>,
        factory: DaemonFactory,
    ) -> Result<(), DaemonSpawnError> {
        self.daemon_registry().register(kind.into(), factory)
    }

    /// Spawns a daemon of `kind` on this node under `identity`, with default hosting
    /// options (batch signing, a snapshot every 1,024 events and every 30 s).
    pub async fn spawn_daemon(
        &self,
        kind: &str,
        identity: Identity,
        config: DaemonConfig,
    ) -> Result<DaemonHandle, DaemonSpawnError> {
        self.spawn_daemon_with(kind, identity, config, DaemonOptions::default())
            .await
    }

    /// Like [`spawn_daemon`](Self::spawn_daemon), with hosting options.
    pub async fn spawn_daemon_with(
        &self,
        kind: &str,
        identity: Identity,
        config: DaemonConfig,
        options: DaemonOptions,
    ) -> Result<DaemonHandle, DaemonSpawnError> {
        self.daemon_registry()
            .spawn_local(kind, identity, config, options, None, None)
            .await
    }

    /// Spawns a daemon of `kind` from a snapshot (taken here or on another node): the
    /// snapshot must be signed by `identity`'s key, its state is restored into a fresh
    /// daemon and the chain continues from the snapshot's head.
    pub async fn spawn_from_snapshot(
        &self,
        kind: &str,
        identity: Identity,
        config: DaemonConfig,
        snapshot: DaemonSnapshot,
    ) -> Result<DaemonHandle, DaemonSpawnError> {
        self.spawn_from_snapshot_with(kind, identity, config, snapshot, DaemonOptions::default())
            .await
    }

    /// Like [`spawn_from_snapshot`](Self::spawn_from_snapshot), with hosting options.
    pub async fn spawn_from_snapshot_with(
        &self,
        kind: &str,
        identity: Identity,
        config: DaemonConfig,
        snapshot: DaemonSnapshot,
        options: DaemonOptions,
    ) -> Result<DaemonHandle, DaemonSpawnError> {
        self.daemon_registry()
            .spawn_local(kind, identity, config, options, Some(snapshot), None)
            .await
    }

    /// The daemon `origin` hosted here.
    pub fn daemon(&self, origin: OriginHash) -> Option<DaemonHandle> {
        self.hosted(origin).ok().map(|(_, handle)| handle)
    }

    /// The registry entry and a handle of daemon `origin`, hosted here.
    pub(crate) fn hosted(
        &self,
        origin: OriginHash,
    ) -> Result<(registry::Entry, DaemonHandle), DaemonCallError> {
        let daemons = self.daemon_registry();
        let entry = daemons
            .entry(origin)
            .ok_or(DaemonCallError::NotFound(origin))?;
        let handle = DaemonHandle::new(
            Arc::clone(&entry.record),
            entry.child.clone(),
            daemons.node(),
            Arc::downgrade(daemons),
        );
        Ok((entry, handle))
    }

    /// Feeds one input to daemon `origin` (see [`DaemonHandle::deliver`]).
    pub async fn deliver(
        &self,
        origin: OriginHash,
        input: impl Into<DaemonInput>,
    ) -> Result<Delivered, DaemonCallError> {
        let handle = self
            .daemon(origin)
            .ok_or(DaemonCallError::NotFound(origin))?;
        handle.deliver(input).await
    }

    /// Stops daemon `origin` (see [`DaemonHandle::stop`]).
    pub async fn stop_daemon(
        &self,
        origin: OriginHash,
    ) -> Result<Option<DaemonSnapshot>, DaemonCallError> {
        let handle = self
            .daemon(origin)
            .ok_or(DaemonCallError::NotFound(origin))?;
        handle.stop().await
    }

    /// Takes a snapshot of daemon `origin` now (see [`DaemonHandle::snapshot`]).
    pub async fn snapshot_daemon(
        &self,
        origin: OriginHash,
    ) -> Result<DaemonSnapshot, DaemonCallError> {
        let handle = self
            .daemon(origin)
            .ok_or(DaemonCallError::NotFound(origin))?;
        handle.snapshot().await
    }

    /// Every daemon hosted here: kind, origin, node, state (crash-loop gating included),
    /// health, saturation, restarts and counters, by origin.
    pub async fn daemons(&self) -> Vec<DaemonInfo> {
        let daemons = self.daemon_registry();
        let states = Arc::new(child_states(daemons).await);
        // Asked concurrently: a busy daemon costs its status timeout once, not per daemon.
        let mut asks = tokio::task::JoinSet::new();
        for entry in daemons.entries() {
            let (states, node) = (Arc::clone(&states), daemons.node());
            asks.spawn(async move { info_of(&entry.record, &entry.child, node, &states).await });
        }
        let mut list = Vec::with_capacity(asks.len());
        while let Some(info) = asks.join_next().await {
            if let Ok(info) = info {
                list.push(info);
            }
        }
        list.sort_by_key(|info| info.origin);
        list
    }

    /// Counters of the daemon control subprotocol: bodies that did not decode, and replies
    /// that matched no request (unknown id, or from another node than the one asked).
    pub fn daemon_control_counters(&self) -> (u64, u64) {
        let client = self.daemon_registry().client();
        (client.malformed(), client.unsolicited())
    }

    /// Replaces where the outputs of daemons spawned from now on go besides the local
    /// broadcast (default: each daemon's output channel, [`output_channel`]); `None` keeps
    /// them local.
    pub fn set_daemon_output_sink(&self, sink: Option<Arc<dyn OutputSink>>) {
        self.daemon_registry().set_sink(sink);
    }

    /// Where [`spawn_daemon_placed`](Self::spawn_daemon_placed) takes its candidate nodes
    /// from; `None` restores the default (this node and every session peer that answers a
    /// capability query).
    pub fn set_placement_candidates(&self, candidates: Option<Arc<dyn PlacementCandidates>>) {
        self.daemon_registry().set_candidates(candidates);
    }
}

/// The daemons subtree's child states, by child id.
async fn child_states(daemons: &Daemons) -> Vec<(String, ChildState)> {
    match daemons.subtree().await {
        Ok(subtree) => match subtree.tree().await {
            Ok(tree) => tree.children.into_iter().map(|c| (c.id, c.state)).collect(),
            Err(_) => Vec::new(),
        },
        Err(_) => Vec::new(),
    }
}

async fn info_of(
    record: &Arc<DaemonRecord>,
    child: &ChildRef<DaemonMsg>,
    node: NodeId,
    states: &[(String, ChildState)],
) -> DaemonInfo {
    let id = registry::child_id(record.origin());
    let child_state = states
        .iter()
        .find(|(c, _)| *c == id)
        .map_or(ChildState::Stopped, |(_, s)| *s);
    let ms = |ms: u64| Duration::from_millis(ms);
    let (state, status) = match child_state {
        ChildState::Running => match child.call(DaemonMsg::Status, Some(STATUS_TIMEOUT)).await {
            Ok(status) => {
                let state = match status.state {
                    HostState::Running => DaemonState::Running,
                    HostState::Draining => DaemonState::Draining,
                    HostState::ShuttingDown => DaemonState::ShuttingDown,
                    HostState::Failed => DaemonState::Restarting,
                };
                (state, Some(status))
            }
            Err(SendError::Timeout) => (DaemonState::Busy, None),
            Err(_) => (DaemonState::Restarting, None),
        },
        ChildState::Restarting => (DaemonState::Restarting, None),
        ChildState::BackingOff { remaining_ms } => (
            DaemonState::BackingOff {
                remaining: ms(remaining_ms),
            },
            None,
        ),
        ChildState::Gated { remaining_ms } => (
            DaemonState::CrashLoop {
                remaining: ms(remaining_ms),
            },
            None,
        ),
        ChildState::Stopped => (DaemonState::Stopped, None),
    };
    let state = if record.state() == RecordState::Stopping && state != DaemonState::Stopped {
        DaemonState::ShuttingDown
    } else {
        state
    };
    // Not running (or busy): read the record; the host is idle unless it is busy, in which
    // case its counters are reported without calling into the daemon.
    let status = match status {
        Some(status) => status,
        None if state == DaemonState::Busy => HostStatus {
            state: HostState::Running,
            health: DaemonHealth::Degraded {
                reason: "busy".to_owned(),
            },
            saturation: 1.0,
            head_seq: 0,
            input_seq: 0,
            log_len: 0,
            stats: DaemonStats::default(),
        },
        None => record.peek_status(),
    };
    DaemonInfo {
        kind: record.kind().to_owned(),
        name: record.name().to_owned(),
        origin: record.origin(),
        entity: record.entity(),
        node,
        state,
        health: status.health,
        saturation: status.saturation,
        restarts: record.incarnations().saturating_sub(1),
        events_processed: status.stats.events_processed,
        events_accepted: status.stats.events_accepted,
        outputs: status.stats.outputs,
        failures: status.stats.failures,
        snapshots: status.stats.snapshots,
        head_seq: status.head_seq,
        last_failure: status.stats.last_failure.as_ref().map(ToString::to_string),
    }
}

/// Current time on tokio's clock (the actors use the same).
fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

impl DaemonState {
    /// A short lowercase name (`running`, `crash_loop`, …), as the CLI and JSON show it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Draining => "draining",
            Self::ShuttingDown => "shutting_down",
            Self::Restarting => "restarting",
            Self::BackingOff { .. } => "backing_off",
            Self::CrashLoop { .. } => "crash_loop",
            Self::Stopped => "stopped",
            Self::Busy => "busy",
        }
    }
}
