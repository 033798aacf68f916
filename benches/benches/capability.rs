//! Capability index benchmarks over a 10,000-node index: indexed queries (single tag, tag
//! plus GPU filter, service lookup, hardware-only filter), a brute-force scan of the same
//! single-tag query for comparison, and folding one newer announcement (signature-bound).
//!
//! Run: `cargo bench -p netrun-benches --bench capability -- --warm-up-time 1 --measurement-time 2`.
//!
//! The index is built once from signed announcements (a few seconds of setup). Nodes are
//! spread like a mixed fleet: 8 zones (`zone:z0`..`z7`, ~1,250 nodes each), 1 to 3 of 20
//! services (`nrpc:svc-N`), a role tag, 16 to 512 GB of memory, and a GPU on 30 % of nodes
//! (NVIDIA, AMD or Apple, 8 to 80 GB of VRAM). The result sizes are printed to stderr.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use netrun_messages::{
    CapabilityAnnouncement, CapabilityFilter, CapabilitySet, GpuInfo, GpuVendor, Hardware,
    Identity, NodeId,
};
use netrun_runtime::capability::{CapabilityIndex, IndexConfig};

const NOW: u64 = 1_800_000_000;
const NODES: u32 = 10_000;

/// A small deterministic generator (xorshift64*), so every run builds the same fleet.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn identity(i: u32) -> Identity {
    let mut seed = [0x42u8; 32];
    seed[..4].copy_from_slice(&i.to_le_bytes());
    Identity::from_seed(seed)
}

fn capabilities(rng: &mut Rng) -> CapabilitySet {
    let mut set = CapabilitySet::new().with_tag(format!("zone:z{}", rng.below(8)));
    for _ in 0..=rng.below(3) {
        set = set.with_tag(format!("nrpc:svc-{}", rng.below(20)));
    }
    set = set.with_tag(
        ["role:worker", "role:edge", "role:storage", "role:gateway"][rng.below(4) as usize],
    );
    let cores = 2 << rng.below(6);
    let mut hardware =
        Hardware::new(cores as u32, cores as u32 * 2).with_memory_gb(16 << rng.below(6));
    if rng.below(10) < 3 {
        let vendor = [GpuVendor::Nvidia, GpuVendor::Amd, GpuVendor::Apple][rng.below(3) as usize];
        hardware = hardware.with_gpu(GpuInfo::new(vendor, "gpu", 8 + rng.below(73) as u32));
    }
    set.with_hardware(hardware)
}

fn build() -> (CapabilityIndex, Vec<(NodeId, CapabilitySet)>) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut index = CapabilityIndex::new(NodeId(0), IndexConfig::default()).expect("valid");
    let mut flat = Vec::with_capacity(NODES as usize);
    for i in 0..NODES {
        let id = identity(i);
        let caps = capabilities(&mut rng);
        let ann = CapabilityAnnouncement::sign(&id, 1, NOW, 300, caps.clone()).expect("signs");
        index.handle_announcement(NOW, ann, None).expect("accepted");
        flat.push((id.node_id(), caps));
    }
    assert_eq!(index.len(), NODES as usize);
    (index, flat)
}

fn queries(c: &mut Criterion) {
    let (index, flat) = build();
    let single = CapabilityFilter::new().require_tag("zone:z3");
    let tag_gpu = CapabilityFilter::new()
        .require_tag("zone:z3")
        .require_gpu()
        .min_vram_gb(24);
    let two_tags = CapabilityFilter::new()
        .require_tag("zone:z3")
        .require_tag("role:edge");
    let hardware = CapabilityFilter::new().min_memory_gb(256).min_cpu_cores(32);
    for (name, filter) in [
        ("single_tag", &single),
        ("tag_gpu", &tag_gpu),
        ("two_tags", &two_tags),
        ("hardware_only", &hardware),
    ] {
        eprintln!("capability/{name}: {} nodes", index.find(filter).len());
    }
    eprintln!(
        "capability/find_service: {} nodes",
        index.find_service("svc-7").len()
    );

    let mut group = c.benchmark_group("capability_10k");
    group.bench_function("single_tag", |b| b.iter(|| index.find(black_box(&single))));
    group.bench_function("tag_gpu", |b| b.iter(|| index.find(black_box(&tag_gpu))));
    group.bench_function("two_tags", |b| b.iter(|| index.find(black_box(&two_tags))));
    group.bench_function("find_service", |b| {
        b.iter(|| index.find_service(black_box("svc-7")))
    });
    group.bench_function("hardware_only", |b| {
        b.iter(|| index.find(black_box(&hardware)))
    });
    group.bench_function("single_tag_scan_baseline", |b| {
        b.iter(|| {
            flat.iter()
                .filter(|(_, caps)| black_box(&single).matches(caps))
                .map(|(node, _)| *node)
                .collect::<Vec<_>>()
        })
    });
    group.finish();
}

fn fold(c: &mut Criterion) {
    let (mut index, _) = build();
    let id = identity(17);
    let mut rng = Rng(7);
    let mut version = 1;
    c.bench_function("capability_10k/fold_newer_announcement", |b| {
        b.iter_batched(
            || {
                version += 1;
                CapabilityAnnouncement::sign(&id, version, NOW, 300, capabilities(&mut rng))
                    .expect("signs")
                    .to_bytes()
                    .expect("encodes")
            },
            |bytes| {
                index
                    .handle_announcement(NOW, &bytes, None)
                    .map(|outcome| outcome.forward())
                    .ok()
            },
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, queries, fold);
criterion_main!(benches);
