//! The RPC actor: drives the call table, the dispatch table, the breakers and the metrics,
//! and carries out what they decide (frames to send, handlers to run, replies to deliver).

use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use netrun_messages::envelope::{Envelope, Subprotocol};
use netrun_messages::rpc::{CallId, Credit, Request, RpcFrame, ServiceName, Status};
use netrun_messages::{NodeId, PacketFlags, PacketKind, TraceContext};
use netrun_runtime::rpc::{
    Admission, Breakers, CallEvent, CallKey, CallSpec, Calls, Candidate, Direction, Dispatch,
    HandlerError, Incoming, ItemError, Permit, RpcError, RpcMetrics, SelectPolicy, Selector,
    ServeError as CoreServeError, ServerEvent, TransportError,
};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use rand_core::{OsRng, RngCore};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use super::handler::{CatchUnwind, HandlerKind, panic_message};
use super::msg::{CallStart, Msg, Outcome, Reply, RpcMsg, StreamEvent, Target};
use super::{
    Cancellation, MAX_BREAKERS, MAX_CALL_BODY_LEN, Registration, RequestContext, RpcShared,
    RpcStatus, StreamSink,
};
use crate::pump::{self, Tasks};
use crate::wire::{Inbound, SendError, Wire};

/// Envelope batches that may wait in the actor's mailbox at once: one being handled and
/// the next ones ready, so the pump never waits on a busy actor while the mailbox stays
/// bounded (beyond it the wire's queue fills and drops newest).
const PUMP_CREDITS: usize = 4;
/// Services with their own round-robin cursor; calls of further services share a scratch
/// cursor (bounded state keyed by what callers name).
const MAX_SELECTORS: usize = 1024;
/// Nodes whose call latency is remembered for `LowestLatency`.
const MAX_LATENCIES: usize = 4096;

/// The RPC actor.
#[derive(Debug, Clone, Copy, Default)]
pub struct RpcActor;

/// Startup inputs of the RPC actor.
#[derive(Debug, Clone)]
pub struct RpcArgs {
    /// The shared data path (RPC envelopes in and out).
    pub wire: Arc<Wire>,
    /// The handler registry, directory and configuration, shared across incarnations.
    pub shared: Arc<RpcShared>,
}

/// The RPC actor's state.
pub struct RpcState {
    wire: Arc<Wire>,
    shared: Arc<RpcShared>,
    myself: ActorRef<RpcMsg>,
    calls: Calls<CallCtx>,
    dispatch: Dispatch<ServerCtx>,
    breakers: Breakers,
    metrics: RpcMetrics,
    selectors: HashMap<ServiceName, Selector>,
    scratch: Selector,
    latency: HashMap<NodeId, Duration>,
    handlers: HashMap<ServiceName, Registration>,
    /// Frames from this node to itself (calls of services it serves), handled in turn.
    loopback: VecDeque<(RpcFrame<Bytes>, Option<TraceContext>)>,
    timer: Option<(Instant, JoinHandle<()>)>,
    _pump: Tasks,
    /// Envelopes of this turn, back to back (each frame encoded straight into its
    /// envelope); `outbox` says where each goes.
    arena: Vec<u8>,
    outbox: Vec<Outgoing>,
    /// Call events being carried out (kept for its capacity).
    events: Vec<Option<CallEvent<CallCtx>>>,
    counters: Counters,
}

impl std::fmt::Debug for RpcState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcState")
            .field("pending", &self.calls.len())
            .field("in_flight", &self.dispatch.in_flight())
            .finish_non_exhaustive()
    }
}

/// One envelope to send at the end of a turn.
#[derive(Debug)]
struct Outgoing {
    peer: NodeId,
    range: std::ops::Range<usize>,
    /// The call this REQUEST starts.
    call: Option<CallId>,
}

/// What the actor counts beyond the cores' own counters.
#[derive(Debug, Default, Clone, Copy)]
struct Counters {
    malformed: u64,
    send_failed: u64,
    stream_overflow: u64,
    items_refused: u64,
    serve_refused: u64,
    handler_panics: u64,
}

/// A pending call, as the call table holds it.
#[derive(Debug)]
struct CallCtx {
    reply: Reply,
    service: ServiceName,
    permit: Permit,
    started: Instant,
}

/// An in-flight request, as the dispatch table holds it.
#[derive(Debug)]
struct ServerCtx {
    cancel: Cancellation,
    stream: Option<SinkCredit>,
}

/// The credit a streaming handler's sink may spend: permits are added as the caller
/// grants, so `issued` always equals the caller's grant (items `0..issued` may be sent).
#[derive(Debug)]
struct SinkCredit {
    sem: Arc<Semaphore>,
    /// Items sent (equal to the dispatch table's count for the call).
    sent: Cell<u64>,
    /// Permits added to the semaphore so far.
    issued: Cell<u64>,
}

/// An RNG that yields the caller's proposed id first, then the OS RNG (only drawn from if
/// the proposal was zero or collided with a pending call).
struct Proposed {
    first: Option<u64>,
}

impl RngCore for Proposed {
    fn next_u32(&mut self) -> u32 {
        OsRng.next_u32()
    }

    fn next_u64(&mut self) -> u64 {
        self.first.take().unwrap_or_else(|| OsRng.next_u64())
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        OsRng.fill_bytes(dest);
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        OsRng.try_fill_bytes(dest)
    }
}

/// The clock the cores are driven by (tokio's, so paused-time tests drive it).
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

impl Actor for RpcActor {
    type Msg = RpcMsg;
    type State = RpcState;
    type Arguments = RpcArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let pump = pump::serve_envelopes(
            &args.wire,
            Subprotocol::RPC,
            myself.clone(),
            PUMP_CREDITS,
            |batch, credit| RpcMsg(Msg::Frames(batch, credit)),
        );
        let config = *args.shared.config();
        let mut state = RpcState {
            wire: args.wire,
            shared: args.shared,
            myself,
            calls: Calls::new(config.calls),
            dispatch: Dispatch::new(config.dispatch),
            breakers: Breakers::new(config.breaker, MAX_BREAKERS),
            metrics: RpcMetrics::new(),
            selectors: HashMap::new(),
            scratch: Selector::new(),
            latency: HashMap::new(),
            handlers: HashMap::new(),
            loopback: VecDeque::new(),
            timer: None,
            _pump: Tasks::new([pump]),
            arena: Vec::new(),
            outbox: Vec::new(),
            events: Vec::new(),
            counters: Counters::default(),
        };
        state.sync_handlers();
        Ok(state)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.wire.unserve(Subprotocol::RPC);
        if let Some((_, timer)) = state.timer.take() {
            timer.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        RpcMsg(message): Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let now = now();
        match message {
            Msg::Frames(batch, _credit) => {
                for inbound in batch {
                    state.on_inbound(now, inbound);
                }
            }
            Msg::Call(start) => state.on_call(now, *start),
            Msg::Abandon(call_id) => state.on_abandon(now, call_id),
            Msg::Consumed { call_id, n } => state.calls.consumed(now, call_id, n),
            Msg::Pick {
                service,
                policy,
                exclude,
                reply,
            } => {
                let _ = reply.send(state.pick(now, &service, policy, &exclude));
            }
            Msg::Sync => state.sync_handlers(),
            Msg::Done {
                key,
                outcome,
                panicked,
            } => {
                if panicked {
                    state.counters.handler_panics += 1;
                    warn!(caller = %key.caller, "rpc handler panicked");
                }
                state.on_done(now, key, outcome);
            }
            Msg::Item { key, body } => state.on_item(key, body),
            Msg::Tick => {
                state.timer = None;
                state.calls.handle_timeout(now);
                state.dispatch.handle_timeout(now);
            }
            Msg::Status(reply) => {
                let _ = reply.send(state.status());
            }
        }
        state.flush(now).await;
        Ok(())
    }
}

/// Runs one handler in its own task and reports its outcome to the actor as `Done` (a
/// panic becomes an `internal` error, flagged so the actor counts it).
fn run_handler(
    actor: ActorRef<RpcMsg>,
    key: CallKey,
    handler: impl Future<Output = Result<Bytes, HandlerError>> + Send + 'static,
) {
    tokio::spawn(async move {
        let (outcome, panicked) = match CatchUnwind::new(handler).await {
            Ok(result) => (result, false),
            Err(panic) => {
                let message = panic_message(panic.as_ref());
                (Err(HandlerError::internal(message)), true)
            }
        };
        let done = Msg::Done {
            key,
            outcome,
            panicked,
        };
        let _ = actor.send_message(RpcMsg(done));
    });
}

impl RpcState {
    fn on_inbound(&mut self, now: Instant, inbound: Inbound) {
        match RpcFrame::decode_bytes(&inbound.body) {
            Ok(frame) => self.on_frame(now, inbound.peer, inbound.trace, frame),
            Err(e) => {
                self.counters.malformed += 1;
                debug!(peer = %inbound.peer, error = %e, "malformed rpc frame");
            }
        }
    }

    fn on_frame(
        &mut self,
        now: Instant,
        from: NodeId,
        trace: Option<TraceContext>,
        frame: RpcFrame<Bytes>,
    ) {
        match frame {
            RpcFrame::Request(request) => self.on_request(now, from, trace, request),
            RpcFrame::Cancel(call_id) => {
                if let Some(ctx) = self.dispatch.handle_cancel(from, call_id) {
                    ctx.cancel.cancel();
                }
            }
            RpcFrame::Credit(credit) => self.on_credit(from, credit),
            other => {
                self.calls.handle_frame(now, from, other);
            }
        }
    }

    fn on_request(
        &mut self,
        now: Instant,
        from: NodeId,
        trace: Option<TraceContext>,
        request: Request<Bytes>,
    ) {
        let cancel = Cancellation::new();
        let credit = request.is_streaming().then(|| Arc::new(Semaphore::new(0)));
        let ctx = ServerCtx {
            cancel: cancel.clone(),
            stream: credit.as_ref().map(|sem| SinkCredit {
                sem: Arc::clone(sem),
                sent: Cell::new(0),
                issued: Cell::new(0),
            }),
        };
        let name = request.service_name();
        match self.dispatch.handle_request(now, from, request, ctx) {
            Admission::Dispatch(incoming) => self.start_handler(now, incoming, trace, cancel),
            Admission::Refused {
                status, response, ..
            } => {
                // Names nobody serves are not recorded: callers choose them.
                if status != Status::NOT_FOUND {
                    self.metrics.record_served(&name, Duration::ZERO, status);
                }
                // A failure is counted; the caller's deadline covers the loss.
                self.queue_frame(from, response, None, None);
            }
            Admission::Duplicate { .. } => {}
        }
    }

    /// Runs the handler of an admitted request in its own task.
    fn start_handler(
        &mut self,
        now: Instant,
        incoming: Incoming,
        trace: Option<TraceContext>,
        cancel: Cancellation,
    ) {
        let key = incoming.key;
        let handler = self
            .handlers
            .get(&incoming.service)
            .map(|r| r.handler.clone());
        let request = RequestContext {
            caller: key.caller,
            service: incoming.service,
            deadline: incoming.deadline,
            body: incoming.body,
            cancel: cancel.clone(),
            trace: if incoming.traced { trace } else { None },
        };
        let myself = self.myself.clone();
        match (handler, incoming.streaming) {
            (Some(HandlerKind::Unary(handler)), false) => {
                run_handler(myself, key, async move { handler.handle(request).await });
            }
            (Some(HandlerKind::Streaming(handler)), true) => {
                let initial = self.dispatch.credit(key).unwrap_or(0);
                let Some(stream) = self
                    .dispatch
                    .context(key)
                    .and_then(|ctx| ctx.stream.as_ref())
                else {
                    return;
                };
                stream
                    .sem
                    .add_permits(usize::try_from(initial).unwrap_or(0));
                stream.issued.set(initial);
                let sink = StreamSink {
                    key,
                    credit: Arc::clone(&stream.sem),
                    cancel,
                    actor: myself.clone(),
                };
                run_handler(myself, key, async move {
                    handler.handle(request, sink).await.map(|()| Bytes::new())
                });
            }
            (Some(HandlerKind::Unary(_)), true) => {
                let refusal =
                    HandlerError::new(Status::INVALID_ARGUMENT, "the service is not streaming");
                self.on_done(now, key, Err(refusal));
            }
            (Some(HandlerKind::Streaming(_)), false) => {
                let refusal =
                    HandlerError::new(Status::INVALID_ARGUMENT, "the service streams its response");
                self.on_done(now, key, Err(refusal));
            }
            (None, _) => {
                let refusal = HandlerError::new(Status::UNAVAILABLE, "the service stopped");
                self.on_done(now, key, Err(refusal));
            }
        }
    }

    /// A handler finished: the dispatch table builds the frame to send, if the caller
    /// still waits.
    fn on_done(&mut self, now: Instant, key: CallKey, outcome: Result<Bytes, HandlerError>) {
        let outcome = match outcome {
            Ok(body) if body.len() > MAX_CALL_BODY_LEN => Err(HandlerError::internal(format!(
                "response body of {} bytes exceeds the {MAX_CALL_BODY_LEN}-byte call limit",
                body.len()
            ))),
            other => other,
        };
        let Some(done) = self.dispatch.finish(now, key, outcome) else {
            return;
        };
        self.metrics
            .record_served(&done.service, done.elapsed, done.status);
        if let Some(frame) = done.frame {
            self.queue_frame(key.caller, frame, None, None);
        }
    }

    fn on_credit(&mut self, from: NodeId, credit: Credit) {
        let Some(available) = self.dispatch.handle_credit(from, credit) else {
            return;
        };
        let key = CallKey {
            caller: from,
            call_id: credit.call_id,
        };
        let Some(stream) = self.dispatch.context(key).and_then(|c| c.stream.as_ref()) else {
            return;
        };
        let grant = stream.sent.get().saturating_add(available);
        if grant > stream.issued.get() {
            let more = usize::try_from(grant - stream.issued.get()).unwrap_or(0);
            stream.sem.add_permits(more);
            stream.issued.set(grant);
        }
    }

    fn on_item(&mut self, key: CallKey, body: Bytes) {
        match self.dispatch.send_item(key, &body) {
            Ok(frame) => {
                if let Some(stream) = self.dispatch.context(key).and_then(|c| c.stream.as_ref()) {
                    stream.sent.set(stream.sent.get() + 1);
                }
                self.queue_frame(key.caller, frame, None, None);
            }
            // The handler sees its cancellation and stops.
            Err(ItemError::Cancelled | ItemError::UnknownCall) => {}
            Err(e) => {
                self.counters.items_refused += 1;
                debug!(caller = %key.caller, error = %e, "stream item refused");
            }
        }
    }

    fn on_call(&mut self, now: Instant, start: CallStart) {
        let CallStart {
            proposed,
            target,
            service,
            body,
            deadline,
            trace,
            reply,
        } = start;
        let node = match target {
            Target::Node(node) => node,
            Target::Service { policy, exclude } => {
                match self.pick(now, &service, policy, &exclude) {
                    Ok(node) => node,
                    Err(error) => {
                        self.metrics
                            .record_call(&service, Duration::ZERO, Err(&error));
                        reply.fail(None, error);
                        return;
                    }
                }
            }
        };
        let refusal = if body.len() > MAX_CALL_BODY_LEN {
            Some(RpcError::TooLarge {
                len: body.len(),
                max: MAX_CALL_BODY_LEN,
            })
        } else if node != self.shared.local() && self.wire.peer(node).is_none() {
            Some(RpcError::Transport(TransportError::NoSession))
        } else {
            None
        };
        if let Some(error) = refusal {
            self.metrics
                .record_call(&service, Duration::ZERO, Err(&error));
            reply.fail(Some(node), error);
            return;
        }
        let permit = match self.breakers.try_acquire(now, node) {
            Ok(permit) => permit,
            Err(_) => {
                let error = RpcError::CircuitOpen;
                self.metrics
                    .record_call(&service, Duration::ZERO, Err(&error));
                reply.fail(Some(node), error);
                return;
            }
        };
        let window = match &reply {
            Reply::Stream { window, .. } => Some(*window),
            Reply::Unary(_) => None,
        };
        let spec_service = service.clone();
        let mut spec = match window {
            Some(window) => CallSpec::streaming(&spec_service, body, Some(window)),
            None => CallSpec::unary(&spec_service, body),
        };
        if let Some(deadline) = deadline {
            spec = spec.with_deadline(deadline);
        }
        if trace.is_some() {
            spec = spec.traced();
        }
        let ctx = CallCtx {
            reply,
            service,
            permit,
            started: now,
        };
        let mut rng = Proposed {
            first: Some(proposed.get()),
        };
        match self.calls.start(now, node, spec, ctx, &mut rng) {
            Ok((call_id, frame)) => self.queue_frame(node, frame, trace, Some(call_id)),
            Err((error, ctx)) => self.end_call(now, node, ctx, Err(error), Duration::ZERO),
        }
    }

    /// The caller dropped its call: cancel it if its reply port is closed (a collision of
    /// proposed ids never cancels someone else's call).
    fn on_abandon(&mut self, now: Instant, call_id: CallId) {
        if !self
            .calls
            .context(call_id)
            .is_some_and(|ctx| ctx.reply.is_closed())
        {
            return;
        }
        let Some(target) = self.calls.target(call_id) else {
            return;
        };
        if let Some(ctx) = self.calls.cancel(call_id) {
            let latency = now.saturating_duration_since(ctx.started);
            self.end_call(now, target, ctx, Err(RpcError::Cancelled), latency);
        }
    }

    /// Records a finished call (breaker, metrics, latency) and delivers its result.
    fn end_call(
        &mut self,
        now: Instant,
        target: NodeId,
        ctx: CallCtx,
        result: Result<Bytes, RpcError>,
        latency: Duration,
    ) {
        let status = result.as_ref().map(|_| ());
        self.breakers.record(now, target, ctx.permit, status);
        self.metrics.record_call(&ctx.service, latency, status);
        if result.is_ok() {
            self.observe_latency(target, latency);
        }
        match ctx.reply {
            Reply::Unary(tx) => {
                let _ = tx.send(Outcome {
                    target: Some(target),
                    result,
                });
            }
            Reply::Stream { tx, .. } => {
                let _ = tx.try_send(StreamEvent::End(result.map(|_| ())));
            }
        }
    }

    fn observe_latency(&mut self, node: NodeId, sample: Duration) {
        if let Some(avg) = self.latency.get_mut(&node) {
            // An exponentially weighted average (1/8 per sample), like TCP's SRTT.
            *avg = (*avg * 7 + sample) / 8;
        } else if self.latency.len() < MAX_LATENCIES {
            self.latency.insert(node, sample);
        }
    }

    /// Picks a node serving `service`: the directory's nodes that have a session (or are
    /// this node) and whose breaker admits a call, by `policy`, skipping `exclude`.
    fn pick(
        &mut self,
        now: Instant,
        service: &ServiceName,
        policy: SelectPolicy,
        exclude: &[NodeId],
    ) -> Result<NodeId, RpcError> {
        let local = self.shared.local();
        let candidates: Vec<Candidate> = self
            .shared
            .directory()
            .nodes(service)
            .into_iter()
            .map(|node| Candidate {
                node,
                healthy: (node == local || self.wire.peer(node).is_some())
                    && self.breakers.allows(now, node),
                latency: self.latency.get(&node).copied(),
            })
            .collect();
        let selector =
            if self.selectors.contains_key(service) || self.selectors.len() < MAX_SELECTORS {
                self.selectors.entry(service.clone()).or_default()
            } else {
                &mut self.scratch
            };
        selector
            .pick(policy, &candidates, exclude, &mut OsRng)
            .ok_or(RpcError::NoRoute)
    }

    /// Serves what the shared registry lists; stops serving what it no longer does.
    fn sync_handlers(&mut self) {
        let registered = self.shared.registrations();
        for (name, registration) in &registered {
            if self
                .handlers
                .get(name)
                .is_some_and(|r| r.id == registration.id)
            {
                continue;
            }
            self.handlers.insert(name.clone(), registration.clone());
            match self.dispatch.serve(name.clone()) {
                Ok(()) | Err(CoreServeError::AlreadyServing) => {}
                Err(CoreServeError::TooManyServices) => {
                    self.counters.serve_refused += 1;
                    warn!(service = %name, "too many services (some are still draining)");
                }
            }
        }
        let gone: Vec<ServiceName> = self
            .handlers
            .keys()
            .filter(|name| !registered.iter().any(|(n, _)| n == *name))
            .cloned()
            .collect();
        for name in gone {
            self.handlers.remove(&name);
            self.dispatch.stop_serving(name.as_str());
        }
    }

    /// Carries out what the cores queued (call results and stream items, CANCEL and
    /// CREDIT frames, server deadlines, frames to this node itself), sends the frames,
    /// and re-arms the timer. The only await of a turn is here, on the sends.
    async fn flush(&mut self, now: Instant) {
        loop {
            self.settle(now);
            if self.outbox.is_empty() {
                break;
            }
            let outbox = std::mem::take(&mut self.outbox);
            for out in &outbox {
                let datagram = &self.arena[out.range.clone()];
                let sent = self
                    .wire
                    .send(
                        out.peer,
                        PacketKind::Control,
                        0,
                        PacketFlags::RELIABLE,
                        datagram,
                        None,
                    )
                    .await;
                if let Err(e) = sent {
                    self.counters.send_failed += 1;
                    debug!(peer = %out.peer, error = %e, "rpc frame not sent");
                    // A request that did not leave fails its call now, not at its deadline.
                    let failed = out.call.and_then(|id| self.calls.cancel(id));
                    if let Some(ctx) = failed {
                        self.end_call(now, out.peer, ctx, Err(transport_error(e)), Duration::ZERO);
                    }
                }
            }
            self.arena.clear();
            let mut outbox = outbox;
            outbox.clear();
            // Frames queued by failures above go out on the next round (kept allocation).
            if self.outbox.is_empty() {
                self.outbox = outbox;
            }
        }
        self.arm_timer();
    }

    /// Runs the cores' queued work until nothing is left but frames to send.
    fn settle(&mut self, now: Instant) {
        loop {
            // Drained first: a stream's last items and its end can come out of one frame,
            // and by then the call (and its reply port) has left the table.
            let mut events = std::mem::take(&mut self.events);
            events.extend(std::iter::from_fn(|| self.calls.poll_event().map(Some)));
            for index in 0..events.len() {
                match events[index].take() {
                    Some(CallEvent::Item { call_id, body, .. }) => {
                        let ending = events[index..].iter().find_map(|e| match e {
                            Some(CallEvent::Finished(f)) if f.call_id == call_id => {
                                Some(&f.ctx.reply)
                            }
                            _ => None,
                        });
                        let reply = self.calls.context(call_id).map(|c| &c.reply).or(ending);
                        if !deliver(reply, body) {
                            self.stream_failed(now, call_id);
                        }
                    }
                    Some(CallEvent::Finished(f)) => {
                        self.end_call(now, f.target, f.ctx, f.result, f.latency);
                    }
                    None => {}
                }
            }
            events.clear();
            self.events = events;
            while let Some((peer, frame)) = self.calls.poll_transmit() {
                self.queue_frame(peer, frame, None, None);
            }
            while let Some(event) = self.dispatch.poll_event() {
                match event {
                    ServerEvent::DeadlineExpired(key) => {
                        if let Some(ctx) = self.dispatch.context(key) {
                            ctx.cancel.cancel();
                        }
                    }
                    ServerEvent::Drained(service) => debug!(%service, "service drained"),
                }
            }
            match self.loopback.pop_front() {
                Some((frame, trace)) => {
                    let local = self.shared.local();
                    self.on_frame(now, local, trace, frame);
                }
                None => break,
            }
        }
    }

    /// A stream item could not be queued for its reader (gone, or past the window
    /// bound): the call is cancelled.
    fn stream_failed(&mut self, now: Instant, call_id: CallId) {
        let target = self.calls.target(call_id);
        if let (Some(target), Some(ctx)) = (target, self.calls.cancel(call_id)) {
            self.counters.stream_overflow += 1;
            let latency = now.saturating_duration_since(ctx.started);
            self.end_call(now, target, ctx, Err(RpcError::Cancelled), latency);
        }
    }

    /// Arms the deadline timer for the earliest deadline of either table, unless a timer
    /// already fires no later. A timer that fires for a call already finished is harmless.
    fn arm_timer(&mut self) {
        let next = match (self.calls.poll_timeout(), self.dispatch.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let Some(at) = next else { return };
        if self.timer.as_ref().is_some_and(|(armed, _)| *armed <= at) {
            return;
        }
        if let Some((_, old)) = self.timer.take() {
            old.abort();
        }
        let actor = self.myself.clone();
        let task = tokio::spawn(async move {
            tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
            let _ = actor.send_message(RpcMsg(Msg::Tick));
        });
        self.timer = Some((at, task));
    }

    /// Queues one frame for `peer` in an RPC envelope, sent at the end of the turn (a
    /// frame to this node is handled in turn instead). `call` names the call a REQUEST
    /// starts, so that a send failure fails it.
    fn queue_frame(
        &mut self,
        peer: NodeId,
        frame: RpcFrame<Bytes>,
        trace: Option<TraceContext>,
        call: Option<CallId>,
    ) {
        if peer == self.shared.local() {
            self.loopback.push_back((frame, trace));
            return;
        }
        let start = self.arena.len();
        let encoded = Envelope::encode_with(Subprotocol::RPC, trace, &mut self.arena, |out| {
            frame.encode_into(out);
        });
        // Frames are bounded below the envelope limit, so this does not fail.
        if encoded.is_err() {
            self.counters.send_failed += 1;
            return;
        }
        self.outbox.push(Outgoing {
            peer,
            range: start..self.arena.len(),
            call,
        });
    }

    fn status(&self) -> RpcStatus {
        let calls = self.calls.stats();
        let dispatch = self.dispatch.stats();
        let c = self.counters;
        let counters = [
            ("calls_started", calls.started),
            ("calls_refused", calls.refused),
            ("calls_answered", calls.answered),
            ("calls_timed_out", calls.timed_out),
            ("calls_cancelled", calls.cancelled),
            ("frames_wrong_sender", calls.wrong_sender),
            ("frames_unknown_call", calls.unknown_call),
            ("frames_duplicate", calls.duplicates),
            ("frames_misdirected", calls.misdirected),
            ("protocol_violations", calls.violations),
            ("credits_sent", calls.credits),
            ("credits_resent", calls.credits_resent),
            ("cancels_sent", calls.cancels_sent),
            ("transmit_dropped", calls.transmit_dropped),
            ("requests_admitted", dispatch.admitted),
            ("requests_duplicate", dispatch.duplicates),
            ("requests_not_found", dispatch.not_found),
            ("requests_unavailable", dispatch.unavailable),
            ("requests_exhausted", dispatch.exhausted),
            ("requests_cancelled", dispatch.cancelled),
            ("requests_expired", dispatch.expired),
            ("requests_finished", dispatch.finished),
            ("stray_cancels", dispatch.stray_cancels),
            ("stray_credits", dispatch.stray_credits),
            ("stream_items_sent", dispatch.items),
            ("frames_malformed", c.malformed),
            ("send_failed", c.send_failed),
            ("stream_overflow", c.stream_overflow),
            ("items_refused", c.items_refused),
            ("serve_refused", c.serve_refused),
            ("handler_panics", c.handler_panics),
            ("metrics_untracked", self.metrics.untracked()),
        ]
        .into_iter()
        .collect();
        let mut services: Vec<String> = self
            .handlers
            .keys()
            .map(|s| s.as_str().to_owned())
            .collect();
        services.sort();
        RpcStatus {
            services,
            pending_calls: self.calls.len(),
            in_flight: self.dispatch.in_flight(),
            outbound: self.metrics.snapshot(Direction::Outbound),
            inbound: self.metrics.snapshot(Direction::Inbound),
            counters,
        }
    }
}

/// Queues a stream item for its reader; `false` if it cannot take it.
fn deliver(reply: Option<&Reply>, body: Bytes) -> bool {
    match reply {
        Some(Reply::Stream { tx, .. }) => tx.try_send(StreamEvent::Item(body)).is_ok(),
        _ => false,
    }
}

fn transport_error(error: SendError) -> RpcError {
    let transport = match error {
        // A routed session whose relays are gone for now.
        SendError::NoRoute(_) => return RpcError::NoRoute,
        SendError::NotConnected(_) => TransportError::NoSession,
        SendError::Seal(_) | SendError::Closed => TransportError::SessionClosed,
        SendError::TooLarge { .. } | SendError::Io(_) | SendError::Encode(_) => {
            TransportError::Backpressure
        }
    };
    RpcError::Transport(transport)
}
