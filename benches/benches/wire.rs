//! Wire micro-benchmarks: the per-packet header work, the relay step, and the signature and
//! matching costs paid per control message.
//!
//! Run: `cargo bench -p netrun-benches --bench wire -- --warm-up-time 1 --measurement-time 2`.

use std::hint::black_box;

// Closures return `.ok()` rather than the `Result`: `DecodeError` has drop glue, and
// handing criterion a droppable value per iteration measures that instead of the codec.

use criterion::{Criterion, criterion_group, criterion_main};
use netrun_messages::capability::{
    CapabilityAnnouncement, CapabilityFilter, CapabilitySet, GpuInfo, GpuVendor, Hardware,
};
use netrun_messages::header::{HEADER_LEN, Header, PacketKind};
use netrun_messages::routing::RoutingHeader;
use netrun_messages::token::{PermissionToken, TokenScope};
use netrun_messages::{ChannelName, Identity, NodeId};

const NOW: u64 = 1_800_000_000;

fn sample_header() -> Header {
    let mut h = Header::new(PacketKind::Data, NodeId(0x0102_0304), NodeId(0x0506_0708));
    h.stream = 42;
    h.counter = 1_000_000;
    h.payload_len = 1024 + 16;
    h
}

fn header(c: &mut Criterion) {
    let h = sample_header();
    let mut packet = h.encode().to_vec();
    packet.resize(HEADER_LEN + h.payload_len as usize, 0xab);

    c.bench_function("header/encode", |b| b.iter(|| black_box(&h).encode()));
    let mut out = [0u8; HEADER_LEN];
    c.bench_function("header/write", |b| {
        b.iter(|| {
            black_box(&h).write(&mut out);
            black_box(&out);
        })
    });
    c.bench_function("header/decode", |b| {
        b.iter(|| Header::parse(black_box(&packet)).map(|(h, _)| h).ok())
    });
    // Header-only datagram (payload_len 0), written and parsed in one stack buffer.
    let mut bare = h;
    bare.payload_len = 0;
    let mut buf = [0u8; HEADER_LEN];
    c.bench_function("header/round_trip", |b| {
        b.iter(|| {
            black_box(&bare).write(&mut buf);
            Header::parse(black_box(&buf)).map(|(h, _)| h).ok()
        })
    });
}

fn routing(c: &mut Criterion) {
    let mut h = sample_header();
    h.ttl = u8::MAX;
    let mut packet = h.encode().to_vec();
    packet.resize(HEADER_LEN + h.payload_len as usize, 0xab);
    c.bench_function("routing/forward_in_place", |b| {
        b.iter(|| {
            // Restore the TTL so every iteration forwards instead of expiring.
            packet[3] = u8::MAX;
            RoutingHeader::forward_in_place(black_box(&mut packet)).ok()
        })
    });
    c.bench_function("routing/parse", |b| {
        b.iter(|| RoutingHeader::parse(black_box(&packet)).ok())
    });
}

fn signatures(c: &mut Criterion) {
    let issuer = Identity::from_seed([1; 32]);
    let subject = Identity::from_seed([2; 32]);
    let channel = ChannelName::new("sensors/temp").expect("valid").hash();
    let token = PermissionToken::try_issue(
        &issuer,
        subject.entity_id(),
        TokenScope::PUBLISH,
        channel,
        NOW,
        3600,
        0,
        7,
    )
    .expect("valid token");
    let who = subject.entity_id();
    c.bench_function("token/check", |b| {
        b.iter(|| black_box(&token).check(NOW, 60, &who, channel, TokenScope::PUBLISH))
    });
    let bytes = token.to_bytes();
    c.bench_function("token/decode", |b| {
        b.iter(|| PermissionToken::from_bytes(black_box(&bytes)))
    });

    let node = Identity::from_seed([3; 32]);
    let ann = CapabilityAnnouncement::sign(&node, 1, NOW, 300, twenty_tags()).expect("signs");
    c.bench_function("announcement/verify", |b| {
        b.iter(|| black_box(&ann).verify())
    });
    let encoded = ann.to_bytes().expect("encodes");
    c.bench_function("announcement/decode", |b| {
        b.iter(|| CapabilityAnnouncement::from_bytes(black_box(&encoded)))
    });
}

fn twenty_tags() -> CapabilitySet {
    let mut set = CapabilitySet::new().with_hardware(
        Hardware::new(16, 32)
            .with_memory_gb(128)
            .with_gpu(GpuInfo::new(GpuVendor::Nvidia, "RTX 4090", 24)),
    );
    for tag in [
        "hardware.gpu",
        "hardware.gpu.vram_gb=24",
        "hardware.cpu_cores=16",
        "hardware.memory_gb=128",
        "software.os=linux",
        "software.arch=x86_64",
        "software.cuda=12.4",
        "software.model.0.id=llama-3-8b",
        "software.model.1.id=whisper-large",
        "software.tool.0.id=search",
        "nrpc:inference",
        "nrpc:embedding",
        "nrpc:echo",
        "role:aggregator",
        "dataforts.blob_tree_v3",
        "scope:region:eu-west",
        "subnet:00000001",
        "group:0000000000000001",
        "ai-tool:web-search",
        "heat:blob:00ff=3",
    ] {
        set = set.with_tag(tag);
    }
    set
}

fn capability_match(c: &mut Criterion) {
    let set = twenty_tags();
    let gpu = CapabilityFilter::new().require_gpu();
    c.bench_function("capability/match_require_gpu", |b| {
        b.iter(|| black_box(&gpu).matches(black_box(&set)))
    });
    let tags = CapabilityFilter::new()
        .require_tag("software.os=linux")
        .require_tag("nrpc:inference")
        .require_tag("hardware.gpu");
    c.bench_function("capability/match_3_tags_of_20", |b| {
        b.iter(|| black_box(&tags).matches(black_box(&set)))
    });
    c.bench_function("capability/set_encode", |b| {
        b.iter(|| black_box(&set).to_bytes())
    });
}

criterion_group!(benches, header, routing, signatures, capability_match);
criterion_main!(benches);
