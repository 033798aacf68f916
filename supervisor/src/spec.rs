//! Child specifications: what to start, how to restart it, how long it may take to stop.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorCell, SpawnErr};
use serde::{Deserialize, Serialize};

use crate::child_ref::{ChildRef, Slot};
use crate::config::SupervisorArgs;
use crate::exit::ExitReason;

/// Default time a worker gets to stop before it is killed.
pub const DEFAULT_WORKER_SHUTDOWN: Duration = Duration::from_secs(5);
/// Default time a child supervisor gets to stop its own subtree; the MeshOS stop grace
/// period, since it covers a whole subtree of worker timeouts.
pub const DEFAULT_SUPERVISOR_SHUTDOWN: Duration = Duration::from_secs(30);

/// Future returned by a [`Factory`].
pub type SpawnFuture = Pin<Box<dyn Future<Output = Result<ActorCell, SpawnErr>> + Send>>;

/// Spawns one incarnation of a child linked to the supervisor cell it is given.
///
/// Called again for every restart, so it must rebuild the child's arguments (and any
/// resource they own) each time.
pub type Factory = Arc<dyn Fn(ActorCell) -> SpawnFuture + Send + Sync>;

/// When a child that exited is restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Restart {
    /// Always restarted.
    #[default]
    Permanent,
    /// Restarted only after an abnormal exit (`Failed`, `Killed`).
    Transient,
    /// Never restarted; removed from the supervisor when it exits.
    Temporary,
}

impl Restart {
    /// Whether an exit with `reason` leads to a restart.
    pub fn should_restart(self, reason: &ExitReason) -> bool {
        match self {
            Self::Permanent => true,
            Self::Transient => !reason.is_clean(),
            Self::Temporary => false,
        }
    }
}

/// What kind of actor a child is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChildKind {
    /// A leaf actor.
    #[default]
    Worker,
    /// A netrun supervisor; its subtree appears in snapshots.
    Supervisor,
}

/// Specification of one child of a supervisor.
///
/// A spec owns the slot behind its [`ChildRef`]s: clones of a spec share it, so a spec
/// should be added to one supervisor only.
#[derive(Clone)]
pub struct ChildSpec {
    pub(crate) id: String,
    pub(crate) restart: Restart,
    pub(crate) shutdown: Duration,
    pub(crate) kind: ChildKind,
    pub(crate) factory: Factory,
    pub(crate) slot: Arc<Slot>,
}

impl ChildSpec {
    /// A permanent worker started by `factory`.
    pub fn new<F, Fut>(id: impl Into<String>, factory: F) -> Self
    where
        F: Fn(ActorCell) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<ActorCell, SpawnErr>> + Send + 'static,
    {
        Self {
            id: id.into(),
            restart: Restart::Permanent,
            shutdown: DEFAULT_WORKER_SHUTDOWN,
            kind: ChildKind::Worker,
            factory: Arc::new(move |sup| Box::pin(factory(sup))),
            slot: Arc::new(Slot::default()),
        }
    }

    /// A permanent worker of actor type `A`; `make` builds a fresh actor and its arguments
    /// for every incarnation.
    pub fn actor<A, F>(id: impl Into<String>, make: F) -> Self
    where
        A: Actor,
        F: Fn() -> (A, A::Arguments) + Send + Sync + 'static,
    {
        Self::new(id, move |sup: ActorCell| {
            let (actor, args) = make();
            async move {
                let (actor_ref, _join) = A::spawn_linked(None, actor, args, sup).await?;
                Ok(actor_ref.get_cell())
            }
        })
    }

    /// A permanent child supervisor started from a clone of `args` on every incarnation.
    ///
    /// The grandchildren's specs are cloned too, so [`ChildRef`]s taken from them keep
    /// working across restarts of the child supervisor.
    pub fn supervisor(id: impl Into<String>, args: SupervisorArgs) -> Self {
        let mut spec = Self::new(id, move |sup: ActorCell| {
            let args = args.clone();
            async move {
                let handle = crate::supervisor::spawn_linked(args, sup).await?;
                Ok(handle.cell())
            }
        });
        spec.kind = ChildKind::Supervisor;
        spec.shutdown = DEFAULT_SUPERVISOR_SHUTDOWN;
        spec
    }

    /// Sets the restart type.
    pub fn restart(mut self, restart: Restart) -> Self {
        self.restart = restart;
        self
    }

    /// Sets the time the child gets to stop before it is killed.
    pub fn shutdown(mut self, timeout: Duration) -> Self {
        self.shutdown = timeout;
        self
    }

    /// Sets the kind.
    pub fn kind(mut self, kind: ChildKind) -> Self {
        self.kind = kind;
        self
    }

    /// The child's id, unique within its supervisor.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// A handle that follows this child across restarts; `M` must be its message type.
    pub fn child_ref<M: ractor::Message>(&self) -> ChildRef<M> {
        ChildRef::new(self.id.clone(), Arc::clone(&self.slot))
    }
}

impl fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildSpec")
            .field("id", &self.id)
            .field("restart", &self.restart)
            .field("shutdown", &self.shutdown)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_types() {
        let crash = ExitReason::Failed("boom".into());
        assert!(Restart::Permanent.should_restart(&ExitReason::Normal));
        assert!(Restart::Permanent.should_restart(&ExitReason::Migrated));
        assert!(Restart::Transient.should_restart(&crash));
        assert!(Restart::Transient.should_restart(&ExitReason::Killed));
        assert!(!Restart::Transient.should_restart(&ExitReason::Normal));
        assert!(!Restart::Transient.should_restart(&ExitReason::Shutdown));
        assert!(!Restart::Transient.should_restart(&ExitReason::Migrated));
        assert!(!Restart::Temporary.should_restart(&crash));
    }
}
