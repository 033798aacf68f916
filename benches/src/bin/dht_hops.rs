//! DHT lookup hops in a deterministic simulation of the Kademlia core (k = 20, α = 3).
//!
//! For each network size, nodes join one by one through node 0 (bootstrap contact,
//! FIND_NODE of their own id, then publication of their contact record); then sampled
//! nodes look up sampled targets. Every message goes through the wire codec; delivery is
//! in order, one virtual millisecond per round, no loss. Reports per size: hops (the query
//! round that first learned the target; 0 = known locally), requests per lookup, messages
//! per join, and how many lookups found their target. One JSON line per size.
//!
//! `cargo run --release -p netrun-benches --bin dht_hops [-- N1 N2 …]` (default 100 1000)

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use netrun_messages::discovery::{DhtId, DhtMessage, PeerEntry};
use netrun_messages::{Identity, NodeId};
use netrun_runtime::dht::{Dht, DhtConfig, DhtEvent, LookupId, LookupOutcome};
use serde_json::json;

const MESH: &str = "bench";
const SAMPLES: usize = 500;

fn identity(i: usize) -> Identity {
    Identity::from_seed(*blake3::hash(&(i as u64).to_le_bytes()).as_bytes())
}

fn entry(i: usize) -> PeerEntry {
    let octets = (i as u32).to_be_bytes();
    PeerEntry {
        public_key: identity(i).entity_id(),
        addrs: vec![std::net::SocketAddr::from((
            [10, octets[1], octets[2], octets[3]],
            7000,
        ))],
    }
}

struct Net {
    now: Instant,
    nodes: Vec<Dht>,
    entries: Vec<PeerEntry>,
    index: HashMap<NodeId, usize>,
    dirty: BTreeSet<usize>,
    messages: u64,
}

impl Net {
    fn new() -> Self {
        Self {
            now: Instant::now(),
            nodes: Vec::new(),
            entries: Vec::new(),
            index: HashMap::new(),
            dirty: BTreeSet::new(),
            messages: 0,
        }
    }

    fn add(&mut self) -> anyhow::Result<usize> {
        let i = self.nodes.len();
        let e = entry(i);
        let config = DhtConfig {
            seed: *blake3::hash(&(i as u64 ^ 0xd47).to_le_bytes()).as_bytes(),
            ..DhtConfig::default()
        };
        self.index.insert(e.node_id(), i);
        let mut node = Dht::new(config, e.clone(), self.now);
        node.set_mesh_prefix(MESH)?;
        self.nodes.push(node);
        self.entries.push(e);
        Ok(i)
    }

    /// Delivers messages round by round until nothing is in flight.
    fn pump(&mut self) -> anyhow::Result<()> {
        let mut queue: VecDeque<(usize, usize, Vec<u8>)> = VecDeque::new();
        for _ in 0..100_000 {
            for i in std::mem::take(&mut self.dirty) {
                while let Some(out) = self.nodes[i].poll_transmit() {
                    let to = *self
                        .index
                        .get(&out.to.node_id())
                        .ok_or_else(|| anyhow::anyhow!("message to an unknown node"))?;
                    queue.push_back((i, to, out.message.to_vec()));
                }
            }
            if queue.is_empty() {
                return Ok(());
            }
            self.now += Duration::from_millis(1);
            for (from, to, bytes) in std::mem::take(&mut queue) {
                self.messages += 1;
                let msg = DhtMessage::decode(&bytes)?;
                let from = self.entries[from].clone();
                self.nodes[to].handle_message(self.now, from, msg);
                self.dirty.insert(to);
            }
        }
        anyhow::bail!("the simulated network did not quiesce")
    }

    fn run(
        &mut self,
        i: usize,
        start: impl FnOnce(&mut Dht, Instant) -> anyhow::Result<LookupId>,
    ) -> anyhow::Result<DhtEvent> {
        let id = start(&mut self.nodes[i], self.now)?;
        self.dirty.insert(i);
        self.pump()?;
        let mut found = None;
        while let Some(ev) = self.nodes[i].poll_event() {
            if matches!(&ev, DhtEvent::LookupDone { id: e, .. } | DhtEvent::Stored { id: e, .. } if *e == id)
            {
                found = Some(ev);
            }
        }
        found.ok_or_else(|| anyhow::anyhow!("lookup did not finish"))
    }

    fn build(n: usize) -> anyhow::Result<(Self, u64)> {
        let mut net = Self::new();
        net.add()?;
        for _ in 1..n {
            let i = net.add()?;
            let boot = net.entries[0].clone();
            let now = net.now;
            net.nodes[i].add_contact(now, boot);
            let own = net.nodes[i].local().id;
            net.run(i, |d, now| Ok(d.find_node(now, own)?))?;
            let id = identity(i);
            net.run(i, |d, now| {
                Ok(d.publish_contact(now, MESH, &id, 0, Duration::from_secs(3600))?)
            })?;
        }
        let per_join = net.messages / (n.max(2) as u64 - 1);
        Ok((net, per_join))
    }
}

fn pct(sorted: &[u32], p: f64) -> u32 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() -> anyhow::Result<()> {
    let sizes: Vec<usize> = {
        let args: Vec<usize> = std::env::args()
            .skip(1)
            .map(|s| s.parse())
            .collect::<Result<_, _>>()?;
        if args.is_empty() {
            vec![100, 1000]
        } else {
            args
        }
    };
    for n in sizes {
        let built = Instant::now();
        let (mut net, per_join) = Net::build(n)?;
        let build_ms = built.elapsed().as_secs_f64() * 1e3;
        let (mut hops, mut queries, mut found) = (Vec::new(), Vec::new(), 0usize);
        let samples = SAMPLES.min(n * (n - 1));
        for s in 0..samples {
            let target = (s * 104_729 + 7) % n;
            let from = (s * 7_919 + 13) % n;
            if from == target {
                continue;
            }
            let id = DhtId::of_public_key(&net.entries[target].public_key);
            if let DhtEvent::LookupDone {
                outcome: LookupOutcome::Nodes(nodes),
                hops: h,
                queries: q,
                ..
            } = net.run(from, |d, now| Ok(d.find_node(now, id)?))?
            {
                if nodes.first() == Some(&net.entries[target]) {
                    found += 1;
                }
                hops.push(h.unwrap_or(u32::MAX));
                queries.push(q);
            }
        }
        hops.sort_unstable();
        queries.sort_unstable();
        let mean = hops.iter().map(|&h| f64::from(h)).sum::<f64>() / hops.len() as f64;
        let line = json!({
            "bench": "dht_lookup_hops",
            "nodes": n,
            "k": netrun_runtime::dht::K,
            "alpha": netrun_runtime::dht::ALPHA,
            "lookups": hops.len(),
            "found": found,
            "hops_mean": (mean * 100.0).round() / 100.0,
            "hops_p50": pct(&hops, 0.5),
            "hops_p90": pct(&hops, 0.9),
            "hops_p99": pct(&hops, 0.99),
            "hops_max": pct(&hops, 1.0),
            "queries_p50": pct(&queries, 0.5),
            "queries_p99": pct(&queries, 0.99),
            "log2_n": ((n as f64).log2() * 10.0).round() / 10.0,
            "messages_per_join": per_join,
            "build_ms": build_ms.round(),
        });
        println!("{line}");
    }
    Ok(())
}
