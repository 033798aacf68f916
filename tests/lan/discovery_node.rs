//! `discovery-node`: one discovery backend in its own process, for
//! `tests/tests/lan_discovery.rs` (which runs it inside a network namespace for mDNS, and
//! kills it with SIGKILL to test the MQTT last will).
//!
//! ```text
//! discovery-node mdns SEED PSK PORT          # identity [SEED; 32], mesh PSK [PSK; 32]
//! discovery-node mqtt SEED PSK BROKER_URL    # keepalive 1 s, announce every 1 s
//! ```
//!
//! It prints one JSON line per fact: `{"ready":NODE,"key":HEX}` after start,
//! `{"found":NODE,"key":HEX,"addrs":[..]}`, `{"lost":NODE}`, and `{"status":{..}}` when
//! it reads `status` on stdin. `stop` on stdin (or EOF) stops the backend cleanly (goodbye
//! packets, MQTT goodbye) and prints `{"stopped":true}`.

use std::process::ExitCode;
use std::time::Duration;

use netrun_actors::discovery::mdns::{MdnsBackend, MdnsConfig};
use netrun_actors::discovery::mqtt::{MqttBackend, MqttConfig};
use netrun_actors::discovery::{DiscoveryBackend, DiscoveryEvent};
use netrun_messages::{Identity, MeshFingerprint};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [kind, seed, psk, target] = args.as_slice() else {
        return usage();
    };
    let (Ok(seed), Ok(psk)) = (seed.parse::<u8>(), psk.parse::<u8>()) else {
        return usage();
    };
    let identity = Identity::from_seed([seed; 32]);
    let mesh = MeshFingerprint::from_psk(&[psk; 32]);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("discovery-node: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match kind.as_str() {
            "mdns" => {
                let port = target.parse::<u16>().map_err(|e| e.to_string())?;
                let config = MdnsConfig::new(identity.entity_id(), port, mesh);
                let backend = MdnsBackend::new(config).map_err(|e| e.to_string())?;
                run(backend, &identity).await
            }
            "mqtt" => {
                let mut config = MqttConfig::new(target.clone(), mesh, identity.clone());
                config.keepalive = Duration::from_secs(1);
                config.announce_interval = Duration::from_secs(1);
                config.peer_ttl = Duration::from_secs(30);
                config.addrs = vec![([127, 0, 0, 1], 4000 + u16::from(seed)).into()];
                let backend = MqttBackend::new(config).map_err(|e| e.to_string())?;
                run(backend, &identity).await
            }
            _ => Err(format!("unknown backend {kind}")),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("discovery-node: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(mut backend: impl DiscoveryBackend, identity: &Identity) -> Result<(), String> {
    backend.start().await.map_err(|e| e.to_string())?;
    say(json!({"ready": identity.node_id().to_string(), "key": identity.entity_id().to_hex()}));
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            event = backend.next_event() => match event {
                Some(DiscoveryEvent::Found(peer)) => say(json!({
                    "found": peer.node.to_string(),
                    "key": peer.entity.to_hex(),
                    "addrs": peer.addrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
                })),
                Some(DiscoveryEvent::Lost { node, .. }) => say(json!({"lost": node.to_string()})),
                None => return Err("the backend ended".into()),
            },
            line = stdin.next_line() => match line.ok().flatten().as_deref() {
                Some("status") => {
                    let s = backend.status();
                    say(json!({"status": {
                        "name": s.name, "running": s.running, "found": s.found,
                        "errors": s.errors, "detail": s.detail,
                    }}));
                }
                None | Some("stop") => break,
                Some(_) => {}
            },
        }
    }
    backend.stop().await;
    say(json!({"stopped": true}));
    Ok(())
}

fn say(value: serde_json::Value) {
    println!("{value}");
}

fn usage() -> ExitCode {
    eprintln!("usage: discovery-node (mdns SEED PSK PORT | mqtt SEED PSK BROKER_URL)");
    ExitCode::from(2)
}
