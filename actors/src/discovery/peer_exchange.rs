//! The peer-exchange actor: signed lists of session peers, swapped over sessions.
//!
//! ```text
//!  PeerEvent::Up{peer} ─▶ our list (session peers but `peer`) ─sign─▶ PEER_EXCHANGE ─▶ peer
//!  Tick (interval)     ─▶ the same, to the next session peer in turn; expired hints dropped
//!  PEER_EXCHANGE envelope ─▶ decode ─▶ PeerExchange::handle_list (signer == sender,
//!        signature, bounded hints) ─▶ Found{source: PeerExchange} ─▶ coordinator
//! ```
//!
//! A list names at most [`MAX_PEER_LIST_ENTRIES`] peers (one datagram); with more sessions
//! than that, successive lists rotate through them. Entries are hints only: the coordinator
//! connects, and the handshake proves the key. A hint is forgotten once a session with its
//! node comes up or goes down, or when its TTL (`hint_ttl`, ten minutes by default) has
//! passed, checked on every tick and every list, so a later list can report it again.

use std::sync::Arc;
use std::time::Duration;

use netrun_messages::discovery::{MAX_PEER_LIST_ENTRIES, PeerEntry, SignedPeerList};
use netrun_messages::envelope::Subprotocol;
use netrun_messages::{Identity, NodeId};
use netrun_runtime::peer_exchange::{PeerExchange, PeerExchangeConfig};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::time::Instant;
use tracing::debug;

use super::{BackendStatus, DiscoveredPeer, DiscoveryEvent, DiscoveryHandle, DiscoverySource};
use crate::clock::unix_millis;
use crate::events::PeerEvent;
use crate::pump::{self, Credit, Tasks};
use crate::wire::{Inbound, Wire};

/// Peer-exchange settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerExchangeSettings {
    /// How often a list goes to one session peer (in turn), besides the list sent when a
    /// session comes up.
    pub interval: Duration,
    /// The core's limits.
    pub core: PeerExchangeConfig,
}

impl Default for PeerExchangeSettings {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(30),
            core: PeerExchangeConfig::default(),
        }
    }
}

/// Startup inputs of the peer-exchange actor.
#[derive(Debug, Clone)]
pub struct PeerExchangeArgs {
    /// The shared data path.
    pub wire: Arc<Wire>,
    /// This node's identity (lists are signed with it).
    pub identity: Arc<Identity>,
    /// Where found peers and status go.
    pub discovery: DiscoveryHandle,
    /// Settings.
    pub settings: PeerExchangeSettings,
}

/// Messages the peer-exchange actor handles.
#[derive(Debug)]
pub enum PeerExchangeMsg {
    /// `PEER_EXCHANGE` envelopes from session peers; the credit is held until they are
    /// handled, so the queue's bound holds.
    Inbound(Vec<Inbound>, Credit),
    /// A session event.
    Peer(PeerEvent),
    /// Send a list to the next session peer in turn.
    Tick,
}

/// The peer-exchange actor.
#[derive(Debug, Clone, Copy, Default)]
pub struct PeerExchangeActor;

/// The peer-exchange actor's state.
#[derive(Debug)]
pub struct PeerExchangeState {
    args: PeerExchangeArgs,
    core: PeerExchange,
    _tasks: Tasks,
    turn: usize,
    rotation: usize,
    counters: Counters,
}

#[derive(Debug, Default)]
struct Counters {
    lists_sent: u64,
    lists_received: u64,
    found: u64,
    malformed: u64,
    refused: u64,
    send_errors: u64,
}

impl Actor for PeerExchangeActor {
    type Msg = PeerExchangeMsg;
    type State = PeerExchangeState;
    type Arguments = PeerExchangeArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let pump = pump::serve_envelopes(
            &args.wire,
            Subprotocol::PEER_EXCHANGE,
            myself.clone(),
            1,
            PeerExchangeMsg::Inbound,
        );
        // A missed event only delays a list: the interval sends one to every peer in turn.
        let events = pump::peer_events(&args.wire, myself.clone(), PeerExchangeMsg::Peer, None);
        let interval = args.settings.interval.max(Duration::from_millis(10));
        let tick = myself.send_interval(interval, || PeerExchangeMsg::Tick);
        let state = PeerExchangeState {
            core: PeerExchange::new(args.wire.local(), args.settings.core),
            args,
            _tasks: Tasks::new([pump, events, tick]),
            turn: 0,
            rotation: 0,
            counters: Counters::default(),
        };
        state.publish(&myself, true);
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            PeerExchangeMsg::Inbound(batch, _credit) => {
                for inbound in &batch {
                    state.on_list(inbound);
                }
            }
            PeerExchangeMsg::Peer(PeerEvent::Up { node, .. }) => {
                state.core.forget(node);
                state.send_list(node).await;
            }
            PeerExchangeMsg::Peer(PeerEvent::Down { node }) => {
                state.core.forget(node);
            }
            PeerExchangeMsg::Peer(_) => {}
            PeerExchangeMsg::Tick => {
                state.core.handle_timeout(Instant::now().into_std());
                let mut peers: Vec<NodeId> =
                    state.args.wire.peers().iter().map(|k| k.node).collect();
                if !peers.is_empty() {
                    peers.sort_unstable();
                    state.turn = state.turn.wrapping_add(1);
                    let to = peers[state.turn % peers.len()];
                    state.send_list(to).await;
                }
            }
        }
        state.publish(&myself, true);
        Ok(())
    }

    async fn post_stop(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.args.wire.unserve(Subprotocol::PEER_EXCHANGE);
        state.publish(&myself, false);
        Ok(())
    }
}

impl PeerExchangeState {
    /// Signs and sends `to` a list of this node's other session peers.
    async fn send_list(&mut self, to: NodeId) {
        let mut peers: Vec<PeerEntry> = self
            .args
            .wire
            .peers()
            .iter()
            .filter(|k| k.node != to)
            .map(|k| PeerEntry {
                public_key: k.entity,
                addrs: vec![k.addr],
            })
            .collect();
        if peers.len() > MAX_PEER_LIST_ENTRIES {
            peers.sort_unstable_by_key(PeerEntry::node_id);
            self.rotation = self.rotation.wrapping_add(MAX_PEER_LIST_ENTRIES);
            let start = self.rotation % peers.len();
            peers.rotate_left(start);
        }
        let issued_at_ms = unix_millis();
        let list = match PeerExchange::build_list(&self.args.identity, issued_at_ms, peers) {
            Ok(list) => list,
            Err(e) => {
                debug!(error = %e, "peer list not built");
                self.counters.send_errors += 1;
                return;
            }
        };
        match self
            .args
            .wire
            .send_envelope(to, Subprotocol::PEER_EXCHANGE, None, &list.to_vec())
            .await
        {
            Ok(()) => self.counters.lists_sent += 1,
            Err(e) => {
                debug!(peer = %to, error = %e, "peer list not sent");
                self.counters.send_errors += 1;
            }
        }
    }

    fn on_list(&mut self, inbound: &Inbound) {
        self.counters.lists_received += 1;
        let list = match SignedPeerList::decode(&inbound.body) {
            Ok(list) => list,
            Err(e) => {
                debug!(peer = %inbound.peer, error = %e, "malformed peer list");
                self.counters.malformed += 1;
                return;
            }
        };
        let now = Instant::now().into_std();
        let hints = match self.core.handle_list(now, inbound.peer, &list) {
            Ok(hints) => hints,
            Err(e) => {
                debug!(peer = %inbound.peer, error = %e, "peer list refused");
                self.counters.refused += 1;
                return;
            }
        };
        for hint in hints {
            let node = hint.entry.node_id();
            if self.args.wire.peer(node).is_some() {
                // Already a session peer: record the source, but keep no hint.
                self.core.forget(node);
            }
            self.counters.found += 1;
            self.args
                .discovery
                .report(DiscoveryEvent::Found(DiscoveredPeer {
                    node,
                    entity: hint.entry.public_key,
                    addrs: hint.entry.addrs,
                    source: DiscoverySource::PeerExchange,
                }));
        }
    }

    fn publish(&self, myself: &ActorRef<PeerExchangeMsg>, running: bool) {
        let c = &self.counters;
        self.args.discovery.publish_status(
            &myself.get_cell(),
            BackendStatus {
                name: "peer_exchange".to_string(),
                running,
                found: c.found,
                errors: c.malformed + c.refused + c.send_errors,
                detail: format!(
                    "lists sent {} received {}; {} hints held ({} dropped, {} expired); malformed {} refused {}",
                    c.lists_sent,
                    c.lists_received,
                    self.core.len(),
                    self.core.dropped(),
                    self.core.expired(),
                    c.malformed,
                    c.refused
                ),
            },
        );
    }
}
