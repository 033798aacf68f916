//! The pingwave actor: timer, inbound pump, core calls, sends, route offers.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use netrun_messages::NodeId;
use netrun_messages::discovery::PingwaveMessage;
use netrun_messages::envelope::Subprotocol;
use netrun_runtime::pingwave::{Pingwaves, Target};
use netrun_runtime::routing::Route;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::time::Instant;
use tracing::{Instrument, debug, info_span};

use super::{PingwaveArgs, PingwaveHandle, PingwaveMsg, PingwaveStatus, SeenNode};
use crate::events::PeerEvent;
use crate::pump::{self, Tasks};
use crate::router::RouterHandle;
use crate::wire::{Inbound, Wire};

/// The `Pingwave` actor.
#[derive(Debug, Clone, Copy, Default)]
pub struct PingwaveActor;

/// The pingwave actor's state.
#[derive(Debug)]
pub struct PingwaveState {
    wire: Arc<Wire>,
    router: RouterHandle,
    handle: PingwaveHandle,
    core: Pingwaves,
    status: PingwaveStatus,
    _tasks: Tasks,
}

impl Actor for PingwaveActor {
    type Msg = PingwaveMsg;
    type State = PingwaveState;
    type Arguments = PingwaveArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let wire = args.wire;
        // One batch in flight (a full queue drops newest, counted in
        // `dropped_handler_full`).
        let pump = pump::serve_envelopes(
            &wire,
            Subprotocol::PINGWAVE,
            myself.clone(),
            1,
            PingwaveMsg::Inbound,
        );
        // Missed events only delay forgetting a path; waves expire it too.
        let watch = pump::peer_events(&wire, myself.clone(), PingwaveMsg::Peer, None);
        let core = Pingwaves::new(wire.local(), args.config, Instant::now().into_std());
        myself.send_message(PingwaveMsg::Tick)?;
        Ok(PingwaveState {
            router: RouterHandle::new(Arc::clone(&wire)),
            handle: args.handle,
            wire,
            core,
            status: PingwaveStatus::default(),
            _tasks: Tasks::new([pump, watch]),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let span = info_span!("pingwave", node = %state.wire.local());
        self.dispatch(myself, message, state).instrument(span).await;
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.wire.unserve(Subprotocol::PINGWAVE);
        Ok(())
    }
}

impl PingwaveActor {
    async fn dispatch(
        &self,
        myself: ActorRef<PingwaveMsg>,
        message: PingwaveMsg,
        state: &mut PingwaveState,
    ) {
        match message {
            PingwaveMsg::Inbound(batch, _credit) => state.on_inbound(batch).await,
            PingwaveMsg::Peer(PeerEvent::Suspected { node } | PeerEvent::Down { node }) => {
                state.core.handle_peer_down(node);
                state.send_withdrawals().await;
            }
            PingwaveMsg::Peer(_) => {}
            PingwaveMsg::Tick => {
                state.on_tick().await;
                state.publish();
                let wait = Instant::from_std(state.core.poll_timeout())
                    .saturating_duration_since(Instant::now());
                myself.send_after(wait.max(Duration::from_millis(1)), || PingwaveMsg::Tick);
            }
        }
    }
}

impl PingwaveState {
    /// Direct, confirmed session peers: the nodes waves go to and come from.
    fn neighbours(&self) -> Vec<NodeId> {
        self.wire
            .peers()
            .iter()
            .filter(|k| !k.routed && k.confirmed.load(Ordering::Acquire))
            .map(|k| k.node)
            .collect()
    }

    async fn on_tick(&mut self) {
        let now = Instant::now().into_std();
        self.core.handle_timeout(now);
        self.send_withdrawals().await;
        if let Some(wave) = self.core.poll_wave(now) {
            self.status.waves_started += 1;
            let body = PingwaveMessage::Wave(wave).to_vec();
            for neighbour in self.neighbours() {
                self.send(neighbour, &body).await;
            }
        }
    }

    async fn on_inbound(&mut self, batch: Vec<Inbound>) {
        let now = Instant::now().into_std();
        let neighbours = self.neighbours();
        let mut routes = Vec::new();
        for inbound in batch {
            self.status.received += 1;
            let from = inbound.peer;
            if !neighbours.contains(&from) {
                self.status.not_neighbour += 1;
                continue;
            }
            let message = match PingwaveMessage::decode(&inbound.body) {
                Ok(message) => message,
                Err(e) => {
                    self.status.malformed += 1;
                    debug!(peer = %from, error = %e, "malformed pingwave message");
                    continue;
                }
            };
            match message {
                PingwaveMessage::Wave(wave) => {
                    let link_rtt = self.core.graph().edge(from).flatten();
                    let outcome = self.core.handle_wave(now, from, link_rtt, &wave);
                    if let Some(echo) = outcome.echo {
                        self.send(from, &PingwaveMessage::Echo(echo).to_vec()).await;
                    }
                    if let Some(onward) = outcome.forward {
                        let body = PingwaveMessage::Wave(onward).to_vec();
                        for &next in &neighbours {
                            if next != from && next != onward.origin {
                                self.send(next, &body).await;
                            }
                        }
                    }
                    routes.extend(outcome.route);
                }
                PingwaveMessage::Echo(echo) => {
                    self.core.handle_echo(now, from, &echo);
                }
                PingwaveMessage::Withdraw(withdraw) => {
                    if let Some(destination) = self.core.handle_withdraw(from, &withdraw) {
                        self.status.withdrawals_accepted += 1;
                        // In arrival order: a wave after the withdrawal restores the route.
                        self.offer(std::mem::take(&mut routes));
                        if !self.router.withdraw(vec![(destination, from)]) {
                            debug!("no router running; withdrawal dropped");
                        }
                    }
                }
            }
        }
        self.offer(routes);
        self.send_withdrawals().await;
    }

    fn offer(&self, routes: Vec<(NodeId, Route)>) {
        if !routes.is_empty() && !self.router.offer(routes) {
            debug!("no router running; pingwave routes dropped");
        }
    }

    /// Sends every withdrawal the core owes: to all direct neighbours, or to one.
    async fn send_withdrawals(&mut self) {
        let mut neighbours = None;
        while let Some((target, withdraw)) = self.core.poll_withdraw() {
            let all = neighbours.get_or_insert_with(|| self.neighbours());
            let to: Vec<NodeId> = match target {
                Target::Neighbours => all.clone(),
                Target::Neighbour(node) if all.contains(&node) => vec![node],
                Target::Neighbour(_) => Vec::new(),
            };
            let body = PingwaveMessage::Withdraw(withdraw).to_vec();
            for peer in to {
                self.status.withdrawals_sent += 1;
                self.send(peer, &body).await;
            }
        }
    }

    async fn send(&mut self, peer: NodeId, body: &[u8]) {
        match self
            .wire
            .send_envelope(peer, Subprotocol::PINGWAVE, None, body)
            .await
        {
            Ok(()) => self.status.sent += 1,
            Err(e) => debug!(%peer, error = %e, "pingwave not sent"),
        }
    }

    /// Publishes the seen nodes and counters into the handle.
    fn publish(&self) {
        let mut status = self.status;
        status.nodes = self.core.graph().num_nodes();
        status.edges = self.core.graph().num_edges();
        self.handle.publish(self.seen(), status);
    }

    fn seen(&self) -> Vec<SeenNode> {
        let mut seen: Vec<SeenNode> = self
            .core
            .graph()
            .nodes()
            .map(|(node, n)| SeenNode {
                node,
                hops: n.hops,
                via: n.via,
                rtt: n.path_rtt,
                last_seq: n.last_seq,
            })
            .collect();
        seen.sort_by_key(|s| s.node);
        seen
    }
}
