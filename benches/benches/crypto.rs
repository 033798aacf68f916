//! Packet crypto and handshake micro-benchmarks.
//!
//! - `seal_in_place` / `open_in_place`: the bare AEAD, ring (`PacketCipher`, the data path)
//!   against RustCrypto (`PortableCipher`, the reference), at 64 B, 256 B, 1 KiB, 4 KiB.
//! - `seal_datagram` / `open_datagram`: the one-call helpers the transport uses (counter,
//!   header, AAD, replay window included).
//! - `heartbeat_verify`: `open_heartbeat` (verify-only path).
//! - `handshake_full`: initiator start + responder + initiator finish (4 + 4 X25519 ops).
//!
//! Run: `cargo bench -p netrun-benches --bench crypto -- --warm-up-time 1 --measurement-time 2`.

use std::hint::black_box;
use std::time::Instant;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use netrun_messages::header::HEADER_LEN;
use netrun_messages::{Header, Identity, NodeId, PacketKind};
use netrun_runtime::crypto::{
    PacketCipher, PortableCipher, RxKey, TxKey, open_datagram, open_heartbeat, seal_datagram,
    seal_heartbeat,
};
use netrun_runtime::handshake::{Initiator, Responder, ResponderConfig};
use netrun_runtime::rand_core::OsRng;

const SIZES: [usize; 4] = [64, 256, 1024, 4096];
const AAD: [u8; HEADER_LEN] = [0x33; HEADER_LEN];

/// A fixed benchmark session key.
fn key() -> [u8; 32] {
    [0x42; 32]
}

fn bare_aead(c: &mut Criterion) {
    let ring = PacketCipher::new(&[0x42; 32]);
    let portable = PortableCipher::new(&[0x42; 32]);
    let mut seal = c.benchmark_group("seal_in_place");
    for size in SIZES {
        seal.throughput(Throughput::Bytes(size as u64));
        let mut buf = vec![0xab; size];
        let mut counter = 0u64;
        seal.bench_with_input(BenchmarkId::new("ring", size), &size, |b, _| {
            b.iter(|| {
                counter += 1;
                black_box(ring.seal_in_place(counter, &AAD, &mut buf))
            })
        });
        seal.bench_with_input(BenchmarkId::new("rustcrypto", size), &size, |b, _| {
            b.iter(|| {
                counter += 1;
                black_box(portable.seal_in_place(counter, &AAD, &mut buf))
            })
        });
    }
    seal.finish();

    let mut open = c.benchmark_group("open_in_place");
    for size in SIZES {
        open.throughput(Throughput::Bytes(size as u64));
        let mut sealed = vec![0xab; size];
        let tag = ring.seal_in_place(7, &AAD, &mut sealed).expect("seal");
        sealed.extend_from_slice(&tag);
        open.bench_with_input(BenchmarkId::new("ring", size), &size, |b, _| {
            b.iter_batched_ref(
                || sealed.clone(),
                |buf| black_box(ring.open_in_place(7, &AAD, buf)).expect("open"),
                BatchSize::SmallInput,
            )
        });
        open.bench_with_input(BenchmarkId::new("rustcrypto", size), &size, |b, _| {
            b.iter_batched_ref(
                || sealed.clone(),
                |buf| black_box(portable.open_in_place(7, &AAD, buf)).expect("open"),
                BatchSize::SmallInput,
            )
        });
    }
    open.finish();
}

fn datagrams(c: &mut Criterion) {
    let header = Header::new(PacketKind::Data, NodeId(1), NodeId(2));
    let mut seal = c.benchmark_group("seal_datagram");
    for size in SIZES {
        seal.throughput(Throughput::Bytes(size as u64));
        let tx = TxKey::new(&key());
        let plaintext = vec![0xab; size];
        let mut out = Vec::with_capacity(size + 64);
        seal.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, _| {
            b.iter(|| black_box(seal_datagram(&tx, header, &plaintext, &mut out)).expect("seal"))
        });
    }
    seal.finish();

    // Each open needs a fresh counter (the replay window is part of the path): sealing
    // happens in the untimed setup, in counter order, like an in-order stream.
    let mut open = c.benchmark_group("open_datagram");
    for size in SIZES {
        open.throughput(Throughput::Bytes(size as u64));
        let tx = TxKey::new(&key());
        let rx = RxKey::new(&key());
        let plaintext = vec![0xab; size];
        open.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, _| {
            b.iter_batched_ref(
                || {
                    let mut out = Vec::with_capacity(size + 64);
                    seal_datagram(&tx, header, &plaintext, &mut out).expect("seal");
                    out
                },
                |datagram| black_box(open_datagram(&rx, datagram)).expect("open"),
                BatchSize::SmallInput,
            )
        });
    }
    open.finish();

    let tx = TxKey::new(&key());
    let rx = RxKey::new(&key());
    c.bench_function("heartbeat_verify", |b| {
        b.iter_batched_ref(
            || {
                let mut out = Vec::with_capacity(64);
                seal_heartbeat(&tx, NodeId(1), NodeId(2), 2, &mut out).expect("seal");
                out
            },
            |datagram| black_box(open_heartbeat(&rx, datagram)).expect("verify"),
            BatchSize::SmallInput,
        )
    });
}

fn handshake(c: &mut Criterion) {
    let a = Identity::from_seed([1; 32]);
    let b = Identity::from_seed([2; 32]);
    let psk = [7u8; 32];
    let mut responder = Responder::new(b.clone(), &psk, ResponderConfig::default());
    // Benchmarks may read the clock; the cores only receive it.
    let now = Instant::now();
    let mut id = 0u64;
    c.bench_function("handshake_full", |bench| {
        bench.iter(|| {
            id += 1;
            let (mut init, msg1) =
                Initiator::start(now, &a, b.entity_id(), &psk, id, &mut OsRng).expect("start");
            let (_, msg2) = responder
                .handle_init(now, &msg1, None, &mut OsRng)
                .expect("init");
            black_box(init.handle_response(now, &msg2).expect("response"))
        })
    });
}

criterion_group!(benches, bare_aead, datagrams, handshake);
criterion_main!(benches);
