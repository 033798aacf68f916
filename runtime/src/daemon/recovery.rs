//! Restarting a daemon without losing or repeating events.
//!
//! A failed host becomes a [`Recovery`] ([`DaemonHost::into_recovery`]): the identity, the
//! last snapshot, the log of events processed since it, the last link the daemon produced
//! and the outputs not yet polled. [`DaemonHost::restore`] gives a fresh daemon (from the
//! factory) the snapshot's state and replays the log:
//!
//! - **No accepted event lost.** Every event that succeeded since the snapshot is in the
//!   log. Events that failed are not: they are recorded as failures and their effect is
//!   discarded with the failed instance.
//! - **None processed twice.** The fresh daemon starts from the snapshot, which reflects
//!   exactly the inputs up to `last_input_seq`, and sees each logged event once.
//! - **No output published twice.** Replayed outputs re-derive the chain. Those at or below
//!   `produced` (the last link produced before the failure, whether polled or carried in
//!   `undelivered`) are checked and suppressed; only outputs beyond it are published.
//! - **The chain never forks.** If the replay does not reproduce `produced` (a
//!   nondeterministic daemon), the host keeps the chain as published — it resumes from
//!   `produced` — and reports a divergence.
//!
//! The same path restores a daemon from a snapshot alone ([`Recovery::from_snapshot`]),
//! e.g. `spawn_from_snapshot` on another node.

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

use netrun_messages::{CausalChain, CausalLink, Identity};
use thiserror::Error;

use super::MeshDaemon;
use super::config::{ConfigError, HostConfig};
use super::host::{
    DaemonHost, DaemonStats, Failure, FailureReason, FailureStage, Replay, panic_message,
};
use super::log::LoggedInput;
use super::output::Output;
use super::snapshot::{DaemonSnapshot, SnapshotError};

/// Everything needed to restart a daemon where it stopped.
#[derive(Debug, Clone)]
pub struct Recovery {
    /// The daemon's identity.
    pub identity: Identity,
    /// The host configuration.
    pub config: HostConfig,
    /// The last snapshot.
    pub snapshot: DaemonSnapshot,
    /// Events processed since the snapshot, in input order.
    pub log: Vec<LoggedInput>,
    /// The last link produced before the failure; outputs up to it are not published again.
    pub produced: CausalLink,
    /// Outputs produced but not yet polled; handed out first after the restore.
    pub undelivered: Vec<Output>,
    /// The last input seq given out.
    pub accepted_through: u64,
    /// The last control id delivered.
    pub last_control_id: u64,
    /// Counters carried across the restart.
    pub stats: DaemonStats,
}

/// What a restore did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RestoreReport {
    /// Logged events replayed.
    pub replayed: u64,
    /// Logged events whose replay returned an error (skipped; counted as failures).
    pub skipped: u64,
    /// Replayed outputs suppressed because they had been produced before.
    pub suppressed: u64,
    /// Replayed outputs beyond `produced`, published now.
    pub emitted: u64,
    /// The replay did not reproduce `produced`; the chain resumed from `produced`.
    pub divergent: bool,
}

/// Why a restore failed.
#[derive(Debug, Error)]
pub enum RestoreError {
    /// The host configuration is out of range.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The snapshot is not this identity's, or its signature does not verify.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// The recovery's parts do not fit together.
    #[error("inconsistent recovery: {0}")]
    Inconsistent(&'static str),
    /// The fresh daemon failed restoring the state or replaying an event.
    #[error("{0}")]
    Failed(Failure),
}

/// A failed restore, with the recovery to try again with. If a replayed event made the
/// daemon panic, that event has been removed from `recovery.log` (and recorded as a
/// failure), so the next attempt gets past it.
#[derive(Debug)]
pub struct RestoreFailure {
    /// Why.
    pub error: RestoreError,
    /// The recovery, possibly pruned.
    pub recovery: Box<Recovery>,
}

impl Recovery {
    /// A recovery from a snapshot alone: nothing to replay, the chain continues from the
    /// snapshot's head.
    pub fn from_snapshot(identity: Identity, config: HostConfig, snapshot: DaemonSnapshot) -> Self {
        Self {
            produced: snapshot.head,
            accepted_through: snapshot.last_input_seq,
            identity,
            config,
            snapshot,
            log: Vec::new(),
            undelivered: Vec::new(),
            last_control_id: 0,
            stats: DaemonStats::default(),
        }
    }

    fn check(&self) -> Result<(), RestoreError> {
        self.config.validate()?;
        self.snapshot.verify(&self.identity.entity_id())?;
        let head = &self.snapshot.head;
        if self.produced.origin != head.origin {
            return Err(RestoreError::Inconsistent(
                "produced link of another origin",
            ));
        }
        if self.produced.seq < head.seq || (self.produced.seq == head.seq && self.produced != *head)
        {
            return Err(RestoreError::Inconsistent(
                "produced link is behind the snapshot",
            ));
        }
        let increasing = self.log.windows(2).all(|w| w[0].input_seq < w[1].input_seq);
        if !increasing {
            return Err(RestoreError::Inconsistent("log input seqs do not increase"));
        }
        Ok(())
    }
}

impl DaemonHost {
    /// Turns this host (usually a failed one) into what [`restore`](Self::restore) needs.
    /// Seals the open batch first; the daemon instance is dropped.
    pub fn into_recovery(mut self) -> Recovery {
        self.seal();
        let Self {
            daemon,
            identity,
            config,
            chain,
            input_seq,
            log,
            snapshot,
            out,
            last_control_id,
            stats,
            ..
        } = self;
        // A failed daemon may panic again while being dropped; that must not escape.
        let _ = catch_unwind(AssertUnwindSafe(move || drop(daemon)));
        Recovery {
            identity,
            config,
            snapshot,
            log: log.to_vec(),
            produced: *chain.head(),
            undelivered: out.into_iter().collect(),
            accepted_through: input_seq,
            last_control_id,
            stats,
        }
    }

    /// Restores `daemon` (fresh from its factory) from `recovery`: verifies the snapshot,
    /// restores its state, replays the log and resumes the chain (see the module docs).
    pub fn restore(
        now: Instant,
        daemon: Box<dyn MeshDaemon>,
        mut recovery: Recovery,
    ) -> Result<(Self, RestoreReport), RestoreFailure> {
        let give_back = |error, recovery| RestoreFailure {
            error,
            recovery: Box::new(recovery),
        };
        if let Err(error) = recovery.check() {
            return Err(give_back(error, recovery));
        }
        let assembled = Self::assemble(
            daemon,
            recovery.identity.clone(),
            recovery.config,
            recovery.snapshot.clone(),
        );
        let mut host = match assembled {
            Ok(host) => host,
            Err(failure) => return Err(give_back(RestoreError::Failed(failure), recovery)),
        };
        if let Some(state) = recovery.snapshot.state.clone() {
            let daemon = &mut host.daemon;
            let reason = match catch_unwind(AssertUnwindSafe(|| daemon.restore(state))) {
                Ok(Ok(())) => None,
                Ok(Err(error)) => Some(FailureReason::Error(error)),
                Err(payload) => Some(FailureReason::Panic(panic_message(payload.as_ref()))),
            };
            if let Some(reason) = reason {
                let failure = Failure {
                    stage: FailureStage::Restore,
                    input_seq: None,
                    reason,
                };
                return Err(give_back(RestoreError::Failed(failure), recovery));
            }
        }
        host.stats = recovery.stats.clone();
        host.last_control_id = recovery.last_control_id;
        host.out = recovery.undelivered.iter().cloned().collect();

        let mut report = RestoreReport::default();
        let mut replay = Replay {
            produced: recovery.produced,
            suppressed: 0,
            emitted: 0,
            divergent: false,
        };
        let mut index = 0;
        while index < recovery.log.len() {
            let entry = &recovery.log[index];
            index += 1;
            if entry.input_seq <= recovery.snapshot.last_input_seq {
                continue;
            }
            host.input_seq = entry.input_seq;
            let outcome = host
                .call_process(&entry.event, FailureStage::Replay, entry.input_seq)
                .and_then(|payloads| {
                    host.link(now, payloads, Some(&mut replay))
                        .map_err(|reason| Failure {
                            stage: FailureStage::Replay,
                            input_seq: Some(entry.input_seq),
                            reason,
                        })
                });
            match outcome {
                Ok(()) => {
                    host.log.push(entry.clone());
                    report.replayed += 1;
                }
                Err(failure) if matches!(failure.reason, FailureReason::Error(_)) => {
                    // An error leaves the state as it was: skip the event and go on.
                    host.record(failure);
                    report.skipped += 1;
                }
                Err(failure) => {
                    // This instance is poisoned. Drop the event from the recovery so the
                    // next attempt gets past it, and carry the failure in its counters.
                    recovery.log.remove(index - 1);
                    recovery.stats.failures += 1;
                    recovery.stats.last_failure = Some(failure.clone());
                    return Err(give_back(RestoreError::Failed(failure), recovery));
                }
            }
        }
        if host.chain.head().seq < replay.produced.seq {
            // The replay produced less than before: keep the chain as published.
            replay.divergent = true;
            host.chain = CausalChain::resume(replay.produced);
        }
        host.input_seq = host.input_seq.max(recovery.accepted_through);
        host.since_snapshot = u32::try_from(host.log.len()).unwrap_or(u32::MAX);
        report.suppressed = replay.suppressed;
        report.emitted = replay.emitted;
        report.divergent = replay.divergent;
        host.stats.replayed += report.replayed;
        host.stats.suppressed += report.suppressed;
        host.stats.divergences += u64::from(report.divergent);
        Ok((host, report))
    }
}

impl fmt::Display for RestoreFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "restore failed: {}", self.error)
    }
}

impl std::error::Error for RestoreFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}
