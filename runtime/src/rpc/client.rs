//! The caller's call table: one entry per pending call, keyed by a random call id.
//!
//! Each entry carries the actor's context `T` (typically the reply port), handed back in
//! [`Finished`] when the call ends, so the actor keeps no second map. Deadlines sit in an
//! ordered set; [`Calls::poll_timeout`] is the earliest of those and of the streams' credit
//! re-send times. Frames the core wants sent (CANCEL on expiry or drop, CREDIT as a stream
//! is consumed or when a stalled stream's grant must be repeated) come out of
//! [`Calls::poll_transmit`]; results and stream items out of [`Calls::poll_event`].

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use netrun_messages::NodeId;
use netrun_messages::rpc::{
    CallId, Credit, Request, Response, RpcFrame, ServiceName, Status, StreamEnd, StreamItem,
};
use rand_core::RngCore;

use super::{CodecDirection, CodecError, RpcError, Violation};

/// Attempts to draw an unused, non-zero call id before giving up (a collision among a few
/// thousand random 64-bit ids is already vanishingly rare).
const MAX_ID_DRAWS: u32 = 16;
/// Frames waiting in [`Calls::poll_transmit`], per allowed in-flight call. The actor drains
/// the queue after every input, so this only bites if it stops doing so; extra frames are
/// dropped and counted (a lost CANCEL costs the server one handler run, a lost CREDIT is
/// repaired by the next one).
const TRANSMIT_PER_CALL: usize = 2;

/// Limits of a [`Calls`] table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallsConfig {
    /// Pending calls at most; more are refused with [`RpcError::Overloaded`]. Default 4096.
    pub max_in_flight: usize,
    /// Stream window (items) when a streaming call names none. Default 32.
    pub default_window: u32,
    /// Largest stream window a call may ask for; larger ones are cut. Default 1024. It
    /// bounds the out-of-order items buffered per streaming call.
    pub max_window: u32,
    /// How long a stream that may be stalled on a lost CREDIT stays silent before the
    /// caller repeats its grant; doubled after each repeat. Default 100 ms.
    pub credit_resend_after: Duration,
    /// Repeats of one grant at most while nothing arrives (the call's deadline ends a
    /// stream that stays silent). Default 6 (0.1 + 0.2 + … + 3.2 s = 6.3 s).
    pub max_credit_resends: u32,
}

impl Default for CallsConfig {
    fn default() -> Self {
        Self {
            max_in_flight: 4096,
            default_window: 32,
            max_window: 1024,
            credit_resend_after: Duration::from_millis(100),
            max_credit_resends: 6,
        }
    }
}

/// What to call: built with [`CallSpec::unary`] or [`CallSpec::streaming`].
#[derive(Debug, Clone)]
pub struct CallSpec<'a> {
    service: &'a ServiceName,
    body: Bytes,
    deadline: Option<Instant>,
    window: Option<u32>,
    streaming: bool,
    traced: bool,
}

impl<'a> CallSpec<'a> {
    /// A unary call of `service` with `body`, no deadline.
    pub fn unary(service: &'a ServiceName, body: Bytes) -> Self {
        Self {
            service,
            body,
            deadline: None,
            window: None,
            streaming: false,
            traced: false,
        }
    }

    /// A server-streaming call; `window` is the initial credit in items (`None`: the
    /// table's default; the value is kept within 1..=`max_window`).
    pub fn streaming(service: &'a ServiceName, body: Bytes, window: Option<u32>) -> Self {
        Self {
            window,
            streaming: true,
            ..Self::unary(service, body)
        }
    }

    /// Sets the absolute deadline.
    pub fn with_deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Marks the request as carrying the caller's trace context.
    pub fn traced(mut self) -> Self {
        self.traced = true;
        self
    }
}

/// The end of a call.
#[derive(Debug)]
pub struct Finished<T> {
    /// The call.
    pub call_id: CallId,
    /// The node it was sent to.
    pub target: NodeId,
    /// The context given to [`Calls::start`].
    pub ctx: T,
    /// The response body (empty for a stream that ended Ok), or why the call failed.
    pub result: Result<Bytes, RpcError>,
    /// Time from `start` to this result.
    pub latency: Duration,
}

/// Something for the actor, from [`Calls::poll_event`].
#[derive(Debug)]
pub enum CallEvent<T> {
    /// The next stream item, in sequence order. Call [`Calls::consumed`] once the
    /// application has taken it, so credit flows back.
    Item {
        /// The call.
        call_id: CallId,
        /// Item number, from 0.
        seq: u64,
        /// Item body.
        body: Bytes,
    },
    /// The call is over (and its entry gone).
    Finished(Finished<T>),
}

/// What [`Calls::handle_frame`] did with a frame (every outcome but `Accepted` is counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameVerdict {
    /// The frame moved its call on.
    Accepted,
    /// No pending call has this id (late after a timeout, or forged).
    UnknownCall,
    /// The frame came from a node other than the one the call was sent to.
    WrongSender,
    /// A stream item or end already seen.
    Duplicate,
    /// A caller-to-server frame (REQUEST, CANCEL, CREDIT): it belongs to the dispatch table.
    Misdirected,
    /// The server broke the protocol; the call failed and CANCEL was queued.
    Violation(Violation),
}

/// Counters of a [`Calls`] table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallsStats {
    /// Calls started.
    pub started: u64,
    /// Calls refused at start (table full or no free id).
    pub refused: u64,
    /// Calls that ended with a result (Ok or a server error).
    pub answered: u64,
    /// Calls that ran past their deadline.
    pub timed_out: u64,
    /// Calls cancelled by the caller.
    pub cancelled: u64,
    /// Frames from a node other than the call's target.
    pub wrong_sender: u64,
    /// Frames for no pending call.
    pub unknown_call: u64,
    /// Duplicate stream items or ends.
    pub duplicates: u64,
    /// Caller-to-server frames handed to the call table.
    pub misdirected: u64,
    /// Protocol violations by servers.
    pub violations: u64,
    /// CREDIT frames sent (including re-sends).
    pub credits: u64,
    /// CREDIT frames re-sent because a stream fell silent at a grant the server may not
    /// have received.
    pub credits_resent: u64,
    /// CANCEL frames queued.
    pub cancels_sent: u64,
    /// Frames dropped because the transmit queue was full.
    pub transmit_dropped: u64,
}

/// The caller's pending calls.
#[derive(Debug)]
pub struct Calls<T> {
    config: CallsConfig,
    calls: HashMap<CallId, Call<T>>,
    deadlines: BTreeSet<(Instant, CallId)>,
    /// When a possibly stalled stream repeats its grant (see [`ClientStream::resend_at`]).
    resends: BTreeSet<(Instant, CallId)>,
    events: VecDeque<CallEvent<T>>,
    transmit: VecDeque<Outgoing>,
    stats: CallsStats,
}

#[derive(Debug)]
struct Call<T> {
    target: NodeId,
    started: Instant,
    deadline: Option<Instant>,
    ctx: T,
    stream: Option<Box<ClientStream>>,
}

#[derive(Debug)]
struct ClientStream {
    window: u32,
    /// Next sequence number to deliver.
    next: u64,
    /// Items the application has consumed (≤ next).
    consumed: u64,
    /// Largest grant sent: the server may send seq < granted.
    granted: u64,
    /// One more than the highest seq received (items the server has provably sent).
    received: u64,
    /// Grants sent (the initial window, then each CREDIT's total) that no received item
    /// has passed yet, ascending. The server can only be waiting for credit when
    /// `received` equals one of them. At most four: they grow by at least `max(W/2, 1)`
    /// and lie within `received ..= received + W`.
    open_grants: VecDeque<u64>,
    /// When the grant is repeated if nothing happens before (in [`Calls::resends`]).
    resend_at: Option<Instant>,
    /// Repeats of the grant since an item last arrived.
    resends: u32,
    /// A CREDIT for this call is queued in `transmit`.
    credit_queued: bool,
    /// Out-of-order items, all in `next+1 .. granted`.
    buffered: BTreeMap<u64, Bytes>,
    /// STREAM_END seen: (items, status, message).
    end: Option<(u64, Status, String)>,
}

impl ClientStream {
    /// Whether the server may be waiting for a CREDIT it never got: the application has
    /// taken every item that arrived, the stream has not ended, and the items received
    /// reach exactly a grant sent before the latest one. (The server's grant is always one
    /// the caller sent and never below `received`; if it lies above `received` the server
    /// is not short of credit.)
    fn may_stall(&self) -> bool {
        self.end.is_none()
            && self.consumed == self.received
            && self.received < self.granted
            && self.open_grants.front() == Some(&self.received)
    }
}

#[derive(Debug, Clone, Copy)]
enum Outgoing {
    Cancel(NodeId, CallId),
    Credit(CallId),
}

impl<T> Calls<T> {
    /// An empty table. Zero limits are raised to 1 (the credit re-send interval to 1 ms)
    /// and the default window is cut to the maximum.
    pub fn new(config: CallsConfig) -> Self {
        let max_window = config.max_window.max(1);
        let config = CallsConfig {
            max_in_flight: config.max_in_flight.max(1),
            default_window: config.default_window.clamp(1, max_window),
            max_window,
            credit_resend_after: config.credit_resend_after.max(Duration::from_millis(1)),
            max_credit_resends: config.max_credit_resends,
        };
        Self {
            config,
            calls: HashMap::new(),
            deadlines: BTreeSet::new(),
            resends: BTreeSet::new(),
            events: VecDeque::new(),
            transmit: VecDeque::new(),
            stats: CallsStats::default(),
        }
    }

    /// Starts a call to `target`: draws its id from `rng`, records it with `ctx`, and
    /// returns the REQUEST to send. The request carries the budget left until the
    /// deadline, rounded up to whole milliseconds.
    ///
    /// Refused (with `ctx` handed back) when the table is full ([`RpcError::Overloaded`]),
    /// the deadline has already passed ([`RpcError::Timeout`]) or the body is too large
    /// ([`RpcError::Codec`]).
    pub fn start<R: RngCore + ?Sized>(
        &mut self,
        now: Instant,
        target: NodeId,
        spec: CallSpec<'_>,
        ctx: T,
        rng: &mut R,
    ) -> Result<(CallId, RpcFrame<Bytes>), (RpcError, T)> {
        if self.calls.len() >= self.config.max_in_flight {
            self.stats.refused += 1;
            return Err((RpcError::Overloaded, ctx));
        }
        let budget_ms = match spec.deadline {
            None => 0,
            Some(deadline) if deadline <= now => return Err((RpcError::Timeout, ctx)),
            Some(deadline) => ceil_millis(deadline - now),
        };
        let Some(call_id) = self.fresh_id(rng) else {
            self.stats.refused += 1;
            return Err((RpcError::Overloaded, ctx));
        };
        let request = match Request::new(call_id, spec.service.to_bytes(), spec.body) {
            Ok(r) => r.with_deadline_ms(budget_ms),
            Err(e) => {
                let error = CodecError {
                    direction: CodecDirection::Encode,
                    detail: e.to_string(),
                };
                return Err((RpcError::Codec(error), ctx));
            }
        };
        let mut request = if spec.traced {
            request.with_traced()
        } else {
            request
        };
        let stream = if spec.streaming {
            let window = spec
                .window
                .unwrap_or(self.config.default_window)
                .clamp(1, self.config.max_window);
            request = request.with_streaming(window);
            Some(Box::new(ClientStream {
                window,
                next: 0,
                consumed: 0,
                granted: u64::from(window),
                received: 0,
                open_grants: VecDeque::from([u64::from(window)]),
                resend_at: None,
                resends: 0,
                credit_queued: false,
                buffered: BTreeMap::new(),
                end: None,
            }))
        } else {
            None
        };
        if let Some(deadline) = spec.deadline {
            self.deadlines.insert((deadline, call_id));
        }
        self.calls.insert(
            call_id,
            Call {
                target,
                started: now,
                deadline: spec.deadline,
                ctx,
                stream,
            },
        );
        self.stats.started += 1;
        Ok((call_id, RpcFrame::Request(request)))
    }

    /// Takes in a frame from `from`. RESPONSE, STREAM_ITEM and STREAM_END move their call
    /// on; results and items come out of [`Calls::poll_event`]. Frames for unknown calls
    /// or from the wrong node are dropped and counted.
    pub fn handle_frame(
        &mut self,
        now: Instant,
        from: NodeId,
        frame: RpcFrame<Bytes>,
    ) -> FrameVerdict {
        let call_id = frame.call_id();
        if matches!(
            frame,
            RpcFrame::Request(_) | RpcFrame::Cancel(_) | RpcFrame::Credit(_)
        ) {
            self.stats.misdirected += 1;
            return FrameVerdict::Misdirected;
        }
        let Some(call) = self.calls.get(&call_id) else {
            self.stats.unknown_call += 1;
            return FrameVerdict::UnknownCall;
        };
        if call.target != from {
            self.stats.wrong_sender += 1;
            return FrameVerdict::WrongSender;
        }
        let streaming = call.stream.is_some();
        match frame {
            RpcFrame::Response(response) => self.on_response(now, call_id, streaming, response),
            RpcFrame::StreamItem(item) if streaming => self.on_item(now, call_id, item),
            RpcFrame::StreamEnd(end) if streaming => self.on_end(now, call_id, end),
            _ => self.violation(now, call_id, Violation::UnexpectedFrame),
        }
    }

    /// The application consumed `n` items of a streaming call at `now`; queues a CREDIT
    /// once the grant can move by at least half a window (when every granted item is
    /// consumed the grant moves by a whole window). If the stream may then be stalled on
    /// a lost CREDIT, the grant is repeated after a silence (see [`Calls::handle_timeout`]).
    /// Unknown or unary calls are ignored.
    pub fn consumed(&mut self, now: Instant, call_id: CallId, n: u64) {
        let cap = self.transmit_cap();
        let Some(stream) = self.calls.get_mut(&call_id).and_then(|c| c.stream.as_mut()) else {
            return;
        };
        let before = stream.consumed;
        stream.consumed = stream.consumed.saturating_add(n).min(stream.next);
        let progressed = stream.consumed != before;
        let grant = stream.consumed + u64::from(stream.window);
        let step = u64::from(stream.window / 2).max(1);
        if stream.credit_queued {
            // The queued CREDIT reads the grant when it is sent: it carries the latest total.
            stream.granted = stream.granted.max(grant);
        } else if grant >= stream.granted.saturating_add(step) {
            // Checked before the grant moves, so a dropped CREDIT is retried on the next
            // consumption instead of being forgotten.
            if self.transmit.len() >= cap {
                self.stats.transmit_dropped += 1;
            } else {
                stream.credit_queued = true;
                self.transmit.push_back(Outgoing::Credit(call_id));
                stream.granted = grant;
            }
        }
        if progressed {
            // Only progress restarts the silence; a no-op call leaves a scheduled repeat.
            self.arm_resend(now, call_id);
        }
    }

    /// Abandons a pending call (its future was dropped, or it lost a hedge): removes it,
    /// queues CANCEL to its target and returns its context.
    pub fn cancel(&mut self, call_id: CallId) -> Option<T> {
        let call = self.remove(call_id)?;
        self.stats.cancelled += 1;
        self.queue_cancel(call.target, call_id);
        Some(call.ctx)
    }

    /// Expires every call whose deadline is at or before `now`: each finishes with
    /// [`RpcError::Timeout`] and a CANCEL is queued to its target. Then repeats the grant
    /// of every stream that is due: one whose application has taken every item that
    /// arrived, that has not ended, whose received items reach exactly an older grant
    /// than the latest (so the server may be waiting for a CREDIT that was lost), and
    /// that stayed silent for the re-send interval. CREDIT is a total, so a repeat is
    /// harmless; repeats back off (doubling) and stop after `max_credit_resends` until
    /// an item arrives.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(deadline, call_id)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            self.stats.timed_out += 1;
            if let Some(target) = self.calls.get(&call_id).map(|c| c.target) {
                self.queue_cancel(target, call_id);
            }
            self.finish(now, call_id, Err(RpcError::Timeout));
        }
        while let Some(&(at, call_id)) = self.resends.first() {
            if at > now {
                break;
            }
            self.resends.pop_first();
            self.resend_credit(now, call_id);
        }
    }

    /// The earliest pending deadline or credit re-send.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let deadline = self.deadlines.first().map(|(at, _)| *at);
        let resend = self.resends.first().map(|(at, _)| *at);
        match (deadline, resend) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next result or stream item.
    pub fn poll_event(&mut self) -> Option<CallEvent<T>> {
        self.events.pop_front()
    }

    /// The next frame to send and its destination (CANCEL or CREDIT).
    pub fn poll_transmit(&mut self) -> Option<(NodeId, RpcFrame<Bytes>)> {
        while let Some(out) = self.transmit.pop_front() {
            match out {
                Outgoing::Cancel(target, call_id) => {
                    return Some((target, RpcFrame::Cancel(call_id)));
                }
                Outgoing::Credit(call_id) => {
                    let Some(call) = self.calls.get_mut(&call_id) else {
                        continue;
                    };
                    let Some(stream) = call.stream.as_mut() else {
                        continue;
                    };
                    stream.credit_queued = false;
                    if stream.open_grants.back() != Some(&stream.granted) {
                        stream.open_grants.push_back(stream.granted);
                    }
                    self.stats.credits += 1;
                    let credit = Credit {
                        call_id,
                        grant: stream.granted,
                    };
                    return Some((call.target, RpcFrame::Credit(credit)));
                }
            }
        }
        None
    }

    /// The context of a pending call.
    pub fn context(&self, call_id: CallId) -> Option<&T> {
        self.calls.get(&call_id).map(|c| &c.ctx)
    }

    /// The context of a pending call, mutably.
    pub fn context_mut(&mut self, call_id: CallId) -> Option<&mut T> {
        self.calls.get_mut(&call_id).map(|c| &mut c.ctx)
    }

    /// The node a pending call was sent to.
    pub fn target(&self, call_id: CallId) -> Option<NodeId> {
        self.calls.get(&call_id).map(|c| c.target)
    }

    /// The deadline of a pending call.
    pub fn deadline(&self, call_id: CallId) -> Option<Instant> {
        self.calls.get(&call_id).and_then(|c| c.deadline)
    }

    /// Pending calls.
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    /// Whether no call is pending.
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// Counters.
    pub fn stats(&self) -> CallsStats {
        self.stats
    }

    fn fresh_id<R: RngCore + ?Sized>(&self, rng: &mut R) -> Option<CallId> {
        (0..MAX_ID_DRAWS)
            .map(|_| CallId(rng.next_u64()))
            .find(|id| id.0 != 0 && !self.calls.contains_key(id))
    }

    fn on_response(
        &mut self,
        now: Instant,
        call_id: CallId,
        streaming: bool,
        response: Response<Bytes>,
    ) -> FrameVerdict {
        let status = response.status();
        if status.is_ok() {
            if streaming {
                return self.violation(now, call_id, Violation::UnexpectedFrame);
            }
            self.stats.answered += 1;
            self.finish(now, call_id, Ok(response.into_payload()));
        } else {
            // A refusal (NotFound, Unavailable, …) ends unary and streaming calls alike.
            let error = RpcError::from_status(status, response.message().unwrap_or_default());
            self.stats.answered += 1;
            self.finish(now, call_id, Err(error));
        }
        FrameVerdict::Accepted
    }

    fn on_item(&mut self, now: Instant, call_id: CallId, item: StreamItem<Bytes>) -> FrameVerdict {
        let Some(stream) = self.calls.get_mut(&call_id).and_then(|c| c.stream.as_mut()) else {
            return FrameVerdict::UnknownCall;
        };
        let seq = item.seq();
        if seq < stream.next || stream.buffered.contains_key(&seq) {
            self.stats.duplicates += 1;
            return FrameVerdict::Duplicate;
        }
        if seq >= stream.granted {
            return self.violation(now, call_id, Violation::BeyondCredit);
        }
        if stream
            .end
            .as_ref()
            .is_some_and(|(items, _, _)| seq >= *items)
        {
            return self.violation(now, call_id, Violation::ItemCount);
        }
        if seq == stream.next {
            stream.next += 1;
            let body = item.into_body();
            self.events
                .push_back(CallEvent::Item { call_id, seq, body });
            while let Some(body) = stream.buffered.remove(&stream.next) {
                self.events.push_back(CallEvent::Item {
                    call_id,
                    seq: stream.next,
                    body,
                });
                stream.next += 1;
            }
        } else {
            stream.buffered.insert(seq, item.into_body());
        }
        stream.received = stream.received.max(seq + 1);
        while stream
            .open_grants
            .front()
            .is_some_and(|grant| *grant < stream.received)
        {
            stream.open_grants.pop_front();
        }
        stream.resends = 0;
        self.arm_resend(now, call_id);
        self.maybe_complete(now, call_id);
        FrameVerdict::Accepted
    }

    fn on_end(&mut self, now: Instant, call_id: CallId, end: StreamEnd<Bytes>) -> FrameVerdict {
        let Some(stream) = self.calls.get_mut(&call_id).and_then(|c| c.stream.as_mut()) else {
            return FrameVerdict::UnknownCall;
        };
        if stream.end.is_some() {
            self.stats.duplicates += 1;
            return FrameVerdict::Duplicate;
        }
        let items = end.items();
        let beyond_seen = stream
            .buffered
            .last_key_value()
            .is_some_and(|(seq, _)| *seq >= items);
        if items < stream.next || items > stream.granted || beyond_seen {
            return self.violation(now, call_id, Violation::ItemCount);
        }
        stream.end = Some((items, end.status(), end.message().to_owned()));
        self.arm_resend(now, call_id);
        self.maybe_complete(now, call_id);
        FrameVerdict::Accepted
    }

    /// Finishes a streaming call whose end arrived once every item before it was delivered.
    fn maybe_complete(&mut self, now: Instant, call_id: CallId) {
        let Some(stream) = self.calls.get_mut(&call_id).and_then(|c| c.stream.as_mut()) else {
            return;
        };
        let Some((items, status, message)) = stream.end.as_mut() else {
            return;
        };
        if stream.next < *items {
            return;
        }
        let result = if status.is_ok() {
            Ok(Bytes::new())
        } else {
            Err(RpcError::from_status(*status, &std::mem::take(message)))
        };
        self.stats.answered += 1;
        self.finish(now, call_id, result);
    }

    fn violation(&mut self, now: Instant, call_id: CallId, violation: Violation) -> FrameVerdict {
        self.stats.violations += 1;
        if let Some(target) = self.calls.get(&call_id).map(|c| c.target) {
            self.queue_cancel(target, call_id);
        }
        self.finish(now, call_id, Err(RpcError::Protocol(violation)));
        FrameVerdict::Violation(violation)
    }

    fn finish(&mut self, now: Instant, call_id: CallId, result: Result<Bytes, RpcError>) {
        if let Some(call) = self.remove(call_id) {
            self.events.push_back(CallEvent::Finished(Finished {
                call_id,
                target: call.target,
                ctx: call.ctx,
                result,
                latency: now.saturating_duration_since(call.started),
            }));
        }
    }

    fn remove(&mut self, call_id: CallId) -> Option<Call<T>> {
        let call = self.calls.remove(&call_id)?;
        if let Some(deadline) = call.deadline {
            self.deadlines.remove(&(deadline, call_id));
        }
        if let Some(at) = call.stream.as_ref().and_then(|s| s.resend_at) {
            self.resends.remove(&(at, call_id));
        }
        Some(call)
    }

    /// After activity on a stream at `now`: schedules a repeat of its grant one back-off
    /// interval later if the stream may be stalled on a lost CREDIT (and the repeats are
    /// not used up), and drops any repeat scheduled before.
    fn arm_resend(&mut self, now: Instant, call_id: CallId) {
        let Some(stream) = self.calls.get_mut(&call_id).and_then(|c| c.stream.as_mut()) else {
            return;
        };
        if let Some(at) = stream.resend_at.take() {
            self.resends.remove(&(at, call_id));
        }
        if !stream.may_stall() || stream.resends >= self.config.max_credit_resends {
            return;
        }
        let backoff = self
            .config
            .credit_resend_after
            .saturating_mul(1 << stream.resends.min(16));
        if let Some(at) = now.checked_add(backoff) {
            stream.resend_at = Some(at);
            self.resends.insert((at, call_id));
        }
    }

    /// A stream's re-send time came: queues a CREDIT with its current grant if it still
    /// may be stalled, and schedules the next repeat.
    fn resend_credit(&mut self, now: Instant, call_id: CallId) {
        let cap = self.transmit_cap();
        let Some(stream) = self.calls.get_mut(&call_id).and_then(|c| c.stream.as_mut()) else {
            return;
        };
        stream.resend_at = None;
        if !stream.may_stall() {
            return;
        }
        if !stream.credit_queued {
            if self.transmit.len() >= cap {
                self.stats.transmit_dropped += 1;
            } else {
                stream.credit_queued = true;
                self.transmit.push_back(Outgoing::Credit(call_id));
                self.stats.credits_resent += 1;
            }
        }
        stream.resends += 1;
        self.arm_resend(now, call_id);
    }

    fn transmit_cap(&self) -> usize {
        self.config.max_in_flight.saturating_mul(TRANSMIT_PER_CALL)
    }

    fn queue_cancel(&mut self, target: NodeId, call_id: CallId) {
        if self.transmit.len() >= self.transmit_cap() {
            self.stats.transmit_dropped += 1;
            return;
        }
        self.stats.cancels_sent += 1;
        self.transmit.push_back(Outgoing::Cancel(target, call_id));
    }
}

/// Whole milliseconds of `d`, rounded up, in 1..=u32::MAX (0 would mean "no deadline").
fn ceil_millis(d: Duration) -> u32 {
    let ms = d.as_nanos().div_ceil(1_000_000);
    u32::try_from(ms).unwrap_or(u32::MAX).max(1)
}
