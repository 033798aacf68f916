//! Channels: one `Channel{name}` actor per channel this node publishes, and the
//! `Membership` actor that speaks the membership subprotocol and receives events.
//!
//! ```text
//!  publisher node                                         subscriber node
//!  ChannelsHandle::publish ─▶ Channel{name} actor          ChannelsHandle::subscribe
//!    roster (runtime Channel core, shared, survives          │ Membership actor:
//!    restarts) ─ frames packed into stream sends ─┐          │ Subscriptions core, nonce,
//!    one stream per subscriber (reliable or best  │          │ Subscribe (resent until Ack)
//!    effort), Backpressure → wait / drop+count    │          ▼
//!  Membership actor ◀──── Subscribe / Unsubscribe ┼─────── MEMBERSHIP envelope
//!    routes by name ─▶ Channel{name}: decide     │
//!    (visibility, failure budget, matchmaking,    │
//!     token chain, roster bound) ─▶ Ack ──────────┼──────▶ Membership: match Ack → reply
//!    sweep timer: expired tokens leave the roster │
//!    (also revocation, unregistration) ─▶ Membership: Evicted ×3 ─▶ Membership: from the
//!                                                 │    subscription's publisher, for its
//!                                                 │    admission? → end it, with the reason
//!                                                 └─ channel stream (class 0x07) ─▶
//!                                        Membership binds it to the subscription's sink,
//!                                        a reader task reassembles frames ─▶ ChannelSubscription
//! ```
//!
//! State that outlives actor incarnations lives in the [`ChannelsHandle`]: the directory of
//! published channels with each channel's roster core, and the authenticator every channel
//! shares (a peer's failure budget, the verified-chain cache and issuer revocations span
//! all channels). A restarted `Channel{name}` actor keeps its roster and sequence numbers
//! and opens fresh streams on the next publish; a restarted `Membership` actor has lost the
//! local subscriptions, whose receivers then end.
//!
//! Evictions: a subscriber that leaves a roster without asking (its token expired, an
//! issuer in its chain was revoked, the channel was unregistered) is sent an `Evicted`
//! notice by the membership actor, [`EVICTION_COPIES`] times `retry_interval` apart
//! (notices are datagrams and never answered). Its membership actor ends the subscription
//! and records why ([`ChannelSubscription::end_reason`]).
//!
//! Delivery: every event of a publish batch is one event frame; consecutive frames share a
//! stream send while they fit. On a best-effort delivery an event that finds no credit is
//! dropped and counted; on a reliable one the publisher waits for credit up to
//! [`ChannelsConfig::publish_timeout`] (per publish call, all subscribers waited for at
//! once) and then drops and counts what is left, so a subscriber sees a gap in `seq`
//! rather than a publisher stalled without bound by its slowest subscriber.

mod membership;
mod publisher;
mod subscription;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use netrun_messages::channel::membership::{EvictReason, Evicted};
use netrun_messages::{
    ChannelHash, ChannelName, EntityId, Granted, NodeId, RejectReason, SubscribeOptions,
    TokenChain, TraceContext,
};
use netrun_runtime::channel::{
    AuthCounters, Authenticator, Channel, ChannelConfig, ChannelCounters, RegisterError,
    RegistryConfig, RegistryConfigError, RevocationsFull, Subscriber, SubscriptionsConfig,
};
use ractor::{ActorRef, RpcReplyPort};
use thiserror::Error;

pub use membership::{MembershipActor, MembershipArgs, MembershipMsg};
pub use publisher::{ChannelActor, ChannelArgs, ChannelMsg};
pub use subscription::ChannelSubscription;

use crate::capability::CapabilityHandle;
use crate::clock::unix_secs;
use crate::wire::{Wire, subsystem_stream_id};

/// The subsystem stream class of channel event streams (the `CHANNEL` subprotocol's id).
pub const CHANNEL_STREAM_CLASS: u8 = 0x07;

/// How many times an eviction notice is sent, `retry_interval` apart: it is a datagram
/// nobody acknowledges, and three copies make the loss of one or two harmless.
pub const EVICTION_COPIES: u32 = 3;

/// Node-wide channel settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelsConfig {
    /// Most published channels and the token-authorization limits they share.
    pub registry: RegistryConfig,
    /// Most subscriptions and pending requests of this node.
    pub subscriptions: SubscriptionsConfig,
    /// Longest a publish waits for a reliable subscriber's credit before dropping (and
    /// counting) what it could not hand over.
    pub publish_timeout: Duration,
    /// Longest a subscribe or unsubscribe waits for the publisher's Ack.
    pub subscribe_timeout: Duration,
    /// Interval at which an unanswered Subscribe or Unsubscribe is sent again (control
    /// envelopes are datagrams; the publisher answers a repeat like the first).
    pub retry_interval: Duration,
    /// Events buffered per subscription for the application; a full buffer stops the
    /// reader, which stops granting credit, which the publisher sees as backpressure.
    pub queue: usize,
    /// Longest time between two roster sweeps (a sweep also runs at every token expiry).
    pub sweep_interval: Duration,
}

impl Default for ChannelsConfig {
    fn default() -> Self {
        Self {
            registry: RegistryConfig::default(),
            subscriptions: SubscriptionsConfig::default(),
            publish_timeout: Duration::from_secs(2),
            subscribe_timeout: Duration::from_secs(5),
            retry_interval: Duration::from_millis(250),
            queue: 1024,
            // The reference's token sweep interval.
            sweep_interval: Duration::from_secs(30),
        }
    }
}

/// What a publish did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PublishReport {
    /// Event deliveries attempted: events × subscribers on the roster.
    pub attempted: u64,
    /// Deliveries handed to a subscriber's stream (a reliable stream then delivers them in
    /// order or fails; a best-effort one may still lose them in the network).
    pub delivered: u64,
    /// Deliveries dropped: no credit (best effort at once, reliable after the publish
    /// timeout), no stream to the subscriber, or an event too large for a best-effort send.
    pub dropped: u64,
}

impl std::ops::AddAssign for PublishReport {
    fn add_assign(&mut self, other: Self) {
        self.attempted += other.attempted;
        self.delivered += other.delivered;
        self.dropped += other.dropped;
    }
}

/// Why a publish was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PublishError {
    /// This node does not publish the channel.
    #[error("channel {0} is not registered here")]
    UnknownChannel(ChannelName),
    /// This node's capabilities do not fit the channel's publish filter (matchmaking).
    #[error("this node does not fit the publish filter of {0}")]
    NotPermitted(ChannelName),
    /// An event is larger than [`netrun_messages::channel::event::MAX_EVENT_PAYLOAD`].
    #[error("event of {0} bytes exceeds the 1 MiB limit")]
    TooLarge(usize),
    /// The channel's actor is not running (restarting) or did not answer.
    #[error("channel {0} is not running")]
    Unavailable(ChannelName),
}

/// Why a subscribe or unsubscribe failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum SubscribeError {
    /// The credentials do not allow it (missing, invalid or expired token, or the
    /// subscribe filter does not match).
    #[error("unauthorized")]
    Unauthorized,
    /// The publisher has no such channel, or hides it from this node.
    #[error("unknown channel")]
    UnknownChannel,
    /// Too many authorization failures from this node recently; retry later.
    #[error("rate limited")]
    RateLimited,
    /// The channel's roster is full.
    #[error("too many subscribers")]
    TooManySubscribers,
    /// There is no session with the publisher.
    #[error("no session with the publisher")]
    NotConnected,
    /// No Ack arrived within the subscribe timeout.
    #[error("no answer from the publisher")]
    Timeout,
    /// This node holds too many subscriptions or pending requests.
    #[error("too many subscriptions")]
    TooManySubscriptions,
    /// The membership actor is not running.
    #[error("channel membership is not running")]
    Unavailable,
}

impl From<RejectReason> for SubscribeError {
    fn from(reason: RejectReason) -> Self {
        match reason {
            RejectReason::Unauthorized => Self::Unauthorized,
            RejectReason::UnknownChannel => Self::UnknownChannel,
            RejectReason::RateLimited => Self::RateLimited,
            RejectReason::TooManySubscribers => Self::TooManySubscribers,
        }
    }
}

/// Why a channel could not be registered.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ChannelError {
    /// The configuration or the registry refused it.
    #[error(transparent)]
    Register(#[from] RegisterError),
    /// Its actor did not start.
    #[error("channel actor did not start: {0}")]
    Spawn(String),
}

/// How to subscribe.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscribeConfig {
    /// The token chain to present (root first); empty on channels that take none.
    pub tokens: TokenChain,
    /// Delivery preferences (best effort even on a reliable channel).
    pub options: SubscribeOptions,
}

impl SubscribeConfig {
    /// No token, the channel's own delivery.
    pub fn new() -> Self {
        Self::default()
    }

    /// Presents `tokens` (root first).
    #[must_use]
    pub fn with_tokens(mut self, tokens: TokenChain) -> Self {
        self.tokens = tokens;
        self
    }

    /// Asks for best-effort delivery.
    #[must_use]
    pub fn best_effort(mut self) -> Self {
        self.options.best_effort = true;
        self
    }
}

/// One event a subscriber received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelEvent {
    /// The channel.
    pub channel: ChannelName,
    /// The publisher (the authenticated session peer it came from).
    pub publisher: NodeId,
    /// The publisher's per-channel sequence number (gaps show dropped events).
    pub seq: u64,
    /// The application bytes.
    pub payload: Bytes,
    /// The publishing span's trace context, if the publish was traced.
    pub trace: Option<TraceContext>,
}

/// Why a [`ChannelSubscription`] ended ([`ChannelSubscription::end_reason`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubscriptionEnd {
    /// The publisher removed this node from the roster and said why.
    Evicted(EvictReason),
    /// This node unsubscribed.
    Unsubscribed,
    /// A newer subscribe to the same channel on the same publisher took over; its
    /// receiver gets the events now.
    Renewed,
    /// A renewal was answered `UnknownChannel`: the publisher no longer has the channel or
    /// hides it from this node.
    UnknownChannel,
    /// The session with the publisher ended.
    Disconnected,
    /// This node's membership actor stopped (shutdown, or a restart that lost the local
    /// subscriptions).
    Stopped,
}

impl std::fmt::Display for SubscriptionEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Evicted(reason) => write!(f, "evicted: {reason}"),
            Self::Unsubscribed => f.write_str("unsubscribed"),
            Self::Renewed => f.write_str("renewed"),
            Self::UnknownChannel => f.write_str("unknown channel"),
            Self::Disconnected => f.write_str("publisher disconnected"),
            Self::Stopped => f.write_str("membership stopped"),
        }
    }
}

/// A published channel as `netrun channel list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelInfo {
    /// The channel.
    pub name: ChannelName,
    /// Its hash.
    pub hash: ChannelHash,
    /// Reliable (else best-effort) delivery.
    pub reliable: bool,
    /// Subscribers must present a token.
    pub require_token: bool,
    /// The priority echoed to subscribers.
    pub priority: u8,
    /// The roster bound.
    pub max_subscribers: usize,
    /// The roster, by node id, with each token's expiry (unix seconds).
    pub subscribers: Vec<(NodeId, Option<u64>)>,
    /// Roster counters (subscribed, renewed, refusals by reason, evictions).
    pub counters: ChannelCounters,
    /// Events published.
    pub published: u64,
    /// Deliveries totals over every publish.
    pub report: PublishReport,
    /// Whether the channel's actor is running.
    pub running: bool,
}

/// A subscription of this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionInfo {
    /// The publisher.
    pub publisher: NodeId,
    /// The channel.
    pub channel: ChannelName,
    /// What the publisher granted (`None` while the subscribe awaits its Ack).
    pub granted: Option<Granted>,
    /// Event streams from the publisher currently read for it.
    pub streams: usize,
}

/// Node-wide channel counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChannelsStatus {
    /// Channels this node publishes.
    pub channels: usize,
    /// Events published (each counted once, whatever the roster).
    pub published: u64,
    /// Deliveries totals over every publish of every channel.
    pub report: PublishReport,
    /// Membership requests sent (first tries and repeats).
    pub requests_sent: u64,
    /// Acks answered by a publisher to this node's requests.
    pub acks: u64,
    /// Acks refused (unknown nonce, wrong peer or channel; repeats of answered requests).
    pub bad_acks: u64,
    /// Membership messages that did not decode.
    pub malformed: u64,
    /// Requests that got no Ack in time.
    pub timeouts: u64,
    /// Events handed to local subscriptions.
    pub events_received: u64,
    /// Event streams bound to a subscription.
    pub streams_accepted: u64,
    /// Event streams refused (no subscription to that publisher and channel).
    pub streams_refused: u64,
    /// Event streams dropped for carrying malformed frames or another channel's events.
    pub bad_streams: u64,
    /// Eviction notices this node sent as a publisher (each counted once, not per copy).
    pub evictions_sent: u64,
    /// Eviction notices that ended one of this node's subscriptions.
    pub evictions_received: u64,
    /// Eviction notices ignored: for no subscription held with the sender (repeated
    /// copies, forged) or about an earlier admission than the one it holds.
    pub evictions_ignored: u64,
    /// Token authorization counters shared by every published channel.
    pub auth: AuthCounters,
}

/// Shared channel state: the directory of published channels, the shared authenticator,
/// and the way to the membership actor. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ChannelsHandle {
    shared: Arc<Shared>,
}

#[derive(Debug)]
pub(crate) struct Shared {
    node: NodeId,
    entity: EntityId,
    wire: Arc<Wire>,
    capabilities: CapabilityHandle,
    config: ChannelsConfig,
    auth: Mutex<Authenticator>,
    directory: RwLock<Directory>,
    membership: ArcSwapOption<ActorRef<MembershipMsg>>,
    counters: Counters,
}

#[derive(Debug, Default)]
struct Directory {
    channels: BTreeMap<ChannelName, Arc<Published>>,
    by_hash: HashMap<ChannelHash, ChannelName>,
}

/// A published channel: its roster core (shared by the actor's incarnations) and the way
/// to its actor.
#[derive(Debug)]
pub(crate) struct Published {
    hash: ChannelHash,
    core: Mutex<Channel>,
    actor: ArcSwapOption<ActorRef<ChannelMsg>>,
    published: AtomicU64,
    attempted: AtomicU64,
    delivered: AtomicU64,
    dropped: AtomicU64,
}

#[derive(Debug, Default)]
struct Counters {
    requests_sent: AtomicU64,
    acks: AtomicU64,
    bad_acks: AtomicU64,
    malformed: AtomicU64,
    timeouts: AtomicU64,
    events_received: AtomicU64,
    streams_accepted: AtomicU64,
    streams_refused: AtomicU64,
    bad_streams: AtomicU64,
    evictions_sent: AtomicU64,
    evictions_received: AtomicU64,
    evictions_ignored: AtomicU64,
}

/// Margin on top of a configured timeout for a call to an actor (covers its queue).
const CALL_MARGIN: Duration = Duration::from_secs(5);

impl ChannelsHandle {
    /// Channel state for the node `node` with key `entity`, whose capabilities `capabilities`
    /// holds (visibility and matchmaking read it).
    pub fn new(
        node: NodeId,
        entity: EntityId,
        wire: Arc<Wire>,
        capabilities: CapabilityHandle,
        config: ChannelsConfig,
    ) -> Result<Self, RegistryConfigError> {
        if config.registry.max_channels == 0 {
            return Err(RegistryConfigError::NoChannels);
        }
        let auth = Authenticator::new(config.registry.auth)?;
        Ok(Self {
            shared: Arc::new(Shared {
                node,
                entity,
                wire,
                capabilities,
                config,
                auth: Mutex::new(auth),
                directory: RwLock::new(Directory::default()),
                membership: ArcSwapOption::empty(),
                counters: Counters::default(),
            }),
        })
    }

    /// The settings.
    pub fn config(&self) -> &ChannelsConfig {
        &self.shared.config
    }

    /// Reserves `config.name` in the directory and returns the arguments of its actor
    /// (every incarnation gets a clone). Refuses an invalid configuration, a name already
    /// registered, a hash collision and a full directory.
    pub fn prepare(&self, config: ChannelConfig) -> Result<ChannelArgs, RegisterError> {
        let name = config.name.clone();
        let hash = name.hash();
        let mut dir = self.shared.directory();
        if dir.channels.contains_key(&name) {
            return Err(RegisterError::AlreadyRegistered(name));
        }
        if let Some(existing) = dir.by_hash.get(&hash) {
            return Err(RegisterError::HashCollision {
                name,
                existing: existing.clone(),
            });
        }
        let max = self.shared.config.registry.max_channels;
        if dir.channels.len() >= max {
            return Err(RegisterError::TooManyChannels(max));
        }
        let core = Channel::new(self.shared.entity, config)?;
        let published = Arc::new(Published {
            hash,
            core: Mutex::new(core),
            actor: ArcSwapOption::empty(),
            published: AtomicU64::new(0),
            attempted: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        });
        dir.by_hash.insert(hash, name.clone());
        dir.channels.insert(name, Arc::clone(&published));
        Ok(ChannelArgs {
            shared: Arc::clone(&self.shared),
            published,
        })
    }

    /// Removes `name` from the directory (after its actor stopped, or when it could not
    /// start) and tells its subscribers they were evicted
    /// ([`EvictReason::ChannelClosed`]). Returns whether it was registered.
    pub fn release(&self, name: &ChannelName) -> bool {
        let removed = {
            let mut dir = self.shared.directory();
            let removed = dir.channels.remove(name);
            if let Some(published) = &removed {
                dir.by_hash.remove(&published.hash);
            }
            removed
        };
        let Some(published) = removed else {
            return false;
        };
        let roster: Vec<Subscriber> = published.core().subscribers().cloned().collect();
        self.shared.evict(name, &roster, EvictReason::ChannelClosed);
        true
    }

    /// Whether this node publishes `name`.
    pub fn is_registered(&self, name: &ChannelName) -> bool {
        self.shared.published(name).is_some()
    }

    /// Publishes `events` on `name` to every current subscriber (see the
    /// [module docs](self) for delivery).
    pub async fn publish(
        &self,
        name: &ChannelName,
        events: Vec<Bytes>,
        trace: Option<TraceContext>,
    ) -> Result<PublishReport, PublishError> {
        let max = netrun_messages::channel::event::MAX_EVENT_PAYLOAD;
        if let Some(big) = events.iter().find(|e| e.len() > max) {
            return Err(PublishError::TooLarge(big.len()));
        }
        let published = self
            .shared
            .published(name)
            .ok_or_else(|| PublishError::UnknownChannel(name.clone()))?;
        let actor = published
            .actor
            .load_full()
            .ok_or_else(|| PublishError::Unavailable(name.clone()))?;
        let timeout = self.shared.config.publish_timeout + CALL_MARGIN;
        let publish = |reply| ChannelMsg::Publish {
            events,
            trace,
            reply,
        };
        match actor.call(publish, Some(timeout)).await {
            Ok(ractor::rpc::CallResult::Success(result)) => result,
            _ => Err(PublishError::Unavailable(name.clone())),
        }
    }

    /// Subscribes to `channel` on `publisher` and waits for its Ack. Subscribing again
    /// while subscribed renews (a fresh token, new options) and returns a new receiver;
    /// the previous one ends.
    pub async fn subscribe(
        &self,
        publisher: NodeId,
        channel: ChannelName,
        config: SubscribeConfig,
    ) -> Result<ChannelSubscription, SubscribeError> {
        self.ask_membership(|reply| MembershipMsg::Subscribe {
            publisher,
            channel,
            config,
            reply,
        })
        .await
    }

    /// Leaves `channel` on `publisher`: its events stop at once; the publisher is told and
    /// its Ack awaited. Idempotent: leaving a channel one is not on succeeds. Without a
    /// session to the publisher (which then has dropped this node already) it succeeds
    /// without asking.
    pub async fn unsubscribe(
        &self,
        publisher: NodeId,
        channel: ChannelName,
    ) -> Result<(), SubscribeError> {
        self.ask_membership(|reply| MembershipMsg::Unsubscribe {
            publisher,
            channel,
            reply,
        })
        .await
    }

    /// Sends the membership actor a request that waits for a publisher's Ack (so within
    /// the subscribe timeout, plus a margin); `Unavailable` if the actor is not running or
    /// does not answer.
    async fn ask_membership<T: Send + 'static>(
        &self,
        request: impl FnOnce(RpcReplyPort<Result<T, SubscribeError>>) -> MembershipMsg,
    ) -> Result<T, SubscribeError> {
        let actor = self
            .shared
            .membership
            .load_full()
            .ok_or(SubscribeError::Unavailable)?;
        let timeout = self.shared.config.subscribe_timeout + CALL_MARGIN;
        match actor.call(request, Some(timeout)).await {
            Ok(ractor::rpc::CallResult::Success(result)) => result,
            _ => Err(SubscribeError::Unavailable),
        }
    }

    /// Revokes every token `issuer` signed up to now: subscribers whose chain runs through
    /// one leave every roster at once (their streams are closed, and they are told).
    /// Returns how many subscriptions ended.
    pub fn revoke_issuer(&self, issuer: EntityId) -> Result<usize, RevocationsFull> {
        let now = unix_secs();
        self.shared.auth().revoke_issuer(now, issuer)?;
        let mut evicted = 0;
        for published in self.shared.all() {
            let (name, gone) = {
                let mut core = published.core();
                let auth = self.shared.auth();
                (core.name().clone(), core.drop_revoked(&auth))
            };
            evicted += gone.len();
            self.shared.evict(&name, &gone, EvictReason::IssuerRevoked);
            published.dropped_subscribers(gone.into_iter().map(|s| s.node).collect());
        }
        Ok(evicted)
    }

    /// Every channel this node publishes.
    pub fn channels(&self) -> Vec<ChannelInfo> {
        self.shared.all().iter().map(|p| p.info()).collect()
    }

    /// This node's subscriptions (active and awaiting an Ack).
    pub async fn subscriptions(&self) -> Vec<SubscriptionInfo> {
        let Some(actor) = self.shared.membership.load_full() else {
            return Vec::new();
        };
        match actor.call(MembershipMsg::List, Some(CALL_MARGIN)).await {
            Ok(ractor::rpc::CallResult::Success(list)) => list,
            _ => Vec::new(),
        }
    }

    /// Node-wide counters.
    pub fn status(&self) -> ChannelsStatus {
        let c = &self.shared.counters;
        let all = self.shared.all();
        let mut report = PublishReport::default();
        let mut published = 0;
        for p in &all {
            published += p.published.load(Ordering::Relaxed);
            report += p.report();
        }
        ChannelsStatus {
            channels: all.len(),
            published,
            report,
            requests_sent: c.requests_sent.load(Ordering::Relaxed),
            acks: c.acks.load(Ordering::Relaxed),
            bad_acks: c.bad_acks.load(Ordering::Relaxed),
            malformed: c.malformed.load(Ordering::Relaxed),
            timeouts: c.timeouts.load(Ordering::Relaxed),
            events_received: c.events_received.load(Ordering::Relaxed),
            streams_accepted: c.streams_accepted.load(Ordering::Relaxed),
            streams_refused: c.streams_refused.load(Ordering::Relaxed),
            bad_streams: c.bad_streams.load(Ordering::Relaxed),
            evictions_sent: c.evictions_sent.load(Ordering::Relaxed),
            evictions_received: c.evictions_received.load(Ordering::Relaxed),
            evictions_ignored: c.evictions_ignored.load(Ordering::Relaxed),
            auth: *self.shared.auth().counters(),
        }
    }

    /// The membership actor's arguments.
    pub fn membership_args(&self) -> MembershipArgs {
        MembershipArgs {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl Shared {
    // Poisoned locks: every critical section leaves the cores consistent (no method of
    // theirs panics half way), so a panic elsewhere does not make the data unusable.
    fn directory(&self) -> std::sync::RwLockWriteGuard<'_, Directory> {
        self.directory
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn auth(&self) -> MutexGuard<'_, Authenticator> {
        self.auth.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn published(&self, name: &ChannelName) -> Option<Arc<Published>> {
        self.directory
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .channels
            .get(name)
            .cloned()
    }

    /// Has the membership actor tell `subscribers`, evicted from `channel` for `reason`.
    /// Without a running membership actor (restarting) the notices are lost and those
    /// subscriptions go quiet instead.
    fn evict(&self, channel: &ChannelName, subscribers: &[Subscriber], reason: EvictReason) {
        if subscribers.is_empty() {
            return;
        }
        let notices = subscribers
            .iter()
            .map(|s| {
                let notice = Evicted {
                    nonce: s.nonce,
                    channel: channel.clone(),
                    reason,
                };
                (s.node, notice)
            })
            .collect();
        if let Some(actor) = self.membership.load_full() {
            let _ = actor.send_message(MembershipMsg::Evict(notices));
        }
    }

    fn all(&self) -> Vec<Arc<Published>> {
        self.directory
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .channels
            .values()
            .cloned()
            .collect()
    }
}

impl Published {
    fn core(&self) -> MutexGuard<'_, Channel> {
        self.core.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn report(&self) -> PublishReport {
        PublishReport {
            attempted: self.attempted.load(Ordering::Relaxed),
            delivered: self.delivered.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }

    fn record(&self, events: usize, report: PublishReport) {
        self.published.fetch_add(events as u64, Ordering::Relaxed);
        self.attempted
            .fetch_add(report.attempted, Ordering::Relaxed);
        self.delivered
            .fetch_add(report.delivered, Ordering::Relaxed);
        self.dropped.fetch_add(report.dropped, Ordering::Relaxed);
    }

    /// Tells the actor (if running) that these subscribers left the roster elsewhere.
    fn dropped_subscribers(&self, nodes: Vec<NodeId>) {
        if nodes.is_empty() {
            return;
        }
        if let Some(actor) = self.actor.load_full() {
            let _ = actor.send_message(ChannelMsg::Dropped(nodes));
        }
    }

    fn info(&self) -> ChannelInfo {
        let core = self.core();
        let config = core.config();
        ChannelInfo {
            name: core.name().clone(),
            hash: self.hash,
            reliable: config.reliable,
            require_token: config.require_token,
            priority: config.priority,
            max_subscribers: config.max_subscribers,
            subscribers: core
                .subscribers()
                .map(|s| (s.node, s.grant.as_ref().map(|g| g.not_after)))
                .collect(),
            counters: *core.counters(),
            published: self.published.load(Ordering::Relaxed),
            report: self.report(),
            running: self.actor.load().is_some(),
        }
    }
}

/// The stream id a publisher uses for channel `hash` toward one subscriber.
///
/// ```text
///  63   62..56  55         54        53..32       31..0
///  1    class   direction  reliable  generation   channel hash
/// ```
///
/// The direction bit is set when the publisher's node id is the larger of the two, so two
/// nodes publishing same-named channels to each other never pick the same id; the
/// generation (22 bits) differs for every stream an incarnation opens, so a reopened stream
/// never meets a lingering predecessor.
pub(crate) fn event_stream_id(
    local: NodeId,
    peer: NodeId,
    hash: ChannelHash,
    reliable: bool,
    generation: u64,
) -> u64 {
    let direction = u64::from(local > peer) << 55;
    let reliable = u64::from(reliable) << 54;
    let generation = (generation & ((1 << 22) - 1)) << 32;
    subsystem_stream_id(
        CHANNEL_STREAM_CLASS,
        direction | reliable | generation | u64::from(hash.0),
    )
}

/// The channel hash and reliability an event stream id carries.
pub(crate) fn parse_event_stream_id(id: u64) -> (ChannelHash, bool) {
    // The low 32 bits are the hash.
    (ChannelHash(id as u32), id & (1 << 54) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::stream_class;

    #[test]
    fn event_stream_ids_carry_hash_reliability_and_direction() {
        let hash = ChannelHash(0xDEAD_BEEF);
        let a = event_stream_id(NodeId(1), NodeId(2), hash, true, 5);
        let b = event_stream_id(NodeId(2), NodeId(1), hash, true, 5);
        assert_ne!(a, b);
        assert_eq!(stream_class(a), Some(CHANNEL_STREAM_CLASS));
        assert_eq!(parse_event_stream_id(a), (hash, true));
        let c = event_stream_id(NodeId(1), NodeId(2), hash, false, 6);
        assert_eq!(parse_event_stream_id(c), (hash, false));
        assert_ne!(a, event_stream_id(NodeId(1), NodeId(2), hash, true, 6));
        // The generation wraps inside its field.
        assert_eq!(
            event_stream_id(NodeId(1), NodeId(2), hash, true, 1 << 22),
            event_stream_id(NodeId(1), NodeId(2), hash, true, 0)
        );
    }
}
