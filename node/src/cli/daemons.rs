//! Client subcommands for daemons: `daemons`, `daemon stop <origin> [--node NODE]`,
//! `daemon snapshot <origin> [--out FILE]`.

use std::path::PathBuf;

use netrun::NodeId;
use netrun::control::parse_origin;
use serde_json::{Value, json};

use super::client::{call, call_value, send, show, text};
use super::{ClientArgs, EXIT_FAILURE, EXIT_OK, EXIT_USAGE, fail};

/// `netrun daemon …` actions.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum DaemonAction {
    /// Stop a daemon: it gets Shutdown with its grace period and a final snapshot is
    /// taken; a daemon that does not stop within the grace period is stopped by force.
    Stop(StopArgs),
    /// Take a snapshot of a daemon now.
    Snapshot(SnapshotArgs),
}

/// A daemon by origin, plus the client options.
#[derive(Debug, clap::Args)]
pub(crate) struct OriginArgs {
    /// The daemon's origin hash (16 hex digits, as `netrun daemons` shows it).
    origin: String,
    #[command(flatten)]
    client: ClientArgs,
}

/// Arguments of `netrun daemon stop`.
#[derive(Debug, clap::Args)]
pub(crate) struct StopArgs {
    #[command(flatten)]
    target: OriginArgs,
    /// The node hosting the daemon, when the node this command talks to placed it there
    /// (16 hex digits); only the placing node may stop it remotely.
    #[arg(long)]
    node: Option<String>,
}

/// Arguments of `netrun daemon snapshot`.
#[derive(Debug, clap::Args)]
pub(crate) struct SnapshotArgs {
    #[command(flatten)]
    target: OriginArgs,
    /// Write the signed snapshot (its binary encoding) to this file.
    #[arg(long)]
    out: Option<PathBuf>,
}

pub(crate) fn list(args: ClientArgs) -> u8 {
    call(&args, "daemons", |v| {
        let daemons = v.as_array().cloned().unwrap_or_default();
        if daemons.is_empty() {
            println!("no daemons");
            return;
        }
        println!(
            "{:<16}  {:<16}  {:<13}  {:<9}  {:>8}  {:>10}  {:>5}",
            "ORIGIN", "KIND", "STATE", "HEALTH", "RESTARTS", "EVENTS", "LOAD"
        );
        for d in daemons {
            let n = |key: &str| d.get(key).and_then(Value::as_u64).unwrap_or(0);
            let mut state = text(&d, "state").to_owned();
            if let Some(ms) = d.get("remaining_ms").and_then(Value::as_u64) {
                state.push_str(&format!(" {}s", ms.div_ceil(1000)));
            }
            let load = d.get("saturation").and_then(Value::as_f64).unwrap_or(0.0);
            println!(
                "{:<16}  {:<16}  {:<13}  {:<9}  {:>8}  {:>10}  {:>4.0}%",
                text(&d, "origin"),
                text(&d, "kind"),
                state,
                text(&d, "health"),
                n("restarts"),
                n("events_processed"),
                load * 100.0,
            );
        }
    })
}

pub(crate) fn run(action: DaemonAction) -> u8 {
    let origin = match &action {
        DaemonAction::Stop(args) => &args.target.origin,
        DaemonAction::Snapshot(args) => &args.target.origin,
    };
    if parse_origin(origin).is_none() {
        return fail(
            EXIT_USAGE,
            format!("{origin:?} is not an origin hash (16 hex digits, see `netrun daemons`)"),
        );
    }
    match action {
        DaemonAction::Stop(args) => {
            if let Some(node) = args.node.as_deref().filter(|n| NodeId::parse(n).is_none()) {
                return fail(
                    EXIT_USAGE,
                    format!("{node:?} is not a node id (16 hex digits, see `netrun peers`)"),
                );
            }
            let request = json!({
                "op": "daemon_stop",
                "origin": args.target.origin,
                "node": args.node,
            });
            call_value(&args.target.client, request, |v| {
                match v.get("node").and_then(Value::as_str) {
                    Some(node) => println!("stopped {} on {node}", text(v, "origin")),
                    None => println!("stopped {}", text(v, "origin")),
                }
                if let Some(s) = v.get("snapshot").filter(|s| !s.is_null()) {
                    println!(
                        "final snapshot at chain seq {}, input seq {}",
                        s.get("head_seq").and_then(Value::as_u64).unwrap_or(0),
                        s.get("last_input_seq").and_then(Value::as_u64).unwrap_or(0)
                    );
                }
            })
        }
        DaemonAction::Snapshot(args) => snapshot(args),
    }
}

fn snapshot(args: SnapshotArgs) -> u8 {
    let request = json!({"op": "daemon_snapshot", "origin": args.target.origin});
    let v = match send(&args.target.client, &request) {
        Ok(v) => v,
        Err(code) => return code,
    };
    if let Some(path) = &args.out {
        let Some(Ok(bytes)) = v.get("bytes_hex").and_then(Value::as_str).map(hex::decode) else {
            return fail(EXIT_FAILURE, "the node did not send the snapshot's bytes");
        };
        if let Err(e) = std::fs::write(path, bytes) {
            return fail(
                EXIT_FAILURE,
                format!("cannot write {}: {e}", path.display()),
            );
        }
    }
    show(&args.target.client, &v, |v| {
        println!("daemon       {}", text(v, "origin"));
        println!("entity       {}", text(v, "entity"));
        for key in ["head_seq", "last_input_seq", "state_len", "encoded_len"] {
            let n = v.get(key).and_then(Value::as_u64).unwrap_or(0);
            println!("{:<12} {n}", key.replace('_', " "));
        }
        if let Some(path) = &args.out {
            println!("written to   {}", path.display());
        }
    });
    EXIT_OK
}
