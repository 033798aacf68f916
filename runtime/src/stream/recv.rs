//! The receive half: reorder buffer, delivery, credit accounting, GRANT/NACK emission and
//! the pending-read deadline.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use netrun_messages::DecodeError;
use netrun_messages::stream::{
    Grant, MAX_NACK_RANGES, Nack, Probe, ResetReason, SegmentHeader, SeqRange, StreamFrame,
};

use super::{Seq, Stream, StreamConfig, StreamEvent, StreamStats};

/// Before the receiver has measured the path, a gap is NACKed once it has persisted a
/// quarter of `nack_interval` (5 ms by default): long enough for packets of one batch that
/// the path merely reordered, short next to any RTO. Once it has a repair-time estimate
/// (see [`RxState::repair_rtt`]) the tolerance is a quarter of that, capped by the same
/// value.
const REORDER_DELAY_DIVISOR: u32 = 4;
/// Once the repair time is known, a persisting gap is re-NACKed after this many of them
/// (capped by `nack_interval`) before the backoff doubles it.
const REPEAT_RTTS: u32 = 2;
/// Segments held above a gap that make it a loss rather than reordering (fast paths only;
/// see [`RxState::nack_at_once`]).
const DUPTHRESH: usize = 3;

#[derive(Debug)]
struct Held {
    offset: u64,
    data: Bytes,
    fin: bool,
}

#[derive(Debug)]
pub(super) struct RxState {
    reliable: bool,
    window: u64,
    nack_interval: Duration,
    max_nack_interval: Duration,
    /// Timer granularity: a reorder tolerance below it cannot be honoured by a timer, so
    /// the gap is NACKed in the batch that revealed it.
    granularity: Duration,
    give_up: Duration,
    /// Cumulative ack: the lowest seq not yet received in order (best effort: one past the
    /// newest delivered).
    next_expected: Seq,
    /// Byte offset that follows the last in-order (best effort: delivered) segment.
    expected_offset: u64,
    /// Reliable: segments above `next_expected`, waiting for the gaps below them.
    reorder: BTreeMap<Seq, Held>,
    reorder_bytes: u64,
    ready: VecDeque<Bytes>,
    ready_bytes: u64,
    delivered: u64,
    consumed: u64,
    /// Best effort: bytes of segments skipped over, credited back as if consumed.
    skipped_bytes: u64,
    finished: bool,
    grant_due: bool,
    nack_due: bool,
    last_nack: Option<Instant>,
    /// When the current gap episode began (reorder buffer non-empty since, or since the
    /// cumulative ack last moved).
    gap_since: Option<Instant>,
    /// NACKs sent since the cumulative ack last moved: the repeat interval doubles with it.
    nack_repeats: u32,
    /// Smoothed time from a NACK to the arrival of the first segment it asked for: the
    /// receiver's view of the round trip (plus the sender's reaction), which scales the
    /// reorder tolerance and the repeat interval to the path.
    repair_rtt: Option<Duration>,
    /// The pending repair-time measurement: when the NACK went out, the first missing seq
    /// it listed, and whether a repeat NACK made the timing ambiguous (Karn's rule).
    repair_probe: Option<(Instant, Seq, bool)>,
    read_deadline: Option<Instant>,
    duplicates: u64,
    late_dropped: u64,
    skipped_segments: u64,
    overruns: u64,
    grants_sent: u64,
    nacks_sent: u64,
    bad_feedback: u64,
}

impl RxState {
    pub(super) fn new(config: &StreamConfig) -> Self {
        Self {
            reliable: config.is_reliable(),
            window: u64::from(config.window_bytes),
            nack_interval: config.nack_interval,
            max_nack_interval: config.rtt.max_rto,
            granularity: config.rtt.granularity,
            give_up: config.give_up_time(),
            next_expected: 0,
            expected_offset: 0,
            reorder: BTreeMap::new(),
            reorder_bytes: 0,
            ready: VecDeque::new(),
            ready_bytes: 0,
            delivered: 0,
            consumed: 0,
            skipped_bytes: 0,
            finished: false,
            grant_due: false,
            nack_due: false,
            last_nack: None,
            gap_since: None,
            nack_repeats: 0,
            repair_rtt: None,
            repair_probe: None,
            read_deadline: None,
            duplicates: 0,
            late_dropped: 0,
            skipped_segments: 0,
            overruns: 0,
            grants_sent: 0,
            nacks_sent: 0,
            bad_feedback: 0,
        }
    }

    pub(super) fn is_finished(&self) -> bool {
        self.finished
    }

    /// Credit the sender may use up to: consumed (plus skipped) bytes and the window.
    fn credit_limit(&self) -> u64 {
        (self.consumed + self.skipped_bytes).saturating_add(self.window)
    }

    /// Bytes this half holds: reordered, ready, and delivered but not consumed.
    fn held(&self) -> u64 {
        self.reorder_bytes + self.ready_bytes + (self.delivered - self.consumed)
    }

    pub(super) fn clear(&mut self) {
        self.reorder.clear();
        self.reorder_bytes = 0;
        self.ready.clear();
        self.ready_bytes = 0;
        self.grant_due = false;
        self.nack_due = false;
        self.read_deadline = None;
    }

    pub(super) fn fill_stats(&self, s: &mut StreamStats) {
        s.rx_seq = self.next_expected;
        s.delivered_bytes = self.delivered;
        s.consumed_bytes = self.consumed;
        s.duplicates = self.duplicates;
        s.late_dropped = self.late_dropped;
        s.skipped_segments = self.skipped_segments;
        s.overruns = self.overruns;
        s.grants_sent = self.grants_sent;
        s.nacks_sent = self.nacks_sent;
        s.bad_feedback += self.bad_feedback;
    }

    pub(super) fn check_invariants(&self) -> Result<(), &'static str> {
        if self.held() > self.window {
            return Err("receive buffer exceeds the window");
        }
        if self
            .reorder
            .keys()
            .next()
            .is_some_and(|&k| k <= self.next_expected)
        {
            return Err("reorder buffer holds a deliverable segment");
        }
        Ok(())
    }

    fn accept_reliable(&mut self, header: SegmentHeader, data: Bytes) -> Option<StreamEvent> {
        let seq = header.seq;
        if seq < self.next_expected || self.reorder.contains_key(&seq) {
            // A duplicate means our ack may have been lost: repeat it.
            self.duplicates += 1;
            self.grant_due = true;
            return None;
        }
        let len = data.len() as u64;
        let ahead = seq - self.next_expected;
        if self.finished
            || ahead > self.window
            || header.offset.saturating_add(len) > self.credit_limit()
            || self.held() + len > self.window
        {
            self.overruns += 1;
            return None;
        }
        self.reorder.insert(
            seq,
            Held {
                offset: header.offset,
                data,
                fin: header.fin,
            },
        );
        self.reorder_bytes += len;
        let mut event = None;
        while let Some(entry) = self.reorder.first_entry() {
            if *entry.key() != self.next_expected {
                break;
            }
            let held = entry.remove();
            self.reorder_bytes -= held.data.len() as u64;
            self.next_expected += 1;
            self.expected_offset = held.offset + held.data.len() as u64;
            self.grant_due = true;
            self.nack_repeats = 0;
            if !held.data.is_empty() {
                self.ready_bytes += held.data.len() as u64;
                self.ready.push_back(held.data);
            }
            if held.fin {
                self.finished = true;
                // Anything above a FIN is a protocol violation; drop it.
                self.reorder.clear();
                self.reorder_bytes = 0;
                event = Some(StreamEvent::Finished);
                break;
            }
        }
        event
    }

    fn accept_best_effort(&mut self, header: SegmentHeader, data: Bytes) -> Option<StreamEvent> {
        if header.seq < self.next_expected {
            self.late_dropped += 1;
            return None;
        }
        let len = data.len() as u64;
        let end = header.offset.saturating_add(len);
        let Some(next) = header.seq.checked_add(1) else {
            // A sender never reaches seq u64::MAX: that segment has no successor seq.
            self.overruns += 1;
            return None;
        };
        if self.finished || header.offset < self.expected_offset || end > self.credit_limit() {
            self.overruns += 1;
            return None;
        }
        self.skip_to(header.seq, header.offset);
        self.next_expected = next;
        self.expected_offset = end;
        self.grant_due = true;
        if !data.is_empty() {
            self.ready_bytes += len;
            self.ready.push_back(data);
        }
        if header.fin {
            self.finished = true;
            return Some(StreamEvent::Finished);
        }
        None
    }

    /// Best effort: everything below `seq` / `offset` not yet seen is given up on.
    fn skip_to(&mut self, seq: Seq, offset: u64) {
        if seq > self.next_expected {
            self.skipped_segments += seq - self.next_expected;
        }
        if offset > self.expected_offset {
            self.skipped_bytes += offset - self.expected_offset;
            self.grant_due = true;
        }
    }

    /// `nack_interval`, doubled for each NACK since the last progress, capped at the RTO
    /// ceiling: a gap the sender cannot repair (it is gone) costs a few frames, not a flood.
    fn nack_repeat_interval(&self) -> Duration {
        let doublings = self.nack_repeats.saturating_sub(1).min(16);
        let base = self.repair_rtt.map_or(self.nack_interval, |rtt| {
            rtt.saturating_mul(REPEAT_RTTS).min(self.nack_interval)
        });
        base.saturating_mul(1 << doublings)
            .min(self.max_nack_interval.max(self.nack_interval))
    }

    /// When the gap scan next reports the current gaps: `reorder_delay` after a gap episode
    /// begins (arrivals that are merely reordered fill it before then), then every repeat
    /// interval.
    fn nack_at(&self) -> Option<Instant> {
        let since = self.gap_since.filter(|_| !self.reorder.is_empty())?;
        Some(match self.last_nack {
            Some(t) if t >= since => t + self.nack_repeat_interval(),
            _ => since + self.reorder_delay(),
        })
    }

    /// How long a new gap may persist before it is NACKed: a quarter of the repair time,
    /// at least the timer granularity, at most a quarter of `nack_interval` (which also
    /// applies before the first measurement).
    fn reorder_delay(&self) -> Duration {
        let cap = self.nack_interval / REORDER_DELAY_DIVISOR;
        self.repair_rtt.map_or(cap, |rtt| {
            (rtt / REORDER_DELAY_DIVISOR).max(self.granularity).min(cap)
        })
    }

    /// On a path whose reorder tolerance is below the timer granularity, waiting for the
    /// timer would add the granularity to every repair. There a gap is NACKed in the batch
    /// in which [`DUPTHRESH`] segments above it have arrived (the fast-retransmit threshold
    /// of RFC 5681: a packet overtaken by three others is presumed lost, not reordered).
    fn nack_at_once(&self) -> bool {
        let fast = self
            .repair_rtt
            .is_some_and(|rtt| rtt / REORDER_DELAY_DIVISOR < self.granularity);
        let first_of_episode = match (self.gap_since, self.last_nack) {
            (Some(since), Some(t)) => t < since,
            (Some(_), None) => true,
            (None, _) => false,
        };
        fast && first_of_episode && self.reorder.len() >= DUPTHRESH
    }

    /// Segment `seq` arrived (reliable): completes a repair-time measurement.
    fn on_arrival(&mut self, now: Instant, seq: Seq) {
        let Some((sent, probe, ambiguous)) = self.repair_probe else {
            return;
        };
        if seq == probe && !ambiguous {
            let sample = now.saturating_duration_since(sent);
            self.repair_rtt = Some(match self.repair_rtt {
                None => sample,
                Some(rtt) => (rtt * 7 + sample) / 8,
            });
        }
        if seq == probe || probe < self.next_expected {
            self.repair_probe = None;
        }
    }

    fn missing_ranges(&self) -> Vec<SeqRange> {
        let mut ranges = Vec::new();
        let mut from = self.next_expected;
        for &seq in self.reorder.keys() {
            if ranges.len() == MAX_NACK_RANGES {
                break;
            }
            if seq > from {
                ranges.push(SeqRange {
                    start: from,
                    end: seq,
                });
            }
            from = seq + 1;
        }
        ranges
    }
}

impl Stream {
    /// Takes one segment from the peer (already opened and split by
    /// [`SegmentHeader::parse`]).
    ///
    /// Reliable: duplicates are dropped (and re-acknowledged), data past the granted credit
    /// or more than a window's worth of segments ahead is dropped and counted, the rest is
    /// delivered in order. Best effort: see the [module docs](super). A segment for a failed
    /// stream is answered with another RESET.
    pub fn handle_segment(&mut self, now: Instant, header: SegmentHeader, data: Bytes) {
        if self.failed.is_some() {
            self.answer_failed();
            return;
        }
        let before = (self.rx.next_expected, self.rx.reorder.len());
        let event = if self.rx.reliable {
            self.rx.accept_reliable(header, data)
        } else {
            self.rx.accept_best_effort(header, data)
        };
        if self.rx.reliable {
            self.rx.on_arrival(now, header.seq);
        }
        let progressed = before != (self.rx.next_expected, self.rx.reorder.len());
        if self.rx.reorder.is_empty() {
            self.rx.gap_since = None;
        } else if self.rx.gap_since.is_none() || self.rx.next_expected != before.0 {
            self.rx.gap_since = Some(now);
        }
        if progressed && self.rx.read_deadline.is_some() {
            self.rx.read_deadline = Some(now + self.rx.give_up);
        }
        if let Some(event) = event {
            self.rx.read_deadline = None;
            self.push_event(event);
        }
    }

    /// [`handle_segment`](Self::handle_segment) on a packet plaintext: parses the segment
    /// header and slices the data out of `plaintext` without copying.
    pub fn handle_segment_bytes(
        &mut self,
        now: Instant,
        plaintext: Bytes,
    ) -> Result<(), DecodeError> {
        let (header, data) = SegmentHeader::parse(&plaintext)?;
        let start = plaintext.len() - data.len();
        self.handle_segment(now, header, plaintext.slice(start..));
        Ok(())
    }

    /// The next chunk for the application: in order for reliable streams, in arrival order
    /// for best effort. `None` when nothing is ready (or the stream failed: see
    /// [`failure`](Self::failure)). Delivered bytes still count against the window until
    /// [`on_consumed`](Self::on_consumed).
    pub fn poll_deliver(&mut self) -> Option<Bytes> {
        let data = self.rx.ready.pop_front()?;
        let len = data.len() as u64;
        self.rx.ready_bytes -= len;
        self.rx.delivered += len;
        self.rx.read_deadline = None;
        Some(data)
    }

    /// The application is done with `n` delivered bytes: they leave the window and the
    /// next grant returns them to the sender. Clamped to what was delivered.
    pub fn on_consumed(&mut self, n: u64) {
        let n = n.min(self.rx.delivered - self.rx.consumed);
        if n > 0 {
            self.rx.consumed += n;
            self.rx.grant_due = true;
        }
    }

    /// The application is waiting for data and `poll_deliver` had none. Arms a deadline of
    /// [`StreamConfig::give_up_time`] that any new segment pushes back; when it passes, the
    /// stream fails with `READ_TIMEOUT` and RESETs the peer. Cleared by a delivery.
    pub fn read_pending(&mut self, now: Instant) {
        if self.failed.is_some() || self.rx.finished || !self.rx.ready.is_empty() {
            return;
        }
        self.rx
            .read_deadline
            .get_or_insert_with(|| now + self.rx.give_up);
    }

    /// A window PROBE from the peer's send half: repeat the grant, and for best effort give
    /// up on whatever the peer sent that never arrived.
    pub fn handle_probe(&mut self, probe: &Probe) {
        if self.failed.is_some() {
            self.answer_failed();
            return;
        }
        let rx = &mut self.rx;
        rx.grant_due = true;
        if rx.reliable || rx.finished || probe.next_seq <= rx.next_expected {
            return;
        }
        if probe.next_offset < rx.expected_offset || probe.next_offset > rx.credit_limit() {
            rx.bad_feedback += 1;
            return;
        }
        rx.skip_to(probe.next_seq, probe.next_offset);
        rx.next_expected = probe.next_seq;
        rx.expected_offset = probe.next_offset;
    }

    pub(super) fn rx_poll_control(&mut self, now: Instant) -> Option<StreamFrame> {
        let rx = &mut self.rx;
        if std::mem::take(&mut rx.grant_due) {
            rx.grants_sent += 1;
            return Some(StreamFrame::Grant(Grant {
                stream: self.id,
                consumed: rx.consumed + rx.skipped_bytes,
                next_expected: rx.next_expected,
            }));
        }
        // A gap already past its tolerance, or on a fast path already overtaken by enough
        // segments, is NACKed in this batch, coalesced with whatever else it revealed.
        if rx.nack_at_once() || rx.nack_at().is_some_and(|at| at <= now) {
            rx.nack_due = true;
        }
        if std::mem::take(&mut rx.nack_due) {
            let ranges = rx.missing_ranges();
            let first = ranges.first().map(|r| r.start);
            if let Ok(nack) = Nack::new(self.id, ranges) {
                match (&mut rx.repair_probe, first) {
                    (Some((_, probe, ambiguous)), _) => {
                        *ambiguous |= nack.ranges().iter().any(|r| r.contains(*probe));
                    }
                    (None, Some(first)) => rx.repair_probe = Some((now, first, false)),
                    (None, None) => {}
                }
                rx.nacks_sent += 1;
                rx.last_nack = Some(now);
                rx.nack_repeats = rx.nack_repeats.saturating_add(1);
                return Some(StreamFrame::Nack(nack));
            }
        }
        None
    }

    pub(super) fn rx_timeout(&self) -> Option<Instant> {
        let rx = &self.rx;
        [rx.nack_at(), rx.read_deadline].into_iter().flatten().min()
    }

    pub(super) fn rx_handle_timeout(&mut self, now: Instant) {
        let rx = &mut self.rx;
        if rx.read_deadline.is_some_and(|at| at <= now) {
            rx.read_deadline = None;
            self.fail(ResetReason::READ_TIMEOUT, false);
            return;
        }
        // The per-tick gap scan: a gap is first reported once it outlives the reorder
        // tolerance, then again at the (backed-off) repeat interval, so a lost NACK or a
        // lost retransmission costs one interval, not an RTO.
        if rx.nack_at().is_some_and(|at| at <= now) {
            rx.nack_due = true;
        }
    }
}
