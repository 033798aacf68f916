//! Deterministic simulation of two endpoints exchanging a stream over lossy links.
//!
//! Virtual clock (an arbitrary origin plus offsets), one seeded ChaCha RNG per run, and per
//! direction: loss, duplication, latency jitter (which reorders) and partition windows.
//! Each endpoint holds a `Streams` table, as the session actor will: segments travel as
//! packet plaintexts (segment header + data), control frames as `Subprotocol::STREAM`
//! envelopes, and both are decoded on arrival. Every arrival time is one batch: the
//! endpoint handles everything due, then drains `poll_transmit` and `poll_control` once,
//! which is where grants and NACKs coalesce.
//!
//! Every scenario names its invariants; a failure message names the invariant and seed.

use std::time::{Duration, Instant};

use bytes::Bytes;
use netrun_messages::envelope::{Envelope, Subprotocol};
use netrun_messages::stream::{ResetReason, StreamFrame};
use netrun_runtime::stream::{
    Reliability, RetryPolicy, Stream, StreamConfig, StreamError, StreamEvent, Streams,
};

const A: usize = 0;
const B: usize = 1;
const ID: u64 = 1;
const MS: Duration = Duration::from_millis(1);
const MIB: usize = 1024 * 1024;
const CHUNK: usize = 8000;
/// How often a slow receiving application consumes.
const CONSUME_TICK: Duration = Duration::from_millis(10);

#[path = "common/link.rs"]
mod link;

use link::{DelayLine, Flight, LinkConfig, origin};

// ---------------------------------------------------------------------------------------
// Network

impl LinkConfig {
    const CLEAN: Self = Self {
        loss: 0.0,
        duplicate: 0.0,
        latency: Duration::from_millis(5),
        jitter: Duration::from_millis(1),
        partition: None,
    };

    fn lossy(loss: f64) -> Self {
        Self {
            loss,
            ..Self::CLEAN
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Wire {
    Segment { reliable: bool, plaintext: Vec<u8> },
    Control(Vec<u8>),
}

struct Net {
    dirs: [LinkConfig; 2],
    line: DelayLine<Wire>,
    dropped: [u64; 2],
}

impl Net {
    /// Sends from `from` to the other endpoint.
    fn send(&mut self, now: Instant, from: usize, wire: Wire) {
        if self.line.send(&self.dirs[from], now, 1 - from, wire) == 0 {
            self.dropped[from] += 1;
        }
    }

    fn next_at(&self) -> Option<Instant> {
        self.line.next_at()
    }

    fn pop_due(&mut self, now: Instant) -> Option<Flight<Wire>> {
        self.line.pop_due(now)
    }
}

// ---------------------------------------------------------------------------------------
// Endpoints

/// Chunk `i`: its index (8 bytes LE) then bytes derived from it, so any delivered chunk
/// can be checked in isolation.
fn chunk(i: u64, len: usize) -> Vec<u8> {
    let mut v = i.to_le_bytes().to_vec();
    v.extend((0..len - 8).map(|j| (i as usize * 31 + j * 7) as u8));
    v
}

#[derive(Debug, Clone, Copy)]
enum Consume {
    Immediately,
    /// Bytes per millisecond of virtual time.
    Rate(u64),
}

struct Sender {
    chunks: u64,
    next: u64,
    retry: RetryPolicy,
    attempt: u32,
    retry_at: Option<Instant>,
    refused_buffered: u64,
    closed: bool,
    close_deadline: Duration,
    error: Option<StreamError>,
}

struct Receiver {
    consume: Consume,
    budget: u64,
    unconsumed: u64,
    last_tick: Option<Instant>,
    bytes: u64,
    chunks: Vec<u64>,
    batches_with_input: u64,
}

struct World {
    seed: u64,
    origin: Instant,
    now: Instant,
    net: Net,
    tables: [Streams; 2],
    config: StreamConfig,
    sender: Sender,
    receiver: Receiver,
    events: [Vec<(Duration, StreamEvent)>; 2],
    resets_sent: [u64; 2],
    segments_sent: u64,
    max_buffered: u64,
    /// Whether the receiving application waits on reads (arms the read deadline).
    reading: bool,
    consume_ticks: u64,
    /// The receiving application also sends a small message this often (to the sender).
    echo_every: Option<Duration>,
    next_echo: Option<Instant>,
}

impl World {
    fn new(seed: u64, config: StreamConfig, dirs: [LinkConfig; 2], bytes: usize) -> Self {
        let origin = origin();
        let mut tables = [
            Streams::new(16, config).expect("config"),
            Streams::new(16, config).expect("config"),
        ];
        tables[A].open(ID, config).expect("open");
        Self {
            seed,
            origin,
            now: origin,
            net: Net {
                dirs,
                line: DelayLine::new(origin, seed),
                dropped: [0; 2],
            },
            tables,
            config,
            sender: Sender {
                chunks: bytes.div_ceil(CHUNK) as u64,
                next: 0,
                retry: RetryPolicy {
                    initial: MS,
                    max_delay: 20 * MS,
                    max_attempts: u32::MAX,
                },
                attempt: 0,
                retry_at: None,
                refused_buffered: 0,
                closed: false,
                close_deadline: Duration::from_secs(600),
                error: None,
            },
            receiver: Receiver {
                consume: Consume::Immediately,
                budget: 0,
                unconsumed: 0,
                last_tick: None,
                bytes: 0,
                chunks: Vec::new(),
                batches_with_input: 0,
            },
            events: [Vec::new(), Vec::new()],
            resets_sent: [0; 2],
            segments_sent: 0,
            max_buffered: 0,
            reading: true,
            consume_ticks: 0,
            echo_every: None,
            next_echo: None,
        }
    }

    fn t(&self) -> Duration {
        self.now - self.origin
    }

    fn stream(&self, side: usize) -> Option<&Stream> {
        self.tables[side].get(ID)
    }

    /// [`run`](Self::run), then prints the run's summary (shown with --nocapture) and
    /// returns it for assertion messages.
    #[allow(clippy::print_stdout)]
    fn run_reported(&mut self, limit: Duration) -> String {
        self.run(limit);
        let s = self.summary();
        println!("{s}");
        s
    }

    /// Runs until both sides are done or `limit` of virtual time passed.
    fn run(&mut self, limit: Duration) {
        self.step_apps();
        self.pump();
        while let Some(next) = self.next_event() {
            if next - self.origin > limit || self.done() {
                break;
            }
            self.now = next.max(self.now);
            let mut input = [false; 2];
            while let Some(f) = self.net.pop_due(self.now) {
                input[f.to] = true;
                self.arrive(f);
            }
            if input[B] {
                self.receiver.batches_with_input += 1;
            }
            for side in [A, B] {
                self.tables[side].handle_timeout(self.now);
            }
            self.step_apps();
            self.pump();
            self.check("per-step invariants");
        }
    }

    fn done(&self) -> bool {
        let failed = |side| self.stream(side).is_some_and(|s| s.failure().is_some());
        let closed = self.events[A]
            .iter()
            .any(|(_, e)| *e == StreamEvent::Closed);
        let finished = self.events[B]
            .iter()
            .any(|(_, e)| *e == StreamEvent::Finished);
        (failed(A) && failed(B)) || (closed && finished)
    }

    fn next_event(&self) -> Option<Instant> {
        let app = [self.sender.retry_at, self.next_echo]
            .into_iter()
            .flatten()
            .min();
        let consume = match self.receiver.consume {
            Consume::Rate(_) if self.receiver.unconsumed > 0 => self
                .receiver
                .last_tick
                .map(|t| (t + CONSUME_TICK).max(self.now)),
            _ => None,
        };
        [
            self.net.next_at(),
            self.tables[A].poll_timeout(),
            self.tables[B].poll_timeout(),
            app,
            consume,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn arrive(&mut self, f: Flight<Wire>) {
        let table = &mut self.tables[f.to];
        match f.payload {
            Wire::Segment {
                reliable,
                plaintext,
            } => table
                .handle_segment(self.now, ID, reliable, Bytes::from(plaintext))
                .expect("segment decodes"),
            Wire::Control(bytes) => {
                let env = Envelope::decode(&bytes).expect("envelope decodes");
                assert_eq!(env.subprotocol, Subprotocol::STREAM);
                let frame = StreamFrame::decode(env.body).expect("frame decodes");
                table.handle_frame(self.now, &frame);
            }
        }
    }

    fn step_apps(&mut self) {
        self.step_sender();
        self.step_receiver();
        for side in [A, B] {
            while let Some((_, e)) = self.tables[side].poll_event() {
                let t = self.t();
                self.events[side].push((t, e));
            }
        }
    }

    fn step_sender(&mut self) {
        let now = self.now;
        let s = &mut self.sender;
        if s.error.is_some() {
            return;
        }
        let Some(stream) = self.tables[A].get_mut(ID) else {
            return;
        };
        // The actor wakes a refused sender when a grant frees credit, or at its backoff.
        let freed = stream.stats().buffered < s.refused_buffered;
        if s.retry_at.is_some_and(|at| at > now) && !freed {
            return;
        }
        s.retry_at = None;
        while s.next < s.chunks {
            match stream.send(now, Bytes::from(chunk(s.next, CHUNK))) {
                Ok(_) => {
                    s.next += 1;
                    s.attempt = 0;
                }
                Err(StreamError::Backpressure) => {
                    s.refused_buffered = stream.stats().buffered;
                    s.retry_at = s.retry.delay(s.attempt).map(|d| now + d);
                    s.attempt += 1;
                    return;
                }
                Err(e) => {
                    s.error = Some(e);
                    return;
                }
            }
        }
        if !s.closed {
            s.closed = true;
            stream
                .close_graceful(now, now + s.close_deadline)
                .expect("close");
        }
    }

    fn step_receiver(&mut self) {
        let now = self.now;
        let r = &mut self.receiver;
        let Some(stream) = self.tables[B].get_mut(ID) else {
            return;
        };
        let mut got = false;
        while let Some(data) = stream.poll_deliver() {
            got = true;
            let index = u64::from_le_bytes(data[..8].try_into().expect("index"));
            assert_eq!(
                &data[..],
                &chunk(index, data.len())[..],
                "only-what-was-sent (seed {})",
                self.seed
            );
            r.chunks.push(index);
            r.bytes += data.len() as u64;
            r.unconsumed += data.len() as u64;
        }
        match r.consume {
            Consume::Immediately => {
                stream.on_consumed(r.unconsumed);
                r.unconsumed = 0;
            }
            Consume::Rate(per_ms) => {
                // The application wakes every CONSUME_TICK and consumes what its rate allows.
                let due = r.last_tick.is_none_or(|t| now - t >= CONSUME_TICK);
                if due {
                    let elapsed = r.last_tick.map_or(0, |t| (now - t).as_millis() as u64);
                    r.budget = (r.budget + elapsed * per_ms).min(r.unconsumed);
                    let n = r.budget.min(r.unconsumed);
                    stream.on_consumed(n);
                    r.unconsumed -= n;
                    r.budget -= n;
                    r.last_tick = Some(now);
                    self.consume_ticks += 1;
                }
            }
        }
        if !got && self.reading {
            stream.read_pending(now);
        }
        if let Some(every) = self.echo_every
            && self.next_echo.is_none_or(|at| at <= now)
        {
            // Refusals (backpressure, failure) are what the scenario observes, not errors.
            let _ = stream.send(now, Bytes::from_static(b"echo"));
            self.next_echo = Some(now + every);
        }
    }

    fn pump(&mut self) {
        for side in [A, B] {
            while let Some((_, out)) = self.tables[side].poll_transmit(self.now) {
                let mut plaintext = Vec::with_capacity(out.encoded_len());
                out.encode_into(&mut plaintext);
                if side == A {
                    self.segments_sent += 1;
                }
                let wire = Wire::Segment {
                    reliable: out.reliable,
                    plaintext,
                };
                self.net.send(self.now, side, wire);
            }
            while let Some(frame) = self.tables[side].poll_control(self.now) {
                if matches!(frame, StreamFrame::Reset(_)) {
                    self.resets_sent[side] += 1;
                }
                let body = frame.to_vec();
                let env = Envelope::new(Subprotocol::STREAM, None, &body).expect("envelope");
                self.net.send(self.now, side, Wire::Control(env.to_vec()));
            }
        }
    }

    fn check(&mut self, what: &str) {
        let seed = self.seed;
        for side in [A, B] {
            if let Some(s) = self.stream(side) {
                if let Err(e) = s.check_invariants() {
                    panic!("{what}: {e} (side {side}, seed {seed})");
                }
            }
        }
        if let Some(a) = self.stream(A) {
            let st = a.stats();
            assert!(
                st.buffered <= st.window,
                "buffered-within-window (seed {seed})"
            );
            if self.config.reliability == Reliability::Reliable {
                assert!(
                    st.tracked <= st.window + 1,
                    "tx-window-le-retransmit-window (seed {seed})"
                );
            }
            self.max_buffered = self.max_buffered.max(st.buffered);
        }
    }

    fn failed_at(&self, side: usize) -> Option<(Duration, ResetReason)> {
        self.events[side].iter().find_map(|(t, e)| match e {
            StreamEvent::Failed { reason, .. } => Some((*t, *reason)),
            _ => None,
        })
    }

    fn summary(&self) -> String {
        let a = self.stream(A).map(Stream::stats).unwrap_or_default();
        let b = self.stream(B).map(Stream::stats).unwrap_or_default();
        format!(
            "seed {} t={:?} sent={} retransmits={} backpressure={} srtt={:?} rto={:?} \
             cwnd={} grants={} nacks={} dup={} late={} skipped={} probes={} rx_batches={} \
             dropped={:?}",
            self.seed,
            self.t(),
            self.segments_sent,
            a.retransmits,
            a.backpressure_events,
            a.srtt,
            a.rto,
            a.cwnd,
            b.grants_sent,
            b.nacks_sent,
            b.duplicates,
            b.late_dropped,
            b.skipped_segments,
            a.probes_sent,
            self.receiver.batches_with_input,
            self.net.dropped,
        )
    }
}

// ---------------------------------------------------------------------------------------
// Scenarios

fn reliable_transfer(seed: u64, dirs: [LinkConfig; 2], bytes: usize, limit: Duration) -> World {
    let mut w = World::new(seed, StreamConfig::default(), dirs, bytes);
    let s = w.run_reported(limit);
    assert!(
        w.sender.error.is_none(),
        "sender-never-fails: {s} {:?}",
        w.sender.error
    );
    assert!(
        w.events[A].iter().any(|(_, e)| *e == StreamEvent::Closed),
        "close-completes-after-all-acked: {s}"
    );
    assert!(
        w.events[B].iter().any(|(_, e)| *e == StreamEvent::Finished),
        "receiver-sees-fin: {s}"
    );
    let expected: Vec<u64> = (0..w.sender.chunks).collect();
    assert_eq!(w.receiver.chunks, expected, "in-order-exactly-once: {s}");
    assert_eq!(
        w.receiver.bytes,
        w.sender.chunks * CHUNK as u64,
        "byte-for-byte: {s}"
    );
    let b = w.stream(B).expect("accepted").stats();
    assert!(
        b.grants_sent <= w.receiver.batches_with_input,
        "grants-coalesce-per-batch: {s}"
    );
    w
}

#[test]
fn reliable_16_mib_under_10_percent_loss() {
    let dirs = [LinkConfig::lossy(0.10), LinkConfig::lossy(0.10)];
    let w = reliable_transfer(0x5eed_0010, dirs, 16 * MIB, Duration::from_secs(600));
    assert!(w.stream(A).expect("open").stats().retransmits > 0);
}

#[test]
fn reliable_16_mib_under_30_percent_loss() {
    let dirs = [LinkConfig::lossy(0.30), LinkConfig::lossy(0.30)];
    reliable_transfer(0x5eed_0030, dirs, 16 * MIB, Duration::from_secs(1800));
}

#[test]
fn reordering_and_duplication_deliver_exactly_once_in_order() {
    let messy = LinkConfig {
        duplicate: 0.2,
        jitter: Duration::from_millis(30),
        ..LinkConfig::lossy(0.02)
    };
    for seed in [1, 2, 3] {
        let w = reliable_transfer(seed, [messy, messy], 2 * MIB, Duration::from_secs(600));
        let b = w.stream(B).expect("accepted").stats();
        assert!(b.duplicates > 0, "duplicates-were-exercised (seed {seed})");
        assert!(b.nacks_sent > 0, "reordering-was-exercised (seed {seed})");
    }
}

#[test]
fn best_effort_delivers_only_what_arrived_and_counts_the_rest() {
    let config = StreamConfig::default().with_reliability(Reliability::BestEffort);
    let dirs = [
        LinkConfig {
            jitter: Duration::from_millis(3),
            ..LinkConfig::lossy(0.10)
        },
        LinkConfig::lossy(0.10),
    ];
    let mut w = World::new(0xbe57, config, dirs, 4 * MIB);
    let s = w.run_reported(Duration::from_secs(600));
    assert!(
        w.sender.error.is_none(),
        "sender-never-fails: {s} {:?}",
        w.sender.error
    );
    assert_eq!(
        w.sender.next, w.sender.chunks,
        "sender-never-deadlocks: {s}"
    );
    let got = &w.receiver.chunks;
    assert!(
        got.windows(2).all(|p| p[0] < p[1]),
        "never-duplicates-never-goes-back: {s}"
    );
    let b = w.stream(B).expect("accepted").stats();
    let a = w.stream(A).expect("open").stats();
    assert_eq!(a.retransmits, 0, "best-effort-never-retransmits: {s}");
    // Every sequence number the receiver moved past was delivered or counted as skipped
    // (the FIN, if it arrived, is the one segment with no data).
    let fin = u64::from(w.events[B].iter().any(|(_, e)| *e == StreamEvent::Finished));
    assert_eq!(
        got.len() as u64 + b.skipped_segments + fin,
        b.rx_seq,
        "losses-are-counted: {s}"
    );
    assert!(b.skipped_segments > 0, "loss-was-exercised: {s}");
    assert!(
        (got.len() as u64) < w.sender.chunks,
        "only-what-arrived: {s}"
    );
}

#[test]
fn long_partition_ends_in_reset_on_both_sides() {
    let start = Duration::from_millis(300);
    let cut = LinkConfig {
        partition: Some((start, Duration::from_secs(120))),
        ..LinkConfig::CLEAN
    };
    let config = StreamConfig::default();
    let mut w = World::new(0x9a27, config, [cut, cut], 64 * MIB);
    let s = w.run_reported(Duration::from_secs(200));
    let bound = start + config.give_up_time() + 100 * MS;
    let (ta, ra) = w.failed_at(A).expect("sender-fails");
    let (tb, rb) = w.failed_at(B).expect("receiver-fails");
    assert_eq!(ra, ResetReason::MAX_RETRIES, "{s}");
    assert_eq!(rb, ResetReason::READ_TIMEOUT, "{s}");
    assert!(
        ta <= bound && tb <= bound,
        "reset-within-give-up-time: {ta:?} {tb:?} > {bound:?}: {s}"
    );
    assert!(
        w.resets_sent[A] >= 1 && w.resets_sent[B] >= 1,
        "both-sides-send-reset: {s}"
    );
    assert_eq!(
        w.sender.error,
        Some(StreamError::Failed(ResetReason::MAX_RETRIES)),
        "sender-sees-failure: {s}"
    );
    let b = w.tables[B].get_mut(ID).expect("accepted");
    assert!(b.poll_deliver().is_none(), "pending-reads-fail: {s}");
}

#[test]
fn reset_reaches_a_receiver_once_the_partition_heals() {
    // Only sender → receiver is cut, long enough for the sender to give up; its RESET is
    // lost. The receiver is not reading (no read deadline) but sends a small message every
    // 100 ms the other way; the failed sender answers each segment with its RESET again,
    // and one gets through once the partition heals.
    let heal = Duration::from_secs(3);
    let config = StreamConfig::default().with_max_retries(3);
    let cut = LinkConfig {
        partition: Some((Duration::from_millis(300), heal)),
        ..LinkConfig::lossy(0.1)
    };
    let mut w = World::new(0x4e5e, config, [cut, LinkConfig::CLEAN], 64 * MIB);
    w.reading = false;
    w.echo_every = Some(100 * MS);
    // The receiver's own sends must outlast the partition (its acks cross the cut too).
    w.tables[B] = Streams::new(16, config.with_max_retries(64)).expect("config");
    let s = w.run_reported(Duration::from_secs(30));
    let (ta, _) = w.failed_at(A).expect("sender-gives-up");
    assert!(ta < heal, "sender-gives-up-during-partition: {s}");
    let (tb, reason) = w.failed_at(B).expect("receiver-learns-of-failure");
    assert_eq!(
        reason,
        ResetReason::MAX_RETRIES,
        "reset-carries-reason: {s}"
    );
    assert!(
        tb >= heal && tb <= heal + 100 * MS + 2 * LinkConfig::CLEAN.latency + 2 * MS,
        "reset-arrives-promptly-after-heal ({tb:?}): {s}"
    );
}

#[test]
fn slow_receiver_backpressures_and_buffers_stay_within_the_window() {
    let config = StreamConfig::default().with_window_bytes(32 * 1024);
    let mut w = World::new(0x510, config, [LinkConfig::CLEAN, LinkConfig::CLEAN], MIB);
    // 100 KB/s: far below what the link carries.
    w.receiver.consume = Consume::Rate(100);
    let s = w.run_reported(Duration::from_secs(120));
    let a = w.stream(A).expect("open").stats();
    assert!(a.backpressure_events > 0, "sender-sees-backpressure: {s}");
    assert!(
        w.max_buffered <= u64::from(config.window_bytes),
        "buffer-never-exceeds-window: {s}"
    );
    assert_eq!(
        w.receiver.chunks,
        (0..w.sender.chunks).collect::<Vec<_>>(),
        "completes-in-order: {s}"
    );
    let b = w.stream(B).expect("accepted").stats();
    assert!(
        b.grants_sent <= w.receiver.batches_with_input + w.consume_ticks,
        "grants-coalesce-per-batch: {s}"
    );
    let secs = w.t().as_secs_f64();
    assert!(secs >= 9.0, "paced-by-the-receiver ({secs} s): {s}");
}

#[test]
fn lossy_transfers_hold_across_seeds() {
    for seed in 100..108 {
        for loss in [0.1, 0.3] {
            let dirs = [LinkConfig::lossy(loss), LinkConfig::lossy(loss)];
            reliable_transfer(seed, dirs, 2 * MIB, Duration::from_secs(600));
        }
    }
}

#[test]
fn one_percent_loss_on_a_fast_link_is_repaired_in_round_trips_not_timer_floors() {
    // A 0.2 ms RTT link (LAN/loopback class) with 1 % loss both ways: data losses must be
    // repaired on the scale of the path's RTT, and a lost tail grant must not cost the
    // 10 ms RTO floor every time. The bound is virtual time for 16 MiB.
    let fast = LinkConfig {
        latency: Duration::from_micros(100),
        jitter: Duration::from_micros(10),
        ..LinkConfig::lossy(0.01)
    };
    let w = reliable_transfer(0x5eed_0001, [fast, fast], 16 * MIB, Duration::from_secs(60));
    let s = w.summary();
    assert!(w.net.dropped[A] > 0, "loss-was-exercised: {s}");
    assert!(
        w.t() < FAST_LINK_BOUND,
        "fast-link-1%-loss-within-{FAST_LINK_BOUND:?}: {s}"
    );
}

/// Virtual-time bound for the 16 MiB, 1 % loss, 0.2 ms RTT transfer.
const FAST_LINK_BOUND: Duration = Duration::from_millis(120);
