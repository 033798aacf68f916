//! The RPC actor's mailbox. Requests carry their reply port.

use std::time::Instant;

use bytes::Bytes;
use netrun_messages::rpc::{CallId, ServiceName};
use netrun_messages::{NodeId, TraceContext};
use netrun_runtime::rpc::{CallKey, HandlerError, RpcError, SelectPolicy};
use tokio::sync::{mpsc, oneshot};

use super::RpcStatus;
use crate::pump::Credit;
use crate::wire::Inbound;

/// A message for the RPC actor. Opaque: build requests through
/// [`RpcHandle`](super::RpcHandle).
#[derive(Debug)]
pub struct RpcMsg(pub(crate) Msg);

#[derive(Debug)]
pub(crate) enum Msg {
    /// RPC envelopes from session peers, in arrival order, and their mailbox credit.
    Frames(Vec<Inbound>, Credit),
    /// Start a call.
    Call(Box<CallStart>),
    /// The caller dropped its call (future or stream) before the result: cancel it if its
    /// reply port is closed.
    Abandon(CallId),
    /// The application took `n` items of a streaming call.
    Consumed { call_id: CallId, n: u64 },
    /// Pick a node for `service`, skipping `exclude` (hedges).
    Pick {
        service: ServiceName,
        policy: SelectPolicy,
        exclude: Vec<NodeId>,
        reply: oneshot::Sender<Result<NodeId, RpcError>>,
    },
    /// The shared registry of handlers changed: serve what it lists, stop the rest.
    Sync,
    /// A handler finished (or panicked: then the outcome is `internal`).
    Done {
        key: CallKey,
        outcome: Result<Bytes, HandlerError>,
        panicked: bool,
    },
    /// A streaming handler's next item (its credit was taken from the sink's semaphore).
    Item { key: CallKey, body: Bytes },
    /// A deadline timer fired.
    Tick,
    /// Report counters and metrics.
    Status(oneshot::Sender<RpcStatus>),
}

/// Where a call goes.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    /// This node.
    Node(NodeId),
    /// A node serving the service, picked by the actor.
    Service {
        policy: SelectPolicy,
        exclude: Vec<NodeId>,
    },
}

/// The result of one unary attempt and the node it went to (if one was picked).
#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) target: Option<NodeId>,
    pub(crate) result: Result<Bytes, RpcError>,
}

/// What a streaming caller receives, in order; `End` is last.
#[derive(Debug)]
pub(crate) enum StreamEvent {
    Item(Bytes),
    End(Result<(), RpcError>),
}

/// Where the result goes.
#[derive(Debug)]
pub(crate) enum Reply {
    Unary(oneshot::Sender<Outcome>),
    Stream {
        tx: mpsc::Sender<StreamEvent>,
        window: u32,
    },
}

impl Reply {
    /// Whether the caller is gone (its future or stream was dropped).
    pub(crate) fn is_closed(&self) -> bool {
        match self {
            Self::Unary(tx) => tx.is_closed(),
            Self::Stream { tx, .. } => tx.is_closed(),
        }
    }

    /// Delivers a failure that ended the call before or after it started.
    pub(crate) fn fail(self, target: Option<NodeId>, error: RpcError) {
        match self {
            Self::Unary(tx) => {
                let _ = tx.send(Outcome {
                    target,
                    result: Err(error),
                });
            }
            Self::Stream { tx, .. } => {
                let _ = tx.try_send(StreamEvent::End(Err(error)));
            }
        }
    }
}

/// A call to start.
#[derive(Debug)]
pub(crate) struct CallStart {
    /// The id the caller drew (from the OS RNG) and will name when it abandons the call.
    pub(crate) proposed: CallId,
    pub(crate) target: Target,
    pub(crate) service: ServiceName,
    pub(crate) body: Bytes,
    pub(crate) deadline: Option<Instant>,
    pub(crate) trace: Option<TraceContext>,
    pub(crate) reply: Reply,
}
