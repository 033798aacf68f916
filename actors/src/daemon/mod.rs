//! Daemon hosting: one `DaemonHost{origin}` actor per daemon, and the actor that serves the
//! daemon control subprotocol (remote spawns and stops, capability queries).
//!
//! ```text
//!   DaemonHandle (node) ─ Deliver / Ask / DeliverMany / Snapshot / Control / Status / Shutdown ─┐
//!                                                                                                ▼
//!   DaemonHostActor (one incarnation) ── locks ──▶ DaemonRecord (outlives incarnations)
//!     │ feeds events one at a time                   ├ slot: Live(DaemonHost) | Recovering(Recovery)
//!     │ seals batches on a timer (poll_timeout)      ├ input chain for byte inputs
//!     │ snapshots on an interval                     ├ outputs: bounded broadcast + OutputSink seam
//!     │ fails when the host fails ─▶ supervisor      └ counters: incarnations, queued events
//!     ▼                                                        ▲
//!   supervisor (daemons subtree): backoff, crash-loop gate ────┘ restart: the next
//!   incarnation restores the host from the slot (snapshot + replay), nothing is lost
//!
//!   DAEMON envelopes ─▶ DaemonControlActor ─▶ DaemonService (the node): spawn, stop, capabilities
//!                        replies ─▶ DaemonClient waiters (request id, sender checked)
//! ```
//!
//! Why the host lives in a shared record and not in the actor's state: an actor that fails
//! loses its state without running `post_stop`, and so does one that is killed. The record
//! is created by the node at spawn, captured by the supervisor's child factory, and handed
//! to every incarnation; the host inside it is only ever touched under its mutex and never
//! across an `.await`, so it is consistent whenever an incarnation ends. A failed host is
//! turned into a [`Recovery`](netrun_runtime::daemon::Recovery) by the next incarnation and
//! restored from a fresh daemon; a restore that fails leaves the (pruned) recovery in the
//! slot for the attempt after.

mod actor;
mod client;
mod control;
mod record;

use std::time::Duration;

use netrun_messages::daemon::DaemonWiring;
use netrun_runtime::daemon::HostConfig;

pub use actor::{Answer, DaemonArgs, DaemonHostActor, DaemonMsg, DeliveredMany, HostStatus};
pub use client::{DaemonClient, RemoteError};
pub use control::{
    DaemonControlActor, DaemonControlArgs, DaemonControlMsg, DaemonService, MAX_SPAWNS_IN_FLIGHT,
    SpawnFuture, StopFuture,
};
pub use record::{DaemonInput, DaemonRecord, OutputSink, RecordState};

/// Most daemons one node hosts. Bounds the registry, the daemons subtree and the restart
/// intensity that subtree needs (see `netrun_supervisor::node_tree`).
pub const MAX_DAEMONS: usize = 1024;
/// Default capacity of a daemon's output broadcast, in outputs (a batch is one output). A
/// subscriber that falls further behind loses the oldest and is told how many.
pub const DEFAULT_OUTPUT_CAPACITY: usize = 1024;
/// Default bound on events sent to a daemon and not yet handled; beyond it `deliver` is
/// refused. Two default snapshot periods: enough to keep a busy daemon fed.
pub const DEFAULT_QUEUE_CAPACITY: usize = 8192;
/// Default interval of time-based snapshots (taken only if events arrived since the last).
pub const DEFAULT_SNAPSHOT_INTERVAL: Duration = Duration::from_secs(30);
/// Default grace period of a stop: the MeshOS stop grace period.
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(30);
/// A daemon's first inputs (by host input seq) that get a `netrun.daemon.process` span.
pub const TRACE_FIRST_EVENTS: u64 = 16;
/// After those, one input in this many is traced (input seq divisible by it); seqs continue
/// across restarts, so no input is traced twice.
pub const TRACE_EVERY: u64 = 1024;

/// How a node hosts one daemon.
#[derive(Debug, Clone, PartialEq)]
pub struct DaemonOptions {
    /// The sans-IO host's configuration (signing, snapshot cadence, log bounds).
    pub host: HostConfig,
    /// Take a snapshot this often if events were processed since the last; `None` relies on
    /// the event-count cadence alone.
    pub snapshot_interval: Option<Duration>,
    /// How long a stop waits for the daemon to finish before it is forced.
    pub stop_grace: Duration,
    /// Capacity of the output broadcast.
    pub output_capacity: usize,
    /// Events sent and not yet handled before `deliver` is refused.
    pub queue_capacity: usize,
    /// The nRPC services the daemon serves and the channels it reads, set up by the node
    /// that hosts it (also when it was placed there from another node).
    pub wiring: DaemonWiring,
}

impl Default for DaemonOptions {
    fn default() -> Self {
        Self {
            host: HostConfig::default(),
            snapshot_interval: Some(DEFAULT_SNAPSHOT_INTERVAL),
            stop_grace: DEFAULT_STOP_GRACE,
            output_capacity: DEFAULT_OUTPUT_CAPACITY,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            wiring: DaemonWiring::default(),
        }
    }
}

/// Current time on tokio's clock, so paused-time tests drive the host's timers.
fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

/// Whether the processed event with this input seq gets a `netrun.daemon.process` span.
fn sampled(input_seq: u64) -> bool {
    input_seq <= TRACE_FIRST_EVENTS || input_seq % TRACE_EVERY == 0
}

/// A count as a span field: `tracing-opentelemetry` exports `i64` fields as integers but
/// unsigned ones as text.
fn span_int(n: impl TryInto<i64>) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}
