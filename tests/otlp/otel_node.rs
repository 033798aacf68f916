//! `otel-node`: one netrun node with OTLP export, for the cross-process trace test
//! (`tests/tests/otel.rs`). Two roles:
//!
//! - `otel-node receive ENDPOINT PROTOCOL`: starts a node, prints
//!   `{"node_id","addr","public_key"}`, handles one datagram inside the span
//!   `Node::recv_traced` returns, prints `{"received": SIZE, "traced": BOOL}`, then runs
//!   until SIGTERM and exits through the normal shutdown path (so the exporter flushes).
//! - `otel-node send ENDPOINT PROTOCOL ADDR PUBKEY`: starts a node, connects to the peer,
//!   sends one datagram inside the span `app.request`, shuts down and exits.
//! - `otel-node serve ENDPOINT PROTOCOL`: starts a node serving the nRPC service
//!   `traced.echo` (its handler logs an event in its span), prints the hello line, prints
//!   `{"handled": SIZE}` after the first request, then runs until SIGTERM.
//! - `otel-node call ENDPOINT PROTOCOL ADDR PUBKEY`: starts a node, connects, calls
//!   `traced.echo` inside the span `app.rpc`, prints `{"answer": SIZE}`, shuts down.
//!
//! PROTOCOL is `grpc` or `http`. Both roles use `netrun::telemetry` exactly as
//! `netrun start` does: identity first, then `init`; the runtime is dropped before
//! `shutdown` so that every span has ended when the exporter flushes.

use std::process::ExitCode;

use netrun::config::{OtlpProtocol, TelemetryConfig};
use netrun::{EntityId, Identity, Node, NodeId};
use tracing::{Instrument, info, info_span};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (role, endpoint, protocol) = match args.as_slice() {
        [role, endpoint, protocol, ..] => (role.as_str(), endpoint.clone(), protocol.as_str()),
        _ => return usage(),
    };
    let otlp_protocol = match protocol {
        "grpc" => OtlpProtocol::Grpc,
        "http" => OtlpProtocol::Http,
        _ => return usage(),
    };
    let config = TelemetryConfig {
        log: Some("info".into()),
        otlp_endpoint: Some(endpoint),
        otlp_protocol,
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("otel-node: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let identity = Identity::generate();
    netrun::telemetry::init(&config, identity.node_id());
    let result = match (role, &args[3..]) {
        ("receive", []) => runtime.block_on(receive(identity)),
        ("send", [addr, key]) => runtime.block_on(send(identity, addr, key)),
        ("serve", []) => runtime.block_on(serve(identity)),
        ("call", [addr, key]) => runtime.block_on(call(identity, addr, key)),
        _ => return usage(),
    };
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    netrun::telemetry::shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("otel-node: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn start(identity: Identity) -> anyhow::Result<Node> {
    Ok(Node::builder()
        .identity(identity)
        .psk(netrun_tests::TEST_PSK)
        .start()
        .await?)
}

/// Prints the line the test connects the other node with: this node's id, address and key.
fn announce(node: &Node) {
    let line = serde_json::json!({
        "node_id": node.node_id().to_string(),
        "addr": node.local_addr().to_string(),
        "public_key": node.public_key().to_hex(),
    });
    println!("{line}");
}

/// Starts a node and connects it to the one at `addr` with public key `key` (hex); returns
/// the node and the peer's id.
async fn start_connected(
    identity: Identity,
    addr: &str,
    key: &str,
) -> anyhow::Result<(Node, NodeId)> {
    let public_key =
        EntityId::from_hex(key).ok_or_else(|| anyhow::anyhow!("bad public key {key:?}"))?;
    let node = start(identity).await?;
    let peer = node.connect(addr.parse()?, public_key).await?;
    Ok((node, peer))
}

async fn receive(identity: Identity) -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let node = start(identity).await?;
    announce(&node);
    let (received, span) = node
        .recv_traced()
        .await
        .ok_or_else(|| anyhow::anyhow!("node stopped before a datagram arrived"))?;
    span.in_scope(|| info!(size = received.payload.len(), "datagram handled"));
    let traced = !span.is_none();
    drop(span);
    println!(
        "{}",
        serde_json::json!({"received": received.payload.len(), "traced": traced})
    );
    term.recv().await;
    node.shutdown().await;
    Ok(())
}

async fn send(identity: Identity, addr: &str, key: &str) -> anyhow::Result<()> {
    let (node, peer) = start_connected(identity, addr, key).await?;
    let request = info_span!("app.request", peer = %peer);
    node.send(peer, b"hello, traced")
        .instrument(request)
        .await?;
    node.shutdown().await;
    Ok(())
}

async fn serve(identity: Identity) -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let node = start(identity).await?;
    let (handled_tx, mut handled) = tokio::sync::mpsc::channel::<usize>(4);
    let _service = node.serve(
        "traced.echo",
        move |request: netrun::rpc::RequestContext| {
            let handled = handled_tx.clone();
            async move {
                info!(size = request.body().len(), "rpc handled");
                let _ = handled.send(request.body().len()).await;
                Ok::<_, netrun::rpc::HandlerError>(request.body().clone())
            }
        },
    )?;
    announce(&node);
    let size = handled
        .recv()
        .await
        .ok_or_else(|| anyhow::anyhow!("service stopped before a request arrived"))?;
    println!("{}", serde_json::json!({ "handled": size }));
    term.recv().await;
    node.shutdown().await;
    Ok(())
}

async fn call(identity: Identity, addr: &str, key: &str) -> anyhow::Result<()> {
    let (node, peer) = start_connected(identity, addr, key).await?;
    // The server holds its session keys a moment after `connect` returns here; a request
    // sent before that is lost, so attempts are short and retried.
    let options = netrun::rpc::CallOptions::default()
        .with_attempt_timeout(std::time::Duration::from_millis(300))
        .with_retry(netrun::rpc::RetryPolicy::default().with_max_attempts(10));
    let request = info_span!("app.rpc", peer = %peer);
    let answer = node
        .call(peer, "traced.echo", &b"traced call"[..], &options)
        .instrument(request)
        .await?;
    println!("{}", serde_json::json!({ "answer": answer.len() }));
    node.shutdown().await;
    Ok(())
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: otel-node receive|serve ENDPOINT grpc|http\n       otel-node send|call ENDPOINT grpc|http ADDR PUBKEY"
    );
    ExitCode::from(2)
}
