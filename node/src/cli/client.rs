//! Client subcommands that talk to a running node: `status`, `peers` (`--streams`),
//! `discovery`; and the one way every client subcommand reaches the node's control socket
//! ([`send`], [`call_value`]) and prints what it answers.

use std::path::PathBuf;

use netrun::config::{ProcessEnv, default_data_dir};
use netrun::control::{ClientError, request_json};
use serde_json::Value;
use tokio::runtime::Runtime;

use super::{ClientArgs, EXIT_FAILURE, EXIT_OK, PeersArgs, fail};

/// No node is running at the data directory.
pub(crate) const EXIT_NOT_RUNNING: u8 = 3;
/// The control socket refused us.
pub(crate) const EXIT_PERMISSION: u8 = 4;

pub(crate) fn status(args: ClientArgs) -> u8 {
    call(&args, "status", |v| {
        println!("node id     {}", text(v, "node_id"));
        println!("public key  {}", text(v, "public_key"));
        println!("address     {}", text(v, "addr"));
        let uptime = v.get("uptime_ms").and_then(Value::as_u64).unwrap_or(0);
        println!("uptime      {}.{:03} s", uptime / 1000, uptime % 1000);
        println!(
            "peers       {}",
            v.get("peers").and_then(Value::as_u64).unwrap_or(0)
        );
        if let Some(c) = v.get("capabilities") {
            let n = |key: &str| c.get(key).and_then(Value::as_u64).unwrap_or(0);
            let rejected: u64 = c
                .get("rejected")
                .and_then(Value::as_object)
                .map_or(0, |r| r.values().filter_map(Value::as_u64).sum());
            println!(
                "caps        {} nodes indexed; {} announced, {} received, {} rejected",
                n("nodes"),
                n("announced"),
                n("received"),
                rejected
            );
        }
        if let Some(c) = v.get("channels") {
            let n = |key: &str| c.get(key).and_then(Value::as_u64).unwrap_or(0);
            println!(
                "channels    {} published, {} events: {} delivered, {} dropped; {} received",
                n("channels"),
                n("published"),
                n("delivered"),
                n("dropped"),
                n("events_received")
            );
        }
        print_rpc(v.get("rpc"));
        println!("tree");
        if let Some(tree) = v.get("tree") {
            println!("  root ({})", text(tree, "strategy"));
            print_tree(tree, 2);
            if let Some(sessions) = tree.get("sessions").and_then(Value::as_array) {
                for s in sessions {
                    println!("      {:<14} {}", text(s, "id"), text(s, "state"));
                }
            }
        }
    })
}

pub(crate) fn peers(args: PeersArgs) -> u8 {
    if args.streams {
        return streams(&args.client);
    }
    call(&args.client, "peers", |v| {
        let peers = v.as_array().cloned().unwrap_or_default();
        if peers.is_empty() {
            println!("no peers");
            return;
        }
        println!(
            "{:<16}  {:<21}  {:<10}  {:>9}  {:<13}",
            "NODE", "ADDRESS", "STATE", "RTT", "SOURCE"
        );
        for p in peers {
            let rtt = p
                .get("rtt_ms")
                .and_then(Value::as_f64)
                .map_or_else(|| "-".to_string(), |ms| format!("{ms:.2} ms"));
            println!(
                "{:<16}  {:<21}  {:<10}  {:>9}  {:<13}",
                text(&p, "node_id"),
                text(&p, "addr"),
                text(&p, "state"),
                rtt,
                text(&p, "source")
            );
        }
    })
}

pub(crate) fn discovery(args: ClientArgs) -> u8 {
    call(&args, "discovery", |v| {
        let backends = array(v, "backends");
        println!(
            "{:<14}  {:<8}  {:>7}  {:>7}  DETAIL",
            "BACKEND", "STATE", "FOUND", "ERRORS"
        );
        for b in &backends {
            let running = b.get("running").and_then(Value::as_bool).unwrap_or(false);
            let n = |key: &str| b.get(key).and_then(Value::as_u64).unwrap_or(0);
            println!(
                "{:<14}  {:<8}  {:>7}  {:>7}  {}",
                text(b, "name"),
                if running { "running" } else { "stopped" },
                n("found"),
                n("errors"),
                text(b, "detail")
            );
        }
        match v.get("coordinator").filter(|c| !c.is_null()) {
            Some(c) => {
                let n = |key: &str| c.get(key).and_then(Value::as_u64).unwrap_or(0);
                println!(
                    "\ncoordinator   {} peers ({} connected, {} connecting); {} reports, {} duplicates, {} mismatched dropped; connects {} ok / {} failed; {} reports dropped",
                    n("peers"),
                    n("connected"),
                    n("connecting"),
                    n("reports"),
                    n("duplicates"),
                    n("mismatched"),
                    n("connects_ok"),
                    n("connects_failed"),
                    n("dropped_reports"),
                );
            }
            None => println!("\ncoordinator   not running"),
        }
        let peers = array(v, "peers");
        if peers.is_empty() {
            return;
        }
        println!(
            "\n{:<16}  {:<13}  {:<9}  {:>8}  {:<21}  SOURCES",
            "NODE", "SOURCE", "SESSION", "ATTEMPTS", "ADDRESS"
        );
        for p in &peers {
            let connected = p.get("connected").and_then(Value::as_bool).unwrap_or(false);
            let list = |key: &str| {
                p.get(key)
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                    .unwrap_or_default()
            };
            let addrs = list("addrs");
            println!(
                "{:<16}  {:<13}  {:<9}  {:>8}  {:<21}  {}",
                text(p, "node_id"),
                text(p, "source"),
                if connected { "up" } else { "-" },
                p.get("attempts").and_then(Value::as_u64).unwrap_or(0),
                addrs.split(',').next().unwrap_or("-"),
                list("sources")
            );
        }
    })
}

fn streams(args: &ClientArgs) -> u8 {
    call(args, "streams", |v| {
        let streams = v.as_array().cloned().unwrap_or_default();
        if streams.is_empty() {
            println!("no streams");
            return;
        }
        println!(
            "{:<16}  {:>8}  {:>9}  {:>9}  {:>9}  {:>9}  {:>7}  {:>7}  {:>7}",
            "NODE", "STREAM", "WINDOW", "BUFFERED", "INFLIGHT", "SRTT", "RETX", "BACKPR", "SKIPPED"
        );
        for s in streams {
            let n = |key: &str| s.get(key).and_then(Value::as_u64).unwrap_or(0);
            let srtt = s
                .get("srtt_ms")
                .and_then(Value::as_f64)
                .map_or_else(|| "-".to_string(), |ms| format!("{ms:.2} ms"));
            println!(
                "{:<16}  {:>8}  {:>9}  {:>9}  {:>9}  {:>9}  {:>7}  {:>7}  {:>7}",
                text(&s, "node_id"),
                n("stream"),
                n("window"),
                n("buffered"),
                n("in_flight"),
                srtt,
                n("retransmits"),
                n("backpressure_events"),
                n("skipped_segments"),
            );
        }
    })
}

/// The exit code for a failed control request.
pub(crate) fn exit_code(error: &ClientError) -> u8 {
    match error {
        ClientError::NotRunning(..) => EXIT_NOT_RUNNING,
        ClientError::PermissionDenied(_) => EXIT_PERMISSION,
        _ => EXIT_FAILURE,
    }
}

/// Sends `{"op": op}` to the node and prints its result (JSON with `--json`).
pub(crate) fn call(args: &ClientArgs, op: &str, human: impl FnOnce(&Value)) -> u8 {
    call_value(args, serde_json::json!({ "op": op }), human)
}

/// Sends one request object to the node and prints its result (JSON with `--json`).
pub(crate) fn call_value(args: &ClientArgs, request: Value, human: impl FnOnce(&Value)) -> u8 {
    match send(args, &request) {
        Ok(value) => {
            show(args, &value, human);
            EXIT_OK
        }
        Err(code) => code,
    }
}

/// Sends one request object to the node and returns its result; on failure the error has
/// been reported and its exit code is returned.
pub(crate) fn send(args: &ClientArgs, request: &Value) -> Result<Value, u8> {
    runtime()?
        .block_on(request_json(&data_dir(args), request))
        .map_err(|e| fail(exit_code(&e), e))
}

/// Prints a result: as one JSON line with `--json`, else with `human`.
pub(crate) fn show(args: &ClientArgs, value: &Value, human: impl FnOnce(&Value)) {
    if args.json {
        println!("{value}");
    } else {
        human(value);
    }
}

/// The data directory of the node to talk to: `--data-dir`, else the default.
pub(crate) fn data_dir(args: &ClientArgs) -> PathBuf {
    args.data_dir
        .clone()
        .unwrap_or_else(|| default_data_dir(&ProcessEnv))
}

/// A single-threaded async runtime for one command; on failure the error has been
/// reported and its exit code is returned.
pub(crate) fn runtime() -> Result<Runtime, u8> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(EXIT_FAILURE, format!("cannot start the async runtime: {e}")))
}

/// The `rpc` part of `status`: served services and per-service call metrics.
fn print_rpc(rpc: Option<&Value>) {
    let Some(rpc) = rpc.filter(|r| !r.is_null()) else {
        return;
    };
    let services: Vec<&str> = rpc
        .get("services")
        .and_then(Value::as_array)
        .map(|s| s.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    println!(
        "rpc         serving [{}]; {} calls pending, {} requests in flight",
        services.join(", "),
        rpc.get("pending_calls")
            .and_then(Value::as_u64)
            .unwrap_or(0),
        rpc.get("in_flight").and_then(Value::as_u64).unwrap_or(0),
    );
    for (direction, label) in [("outbound", "called"), ("inbound", "served")] {
        let Some(map) = rpc.get(direction).and_then(Value::as_object) else {
            continue;
        };
        for (service, m) in map {
            let n = |k: &str| m.get(k).and_then(Value::as_u64);
            let errors = m
                .get("errors")
                .and_then(Value::as_object)
                .map(|e| {
                    e.iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default();
            let us = |k: &str| n(k).map_or_else(|| "-".to_string(), |v| format!("{v}µs"));
            println!(
                "  {label:<6} {service:<24} calls={} ok={} p50={} p99={} {errors}",
                n("calls").unwrap_or(0),
                n("ok").unwrap_or(0),
                us("p50_us"),
                us("p99_us"),
            );
        }
    }
}

/// The string at `key`, or `-`.
pub(crate) fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("-")
}

/// The array at `key` (empty if there is none).
pub(crate) fn array(v: &Value, key: &str) -> Vec<Value> {
    v.get(key)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// Prints a supervisor snapshot (`name`, `strategy`, `children`) and its children
/// (`id`, `state`, `restarts`, `last_exit`, `subtree`) as an indented tree.
fn print_tree(supervisor: &Value, depth: usize) {
    let children = array(supervisor, "children");
    for child in children {
        let state = child
            .get("state")
            .and_then(|s| s.get("state"))
            .and_then(Value::as_str)
            .unwrap_or("-");
        let mut line = format!(
            "{}{:<14} {:<10}",
            "  ".repeat(depth),
            text(&child, "id"),
            state
        );
        if let Some(restarts) = child.get("restarts").and_then(Value::as_u64) {
            line.push_str(&format!(" restarts={restarts}"));
        }
        if let Some(exit) = child.get("last_exit").filter(|e| !e.is_null()) {
            line.push_str(&format!(" last_exit={exit}"));
        }
        println!("{line}");
        if let Some(sub) = child.get("subtree").filter(|s| !s.is_null()) {
            print_tree(sub, depth + 1);
        }
    }
}
