//! The server's dispatch table: which services are served, and one entry per in-flight
//! request keyed by (caller, call id).
//!
//! The actor hands REQUEST, CANCEL and CREDIT frames to [`Dispatch::handle_request`],
//! [`Dispatch::handle_cancel`] and [`Dispatch::handle_credit`]; it runs a handler for every
//! [`Admission::Dispatch`], sends stream items through [`Dispatch::send_item`] (which
//! refuses anything beyond the caller's credit) and reports the handler's result to
//! [`Dispatch::finish`], which returns the frame to send. Each entry holds the actor's
//! context `T` (typically the handler's cancellation handle).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use netrun_messages::NodeId;
use netrun_messages::rpc::{
    CallId, Credit, Request, RequestFlags, Response, RpcFrame, ServiceName, Status, StatusError,
    StreamEnd, StreamItem, bounded_message,
};
use thiserror::Error;

/// Limits of a [`Dispatch`] table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DispatchConfig {
    /// Requests in flight at most, over all callers; more are answered
    /// `ResourceExhausted`. Default 1024.
    pub max_in_flight: usize,
    /// Requests in flight from one caller at most, so one node cannot take every slot.
    /// Default 256.
    pub max_per_caller: usize,
    /// Most stream items a caller may have granted beyond those sent; larger grants are
    /// cut (and counted). Default 1024.
    pub max_window: u32,
    /// Services served (or draining) at once. Default 256.
    pub max_services: usize,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        Self {
            max_in_flight: 1024,
            max_per_caller: 256,
            max_window: 1024,
            max_services: 256,
        }
    }
}

/// Names one in-flight request: the caller's node and its call id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallKey {
    /// The calling node (the authenticated sender of the REQUEST).
    pub caller: NodeId,
    /// The caller's call id.
    pub call_id: CallId,
}

/// An admitted request, for the handler.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// Who called, and the call id.
    pub key: CallKey,
    /// The service called.
    pub service: ServiceName,
    /// The request body (a slice of the received frame).
    pub body: Bytes,
    /// When the caller's budget runs out (arrival time plus the budget), if it set one.
    pub deadline: Option<Instant>,
    /// The caller expects a stream of items.
    pub streaming: bool,
    /// The request's envelope carried the caller's trace context.
    pub traced: bool,
}

/// What [`Dispatch::handle_request`] decided.
#[derive(Debug)]
pub enum Admission<T> {
    /// Run the handler; the table holds `ctx` until [`Dispatch::finish`].
    Dispatch(Incoming),
    /// Not admitted: send `response` (an error RESPONSE) back to the caller.
    Refused {
        /// The context, handed back.
        ctx: T,
        /// Why: `NotFound`, `Unavailable` (draining) or `ResourceExhausted` (full).
        status: Status,
        /// The error RESPONSE to send.
        response: RpcFrame<Bytes>,
    },
    /// A request with this (caller, call id) is already in flight: ignored, first wins.
    Duplicate {
        /// The context, handed back.
        ctx: T,
    },
}

/// A handler's failure: the status and message the caller receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerError {
    /// The status (never Ok; [`Dispatch::finish`] turns Ok into `Internal`).
    pub status: Status,
    /// The message; cut to `MAX_MESSAGE_LEN` bytes on the wire.
    pub message: String,
}

impl HandlerError {
    /// A failure with `status`.
    pub fn new(status: Status, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// `Internal`: what the actor reports when a handler panics.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Status::INTERNAL, message)
    }

    /// An application-band failure; `code` must be in 0x8000..=0xFFFF.
    pub fn application(code: u16, message: impl Into<String>) -> Result<Self, StatusError> {
        Ok(Self::new(Status::application(code)?, message))
    }
}

/// A finished request, from [`Dispatch::finish`].
#[derive(Debug)]
pub struct Completion<T> {
    /// The context given at admission.
    pub ctx: T,
    /// The service that was called.
    pub service: ServiceName,
    /// The status the caller gets (or would have got, had it not cancelled).
    pub status: Status,
    /// The RESPONSE or STREAM_END to send; `None` when the call was cancelled or its
    /// deadline passed (the caller has given up on it).
    pub frame: Option<RpcFrame<Bytes>>,
    /// Time from admission to finish.
    pub elapsed: Duration,
}

/// Why a stream item could not be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ItemError {
    /// No such request in flight.
    #[error("no such call in flight")]
    UnknownCall,
    /// The request is unary.
    #[error("the call is not streaming")]
    NotStreaming,
    /// The caller cancelled or the deadline passed: stop producing.
    #[error("the call was cancelled")]
    Cancelled,
    /// Every granted item was sent; wait for CREDIT ([`Dispatch::handle_credit`]).
    #[error("no stream credit")]
    NoCredit,
    /// The body exceeds `MAX_RPC_BODY_LEN`.
    #[error("stream item too large")]
    TooLarge,
}

/// Something for the actor, from [`Dispatch::poll_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerEvent {
    /// The request's deadline passed: notify its handler ([`Dispatch::context`]); its
    /// result will not be sent.
    DeadlineExpired(CallKey),
    /// A service that stopped serving has no request left in flight and is gone.
    Drained(ServiceName),
}

/// Why a service could not be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ServeError {
    /// The service is already served (and not draining).
    #[error("service is already served")]
    AlreadyServing,
    /// The table serves its maximum number of services.
    #[error("too many services")]
    TooManyServices,
}

/// What [`Dispatch::stop_serving`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopOutcome {
    /// Nothing was in flight: the service is gone.
    Stopped,
    /// New requests are refused; [`ServerEvent::Drained`] follows the last in-flight one.
    Draining {
        /// Requests still in flight.
        in_flight: usize,
    },
    /// The service was not served.
    NotServing,
}

/// Counters of a [`Dispatch`] table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DispatchStats {
    /// Requests admitted.
    pub admitted: u64,
    /// Requests ignored as duplicates of one in flight.
    pub duplicates: u64,
    /// Requests refused `NotFound`.
    pub not_found: u64,
    /// Requests refused `Unavailable` (draining).
    pub unavailable: u64,
    /// Requests refused `ResourceExhausted` (a bound was reached).
    pub exhausted: u64,
    /// CANCELs that cancelled a running request.
    pub cancelled: u64,
    /// CANCELs for no running request (unknown, finished or already cancelled).
    pub stray_cancels: u64,
    /// Requests whose deadline passed in flight.
    pub expired: u64,
    /// Requests finished.
    pub finished: u64,
    /// CREDITs for no streaming request in flight.
    pub stray_credits: u64,
    /// CREDITs cut to the window limit.
    pub clamped_credits: u64,
    /// Stream items sent.
    pub items: u64,
}

/// The server's services and in-flight requests.
#[derive(Debug)]
pub struct Dispatch<T> {
    config: DispatchConfig,
    services: HashMap<ServiceName, ServiceState>,
    calls: HashMap<CallKey, InFlight<T>>,
    per_caller: HashMap<NodeId, usize>,
    deadlines: BTreeSet<(Instant, CallKey)>,
    events: VecDeque<ServerEvent>,
    draining_all: bool,
    stats: DispatchStats,
}

#[derive(Debug, Default)]
struct ServiceState {
    draining: bool,
    in_flight: usize,
}

#[derive(Debug)]
struct InFlight<T> {
    service: ServiceName,
    started: Instant,
    deadline: Option<Instant>,
    ctx: T,
    state: CallState,
    stream: Option<ServerStream>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallState {
    Running,
    Cancelled,
    Expired,
}

#[derive(Debug, Clone, Copy)]
struct ServerStream {
    /// Items `0..granted` may be sent.
    granted: u64,
    /// Items sent so far (the next seq).
    sent: u64,
}

impl<T> Dispatch<T> {
    /// An empty table serving nothing. Zero limits are raised to 1.
    pub fn new(config: DispatchConfig) -> Self {
        let config = DispatchConfig {
            max_in_flight: config.max_in_flight.max(1),
            max_per_caller: config.max_per_caller.max(1),
            max_window: config.max_window.max(1),
            max_services: config.max_services.max(1),
        };
        Self {
            config,
            services: HashMap::new(),
            calls: HashMap::new(),
            per_caller: HashMap::new(),
            deadlines: BTreeSet::new(),
            events: VecDeque::new(),
            draining_all: false,
            stats: DispatchStats::default(),
        }
    }

    /// Starts serving `service` (or resumes one that was draining).
    pub fn serve(&mut self, service: ServiceName) -> Result<(), ServeError> {
        if let Some(state) = self.services.get_mut(&service) {
            if !state.draining {
                return Err(ServeError::AlreadyServing);
            }
            state.draining = false;
            return Ok(());
        }
        if self.services.len() >= self.config.max_services {
            return Err(ServeError::TooManyServices);
        }
        self.services.insert(service, ServiceState::default());
        Ok(())
    }

    /// Stops admitting requests for `service` (they are answered `Unavailable`); requests
    /// in flight finish normally.
    pub fn stop_serving(&mut self, service: &str) -> StopOutcome {
        let Some(state) = self.services.get_mut(service) else {
            return StopOutcome::NotServing;
        };
        if state.in_flight == 0 {
            self.services.remove(service);
            return StopOutcome::Stopped;
        }
        state.draining = true;
        StopOutcome::Draining {
            in_flight: state.in_flight,
        }
    }

    /// Stops admitting requests for every service (node shutdown); see [`Dispatch::is_idle`].
    pub fn drain_all(&mut self) {
        self.draining_all = true;
    }

    /// Whether `service` admits requests.
    pub fn is_serving(&self, service: &str) -> bool {
        !self.draining_all && self.services.get(service).is_some_and(|s| !s.draining)
    }

    /// The services that admit requests (what the node announces as `nrpc:<service>`).
    pub fn services(&self) -> impl Iterator<Item = &ServiceName> + '_ {
        self.services
            .iter()
            .filter(|(_, s)| !s.draining)
            .map(|(name, _)| name)
    }

    /// Takes in a REQUEST from `from` (the authenticated sender) and decides whether to
    /// run its handler.
    pub fn handle_request(
        &mut self,
        now: Instant,
        from: NodeId,
        request: Request<Bytes>,
        ctx: T,
    ) -> Admission<T> {
        let key = CallKey {
            caller: from,
            call_id: request.call_id(),
        };
        if self.calls.contains_key(&key) {
            self.stats.duplicates += 1;
            return Admission::Duplicate { ctx };
        }
        let refusal = match self.services.get(request.service()) {
            None => Some((Status::NOT_FOUND, "no such service")),
            Some(s) if s.draining || self.draining_all => {
                Some((Status::UNAVAILABLE, "service is draining"))
            }
            Some(_) if self.calls.len() >= self.config.max_in_flight => {
                Some((Status::RESOURCE_EXHAUSTED, "too many requests in flight"))
            }
            Some(_)
                if self.per_caller.get(&from).copied().unwrap_or(0)
                    >= self.config.max_per_caller =>
            {
                Some((
                    Status::RESOURCE_EXHAUSTED,
                    "too many requests from this caller",
                ))
            }
            Some(_) => None,
        };
        if let Some((status, message)) = refusal {
            match status {
                Status::NOT_FOUND => self.stats.not_found += 1,
                Status::UNAVAILABLE => self.stats.unavailable += 1,
                _ => self.stats.exhausted += 1,
            }
            return Admission::Refused {
                ctx,
                status,
                response: error_response(key.call_id, status, message),
            };
        }
        let service = request.service_name();
        if let Some(state) = self.services.get_mut(request.service()) {
            state.in_flight += 1;
        }
        *self.per_caller.entry(from).or_insert(0) += 1;
        let deadline = request
            .deadline()
            .and_then(|budget| now.checked_add(budget));
        if let Some(at) = deadline {
            self.deadlines.insert((at, key));
        }
        let streaming = request.is_streaming();
        let stream = streaming.then(|| ServerStream {
            granted: u64::from(request.window().min(self.config.max_window)),
            sent: 0,
        });
        let traced = request.flags().contains(RequestFlags::TRACED);
        self.calls.insert(
            key,
            InFlight {
                service: service.clone(),
                started: now,
                deadline,
                ctx,
                state: CallState::Running,
                stream,
            },
        );
        self.stats.admitted += 1;
        Admission::Dispatch(Incoming {
            key,
            service,
            body: request.into_body(),
            deadline,
            streaming,
            traced,
        })
    }

    /// Takes in a CANCEL from `from`: marks the request cancelled and returns its context
    /// so the actor can tell the handler. The entry stays until the handler finishes; its
    /// result is not sent. `None` for unknown, finished or already cancelled requests.
    pub fn handle_cancel(&mut self, from: NodeId, call_id: CallId) -> Option<&T> {
        let key = CallKey {
            caller: from,
            call_id,
        };
        match self.calls.get_mut(&key) {
            Some(call) if call.state == CallState::Running => {
                call.state = CallState::Cancelled;
                if let Some(at) = call.deadline {
                    self.deadlines.remove(&(at, key));
                }
                self.stats.cancelled += 1;
                Some(&call.ctx)
            }
            _ => {
                self.stats.stray_cancels += 1;
                None
            }
        }
    }

    /// Takes in a CREDIT from `from`: raises the request's grant (never lowers it; cut to
    /// `max_window` items beyond those sent) and returns the items that may now be sent.
    /// `None` for unknown, unary or finished requests.
    pub fn handle_credit(&mut self, from: NodeId, credit: Credit) -> Option<u64> {
        let key = CallKey {
            caller: from,
            call_id: credit.call_id,
        };
        let Some(call) = self.calls.get_mut(&key) else {
            self.stats.stray_credits += 1;
            return None;
        };
        let Some(stream) = call.stream.as_mut() else {
            self.stats.stray_credits += 1;
            return None;
        };
        let limit = stream
            .sent
            .saturating_add(u64::from(self.config.max_window));
        if credit.grant > limit {
            self.stats.clamped_credits += 1;
        }
        stream.granted = stream.granted.max(credit.grant.min(limit));
        (call.state == CallState::Running).then(|| stream.granted - stream.sent)
    }

    /// Items the request may still send before it needs more credit.
    pub fn credit(&self, key: CallKey) -> Option<u64> {
        let stream = self.calls.get(&key)?.stream.as_ref()?;
        Some(stream.granted.saturating_sub(stream.sent))
    }

    /// The STREAM_ITEM carrying the handler's next item, if the caller's credit allows it.
    pub fn send_item(&mut self, key: CallKey, body: &Bytes) -> Result<RpcFrame<Bytes>, ItemError> {
        let call = self.calls.get_mut(&key).ok_or(ItemError::UnknownCall)?;
        if call.state != CallState::Running {
            return Err(ItemError::Cancelled);
        }
        let stream = call.stream.as_mut().ok_or(ItemError::NotStreaming)?;
        if stream.sent >= stream.granted {
            return Err(ItemError::NoCredit);
        }
        let item = StreamItem::new(key.call_id, stream.sent, body.clone())
            .map_err(|_| ItemError::TooLarge)?;
        stream.sent += 1;
        self.stats.items += 1;
        Ok(RpcFrame::StreamItem(item))
    }

    /// The handler finished: removes the request and returns the frame to send, if the
    /// caller still waits. For a unary request `Ok(body)` becomes an Ok RESPONSE (a body
    /// over the limit becomes `Internal`); for a streaming one `Ok(_)` ends the stream Ok
    /// (the bytes are ignored) and an error ends it with that status after the items sent.
    pub fn finish(
        &mut self,
        now: Instant,
        key: CallKey,
        outcome: Result<Bytes, HandlerError>,
    ) -> Option<Completion<T>> {
        let call = self.calls.remove(&key)?;
        self.stats.finished += 1;
        if let Some(at) = call.deadline {
            self.deadlines.remove(&(at, key));
        }
        if let Some(count) = self.per_caller.get_mut(&key.caller) {
            *count -= 1;
            if *count == 0 {
                self.per_caller.remove(&key.caller);
            }
        }
        if let Some(state) = self.services.get_mut(&call.service) {
            state.in_flight -= 1;
            if state.draining && state.in_flight == 0 {
                self.services.remove(&call.service);
                self.events
                    .push_back(ServerEvent::Drained(call.service.clone()));
            }
        }
        let (status, frame) = match (call.stream, outcome) {
            (None, Ok(body)) => match Response::ok(key.call_id, body) {
                Ok(r) => (Status::OK, RpcFrame::Response(r)),
                Err(_) => (
                    Status::INTERNAL,
                    error_response(key.call_id, Status::INTERNAL, "response body too large"),
                ),
            },
            (None, Err(e)) => {
                let status = not_ok(e.status);
                (status, error_response(key.call_id, status, &e.message))
            }
            (Some(stream), outcome) => {
                let (status, message) = match &outcome {
                    Ok(_) => (Status::OK, ""),
                    Err(e) => (not_ok(e.status), e.message.as_str()),
                };
                (
                    status,
                    stream_end(key.call_id, status, stream.sent, message),
                )
            }
        };
        let status = match call.state {
            CallState::Running => status,
            CallState::Cancelled => Status::CANCELLED,
            CallState::Expired => Status::DEADLINE_EXCEEDED,
        };
        Some(Completion {
            ctx: call.ctx,
            service: call.service,
            status,
            frame: (call.state == CallState::Running).then_some(frame),
            elapsed: now.saturating_duration_since(call.started),
        })
    }

    /// Expires every running request whose deadline is at or before `now`
    /// ([`ServerEvent::DeadlineExpired`]).
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(at, key)) = self.deadlines.first() {
            if at > now {
                break;
            }
            self.deadlines.pop_first();
            if let Some(call) = self.calls.get_mut(&key) {
                if call.state == CallState::Running {
                    call.state = CallState::Expired;
                    self.stats.expired += 1;
                    self.events.push_back(ServerEvent::DeadlineExpired(key));
                }
            }
        }
    }

    /// The earliest deadline of a running request.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.first().map(|(at, _)| *at)
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.events.pop_front()
    }

    /// The context of an in-flight request.
    pub fn context(&self, key: CallKey) -> Option<&T> {
        self.calls.get(&key).map(|c| &c.ctx)
    }

    /// Whether the request was cancelled or ran out of time.
    pub fn is_cancelled(&self, key: CallKey) -> Option<bool> {
        self.calls.get(&key).map(|c| c.state != CallState::Running)
    }

    /// Requests in flight.
    pub fn in_flight(&self) -> usize {
        self.calls.len()
    }

    /// Whether no request is in flight (with [`Dispatch::drain_all`]: shutdown may proceed).
    pub fn is_idle(&self) -> bool {
        self.calls.is_empty()
    }

    /// Counters.
    pub fn stats(&self) -> DispatchStats {
        self.stats
    }
}

fn not_ok(status: Status) -> Status {
    if status.is_ok() {
        Status::INTERNAL
    } else {
        status
    }
}

fn error_response(call_id: CallId, status: Status, message: &str) -> RpcFrame<Bytes> {
    let message = Bytes::copy_from_slice(bounded_message(message).as_bytes());
    match Response::error(call_id, status, message) {
        Ok(r) => RpcFrame::Response(r),
        // Unreachable: the status is not Ok and the message is bounded UTF-8.
        Err(_) => RpcFrame::Cancel(call_id),
    }
}

fn stream_end(call_id: CallId, status: Status, items: u64, message: &str) -> RpcFrame<Bytes> {
    let message = Bytes::copy_from_slice(bounded_message(message).as_bytes());
    match StreamEnd::new(call_id, status, items, message) {
        Ok(e) => RpcFrame::StreamEnd(e),
        // Unreachable: the message is bounded UTF-8.
        Err(_) => RpcFrame::Cancel(call_id),
    }
}
