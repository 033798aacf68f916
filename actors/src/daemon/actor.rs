//! `DaemonHost{origin}`: the actor that drives one daemon's sans-IO host.
//!
//! Every message is handled in one critical section over the record's mutex: take the
//! host, call it, drain its outputs, release the lock, publish. After every message the
//! actor arms the batch-seal timer if the host has an open batch, and fails (returns an
//! error to its supervisor) if the host has failed, leaving the failed host in the record
//! for the next incarnation to restore.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use netrun_runtime::daemon::{
    ControlError, ControlOutcome, DaemonControl, DaemonHealth, DaemonHost, DaemonSnapshot,
    DaemonStats, DeliverError, Delivered, HostState, SnapshotRefusal,
};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::task::JoinHandle;
use tracing::{debug, info, info_span, warn};

use super::record::{DaemonInput, DaemonRecord, Slot};
use super::{now, sampled, span_int};

/// Stop reason of a daemon that shut down on request (the supervisor's clean
/// `shutdown` reason, so a transient child is not restarted).
const STOP_REASON: &str = "shutdown";

/// The `DaemonHost{origin}` actor (see the [module docs](super)).
#[derive(Debug, Clone, Copy, Default)]
pub struct DaemonHostActor;

/// Startup input of every incarnation: the record it hosts.
#[derive(Debug, Clone)]
pub struct DaemonArgs {
    /// The daemon's record, shared with the node and the other incarnations.
    pub record: Arc<DaemonRecord>,
}

/// Messages a daemon host handles. Every request carries its reply port.
#[derive(Debug)]
pub enum DaemonMsg {
    /// Process one input; the reply says whether it was accepted and processed.
    Deliver(DaemonInput, RpcReplyPort<Result<Delivered, DeliverError>>),
    /// Process one input and reply with the payloads it produced (they are published as
    /// usual): the request/response path a served nRPC service uses.
    Ask(DaemonInput, RpcReplyPort<Result<Answer, DeliverError>>),
    /// Process inputs in order, stopping at the first that is not processed.
    DeliverMany(Vec<DaemonInput>, RpcReplyPort<DeliveredMany>),
    /// Take a snapshot now and return it.
    Snapshot(RpcReplyPort<Result<DaemonSnapshot, SnapshotRefusal>>),
    /// Deliver a control signal (at most once: it gets the record's next control id).
    Control(
        DaemonControl,
        RpcReplyPort<Result<ControlOutcome, ControlError>>,
    ),
    /// The daemon's state, health and counters.
    Status(RpcReplyPort<HostStatus>),
    /// Stop: deliver `Shutdown { grace }`, seal, take a final snapshot, reply with it and
    /// stop cleanly (the supervisor does not restart a daemon that shut down).
    Shutdown {
        /// The grace period told to the daemon.
        grace: Duration,
        /// The final snapshot, if one could be taken.
        reply: RpcReplyPort<Option<DaemonSnapshot>>,
    },
    /// The open batch's delay may have run out (timer).
    Seal,
    /// Time-based snapshot (interval timer).
    SnapshotDue,
}

/// What a [`DaemonMsg::Ask`] got: the input's place and the daemon's outputs for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Where the input and its outputs landed.
    pub delivered: Delivered,
    /// The payloads the daemon produced for the input, in chain order.
    pub outputs: Vec<Bytes>,
}

/// What a [`DaemonMsg::DeliverMany`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeliveredMany {
    /// Inputs accepted and processed, from the first.
    pub processed: usize,
    /// Outputs they produced.
    pub outputs: usize,
    /// Why the input after the processed ones was not processed, if one was not.
    pub error: Option<DeliverError>,
}

/// A daemon's state, health and counters.
#[derive(Debug, Clone, PartialEq)]
pub struct HostStatus {
    /// The host's state.
    pub state: HostState,
    /// The daemon's own view of its health (a failed host is unhealthy).
    pub health: DaemonHealth,
    /// The daemon's load, 0.0..=1.0.
    pub saturation: f32,
    /// The chain's last seq.
    pub head_seq: u64,
    /// The last input seq given out.
    pub input_seq: u64,
    /// Events in the input log (since the last snapshot).
    pub log_len: usize,
    /// Counters and the last failure.
    pub stats: DaemonStats,
}

/// State of one incarnation.
#[derive(Debug)]
pub struct DaemonHostState {
    record: Arc<DaemonRecord>,
    seal_armed: bool,
    interval: Option<JoinHandle<()>>,
}

impl HostStatus {
    pub(super) fn of(host: &mut DaemonHost) -> Self {
        Self {
            state: host.state(),
            health: host.health(),
            saturation: host.saturation(),
            head_seq: host.head().seq,
            input_seq: host.input_seq(),
            log_len: host.log_len(),
            stats: host.stats().clone(),
        }
    }
}

impl Actor for DaemonHostActor {
    type Msg = DaemonMsg;
    type State = DaemonHostState;
    type Arguments = DaemonArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: DaemonArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let record = args.record;
        let incarnation = record.begin_incarnation();
        if incarnation > 1 {
            restore(&record, incarnation)?;
        }
        if let Some(every) = record.options().snapshot_interval {
            // Ends by itself once this incarnation is no longer running.
            let interval = myself.send_interval(every, || DaemonMsg::SnapshotDue);
            return Ok(DaemonHostState {
                record,
                seal_armed: false,
                interval: Some(interval),
            });
        }
        Ok(DaemonHostState {
            record,
            seal_armed: false,
            interval: None,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Outputs a restore carried over may sit in an open batch.
        state.arm_seal(&myself);
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: DaemonMsg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            DaemonMsg::Deliver(input, reply) => {
                let result = state.deliver(std::iter::once(input), 1, None);
                state.record.release(1);
                let _ = reply.send(result.delivered());
            }
            DaemonMsg::Ask(input, reply) => {
                let mut outputs = Vec::new();
                let result = state.deliver(std::iter::once(input), 1, Some(&mut outputs));
                state.record.release(1);
                let _ = reply.send(
                    result
                        .delivered()
                        .map(|delivered| Answer { delivered, outputs }),
                );
            }
            DaemonMsg::DeliverMany(inputs, reply) => {
                let n = inputs.len();
                let result = state.deliver(inputs.into_iter(), n, None);
                state.record.release(n);
                let _ = reply.send(DeliveredMany {
                    processed: result.processed,
                    outputs: result.outputs,
                    error: result.error,
                });
            }
            DaemonMsg::Snapshot(reply) => {
                let result = state.with_host(|host| host.take_snapshot().cloned());
                let _ = reply.send(result.unwrap_or(Err(SnapshotRefusal::HostFailed)));
            }
            DaemonMsg::Control(control, reply) => {
                let id = state.record.next_control_id();
                let result = state.with_host(|host| host.control(id, control));
                let _ = reply.send(result.unwrap_or(Err(ControlError::HostFailed)));
            }
            DaemonMsg::Status(reply) => {
                let status = state.with_host(HostStatus::of);
                let _ = reply.send(status.unwrap_or_else(|| state.record.peek_status()));
            }
            DaemonMsg::Shutdown { grace, reply } => {
                let id = state.record.next_control_id();
                let snapshot = state
                    .with_host(|host| {
                        let _ = host.control(id, DaemonControl::Shutdown { grace });
                        host.take_snapshot().ok().cloned()
                    })
                    .flatten();
                let _ = reply.send(snapshot);
                info!(origin = %state.record.origin(), "daemon shut down");
                myself.stop(Some(STOP_REASON.to_owned()));
                return Ok(());
            }
            DaemonMsg::Seal => {
                state.seal_armed = false;
                let now = now();
                state.with_host(|host| host.handle_timeout(now));
            }
            DaemonMsg::SnapshotDue => {
                state.with_host(|host| {
                    if host.log_len() > 0 {
                        let _ = host.take_snapshot();
                    }
                });
            }
        }
        state.arm_seal(&myself);
        state.check_failed()
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(interval) = state.interval.take() {
            interval.abort();
        }
        // Stopped by the supervisor (node shutdown, forced stop) rather than by a
        // `Shutdown` message: the daemon still hears that it is shutting down, and what
        // it produced is sealed and snapshotted for whoever restores it.
        let id = state.record.next_control_id();
        state.with_host(|host| {
            if matches!(host.state(), HostState::Running | HostState::Draining) {
                let _ = host.control(
                    id,
                    DaemonControl::Shutdown {
                        grace: Duration::ZERO,
                    },
                );
                let _ = host.take_snapshot();
            }
        });
        Ok(())
    }
}

/// The running tally of one delivery message.
struct Tally {
    processed: usize,
    outputs: usize,
    last_input_seq: u64,
    head_seq: u64,
    error: Option<DeliverError>,
}

impl Tally {
    /// The result of a one-input delivery.
    fn delivered(&self) -> Result<Delivered, DeliverError> {
        match self.error {
            Some(error) => Err(error),
            None => Ok(Delivered {
                input_seq: self.last_input_seq,
                outputs: self.outputs,
                head_seq: self.head_seq,
            }),
        }
    }
}

impl DaemonHostState {
    /// Feeds `inputs` one at a time until one is not processed; publishes the outputs.
    /// With `answer`, the payloads the daemon produces are also appended to it.
    fn deliver(
        &mut self,
        inputs: impl Iterator<Item = DaemonInput>,
        hint: usize,
        mut answer: Option<&mut Vec<Bytes>>,
    ) -> Tally {
        let mut tally = Tally {
            processed: 0,
            outputs: 0,
            last_input_seq: 0,
            head_seq: 0,
            error: None,
        };
        let mut outputs = Vec::new();
        {
            let mut cell = self.record.lock();
            let now = now();
            let cell = &mut *cell;
            let Slot::Live(host) = &mut cell.slot else {
                tally.error = Some(DeliverError::Failed);
                return tally;
            };
            outputs.reserve(hint.min(64));
            for input in inputs {
                let Some(event) = cell.input.event(input) else {
                    tally.error = Some(DeliverError::Backpressure);
                    break;
                };
                let next = host.input_seq() + 1;
                let process = |host: &mut DaemonHost| match answer.as_deref_mut() {
                    Some(answer) => host.deliver_answering(now, event, answer),
                    None => host.deliver(now, event),
                };
                let result = if sampled(next) {
                    // Its parent is the span the request arrived with (ractor carries it),
                    // so a traced delivery shows the processing inside its own trace.
                    let span = info_span!(
                        "netrun.daemon.process",
                        origin = %self.record.origin(),
                        input_seq = span_int(next),
                        outputs = tracing::field::Empty,
                    );
                    let _entered = span.enter();
                    let result = process(host);
                    if let Ok(delivered) = &result {
                        span.record("outputs", span_int(delivered.outputs));
                    }
                    result
                } else {
                    process(host)
                };
                while let Some(output) = host.poll_output() {
                    outputs.push(output);
                }
                match result {
                    Ok(delivered) => {
                        tally.processed += 1;
                        tally.outputs += delivered.outputs;
                        tally.last_input_seq = delivered.input_seq;
                        tally.head_seq = delivered.head_seq;
                    }
                    Err(error) => {
                        if let DeliverError::Processing { input_seq, restart } = error {
                            let failure = host
                                .last_failure()
                                .map_or_else(String::new, ToString::to_string);
                            warn!(
                                origin = %self.record.origin(), input_seq, restart, %failure,
                                "daemon failed processing an event"
                            );
                        }
                        tally.error = Some(error);
                        break;
                    }
                }
            }
        }
        self.record.publish(outputs);
        tally
    }

    /// Runs `f` on the live host and publishes what it produced; `None` if there is no
    /// live host (which a running incarnation always has).
    fn with_host<R>(&mut self, f: impl FnOnce(&mut DaemonHost) -> R) -> Option<R> {
        let mut outputs = Vec::new();
        let result = {
            let mut cell = self.record.lock();
            let Slot::Live(host) = &mut cell.slot else {
                return None;
            };
            let result = f(host);
            while let Some(output) = host.poll_output() {
                outputs.push(output);
            }
            result
        };
        self.record.publish(outputs);
        Some(result)
    }

    /// Schedules a `Seal` for when the open batch's delay runs out, once.
    fn arm_seal(&mut self, myself: &ActorRef<DaemonMsg>) {
        if self.seal_armed {
            return;
        }
        let deadline = match &self.record.lock().slot {
            Slot::Live(host) => host.poll_timeout(),
            _ => None,
        };
        if let Some(deadline) = deadline {
            let wait = deadline.saturating_duration_since(now());
            self.seal_armed = true;
            myself.send_after(wait, || DaemonMsg::Seal);
        }
    }

    /// Fails this incarnation if the host has failed; the host stays in the record.
    fn check_failed(&self) -> Result<(), ActorProcessingErr> {
        let cell = self.record.lock();
        let Slot::Live(host) = &cell.slot else {
            return Err("daemon host missing".into());
        };
        if host.state() != HostState::Failed {
            return Ok(());
        }
        let failure = host
            .last_failure()
            .map_or_else(|| "failed".to_owned(), ToString::to_string);
        warn!(
            origin = %self.record.origin(), %failure,
            "daemon failed; its supervisor restarts it"
        );
        Err(format!("daemon failed: {failure}").into())
    }
}

/// Brings the record's host back for incarnation `incarnation` (> 1): a healthy host (the
/// previous incarnation was killed) is kept; a failed one is turned into a recovery and
/// restored from a fresh daemon (snapshot + replay).
fn restore(record: &DaemonRecord, incarnation: u32) -> Result<(), ActorProcessingErr> {
    let restarts = incarnation - 1;
    let span = info_span!(
        "netrun.daemon.restart",
        origin = %record.origin(),
        kind = record.kind(),
        restarts = span_int(restarts),
        replayed = tracing::field::Empty,
        suppressed = tracing::field::Empty,
        divergent = tracing::field::Empty,
    );
    let _entered = span.enter();
    let mut outputs = Vec::new();
    let result = {
        let mut cell = record.lock();
        let recovery = match std::mem::replace(&mut cell.slot, Slot::Empty) {
            Slot::Live(mut host) if host.state() != HostState::Failed => {
                host.set_restarts(restarts);
                cell.slot = Slot::Live(host);
                debug!("daemon host resumed as is");
                return Ok(());
            }
            Slot::Live(host) => Box::new(host.into_recovery()),
            Slot::Recovering(recovery) => recovery,
            Slot::Empty => return Err("daemon record has no host".into()),
        };
        match record.build() {
            Err(error) => {
                cell.slot = Slot::Recovering(recovery);
                Err(error)
            }
            Ok(daemon) => match DaemonHost::restore(now(), daemon, *recovery) {
                Ok((mut host, report)) => {
                    host.set_restarts(restarts);
                    span.record("replayed", span_int(report.replayed));
                    span.record("suppressed", span_int(report.suppressed));
                    span.record("divergent", report.divergent);
                    while let Some(output) = host.poll_output() {
                        outputs.push(output);
                    }
                    info!(
                        replayed = report.replayed,
                        skipped = report.skipped,
                        suppressed = report.suppressed,
                        emitted = report.emitted,
                        divergent = report.divergent,
                        "daemon restored from its snapshot"
                    );
                    cell.slot = Slot::Live(Box::new(host));
                    Ok(())
                }
                Err(failure) => {
                    let error = failure.error.to_string();
                    cell.slot = Slot::Recovering(failure.recovery);
                    Err(format!("restore failed: {error}"))
                }
            },
        }
    };
    record.publish(outputs);
    result.map_err(|error| {
        warn!(%error, "daemon restart failed; its supervisor retries");
        error.into()
    })
}
