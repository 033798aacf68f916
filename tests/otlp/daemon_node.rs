//! `daemon-node`: one netrun node with OTLP export that runs a daemon through a crash, for
//! the daemon trace test (`tests/tests/daemons.rs`).
//!
//! `daemon-node ENDPOINT`: exports over OTLP/gRPC, spawns a daemon that fails on the
//! payload `boom`, delivers 20 events, then `boom`, waits for the restart, delivers one
//! more, prints `{"origin": …, "restarts": …}`, shuts down and flushes the exporter.

use std::process::ExitCode;
use std::time::Duration;

use netrun::config::{OtlpProtocol, TelemetryConfig};
use netrun::daemons::{CausalEvent, DaemonCallError, DaemonConfig, DaemonError, MeshDaemon};
use netrun::{Bytes, Identity, Node, factory};

struct Picky;

impl MeshDaemon for Picky {
    fn name(&self) -> &str {
        "picky"
    }

    fn process(&mut self, event: &CausalEvent) -> Result<Vec<Bytes>, DaemonError> {
        if &event.payload[..] == b"boom" {
            panic!("picky does not like boom");
        }
        Ok(vec![event.payload.clone()])
    }
}

fn main() -> ExitCode {
    let Some(endpoint) = std::env::args().nth(1) else {
        eprintln!("usage: daemon-node ENDPOINT");
        return ExitCode::from(2);
    };
    let config = TelemetryConfig {
        log: Some("info".into()),
        otlp_endpoint: Some(endpoint),
        otlp_protocol: OtlpProtocol::Grpc,
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("daemon-node: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let identity = Identity::generate();
    netrun::telemetry::init(&config, identity.node_id());
    let result = runtime.block_on(run(identity));
    runtime.shutdown_timeout(Duration::from_secs(1));
    netrun::telemetry::shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("daemon-node: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(identity: Identity) -> anyhow::Result<()> {
    let node = Node::builder()
        .identity(identity)
        .psk(netrun_tests::TEST_PSK)
        .start()
        .await?;
    node.register_daemon_kind("picky", factory(|_| Ok(Box::new(Picky))))?;
    let daemon = node
        .spawn_daemon("picky", Identity::generate(), DaemonConfig::empty())
        .await?;
    for i in 0..20 {
        daemon.deliver(format!("event {i}")).await?;
    }
    anyhow::ensure!(daemon.deliver("boom").await.is_err(), "boom must fail");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match daemon.deliver("after").await {
            Ok(_) => break,
            Err(DaemonCallError::NotRunning) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(e) => anyhow::bail!("after the restart: {e}"),
        }
    }
    println!(
        "{}",
        serde_json::json!({
            "origin": daemon.origin_hash().to_string(),
            "restarts": daemon.restarts(),
        })
    );
    node.shutdown().await;
    Ok(())
}
