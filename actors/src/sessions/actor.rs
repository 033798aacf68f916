//! The Sessions actor: handshake responder, session spawner, static-peer reconnects.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use netrun_messages::{EntityId, Header, NodeId, PacketKind};
use netrun_runtime::handshake::{
    Established, HandshakeError, LiveSession, Responder, ResponderConfig, keeps_own_initiation,
};
use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent,
};
use rand_core::OsRng;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{Instrument, debug, info, info_span, warn};

use super::{SessionsArgs, SessionsMsg};
use crate::session::{ConnectError, PeerInfo, SessionActor, SessionArgs, SessionMsg, SessionStart};
use crate::stats::TransportStats;

/// How often static peers are checked for reconnection.
const RECONNECT_TICK: Duration = Duration::from_millis(500);
/// Longest wait between reconnect attempts to a static peer.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(30);
/// Most session actors one node runs; further handshakes are refused (bounded state).
const MAX_SESSIONS: usize = 4096;

/// The `Sessions` actor.
#[derive(Debug, Clone, Copy, Default)]
pub struct SessionsActor;

/// The Sessions actor's state.
#[derive(Debug)]
pub struct SessionsState {
    args: SessionsArgs,
    responder: Responder,
    sessions: HashMap<NodeId, Entry>,
    by_actor: HashMap<ActorId, NodeId>,
    reconnect: HashMap<NodeId, Reconnect>,
    tick: Option<JoinHandle<()>>,
}

#[derive(Debug)]
struct Entry {
    actor: ActorRef<SessionMsg>,
    addr: SocketAddr,
    /// Whether the session runs through relays.
    routed: bool,
    /// Set when this node accepted the peer's handshake: the peer's static key and the
    /// initiator ephemeral of that handshake, for the replay and rotation rules.
    accepted: Option<LiveFacts>,
    /// Whether this node is still initiating (for simultaneous open).
    initiating: bool,
}

#[derive(Debug, Clone, Copy)]
struct LiveFacts {
    static_key: [u8; 32],
    ephemeral: [u8; 32],
}

/// Where a session's packets go.
#[derive(Debug, Clone, Copy)]
enum Target {
    /// To this address.
    Direct(SocketAddr),
    /// To the current next hop toward the peer.
    Routed,
}

#[derive(Debug)]
struct Reconnect {
    addr: SocketAddr,
    peer: EntityId,
    next: Instant,
    delay: Duration,
}

impl Actor for SessionsActor {
    type Msg = SessionsMsg;
    type State = SessionsState;
    type Arguments = SessionsArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let responder = Responder::new(
            (*args.identity).clone(),
            &args.psk,
            ResponderConfig {
                session_timeout: args.liveness.idle_timeout,
                confirm_timeout: args.liveness.fail_after,
                ..ResponderConfig::default()
            },
        );
        let now = Instant::now();
        let reconnect = args
            .static_peers
            .iter()
            .filter(|(_, peer)| *peer != args.identity.entity_id())
            .map(|&(addr, peer)| {
                (
                    peer.node_id(),
                    Reconnect {
                        addr,
                        peer,
                        next: now,
                        delay: Duration::from_millis(250),
                    },
                )
            })
            .collect();
        // Sessions of a previous incarnation (which died without cleaning up) cannot be
        // adopted: their keys are withdrawn and static peers re-handshake.
        for keys in args.wire.peers() {
            keys.session.stop(Some("sessions restarted".into()));
            if args.wire.withdraw_session(keys.node, keys.session.get_id()) {
                args.wire
                    .emit(crate::events::PeerEvent::Down { node: keys.node });
            }
        }
        args.wire.set_sessions(Some(myself.clone()));
        let tick = myself.send_interval(RECONNECT_TICK, || SessionsMsg::Tick);
        myself.send_message(SessionsMsg::Tick)?;
        Ok(SessionsState {
            args,
            responder,
            sessions: HashMap::new(),
            by_actor: HashMap::new(),
            reconnect,
            tick: Some(tick),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SessionsMsg::Handshakes(batch) => {
                for (from, datagram) in batch {
                    state.on_handshake(&myself, from, datagram).await;
                }
            }
            SessionsMsg::Connect { addr, peer, reply } => {
                state
                    .connect(&myself, Target::Direct(addr), peer, Some(reply))
                    .await
            }
            SessionsMsg::ConnectRouted { peer, reply } => {
                state
                    .connect(&myself, Target::Routed, peer, Some(reply))
                    .await
            }
            SessionsMsg::Peers(reply) => state.peers(reply),
            SessionsMsg::Tick => state.on_tick(&myself).await,
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                debug!(?reason, "session ended");
                state.forget(&cell);
            }
            SupervisionEvent::ActorFailed(cell, error) => {
                warn!(%error, "session actor failed");
                // A failed actor skips its post_stop: withdraw its keys here.
                if let Some(node) = state.by_actor.get(&cell.get_id()).copied() {
                    if state.args.wire.withdraw_session(node, cell.get_id()) {
                        state
                            .args
                            .wire
                            .emit(crate::events::PeerEvent::Down { node });
                    }
                }
                state.forget(&cell);
            }
            _ => {}
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(tick) = state.tick.take() {
            tick.abort();
        }
        state.args.wire.set_sessions(None);
        for entry in state.sessions.values() {
            entry.actor.stop(Some("shutdown".into()));
        }
        Ok(())
    }
}

impl SessionsState {
    async fn on_handshake(
        &mut self,
        myself: &ActorRef<SessionsMsg>,
        from: SocketAddr,
        datagram: Bytes,
    ) {
        let stats = self.args.wire.stats();
        let Ok((header, _)) = Header::parse(&datagram) else {
            TransportStats::bump(&stats.dropped_malformed);
            return;
        };
        match header.kind {
            PacketKind::HandshakeResponse => match self.sessions.get(&header.src) {
                Some(entry) => {
                    let _ = entry
                        .actor
                        .send_message(SessionMsg::HandshakeResponse(datagram));
                }
                None => TransportStats::bump(&stats.dropped_no_session),
            },
            PacketKind::HandshakeInit => {
                let span = info_span!(
                    "netrun.handshake",
                    node = %self.args.wire.local(),
                    peer = %header.src,
                    %from,
                    role = "responder"
                );
                self.on_init(myself, from, header, &datagram)
                    .instrument(span)
                    .await;
            }
            _ => TransportStats::bump(&stats.dropped_malformed),
        }
    }

    async fn on_init(
        &mut self,
        myself: &ActorRef<SessionsMsg>,
        from: SocketAddr,
        header: Header,
        datagram: &[u8],
    ) {
        let stats = self.args.wire.stats();
        let existing = self.sessions.get(&header.src);
        if let Some(entry) = existing {
            // Simultaneous open: the lower node id's initiation wins.
            if entry.initiating && keeps_own_initiation(self.args.wire.local(), header.src) {
                debug!(peer = %header.src, "simultaneous open: keeping our initiation");
                return;
            }
        } else if self.sessions.len() >= MAX_SESSIONS {
            TransportStats::bump(&stats.handshake_failures);
            warn!(peer = %header.src, "session limit reached; handshake refused");
            return;
        }
        let live = existing.and_then(|entry| {
            let keys = self.args.wire.peer(header.src)?;
            let last_heard = self.args.wire.instant_of(
                keys.last_heard_ms
                    .load(std::sync::atomic::Ordering::Relaxed),
            );
            let facts = entry.accepted.unwrap_or(LiveFacts {
                static_key: keys.entity.x25519_public().unwrap_or_default(),
                ephemeral: [0; 32],
            });
            Some(LiveSession {
                static_key: facts.static_key,
                initiator_ephemeral: facts.ephemeral,
                last_heard: last_heard.into_std(),
            })
        });
        let now = Instant::now().into_std();
        match self
            .responder
            .handle_init(now, datagram, live.as_ref(), &mut OsRng)
        {
            Ok((established, response)) => {
                // A first message that took hops came through relays: answer along this
                // node's own route to the initiator, or back through the relay it came from.
                let routed = header.hop_count > 0;
                let to = if routed {
                    self.args.wire.next_hop_addr(header.src).unwrap_or(from)
                } else {
                    from
                };
                if let Err(e) = self.args.wire.send_raw(to, &response).await {
                    debug!(error = %e, "handshake response not sent");
                    return;
                }
                self.accept(myself, from, routed, established).await;
            }
            Err(HandshakeError::Replay) => TransportStats::bump(&stats.handshake_replays),
            Err(e) => {
                TransportStats::bump(&stats.handshake_failures);
                info!(peer = %header.src, %from, error = %e, "handshake refused");
            }
        }
    }

    async fn accept(
        &mut self,
        myself: &ActorRef<SessionsMsg>,
        from: SocketAddr,
        routed: bool,
        established: Established,
    ) {
        let node = established.peer_node;
        let facts = LiveFacts {
            static_key: established.peer.x25519_public().unwrap_or_default(),
            ephemeral: established.initiator_ephemeral,
        };
        if let Some(entry) = self.sessions.get_mut(&node) {
            // A routed peer's handshakes may arrive through a different relay each time.
            if entry.routed == routed && (routed || entry.addr == from) {
                entry.accepted = Some(facts);
                entry.initiating = false;
                let _ = entry
                    .actor
                    .send_message(SessionMsg::Rotate(Box::new(established)));
                return;
            }
            // The peer came back from another address: replace the session.
            let old = entry.actor.clone();
            self.by_actor.remove(&old.get_id());
            self.sessions.remove(&node);
            old.stop(Some("replaced".into()));
        }
        let peer = established.peer;
        let start = SessionStart::Accepted(Box::new(established));
        if let Some(actor) = self.spawn_session(myself, from, routed, peer, start).await {
            self.insert(node, actor, from, routed, Some(facts), false);
        }
    }

    async fn connect(
        &mut self,
        myself: &ActorRef<SessionsMsg>,
        target: Target,
        peer: EntityId,
        reply: Option<RpcReplyPort<Result<NodeId, ConnectError>>>,
    ) {
        let (addr, routed) = match target {
            Target::Direct(addr) => (addr, false),
            // Replaced by the first hop on each attempt.
            Target::Routed => (SocketAddr::from(([0, 0, 0, 0], 0)), true),
        };
        if peer == self.args.identity.entity_id() {
            if let Some(reply) = reply {
                let _ = reply.send(Err(ConnectError::SelfConnect));
            }
            return;
        }
        if peer.x25519_public().is_err() {
            if let Some(reply) = reply {
                let _ = reply.send(Err(ConnectError::BadPublicKey(addr)));
            }
            return;
        }
        let node = peer.node_id();
        if let Some(entry) = self.sessions.get(&node) {
            if let Some(reply) = reply {
                let _ = entry.actor.send_message(SessionMsg::WaitUp(reply));
            }
            return;
        }
        let waiters = reply.into_iter().collect();
        let start = SessionStart::Initiate { waiters };
        if let Some(actor) = self.spawn_session(myself, addr, routed, peer, start).await {
            self.insert(node, actor, addr, routed, None, true);
        }
    }

    async fn spawn_session(
        &mut self,
        myself: &ActorRef<SessionsMsg>,
        addr: SocketAddr,
        routed: bool,
        peer: EntityId,
        start: SessionStart,
    ) -> Option<ActorRef<SessionMsg>> {
        let args = SessionArgs {
            wire: Arc::clone(&self.args.wire),
            identity: Arc::clone(&self.args.identity),
            psk: Arc::clone(&self.args.psk),
            peer,
            addr,
            routed,
            liveness: self.args.liveness,
            start,
        };
        match Actor::spawn_linked(None, SessionActor, args, myself.get_cell()).await {
            Ok((actor, _)) => Some(actor),
            Err(e) => {
                warn!(error = %e, "session actor did not start");
                None
            }
        }
    }

    fn insert(
        &mut self,
        node: NodeId,
        actor: ActorRef<SessionMsg>,
        addr: SocketAddr,
        routed: bool,
        accepted: Option<LiveFacts>,
        initiating: bool,
    ) {
        self.by_actor.insert(actor.get_id(), node);
        self.sessions.insert(
            node,
            Entry {
                actor,
                addr,
                routed,
                accepted,
                initiating,
            },
        );
    }

    fn forget(&mut self, cell: &ActorCell) {
        if let Some(node) = self.by_actor.remove(&cell.get_id()) {
            if self
                .sessions
                .get(&node)
                .is_some_and(|e| e.actor.get_id() == cell.get_id())
            {
                self.sessions.remove(&node);
            }
        }
    }

    fn peers(&self, reply: RpcReplyPort<Vec<PeerInfo>>) {
        let actors: Vec<_> = self.sessions.values().map(|e| e.actor.clone()).collect();
        tokio::spawn(async move {
            let mut infos = Vec::with_capacity(actors.len());
            for actor in actors {
                if let Ok(info) = ractor::call_t!(actor, SessionMsg::Info, 1000) {
                    infos.push(info);
                }
            }
            infos.sort_by_key(|i| i.node);
            let _ = reply.send(infos);
        });
    }

    async fn on_tick(&mut self, myself: &ActorRef<SessionsMsg>) {
        let now = Instant::now();
        let due: Vec<(NodeId, SocketAddr, EntityId)> = self
            .reconnect
            .iter_mut()
            .filter_map(|(node, r)| {
                if self.args.wire.peer(*node).is_some() {
                    r.delay = Duration::from_millis(250);
                    return None;
                }
                if self.sessions.contains_key(node) || r.next > now {
                    return None;
                }
                r.next = now + r.delay;
                r.delay = (r.delay * 2).min(MAX_RECONNECT_DELAY);
                Some((*node, r.addr, r.peer))
            })
            .collect();
        for (_, addr, peer) in due {
            self.connect(myself, Target::Direct(addr), peer, None).await;
        }
    }
}
