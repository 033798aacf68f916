//! Deterministic simulation of the Kademlia core: hundreds of nodes join through one
//! bootstrap node, every node can be found, lookup hops grow like log n, storage is bounded
//! and expires, keys of one mesh are invisible to another, and members forging contact
//! records do not stop others resolving the real node.
//!
//! Every message goes through the wire codec. Delivery is in order with a 1 ms virtual
//! step per round; a node marked dead never answers, so its requests time out, and a node
//! marked a liar answers every FIND_VALUE of one key with a chosen value.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use netrun_messages::discovery::{DhtBody, DhtId, DhtMessage, PeerEntry, SignedContact};
use netrun_messages::{EntityId, Identity, NodeId};
use netrun_runtime::dht::{
    Dht, DhtConfig, DhtEvent, LookupId, LookupOutcome, NamespacedKey, StoreConfig, StoreError,
    contact_record, xor_distance,
};

const MESH: &str = "mesh-a";
const MS: Duration = Duration::from_millis(1);

#[allow(clippy::disallowed_methods)] // the simulation's arbitrary origin; only offsets matter
fn origin() -> Instant {
    Instant::now()
}

fn identity(i: usize) -> Identity {
    Identity::from_seed(*blake3::hash(&(i as u64).to_le_bytes()).as_bytes())
}

/// The wall clock nodes sign their contact records with (an input, like every time).
const ISSUED_AT_MS: u64 = 1_700_000_000_000;

fn entry(i: usize) -> PeerEntry {
    PeerEntry {
        public_key: identity(i).entity_id(),
        addrs: vec![
            format!("10.{}.{}.{}:7000", i >> 16, (i >> 8) & 0xff, i & 0xff)
                .parse()
                .expect("addr"),
        ],
    }
}

struct Net {
    now: Instant,
    nodes: Vec<Dht>,
    entries: Vec<PeerEntry>,
    index: HashMap<NodeId, usize>,
    queue: VecDeque<(usize, usize, Vec<u8>)>,
    dirty: BTreeSet<usize>,
    dead: HashSet<usize>,
    /// Nodes that answer every FIND_VALUE of `lie.0` with the value `lie.1`.
    liars: HashSet<usize>,
    lie: (DhtId, Vec<u8>),
    /// FIND_VALUE requests of the lied-about key sent to a liar: (requester, liar, id).
    asked_liars: HashSet<(usize, usize, u64)>,
    messages: u64,
    /// Every message sent, in order (sender, recipient, bytes).
    trace: blake3::Hasher,
}

impl Net {
    fn new(config: DhtConfig) -> Self {
        let now = origin();
        let mut net = Self {
            now,
            nodes: Vec::new(),
            entries: Vec::new(),
            index: HashMap::new(),
            queue: VecDeque::new(),
            dirty: BTreeSet::new(),
            dead: HashSet::new(),
            liars: HashSet::new(),
            lie: (DhtId::default(), Vec::new()),
            asked_liars: HashSet::new(),
            messages: 0,
            trace: blake3::Hasher::new(),
        };
        net.add_node(config);
        net
    }

    fn add_node(&mut self, config: DhtConfig) -> usize {
        let i = self.nodes.len();
        let e = entry(i);
        let mut config = config;
        config.seed = *blake3::hash(&[i as u8, 0xd7]).as_bytes();
        self.index.insert(e.node_id(), i);
        let mut node = Dht::new(config, e.clone(), self.now);
        node.set_mesh_prefix(MESH).expect("valid prefix");
        self.nodes.push(node);
        self.entries.push(e);
        i
    }

    /// Moves messages until the network is quiet (or `limit` rounds).
    fn pump(&mut self) {
        for _ in 0..10_000 {
            for i in std::mem::take(&mut self.dirty) {
                while let Some(out) = self.nodes[i].poll_transmit() {
                    let to = self.index[&out.to.node_id()];
                    let bytes = out.message.to_vec();
                    self.trace.update(&(i as u64).to_le_bytes());
                    self.trace.update(&(to as u64).to_le_bytes());
                    self.trace.update(&bytes);
                    self.queue.push_back((i, to, bytes));
                }
            }
            if self.queue.is_empty() {
                // Nothing in flight: let timers fire (lost requests to dead nodes).
                if self.nodes.iter().all(|n| n.lookups_running() == 0) {
                    return;
                }
                self.now += Duration::from_secs(1);
                for i in 0..self.nodes.len() {
                    if self.nodes[i].lookups_running() > 0 {
                        self.nodes[i].handle_timeout(self.now);
                        self.dirty.insert(i);
                    }
                }
                continue;
            }
            self.now += MS;
            for (from, to, bytes) in std::mem::take(&mut self.queue) {
                self.messages += 1;
                if self.dead.contains(&to) {
                    continue;
                }
                let mut msg = DhtMessage::decode(&bytes).expect("valid dht message");
                self.lie_if_liar(from, to, &mut msg);
                let from_entry = self.entries[from].clone();
                self.nodes[to].handle_message(self.now, from_entry, msg);
                self.dirty.insert(to);
            }
        }
        panic!("network-quiesces");
    }

    /// Remembers FIND_VALUEs of the lied-about key sent to a liar, and replaces the liar's
    /// answers to them with the lie.
    fn lie_if_liar(&mut self, from: usize, to: usize, msg: &mut DhtMessage) {
        if self.liars.contains(&to)
            && matches!(msg.body, DhtBody::FindValue { key } if key == self.lie.0)
        {
            self.asked_liars.insert((from, to, msg.request_id));
        }
        if self.asked_liars.remove(&(to, from, msg.request_id)) {
            msg.body = DhtBody::Value {
                value: self.lie.1.clone(),
            };
        }
    }

    fn run(&mut self, i: usize, start: impl FnOnce(&mut Dht, Instant) -> LookupId) -> DhtEvent {
        let id = start(&mut self.nodes[i], self.now);
        self.dirty.insert(i);
        self.pump();
        let mut found = None;
        while let Some(ev) = self.nodes[i].poll_event() {
            let ev_id = match &ev {
                DhtEvent::LookupDone { id, .. } | DhtEvent::Stored { id, .. } => *id,
            };
            if ev_id == id {
                found = Some(ev);
            }
        }
        found.expect("lookup-finishes")
    }

    /// Node `i` joins through node 0: bootstrap contact, lookup of its own id, then
    /// publication of its contact record.
    fn join(&mut self, i: usize) {
        let now = self.now;
        let boot = self.entries[0].clone();
        self.nodes[i].add_contact(now, boot);
        let own = self.nodes[i].local().id;
        self.run(i, |d, now| d.find_node(now, own).expect("room"));
        self.publish(i);
    }

    fn build(n: usize) -> Self {
        let mut net = Self::new(DhtConfig::default());
        for _ in 1..n {
            let i = net.add_node(DhtConfig::default());
            net.join(i);
        }
        // The bootstrap node had nobody to publish to when it started.
        net.publish(0);
        net
    }

    /// Node `i` publishes its signed contact record.
    fn publish(&mut self, i: usize) {
        let id = identity(i);
        self.run(i, |d, now| {
            d.publish_contact(now, MESH, &id, ISSUED_AT_MS, Duration::from_secs(3600))
                .expect("room")
        });
    }

    /// `find_node` of `target`'s DHT id from `from`; returns the hops, and whether the
    /// target came back as the closest contact.
    fn find(&mut self, from: usize, target: usize) -> (Option<u32>, bool) {
        let id = DhtId::of_public_key(&self.entries[target].public_key);
        match self.run(from, |d, now| d.find_node(now, id).expect("room")) {
            DhtEvent::LookupDone {
                outcome: LookupOutcome::Nodes(nodes),
                hops,
                ..
            } => (hops, nodes.first() == Some(&self.entries[target])),
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// A deterministic permutation-ish pick of a querying node for each target.
fn querier(target: usize, n: usize) -> usize {
    (target * 7919 + 13) % n
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

#[test]
fn nodes_join_through_one_bootstrap_and_every_node_is_found() {
    let n = 250;
    let mut net = Net::build(n);
    assert!(
        net.nodes.iter().all(|d| d.table().len() >= 20),
        "tables-populated"
    );
    let mut hops = Vec::new();
    for target in 0..n {
        let from = querier(target, n);
        if from == target {
            continue;
        }
        let (h, found) = net.find(from, target);
        assert!(found, "find-node-succeeds: {from} → {target}");
        hops.push(h.expect("found means hops are known"));
    }
    // Resolve unknown node ids to contacts through the published records.
    for target in (0..n).step_by(5) {
        let from = querier(target + 1, n);
        let node = net.entries[target].node_id();
        match net.run(from, |d, now| d.resolve(now, MESH, node).expect("room")) {
            DhtEvent::LookupDone {
                outcome: LookupOutcome::Value(v),
                ..
            } => {
                assert_eq!(
                    contact_record(node, &v).ok(),
                    Some(net.entries[target].clone()),
                    "record-resolves"
                );
                assert!(
                    contact_record(net.entries[(target + 1) % n].node_id(), &v).is_err(),
                    "record-bound-to-id"
                );
            }
            other => panic!("resolve-succeeds: {other:?}"),
        }
    }
    hops.sort_unstable();
    assert!(percentile(&hops, 0.99) <= 2 * 8, "p99 ≤ 2·log2(n)");
}

#[test]
fn lookup_hops_grow_logarithmically() {
    let mut report = Vec::new();
    for n in [100usize, 1000] {
        let mut net = Net::build(n);
        let join_messages = net.messages;
        let samples = 200.min(n);
        let mut hops = Vec::new();
        let mut queries = Vec::new();
        for s in 0..samples {
            let target = (s * 104_729) % n;
            let from = querier(target, n);
            if from == target {
                continue;
            }
            let id = DhtId::of_public_key(&net.entries[target].public_key);
            match net.run(from, |d, now| d.find_node(now, id).expect("room")) {
                DhtEvent::LookupDone {
                    outcome: LookupOutcome::Nodes(nodes),
                    hops: h,
                    queries: q,
                    ..
                } => {
                    assert_eq!(
                        nodes.first(),
                        Some(&net.entries[target]),
                        "find-node-succeeds"
                    );
                    hops.push(h.expect("found"));
                    queries.push(q);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        hops.sort_unstable();
        queries.sort_unstable();
        let log2 = (n as f64).log2();
        let (median, p99) = (percentile(&hops, 0.5), percentile(&hops, 0.99));
        report.push(format!(
            "n={n}: hops median {median} p99 {p99} max {}; queries median {} p99 {}; \
             log2(n)={log2:.1}; {} messages per join",
            hops.last().copied().unwrap_or(0),
            percentile(&queries, 0.5),
            percentile(&queries, 0.99),
            join_messages / n as u64,
        ));
        assert!(
            f64::from(p99) <= 2.0 * log2,
            "lookup-hops-O(log n): {report:?}"
        );
    }
    eprintln!("{}", report.join("\n"));
}

#[test]
fn storage_is_bounded_and_expires() {
    let config = DhtConfig {
        store: StoreConfig {
            max_records: 2,
            max_bytes: 100,
            max_ttl: Duration::from_secs(60),
        },
        ..DhtConfig::default()
    };
    let now = origin();
    let mut d = Dht::new(config, entry(0), now);
    let peer = entry(1);
    let store = |d: &mut Dht, at: Instant, rid: u64, key: u8, len: usize, ttl: u32| {
        d.handle_message(
            at,
            peer.clone(),
            DhtMessage {
                request_id: rid,
                body: DhtBody::Store {
                    key: DhtId([key; 32]),
                    ttl_secs: ttl,
                    value: vec![key; len],
                },
            },
        );
        let out = d.poll_transmit().expect("ack");
        assert_eq!(out.message.request_id, rid, "request-id-echoed");
        match out.message.body {
            DhtBody::StoreAck { stored } => stored,
            other => panic!("{other:?}"),
        }
    };
    assert!(store(&mut d, now, 1, 1, 60, 10));
    assert!(!store(&mut d, now, 2, 2, 60, 3600), "byte-bound");
    assert!(store(&mut d, now, 3, 2, 40, 3600), "ttl capped at max_ttl");
    assert!(!store(&mut d, now, 4, 3, 1, 3600), "count-bound");
    assert!(
        store(&mut d, now, 5, 1, 10, 10),
        "replacing a record is allowed"
    );
    assert_eq!((d.records().len(), d.records().bytes()), (2, 50));
    d.handle_timeout(now + Duration::from_secs(11));
    assert_eq!(d.records().len(), 1, "expired");
    d.handle_timeout(now + Duration::from_secs(61));
    assert!(d.records().is_empty(), "ttl-capped-record-expired");
    assert_eq!(
        d.store(now, DhtId([9; 32]), vec![0; 2000], Duration::from_secs(1))
            .err(),
        Some(StoreError::ValueTooLarge(2000).into())
    );
}

#[test]
fn keys_of_one_mesh_are_invisible_to_another() {
    let mut net = Net::build(60);
    let a = NamespacedKey::new("mesh-a", "service", "printer").expect("key");
    let b = NamespacedKey::new("mesh-b", "service", "printer").expect("key");
    let ev = net.run(5, |d, now| {
        d.store(
            now,
            a.id(),
            b"lpd://10.0.0.9".to_vec(),
            Duration::from_secs(600),
        )
        .expect("room")
    });
    assert!(
        matches!(ev, DhtEvent::Stored { replicas, .. } if replicas >= 20),
        "stored-on-k-nodes: {ev:?}"
    );
    let found = |net: &mut Net, key: DhtId| {
        matches!(
            net.run(40, |d, now| d.find_value(now, key).expect("room")),
            DhtEvent::LookupDone {
                outcome: LookupOutcome::Value(_),
                ..
            }
        )
    };
    assert!(found(&mut net, a.id()), "same-mesh-finds");
    assert!(!found(&mut net, b.id()), "other-mesh-does-not");
}

#[test]
fn dead_contacts_time_out_and_responses_are_matched_to_their_peer() {
    let mut net = Net::build(40);
    for dead in [3, 7, 11, 19] {
        net.dead.insert(dead);
    }
    let (hops, found) = net.find(2, 30);
    assert!(found && hops.is_some(), "lookup-survives-dead-contacts");
    // A response carrying a pending request id but from another peer is ignored.
    let now = net.now;
    let d = &mut net.nodes[0];
    let target = DhtId([0x42; 32]);
    d.find_node(now, target).expect("room");
    let out = d.poll_transmit().expect("a request");
    let impostor = PeerEntry {
        public_key: EntityId([1; 32]),
        addrs: vec![],
    };
    let before = d.table().len();
    d.handle_message(
        now,
        impostor,
        DhtMessage {
            request_id: out.message.request_id,
            body: DhtBody::Nodes { contacts: vec![] },
        },
    );
    assert_eq!(d.table().len(), before, "unmatched-response-ignored");
}

#[test]
fn the_same_run_sends_the_same_messages() {
    // Timeouts of requests sent together, and record hand-offs to newcomers, must not
    // depend on hash-map order: two runs of one scenario send identical messages.
    let run = || {
        let mut net = Net::build(24);
        for dead in [3, 7, 11] {
            net.dead.insert(dead);
        }
        net.find(2, 20);
        net.find(5, 17);
        *net.trace.finalize().as_bytes()
    };
    assert_eq!(run(), run(), "deterministic-given-inputs");
}

#[test]
fn idle_buckets_are_refreshed() {
    let mut net = Net::build(30);
    let before = net.messages;
    net.now += Duration::from_secs(16 * 60);
    let now = net.now;
    net.nodes[3].handle_timeout(now);
    assert!(
        net.nodes[3].lookups_running() > 0,
        "refresh-lookups-started"
    );
    net.dirty.insert(3);
    net.pump();
    assert!(net.messages > before);
    while net.nodes[3].poll_event().is_some() {}
    net.nodes[3].handle_timeout(now + Duration::from_secs(1));
    assert_eq!(
        net.nodes[3].lookups_running(),
        0,
        "not-refreshed-again-until-idle"
    );
}

#[test]
fn forged_contact_records_do_not_stop_resolution() {
    let n = 80;
    let mut net = Net::build(n);
    let target = 17;
    let node = net.entries[target].node_id();
    let key = NamespacedKey::node_record(MESH, node).expect("key").id();
    // The three nodes closest to the record's key (other than the target) turn malicious:
    // they STORE a record with the target's key and their own addresses everywhere, and
    // answer every FIND_VALUE of the key with it.
    let mut by_distance: Vec<usize> = (0..n).filter(|&i| i != target).collect();
    by_distance
        .sort_by_key(|&i| xor_distance(&DhtId::of_public_key(&net.entries[i].public_key), &key));
    let liars: Vec<usize> = by_distance[..3].to_vec();
    let mut forged = SignedContact::sign(
        &identity(target),
        ISSUED_AT_MS + 1,
        net.entries[target].clone(),
    )
    .expect("signs");
    forged.entry.addrs = net.entries[liars[0]].addrs.clone();
    let forged = forged.to_vec();
    net.liars.extend(liars.iter().copied());
    net.lie = (key, forged.clone());
    for &liar in &liars {
        for to in 0..n {
            if to != liar {
                let store = DhtMessage {
                    request_id: 9_000 + to as u64,
                    body: DhtBody::Store {
                        key,
                        ttl_secs: 3600,
                        value: forged.clone(),
                    },
                };
                net.queue.push_back((liar, to, store.to_vec()));
            }
        }
    }
    net.pump();
    let refused: u64 = (0..n).map(|i| net.nodes[i].counters().refused_stores).sum();
    assert_eq!(refused, 3 * (n as u64 - 1), "forged-stores-refused");
    assert!(
        (0..n).all(|i| net.nodes[i].records().get(net.now, &key) != Some(&forged[..])),
        "no-node-holds-the-forgery"
    );

    let mut met_a_liar = 0;
    for from in (0..n).step_by(7) {
        if from == target || liars.contains(&from) {
            continue;
        }
        let before = net.nodes[from].counters().rejected_values;
        match net.run(from, |d, now| d.resolve(now, MESH, node).expect("room")) {
            DhtEvent::LookupDone {
                outcome: LookupOutcome::Value(v),
                ..
            } => assert_eq!(
                contact_record(node, &v).ok(),
                Some(net.entries[target].clone()),
                "resolves-the-real-record: {from}"
            ),
            other => panic!("resolve-succeeds despite liars: {from}: {other:?}"),
        }
        if net.nodes[from].counters().rejected_values > before {
            met_a_liar += 1;
        }
    }
    assert!(met_a_liar > 0, "some resolver met a liar and asked on");
}
