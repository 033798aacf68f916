//! [`DaemonHost`]: runs one daemon, one event at a time, and turns what it produces into
//! signed chain outputs.
//!
//! Rules the host keeps:
//! - **Input numbering.** Every event the host accepts gets the next input seq. An event
//!   that succeeds goes into the input log; one that fails does not (its effect, if any, is
//!   discarded by the restart), so a replay never shows a daemon the same event twice.
//! - **Failure capture.** Every call into the daemon runs under `catch_unwind`. A panic, a
//!   broken output limit, or an error under [`ErrorPolicy::Restart`] records a
//!   [`Failure`] and moves the host to [`HostState::Failed`]: it calls the daemon no more,
//!   seals what was produced before the failure, and waits to be turned into a
//!   [`Recovery`](super::Recovery).
//! - **Chain.** Outputs are appended to the daemon's causal chain in order. Per-event
//!   signing signs each at once; batch signing seals a batch at input boundaries only, so
//!   one input's outputs never straddle two batches.
//! - **Snapshots.** Taken every `snapshot_every` events, on request, and before accepting an
//!   event the log has no room for. A snapshot first seals the open batch, so the snapshot's
//!   chain head never names an output that was not handed out.
//! - **Controls** carry ids from one increasing counter; an id at or below the last one
//!   delivered is a duplicate and is dropped, so each control reaches the daemon at most
//!   once (also across a restore).
//! - **Bounds.** Outputs waiting for [`poll_output`](DaemonHost::poll_output) are capped
//!   ([`MAX_UNPOLLED`]); beyond that `deliver` answers [`DeliverError::Backpressure`].

use std::any::Any;
use std::collections::VecDeque;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

use bytes::Bytes;
use netrun_messages::causal::MAX_EVENT_PAYLOAD;
use netrun_messages::{
    CapabilityFilter, CausalChain, CausalEvent, CausalLink, ChainHead, EntityId, Identity,
    OriginHash, SignedEvent,
};
use thiserror::Error;

use super::config::{ChainSigning, ConfigError, ErrorPolicy, HostConfig, MAX_OUTPUTS_PER_EVENT};
use super::log::{InputLog, LoggedInput};
use super::output::{Output, SignedBatch};
use super::snapshot::{DaemonSnapshot, SnapshotError};
use super::{DaemonControl, DaemonError, DaemonHealth, MeshDaemon};

/// Most outputs (events or batches) waiting to be polled before `deliver` pushes back.
pub const MAX_UNPOLLED: usize = 4096;
/// Most encoded output bytes one `process` call may return.
const MAX_EVENT_OUTPUT_BYTES: usize = 4 * 1024 * 1024;
/// Encoded bytes of an event besides its payload (link and length).
const EVENT_OVERHEAD: usize = netrun_messages::causal::LINK_LEN + 4;

/// Runs one daemon (see the module docs).
pub struct DaemonHost {
    pub(super) daemon: Box<dyn MeshDaemon>,
    pub(super) name: String,
    pub(super) requirements: CapabilityFilter,
    pub(super) identity: Identity,
    pub(super) entity: EntityId,
    pub(super) config: HostConfig,
    pub(super) chain: CausalChain,
    pub(super) input_seq: u64,
    pub(super) log: InputLog,
    pub(super) snapshot: DaemonSnapshot,
    pub(super) since_snapshot: u32,
    pub(super) pending: Vec<CausalEvent>,
    pub(super) pending_bytes: usize,
    pub(super) pending_since: Option<Instant>,
    pub(super) out: VecDeque<Output>,
    pub(super) state: HostState,
    pub(super) last_control_id: u64,
    pub(super) backpressure: Option<f32>,
    pub(super) stats: DaemonStats,
}

/// Where a host stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostState {
    /// Accepting events.
    Running,
    /// Told to drain (`DrainStart`); still accepting events so nothing in flight is lost.
    Draining,
    /// Told to shut down; accepts no more events.
    ShuttingDown,
    /// The daemon failed; the host calls it no more and must be restored.
    Failed,
}

/// What one accepted and processed event produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    /// The host's number for the event.
    pub input_seq: u64,
    /// Outputs appended to the chain.
    pub outputs: usize,
    /// The chain's seq after them.
    pub head_seq: u64,
}

/// Why `deliver` did not process an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum DeliverError {
    /// The host has failed (now or earlier); the event was not accepted.
    #[error("daemon host has failed and must be restored")]
    Failed,
    /// The daemon was told to shut down; the event was not accepted.
    #[error("daemon is shutting down")]
    ShuttingDown,
    /// Outputs are not being polled, or the input log is full and no snapshot could be
    /// taken; the event was not accepted. Retry after polling or a successful snapshot.
    #[error("daemon host is backed up")]
    Backpressure,
    /// The event was accepted and processing it failed (see
    /// [`DaemonHost::last_failure`]). If `restart`, the host is now failed.
    #[error("daemon failed on input {input_seq}")]
    Processing {
        /// The event's input seq.
        input_seq: u64,
        /// Whether the host failed and must be restored.
        restart: bool,
    },
}

/// The result of a delivered control.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlOutcome {
    /// The daemon received it.
    Delivered,
    /// Its id was already used; the daemon did not receive it again.
    Duplicate,
}

/// Why a control was not delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ControlError {
    /// The host has failed; the control was not delivered and its id is not used up.
    #[error("daemon host has failed")]
    HostFailed,
    /// The daemon panicked in `on_control`; the host is now failed.
    #[error("daemon panicked handling a control")]
    Panicked,
}

/// Why a requested snapshot was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum SnapshotRefusal {
    /// The host has failed (now or earlier).
    #[error("daemon host has failed")]
    HostFailed,
    /// The daemon's state is too large; nothing changed.
    #[error(transparent)]
    TooLarge(SnapshotError),
}

/// Why a host could not be built.
#[derive(Debug, Error)]
pub enum HostError {
    /// The host configuration is out of range.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The daemon failed while being set up (name, requirements or its first snapshot).
    #[error("daemon failed during setup: {0}")]
    Failed(Failure),
}

/// A failure of the daemon, as recorded by the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Which call failed.
    pub stage: FailureStage,
    /// The input being processed, if any.
    pub input_seq: Option<u64>,
    /// What happened.
    pub reason: FailureReason,
}

/// Which call into the daemon failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureStage {
    /// Building the host (`name`, `requirements`).
    Setup,
    /// `process` on a live event.
    Process,
    /// `process` on a replayed event during a restore.
    Replay,
    /// `snapshot`.
    Snapshot,
    /// `restore`.
    Restore,
    /// `on_control`.
    Control,
    /// `health` or `saturation`.
    Health,
}

/// What went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailureReason {
    /// The daemon panicked; the panic message.
    Panic(String),
    /// The daemon returned an error.
    Error(DaemonError),
    /// `process` returned more than [`MAX_OUTPUTS_PER_EVENT`] outputs.
    TooManyOutputs(usize),
    /// An output payload exceeds the event payload limit, or one event's outputs exceed
    /// 4 MiB together.
    OutputTooLarge(usize),
    /// The snapshot state exceeds the snapshot limit.
    SnapshotTooLarge(usize),
    /// The chain has used every sequence number.
    ChainExhausted,
}

/// Counters and the last failure of one daemon.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DaemonStats {
    /// Events accepted (given an input seq).
    pub events_accepted: u64,
    /// Events processed successfully (not counting replays).
    pub events_processed: u64,
    /// Failures recorded (any stage).
    pub failures: u64,
    /// Outputs appended to the chain.
    pub outputs: u64,
    /// Per-event signatures made.
    pub events_signed: u64,
    /// Batch heads signed.
    pub heads_signed: u64,
    /// Snapshots taken.
    pub snapshots: u64,
    /// Of those, taken because the input log was full.
    pub forced_snapshots: u64,
    /// Snapshots refused because the state was too large.
    pub snapshot_failures: u64,
    /// Events refused (failed host, shutdown, backpressure).
    pub events_refused: u64,
    /// Events replayed by restores.
    pub replayed: u64,
    /// Replayed outputs not published again because they had been produced before.
    pub suppressed: u64,
    /// Restores whose replay did not reproduce the published chain.
    pub divergences: u64,
    /// Controls delivered.
    pub controls_delivered: u64,
    /// Controls dropped as duplicates.
    pub controls_duplicate: u64,
    /// Restarts, as counted by the supervisor (set with [`DaemonHost::set_restarts`]).
    pub restarts: u32,
    /// The most recent failure.
    pub last_failure: Option<Failure>,
}

impl DaemonHost {
    /// Hosts a freshly built daemon under `identity`, with its chain at genesis. Takes a
    /// first snapshot of the daemon's initial state.
    pub fn new(
        daemon: Box<dyn MeshDaemon>,
        identity: Identity,
        config: HostConfig,
    ) -> Result<Self, HostError> {
        config.validate()?;
        let state = catch_unwind(AssertUnwindSafe(|| daemon.snapshot())).map_err(|payload| {
            HostError::Failed(Failure {
                stage: FailureStage::Snapshot,
                input_seq: None,
                reason: FailureReason::Panic(panic_message(payload.as_ref())),
            })
        })?;
        let len = state.as_ref().map_or(0, Bytes::len);
        let genesis = CausalLink::genesis(identity.origin_hash());
        let snapshot = DaemonSnapshot::sign(&identity, genesis, 0, state).map_err(|_| {
            HostError::Failed(Failure {
                stage: FailureStage::Snapshot,
                input_seq: None,
                reason: FailureReason::SnapshotTooLarge(len),
            })
        })?;
        Self::assemble(daemon, identity, config, snapshot).map_err(HostError::Failed)
    }

    /// The fields every constructor shares; caches name and requirements. The chain
    /// starts at `snapshot`'s head and the input seq at its `last_input_seq`.
    pub(super) fn assemble(
        daemon: Box<dyn MeshDaemon>,
        identity: Identity,
        config: HostConfig,
        snapshot: DaemonSnapshot,
    ) -> Result<Self, Failure> {
        let setup = |message| Failure {
            stage: FailureStage::Setup,
            input_seq: None,
            reason: FailureReason::Panic(message),
        };
        let name = catch_unwind(AssertUnwindSafe(|| daemon.name().to_owned()))
            .map_err(|p| setup(panic_message(p.as_ref())))?;
        let requirements = catch_unwind(AssertUnwindSafe(|| daemon.requirements()))
            .map_err(|p| setup(panic_message(p.as_ref())))?;
        Ok(Self {
            daemon,
            name,
            requirements,
            entity: identity.entity_id(),
            identity,
            config,
            chain: CausalChain::resume(snapshot.head),
            input_seq: snapshot.last_input_seq,
            log: InputLog::new(config.log_events, config.log_bytes),
            snapshot,
            since_snapshot: 0,
            pending: Vec::new(),
            pending_bytes: 0,
            pending_since: None,
            out: VecDeque::new(),
            state: HostState::Running,
            last_control_id: 0,
            backpressure: None,
            stats: DaemonStats::default(),
        })
    }

    /// Feeds one event to the daemon and links its outputs into the chain; collect them
    /// with [`poll_output`](Self::poll_output).
    ///
    /// Before accepting the event the host takes a snapshot if the cadence is due or the
    /// input log has no room. When the log is full and the snapshot cannot be taken (the
    /// state is too large) the event is refused with [`DeliverError::Backpressure`]: a full
    /// log never drops an accepted event, it stops accepting.
    pub fn deliver(&mut self, now: Instant, event: CausalEvent) -> Result<Delivered, DeliverError> {
        self.accept(now, event, None)
    }

    /// Like [`deliver`](Self::deliver), and also appends to `answer` the payloads the
    /// daemon produced for this event, in chain order (a served nRPC request answers with
    /// them). They are linked and published like any other outputs.
    pub fn deliver_answering(
        &mut self,
        now: Instant,
        event: CausalEvent,
        answer: &mut Vec<Bytes>,
    ) -> Result<Delivered, DeliverError> {
        self.accept(now, event, Some(answer))
    }

    fn accept(
        &mut self,
        now: Instant,
        event: CausalEvent,
        answer: Option<&mut Vec<Bytes>>,
    ) -> Result<Delivered, DeliverError> {
        match self.state {
            HostState::Running | HostState::Draining => {}
            HostState::ShuttingDown => return self.refuse(DeliverError::ShuttingDown),
            HostState::Failed => return self.refuse(DeliverError::Failed),
        }
        if self.out.len() >= MAX_UNPOLLED {
            return self.refuse(DeliverError::Backpressure);
        }
        let full = self.log.is_full_for(&event);
        let due =
            self.config.snapshot_every > 0 && self.since_snapshot >= self.config.snapshot_every;
        if full || due {
            match self.take_snapshot() {
                Ok(_) => self.stats.forced_snapshots += u64::from(full),
                Err(SnapshotRefusal::HostFailed) => return self.refuse(DeliverError::Failed),
                Err(SnapshotRefusal::TooLarge(_)) if full => {
                    return self.refuse(DeliverError::Backpressure);
                }
                // Retry after another period rather than on every event.
                Err(SnapshotRefusal::TooLarge(_)) => self.since_snapshot = 0,
            }
        }
        self.handle_timeout(now);

        self.input_seq += 1;
        self.stats.events_accepted += 1;
        let input_seq = self.input_seq;
        let payloads = match self.call_process(&event, FailureStage::Process, input_seq) {
            Ok(payloads) => payloads,
            Err(failure) => {
                let restart = !matches!(
                    (&failure.reason, self.config.error_policy),
                    (FailureReason::Error(_), ErrorPolicy::Continue)
                );
                self.fail(failure, restart);
                return Err(DeliverError::Processing { input_seq, restart });
            }
        };
        let outputs = payloads.len();
        if let Some(answer) = answer {
            answer.extend(payloads.iter().cloned());
        }
        if let Err(reason) = self.link(now, payloads, None) {
            let failure = Failure {
                stage: FailureStage::Process,
                input_seq: Some(input_seq),
                reason,
            };
            self.fail(failure, true);
            return Err(DeliverError::Processing {
                input_seq,
                restart: true,
            });
        }
        self.log.push(LoggedInput { input_seq, event });
        self.since_snapshot = self.since_snapshot.saturating_add(1);
        self.stats.events_processed += 1;
        Ok(Delivered {
            input_seq,
            outputs,
            head_seq: self.chain.head().seq,
        })
    }

    /// The next output to publish, oldest first. Poll until `None` after every `deliver`,
    /// `control`, `flush`, `handle_timeout` and snapshot.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When the open batch must be sealed, if one is open.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.config.signing {
            ChainSigning::Batch { max_delay, .. } => self.pending_since.map(|t| t + max_delay),
            ChainSigning::PerEvent => None,
        }
    }

    /// Seals the open batch if it has waited its `max_delay` by `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.poll_timeout().is_some_and(|deadline| now >= deadline) {
            self.seal();
        }
    }

    /// Seals the open batch now (e.g. when the actor's mailbox is empty).
    pub fn flush(&mut self) {
        self.seal();
    }

    /// Takes a snapshot now: seals the open batch, asks the daemon for its state, signs the
    /// record and truncates the input log. A panic in `snapshot` fails the host.
    pub fn take_snapshot(&mut self) -> Result<&DaemonSnapshot, SnapshotRefusal> {
        if self.state == HostState::Failed {
            return Err(SnapshotRefusal::HostFailed);
        }
        self.seal();
        let state = match self.call_snapshot() {
            Ok(state) => state,
            Err(failure) => {
                self.fail(failure, true);
                return Err(SnapshotRefusal::HostFailed);
            }
        };
        match self.sign_snapshot(state) {
            Ok(snapshot) => {
                self.snapshot = snapshot;
                self.log.clear();
                self.since_snapshot = 0;
                self.stats.snapshots += 1;
                Ok(&self.snapshot)
            }
            Err(len) => {
                self.stats.snapshot_failures += 1;
                let failure = self.failure_of_size(len);
                self.record(failure);
                Err(SnapshotRefusal::TooLarge(SnapshotError::TooLarge {
                    len,
                    max: super::MAX_STATE_LEN,
                }))
            }
        }
    }

    /// Delivers `control` unless `id` was already used (ids must increase; the first is 1).
    pub fn control(
        &mut self,
        id: u64,
        control: DaemonControl,
    ) -> Result<ControlOutcome, ControlError> {
        if self.state == HostState::Failed {
            return Err(ControlError::HostFailed);
        }
        if id <= self.last_control_id {
            self.stats.controls_duplicate += 1;
            return Ok(ControlOutcome::Duplicate);
        }
        self.last_control_id = id;
        match control {
            DaemonControl::Shutdown { .. } => {
                self.state = HostState::ShuttingDown;
                self.seal();
            }
            DaemonControl::DrainStart { .. } => {
                if self.state == HostState::Running {
                    self.state = HostState::Draining;
                }
                self.seal();
            }
            DaemonControl::DrainFinish => {
                if self.state == HostState::Draining {
                    self.state = HostState::Running;
                }
            }
            DaemonControl::BackpressureOn { level } => self.backpressure = Some(level),
            DaemonControl::BackpressureOff => self.backpressure = None,
        }
        let daemon = &mut self.daemon;
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| daemon.on_control(control))) {
            let failure = Failure {
                stage: FailureStage::Control,
                input_seq: None,
                reason: FailureReason::Panic(panic_message(payload.as_ref())),
            };
            self.fail(failure, true);
            return Err(ControlError::Panicked);
        }
        self.stats.controls_delivered += 1;
        Ok(ControlOutcome::Delivered)
    }

    /// The daemon's health; a failed host is unhealthy, and a panic in `health` is recorded
    /// and reported as unhealthy.
    pub fn health(&mut self) -> DaemonHealth {
        if self.state == HostState::Failed {
            let reason = self
                .stats
                .last_failure
                .as_ref()
                .map_or_else(|| "failed".to_owned(), ToString::to_string);
            return DaemonHealth::Unhealthy { reason };
        }
        let daemon = &self.daemon;
        match catch_unwind(AssertUnwindSafe(|| daemon.health())) {
            Ok(health) => health,
            Err(payload) => {
                let message = panic_message(payload.as_ref());
                self.record(Failure {
                    stage: FailureStage::Health,
                    input_seq: None,
                    reason: FailureReason::Panic(message.clone()),
                });
                DaemonHealth::Unhealthy {
                    reason: format!("health check panicked: {message}"),
                }
            }
        }
    }

    /// The daemon's saturation clamped to 0.0..=1.0; a failed host, a panic or a NaN counts
    /// as saturated.
    pub fn saturation(&mut self) -> f32 {
        if self.state == HostState::Failed {
            return 1.0;
        }
        let daemon = &self.daemon;
        match catch_unwind(AssertUnwindSafe(|| daemon.saturation())) {
            Ok(s) if s.is_nan() => 1.0,
            Ok(s) => s.clamp(0.0, 1.0),
            Err(payload) => {
                self.record(Failure {
                    stage: FailureStage::Health,
                    input_seq: None,
                    reason: FailureReason::Panic(panic_message(payload.as_ref())),
                });
                1.0
            }
        }
    }

    /// The daemon's name (cached when the host was built).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The daemon's placement requirements (cached when the host was built).
    pub fn requirements(&self) -> &CapabilityFilter {
        &self.requirements
    }

    /// The daemon's origin hash.
    pub fn origin(&self) -> OriginHash {
        self.chain.head().origin
    }

    /// The daemon's public key.
    pub fn entity_id(&self) -> EntityId {
        self.entity
    }

    /// Where the host stands.
    pub fn state(&self) -> HostState {
        self.state
    }

    /// The chain's last link (including outputs in an open batch).
    pub fn head(&self) -> &CausalLink {
        self.chain.head()
    }

    /// The last input seq given out.
    pub fn input_seq(&self) -> u64 {
        self.input_seq
    }

    /// The last snapshot taken (or restored from).
    pub fn last_snapshot(&self) -> &DaemonSnapshot {
        &self.snapshot
    }

    /// Events in the input log (accepted and processed since the last snapshot).
    pub fn log_len(&self) -> usize {
        self.log.len()
    }

    /// Bytes the input log counts against its byte bound.
    pub fn log_bytes(&self) -> usize {
        self.log.bytes()
    }

    /// Outputs in the open batch.
    pub fn pending_outputs(&self) -> usize {
        self.pending.len()
    }

    /// The last control id delivered.
    pub fn last_control_id(&self) -> u64 {
        self.last_control_id
    }

    /// The backpressure level last signalled, while it is on.
    pub fn backpressure(&self) -> Option<f32> {
        self.backpressure
    }

    /// The host configuration.
    pub fn config(&self) -> &HostConfig {
        &self.config
    }

    /// Counters and the last failure.
    pub fn stats(&self) -> &DaemonStats {
        &self.stats
    }

    /// The most recent failure.
    pub fn last_failure(&self) -> Option<&Failure> {
        self.stats.last_failure.as_ref()
    }

    /// Records the supervisor's restart count (shown in status).
    pub fn set_restarts(&mut self, restarts: u32) {
        self.stats.restarts = restarts;
    }

    fn refuse(&mut self, error: DeliverError) -> Result<Delivered, DeliverError> {
        self.stats.events_refused += 1;
        Err(error)
    }

    /// Calls `process` and checks the output limits.
    pub(super) fn call_process(
        &mut self,
        event: &CausalEvent,
        stage: FailureStage,
        input_seq: u64,
    ) -> Result<Vec<Bytes>, Failure> {
        let daemon = &mut self.daemon;
        let reason = match catch_unwind(AssertUnwindSafe(|| daemon.process(event))) {
            Ok(Ok(payloads)) => match check_outputs(&payloads) {
                Ok(()) => return Ok(payloads),
                Err(reason) => reason,
            },
            Ok(Err(error)) => FailureReason::Error(error),
            Err(payload) => FailureReason::Panic(panic_message(payload.as_ref())),
        };
        Err(Failure {
            stage,
            input_seq: Some(input_seq),
            reason,
        })
    }

    fn call_snapshot(&mut self) -> Result<Option<Bytes>, Failure> {
        let daemon = &self.daemon;
        catch_unwind(AssertUnwindSafe(|| daemon.snapshot())).map_err(|payload| Failure {
            stage: FailureStage::Snapshot,
            input_seq: None,
            reason: FailureReason::Panic(panic_message(payload.as_ref())),
        })
    }

    /// Signs a snapshot at the current head and input seq; `Err(len)` if the state is too
    /// large.
    fn sign_snapshot(&self, state: Option<Bytes>) -> Result<DaemonSnapshot, usize> {
        let len = state.as_ref().map_or(0, Bytes::len);
        DaemonSnapshot::sign(&self.identity, *self.chain.head(), self.input_seq, state)
            .map_err(|_| len)
    }

    fn failure_of_size(&self, len: usize) -> Failure {
        Failure {
            stage: FailureStage::Snapshot,
            input_seq: None,
            reason: FailureReason::SnapshotTooLarge(len),
        }
    }

    /// Appends `payloads` to the chain and queues them for signing. During a replay,
    /// `replay` carries the last link produced before the failure: outputs up to it are
    /// checked against it and suppressed instead of queued.
    pub(super) fn link(
        &mut self,
        now: Instant,
        payloads: Vec<Bytes>,
        mut replay: Option<&mut Replay>,
    ) -> Result<(), FailureReason> {
        let count = payloads.len() as u64;
        if self.chain.head().seq.checked_add(count).is_none() {
            return Err(FailureReason::ChainExhausted);
        }
        let bytes: usize = payloads.iter().map(|p| p.len() + EVENT_OVERHEAD).sum();
        if let Some((max_events, max_bytes)) = self.batch_limits() {
            let would_overflow = self.pending.len() + payloads.len() > max_events
                || self.pending_bytes + bytes > max_bytes;
            if !self.pending.is_empty() && would_overflow {
                self.seal();
            }
        }
        for payload in payloads {
            let event = self
                .chain
                .append(payload)
                .map_err(|_| FailureReason::ChainExhausted)?;
            if let Some(replay) = replay.as_deref_mut() {
                if event.link.seq <= replay.produced.seq {
                    if event.link.seq == replay.produced.seq && event.link != replay.produced {
                        replay.divergent = true;
                        self.chain = CausalChain::resume(replay.produced);
                    }
                    replay.suppressed += 1;
                    continue;
                }
                replay.emitted += 1;
            }
            self.stats.outputs += 1;
            self.emit(now, event);
        }
        if let Some((max_events, max_bytes)) = self.batch_limits() {
            if self.pending.len() >= max_events || self.pending_bytes >= max_bytes {
                self.seal();
            }
        }
        Ok(())
    }

    /// `(max_events, max_bytes)` of a batch, in batch mode.
    fn batch_limits(&self) -> Option<(usize, usize)> {
        match self.config.signing {
            ChainSigning::Batch {
                max_events,
                max_bytes,
                ..
            } => Some((max_events as usize, max_bytes)),
            ChainSigning::PerEvent => None,
        }
    }

    fn emit(&mut self, now: Instant, event: CausalEvent) {
        match self.config.signing {
            ChainSigning::PerEvent => {
                self.stats.events_signed += 1;
                self.out
                    .push_back(Output::Event(SignedEvent::sign(&self.identity, event)));
            }
            ChainSigning::Batch { .. } => {
                self.pending_bytes += event.payload.len() + EVENT_OVERHEAD;
                self.pending_since.get_or_insert(now);
                self.pending.push(event);
            }
        }
    }

    /// Signs the open batch's head and queues the batch.
    pub(super) fn seal(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let events = std::mem::take(&mut self.pending);
        // The open batch always ends at the chain head: every appended output joins it.
        let head = ChainHead::sign(&self.identity, self.chain.head());
        self.stats.heads_signed += 1;
        self.out
            .push_back(Output::Batch(SignedBatch { events, head }));
        self.pending_bytes = 0;
        self.pending_since = None;
    }

    /// Records a failure; if `fatal`, the host stops calling the daemon and seals what it
    /// produced before.
    pub(super) fn fail(&mut self, failure: Failure, fatal: bool) {
        self.record(failure);
        if fatal {
            self.state = HostState::Failed;
            self.seal();
        }
    }

    pub(super) fn record(&mut self, failure: Failure) {
        self.stats.failures += 1;
        self.stats.last_failure = Some(failure);
    }
}

/// Replay bookkeeping shared by [`DaemonHost::link`] and the restore.
#[derive(Debug, Clone, Copy)]
pub(super) struct Replay {
    /// The last link produced before the failure.
    pub(super) produced: CausalLink,
    /// Outputs re-derived at or before `produced`.
    pub(super) suppressed: u64,
    /// Outputs re-derived after `produced` (published now).
    pub(super) emitted: u64,
    /// The re-derived link at `produced.seq` was not `produced`.
    pub(super) divergent: bool,
}

impl fmt::Debug for DaemonHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DaemonHost")
            .field("name", &self.name)
            .field("origin", &self.origin())
            .field("state", &self.state)
            .field("head_seq", &self.chain.head().seq)
            .field("input_seq", &self.input_seq)
            .field("log_len", &self.log.len())
            .finish_non_exhaustive()
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.stage)?;
        if let Some(seq) = self.input_seq {
            write!(f, " of input {seq}")?;
        }
        match &self.reason {
            FailureReason::Panic(message) => write!(f, ": panicked: {message}"),
            FailureReason::Error(error) => write!(f, ": {error}"),
            FailureReason::TooManyOutputs(n) => {
                write!(f, ": {n} outputs exceed {MAX_OUTPUTS_PER_EVENT}")
            }
            FailureReason::OutputTooLarge(n) => write!(f, ": output of {n} bytes is too large"),
            FailureReason::SnapshotTooLarge(n) => {
                write!(f, ": snapshot state of {n} bytes is too large")
            }
            FailureReason::ChainExhausted => write!(f, ": chain sequence exhausted"),
        }
    }
}

impl std::error::Error for Failure {}

fn check_outputs(payloads: &[Bytes]) -> Result<(), FailureReason> {
    if payloads.len() > MAX_OUTPUTS_PER_EVENT {
        return Err(FailureReason::TooManyOutputs(payloads.len()));
    }
    let mut total = 0usize;
    for payload in payloads {
        if payload.len() > MAX_EVENT_PAYLOAD {
            return Err(FailureReason::OutputTooLarge(payload.len()));
        }
        total += payload.len() + EVENT_OVERHEAD;
    }
    if total > MAX_EVENT_OUTPUT_BYTES {
        return Err(FailureReason::OutputTooLarge(total));
    }
    Ok(())
}

/// The text of a panic payload (`&str` or `String`; anything else is unnamed).
pub(super) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}
