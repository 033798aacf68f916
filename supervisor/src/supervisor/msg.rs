//! The supervisor's mailbox.

use std::sync::Arc;

use ractor::{ActorCell, RpcReplyPort};

use crate::child_ref::Slot;
use crate::error::SupervisorError;
use crate::snapshot::TreeSnapshot;
use crate::spec::{ChildKind, ChildSpec};

/// A flat snapshot plus the cells of running child supervisors (by child index), so the
/// caller can collect the subtrees without the supervisor waiting on its children.
pub(crate) type FlatSnapshot = (TreeSnapshot, Vec<(usize, ActorCell)>);

/// Requests to a supervisor. Every request carries its reply port.
pub(crate) enum SupervisorMsg {
    /// Start a new child at the end of the start order.
    AddChild(ChildSpec, RpcReplyPort<Result<(), SupervisorError>>),
    /// Stop a child (within its shutdown timeout) and forget it.
    RemoveChild(String, RpcReplyPort<Result<(), SupervisorError>>),
    /// This supervisor's own view.
    Snapshot(RpcReplyPort<FlatSnapshot>),
    /// The slot and kind of a child.
    Child(String, RpcReplyPort<Option<(ChildKind, Arc<Slot>)>>),
    /// A backoff delay or gate cooldown ended for the restart plan with this token.
    RestartDue(u64),
}
