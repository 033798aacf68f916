//! Capability announcements between real nodes on 127.0.0.1: forged announcements are
//! refused and counted, re-announcement keeps a long-lived node in its peers' index past
//! the TTL, and GPU / service queries see the whole (three-node) mesh.

use std::time::Duration;

use netrun::{
    CapabilityAnnouncement, CapabilityFilter, CapabilitySet, GpuInfo, GpuVendor, Hardware,
    Identity, NodeId, Subprotocol,
};
use netrun_tests::{connect, eventually, node_announcing, unix_now};
use tokio::time::{Instant, sleep};

fn gpu(vendor: GpuVendor, vram: u32) -> CapabilitySet {
    CapabilitySet::new().with_hardware(
        Hardware::new(16, 32)
            .with_memory_gb(64)
            .with_gpu(GpuInfo::new(vendor, "test gpu", vram)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_announcements_are_refused_and_counted() {
    let a = node_announcing(CapabilitySet::new()).await;
    let b = node_announcing(CapabilitySet::new()).await;
    connect(&a, &b).await;
    eventually("b indexes a", || b.capability_of(a.node_id()).is_some()).await;

    // Signed by a key whose node id is not the one claimed: once claiming a node that
    // does not exist, once claiming the sending peer itself.
    let forger = Identity::generate();
    let victim = NodeId(0x0bad_c0de);
    for claimed in [victim, a.node_id()] {
        let mut forged = CapabilityAnnouncement::sign(
            &forger,
            u64::MAX / 2,
            unix_now(),
            300,
            CapabilitySet::new().with_tag("nrpc:stolen"),
        )
        .expect("signs");
        forged.node_id = claimed;
        let bytes = forged.to_bytes().expect("encodes");
        a.send_raw_envelope(b.node_id(), Subprotocol::CAPABILITY, &bytes)
            .await
            .expect("sent through the session");
    }
    eventually("both forgeries counted", || {
        b.capability_status().index.rejected.node_id_mismatch == 2
    })
    .await;
    assert!(b.capability_of(victim).is_none());
    assert!(b.find_service_nodes("stolen").is_empty());
    // a's own entry is untouched: still its key, its (empty) capabilities.
    let entry = b.capability_entry(a.node_id()).expect("a still indexed");
    assert_eq!(entry.announcement.entity_id, a.public_key());
    assert!(!entry.announcement.capabilities.has_tag("nrpc:stolen"));

    // Garbage is refused and counted too, never a panic.
    a.send_raw_envelope(b.node_id(), Subprotocol::CAPABILITY, &[1, 2, 3])
        .await
        .expect("sent");
    eventually("malformed counted", || {
        b.capability_status().index.rejected.malformed >= 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_alive_past_the_ttl_stays_in_its_peers_index() {
    let a = node_announcing(CapabilitySet::new().with_tag("role:long-lived")).await;
    let b = node_announcing(CapabilitySet::new()).await;
    connect(&a, &b).await;
    eventually("b indexes a", || b.capability_of(a.node_id()).is_some()).await;
    let first = b
        .capability_entry(a.node_id())
        .expect("indexed")
        .announcement
        .version;

    // Three TTLs (12 s): every 100 ms the entry is there, on both sides.
    let end = Instant::now() + Duration::from_secs(12);
    while Instant::now() < end {
        assert!(
            b.capability_of(a.node_id()).is_some(),
            "a expired from b's index"
        );
        assert!(
            a.capability_of(a.node_id()).is_some(),
            "a expired from its own index"
        );
        sleep(Duration::from_millis(100)).await;
    }
    let last = b
        .capability_entry(a.node_id())
        .expect("indexed")
        .announcement
        .version;
    assert!(last > first, "a re-announced ({first} → {last})");
    assert_eq!(
        b.find_nodes(&CapabilityFilter::new().require_tag("role:long-lived")),
        vec![a.node_id()]
    );
    assert_eq!(b.capability_status().index.expired, 0);

    // Once a stops, b drops it within one TTL (plus a second of timer granularity).
    a.shutdown().await;
    let deadline = Instant::now() + Duration::from_secs(8);
    while b.capability_of(a.node_id()).is_some() {
        assert!(Instant::now() < deadline, "a never expired");
        sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpu_and_service_queries_across_three_nodes() {
    let plain =
        node_announcing(CapabilitySet::new().with_hardware(Hardware::new(4, 8).with_memory_gb(16)))
            .await;
    let nvidia = node_announcing(gpu(GpuVendor::Nvidia, 24)).await;
    let amd = node_announcing(gpu(GpuVendor::Amd, 16)).await;
    // A star: nvidia and amd only learn of each other through `plain`.
    connect(&nvidia, &plain).await;
    connect(&amd, &plain).await;

    let mut gpus = vec![nvidia.node_id(), amd.node_id()];
    gpus.sort();
    let require_gpu = CapabilityFilter::new().require_gpu();
    for node in [&plain, &nvidia, &amd] {
        eventually("every node sees both GPU nodes", || {
            node.find_nodes(&require_gpu) == gpus
        })
        .await;
        assert_eq!(
            node.find_nodes(&CapabilityFilter::new().gpu_vendor(GpuVendor::Nvidia)),
            vec![nvidia.node_id()]
        );
        assert_eq!(
            node.find_nodes(&CapabilityFilter::new().min_vram_gb(20)),
            vec![nvidia.node_id()]
        );
        assert_eq!(
            node.find_nodes(&CapabilityFilter::new().min_memory_gb(32)),
            gpus
        );
    }
    // The forwarded copies name the forwarder as `via`, never as the signer.
    let entry = amd.capability_entry(nvidia.node_id()).expect("indexed");
    assert_eq!(entry.via, Some(plain.node_id()));
    assert_eq!(entry.announcement.entity_id, nvidia.public_key());

    // A service appears everywhere within the minimum interval, and disappears again.
    let handle = amd.capability_handle();
    assert!(handle.add_service("render").expect("valid"));
    for node in [&plain, &nvidia, &amd] {
        eventually("render advertised", || {
            node.find_service_nodes("render") == vec![amd.node_id()]
        })
        .await;
    }
    assert!(handle.remove_service("render").expect("valid"));
    for node in [&plain, &nvidia] {
        eventually("render withdrawn", || {
            node.find_service_nodes("render").is_empty()
        })
        .await;
    }
    // Capabilities set later replace the announced ones.
    plain
        .set_capabilities(gpu(GpuVendor::Intel, 8))
        .expect("valid");
    eventually("plain now has a GPU", || {
        nvidia.find_nodes(&require_gpu).len() == 3
    })
    .await;
}

/// Serving a service announces `nrpc:<service>`; peers find the server in their index and
/// `call_service` reaches it; dropping the serve handle withdraws the tag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_services_are_announced_and_found_through_the_index() {
    let caller = node_announcing(CapabilitySet::new()).await;
    let server = node_announcing(CapabilitySet::new()).await;
    let bystander = node_announcing(CapabilitySet::new()).await;
    connect(&caller, &server).await;
    connect(&caller, &bystander).await;
    let handle = server
        .serve("lookup", |_request| async {
            Ok::<_, netrun::rpc::HandlerError>(netrun::Bytes::from_static(b"from the server"))
        })
        .expect("serve");
    let id = server.node_id();
    eventually("the caller's index lists the server", || {
        caller.find_service_nodes("lookup") == vec![id]
    })
    .await;
    for _ in 0..5 {
        let answer = caller
            .call_service("lookup", &b"q"[..], &netrun::rpc::CallOptions::default())
            .await
            .expect("the indexed server answers");
        assert_eq!(&answer[..], b"from the server");
    }
    drop(handle);
    eventually("the tag is withdrawn", || {
        caller.find_service_nodes("lookup").is_empty()
    })
    .await;
}
