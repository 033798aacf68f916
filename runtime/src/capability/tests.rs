//! Capability index tests: verification, pinning, versions, expiry, bounds and queries.

use netrun_messages::capability::MAX_TAGS;
use netrun_messages::{
    CapabilityAnnouncement, CapabilityFilter, CapabilitySet, GpuInfo, GpuVendor, Hardware,
    Identity, NodeId,
};
use proptest::prelude::*;

use super::*;

const T0: u64 = 1_800_000_000;

fn id(n: u16) -> Identity {
    let mut seed = [0u8; 32];
    seed[..2].copy_from_slice(&n.to_le_bytes());
    seed[31] = 0x5a;
    Identity::from_seed(seed)
}

fn caps(tags: &[&str]) -> CapabilitySet {
    let mut set = CapabilitySet::new();
    for tag in tags {
        set.tags.insert((*tag).to_owned());
    }
    set
}

fn ann(who: &Identity, version: u64, at: u64, set: CapabilitySet) -> CapabilityAnnouncement {
    CapabilityAnnouncement::sign(who, version, at, 300, set).expect("signs")
}

fn index() -> CapabilityIndex {
    CapabilityIndex::new(NodeId(0), IndexConfig::default()).expect("valid")
}

#[test]
fn config_validation() {
    assert_eq!(IndexConfig::default().validate(), Ok(()));
    let with = |f: fn(&mut IndexConfig)| {
        let mut c = IndexConfig::default();
        f(&mut c);
        c.validate()
    };
    assert_eq!(with(|c| c.max_nodes = 0), Err(IndexConfigError::NoNodes));
    assert!(matches!(
        with(|c| c.max_pins = c.max_nodes),
        Err(IndexConfigError::TooFewPins { .. })
    ));
    assert_eq!(with(|c| c.max_ttl_secs = 0), Err(IndexConfigError::ZeroTtl));
    assert!(matches!(
        with(|c| c.max_announcement_len += 1),
        Err(IndexConfigError::AnnouncementLen(_))
    ));
    assert_eq!(with(|c| c.max_hops = 0), Err(IndexConfigError::NoHops));
}

#[test]
fn stores_verified_announcements_and_indexes_them() {
    let mut idx = index();
    let a = id(1);
    let bytes = ann(&a, 1, T0, caps(&["nrpc:echo", "zone:eu"]))
        .to_bytes()
        .expect("encodes");
    assert_eq!(
        idx.handle_announcement(T0, &bytes, None).expect("accepted"),
        Outcome::Inserted { forward: true }
    );
    assert_eq!(idx.len(), 1);
    assert_eq!(idx.find_service("echo"), vec![a.node_id()]);
    assert!(idx.find_service("other").is_empty());
    assert_eq!(idx.tagged("zone:eu"), &[a.node_id()]);
    assert_eq!(
        idx.find(&CapabilityFilter::new().require_tag("zone:eu")),
        vec![a.node_id()]
    );
    assert!(
        idx.find(&CapabilityFilter::new().require_tag("zone:us"))
            .is_empty()
    );
    assert_eq!(idx.find(&CapabilityFilter::new()), vec![a.node_id()]);
    let entry = idx.get(a.node_id()).expect("present");
    assert_eq!(entry.expires_at, T0 + 300);
    assert_eq!(entry.via, None);
    assert_eq!(idx.pinned_key(a.node_id()), Some(a.entity_id()));
    assert_eq!(idx.counters().accepted, 1);
}

#[test]
fn forged_node_id_is_rejected_and_counted() {
    let mut idx = index();
    let victim = id(1);
    let forger = id(2);
    idx.handle_announcement(T0, ann(&victim, 5, T0, caps(&["nrpc:pay"])), None)
        .expect("victim accepted");

    // The forger signs an announcement that claims the victim's node id, with a higher
    // version, listing a service the victim does not offer.
    let mut forged = ann(&forger, 9, T0, caps(&["nrpc:steal"]));
    forged.node_id = victim.node_id();
    let err = idx
        .handle_announcement(T0, forged.clone(), None)
        .expect_err("forgery");
    assert!(
        matches!(err, IndexError::NodeIdMismatch { claimed, derived }
        if claimed == victim.node_id() && derived == forger.node_id())
    );
    // Even with a version the index would call stale, the forgery is a counted rejection.
    forged.version = 1;
    let bytes = forged.to_bytes().expect("encodes");
    assert!(matches!(
        idx.handle_announcement(T0, &bytes, Some(forger.node_id())),
        Err(IndexError::NodeIdMismatch { .. })
    ));
    assert_eq!(idx.counters().rejected.node_id_mismatch, 2);
    assert!(idx.find_service("steal").is_empty());
    assert_eq!(idx.find_service("pay"), vec![victim.node_id()]);
    assert_eq!(
        idx.get(victim.node_id())
            .expect("kept")
            .announcement
            .version,
        5
    );
}

#[test]
fn bad_signature_is_rejected_and_counted() {
    let mut idx = index();
    let a = id(1);
    let mut widened = ann(&a, 1, T0, caps(&["x"]));
    widened.capabilities.tags.insert("nrpc:admin".into());
    assert!(matches!(
        idx.handle_announcement(T0, widened, None),
        Err(IndexError::BadSignature)
    ));
    assert_eq!(idx.counters().rejected.bad_signature, 1);
    assert!(idx.is_empty());
    assert_eq!(
        idx.pinned_key(a.node_id()),
        None,
        "nothing pinned before verifying"
    );
}

#[test]
fn rebind_to_another_key_is_refused_and_counted() {
    let mut idx = index();
    let a = id(1);
    let other = id(2);
    // Node ids derive from keys, so a rebind needs a 64-bit collision; stand one in by
    // pinning a's node id to another key.
    idx.force_pin(a.node_id(), other.entity_id());
    let err = idx
        .handle_announcement(T0, ann(&a, 1, T0, caps(&[])), None)
        .expect_err("rebind");
    assert!(
        matches!(err, IndexError::RebindRefused { node, pinned, presented }
        if node == a.node_id() && pinned == other.entity_id() && presented == a.entity_id())
    );
    assert_eq!(idx.counters().rejected.rebind_refused, 1);
    assert!(idx.get(a.node_id()).is_none());
}

#[test]
fn forwarder_is_never_pinned() {
    let mut idx = index();
    let origin = id(1);
    let forwarder = id(2);
    let mut copy = ann(&origin, 1, T0, caps(&["nrpc:echo"]));
    copy.hop_count = 1;
    assert_eq!(
        idx.handle_announcement(T0, copy, Some(forwarder.node_id()))
            .expect("accepted"),
        Outcome::Inserted { forward: true }
    );
    assert_eq!(idx.pinned_key(forwarder.node_id()), None);
    assert_eq!(idx.pinned_key(origin.node_id()), Some(origin.entity_id()));
    assert_eq!(
        idx.get(origin.node_id()).expect("present").via,
        Some(forwarder.node_id())
    );
    // The forwarder's own announcement is accepted under its own key.
    idx.handle_announcement(T0, ann(&forwarder, 1, T0, caps(&[])), None)
        .expect("forwarder accepted");
    assert_eq!(
        idx.pinned_key(forwarder.node_id()),
        Some(forwarder.entity_id())
    );
    // `via` naming the origin itself is a direct arrival.
    idx.handle_announcement(T0, ann(&origin, 2, T0, caps(&[])), Some(origin.node_id()))
        .expect("accepted");
    assert_eq!(idx.get(origin.node_id()).expect("present").via, None);
}

#[test]
fn newer_versions_replace_older_ones() {
    let mut idx = index();
    let a = id(1);
    let node = a.node_id();
    idx.handle_announcement(T0, ann(&a, 10, T0, caps(&["old", "keep"])), None)
        .expect("accepted");
    assert_eq!(
        idx.handle_announcement(T0 + 1, ann(&a, 10, T0 + 1, caps(&["other"])), None)
            .expect("ok"),
        Outcome::Duplicate
    );
    assert_eq!(
        idx.handle_announcement(T0 + 1, ann(&a, 9, T0 + 1, caps(&["other"])), None)
            .expect("ok"),
        Outcome::Stale
    );
    assert_eq!(idx.tagged("old"), &[node]);
    let before = idx.mutation_version();
    assert_eq!(
        idx.handle_announcement(T0 + 2, ann(&a, 11, T0 + 2, caps(&["new", "keep"])), None)
            .expect("ok"),
        Outcome::Replaced {
            forward: true,
            changed: true
        }
    );
    assert!(idx.mutation_version() > before);
    assert!(idx.tagged("old").is_empty());
    assert_eq!(idx.tagged("new"), &[node]);
    assert_eq!(idx.tagged("keep"), &[node]);
    assert_eq!(idx.get(node).expect("present").expires_at, T0 + 302);
    assert_eq!(
        idx.handle_announcement(T0 + 3, ann(&a, 12, T0 + 3, caps(&["new", "keep"])), None)
            .expect("ok"),
        Outcome::Replaced {
            forward: true,
            changed: false
        }
    );
    // Gaining and losing a GPU moves the node in and out of GPU queries.
    let gpu = CapabilitySet::new().with_hardware(Hardware::new(4, 8).with_gpu(GpuInfo::new(
        GpuVendor::Amd,
        "MI300",
        192,
    )));
    idx.handle_announcement(T0 + 4, ann(&a, 13, T0 + 4, gpu), None)
        .expect("ok");
    assert_eq!(idx.find(&CapabilityFilter::new().require_gpu()), vec![node]);
    idx.handle_announcement(T0 + 5, ann(&a, 14, T0 + 5, caps(&[])), None)
        .expect("ok");
    assert!(idx.find(&CapabilityFilter::new().require_gpu()).is_empty());
    let c = idx.counters();
    assert_eq!(
        (c.accepted, c.replaced, c.duplicates, c.stale),
        (5, 4, 1, 1)
    );
}

#[test]
fn entries_expire_by_ttl() {
    let mut idx = index();
    let a = id(1);
    let b = id(2);
    idx.handle_announcement(T0, ann(&a, 1, T0, caps(&["t"])), None)
        .expect("ok");
    idx.handle_announcement(T0 + 100, ann(&b, 1, T0 + 100, caps(&["t"])), None)
        .expect("ok");
    assert_eq!(idx.poll_timeout(), Some(T0 + 300));
    assert!(idx.handle_timeout(T0 + 299).is_empty());
    assert_eq!(idx.handle_timeout(T0 + 300), vec![a.node_id()]);
    assert_eq!(idx.tagged("t"), &[b.node_id()]);
    assert_eq!(idx.poll_timeout(), Some(T0 + 400));
    assert_eq!(idx.handle_timeout(T0 + 1000), vec![b.node_id()]);
    assert_eq!(idx.poll_timeout(), None);
    assert!(idx.tagged("t").is_empty() && idx.nodes().is_empty());
    assert_eq!(idx.counters().expired, 2);
    // Pins outlive entries.
    assert_eq!(idx.pinned_key(a.node_id()), Some(a.entity_id()));
}

#[test]
fn freshness_hops_and_size_are_checked() {
    let mut idx = index();
    let a = id(1);
    assert!(matches!(
        idx.handle_announcement(T0 + 300, ann(&a, 1, T0, caps(&[])), None),
        Err(IndexError::Expired)
    ));
    assert!(matches!(
        idx.handle_announcement(T0, ann(&a, 1, T0 + 301, caps(&[])), None),
        Err(IndexError::FromFuture { .. })
    ));
    // Within the skew: accepted, but it expires a TTL after *our* clock, not later.
    idx.handle_announcement(T0, ann(&a, 1, T0 + 200, caps(&[])), None)
        .expect("within skew");
    assert_eq!(idx.get(a.node_id()).expect("present").expires_at, T0 + 300);

    let mut far = ann(&id(2), 1, T0, caps(&[]));
    far.hop_count = 16;
    assert!(matches!(
        idx.handle_announcement(T0, far.clone(), None),
        Err(IndexError::TooManyHops(16))
    ));
    far.hop_count = 15;
    assert_eq!(
        idx.handle_announcement(T0, far, None).expect("ok"),
        Outcome::Inserted { forward: false }
    );

    let bytes = ann(&id(3), 1, T0, caps(&["a"]))
        .to_bytes()
        .expect("encodes");
    let mut bad = bytes.clone();
    bad[0] = 7;
    assert!(matches!(
        idx.handle_announcement(T0, &bad, None),
        Err(IndexError::UnknownVersion(7))
    ));
    assert!(matches!(
        idx.handle_announcement(T0, &bytes[..bytes.len() - 1], None),
        Err(IndexError::Malformed(_))
    ));
    let mut small = CapabilityIndex::new(
        NodeId(0),
        IndexConfig {
            max_announcement_len: 150,
            ..IndexConfig::default()
        },
    )
    .expect("valid");
    let mut big = CapabilitySet::new();
    for i in 0..10 {
        big.tags.insert(format!("tag-{i}"));
    }
    let big = ann(&id(4), 1, T0, big);
    assert!(matches!(
        small.handle_announcement(T0, &big.to_bytes().expect("encodes"), None),
        Err(IndexError::Oversize { max: 150, .. })
    ));
    assert!(matches!(
        small.handle_announcement(T0, big, None),
        Err(IndexError::Oversize { .. })
    ));
    let r = idx.counters().rejected;
    assert_eq!(
        (
            r.expired,
            r.from_future,
            r.too_many_hops,
            r.unknown_version,
            r.malformed
        ),
        (1, 1, 1, 1, 1)
    );
    assert_eq!(small.counters().rejected.oversize, 2);
}

#[test]
fn ttl_is_capped() {
    let mut idx = CapabilityIndex::new(
        NodeId(0),
        IndexConfig {
            max_ttl_secs: 60,
            ..IndexConfig::default()
        },
    )
    .expect("valid");
    let a = id(1);
    let long = CapabilityAnnouncement::sign(&a, 1, T0, u32::MAX, caps(&[])).expect("signs");
    idx.handle_announcement(T0, long, None).expect("ok");
    assert_eq!(idx.get(a.node_id()).expect("present").expires_at, T0 + 60);
}

#[test]
fn node_count_is_bounded_but_the_local_node_always_fits() {
    let local = id(100);
    let mut idx = CapabilityIndex::new(
        local.node_id(),
        IndexConfig {
            max_nodes: 3,
            max_pins: 4,
            ..IndexConfig::default()
        },
    )
    .expect("valid");
    for n in 1..=3 {
        idx.handle_announcement(T0, ann(&id(n), 1, T0, caps(&[])), None)
            .expect("room");
    }
    assert!(matches!(
        idx.handle_announcement(T0, ann(&id(4), 1, T0, caps(&[])), None),
        Err(IndexError::Full(3))
    ));
    assert_eq!(idx.counters().rejected.full, 1);
    // Known nodes still update.
    idx.handle_announcement(T0, ann(&id(1), 2, T0, caps(&["x"])), None)
        .expect("update");
    idx.handle_announcement(T0, ann(&local, 1, T0, caps(&[])), None)
        .expect("local admitted");
    assert_eq!(idx.len(), 4);

    // Pins are bounded too: after node 2 leaves, a new node's pin evicts node 2's, the
    // oldest that is not indexed.
    assert!(idx.remove(id(2).node_id()).is_some());
    assert_eq!(idx.counters().removed, 1);
    idx.handle_announcement(T0 + 1, ann(&id(5), 1, T0 + 1, caps(&[])), None)
        .expect("room again");
    assert_eq!(idx.pinned_key(id(2).node_id()), None);
    for n in [1, 3, 5, 100] {
        assert_eq!(idx.pinned_key(id(n).node_id()), Some(id(n).entity_id()));
    }
}

#[test]
fn tag_filter_and_hardware_queries() {
    let mut idx = index();
    let mk = |n: u16, tags: &[&str], hw: Hardware| {
        let mut set = caps(tags);
        set.hardware = hw;
        ann(&id(n), 1, T0, set)
    };
    let nv = |vram| GpuInfo::new(GpuVendor::Nvidia, "x", vram);
    let anns = [
        mk(
            1,
            &["a", "b"],
            Hardware::new(8, 16).with_memory_gb(64).with_gpu(nv(24)),
        ),
        mk(
            2,
            &["a"],
            Hardware::new(4, 8).with_memory_gb(16).with_gpu(nv(8)),
        ),
        mk(3, &["a", "b"], Hardware::new(32, 64).with_memory_gb(256)),
        mk(
            4,
            &["b"],
            Hardware::new(2, 2).with_gpu(GpuInfo::new(GpuVendor::Apple, "m", 32)),
        ),
    ];
    for a in &anns {
        idx.handle_announcement(T0, a.clone(), None).expect("ok");
    }
    let n = |k: u16| id(k).node_id();
    let sorted = |mut v: Vec<NodeId>| {
        v.sort();
        v
    };
    let f = CapabilityFilter::new;
    assert_eq!(
        idx.find(&f().require_tag("a")),
        sorted(vec![n(1), n(2), n(3)])
    );
    assert_eq!(
        idx.find(&f().require_tag("a").require_tag("b")),
        sorted(vec![n(1), n(3)])
    );
    assert_eq!(
        idx.find(&f().require_tag("a").require_gpu()),
        sorted(vec![n(1), n(2)])
    );
    assert_eq!(
        idx.find(&f().require_tag("b").min_vram_gb(16)),
        sorted(vec![n(1), n(4)])
    );
    assert_eq!(idx.find(&f().gpu_vendor(GpuVendor::Apple)), vec![n(4)]);
    assert_eq!(idx.find(&f().min_memory_gb(64)), sorted(vec![n(1), n(3)]));
    assert_eq!(idx.find(&f().min_cpu_cores(16)), vec![n(3)]);
    assert!(
        idx.find(&f().require_tag("a").require_tag("zzz"))
            .is_empty()
    );
}

#[test]
fn set_at_the_tag_limit_indexes_every_tag() {
    let mut idx = index();
    let mut set = CapabilitySet::new();
    for i in 0..MAX_TAGS {
        set.tags.insert(format!("t{i:03}"));
    }
    idx.handle_announcement(T0, ann(&id(1), 1, T0, set), None)
        .expect("ok");
    assert_eq!(idx.tagged("t255"), &[id(1).node_id()]);
    idx.handle_timeout(T0 + 300);
    assert!(idx.tagged("t000").is_empty());
}

// -----------------------------------------------------------------------------------
// Queries agree with a brute-force scan after any sequence of updates.

const TAG_POOL: &[&str] = &["gpu-pool", "nrpc:echo", "zone:eu", "zone:us", "ml", "edge"];

fn vendor() -> impl Strategy<Value = GpuVendor> {
    prop_oneof![
        Just(GpuVendor::Nvidia),
        Just(GpuVendor::Amd),
        Just(GpuVendor::Apple)
    ]
}

prop_compose! {
    fn small_set()(
        tags in proptest::sample::subsequence(TAG_POOL, 0..=TAG_POOL.len()),
        cores in 0u32..64, memory in 0u32..512,
        gpu in proptest::option::of((vendor(), 0u32..80)),
    ) -> CapabilitySet {
        let mut set = caps(&tags);
        set.hardware = Hardware {
            cpu_cores: cores,
            cpu_threads: cores * 2,
            memory_gb: memory,
            gpu: gpu.map(|(v, vram)| GpuInfo::new(v, "g", vram)),
        };
        set
    }
}

prop_compose! {
    fn filter()(
        tags in proptest::sample::subsequence(TAG_POOL, 0..3),
        require_gpu: bool,
        vendor in proptest::option::of(vendor()),
        min_memory in prop_oneof![Just(0u32), 0u32..512],
        min_vram in prop_oneof![Just(0u32), 0u32..80],
        min_cores in prop_oneof![Just(0u32), 0u32..64],
    ) -> CapabilityFilter {
        CapabilityFilter {
            require_tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            require_gpu,
            gpu_vendor: vendor,
            min_memory_gb: min_memory,
            min_vram_gb: min_vram,
            min_cpu_cores: min_cores,
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Announce { node: u16, set: CapabilitySet },
    Remove(u16),
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u16..24, small_set()).prop_map(|(node, set)| Op::Announce { node, set }),
        1 => (0u16..24).prop_map(Op::Remove),
        1 => (1u64..200).prop_map(Op::Advance),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn queries_match_brute_force(
        ops in proptest::collection::vec(op(), 1..60),
        filters in proptest::collection::vec(filter(), 1..12),
    ) {
        let mut idx = index();
        let mut now = T0;
        let mut versions = [0u64; 24];
        for op in ops {
            match op {
                Op::Announce { node, set } => {
                    versions[node as usize] += 1;
                    let a = ann(&id(node), versions[node as usize], now, set);
                    idx.handle_announcement(now, a, None).expect("valid announcement");
                }
                Op::Remove(node) => {
                    idx.remove(id(node).node_id());
                }
                Op::Advance(secs) => {
                    now += secs;
                    idx.handle_timeout(now);
                }
            }
        }
        let mut all: Vec<NodeId> = (0..24u16).map(|n| id(n).node_id())
            .filter(|n| idx.get(*n).is_some()).collect();
        all.sort();
        prop_assert_eq!(idx.nodes(), &all[..]);
        for f in &filters {
            let want: Vec<NodeId> = all.iter().copied()
                .filter(|n| f.matches(&idx.get(*n).expect("present").announcement.capabilities))
                .collect();
            prop_assert_eq!(idx.find(f), want, "filter {:?}", f);
        }
        for tag in TAG_POOL {
            let want: Vec<NodeId> = all.iter().copied()
                .filter(|n| idx.get(*n).expect("present").announcement.capabilities.has_tag(tag))
                .collect();
            prop_assert_eq!(idx.tagged(tag), &want[..]);
        }
        prop_assert_eq!(idx.find_service("echo"), idx.tagged("nrpc:echo").to_vec());
    }
}
