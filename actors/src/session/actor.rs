//! The session actor: handshake (initiator), key publication, heartbeats, liveness.

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use netrun_messages::envelope::{Envelope, Subprotocol};
use netrun_messages::{NodeId, PacketFlags, PacketKind};
use netrun_runtime::handshake::{
    BackoffConfig, Established, HandshakeBackoff, HandshakeError, Initiator,
};
use netrun_runtime::liveness::{HeartbeatProbe, Liveness, LivenessEvent};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use rand_core::{OsRng, RngCore};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{Instrument, debug, info, info_span, warn};

use super::streams::SessionStreams;
use super::{
    ConnectError, ControlFrame, PeerInfo, PeerState, SessionArgs, SessionMsg, SessionStart,
};
use crate::events::PeerEvent;
use crate::stats::TransportStats;
use crate::wire::{KeyPair, PeerKeys, Wire};

/// The `Session{peer}` actor.
#[derive(Debug, Clone, Copy, Default)]
pub struct SessionActor;

/// A session actor's state.
#[derive(Debug)]
pub struct SessionState {
    args: Shared,
    phase: Phase,
    waiters: Vec<RpcReplyPort<Result<NodeId, ConnectError>>>,
    tick: Option<JoinHandle<()>>,
    epoch: u64,
    streams: SessionStreams,
}

#[derive(Debug)]
struct Shared {
    wire: Arc<Wire>,
    identity: Arc<netrun_messages::Identity>,
    psk: Arc<zeroize::Zeroizing<[u8; 32]>>,
    peer: netrun_messages::EntityId,
    peer_node: NodeId,
    addr: std::net::SocketAddr,
    routed: bool,
    liveness: netrun_runtime::liveness::LivenessConfig,
    backoff: HandshakeBackoff,
}

#[derive(Debug)]
enum Phase {
    Handshaking {
        initiator: Box<Initiator>,
        attempt: u32,
    },
    Up(Box<Up>),
    Closed,
}

#[derive(Debug)]
struct Up {
    keys: Arc<PeerKeys>,
    liveness: Liveness,
    initiator: bool,
    /// Responder side, until the peer's first packet: when the handshake core's
    /// confirmation window ends (`Established::confirm_deadline`).
    confirm_deadline: Option<std::time::Instant>,
    seen_ms: u64,
    announced: bool,
    suspected: bool,
    /// Deadline of a pending rotation (its keys sit in `keys.next`).
    pending_until: Option<std::time::Instant>,
}

impl Actor for SessionActor {
    type Msg = SessionMsg;
    type State = SessionState;
    type Arguments = SessionArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let peer_node = args.peer.node_id();
        let shared = Shared {
            wire: args.wire,
            identity: args.identity,
            psk: args.psk,
            peer: args.peer,
            peer_node,
            addr: args.addr,
            routed: args.routed,
            liveness: args.liveness,
            backoff: HandshakeBackoff::new(BackoffConfig {
                max_attempts: CONNECT_ATTEMPTS,
                ..BackoffConfig::default()
            }),
        };
        let streams = SessionStreams::new(peer_node, shared.wire.stream_accept_config())?;
        let mut state = SessionState {
            args: shared,
            phase: Phase::Closed,
            waiters: Vec::new(),
            tick: None,
            epoch: 0,
            streams,
        };
        match args.start {
            SessionStart::Initiate { waiters } => {
                state.waiters = waiters;
                state.begin_attempt(&myself, 1).await;
            }
            SessionStart::Accepted(established) => {
                state.install(&myself, *established, false)?;
            }
        }
        let period = tick_period(state.args.liveness.heartbeat_interval);
        state.tick = Some(myself.send_interval(period, || SessionMsg::Tick));
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let span =
            info_span!("session", node = %state.args.wire.local(), peer = %state.args.peer_node);
        self.dispatch(myself, message, state).instrument(span).await
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(tick) = state.tick.take() {
            tick.abort();
        }
        state.fail_waiters(&ConnectError::Closed);
        state.streams.shut();
        if let Phase::Up(up) = &state.phase {
            state
                .args
                .wire
                .withdraw(state.args.peer_node, up.keys.epoch);
            if up.announced {
                state.args.wire.emit(PeerEvent::Down {
                    node: state.args.peer_node,
                });
            }
        }
        Ok(())
    }
}

impl SessionActor {
    async fn dispatch(
        &self,
        myself: ActorRef<SessionMsg>,
        message: SessionMsg,
        state: &mut SessionState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            // Frames are authenticated by whichever keys opened them; the epoch they carry
            // only tells which keys that was.
            SessionMsg::Control { epoch: _, frames } => {
                state.on_frames(&myself, frames).await;
                state.pump_streams(&myself).await;
            }
            SessionMsg::Promote { pair } => state.promote(&myself, pair),
            SessionMsg::HandshakeResponse(datagram) => {
                let span = info_span!("netrun.handshake", peer = %state.args.peer_node, role = "initiator");
                let _entered = span.enter();
                state.on_response(&myself, &datagram)?;
            }
            SessionMsg::Rotate(established) => {
                info!("peer rotated the session");
                state.install(&myself, *established, false)?;
            }
            SessionMsg::Tick => state.on_tick(&myself).await,
            SessionMsg::Retry { attempt } => {
                if matches!(state.phase, Phase::Handshaking { attempt: a, .. } if a == attempt) {
                    state.begin_attempt(&myself, attempt + 1).await;
                }
            }
            SessionMsg::WaitUp(reply) => match &state.phase {
                Phase::Up(_) => {
                    let _ = reply.send(Ok(state.args.peer_node));
                }
                Phase::Handshaking { .. } => state.waiters.push(reply),
                Phase::Closed => {
                    let _ = reply.send(Err(ConnectError::Closed));
                }
            },
            SessionMsg::Info(reply) => {
                let _ = reply.send(state.info());
            }
            SessionMsg::StreamOpen { id, config, reply } => {
                let _ = reply.send(state.streams.open(id, config, &myself));
            }
            SessionMsg::StreamSend { id } => {
                state.streams.on_send(id);
                state.pump_streams(&myself).await;
            }
            SessionMsg::StreamConsumed { id, bytes } => {
                state.streams.on_consumed(id, bytes);
                state.pump_streams(&myself).await;
            }
            SessionMsg::StreamClose { id, timeout, reply } => {
                state.streams.on_close(id, timeout, reply);
                state.pump_streams(&myself).await;
            }
            SessionMsg::StreamAbort { id } => {
                state.streams.on_abort(id);
                state.pump_streams(&myself).await;
            }
            SessionMsg::StreamRelease { id } => {
                state.streams.on_release(id);
                state.pump_streams(&myself).await;
            }
            SessionMsg::StreamStats { id, reply } => {
                let _ = reply.send(state.streams.stats(id));
            }
            SessionMsg::StreamList(reply) => {
                let _ = reply.send(state.streams.list());
            }
            SessionMsg::StreamTimer { token } => {
                if state.streams.on_timer(token) {
                    state.pump_streams(&myself).await;
                }
            }
        }
        Ok(())
    }
}

impl SessionState {
    async fn begin_attempt(&mut self, myself: &ActorRef<SessionMsg>, attempt: u32) {
        let Some(wait) = self.args.backoff.next_attempt() else {
            warn!(addr = %self.args.addr, routed = self.args.routed, attempts = attempt - 1, "handshake timed out");
            let error = if self.args.routed {
                ConnectError::Unreachable {
                    node: self.args.peer_node,
                    attempts: attempt - 1,
                }
            } else {
                ConnectError::Timeout {
                    addr: self.args.addr,
                    attempts: attempt - 1,
                }
            };
            self.give_up(myself, error, "handshake timed out");
            return;
        };
        let handshake_id = OsRng.next_u64();
        let now = Instant::now().into_std();
        let identity = &self.args.identity;
        match Initiator::start(
            now,
            identity,
            self.args.peer,
            &self.args.psk,
            handshake_id,
            &mut OsRng,
        ) {
            Ok((initiator, datagram)) => {
                // A routed handshake goes to the current next hop, re-resolved per attempt.
                let target = if self.args.routed {
                    self.args.wire.next_hop_addr(self.args.peer_node)
                } else {
                    Some(self.args.addr)
                };
                match target {
                    Some(addr) => {
                        self.args.addr = addr;
                        debug!(attempt, %addr, "sending handshake");
                        if let Err(e) = self.args.wire.send_raw(addr, &datagram).await {
                            debug!(error = %e, "handshake send failed; will retry");
                        }
                    }
                    None => debug!(attempt, "no route to the peer yet; will retry"),
                }
                self.phase = Phase::Handshaking {
                    initiator: Box::new(initiator),
                    attempt,
                };
                myself.send_after(wait, move || SessionMsg::Retry { attempt });
            }
            Err(e) => {
                let error = ConnectError::Handshake {
                    addr: self.args.addr,
                    source: Arc::new(e),
                };
                self.give_up(myself, error, "handshake could not start");
            }
        }
    }

    fn on_response(
        &mut self,
        myself: &ActorRef<SessionMsg>,
        datagram: &[u8],
    ) -> Result<(), ActorProcessingErr> {
        let Phase::Handshaking { initiator, .. } = &mut self.phase else {
            return Ok(());
        };
        let now = Instant::now().into_std();
        match initiator.handle_response(now, datagram) {
            Ok(established) => self.install(myself, established, true)?,
            Err(e @ (HandshakeError::UnknownHandshake(_) | HandshakeError::Finished)) => {
                debug!(error = %e, "ignored a stale handshake response")
            }
            Err(e) => {
                warn!(addr = %self.args.addr, error = %e, "handshake failed");
                let error = ConnectError::Handshake {
                    addr: self.args.addr,
                    source: Arc::new(e),
                };
                self.give_up(myself, error, "handshake failed");
            }
        }
        Ok(())
    }

    /// Takes the keys of a completed handshake: a first establishment, or a rotation.
    fn install(
        &mut self,
        myself: &ActorRef<SessionMsg>,
        established: Established,
        initiator: bool,
    ) -> Result<(), ActorProcessingErr> {
        TransportStats::bump(&self.args.wire.stats().handshakes_ok);
        let deadline = established.confirm_deadline;
        let pair = Arc::new(KeyPair {
            tx: established.tx,
            rx: established.rx,
            id: self.args.wire.next_epoch(),
        });
        // A rotation of a confirmed session stays pending until its keys open a packet, so
        // a replayed or abandoned handshake can never cut a live session.
        if let Phase::Up(up) = &mut self.phase {
            if !initiator && up.keys.confirmed.load(Ordering::Acquire) {
                up.keys.next.store(Some(pair));
                up.pending_until = deadline;
                return Ok(());
            }
        }
        self.publish(myself, pair, initiator, deadline)
    }

    /// Promotes the pending rotation whose keys just opened a packet.
    fn promote(&mut self, myself: &ActorRef<SessionMsg>, pair: u64) {
        let Phase::Up(up) = &self.phase else { return };
        let Some(next) = up.keys.next.load_full() else {
            return;
        };
        if next.id != pair {
            return;
        }
        info!("rotated session keys confirmed");
        if let Err(e) = self.publish(myself, next, false, None) {
            warn!(error = %e, "rotation not installed");
        }
    }

    /// Publishes `pair` as the session's keys.
    fn publish(
        &mut self,
        myself: &ActorRef<SessionMsg>,
        pair: Arc<KeyPair>,
        initiator: bool,
        confirm_deadline: Option<std::time::Instant>,
    ) -> Result<(), ActorProcessingErr> {
        // The initiator authenticated the responder's message, and a promoted rotation
        // opened a packet; only a fresh responder session waits for key confirmation.
        let confirmed = confirm_deadline.is_none();
        self.epoch = pair.id;
        let now_ms = self.args.wire.now_ms();
        let keys = Arc::new(PeerKeys {
            node: self.args.peer_node,
            entity: self.args.peer,
            addr: self.args.addr,
            routed: self.args.routed,
            pair,
            next: ArcSwapOption::empty(),
            session: myself.clone(),
            epoch: self.epoch,
            last_heard_ms: AtomicU64::new(now_ms),
            confirmed: AtomicBool::new(confirmed),
        });
        self.args.wire.publish(Arc::clone(&keys));
        let now = Instant::now();
        let (announced, was_initiator) = match &self.phase {
            Phase::Up(up) => (up.announced, up.initiator),
            _ => (false, initiator),
        };
        self.phase = Phase::Up(Box::new(Up {
            keys,
            liveness: Liveness::new(self.args.liveness, now.into_std())?,
            initiator: was_initiator || initiator,
            confirm_deadline,
            seen_ms: now_ms,
            announced,
            suspected: false,
            pending_until: None,
        }));
        if confirmed {
            self.announce_up();
        }
        if initiator {
            // Key confirmation for the responder: an authenticated packet right away.
            let wire = Arc::clone(&self.args.wire);
            let node = self.args.peer_node;
            tokio::spawn(async move {
                let heartbeat =
                    wire.send(node, PacketKind::Heartbeat, 0, PacketFlags::NONE, &[], None);
                if let Err(e) = heartbeat.await {
                    debug!(error = %e, "key-confirmation heartbeat not sent");
                }
            });
        }
        Ok(())
    }

    fn announce_up(&mut self) {
        if let Phase::Up(up) = &mut self.phase {
            if !up.announced {
                up.announced = true;
                info!(addr = %self.args.addr, routed = self.args.routed, "peer up");
                self.args.wire.emit(PeerEvent::Up {
                    node: self.args.peer_node,
                    addr: self.args.addr,
                });
            }
        }
        for waiter in self.waiters.drain(..) {
            let _ = waiter.send(Ok(self.args.peer_node));
        }
    }

    async fn on_frames(&mut self, myself: &ActorRef<SessionMsg>, frames: Vec<ControlFrame>) {
        let now = Instant::now().into_std();
        for frame in frames {
            match frame.kind {
                PacketKind::Heartbeat => {}
                PacketKind::Stream => {
                    let wire = &self.args.wire;
                    let (id, flags) = (frame.stream, frame.flags);
                    self.streams
                        .on_segment(wire, myself, id, flags, frame.payload);
                    continue;
                }
                PacketKind::Control => {
                    // The receive loop hands every other subprotocol straight to its
                    // `Wire::serve` queue (counting envelopes nobody serves) and drops
                    // undecodable ones, so a session is given only its STREAM envelopes.
                    let wire = &self.args.wire;
                    match Envelope::decode(&frame.payload) {
                        Ok(envelope) if envelope.subprotocol == Subprotocol::STREAM => {
                            self.streams.on_control(wire, &envelope);
                        }
                        _ => TransportStats::bump(&wire.stats().envelope_malformed),
                    }
                    continue;
                }
                _ => continue,
            }
            let Phase::Up(up) = &mut self.phase else {
                return;
            };
            let probe = HeartbeatProbe::from_stream(frame.stream);
            if let Some(reply) = up.liveness.on_heartbeat(now, probe) {
                let reply = reply.to_stream();
                let wire = Arc::clone(&self.args.wire);
                let keys = Arc::clone(&up.keys);
                if let Err(e) = wire
                    .send_with(&keys, PacketKind::Heartbeat, reply, PacketFlags::NONE, &[])
                    .await
                {
                    debug!(error = %e, "heartbeat reply not sent");
                }
            }
        }
        self.on_heard();
    }

    /// Carries out the stream table's outputs (sealed with the current keys, if any).
    async fn pump_streams(&mut self, myself: &ActorRef<SessionMsg>) {
        let keys = match &self.phase {
            Phase::Up(up) => Some(Arc::clone(&up.keys)),
            _ => None,
        };
        self.streams
            .pump(&self.args.wire, keys.as_deref(), myself)
            .await;
    }

    /// Feeds the data path's last-heard time into the liveness core.
    fn on_heard(&mut self) {
        let Phase::Up(up) = &mut self.phase else {
            return;
        };
        let heard = up.keys.last_heard_ms.load(Ordering::Relaxed);
        if heard > up.seen_ms {
            up.seen_ms = heard;
            up.liveness
                .on_authenticated_packet(self.args.wire.instant_of(heard).into_std());
        }
        if up.keys.confirmed.load(Ordering::Acquire) {
            self.announce_up();
        }
    }

    async fn on_tick(&mut self, myself: &ActorRef<SessionMsg>) {
        self.on_heard();
        let now = Instant::now();
        let Phase::Up(up) = &mut self.phase else {
            return;
        };
        let now_std = now.into_std();
        if !up.keys.confirmed.load(Ordering::Acquire)
            && up
                .confirm_deadline
                .is_some_and(|deadline| now_std > deadline)
        {
            warn!("peer never confirmed the session keys (wrong PSK?)");
            TransportStats::bump(&self.args.wire.stats().handshake_failures);
            self.phase = Phase::Closed;
            myself.stop(Some("unconfirmed".into()));
            return;
        }
        if up.pending_until.is_some_and(|deadline| now_std > deadline) {
            debug!("pending rotation never confirmed; dropped");
            up.keys.next.store(None);
            up.pending_until = None;
            TransportStats::bump(&self.args.wire.stats().handshake_failures);
        }
        while let Some(event) = up.liveness.poll(now.into_std()) {
            match event {
                LivenessEvent::Suspected => {
                    up.suspected = true;
                    warn!("peer suspected");
                    self.args.wire.emit(PeerEvent::Suspected {
                        node: self.args.peer_node,
                    });
                }
                LivenessEvent::Recovered => {
                    up.suspected = false;
                    info!("peer recovered");
                    self.args.wire.emit(PeerEvent::Recovered {
                        node: self.args.peer_node,
                    });
                }
                LivenessEvent::Failed | LivenessEvent::IdleTimeout => {
                    warn!(?event, "peer down");
                    myself.stop(Some("peer failed".into()));
                    return;
                }
            }
        }
        if up.keys.pair.tx.needs_rekey() {
            info!("session keys reached their rekey limit; closing so the peers re-handshake");
            myself.stop(Some("rekey".into()));
            return;
        }
        if let Some(probe) = up.liveness.poll_heartbeat(now.into_std()) {
            let probe = probe.to_stream();
            let keys = Arc::clone(&up.keys);
            if let Err(e) = self
                .args
                .wire
                .send_with(&keys, PacketKind::Heartbeat, probe, PacketFlags::NONE, &[])
                .await
            {
                debug!(error = %e, "heartbeat not sent");
            }
        }
    }

    /// Ends a handshake that cannot succeed: counts it, answers every waiting `connect`,
    /// and stops the session actor.
    fn give_up(&mut self, myself: &ActorRef<SessionMsg>, error: ConnectError, reason: &str) {
        TransportStats::bump(&self.args.wire.stats().handshake_failures);
        self.fail_waiters(&error);
        self.phase = Phase::Closed;
        myself.stop(Some(reason.into()));
    }

    fn fail_waiters(&mut self, error: &ConnectError) {
        for waiter in self.waiters.drain(..) {
            let _ = waiter.send(Err(error.clone()));
        }
    }

    fn info(&self) -> PeerInfo {
        let (state, rtt, initiator) = match &self.phase {
            Phase::Up(up) => (
                if up.suspected {
                    PeerState::Suspected
                } else {
                    PeerState::Up
                },
                up.liveness.rtt().srtt(),
                up.initiator,
            ),
            Phase::Handshaking { .. } | Phase::Closed => (PeerState::Connecting, None, true),
        };
        PeerInfo {
            node: self.args.peer_node,
            entity: self.args.peer,
            addr: self.args.addr,
            routed: self.args.routed,
            state,
            rtt,
            initiator,
            epoch: self.epoch,
        }
    }
}

/// Handshake attempts before `connect` reports a timeout (about 5.5 s with the default
/// 100 ms × attempt schedule).
const CONNECT_ATTEMPTS: u32 = 10;

/// How often a session checks liveness: a quarter heartbeat, at least every 10 ms.
fn tick_period(heartbeat: Duration) -> Duration {
    (heartbeat / 4).max(Duration::from_millis(10))
}
