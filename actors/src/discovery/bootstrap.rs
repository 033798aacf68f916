//! Bootstrap: the seed peers from the configuration, as a [`DiscoveryBackend`].
//!
//! Seeds are de-duplicated by key (several addresses of one key become one peer) and
//! reported at start, then again every `reannounce` interval so a restarted coordinator
//! relearns them. Reporting is idempotent: a seed the coordinator already knows changes
//! nothing there, and a seed with a session is never connected twice.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use netrun_messages::EntityId;
use netrun_messages::discovery::MAX_ADDRS_PER_PEER;
use tokio::time::Instant;

use super::{
    BackendStatus, DiscoveredPeer, DiscoveryBackend, DiscoveryError, DiscoveryEvent,
    DiscoverySource,
};

/// How often seeds are re-reported unless configured otherwise.
pub const DEFAULT_REANNOUNCE: Duration = Duration::from_secs(30);

/// The seed-peer backend.
#[derive(Debug)]
pub struct Bootstrap {
    seeds: Vec<DiscoveredPeer>,
    reannounce: Duration,
    queue: VecDeque<DiscoveredPeer>,
    next_round: Option<Instant>,
    rounds: u64,
    found: u64,
    running: bool,
}

impl Bootstrap {
    /// A backend reporting `seeds` (address and public key), again every `reannounce`.
    pub fn new(seeds: &[(SocketAddr, EntityId)], reannounce: Duration) -> Self {
        let mut merged: Vec<DiscoveredPeer> = Vec::new();
        for &(addr, entity) in seeds {
            match merged.iter_mut().find(|p| p.entity == entity) {
                Some(p) => {
                    if !p.addrs.contains(&addr) && p.addrs.len() < MAX_ADDRS_PER_PEER {
                        p.addrs.push(addr);
                    }
                }
                None => merged.push(DiscoveredPeer {
                    node: entity.node_id(),
                    entity,
                    addrs: vec![addr],
                    source: DiscoverySource::Seed,
                }),
            }
        }
        Self {
            seeds: merged,
            reannounce: reannounce.max(Duration::from_millis(10)),
            queue: VecDeque::new(),
            next_round: None,
            rounds: 0,
            found: 0,
            running: false,
        }
    }

    /// The distinct seeds.
    pub fn seeds(&self) -> &[DiscoveredPeer] {
        &self.seeds
    }
}

impl DiscoveryBackend for Bootstrap {
    fn name(&self) -> &'static str {
        "bootstrap"
    }

    async fn start(&mut self) -> Result<(), DiscoveryError> {
        self.running = true;
        self.next_round = Some(Instant::now());
        Ok(())
    }

    async fn next_event(&mut self) -> Option<DiscoveryEvent> {
        if self.seeds.is_empty() {
            return None;
        }
        if self.queue.is_empty() {
            // Cancel-safe: the deadline lives in `self`, so a dropped wait resumes it.
            let at = *self.next_round.get_or_insert_with(Instant::now);
            tokio::time::sleep_until(at).await;
            self.queue.extend(self.seeds.iter().cloned());
            self.rounds += 1;
            self.next_round = Some(at + self.reannounce);
        }
        let peer = self.queue.pop_front()?;
        self.found += 1;
        Some(DiscoveryEvent::Found(peer))
    }

    async fn stop(&mut self) {
        self.running = false;
    }

    fn status(&self) -> BackendStatus {
        BackendStatus {
            name: self.name().to_string(),
            running: self.running,
            found: self.found,
            errors: 0,
            detail: format!(
                "{} seeds, {} rounds, every {:?}",
                self.seeds.len(),
                self.rounds,
                self.reannounce
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netrun_messages::Identity;

    #[tokio::test(start_paused = true)]
    async fn seeds_are_merged_by_key_and_reported_every_round() {
        let a = Identity::from_seed([1; 32]).entity_id();
        let b = Identity::from_seed([2; 32]).entity_id();
        let addr = |p| SocketAddr::from(([127, 0, 0, 1], p));
        let mut boot = Bootstrap::new(
            &[(addr(1), a), (addr(2), a), (addr(1), a), (addr(3), b)],
            Duration::from_secs(5),
        );
        assert_eq!(boot.seeds().len(), 2);
        assert_eq!(boot.seeds()[0].addrs, vec![addr(1), addr(2)]);
        boot.start().await.expect("starts");
        let started = Instant::now();
        let mut seen = Vec::new();
        for _ in 0..4 {
            match boot.next_event().await {
                Some(DiscoveryEvent::Found(p)) => seen.push((p.node, Instant::now() - started)),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(seen[0].0, a.node_id());
        assert_eq!(seen[1].0, b.node_id());
        assert_eq!(seen[2].0, a.node_id());
        assert_eq!(
            seen[2].1,
            Duration::from_secs(5),
            "second round after reannounce"
        );
        assert_eq!(boot.status().found, 4);
        let mut empty = Bootstrap::new(&[], Duration::from_secs(1));
        assert!(
            empty.next_event().await.is_none(),
            "no seeds: nothing, ever"
        );
    }
}
