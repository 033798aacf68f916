//! The caller's side: [`RpcHandle`] (calls with retry and hedging, serving), the guard
//! that cancels a dropped call, [`CallStream`] and [`ServeHandle`].

use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use netrun_messages::rpc::{CallId, ServiceName, Status};
use netrun_messages::{NodeId, TraceContext};
use netrun_runtime::rpc::{
    Hedge, HedgePolicy, HedgeStep, RetryPolicy, RpcError, SelectPolicy, TransportError,
};
use rand_chacha::ChaCha20Rng;
use rand_core::{OsRng, RngCore, SeedableRng};
use tokio::sync::{mpsc, oneshot};
use tokio::task::{AbortHandle, JoinSet};

use super::handler::HandlerKind;
use super::msg::{CallStart, Msg, Outcome, Reply, RpcMsg, StreamEvent, Target};
use super::{
    CallOptions, DEFAULT_WINDOW, Handler, MAX_CALL_BODY_LEN, MAX_NOT_FOUND_SKIPS, RpcShared,
    RpcStatus, ServeError, ServiceDirectory, StreamingHandler,
};

/// Hands a message to the current RPC actor incarnation; `false` if none is running.
type Mailbox = Arc<dyn Fn(RpcMsg) -> bool + Send + Sync>;

/// How long to wait for the actor's answer to a status request before giving up.
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);

thread_local! {
    /// Where call ids come from: ChaCha20 seeded from the OS RNG, one per thread, so ids
    /// are unpredictable without a system call per call.
    static CALL_IDS: RefCell<ChaCha20Rng> = RefCell::new(ChaCha20Rng::from_seed({
        let mut seed = [0u8; 32];
        OsRng.fill_bytes(&mut seed);
        seed
    }));
}

/// A fresh random call id.
fn call_id() -> CallId {
    CallId(CALL_IDS.with(|rng| rng.borrow_mut().next_u64()))
}

/// The clock calls are timed by (tokio's, so paused-time tests drive deadlines too).
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// The error a call gets when no RPC actor is running (restarting or shut down).
fn stopped() -> RpcError {
    RpcError::Transport(TransportError::Stopped)
}

/// A handle on the node's RPC actor: make calls, serve services. Cheap to clone.
#[derive(Clone)]
pub struct RpcHandle {
    shared: Arc<RpcShared>,
    mailbox: Mailbox,
}

impl std::fmt::Debug for RpcHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcHandle")
            .field("local", &self.shared.local())
            .finish_non_exhaustive()
    }
}

/// Which calls a run makes.
#[derive(Debug, Clone, Copy)]
enum CallTarget {
    Node(NodeId),
    Service,
}

impl RpcHandle {
    /// A handle over `shared`, reaching the actor through `mailbox` (which returns `false`
    /// when no incarnation is running; the node passes its supervised child's handle).
    pub fn new(
        shared: Arc<RpcShared>,
        mailbox: impl Fn(RpcMsg) -> bool + Send + Sync + 'static,
    ) -> Self {
        Self {
            shared,
            mailbox: Arc::new(mailbox),
        }
    }

    /// The shared state (registry, directory, configuration).
    pub fn shared(&self) -> &Arc<RpcShared> {
        &self.shared
    }

    /// Serves `service` with a unary handler until the returned handle is dropped.
    pub fn serve(
        &self,
        service: ServiceName,
        handler: impl Handler,
    ) -> Result<ServeHandle, ServeError> {
        self.register(service, HandlerKind::Unary(Arc::new(handler)))
    }

    /// Serves `service` with a streaming handler until the returned handle is dropped.
    pub fn serve_streaming(
        &self,
        service: ServiceName,
        handler: impl StreamingHandler,
    ) -> Result<ServeHandle, ServeError> {
        self.register(service, HandlerKind::Streaming(Arc::new(handler)))
    }

    fn register(
        &self,
        service: ServiceName,
        handler: HandlerKind,
    ) -> Result<ServeHandle, ServeError> {
        let id = self.shared.register(service.clone(), handler)?;
        // A lost Sync (actor restarting) is harmless: a new incarnation reads the registry.
        (self.mailbox)(RpcMsg(Msg::Sync));
        Ok(ServeHandle {
            service,
            id,
            shared: Arc::clone(&self.shared),
            mailbox: Arc::clone(&self.mailbox),
        })
    }

    /// Replaces the directory service calls pick their nodes from.
    pub fn set_directory(&self, directory: Arc<dyn ServiceDirectory>) {
        self.shared.set_directory(directory);
    }

    /// Calls `service` on `node` with `body`; the response body or why the call failed.
    /// `trace` is the caller's span context, carried in the request's envelope.
    pub async fn call(
        &self,
        node: NodeId,
        service: &ServiceName,
        body: Bytes,
        options: &CallOptions,
        trace: Option<TraceContext>,
    ) -> Result<Bytes, RpcError> {
        self.run(CallTarget::Node(node), service, body, options, trace)
            .await
            .result
    }

    /// Calls `service` on a node the directory names, picked by `options.policy` among
    /// healthy nodes (a session, a closed breaker); hedged by `options.hedge`. Returns the
    /// node that answered (if any was picked) with the result.
    pub async fn call_service(
        &self,
        service: &ServiceName,
        body: Bytes,
        options: &CallOptions,
        trace: Option<TraceContext>,
    ) -> (Option<NodeId>, Result<Bytes, RpcError>) {
        let outcome = self
            .run(CallTarget::Service, service, body, options, trace)
            .await;
        (outcome.target, outcome.result)
    }

    /// Starts a server-streaming call of `service` on `node`. Items arrive in order from
    /// [`CallStream::next`]; a failure (including one to start) ends the stream with an
    /// error. Dropping the stream cancels the call. Not retried or hedged.
    pub fn call_streaming(
        &self,
        node: NodeId,
        service: &ServiceName,
        body: Bytes,
        options: &CallOptions,
        trace: Option<TraceContext>,
    ) -> Result<CallStream, RpcError> {
        check_body(&body)?;
        let window = options
            .window
            .unwrap_or(DEFAULT_WINDOW)
            .clamp(1, self.shared.config().calls.max_window.max(1));
        // Items in the queue never exceed the window (the server may not run further
        // ahead of what was consumed), plus one slot for the end.
        let (tx, rx) = mpsc::channel(window as usize + 1);
        let proposed = call_id();
        let deadline = options.deadline.and_then(|d| now().checked_add(d));
        let start = CallStart {
            proposed,
            target: Target::Node(node),
            service: service.clone(),
            body,
            deadline,
            trace,
            reply: Reply::Stream { tx, window },
        };
        if !(self.mailbox)(RpcMsg(Msg::Call(Box::new(start)))) {
            return Err(stopped());
        }
        Ok(CallStream {
            rx: Some(rx),
            call_id: proposed,
            mailbox: Arc::clone(&self.mailbox),
            unreported: 0,
            report_every: u64::from((window / 4).max(1)),
            done: false,
        })
    }

    /// Metrics and counters, or `None` when no actor is running.
    pub async fn status(&self) -> Option<RpcStatus> {
        let (tx, rx) = oneshot::channel();
        if !(self.mailbox)(RpcMsg(Msg::Status(tx))) {
            return None;
        }
        tokio::time::timeout(STATUS_TIMEOUT, rx).await.ok()?.ok()
    }

    /// Attempts (retries, hedges) of one call.
    async fn run(
        &self,
        target: CallTarget,
        service: &ServiceName,
        body: Bytes,
        options: &CallOptions,
        trace: Option<TraceContext>,
    ) -> Outcome {
        if let Err(error) = check_body(&body) {
            return Outcome {
                target: None,
                result: Err(error),
            };
        }
        let started = now();
        let overall = options.deadline.and_then(|d| started.checked_add(d));
        let retry = options.retry.unwrap_or_else(RetryPolicy::never);
        let mut attempts = 0u32;
        let mut skipped: Vec<NodeId> = Vec::new();
        let mut not_found: Option<Outcome> = None;
        loop {
            attempts += 1;
            let at = now();
            let deadline = match (overall, options.attempt_timeout) {
                (Some(o), Some(a)) => Some(at.checked_add(a).map_or(o, |a| a.min(o))),
                (o, a) => o.or_else(|| a.and_then(|a| at.checked_add(a))),
            };
            let outcome = match target {
                CallTarget::Node(node) => {
                    self.attempt(Target::Node(node), service, body.clone(), deadline, trace)
                        .await
                }
                CallTarget::Service => match options.hedge {
                    Some(hedge) => {
                        self.hedged(
                            service,
                            &body,
                            hedge,
                            options.policy,
                            deadline,
                            trace,
                            &skipped,
                        )
                        .await
                    }
                    None => {
                        let target = Target::Service {
                            policy: options.policy,
                            exclude: skipped.clone(),
                        };
                        self.attempt(target, service, body.clone(), deadline, trace)
                            .await
                    }
                },
            };
            let error = match &outcome.result {
                Ok(_) => return outcome,
                Err(e) => e.clone(),
            };
            if let CallTarget::Service = target {
                // A node that does not serve the service is skipped without spending an
                // attempt; when none is left, its answer is more telling than `NoRoute`.
                if is_not_found(&error) && skipped.len() < MAX_NOT_FOUND_SKIPS {
                    if let Some(node) = outcome.target {
                        skipped.push(node);
                        not_found = Some(outcome);
                        attempts -= 1;
                        continue;
                    }
                }
                if error == RpcError::NoRoute {
                    if let Some(previous) = not_found {
                        return previous;
                    }
                }
            }
            let Some(wait) = retry.next_attempt(attempts, &error, &mut OsRng) else {
                return outcome;
            };
            if overall.is_some_and(|o| now().checked_add(wait).is_none_or(|t| t >= o)) {
                return outcome;
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// One call: a message to the actor and a wait on the reply port. Dropping the future
    /// while it waits abandons the call (CANCEL).
    async fn attempt(
        &self,
        target: Target,
        service: &ServiceName,
        body: Bytes,
        deadline: Option<Instant>,
        trace: Option<TraceContext>,
    ) -> Outcome {
        let proposed = call_id();
        let (tx, rx) = oneshot::channel();
        let start = CallStart {
            proposed,
            target,
            service: service.clone(),
            body,
            deadline,
            trace,
            reply: Reply::Unary(tx),
        };
        if !(self.mailbox)(RpcMsg(Msg::Call(Box::new(start)))) {
            return Outcome {
                target: None,
                result: Err(stopped()),
            };
        }
        let mut guard = AbandonGuard {
            mailbox: Arc::clone(&self.mailbox),
            call_id: proposed,
            rx: Some(rx),
        };
        guard.wait().await.unwrap_or(Outcome {
            target: None,
            result: Err(stopped()),
        })
    }

    /// One hedged attempt of a service call: the primary at once, hedge `i` after
    /// `delay × i` to a node not tried yet; the first success wins and the others are
    /// cancelled (their tasks are aborted, their guards send CANCEL).
    #[allow(clippy::too_many_arguments)]
    async fn hedged(
        &self,
        service: &ServiceName,
        body: &Bytes,
        policy: HedgePolicy,
        select: SelectPolicy,
        deadline: Option<Instant>,
        trace: Option<TraceContext>,
        skipped: &[NodeId],
    ) -> Outcome {
        let first = match self.pick(service, select, skipped.to_vec()).await {
            Ok(node) => node,
            Err(error) => {
                return Outcome {
                    target: None,
                    result: Err(error),
                };
            }
        };
        let mut hedge = Hedge::new(now(), policy, first, CallId(0));
        let mut set = JoinSet::new();
        let mut aborts: Vec<AbortHandle> = Vec::new();
        aborts.push(self.spawn_attempt(&mut set, 0, first, service, body, deadline, trace));
        let mut last: Option<Outcome> = None;
        loop {
            let due = hedge.poll_timeout();
            tokio::select! {
                joined = set.join_next() => {
                    let Some(joined) = joined else {
                        return last.unwrap_or(Outcome { target: None, result: Err(RpcError::Cancelled) });
                    };
                    // Only losers are aborted, after the result is known.
                    let Ok((index, outcome)) = joined else { continue };
                    match hedge.handle_reply(CallId(index), outcome.result.is_ok()) {
                        HedgeStep::Done { cancel, .. } => {
                            for (_, id) in cancel {
                                if let Some(abort) = usize::try_from(id.0).ok().and_then(|i| aborts.get(i)) {
                                    abort.abort();
                                }
                            }
                            return outcome;
                        }
                        HedgeStep::Wait => last = Some(outcome),
                        HedgeStep::Ignored => {}
                    }
                }
                () = sleep_until(due), if due.is_some() => {
                    let mut exclude: Vec<NodeId> = hedge.targets().collect();
                    exclude.extend_from_slice(skipped);
                    let fresh: Vec<NodeId> = self.pick(service, select, exclude).await.ok().into_iter().collect();
                    if let Some(target) = hedge.handle_timeout(now(), &fresh) {
                        let index = aborts.len() as u64;
                        if hedge.add_attempt(target, CallId(index)).is_ok() {
                            aborts.push(self.spawn_attempt(&mut set, index, target, service, body, deadline, trace));
                        }
                    }
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn spawn_attempt(
        &self,
        set: &mut JoinSet<(u64, Outcome)>,
        index: u64,
        node: NodeId,
        service: &ServiceName,
        body: &Bytes,
        deadline: Option<Instant>,
        trace: Option<TraceContext>,
    ) -> AbortHandle {
        let handle = self.clone();
        let service = service.clone();
        let body = body.clone();
        set.spawn(async move {
            let outcome = handle
                .attempt(Target::Node(node), &service, body, deadline, trace)
                .await;
            (index, outcome)
        })
    }

    async fn pick(
        &self,
        service: &ServiceName,
        policy: SelectPolicy,
        exclude: Vec<NodeId>,
    ) -> Result<NodeId, RpcError> {
        let (reply, rx) = oneshot::channel();
        let pick = Msg::Pick {
            service: service.clone(),
            policy,
            exclude,
            reply,
        };
        if !(self.mailbox)(RpcMsg(pick)) {
            return Err(stopped());
        }
        rx.await.unwrap_or_else(|_| Err(stopped()))
    }
}

fn check_body(body: &Bytes) -> Result<(), RpcError> {
    if body.len() > MAX_CALL_BODY_LEN {
        return Err(RpcError::TooLarge {
            len: body.len(),
            max: MAX_CALL_BODY_LEN,
        });
    }
    Ok(())
}

fn is_not_found(error: &RpcError) -> bool {
    matches!(error, RpcError::ServerError { status, .. } if *status == Status::NOT_FOUND)
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

/// Waits for a unary call's result; dropped before it arrives, it abandons the call.
struct AbandonGuard {
    mailbox: Mailbox,
    call_id: CallId,
    rx: Option<oneshot::Receiver<Outcome>>,
}

impl AbandonGuard {
    async fn wait(&mut self) -> Option<Outcome> {
        let rx = self.rx.as_mut()?;
        let outcome = rx.await.ok();
        self.rx = None;
        outcome
    }
}

impl Drop for AbandonGuard {
    fn drop(&mut self) {
        if let Some(rx) = self.rx.take() {
            // The reply port closes first, so the actor sees the call as abandoned.
            drop(rx);
            (self.mailbox)(RpcMsg(Msg::Abandon(self.call_id)));
        }
    }
}

/// The items of a server-streaming call, in order. Dropping it before the end cancels the
/// call (CANCEL to the server).
pub struct CallStream {
    rx: Option<mpsc::Receiver<StreamEvent>>,
    call_id: CallId,
    mailbox: Mailbox,
    /// Items taken but not yet reported to the actor (which turns them into credit).
    unreported: u64,
    report_every: u64,
    done: bool,
}

impl std::fmt::Debug for CallStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallStream")
            .field("call_id", &self.call_id)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl CallStream {
    /// The next item; `Some(Err(_))` once if the call failed; `None` after the end.
    pub async fn next(&mut self) -> Option<Result<Bytes, RpcError>> {
        if self.done {
            return None;
        }
        let rx = self.rx.as_mut()?;
        let event = match rx.try_recv() {
            Ok(event) => Some(event),
            Err(mpsc::error::TryRecvError::Disconnected) => None,
            Err(mpsc::error::TryRecvError::Empty) => {
                // Nothing buffered: everything taken so far must turn into credit before
                // waiting, or a server out of credit and this reader would wait on each
                // other.
                self.report();
                match self.rx.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => None,
                }
            }
        };
        match event {
            Some(StreamEvent::Item(body)) => {
                self.unreported += 1;
                if self.unreported >= self.report_every {
                    self.report();
                }
                Some(Ok(body))
            }
            Some(StreamEvent::End(result)) => {
                self.done = true;
                result.err().map(Err)
            }
            None => {
                self.done = true;
                Some(Err(stopped()))
            }
        }
    }

    fn report(&mut self) {
        if self.unreported > 0 {
            let n = std::mem::take(&mut self.unreported);
            (self.mailbox)(RpcMsg(Msg::Consumed {
                call_id: self.call_id,
                n,
            }));
        }
    }
}

impl Drop for CallStream {
    fn drop(&mut self) {
        if let Some(rx) = self.rx.take() {
            drop(rx);
            if !self.done {
                (self.mailbox)(RpcMsg(Msg::Abandon(self.call_id)));
            }
        }
    }
}

/// Serves a service while it lives. Dropping it stops new dispatch (new requests are
/// answered `unavailable`, then `not_found` once the last request in flight finished);
/// requests in flight run to the end and are answered.
pub struct ServeHandle {
    service: ServiceName,
    id: u64,
    shared: Arc<RpcShared>,
    mailbox: Mailbox,
}

impl std::fmt::Debug for ServeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeHandle")
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl ServeHandle {
    /// The service served.
    pub fn service(&self) -> &ServiceName {
        &self.service
    }
}

impl Drop for ServeHandle {
    fn drop(&mut self) {
        self.shared.unregister(&self.service, self.id);
        (self.mailbox)(RpcMsg(Msg::Sync));
    }
}
