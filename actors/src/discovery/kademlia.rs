//! The Kademlia actor: drives the `runtime::dht` core over netrun sessions.
//!
//! ```text
//!  PeerEvent::Up{peer} ─▶ add_contact ─▶ (first contact) join: FIND_NODE(own id)
//!        ─▶ done ─▶ publish_contact ({mesh}:node:{id}, signed with the node's identity at its
//!                   wall clock) ─▶ again every republish_interval
//!  DHT envelope ─▶ decode ─▶ Dht::handle_message(now, sender's session entry, msg)
//!  Resolve{node} ─▶ session peer? answer : Dht::resolve ─▶ LookupDone ─▶ contact_record
//!        ─▶ reply + Found{source: Dht} ─▶ coordinator
//!  Tick ─▶ Dht::handle_timeout (request timeouts, record expiry, bucket refresh)
//!  Dht::poll_transmit ─▶ session up? send DHT envelope
//!                        : hold (bounded, until the request would time out) and report the
//!                          contact as Found{source: Dht}, so the coordinator connects it;
//!                          PeerEvent::Up flushes what was held
//! ```
//!
//! Requests arrive over authenticated sessions, so the sender's key and address come from
//! its session, never from the message. What responses say about other nodes is a hint.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant as StdInstant};

use netrun_messages::discovery::{DhtId, DhtMessage, PeerEntry};
use netrun_messages::envelope::Subprotocol;
use netrun_messages::{Identity, NodeId};
use netrun_runtime::dht::{Dht, DhtConfig, DhtEvent, LookupId, LookupOutcome, contact_record};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use rand_core::{OsRng, RngCore};
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::clock::unix_millis;

use super::{
    BackendStatus, DiscoveredPeer, DiscoveryEvent, DiscoveryHandle, DiscoverySource, PeerContact,
};
use crate::events::PeerEvent;
use crate::pump::{self, Credit, Tasks};
use crate::wire::{Inbound, Wire};

/// How often timers are checked.
const TICK: Duration = Duration::from_millis(200);
/// Peers without a session that messages may wait for at once.
const MAX_PENDING_PEERS: usize = 64;
/// Messages that may wait for one peer's session.
const MAX_PENDING_PER_PEER: usize = 8;

/// How long a DHT request may go unanswered over sessions. A contact without a session
/// must first be connected (a handshake retries for up to ~5.5 s), and a timed-out
/// request evicts its contact, so the simulated core's 2 s would evict live contacts that
/// were merely being connected.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Kademlia settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KademliaSettings {
    /// The core's parameters (its `seed` is drawn per incarnation when left zero).
    pub dht: DhtConfig,
    /// The key namespace (the mesh fingerprint), so meshes never share records.
    pub mesh_prefix: String,
    /// Lifetime of this node's contact record.
    pub record_ttl: Duration,
    /// How often the contact record is published again.
    pub republish_interval: Duration,
    /// Addresses to publish; empty means the bound address (unless it is unspecified).
    pub advertise: Vec<SocketAddr>,
}

impl KademliaSettings {
    /// Defaults for the mesh `mesh_prefix`: one-hour records republished every 20 min, and
    /// a [`REQUEST_TIMEOUT`] that covers opening a session to the contact asked.
    pub fn new(mesh_prefix: impl Into<String>) -> Self {
        Self {
            dht: DhtConfig {
                request_timeout: REQUEST_TIMEOUT,
                ..DhtConfig::default()
            },
            mesh_prefix: mesh_prefix.into(),
            record_ttl: Duration::from_secs(3600),
            republish_interval: Duration::from_secs(20 * 60),
            advertise: Vec::new(),
        }
    }
}

/// Startup inputs of the Kademlia actor.
#[derive(Debug, Clone)]
pub struct KademliaArgs {
    /// The shared data path.
    pub wire: Arc<Wire>,
    /// This node's identity.
    pub identity: Arc<Identity>,
    /// Where found peers and status go (the actor attaches itself for `resolve`).
    pub discovery: DiscoveryHandle,
    /// Settings.
    pub settings: KademliaSettings,
}

/// Messages the Kademlia actor handles.
#[derive(Debug)]
pub enum KademliaMsg {
    /// `DHT` envelopes from session peers; the credit is held until they are handled, so
    /// the queue's bound holds.
    Inbound(Vec<Inbound>, Credit),
    /// A session event.
    Peer(PeerEvent),
    /// Session events were missed.
    Resync,
    /// Timers.
    Tick,
    /// Resolve a node id to a contact (its published record).
    Resolve {
        /// The node.
        node: NodeId,
        /// The contact, or `None` if it was not found.
        reply: RpcReplyPort<Option<PeerContact>>,
    },
}

/// The Kademlia actor.
#[derive(Debug, Clone, Copy, Default)]
pub struct KademliaActor;

/// The Kademlia actor's state.
#[derive(Debug)]
pub struct KademliaState {
    args: KademliaArgs,
    dht: Dht,
    _tasks: Tasks,
    purposes: HashMap<LookupId, Purpose>,
    resolving: HashMap<NodeId, Vec<RpcReplyPort<Option<PeerContact>>>>,
    pending: HashMap<NodeId, VecDeque<(StdInstant, Vec<u8>)>>,
    joined: bool,
    joining: bool,
    next_publish: Option<StdInstant>,
    published: u64,
    counters: Counters,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Join,
    Publish,
    Resolve(NodeId),
}

#[derive(Debug, Default)]
struct Counters {
    received: u64,
    sent: u64,
    malformed: u64,
    send_errors: u64,
    held_dropped: u64,
    resolved: u64,
    unresolved: u64,
    found: u64,
}

impl Actor for KademliaActor {
    type Msg = KademliaMsg;
    type State = KademliaState;
    type Arguments = KademliaArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let now = Instant::now().into_std();
        let mut config = args.settings.dht;
        if config.seed == [0; 32] {
            OsRng.fill_bytes(&mut config.seed);
        }
        let local = PeerEntry {
            public_key: args.identity.entity_id(),
            addrs: advertised(&args.settings.advertise, args.wire.local_addr()),
        };
        if local.addrs.is_empty() {
            warn!(
                "the DHT contact record carries no address: bound to an unspecified address and no discovery.advertise set"
            );
        }
        let pump = pump::serve_envelopes(
            &args.wire,
            Subprotocol::DHT,
            myself.clone(),
            1,
            KademliaMsg::Inbound,
        );
        let events = pump::peer_events(
            &args.wire,
            myself.clone(),
            KademliaMsg::Peer,
            Some(|| KademliaMsg::Resync),
        );
        let tick = myself.send_interval(TICK, || KademliaMsg::Tick);
        let mut dht = Dht::new(config, local, now);
        if let Err(e) = dht.set_mesh_prefix(&args.settings.mesh_prefix) {
            warn!(error = %e, "the mesh prefix cannot form keys: contact records will be refused");
        }
        let mut state = KademliaState {
            dht,
            args,
            _tasks: Tasks::new([pump, events, tick]),
            purposes: HashMap::new(),
            resolving: HashMap::new(),
            pending: HashMap::new(),
            joined: false,
            joining: false,
            next_publish: None,
            published: 0,
            counters: Counters::default(),
        };
        state.resync(now);
        state.flush().await;
        state.args.discovery.attach_dht(&myself);
        state.publish_status(&myself, true);
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let now = Instant::now().into_std();
        match message {
            KademliaMsg::Inbound(batch, _credit) => {
                for inbound in &batch {
                    state.on_envelope(now, inbound);
                }
            }
            KademliaMsg::Peer(PeerEvent::Up { node, .. }) => state.on_up(now, node),
            KademliaMsg::Peer(_) => {}
            KademliaMsg::Resync => state.resync(now),
            KademliaMsg::Tick => state.on_tick(now),
            KademliaMsg::Resolve { node, reply } => state.resolve(now, node, reply),
        }
        state.on_events(now);
        state.flush().await;
        state.publish_status(&myself, true);
        Ok(())
    }

    async fn post_stop(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.args.wire.unserve(Subprotocol::DHT);
        state.args.discovery.detach_dht(&myself);
        state.publish_status(&myself, false);
        Ok(())
    }
}

impl KademliaState {
    fn on_envelope(&mut self, now: StdInstant, inbound: &Inbound) {
        self.counters.received += 1;
        let message = match DhtMessage::decode(&inbound.body) {
            Ok(m) => m,
            Err(e) => {
                debug!(peer = %inbound.peer, error = %e, "malformed DHT message");
                self.counters.malformed += 1;
                return;
            }
        };
        let Some(keys) = self.args.wire.peer(inbound.peer) else {
            return;
        };
        let from = PeerEntry {
            public_key: keys.entity,
            addrs: vec![keys.addr],
        };
        self.dht.handle_message(now, from, message);
        if !self.joined && !self.joining {
            self.join(now);
        }
    }

    fn on_up(&mut self, now: StdInstant, node: NodeId) {
        let Some(keys) = self.args.wire.peer(node) else {
            return;
        };
        self.dht.add_contact(
            now,
            PeerEntry {
                public_key: keys.entity,
                addrs: vec![keys.addr],
            },
        );
        if !self.joined && !self.joining {
            self.join(now);
        }
    }

    /// Adds every session peer as a contact (at start, and after missed events).
    fn resync(&mut self, now: StdInstant) {
        let peers: Vec<NodeId> = self.args.wire.peers().iter().map(|k| k.node).collect();
        for node in peers {
            self.on_up(now, node);
        }
    }

    /// Looks up this node's own id (filling the table around it), then publishes.
    fn join(&mut self, now: StdInstant) {
        let own = DhtId::of_public_key(&self.args.identity.entity_id());
        match self.dht.find_node(now, own) {
            Ok(id) => {
                self.joining = true;
                self.purposes.insert(id, Purpose::Join);
            }
            Err(e) => debug!(error = %e, "DHT join deferred"),
        }
    }

    fn publish(&mut self, now: StdInstant) {
        let settings = &self.args.settings;
        match self.dht.publish_contact(
            now,
            &settings.mesh_prefix,
            &self.args.identity,
            unix_millis(),
            settings.record_ttl,
        ) {
            Ok(id) => {
                self.purposes.insert(id, Purpose::Publish);
            }
            Err(e) => debug!(error = %e, "contact record not published"),
        }
        self.next_publish = Some(now + settings.republish_interval);
    }

    fn on_tick(&mut self, now: StdInstant) {
        if self.dht.poll_timeout().is_some_and(|t| t <= now) {
            self.dht.handle_timeout(now);
        }
        if self.joined && self.next_publish.is_some_and(|t| t <= now) {
            self.publish(now);
        }
        let mut dropped = 0;
        self.pending.retain(|_, queue| {
            let before = queue.len();
            queue.retain(|(deadline, _)| *deadline > now);
            dropped += before - queue.len();
            !queue.is_empty()
        });
        self.counters.held_dropped += dropped as u64;
    }

    fn resolve(&mut self, now: StdInstant, node: NodeId, reply: RpcReplyPort<Option<PeerContact>>) {
        if node == self.args.wire.local() {
            let local = self.dht.local().entry.clone();
            let _ = reply.send(Some(contact_of(&local)));
            return;
        }
        if let Some(keys) = self.args.wire.peer(node) {
            let _ = reply.send(Some(PeerContact {
                node,
                public_key: keys.entity,
                addrs: vec![keys.addr],
            }));
            return;
        }
        if let Some(waiters) = self.resolving.get_mut(&node) {
            waiters.push(reply);
            return;
        }
        match self.dht.resolve(now, &self.args.settings.mesh_prefix, node) {
            Ok(id) => {
                self.purposes.insert(id, Purpose::Resolve(node));
                self.resolving.insert(node, vec![reply]);
            }
            Err(e) => {
                debug!(peer = %node, error = %e, "resolve refused");
                self.counters.unresolved += 1;
                let _ = reply.send(None);
            }
        }
    }

    fn on_events(&mut self, now: StdInstant) {
        while let Some(event) = self.dht.poll_event() {
            match event {
                DhtEvent::LookupDone { id, outcome, .. } => match self.purposes.remove(&id) {
                    Some(Purpose::Join) => {
                        self.joining = false;
                        self.joined = true;
                        self.publish(now);
                    }
                    Some(Purpose::Resolve(node)) => self.on_resolved(node, outcome),
                    Some(Purpose::Publish) | None => {}
                },
                DhtEvent::Stored { id, replicas, .. } => {
                    if self.purposes.remove(&id) == Some(Purpose::Publish) {
                        self.published += 1;
                        debug!(replicas, "contact record published");
                    }
                }
            }
        }
    }

    fn on_resolved(&mut self, node: NodeId, outcome: LookupOutcome) {
        let entry = match outcome {
            LookupOutcome::Value(value) => match contact_record(node, &value) {
                Ok(entry) => Some(entry),
                Err(e) => {
                    debug!(peer = %node, error = %e, "contact record rejected");
                    None
                }
            },
            LookupOutcome::Nodes(_) => None,
        };
        let contact = entry.as_ref().map(contact_of);
        match &entry {
            Some(entry) => {
                self.counters.resolved += 1;
                self.report(entry);
            }
            None => self.counters.unresolved += 1,
        }
        for reply in self.resolving.remove(&node).unwrap_or_default() {
            let _ = reply.send(contact.clone());
        }
    }

    /// Sends what the core wants sent; holds messages for peers without a session.
    async fn flush(&mut self) {
        let deadline = Instant::now().into_std() + self.args.settings.dht.request_timeout;
        while let Some(out) = self.dht.poll_transmit() {
            let node = out.to.node_id();
            let body = out.message.to_vec();
            if self.args.wire.peer(node).is_some() {
                self.send(node, &body).await;
                continue;
            }
            if !self.pending.contains_key(&node) {
                if self.pending.len() >= MAX_PENDING_PEERS || out.to.addrs.is_empty() {
                    self.counters.held_dropped += 1;
                    continue;
                }
                self.report(&out.to);
            }
            let queue = self.pending.entry(node).or_default();
            if queue.len() >= MAX_PENDING_PER_PEER {
                self.counters.held_dropped += 1;
                continue;
            }
            queue.push_back((deadline, body));
        }
        let ready: Vec<NodeId> = self
            .pending
            .keys()
            .copied()
            .filter(|n| self.args.wire.peer(*n).is_some())
            .collect();
        for node in ready {
            for (_, body) in self.pending.remove(&node).unwrap_or_default() {
                self.send(node, &body).await;
            }
        }
    }

    async fn send(&mut self, node: NodeId, body: &[u8]) {
        match self
            .args
            .wire
            .send_envelope(node, Subprotocol::DHT, None, body)
            .await
        {
            Ok(()) => self.counters.sent += 1,
            Err(e) => {
                debug!(peer = %node, error = %e, "DHT message not sent");
                self.counters.send_errors += 1;
            }
        }
    }

    fn report(&mut self, entry: &PeerEntry) {
        self.counters.found += 1;
        self.args
            .discovery
            .report(DiscoveryEvent::Found(DiscoveredPeer {
                node: entry.node_id(),
                entity: entry.public_key,
                addrs: entry.addrs.clone(),
                source: DiscoverySource::Dht,
            }));
    }

    fn publish_status(&self, myself: &ActorRef<KademliaMsg>, running: bool) {
        let c = &self.counters;
        self.args.discovery.publish_status(
            &myself.get_cell(),
            BackendStatus {
                name: "dht".to_string(),
                running,
                found: c.found,
                errors: c.malformed + c.send_errors,
                detail: format!(
                    "{} contacts, {} records, {} lookups; published {}×; resolved {} unresolved {}; contact records rejected {} (lookups) refused {} (stores); held for sessions {} (dropped {})",
                    self.dht.table().len(),
                    self.dht.records().len(),
                    self.dht.lookups_running(),
                    self.published,
                    c.resolved,
                    c.unresolved,
                    self.dht.counters().rejected_values,
                    self.dht.counters().refused_stores,
                    self.pending.values().map(VecDeque::len).sum::<usize>(),
                    c.held_dropped,
                ),
            },
        );
    }
}

/// The addresses to publish: the configured ones, else the bound one if it is specific.
fn advertised(configured: &[SocketAddr], bound: Option<SocketAddr>) -> Vec<SocketAddr> {
    if !configured.is_empty() {
        return configured
            .iter()
            .copied()
            .take(netrun_messages::discovery::MAX_ADDRS_PER_PEER)
            .collect();
    }
    bound
        .filter(|a| !a.ip().is_unspecified())
        .into_iter()
        .collect()
}

fn contact_of(entry: &PeerEntry) -> PeerContact {
    PeerContact {
        node: entry.node_id(),
        public_key: entry.public_key,
        addrs: entry.addrs.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertised_addresses_prefer_configuration_and_skip_unspecified() {
        let a: SocketAddr = "192.0.2.1:9470".parse().expect("addr");
        let any: SocketAddr = "0.0.0.0:9470".parse().expect("addr");
        let lo: SocketAddr = "127.0.0.1:9470".parse().expect("addr");
        assert_eq!(advertised(&[a], Some(lo)), vec![a]);
        assert_eq!(advertised(&[], Some(lo)), vec![lo]);
        assert!(advertised(&[], Some(any)).is_empty());
        assert!(advertised(&[], None).is_empty());
    }
}
