//! Shared pieces of netrun's loopback benchmark binaries: percentiles, and the server half
//! of a two-process benchmark (this same binary started again as a server, which
//! announces itself with one JSON hello line).

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use netrun::{EntityId, Node, NodeId};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A benchmark server in a child process, killed when this is dropped.
pub struct ServerProcess {
    /// The child process.
    pub child: Child,
    /// Where the server listens (the hello line's `addr`).
    pub addr: SocketAddr,
    hello: serde_json::Value,
}

/// Starts this binary again with `args` (which make it a server) and waits for its hello
/// line: `{"addr": …}`, plus `"public_key"` for a netrun node (see [`hello`]).
pub async fn spawn_server(args: &[&str]) -> Result<ServerProcess> {
    let mut child = Command::new(std::env::current_exe()?)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow!("child stdout"))?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).await?;
    let hello: serde_json::Value = serde_json::from_str(&line).context("child hello line")?;
    let addr = hello["addr"]
        .as_str()
        .ok_or_else(|| anyhow!("addr"))?
        .parse()?;
    Ok(ServerProcess { child, addr, hello })
}

impl ServerProcess {
    /// Starts a client node with `psk` and opens a session with the server's node.
    pub async fn connect(&self, psk: [u8; 32]) -> Result<(Node, NodeId)> {
        let key = EntityId::from_hex(self.hello["public_key"].as_str().unwrap_or_default())
            .ok_or_else(|| anyhow!("public key"))?;
        let node = Node::builder().psk(psk).start().await?;
        let peer = node.connect(self.addr, key).await?;
        Ok((node, peer))
    }
}

/// The hello line a netrun server process prints first: its address and public key.
pub fn hello(node: &Node) -> serde_json::Value {
    serde_json::json!({"addr": node.local_addr().to_string(), "public_key": node.public_key().to_hex()})
}

/// The `p`th percentile (`p` in percent, 0–100, not a fraction) of a sorted slice of
/// durations (nearest rank).
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Microseconds as f64.
pub fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_micros).collect();
        assert_eq!(percentile(&v, 50.0), Duration::from_micros(50));
        assert_eq!(percentile(&v, 99.0), Duration::from_micros(99));
        assert_eq!(percentile(&v, 100.0), Duration::from_micros(100));
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
    }
}
