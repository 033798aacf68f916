//! Ordered shutdown, handles across restarts, generation guard, dynamic children, snapshots.

// Test code: helpers outside #[test] fns unwrap too.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Probe, WorkerMsg, child, wait_for, worker};
use netrun_supervisor::{
    BackoffConfig, ChildSpec, ChildState, ExitReason, SendError, SupervisorArgs, SupervisorConfig,
    SupervisorError,
};
use tokio::time::Instant;

fn config() -> SupervisorConfig {
    SupervisorConfig {
        backoff: BackoffConfig::none(),
        ..SupervisorConfig::default()
    }
}

#[tokio::test(start_paused = true)]
async fn shutdown_stops_in_reverse_order_and_kills_a_child_that_ignores_stop() {
    let probe = Probe::default();
    let args = SupervisorArgs::new("s", config())
        .child(worker("a", &probe))
        .child(worker("b", &probe).shutdown(Duration::from_millis(250)))
        .child(worker("c", &probe));
    let (sup, join) = netrun_supervisor::spawn(args).await.unwrap();
    let b = sup.child_ref::<WorkerMsg>("b").await.unwrap();
    b.send(WorkerMsg::Hang).unwrap();
    wait_for("b hangs", || probe.log().contains(&"hang:b".to_owned())).await;
    probe.clear();
    let started = Instant::now();
    sup.shutdown().await.unwrap();
    // c stops gracefully, b is killed after its 250 ms (no post_stop), then a.
    assert_eq!(probe.log(), ["stop:c", "stop:a"]);
    assert_eq!(started.elapsed(), Duration::from_millis(250));
    join.await.unwrap();
    wait_for("all dropped", || probe.live() == 0).await;
    assert!(
        probe
            .cells()
            .iter()
            .all(|c| c.get_status() == ractor::ActorStatus::Stopped)
    );
}

#[tokio::test(start_paused = true)]
async fn removal_of_a_hanging_child_kills_it_and_reports_killed() {
    let probe = Probe::default();
    let args = SupervisorArgs::new("s", config())
        .child(worker("a", &probe).shutdown(Duration::from_millis(50)));
    let (sup, _) = netrun_supervisor::spawn(args).await.unwrap();
    let a = sup.child_ref::<WorkerMsg>("a").await.unwrap();
    a.send(WorkerMsg::Hang).unwrap();
    wait_for("a hangs", || probe.log().contains(&"hang:a".to_owned())).await;
    sup.remove_child("a").await.unwrap();
    let tree = sup.tree().await.unwrap();
    assert!(tree.children.is_empty());
    assert_eq!(tree.stats.kills, 1);
    wait_for("a dropped", || probe.live() == 0).await;
    assert_eq!(a.send(WorkerMsg::Crash), Err(SendError::NotRunning));
    sup.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn handle_reaches_the_new_incarnation_and_refuses_the_old_generation() {
    let probe = Probe::default();
    let spec = worker("w", &probe);
    let early = spec.child_ref::<WorkerMsg>();
    assert_eq!(early.generation(), None, "not started yet");
    let (sup, _) = netrun_supervisor::spawn(SupervisorArgs::new("h", config()).child(spec))
        .await
        .unwrap();
    let w = sup.child_ref::<WorkerMsg>("w").await.unwrap();
    assert_eq!(w.generation(), Some(1));
    assert_eq!(early.generation(), Some(1));
    let first = w.actor().unwrap();
    w.send_if_generation(1, WorkerMsg::Crash).unwrap();
    wait_for("restarted", || w.generation() == Some(2)).await;
    // The same handle now reaches generation 2.
    assert_eq!(
        w.call(WorkerMsg::Ping, Some(Duration::from_secs(1)))
            .await
            .unwrap(),
        "w"
    );
    assert_eq!(early.call(WorkerMsg::Ping, None).await.unwrap(), "w");
    assert_ne!(w.actor().unwrap().get_id(), first.get_id());
    // A message meant for generation 1 is refused, not delivered to generation 2.
    assert_eq!(
        w.send_if_generation(1, WorkerMsg::Crash),
        Err(SendError::StaleGeneration {
            requested: 1,
            current: Some(2)
        })
    );
    // The dead incarnation's ref itself cannot take messages either.
    assert!(first.cast(WorkerMsg::Crash).is_err());
    assert_eq!(w.send_if_generation(2, WorkerMsg::Crash), Ok(()));
    wait_for("restarted again", || w.generation() == Some(3)).await;
    assert_eq!(sup.tree().await.unwrap().children[0].generation, 3);
    sup.shutdown().await.unwrap();
    assert_eq!(w.send(WorkerMsg::Crash), Err(SendError::NotRunning));
    assert_eq!(
        w.send_if_generation(3, WorkerMsg::Crash),
        Err(SendError::StaleGeneration {
            requested: 3,
            current: None
        })
    );
}

#[tokio::test(start_paused = true)]
async fn call_to_a_crashing_incarnation_sees_a_closed_reply_port() {
    let probe = Probe::default();
    let (sup, _) =
        netrun_supervisor::spawn(SupervisorArgs::new("q", config()).child(worker("w", &probe)))
            .await
            .unwrap();
    let w = sup.child_ref::<WorkerMsg>("w").await.unwrap();
    // Crash first, then queue a call behind it in the same mailbox: the call's reply
    // port is dropped with the incarnation.
    w.send(WorkerMsg::Crash).unwrap();
    let res = w.call(WorkerMsg::Ping, Some(Duration::from_secs(1))).await;
    assert!(matches!(res, Err(SendError::NoReply)), "{res:?}");
    wait_for("restarted", || w.generation() == Some(2)).await;
    sup.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn dynamic_children_are_added_removed_and_restarted() {
    let probe = Probe::default();
    let (sup, _) = netrun_supervisor::spawn(SupervisorArgs::new("dyn", config()))
        .await
        .unwrap();
    for i in 0..5 {
        sup.add_child(worker(&format!("session-{i}"), &probe))
            .await
            .unwrap();
    }
    assert_eq!(probe.live(), 5);
    assert!(matches!(
        sup.add_child(worker("session-2", &probe)).await,
        Err(SupervisorError::DuplicateChild(id)) if id == "session-2"
    ));
    assert_eq!(probe.live(), 5, "a duplicate is refused before it starts");
    sup.remove_child("session-1").await.unwrap();
    assert!(matches!(
        sup.remove_child("session-1").await,
        Err(SupervisorError::UnknownChild(_))
    ));
    let s3 = sup.child_ref::<WorkerMsg>("session-3").await.unwrap();
    s3.send(WorkerMsg::Crash).unwrap();
    wait_for("session-3 restarted", || s3.generation() == Some(2)).await;
    let tree = sup.tree().await.unwrap();
    let ids: Vec<_> = tree.children.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["session-0", "session-2", "session-3", "session-4"]);
    assert_eq!(probe.live(), 4);
    sup.shutdown().await.unwrap();
    assert_eq!(probe.live(), 0);
}

#[tokio::test(start_paused = true)]
async fn snapshot_serializes_the_nested_tree_as_json() {
    let probe = Probe::default();
    let inner = SupervisorArgs::new("sessions", config()).child(worker("peer-1", &probe));
    let args = SupervisorArgs::new("root", config())
        .child(worker("transport", &probe))
        .child(netrun_supervisor::ChildSpec::supervisor("sessions", inner));
    let (sup, _) = netrun_supervisor::spawn(args).await.unwrap();
    let tree = sup.tree().await.unwrap();
    let json = serde_json::to_value(&tree).unwrap();
    assert_eq!(json["name"], "root");
    assert_eq!(json["strategy"], "one_for_one");
    assert_eq!(json["children"][0]["id"], "transport");
    assert_eq!(json["children"][0]["state"]["state"], "running");
    assert_eq!(json["children"][1]["kind"], "supervisor");
    assert_eq!(
        json["children"][1]["subtree"]["children"][0]["id"],
        "peer-1"
    );
    assert_eq!(
        json["children"][1]["subtree"]["children"][0]["generation"],
        1
    );
    let back: netrun_supervisor::TreeSnapshot = serde_json::from_value(json).unwrap();
    assert_eq!(back, tree);
    let mut seen = Vec::new();
    tree.walk(&mut |_, c| seen.push(c.id.clone()));
    assert_eq!(seen, ["transport", "sessions", "peer-1"]);
    assert_eq!(child(&tree, "transport").last_exit, None::<ExitReason>);
    assert_eq!(child(&tree, "sessions").state, ChildState::Running);
    sup.shutdown().await.unwrap();
    assert_eq!(probe.live(), 0);
}

/// A worker whose factory fails while `fail` is set.
fn flaky(id: &str, probe: &Probe, fail: &Arc<AtomicBool>) -> ChildSpec {
    let name = id.to_owned();
    let probe = probe.clone();
    let fail = Arc::clone(fail);
    ChildSpec::new(id, move |sup| {
        let args = (name.clone(), probe.clone());
        let fail = fail.load(Ordering::SeqCst);
        async move {
            if fail {
                return Err(ractor::SpawnErr::StartupFailed(
                    "injected start failure".into(),
                ));
            }
            let (r, _) = ractor::Actor::spawn_linked(None, common::Worker, args, sup).await?;
            Ok(r.get_cell())
        }
    })
}

#[tokio::test(start_paused = true)]
async fn a_failing_initial_child_stops_the_started_ones_and_fails_the_start() {
    let probe = Probe::default();
    let fail = Arc::new(AtomicBool::new(true));
    let args = SupervisorArgs::new("boot", config())
        .child(worker("a", &probe))
        .child(worker("b", &probe))
        .child(flaky("c", &probe, &fail));
    assert!(netrun_supervisor::spawn(args).await.is_err());
    assert_eq!(probe.log(), ["start:a", "start:b", "stop:b", "stop:a"]);
    wait_for("dropped", || probe.live() == 0).await;
}

#[tokio::test(start_paused = true)]
async fn failed_restarts_count_as_crashes_until_the_gate_holds_them() {
    let probe = Probe::default();
    let fail = Arc::new(AtomicBool::new(false));
    let spec = flaky("f", &probe, &fail);
    let f = spec.child_ref::<WorkerMsg>();
    let (sup, _) = netrun_supervisor::spawn(SupervisorArgs::new("r", config()).child(spec))
        .await
        .unwrap();
    fail.store(true, Ordering::SeqCst);
    f.send(WorkerMsg::Crash).unwrap();
    // The crash and five failed starts make six crashes: the gate engages.
    let tree = common::wait_for_tree(&sup, "gated", |t| {
        matches!(child(t, "f").state, ChildState::Gated { .. })
    })
    .await;
    assert!(matches!(
        &child(&tree, "f").last_exit,
        Some(ExitReason::Failed(text)) if text.starts_with("start failed")
    ));
    assert!(sup.is_running());
    fail.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(59)).await;
    assert_eq!(f.generation(), None, "held by the gate");
    wait_for("restarted after cooldown", || f.generation() == Some(2)).await;
    sup.shutdown().await.unwrap();
    assert_eq!(probe.live(), 0);
}
