//! The supervisor actor and its handle.
//!
//! ```text
//! SupervisorHandle ──SupervisorMsg──▶ SupervisorActor ──drives──▶ State (restart engine)
//!                                        ▲      │ factory(myself) per (re)start
//!            SupervisionEvent (exit) ────┘      ▼
//!                                          child actors ──▶ Slot ◀── ChildRef<M>
//! ```

mod actor;
mod msg;
mod state;

use std::future::Future;
use std::pin::Pin;

use ractor::concurrency::JoinHandle;
use ractor::{Actor, ActorCell, ActorRef, RpcReplyPort, SpawnErr};

use self::actor::SupervisorActor;
pub(crate) use self::msg::SupervisorMsg;
use crate::child_ref::ChildRef;
use crate::config::SupervisorArgs;
use crate::error::SupervisorError;
use crate::exit::reason;
use crate::snapshot::TreeSnapshot;
use crate::spec::{ChildKind, ChildSpec};

/// Spawns an unlinked (root) supervisor; the join handle ends when it stops.
pub async fn spawn(args: SupervisorArgs) -> Result<(SupervisorHandle, JoinHandle<()>), SpawnErr> {
    let (actor, join) = SupervisorActor::spawn(None, SupervisorActor, args).await?;
    Ok((SupervisorHandle { actor }, join))
}

/// Spawns a supervisor linked to `parent`, which receives its exit.
pub async fn spawn_linked(
    args: SupervisorArgs,
    parent: ActorCell,
) -> Result<SupervisorHandle, SpawnErr> {
    let (actor, _join) = SupervisorActor::spawn_linked(None, SupervisorActor, args, parent).await?;
    Ok(SupervisorHandle { actor })
}

/// A cloneable handle on one supervisor incarnation.
///
/// Do not call it from a child of the same supervisor while that supervisor may be
/// stopping the child: the supervisor handles one request at a time, so the call waits
/// until the child's shutdown timeout has run out.
#[derive(Clone, Debug)]
pub struct SupervisorHandle {
    actor: ActorRef<SupervisorMsg>,
}

type TreeFuture = Pin<Box<dyn Future<Output = Result<TreeSnapshot, SupervisorError>> + Send>>;

impl SupervisorHandle {
    /// The supervisor's cell (to link, monitor or stop it).
    pub fn cell(&self) -> ActorCell {
        self.actor.get_cell()
    }

    /// Whether this incarnation is still running.
    pub fn is_running(&self) -> bool {
        matches!(self.actor.get_status(), ractor::ActorStatus::Running)
    }

    /// Starts a child at the end of the start order.
    pub async fn add_child(&self, spec: ChildSpec) -> Result<(), SupervisorError> {
        self.request(|port| SupervisorMsg::AddChild(spec, port))
            .await?
    }

    /// Stops a child within its shutdown timeout (then kills it) and removes its spec.
    pub async fn remove_child(&self, id: &str) -> Result<(), SupervisorError> {
        self.request(|port| SupervisorMsg::RemoveChild(id.to_owned(), port))
            .await?
    }

    /// A handle on child `id` that follows it across restarts; `M` must be its message type.
    pub async fn child_ref<M: ractor::Message>(
        &self,
        id: &str,
    ) -> Result<ChildRef<M>, SupervisorError> {
        let found = self
            .request(|port| SupervisorMsg::Child(id.to_owned(), port))
            .await?;
        let (_, slot) = found.ok_or_else(|| SupervisorError::UnknownChild(id.into()))?;
        Ok(ChildRef::new(id.to_owned(), slot))
    }

    /// A handle on the current incarnation of child supervisor `id`.
    pub async fn child_supervisor(&self, id: &str) -> Result<SupervisorHandle, SupervisorError> {
        let found = self
            .request(|port| SupervisorMsg::Child(id.to_owned(), port))
            .await?;
        match found {
            None => Err(SupervisorError::UnknownChild(id.into())),
            Some((ChildKind::Worker, _)) => Err(SupervisorError::NotASupervisor(id.into())),
            Some((ChildKind::Supervisor, slot)) => {
                let (cell, _) = slot.current().ok_or(SupervisorError::Unavailable)?;
                Ok(SupervisorHandle {
                    actor: ActorRef::from(cell),
                })
            }
        }
    }

    /// The live tree under this supervisor, nested supervisors included. A child
    /// supervisor that stops while being asked shows with no subtree.
    pub fn tree(&self) -> impl Future<Output = Result<TreeSnapshot, SupervisorError>> + Send {
        Self::tree_of(self.actor.clone())
    }

    fn tree_of(actor: ActorRef<SupervisorMsg>) -> TreeFuture {
        Box::pin(async move {
            let handle = SupervisorHandle { actor };
            let (mut tree, cells) = handle.request(SupervisorMsg::Snapshot).await?;
            for (idx, cell) in cells {
                if let Ok(sub) = Self::tree_of(ActorRef::from(cell)).await {
                    if let Some(child) = tree.children.get_mut(idx) {
                        child.subtree = Some(Box::new(sub));
                    }
                }
            }
            Ok(tree)
        })
    }

    /// Ordered shutdown: children stop in reverse start order, each within its timeout,
    /// then the supervisor stops with reason `shutdown`. Returns once it has stopped.
    pub async fn shutdown(&self) -> Result<(), SupervisorError> {
        tracing::info!(supervisor = ?self.actor.get_id(), "shutdown requested");
        self.actor
            .stop_and_wait(Some(reason::SHUTDOWN.into()), None)
            .await
            .map_err(|_| SupervisorError::Unavailable)
    }

    async fn request<R, F>(&self, build: F) -> Result<R, SupervisorError>
    where
        R: Send + 'static,
        F: FnOnce(RpcReplyPort<R>) -> SupervisorMsg,
    {
        match self.actor.call(build, None).await {
            Ok(ractor::rpc::CallResult::Success(reply)) => Ok(reply),
            _ => Err(SupervisorError::Unavailable),
        }
    }
}
