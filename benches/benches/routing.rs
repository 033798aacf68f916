//! Routing micro-benchmarks: snapshot lookup, the relay's forward decision, a packet's
//! forwarding decisions along 1/3/5 relays, and DHT lookups in a simulated network.
//!
//! Run: `cargo bench -p netrun-benches --bench routing -- --warm-up-time 1 --measurement-time 2`.
//!
//! The forwarding benches restamp the TTL and the counter before each packet (two byte
//! writes and one 8-byte write): without that, TTL would expire and every packet after the
//! first would be a duplicate. `path/N` runs N relays' decisions in turn on one buffer, each
//! relay with its own snapshot and recently-seen memory, as N machines would.
//! The DHT benches print the lookup-hop distribution they measured to stderr.

use std::collections::{HashMap, VecDeque};
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use netrun_messages::discovery::{DhtId, DhtMessage, PeerEntry};
use netrun_messages::header::{HEADER_LEN, Header, PacketKind};
use netrun_messages::{Identity, NodeId};
use netrun_runtime::dht::{Dht, DhtConfig, DhtEvent, LookupOutcome};
use netrun_runtime::routing::{
    Decision, RecentlySeen, Route, RouteSource, RoutingConfig, RoutingSnapshot, RoutingTable,
    forward_decision,
};

#[allow(clippy::disallowed_methods)] // benchmark fixture origin; cores never read clocks
fn origin() -> Instant {
    Instant::now()
}

/// A snapshot of `n` routes, destinations spread like real node ids.
/// `extra` adds one more destination routed like the rest.
fn snapshot(
    local: NodeId,
    n: u64,
    via: impl Fn(u64) -> NodeId,
    extra: Option<NodeId>,
) -> (RoutingSnapshot, Vec<NodeId>) {
    let now = origin();
    let mut table = RoutingTable::new(local, RoutingConfig::default());
    let mut dsts = Vec::new();
    for i in 0..=n {
        let dst = match extra {
            Some(d) if i == n => d,
            _ if i == n => break,
            _ => NodeId(i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1),
        };
        dsts.push(dst);
        table.handle_route(
            now,
            dst,
            Route {
                next_hop: via(i),
                metric: 2,
                expires_at: now + Duration::from_secs(3600),
                source: RouteSource::Pingwave,
            },
        );
    }
    (table.snapshot(), dsts)
}

fn packet(src: NodeId, dst: NodeId) -> Vec<u8> {
    let mut h = Header::new(PacketKind::Data, src, dst);
    h.stream = 3;
    h.payload_len = 1024 + 16;
    let mut p = h.encode().to_vec();
    p.resize(HEADER_LEN + h.payload_len as usize, 0xab);
    p
}

#[inline]
fn restamp(p: &mut [u8], counter: u64) {
    p[3] = 16;
    p[4] = 0;
    p[32..40].copy_from_slice(&counter.to_le_bytes());
}

fn lookup(c: &mut Criterion) {
    let (snap, dsts) = snapshot(NodeId(1), 10_000, |i| NodeId(2 + i % 8), None);
    let mut i = 0usize;
    c.bench_function("routing/lookup_hit", |b| {
        b.iter(|| {
            i = (i + 1) % dsts.len();
            black_box(snap.lookup(black_box(dsts[i])))
        })
    });
    c.bench_function("routing/lookup_miss", |b| {
        b.iter(|| black_box(snap.lookup(black_box(NodeId(0xdead_beef_0000_0002)))))
    });
}

fn forward(c: &mut Criterion) {
    let local = NodeId(1);
    let (snap, dsts) = snapshot(local, 10_000, |i| NodeId(2 + i % 8), None);
    let mut seen = RecentlySeen::new(4096, Duration::from_secs(2));
    let mut p = packet(NodeId(0xfeed), dsts[77]);
    let mut counter = 0u64;
    c.bench_function("routing/forward_decision", |b| {
        b.iter(|| {
            counter += 1;
            restamp(&mut p, counter);
            let d = forward_decision(local, &snap, black_box(&mut p), &mut seen);
            debug_assert!(matches!(d, Decision::Forward { .. }));
            black_box(d)
        })
    });
}

fn path(c: &mut Criterion) {
    let src = NodeId(0xfeed);
    let dst = NodeId(0xd057);
    for hops in [1usize, 3, 5] {
        // Relay r forwards to relay r + 1; the last relay forwards to the destination. Each
        // relay's snapshot also holds 1,000 unrelated routes.
        let mut relays: Vec<(NodeId, RoutingSnapshot, RecentlySeen)> = (0..hops)
            .map(|r| {
                let me = NodeId(100 + r as u64);
                let next = if r + 1 == hops {
                    dst
                } else {
                    NodeId(101 + r as u64)
                };
                let (snap, _) = snapshot(me, 1000, |_| next, Some(dst));
                (me, snap, RecentlySeen::new(4096, Duration::from_secs(2)))
            })
            .collect();
        let mut p = packet(src, dst);
        let mut counter = 0u64;
        let name = format!(
            "routing/path/{hops}_hop{}",
            if hops == 1 { "" } else { "s" }
        );
        c.bench_function(&name, |b| {
            b.iter(|| {
                counter += 1;
                restamp(&mut p, counter);
                for (me, snap, seen) in relays.iter_mut() {
                    let d = forward_decision(*me, snap, &mut p, seen);
                    debug_assert!(matches!(d, Decision::Forward { .. }));
                    black_box(d);
                }
            })
        });
    }
}

// ---------------------------------------------------------------------------------------
// DHT lookups in a simulated network

struct Net {
    now: Instant,
    nodes: Vec<Dht>,
    entries: Vec<PeerEntry>,
    index: HashMap<NodeId, usize>,
}

fn entry(i: usize) -> PeerEntry {
    let mut seed = [0x33u8; 32];
    seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
    PeerEntry {
        public_key: Identity::from_seed(seed).entity_id(),
        addrs: vec![],
    }
}

impl Net {
    fn build(n: usize) -> Self {
        let now = origin();
        let entries: Vec<PeerEntry> = (0..n).map(entry).collect();
        let index = entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.node_id(), i))
            .collect();
        let nodes = entries
            .iter()
            .map(|e| Dht::new(DhtConfig::default(), e.clone(), now))
            .collect();
        let mut net = Self {
            now,
            nodes,
            entries,
            index,
        };
        for i in 1..n {
            let boot = net.entries[0].clone();
            net.nodes[i].add_contact(now, boot);
            let own = net.nodes[i].local().id;
            net.lookup(i, own);
        }
        net
    }

    fn lookup(&mut self, from: usize, target: DhtId) -> Option<u32> {
        let Ok(id) = self.nodes[from].find_node(self.now, target) else {
            return None;
        };
        let mut queue = VecDeque::new();
        let mut dirty = vec![from];
        loop {
            for i in dirty.drain(..) {
                while let Some(out) = self.nodes[i].poll_transmit() {
                    queue.push_back((i, self.index[&out.to.node_id()], out.message.to_vec()));
                }
            }
            let Some((src, to, bytes)) = queue.pop_front() else {
                break;
            };
            let Ok(msg) = DhtMessage::decode(&bytes) else {
                continue;
            };
            let from_entry = self.entries[src].clone();
            self.nodes[to].handle_message(self.now, from_entry, msg);
            dirty.push(to);
        }
        let mut hops = None;
        while let Some(ev) = self.nodes[from].poll_event() {
            if let DhtEvent::LookupDone {
                id: done,
                hops: h,
                outcome: LookupOutcome::Nodes(_),
                ..
            } = ev
                && done == id
            {
                hops = h;
            }
        }
        hops
    }
}

fn dht(c: &mut Criterion) {
    for n in [100usize, 1000] {
        let mut net = Net::build(n);
        let mut hops: Vec<u32> = (0..200)
            .filter_map(|s| {
                let target = (s * 104_729) % n;
                let from = (target * 7919 + 13) % n;
                let id = DhtId::of_public_key(&net.entries[target].public_key);
                (from != target).then(|| net.lookup(from, id)).flatten()
            })
            .collect();
        hops.sort_unstable();
        let pick = |p: f64| hops[((hops.len() as f64 - 1.0) * p).round() as usize];
        eprintln!(
            "dht/{n} nodes: lookup hops median {} p99 {} max {} over {} lookups",
            pick(0.5),
            pick(0.99),
            pick(1.0),
            hops.len()
        );
        let mut s = 0usize;
        c.bench_function(&format!("dht/find_node/{n}_nodes"), |b| {
            b.iter(|| {
                s += 1;
                let target = (s * 104_729) % n;
                let from = (target * 7919 + 13 + 1) % n;
                let id = DhtId::of_public_key(&net.entries[target].public_key);
                black_box(net.lookup(from, id))
            })
        });
    }
}

criterion_group!(benches, lookup, forward, path, dht);
criterion_main!(benches);
