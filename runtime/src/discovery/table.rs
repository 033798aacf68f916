//! The coordinator's table of discovered peers: de-duplication by node id, every source a
//! peer was found by, and the connect schedule.
//!
//! A plain struct with time as an input (the coordinator actor drives it), so its rules are
//! tested without sockets:
//!
//! - an entry whose claimed node id is not the one its key derives is dropped and counted;
//! - the same node from any number of backends is one entry; its first source is kept and
//!   every later source is added to `sources`; a report that adds nothing changes nothing;
//! - an entry a backend reported, with addresses and no session, is due for a connect (a
//!   peer known only because it connected to us is left alone); a failed connect backs
//!   off exponentially (`backoff_initial` doubling up to `backoff_max`), and after
//!   `max_attempts` consecutive failures the entry waits until a backend reports it again;
//! - the table holds at most `max_peers` entries; when full, the least recently reported
//!   entry without a session makes room, and if every entry has a session the new one is
//!   dropped and counted.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use netrun_messages::discovery::MAX_ADDRS_PER_PEER;
use netrun_messages::{EntityId, NodeId};

use super::{DiscoveredPeer, DiscoverySource};

/// The table's limits and connect schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableConfig {
    /// Most entries kept.
    pub max_peers: usize,
    /// Wait after the first failed connect.
    pub backoff_initial: Duration,
    /// Longest wait between connects to one peer.
    pub backoff_max: Duration,
    /// Consecutive failed connects after which a peer waits to be reported again.
    pub max_attempts: u32,
}

impl Default for TableConfig {
    fn default() -> Self {
        Self {
            max_peers: 4096,
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            max_attempts: 8,
        }
    }
}

/// A discovered peer as `netrun peers` and `netrun discovery` show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundPeer {
    /// The node id.
    pub node: NodeId,
    /// Its public key.
    pub entity: EntityId,
    /// Addresses to try, most recently reported first.
    pub addrs: Vec<SocketAddr>,
    /// How it was first found.
    pub source: DiscoverySource,
    /// Every source that reported it, sorted.
    pub sources: Vec<DiscoverySource>,
    /// Whether a session with it is up.
    pub connected: bool,
    /// Connects started since the last success.
    pub attempts: u32,
    /// Why the last connect failed, if it did.
    pub last_error: Option<String>,
}

/// What a report did to the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// A new entry.
    New,
    /// A known entry gained a source or an address (or was revived after giving up).
    Updated,
    /// A known entry, nothing new.
    Unchanged,
    /// The claimed node id is not the key's; dropped.
    Mismatch,
    /// This node itself; ignored.
    Local,
    /// The table is full of peers with sessions; dropped.
    Full,
}

/// A connect the coordinator should start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectTo {
    /// The peer.
    pub node: NodeId,
    /// Its key.
    pub entity: EntityId,
    /// The address to try this time (addresses are tried in turn).
    pub addr: SocketAddr,
}

/// The table's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableStats {
    /// `Found` reports handled.
    pub reports: u64,
    /// Reports that created an entry.
    pub new_peers: u64,
    /// Reports of a known peer that added nothing.
    pub duplicates: u64,
    /// Reports whose node id did not match the key.
    pub mismatched: u64,
    /// Reports dropped because the table was full of connected peers.
    pub table_full: u64,
    /// Entries evicted to make room.
    pub evicted: u64,
    /// Connects started.
    pub connects_started: u64,
    /// Connects that succeeded.
    pub connects_ok: u64,
    /// Connects that failed.
    pub connects_failed: u64,
}

#[derive(Debug)]
struct Record {
    peer: FoundPeer,
    reported_at: Instant,
    next_attempt: Instant,
    delay: Duration,
    connecting: bool,
    cursor: usize,
}

impl Record {
    fn due(&self, now: Instant, max_attempts: u32) -> bool {
        self.eligible(max_attempts) && self.next_attempt <= now
    }

    /// Whether this entry may be connected at all: a backend vouches for it (a peer that
    /// only ever connected to us, or that the application connected, is left to them), it
    /// has an address, no session, and it has not given up.
    fn eligible(&self, max_attempts: u32) -> bool {
        !self.peer.connected
            && !self.connecting
            && !self.peer.addrs.is_empty()
            && self.peer.attempts < max_attempts
            && self
                .peer
                .sources
                .iter()
                .any(|s| *s != DiscoverySource::Inbound)
    }
}

/// Discovered peers keyed by node id.
#[derive(Debug)]
pub struct PeerTable {
    local: NodeId,
    config: TableConfig,
    records: HashMap<NodeId, Record>,
    stats: TableStats,
}

impl PeerTable {
    /// An empty table for node `local`.
    pub fn new(local: NodeId, config: TableConfig) -> Self {
        Self {
            local,
            config,
            records: HashMap::new(),
            stats: TableStats::default(),
        }
    }

    /// Takes a backend's report of `peer`.
    pub fn on_found(&mut self, now: Instant, peer: &DiscoveredPeer) -> Found {
        self.stats.reports += 1;
        if peer.node != peer.entity.node_id() {
            self.stats.mismatched += 1;
            return Found::Mismatch;
        }
        if peer.node == self.local {
            return Found::Local;
        }
        let max_attempts = self.config.max_attempts;
        if let Some(record) = self.records.get_mut(&peer.node) {
            record.reported_at = now;
            let mut changed = add_source(&mut record.peer.sources, peer.source);
            for addr in peer.addrs.iter().rev() {
                changed |= add_addr(&mut record.peer.addrs, *addr);
            }
            if record.peer.attempts >= max_attempts {
                // Given up: a fresh report is a fresh hint.
                record.peer.attempts = 0;
                record.delay = Duration::ZERO;
                record.next_attempt = now;
                changed = true;
            }
            return if changed {
                Found::Updated
            } else {
                self.stats.duplicates += 1;
                Found::Unchanged
            };
        }
        if !self.make_room() {
            self.stats.table_full += 1;
            return Found::Full;
        }
        let mut addrs = Vec::new();
        for addr in peer.addrs.iter().rev() {
            add_addr(&mut addrs, *addr);
        }
        self.insert(now, peer.node, peer.entity, addrs, peer.source);
        self.stats.new_peers += 1;
        Found::New
    }

    /// A backend says `node` left: `source` no longer vouches for it. An entry no source
    /// vouches for and without a session is removed. Returns whether anything changed.
    pub fn on_lost(&mut self, node: NodeId, source: DiscoverySource) -> bool {
        let Some(record) = self.records.get_mut(&node) else {
            return false;
        };
        let before = record.peer.sources.len();
        record.peer.sources.retain(|s| *s != source);
        let changed = record.peer.sources.len() != before;
        if record.peer.sources.is_empty() && !record.peer.connected && !record.connecting {
            self.records.remove(&node);
            return true;
        }
        changed
    }

    /// A session with `node` at `addr` is up. A node no backend reported is recorded with
    /// source [`DiscoverySource::Inbound`].
    pub fn on_up(&mut self, now: Instant, node: NodeId, entity: EntityId, addr: SocketAddr) {
        if node == self.local || entity.node_id() != node {
            return;
        }
        if !self.records.contains_key(&node) {
            if !self.make_room() {
                self.stats.table_full += 1;
                return;
            }
            self.insert(now, node, entity, Vec::new(), DiscoverySource::Inbound);
        }
        if let Some(record) = self.records.get_mut(&node) {
            add_addr(&mut record.peer.addrs, addr);
            record.peer.connected = true;
            record.peer.attempts = 0;
            record.peer.last_error = None;
            record.delay = Duration::ZERO;
        }
    }

    /// The session with `node` ended: a reported entry becomes due for a reconnect after
    /// the initial backoff, and gives up after `max_attempts` failures like any other.
    pub fn on_down(&mut self, now: Instant, node: NodeId) {
        if let Some(record) = self.records.get_mut(&node) {
            if record.peer.connected {
                record.peer.connected = false;
                record.delay = self.config.backoff_initial;
                record.next_attempt = now + record.delay;
            }
        }
    }

    /// Up to `budget` connects that are due, oldest due first; each is marked as
    /// connecting until [`on_connect_result`](Self::on_connect_result).
    pub fn next_connects(&mut self, now: Instant, budget: usize) -> Vec<ConnectTo> {
        if budget == 0 {
            return Vec::new();
        }
        let max_attempts = self.config.max_attempts;
        let mut due: Vec<(Instant, NodeId)> = self
            .records
            .iter()
            .filter(|(_, r)| r.due(now, max_attempts))
            .map(|(node, r)| (r.next_attempt, *node))
            .collect();
        due.sort_unstable();
        due.truncate(budget);
        let mut out = Vec::with_capacity(due.len());
        for (_, node) in due {
            let Some(record) = self.records.get_mut(&node) else {
                continue;
            };
            let addr = record.peer.addrs[record.cursor % record.peer.addrs.len()];
            record.cursor = record.cursor.wrapping_add(1);
            record.connecting = true;
            record.peer.attempts += 1;
            self.stats.connects_started += 1;
            out.push(ConnectTo {
                node,
                entity: record.peer.entity,
                addr,
            });
        }
        out
    }

    /// A connect started by [`next_connects`](Self::next_connects) finished.
    pub fn on_connect_result(&mut self, now: Instant, node: NodeId, result: Result<(), String>) {
        let Some(record) = self.records.get_mut(&node) else {
            return;
        };
        record.connecting = false;
        match result {
            Ok(()) => {
                self.stats.connects_ok += 1;
                record.peer.connected = true;
                record.peer.attempts = 0;
                record.peer.last_error = None;
                record.delay = Duration::ZERO;
            }
            Err(error) => {
                self.stats.connects_failed += 1;
                record.delay = if record.delay.is_zero() {
                    self.config.backoff_initial
                } else {
                    (record.delay * 2).min(self.config.backoff_max)
                };
                record.next_attempt = now + record.delay;
                record.peer.last_error = Some(error);
            }
        }
    }

    /// Connects in progress.
    pub fn connecting(&self) -> usize {
        self.records.values().filter(|r| r.connecting).count()
    }

    /// When the next entry becomes due, if any is waiting.
    pub fn next_due(&self) -> Option<Instant> {
        let max_attempts = self.config.max_attempts;
        self.records
            .values()
            .filter(|r| r.eligible(max_attempts))
            .map(|r| r.next_attempt)
            .min()
    }

    /// One entry.
    pub fn get(&self, node: NodeId) -> Option<&FoundPeer> {
        self.records.get(&node).map(|r| &r.peer)
    }

    /// Every entry, by node id.
    pub fn peers(&self) -> Vec<FoundPeer> {
        let mut peers: Vec<FoundPeer> = self.records.values().map(|r| r.peer.clone()).collect();
        peers.sort_by_key(|p| p.node);
        peers
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The counters.
    pub fn stats(&self) -> TableStats {
        self.stats
    }

    fn insert(
        &mut self,
        now: Instant,
        node: NodeId,
        entity: EntityId,
        addrs: Vec<SocketAddr>,
        source: DiscoverySource,
    ) {
        self.records.insert(
            node,
            Record {
                peer: FoundPeer {
                    node,
                    entity,
                    addrs,
                    source,
                    sources: vec![source],
                    connected: false,
                    attempts: 0,
                    last_error: None,
                },
                reported_at: now,
                next_attempt: now,
                delay: Duration::ZERO,
                connecting: false,
                cursor: 0,
            },
        );
    }

    /// Evicts the least recently reported entry without a session if the table is full.
    /// Returns whether there is room.
    fn make_room(&mut self) -> bool {
        if self.records.len() < self.config.max_peers.max(1) {
            return true;
        }
        let victim = self
            .records
            .iter()
            .filter(|(_, r)| !r.peer.connected && !r.connecting)
            .min_by_key(|(node, r)| (r.reported_at, **node))
            .map(|(node, _)| *node);
        match victim {
            Some(node) => {
                self.records.remove(&node);
                self.stats.evicted += 1;
                true
            }
            None => false,
        }
    }
}

fn add_source(sources: &mut Vec<DiscoverySource>, source: DiscoverySource) -> bool {
    match sources.binary_search(&source) {
        Ok(_) => false,
        Err(at) => {
            sources.insert(at, source);
            true
        }
    }
}

/// Puts `addr` first unless it is already known; keeps at most [`MAX_ADDRS_PER_PEER`].
fn add_addr(addrs: &mut Vec<SocketAddr>, addr: SocketAddr) -> bool {
    if addrs.contains(&addr) {
        return false;
    }
    addrs.insert(0, addr);
    addrs.truncate(MAX_ADDRS_PER_PEER);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use netrun_messages::Identity;

    fn peer(seed: u8, port: u16, source: DiscoverySource) -> DiscoveredPeer {
        let entity = Identity::from_seed([seed; 32]).entity_id();
        DiscoveredPeer {
            node: entity.node_id(),
            entity,
            addrs: vec![SocketAddr::from(([127, 0, 0, 1], port))],
            source,
        }
    }

    fn table(max_peers: usize) -> (PeerTable, Instant) {
        let local = Identity::from_seed([0; 32]).node_id();
        let config = TableConfig {
            max_peers,
            ..TableConfig::default()
        };
        (PeerTable::new(local, config), crate::test_clock::t0())
    }

    #[test]
    fn one_entry_per_node_with_every_source() {
        let (mut t, now) = table(16);
        assert_eq!(
            t.on_found(now, &peer(1, 1000, DiscoverySource::Seed)),
            Found::New
        );
        assert_eq!(
            t.on_found(now, &peer(1, 1000, DiscoverySource::Seed)),
            Found::Unchanged,
            "re-reporting changes nothing"
        );
        assert_eq!(
            t.on_found(now, &peer(1, 1000, DiscoverySource::Dht)),
            Found::Updated
        );
        assert_eq!(
            t.on_found(now, &peer(1, 2000, DiscoverySource::PeerExchange)),
            Found::Updated
        );
        assert_eq!(t.len(), 1);
        let p = &t.peers()[0];
        assert_eq!(p.source, DiscoverySource::Seed, "first source kept");
        assert_eq!(
            p.sources,
            vec![
                DiscoverySource::Seed,
                DiscoverySource::PeerExchange,
                DiscoverySource::Dht
            ]
        );
        assert_eq!(p.addrs[0].port(), 2000, "newest address first");
        assert_eq!(t.stats().duplicates, 1);
    }

    #[test]
    fn mismatched_ids_and_self_are_dropped() {
        let (mut t, now) = table(16);
        let mut forged = peer(1, 1000, DiscoverySource::Mdns);
        forged.node = NodeId(forged.node.0 ^ 1);
        assert_eq!(t.on_found(now, &forged), Found::Mismatch);
        assert_eq!(
            t.on_found(now, &peer(0, 1000, DiscoverySource::Mdns)),
            Found::Local
        );
        assert!(t.is_empty());
        assert_eq!(t.stats().mismatched, 1);
    }

    #[test]
    fn connects_back_off_and_give_up_until_reported_again() {
        let (mut t, mut now) = table(16);
        let p = peer(1, 1000, DiscoverySource::Seed);
        t.on_found(now, &p);
        let mut waits = Vec::new();
        for _ in 0..TableConfig::default().max_attempts {
            let due = t.next_connects(now, 8);
            assert_eq!(due.len(), 1);
            assert!(t.next_connects(now, 8).is_empty(), "one connect at a time");
            t.on_connect_result(now, p.node, Err("no answer".into()));
            let next = t.next_due();
            if let Some(next) = next {
                waits.push(next - now);
                assert!(t.next_connects(now, 8).is_empty(), "not before the backoff");
                now = next;
            }
        }
        assert_eq!(
            waits[..7],
            [1, 2, 4, 8, 16, 32, 60].map(Duration::from_secs),
            "doubling, capped"
        );
        now += Duration::from_secs(3600);
        assert!(t.next_connects(now, 8).is_empty(), "gave up");
        assert_eq!(
            t.on_found(now, &p),
            Found::Updated,
            "a new report revives it"
        );
        assert_eq!(t.next_connects(now, 8).len(), 1);
        t.on_connect_result(now, p.node, Ok(()));
        assert!(t.get(p.node).expect("kept").connected);
        assert!(
            t.next_connects(now, 8).is_empty(),
            "connected peers are left alone"
        );
        assert_eq!(t.on_found(now, &p), Found::Unchanged);
    }

    #[test]
    fn sessions_are_recorded_and_downs_reconnect_after_backoff() {
        let (mut t, now) = table(16);
        let p = peer(2, 1000, DiscoverySource::Mdns);
        t.on_up(now, p.node, p.entity, p.addrs[0]);
        let rec = t.get(p.node).expect("recorded");
        assert_eq!(rec.source, DiscoverySource::Inbound);
        assert!(rec.connected);
        t.on_down(now, p.node);
        let later = now + Duration::from_secs(5);
        assert!(
            t.next_connects(later, 8).is_empty(),
            "a peer that only connected to us is not reconnected"
        );
        t.on_up(later, p.node, p.entity, p.addrs[0]);
        assert_eq!(t.on_found(now, &p), Found::Updated);
        t.on_down(now, p.node);
        assert!(t.next_connects(now, 8).is_empty());
        let later = now + Duration::from_secs(1);
        assert_eq!(t.next_connects(later, 8).len(), 1);
    }

    #[test]
    fn lost_sources_remove_unconnected_entries() {
        let (mut t, now) = table(16);
        let p = peer(3, 1000, DiscoverySource::Mqtt);
        t.on_found(now, &p);
        t.on_found(now, &peer(3, 1000, DiscoverySource::Mdns));
        assert!(t.on_lost(p.node, DiscoverySource::Mqtt));
        assert_eq!(t.len(), 1, "mDNS still vouches for it");
        assert!(t.on_lost(p.node, DiscoverySource::Mdns));
        assert!(t.is_empty());
    }

    #[test]
    fn the_table_is_bounded() {
        let (mut t, now) = table(2);
        let (a, b, c) = (
            peer(1, 1, DiscoverySource::Seed),
            peer(2, 2, DiscoverySource::Seed),
            peer(3, 3, DiscoverySource::Seed),
        );
        t.on_found(now, &a);
        t.on_found(now + Duration::from_secs(1), &b);
        assert_eq!(t.on_found(now + Duration::from_secs(2), &c), Found::New);
        assert!(t.get(a.node).is_none(), "least recently reported evicted");
        t.on_up(now, b.node, b.entity, b.addrs[0]);
        t.on_up(now, c.node, c.entity, c.addrs[0]);
        assert_eq!(t.on_found(now, &a), Found::Full);
        assert_eq!(t.len(), 2);
        assert_eq!(t.stats().evicted, 1);
        assert_eq!(t.stats().table_full, 1);
    }

    #[test]
    fn addresses_are_bounded_and_tried_in_turn() {
        let (mut t, now) = table(4);
        let mut p = peer(4, 1, DiscoverySource::Seed);
        p.addrs = (1..=6)
            .map(|port| SocketAddr::from(([127, 0, 0, 1], port)))
            .collect();
        t.on_found(now, &p);
        let rec = t.get(p.node).expect("kept");
        assert_eq!(rec.addrs.len(), MAX_ADDRS_PER_PEER);
        assert_eq!(rec.addrs[0].port(), 1, "report order kept, best first");
        let first = t.next_connects(now, 1)[0].addr;
        t.on_connect_result(now, p.node, Err("x".into()));
        let second = t.next_connects(now + Duration::from_secs(1), 1)[0].addr;
        assert_ne!(first, second);
    }
}
