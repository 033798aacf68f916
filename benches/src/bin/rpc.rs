//! nRPC benchmark: unary round trips and throughput between two nodes on loopback.
//!
//! For each placement (both nodes in this process; the server in a child process) it
//! measures, against an echo service:
//! - round-trip latency with one caller (p50, p99, mean) for raw bodies of 32 B and 1 KiB
//!   (`Node::call`) and for typed bodies of about the same encoded size
//!   (`Node::call_typed`, rmp-serde both ways);
//! - throughput with 128 concurrent callers (calls per second, and their p50/p99), raw and
//!   typed, 32 B.
//!
//! Every result is one JSON line on stdout. Throughput lines also report the CPU time the
//! processes involved spent per call (user + system, from `/proc`), which says what the
//! calls cost when other work shares the machine and the wall-clock rate does not.
//!
//! ```sh
//! cargo run --release -p netrun-benches --bin rpc            # full run
//! cargo run --release -p netrun-benches --bin rpc -- --quick # smaller counts
//! # a subset (for profiling): --only unary|qps, --placement in-process|two-process
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use bytes::Bytes;
use netrun::rpc::{CallOptions, HandlerError, RequestContext};
use netrun::{Node, NodeId};
use netrun_benches::{hello, micros, percentile, spawn_server};
use serde::{Deserialize, Serialize};
use serde_json::json;

const PSK: [u8; 32] = [0x6b; 32];
/// Concurrent callers of the throughput runs.
const CONCURRENCY: usize = 128;

/// The typed request and response: a sequence number and some text.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Echo {
    seq: u64,
    text: String,
}

impl Echo {
    /// A message whose rmp-serde encoding (with field names) is `size` bytes or a few more.
    fn of_size(size: usize) -> Self {
        // Map header, two keys with their string headers and a u64: about 20 bytes.
        let text = "x".repeat(size.saturating_sub(20));
        Self { seq: 1, text }
    }
}

/// Serves `echo` (raw) and `echo.typed` (typed) until the handles are dropped.
fn serve(node: &Node) -> Result<Vec<netrun::rpc::ServeHandle>> {
    let raw = node.serve("echo", |request: RequestContext| async move {
        Ok::<_, HandlerError>(request.body().clone())
    })?;
    let typed = node.serve_typed(
        "echo.typed",
        |_request: RequestContext, echo: Echo| async move { Ok::<_, HandlerError>(echo) },
    )?;
    Ok(vec![raw, typed])
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Body {
    Raw,
    Typed,
}

impl Body {
    fn name(self) -> &'static str {
        match self {
            Body::Raw => "raw",
            Body::Typed => "typed",
        }
    }
}

/// One call of the given kind.
async fn one_call(
    node: &Node,
    peer: NodeId,
    body: Body,
    raw: &Bytes,
    typed: &Echo,
    options: &CallOptions,
) -> Result<()> {
    match body {
        Body::Raw => {
            let answer = node.call(peer, "echo", raw.clone(), options).await?;
            if answer.len() != raw.len() {
                return Err(anyhow!("echo changed the body"));
            }
        }
        Body::Typed => {
            let answer: Echo = node.call_typed(peer, "echo.typed", typed, options).await?;
            if answer.text.len() != typed.text.len() {
                return Err(anyhow!("echo changed the body"));
            }
        }
    }
    Ok(())
}

/// Sequential round trips from one caller.
async fn latency(
    node: &Node,
    peer: NodeId,
    body: Body,
    size: usize,
    iterations: usize,
) -> Result<Vec<Duration>> {
    let raw = Bytes::from(vec![0x5a; size]);
    let typed = Echo::of_size(size);
    let options = CallOptions::default();
    let warmup = iterations / 10;
    let mut samples = Vec::with_capacity(iterations);
    for i in 0..iterations + warmup {
        let start = Instant::now();
        one_call(node, peer, body, &raw, &typed, &options).await?;
        if i >= warmup {
            samples.push(start.elapsed());
        }
    }
    samples.sort();
    Ok(samples)
}

/// `CONCURRENCY` callers in a loop for `duration`: completed calls and their latencies.
async fn throughput(
    node: &Node,
    peer: NodeId,
    body: Body,
    size: usize,
    duration: Duration,
) -> Result<(u64, Duration, Vec<Duration>)> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::with_capacity(CONCURRENCY);
    let start = Instant::now();
    for _ in 0..CONCURRENCY {
        let node = node.clone();
        let stop = Arc::clone(&stop);
        tasks.push(tokio::spawn(async move {
            let raw = Bytes::from(vec![0x5a; size]);
            let typed = Echo::of_size(size);
            let options = CallOptions::default();
            let mut samples = Vec::new();
            let mut errors = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                match one_call(&node, peer, body, &raw, &typed, &options).await {
                    Ok(()) => samples.push(t.elapsed()),
                    Err(_) => errors += 1,
                }
            }
            (samples, errors)
        }));
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (samples, e) = task.await?;
        all.extend(samples);
        errors += e;
    }
    let elapsed = start.elapsed();
    all.sort();
    Ok((errors, elapsed, all))
}

/// What to run.
struct Plan {
    quick: bool,
    unary: bool,
    qps: bool,
}

/// CPU time (user + system) `pid` has used so far, from `/proc/<pid>/stat`.
fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on Linux.
    Some(Duration::from_millis(ticks * 10))
}

/// CPU time used so far by this process and `others`.
fn cpu_of(others: &[u32]) -> Duration {
    std::iter::once(std::process::id())
        .chain(others.iter().copied())
        .filter_map(cpu_time)
        .sum()
}

async fn run(
    node: &Node,
    peer: NodeId,
    placement: &str,
    plan: &Plan,
    others: &[u32],
) -> Result<()> {
    let iterations = if plan.quick { 2_000 } else { 20_000 };
    let duration = Duration::from_secs(if plan.quick { 2 } else { 5 });
    for body in [Body::Raw, Body::Typed].into_iter().filter(|_| plan.unary) {
        for size in [32usize, 1024] {
            let samples = latency(node, peer, body, size, iterations).await?;
            let mean = samples.iter().sum::<Duration>() / samples.len().max(1) as u32;
            let line = json!({
                "bench": "rpc_unary", "placement": placement, "body": body.name(), "size": size,
                "callers": 1, "iterations": samples.len(),
                "p50_us": micros(percentile(&samples, 50.0)),
                "p99_us": micros(percentile(&samples, 99.0)),
                "mean_us": micros(mean),
            });
            println!("{line}");
        }
    }
    for body in [Body::Raw, Body::Typed].into_iter().filter(|_| plan.qps) {
        let cpu_before = cpu_of(others);
        let (errors, elapsed, samples) = throughput(node, peer, body, 32, duration).await?;
        let cpu = cpu_of(others).saturating_sub(cpu_before);
        let cpu_per_call = cpu.as_secs_f64() / samples.len().max(1) as f64;
        let line = json!({
            "bench": "rpc_qps", "placement": placement, "body": body.name(), "size": 32,
            "callers": CONCURRENCY, "calls": samples.len(), "errors": errors,
            "seconds": elapsed.as_secs_f64(),
            "qps": samples.len() as f64 / elapsed.as_secs_f64(),
            "p50_us": micros(percentile(&samples, 50.0)),
            "p99_us": micros(percentile(&samples, 99.0)),
            "cpu_us_per_call": cpu_per_call * 1e6,
            "cpus": std::thread::available_parallelism().map_or(1, |n| n.get()),
        });
        println!("{line}");
    }
    Ok(())
}

/// Child process: a node serving the echo services until killed.
async fn run_server() -> Result<()> {
    let node = Node::builder().psk(PSK).start().await?;
    let _services = serve(&node)?;
    println!("{}", hello(&node));
    std::future::pending::<()>().await;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--serve") {
        return run_server().await;
    }
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .map(String::as_str)
    };
    let only = value("--only");
    let plan = Plan {
        quick: args.iter().any(|a| a == "--quick"),
        unary: only.is_none_or(|o| o == "unary"),
        qps: only.is_none_or(|o| o == "qps"),
    };
    let placement = value("--placement");

    // Both nodes in this process.
    if placement.is_none_or(|p| p == "in-process") {
        let client = Node::builder().psk(PSK).start().await?;
        let server = Node::builder().psk(PSK).start().await?;
        let _services = serve(&server)?;
        let peer = client
            .connect(server.local_addr(), server.public_key())
            .await?;
        // The server installs its keys a moment after the client's connect returns.
        tokio::time::sleep(Duration::from_millis(50)).await;
        run(&client, peer, "in-process", &plan, &[]).await?;
        client.shutdown().await;
        server.shutdown().await;
    }

    if placement.is_some_and(|p| p != "two-process") {
        return Ok(());
    }
    // The server in a child process.
    let mut server = spawn_server(&["--serve"]).await?;
    let (client, peer) = server.connect(PSK).await?;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let child_pid: Vec<u32> = server.child.id().into_iter().collect();
    run(&client, peer, "two-process", &plan, &child_pid).await?;
    client.shutdown().await;
    server.child.kill().await?;
    Ok(())
}
