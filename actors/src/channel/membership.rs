//! `Membership`: the membership subprotocol on both sides, and event stream intake.
//!
//! - As a publisher: decodes every `MEMBERSHIP` envelope and routes Subscribe and
//!   Unsubscribe to the named channel's actor (an unregistered name is answered
//!   `UnknownChannel` here, deny by default); forgets a peer on every roster when its
//!   session goes down.
//!   Sends the eviction notices of the node's channels ([`MembershipMsg::Evict`]), each
//!   [`EVICTION_COPIES`] times a retry interval apart.
//! - As a subscriber: keeps the `Subscriptions` core, sends requests under random nonces
//!   (resent every retry interval until their Ack or the timeout), matches Acks, and binds
//!   each event stream a publisher opens to the subscription it is for; a reader task per
//!   stream reassembles frames into the subscription's queue. An eviction notice the core
//!   takes (from the subscription's publisher, for its admission) ends the subscription
//!   with the notice's reason; any other is counted and ignored.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use netrun_messages::channel::membership::Evicted;
use netrun_messages::envelope::Subprotocol;
use netrun_messages::{
    AckResult, ChannelHash, ChannelName, MembershipMessage, NodeId, RejectReason,
};
use netrun_runtime::channel::{Answered, FrameReassembler, SubscriptionError, Subscriptions};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use rand_core::{OsRng, RngCore};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{Instrument, debug, info_span};

use super::subscription::{ChannelSubscription, EndCell, Sink};
use super::{
    CHANNEL_STREAM_CLASS, ChannelEvent, ChannelMsg, EVICTION_COPIES, Shared, SubscribeConfig,
    SubscribeError, SubscriptionEnd, SubscriptionInfo, parse_event_stream_id,
};
use crate::events::PeerEvent;
use crate::pump::{self, Credit, Tasks};
use crate::stream::{ACCEPT_BACKLOG, StreamHandle};
use crate::wire::Inbound;

/// Startup inputs of the membership actor (cloned for every incarnation).
#[derive(Debug, Clone)]
pub struct MembershipArgs {
    pub(super) shared: Arc<Shared>,
}

/// Messages the membership actor handles.
#[derive(Debug)]
pub enum MembershipMsg {
    /// Envelopes from the bounded queue; the credit is held until they are handled, so the
    /// queue's bound holds.
    Inbound(Vec<Inbound>, Credit),
    /// An event stream a publisher opened.
    Stream(StreamHandle),
    /// A session event.
    Peer(PeerEvent),
    /// Subscribe (answered once the Ack arrives or the timeout passes).
    Subscribe {
        /// The publisher.
        publisher: NodeId,
        /// The channel.
        channel: ChannelName,
        /// Tokens and options.
        config: SubscribeConfig,
        /// The subscription, or why not.
        reply: RpcReplyPort<Result<ChannelSubscription, SubscribeError>>,
    },
    /// Unsubscribe (answered once the Ack arrives, at once without a session).
    Unsubscribe {
        /// The publisher.
        publisher: NodeId,
        /// The channel.
        channel: ChannelName,
        /// Done, or why not.
        reply: RpcReplyPort<Result<(), SubscribeError>>,
    },
    /// A [`ChannelSubscription`] was dropped: leave, if it is still the current one.
    Dropped {
        /// The publisher.
        publisher: NodeId,
        /// The channel's hash.
        hash: ChannelHash,
        /// Which receiver.
        sink: u64,
    },
    /// Resend or give up on request `nonce`.
    Retry(u64),
    /// Tell these subscribers they were evicted (by a sweep, a revocation or an
    /// unregistration on this node).
    Evict(Vec<(NodeId, Evicted)>),
    /// Send these encoded eviction notices again.
    EvictAgain {
        /// Each subscriber and its notice's body.
        notices: Arc<[(NodeId, Vec<u8>)]>,
        /// Copies still to send, this one included.
        copies: u32,
    },
    /// The subscriptions.
    List(RpcReplyPort<Vec<SubscriptionInfo>>),
}

/// The `Membership` actor.
#[derive(Debug, Clone, Copy, Default)]
pub struct MembershipActor;

/// The membership actor's state.
#[derive(Debug)]
pub struct MembershipState {
    shared: Arc<Shared>,
    core: Subscriptions,
    /// Local delivery per (publisher, channel hash): active subscriptions and new ones
    /// awaiting their Ack (events may overtake the Ack).
    sinks: HashMap<(NodeId, ChannelHash), Sink>,
    waiters: HashMap<u64, Waiter>,
    next_sink: u64,
    _tasks: Tasks,
}

/// A request awaiting its Ack.
#[derive(Debug)]
struct Waiter {
    publisher: NodeId,
    body: Vec<u8>,
    deadline: Instant,
    kind: WaiterKind,
}

#[derive(Debug)]
enum WaiterKind {
    Subscribe {
        reply: RpcReplyPort<Result<ChannelSubscription, SubscribeError>>,
        /// The receiver to hand over, and the sender to install on success.
        receiver: mpsc::Receiver<ChannelEvent>,
        sender: mpsc::Sender<ChannelEvent>,
        sink: u64,
        /// The subscription's channel hash.
        hash: ChannelHash,
        /// The receiver's end reason.
        end: EndCell,
        /// Whether a sink was installed for this request (a new subscription) and must be
        /// removed if it fails.
        installed: bool,
    },
    /// An unsubscribe; `None` when nobody waits for it (a dropped receiver), which is
    /// still repeated until the publisher confirms.
    Unsubscribe {
        reply: Option<RpcReplyPort<Result<(), SubscribeError>>>,
    },
}

impl Actor for MembershipActor {
    type Msg = MembershipMsg;
    type State = MembershipState;
    type Arguments = MembershipArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let shared = args.shared;
        let wire = Arc::clone(&shared.wire);
        let pump = pump::serve_envelopes(
            &wire,
            Subprotocol::MEMBERSHIP,
            myself.clone(),
            1,
            MembershipMsg::Inbound,
        );
        let (streams_tx, mut streams) = mpsc::channel(ACCEPT_BACKLOG);
        wire.serve_streams(CHANNEL_STREAM_CLASS, streams_tx);
        let intake = {
            let myself = myself.clone();
            tokio::spawn(async move {
                while let Some(stream) = streams.recv().await {
                    if myself.send_message(MembershipMsg::Stream(stream)).is_err() {
                        return;
                    }
                }
            })
        };
        // A missed Down leaves a stale subscriber until its stream fails.
        let watch = pump::peer_events(&wire, myself.clone(), MembershipMsg::Peer, None);
        shared.membership.store(Some(Arc::new(myself.clone())));
        Ok(MembershipState {
            core: Subscriptions::new(shared.config.subscriptions),
            shared,
            sinks: HashMap::new(),
            waiters: HashMap::new(),
            next_sink: 0,
            _tasks: Tasks::new([pump, intake, watch]),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let span = info_span!("membership", node = %state.shared.node);
        state.dispatch(&myself, message).instrument(span).await;
        Ok(())
    }

    async fn post_stop(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let wire = &state.shared.wire;
        wire.unserve(Subprotocol::MEMBERSHIP);
        wire.unserve_streams(CHANNEL_STREAM_CLASS);
        let current = state.shared.membership.load_full();
        if current.is_some_and(|a| a.get_id() == myself.get_id()) {
            state.shared.membership.store(None);
        }
        for (_, sink) in state.sinks.drain() {
            sink.close(SubscriptionEnd::Stopped);
        }
        Ok(())
    }
}

impl MembershipState {
    async fn dispatch(&mut self, myself: &ActorRef<MembershipMsg>, message: MembershipMsg) {
        match message {
            MembershipMsg::Inbound(batch, _credit) => {
                for inbound in batch {
                    self.on_inbound(inbound).await;
                }
            }
            MembershipMsg::Stream(stream) => self.on_stream(stream),
            MembershipMsg::Peer(PeerEvent::Down { node }) => self.on_peer_down(node),
            MembershipMsg::Peer(_) => {}
            MembershipMsg::Subscribe {
                publisher,
                channel,
                config,
                reply,
            } => {
                self.subscribe(myself, publisher, channel, config, reply)
                    .await;
            }
            MembershipMsg::Unsubscribe {
                publisher,
                channel,
                reply,
            } => {
                self.unsubscribe(myself, publisher, channel, Some(reply))
                    .await;
            }
            MembershipMsg::Dropped {
                publisher,
                hash,
                sink,
            } => {
                let current = self
                    .sinks
                    .get(&(publisher, hash))
                    .map(|s| (s.id, s.channel.clone()));
                if let Some((id, channel)) = current.filter(|(id, _)| *id == sink) {
                    debug!(%publisher, %channel, sink = id, "subscription dropped; leaving");
                    self.unsubscribe(myself, publisher, channel, None).await;
                }
            }
            MembershipMsg::Retry(nonce) => self.retry(myself, nonce).await,
            MembershipMsg::Evict(notices) => self.evict(myself, notices).await,
            MembershipMsg::EvictAgain { notices, copies } => {
                self.send_evictions(myself, notices, copies).await;
            }
            MembershipMsg::List(reply) => {
                let _ = reply.send(self.list());
            }
        }
    }

    async fn on_inbound(&mut self, inbound: Inbound) {
        let message = match MembershipMessage::decode(&inbound.body) {
            Ok(message) => message,
            Err(e) => {
                self.shared
                    .counters
                    .malformed
                    .fetch_add(1, Ordering::Relaxed);
                debug!(peer = %inbound.peer, error = %e, "malformed membership message");
                return;
            }
        };
        let peer = inbound.peer;
        match message {
            MembershipMessage::Evicted(evicted) => self.on_evicted(peer, &evicted),
            MembershipMessage::Ack(ack) => match self.core.handle_ack(peer, &ack) {
                Ok(answered) => {
                    self.shared.counters.acks.fetch_add(1, Ordering::Relaxed);
                    self.answered(answered);
                }
                Err(e) => {
                    self.shared
                        .counters
                        .bad_acks
                        .fetch_add(1, Ordering::Relaxed);
                    debug!(%peer, error = %e, "ack refused");
                }
            },
            MembershipMessage::Subscribe(request) => {
                match self.shared.published(&request.channel) {
                    Some(published) => {
                        if let Some(actor) = published.actor.load_full() {
                            let _ = actor.send_message(ChannelMsg::Subscribe {
                                peer,
                                request,
                                trace: inbound.trace,
                            });
                        }
                        // Not running (restarting): the subscriber repeats its request.
                    }
                    None => {
                        let result = AckResult::Rejected(RejectReason::UnknownChannel);
                        self.reply(peer, request.nonce, request.channel, result, inbound.trace)
                            .await;
                    }
                }
            }
            MembershipMessage::Unsubscribe(request) => {
                let actor = self
                    .shared
                    .published(&request.channel)
                    .and_then(|p| p.actor.load_full());
                match actor {
                    Some(actor) => {
                        let _ = actor.send_message(ChannelMsg::Unsubscribe {
                            peer,
                            request,
                            trace: inbound.trace,
                        });
                    }
                    None => {
                        if let Some(published) = self.shared.published(&request.channel) {
                            published.core().unsubscribe(peer);
                        }
                        let result = AckResult::Unsubscribed;
                        self.reply(peer, request.nonce, request.channel, result, inbound.trace)
                            .await;
                    }
                }
            }
        }
    }

    async fn reply(
        &self,
        peer: NodeId,
        nonce: u64,
        channel: ChannelName,
        result: AckResult,
        trace: Option<netrun_messages::TraceContext>,
    ) {
        let ack = netrun_messages::Ack {
            nonce,
            channel,
            result,
        };
        let Ok(body) = MembershipMessage::Ack(ack).encode() else {
            return;
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

    /// A matched Ack: answer its waiter and update the local delivery.
    fn answered(&mut self, answered: Answered) {
        let Answered {
            nonce,
            request,
            result,
        } = answered;
        let key = (request.publisher, request.channel.hash());
        let Some(waiter) = self.waiters.remove(&nonce) else {
            return;
        };
        match (waiter.kind, result) {
            (
                WaiterKind::Subscribe {
                    reply,
                    receiver,
                    sender,
                    sink,
                    end,
                    ..
                },
                AckResult::Subscribed(granted),
            ) => {
                let entry = self
                    .sinks
                    .entry(key)
                    .or_insert_with(|| Sink::new(sink, request.channel.clone(), end.clone()));
                // A renewal replaces the previous receiver's sender, ending it.
                entry.install(sink, sender, end.clone(), Some(granted));
                let subscription = ChannelSubscription::new(
                    receiver,
                    request.publisher,
                    request.channel,
                    granted,
                    sink,
                    end,
                    Arc::clone(&self.shared),
                );
                let _ = reply.send(Ok(subscription));
            }
            (
                WaiterKind::Subscribe {
                    reply,
                    installed,
                    sink,
                    ..
                },
                other,
            ) => {
                let error = match other {
                    AckResult::Rejected(reason) => SubscribeError::from(reason),
                    // A publisher never answers a subscribe with Unsubscribed; treat it as
                    // the channel being gone.
                    _ => SubscribeError::UnknownChannel,
                };
                // The core ended a standing subscription only for UnknownChannel. (A sink of
                // our own was never handed out, so nobody reads its reason.)
                let ended = matches!(other, AckResult::Rejected(RejectReason::UnknownChannel));
                let ours = installed && self.sinks.get(&key).is_some_and(|s| s.id == sink);
                if ours || ended {
                    self.remove_sink(key, SubscriptionEnd::UnknownChannel);
                }
                let _ = reply.send(Err(error));
            }
            (WaiterKind::Unsubscribe { reply }, _) => {
                if let Some(reply) = reply {
                    let _ = reply.send(Ok(()));
                }
            }
        }
    }

    async fn subscribe(
        &mut self,
        myself: &ActorRef<MembershipMsg>,
        publisher: NodeId,
        channel: ChannelName,
        config: SubscribeConfig,
        reply: RpcReplyPort<Result<ChannelSubscription, SubscribeError>>,
    ) {
        if self.shared.wire.peer(publisher).is_none() {
            let _ = reply.send(Err(SubscribeError::NotConnected));
            return;
        }
        let nonce = self.nonce();
        let key = (publisher, channel.hash());
        let request = match self.core.subscribe(
            publisher,
            channel.clone(),
            config.tokens,
            config.options,
            nonce,
        ) {
            Ok(request) => request,
            Err(SubscriptionError::TooManySubscriptions | SubscriptionError::TooManyPending) => {
                let _ = reply.send(Err(SubscribeError::TooManySubscriptions));
                return;
            }
            // `nonce()` avoids the nonces in use; a collision here is a bug, not a state.
            Err(SubscriptionError::NonceInUse) => {
                let _ = reply.send(Err(SubscribeError::Unavailable));
                return;
            }
        };
        let body = match MembershipMessage::Subscribe(request).encode() {
            Ok(body) => body,
            Err(e) => {
                debug!(error = %e, "subscribe not encoded");
                self.core.cancel(nonce);
                let _ = reply.send(Err(SubscribeError::TooManySubscriptions));
                return;
            }
        };
        let (sender, receiver) = mpsc::channel(self.shared.config.queue.max(1));
        self.next_sink += 1;
        let sink = self.next_sink;
        let end = EndCell::default();
        // A new subscription gets its sink now: the first events may overtake the Ack.
        let installed = !self.sinks.contains_key(&key);
        if installed {
            let mut entry = Sink::new(sink, channel, end.clone());
            entry.install(sink, sender.clone(), end.clone(), None);
            self.sinks.insert(key, entry);
        }
        let waiter = Waiter {
            publisher,
            body,
            deadline: Instant::now() + self.shared.config.subscribe_timeout,
            kind: WaiterKind::Subscribe {
                reply,
                receiver,
                sender,
                sink,
                hash: key.1,
                end,
                installed,
            },
        };
        self.send_request(myself, nonce, waiter).await;
    }

    /// Leaves `channel` on `publisher`: delivery ends at once, and the publisher is told
    /// (repeated until its Ack). `reply` gets the outcome when someone waits for it; a
    /// dropped receiver leaves with nobody waiting.
    async fn unsubscribe(
        &mut self,
        myself: &ActorRef<MembershipMsg>,
        publisher: NodeId,
        channel: ChannelName,
        reply: Option<RpcReplyPort<Result<(), SubscribeError>>>,
    ) {
        let answer = |reply: Option<RpcReplyPort<_>>, result| {
            if let Some(reply) = reply {
                let _ = reply.send(result);
            }
        };
        self.remove_sink((publisher, channel.hash()), SubscriptionEnd::Unsubscribed);
        if self.shared.wire.peer(publisher).is_none() {
            // Without a session the publisher has dropped us from its rosters already.
            self.forget(publisher, &channel);
            answer(reply, Ok(()));
            return;
        }
        let nonce = self.nonce();
        let request = match self.core.unsubscribe(publisher, channel, nonce) {
            Ok(request) => request,
            Err(_) => {
                answer(reply, Err(SubscribeError::TooManySubscriptions));
                return;
            }
        };
        let Ok(body) = MembershipMessage::Unsubscribe(request).encode() else {
            self.core.cancel(nonce);
            answer(reply, Err(SubscribeError::TooManySubscriptions));
            return;
        };
        let waiter = Waiter {
            publisher,
            body,
            deadline: Instant::now() + self.shared.config.subscribe_timeout,
            kind: WaiterKind::Unsubscribe { reply },
        };
        self.send_request(myself, nonce, waiter).await;
    }

    async fn send_request(&mut self, myself: &ActorRef<MembershipMsg>, nonce: u64, waiter: Waiter) {
        self.send(waiter.publisher, &waiter.body).await;
        self.waiters.insert(nonce, waiter);
        let interval = self.shared.config.retry_interval;
        myself.send_after(interval, move || MembershipMsg::Retry(nonce));
    }

    async fn retry(&mut self, myself: &ActorRef<MembershipMsg>, nonce: u64) {
        let Some(waiter) = self.waiters.get(&nonce) else {
            return;
        };
        let connected = self.shared.wire.peer(waiter.publisher).is_some();
        if Instant::now() >= waiter.deadline || !connected {
            let Some(waiter) = self.waiters.remove(&nonce) else {
                return;
            };
            self.core.cancel(nonce);
            self.shared
                .counters
                .timeouts
                .fetch_add(1, Ordering::Relaxed);
            let error = if connected {
                SubscribeError::Timeout
            } else {
                SubscribeError::NotConnected
            };
            self.fail(waiter, error);
            return;
        }
        let (publisher, body) = (waiter.publisher, waiter.body.clone());
        self.send(publisher, &body).await;
        let interval = self.shared.config.retry_interval;
        myself.send_after(interval, move || MembershipMsg::Retry(nonce));
    }

    fn fail(&mut self, waiter: Waiter, error: SubscribeError) {
        match waiter.kind {
            WaiterKind::Subscribe {
                reply,
                installed,
                sink,
                hash,
                ..
            } => {
                let key = (waiter.publisher, hash);
                // Never handed out: nobody reads the reason.
                if installed && self.sinks.get(&key).is_some_and(|s| s.id == sink) {
                    self.remove_sink(key, SubscriptionEnd::Disconnected);
                }
                let _ = reply.send(Err(error));
            }
            WaiterKind::Unsubscribe { reply } => {
                // The local side has left already; only the publisher's answer is missing.
                if let Some(reply) = reply {
                    let _ = reply.send(Err(error));
                }
            }
        }
    }

    async fn send(&self, publisher: NodeId, body: &[u8]) {
        self.shared
            .counters
            .requests_sent
            .fetch_add(1, Ordering::Relaxed);
        if let Err(e) = self
            .shared
            .wire
            .send_envelope(publisher, Subprotocol::MEMBERSHIP, None, body)
            .await
        {
            debug!(%publisher, error = %e, "membership request not sent");
        }
    }

    /// Binds an event stream to the subscription it is for, or refuses it.
    fn on_stream(&mut self, stream: StreamHandle) {
        let publisher = stream.peer();
        let (hash, reliable) = parse_event_stream_id(stream.id());
        let Some(sink) = self.sinks.get_mut(&(publisher, hash)) else {
            self.shared
                .counters
                .streams_refused
                .fetch_add(1, Ordering::Relaxed);
            debug!(%publisher, stream = stream.id(), "event stream for no subscription refused");
            return;
        };
        self.shared
            .counters
            .streams_accepted
            .fetch_add(1, Ordering::Relaxed);
        let reader = tokio::spawn(read_events(
            stream,
            FrameReassembler::new(reliable),
            sink.slot(),
            Arc::clone(&self.shared),
            publisher,
            hash,
        ));
        sink.add_reader(reader);
    }

    fn on_peer_down(&mut self, node: NodeId) {
        // Subscriber side: every subscription to that publisher ends.
        let keys: Vec<_> = self
            .sinks
            .keys()
            .filter(|(p, _)| *p == node)
            .copied()
            .collect();
        for key in keys {
            self.remove_sink(key, SubscriptionEnd::Disconnected);
        }
        self.core.remove_publisher(node);
        let stale: Vec<u64> = self
            .waiters
            .iter()
            .filter(|(_, w)| w.publisher == node)
            .map(|(n, _)| *n)
            .collect();
        for nonce in stale {
            if let Some(waiter) = self.waiters.remove(&nonce) {
                self.fail(waiter, SubscribeError::NotConnected);
            }
        }
        // Publisher side: the peer leaves every roster.
        for published in self.shared.all() {
            if published.core().unsubscribe(node) {
                published.dropped_subscribers(vec![node]);
            }
        }
    }

    /// Forgets an active subscription locally (no request is sent).
    fn forget(&mut self, publisher: NodeId, channel: &ChannelName) {
        let nonce = self.nonce();
        if self
            .core
            .unsubscribe(publisher, channel.clone(), nonce)
            .is_ok()
        {
            self.core.cancel(nonce);
        }
    }

    /// Ends the delivery of a subscription; its receiver's end reason is `why`.
    fn remove_sink(&mut self, key: (NodeId, ChannelHash), why: SubscriptionEnd) {
        if let Some(sink) = self.sinks.remove(&key) {
            sink.close(why);
        }
    }

    /// An eviction notice from session peer `publisher`: ends the subscription it is
    /// about if the core takes it, else counts and ignores it.
    fn on_evicted(&mut self, publisher: NodeId, evicted: &Evicted) {
        let counters = &self.shared.counters;
        if let Err(e) = self.core.handle_evicted(publisher, evicted) {
            counters.evictions_ignored.fetch_add(1, Ordering::Relaxed);
            debug!(%publisher, channel = %evicted.channel, error = %e, "eviction ignored");
            return;
        }
        counters.evictions_received.fetch_add(1, Ordering::Relaxed);
        debug!(%publisher, channel = %evicted.channel, reason = %evicted.reason, "evicted");
        let key = (publisher, evicted.channel.hash());
        self.remove_sink(key, SubscriptionEnd::Evicted(evicted.reason));
        self.rebind_renewal(key, &evicted.channel);
    }

    /// After a subscription ended while a renewal of it awaits its Ack, gives that renewal
    /// a sink of its own, as for a new subscription (its events may overtake the Ack).
    fn rebind_renewal(&mut self, key: (NodeId, ChannelHash), channel: &ChannelName) {
        let renewal = self.waiters.values_mut().find_map(|w| match &mut w.kind {
            WaiterKind::Subscribe {
                hash,
                installed,
                sender,
                sink,
                end,
                ..
            } if w.publisher == key.0 && *hash == key.1 && !*installed => {
                *installed = true;
                Some((*sink, sender.clone(), end.clone()))
            }
            _ => None,
        });
        let Some((id, sender, end)) = renewal else {
            return;
        };
        let mut sink = Sink::new(id, channel.clone(), end.clone());
        sink.install(id, sender, end, None);
        self.sinks.insert(key, sink);
    }

    /// Sends the notices of subscribers this node evicted, [`EVICTION_COPIES`] times.
    async fn evict(&mut self, myself: &ActorRef<MembershipMsg>, notices: Vec<(NodeId, Evicted)>) {
        let bodies: Vec<(NodeId, Vec<u8>)> = notices
            .into_iter()
            .filter_map(
                |(node, notice)| match MembershipMessage::Evicted(notice).encode() {
                    Ok(body) => Some((node, body)),
                    Err(e) => {
                        debug!(%node, error = %e, "eviction notice not encoded");
                        None
                    }
                },
            )
            .collect();
        self.shared
            .counters
            .evictions_sent
            .fetch_add(bodies.len() as u64, Ordering::Relaxed);
        self.send_evictions(myself, bodies.into(), EVICTION_COPIES)
            .await;
    }

    /// Sends one copy of each notice and schedules the next copy while any are left.
    async fn send_evictions(
        &self,
        myself: &ActorRef<MembershipMsg>,
        notices: Arc<[(NodeId, Vec<u8>)]>,
        copies: u32,
    ) {
        for (node, body) in notices.iter() {
            if let Err(e) = self
                .shared
                .wire
                .send_envelope(*node, Subprotocol::MEMBERSHIP, None, body)
                .await
            {
                debug!(%node, error = %e, "eviction notice not sent");
            }
        }
        if copies > 1 {
            let interval = self.shared.config.retry_interval;
            myself.send_after(interval, move || MembershipMsg::EvictAgain {
                notices,
                copies: copies - 1,
            });
        }
    }

    fn list(&self) -> Vec<SubscriptionInfo> {
        let mut list: Vec<SubscriptionInfo> = self
            .sinks
            .iter()
            .map(|(&(publisher, _), sink)| SubscriptionInfo {
                publisher,
                channel: sink.channel.clone(),
                granted: sink.granted(),
                streams: sink.streams(),
            })
            .collect();
        list.sort_by(|a, b| (a.publisher, &a.channel).cmp(&(b.publisher, &b.channel)));
        list
    }

    /// A random nonce no pending request uses (unpredictable, so an Ack cannot be forged
    /// ahead of the request).
    fn nonce(&self) -> u64 {
        loop {
            let nonce = OsRng.next_u64();
            if !self.waiters.contains_key(&nonce) {
                return nonce;
            }
        }
    }
}

/// Reads one event stream into a subscription's queue until the stream ends, the
/// subscription goes away or the publisher sends something that is not event frames for
/// this channel (then the stream is dropped, which resets it).
async fn read_events(
    mut stream: StreamHandle,
    mut frames: FrameReassembler,
    slot: Arc<super::subscription::Slot>,
    shared: Arc<Shared>,
    publisher: NodeId,
    hash: ChannelHash,
) {
    let mut events = Vec::new();
    while let Some(chunk) = stream.recv().await {
        if let Err(e) = frames.push(chunk, &mut events) {
            shared.counters.bad_streams.fetch_add(1, Ordering::Relaxed);
            debug!(%publisher, error = %e, "event stream dropped");
            return;
        }
        for event in events.drain(..) {
            if event.channel != hash {
                shared.counters.bad_streams.fetch_add(1, Ordering::Relaxed);
                debug!(%publisher, "event for another channel; stream dropped");
                return;
            }
            let Some((tx, channel)) = slot.sender() else {
                return;
            };
            let event = ChannelEvent {
                channel,
                publisher,
                seq: event.seq,
                payload: event.payload,
                trace: event.trace,
            };
            if tx.send(event).await.is_err() {
                // This receiver is gone; a renewal may have installed another.
                if slot.sender().is_none() {
                    return;
                }
                continue;
            }
            shared
                .counters
                .events_received
                .fetch_add(1, Ordering::Relaxed);
        }
    }
}
