//! Supervisor configuration and startup arguments.

use serde::{Deserialize, Serialize};

use crate::backoff::BackoffConfig;
use crate::gate::CrashLoopConfig;
use crate::intensity::RestartIntensity;
use crate::spec::ChildSpec;
use crate::strategy::Strategy;

/// Restart policy of one supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SupervisorConfig {
    /// Which siblings restart together.
    pub strategy: Strategy,
    /// Supervisor-wide restart limit before escalating to the parent.
    pub intensity: RestartIntensity,
    /// Per-child delay between consecutive crash restarts.
    pub backoff: BackoffConfig,
    /// Per-child crash-loop gate.
    pub gate: CrashLoopConfig,
}

impl SupervisorConfig {
    /// Defaults with the given strategy.
    pub fn with_strategy(strategy: Strategy) -> Self {
        Self {
            strategy,
            ..Self::default()
        }
    }
}

/// Startup arguments: a name for logs and snapshots, the policy and the initial children
/// in start order.
#[derive(Debug, Clone)]
pub struct SupervisorArgs {
    /// Name shown in traces and snapshots (not registered with ractor).
    pub name: String,
    /// Restart policy.
    pub config: SupervisorConfig,
    /// Initial children, started in this order.
    pub children: Vec<ChildSpec>,
}

impl SupervisorArgs {
    /// A supervisor with no children yet.
    pub fn new(name: impl Into<String>, config: SupervisorConfig) -> Self {
        Self {
            name: name.into(),
            config,
            children: Vec::new(),
        }
    }

    /// Appends a child to the start order.
    pub fn child(mut self, spec: ChildSpec) -> Self {
        self.children.push(spec);
        self
    }
}
