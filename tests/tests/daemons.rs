//! Daemons hosted by real nodes: restarts without loss or repeats, the crash-loop gate,
//! chains that verify across restarts, forged outputs, placement by capability, stop with
//! grace, snapshots that move, and traces of spawn, processing and restarts.

#[path = "../otlp/support.rs"]
mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use netrun::daemons::{
    CausalEvent, ChainError, ChainHead, ChainVerifier, DaemonCallError, DaemonConfig,
    DaemonControl, DaemonError, DaemonHandle, DaemonOptions, DaemonSpawnError, DaemonState,
    DeliverError, HostConfig, MeshDaemon, Output, RemoteError, SignedBatch, SpawnRefusal,
    VerifyError, factory,
};
use netrun::{
    Bytes, CapabilityFilter, CapabilitySet, GpuInfo, GpuVendor, Hardware, Identity, Node,
};
use netrun_tests::{eventually_async, node};
use tokio::sync::broadcast;

const WAIT: Duration = Duration::from_secs(10);

/// Counts the events it sees and refuses to see one twice: it keeps the last input seq of
/// the (single) producer chain it is fed, and flags any seq at or below it. Panics on the
/// payload `boom`. Its outputs are `count` as 8 bytes LE.
#[derive(Default)]
struct Strict {
    count: u64,
    last_seq: u64,
    repeats: u64,
}

impl MeshDaemon for Strict {
    fn name(&self) -> &str {
        "strict"
    }

    fn process(&mut self, event: &CausalEvent) -> Result<Vec<Bytes>, DaemonError> {
        if &event.payload[..] == b"boom" {
            panic!("boom");
        }
        if event.link.seq <= self.last_seq {
            self.repeats += 1;
        }
        self.last_seq = event.link.seq;
        self.count += 1;
        Ok(vec![Bytes::copy_from_slice(&self.count.to_le_bytes())])
    }

    fn snapshot(&self) -> Option<Bytes> {
        Some(netrun_tests::encode_u64s(&[
            self.count,
            self.last_seq,
            self.repeats,
        ]))
    }

    fn restore(&mut self, state: Bytes) -> Result<(), DaemonError> {
        [self.count, self.last_seq, self.repeats] = netrun_tests::decode_u64s(&state)?;
        Ok(())
    }
}

/// Registers the kind `strict`, a fresh [`Strict`] per incarnation, on `node`.
fn register_strict(node: &Node) {
    node.register_daemon_kind("strict", factory(|_| Ok(Box::<Strict>::default())))
        .expect("register");
}

fn strict_state(snapshot: &netrun::DaemonSnapshot) -> (u64, u64, u64) {
    let state = snapshot.state.as_ref().expect("strict has state");
    let [count, last_seq, repeats] = netrun_tests::decode_u64s(state).expect("three fields");
    (count, last_seq, repeats)
}

/// Options that snapshot every 4 events and seal batches after 1 ms.
fn small_options() -> DaemonOptions {
    let mut options = DaemonOptions::default();
    options.host.snapshot_every = 4;
    options.host.signing = netrun::daemons::ChainSigning::Batch {
        max_events: 8,
        max_bytes: 60 * 1024,
        max_delay: Duration::from_millis(1),
    };
    options
}

/// Waits until the daemon runs again after a crash (its restart count reached `restarts`).
async fn wait_restarted(handle: &DaemonHandle, restarts: u32) {
    eventually_async(WAIT, "the daemon to restart", || async {
        handle.restarts() >= restarts
            && handle.status().await.expect("status").state == DaemonState::Running
    })
    .await;
}

/// Receives outputs until `events` chain events have been verified.
async fn verify_until(
    outputs: &mut broadcast::Receiver<Arc<Output>>,
    verifier: &mut ChainVerifier,
    events: u64,
) -> Vec<CausalEvent> {
    let mut seen = Vec::new();
    while verifier.verified() < events {
        let output = tokio::time::timeout(WAIT, outputs.recv())
            .await
            .expect("outputs in time")
            .expect("output");
        verifier.verify(&output).expect("every output verifies");
        seen.extend_from_slice(output.events());
    }
    seen
}

fn counts(events: &[CausalEvent]) -> Vec<u64> {
    events
        .iter()
        .map(|e| u64::from_le_bytes(e.payload[..8].try_into().expect("8 bytes")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_daemon_restarts_from_its_snapshot_without_losing_or_repeating_events() {
    let node = node().await;
    register_strict(&node);
    let identity = Identity::generate();
    let entity = identity.entity_id();
    let daemon = node
        .spawn_daemon_with("strict", identity, DaemonConfig::empty(), small_options())
        .await
        .expect("spawn");
    let origin = daemon.origin_hash();
    let mut outputs = daemon.outputs();
    let mut verifier = ChainVerifier::new(entity);

    // Ten events (two snapshots and two in the log), then a poison one.
    for i in 0..10u32 {
        daemon.deliver(format!("e{i}")).await.expect("processed");
    }
    let failed = daemon.deliver("boom").await;
    assert!(
        matches!(
            failed,
            Err(DaemonCallError::Deliver(DeliverError::Processing {
                restart: true,
                ..
            }))
        ),
        "{failed:?}"
    );
    wait_restarted(&daemon, 1).await;
    assert_eq!(
        daemon.origin_hash(),
        origin,
        "identity survives the restart"
    );
    for i in 10..15u32 {
        daemon.deliver(format!("e{i}")).await.expect("processed");
    }

    // Every accepted event produced exactly one output, in order, across the restart, and
    // the chain verifies end to end from genesis.
    let seen = verify_until(&mut outputs, &mut verifier, 15).await;
    assert_eq!(counts(&seen), (1..=15).collect::<Vec<_>>());
    assert_eq!(verifier.last().seq, 15);

    // The daemon's own view: 15 events, none seen twice.
    let snapshot = daemon.snapshot().await.expect("snapshot");
    let (count, last_seq, repeats) = strict_state(&snapshot);
    assert_eq!(count, 15);
    assert_eq!(repeats, 0, "no event processed twice");
    assert_eq!(
        last_seq, 16,
        "input seq 11 (boom) was skipped, not replayed"
    );
    let info = node.daemons().await;
    assert_eq!(info.len(), 1);
    assert_eq!(info[0].restarts, 1);
    assert_eq!(info[0].events_processed, 15);
    assert_eq!(info[0].origin, origin);
    assert!(
        info[0]
            .last_failure
            .as_deref()
            .is_some_and(|f| f.contains("boom"))
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_crash_loop_gate_engages_on_the_sixth_crash_within_a_minute() {
    let node = node().await;
    register_strict(&node);
    let daemon = node
        .spawn_daemon("strict", Identity::generate(), DaemonConfig::empty())
        .await
        .expect("spawn");
    daemon.deliver("fine").await.expect("processed");

    // Crash it over and over (backoff 0, 10, 20, 40, 80 ms): crashes one to five within the
    // window are restarted, the sixth gates restarts for 60 s.
    let deadline = Instant::now() + WAIT;
    for crash in 1..=6u32 {
        loop {
            assert!(Instant::now() < deadline, "stuck before crash {crash}");
            match daemon.deliver("boom").await {
                Err(DaemonCallError::Deliver(DeliverError::Processing { .. })) => break,
                Err(DaemonCallError::NotRunning) => {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        if crash == 5 {
            let restarted = async {
                loop {
                    let info = node.daemons().await;
                    if info[0].restarts == 5 {
                        return info[0].state;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            };
            let state = tokio::time::timeout(WAIT, restarted)
                .await
                .expect("restarted after the fifth crash");
            assert!(
                !matches!(state, DaemonState::CrashLoop { .. }),
                "not gated after five crashes: {state:?}"
            );
        }
    }
    let gated = async {
        loop {
            let info = node.daemons().await;
            if let DaemonState::CrashLoop { remaining } = info[0].state {
                return (info[0].clone(), remaining);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let (info, remaining) = tokio::time::timeout(WAIT, gated).await.expect("gated");
    assert!(remaining > Duration::from_secs(50), "{remaining:?}");
    assert_eq!(info.restarts, 5, "restarted after crashes one to five only");
    assert_eq!(info.events_processed, 1);
    assert!(matches!(
        daemon.deliver("fine").await,
        Err(DaemonCallError::NotRunning)
    ));
    // The gate is in the status tree too.
    let tree = node.tree().await.to_string();
    assert!(tree.contains("gated"), "{tree}");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verifying_subscriber_rejects_forged_outputs() {
    let node = node().await;
    register_strict(&node);
    let identity = Identity::generate();
    let daemon = node
        .spawn_daemon_with(
            "strict",
            identity.clone(),
            DaemonConfig::empty(),
            small_options(),
        )
        .await
        .expect("spawn");
    let mut outputs = daemon.outputs();
    daemon
        .deliver_many((0..3).map(|i| format!("e{i}")))
        .await
        .expect("delivered");
    let genuine = tokio::time::timeout(WAIT, outputs.recv())
        .await
        .expect("in time")
        .expect("output");
    let Output::Batch(batch) = genuine.as_ref() else {
        panic!("batch signing is the default");
    };

    // Signed by another key: the head's signature does not verify.
    let mallory = Identity::generate();
    let last = batch.events.last().expect("events").link;
    let wrong_key = Output::Batch(SignedBatch {
        events: batch.events.clone(),
        head: ChainHead::sign(&mallory, &last),
    });
    let mut verifier = ChainVerifier::new(identity.entity_id());
    assert_eq!(
        verifier.verify(&wrong_key),
        Err(VerifyError::Chain(ChainError::BadSignature))
    );

    // A broken parent link (re-signed by the daemon's own key, so only the link is wrong).
    let mut events = batch.events.clone();
    events[1].link.parent_hash[0] ^= 1;
    let relinked = events.last().expect("events").link;
    let broken = Output::Batch(SignedBatch {
        head: ChainHead::sign(&identity, &relinked),
        events,
    });
    assert!(matches!(
        verifier.verify(&broken),
        Err(VerifyError::Chain(ChainError::Fork(_)))
    ));

    // Nothing forged was accepted; the genuine output still verifies, and only once.
    assert_eq!(verifier.verified(), 0);
    verifier.verify(&genuine).expect("genuine verifies");
    assert!(matches!(
        verifier.verify(&genuine),
        Err(VerifyError::Stale { .. })
    ));
    node.shutdown().await;
}

/// Needs a GPU; outputs nothing.
struct GpuJob;

impl MeshDaemon for GpuJob {
    fn name(&self) -> &str {
        "gpu-job"
    }

    fn requirements(&self) -> CapabilityFilter {
        CapabilityFilter::new().require_gpu()
    }

    fn process(&mut self, _: &CausalEvent) -> Result<Vec<Bytes>, DaemonError> {
        Ok(vec![Bytes::from_static(b"rendered")])
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_that_needs_a_gpu_lands_on_the_gpu_node() {
    let gpu = CapabilitySet::new()
        .with_tag("gpu")
        .with_hardware(Hardware::new(16, 32).with_gpu(GpuInfo::new(GpuVendor::Nvidia, "l4", 24)));
    let plain = Node::builder()
        .psk(netrun_tests::TEST_PSK)
        .start()
        .await
        .expect("plain node");
    let gpu_node = Node::builder()
        .psk(netrun_tests::TEST_PSK)
        .capabilities(gpu)
        .start()
        .await
        .expect("gpu node");
    for node in [&plain, &gpu_node] {
        node.register_daemon_kind("gpu-job", factory(|_| Ok(Box::new(GpuJob))))
            .expect("register");
    }
    // Registered on the placing node only (it reads the requirements from it).
    plain
        .register_daemon_kind("gpu-elsewhere", factory(|_| Ok(Box::new(GpuJob))))
        .expect("register");
    tokio::time::timeout(
        WAIT,
        plain.connect(gpu_node.local_addr(), gpu_node.public_key()),
    )
    .await
    .expect("in time")
    .expect("connect");
    // Placed right after the session comes up: the GPU node is found in the capability
    // index, or asked directly if its announcement has not arrived yet.

    let identity = Identity::generate();
    let placed = plain
        .spawn_daemon_placed("gpu-job", identity.clone(), DaemonConfig::empty())
        .await
        .expect("placed");
    assert_eq!(placed.node, gpu_node.node_id());
    assert_eq!(placed.origin_hash, identity.origin_hash());
    assert_eq!(placed.entity, identity.entity_id());
    assert!(placed.local.is_none());
    assert!(plain.daemons().await.is_empty());
    let hosted = gpu_node.daemons().await;
    assert_eq!(hosted.len(), 1);
    assert_eq!(hosted[0].origin, identity.origin_hash());
    assert_eq!(hosted[0].kind, "gpu-job");
    let remote = gpu_node
        .daemon(identity.origin_hash())
        .expect("hosted on the gpu node");
    remote.deliver("frame").await.expect("processed there");

    // Spawning the same identity again is refused there; a fresh one lands there too.
    let again = plain
        .spawn_daemon_placed("gpu-job", identity, DaemonConfig::empty())
        .await;
    assert!(
        matches!(
            again,
            Err(DaemonSpawnError::Remote(RemoteError::Refused {
                refusal: SpawnRefusal::AlreadyRunning,
                ..
            }))
        ),
        "{again:?}"
    );

    // The only node with a GPU does not know the kind.
    let missing = plain
        .spawn_daemon_placed("gpu-elsewhere", Identity::generate(), DaemonConfig::empty())
        .await;
    assert!(
        matches!(missing, Err(DaemonSpawnError::FactoryNotFound(ref kind)) if kind == "gpu-elsewhere"),
        "{missing:?}"
    );
    // A kind unknown here cannot even be placed.
    assert!(matches!(
        plain
            .spawn_daemon_placed("nowhere", Identity::generate(), DaemonConfig::empty())
            .await,
        Err(DaemonSpawnError::FactoryNotFound(_))
    ));
    plain.shutdown().await;
    gpu_node.shutdown().await;
}

/// Records the controls it receives; processing `slow` takes 800 ms.
struct Listener {
    controls: Arc<Mutex<Vec<DaemonControl>>>,
    seen: u64,
}

impl MeshDaemon for Listener {
    fn name(&self) -> &str {
        "listener"
    }

    fn process(&mut self, event: &CausalEvent) -> Result<Vec<Bytes>, DaemonError> {
        if &event.payload[..] == b"slow" {
            std::thread::sleep(Duration::from_millis(800));
        }
        self.seen += 1;
        Ok(Vec::new())
    }

    fn snapshot(&self) -> Option<Bytes> {
        Some(Bytes::copy_from_slice(&self.seen.to_le_bytes()))
    }

    fn on_control(&mut self, control: DaemonControl) {
        self.controls.lock().expect("lock").push(control);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_delivers_shutdown_with_grace_and_forces_a_stuck_daemon() {
    let node = node().await;
    let controls = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&controls);
    node.register_daemon_kind(
        "listener",
        factory(move |_| {
            Ok(Box::new(Listener {
                controls: Arc::clone(&seen),
                seen: 0,
            }))
        }),
    )
    .expect("register");
    let options = DaemonOptions {
        stop_grace: Duration::from_millis(200),
        ..DaemonOptions::default()
    };

    // A cooperative daemon: it hears Shutdown with the grace period, once, and its final
    // snapshot holds everything it processed.
    let daemon = node
        .spawn_daemon_with(
            "listener",
            Identity::generate(),
            DaemonConfig::empty(),
            options.clone(),
        )
        .await
        .expect("spawn");
    assert_eq!(
        daemon
            .control(DaemonControl::BackpressureOn { level: 0.5 })
            .await
            .expect("control"),
        netrun::daemons::ControlOutcome::Delivered
    );
    for _ in 0..3 {
        daemon.deliver("x").await.expect("processed");
    }
    let last = daemon
        .stop()
        .await
        .expect("stopped")
        .expect("final snapshot");
    assert_eq!(last.state.as_deref(), Some(&3u64.to_le_bytes()[..]));
    assert_eq!(last.last_input_seq, 3);
    assert_eq!(
        *controls.lock().expect("lock"),
        vec![
            DaemonControl::BackpressureOn { level: 0.5 },
            DaemonControl::Shutdown {
                grace: Duration::from_millis(200)
            }
        ]
    );
    assert!(matches!(
        daemon.deliver("x").await,
        Err(DaemonCallError::Stale)
    ));
    assert!(matches!(daemon.stop().await, Err(DaemonCallError::Stale)));
    assert!(node.daemons().await.is_empty());

    // A daemon stuck in `process` past its grace period is stopped by force.
    let stuck = node
        .spawn_daemon_with(
            "listener",
            Identity::generate(),
            DaemonConfig::empty(),
            options,
        )
        .await
        .expect("spawn");
    stuck.deliver("x").await.expect("processed");
    let busy = {
        let stuck = stuck.clone();
        tokio::spawn(async move { stuck.deliver("slow").await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    let snapshot = stuck.stop().await.expect("stopped");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "stop waited {:?}",
        started.elapsed()
    );
    assert!(snapshot.is_some(), "the last snapshot is returned");
    let _ = busy.await;
    assert!(node.daemons().await.is_empty());
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_moves_a_daemon_to_another_node_and_its_chain_continues() {
    let a = node().await;
    let b = node().await;
    for node in [&a, &b] {
        register_strict(node);
    }
    let identity = Identity::generate();
    let first = a
        .spawn_daemon("strict", identity.clone(), DaemonConfig::empty())
        .await
        .expect("spawn");
    for i in 0..5u32 {
        first.deliver(format!("e{i}")).await.expect("processed");
    }
    let snapshot = first.stop().await.expect("stop").expect("snapshot");
    assert_eq!(strict_state(&snapshot).0, 5);

    // Another identity cannot take the snapshot over.
    let wrong = b
        .spawn_from_snapshot(
            "strict",
            Identity::generate(),
            DaemonConfig::empty(),
            snapshot.clone(),
        )
        .await;
    assert!(
        matches!(wrong, Err(DaemonSpawnError::WrongIdentity)),
        "{wrong:?}"
    );

    let moved = b
        .spawn_from_snapshot(
            "strict",
            identity.clone(),
            DaemonConfig::empty(),
            snapshot.clone(),
        )
        .await
        .expect("restored on b");
    assert_eq!(moved.origin_hash(), identity.origin_hash());
    let mut outputs = moved.outputs();
    let mut verifier = ChainVerifier::from_snapshot(&snapshot).expect("snapshot verifies");
    moved.deliver("e5").await.expect("processed");
    let seen = verify_until(&mut outputs, &mut verifier, 1).await;
    assert_eq!(counts(&seen), vec![6]);
    assert_eq!(seen[0].link.seq, snapshot.head.seq + 1);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_and_spawn_errors_are_typed() {
    let node = node().await;
    let make = || factory(|_| Ok(Box::new(GpuJob)));
    node.register_daemon_kind("job", make()).expect("register");
    assert!(matches!(
        node.register_daemon_kind("job", make()),
        Err(DaemonSpawnError::FactoryAlreadyRegistered(_))
    ));
    assert!(matches!(
        node.spawn_daemon("other", Identity::generate(), DaemonConfig::empty())
            .await,
        Err(DaemonSpawnError::FactoryNotFound(_))
    ));
    let identity = Identity::generate();
    let daemon = node
        .spawn_daemon("job", identity.clone(), DaemonConfig::empty())
        .await
        .expect("spawn");
    assert!(matches!(
        node.spawn_daemon("job", identity.clone(), DaemonConfig::empty())
            .await,
        Err(DaemonSpawnError::AlreadyRunning(o)) if o == identity.origin_hash()
    ));
    let channel = netrun::ChannelName::new("jobs").expect("name");
    let stranger = Identity::generate().node_id();
    assert!(matches!(
        node.subscribe_daemon(daemon.origin_hash(), stranger, &channel)
            .await,
        Err(DaemonCallError::Subscribe(_))
    ));
    let unknown = Identity::generate().origin_hash();
    assert!(matches!(
        node.deliver(unknown, "x").await,
        Err(DaemonCallError::NotFound(o)) if o == unknown
    ));
    let bad = DaemonOptions {
        host: HostConfig {
            log_events: 0,
            ..HostConfig::default()
        },
        ..DaemonOptions::default()
    };
    assert!(matches!(
        node.spawn_daemon_with("job", Identity::generate(), DaemonConfig::empty(), bad)
            .await,
        Err(DaemonSpawnError::Config(_))
    ));
    node.shutdown().await;
    assert!(matches!(
        node.spawn_daemon("job", Identity::generate(), DaemonConfig::empty())
            .await,
        Err(DaemonSpawnError::ShuttingDown)
    ));
}

/// Spans of spawn, processed events (sampled: the first 16 input seqs of a daemon, then one
/// in 1,024) and the restart reach a real OTLP collector from a separate node process.
#[test]
fn traces_show_spawn_sampled_processing_and_the_restart() {
    use support::*;
    let Some(collector) = Collector::start_or_skip() else {
        return;
    };
    let mut node =
        Process::spawn(clean_command(env!("CARGO_BIN_EXE_daemon-node")).arg(collector.grpc()));
    let done = node.line();
    assert!(node.wait(), "the daemon node exits cleanly");
    let origin = done["origin"].as_str().expect("origin").to_owned();
    assert_eq!(done["restarts"], 1);

    let named = |spans: &[serde_json::Value], name: &str| {
        spans
            .iter()
            .filter(|s| s["name"] == name && s["attributes"]["origin"] == origin.as_str())
            .count()
    };
    let spans = collector.spans(|spans| {
        named(spans, "netrun.daemon.restart") == 1 && named(spans, "netrun.daemon.process") >= 16
    });
    assert_eq!(named(&spans, "netrun.daemon.spawn"), 1, "one spawn span");
    // Input seqs 1..=16 of 22 (20 events, boom, one after the restart).
    assert_eq!(
        named(&spans, "netrun.daemon.process"),
        16,
        "sampled processing"
    );
    assert_eq!(
        named(&spans, "netrun.daemon.restart"),
        1,
        "one restart span"
    );
    let restart = spans
        .iter()
        .find(|s| s["name"] == "netrun.daemon.restart")
        .expect("restart span");
    assert_eq!(restart["attributes"]["restarts"], 1);
    assert_eq!(restart["attributes"]["kind"], "picky");
    let process = spans
        .iter()
        .find(|s| s["name"] == "netrun.daemon.process")
        .expect("process span");
    assert_eq!(process["attributes"]["outputs"], 1);
}

/// Upper-cases each input.
struct Shout;

impl MeshDaemon for Shout {
    fn name(&self) -> &str {
        "shout"
    }
    fn process(&mut self, event: &CausalEvent) -> Result<Vec<Bytes>, DaemonError> {
        Ok(vec![Bytes::from(event.payload.to_ascii_uppercase())])
    }
}

/// A daemon on A takes B's `sensor` channel as input; its outputs appear on its output
/// channel `daemons/<origin>`, where B subscribes and decodes signed outputs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_reads_a_channel_and_publishes_on_its_output_channel() {
    let (a, b, b_id) = netrun_tests::connected_pair().await;
    let sensor = netrun::ChannelName::new("sensor").expect("name");
    b.register_channel(netrun::ChannelConfig::new(sensor.clone()))
        .await
        .expect("register sensor");
    a.register_daemon_kind("shout", factory(|_| Ok(Box::new(Shout))))
        .expect("register");
    let identity = Identity::generate();
    let daemon = a
        .spawn_daemon("shout", identity.clone(), DaemonConfig::empty())
        .await
        .expect("spawn");
    let origin = daemon.origin_hash();
    // The output channel is registered at spawn.
    let out = daemon.output_channel();
    assert_eq!(out, netrun::daemons::output_channel(origin));
    assert!(a.channels().iter().any(|c| c.name == out));
    let mut outputs = b
        .subscribe_channel(a.node_id(), &out, netrun::SubscribeConfig::default())
        .await
        .expect("subscribe to the output channel");
    a.subscribe_daemon(origin, b_id, &sensor)
        .await
        .expect("daemon subscribes");
    let mut seen = Vec::new();
    let deadline = Instant::now() + WAIT;
    let mut sent = 0;
    while seen.len() < 3 {
        assert!(Instant::now() < deadline, "outputs arrive: {seen:?}");
        if sent < 3 {
            let report = b
                .publish(&sensor, Bytes::from(format!("reading {sent}")))
                .await;
            if report.is_ok_and(|r| r.delivered == 1) {
                sent += 1;
            }
        }
        let Ok(Some(event)) = tokio::time::timeout(Duration::from_millis(50), outputs.recv()).await
        else {
            continue;
        };
        let output = Output::from_bytes(&event.payload).expect("a signed output");
        for e in output.events() {
            seen.push(String::from_utf8_lossy(&e.payload).into_owned());
        }
    }
    assert_eq!(seen, ["READING 0", "READING 1", "READING 2"]);
    a.shutdown().await;
    b.shutdown().await;
}
