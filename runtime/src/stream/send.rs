//! The send half: credit, retransmit descriptors, RTO, congestion window, window probes.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use netrun_messages::stream::{
    Grant, Nack, Probe, ResetReason, SegmentHeader, SeqRange, StreamFrame,
};

use super::congestion::Reno;
use super::{Outgoing, Seq, Stream, StreamConfig, StreamError, StreamEvent, StreamStats};
use crate::liveness::RttEstimator;

/// One accepted segment, kept from `send` until acknowledged (reliable) or transmitted
/// (best effort).
#[derive(Debug, Clone)]
struct Descriptor {
    offset: u64,
    data: Bytes,
    fin: bool,
    first_sent: Option<Instant>,
    last_sent: Option<Instant>,
    transmissions: u32,
    lost: bool,
    /// A NACK showed the receiver holds it (above a gap); never resent, still tracked until
    /// the cumulative ack covers it.
    sacked: bool,
}

impl Descriptor {
    fn len(&self) -> u64 {
        self.data.len() as u64
    }
}

#[derive(Debug, Clone, Copy)]
struct Closing {
    deadline: Instant,
    fin_seq: Seq,
}

#[derive(Debug)]
pub(super) struct TxState {
    reliable: bool,
    window: u64,
    max_send: usize,
    max_retries: u32,
    max_rto: Duration,
    granularity: Duration,
    next_seq: Seq,
    next_offset: u64,
    /// Lowest sequence number never transmitted.
    next_unsent: Seq,
    /// Cumulative ack: every seq below it is acknowledged.
    acked: Seq,
    peer_consumed: u64,
    /// Reliable: every seq in `acked..next_seq`. Best effort: the untransmitted ones.
    table: BTreeMap<Seq, Descriptor>,
    lost: BTreeSet<Seq>,
    /// Bytes transmitted, unacknowledged and not marked lost.
    in_flight: u64,
    rtt: RttEstimator,
    cc: Reno,
    rto_deadline: Option<Instant>,
    /// Tail loss probe: when the flight has gone unacknowledged for about two smoothed RTTs,
    /// the newest transmitted segment is sent again, well before the RTO floor. If the
    /// receiver has it, the duplicate makes it repeat its grant (a lost final grant); if
    /// not, it now holds a segment above the lost tail and NACKs the gap.
    tail_probe_at: Option<Instant>,
    /// After an RTO: when it fired and `next_unsent` then. The timeout resends only the
    /// oldest segment; the first ack after it shows the path works and the rest of that
    /// flight (unless the receiver turns out to hold it) is presumed lost.
    rto_recovery: Option<(Instant, Seq)>,
    /// Retransmissions that may go out although the congestion window is full (fast
    /// retransmit after a NACK, the RTO's single segment): they replace segments that left
    /// the network, and the flight cannot drain until they arrive.
    rtx_credit: u64,
    timeouts: u32,
    probe_at: Option<Instant>,
    probes: u32,
    probe_due: bool,
    closing: Option<Closing>,
    closed: bool,
    retransmits: u64,
    backpressure_events: u64,
    probes_sent: u64,
    bad_feedback: u64,
}

impl TxState {
    pub(super) fn new(config: &StreamConfig) -> Self {
        let window = u64::from(config.window_bytes);
        Self {
            reliable: config.is_reliable(),
            window,
            max_send: config.max_segment.min(config.window_bytes as usize),
            max_retries: config.max_retries,
            max_rto: config.rtt.max_rto,
            granularity: config.rtt.granularity,
            next_seq: 0,
            next_offset: 0,
            next_unsent: 0,
            acked: 0,
            peer_consumed: 0,
            table: BTreeMap::new(),
            lost: BTreeSet::new(),
            in_flight: 0,
            rtt: RttEstimator::new(config.rtt),
            cc: Reno::new(config.max_segment as u64, window),
            rto_deadline: None,
            tail_probe_at: None,
            rto_recovery: None,
            rtx_credit: 0,
            timeouts: 0,
            probe_at: None,
            probes: 0,
            probe_due: false,
            closing: None,
            closed: false,
            retransmits: 0,
            backpressure_events: 0,
            probes_sent: 0,
            bad_feedback: 0,
        }
    }

    pub(super) fn is_closed(&self) -> bool {
        self.closed
    }

    /// Bytes accepted and not yet consumed by the peer.
    fn buffered(&self) -> u64 {
        self.next_offset - self.peer_consumed
    }

    pub(super) fn clear(&mut self) {
        self.table.clear();
        self.lost.clear();
        self.in_flight = 0;
        self.rto_deadline = None;
        self.tail_probe_at = None;
        self.rto_recovery = None;
        self.rtx_credit = 0;
        self.probe_at = None;
        self.probe_due = false;
    }

    pub(super) fn fill_stats(&self, s: &mut StreamStats) {
        s.tx_seq = self.next_seq;
        s.in_flight = if self.reliable {
            self.table
                .range(..self.next_unsent)
                .map(|(_, d)| d.len())
                .sum()
        } else {
            self.buffered() - self.table.values().map(Descriptor::len).sum::<u64>()
        };
        s.buffered = self.buffered();
        s.window = self.window;
        s.tracked = if self.reliable {
            self.table.len() as u64
        } else {
            0
        };
        s.retransmits = self.retransmits;
        s.backpressure_events = self.backpressure_events;
        s.srtt = self.rtt.srtt();
        s.rto = self.rtt.rto();
        s.cwnd = self.cc.window();
        s.probes_sent = self.probes_sent;
        s.bad_feedback += self.bad_feedback;
    }

    /// Whether `poll_transmit` may have a segment (ignoring the congestion window).
    pub(super) fn has_pending(&self) -> bool {
        if self.reliable {
            !self.lost.is_empty() || self.next_unsent < self.next_seq
        } else {
            !self.table.is_empty()
        }
    }

    pub(super) fn check_invariants(&self) -> Result<(), &'static str> {
        if self.buffered() > self.window {
            return Err("send buffer exceeds the credit window");
        }
        if self.reliable {
            if self.table.len() as u64 != self.next_seq - self.acked {
                return Err("an unacknowledged segment has no retransmit descriptor");
            }
            if self.table.len() as u64 > self.window + 1 {
                return Err("retransmit table exceeds the window bound");
            }
            let flight: u64 = self
                .table
                .range(..self.next_unsent)
                .filter(|(_, d)| !d.lost && !d.sacked)
                .map(|(_, d)| d.len())
                .sum();
            if flight != self.in_flight {
                return Err("in-flight accounting drifted");
            }
        }
        Ok(())
    }

    /// A NACK lists every gap from its first range to its last, and the receiver holds the
    /// segment at the last range's end and everything between ranges (it never discards a
    /// buffered segment). Those are marked held: out of flight, never resent.
    fn mark_held(&mut self, ranges: &[SeqRange]) {
        let (Some(first), Some(last)) = (ranges.first(), ranges.last()) else {
            return;
        };
        if last.end >= self.next_unsent {
            return;
        }
        let mut gaps = ranges.iter().peekable();
        for (seq, d) in self.table.range_mut(first.start..=last.end) {
            while gaps.next_if(|r| r.end <= *seq).is_some() {}
            if gaps.peek().is_some_and(|r| r.contains(*seq)) || d.sacked {
                continue;
            }
            d.sacked = true;
            if d.lost {
                d.lost = false;
                self.lost.remove(seq);
            } else {
                self.in_flight -= d.len();
            }
        }
    }

    /// Probe timeout: about two smoothed RTTs (at least `srtt + 4 × rttvar` and the clock
    /// granularity), never more than the RTO; the RTO before the first RTT sample.
    fn pto(&self) -> Duration {
        let rto = self.rtt.rto();
        let Some(srtt) = self.rtt.srtt() else {
            return rto;
        };
        srtt.saturating_mul(2)
            .max(srtt + self.rtt.rttvar().saturating_mul(4))
            .max(self.granularity)
            .min(rto)
    }

    fn arm_probe(&mut self, now: Instant) {
        if self.probe_at.is_none() {
            self.probe_at = Some(now + self.pto());
        }
    }

    /// (Re)arms the tail probe while reliable data is unacknowledged, if it can fire
    /// before the RTO.
    fn arm_tail_probe(&mut self, now: Instant) {
        let pto = self.pto();
        self.tail_probe_at =
            (self.acked < self.next_unsent && pto < self.rtt.rto()).then(|| now + pto);
    }
}

impl Stream {
    /// Accepts `data` as the next segment, or refuses it at once.
    ///
    /// `Backpressure` when the bytes sent but not consumed by the peer would exceed the
    /// window (the stream then schedules a window PROBE in case the peer's grant was lost);
    /// `TooLarge` over `min(max_segment, window)`; `Empty` for no bytes; `Closed` after
    /// `close_graceful`; `Failed` once the stream failed.
    pub fn send(&mut self, now: Instant, data: Bytes) -> Result<Seq, StreamError> {
        if let Some(reason) = self.failed {
            return Err(StreamError::Failed(reason));
        }
        let tx = &mut self.tx;
        if tx.closing.is_some() || tx.closed {
            return Err(StreamError::Closed);
        }
        if data.is_empty() {
            return Err(StreamError::Empty);
        }
        if data.len() > tx.max_send {
            return Err(StreamError::TooLarge {
                len: data.len(),
                max: tx.max_send,
            });
        }
        let len = data.len() as u64;
        if tx.buffered() + len > tx.window {
            tx.backpressure_events += 1;
            tx.arm_probe(now);
            return Err(StreamError::Backpressure);
        }
        Ok(self.enqueue(data, false))
    }

    /// Stops sending: queues a FIN and completes ([`StreamEvent::Closed`]) once everything
    /// sent is acknowledged (reliable) or transmitted (best effort). If `deadline` passes
    /// first the stream fails with `CLOSE_TIMEOUT` ([`StreamEvent::CloseTimedOut`]) and the
    /// peer is reset. Calling it again only moves the deadline earlier.
    pub fn close_graceful(&mut self, now: Instant, deadline: Instant) -> Result<(), StreamError> {
        if let Some(reason) = self.failed {
            return Err(StreamError::Failed(reason));
        }
        if self.tx.closed {
            return Ok(());
        }
        if let Some(closing) = &mut self.tx.closing {
            closing.deadline = closing.deadline.min(deadline);
            return Ok(());
        }
        // A deadline already in the past fires at the next `handle_timeout`.
        let deadline = deadline.max(now);
        let fin_seq = self.enqueue(Bytes::new(), true);
        self.tx.closing = Some(Closing { deadline, fin_seq });
        self.tx.probe_at = None;
        self.check_close();
        Ok(())
    }

    /// The next segment to transmit: lost segments first, then new ones, as far as the
    /// congestion window allows (reliable; best effort is paced only by credit).
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Outgoing> {
        if self.failed.is_some() {
            return None;
        }
        let out = if self.tx.reliable {
            self.poll_reliable(now)
        } else {
            self.poll_best_effort()
        };
        self.check_close();
        out
    }

    /// Applies a grant: credit from the consumed total, acknowledgement from
    /// `next_expected`. Both only ever move forward; values past what was sent are clamped
    /// and counted.
    pub fn handle_grant(&mut self, now: Instant, grant: &Grant) {
        if self.failed.is_some() {
            return;
        }
        let tx = &mut self.tx;
        if grant.consumed > tx.next_offset || grant.next_expected > tx.next_unsent {
            tx.bad_feedback += 1;
        }
        let consumed = grant.consumed.min(tx.next_offset);
        if consumed > tx.peer_consumed {
            tx.peer_consumed = consumed;
            tx.probe_at = None;
            tx.probes = 0;
            tx.probe_due = false;
        }
        let ack = grant.next_expected.min(tx.next_unsent);
        if ack <= tx.acked {
            return;
        }
        if !tx.reliable {
            tx.acked = ack;
            return;
        }
        let mut acked_bytes = 0;
        let mut sample = None;
        let mut repaired = false;
        while let Some(entry) = tx.table.first_entry() {
            if *entry.key() >= ack {
                break;
            }
            let (seq, d) = entry.remove_entry();
            if d.lost {
                tx.lost.remove(&seq);
            } else if !d.sacked {
                tx.in_flight -= d.len();
            }
            acked_bytes += d.len();
            repaired |= d.transmissions != 1;
            sample = d.first_sent;
        }
        tx.acked = ack;
        tx.timeouts = 0;
        // Karn's rule, applied to the whole cumulative ack: if any covered segment was
        // retransmitted, the ack waited for a repair and its timing says nothing about the
        // path (sampling it would inflate SRTT by the recovery time).
        if let Some(sent) = sample.filter(|_| !repaired) {
            tx.rtt.on_sample(now.saturating_duration_since(sent));
        }
        tx.cc.on_ack(acked_bytes);
        if let Some((fired, end)) = tx.rto_recovery.take() {
            // The path delivers again: what the timeout left in flight and the receiver has
            // not shown it holds is presumed lost, resent as the congestion window allows.
            for (seq, d) in tx.table.range_mut(..end) {
                if !d.lost && !d.sacked && d.last_sent.is_some_and(|t| t <= fired) {
                    d.lost = true;
                    tx.in_flight -= d.len();
                    tx.lost.insert(*seq);
                }
            }
        }
        tx.rto_deadline = (tx.acked < tx.next_unsent).then(|| now + tx.rtt.rto());
        tx.arm_tail_probe(now);
        self.check_close();
    }

    /// Marks NACKed segments lost and reduces the congestion window once per recovery
    /// epoch. A segment's first NACK counts at once (the receiver only NACKs below data it
    /// has seen); after that at most once per smoothed RTT, so the receiver's repeated gap
    /// NACKs do not multiply retransmissions that are still in flight.
    pub fn handle_nack(&mut self, now: Instant, nack: &Nack) {
        if self.failed.is_some() || !self.tx.reliable {
            return;
        }
        let tx = &mut self.tx;
        let guard = tx.rtt.srtt().unwrap_or(Duration::ZERO);
        let flight = tx.in_flight;
        let mut first_loss = None;
        for range in nack.ranges() {
            if range.end > tx.next_unsent {
                tx.bad_feedback += 1;
            }
            let end = range.end.min(tx.next_unsent);
            if range.start >= end {
                continue;
            }
            // Iterates the table, not the numeric range: cost is bounded by what we hold.
            for (seq, d) in tx.table.range_mut(range.start..end) {
                let stale = d.transmissions == 1
                    || d.last_sent
                        .is_some_and(|t| now.saturating_duration_since(t) >= guard);
                if d.lost || d.sacked || !stale {
                    continue;
                }
                d.lost = true;
                tx.in_flight -= d.len();
                tx.lost.insert(*seq);
                tx.rtx_credit += 1;
                first_loss.get_or_insert(*seq);
            }
        }
        if let Some(seq) = first_loss {
            tx.cc.on_loss(seq, tx.next_seq, flight);
        }
        tx.mark_held(nack.ranges());
    }

    pub(super) fn tx_poll_probe(&mut self) -> Option<StreamFrame> {
        if !std::mem::take(&mut self.tx.probe_due) {
            return None;
        }
        self.tx.probes_sent += 1;
        Some(StreamFrame::Probe(Probe {
            stream: self.id,
            next_seq: self.tx.next_seq,
            next_offset: self.tx.next_offset,
        }))
    }

    pub(super) fn tx_timeout(&self) -> Option<Instant> {
        let tx = &self.tx;
        let close = tx.closing.map(|c| c.deadline);
        [tx.rto_deadline, tx.tail_probe_at, tx.probe_at, close]
            .into_iter()
            .flatten()
            .min()
    }

    pub(super) fn tx_handle_timeout(&mut self, now: Instant) {
        if let Some(closing) = self.tx.closing
            && closing.deadline <= now
        {
            self.tx.closing = None;
            self.push_event(StreamEvent::CloseTimedOut);
            self.fail(ResetReason::CLOSE_TIMEOUT, false);
            return;
        }
        let tx = &mut self.tx;
        if let Some(at) = tx.probe_at
            && at <= now
        {
            tx.probe_due = true;
            tx.probes = tx.probes.saturating_add(1);
            let factor = 1u32.checked_shl(tx.probes.min(16)).unwrap_or(u32::MAX);
            tx.probe_at = Some(now + tx.pto().saturating_mul(factor).min(tx.max_rto));
        }
        if tx.tail_probe_at.is_some_and(|at| at <= now) {
            // One probe per quiet flight; the next transmission or ack re-arms it.
            tx.tail_probe_at = None;
            let newest = tx.table.range_mut(..tx.next_unsent).next_back();
            if let Some((seq, d)) = newest
                && !d.lost
                && !d.sacked
            {
                d.lost = true;
                tx.in_flight -= d.len();
                tx.lost.insert(*seq);
                tx.rtx_credit += 1;
            }
        }
        if tx.rto_deadline.is_some_and(|at| at <= now) {
            tx.timeouts += 1;
            if tx.timeouts > tx.max_retries {
                self.fail(ResetReason::MAX_RETRIES, false);
                return;
            }
            tx.rtt.on_timeout();
            tx.cc.on_timeout(tx.next_seq, tx.in_flight);
            // RFC 6298 §5.4: resend only the oldest segment not known to be held. If only
            // the acknowledgement was lost, the receiver answers the duplicate with a grant
            // that covers the whole flight; if data was lost, the first ack after this one
            // marks the rest of the flight lost (see `handle_grant`).
            //
            // Until the peer has acknowledged anything it may not even have the stream (a
            // PROBE would then draw a RESET), so the whole first flight is resent: several
            // segments make it likelier that one creates the stream before a probe arrives.
            let heard = tx.acked > 0 || tx.peer_consumed > 0;
            for (seq, d) in tx.table.range_mut(..tx.next_unsent) {
                if d.sacked {
                    continue;
                }
                if !d.lost {
                    d.lost = true;
                    tx.in_flight -= d.len();
                    tx.lost.insert(*seq);
                }
                if heard {
                    break;
                }
            }
            // The collapsed window holds two segments: the second is the newest, a tail
            // probe. A receiver that has it repeats its grant, one that lacks older data
            // NACKs it, so one lost packet or grant does not cost another whole RTO.
            let newest = tx
                .table
                .range_mut(..tx.next_unsent)
                .next_back()
                .filter(|(_, d)| heard && !d.sacked && !d.lost);
            if let Some((seq, d)) = newest {
                d.lost = true;
                tx.in_flight -= d.len();
                tx.lost.insert(*seq);
            }
            tx.rtx_credit = tx.rtx_credit.max(2);
            tx.rto_recovery = heard.then_some((now, tx.next_unsent));
            tx.tail_probe_at = None;
            tx.rto_deadline = Some(now + tx.rtt.rto());
        }
    }

    fn enqueue(&mut self, data: Bytes, fin: bool) -> Seq {
        let tx = &mut self.tx;
        let seq = tx.next_seq;
        let len = data.len() as u64;
        tx.table.insert(
            seq,
            Descriptor {
                offset: tx.next_offset,
                data,
                fin,
                first_sent: None,
                last_sent: None,
                transmissions: 0,
                lost: false,
                sacked: false,
            },
        );
        tx.next_seq += 1;
        tx.next_offset += len;
        seq
    }

    fn poll_reliable(&mut self, now: Instant) -> Option<Outgoing> {
        let tx = &mut self.tx;
        let cwnd = tx.cc.window();
        let (seq, retransmit) = match tx.lost.first() {
            Some(&seq) => (seq, true),
            None if tx.next_unsent < tx.next_seq => (tx.next_unsent, false),
            None => return None,
        };
        let d = tx.table.get_mut(&seq)?;
        if tx.in_flight > 0 && tx.in_flight + d.len() > cwnd {
            if !retransmit || tx.rtx_credit == 0 {
                return None;
            }
            tx.rtx_credit -= 1;
        }
        if retransmit {
            tx.lost.remove(&seq);
            d.lost = false;
            tx.retransmits += 1;
        } else {
            tx.next_unsent += 1;
            d.first_sent = Some(now);
        }
        d.last_sent = Some(now);
        d.transmissions = d.transmissions.saturating_add(1);
        let out = Outgoing {
            header: SegmentHeader {
                seq,
                offset: d.offset,
                fin: d.fin,
            },
            data: d.data.clone(),
            reliable: true,
            retransmit,
        };
        tx.in_flight += d.len();
        if tx.rto_deadline.is_none() {
            tx.rto_deadline = Some(now + tx.rtt.rto());
        }
        if tx.lost.is_empty() {
            tx.rtx_credit = 0;
        }
        if !retransmit {
            // Only new data re-arms the tail probe: a repair that goes unanswered is the
            // RTO's business (otherwise a partition would see a probe every PTO).
            tx.arm_tail_probe(now);
        }
        Some(out)
    }

    fn poll_best_effort(&mut self) -> Option<Outgoing> {
        let tx = &mut self.tx;
        let (seq, d) = tx.table.pop_first()?;
        tx.next_unsent = seq + 1;
        Some(Outgoing {
            header: SegmentHeader {
                seq,
                offset: d.offset,
                fin: d.fin,
            },
            data: d.data,
            reliable: false,
            retransmit: false,
        })
    }

    fn check_close(&mut self) {
        let Some(closing) = self.tx.closing else {
            return;
        };
        let done = if self.tx.reliable {
            self.tx.acked > closing.fin_seq
        } else {
            self.tx.next_unsent > closing.fin_seq
        };
        if done {
            self.tx.closing = None;
            self.tx.closed = true;
            self.tx.rto_deadline = None;
            self.push_event(StreamEvent::Closed);
        }
    }
}
