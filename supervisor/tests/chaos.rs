//! 1,000 seeded random crash injections into a tree of nested supervisors.
//!
//! Invariants checked at the end:
//! - no leaked actor: every worker or supervisor cell ever spawned is either the current
//!   incarnation of some child or stopped, and the live-worker counter equals the running
//!   workers in the tree;
//! - every permanent child (at every level) is running;
//! - after shutdown nothing is left.

// Test code: helpers outside #[test] fns unwrap too.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{Probe, WorkerMsg, wait_for_tree, worker};
use netrun_supervisor::{
    BackoffConfig, ChildKind, ChildRef, ChildSpec, ChildState, CrashLoopConfig, Restart,
    RestartIntensity, Strategy, SupervisorArgs, SupervisorConfig, TreeSnapshot,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const INJECTIONS: usize = 1_000;
const SEED: u64 = 0x6e65_7472_756e;

fn subtree_config(strategy: Strategy) -> SupervisorConfig {
    SupervisorConfig {
        strategy,
        intensity: RestartIntensity {
            max_restarts: 8,
            period: Duration::from_millis(500),
        },
        backoff: BackoffConfig {
            initial: Duration::from_millis(1),
            max: Duration::from_millis(16),
            reset_after: Duration::from_millis(200),
            immediate_first: true,
        },
        gate: CrashLoopConfig {
            max_crashes: 4,
            window: Duration::from_millis(200),
            cooldown: Duration::from_millis(50),
        },
    }
}

/// A child supervisor whose every incarnation is recorded in the probe.
fn tracked_supervisor(id: &str, args: SupervisorArgs, probe: &Probe) -> ChildSpec {
    let probe = probe.clone();
    ChildSpec::new(id, move |parent| {
        let args = args.clone();
        let probe = probe.clone();
        async move {
            let handle = netrun_supervisor::spawn_linked(args, parent).await?;
            probe.track(handle.cell());
            Ok(handle.cell())
        }
    })
    .kind(ChildKind::Supervisor)
    .shutdown(Duration::from_secs(5))
}

struct Target {
    handle: ChildRef<WorkerMsg>,
    supervisor: bool,
}

fn workers(prefix: &str, probe: &Probe, targets: &mut Vec<Target>) -> Vec<ChildSpec> {
    (0..4)
        .map(|i| {
            let name = format!("{prefix}/w{i}");
            let mut spec = worker(&name, probe);
            if i == 1 {
                spec = spec.restart(Restart::Transient);
            }
            targets.push(Target {
                handle: spec.child_ref(),
                supervisor: false,
            });
            spec
        })
        .collect()
}

fn check_permanent_running(tree: &TreeSnapshot) -> Result<(), String> {
    let mut bad = Vec::new();
    tree.walk(&mut |parent, c| {
        if c.restart == Restart::Permanent && c.state != ChildState::Running {
            bad.push(format!("{}/{}: {:?}", parent.name, c.id, c.state));
        }
    });
    if bad.is_empty() {
        Ok(())
    } else {
        Err(bad.join(", "))
    }
}

#[tokio::test(start_paused = true)]
async fn random_crash_injection_leaks_nothing_and_restores_every_permanent_child() {
    // Injected panics are expected; keep the output readable.
    std::panic::set_hook(Box::new(|_| {}));
    let probe = Probe::default();
    let mut targets = Vec::new();

    let mut deep = SupervisorArgs::new("deep", subtree_config(Strategy::OneForOne));
    deep.children = workers("deep", &probe, &mut targets);
    let mut subtrees = Vec::new();
    for (name, strategy) in [
        ("ofo", Strategy::OneForOne),
        ("ofa", Strategy::OneForAll),
        ("rfo", Strategy::RestForOne),
    ] {
        let mut args = SupervisorArgs::new(name, subtree_config(strategy));
        args.children = workers(name, &probe, &mut targets);
        if name == "rfo" {
            let spec = tracked_supervisor("deep", deep.clone(), &probe);
            targets.push(Target {
                handle: spec.child_ref(),
                supervisor: true,
            });
            args.children.insert(2, spec);
        }
        let spec = tracked_supervisor(name, args, &probe);
        targets.push(Target {
            handle: spec.child_ref(),
            supervisor: true,
        });
        subtrees.push(spec);
    }
    let root_config = SupervisorConfig {
        intensity: RestartIntensity {
            max_restarts: 100_000,
            period: Duration::from_secs(1),
        },
        backoff: BackoffConfig::none(),
        gate: CrashLoopConfig::disabled(),
        ..SupervisorConfig::default()
    };
    let mut root_args = SupervisorArgs::new("root", root_config);
    root_args.children = subtrees;
    let (root, root_join) = netrun_supervisor::spawn(root_args).await.unwrap();
    let before = probe.live();
    assert_eq!(before, 16);

    // CHAOS_SEED=n reruns the scenario with another seed.
    let seed = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(SEED);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut delivered = 0usize;
    let mut kinds = [0usize; 7];
    while delivered < INJECTIONS {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..12))).await;
        let target = &targets[rng.gen_range(0..targets.len())];
        let roll = rng.gen_range(0..100);
        let ok = if target.supervisor {
            // A whole subtree dies: killed, or failed with an unknown stop reason.
            let Some(cell) = target.handle.cell() else {
                continue;
            };
            if roll < 50 {
                cell.kill();
                kinds[5] += 1;
            } else {
                cell.stop(Some("injected subtree failure".into()));
                kinds[6] += 1;
            }
            true
        } else {
            let (msg, kind) = match roll {
                0..35 => (WorkerMsg::Crash, 0),
                35..50 => (WorkerMsg::Panic, 1),
                50..65 => (WorkerMsg::StopWith(None), 2),
                65..80 => (WorkerMsg::StopWith(Some("migrated".into())), 3),
                _ => {
                    if let Some(cell) = target.handle.cell() {
                        cell.kill();
                        kinds[4] += 1;
                        delivered += 1;
                    }
                    continue;
                }
            };
            let ok = target.handle.send(msg).is_ok();
            if ok {
                kinds[kind] += 1;
            }
            ok
        };
        if ok {
            delivered += 1;
        }
    }

    // Let every backoff and gate cooldown run out, then expect a fully running tree.
    wait_for_tree(&root, "every permanent child running", |t| {
        check_permanent_running(t).is_ok()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let tree_after = root.tree().await.unwrap();
    check_permanent_running(&tree_after).unwrap();

    // Live workers == running workers in the tree.
    let mut running_workers = 0;
    tree_after.walk(&mut |_, c| {
        if c.kind == ChildKind::Worker && c.state == ChildState::Running {
            running_workers += 1;
        }
    });
    common::wait_for("dead incarnations dropped", || {
        probe.live() == running_workers
    })
    .await;

    // Every cell ever spawned is current or stopped.
    let current: HashSet<_> = targets
        .iter()
        .filter_map(|t| t.handle.cell())
        .map(|c| c.get_id())
        .collect();
    let cells = probe.cells();
    let leaked: Vec<_> = cells
        .iter()
        .filter(|c| !current.contains(&c.get_id()))
        .filter(|c| c.get_status() != ractor::ActorStatus::Stopped)
        .collect();
    assert!(leaked.is_empty(), "{} leaked actors", leaked.len());

    let stats = tree_after.stats;
    let mut total_restarts = stats.restarts;
    tree_after.walk(&mut |_, c| {
        if let Some(sub) = &c.subtree {
            total_restarts += sub.stats.restarts;
        }
    });
    println!(
        "injections: crash {} panic {} normal {} migrated {} kill {} subtree-kill {} subtree-fail {}; \
         cells spawned {}; root restarts {}; restarts in live incarnations {}",
        kinds[0],
        kinds[1],
        kinds[2],
        kinds[3],
        kinds[4],
        kinds[5],
        kinds[6],
        cells.len(),
        stats.restarts,
        total_restarts
    );
    assert!(cells.len() > 500, "injections really restarted things");

    root.shutdown().await.unwrap();
    root_join.await.unwrap();
    common::wait_for("all dropped", || probe.live() == 0).await;
    assert!(
        probe
            .cells()
            .iter()
            .all(|c| c.get_status() == ractor::ActorStatus::Stopped)
    );
    let _ = std::panic::take_hook();
}
