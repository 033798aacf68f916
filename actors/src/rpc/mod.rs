//! `Rpc`: the nRPC actor — calls this node makes and the services it serves.
//!
//! ```text
//!  caller task                       RpcActor (owns Calls, Dispatch, Breakers, RpcMetrics)
//!  RpcHandle::call ── Call{reply} ──▶ Calls::start ── REQUEST envelope ──▶ peer
//!    (retry, hedge in the caller;     ◀── RESPONSE / STREAM_* ── Wire::serve(RPC) ─ pump
//!     drop → Abandon → CANCEL)        Calls::handle_frame → Finished → reply port
//!                                     deadline timer (poll_timeout) → Timeout + CANCEL
//!  peer ── REQUEST ──▶ Dispatch::handle_request ─▶ tokio task per request: handler(ctx)
//!        ◀── RESPONSE ── Dispatch::finish ◀── Done{outcome} (panic → internal)
//!        ── CANCEL / deadline ──▶ ctx.cancellation() fires
//!        ── CREDIT ──▶ sink semaphore permits; StreamSink::send → Item → STREAM_ITEM
//! ```
//!
//! **Transport.** Every frame travels as one `Subprotocol::RPC` control envelope in one
//! sealed datagram, latency first (ADR 0007). So a body must fit a datagram:
//! [`MAX_CALL_BODY_LEN`] bytes for requests, responses and stream items; larger ones are
//! refused with [`RpcError::TooLarge`] (large payloads go over streams). Nothing is
//! retransmitted below RPC: a lost frame is covered by the call's deadline and its
//! [`RetryPolicy`].
//!
//! **Correlation and cancel.** Call ids are random (the caller draws them from the OS
//! RNG); responses are accepted only from the node called (the core checks the
//! authenticated sender). A caller that drops its call future or stream sends `Abandon`
//! from a guard, and the actor sends CANCEL if the call is still pending.
//!
//! **Handlers** run one tokio task per admitted request; the dispatch table bounds them
//! (`resource_exhausted` beyond). A panic is caught and answered `internal`. Handlers are
//! registered in [`RpcShared`], outside the actor, so a restarted actor serves the same
//! services; dropping a [`ServeHandle`] stops new dispatch while requests in flight finish.
//!
//! **Service calls** pick among the nodes a [`ServiceDirectory`] names, skipping nodes
//! without a session or with an open circuit breaker, by a [`SelectPolicy`]; a node that
//! answers `not_found` is skipped and the next one tried.

mod actor;
mod client;
mod handler;
mod msg;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use netrun_messages::NodeId;
use netrun_messages::envelope::TRACE_CONTEXT_LEN;
use netrun_messages::header::MAX_PAYLOAD_LEN;
use netrun_messages::rpc::{MAX_SERVICE_LEN, REQUEST_FIXED_LEN, ServiceName, ServiceNameError};
use netrun_runtime::rpc::{
    BreakerConfig, CallsConfig, DEFAULT_MAX_BREAKERS, DispatchConfig, HedgePolicy, RetryPolicy,
    SelectPolicy, ServiceSnapshot,
};
use serde::Serialize;
use thiserror::Error;
use tokio::sync::watch;

pub use actor::{RpcActor, RpcArgs, RpcState};
pub use client::{CallStream, RpcHandle, ServeHandle};
pub use handler::{
    Cancellation, Handler, HandlerFuture, RequestContext, SinkError, StreamSink, StreamingFuture,
    StreamingHandler,
};
pub use msg::RpcMsg;
pub use netrun_runtime::rpc::RpcError;

use crate::wire::Wire;
use handler::HandlerKind;

/// Bytes of a control envelope around its body without a trace context: subprotocol (2),
/// version (1), flags (1), body length (4).
const ENVELOPE_OVERHEAD: usize = 8;

/// Largest request, response or stream-item body of a call: what fits one sealed datagram
/// ([`MAX_PAYLOAD_LEN`]) after the envelope, a trace context, and the largest REQUEST
/// header (the longest service name). 7,962 bytes. Larger payloads belong on streams.
pub const MAX_CALL_BODY_LEN: usize =
    MAX_PAYLOAD_LEN - ENVELOPE_OVERHEAD - TRACE_CONTEXT_LEN - REQUEST_FIXED_LEN - MAX_SERVICE_LEN;

/// The deadline a call gets unless its options say otherwise. Frames are not retransmitted
/// below RPC, so a call without a deadline whose request or response is lost would wait
/// forever; ten seconds is far above any loopback or LAN round trip and short enough that
/// a lost frame surfaces as `Timeout` instead of a hang.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(10);

/// The stream window (items) a streaming call asks for unless its options say otherwise.
pub const DEFAULT_WINDOW: u32 = 32;

/// Most nodes whose `not_found` answer a service call skips before giving up.
const MAX_NOT_FOUND_SKIPS: usize = 16;

/// Limits and policies of the RPC actor.
#[derive(Debug, Clone, Copy, Default)]
pub struct RpcConfig {
    /// The caller's call table.
    pub calls: CallsConfig,
    /// The server's dispatch table (in-flight handlers, per-caller share, services).
    pub dispatch: DispatchConfig,
    /// Per-node circuit breakers.
    pub breaker: BreakerConfig,
}

/// How to make one call.
#[derive(Debug, Clone)]
pub struct CallOptions {
    /// Budget of the whole call, retries included (`None`: no deadline — a lost frame then
    /// waits forever). Default [`DEFAULT_DEADLINE`].
    pub deadline: Option<Duration>,
    /// Budget of each attempt (`None`: the rest of the call's budget). Retrying a lost frame
    /// needs an attempt budget shorter than the call's.
    pub attempt_timeout: Option<Duration>,
    /// Retries (`None`: one attempt).
    pub retry: Option<RetryPolicy>,
    /// Hedging for service calls (`None`: no hedge). Hedges never go to a node already
    /// tried; a call to one named node has no other node and is not hedged.
    pub hedge: Option<HedgePolicy>,
    /// How a service call picks its node.
    pub policy: SelectPolicy,
    /// Initial credit of a streaming call, in items (`None`: [`DEFAULT_WINDOW`]).
    pub window: Option<u32>,
}

impl Default for CallOptions {
    fn default() -> Self {
        Self {
            deadline: Some(DEFAULT_DEADLINE),
            attempt_timeout: None,
            retry: None,
            hedge: None,
            policy: SelectPolicy::RoundRobin,
            window: None,
        }
    }
}

impl CallOptions {
    /// Sets the call's budget.
    #[must_use]
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Removes the call's deadline.
    #[must_use]
    pub fn without_deadline(mut self) -> Self {
        self.deadline = None;
        self
    }

    /// Sets each attempt's budget.
    #[must_use]
    pub fn with_attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = Some(timeout);
        self
    }

    /// Retries by `policy`.
    #[must_use]
    pub fn with_retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }

    /// Hedges service calls by `policy`.
    #[must_use]
    pub fn with_hedge(mut self, policy: HedgePolicy) -> Self {
        self.hedge = Some(policy);
        self
    }

    /// Picks service nodes by `policy`.
    #[must_use]
    pub fn with_policy(mut self, policy: SelectPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Sets a streaming call's initial credit.
    #[must_use]
    pub fn with_window(mut self, window: u32) -> Self {
        self.window = Some(window);
        self
    }
}

/// Where service calls find the nodes that serve a service.
///
/// The node wires this to its capability index (nodes announcing `nrpc:<service>`); until
/// then [`SessionDirectory`] names every node with a session. Implemented by closures
/// `Fn(&ServiceName) -> Vec<NodeId>`. Called by the actor for every service call, so it
/// must answer from memory, without blocking.
pub trait ServiceDirectory: Send + Sync + 'static {
    /// Nodes that serve `service`, in any order (selection does not depend on it).
    fn nodes(&self, service: &ServiceName) -> Vec<NodeId>;
}

impl<F> ServiceDirectory for F
where
    F: Fn(&ServiceName) -> Vec<NodeId> + Send + Sync + 'static,
{
    fn nodes(&self, service: &ServiceName) -> Vec<NodeId> {
        self(service)
    }
}

/// A directory that names every node with an established session, whatever it serves.
/// A node that does not serve the service answers `not_found` and the call moves on to
/// the next one, so this finds a server if any peer is one — at the cost of a round trip
/// per non-serving node tried.
#[derive(Debug, Clone)]
pub struct SessionDirectory(pub Arc<Wire>);

impl ServiceDirectory for SessionDirectory {
    fn nodes(&self, _service: &ServiceName) -> Vec<NodeId> {
        self.0.peers().iter().map(|k| k.node).collect()
    }
}

/// Why a service could not be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ServeError {
    /// The name breaks the service-name rules (1..=96 bytes of printable ASCII).
    #[error("invalid service name: {0}")]
    InvalidName(#[from] ServiceNameError),
    /// Another handler serves this name; drop its [`ServeHandle`] first.
    #[error("the service is already served")]
    AlreadyServing,
    /// The node serves as many services as its dispatch table allows.
    #[error("too many services")]
    TooManyServices,
}

/// State shared by the actor's incarnations and its handles: the handler registry (so a
/// restarted actor serves the same services), the service directory, the configuration.
pub struct RpcShared {
    local: NodeId,
    config: RpcConfig,
    registry: Mutex<Registry>,
    directory: RwLock<Arc<dyn ServiceDirectory>>,
    services: watch::Sender<Vec<ServiceName>>,
}

#[derive(Default)]
struct Registry {
    next_id: u64,
    entries: HashMap<ServiceName, Registration>,
}

/// One handler under one name; the id tells a replaced registration from its successor.
#[derive(Debug, Clone)]
pub(crate) struct Registration {
    pub(crate) id: u64,
    pub(crate) handler: HandlerKind,
}

impl std::fmt::Debug for RpcShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcShared")
            .field("local", &self.local)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl RpcShared {
    /// Shared state for node `local`, with `directory` answering service calls.
    pub fn new(
        local: NodeId,
        config: RpcConfig,
        directory: Arc<dyn ServiceDirectory>,
    ) -> Arc<Self> {
        let (services, _) = watch::channel(Vec::new());
        Arc::new(Self {
            local,
            config,
            registry: Mutex::new(Registry::default()),
            directory: RwLock::new(directory),
            services,
        })
    }

    /// The node these services run on.
    pub fn local(&self) -> NodeId {
        self.local
    }

    /// The configuration.
    pub fn config(&self) -> &RpcConfig {
        &self.config
    }

    /// Replaces the service directory (for instance with the capability index).
    pub fn set_directory(&self, directory: Arc<dyn ServiceDirectory>) {
        *self.directory.write().unwrap_or_else(|e| e.into_inner()) = directory;
    }

    /// The service directory.
    pub fn directory(&self) -> Arc<dyn ServiceDirectory> {
        Arc::clone(&self.directory.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// The services registered now, by name.
    pub fn services(&self) -> Vec<ServiceName> {
        let mut names: Vec<ServiceName> = self.lock().entries.keys().cloned().collect();
        names.sort();
        names
    }

    /// Follows the registered services (what the node announces as `nrpc:<service>`).
    pub fn watch_services(&self) -> watch::Receiver<Vec<ServiceName>> {
        self.services.subscribe()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        // The registry is a map of Arcs; a panic elsewhere cannot leave it half-written.
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn register(
        &self,
        service: ServiceName,
        handler: HandlerKind,
    ) -> Result<u64, ServeError> {
        let mut registry = self.lock();
        if registry.entries.contains_key(&service) {
            return Err(ServeError::AlreadyServing);
        }
        if registry.entries.len() >= self.config.dispatch.max_services.max(1) {
            return Err(ServeError::TooManyServices);
        }
        registry.next_id += 1;
        let id = registry.next_id;
        registry
            .entries
            .insert(service, Registration { id, handler });
        drop(registry);
        self.publish_services();
        Ok(id)
    }

    pub(crate) fn unregister(&self, service: &ServiceName, id: u64) {
        let mut registry = self.lock();
        if registry.entries.get(service).is_some_and(|r| r.id == id) {
            registry.entries.remove(service);
            drop(registry);
            self.publish_services();
        }
    }

    pub(crate) fn registrations(&self) -> Vec<(ServiceName, Registration)> {
        self.lock()
            .entries
            .iter()
            .map(|(name, r)| (name.clone(), r.clone()))
            .collect()
    }

    fn publish_services(&self) {
        let names = self.services();
        self.services.send_replace(names);
    }
}

/// What the RPC actor reports for `netrun status`: served services, per-service metrics in
/// both directions, and counters of the call and dispatch tables and the actor.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RpcStatus {
    /// Services this node serves.
    pub services: Vec<String>,
    /// Calls this node is waiting on.
    pub pending_calls: usize,
    /// Requests this node's handlers are running.
    pub in_flight: usize,
    /// Calls this node made, per service.
    pub outbound: BTreeMap<String, ServiceSnapshot>,
    /// Calls this node served, per service.
    pub inbound: BTreeMap<String, ServiceSnapshot>,
    /// Counters (call table, dispatch table, actor).
    pub counters: BTreeMap<&'static str, u64>,
}

/// Nodes whose circuit breakers one actor tracks.
const MAX_BREAKERS: usize = DEFAULT_MAX_BREAKERS;
