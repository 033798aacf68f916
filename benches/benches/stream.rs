//! Stream benchmarks: the per-segment codec work and the reliable-stream core alone moving
//! 1 MiB over a simulated link (virtual clock, fixed 1 ms latency, seeded loss), so the
//! figure is the core's CPU cost per byte, not a network's speed.
//!
//! Run: `cargo bench -p netrun-benches --bench stream -- --warm-up-time 1 --measurement-time 2`.

use std::collections::VecDeque;
use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use netrun_messages::stream::{Grant, MAX_NACK_RANGES, Nack, SegmentHeader, SeqRange, StreamFrame};
use netrun_runtime::stream::{Stream, StreamConfig};

fn codec(c: &mut Criterion) {
    let header = SegmentHeader {
        seq: 123_456,
        offset: 987_654_321,
        fin: false,
    };
    let data = vec![0xab; 1024];
    let mut buf = Vec::with_capacity(2048);
    c.bench_function("stream/segment_encode_1k", |b| {
        b.iter(|| {
            buf.clear();
            black_box(&header).encode_with(black_box(&data), &mut buf);
        })
    });
    buf.clear();
    header.encode_with(&data, &mut buf);
    c.bench_function("stream/segment_parse_1k", |b| {
        b.iter(|| {
            SegmentHeader::parse(black_box(&buf))
                .map(|(h, d)| (h, d.len()))
                .ok()
        })
    });
    let grant = StreamFrame::Grant(Grant {
        stream: 9,
        consumed: 1 << 30,
        next_expected: 1 << 20,
    })
    .to_vec();
    c.bench_function("stream/grant_decode", |b| {
        b.iter(|| StreamFrame::decode(black_box(&grant)).ok())
    });
    let ranges = (0..MAX_NACK_RANGES as u64)
        .map(|i| SeqRange {
            start: 3 * i,
            end: 3 * i + 1,
        })
        .collect();
    let nack = StreamFrame::Nack(Nack::new(9, ranges).expect("canonical")).to_vec();
    c.bench_function("stream/nack64_decode", |b| {
        b.iter(|| StreamFrame::decode(black_box(&nack)).ok())
    });
}

/// A tiny deterministic generator for the loss decision (benches carry no RNG crate).
struct XorShift(u64);

impl XorShift {
    fn chance(&mut self, per_mille: u64) -> bool {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % 1000 < per_mille
    }
}

enum Packet {
    Segment(Vec<u8>),
    Control(Vec<u8>),
}

/// Moves `total` bytes A → B through two stream cores; returns the bytes delivered.
#[allow(clippy::disallowed_methods)] // the simulation's arbitrary origin; only offsets matter
fn transfer(total: usize, loss_per_mille: u64) -> u64 {
    const CHUNK: usize = 8000;
    const LATENCY: Duration = Duration::from_millis(1);
    let origin = Instant::now();
    let mut now = origin;
    let config = StreamConfig::default();
    let mut a = Stream::new(1, config).expect("config");
    let mut b = Stream::new(1, config).expect("config");
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut links: [VecDeque<(Instant, Packet)>; 2] = [VecDeque::new(), VecDeque::new()];
    let payload = Bytes::from(vec![0x5a; CHUNK]);
    let mut sent = 0usize;
    let mut delivered = 0u64;
    let mut closed = false;
    while delivered < total as u64 {
        while sent < total && a.send(now, payload.clone()).is_ok() {
            sent += CHUNK;
        }
        if sent >= total && !closed {
            closed = a.close_graceful(now, now + Duration::from_secs(60)).is_ok();
        }
        for (from, stream) in [(0, &mut a), (1, &mut b)] {
            while let Some(out) = stream.poll_transmit(now) {
                let mut v = Vec::with_capacity(out.encoded_len());
                out.encode_into(&mut v);
                if !rng.chance(loss_per_mille) {
                    links[from].push_back((now + LATENCY, Packet::Segment(v)));
                }
            }
            while let Some(frame) = stream.poll_control(now) {
                if !rng.chance(loss_per_mille) {
                    links[from].push_back((now + LATENCY, Packet::Control(frame.to_vec())));
                }
            }
        }
        let next = [
            links[0].front().map(|(t, _)| *t),
            links[1].front().map(|(t, _)| *t),
            a.poll_timeout(),
            b.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min();
        let Some(next) = next else { break };
        now = now.max(next);
        let [a_to_b, b_to_a] = &mut links;
        for (to, link) in [(&mut b, a_to_b), (&mut a, b_to_a)] {
            while link.front().is_some_and(|(t, _)| *t <= now) {
                let Some((_, packet)) = link.pop_front() else {
                    break;
                };
                match packet {
                    Packet::Segment(v) => {
                        let _ = to.handle_segment_bytes(now, Bytes::from(v));
                    }
                    Packet::Control(v) => {
                        if let Ok(frame) = StreamFrame::decode(&v) {
                            to.handle_frame(now, &frame);
                        }
                    }
                }
            }
        }
        a.handle_timeout(now);
        b.handle_timeout(now);
        while let Some(data) = b.poll_deliver() {
            delivered += data.len() as u64;
            b.on_consumed(data.len() as u64);
        }
        if a.failure().is_some() || b.failure().is_some() {
            break;
        }
    }
    delivered
}

fn reliable_transfer(c: &mut Criterion) {
    const MIB: usize = 1024 * 1024;
    let mut group = c.benchmark_group("stream/reliable_1mib");
    group.throughput(Throughput::Bytes(MIB as u64));
    for (name, loss) in [("loss_0", 0), ("loss_1pct", 10)] {
        assert!(transfer(MIB, loss) >= MIB as u64, "{name} completes");
        group.bench_function(name, |b| b.iter(|| transfer(black_box(MIB), loss)));
    }
    group.finish();
}

criterion_group!(benches, codec, reliable_transfer);
criterion_main!(benches);
