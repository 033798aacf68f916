//! Host behaviour: failure capture, restore without loss or repeats, chain continuity
//! across restarts, controls at most once, snapshots and batching.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use netrun_messages::{CausalChain, CausalEvent, ChainError, ChainHead, Identity, SignedEvent};

use super::*;
use crate::test_clock::t0;

/// A daemon that remembers the producer seq of every event it processed, in order.
///
/// Payload commands: `panic`, `err`, `many` (too many outputs), `two` (two outputs),
/// `quiet` (no output); anything else gives one output.
struct Recorder {
    seen: Vec<u64>,
    instance: u32,
    nondeterministic: bool,
    panic_on: Option<u64>,
    controls: Arc<Mutex<Vec<DaemonControl>>>,
    /// Snapshots exceed the state limit once this many events were seen.
    huge_after: Option<usize>,
}

impl Recorder {
    fn new(instance: u32) -> Self {
        Self {
            seen: Vec::new(),
            instance,
            nondeterministic: false,
            panic_on: None,
            controls: Arc::default(),
            huge_after: None,
        }
    }

    fn boxed(self) -> Box<dyn MeshDaemon> {
        Box::new(self)
    }
}

impl MeshDaemon for Recorder {
    fn name(&self) -> &str {
        "recorder"
    }

    fn process(&mut self, event: &CausalEvent) -> Result<Vec<Bytes>, DaemonError> {
        let seq = event.link.seq;
        if self.panic_on == Some(seq) {
            panic!("injected panic at {seq}");
        }
        match &event.payload[..] {
            b"panic" => panic!("boom"),
            b"err" => return Err(DaemonError::InvalidEvent("err".into())),
            b"many" => return Ok(vec![Bytes::new(); MAX_OUTPUTS_PER_EVENT + 1]),
            _ => {}
        }
        self.seen.push(seq);
        let mut out = format!("{}:{}", self.seen.len(), seq);
        if self.nondeterministic {
            out.push_str(&format!("@{}", self.instance));
        }
        Ok(match &event.payload[..] {
            b"two" => vec![Bytes::from(out.clone()), Bytes::from(out + "'")],
            b"quiet" => Vec::new(),
            _ => vec![Bytes::from(out)],
        })
    }

    fn snapshot(&self) -> Option<Bytes> {
        if self.huge_after.is_some_and(|n| self.seen.len() >= n) {
            return Some(Bytes::from(vec![0; MAX_STATE_LEN + 1]));
        }
        Some(Bytes::from(encode_seen(&self.seen)))
    }

    fn restore(&mut self, state: Bytes) -> Result<(), DaemonError> {
        self.seen = decode_seen(&state);
        Ok(())
    }

    fn on_control(&mut self, control: DaemonControl) {
        self.controls.lock().expect("lock").push(control);
    }
}

fn encode_seen(seen: &[u64]) -> Vec<u8> {
    seen.iter().flat_map(|s| s.to_le_bytes()).collect()
}

fn decode_seen(state: &[u8]) -> Vec<u64> {
    state
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect()
}

fn daemon_id() -> Identity {
    Identity::from_seed([7; 32])
}

/// Events from one producer chain: seq 1, 2, … with the given payloads.
fn events(payloads: &[&str]) -> Vec<CausalEvent> {
    let producer = Identity::from_seed([99; 32]);
    let mut chain = CausalChain::new(producer.origin_hash());
    payloads
        .iter()
        .map(|p| chain.append(Bytes::from(p.to_string())).expect("append"))
        .collect()
}

/// A host running a fresh [`Recorder`] as [`daemon_id`].
fn recorder_host(config: HostConfig) -> DaemonHost {
    DaemonHost::new(Recorder::new(1).boxed(), daemon_id(), config).expect("host")
}

fn batch_config(max_events: u32) -> HostConfig {
    HostConfig {
        signing: ChainSigning::Batch {
            max_events,
            max_bytes: DEFAULT_BATCH_BYTES,
            max_delay: Duration::from_millis(5),
        },
        snapshot_every: 4,
        ..HostConfig::default()
    }
}

/// Polls every output, verifies it and collects its events.
fn drain(host: &mut DaemonHost, verifier: &mut ChainVerifier, into: &mut Vec<CausalEvent>) {
    while let Some(output) = host.poll_output() {
        verifier.verify(&output).expect("output verifies");
        into.extend_from_slice(output.events());
    }
}

fn state_of(host: &mut DaemonHost) -> Vec<u64> {
    let snap = host.take_snapshot().expect("snapshot");
    decode_seen(snap.state.as_deref().expect("state"))
}

/// The end-to-end restart property, for one signing mode.
fn restart_without_loss(config: HostConfig) {
    let now = t0();
    let id = daemon_id();
    let inputs = events(&["a", "b", "two", "c", "d", "quiet", "panic", "e", "f", "two"]);
    let mut host = recorder_host(config);
    let mut verifier = ChainVerifier::new(id.entity_id());
    let mut published = Vec::new();
    for event in &inputs[..6] {
        host.deliver(now, event.clone()).expect("delivered");
        drain(&mut host, &mut verifier, &mut published);
    }
    // The panic is recorded, the host is failed, the node is fine.
    assert_eq!(
        host.deliver(now, inputs[6].clone()),
        Err(DeliverError::Processing {
            input_seq: 7,
            restart: true
        })
    );
    assert_eq!(host.state(), HostState::Failed);
    let failure = host.last_failure().expect("failure").clone();
    assert_eq!(failure.stage, FailureStage::Process);
    assert_eq!(failure.input_seq, Some(7));
    assert_eq!(failure.reason, FailureReason::Panic("boom".into()));
    assert_eq!(
        host.deliver(now, inputs[7].clone()),
        Err(DeliverError::Failed)
    );
    assert!(matches!(host.health(), DaemonHealth::Unhealthy { .. }));
    // What was produced before the failure is sealed and can still be published.
    drain(&mut host, &mut verifier, &mut published);
    let before = published.len();
    assert_eq!(before, 6, "a b two(2) c d, quiet has none");

    // The snapshot was taken before input 5 (cadence 4): 5 and 6 are replayed.
    let recovery = host.into_recovery();
    assert_eq!(recovery.snapshot.last_input_seq, 4);
    assert_eq!(
        recovery.log.iter().map(|l| l.input_seq).collect::<Vec<_>>(),
        vec![5, 6]
    );
    assert_eq!(recovery.stats.failures, 1);
    let (mut host, report) =
        DaemonHost::restore(now, Recorder::new(2).boxed(), recovery).expect("restored");
    assert_eq!(
        report,
        RestoreReport {
            replayed: 2,
            skipped: 0,
            suppressed: 1,
            emitted: 0,
            divergent: false
        }
    );
    assert_eq!(host.state(), HostState::Running);
    // Nothing is published twice.
    assert!(host.poll_output().is_none());
    assert_eq!(host.input_seq(), 7);

    for event in &inputs[7..] {
        host.deliver(now, event.clone()).expect("delivered");
    }
    host.flush();
    drain(&mut host, &mut verifier, &mut published);
    assert_eq!(published.len(), before + 4);
    assert_eq!(verifier.last(), host.head());

    // Every successful event exactly once, in order; the panicking one never.
    let expected: Vec<u64> = vec![1, 2, 3, 4, 5, 6, 8, 9, 10];
    assert_eq!(state_of(&mut host), expected);

    // A daemon that never failed, fed the successful events, ends in the same state with
    // the same chain.
    let mut clean =
        DaemonHost::new(Recorder::new(3).boxed(), id.clone(), config).expect("clean host");
    for (i, event) in inputs.iter().enumerate() {
        if i != 6 {
            clean.deliver(now, event.clone()).expect("delivered");
        }
    }
    clean.flush();
    let mut clean_verifier = ChainVerifier::new(id.entity_id());
    let mut clean_published = Vec::new();
    drain(&mut clean, &mut clean_verifier, &mut clean_published);
    assert_eq!(clean.head(), host.head());
    assert_eq!(clean_published, published);
    assert_eq!(state_of(&mut clean), expected);
}

#[test]
fn restart_per_event_signing() {
    restart_without_loss(HostConfig {
        snapshot_every: 4,
        ..HostConfig::default().per_event()
    });
}

#[test]
fn restart_batch_signing() {
    restart_without_loss(batch_config(3));
}

#[test]
fn unpolled_outputs_survive_a_restart_in_order() {
    let now = t0();
    let id = daemon_id();
    let inputs = events(&["a", "b", "panic", "c"]);
    let config = HostConfig {
        snapshot_every: 0,
        ..HostConfig::default().per_event()
    };
    let mut host = recorder_host(config);
    host.deliver(now, inputs[0].clone()).expect("a");
    host.deliver(now, inputs[1].clone()).expect("b");
    assert!(host.deliver(now, inputs[2].clone()).is_err());
    // The actor never polled: the two outputs travel in the recovery.
    let recovery = host.into_recovery();
    assert_eq!(recovery.undelivered.len(), 2);
    assert_eq!(recovery.produced.seq, 2);
    let (mut host, report) =
        DaemonHost::restore(now, Recorder::new(2).boxed(), recovery).expect("restored");
    assert_eq!(report.replayed, 2);
    assert_eq!(report.suppressed, 2);
    host.deliver(now, inputs[3].clone()).expect("c");
    let mut verifier = ChainVerifier::new(id.entity_id());
    let mut published = Vec::new();
    drain(&mut host, &mut verifier, &mut published);
    assert_eq!(
        published.iter().map(|e| e.link.seq).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
}

#[test]
fn errors_follow_the_policy() {
    let now = t0();
    let inputs = events(&["a", "err", "b"]);
    // Continue: recorded, not logged, the host keeps going; a restore does not replay it.
    let config = HostConfig {
        error_policy: ErrorPolicy::Continue,
        snapshot_every: 0,
        ..HostConfig::default()
    };
    let mut host = recorder_host(config);
    host.deliver(now, inputs[0].clone()).expect("a");
    assert_eq!(
        host.deliver(now, inputs[1].clone()),
        Err(DeliverError::Processing {
            input_seq: 2,
            restart: false
        })
    );
    assert_eq!(host.state(), HostState::Running);
    assert!(matches!(
        host.last_failure().map(|f| &f.reason),
        Some(FailureReason::Error(DaemonError::InvalidEvent(_)))
    ));
    host.deliver(now, inputs[2].clone()).expect("b");
    assert_eq!(host.log_len(), 2);
    let stats = host.stats().clone();
    assert_eq!(
        (
            stats.events_accepted,
            stats.events_processed,
            stats.failures
        ),
        (3, 2, 1)
    );
    let (mut host, report) =
        DaemonHost::restore(now, Recorder::new(2).boxed(), host.into_recovery()).expect("restored");
    assert_eq!(report.replayed, 2);
    assert_eq!(state_of(&mut host), vec![1, 3]);

    // Restart (the default): the host fails.
    let mut host = recorder_host(HostConfig::default());
    host.deliver(now, inputs[0].clone()).expect("a");
    assert_eq!(
        host.deliver(now, inputs[1].clone()),
        Err(DeliverError::Processing {
            input_seq: 2,
            restart: true
        })
    );
    assert_eq!(host.state(), HostState::Failed);
}

#[test]
fn output_limits_fail_the_host() {
    let now = t0();
    let inputs = events(&["many"]);
    let mut host = recorder_host(HostConfig::default());
    assert!(host.deliver(now, inputs[0].clone()).is_err());
    assert_eq!(
        host.last_failure().map(|f| f.reason.clone()),
        Some(FailureReason::TooManyOutputs(MAX_OUTPUTS_PER_EVENT + 1))
    );
    assert_eq!(host.state(), HostState::Failed);
    assert_eq!(host.head().seq, 0, "nothing was linked");
}

#[test]
fn nondeterministic_replay_keeps_the_published_chain() {
    let now = t0();
    let id = daemon_id();
    let inputs = events(&["a", "b", "panic", "c"]);
    let config = HostConfig {
        snapshot_every: 0,
        ..HostConfig::default().per_event()
    };
    let mut first = Recorder::new(1);
    first.nondeterministic = true;
    let mut host = DaemonHost::new(first.boxed(), id.clone(), config).expect("host");
    let mut verifier = ChainVerifier::new(id.entity_id());
    let mut published = Vec::new();
    host.deliver(now, inputs[0].clone()).expect("a");
    host.deliver(now, inputs[1].clone()).expect("b");
    drain(&mut host, &mut verifier, &mut published);
    assert!(host.deliver(now, inputs[2].clone()).is_err());
    let mut second = Recorder::new(2);
    second.nondeterministic = true;
    let (mut host, report) =
        DaemonHost::restore(now, second.boxed(), host.into_recovery()).expect("restored");
    assert!(report.divergent);
    assert_eq!(report.suppressed, 2);
    assert_eq!(host.stats().divergences, 1);
    // The next output continues the chain subscribers already have: no fork.
    host.deliver(now, inputs[3].clone()).expect("c");
    drain(&mut host, &mut verifier, &mut published);
    assert_eq!(published.len(), 3);
}

#[test]
fn a_replay_panic_is_pruned_for_the_next_attempt() {
    let now = t0();
    let inputs = events(&["a", "b", "panic"]);
    let config = HostConfig {
        snapshot_every: 0,
        ..HostConfig::default()
    };
    let mut host = recorder_host(config);
    host.deliver(now, inputs[0].clone()).expect("a");
    host.deliver(now, inputs[1].clone()).expect("b");
    assert!(host.deliver(now, inputs[2].clone()).is_err());
    let recovery = host.into_recovery();
    // The next instance panics replaying event 2.
    let mut flaky = Recorder::new(2);
    flaky.panic_on = Some(2);
    let failure = DaemonHost::restore(now, flaky.boxed(), recovery).expect_err("fails");
    match &failure.error {
        RestoreError::Failed(f) => {
            assert_eq!(f.stage, FailureStage::Replay);
            assert_eq!(f.input_seq, Some(2));
        }
        other => panic!("unexpected {other:?}"),
    }
    let recovery = *failure.recovery;
    assert_eq!(recovery.log.len(), 1, "the poisoned event was pruned");
    assert_eq!(recovery.stats.failures, 2);
    let (mut host, report) =
        DaemonHost::restore(now, Recorder::new(3).boxed(), recovery).expect("restored");
    assert_eq!(report.replayed, 1);
    // It produced less than before: the published chain is kept.
    assert!(report.divergent);
    assert_eq!(host.head().seq, 2);
    assert_eq!(state_of(&mut host), vec![1]);
}

#[test]
fn controls_are_delivered_at_most_once() {
    let now = t0();
    let controls = Arc::new(Mutex::new(Vec::new()));
    let mut daemon = Recorder::new(1);
    daemon.controls = Arc::clone(&controls);
    let mut host =
        DaemonHost::new(daemon.boxed(), daemon_id(), HostConfig::default()).expect("host");
    let drain_start = DaemonControl::DrainStart {
        grace: Duration::from_secs(5),
    };
    assert_eq!(host.control(0, drain_start), Ok(ControlOutcome::Duplicate));
    assert_eq!(host.control(1, drain_start), Ok(ControlOutcome::Delivered));
    assert_eq!(host.control(1, drain_start), Ok(ControlOutcome::Duplicate));
    assert_eq!(host.state(), HostState::Draining);
    // Draining still accepts input.
    let inputs = events(&["a", "panic", "b"]);
    host.deliver(now, inputs[0].clone()).expect("a");
    assert_eq!(
        host.control(3, DaemonControl::BackpressureOn { level: 0.5 }),
        Ok(ControlOutcome::Delivered)
    );
    assert_eq!(host.backpressure(), Some(0.5));
    // An older id is a duplicate even if never seen.
    assert_eq!(
        host.control(2, DaemonControl::DrainFinish),
        Ok(ControlOutcome::Duplicate)
    );
    assert_eq!(host.stats().controls_duplicate, 3);

    // Across a restart: the failed host delivers nothing and does not use the id up.
    assert!(host.deliver(now, inputs[1].clone()).is_err());
    assert_eq!(
        host.control(4, DaemonControl::DrainFinish),
        Err(ControlError::HostFailed)
    );
    let mut next = Recorder::new(2);
    next.controls = Arc::clone(&controls);
    let (mut host, _) =
        DaemonHost::restore(now, next.boxed(), host.into_recovery()).expect("restored");
    assert_eq!(host.control(3, drain_start), Ok(ControlOutcome::Duplicate));
    assert_eq!(
        host.control(4, DaemonControl::DrainFinish),
        Ok(ControlOutcome::Delivered)
    );
    assert_eq!(
        host.control(
            5,
            DaemonControl::Shutdown {
                grace: Duration::from_secs(1)
            }
        ),
        Ok(ControlOutcome::Delivered)
    );
    assert_eq!(host.state(), HostState::ShuttingDown);
    assert_eq!(
        host.deliver(now, inputs[2].clone()),
        Err(DeliverError::ShuttingDown)
    );
    let seen = controls.lock().expect("lock").clone();
    assert_eq!(
        seen,
        vec![
            drain_start,
            DaemonControl::BackpressureOn { level: 0.5 },
            DaemonControl::DrainFinish,
            DaemonControl::Shutdown {
                grace: Duration::from_secs(1)
            },
        ]
    );
}

#[test]
fn a_full_log_forces_a_snapshot_or_pushes_back() {
    let now = t0();
    let config = HostConfig {
        snapshot_every: 0,
        log_events: 3,
        ..HostConfig::default()
    };
    let inputs = events(&["a", "b", "c", "d", "e"]);
    let mut host = recorder_host(config);
    for event in &inputs[..4] {
        host.deliver(now, event.clone()).expect("delivered");
    }
    assert_eq!(host.stats().forced_snapshots, 1);
    assert_eq!(host.log_len(), 1);
    assert_eq!(host.last_snapshot().last_input_seq, 3);

    // A state too large to snapshot: the full log refuses instead of dropping.
    let mut grows = Recorder::new(1);
    grows.huge_after = Some(1);
    let config = HostConfig {
        snapshot_every: 0,
        log_events: 2,
        ..HostConfig::default()
    };
    let mut host = DaemonHost::new(grows.boxed(), daemon_id(), config).expect("host");
    host.deliver(now, inputs[0].clone()).expect("a");
    host.deliver(now, inputs[1].clone()).expect("b");
    assert_eq!(
        host.deliver(now, inputs[2].clone()),
        Err(DeliverError::Backpressure)
    );
    assert_eq!(host.state(), HostState::Running);
    assert_eq!(host.log_len(), 2, "nothing accepted was dropped");
    assert_eq!(host.stats().snapshot_failures, 1);
    assert!(matches!(
        host.take_snapshot(),
        Err(SnapshotRefusal::TooLarge(_))
    ));
    // At the cadence, a state too large is retried one period later, not on every event.
    let mut grows = Recorder::new(1);
    grows.huge_after = Some(1);
    let config = HostConfig {
        snapshot_every: 2,
        ..HostConfig::default()
    };
    let mut host = DaemonHost::new(grows.boxed(), daemon_id(), config).expect("host");
    for event in &inputs[..4] {
        host.deliver(now, event.clone()).expect("accepted");
    }
    assert_eq!(host.stats().snapshot_failures, 1);
    host.deliver(now, inputs[4].clone()).expect("accepted");
    assert_eq!(host.stats().snapshot_failures, 2);
    assert_eq!(host.log_len(), 5);

    // Too large from the start: the host cannot be built.
    let mut huge = Recorder::new(1);
    huge.huge_after = Some(0);
    assert!(matches!(
        DaemonHost::new(huge.boxed(), daemon_id(), config),
        Err(HostError::Failed(Failure {
            reason: FailureReason::SnapshotTooLarge(_),
            ..
        }))
    ));
}

#[test]
fn batches_seal_on_size_time_and_input_boundaries() {
    let t0 = t0();
    let config = HostConfig {
        snapshot_every: 0,
        ..batch_config(3)
    };
    let inputs = events(&["two", "two", "a", "b"]);
    let mut host = recorder_host(config);
    assert_eq!(host.poll_timeout(), None);
    host.deliver(t0, inputs[0].clone()).expect("two");
    assert_eq!(host.pending_outputs(), 2);
    assert_eq!(host.poll_timeout(), Some(t0 + Duration::from_millis(5)));
    // 2 + 2 > 3: the open batch is sealed before this input's outputs.
    host.deliver(t0, inputs[1].clone()).expect("two");
    let first = host.poll_output().expect("sealed");
    assert_eq!(first.events().len(), 2);
    assert!(host.poll_output().is_none());
    // 2 + 1 = 3 seals after the input.
    host.deliver(t0, inputs[2].clone()).expect("a");
    assert_eq!(host.poll_output().expect("sealed").events().len(), 3);
    // The timer seals a lone output.
    let t1 = t0 + Duration::from_millis(1);
    host.deliver(t1, inputs[3].clone()).expect("b");
    host.handle_timeout(t1 + Duration::from_millis(4));
    assert!(host.poll_output().is_none());
    host.handle_timeout(t1 + Duration::from_millis(5));
    assert_eq!(host.poll_output().expect("sealed").events().len(), 1);
    assert_eq!(host.poll_timeout(), None);
    assert_eq!(host.stats().heads_signed, 3);
}

#[test]
fn spawn_from_snapshot_elsewhere() {
    let now = t0();
    let id = daemon_id();
    let inputs = events(&["a", "b", "c"]);
    let mut host = recorder_host(HostConfig::default());
    host.deliver(now, inputs[0].clone()).expect("a");
    host.deliver(now, inputs[1].clone()).expect("b");
    let bytes = host
        .take_snapshot()
        .expect("snapshot")
        .to_bytes()
        .expect("encode");
    let mut verifier = ChainVerifier::new(id.entity_id());
    let mut published = Vec::new();
    drain(&mut host, &mut verifier, &mut published);

    // Another node: decode, restore, continue the chain.
    let snapshot = DaemonSnapshot::from_bytes(&bytes).expect("decode");
    let mut resumed = ChainVerifier::from_snapshot(&snapshot).expect("snapshot verifies");
    let recovery = Recovery::from_snapshot(id.clone(), HostConfig::default(), snapshot.clone());
    let (mut moved, report) =
        DaemonHost::restore(now, Recorder::new(2).boxed(), recovery).expect("restored");
    assert_eq!(report, RestoreReport::default());
    moved.deliver(now, inputs[2].clone()).expect("c");
    moved.flush();
    drain(&mut moved, &mut verifier, &mut published);
    let output = Output::Batch(SignedBatch {
        events: published[2..].to_vec(),
        head: ChainHead::sign(&id, &published[2].link),
    });
    resumed
        .verify(&output)
        .expect("continues from the snapshot");
    assert_eq!(state_of(&mut moved), vec![1, 2, 3]);

    // Someone else's key cannot take the daemon over with it.
    let thief = Identity::from_seed([8; 32]);
    let stolen = Recovery::from_snapshot(thief, HostConfig::default(), snapshot);
    let failure = DaemonHost::restore(now, Recorder::new(3).boxed(), stolen).expect_err("refused");
    assert!(matches!(
        failure.error,
        RestoreError::Snapshot(SnapshotError::WrongEntity)
    ));
}

#[test]
fn forged_host_outputs_are_rejected() {
    let now = t0();
    let id = daemon_id();
    let inputs = events(&["a", "b", "c"]);
    let mut host = recorder_host(HostConfig::default().per_event());
    for event in &inputs {
        host.deliver(now, event.clone()).expect("delivered");
    }
    let outputs: Vec<Output> = std::iter::from_fn(|| host.poll_output()).collect();
    let signed: Vec<SignedEvent> = outputs
        .iter()
        .map(|o| match o {
            Output::Event(s) => s.clone(),
            Output::Batch(_) => panic!("per-event mode"),
        })
        .collect();
    let mut verifier = ChainVerifier::new(id.entity_id());
    verifier.verify(&outputs[0]).expect("first");
    // Wrong key.
    let thief = Identity::from_seed([8; 32]);
    let forged = Output::Event(SignedEvent::sign(&thief, signed[1].event.clone()));
    assert_eq!(
        verifier.verify(&forged),
        Err(VerifyError::Chain(ChainError::BadSignature))
    );
    // Rewritten payload under the original signature.
    let mut rewritten = signed[1].clone();
    rewritten.event.payload = Bytes::from_static(b"forged");
    assert_eq!(
        verifier.verify(&Output::Event(rewritten)),
        Err(VerifyError::Chain(ChainError::PayloadMismatch(2)))
    );
    // Gap.
    assert_eq!(
        verifier.verify(&outputs[2]),
        Err(VerifyError::Chain(ChainError::Gap {
            expected: 2,
            found: 3
        }))
    );
    // Replay of the first.
    assert_eq!(
        verifier.verify(&outputs[0]),
        Err(VerifyError::Stale { seq: 1, last: 1 })
    );
    // The right events under a head signed by the thief.
    let bad_batch = Output::Batch(SignedBatch {
        events: vec![signed[1].event.clone()],
        head: ChainHead::sign(&thief, &signed[1].event.link),
    });
    assert_eq!(
        verifier.verify(&bad_batch),
        Err(VerifyError::Chain(ChainError::BadSignature))
    );
    // A batch that skips an event, headed by the daemon itself, still has a gap.
    let skipping = Output::Batch(SignedBatch {
        events: vec![signed[2].event.clone()],
        head: ChainHead::sign(&id, &signed[2].event.link),
    });
    assert_eq!(
        verifier.verify(&skipping),
        Err(VerifyError::Chain(ChainError::Gap {
            expected: 2,
            found: 3
        }))
    );
    // The real ones still go through.
    verifier.verify(&outputs[1]).expect("second");
    verifier.verify(&outputs[2]).expect("third");
}

#[test]
fn health_and_saturation_panics_are_contained() {
    struct Moody;
    impl MeshDaemon for Moody {
        fn name(&self) -> &str {
            "moody"
        }
        fn process(&mut self, _: &CausalEvent) -> Result<Vec<Bytes>, DaemonError> {
            Ok(Vec::new())
        }
        fn health(&self) -> DaemonHealth {
            panic!("sick")
        }
        fn saturation(&self) -> f32 {
            f32::NAN
        }
    }
    let mut host =
        DaemonHost::new(Box::new(Moody), daemon_id(), HostConfig::default()).expect("host");
    assert!(matches!(host.health(), DaemonHealth::Unhealthy { .. }));
    assert_eq!(host.saturation(), 1.0);
    assert_eq!(host.state(), HostState::Running);
    assert_eq!(host.stats().failures, 1);
    assert_eq!(host.name(), "moody");
}

#[test]
fn factories_register_once_and_contain_panics() {
    let mut kinds = DaemonFactories::new();
    kinds
        .register("recorder", factory(|_| Ok(Recorder::new(1).boxed())))
        .expect("registered");
    assert_eq!(
        kinds.register("recorder", factory(|_| Ok(Recorder::new(2).boxed()))),
        Err(FactoryError::AlreadyRegistered("recorder".into()))
    );
    assert_eq!(
        kinds.register("", factory(|_| Ok(Recorder::new(2).boxed()))),
        Err(FactoryError::BadName)
    );
    kinds
        .register(
            "configured",
            factory(|config| {
                let n: u32 = config.decode()?;
                Ok(Recorder::new(n).boxed())
            }),
        )
        .expect("registered");
    kinds
        .register("bomb", factory(|_| panic!("factory bomb")))
        .expect("registered");
    let config = DaemonConfig::from_value(&7u32).expect("config");
    assert_eq!(
        kinds.build("recorder", &config).expect("built").name(),
        "recorder"
    );
    kinds.build("configured", &config).expect("built");
    assert!(matches!(
        kinds.build("configured", &DaemonConfig::empty()),
        Err(FactoryError::Failed {
            error: DaemonError::InvalidConfig(_),
            ..
        })
    ));
    assert!(matches!(
        kinds.build("bomb", &config),
        Err(FactoryError::Panicked { .. })
    ));
    assert_eq!(
        kinds.build("nope", &config).map(|_| ()),
        Err(FactoryError::NotFound("nope".into()))
    );
    assert_eq!(
        kinds.kinds().collect::<Vec<_>>(),
        vec!["bomb", "configured", "recorder"]
    );
    assert!(matches!(
        DaemonConfig::from_bytes(vec![0; MAX_CONFIG_LEN + 1]),
        Err(ConfigError::TooLong { .. })
    ));
}

#[test]
fn host_and_recovery_move_between_threads() {
    fn send<T: Send>() {}
    send::<DaemonHost>();
    send::<Recovery>();
    send::<RestoreFailure>();
    send::<DaemonFactories>();
}

#[test]
fn config_validation() {
    assert!(HostConfig::default().validate().is_ok());
    let bad = |signing| HostConfig {
        signing,
        ..HostConfig::default()
    };
    for signing in [
        ChainSigning::Batch {
            max_events: 0,
            max_bytes: 1,
            max_delay: Duration::ZERO,
        },
        ChainSigning::Batch {
            max_events: MAX_BATCH_EVENTS + 1,
            max_bytes: 1,
            max_delay: Duration::ZERO,
        },
        ChainSigning::Batch {
            max_events: 1,
            max_bytes: 0,
            max_delay: Duration::ZERO,
        },
        ChainSigning::Batch {
            max_events: 1,
            max_bytes: 1,
            max_delay: Duration::from_secs(2),
        },
    ] {
        assert!(bad(signing).validate().is_err(), "{signing:?}");
    }
    let zero_log = HostConfig {
        log_events: 0,
        ..HostConfig::default()
    };
    assert!(matches!(
        DaemonHost::new(Recorder::new(1).boxed(), daemon_id(), zero_log),
        Err(HostError::Config(_))
    ));
}
