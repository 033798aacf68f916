//! Each strategy restarts exactly the right children, in the right order.

// Test code: helpers outside #[test] fns unwrap too.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Probe, WorkerMsg, child, wait_for_tree, worker};
use netrun_supervisor::{
    BackoffConfig, ChildState, Strategy, SupervisorArgs, SupervisorConfig, SupervisorHandle,
};

async fn three(strategy: Strategy, probe: &Probe) -> SupervisorHandle {
    let config = SupervisorConfig {
        backoff: BackoffConfig::none(),
        ..SupervisorConfig::with_strategy(strategy)
    };
    let args = SupervisorArgs::new("test", config)
        .child(worker("a", probe))
        .child(worker("b", probe))
        .child(worker("c", probe));
    let (sup, _) = netrun_supervisor::spawn(args).await.unwrap();
    assert_eq!(probe.log(), ["start:a", "start:b", "start:c"]);
    probe.clear();
    sup
}

async fn crash_b_and_settle(sup: &SupervisorHandle) -> netrun_supervisor::TreeSnapshot {
    let b = sup.child_ref::<WorkerMsg>("b").await.unwrap();
    b.send(WorkerMsg::Crash).unwrap();
    wait_for_tree(sup, "b restarted", |t| {
        let b = child(t, "b");
        b.generation == 2 && b.state == ChildState::Running
    })
    .await
}

fn generations(tree: &netrun_supervisor::TreeSnapshot) -> Vec<u64> {
    tree.children.iter().map(|c| c.generation).collect()
}

#[tokio::test(start_paused = true)]
async fn one_for_one_restarts_only_the_crashed_child() {
    let probe = Probe::default();
    let sup = three(Strategy::OneForOne, &probe).await;
    let tree = crash_b_and_settle(&sup).await;
    assert_eq!(generations(&tree), [1, 2, 1]);
    assert_eq!(probe.log(), ["start:b"]);
    assert_eq!(child(&tree, "b").restarts, 1);
    assert!(matches!(
        child(&tree, "b").last_exit,
        Some(netrun_supervisor::ExitReason::Failed(_))
    ));
    sup.shutdown().await.unwrap();
    assert_eq!(probe.live(), 0);
}

#[tokio::test(start_paused = true)]
async fn one_for_all_stops_in_reverse_and_restarts_all_in_order() {
    let probe = Probe::default();
    let sup = three(Strategy::OneForAll, &probe).await;
    let tree = wait_for_tree(&sup, "all", |_| true).await;
    assert_eq!(generations(&tree), [1, 1, 1]);
    let tree = {
        crash_b_and_settle(&sup).await;
        wait_for_tree(&sup, "all restarted", |t| generations(t) == [2, 2, 2]).await
    };
    assert_eq!(
        probe.log(),
        ["stop:c", "stop:a", "start:a", "start:b", "start:c"]
    );
    assert!(tree.children.iter().all(|c| c.state == ChildState::Running));
    assert_eq!(tree.stats.restarts, 3);
    sup.shutdown().await.unwrap();
    assert_eq!(probe.live(), 0);
}

#[tokio::test(start_paused = true)]
async fn rest_for_one_restarts_the_crashed_child_and_later_ones() {
    let probe = Probe::default();
    let sup = three(Strategy::RestForOne, &probe).await;
    crash_b_and_settle(&sup).await;
    let tree = wait_for_tree(&sup, "b and c restarted", |t| generations(t) == [1, 2, 2]).await;
    assert_eq!(probe.log(), ["stop:c", "start:b", "start:c"]);
    assert_eq!(child(&tree, "a").restarts, 0);
    sup.shutdown().await.unwrap();
    assert_eq!(probe.live(), 0);
}

#[tokio::test(start_paused = true)]
async fn rest_for_one_on_the_last_child_restarts_only_it() {
    let probe = Probe::default();
    let sup = three(Strategy::RestForOne, &probe).await;
    let c = sup.child_ref::<WorkerMsg>("c").await.unwrap();
    c.send(WorkerMsg::Panic).unwrap();
    let tree = wait_for_tree(&sup, "c restarted", |t| generations(t) == [1, 1, 2]).await;
    assert_eq!(probe.log(), ["start:c"]);
    assert!(matches!(
        &child(&tree, "c").last_exit,
        Some(netrun_supervisor::ExitReason::Failed(text)) if text.contains("injected panic")
    ));
    sup.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn rest_for_one_keeps_a_gated_later_child_gated() {
    let probe = Probe::default();
    let config = SupervisorConfig {
        backoff: BackoffConfig::none(),
        ..SupervisorConfig::with_strategy(Strategy::RestForOne)
    };
    let args = SupervisorArgs::new("g", config)
        .child(worker("a", &probe))
        .child(worker("b", &probe));
    let (sup, _) = netrun_supervisor::spawn(args).await.unwrap();
    let a = sup.child_ref::<WorkerMsg>("a").await.unwrap();
    let b = sup.child_ref::<WorkerMsg>("b").await.unwrap();
    for generation in 1..=5u64 {
        b.send(WorkerMsg::Crash).unwrap();
        common::wait_for("b restarted", || b.generation() == Some(generation + 1)).await;
    }
    b.send(WorkerMsg::Crash).unwrap();
    wait_for_tree(&sup, "b gated", |t| {
        matches!(child(t, "b").state, ChildState::Gated { .. })
    })
    .await;
    // a crashes while b is gated: a restarts at once, b stays gated.
    a.send(WorkerMsg::Crash).unwrap();
    common::wait_for("a restarted", || a.generation() == Some(2)).await;
    let tree = sup.tree().await.unwrap();
    assert!(matches!(child(&tree, "b").state, ChildState::Gated { .. }));
    assert_eq!(b.generation(), None);
    tokio::time::sleep(std::time::Duration::from_secs(61)).await;
    assert_eq!(b.generation(), Some(7));
    sup.shutdown().await.unwrap();
    assert_eq!(probe.live(), 0);
}
