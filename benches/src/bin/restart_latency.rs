//! Supervisor restart latency: from sending a crash to a permanent child until its
//! replacement has answered its first request, through a `ChildRef` held by the caller.
//!
//! The supervisor runs with no backoff, no crash-loop gate and an unlimited intensity so
//! that every sample is the restart path itself (event delivery, decision, factory spawn,
//! slot update, first message). Runs on a current-thread and a two-worker runtime and
//! prints one JSON line.
//!
//! `cargo run --release -p netrun-benches --bin restart_latency [-- SAMPLES]`

use std::time::{Duration, Instant};

use netrun_supervisor::{
    BackoffConfig, ChildRef, ChildSpec, CrashLoopConfig, RestartIntensity, SupervisorArgs,
    SupervisorConfig,
};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

const DEFAULT_SAMPLES: usize = 2_000;
const WARMUP: usize = 200;

enum Msg {
    Crash,
    Ping(RpcReplyPort<()>),
}

struct Child;

impl Actor for Child {
    type Msg = Msg;
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<Msg>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle(
        &self,
        _: ActorRef<Msg>,
        msg: Msg,
        _: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            Msg::Crash => Err("injected crash".into()),
            Msg::Ping(reply) => {
                let _ = reply.send(());
                Ok(())
            }
        }
    }
}

async fn one_restart(child: &ChildRef<Msg>) -> anyhow::Result<Duration> {
    let generation = child
        .generation()
        .ok_or_else(|| anyhow::anyhow!("child not running"))?;
    let start = Instant::now();
    child.send_if_generation(generation, Msg::Crash)?;
    while child.generation().is_none_or(|g| g == generation) {
        tokio::task::yield_now().await;
    }
    child.call(Msg::Ping, Some(Duration::from_secs(5))).await?;
    Ok(start.elapsed())
}

async fn measure(samples: usize) -> anyhow::Result<Vec<Duration>> {
    let config = SupervisorConfig {
        intensity: RestartIntensity {
            max_restarts: u32::MAX,
            period: Duration::from_secs(1),
        },
        backoff: BackoffConfig::none(),
        gate: CrashLoopConfig::disabled(),
        ..SupervisorConfig::default()
    };
    let spec = ChildSpec::actor("child", || (Child, ()));
    let child = spec.child_ref::<Msg>();
    let (sup, join) = netrun_supervisor::spawn(SupervisorArgs::new("bench", config).child(spec))
        .await
        .map_err(|e| anyhow::anyhow!("spawn: {e}"))?;
    for _ in 0..WARMUP {
        one_restart(&child).await?;
    }
    let mut out = Vec::with_capacity(samples);
    for _ in 0..samples {
        out.push(one_restart(&child).await?);
    }
    sup.shutdown().await?;
    join.await?;
    out.sort();
    Ok(out)
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx].as_secs_f64() * 1e6
}

fn summary(sorted: &[Duration]) -> serde_json::Value {
    let mean = sorted.iter().sum::<Duration>().as_secs_f64() * 1e6 / sorted.len() as f64;
    serde_json::json!({
        "samples": sorted.len(),
        "p50_us": pct(sorted, 0.50),
        "p90_us": pct(sorted, 0.90),
        "p99_us": pct(sorted, 0.99),
        "max_us": pct(sorted, 1.0),
        "mean_us": mean,
    })
}

fn main() -> anyhow::Result<()> {
    let samples = std::env::args()
        .nth(1)
        .map(|s| s.parse::<usize>())
        .transpose()?
        .unwrap_or(DEFAULT_SAMPLES);
    let current = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let single = current.block_on(measure(samples))?;
    let multi_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let multi = multi_rt.block_on(measure(samples))?;
    let line = serde_json::json!({
        "bench": "supervisor_restart_latency",
        "what": "crash sent -> replacement answered first call (ChildRef, one_for_one, no backoff)",
        "current_thread": summary(&single),
        "multi_thread_2": summary(&multi),
    });
    println!("{line}");
    Ok(())
}
