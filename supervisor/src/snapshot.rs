//! Serializable view of a live supervision tree.

use serde::{Deserialize, Serialize};

use crate::exit::ExitReason;
use crate::spec::{ChildKind, Restart};
use crate::strategy::Strategy;

/// One supervisor and its children, nested supervisors included.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeSnapshot {
    /// Supervisor name.
    pub name: String,
    /// Its strategy.
    pub strategy: Strategy,
    /// Restarts counted in the current intensity window.
    pub restarts_in_period: u32,
    /// Lifetime counters of this supervisor incarnation.
    pub stats: SupervisorStats,
    /// Children in start order.
    pub children: Vec<ChildSnapshot>,
}

/// Counters a supervisor keeps about itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SupervisorStats {
    /// Child incarnations started (first starts and restarts).
    pub starts: u64,
    /// Restarts (starts after the first of a child).
    pub restarts: u64,
    /// Child exits seen, of any reason.
    pub exits: u64,
    /// Times a child's crash-loop gate engaged.
    pub gates_engaged: u64,
    /// Children stopped by this supervisor (restart of siblings, removal, shutdown).
    pub stops: u64,
    /// Of those, children killed after ignoring the stop for their timeout.
    pub kills: u64,
}

/// One child in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildSnapshot {
    /// Child id.
    pub id: String,
    /// Worker or supervisor.
    pub kind: ChildKind,
    /// Restart type.
    pub restart: Restart,
    /// Lifecycle state.
    pub state: ChildState,
    /// Restarts of this child under this supervisor incarnation.
    pub restarts: u64,
    /// Generation of the current (or last) incarnation; 0 if never started.
    pub generation: u64,
    /// Why the last incarnation ended.
    pub last_exit: Option<ExitReason>,
    /// For a running child supervisor, its own tree.
    pub subtree: Option<Box<TreeSnapshot>>,
}

/// Lifecycle state of a child.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ChildState {
    /// An incarnation is running.
    Running,
    /// Stopped as part of a restart; starts again shortly.
    Restarting,
    /// Waiting out its backoff delay.
    BackingOff {
        /// Time left before the restart.
        remaining_ms: u64,
    },
    /// Its crash-loop gate is engaged.
    Gated {
        /// Time left in the cooldown.
        remaining_ms: u64,
    },
    /// Not running and not going to be restarted.
    Stopped,
}

impl TreeSnapshot {
    /// Visits every child of this tree and its subtrees, depth first.
    pub fn walk<'a>(&'a self, visit: &mut dyn FnMut(&'a TreeSnapshot, &'a ChildSnapshot)) {
        for child in &self.children {
            visit(self, child);
            if let Some(sub) = &child.subtree {
                sub.walk(visit);
            }
        }
    }
}
