//! nRPC on a [`Node`]: serve services, call them, raw or typed (rmp-serde bodies).
//!
//! ```no_run
//! # async fn demo(a: netrun::Node, b: netrun::Node) -> Result<(), Box<dyn std::error::Error>> {
//! use netrun::rpc::{CallOptions, HandlerError, RequestContext};
//!
//! // On b: answer every `echo` request with its body, until the handle is dropped.
//! let _echo = b.serve("echo", |request: RequestContext| async move {
//!     Ok::<_, HandlerError>(request.body().clone())
//! })?;
//! // On a: call it.
//! let answer = a.call(b.node_id(), "echo", &b"hello"[..], &CallOptions::default()).await?;
//! assert_eq!(&answer[..], b"hello");
//! # Ok(()) }
//! ```
//!
//! Every call runs in a `netrun.rpc.call` span (attributes `rpc.service`, `rpc.target`,
//! `rpc.status`, `rpc.latency_us`) whose trace context rides the request, so the server's
//! `netrun.rpc.serve` span (`rpc.service`, `rpc.caller`, `rpc.status`) is its child when
//! traces are exported. Bodies are limited to [`MAX_CALL_BODY_LEN`] bytes: a frame travels
//! in one datagram (`docs/adr/0007-nrpc-transport.md`); larger payloads go over streams.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use netrun_actors::capability::CapabilityHandle;
use netrun_actors::rpc::RpcHandle;
use netrun_messages::TraceContext;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{Instrument, Span, field};

pub use netrun_actors::rpc::{
    CallOptions, CallStream, Cancellation, DEFAULT_DEADLINE, DEFAULT_WINDOW, MAX_CALL_BODY_LEN,
    RequestContext, RpcConfig, RpcStatus, ServeError, ServeHandle, ServiceDirectory,
    SessionDirectory, SinkError, StreamSink,
};
pub use netrun_messages::rpc::{ServiceName, Status};
pub use netrun_runtime::rpc::{
    BreakerConfig, CallsConfig, CodecDirection, CodecError, DispatchConfig, HandlerError,
    HedgePolicy, RetryPolicy, RpcError, SelectPolicy, ServiceSnapshot, TransportError,
};

use crate::node::Node;
use crate::{NodeId, telemetry};

impl Node {
    pub(crate) fn rpc(&self) -> &RpcHandle {
        self.rpc_handle()
    }

    /// Serves `service` with `handler` until the returned handle is dropped (then new
    /// requests are refused and requests in flight finish). Each request runs in its own
    /// task, inside a `netrun.rpc.serve` span that continues the caller's trace; a panic
    /// answers `internal` and the service keeps serving.
    pub fn serve<H, Fut>(&self, service: &str, handler: H) -> Result<ServeHandle, ServeError>
    where
        H: Fn(RequestContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Bytes, HandlerError>> + Send + 'static,
    {
        let name = ServiceName::new(service)?;
        let node = self.node_id();
        self.rpc().serve(name, move |request: RequestContext| {
            let span = telemetry::serve_span(node, &request);
            served(span, handler(request))
        })
    }

    /// Serves `service` with a typed handler: the request body is decoded from rmp-serde
    /// (`invalid_argument` if it does not decode) and the response encoded with field
    /// names, so JSON-shaped clients (`netrun rpc call`) see objects.
    pub fn serve_typed<Req, Resp, H, Fut>(
        &self,
        service: &str,
        handler: H,
    ) -> Result<ServeHandle, ServeError>
    where
        Req: DeserializeOwned + Send + 'static,
        Resp: Serialize + Send + 'static,
        H: Fn(RequestContext, Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, HandlerError>> + Send + 'static,
    {
        self.serve(service, move |request: RequestContext| {
            let run = rmp_serde::from_slice::<Req>(request.body())
                .map_err(|e| {
                    HandlerError::new(Status::INVALID_ARGUMENT, format!("request body: {e}"))
                })
                .map(|req| handler(request, req));
            async move {
                let response = run?.await?;
                rmp_serde::to_vec_named(&response)
                    .map(Bytes::from)
                    .map_err(|e| HandlerError::internal(format!("response body: {e}")))
            }
        })
    }

    /// Serves a server-streaming `service`: the handler sends items through its
    /// [`StreamSink`] (which waits for the caller's credit) and returns the end.
    pub fn serve_streaming<H, Fut>(
        &self,
        service: &str,
        handler: H,
    ) -> Result<ServeHandle, ServeError>
    where
        H: Fn(RequestContext, StreamSink) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        let name = ServiceName::new(service)?;
        let node = self.node_id();
        self.rpc()
            .serve_streaming(name, move |request: RequestContext, sink: StreamSink| {
                let span = telemetry::serve_span(node, &request);
                served(span, handler(request, sink))
            })
    }

    /// Calls `service` on `node` with `body` and returns the response body. Deadline,
    /// retries and stream window come from `options` (hedging needs several nodes: see
    /// [`Node::call_service`]). Dropping the future cancels the call at the server.
    pub async fn call(
        &self,
        node: NodeId,
        service: &str,
        body: impl Into<Bytes>,
        options: &CallOptions,
    ) -> Result<Bytes, RpcError> {
        let (name, span, trace) = outbound(service, Some(node))?;
        let call = self.rpc().call(node, &name, body.into(), options, trace);
        // The span names the target already.
        measured(span, async { (None, call.await) }).await
    }

    /// [`Node::call`] with rmp-serde bodies (requests encoded with field names).
    pub async fn call_typed<Req, Resp>(
        &self,
        node: NodeId,
        service: &str,
        request: &Req,
        options: &CallOptions,
    ) -> Result<Resp, RpcError>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        let body = encode(request)?;
        decode(&self.call(node, service, body, options).await?)
    }

    /// Calls `service` on a node that serves it, picked by `options.policy` among the
    /// healthy nodes the service directory names (a session, a closed circuit breaker),
    /// hedged by `options.hedge` (never to the same node twice; losers are cancelled). A
    /// node answering `not_found` is skipped and the next one tried.
    pub async fn call_service(
        &self,
        service: &str,
        body: impl Into<Bytes>,
        options: &CallOptions,
    ) -> Result<Bytes, RpcError> {
        let (name, span, trace) = outbound(service, None)?;
        let call = self.rpc().call_service(&name, body.into(), options, trace);
        measured(span, call).await
    }

    /// [`Node::call_service`] with rmp-serde bodies.
    pub async fn call_service_typed<Req, Resp>(
        &self,
        service: &str,
        request: &Req,
        options: &CallOptions,
    ) -> Result<Resp, RpcError>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        let body = encode(request)?;
        decode(&self.call_service(service, body, options).await?)
    }

    /// Starts a server-streaming call of `service` on `node`: items arrive in order from
    /// [`CallStream::next`], with the caller's credit window (`options.window`); a failure
    /// ends the stream with an error; dropping the stream cancels the call.
    pub fn call_streaming(
        &self,
        node: NodeId,
        service: &str,
        body: impl Into<Bytes>,
        options: &CallOptions,
    ) -> Result<CallStream, RpcError> {
        let (name, _span, trace) = outbound(service, Some(node))?;
        self.rpc()
            .call_streaming(node, &name, body.into(), options, trace)
    }

    /// nRPC metrics (per service, both directions) and counters; `None` while the RPC
    /// actor is not running.
    pub async fn rpc_status(&self) -> Option<RpcStatus> {
        self.rpc().status().await
    }

    /// The services this node serves (what it announces as `nrpc:<service>`).
    pub fn rpc_services(&self) -> Vec<ServiceName> {
        self.rpc().shared().services()
    }

    /// Follows the services this node serves (for the capability announcer).
    pub fn watch_rpc_services(&self) -> tokio::sync::watch::Receiver<Vec<ServiceName>> {
        self.rpc().shared().watch_services()
    }

    /// Replaces where [`Node::call_service`] finds the nodes serving a service (default:
    /// the capability index — nodes announcing `nrpc:<service>` — and every session peer
    /// while the index knows no server).
    pub fn set_service_directory(&self, directory: Arc<dyn ServiceDirectory>) {
        self.rpc().set_directory(directory);
    }
}

fn service_name(service: &str) -> Result<ServiceName, RpcError> {
    ServiceName::new(service).map_err(|e| {
        RpcError::Codec(CodecError {
            direction: CodecDirection::Encode,
            detail: format!("service name: {e}"),
        })
    })
}

fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Bytes, RpcError> {
    rmp_serde::to_vec_named(value)
        .map(Bytes::from)
        .map_err(|e| {
            RpcError::Codec(CodecError {
                direction: CodecDirection::Encode,
                detail: e.to_string(),
            })
        })
}

fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, RpcError> {
    rmp_serde::from_slice(body).map_err(|e| {
        RpcError::Codec(CodecError {
            direction: CodecDirection::Decode,
            detail: e.to_string(),
        })
    })
}

/// What every outbound call starts with: the checked service name, the call's
/// `netrun.rpc.call` span, and the trace context that carries the span to the server.
fn outbound(
    service: &str,
    target: Option<NodeId>,
) -> Result<(ServiceName, Span, Option<TraceContext>), RpcError> {
    let name = service_name(service)?;
    let span = call_span(&name, target);
    let trace = telemetry::outbound_context(&span);
    Ok((name, span, trace))
}

/// Runs a unary call inside its span and records on the span the call's latency, its
/// status and — when the call picked it — the node that answered.
async fn measured(
    span: Span,
    call: impl Future<Output = (Option<NodeId>, Result<Bytes, RpcError>)>,
) -> Result<Bytes, RpcError> {
    let started = tokio::time::Instant::now();
    let (target, result) = call.instrument(span.clone()).await;
    record_call(&span, started, target, &result);
    result
}

fn call_span(service: &ServiceName, target: Option<NodeId>) -> Span {
    tracing::info_span!(
        "netrun.rpc.call",
        otel.kind = "client",
        rpc.service = %service,
        rpc.target = target.map(field::display),
        rpc.status = field::Empty,
        rpc.latency_us = field::Empty,
    )
}

fn record_call(
    span: &Span,
    started: tokio::time::Instant,
    target: Option<NodeId>,
    result: &Result<Bytes, RpcError>,
) {
    if span.is_disabled() {
        return;
    }
    let latency = i64::try_from(started.elapsed().as_micros()).unwrap_or(i64::MAX);
    span.record("rpc.latency_us", latency);
    if let Some(target) = target {
        span.record("rpc.target", field::display(target));
    }
    match result {
        Ok(_) => span.record("rpc.status", "ok"),
        Err(e) => span.record("rpc.status", e.kind().as_str()),
    };
}

/// Runs a served request inside its `netrun.rpc.serve` span and records its status there.
fn served<T>(
    span: Span,
    run: impl Future<Output = Result<T, HandlerError>>,
) -> impl Future<Output = Result<T, HandlerError>> {
    async move {
        let result = run.await;
        record_served(&result);
        result
    }
    .instrument(span)
}

fn record_served<T>(result: &Result<T, HandlerError>) {
    let span = Span::current();
    if span.is_disabled() {
        return;
    }
    let status = match result {
        Ok(_) => Status::OK,
        Err(e) => e.status,
    };
    span.record("rpc.status", field::display(status));
}

/// Where [`Node::call_service`] looks for servers by default: the capability index (nodes
/// announcing `nrpc:<service>`), and — while the index knows no server, e.g. before the
/// first announcements arrive — every session peer (a non-serving peer answers
/// `not_found` and the call moves on).
pub(crate) struct IndexedDirectory {
    pub(crate) local: NodeId,
    pub(crate) capabilities: CapabilityHandle,
    pub(crate) sessions: SessionDirectory,
}

impl ServiceDirectory for IndexedDirectory {
    fn nodes(&self, service: &ServiceName) -> Vec<NodeId> {
        let mut nodes = self.capabilities.find_service(service.as_str());
        nodes.retain(|n| *n != self.local);
        if nodes.is_empty() {
            self.sessions.nodes(service)
        } else {
            nodes
        }
    }
}

/// Keeps the node's capability announcement's `nrpc:<service>` tags equal to the services
/// it serves. Ends when the RPC subsystem is gone (its watch sender dropped).
pub(crate) async fn advertise_services(
    mut served: tokio::sync::watch::Receiver<Vec<ServiceName>>,
    capabilities: CapabilityHandle,
) {
    let mut advertised: BTreeSet<String> = BTreeSet::new();
    loop {
        let now: BTreeSet<String> = served
            .borrow_and_update()
            .iter()
            .map(|s| s.as_str().to_owned())
            .collect();
        for gone in advertised.difference(&now) {
            if let Err(e) = capabilities.remove_service(gone) {
                tracing::warn!(service = %gone, error = %e, "service tag not withdrawn");
            }
        }
        for new in now.difference(&advertised) {
            if let Err(e) = capabilities.add_service(new) {
                tracing::warn!(service = %new, error = %e, "service tag not announced");
            }
        }
        advertised = now;
        if served.changed().await.is_err() {
            return;
        }
    }
}
