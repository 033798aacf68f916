//! Unit tests of one stream pair driven by hand (the lossy simulation lives in
//! `tests/stream_sim.rs`).

use std::time::{Duration, Instant};

use bytes::Bytes;
use netrun_messages::stream::{Probe, ResetReason, StreamFrame};

use super::*;
use crate::test_clock::t0;

const MS: Duration = Duration::from_millis(1);

fn pair(config: StreamConfig) -> (Stream, Stream) {
    (
        Stream::new(7, config).expect("config"),
        Stream::new(7, config).expect("config"),
    )
}

fn transmit_all(s: &mut Stream, now: Instant) -> Vec<Outgoing> {
    std::iter::from_fn(|| s.poll_transmit(now)).collect()
}

fn control_all(s: &mut Stream, now: Instant) -> Vec<StreamFrame> {
    std::iter::from_fn(|| s.poll_control(now)).collect()
}

fn deliver(to: &mut Stream, now: Instant, segs: &[Outgoing]) {
    for o in segs {
        to.handle_segment(now, o.header, o.data.clone());
    }
}

fn feed(to: &mut Stream, now: Instant, frames: &[StreamFrame]) {
    for f in frames {
        to.handle_frame(now, f);
    }
}

fn drain(s: &mut Stream) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(b) = s.poll_deliver() {
        s.on_consumed(b.len() as u64);
        out.extend_from_slice(&b);
    }
    out
}

#[test]
fn reliable_reorder_delivers_in_order_and_prunes() {
    let t0 = t0();
    let (mut a, mut b) = pair(StreamConfig::default());
    for i in 0..4u8 {
        assert_eq!(a.send(t0, Bytes::from(vec![i; 10])), Ok(u64::from(i)));
    }
    let mut segs = transmit_all(&mut a, t0);
    assert_eq!(segs.len(), 4);
    segs.swap(0, 3);
    deliver(&mut b, t0 + 5 * MS, &segs);
    // Four arrivals, one grant; the gap closed within the batch, so no NACK.
    let frames = control_all(&mut b, t0 + 5 * MS);
    assert!(
        matches!(frames.as_slice(), [StreamFrame::Grant(g)] if g.next_expected == 4),
        "{frames:?}"
    );
    let got = drain(&mut b);
    assert_eq!(got, [[0u8; 10], [1; 10], [2; 10], [3; 10]].concat());
    let grants = control_all(&mut b, t0 + 5 * MS);
    feed(&mut a, t0 + 10 * MS, &frames);
    feed(&mut a, t0 + 10 * MS, &grants);
    let s = a.stats();
    assert_eq!((s.tracked, s.in_flight, s.buffered), (0, 0, 0));
    assert_eq!(s.srtt, Some(10 * MS));
    assert_eq!(b.stats().grants_sent, 2);
    a.check_invariants().expect("sender");
    b.check_invariants().expect("receiver");
}

#[test]
fn backpressure_is_immediate_and_a_probe_recovers_a_lost_grant() {
    let t0 = t0();
    let config = StreamConfig::default().with_window_bytes(4096);
    let (mut a, mut b) = pair(config);
    assert_eq!(
        a.send(t0, Bytes::from(vec![0; 5000])),
        Err(StreamError::TooLarge {
            len: 5000,
            max: 4096
        })
    );
    assert_eq!(a.send(t0, Bytes::new()), Err(StreamError::Empty));
    a.send(t0, Bytes::from(vec![1; 3000])).expect("fits");
    assert_eq!(
        a.send(t0, Bytes::from(vec![2; 2000])),
        Err(StreamError::Backpressure)
    );
    assert_eq!(a.stats().backpressure_events, 1);
    let segs = transmit_all(&mut a, t0);
    deliver(&mut b, t0 + MS, &segs);
    drain(&mut b);
    // Every grant is lost; the ack-only path cannot reopen credit either.
    let _lost = control_all(&mut b, t0 + MS);
    let probe_at = a.poll_timeout().expect("probe armed");
    a.handle_timeout(probe_at);
    let probe = control_all(&mut a, probe_at);
    assert!(matches!(probe.as_slice(), [StreamFrame::Probe(_)]));
    feed(&mut b, probe_at + MS, &probe);
    let grant = control_all(&mut b, probe_at + MS);
    feed(&mut a, probe_at + 2 * MS, &grant);
    a.send(probe_at + 2 * MS, Bytes::from(vec![2; 2000]))
        .expect("credit is back");
}

#[test]
fn nack_and_rto_repair_losses_and_karn_skips_retransmits() {
    let t0 = t0();
    let (mut a, mut b) = pair(StreamConfig::default());
    for _ in 0..3 {
        a.send(t0, Bytes::from_static(b"abc")).expect("send");
    }
    let segs = transmit_all(&mut a, t0);
    // Segment 1 is lost: the receiver acks segment 0 at once and NACKs the gap once it
    // outlived the reorder tolerance (a quarter of the NACK interval).
    deliver(&mut b, t0 + 10 * MS, &[segs[0].clone(), segs[2].clone()]);
    let frames = control_all(&mut b, t0 + 10 * MS);
    assert!(matches!(frames.as_slice(), [StreamFrame::Grant(_)]));
    feed(&mut a, t0 + 10 * MS, &frames);
    let first = b.poll_timeout().expect("reorder tolerance");
    assert_eq!(first, t0 + 15 * MS);
    b.handle_timeout(first);
    let frames = control_all(&mut b, first);
    assert!(matches!(frames.as_slice(), [StreamFrame::Nack(_)]));
    feed(&mut a, t0 + 20 * MS, &frames);
    let re = transmit_all(&mut a, t0 + 20 * MS);
    assert_eq!(re.len(), 1);
    assert!(re[0].retransmit && re[0].header.seq == 1);
    // Its retransmission is lost too: the gap scan repeats the NACK after the interval.
    let scan = b.poll_timeout().expect("gap scan");
    assert_eq!(scan, t0 + 35 * MS);
    b.handle_timeout(scan);
    let again = control_all(&mut b, scan);
    assert!(matches!(again.as_slice(), [StreamFrame::Nack(_)]));
    // Then the RTO backstop fires (the repeated NACK is lost as well). The peer has
    // acknowledged before, so it resends only the oldest unacknowledged segment (RFC 6298
    // §5.4) and the newest as a tail probe, here both 1: 2 is known to be held.
    let rto = a.poll_timeout().expect("rto");
    a.handle_timeout(rto);
    let re = transmit_all(&mut a, rto);
    let seqs: Vec<u64> = re.iter().map(|o| o.header.seq).collect();
    assert_eq!(seqs, [1], "the RTO resends only the oldest");
    a.check_invariants().expect("flight accounting");
    deliver(&mut b, rto + 10 * MS, &re);
    assert_eq!(drain(&mut b), b"abcabcabc");
    let srtt = a.stats().srtt;
    feed(&mut a, rto + 20 * MS, &control_all(&mut b, rto + 10 * MS));
    assert_eq!(a.stats().tracked, 0);
    assert_eq!(
        a.stats().srtt,
        srtt,
        "an ack of retransmitted segments gives no sample"
    );
    assert!(a.stats().retransmits >= 2);
}

#[test]
fn retries_exhausted_fail_both_sides() {
    let t0 = t0();
    let config = StreamConfig::default().with_max_retries(3);
    let (mut a, mut b) = pair(config);
    a.send(t0, Bytes::from_static(b"x")).expect("send");
    transmit_all(&mut a, t0);
    b.read_pending(t0);
    let mut now = t0;
    while a.failure().is_none() {
        now = a.poll_timeout().expect("timer");
        a.handle_timeout(now);
        transmit_all(&mut a, now);
    }
    assert!(now - t0 <= config.give_up_time());
    assert_eq!(a.failure(), Some(ResetReason::MAX_RETRIES));
    assert_eq!(
        a.send(now, Bytes::from_static(b"y")),
        Err(StreamError::Failed(ResetReason::MAX_RETRIES))
    );
    let reset = control_all(&mut a, now);
    assert!(matches!(reset.as_slice(), [StreamFrame::Reset(_)]));
    feed(&mut b, now, &reset);
    assert_eq!(
        b.poll_event(),
        Some(StreamEvent::Failed {
            reason: ResetReason::MAX_RETRIES,
            by_peer: true
        })
    );
    assert!(b.poll_deliver().is_none());
    assert_eq!(b.poll_timeout(), None);
}

#[test]
fn a_pending_read_gives_up_and_resets() {
    let t0 = t0();
    let (_, mut b) = pair(StreamConfig::default());
    b.read_pending(t0);
    let at = b.poll_timeout().expect("read deadline");
    assert_eq!(at - t0, StreamConfig::default().give_up_time());
    b.handle_timeout(at);
    assert_eq!(b.failure(), Some(ResetReason::READ_TIMEOUT));
    assert!(matches!(
        control_all(&mut b, at).as_slice(),
        [StreamFrame::Reset(_)]
    ));
}

#[test]
fn close_graceful_waits_for_acks_or_times_out() {
    let t0 = t0();
    let (mut a, mut b) = pair(StreamConfig::default());
    a.send(t0, Bytes::from_static(b"last")).expect("send");
    a.close_graceful(t0, t0 + Duration::from_secs(5))
        .expect("close");
    assert_eq!(
        a.send(t0, Bytes::from_static(b"more")),
        Err(StreamError::Closed)
    );
    let segs = transmit_all(&mut a, t0);
    assert!(segs[1].header.fin);
    deliver(&mut b, t0 + MS, &segs);
    assert_eq!(b.poll_event(), Some(StreamEvent::Finished));
    assert_eq!(drain(&mut b), b"last");
    assert_eq!(a.poll_event(), None, "not acknowledged yet");
    feed(&mut a, t0 + 2 * MS, &control_all(&mut b, t0 + MS));
    assert_eq!(a.poll_event(), Some(StreamEvent::Closed));

    let (mut c, _) = pair(StreamConfig::default());
    c.send(t0, Bytes::from_static(b"lost")).expect("send");
    c.close_graceful(t0, t0 + 50 * MS).expect("close");
    let mut now = t0;
    while c.failure().is_none() {
        now = c.poll_timeout().expect("timer");
        c.handle_timeout(now);
        transmit_all(&mut c, now);
    }
    assert_eq!(now, t0 + 50 * MS);
    assert_eq!(c.poll_event(), Some(StreamEvent::CloseTimedOut));
    assert_eq!(c.failure(), Some(ResetReason::CLOSE_TIMEOUT));
}

#[test]
fn best_effort_counts_losses_drops_late_and_credits_them_back() {
    let t0 = t0();
    let config = StreamConfig::default()
        .with_reliability(Reliability::BestEffort)
        .with_window_bytes(4096);
    let (mut a, mut b) = pair(config);
    for _ in 0..4 {
        a.send(t0, Bytes::from(vec![9; 1000])).expect("send");
    }
    let segs = transmit_all(&mut a, t0);
    assert_eq!(
        a.stats().tracked,
        0,
        "best effort keeps no retransmit state"
    );
    deliver(
        &mut b,
        t0,
        &[segs[0].clone(), segs[2].clone(), segs[1].clone()],
    );
    let s = b.stats();
    assert_eq!((s.skipped_segments, s.late_dropped), (1, 1));
    assert_eq!(drain(&mut b).len(), 2000);
    feed(&mut a, t0, &control_all(&mut b, t0));
    // Segment 3 was lost at the tail: only the probe lets the receiver credit it.
    assert_eq!(a.stats().buffered, 1000);
    a.send(t0, Bytes::from(vec![1; 3500]))
        .expect_err("window full");
    let at = a.poll_timeout().expect("probe");
    a.handle_timeout(at);
    feed(&mut b, at, &control_all(&mut a, at));
    feed(&mut a, at, &control_all(&mut b, at));
    assert_eq!(a.stats().buffered, 0);
    assert_eq!(b.stats().skipped_segments, 2);
}

#[test]
fn receiver_refuses_data_past_its_credit() {
    let t0 = t0();
    let small = StreamConfig::default().with_window_bytes(2048);
    let (_, mut b) = pair(small);
    let mut a = Stream::new(7, StreamConfig::default()).expect("config");
    for _ in 0..3 {
        a.send(t0, Bytes::from(vec![0; 1000])).expect("send");
    }
    deliver(&mut b, t0, &transmit_all(&mut a, t0));
    assert_eq!(b.stats().overruns, 1);
    b.check_invariants().expect("receiver bounded");
}

#[test]
fn nack_shows_what_the_receiver_holds_and_rto_skips_it() {
    let t0 = t0();
    let (mut a, mut b) = pair(StreamConfig::default());
    for _ in 0..4 {
        a.send(t0, Bytes::from_static(b"abcd")).expect("send");
    }
    let segs = transmit_all(&mut a, t0);
    // 1 is lost; 2 arrives; 3 is lost too.
    deliver(&mut b, t0 + 5 * MS, &[segs[0].clone(), segs[2].clone()]);
    feed(&mut a, t0 + 5 * MS, &control_all(&mut b, t0 + 5 * MS)); // 0 is acked
    let at = b.poll_timeout().expect("reorder tolerance");
    b.handle_timeout(at);
    let nack = control_all(&mut b, at);
    assert!(matches!(nack.as_slice(), [StreamFrame::Nack(n)] if n.ranges().len() == 1));
    feed(&mut a, at + 5 * MS, &nack);
    a.check_invariants().expect("flight accounting");
    let re: Vec<u64> = transmit_all(&mut a, at + 5 * MS)
        .iter()
        .map(|o| o.header.seq)
        .collect();
    assert_eq!(re, [1], "the NACKed hole is resent at once");
    // Nothing else arrives: the RTO resends the oldest unacknowledged segment (1) and the
    // newest (3) as a tail probe, never the held 2.
    let rto = a.poll_timeout().expect("rto");
    a.handle_timeout(rto);
    let re: Vec<u64> = transmit_all(&mut a, rto)
        .iter()
        .map(|o| o.header.seq)
        .collect();
    assert_eq!(re, [1, 3]);
    a.check_invariants().expect("flight accounting");
}

#[test]
fn a_lost_final_grant_is_repaired_by_the_tail_probe_before_the_rto() {
    let t0 = t0();
    let (mut a, mut b) = pair(StreamConfig::default());
    for _ in 0..3 {
        a.send(t0, Bytes::from_static(b"abc")).expect("send");
    }
    deliver(&mut b, t0 + MS, &transmit_all(&mut a, t0));
    drain(&mut b);
    feed(&mut a, t0 + 2 * MS, &control_all(&mut b, t0 + MS));
    assert_eq!(a.stats().srtt, Some(2 * MS), "one clean sample");
    let t1 = t0 + 2 * MS;
    for _ in 0..2 {
        a.send(t1, Bytes::from_static(b"def")).expect("send");
    }
    deliver(&mut b, t1 + MS, &transmit_all(&mut a, t1));
    drain(&mut b);
    let _lost = control_all(&mut b, t1 + MS); // the final grant is lost
    // PTO = max(2 × srtt, srtt + 4 × rttvar) = 6 ms, under the 10 ms RTO floor.
    let at = a.poll_timeout().expect("tail probe");
    assert_eq!(at, t1 + 6 * MS);
    a.handle_timeout(at);
    let re = transmit_all(&mut a, at);
    let seqs: Vec<u64> = re.iter().map(|o| o.header.seq).collect();
    assert_eq!(seqs, [4], "the newest segment is resent");
    a.check_invariants().expect("flight accounting");
    deliver(&mut b, at + MS, &re);
    assert_eq!(b.stats().duplicates, 1);
    feed(&mut a, at + 2 * MS, &control_all(&mut b, at + MS));
    assert_eq!(a.stats().tracked, 0, "the repeated grant acks everything");
    assert_eq!(a.stats().retransmits, 1);
    // Nothing outstanding: no probe, no RTO.
    assert_eq!(a.poll_timeout(), None);
}

#[test]
fn the_receiver_scales_its_nack_delay_to_the_measured_repair_time() {
    let t0 = t0();
    let (mut a, mut b) = pair(StreamConfig::default());
    let us = Duration::from_micros(1);
    for _ in 0..12 {
        a.send(t0, Bytes::from_static(b"x")).expect("send");
    }
    let segs = transmit_all(&mut a, t0);
    // 1 is lost; before any measurement the tolerance is a quarter of the NACK interval.
    deliver(&mut b, t0, &[segs[0].clone(), segs[2].clone()]);
    control_all(&mut b, t0);
    let at = b.poll_timeout().expect("reorder tolerance");
    assert_eq!(at, t0 + 5 * MS);
    b.handle_timeout(at);
    feed(&mut a, at, &control_all(&mut b, at));
    let re = transmit_all(&mut a, at);
    assert_eq!(re.len(), 1);
    // The repair arrives 400 µs after the NACK: the receiver's repair-time estimate.
    deliver(&mut b, at + 400 * us, &re);
    assert!(b.poll_timeout().is_none(), "gap closed");
    // 4 is lost: its tolerance is now the timer granularity (a quarter of 400 µs is below
    // it) instead of 5 ms ...
    let t1 = at + MS;
    deliver(&mut b, t1, &segs[3..4]);
    deliver(&mut b, t1, &segs[5..6]);
    assert!(
        !control_all(&mut b, t1)
            .iter()
            .any(|f| matches!(f, StreamFrame::Nack(_)))
    );
    assert_eq!(b.poll_timeout(), Some(t1 + MS));
    // ... and once three segments overtook it, it is NACKed in the same batch.
    deliver(&mut b, t1 + 10 * us, &segs[6..8]);
    let frames = control_all(&mut b, t1 + 10 * us);
    assert!(
        frames
            .iter()
            .any(|f| matches!(f, StreamFrame::Nack(n) if n.ranges()[0].start == 4))
    );
}

#[test]
fn best_effort_refuses_the_last_sequence_number() {
    let t0 = t0();
    let config = StreamConfig::default().with_reliability(Reliability::BestEffort);
    let (_, mut b) = pair(config);
    // Seq u64::MAX has no successor: it is refused (it used to overflow next_expected).
    let last = SegmentHeader {
        seq: u64::MAX,
        offset: 0,
        fin: false,
    };
    b.handle_segment(t0, last, Bytes::from_static(b"x"));
    assert_eq!(b.stats().overruns, 1);
    assert_eq!(b.poll_deliver(), None);
    // A probe may still move the receiver up to it, and the segment stays refused.
    b.handle_probe(&Probe {
        stream: 7,
        next_seq: u64::MAX,
        next_offset: 0,
    });
    b.handle_segment(t0, last, Bytes::new());
    assert_eq!(b.stats().overruns, 2);
}
