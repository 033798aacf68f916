//! Daemons: the user contract ([`MeshDaemon`]) and the sans-IO host that runs one.
//!
//! A daemon is a stateful event processor whose identity is its own ed25519 key: its
//! [`OriginHash`](netrun_messages::OriginHash) and entity id never change when it restarts
//! or moves. Everything it produces is linked into its causal chain and signed with that
//! key, so any node can verify where an output came from and that nothing was dropped,
//! reordered or rewritten.
//!
//! ```text
//!   input ─ deliver(now, event) ─▶ DaemonHost ── catch_unwind(process) ─▶ MeshDaemon
//!                                   │  input log (since the last snapshot)
//!                                   │  causal chain: seq, parent hash, payload hash
//!                                   │  signing: per event, or one ChainHead per batch
//!                                   ▼
//!              poll_output() ─▶ Output::{Event(SignedEvent), Batch(SignedBatch)} ─▶ channel
//!              poll_timeout() / handle_timeout(now): seal a batch that waited long enough
//!              take_snapshot() / cadence / full log ─▶ DaemonSnapshot (signed)
//!              control(id, DaemonControl): at most once per id
//!   failure ─▶ into_recovery() ─▶ Recovery ─▶ DaemonHost::restore(fresh daemon, recovery)
//!                                   = snapshot + replay of the log, outputs already
//!                                     produced are re-derived, checked and suppressed
//! ```
//!
//! Parts:
//! - this module: the [`MeshDaemon`] trait and its vocabulary ([`DaemonError`],
//!   [`DaemonHealth`], [`DaemonControl`]);
//! - [`DaemonConfig`], [`HostConfig`], [`ChainSigning`], [`ErrorPolicy`]: what a spawn
//!   passes and how the host behaves;
//! - [`DaemonFactory`] and [`DaemonFactories`]: named constructors (daemon kinds);
//! - [`DaemonHost`]: feeding, failure capture, chain linking and signing, snapshots,
//!   controls; [`Recovery`] and [`DaemonHost::restore`]: restart without loss or repeats;
//! - [`DaemonSnapshot`]: the signed, versioned snapshot record and its codec;
//! - [`Output`], [`SignedBatch`] and [`ChainVerifier`]: what a daemon publishes and how a
//!   subscriber checks it;
//! - [`place`] and [`rank`]: choosing a node for a daemon by capability, RTT and load.
//!
//! Restart *policy* (backoff, crash-loop gate) is not here: it lives in the supervisor.
//! The host only records failures and makes a restart lossless.

mod config;
mod factory;
mod host;
mod log;
mod output;
mod placement;
mod recovery;
mod snapshot;
mod wire;

#[cfg(test)]
mod tests;

use std::time::Duration;

use bytes::Bytes;
use netrun_messages::{CapabilityFilter, CausalEvent};
use thiserror::Error;

pub use config::{
    ChainSigning, ConfigError, DEFAULT_BATCH_BYTES, DEFAULT_BATCH_DELAY, DEFAULT_BATCH_EVENTS,
    DEFAULT_LOG_BYTES, DEFAULT_LOG_EVENTS, DEFAULT_SNAPSHOT_EVERY, DaemonConfig, ErrorPolicy,
    HostConfig, MAX_BATCH_EVENTS, MAX_CONFIG_LEN, MAX_LOG_EVENTS, MAX_OUTPUTS_PER_EVENT,
};
pub use factory::{DaemonFactories, DaemonFactory, FactoryError, MAX_KIND_LEN, MAX_KINDS, factory};
pub use host::{
    ControlError, ControlOutcome, DaemonHost, DaemonStats, DeliverError, Delivered, Failure,
    FailureReason, FailureStage, HostError, HostState, MAX_UNPOLLED, SnapshotRefusal,
};
pub use log::LoggedInput;
pub use output::{ChainVerifier, MAX_OUTPUT_LEN, Output, SignedBatch, VerifyError};
pub use placement::{Candidate, place, rank};
pub use recovery::{Recovery, RestoreError, RestoreFailure, RestoreReport};
pub use snapshot::{DaemonSnapshot, MAX_STATE_LEN, SNAPSHOT_VERSION, SnapshotError};

/// A daemon: a stateful event processor hosted by a [`DaemonHost`].
///
/// Only [`name`](Self::name) and [`process`](Self::process) are required. The host calls
/// every method from one thread at a time and catches panics in each of them: a panic
/// becomes a recorded [`Failure`], never a crashed node.
///
/// # Determinism
///
/// A restart restores the last snapshot and replays the events accepted since, so
/// `process` must be a function of the daemon's state and the event: the same state and
/// the same events must produce the same outputs. A daemon that reads clocks or random
/// numbers inside `process` still restarts, but the host notices that the replay
/// diverged from the outputs already published, keeps the published chain and counts a
/// divergence (see [`RestoreReport::divergent`]).
///
/// # State
///
/// A stateless daemon keeps the default [`snapshot`](Self::snapshot) (`None`). A stateful
/// daemon must implement `snapshot` and [`restore`](Self::restore): the host truncates its
/// input log at every snapshot, so a daemon whose `snapshot` returns `None` restarts from
/// the factory's initial state plus the events since the last snapshot.
pub trait MeshDaemon: Send + 'static {
    /// A short human-readable name (for status, traces and errors).
    fn name(&self) -> &str;

    /// What a node must offer to host this daemon; used by placement. Matches every node
    /// by default.
    fn requirements(&self) -> CapabilityFilter {
        CapabilityFilter::default()
    }

    /// Handles one event and returns the payloads to publish, in order. The host links each
    /// into the daemon's causal chain and signs it.
    ///
    /// Returning `Err` must leave the state as it was: the host records the failure, and a
    /// replay after a restart skips the event (it is never processed twice).
    fn process(&mut self, event: &CausalEvent) -> Result<Vec<Bytes>, DaemonError>;

    /// The daemon's state, for a snapshot; `None` for a stateless daemon.
    fn snapshot(&self) -> Option<Bytes> {
        None
    }

    /// Replaces the state with one produced by [`snapshot`](Self::snapshot).
    fn restore(&mut self, state: Bytes) -> Result<(), DaemonError> {
        let _ = state;
        Ok(())
    }

    /// How the daemon judges itself.
    fn health(&self) -> DaemonHealth {
        DaemonHealth::Healthy
    }

    /// Load between 0.0 (idle) and 1.0 (saturated); placement prefers less saturated nodes.
    fn saturation(&self) -> f32 {
        0.0
    }

    /// A lifecycle or backpressure signal from the node. Each control is delivered at most
    /// once; the daemon should act on it promptly.
    fn on_control(&mut self, control: DaemonControl) {
        let _ = control;
    }
}

/// Why a daemon refused an event, a state, or a configuration.
///
/// The text comes from user code; the host records it with the failure.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DaemonError {
    /// The event is not one this daemon can handle.
    #[error("invalid event: {0}")]
    InvalidEvent(String),
    /// A snapshot state could not be restored.
    #[error("invalid state: {0}")]
    InvalidState(String),
    /// The spawn configuration is not acceptable.
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    /// Handling the event failed for another reason.
    #[error("processing failed: {0}")]
    Failed(String),
}

/// A daemon's view of its own health.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum DaemonHealth {
    /// Working normally.
    #[default]
    Healthy,
    /// Working, but impaired.
    Degraded {
        /// Why.
        reason: String,
    },
    /// Not working.
    Unhealthy {
        /// Why.
        reason: String,
    },
}

/// A signal from the node to a daemon, delivered at most once (see
/// [`DaemonHost::control`]). Durations are relative, so a daemon needs no clock to read
/// them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DaemonControl {
    /// Stop: finish up within `grace`; after it the node stops the daemon by force. The
    /// host accepts no input after this.
    Shutdown {
        /// Time left before the forced stop.
        grace: Duration,
    },
    /// The node is draining (maintenance, migration): prepare to stop or move within
    /// `grace`. Input is still accepted, so nothing in flight is lost.
    DrainStart {
        /// Time left before the drain deadline.
        grace: Duration,
    },
    /// The drain is over (completed or cancelled).
    DrainFinish,
    /// The node or cluster is under pressure: shed optional work.
    BackpressureOn {
        /// How hard, from 0.0 (barely) to 1.0 (saturated).
        level: f32,
    },
    /// The pressure has gone.
    BackpressureOff,
}
