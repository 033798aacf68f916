//! The supervisor's state and the restart engine it drives.
//!
//! Flow of one child exit:
//! 1. `on_exit` finds the child by the cell id of its current incarnation (events from
//!    older incarnations match nothing and are ignored) and clears its slot.
//! 2. `process` decides: no restart (transient clean exit, temporary) → stopped or removed;
//!    otherwise count it against the intensity (not for `Migrated`), ask the gate and the
//!    backoff (crashes only), stop the siblings the strategy names in reverse start order,
//!    and give every affected child the same restart token.
//! 3. With no delay the plan runs at once (`run_plan`, start order); otherwise a
//!    `RestartDue(token)` message is scheduled. A failed start is fed back into step 2
//!    as a crash.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use ractor::{ActorCell, ActorId, ActorRef, RactorErr};

use super::msg::{FlatSnapshot, SupervisorMsg};
use crate::backoff::Backoff;
use crate::config::SupervisorConfig;
use crate::error::SupervisorError;
use crate::exit::{ExitReason, reason};
use crate::gate::{CrashLoopGate, GateDecision};
use crate::intensity::IntensityTracker;
use crate::snapshot::{ChildSnapshot, ChildState, SupervisorStats, TreeSnapshot};
use crate::spec::{ChildKind, ChildSpec, Restart};

/// How long to wait for a kill to take effect before giving up on a child. A kill only
/// lands at the child's next await point; one that never yields cannot be reclaimed.
const KILL_WAIT: Duration = Duration::from_secs(1);

/// Current time on tokio's clock, so paused-time tests drive the policies.
pub(crate) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

#[derive(Debug, Clone, Copy)]
enum Status {
    Running,
    Restarting,
    BackingOff(Instant),
    Gated(Instant),
    Stopped,
}

pub(crate) struct Child {
    spec: ChildSpec,
    cell: Option<ActorCell>,
    status: Status,
    restarts: u64,
    started_once: bool,
    last_exit: Option<ExitReason>,
    backoff: Backoff,
    gate: CrashLoopGate,
    pending: Option<u64>,
}

pub(crate) struct State {
    name: String,
    config: SupervisorConfig,
    children: Vec<Child>,
    intensity: IntensityTracker,
    stats: SupervisorStats,
    next_token: u64,
}

impl State {
    pub(crate) fn new(name: String, config: SupervisorConfig) -> Self {
        Self {
            name,
            config,
            children: Vec::new(),
            intensity: IntensityTracker::new(config.intensity),
            stats: SupervisorStats::default(),
            next_token: 0,
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    fn index_of(&self, id: &str) -> Option<usize> {
        self.children.iter().position(|c| c.spec.id == id)
    }

    /// Adds a child at the end of the start order and starts it.
    pub(crate) async fn add(
        &mut self,
        myself: &ActorCell,
        spec: ChildSpec,
    ) -> Result<(), SupervisorError> {
        if self.index_of(&spec.id).is_some() {
            return Err(SupervisorError::DuplicateChild(spec.id));
        }
        self.children.push(Child {
            backoff: Backoff::new(self.config.backoff),
            gate: CrashLoopGate::new(self.config.gate),
            spec,
            cell: None,
            status: Status::Stopped,
            restarts: 0,
            started_once: false,
            last_exit: None,
            pending: None,
        });
        let idx = self.children.len() - 1;
        if let Err(source) = self.start(myself, idx).await {
            let child = self.children.remove(idx);
            return Err(SupervisorError::Spawn {
                id: child.spec.id,
                source,
            });
        }
        Ok(())
    }

    /// Stops a child within its shutdown timeout and forgets it.
    pub(crate) async fn remove(&mut self, id: &str) -> Result<(), SupervisorError> {
        let idx = self
            .index_of(id)
            .ok_or_else(|| SupervisorError::UnknownChild(id.into()))?;
        self.stop_child(idx).await;
        self.children.remove(idx);
        tracing::info!(supervisor = %self.name, child = %id, "child removed");
        Ok(())
    }

    pub(crate) fn child(&self, id: &str) -> Option<&ChildSpec> {
        self.index_of(id).map(|i| &self.children[i].spec)
    }

    async fn start(&mut self, myself: &ActorCell, idx: usize) -> Result<(), ractor::SpawnErr> {
        let factory = self.children[idx].spec.factory.clone();
        let cell = factory(myself.clone()).await?;
        let child = &mut self.children[idx];
        let generation = child.spec.slot.next_generation();
        child.spec.slot.set(cell.clone(), generation);
        child.cell = Some(cell);
        child.status = Status::Running;
        child.pending = None;
        child.backoff.record_start(now());
        self.stats.starts += 1;
        if child.started_once {
            child.restarts += 1;
            self.stats.restarts += 1;
            tracing::info!(
                supervisor = %self.name, child = %child.spec.id, generation,
                restarts = child.restarts, counter.restarts = self.stats.restarts,
                "child restarted"
            );
        } else {
            tracing::debug!(supervisor = %self.name, child = %child.spec.id, generation, "child started");
        }
        child.started_once = true;
        Ok(())
    }

    /// Stops the running incarnation of child `idx`: stop, wait its timeout, then kill.
    async fn stop_child(&mut self, idx: usize) {
        let child = &mut self.children[idx];
        let Some(cell) = child.cell.take() else {
            return;
        };
        child.spec.slot.clear();
        self.stats.stops += 1;
        let timeout = child.spec.shutdown;
        let exit = match cell
            .stop_and_wait(Some(reason::SHUTDOWN.into()), Some(timeout))
            .await
        {
            Ok(()) => ExitReason::Shutdown,
            Err(RactorErr::Timeout) => {
                self.stats.kills += 1;
                tracing::warn!(
                    supervisor = %self.name, child = %child.spec.id, ?timeout,
                    "child ignored stop; killing"
                );
                if cell.kill_and_wait(Some(KILL_WAIT)).await.is_err() {
                    tracing::error!(supervisor = %self.name, child = %child.spec.id, "child survived kill");
                }
                ExitReason::Killed
            }
            // Already gone; its own exit event (if any) is now stale and ignored.
            Err(_) => ExitReason::Shutdown,
        };
        child.last_exit = Some(exit);
    }

    /// Ordered shutdown: every child, reverse start order.
    pub(crate) async fn stop_all(&mut self) {
        tracing::info!(supervisor = %self.name, children = self.children.len(), "shutting down");
        for idx in (0..self.children.len()).rev() {
            self.stop_child(idx).await;
            let child = &mut self.children[idx];
            child.status = Status::Stopped;
            child.pending = None;
        }
    }

    /// Starts the initial children in order; on failure stops those already started.
    pub(crate) async fn start_initial(
        &mut self,
        myself: &ActorCell,
        specs: Vec<ChildSpec>,
    ) -> Result<(), SupervisorError> {
        for spec in specs {
            if let Err(err) = self.add(myself, spec).await {
                self.stop_all().await;
                return Err(err);
            }
        }
        Ok(())
    }

    /// A child incarnation ended (from a supervision event).
    pub(crate) async fn on_exit(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        cell_id: ActorId,
        exit: ExitReason,
    ) -> Result<(), SupervisorError> {
        let Some(idx) = self
            .children
            .iter()
            .position(|c| c.cell.as_ref().is_some_and(|cell| cell.get_id() == cell_id))
        else {
            return Ok(());
        };
        self.stats.exits += 1;
        let child = &mut self.children[idx];
        child.cell = None;
        child.spec.slot.clear();
        child.last_exit = Some(exit.clone());
        tracing::info!(
            supervisor = %self.name, child = %child.spec.id, generation = child.spec.slot.generation(),
            exit = %exit, "child exited"
        );
        let id = child.spec.id.clone();
        self.process(myself, VecDeque::from([(id, exit)])).await
    }

    /// A scheduled restart plan is due.
    pub(crate) async fn on_restart_due(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        token: u64,
    ) -> Result<(), SupervisorError> {
        let failures = self.run_plan(myself, token).await;
        self.process(myself, failures).await
    }

    async fn process(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        mut queue: VecDeque<(String, ExitReason)>,
    ) -> Result<(), SupervisorError> {
        while let Some((id, exit)) = queue.pop_front() {
            let Some(idx) = self.index_of(&id) else {
                continue;
            };
            let restart = self.children[idx].spec.restart;
            if !restart.should_restart(&exit) {
                if restart == Restart::Temporary {
                    self.children.remove(idx);
                } else {
                    self.children[idx].status = Status::Stopped;
                    self.children[idx].pending = None;
                }
                continue;
            }
            let now = now();
            if exit != ExitReason::Migrated {
                if let Err(exceeded) = self.intensity.record(now) {
                    tracing::error!(
                        supervisor = %self.name, child = %id, restarts = exceeded.restarts,
                        period = ?self.config.intensity.period, "restart intensity exceeded; escalating"
                    );
                    return Err(SupervisorError::IntensityExceeded {
                        restarts: exceeded.restarts,
                        period: self.config.intensity.period,
                    });
                }
            }
            let plan_status = if exit.is_crash() {
                self.crash_delay(idx, now)
            } else {
                Status::Restarting
            };
            let token = self.next_token;
            self.next_token += 1;
            let range = self.config.strategy.affected(idx, self.children.len());
            // Stop the running siblings in reverse start order; they restart with `idx`.
            // Siblings already waiting on an earlier plan join this one.
            let mut members = Vec::new();
            let mut temporaries = Vec::new();
            for j in range.rev() {
                let sibling = &self.children[j];
                if j == idx {
                    members.push(sibling.spec.id.clone());
                    continue;
                }
                let was_running = sibling.cell.is_some();
                let was_pending = sibling.pending.is_some();
                let keeps_own_plan =
                    was_pending && sibling.status.deadline() > plan_status.deadline();
                if was_running {
                    self.stop_child(j).await;
                }
                if keeps_own_plan {
                    // Still waiting out its own backoff or gate, which ends after this
                    // plan: it keeps its plan. Only later children can be pending here,
                    // so start order is kept.
                    continue;
                }
                if was_running || was_pending {
                    let sibling = &self.children[j];
                    if sibling.spec.restart == Restart::Temporary {
                        // Temporary children are stopped with the group, never restarted.
                        temporaries.push(sibling.spec.id.clone());
                    } else {
                        members.push(sibling.spec.id.clone());
                    }
                }
            }
            self.children.retain(|c| !temporaries.contains(&c.spec.id));
            for child in &mut self.children {
                if members.contains(&child.spec.id) {
                    child.pending = Some(token);
                    child.status = plan_status;
                }
            }
            match plan_status {
                Status::BackingOff(until) | Status::Gated(until) => {
                    let wait = until.saturating_duration_since(now);
                    tracing::debug!(supervisor = %self.name, child = %id, ?wait, "restart delayed");
                    myself.send_after(wait, move || SupervisorMsg::RestartDue(token));
                }
                _ => queue.extend(self.run_plan(myself, token).await),
            }
        }
        Ok(())
    }

    /// Delay before restarting a crashed child: the gate first, then the backoff.
    fn crash_delay(&mut self, idx: usize, now: Instant) -> Status {
        let child = &mut self.children[idx];
        match child.gate.on_crash(now) {
            GateDecision::Engaged { until } => {
                self.stats.gates_engaged += 1;
                tracing::warn!(
                    supervisor = %self.name, child = %child.spec.id,
                    cooldown = ?until.saturating_duration_since(now),
                    counter.gates_engaged = self.stats.gates_engaged, "crash-loop gate engaged"
                );
                Status::Gated(until)
            }
            GateDecision::Open => {
                let delay = child.backoff.on_crash(now);
                if delay.is_zero() {
                    Status::Restarting
                } else {
                    Status::BackingOff(now + delay)
                }
            }
        }
    }

    /// Starts, in start order, every child waiting on `token`. Stops at the first failed
    /// start and reports it as a crash; the rest keep waiting and are re-planned with it.
    async fn run_plan(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        token: u64,
    ) -> VecDeque<(String, ExitReason)> {
        let cell = myself.get_cell();
        let mut failures = VecDeque::new();
        let mut idx = 0;
        while idx < self.children.len() {
            if self.children[idx].pending == Some(token) {
                if let Err(err) = self.start(&cell, idx).await {
                    let child = &mut self.children[idx];
                    let exit = ExitReason::Failed(format!("start failed: {err}"));
                    tracing::warn!(supervisor = %self.name, child = %child.spec.id, %exit, "restart failed");
                    child.last_exit = Some(exit.clone());
                    child.pending = None;
                    child.status = Status::Restarting;
                    failures.push_back((child.spec.id.clone(), exit));
                    break;
                }
            }
            idx += 1;
        }
        failures
    }

    pub(crate) fn snapshot(&mut self) -> FlatSnapshot {
        let now = now();
        let mut cells = Vec::new();
        let children = self
            .children
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if let (ChildKind::Supervisor, Some(cell)) = (c.spec.kind, &c.cell) {
                    cells.push((i, cell.clone()));
                }
                let ms = |until: Instant| {
                    u64::try_from(until.saturating_duration_since(now).as_millis())
                        .unwrap_or(u64::MAX)
                };
                let state = match c.status {
                    Status::Running => ChildState::Running,
                    Status::Restarting => ChildState::Restarting,
                    Status::BackingOff(until) => ChildState::BackingOff {
                        remaining_ms: ms(until),
                    },
                    Status::Gated(until) => ChildState::Gated {
                        remaining_ms: ms(until),
                    },
                    Status::Stopped => ChildState::Stopped,
                };
                ChildSnapshot {
                    id: c.spec.id.clone(),
                    kind: c.spec.kind,
                    restart: c.spec.restart,
                    state,
                    restarts: c.restarts,
                    generation: c.spec.slot.generation(),
                    last_exit: c.last_exit.clone(),
                    subtree: None,
                }
            })
            .collect();
        let tree = TreeSnapshot {
            name: self.name.clone(),
            strategy: self.config.strategy,
            restarts_in_period: self.intensity.count(now),
            stats: self.stats,
            children,
        };
        (tree, cells)
    }
}

impl Status {
    /// When a delayed restart is due; `None` (no delay) sorts first.
    fn deadline(self) -> Option<Instant> {
        match self {
            Status::BackingOff(until) | Status::Gated(until) => Some(until),
            _ => None,
        }
    }
}
