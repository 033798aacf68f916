//! `Channel{name}`: one published channel's subscribe decisions, fan-out and sweep.
//!
//! The roster core lives in the channel's directory entry and survives restarts; the
//! actor owns the streams to the subscribers (opened at subscribe, reopened at the next
//! publish after a failure) and the sweep timer. Swept subscribers are told through the
//! membership actor.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use netrun_messages::channel::event::EventFrame;
use netrun_messages::channel::membership::{EvictReason, Subscribe, Unsubscribe};
use netrun_messages::envelope::Subprotocol;
use netrun_messages::{Ack, AckResult, MembershipMessage, NodeId, TraceContext};
use netrun_runtime::channel::{Packed, Piece, SubscribeRequest, pack};
use netrun_runtime::stream::{BlockingPolicy, Reliability, StreamConfig};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use rand_core::{OsRng, RngCore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{Instrument, debug, info_span};

use super::{PublishError, PublishReport, Published, Shared, event_stream_id};
use crate::clock::{unix_secs, until_unix_secs};
use crate::session::SessionMsg;
use crate::stream::StreamSender;

/// How long opening a stream may wait for the subscriber's session actor.
const OPEN_TIMEOUT: Duration = Duration::from_secs(5);

/// Startup inputs of a channel actor (cloned for every incarnation).
#[derive(Debug, Clone)]
pub struct ChannelArgs {
    pub(super) shared: Arc<Shared>,
    pub(super) published: Arc<Published>,
}

impl ChannelArgs {
    /// The channel's name.
    pub fn name(&self) -> netrun_messages::ChannelName {
        self.published.core().name().clone()
    }
}

/// Messages a channel actor handles.
#[derive(Debug)]
pub enum ChannelMsg {
    /// A peer asks to join (from the membership actor).
    Subscribe {
        /// The session peer.
        peer: NodeId,
        /// Its request.
        request: Subscribe,
        /// Its trace context.
        trace: Option<TraceContext>,
    },
    /// A peer leaves (from the membership actor).
    Unsubscribe {
        /// The session peer.
        peer: NodeId,
        /// Its request.
        request: Unsubscribe,
        /// Its trace context.
        trace: Option<TraceContext>,
    },
    /// Publish a batch to every subscriber.
    Publish {
        /// The events, in order.
        events: Vec<Bytes>,
        /// The publishing span's context, carried in every frame.
        trace: Option<TraceContext>,
        /// The outcome.
        reply: RpcReplyPort<Result<PublishReport, PublishError>>,
    },
    /// These subscribers left the roster elsewhere (session down, revocation): close
    /// their streams.
    Dropped(Vec<NodeId>),
    /// The sweep timer; a tick with a stale token is ignored.
    Tick(u64),
}

/// The `Channel{name}` actor.
#[derive(Debug, Clone, Copy, Default)]
pub struct ChannelActor;

/// A channel actor's state.
#[derive(Debug)]
pub struct ChannelState {
    shared: Arc<Shared>,
    published: Arc<Published>,
    streams: HashMap<NodeId, Outbound>,
    /// Next stream generation (random start: a restarted incarnation does not reuse its
    /// predecessor's ids, whose streams may still linger in the sessions).
    generation: u64,
    timer: u64,
}

/// The send half of one subscriber's event stream.
#[derive(Debug)]
struct Outbound {
    sender: Arc<StreamSender>,
    reliable: bool,
}

impl Actor for ChannelActor {
    type Msg = ChannelMsg;
    type State = ChannelState;
    type Arguments = ChannelArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        args.published.actor.store(Some(Arc::new(myself.clone())));
        let mut state = ChannelState {
            shared: args.shared,
            published: args.published,
            streams: HashMap::new(),
            generation: OsRng.next_u64(),
            timer: 0,
        };
        state.arm(&myself);
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let name = state.published.core().name().clone();
        let span = info_span!("channel", node = %state.shared.node, channel = %name);
        state.dispatch(&myself, message).instrument(span).await;
        Ok(())
    }

    async fn post_stop(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let current = state.published.actor.load_full();
        if current.is_some_and(|a| a.get_id() == myself.get_id()) {
            state.published.actor.store(None);
        }
        for (_, outbound) in state.streams.drain() {
            outbound.sender.close();
        }
        Ok(())
    }
}

impl ChannelState {
    async fn dispatch(&mut self, myself: &ActorRef<ChannelMsg>, message: ChannelMsg) {
        match message {
            ChannelMsg::Subscribe {
                peer,
                request,
                trace,
            } => {
                self.on_subscribe(peer, request, trace).await;
                self.arm(myself);
            }
            ChannelMsg::Unsubscribe {
                peer,
                request,
                trace,
            } => {
                self.published.core().unsubscribe(peer);
                self.close(peer);
                let ack = Ack {
                    nonce: request.nonce,
                    channel: request.channel,
                    result: AckResult::Unsubscribed,
                };
                self.send_ack(peer, ack, trace).await;
                self.arm(myself);
            }
            ChannelMsg::Publish {
                events,
                trace,
                reply,
            } => {
                let result = self.publish(&events, trace).await;
                if let Ok(report) = &result {
                    self.published.record(events.len(), *report);
                }
                let _ = reply.send(result);
            }
            ChannelMsg::Dropped(nodes) => {
                for node in nodes {
                    self.close(node);
                }
            }
            ChannelMsg::Tick(token) if token == self.timer => {
                let (name, evicted) = {
                    let mut core = self.published.core();
                    (core.name().clone(), core.sweep(unix_secs()))
                };
                if !evicted.is_empty() {
                    debug!(count = evicted.len(), "expired tokens swept");
                }
                for subscriber in &evicted {
                    self.close(subscriber.node);
                }
                self.shared
                    .evict(&name, &evicted, EvictReason::TokenExpired);
                self.arm(myself);
            }
            ChannelMsg::Tick(_) => {}
        }
    }

    async fn on_subscribe(
        &mut self,
        peer: NodeId,
        request: Subscribe,
        trace: Option<TraceContext>,
    ) {
        // The session authenticated the peer's key; without a session there is nobody to
        // answer.
        let Some(keys) = self.shared.wire.peer(peer) else {
            return;
        };
        let capabilities = self.shared.capabilities.capabilities_of(peer);
        let decision = {
            let mut core = self.published.core();
            let mut auth = self.shared.auth();
            let req = SubscribeRequest {
                node: peer,
                nonce: request.nonce,
                entity: keys.entity,
                tokens: request.tokens.as_slice(),
                capabilities: capabilities.as_ref(),
                options: request.options,
            };
            core.subscribe(unix_secs(), &req, &mut auth)
        };
        let result = match decision {
            Ok(accepted) => {
                let reliable = accepted.granted.reliable;
                if self
                    .streams
                    .get(&peer)
                    .is_none_or(|s| s.reliable != reliable)
                {
                    self.close(peer);
                    self.open(peer, reliable).await;
                }
                AckResult::Subscribed(accepted.granted)
            }
            Err(reject) => {
                if let Some(why) = reject.detail {
                    debug!(%peer, reason = %why, "subscribe refused");
                }
                if self.published.core().subscriber(peer).is_none() {
                    self.close(peer);
                }
                AckResult::Rejected(reject.reason)
            }
        };
        let ack = Ack {
            nonce: request.nonce,
            channel: request.channel,
            result,
        };
        self.send_ack(peer, ack, trace).await;
    }

    async fn send_ack(&self, peer: NodeId, ack: Ack, trace: Option<TraceContext>) {
        let body = match MembershipMessage::Ack(ack).encode() {
            Ok(body) => body,
            Err(e) => {
                debug!(error = %e, "ack not encoded");
                return;
            }
        };
        if let Err(e) = self
            .shared
            .wire
            .send_envelope(peer, Subprotocol::MEMBERSHIP, trace, &body)
            .await
        {
            debug!(%peer, error = %e, "ack not sent");
        }
    }

    /// Opens the event stream to `peer`; on failure the subscriber stays on the roster and
    /// the next publish tries again.
    async fn open(&mut self, peer: NodeId, reliable: bool) -> bool {
        let Some(keys) = self.shared.wire.peer(peer) else {
            return false;
        };
        let config = self.stream_config(reliable);
        self.generation = self.generation.wrapping_add(1);
        let id = event_stream_id(
            self.shared.node,
            peer,
            self.published.hash,
            reliable,
            self.generation,
        );
        let open = |reply| SessionMsg::StreamOpen { id, config, reply };
        match keys.session.call(open, Some(OPEN_TIMEOUT)).await {
            Ok(ractor::rpc::CallResult::Success(Ok(handle))) => {
                let (sender, _receiver) = handle.split();
                self.streams.insert(
                    peer,
                    Outbound {
                        sender: Arc::new(sender),
                        reliable,
                    },
                );
                true
            }
            Ok(ractor::rpc::CallResult::Success(Err(e))) => {
                debug!(%peer, error = %e, "event stream not opened");
                false
            }
            _ => {
                debug!(%peer, "event stream not opened: session gone");
                false
            }
        }
    }

    fn close(&mut self, peer: NodeId) {
        if let Some(outbound) = self.streams.remove(&peer) {
            outbound.sender.close();
        }
    }

    /// The configuration of an event stream: the window every session gives the streams
    /// peers open, so both ends agree on the credit.
    fn stream_config(&self, reliable: bool) -> StreamConfig {
        let mut config = self.shared.wire.stream_accept_config();
        config.reliability = if reliable {
            Reliability::Reliable
        } else {
            Reliability::BestEffort
        };
        config.priority = self.published.core().config().priority;
        config
    }

    /// Fans a batch out to every subscriber on the roster.
    async fn publish(
        &mut self,
        events: &[Bytes],
        trace: Option<TraceContext>,
    ) -> Result<PublishReport, PublishError> {
        let local = self.shared.capabilities.capabilities();
        let mut buf = Vec::with_capacity(events.iter().map(|e| e.len() + 48).sum());
        let mut ends = Vec::with_capacity(events.len());
        let recipients: Vec<(NodeId, bool)> = {
            let mut core = self.published.core();
            if !core.may_publish(&local) {
                return Err(PublishError::NotPermitted(core.name().clone()));
            }
            for payload in events {
                let frame = EventFrame {
                    channel: self.published.hash,
                    seq: core.next_seq(),
                    trace,
                    payload,
                };
                frame
                    .encode_into(&mut buf)
                    .map_err(|e| PublishError::TooLarge(e.0))?;
                ends.push(buf.len());
            }
            core.recipients().collect()
        };
        let n = events.len() as u64;
        let mut report = PublishReport {
            attempted: n * recipients.len() as u64,
            ..PublishReport::default()
        };
        if recipients.is_empty() || events.is_empty() {
            return Ok(report);
        }
        let buf = Bytes::from(buf);
        let config = self.stream_config(true);
        let max_send = config.max_segment.min(config.window_bytes as usize);
        let reliable_pack = pack(&ends, max_send, true);
        let best_effort_pack = pack(&ends, max_send, false);
        let deadline = Instant::now() + self.shared.config.publish_timeout;
        let mut waits = JoinSet::new();
        let mut broken = Vec::new();
        for (node, reliable) in recipients {
            if self
                .streams
                .get(&node)
                .is_none_or(|s| s.reliable != reliable)
            {
                self.close(node);
                if !self.open(node, reliable).await {
                    report.dropped += n;
                    continue;
                }
            }
            let Some(outbound) = self.streams.get(&node) else {
                report.dropped += n;
                continue;
            };
            let packed = if reliable {
                &reliable_pack
            } else {
                report.dropped += best_effort_pack.skipped as u64;
                &best_effort_pack
            };
            match send_now(&outbound.sender, &buf, packed, reliable) {
                Sent::All(delivered, dropped) => {
                    report.delivered += delivered;
                    report.dropped += dropped;
                }
                Sent::Failed(delivered, dropped) => {
                    report.delivered += delivered;
                    report.dropped += dropped;
                    broken.push(node);
                }
                Sent::Blocked(delivered, from) => {
                    report.delivered += delivered;
                    let sender = Arc::clone(&outbound.sender);
                    let pieces = packed.pieces[from..].to_vec();
                    let buf = buf.clone();
                    let broke_before = from > 0 && packed.pieces[from - 1].mid_frame;
                    waits.spawn(async move {
                        let (delivered, dropped, broken) =
                            send_waiting(&sender, &buf, &pieces, deadline, broke_before).await;
                        (node, delivered, dropped, broken)
                    });
                }
            }
        }
        while let Some(joined) = waits.join_next().await {
            if let Ok((node, delivered, dropped, is_broken)) = joined {
                report.delivered += delivered;
                report.dropped += dropped;
                if is_broken {
                    broken.push(node);
                }
            }
        }
        // A stream that failed, or lost a piece in the middle of a frame, is abandoned; the
        // next publish opens a new one (the subscriber sees a gap in `seq`).
        for node in broken {
            self.close(node);
        }
        Ok(report)
    }

    /// Arms the sweep timer at the next token expiry, at most a sweep interval away.
    fn arm(&mut self, myself: &ActorRef<ChannelMsg>) {
        let max = self.shared.config.sweep_interval;
        // `at` is the first whole second at which the token fails; sweep then.
        let wait = self
            .published
            .core()
            .poll_timeout()
            .map_or(max, |at| until_unix_secs(at).min(max));
        self.timer = self.timer.wrapping_add(1);
        let token = self.timer;
        myself.send_after(wait.max(Duration::from_millis(10)), move || {
            ChannelMsg::Tick(token)
        });
    }
}

/// What the non-blocking pass over one subscriber's pieces did.
enum Sent {
    /// Every piece handled: (delivered, dropped).
    All(u64, u64),
    /// The stream failed: (delivered, dropped); it must be replaced.
    Failed(u64, u64),
    /// A reliable piece found no credit: (delivered so far, index of that piece).
    Blocked(u64, usize),
}

/// Sends every piece that finds credit now.
fn send_now(sender: &StreamSender, buf: &Bytes, packed: &Packed, reliable: bool) -> Sent {
    let (mut delivered, mut dropped) = (0, 0);
    for (i, piece) in packed.pieces.iter().enumerate() {
        match sender.send(buf.slice(piece.range.clone())) {
            Ok(()) => delivered += piece.frames as u64,
            Err(netrun_runtime::stream::StreamError::Backpressure) if reliable => {
                return Sent::Blocked(delivered, i);
            }
            // Best effort: pieces hold whole frames, so a dropped one breaks nothing.
            Err(netrun_runtime::stream::StreamError::Backpressure) => {
                dropped += piece.frames as u64;
            }
            Err(_) => {
                let left: usize = packed.pieces[i..].iter().map(|p| p.frames).sum();
                return Sent::Failed(delivered, dropped + left as u64);
            }
        }
    }
    Sent::All(delivered, dropped)
}

/// Sends `pieces` in order, each waiting for credit until `deadline`; returns (delivered,
/// dropped, whether the stream must be abandoned). Once one piece misses the deadline the
/// rest are dropped too: sending a later piece would reorder the stream.
async fn send_waiting(
    sender: &StreamSender,
    buf: &Bytes,
    pieces: &[Piece],
    deadline: Instant,
    mut mid_frame: bool,
) -> (u64, u64, bool) {
    let (mut delivered, mut dropped) = (0, 0);
    for (i, piece) in pieces.iter().enumerate() {
        let budget = deadline.saturating_duration_since(Instant::now());
        let policy = BlockingPolicy {
            initial: Duration::from_micros(200),
            max_delay: Duration::from_millis(50),
            budget,
        };
        match sender
            .send_blocking(buf.slice(piece.range.clone()), policy)
            .await
        {
            Ok(()) => {
                delivered += piece.frames as u64;
                mid_frame = piece.mid_frame;
            }
            Err(e) => {
                dropped += pieces[i..].iter().map(|p| p.frames as u64).sum::<u64>();
                let failed = !matches!(e, netrun_runtime::stream::StreamError::Backpressure);
                return (delivered, dropped, failed || mid_frame);
            }
        }
    }
    (delivered, dropped, false)
}
