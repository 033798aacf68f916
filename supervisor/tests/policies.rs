//! Restart types, exit reasons, backoff, the crash-loop gate and intensity escalation.

// Test code: helpers outside #[test] fns unwrap too.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Probe, WorkerMsg, child, wait_for, wait_for_tree, worker};
use netrun_supervisor::{
    BackoffConfig, ChildSpec, ChildState, CrashLoopConfig, ExitReason, Restart, RestartIntensity,
    Strategy, SupervisorArgs, SupervisorConfig,
};
use tokio::time::Instant;

fn quiet_config() -> SupervisorConfig {
    SupervisorConfig {
        backoff: BackoffConfig::none(),
        gate: CrashLoopConfig::disabled(),
        ..SupervisorConfig::default()
    }
}

#[tokio::test(start_paused = true)]
async fn transient_clean_exits_are_not_restarted_but_crashes_are() {
    let probe = Probe::default();
    let args = SupervisorArgs::new("t", quiet_config())
        .child(worker("normal", &probe).restart(Restart::Transient))
        .child(worker("migrated", &probe).restart(Restart::Transient))
        .child(worker("crashy", &probe).restart(Restart::Transient))
        .child(worker("temp", &probe).restart(Restart::Temporary));
    let (sup, _) = netrun_supervisor::spawn(args).await.unwrap();
    let r = |id: &str| {
        let sup = sup.clone();
        let id = id.to_owned();
        async move { sup.child_ref::<WorkerMsg>(&id).await.unwrap() }
    };
    r("normal").await.send(WorkerMsg::StopWith(None)).unwrap();
    r("migrated")
        .await
        .send(WorkerMsg::StopWith(Some("migrated".into())))
        .unwrap();
    r("crashy").await.send(WorkerMsg::Crash).unwrap();
    r("temp").await.send(WorkerMsg::Crash).unwrap();
    let tree = wait_for_tree(&sup, "settled", |t| {
        t.children.len() == 3 && child(t, "crashy").generation == 2
    })
    .await;
    assert_eq!(child(&tree, "normal").state, ChildState::Stopped);
    assert_eq!(child(&tree, "normal").last_exit, Some(ExitReason::Normal));
    assert_eq!(child(&tree, "migrated").state, ChildState::Stopped);
    assert_eq!(
        child(&tree, "migrated").last_exit,
        Some(ExitReason::Migrated)
    );
    assert_eq!(child(&tree, "crashy").state, ChildState::Running);
    assert!(
        tree.children.iter().all(|c| c.id != "temp"),
        "temporary child is removed"
    );
    // Only the crash counted toward the intensity.
    assert_eq!(tree.restarts_in_period, 1);
    sup.shutdown().await.unwrap();
    assert_eq!(probe.live(), 0);
}

#[tokio::test(start_paused = true)]
async fn migration_of_a_permanent_child_is_never_a_crash() {
    let probe = Probe::default();
    // A gate that would engage on the second crash and a one-restart intensity.
    let config = SupervisorConfig {
        intensity: RestartIntensity {
            max_restarts: 1,
            period: Duration::from_secs(60),
        },
        gate: CrashLoopConfig {
            max_crashes: 1,
            ..CrashLoopConfig::default()
        },
        backoff: BackoffConfig {
            immediate_first: false,
            ..BackoffConfig::default()
        },
        ..SupervisorConfig::default()
    };
    let args = SupervisorArgs::new("m", config).child(worker("d", &probe));
    let (sup, _) = netrun_supervisor::spawn(args).await.unwrap();
    let d = sup.child_ref::<WorkerMsg>("d").await.unwrap();
    for generation in 1..=10u64 {
        wait_for("running", || d.generation() == Some(generation)).await;
        let before = Instant::now();
        d.send(WorkerMsg::StopWith(Some("migrated".into())))
            .unwrap();
        wait_for("restarted", || d.generation() == Some(generation + 1)).await;
        assert_eq!(
            before.elapsed(),
            Duration::ZERO,
            "no backoff for a migration"
        );
    }
    let tree = sup.tree().await.unwrap();
    assert_eq!(tree.restarts_in_period, 0);
    assert_eq!(tree.stats.gates_engaged, 0);
    assert_eq!(child(&tree, "d").last_exit, Some(ExitReason::Migrated));
    assert!(sup.is_running());
    sup.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn backoff_doubles_up_to_the_cap() {
    let probe = Probe::default();
    let config = SupervisorConfig {
        backoff: BackoffConfig {
            max: Duration::from_millis(80),
            ..BackoffConfig::default()
        },
        gate: CrashLoopConfig::disabled(),
        intensity: RestartIntensity {
            max_restarts: 100,
            period: Duration::from_secs(60),
        },
        ..SupervisorConfig::default()
    };
    let args = SupervisorArgs::new("b", config).child(worker("w", &probe));
    let (sup, _) = netrun_supervisor::spawn(args).await.unwrap();
    let w = sup.child_ref::<WorkerMsg>("w").await.unwrap();
    let mut delays = Vec::new();
    for generation in 1..=7u64 {
        let crashed = Instant::now();
        w.send(WorkerMsg::Crash).unwrap();
        if generation == 3 {
            // Observe the backing-off state while the 20 ms delay runs.
            let tree = wait_for_tree(&sup, "backing off", |t| {
                matches!(child(t, "w").state, ChildState::BackingOff { .. })
            })
            .await;
            assert!(
                matches!(child(&tree, "w").state, ChildState::BackingOff { remaining_ms } if remaining_ms <= 20)
            );
        }
        wait_for("restarted", || w.generation() == Some(generation + 1)).await;
        let started = *probe.starts().last().unwrap();
        delays.push((started - crashed).as_millis());
    }
    assert_eq!(delays, [0, 10, 20, 40, 80, 80, 80]);
    sup.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn crash_loop_gate_engages_on_sixth_crash_and_releases_after_cooldown() {
    let probe = Probe::default();
    let config = SupervisorConfig {
        backoff: BackoffConfig::none(),
        gate: CrashLoopConfig::default(),
        ..SupervisorConfig::default()
    };
    let args = SupervisorArgs::new("g", config).child(worker("w", &probe));
    let (sup, _) = netrun_supervisor::spawn(args).await.unwrap();
    let w = sup.child_ref::<WorkerMsg>("w").await.unwrap();
    // Crashes one to five within the window are each restarted.
    for generation in 1..=5u64 {
        tokio::time::sleep(Duration::from_secs(5)).await;
        w.send(WorkerMsg::Crash).unwrap();
        wait_for("restarted", || w.generation() == Some(generation + 1)).await;
    }
    assert_eq!(sup.tree().await.unwrap().stats.gates_engaged, 0);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let sixth = Instant::now();
    w.send(WorkerMsg::Crash).unwrap();
    let tree = wait_for_tree(&sup, "gated", |t| {
        matches!(child(t, "w").state, ChildState::Gated { .. })
    })
    .await;
    assert_eq!(tree.stats.gates_engaged, 1);
    tokio::time::sleep_until(sixth + Duration::from_secs(59)).await;
    assert_eq!(w.generation(), None, "still gated after 59 s");
    let tree = sup.tree().await.unwrap();
    assert!(
        matches!(child(&tree, "w").state, ChildState::Gated { remaining_ms } if remaining_ms <= 1_000)
    );
    wait_for("released", || w.generation() == Some(7)).await;
    assert_eq!(sixth.elapsed().as_secs(), 60);
    // After release the history is empty: another crash restarts at once.
    w.send(WorkerMsg::Crash).unwrap();
    let t = Instant::now();
    wait_for("restarted after release", || w.generation() == Some(8)).await;
    assert_eq!(t.elapsed(), Duration::ZERO);
    sup.shutdown().await.unwrap();
    assert_eq!(probe.live(), 0);
}

#[tokio::test(start_paused = true)]
async fn crashes_spread_over_more_than_the_window_never_gate() {
    let probe = Probe::default();
    let config = SupervisorConfig {
        backoff: BackoffConfig::none(),
        ..SupervisorConfig::default()
    };
    let args = SupervisorArgs::new("g", config).child(worker("w", &probe));
    let (sup, _) = netrun_supervisor::spawn(args).await.unwrap();
    let w = sup.child_ref::<WorkerMsg>("w").await.unwrap();
    for generation in 1..=12u64 {
        tokio::time::sleep(Duration::from_secs(16)).await;
        w.send(WorkerMsg::Crash).unwrap();
        wait_for("restarted", || w.generation() == Some(generation + 1)).await;
    }
    assert_eq!(sup.tree().await.unwrap().stats.gates_engaged, 0);
    sup.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn intensity_exceeded_fails_the_supervisor_and_its_parent_restarts_it() {
    let probe = Probe::default();
    let inner_config = SupervisorConfig {
        intensity: RestartIntensity {
            max_restarts: 3,
            period: Duration::from_secs(5),
        },
        ..quiet_config()
    };
    let w1_spec = worker("w1", &probe);
    // Taken from the spec before it is started: follows w1 across restarts of `inner` too.
    let w1 = w1_spec.child_ref::<WorkerMsg>();
    let inner = SupervisorArgs::new("inner", inner_config)
        .child(w1_spec)
        .child(worker("w2", &probe));
    let inner_spec = ChildSpec::supervisor("inner", inner);
    let args = SupervisorArgs::new(
        "outer",
        SupervisorConfig::with_strategy(Strategy::OneForOne),
    )
    .child(inner_spec)
    .child(worker("sibling", &probe));
    let (outer, _) = netrun_supervisor::spawn(args).await.unwrap();
    let inner = outer.child_supervisor("inner").await.unwrap();
    for generation in 1..=3u64 {
        w1.send(WorkerMsg::Crash).unwrap();
        wait_for("w1 restarted", || w1.generation() == Some(generation + 1)).await;
    }
    assert!(inner.is_running());
    // The fourth restart within 5 s is one too many.
    w1.send(WorkerMsg::Crash).unwrap();
    wait_for("inner failed", || !inner.is_running()).await;
    let tree = wait_for_tree(&outer, "inner restarted", |t| {
        child(t, "inner").generation == 2 && child(t, "inner").state == ChildState::Running
    })
    .await;
    let inner_snap = child(&tree, "inner");
    assert_eq!(inner_snap.restarts, 1);
    assert!(matches!(
        &inner_snap.last_exit,
        Some(ExitReason::Failed(text)) if text.contains("restart intensity exceeded")
    ));
    assert_eq!(
        child(&tree, "sibling").generation,
        1,
        "one_for_one parent left the sibling alone"
    );
    let sub = inner_snap.subtree.as_ref().expect("nested tree");
    assert_eq!(sub.name, "inner");
    assert_eq!(sub.children.len(), 2);
    assert!(sub.children.iter().all(|c| c.state == ChildState::Running));
    // w1's handle survived the restart of its supervisor: generations keep counting.
    wait_for("w1 back", || w1.generation() == Some(5)).await;
    assert_eq!(w1.call(WorkerMsg::Ping, None).await.unwrap(), "w1");
    outer.shutdown().await.unwrap();
    assert_eq!(probe.live(), 0);
}
