//! Application handles on the streams a session actor drives.
//!
//! The stream cores live in the session actor (`runtime::stream::Streams`, one table per
//! session). A [`StreamHandle`] is the application's end of one stream:
//!
//! ```text
//!   StreamSender::send ── credit check (atomics), queue ──wake──▶ Session{peer} actor
//!        ▲ Backpressure at once                                  │ core: send, poll_transmit
//!        └── credit notify ◀── limit published after each batch ─┤ seal ─▶ UDP
//!   StreamReceiver::recv ◀── bounded mpsc<Bytes> ◀── poll_deliver ┘
//!        └── cast StreamConsumed (coalesced) ──▶ core: on_consumed ─▶ GRANT to the peer
//! ```
//!
//! Sends are queued in the stream's shared state and the actor is woken once per batch
//! (a `StreamSend` message only when none is already on its way), so a fast sender costs
//! one actor message per batch, not per send.
//!
//! Credit is mirrored so `send` never waits for the actor: the actor publishes
//! `limit = bytes the peer consumed + window` (only ever growing) and the sender keeps
//! `reserved` (bytes it handed over). A send of `n` bytes is accepted iff
//! `reserved + n ≤ limit`, the same check the core makes, so the core never refuses a send
//! the handle accepted (except one racing with a failure or close, which is counted).
//!
//! The receive channel is bounded by the window in bytes: the core never holds more than
//! the window delivered-but-unconsumed, and the actor only moves a chunk into the channel
//! when it has a permit, so the channel never drops.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use netrun_messages::NodeId;
use netrun_messages::stream::ResetReason;
use netrun_runtime::stream::{
    BlockingPolicy, RetryPolicy, StreamConfig, StreamConfigError, StreamError, StreamStats,
};
use ractor::ActorRef;
use ractor::rpc::CallResult;
use thiserror::Error;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use crate::session::SessionMsg;

/// Streams peers opened that wait for `accept_stream` before new ones are refused: enough
/// for a burst of opens, small enough that an application that never accepts costs little.
pub const ACCEPT_BACKLOG: usize = 64;

/// How long a request to the session actor (open, close bookkeeping, stats) may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a stream could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StreamOpenError {
    /// There is no established session with that peer.
    #[error("no session with node {0}")]
    NotConnected(NodeId),
    /// A stream with this id is already open with that peer.
    #[error("stream {0} is already open")]
    Exists(u64),
    /// The session's stream table is full.
    #[error("the session's stream table is full")]
    Full,
    /// The configuration was refused.
    #[error("stream config: {0}")]
    Config(#[from] StreamConfigError),
    /// The session ended while opening.
    #[error("the session closed")]
    SessionClosed,
}

/// State shared by a stream's handle halves and its session actor.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) id: u64,
    pub(crate) peer: NodeId,
    pub(crate) max_send: usize,
    /// Bytes the peer consumed plus the window: the send limit (published by the actor).
    pub(crate) limit: AtomicU64,
    /// Bytes the sender handed to the actor.
    reserved: AtomicU64,
    /// 0 while healthy, else the reset reason + 1.
    failed: AtomicU32,
    /// The application closed the send half.
    closed: AtomicBool,
    /// Woken whenever `limit` grows or the stream fails.
    pub(crate) credit: Notify,
    /// Sends the handle refused with `Backpressure` (the core never saw them).
    refused: AtomicU64,
    /// Sends the actor's core refused after the handle accepted them (close/fail races).
    pub(crate) lost_sends: AtomicU64,
    /// The last statistics, kept once the session forgets the stream.
    pub(crate) last_stats: Mutex<Option<StreamStats>>,
    /// Accepted sends the actor has not taken yet: bounded by the credit, since every one
    /// was reserved against `limit` (at most a window of bytes).
    pending: Mutex<VecDeque<Bytes>>,
    /// A `StreamSend` wake-up is on its way to the actor: later sends only queue.
    wake: AtomicBool,
}

impl Shared {
    pub(crate) fn new(id: u64, peer: NodeId, config: &StreamConfig) -> Arc<Self> {
        let window = u64::from(config.window_bytes);
        Arc::new(Self {
            id,
            peer,
            max_send: config.max_segment.min(config.window_bytes as usize),
            limit: AtomicU64::new(window),
            reserved: AtomicU64::new(0),
            failed: AtomicU32::new(0),
            closed: AtomicBool::new(false),
            credit: Notify::new(),
            refused: AtomicU64::new(0),
            lost_sends: AtomicU64::new(0),
            last_stats: Mutex::new(None),
            pending: Mutex::new(VecDeque::new()),
            wake: AtomicBool::new(false),
        })
    }

    /// Takes every accepted send, in order (the actor, on a `StreamSend` wake-up). The
    /// flag is cleared first, so a send queued after the take sends a new wake-up.
    pub(crate) fn take_pending(&self) -> VecDeque<Bytes> {
        self.wake.store(false, Ordering::Release);
        self.pending
            .lock()
            .map(|mut q| std::mem::take(&mut *q))
            .unwrap_or_default()
    }

    /// Raises the send limit (never lowers it) and wakes waiting senders.
    pub(crate) fn publish_limit(&self, limit: u64) {
        if self.limit.fetch_max(limit, Ordering::AcqRel) < limit {
            self.credit.notify_waiters();
        }
    }

    /// Records the failure and wakes waiting senders.
    pub(crate) fn fail(&self, reason: ResetReason) {
        let _ = self.failed.compare_exchange(
            0,
            u32::from(reason.0) + 1,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        self.credit.notify_waiters();
    }

    /// The stream ended cleanly: later sends answer `Closed`.
    pub(crate) fn mark_closed(&self) {
        self.closed.store(true, Ordering::Release);
        self.credit.notify_waiters();
    }

    pub(crate) fn failure(&self) -> Option<ResetReason> {
        match self.failed.load(Ordering::Acquire) {
            0 => None,
            n => Some(ResetReason(u16::try_from(n - 1).unwrap_or(u16::MAX))),
        }
    }

    pub(crate) fn store_stats(&self, stats: StreamStats) {
        if let Ok(mut slot) = self.last_stats.lock() {
            *slot = Some(stats);
        }
    }

    /// Adds what only the handle knows to the core's statistics.
    pub(crate) fn adjust(&self, mut stats: StreamStats) -> StreamStats {
        stats.backpressure_events += self.refused.load(Ordering::Relaxed);
        stats
    }
}

/// Releases the stream when the application drops its last half.
#[derive(Debug)]
struct Guard {
    shared: Arc<Shared>,
    session: ActorRef<SessionMsg>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        // A stream that already ended needs nothing; the session may be gone already.
        if self.shared.failure().is_none() {
            let _ = self
                .session
                .send_message(SessionMsg::StreamRelease { id: self.shared.id });
        }
    }
}

/// One stream with one peer: both halves. Dropping the last half after the peer finished
/// (`recv` returned `None`) closes the send half gracefully in the background; dropping it
/// earlier aborts the stream (RESET `ABORTED`). Use [`close_graceful`](Self::close_graceful)
/// to finish cleanly and learn the outcome.
#[derive(Debug)]
pub struct StreamHandle {
    sender: StreamSender,
    receiver: StreamReceiver,
}

/// The sending half of a stream.
#[derive(Debug)]
pub struct StreamSender {
    guard: Arc<Guard>,
}

/// The receiving half of a stream.
#[derive(Debug)]
pub struct StreamReceiver {
    guard: Arc<Guard>,
    rx: mpsc::Receiver<Bytes>,
    /// Received bytes not yet reported as consumed.
    unreported: u64,
    /// Report consumption once this many bytes are pending, even if more data is queued.
    report_every: u64,
}

impl StreamHandle {
    pub(crate) fn new(
        shared: Arc<Shared>,
        session: ActorRef<SessionMsg>,
        rx: mpsc::Receiver<Bytes>,
        window: u32,
    ) -> Self {
        let guard = Arc::new(Guard { shared, session });
        Self {
            sender: StreamSender {
                guard: Arc::clone(&guard),
            },
            receiver: StreamReceiver {
                guard,
                rx,
                unreported: 0,
                report_every: u64::from(window / 4).max(1),
            },
        }
    }

    /// The stream id.
    pub fn id(&self) -> u64 {
        self.sender.id()
    }

    /// The peer.
    pub fn peer(&self) -> NodeId {
        self.sender.peer()
    }

    /// Splits into independently owned halves.
    pub fn split(self) -> (StreamSender, StreamReceiver) {
        (self.sender, self.receiver)
    }

    /// See [`StreamSender::send`].
    pub fn send(&self, data: Bytes) -> Result<(), StreamError> {
        self.sender.send(data)
    }

    /// See [`StreamSender::send_with_retry`].
    pub async fn send_with_retry(
        &self,
        data: Bytes,
        policy: RetryPolicy,
    ) -> Result<(), StreamError> {
        self.sender.send_with_retry(data, policy).await
    }

    /// See [`StreamSender::send_blocking`].
    pub async fn send_blocking(
        &self,
        data: Bytes,
        policy: BlockingPolicy,
    ) -> Result<(), StreamError> {
        self.sender.send_blocking(data, policy).await
    }

    /// See [`StreamReceiver::recv`].
    pub async fn recv(&mut self) -> Option<Bytes> {
        self.receiver.recv().await
    }

    /// See [`StreamSender::stats`].
    pub async fn stats(&self) -> StreamStats {
        self.sender.stats().await
    }

    /// See [`StreamSender::close_graceful`].
    pub async fn close_graceful(&self, timeout: Duration) -> Result<(), StreamError> {
        self.sender.close_graceful(timeout).await
    }

    /// See [`StreamSender::close`].
    pub fn close(&self) {
        self.sender.close();
    }

    /// Why the stream failed, if it did.
    pub fn failure(&self) -> Option<ResetReason> {
        self.sender.guard.shared.failure()
    }
}

impl StreamSender {
    /// The stream id.
    pub fn id(&self) -> u64 {
        self.guard.shared.id
    }

    /// The peer.
    pub fn peer(&self) -> NodeId {
        self.guard.shared.peer
    }

    /// Sends one message (one segment: at most `min(max_segment, window)` bytes).
    ///
    /// Never waits: `Backpressure` when the window is full (nothing is queued), `Closed`
    /// after a close, `Failed` once the stream failed or its session ended, `TooLarge`,
    /// `Empty`. An accepted send is handed to the session actor without a reply; reliable
    /// streams then deliver it or fail.
    pub fn send(&self, data: Bytes) -> Result<(), StreamError> {
        let shared = &self.guard.shared;
        if let Some(reason) = shared.failure() {
            return Err(StreamError::Failed(reason));
        }
        if shared.closed.load(Ordering::Acquire) {
            return Err(StreamError::Closed);
        }
        if data.is_empty() {
            return Err(StreamError::Empty);
        }
        if data.len() > shared.max_send {
            return Err(StreamError::TooLarge {
                len: data.len(),
                max: shared.max_send,
            });
        }
        let len = data.len() as u64;
        let mut reserved = shared.reserved.load(Ordering::Acquire);
        loop {
            if reserved + len > shared.limit.load(Ordering::Acquire) {
                shared.refused.fetch_add(1, Ordering::Relaxed);
                return Err(StreamError::Backpressure);
            }
            match shared.reserved.compare_exchange_weak(
                reserved,
                reserved + len,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(now) => reserved = now,
            }
        }
        match shared.pending.lock() {
            Ok(mut queue) => queue.push_back(data),
            Err(_) => {
                shared.fail(ResetReason::ABORTED);
                return Err(StreamError::Failed(ResetReason::ABORTED));
            }
        }
        // One wake-up per batch: while one is on its way, the actor will take this too.
        if !shared.wake.swap(true, Ordering::AcqRel) {
            let msg = SessionMsg::StreamSend { id: shared.id };
            if self.guard.session.send_message(msg).is_err() {
                shared.fail(ResetReason::ABORTED);
                return Err(StreamError::Failed(ResetReason::ABORTED));
            }
        }
        Ok(())
    }

    /// [`send`](Self::send), retrying on `Backpressure` after each delay of `policy` or as
    /// soon as the peer grants credit, whichever comes first. Returns `Backpressure` once
    /// the attempts are spent; any other error at once.
    pub async fn send_with_retry(
        &self,
        data: Bytes,
        policy: RetryPolicy,
    ) -> Result<(), StreamError> {
        self.send_waiting(data, |attempt| policy.delay(attempt))
            .await
    }

    /// [`send`](Self::send), waiting on `Backpressure` with the capped backoff of `policy`
    /// (woken early when credit opens) until its total budget is spent, then
    /// `Backpressure`. Any other error ends the wait at once.
    pub async fn send_blocking(
        &self,
        data: Bytes,
        policy: BlockingPolicy,
    ) -> Result<(), StreamError> {
        let start = Instant::now();
        self.send_waiting(data, |attempt| policy.delay(attempt, start.elapsed()))
            .await
    }

    /// Retries `send` while it says `Backpressure`, sleeping `next_delay(attempt)` between
    /// tries (woken early when the peer grants credit), until `next_delay` gives up.
    async fn send_waiting(
        &self,
        data: Bytes,
        mut next_delay: impl FnMut(u32) -> Option<Duration>,
    ) -> Result<(), StreamError> {
        let mut attempt = 0;
        loop {
            // Registered before the try, so a grant between the try and the wait wakes us.
            let notified = self.guard.shared.credit.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.send(data.clone()) {
                Err(StreamError::Backpressure) => {}
                other => return other,
            }
            let Some(delay) = next_delay(attempt) else {
                return Err(StreamError::Backpressure);
            };
            attempt += 1;
            let _ = tokio::time::timeout(delay, notified).await;
        }
    }

    /// Closes the send half gracefully: a FIN follows the data, and this returns once
    /// everything sent was acknowledged (reliable) or transmitted (best effort). Past
    /// `timeout` the stream fails with `CLOSE_TIMEOUT` and the peer is reset.
    pub async fn close_graceful(&self, timeout: Duration) -> Result<(), StreamError> {
        let shared = &self.guard.shared;
        if let Some(reason) = shared.failure() {
            return Err(StreamError::Failed(reason));
        }
        shared.closed.store(true, Ordering::Release);
        let id = shared.id;
        let call = self.guard.session.call(
            |reply| SessionMsg::StreamClose { id, timeout, reply },
            // The core enforces `timeout`; the margin only covers a lost actor.
            Some(timeout + CALL_TIMEOUT),
        );
        match call.await {
            Ok(CallResult::Success(result)) => result,
            Ok(CallResult::Timeout) => Err(StreamError::Failed(ResetReason::CLOSE_TIMEOUT)),
            Ok(CallResult::SenderError) | Err(_) => Err(StreamError::Failed(
                shared.failure().unwrap_or(ResetReason::ABORTED),
            )),
        }
    }

    /// Aborts the stream at once: pending data is discarded and the peer gets a RESET
    /// (`ABORTED`).
    pub fn close(&self) {
        let shared = &self.guard.shared;
        shared.closed.store(true, Ordering::Release);
        let _ = self
            .guard
            .session
            .send_message(SessionMsg::StreamAbort { id: shared.id });
    }

    /// The stream's counters: the core's, plus the sends this handle refused. After the
    /// session forgot the stream, the last values it reported.
    pub async fn stats(&self) -> StreamStats {
        let shared = &self.guard.shared;
        let id = shared.id;
        let call = self.guard.session.call(
            |reply| SessionMsg::StreamStats { id, reply },
            Some(CALL_TIMEOUT),
        );
        match call.await {
            // The session already added this handle's refusals.
            Ok(CallResult::Success(Some(stats))) => stats,
            _ => shared.adjust(
                shared
                    .last_stats
                    .lock()
                    .ok()
                    .and_then(|s| *s)
                    .unwrap_or_default(),
            ),
        }
    }

    /// Sends this handle accepted that the stream then refused, because it failed or was
    /// closed in between (counted, never silently lost).
    pub fn lost_sends(&self) -> u64 {
        self.guard.shared.lost_sends.load(Ordering::Relaxed)
    }

    /// Why the stream failed, if it did.
    pub fn failure(&self) -> Option<ResetReason> {
        self.guard.shared.failure()
    }
}

impl StreamReceiver {
    /// The stream id.
    pub fn id(&self) -> u64 {
        self.guard.shared.id
    }

    /// The next message, in order for reliable streams and in arrival order for best
    /// effort. `None` once the peer finished (after the last message), the stream failed
    /// ([`failure`](Self::failure) says why) or the session ended.
    ///
    /// Consumption is reported to the session, which grants the peer more credit:
    /// coalesced every quarter window, and always before this waits for more data, so a
    /// sender is never left waiting for credit the application has already freed.
    pub async fn recv(&mut self) -> Option<Bytes> {
        let data = match self.rx.try_recv() {
            Ok(data) => data,
            Err(mpsc::error::TryRecvError::Empty) => {
                self.report();
                self.rx.recv().await?
            }
            Err(mpsc::error::TryRecvError::Disconnected) => {
                self.report();
                return None;
            }
        };
        self.unreported += data.len() as u64;
        if self.unreported >= self.report_every {
            self.report();
        }
        Some(data)
    }

    /// Why the stream failed, if it did.
    pub fn failure(&self) -> Option<ResetReason> {
        self.guard.shared.failure()
    }

    fn report(&mut self) {
        if self.unreported == 0 {
            return;
        }
        let bytes = std::mem::take(&mut self.unreported);
        let _ = self.guard.session.send_message(SessionMsg::StreamConsumed {
            id: self.guard.shared.id,
            bytes,
        });
    }
}

impl Drop for StreamReceiver {
    fn drop(&mut self) {
        // What was received counts as consumed, so a sender with a live send half is not
        // stalled by bytes nobody will report.
        self.report();
    }
}
