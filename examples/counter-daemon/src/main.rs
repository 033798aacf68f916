//! A counter daemon: start a node, register a kind, spawn it, feed it, read its output channel.
use netrun::daemons::{CausalEvent, ChainVerifier, DaemonConfig, DaemonError, MeshDaemon, Output};
use netrun::{Bytes, Identity, Node, factory};
struct Counter(u64);
impl MeshDaemon for Counter {
    fn name(&self) -> &str {
        "counter"
    }
    fn process(&mut self, _event: &CausalEvent) -> Result<Vec<Bytes>, DaemonError> {
        self.0 += 1;
        Ok(vec![Bytes::from(self.0.to_string())])
    }
    fn snapshot(&self) -> Option<Bytes> {
        Some(Bytes::from(self.0.to_string())) // a restart resumes from here, then replays
    }
    fn restore(&mut self, state: Bytes) -> Result<(), DaemonError> {
        let bad = |_| DaemonError::InvalidState("not a count".into());
        self.0 = String::from_utf8_lossy(&state).parse().map_err(bad)?;
        Ok(())
    }
}
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let node = Node::builder().start().await?;
    node.register_daemon_kind("counter", factory(|_| Ok(Box::new(Counter(0)))))?;
    let (id, config) = (Identity::generate(), DaemonConfig::empty());
    let counter = node.spawn_daemon("counter", id, config).await?;
    let mut outputs = node.read_channel(&counter.output_channel())?; // or subscribe elsewhere
    counter.deliver_many(["apple", "banana", "cherry"]).await?; // processed in order
    let mut verifier = ChainVerifier::new(counter.entity());
    while verifier.verified() < 3 {
        let output = Output::from_bytes(&outputs.recv().await.ok_or("channel closed")?)?;
        verifier.verify(&output)?; // signed with the daemon's key, linked into its chain
        for event in output.events() {
            println!("count {}", String::from_utf8_lossy(&event.payload));
        }
    }
    node.shutdown().await;
    Ok(())
}
