//! Daemons on nRPC and wiring: a hosted daemon answers a service (and a panic answers
//! `internal` without losing the daemon), a placed daemon is served and fed where it lands,
//! only its placer can stop it remotely, a node's remote-spawn policy is honoured, and nodes
//! announce their daemon load.

use std::time::Duration;

use netrun::daemons::{
    CausalEvent, ChannelInput, DaemonCallError, DaemonConfig, DaemonError, DaemonOptions,
    DaemonReply, DaemonSpawnError, DaemonWiring, LOAD_METADATA_KEY, MeshDaemon, RemoteError,
    RemoteSpawns, ServedService, SpawnRefusal, StopResult, factory,
};
use netrun::rpc::{CallOptions, RetryPolicy, RpcError, ServiceName, Status};
use netrun::{
    Bytes, CapabilitySet, ChannelConfig, ChannelName, GpuInfo, GpuVendor, Hardware, Identity, Node,
};
use netrun_tests::{
    WAIT, builder, connect, decode_u64s, encode_u64s, eventually, eventually_async,
    node_announcing, start,
};

/// Adds the u64 (LE) in each input to a sum; answers `[sum, count]` (8 bytes LE each).
/// Panics on the input `boom`. Keeps its state in snapshots.
#[derive(Default)]
struct Adder {
    sum: u64,
    count: u64,
}

impl MeshDaemon for Adder {
    fn name(&self) -> &str {
        "adder"
    }

    fn process(&mut self, event: &CausalEvent) -> Result<Vec<Bytes>, DaemonError> {
        if &event.payload[..] == b"boom" {
            panic!("boom");
        }
        let n: [u8; 8] = event.payload[..]
            .try_into()
            .map_err(|_| DaemonError::InvalidState("want 8 bytes".into()))?;
        self.sum += u64::from_le_bytes(n);
        self.count += 1;
        Ok(vec![le(self.sum), le(self.count)])
    }

    fn snapshot(&self) -> Option<Bytes> {
        Some(encode_u64s(&[self.sum, self.count]))
    }

    fn restore(&mut self, state: Bytes) -> Result<(), DaemonError> {
        [self.sum, self.count] = decode_u64s(&state)?;
        Ok(())
    }
}

fn le(n: u64) -> Bytes {
    Bytes::copy_from_slice(&n.to_le_bytes())
}

fn num(bytes: &[u8]) -> u64 {
    u64::from_le_bytes(bytes.try_into().expect("8 bytes"))
}

/// A node that hosts the `adder` kind, and a peer that opened a session to it; both
/// announce their capabilities quickly.
async fn adder_host_and_peer() -> (Node, Node) {
    let peer = node_announcing(CapabilitySet::new()).await;
    let host = node_announcing(CapabilitySet::new()).await;
    connect(&peer, &host).await;
    host.register_daemon_kind("adder", factory(|_| Ok(Box::<Adder>::default())))
        .expect("register");
    (host, peer)
}

fn no_retry() -> CallOptions {
    CallOptions {
        retry: Some(RetryPolicy::never()),
        deadline: Some(Duration::from_secs(5)),
        ..CallOptions::default()
    }
}

/// Why a remote stop did not happen, if that is how `result` failed.
fn stop_refusal<T>(result: &Result<T, DaemonCallError>) -> Option<StopResult> {
    match result {
        Err(DaemonCallError::Remote(RemoteError::NotStopped { result, .. })) => Some(*result),
        _ => None,
    }
}

fn service(name: &str, reply: DaemonReply) -> ServedService {
    ServedService {
        name: ServiceName::new(name).expect("service name"),
        reply,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hosted_daemon_answers_nrpc_and_a_panic_answers_internal() {
    let (host, caller) = adder_host_and_peer().await;
    let daemon = host
        .spawn_daemon("adder", Identity::generate(), DaemonConfig::empty())
        .await
        .expect("spawn");
    let origin = daemon.origin_hash();
    host.serve_daemon(origin, "adder.add", DaemonReply::Last)
        .expect("serve last");
    host.serve_daemon(origin, "adder.all", DaemonReply::All)
        .expect("serve all");
    assert!(matches!(
        host.serve_daemon(origin, "adder.add", DaemonReply::Last),
        Err(DaemonCallError::Serve(_))
    ));

    // Replacing the application's capabilities keeps the served services announced.
    eventually("the service is announced", || {
        host.capabilities().has_tag("nrpc:adder.add")
    })
    .await;
    host.set_capabilities(CapabilitySet::new().with_tag("role:adder"))
        .expect("set");
    let announced = host.capabilities();
    assert!(announced.has_tag("role:adder") && announced.has_tag("nrpc:adder.add"));

    // Found through the capability index, like any other service.
    eventually("the caller indexes adder.add", || {
        caller.find_service_nodes("adder.add") == vec![host.node_id()]
            && caller
                .capability_of(host.node_id())
                .is_some_and(|c| c.has_tag("role:adder"))
    })
    .await;
    let count = caller
        .call_service("adder.add", le(5), &no_retry())
        .await
        .expect("served");
    assert_eq!(num(&count), 1, "Last answers with the count");
    let all = caller
        .call(host.node_id(), "adder.all", le(7), &no_retry())
        .await
        .expect("served");
    let outputs: Vec<Bytes> = rmp_serde::from_slice(&all).expect("an array of outputs");
    assert_eq!(
        outputs.iter().map(|o| num(o)).collect::<Vec<_>>(),
        [12, 2],
        "All answers with every output"
    );

    // A panic in `process` answers `internal`; the daemon restarts from its snapshot and
    // the replay, without the failed input, and keeps serving.
    let boom = caller
        .call(host.node_id(), "adder.add", &b"boom"[..], &no_retry())
        .await;
    assert!(
        matches!(boom, Err(RpcError::ServerError { status, .. }) if status == Status::INTERNAL),
        "{boom:?}"
    );
    let mut after = None;
    for _ in 0..200 {
        match caller
            .call(host.node_id(), "adder.all", le(1), &no_retry())
            .await
        {
            Ok(body) => {
                after = Some(body);
                break;
            }
            // Restarting: the input was not accepted.
            Err(RpcError::ServerError { status, .. }) if status == Status::UNAVAILABLE => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(other) => panic!("unexpected error after the restart: {other}"),
        }
    }
    let outputs: Vec<Bytes> =
        rmp_serde::from_slice(&after.expect("served again")).expect("outputs");
    assert_eq!(
        outputs.iter().map(|o| num(o)).collect::<Vec<_>>(),
        [13, 3],
        "nothing lost, the failed input not counted"
    );
    assert_eq!(daemon.restarts(), 1);

    // Stopping the daemon withdraws its services.
    daemon.stop().await.expect("stop");
    let gone = ServiceName::new("adder.add").expect("name");
    eventually("the services are withdrawn", || {
        !host.rpc_services().contains(&gone)
    })
    .await;
    caller.shutdown().await;
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_placed_daemon_is_wired_where_it_lands_and_only_its_placer_stops_it() {
    let gpu = CapabilitySet::new()
        .with_tag("gpu")
        .with_hardware(Hardware::new(8, 32).with_gpu(GpuInfo::new(GpuVendor::Nvidia, "l4", 24)));
    let placer = node_announcing(CapabilitySet::new()).await;
    let gpu_node = node_announcing(gpu).await;
    let other = node_announcing(CapabilitySet::new()).await;
    connect(&placer, &gpu_node).await;
    connect(&other, &gpu_node).await;
    for node in [&placer, &gpu_node] {
        register_gpu_adder(node);
    }
    let frames = ChannelName::new("frames").expect("name");
    gpu_node
        .register_channel(ChannelConfig::new(frames.clone()))
        .await
        .expect("register frames");
    // Placement reads the capability index.
    eventually("the placer indexes the gpu node", || {
        placer
            .capability_of(gpu_node.node_id())
            .is_some_and(|c| c.has_tag("gpu"))
    })
    .await;

    let identity = Identity::generate();
    let options = DaemonOptions {
        wiring: DaemonWiring {
            services: vec![service("gpu.add", DaemonReply::Last)],
            inputs: vec![ChannelInput {
                publisher: gpu_node.node_id(),
                channel: frames.clone(),
            }],
        },
        ..DaemonOptions::default()
    };
    let placed = placer
        .spawn_daemon_placed_with(
            "gpu-adder",
            identity.clone(),
            DaemonConfig::empty(),
            options,
        )
        .await
        .expect("placed");
    assert_eq!(placed.node, gpu_node.node_id());
    let hosted = gpu_node
        .daemon(identity.origin_hash())
        .expect("hosted on the gpu node");

    // Its channel input: events published on the gpu node's `frames` become inputs.
    let mut published = 0;
    for _ in 0..500 {
        if published == 2 {
            break;
        }
        let report = gpu_node.publish(&frames, le(10)).await;
        if report.is_ok_and(|r| r.delivered == 1) {
            published += 1;
        } else {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    assert_eq!(published, 2, "the daemon subscribed to frames");
    eventually_async(WAIT, "the daemon to process both frames", || async {
        hosted.status().await.expect("status").events_processed == 2
    })
    .await;

    // Its service, from the node that placed it, found through the index.
    eventually("the placer indexes gpu.add", || {
        placer.find_service_nodes("gpu.add") == vec![gpu_node.node_id()]
    })
    .await;
    let count = placer
        .call_service("gpu.add", le(1), &no_retry())
        .await
        .expect("served where it landed");
    assert_eq!(num(&count), 3);

    // Only the placer may stop it remotely.
    let refused = other
        .stop_daemon_on(gpu_node.node_id(), identity.origin_hash())
        .await;
    assert_eq!(
        stop_refusal(&refused),
        Some(StopResult::NotPermitted),
        "{refused:?}"
    );
    assert_eq!(gpu_node.daemons().await.len(), 1);
    placer
        .stop_daemon_on(gpu_node.node_id(), identity.origin_hash())
        .await
        .expect("the placer stops it");
    assert!(gpu_node.daemons().await.is_empty());
    let gone = ServiceName::new("gpu.add").expect("name");
    eventually("its service is withdrawn", || {
        !gpu_node.rpc_services().contains(&gone)
    })
    .await;
    let again = placer
        .stop_daemon_on(gpu_node.node_id(), identity.origin_hash())
        .await;
    assert_eq!(
        stop_refusal(&again),
        Some(StopResult::NotFound),
        "{again:?}"
    );
    for node in [placer, gpu_node, other] {
        node.shutdown().await;
    }
}

/// [`Adder`] that needs a GPU.
#[derive(Default)]
struct Needs {
    inner: Adder,
}

impl MeshDaemon for Needs {
    fn name(&self) -> &str {
        "gpu-adder"
    }

    fn requirements(&self) -> netrun::CapabilityFilter {
        netrun::CapabilityFilter::new().require_gpu()
    }

    fn process(&mut self, event: &CausalEvent) -> Result<Vec<Bytes>, DaemonError> {
        self.inner.process(event)
    }
}

/// Registers the kind `gpu-adder`, a fresh [`Needs`] per incarnation, on `node`.
fn register_gpu_adder(node: &Node) {
    node.register_daemon_kind("gpu-adder", factory(|_| Ok(Box::<Needs>::default())))
        .expect("register");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_announces_its_daemon_load() {
    let (host, watcher) = adder_host_and_peer().await;
    let mut daemons = Vec::new();
    for _ in 0..3 {
        daemons.push(
            host.spawn_daemon("adder", Identity::generate(), DaemonConfig::empty())
                .await
                .expect("spawn"),
        );
    }
    // 3 of 1,024 slots: 2 per mille.
    let load = |node: &Node| {
        node.capability_of(host.node_id())
            .and_then(|c| c.metadata.get(LOAD_METADATA_KEY).cloned())
    };
    eventually("the load is announced", || {
        load(&watcher).as_deref() == Some("2")
    })
    .await;
    for daemon in daemons {
        daemon.stop().await.expect("stop");
    }
    eventually("the load drops", || load(&watcher).as_deref() == Some("0")).await;
    watcher.shutdown().await;
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_refuses_remote_spawns_is_skipped() {
    let gpu = || {
        CapabilitySet::new().with_hardware(Hardware::new(8, 32).with_gpu(GpuInfo::new(
            GpuVendor::Amd,
            "w7900",
            48,
        )))
    };
    let placer = node_announcing(CapabilitySet::new()).await;
    let closed = start(
        builder()
            .capabilities(gpu())
            .remote_spawns(RemoteSpawns::Nobody),
    )
    .await;
    connect(&placer, &closed).await;
    for node in [&placer, &closed] {
        register_gpu_adder(node);
    }
    let refused = placer
        .spawn_daemon_placed("gpu-adder", Identity::generate(), DaemonConfig::empty())
        .await;
    assert!(
        matches!(
            refused,
            Err(DaemonSpawnError::Remote(RemoteError::Refused {
                refusal: SpawnRefusal::NotPermitted,
                ..
            }))
        ),
        "{refused:?}"
    );
    assert!(closed.daemons().await.is_empty());

    // A second GPU node that accepts this placer: the closed one is skipped.
    let open = start(
        builder()
            .capabilities(gpu())
            .remote_spawns(RemoteSpawns::Only([placer.node_id()].into_iter().collect())),
    )
    .await;
    connect(&placer, &open).await;
    register_gpu_adder(&open);
    let placed = placer
        .spawn_daemon_placed("gpu-adder", Identity::generate(), DaemonConfig::empty())
        .await
        .expect("placed on the open node");
    assert_eq!(placed.node, open.node_id());
    for node in [placer, closed, open] {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemons_output_channel_lives_and_ends_with_it() {
    let host = node_announcing(CapabilitySet::new()).await;
    host.register_daemon_kind("adder", factory(|_| Ok(Box::<Adder>::default())))
        .expect("register");
    let daemon = host
        .spawn_daemon("adder", Identity::generate(), DaemonConfig::empty())
        .await
        .expect("spawn");
    // Registered at spawn, so it can be read before the first output.
    let channel = daemon.output_channel();
    assert!(host.channels().iter().any(|c| c.name == channel));
    let mut reader = host.read_channel(&channel).expect("read locally");
    daemon.deliver(le(4)).await.expect("deliver");
    daemon.stop().await.expect("stop");
    // The outputs sealed by the stop come first; then the channel is unregistered and the
    // reader ends.
    let mut verifier = netrun::ChainVerifier::new(daemon.entity());
    let mut payloads = Vec::new();
    while let Ok(Some(bytes)) = tokio::time::timeout(Duration::from_secs(10), reader.recv()).await {
        let output = netrun::Output::from_bytes(&bytes).expect("an output");
        verifier.verify(&output).expect("verifies");
        payloads.extend(output.events().iter().map(|e| num(&e.payload)));
    }
    assert_eq!(
        payloads,
        [4, 1],
        "sum and count, then the end of the channel"
    );
    assert!(!host.channels().iter().any(|c| c.name == channel));
    assert!(host.read_channel(&channel).is_err());
    host.shutdown().await;
}
