//! Kademlia: 256-bit ids, XOR distance, k-buckets, iterative lookups and bounded storage.
//!
//! ```text
//!  find_node / find_value / store / publish_contact / resolve ─▶ Lookup (α in flight)
//!        poll_transmit() ─▶ Outgoing{to, DhtMessage{request_id, FIND_*/STORE}} ─▶ session
//!  session ─▶ handle_message(now, from, msg)
//!        request  ─▶ answer from KBuckets / RecordStore ─▶ poll_transmit()
//!        response ─▶ matched by (request id, sender) ─▶ Lookup ─▶ next queries or done
//!  handle_timeout(now) ─▶ request timeouts (contact evicted), record expiry, bucket refresh
//!        poll_event() ─▶ DhtEvent::{LookupDone, Stored}
//! ```
//!
//! Node DHT ids are BLAKE3 of the node's public key; record keys are BLAKE3 of a
//! [`NamespacedKey`] `{mesh_prefix}:{key_type}:{key}`, so two meshes never share a key.
//! Every node publishes its signed contact record under `{mesh_prefix}:node:{node id}`;
//! [`Dht::resolve`] finds it, taking a value only if [`contact_record`] accepts it (its key
//! derives the node id asked for and its signature verifies) and asking further nodes past
//! any value it rejects. Storing nodes hold contact records to [`admit_store`]. Messages
//! arrive over authenticated sessions, so `from` is a proven identity; what responses *say*
//! about other nodes is only a hint.

mod buckets;
mod contact;
mod key;
mod lookup;
mod store;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use netrun_messages::discovery::{
    ContactError, DhtBody, DhtId, DhtMessage, MAX_DHT_CONTACTS, PeerEntry, SignedContact,
};
use netrun_messages::{Identity, NodeId};
use thiserror::Error;

pub use buckets::{Contact, InsertOutcome, KBuckets};
pub use contact::{ContactRecordError, ContactStoreError, admit_store, contact_record};
pub use key::{
    Distance, KeyError, MAX_KEY_LEN, NamespacedKey, bucket_index, id_in_bucket, xor_distance,
};
pub use lookup::Lookup;
pub use store::{RecordStore, StoreConfig, StoreError};

/// Kademlia's bucket size and replication factor.
pub const K: usize = 20;
/// Kademlia's lookup parallelism.
pub const ALPHA: usize = 3;

/// DHT parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DhtConfig {
    /// Bucket size and replication factor.
    pub k: usize,
    /// Requests in flight per lookup.
    pub alpha: usize,
    /// A request unanswered this long fails and its contact is evicted.
    pub request_timeout: Duration,
    /// A non-empty bucket with no lookup in its range for this long is refreshed.
    pub refresh_interval: Duration,
    /// Spare contacts cached per full bucket.
    pub replacement_len: usize,
    /// Lookups running at once; more are refused.
    pub max_lookups: usize,
    /// Record storage limits.
    pub store: StoreConfig,
    /// Seed of the refresh-target generator (randomness is an input).
    pub seed: [u8; 32],
}

impl Default for DhtConfig {
    fn default() -> Self {
        Self {
            k: K,
            alpha: ALPHA,
            request_timeout: Duration::from_secs(2),
            refresh_interval: Duration::from_secs(15 * 60),
            replacement_len: 8,
            max_lookups: 64,
            store: StoreConfig::default(),
            seed: [0; 32],
        }
    }
}

/// Identifies a lookup started on one [`Dht`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LookupId(pub u64);

/// A message to send over the session with `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// The recipient.
    pub to: PeerEntry,
    /// The message.
    pub message: DhtMessage,
}

/// How a lookup ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupOutcome {
    /// The closest contacts that answered, closest first.
    Nodes(Vec<PeerEntry>),
    /// A FIND_VALUE hit.
    Value(Vec<u8>),
}

/// What the DHT reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DhtEvent {
    /// A lookup finished.
    LookupDone {
        /// Which lookup.
        id: LookupId,
        /// Its target.
        target: DhtId,
        /// The result.
        outcome: LookupOutcome,
        /// The query round that first learned the target or value (0: known locally);
        /// `None` if it was not found.
        hops: Option<u32>,
        /// Requests the lookup sent.
        queries: u32,
    },
    /// A store finished its lookup and sent STORE to the closest nodes.
    Stored {
        /// Which lookup.
        id: LookupId,
        /// The key.
        key: DhtId,
        /// STORE requests sent (plus one if this node kept a copy).
        replicas: usize,
    },
}

/// Why a DHT operation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum DhtError {
    /// [`DhtConfig::max_lookups`] lookups are already running.
    #[error("too many lookups in progress")]
    TooManyLookups,
    /// The key could not be namespaced.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The value is too large for a record.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// This node's contact record could not be signed.
    #[error(transparent)]
    Contact(#[from] ContactError),
}

/// Values this node turned away.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DhtCounters {
    /// STOREs (received, or this node's own copy) refused by [`admit_store`].
    pub refused_stores: u64,
    /// Values a resolve lookup was given that [`contact_record`] rejected; the lookup went
    /// on asking other nodes.
    pub rejected_values: u64,
}

#[derive(Debug)]
enum Purpose {
    /// FIND_NODE (`value` false) or FIND_VALUE; `contact_of` makes a FIND_VALUE a resolve,
    /// which takes only a value [`contact_record`] accepts for that node.
    Find {
        value: bool,
        contact_of: Option<NodeId>,
    },
    Store {
        value: Vec<u8>,
        ttl: Duration,
    },
}

#[derive(Debug)]
struct Running {
    lookup: Lookup,
    purpose: Purpose,
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    lookup: Option<LookupId>,
    to: DhtId,
    sent_at: Instant,
}

/// The Kademlia core of one node.
#[derive(Debug)]
pub struct Dht {
    config: DhtConfig,
    local: Contact,
    /// The key namespace contact records are checked against when stored.
    mesh_prefix: Option<String>,
    counters: DhtCounters,
    table: KBuckets,
    store: RecordStore,
    lookups: HashMap<LookupId, Running>,
    /// By request id, so timeouts are handled (and retries numbered) in send order.
    pending: BTreeMap<u64, Pending>,
    /// `(sent_at + request_timeout, request id)` of every entry in `pending`, and nothing
    /// else: the first element is the next request timeout.
    deadlines: BTreeSet<(Instant, u64)>,
    outbox: VecDeque<Outgoing>,
    events: VecDeque<DhtEvent>,
    next_request: u64,
    next_lookup: u64,
    refresh_counter: u64,
    refresh_checked_at: Instant,
}

impl Dht {
    /// A DHT node for `local` (this node's key and addresses).
    pub fn new(config: DhtConfig, local: PeerEntry, now: Instant) -> Self {
        let local = Contact::new(local);
        Self {
            table: KBuckets::new(local.id, config.k, config.replacement_len),
            store: RecordStore::new(config.store),
            config,
            local,
            mesh_prefix: None,
            counters: DhtCounters::default(),
            lookups: HashMap::new(),
            pending: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            outbox: VecDeque::new(),
            events: VecDeque::new(),
            next_request: 1,
            next_lookup: 1,
            refresh_counter: 0,
            refresh_checked_at: now,
        }
    }

    /// Adds a known contact (a bootstrap node, an authenticated session peer).
    pub fn add_contact(&mut self, now: Instant, entry: PeerEntry) -> InsertOutcome {
        self.table.insert(now, Contact::new(entry))
    }

    /// Starts an iterative FIND_NODE for `target`.
    pub fn find_node(&mut self, now: Instant, target: DhtId) -> Result<LookupId, DhtError> {
        self.start(
            now,
            target,
            Purpose::Find {
                value: false,
                contact_of: None,
            },
        )
    }

    /// Starts an iterative FIND_VALUE for `key` (answered at once from the local store).
    pub fn find_value(&mut self, now: Instant, key: DhtId) -> Result<LookupId, DhtError> {
        self.start(
            now,
            key,
            Purpose::Find {
                value: true,
                contact_of: None,
            },
        )
    }

    /// Stores `value` under `key` on the `k` nodes closest to it.
    pub fn store(
        &mut self,
        now: Instant,
        key: DhtId,
        value: Vec<u8>,
        ttl: Duration,
    ) -> Result<LookupId, DhtError> {
        if value.len() > netrun_messages::discovery::MAX_DHT_VALUE_LEN {
            return Err(StoreError::ValueTooLarge(value.len()).into());
        }
        self.start(now, key, Purpose::Store { value, ttl })
    }

    /// Sets the key namespace this node stores under. A STORE of a signed contact record is
    /// taken only if its key is `{mesh_prefix}:node:{record's node id}`, so until this is
    /// set every contact record offered to this node is refused.
    pub fn set_mesh_prefix(&mut self, mesh_prefix: &str) -> Result<(), KeyError> {
        NamespacedKey::node_record(mesh_prefix, self.local.node_id())?;
        self.mesh_prefix = Some(mesh_prefix.to_owned());
        Ok(())
    }

    /// Publishes this node's contact record, signed by `identity` (this node's key) at
    /// wall-clock time `issued_at_ms`, under `{mesh_prefix}:node:{node id}`. A later
    /// `issued_at_ms` replaces the record where it is stored; an earlier one is refused.
    pub fn publish_contact(
        &mut self,
        now: Instant,
        mesh_prefix: &str,
        identity: &Identity,
        issued_at_ms: u64,
        ttl: Duration,
    ) -> Result<LookupId, DhtError> {
        let key = NamespacedKey::node_record(mesh_prefix, self.local.node_id())?;
        let record = SignedContact::sign(identity, issued_at_ms, self.local.entry.clone())?;
        self.store(now, key.id(), record.to_vec(), ttl)
    }

    /// Looks up the contact record of `node`. The lookup ends with a value only if
    /// [`contact_record`] accepts it; a rejected value is counted and the lookup asks on.
    pub fn resolve(
        &mut self,
        now: Instant,
        mesh_prefix: &str,
        node: NodeId,
    ) -> Result<LookupId, DhtError> {
        let key = NamespacedKey::node_record(mesh_prefix, node)?;
        self.start(
            now,
            key.id(),
            Purpose::Find {
                value: true,
                contact_of: Some(node),
            },
        )
    }

    /// Takes `value` under `key` into this node's store if [`admit_store`] allows it.
    fn put_checked(
        &mut self,
        now: Instant,
        key: DhtId,
        value: Vec<u8>,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let held = self.store.get(now, &key);
        if let Err(e) = admit_store(self.mesh_prefix.as_deref(), &key, &value, held) {
            self.counters.refused_stores += 1;
            return Err(e.into());
        }
        self.store.put(now, key, value, ttl)
    }

    /// Whether a lookup takes `value`: any value, or for a resolve of `contact_of` only one
    /// [`contact_record`] accepts. Counts a rejection.
    fn value_accepted(
        counters: &mut DhtCounters,
        contact_of: Option<NodeId>,
        value: &[u8],
    ) -> bool {
        let accepted = contact_of.is_none_or(|node| contact_record(node, value).is_ok());
        if !accepted {
            counters.rejected_values += 1;
        }
        accepted
    }

    fn start(
        &mut self,
        now: Instant,
        target: DhtId,
        purpose: Purpose,
    ) -> Result<LookupId, DhtError> {
        let (value, contact_of) = match purpose {
            Purpose::Find { value, contact_of } => (value, contact_of),
            Purpose::Store { .. } => (false, None),
        };
        if self.lookups.len() >= self.config.max_lookups {
            return Err(DhtError::TooManyLookups);
        }
        let id = LookupId(self.next_lookup);
        self.next_lookup += 1;
        if let Some(i) = bucket_index(&self.local.id, &target) {
            self.table.touch(i, now);
        }
        let seeds = self.table.closest(&target, self.config.k);
        let mut lookup = Lookup::new(
            self.local.id,
            target,
            seeds,
            self.config.k,
            self.config.alpha,
            self.config.request_timeout,
        );
        if value
            && let Some(v) = self.store.get(now, &target)
            && Self::value_accepted(&mut self.counters, contact_of, v)
        {
            lookup.on_value(&self.local.id, v.to_vec());
        }
        self.lookups.insert(id, Running { lookup, purpose });
        self.drive(now, id);
        Ok(id)
    }

    /// Takes a message received over the authenticated session with `from`.
    pub fn handle_message(&mut self, now: Instant, from: PeerEntry, message: DhtMessage) {
        let from = Contact::new(from);
        let from_id = from.id;
        if from_id == self.local.id {
            return;
        }
        if message.is_response() {
            let Some(p) = self.pending.get(&message.request_id).copied() else {
                return;
            };
            if p.to != from_id {
                return; // a response id echoed by the wrong peer is ignored
            }
            self.pending.remove(&message.request_id);
            self.deadlines
                .remove(&(p.sent_at + self.config.request_timeout, message.request_id));
            self.seen(now, from);
            let Some(lid) = p.lookup else {
                return;
            };
            let Some(run) = self.lookups.get_mut(&lid) else {
                return;
            };
            match message.body {
                DhtBody::Nodes { contacts } => {
                    let contacts = contacts.into_iter().map(Contact::new).collect();
                    run.lookup.on_nodes(&from_id, contacts);
                }
                DhtBody::Value { value } => {
                    let contact_of = match run.purpose {
                        Purpose::Find { contact_of, .. } => contact_of,
                        Purpose::Store { .. } => None,
                    };
                    if Self::value_accepted(&mut self.counters, contact_of, &value) {
                        run.lookup.on_value(&from_id, value);
                    } else {
                        // A node that answered with a rejected value named no closer
                        // contacts: it counts as answered, and the lookup asks on.
                        run.lookup.on_nodes(&from_id, Vec::new());
                    }
                }
                _ => run.lookup.on_failure(&from_id),
            }
            self.drive(now, lid);
            return;
        }
        let reply = |body| DhtMessage {
            request_id: message.request_id,
            body,
        };
        let answer = match &message.body {
            DhtBody::FindNode { target } => reply(self.nodes_body(target, &from_id)),
            DhtBody::FindValue { key } => match self.store.get(now, key) {
                Some(v) => reply(DhtBody::Value { value: v.to_vec() }),
                None => reply(self.nodes_body(key, &from_id)),
            },
            DhtBody::Store {
                key,
                ttl_secs,
                value,
            } => {
                let ttl = Duration::from_secs(u64::from(*ttl_secs));
                let stored = self.put_checked(now, *key, value.clone(), ttl).is_ok();
                reply(DhtBody::StoreAck { stored })
            }
            _ => return,
        };
        let to = from.entry.clone();
        self.outbox.push_back(Outgoing {
            to,
            message: answer,
        });
        self.seen(now, from);
    }

    /// Records that `from` is alive. A contact new to the table is handed the records it now
    /// belongs with (the Kademlia join rule): records whose key is closer to the newcomer
    /// than to this node, for which the newcomer is among the `k` closest contacts this node
    /// knows, and for which this node is among the `alpha` closest holders it knows (so one
    /// record is handed over by a few nodes, not by all `k` replicas). Values stay findable
    /// at the k closest nodes as the network grows.
    fn seen(&mut self, now: Instant, from: Contact) {
        let newcomer = from.clone();
        if self.table.insert(now, from) != InsertOutcome::Inserted {
            return;
        }
        let local = self.local.id;
        let k = self.config.k;
        let alpha = self.config.alpha;
        let table = &self.table;
        let handoff: Vec<(DhtId, Vec<u8>, Instant)> = self
            .store
            .iter(now)
            .filter(|(key, _, _)| {
                let theirs = xor_distance(&newcomer.id, key);
                let ours = xor_distance(&local, key);
                // The newcomer is one of the contacts closer than us, so `<= alpha` means at
                // most `alpha - 1` others are.
                theirs < ours
                    && table.count_closer(key, &ours, alpha + 1) <= alpha
                    && table.count_closer(key, &theirs, k) < k
            })
            .map(|(key, v, at)| (key, v.to_vec(), at))
            .collect();
        for (key, value, expires_at) in handoff {
            let ttl_secs = u32::try_from(expires_at.saturating_duration_since(now).as_secs())
                .unwrap_or(u32::MAX)
                .max(1);
            let body = DhtBody::Store {
                key,
                ttl_secs,
                value,
            };
            self.send_request(now, None, newcomer.clone(), body);
        }
    }

    fn send_request(&mut self, now: Instant, lookup: Option<LookupId>, to: Contact, body: DhtBody) {
        let request_id = self.next_request;
        self.next_request += 1;
        self.pending.insert(
            request_id,
            Pending {
                lookup,
                to: to.id,
                sent_at: now,
            },
        );
        self.deadlines
            .insert((now + self.config.request_timeout, request_id));
        self.outbox.push_back(Outgoing {
            to: to.entry,
            message: DhtMessage { request_id, body },
        });
    }

    fn nodes_body(&self, target: &DhtId, requester: &DhtId) -> DhtBody {
        let contacts = self
            .table
            .closest(target, self.config.k.min(MAX_DHT_CONTACTS) + 1)
            .into_iter()
            .filter(|c| c.id != *requester)
            .take(self.config.k.min(MAX_DHT_CONTACTS))
            .map(|c| c.entry)
            .collect();
        DhtBody::Nodes { contacts }
    }

    /// Times out requests, expires records and starts due bucket refreshes.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut expired = Vec::new();
        while let Some(&(deadline, request)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_first();
            expired.push(request);
        }
        // In send order, so retries are numbered the same way on every run.
        expired.sort_unstable();
        for request in expired {
            let Some(p) = self.pending.remove(&request) else {
                continue;
            };
            self.table.remove(&p.to);
            if let Some(lid) = p.lookup {
                if let Some(run) = self.lookups.get_mut(&lid) {
                    run.lookup.on_failure(&p.to);
                }
                self.drive(now, lid);
            }
        }
        self.store.expire(now);
        if now.saturating_duration_since(self.refresh_checked_at)
            >= self.config.refresh_interval / 4
        {
            self.refresh_checked_at = now;
            let before = now.checked_sub(self.config.refresh_interval);
            let stale = before.map_or_else(Vec::new, |b| self.table.stale_buckets(b));
            for index in stale {
                self.refresh_counter += 1;
                let mut h = blake3::Hasher::new();
                h.update(&self.config.seed);
                h.update(&self.refresh_counter.to_le_bytes());
                let target = id_in_bucket(&self.local.id, index, h.finalize().as_bytes());
                if self.find_node(now, target).is_err() {
                    break;
                }
            }
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) next has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let request = self.deadlines.first().map(|(deadline, _)| *deadline);
        let refresh = self.refresh_checked_at + self.config.refresh_interval / 4;
        [request, self.store.poll_timeout(), Some(refresh)]
            .into_iter()
            .flatten()
            .min()
    }

    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<Outgoing> {
        self.outbox.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<DhtEvent> {
        self.events.pop_front()
    }

    /// The routing table.
    pub fn table(&self) -> &KBuckets {
        &self.table
    }

    /// The record store.
    pub fn records(&self) -> &RecordStore {
        &self.store
    }

    /// This node's contact.
    pub fn local(&self) -> &Contact {
        &self.local
    }

    /// Values this node turned away.
    pub fn counters(&self) -> DhtCounters {
        self.counters
    }

    /// Lookups running.
    pub fn lookups_running(&self) -> usize {
        self.lookups.len()
    }

    fn drive(&mut self, now: Instant, id: LookupId) {
        let Some(run) = self.lookups.get_mut(&id) else {
            return;
        };
        let value = matches!(run.purpose, Purpose::Find { value: true, .. });
        let target = run.lookup.target();
        let queries = run.lookup.next_queries(now);
        let done = run.lookup.is_done();
        for to in queries {
            let body = if value {
                DhtBody::FindValue { key: target }
            } else {
                DhtBody::FindNode { target }
            };
            self.send_request(now, Some(id), to, body);
        }
        if !done {
            return;
        }
        let Some(run) = self.lookups.remove(&id) else {
            return;
        };
        let lookup = run.lookup;
        match run.purpose {
            Purpose::Find { .. } => {
                let outcome = match lookup.value() {
                    Some(v) => LookupOutcome::Value(v.to_vec()),
                    None => LookupOutcome::Nodes(
                        lookup.closest().into_iter().map(|c| c.entry).collect(),
                    ),
                };
                let hops = match outcome {
                    LookupOutcome::Value(_) => lookup.hops(),
                    LookupOutcome::Nodes(_) if value => None,
                    LookupOutcome::Nodes(_) => lookup.hops(),
                };
                self.events.push_back(DhtEvent::LookupDone {
                    id,
                    target,
                    outcome,
                    hops,
                    queries: lookup.queries(),
                });
            }
            Purpose::Store { value, ttl } => {
                let closest = lookup.closest();
                let ttl_secs = u32::try_from(ttl.as_secs()).unwrap_or(u32::MAX);
                let mut replicas = 0;
                let local_is_close = closest.len() < self.config.k
                    || closest.last().is_some_and(|far| {
                        xor_distance(&self.local.id, &target) < xor_distance(&far.id, &target)
                    });
                if local_is_close && self.put_checked(now, target, value.clone(), ttl).is_ok() {
                    replicas += 1;
                }
                for c in closest {
                    let body = DhtBody::Store {
                        key: target,
                        ttl_secs,
                        value: value.clone(),
                    };
                    self.send_request(now, None, c, body);
                    replicas += 1;
                }
                self.events.push_back(DhtEvent::Stored {
                    id,
                    key: target,
                    replicas,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_clock::t0;

    use crate::test_clock::peer_entry as entry;

    const MESH: &str = "0123456789abcdef";

    fn record(seed: u8, at: u64) -> Vec<u8> {
        let id = Identity::from_seed([seed; 32]);
        SignedContact::sign(&id, at, entry(seed))
            .expect("signs")
            .to_vec()
    }

    fn store_request(key: DhtId, value: Vec<u8>) -> DhtMessage {
        DhtMessage {
            request_id: 1,
            body: DhtBody::Store {
                key,
                ttl_secs: 600,
                value,
            },
        }
    }

    /// Sends a STORE from `from` to `dht` and returns the STORE_ACK's `stored` (a sender
    /// new to the table may also be handed records; those are skipped).
    fn offer(dht: &mut Dht, now: Instant, from: u8, key: DhtId, value: Vec<u8>) -> bool {
        dht.handle_message(now, entry(from), store_request(key, value));
        std::iter::from_fn(|| dht.poll_transmit())
            .find_map(|o| match o.message.body {
                DhtBody::StoreAck { stored } => Some(stored),
                _ => None,
            })
            .expect("a STORE is acknowledged")
    }

    #[test]
    fn a_storing_node_refuses_forged_misplaced_replayed_and_overwriting_values() {
        let now = t0();
        let mut dht = Dht::new(DhtConfig::default(), entry(1), now);
        dht.set_mesh_prefix(MESH).expect("valid prefix");
        let key = NamespacedKey::node_record(MESH, entry(2).node_id())
            .expect("key")
            .id();
        let other_key = NamespacedKey::node_record(MESH, entry(3).node_id())
            .expect("key")
            .id();

        // Garbage under a key nobody has published is not judged.
        assert!(offer(&mut dht, now, 3, key, b"garbage".to_vec()));
        // The owner's signed record replaces it.
        assert!(offer(&mut dht, now, 2, key, record(2, 20)));
        // A member forging the owner's record with its own addresses.
        let id2 = Identity::from_seed([2; 32]);
        let mut forged = SignedContact::sign(&id2, 30, entry(2)).expect("signs");
        forged.entry.addrs = entry(3).addrs;
        assert!(!offer(&mut dht, now, 3, key, forged.to_vec()));
        // The owner's valid record under another node's key.
        assert!(!offer(&mut dht, now, 3, other_key, record(2, 20)));
        // A replay of the owner's older record.
        assert!(!offer(&mut dht, now, 3, key, record(2, 10)));
        // Garbage over the signed record.
        assert!(!offer(&mut dht, now, 3, key, b"garbage".to_vec()));
        assert_eq!(dht.counters().refused_stores, 4);
        assert_eq!(dht.records().get(now, &key), Some(&record(2, 20)[..]));
        // The owner's newer record replaces its older one.
        assert!(offer(&mut dht, now, 2, key, record(2, 40)));
        assert_eq!(dht.records().get(now, &key), Some(&record(2, 40)[..]));

        // Without a mesh prefix a contact record's key cannot be checked: refused.
        let mut unset = Dht::new(DhtConfig::default(), entry(1), now);
        assert!(!offer(&mut unset, now, 2, key, record(2, 20)));
    }

    #[test]
    fn a_resolve_asks_on_past_a_rejected_value() {
        let now = t0();
        let target = entry(9).node_id();
        let key = NamespacedKey::node_record(MESH, target).expect("key").id();
        for (second_answer, resolved) in [
            (
                DhtBody::Value {
                    value: record(9, 5),
                },
                true,
            ),
            (
                DhtBody::Nodes {
                    contacts: Vec::new(),
                },
                false,
            ),
        ] {
            let mut dht = Dht::new(DhtConfig::default(), entry(1), now);
            dht.add_contact(now, entry(2));
            dht.add_contact(now, entry(3));
            let lookup = dht.resolve(now, MESH, target).expect("starts");
            let sent: Vec<Outgoing> = std::iter::from_fn(|| dht.poll_transmit()).collect();
            assert_eq!(sent.len(), 2);
            assert!(
                sent.iter()
                    .all(|o| o.message.body == DhtBody::FindValue { key })
            );
            // The first node answers with a record for another node, then with garbage
            // (the second answer to one request is ignored).
            dht.handle_message(
                now,
                sent[0].to.clone(),
                DhtMessage {
                    request_id: sent[0].message.request_id,
                    body: DhtBody::Value {
                        value: record(4, 5),
                    },
                },
            );
            assert_eq!(dht.poll_event(), None, "the lookup goes on");
            assert_eq!(dht.counters().rejected_values, 1);
            dht.handle_message(
                now,
                sent[1].to.clone(),
                DhtMessage {
                    request_id: sent[1].message.request_id,
                    body: second_answer,
                },
            );
            match dht.poll_event() {
                Some(DhtEvent::LookupDone { id, outcome, .. }) => {
                    assert_eq!(id, lookup);
                    match outcome {
                        LookupOutcome::Value(v) => {
                            assert!(resolved);
                            assert_eq!(contact_record(target, &v).expect("valid"), entry(9));
                        }
                        LookupOutcome::Nodes(_) => assert!(!resolved),
                    }
                }
                other => panic!("expected the lookup to end, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_resolve_skips_an_invalid_local_copy() {
        let now = t0();
        let target = entry(9).node_id();
        let key = NamespacedKey::node_record(MESH, target).expect("key").id();
        let mut dht = Dht::new(DhtConfig::default(), entry(1), now);
        dht.store
            .put(now, key, b"garbage".to_vec(), Duration::from_secs(60))
            .expect("fits");
        dht.add_contact(now, entry(2));
        dht.resolve(now, MESH, target).expect("starts");
        assert_eq!(dht.counters().rejected_values, 1);
        assert!(
            dht.poll_event().is_none(),
            "the local garbage did not end it"
        );
        assert!(dht.poll_transmit().is_some(), "the contact is asked");
    }

    #[test]
    fn publish_contact_signs_with_this_nodes_key_only() {
        let now = t0();
        let mut dht = Dht::new(DhtConfig::default(), entry(1), now);
        dht.set_mesh_prefix(MESH).expect("valid prefix");
        let wrong = Identity::from_seed([2; 32]);
        assert_eq!(
            dht.publish_contact(now, MESH, &wrong, 5, Duration::from_secs(60)),
            Err(DhtError::Contact(ContactError::KeyMismatch))
        );
        let own = Identity::from_seed([1; 32]);
        dht.publish_contact(now, MESH, &own, 5, Duration::from_secs(60))
            .expect("starts");
        // No contacts: this node keeps the only copy, and it verifies.
        let key = NamespacedKey::node_record(MESH, entry(1).node_id())
            .expect("key")
            .id();
        let held = dht.records().get(now, &key).expect("kept locally");
        assert_eq!(
            contact_record(entry(1).node_id(), held).expect("valid"),
            entry(1)
        );
    }

    #[test]
    fn request_deadlines_follow_answers_and_timeouts() {
        let now = t0();
        let config = DhtConfig::default();
        let mut dht = Dht::new(config, entry(1), now);
        for seed in 2..6 {
            dht.add_contact(now, entry(seed));
        }
        dht.find_node(now, DhtId([7; 32])).expect("starts");
        let sent: Vec<Outgoing> = std::iter::from_fn(|| dht.poll_transmit()).collect();
        assert_eq!(sent.len(), config.alpha);
        assert_eq!(dht.deadlines.len(), dht.pending.len());
        assert_eq!(dht.poll_timeout(), Some(now + config.request_timeout));

        // One answer (with no closer contacts) settles its request and its deadline.
        let later = now + Duration::from_millis(500);
        let answered = &sent[0];
        dht.handle_message(
            later,
            answered.to.clone(),
            DhtMessage {
                request_id: answered.message.request_id,
                body: DhtBody::Nodes {
                    contacts: Vec::new(),
                },
            },
        );
        assert!(!dht.pending.contains_key(&answered.message.request_id));
        assert_eq!(dht.deadlines.len(), dht.pending.len());

        // The answer let the lookup query the fourth contact. The first queries time out
        // at their deadline, not before; then only the later query's deadline is left.
        dht.handle_timeout(now + config.request_timeout - Duration::from_millis(1));
        assert_eq!(dht.pending.len(), config.alpha);
        dht.handle_timeout(now + config.request_timeout);
        assert_eq!(dht.deadlines.len(), dht.pending.len());
        assert!(dht.pending.values().all(|p| p.sent_at == later));
        assert_eq!(dht.poll_timeout(), Some(later + config.request_timeout));
        dht.handle_timeout(later + config.request_timeout);
        assert!(dht.pending.is_empty() && dht.deadlines.is_empty());
        assert_eq!(
            dht.poll_timeout(),
            Some(now + config.refresh_interval / 4),
            "only the refresh check is left"
        );
    }
}
