//! Golden wire vectors: fixed inputs must encode to the bytes in `tests/testdata/*.hex`
//! (header, routing header, envelope, token, announcement, causal).
//!
//! A failure means the wire format changed. If the change is intended, regenerate with
//! `NETRUN_BLESS=1 cargo test -p netrun-messages --test golden`, review the diff, and say
//! so in the commit message: peers built from the old files can no longer talk to us.

use std::path::PathBuf;

use netrun_messages::capability::{CapabilityAnnouncement, CapabilitySet, GpuInfo, GpuVendor};
use netrun_messages::envelope::{Envelope, Subprotocol, TraceContext};
use netrun_messages::header::{Header, PacketFlags, PacketKind};
use netrun_messages::routing::{ROUTING_HEADER_LEN, RoutingHeader};
use netrun_messages::token::{PermissionToken, TokenScope};
use netrun_messages::{
    CausalChain, ChainHead, ChannelName, Hardware, Identity, NodeId, SignedEvent, verify_chain,
};

const NOW: u64 = 1_800_000_000;

fn testdata() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/testdata")
}

/// Compares `bytes` with `<name>.hex`, or rewrites the file when `NETRUN_BLESS=1`.
fn golden(name: &str, bytes: &[u8]) {
    let path = testdata().join(format!("{name}.hex"));
    let mut text = String::new();
    for line in bytes.chunks(32) {
        text.push_str(&hex::encode(line));
        text.push('\n');
    }
    if std::env::var("NETRUN_BLESS").as_deref() == Ok("1") {
        std::fs::create_dir_all(testdata()).expect("create testdata");
        std::fs::write(&path, &text).expect("write golden file");
        return;
    }
    let stored = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run with NETRUN_BLESS=1 to create it",
            path.display()
        )
    });
    let stored: String = stored.split_whitespace().collect();
    let actual = hex::encode(bytes);
    assert_eq!(
        actual,
        stored,
        "{name}: encoding differs from {}",
        path.display()
    );
}

fn header() -> Header {
    Header {
        kind: PacketKind::Data,
        flags: PacketFlags::RELIABLE.with(PacketFlags::TRACED),
        ttl: 16,
        hop_count: 2,
        src: NodeId(0x0102_0304_0506_0708),
        dst: NodeId(0x1112_1314_1516_1718),
        stream: 0x2122_2324_2526_2728,
        counter: 0x3132_3334_3536_3738,
        payload_len: 1200,
    }
}

#[test]
fn header_vector() {
    let bytes = header().encode();
    golden("header", &bytes);
    let mut datagram = bytes.to_vec();
    datagram.resize(bytes.len() + 1200, 0);
    assert_eq!(Header::parse(&datagram).expect("parses").0, header());
}

#[test]
fn routing_header_vector() {
    let h = header();
    let rh = RoutingHeader {
        kind: h.kind,
        flags: h.flags,
        ttl: h.ttl,
        hop_count: h.hop_count,
        src: h.src,
        dst: h.dst,
    };
    let mut bytes = [0u8; ROUTING_HEADER_LEN];
    rh.write(&mut bytes);
    assert_eq!(&bytes[..], &h.encode()[..ROUTING_HEADER_LEN]);
    golden("routing_header", &bytes);
    assert_eq!(RoutingHeader::parse(&bytes).expect("parses"), rh);
}

#[test]
fn envelope_vector() {
    let trace = TraceContext {
        trace_id: *b"\x4b\xf9\x2f\x35\x77\xb3\x4d\xa6\xa3\xce\x92\x9d\x0e\x0e\x47\x36",
        span_id: *b"\x00\xf0\x67\xaa\x0b\xa9\x02\xb7",
        flags: 1,
    };
    let body = rmp_body();
    let env = Envelope::new(Subprotocol::CHANNEL, Some(trace), &body).expect("valid");
    let bytes = env.to_vec();
    golden("envelope", &bytes);
    assert_eq!(Envelope::decode(&bytes).expect("decodes"), env);
}

/// A small fixed msgpack body: the array `["sensors/temp", 42]`.
fn rmp_body() -> Vec<u8> {
    let mut body = vec![0x92, 0xac];
    body.extend_from_slice(b"sensors/temp");
    body.push(42);
    body
}

#[test]
fn token_vector() {
    let issuer = Identity::from_seed([0x11; 32]);
    let subject = Identity::from_seed([0x22; 32]);
    let channel = ChannelName::new("sensors/temp").expect("valid").hash();
    let token = PermissionToken::try_issue(
        &issuer,
        subject.entity_id(),
        TokenScope::PUBLISH.with(TokenScope::DELEGATE),
        channel,
        NOW,
        86_400,
        1,
        0x0123_4567_89ab_cdef,
    )
    .expect("valid");
    let bytes = token.to_bytes();
    golden("token", &bytes);
    assert_eq!(PermissionToken::from_bytes(&bytes), Ok(token));
}

#[test]
fn announcement_vector() {
    let node = Identity::from_seed([0x33; 32]);
    let caps = CapabilitySet::new()
        .with_tag("nrpc:inference")
        .with_tag("software.os=linux")
        .with_metadata("region", "eu-west")
        .with_hardware(
            Hardware::new(16, 32)
                .with_memory_gb(128)
                .with_gpu(GpuInfo::new(GpuVendor::Nvidia, "RTX 4090", 24)),
        );
    let mut ann = CapabilityAnnouncement::sign(&node, 7, NOW, 300, caps).expect("signs");
    ann.hop_count = 1;
    let bytes = ann.to_bytes().expect("encodes");
    golden("announcement", &bytes);
    let back = CapabilityAnnouncement::from_bytes(&bytes).expect("decodes");
    back.verify().expect("verifies");
    assert_eq!(back, ann);
}

#[test]
fn causal_vector() {
    let daemon = Identity::from_seed([0x44; 32]);
    let mut chain = CausalChain::new(daemon.origin_hash());
    let genesis = chain.genesis();
    let event = chain
        .append(bytes::Bytes::from_static(b"hello"))
        .expect("append");
    let signed = SignedEvent::sign(&daemon, event.clone());
    let head = ChainHead::sign(&daemon, chain.head());
    // genesis link ‖ signed event ‖ chain head
    let mut bytes = genesis.link.to_bytes().to_vec();
    bytes.extend_from_slice(&signed.to_bytes().expect("encodes"));
    bytes.extend_from_slice(&head.to_bytes());
    golden("causal", &bytes);
    verify_chain(&daemon.entity_id(), None, &[genesis, event], &head).expect("verifies");
}
