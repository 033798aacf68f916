//! Per-peer streams: credit windows, backpressure, retransmission and congestion control.
//!
//! One [`Stream`] is one bidirectional stream `(peer, stream id)`: a send half and a receive
//! half in one sans-IO struct, because each half's feedback rides the other direction (the
//! receive half emits GRANT/NACK for the peer's send half; the send half consumes them).
//! [`Streams`] is the bounded per-session table the session actor holds.
//!
//! ```text
//!   app ─ send(now, bytes) ─▶ [send half] ─ poll_transmit(now) ─▶ Outgoing ─▶ seal ─▶ peer
//!                 ▲ Backpressure / Seq      ▲ handle_grant / handle_nack / handle_reset
//!                                           │
//!   peer ─▶ open ─▶ handle_segment(now) ─▶ [receive half] ─ poll_deliver() ─▶ app
//!                                          │  ▲ on_consumed(n)
//!                                          └─ poll_control(now) ─▶ GRANT / NACK / RESET / PROBE
//!   poll_timeout() ─▶ handle_timeout(now): RTO backstop, NACK gap scan, window probe,
//!                                          close and read deadlines
//!   poll_event() ─▶ Finished / Closed / CloseTimedOut / Failed
//! ```
//!
//! Rules the code keeps:
//! - **Credit.** A send is accepted only if the bytes sent but not consumed by the peer stay
//!   within the window; otherwise `send` answers `Backpressure` at once and nothing is
//!   buffered. Grants carry totals (consumed bytes, next expected seq) and the larger value
//!   wins, so coalesced, reordered or lost grants never undercount.
//! - **Coalescing.** The receive half marks a grant due whenever consumption or the
//!   cumulative ack moves (or a duplicate or PROBE arrives) and emits one grant per
//!   `poll_control` call however many changes happened since: no threshold, so a small
//!   window can never stall waiting for one.
//! - **Retransmit state.** Every reliable segment keeps a descriptor from `send` until the
//!   cumulative ack covers it; nothing evicts it. Each segment carries at least one byte of
//!   credit (empty sends are refused; FIN is the single exception), so the table never holds
//!   more than `window + 1` descriptors: the tx window is never larger than the retransmit
//!   window.
//! - **Repair.** Out-of-order arrival makes the receiver NACK the gaps (coalesced per
//!   stream) once they outlive a reorder tolerance scaled to the measured NACK-to-repair
//!   time (on paths faster than the timer granularity: once three segments overtook the
//!   gap), and repeat (backing off, at most every `nack_interval`) while they persist. The
//!   sender resends NACKed segments at once; a tail loss probe (about two SRTTs) resends
//!   the newest segment so a lost tail or final grant is repaired in round trips; the RTO
//!   backstop resends the oldest segment, then the rest of the flight after the next ack.
//!   RTO per RFC 6298 with Karn's rule, clamped to [10 ms, 2 s]; Reno congestion window.
//!   Past `max_retries` consecutive timeouts the stream fails and queues a RESET.
//! - **Delivery.** Reliable: in order, exactly once. Best effort: on arrival, never held
//!   back; a segment older than one already delivered is dropped as late, and the bytes of
//!   segments skipped over are credited back to the sender so losses never leak credit.

mod config;
mod congestion;
mod recv;
mod retry;
mod send;
mod table;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use netrun_messages::stream::{Reset, ResetReason, SEGMENT_HEADER_LEN, SegmentHeader, StreamFrame};
use thiserror::Error;

pub use config::{
    DEFAULT_MAX_RETRIES, DEFAULT_NACK_INTERVAL, DEFAULT_WINDOW_BYTES, MAX_RETRIES_LIMIT,
    MAX_WINDOW_BYTES, MIN_WINDOW_BYTES, Reliability, StreamConfig, StreamConfigError,
    stream_rtt_config,
};
pub use retry::{BlockingPolicy, RetryPolicy};
pub use table::{DEFAULT_MAX_STREAMS, Streams, TableError};

use recv::RxState;
use send::TxState;

/// A segment sequence number.
pub type Seq = u64;

/// Why a send (or close) was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum StreamError {
    /// The credit window is full; try again after the peer grants more (see [`RetryPolicy`]).
    #[error("stream credit window is full")]
    Backpressure,
    /// The stream was closed for sending.
    #[error("stream is closed")]
    Closed,
    /// The stream failed (retries exhausted, reset by the peer, or a deadline passed).
    #[error("stream failed: reset reason {0:?}")]
    Failed(ResetReason),
    /// The payload is larger than one segment.
    #[error("{len} bytes exceed the {max}-byte segment limit")]
    TooLarge {
        /// Bytes offered.
        len: usize,
        /// The limit (`min(max_segment, window)`).
        max: usize,
    },
    /// Empty sends are refused: every segment must consume credit.
    #[error("empty send")]
    Empty,
}

/// Something the application or actor must learn about, from [`Stream::poll_event`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEvent {
    /// The peer's FIN arrived in order: nothing will be added after what `poll_deliver`
    /// still holds.
    Finished,
    /// A graceful close completed: everything sent was acknowledged (reliable) or
    /// transmitted (best effort).
    Closed,
    /// A graceful close passed its deadline; the stream failed with `CLOSE_TIMEOUT`.
    CloseTimedOut,
    /// The stream failed; pending reads and sends fail with this reason.
    Failed {
        /// Why.
        reason: ResetReason,
        /// Whether the peer's RESET said so (otherwise this side gave up).
        by_peer: bool,
    },
}

/// One segment to seal into a `PacketKind::Stream` packet (set `PacketFlags::RELIABLE`
/// when `reliable`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// The segment header.
    pub header: SegmentHeader,
    /// Application bytes.
    pub data: Bytes,
    /// The stream is reliable.
    pub reliable: bool,
    /// This is a retransmission.
    pub retransmit: bool,
}

impl Outgoing {
    /// Plaintext length (segment header + data).
    pub fn encoded_len(&self) -> usize {
        SEGMENT_HEADER_LEN + self.data.len()
    }

    /// Appends the packet plaintext (segment header + data) to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        self.header.encode_with(&self.data, out);
    }
}

/// Counters and gauges of one stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StreamStats {
    /// Next sequence number `send` will assign.
    pub tx_seq: Seq,
    /// Next sequence number the receive half expects (its cumulative ack).
    pub rx_seq: Seq,
    /// Bytes sent and not yet acknowledged (reliable) or transmitted and not yet consumed
    /// (best effort).
    pub in_flight: u64,
    /// Bytes accepted by `send` and not yet consumed by the peer: never above `window`.
    pub buffered: u64,
    /// The credit window.
    pub window: u64,
    /// Retransmit descriptors held (reliable): always `tx_seq − acked`.
    pub tracked: u64,
    /// Segments retransmitted.
    pub retransmits: u64,
    /// Sends refused with `Backpressure`.
    pub backpressure_events: u64,
    /// Smoothed RTT, once sampled.
    pub srtt: Option<Duration>,
    /// Current retransmission timeout.
    pub rto: Duration,
    /// Congestion window in bytes.
    pub cwnd: u64,
    /// Bytes handed to the application by `poll_deliver`.
    pub delivered_bytes: u64,
    /// Bytes the application reported consumed.
    pub consumed_bytes: u64,
    /// Duplicate segments dropped.
    pub duplicates: u64,
    /// Best effort: segments older than one already delivered, dropped.
    pub late_dropped: u64,
    /// Best effort: segments skipped over (lost or late), never delivered.
    pub skipped_segments: u64,
    /// Segments dropped because they exceeded the granted credit or reorder bound.
    pub overruns: u64,
    /// GRANT frames emitted.
    pub grants_sent: u64,
    /// NACK frames emitted.
    pub nacks_sent: u64,
    /// PROBE frames emitted.
    pub probes_sent: u64,
    /// Grants or NACKs from the peer that claimed more than was sent (clamped, counted).
    pub bad_feedback: u64,
}

/// One bidirectional stream. See the [module docs](self).
#[derive(Debug)]
pub struct Stream {
    id: u64,
    config: StreamConfig,
    tx: TxState,
    rx: RxState,
    failed: Option<ResetReason>,
    failed_by_peer: bool,
    reset_due: Option<ResetReason>,
    events: VecDeque<StreamEvent>,
}

/// Events are one-shot lifecycle transitions; a stream produces at most a handful.
const MAX_EVENTS: usize = 8;

impl Stream {
    /// A stream `id` with `config` (validated).
    pub fn new(id: u64, config: StreamConfig) -> Result<Self, StreamConfigError> {
        config.validate()?;
        Ok(Self {
            id,
            tx: TxState::new(&config),
            rx: RxState::new(&config),
            config,
            failed: None,
            failed_by_peer: false,
            reset_due: None,
            events: VecDeque::new(),
        })
    }

    /// The stream id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The configuration.
    pub fn config(&self) -> &StreamConfig {
        &self.config
    }

    /// Why the stream failed, if it did.
    pub fn failure(&self) -> Option<ResetReason> {
        self.failed
    }

    /// Whether both directions are done: failed, or closed and the peer's FIN received.
    pub fn is_done(&self) -> bool {
        self.failed.is_some() || (self.tx.is_closed() && self.rx.is_finished())
    }

    /// Dispatches a control frame from the peer to the matching handler. A stream that
    /// gave up answers any frame but a RESET with its RESET again (the first may have been
    /// lost), so a peer that is still waiting learns of the failure once it can be heard.
    pub fn handle_frame(&mut self, now: Instant, frame: &StreamFrame) {
        if self.failed.is_some() {
            if !matches!(frame, StreamFrame::Reset(_)) {
                self.answer_failed();
            }
            return;
        }
        match frame {
            StreamFrame::Grant(g) => self.handle_grant(now, g),
            StreamFrame::Nack(n) => self.handle_nack(now, n),
            StreamFrame::Reset(r) => self.handle_reset(r),
            StreamFrame::Probe(p) => self.handle_probe(p),
        }
    }

    /// The peer reset the stream: pending reads and sends fail now.
    pub fn handle_reset(&mut self, reset: &Reset) {
        if self.failed.is_none() {
            self.fail(reset.reason, true);
        }
    }

    /// Aborts the stream and tells the peer.
    pub fn abort(&mut self) {
        if self.failed.is_none() {
            self.fail(ResetReason::ABORTED, false);
        }
    }

    /// The next control frame to send: a RESET first, then the coalesced GRANT, the NACK,
    /// and the send half's window PROBE.
    pub fn poll_control(&mut self, now: Instant) -> Option<StreamFrame> {
        if let Some(reason) = self.reset_due.take() {
            return Some(StreamFrame::Reset(Reset {
                stream: self.id,
                reason,
            }));
        }
        if self.failed.is_some() {
            return None;
        }
        if let Some(frame) = self.rx_poll_control(now) {
            return Some(frame);
        }
        self.tx_poll_probe()
    }

    /// When `handle_timeout` should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.failed.is_some() {
            return None;
        }
        [self.tx_timeout(), self.rx_timeout()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Runs every timer that is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.failed.is_some() {
            return;
        }
        self.tx_handle_timeout(now);
        if self.failed.is_none() {
            self.rx_handle_timeout(now);
        }
    }

    /// The next lifecycle event.
    pub fn poll_event(&mut self) -> Option<StreamEvent> {
        self.events.pop_front()
    }

    /// Counters and gauges.
    pub fn stats(&self) -> StreamStats {
        let mut s = StreamStats::default();
        self.tx.fill_stats(&mut s);
        self.rx.fill_stats(&mut s);
        s
    }

    /// Checks the structural invariants (tx window ≤ retransmit window, buffered ≤ window,
    /// receive buffer ≤ window); for simulations and debug assertions.
    pub fn check_invariants(&self) -> Result<(), &'static str> {
        if self.failed.is_some() {
            // A failed stream released its state on purpose and reported the loss.
            return Ok(());
        }
        self.tx.check_invariants()?;
        self.rx.check_invariants()
    }

    /// Something arrived for a stream that gave up: repeat the RESET (the first may have
    /// been lost). A stream the peer reset stays silent.
    fn answer_failed(&mut self) {
        if !self.failed_by_peer {
            self.reset_due = self.failed;
        }
    }

    fn fail(&mut self, reason: ResetReason, by_peer: bool) {
        self.failed = Some(reason);
        self.failed_by_peer = by_peer;
        if !by_peer {
            self.reset_due = Some(reason);
        }
        self.tx.clear();
        self.rx.clear();
        self.push_event(StreamEvent::Failed { reason, by_peer });
    }

    fn push_event(&mut self, event: StreamEvent) {
        if self.events.len() < MAX_EVENTS {
            self.events.push_back(event);
        }
    }
}

#[cfg(test)]
mod tests;
