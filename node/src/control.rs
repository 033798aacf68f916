//! The control protocol: JSON lines over the node's Unix socket.
//!
//! Request: `{"op": "status"}`, `{"op": "peers"}`, `{"op": "streams"}`,
//! `{"op": "discovery"}`, `{"op": "daemons"}`, or `{"op": "daemon_stop", "origin": "…"}`
//! (with `"node": "…"` to stop a daemon this node placed on another node) /
//! `{"op": "daemon_snapshot", "origin": "…"}` (origin: 16 hex digits). Response:
//! `{"ok": true, "result": …}` or `{"ok": false, "error": "…"}`. `{"op": "rpc_call", "node":
//! "<16 hex>", "service": "…", "body": <json>, "timeout_ms": n}` makes an nRPC call with the
//! body encoded as rmp-serde and answers `{"node", "service", "latency_us", "body": <json>}`
//! (or `"body_hex"` when the response is not rmp-serde). Channel and capability operations
//! take their arguments beside the op: `{"op": "caps", "filter": "gpu,tag=x"}`,
//! `{"op": "channels"}`, `{"op": "channel_publish", "name": …, "data": …}`,
//! `{"op": "channel_subscribe", "publisher": …, "name": …}`, `{"op": "channel_poll",
//! "subscription": N, "wait_ms": …}`, `{"op": "channel_unsubscribe", "subscription": N}`
//! (see `docs/operations.md`). The `result` objects are the `--json` output of the
//! matching CLI commands, a stable contract for scripts.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, Weak};

use netrun_actors::control::{ControlService, Reply};
use serde::Deserialize;
use serde_json::{Value, json};
use thiserror::Error;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::daemons::{DaemonHealth, DaemonSnapshot, DaemonState};
use crate::node::{Inner, Node};
use crate::{DiscoverySource, FoundPeer, NodeId, OriginHash};

/// Name of the control socket inside a node's data directory.
pub const CONTROL_SOCKET: &str = "control.sock";

/// Channel subscriptions the control socket holds at once for `netrun channel subscribe`
/// clients, counting subscribe requests still waiting for their publisher; a request beyond
/// it is refused.
pub const MAX_SUBSCRIPTIONS: usize = 64;

#[derive(Debug, Deserialize)]
struct Request {
    op: String,
    /// The daemon an op is about (`daemon_stop`, `daemon_snapshot`): 16 hex digits.
    #[serde(default)]
    origin: Option<String>,
    /// `daemon_stop` only: the node hosting the daemon, when this node placed it there.
    #[serde(default)]
    node: Option<String>,
}

/// The control service of a node (holds only a weak reference to it).
pub(crate) fn service(node: Arc<OnceLock<Weak<Inner>>>) -> ControlService {
    Arc::new(move |line: String| -> Reply {
        let node = node.get().and_then(Weak::upgrade);
        Box::pin(async move {
            let Some(inner) = node else {
                return json!({"ok": false, "error": "node is shutting down"}).to_string();
            };
            let node = Node::from_inner(inner);
            let response = match serde_json::from_str::<Request>(&line) {
                Ok(req) => match req.op.as_str() {
                    "status" => json!({"ok": true, "result": status(&node).await}),
                    "peers" => json!({"ok": true, "result": peers(&node).await}),
                    "streams" => json!({"ok": true, "result": streams(&node).await}),
                    "discovery" => json!({"ok": true, "result": discovery(&node).await}),
                    "daemons" => json!({"ok": true, "result": daemons(&node).await}),
                    "daemon_stop" | "daemon_snapshot" => daemon_op(&node, &req).await,
                    "rpc_call" => match serde_json::from_str::<RpcCall>(&line) {
                        Ok(call) => match rpc_call(&node, call).await {
                            Ok(result) => json!({"ok": true, "result": result}),
                            Err(e) => json!({"ok": false, "error": e}),
                        },
                        Err(e) => json!({"ok": false, "error": format!("bad rpc_call: {e}")}),
                    },
                    other => {
                        let request: Value = serde_json::from_str(&line).unwrap_or_default();
                        match crate::channels::control(&node, other, &request).await {
                            Some(answer) => answer,
                            None => json!({"ok": false, "error": format!("unknown op {other:?}")}),
                        }
                    }
                },
                Err(e) => json!({"ok": false, "error": format!("bad request: {e}")}),
            };
            response.to_string()
        })
    })
}

/// The `status` result.
pub async fn status(node: &Node) -> Value {
    let stats: serde_json::Map<String, Value> = node
        .stats()
        .fields()
        .into_iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    json!({
        "node_id": node.node_id().to_string(),
        "public_key": node.public_key().to_hex(),
        "addr": node.local_addr().to_string(),
        "uptime_ms": u64::try_from(node.uptime().as_millis()).unwrap_or(u64::MAX),
        "peers": node.peers().await.len(),
        "tree": node.tree().await,
        "daemons": daemons(node).await,
        "daemon_control": {
            "malformed": node.daemon_control_counters().0,
            "unsolicited": node.daemon_control_counters().1,
        },
        "stats": stats,
        "rpc": node.rpc_status().await,
        "capabilities": crate::channels::capability_status_value(node),
        "channels": crate::channels::channel_status_value(node),
    })
}

/// An `rpc_call` request.
#[derive(Debug, Deserialize)]
struct RpcCall {
    node: String,
    service: String,
    #[serde(default)]
    body: Value,
    timeout_ms: Option<u64>,
}

/// Makes the call of an `rpc_call` request; the error is the text the client shows.
async fn rpc_call(node: &Node, call: RpcCall) -> Result<Value, String> {
    let target = u64::from_str_radix(&call.node, 16)
        .ok()
        .filter(|_| call.node.len() == 16)
        .map(crate::NodeId)
        .ok_or_else(|| format!("bad node id {:?} (16 hex digits)", call.node))?;
    let body = rmp_serde::to_vec_named(&call.body).map_err(|e| format!("body: {e}"))?;
    let mut options = crate::rpc::CallOptions::default();
    if let Some(ms) = call.timeout_ms {
        options = options.with_deadline(std::time::Duration::from_millis(ms.max(1)));
    }
    let started = tokio::time::Instant::now();
    let answer = node
        .call(target, &call.service, body, &options)
        .await
        .map_err(|e| format!("rpc call failed: {e}"))?;
    let latency = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    let mut result = json!({
        "node": target.to_string(),
        "service": call.service,
        "latency_us": latency,
    });
    match rmp_serde::from_slice::<Value>(&answer) {
        Ok(body) => result["body"] = body,
        Err(_) => result["body_hex"] = Value::String(hex::encode(&answer)),
    }
    Ok(result)
}

/// The `peers` result: every session, with how the peer was found (`source`: the first
/// way, `sources`: every way; `inbound` when no backend reported it).
pub async fn peers(node: &Node) -> Value {
    let found: HashMap<NodeId, FoundPeer> = node
        .discovered()
        .await
        .into_iter()
        .map(|p| (p.node, p))
        .collect();
    let peers: Vec<Value> = node
        .peers()
        .await
        .into_iter()
        .map(|p| {
            let (source, sources) = match found.get(&p.node) {
                Some(f) => (f.source, f.sources.clone()),
                None => (DiscoverySource::Inbound, vec![DiscoverySource::Inbound]),
            };
            json!({
                "node_id": p.node.to_string(),
                "public_key": p.entity.to_hex(),
                "addr": p.addr.to_string(),
                "state": format!("{:?}", p.state).to_lowercase(),
                "rtt_ms": p.rtt.map(|d| d.as_secs_f64() * 1000.0),
                "initiator": p.initiator,
                "source": source.as_str(),
                "sources": sources.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
            })
        })
        .collect();
    Value::Array(peers)
}

/// The `discovery` result: each backend's status, the coordinator's counters, and every
/// peer discovery knows of.
pub async fn discovery(node: &Node) -> Value {
    let status = node.discovery_status().await;
    let backends: Vec<Value> = status
        .backends
        .iter()
        .map(|b| {
            json!({
                "name": b.name,
                "running": b.running,
                "found": b.found,
                "errors": b.errors,
                "detail": b.detail,
            })
        })
        .collect();
    let coordinator = status.coordinator.map(|c| {
        let t = c.table;
        json!({
            "peers": c.peers,
            "connected": c.connected,
            "connecting": c.connecting,
            "reports": t.reports,
            "new_peers": t.new_peers,
            "duplicates": t.duplicates,
            "mismatched": t.mismatched,
            "table_full": t.table_full,
            "evicted": t.evicted,
            "connects_started": t.connects_started,
            "connects_ok": t.connects_ok,
            "connects_failed": t.connects_failed,
            "dropped_reports": c.dropped_reports,
        })
    });
    let peers: Vec<Value> = node
        .discovered()
        .await
        .into_iter()
        .map(|p| {
            json!({
                "node_id": p.node.to_string(),
                "public_key": p.entity.to_hex(),
                "addrs": p.addrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "source": p.source.as_str(),
                "sources": p.sources.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
                "connected": p.connected,
                "attempts": p.attempts,
                "last_error": p.last_error,
            })
        })
        .collect();
    json!({
        "backends": backends,
        "coordinator": coordinator,
        "peers": peers,
    })
}

/// The `streams` result: one object per open stream of every session.
pub async fn streams(node: &Node) -> Value {
    let streams: Vec<Value> = node
        .streams()
        .await
        .into_iter()
        .map(|(peer, id, s)| {
            json!({
                "node_id": peer.to_string(),
                "stream": id,
                "window": s.window,
                "buffered": s.buffered,
                "in_flight": s.in_flight,
                "tracked": s.tracked,
                "tx_seq": s.tx_seq,
                "rx_seq": s.rx_seq,
                "srtt_ms": s.srtt.map(|d| d.as_secs_f64() * 1000.0),
                "rto_ms": s.rto.as_secs_f64() * 1000.0,
                "cwnd": s.cwnd,
                "retransmits": s.retransmits,
                "backpressure_events": s.backpressure_events,
                "delivered_bytes": s.delivered_bytes,
                "consumed_bytes": s.consumed_bytes,
                "duplicates": s.duplicates,
                "late_dropped": s.late_dropped,
                "skipped_segments": s.skipped_segments,
                "overruns": s.overruns,
                "grants_sent": s.grants_sent,
                "nacks_sent": s.nacks_sent,
                "probes_sent": s.probes_sent,
            })
        })
        .collect();
    Value::Array(streams)
}

/// Why a client request failed.
#[derive(Debug, Error)]
pub enum ClientError {
    /// No socket at the path: no node is running there.
    #[error("no node is running at {0} (start one with `netrun start --data-dir {1}`)")]
    NotRunning(PathBuf, PathBuf),
    /// The socket exists but we may not use it.
    #[error("permission denied on {0}; run as the user that started the node")]
    PermissionDenied(PathBuf),
    /// The node answered with an error.
    #[error("the node refused the request: {0}")]
    Refused(String),
    /// Talking to the socket failed.
    #[error("control socket {0}: {1}")]
    Io(PathBuf, io::Error),
    /// The answer was not valid JSON.
    #[error("unreadable answer from the node: {0}")]
    BadAnswer(String),
}

/// Sends one request to the node whose data directory is `data_dir`.
pub async fn request(data_dir: &Path, op: &str) -> Result<Value, ClientError> {
    request_json(data_dir, &json!({ "op": op })).await
}

/// Sends one request object (`{"op": …, …}`) to the node whose data directory is
/// `data_dir`.
pub async fn request_json(data_dir: &Path, request: &Value) -> Result<Value, ClientError> {
    let path = data_dir.join(CONTROL_SOCKET);
    let stream = UnixStream::connect(&path)
        .await
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
                ClientError::NotRunning(path.clone(), data_dir.to_path_buf())
            }
            io::ErrorKind::PermissionDenied => ClientError::PermissionDenied(path.clone()),
            _ => ClientError::Io(path.clone(), e),
        })?;
    let (read, mut write) = stream.into_split();
    let line = format!("{request}\n");
    write
        .write_all(line.as_bytes())
        .await
        .map_err(|e| ClientError::Io(path.clone(), e))?;
    let mut answer = String::new();
    BufReader::new(read)
        .read_line(&mut answer)
        .await
        .map_err(|e| ClientError::Io(path.clone(), e))?;
    let value: Value =
        serde_json::from_str(answer.trim()).map_err(|e| ClientError::BadAnswer(e.to_string()))?;
    if value.get("ok") == Some(&Value::Bool(true)) {
        Ok(value.get("result").cloned().unwrap_or(Value::Null))
    } else {
        let error = value
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("unknown error");
        Err(ClientError::Refused(error.to_string()))
    }
}

/// The `daemons` result: one object per hosted daemon.
pub async fn daemons(node: &Node) -> Value {
    let list: Vec<Value> = node
        .daemons()
        .await
        .into_iter()
        .map(|d| {
            let (health, reason) = match &d.health {
                DaemonHealth::Healthy => ("healthy", None),
                DaemonHealth::Degraded { reason } => ("degraded", Some(reason.clone())),
                DaemonHealth::Unhealthy { reason } => ("unhealthy", Some(reason.clone())),
            };
            let remaining_ms = match d.state {
                DaemonState::BackingOff { remaining } | DaemonState::CrashLoop { remaining } => {
                    Some(u64::try_from(remaining.as_millis()).unwrap_or(u64::MAX))
                }
                _ => None,
            };
            json!({
                "origin": d.origin.to_string(),
                "entity": d.entity.to_hex(),
                "kind": d.kind,
                "name": d.name,
                "node_id": d.node.to_string(),
                "state": d.state.as_str(),
                "remaining_ms": remaining_ms,
                "health": health,
                "health_reason": reason,
                "saturation": d.saturation,
                "restarts": d.restarts,
                "events_processed": d.events_processed,
                "events_accepted": d.events_accepted,
                "outputs": d.outputs,
                "failures": d.failures,
                "snapshots": d.snapshots,
                "head_seq": d.head_seq,
                "last_failure": d.last_failure,
            })
        })
        .collect();
    Value::Array(list)
}

/// Largest snapshot whose bytes a `daemon_snapshot` answer carries (as hex); larger ones
/// are described without their bytes so one answer line stays small.
pub const MAX_SNAPSHOT_HEX_BYTES: usize = 1024 * 1024;

/// `daemon_stop` and `daemon_snapshot`: the answer for daemon `origin` (stopped on another
/// node when `node` names one this node placed it on).
async fn daemon_op(node: &Node, req: &Request) -> Value {
    let Some(origin) = req.origin.as_deref().and_then(parse_origin) else {
        return json!({"ok": false, "error": "`origin` must be 16 hex digits"});
    };
    let host = match req.node.as_deref().map(NodeId::parse) {
        None => None,
        Some(Some(host)) if host != node.node_id() => Some(host),
        Some(Some(_)) => None,
        Some(None) => return json!({"ok": false, "error": "`node` must be 16 hex digits"}),
    };
    let result = if let Some(host) = host.filter(|_| req.op == "daemon_stop") {
        node.stop_daemon_on(host, origin).await.map(|()| {
            json!({
                "origin": origin.to_string(),
                "node": host.to_string(),
                "stopped": true,
                "snapshot": null,
            })
        })
    } else if req.op == "daemon_stop" {
        node.stop_daemon(origin).await.map(|snapshot| {
            json!({
                "origin": origin.to_string(),
                "stopped": true,
                "snapshot": snapshot.as_ref().map(snapshot_json),
            })
        })
    } else {
        node.snapshot_daemon(origin)
            .await
            .map(|snapshot| snapshot_json(&snapshot))
    };
    match result {
        Ok(value) => json!({"ok": true, "result": value}),
        Err(e) => json!({"ok": false, "error": e.to_string()}),
    }
}

fn snapshot_json(snapshot: &DaemonSnapshot) -> Value {
    let bytes = snapshot.to_bytes().ok();
    let hex = bytes
        .as_ref()
        .filter(|b| b.len() <= MAX_SNAPSHOT_HEX_BYTES)
        .map(hex::encode);
    json!({
        "origin": snapshot.origin().to_string(),
        "entity": snapshot.entity.to_hex(),
        "head_seq": snapshot.head.seq,
        "last_input_seq": snapshot.last_input_seq,
        "state_len": snapshot.state.as_ref().map_or(0, |s| s.len()),
        "encoded_len": bytes.as_ref().map(Vec::len),
        "bytes_hex": hex,
    })
}

/// An origin hash as shown by `netrun daemons`: 1..=16 hex digits.
pub fn parse_origin(text: &str) -> Option<OriginHash> {
    if text.is_empty() || text.len() > 16 {
        return None;
    }
    u64::from_str_radix(text, 16).ok().map(OriginHash)
}
