//! The caller's call table: one entry per pending call, keyed by a random call id.
//!
//! Each entry carries the actor's context `T` (typically the reply port), handed back in
//! [`Finished`] when the call ends, so the actor keeps no second map. Deadlines sit in an
//! ordered set; [`Calls::poll_timeout`] is its first element. Frames the core wants sent
//! (CANCEL on expiry or drop, CREDIT as a stream is consumed) come out of
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
}

impl Default for CallsConfig {
    fn default() -> Self {
        Self {
            max_in_flight: 4096,
            default_window: 32,
            max_window: 1024,
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
    /// CREDIT frames queued.
    pub credits: u64,
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
    /// A CREDIT for this call is queued in `transmit`.
    credit_queued: bool,
    /// Out-of-order items, all in `next+1 .. granted`.
    buffered: BTreeMap<u64, Bytes>,
    /// STREAM_END seen: (items, status, message).
    end: Option<(u64, Status, String)>,
}

#[derive(Debug, Clone, Copy)]
enum Outgoing {
    Cancel(NodeId, CallId),
    Credit(CallId),
}

impl<T> Calls<T> {
    /// An empty table. Zero limits are raised to 1 and the default window is cut to the
    /// maximum.
    pub fn new(config: CallsConfig) -> Self {
        let max_window = config.max_window.max(1);
        let config = CallsConfig {
            max_in_flight: config.max_in_flight.max(1),
            default_window: config.default_window.clamp(1, max_window),
            max_window,
        };
        Self {
            config,
            calls: HashMap::new(),
            deadlines: BTreeSet::new(),
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

    /// The application consumed `n` items of a streaming call; queues a CREDIT once the
    /// grant can move by at least half a window (never stalls: when every granted item
    /// is consumed the grant moves by a whole window). Unknown or unary calls are ignored.
    pub fn consumed(&mut self, call_id: CallId, n: u64) {
        let cap = self.transmit_cap();
        let Some(stream) = self.calls.get_mut(&call_id).and_then(|c| c.stream.as_mut()) else {
            return;
        };
        stream.consumed = stream.consumed.saturating_add(n).min(stream.next);
        let grant = stream.consumed + u64::from(stream.window);
        if stream.credit_queued {
            // The queued CREDIT reads the grant when it is sent: it carries the latest total.
            stream.granted = stream.granted.max(grant);
            return;
        }
        let step = u64::from(stream.window / 2).max(1);
        if grant >= stream.granted.saturating_add(step) {
            // Checked before the grant moves, so a dropped CREDIT is retried on the next
            // consumption instead of being forgotten.
            if self.transmit.len() >= cap {
                self.stats.transmit_dropped += 1;
                return;
            }
            stream.credit_queued = true;
            self.transmit.push_back(Outgoing::Credit(call_id));
            stream.granted = grant;
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
    /// [`RpcError::Timeout`] and a CANCEL is queued to its target.
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
    }

    /// The earliest pending deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.first().map(|(at, _)| *at)
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
        Some(call)
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
