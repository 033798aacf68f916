//! Daemon host benchmarks: in-process event delivery through a `DaemonHost` for a trivial
//! counter daemon, under each chain-signing mode, plus host creation and restore.
//!
//! Run: `cargo bench -p netrun-benches --bench daemon -- --warm-up-time 1 --measurement-time 3`.
//!
//! `deliver/*` times one `deliver` plus draining `poll_output` (what the host actor does
//! per event), so it includes linking, signing (per event, or amortised per batch),
//! snapshots at the default cadence (every 1,024 events) and the input log. Throughput is
//! reported in events. Before the criterion groups, each mode is also timed event by event
//! over 200,000 events and the p50/p99/p99.9/max are printed to stderr: batch signing moves
//! the signature cost into the event that seals a batch, which the mean hides.
//!
//! `restore/replay_N` restores a fresh daemon from a snapshot and replays N logged events;
//! `new` builds a host (one first snapshot, signed).

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use netrun_messages::{CausalChain, CausalEvent, Identity};
use netrun_runtime::daemon::{
    ChainSigning, DEFAULT_BATCH_BYTES, DEFAULT_BATCH_DELAY, DaemonError, DaemonHost, HostConfig,
    MeshDaemon,
};

/// Counts events; each event produces one 8-byte output (the new count).
struct Counter {
    count: u64,
}

impl MeshDaemon for Counter {
    fn name(&self) -> &str {
        "counter"
    }

    fn process(&mut self, _event: &CausalEvent) -> Result<Vec<Bytes>, DaemonError> {
        self.count += 1;
        Ok(vec![Bytes::copy_from_slice(&self.count.to_le_bytes())])
    }

    fn snapshot(&self) -> Option<Bytes> {
        Some(Bytes::copy_from_slice(&self.count.to_le_bytes()))
    }

    fn restore(&mut self, state: Bytes) -> Result<(), DaemonError> {
        let bytes: [u8; 8] = state[..]
            .try_into()
            .map_err(|_| DaemonError::InvalidState("counter state is 8 bytes".into()))?;
        self.count = u64::from_le_bytes(bytes);
        Ok(())
    }
}

#[allow(clippy::disallowed_methods)] // benchmark fixture clock; cores never read clocks
fn now() -> Instant {
    Instant::now()
}

fn counter() -> Box<dyn MeshDaemon> {
    Box::new(Counter { count: 0 })
}

fn identity() -> Identity {
    Identity::from_seed([3; 32])
}

/// One input event from a producer chain (the host does not check inputs' links).
fn input() -> CausalEvent {
    let producer = Identity::from_seed([4; 32]);
    let mut chain = CausalChain::new(producer.origin_hash());
    chain
        .append(Bytes::from_static(b"tick"))
        .expect("a fresh chain appends")
}

fn batch(max_events: u32) -> HostConfig {
    HostConfig {
        signing: ChainSigning::Batch {
            max_events,
            max_bytes: DEFAULT_BATCH_BYTES,
            max_delay: DEFAULT_BATCH_DELAY,
        },
        ..HostConfig::default()
    }
}

fn modes() -> Vec<(&'static str, HostConfig)> {
    vec![
        ("per_event", HostConfig::default().per_event()),
        ("batch_64", batch(64)),
        ("batch_256", batch(256)),
        ("batch_1024", batch(1024)),
    ]
}

/// Delivers one event and drains the outputs; returns how many outputs came out.
fn step(host: &mut DaemonHost, at: Instant, event: &CausalEvent) -> usize {
    host.deliver(at, event.clone()).expect("delivered");
    let mut outputs = 0;
    while let Some(output) = host.poll_output() {
        outputs += 1;
        black_box(output);
    }
    outputs
}

/// Times events one by one and prints percentiles (criterion reports means only).
fn percentiles() {
    const EVENTS: usize = 200_000;
    let event = input();
    for (name, config) in modes() {
        let mut host = DaemonHost::new(counter(), identity(), config).expect("host");
        let at = now();
        let mut samples = Vec::with_capacity(EVENTS);
        let start = now();
        for _ in 0..EVENTS {
            let t = now();
            step(&mut host, at, &event);
            samples.push(t.elapsed());
        }
        let total = start.elapsed();
        samples.sort_unstable();
        let pick = |q: f64| samples[((EVENTS as f64 * q) as usize).min(EVENTS - 1)];
        eprintln!(
            "daemon deliver {name:>10}: {:>9.0} events/s  p50 {:?}  p99 {:?}  p99.9 {:?}  max {:?}",
            EVENTS as f64 / total.as_secs_f64(),
            pick(0.50),
            pick(0.99),
            pick(0.999),
            samples[EVENTS - 1],
        );
    }
}

fn deliver(c: &mut Criterion) {
    percentiles();
    let event = input();
    let mut group = c.benchmark_group("daemon/deliver");
    group.throughput(Throughput::Elements(1));
    for (name, config) in modes() {
        let mut host = DaemonHost::new(counter(), identity(), config).expect("host");
        let at = now();
        group.bench_function(name, |b| b.iter(|| step(&mut host, at, black_box(&event))));
    }
    group.finish();
}

fn lifecycle(c: &mut Criterion) {
    let mut group = c.benchmark_group("daemon");
    group.bench_function("new", |b| {
        b.iter(|| DaemonHost::new(counter(), identity(), HostConfig::default()).expect("host"))
    });
    let event = input();
    for replay in [0usize, 1024] {
        // A host that took its snapshot and then processed `replay` more events.
        let config = HostConfig {
            snapshot_every: 0,
            ..HostConfig::default()
        };
        let mut host = DaemonHost::new(counter(), identity(), config).expect("host");
        let at = now();
        for _ in 0..100 {
            step(&mut host, at, &event);
        }
        host.take_snapshot().expect("snapshot");
        for _ in 0..replay {
            step(&mut host, at, &event);
        }
        let recovery = host.into_recovery();
        group.throughput(Throughput::Elements(replay.max(1) as u64));
        group.bench_with_input(
            BenchmarkId::new("restore/replay", replay),
            &recovery,
            |b, recovery| {
                b.iter(|| DaemonHost::restore(at, counter(), recovery.clone()).expect("restored"))
            },
        );
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1));
    targets = deliver, lifecycle
}
criterion_main!(benches);
