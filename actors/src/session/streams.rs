//! The session actor's stream work: one `runtime::stream::Streams` table per session.
//!
//! Inputs: `Stream` packets and `Subprotocol::STREAM` envelopes of a receive batch, the
//! handles' sends, consumption reports and closes, and one timer. After each input the
//! actor calls [`SessionStreams::pump`], which carries out everything the cores want:
//!
//! 1. lifecycle events → close replies, failures published to the handles;
//! 2. `poll_deliver` → each handle's bounded channel, only as far as it has permits;
//! 3. `poll_transmit` → sealed `Stream` packets (`RELIABLE` flag for reliable streams);
//! 4. `poll_control` → sealed `Control` packets carrying `STREAM` envelopes;
//! 5. the send limit (`consumed + window`) published to each handle;
//! 6. done streams removed once their linger (the peer's give-up time) is over; one timer
//!    armed at the earliest of the table's `poll_timeout` and the next linger end.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use netrun_messages::envelope::{Envelope, Subprotocol};
use netrun_messages::stream::{ResetReason, StreamFrame};
use netrun_messages::{NodeId, PacketFlags, PacketKind};
use netrun_runtime::stream::{
    DEFAULT_MAX_STREAMS, StreamConfig, StreamConfigError, StreamError, StreamEvent, StreamStats,
    Streams, TableError,
};
use ractor::{ActorRef, RpcReplyPort};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::debug;

use super::SessionMsg;
use crate::stats::TransportStats;
use crate::stream::{Shared, StreamHandle, StreamOpenError};
use crate::wire::{PeerKeys, Wire};

/// A session's streams and what the actor keeps beside each core.
#[derive(Debug)]
pub(super) struct SessionStreams {
    table: Streams,
    local: HashMap<u64, Local>,
    peer: NodeId,
    /// The armed timer: its deadline and token (a timer message with another token is
    /// stale and ignored).
    timer: Option<(Instant, u64)>,
    next_token: u64,
    /// The earliest end of a done stream's linger.
    linger_until: Option<Instant>,
    /// Encoding scratch (segments and envelopes).
    buf: Vec<u8>,
    body: Vec<u8>,
}

/// The actor's side of one stream.
#[derive(Debug)]
struct Local {
    shared: Arc<Shared>,
    /// Delivery channel; dropped once the peer finished and everything was delivered, or
    /// the stream failed.
    tx: Option<mpsc::Sender<Bytes>>,
    window: u64,
    /// Bytes the core accepted from `send` (its next byte offset).
    sent: u64,
    finished: bool,
    close_waiters: Vec<RpcReplyPort<Result<(), StreamError>>>,
    /// When the stream was first seen done (closed both ways, or failed).
    done_at: Option<Instant>,
    /// How long a done stream stays in the table: the peer's give-up time, so that its
    /// late retransmissions (a FIN whose ack was lost) still meet this stream instead of
    /// creating a new one with the same id.
    linger: Duration,
}

impl SessionStreams {
    pub(super) fn new(peer: NodeId, accept: StreamConfig) -> Result<Self, StreamConfigError> {
        Ok(Self {
            table: Streams::new(DEFAULT_MAX_STREAMS, accept)?,
            local: HashMap::new(),
            peer,
            timer: None,
            next_token: 0,
            linger_until: None,
            buf: Vec::new(),
            body: Vec::new(),
        })
    }

    /// Opens stream `id` locally and returns its handle.
    pub(super) fn open(
        &mut self,
        id: u64,
        config: StreamConfig,
        session: &ActorRef<SessionMsg>,
    ) -> Result<StreamHandle, StreamOpenError> {
        match self.table.open(id, config) {
            Ok(_) => Ok(self.attach(id, config, session)),
            Err(TableError::Exists(id)) => Err(StreamOpenError::Exists(id)),
            Err(TableError::Full) => Err(StreamOpenError::Full),
            Err(TableError::Config(e)) => Err(StreamOpenError::Config(e)),
        }
    }

    /// Creates the handle and the actor-side entry for a stream already in the table.
    fn attach(
        &mut self,
        id: u64,
        config: StreamConfig,
        session: &ActorRef<SessionMsg>,
    ) -> StreamHandle {
        let shared = Shared::new(id, self.peer, &config);
        // At most `window` unconsumed bytes exist and every message holds at least one.
        let (tx, rx) = mpsc::channel(config.window_bytes as usize);
        self.local.insert(
            id,
            Local {
                shared: Arc::clone(&shared),
                tx: Some(tx),
                window: u64::from(config.window_bytes),
                sent: 0,
                finished: false,
                close_waiters: Vec::new(),
                done_at: None,
                linger: config.give_up_time(),
            },
        );
        StreamHandle::new(shared, session.clone(), rx, config.window_bytes)
    }

    /// One authenticated `Stream` packet.
    pub(super) fn on_segment(
        &mut self,
        wire: &Wire,
        session: &ActorRef<SessionMsg>,
        id: u64,
        flags: PacketFlags,
        payload: Bytes,
    ) {
        let now = Instant::now().into_std();
        let reliable = flags.contains(PacketFlags::RELIABLE);
        if self
            .table
            .handle_segment(now, id, reliable, payload)
            .is_err()
        {
            TransportStats::bump(&wire.stats().stream_malformed);
            return;
        }
        if !self.local.contains_key(&id) {
            if let Some(config) = self.table.get(id).map(|s| *s.config()) {
                self.accept(wire, session, id, config);
            }
        }
    }

    /// A stream the peer opened: hand it to the accept queue, or refuse it.
    fn accept(
        &mut self,
        wire: &Wire,
        session: &ActorRef<SessionMsg>,
        id: u64,
        config: StreamConfig,
    ) {
        let handle = self.attach(id, config, session);
        if !wire.accept_stream(handle) {
            // The handle was dropped with the refused send; it asked the actor to abort.
            TransportStats::bump(&wire.stats().streams_refused);
            debug!(stream = id, "accept queue full; stream refused");
        }
    }

    /// One authenticated `Control` packet: a `STREAM` envelope is fed to the table, other
    /// subprotocols are not the stream layer's.
    pub(super) fn on_control(&mut self, wire: &Wire, envelope: &Envelope<'_>) {
        match StreamFrame::decode(envelope.body) {
            Ok(frame) => self.table.handle_frame(Instant::now().into_std(), &frame),
            Err(_) => TransportStats::bump(&wire.stats().stream_malformed),
        }
    }

    /// Takes the sends the handle queued (each already checked against the credit it was
    /// published) and hands them to the core in order.
    pub(super) fn on_send(&mut self, id: u64) {
        let now = Instant::now().into_std();
        let Some(local) = self.local.get_mut(&id) else {
            return;
        };
        let Some(stream) = self.table.get_mut(id) else {
            return;
        };
        for data in local.shared.take_pending() {
            let len = data.len() as u64;
            match stream.send(now, data) {
                Ok(_) => local.sent += len,
                Err(e) => {
                    local
                        .shared
                        .lost_sends
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    debug!(stream = id, error = %e, "send accepted by the handle refused by the core");
                }
            }
        }
    }

    pub(super) fn on_consumed(&mut self, id: u64, bytes: u64) {
        if let Some(stream) = self.table.get_mut(id) {
            stream.on_consumed(bytes);
        }
    }

    pub(super) fn on_close(
        &mut self,
        id: u64,
        timeout: Duration,
        reply: RpcReplyPort<Result<(), StreamError>>,
    ) {
        let now = Instant::now().into_std();
        let (Some(stream), Some(local)) = (self.table.get_mut(id), self.local.get_mut(&id)) else {
            let _ = reply.send(Err(StreamError::Closed));
            return;
        };
        match stream.close_graceful(now, now + timeout) {
            Ok(()) => local.close_waiters.push(reply),
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    pub(super) fn on_abort(&mut self, id: u64) {
        if let Some(stream) = self.table.get_mut(id) {
            stream.abort();
        }
    }

    /// The handle is gone. After the peer's FIN nothing is left to read, so the send half
    /// closes gracefully (within the stream's give-up time) and the peer's own close can
    /// complete; before it, the stream is aborted.
    pub(super) fn on_release(&mut self, id: u64) {
        let now = Instant::now().into_std();
        let finished = self.local.get(&id).is_some_and(|l| l.finished);
        let Some(stream) = self.table.get_mut(id) else {
            return;
        };
        if finished {
            let deadline = now + stream.config().give_up_time();
            if stream.close_graceful(now, deadline).is_err() {
                stream.abort();
            }
        } else {
            stream.abort();
        }
    }

    pub(super) fn stats(&self, id: u64) -> Option<StreamStats> {
        let stats = self.table.get(id)?.stats();
        Some(match self.local.get(&id) {
            Some(local) => local.shared.adjust(stats),
            None => stats,
        })
    }

    /// Every live stream (done streams that only linger are left out).
    pub(super) fn list(&self) -> Vec<(u64, StreamStats)> {
        self.local
            .iter()
            .filter(|(_, local)| local.done_at.is_none())
            .filter_map(|(&id, _)| self.stats(id).map(|s| (id, s)))
            .collect()
    }

    /// A timer fired: runs the cores' timers if it is the armed one.
    pub(super) fn on_timer(&mut self, token: u64) -> bool {
        if self.timer.is_some_and(|(_, t)| t == token) {
            self.timer = None;
            self.table.handle_timeout(Instant::now().into_std());
            true
        } else {
            false
        }
    }

    /// Carries out everything the cores want now (see the module docs).
    pub(super) async fn pump(
        &mut self,
        wire: &Wire,
        keys: Option<&PeerKeys>,
        session: &ActorRef<SessionMsg>,
    ) {
        let now = Instant::now().into_std();
        self.events();
        self.deliver();
        if let Some(keys) = keys {
            self.transmit(wire, keys, now).await;
        }
        self.publish_limits();
        self.reap();
        self.arm(session);
    }

    fn events(&mut self) {
        while let Some((id, event)) = self.table.poll_event() {
            let Some(local) = self.local.get_mut(&id) else {
                continue;
            };
            match event {
                StreamEvent::Finished => local.finished = true,
                StreamEvent::Closed => {
                    for waiter in local.close_waiters.drain(..) {
                        let _ = waiter.send(Ok(()));
                    }
                }
                StreamEvent::CloseTimedOut => {
                    local.shared.fail(ResetReason::CLOSE_TIMEOUT);
                    for waiter in local.close_waiters.drain(..) {
                        let _ = waiter.send(Err(StreamError::Failed(ResetReason::CLOSE_TIMEOUT)));
                    }
                }
                StreamEvent::Failed { reason, by_peer } => {
                    debug!(stream = id, ?reason, by_peer, "stream failed");
                    if let Some(stream) = self.table.get(id) {
                        local.shared.store_stats(stream.stats());
                    }
                    local.shared.fail(reason);
                    local.tx = None;
                    for waiter in local.close_waiters.drain(..) {
                        let _ = waiter.send(Err(StreamError::Failed(reason)));
                    }
                }
            }
        }
    }

    fn deliver(&mut self) {
        for (&id, local) in &mut self.local {
            let Some(tx) = &local.tx else { continue };
            let Some(stream) = self.table.get_mut(id) else {
                continue;
            };
            let mut drained = false;
            while let Ok(permit) = tx.try_reserve() {
                match stream.poll_deliver() {
                    Some(data) => permit.send(data),
                    None => {
                        drained = true;
                        break;
                    }
                }
            }
            if drained && local.finished {
                // Everything up to the peer's FIN is in the channel: end of stream.
                local.tx = None;
            }
        }
    }

    async fn transmit(&mut self, wire: &Wire, keys: &PeerKeys, now: std::time::Instant) {
        while let Some((id, out)) = self.table.poll_transmit(now) {
            self.buf.clear();
            out.encode_into(&mut self.buf);
            let flags = if out.reliable {
                PacketFlags::RELIABLE
            } else {
                PacketFlags::NONE
            };
            if let Err(e) = wire
                .send_with(keys, PacketKind::Stream, id, flags, &self.buf)
                .await
            {
                // The core repairs losses (reliable) or accounts for them (best effort).
                debug!(stream = id, error = %e, "stream segment not sent");
            }
        }
        while let Some(frame) = self.table.poll_control(now) {
            let id = frame.stream();
            self.body.clear();
            frame.encode_into(&mut self.body);
            self.buf.clear();
            match Envelope::new(Subprotocol::STREAM, None, &self.body) {
                Ok(envelope) => envelope.encode_into(&mut self.buf),
                Err(e) => {
                    debug!(stream = id, error = %e, "stream frame not enveloped");
                    continue;
                }
            }
            if let Err(e) = wire
                .send_with(keys, PacketKind::Control, id, PacketFlags::NONE, &self.buf)
                .await
            {
                debug!(stream = id, error = %e, "stream frame not sent");
            }
        }
    }

    fn publish_limits(&mut self) {
        for (&id, local) in &self.local {
            if let Some(stream) = self.table.get(id) {
                let buffered = stream.stats().buffered;
                local
                    .shared
                    .publish_limit(local.sent - buffered.min(local.sent) + local.window);
            }
        }
    }

    /// Removes done streams whose linger is over; notes the next linger deadline.
    fn reap(&mut self) {
        let now = Instant::now();
        let mut next: Option<Instant> = None;
        let mut gone = Vec::new();
        for (&id, local) in &mut self.local {
            let Some(stream) = self.table.get(id) else {
                gone.push(id);
                continue;
            };
            if !stream.is_done() {
                continue;
            }
            let done_at = *local.done_at.get_or_insert_with(|| {
                // Keep the figures readable once the table forgets the stream.
                local.shared.store_stats(stream.stats());
                if local.shared.failure().is_none() {
                    local.shared.mark_closed();
                }
                now
            });
            let until = done_at + local.linger;
            if until <= now {
                gone.push(id);
            } else {
                next = Some(next.map_or(until, |n| n.min(until)));
            }
        }
        self.linger_until = next;
        for id in gone {
            self.table.remove(id);
            if let Some(mut local) = self.local.remove(&id) {
                for waiter in local.close_waiters.drain(..) {
                    let _ = waiter.send(Ok(()));
                }
            }
        }
    }

    /// Arms the timer at the table's next deadline unless an earlier one is armed.
    fn arm(&mut self, session: &ActorRef<SessionMsg>) {
        let core = self.table.poll_timeout().map(Instant::from_std);
        let Some(at) = [core, self.linger_until].into_iter().flatten().min() else {
            return;
        };
        if self.timer.is_some_and(|(armed, _)| armed <= at) {
            return;
        }
        self.next_token += 1;
        let token = self.next_token;
        self.timer = Some((at, token));
        let delay = at.saturating_duration_since(Instant::now());
        session.send_after(delay, move || SessionMsg::StreamTimer { token });
    }

    /// The session is ending: every stream fails and its handles learn it.
    pub(super) fn shut(&mut self) {
        for (&id, local) in &mut self.local {
            if let Some(stream) = self.table.get(id) {
                local.shared.store_stats(stream.stats());
            }
            local.shared.fail(ResetReason::ABORTED);
            local.tx = None;
            for waiter in local.close_waiters.drain(..) {
                let _ = waiter.send(Err(StreamError::Failed(ResetReason::ABORTED)));
            }
        }
    }
}
