//! One published channel: its roster and the subscribe decision.

use std::collections::{BTreeMap, BTreeSet};

use netrun_messages::{
    CapabilitySet, ChannelHash, ChannelName, EntityId, Granted, NodeId, PermissionToken,
    RejectReason, SubscribeOptions, TokenScope,
};

use super::auth::{AuthError, AuthRequest, Authenticator, Grant, TokenRejection};
use super::config::{ChannelConfig, ChannelConfigError};

/// A subscribe as the publisher sees it: the authenticated peer plus what it presented.
#[derive(Debug, Clone, Copy)]
pub struct SubscribeRequest<'a> {
    /// The session peer asking.
    pub node: NodeId,
    /// The request's nonce; an admitted subscriber keeps it, and an eviction notice
    /// echoes it.
    pub nonce: u64,
    /// The peer's entity (the key its session authenticated).
    pub entity: EntityId,
    /// The presented token chain, root first (may be empty).
    pub tokens: &'a [PermissionToken],
    /// The peer's capabilities from the local capability index, if it has announced any.
    pub capabilities: Option<&'a CapabilitySet>,
    /// The peer's delivery preferences.
    pub options: SubscribeOptions,
}

/// A subscriber on the roster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscriber {
    /// The subscriber node.
    pub node: NodeId,
    /// The nonce of the Subscribe that admitted or last renewed it (an eviction notice
    /// echoes it, so the subscriber can tell it from a notice about an older admission).
    pub nonce: u64,
    /// Its entity.
    pub entity: EntityId,
    /// Its delivery preferences.
    pub options: SubscribeOptions,
    /// When it (last) subscribed, unix seconds.
    pub since: u64,
    /// Its token grant, on `require_token` channels.
    pub grant: Option<Grant>,
    /// When the sweep removes it: the first second its chain fails the validity check
    /// (`not_after + skew`), on `require_token` channels.
    pub evict_at: Option<u64>,
}

/// A successful subscribe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    /// What to tell the subscriber.
    pub granted: Granted,
    /// The subscriber was on the roster already (its token and options were updated).
    pub renewed: bool,
}

/// A refused subscribe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reject {
    /// What to tell the subscriber.
    pub reason: RejectReason,
    /// Why the token chain failed, for logs and counters (never sent).
    pub detail: Option<TokenRejection>,
}

impl Reject {
    fn because(reason: RejectReason) -> Self {
        Self {
            reason,
            detail: None,
        }
    }
}

/// Channel totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChannelCounters {
    /// New subscribers admitted.
    pub subscribed: u64,
    /// Existing subscribers renewed.
    pub renewed: u64,
    /// Subscribers that left.
    pub unsubscribed: u64,
    /// Refusals: hidden channel.
    pub rejected_unknown: u64,
    /// Refusals: rate limited.
    pub rejected_rate_limited: u64,
    /// Refusals: unauthorized (token or matchmaking).
    pub rejected_unauthorized: u64,
    /// Refusals: roster full.
    pub rejected_full: u64,
    /// Subscribers removed by the sweep because their token expired.
    pub evicted_expired: u64,
    /// Subscribers removed because an issuer in their chain was revoked.
    pub evicted_revoked: u64,
}

/// The publisher-side core of one channel.
///
/// [`Channel::subscribe`] decides, in this order:
///
/// 1. visibility: a peer the channel is hidden from gets `UnknownChannel`, exactly as if
///    it did not exist;
/// 2. the peer's authorization-failure budget: out of budget → `RateLimited`, before any
///    token is looked at;
/// 3. the subscribe filter (matchmaking) → `Unauthorized`, not charged to the peer;
/// 4. with `require_token`, the token chain ([`Authenticator`]) → `Unauthorized`, charged;
/// 5. a subscriber already on the roster is renewed (new token, new options) without
///    counting against the bound;
/// 6. a full roster → `TooManySubscribers`.
///
/// A refused renewal leaves the standing subscription (and its old token) in place, except
/// `UnknownChannel`: a channel now hidden from the peer drops it.
///
/// Token-holding subscribers sit in an expiry queue keyed by `not_after + skew` (the first
/// second their chain fails the validity check); [`Channel::sweep`] removes them.
#[derive(Debug)]
pub struct Channel {
    config: ChannelConfig,
    hash: ChannelHash,
    roots: BTreeSet<EntityId>,
    subscribers: BTreeMap<NodeId, Subscriber>,
    expiry: BTreeSet<(u64, NodeId)>,
    next_seq: u64,
    counters: ChannelCounters,
}

impl Channel {
    /// A channel published by `local` (whose key is the token root when the configuration
    /// names none).
    pub fn new(local: EntityId, config: ChannelConfig) -> Result<Self, ChannelConfigError> {
        config.validate()?;
        let roots = if config.token_roots.is_empty() {
            BTreeSet::from([local])
        } else {
            config.token_roots.clone()
        };
        Ok(Self {
            hash: config.name.hash(),
            config,
            roots,
            subscribers: BTreeMap::new(),
            expiry: BTreeSet::new(),
            next_seq: 0,
            counters: ChannelCounters::default(),
        })
    }

    /// Decides a subscribe at `now_unix`. See the [type docs](Self) for the order.
    pub fn subscribe(
        &mut self,
        now_unix: u64,
        request: &SubscribeRequest<'_>,
        auth: &mut Authenticator,
    ) -> Result<Accepted, Reject> {
        let result = self.decide(now_unix, request, auth);
        if matches!(&result, Err(r) if r.reason == RejectReason::UnknownChannel) {
            // Hidden from this peer now: a standing subscription ends with it.
            self.remove(request.node);
        }
        let c = &mut self.counters;
        match &result {
            Ok(Accepted { renewed: true, .. }) => c.renewed += 1,
            Ok(Accepted { renewed: false, .. }) => c.subscribed += 1,
            Err(reject) => match reject.reason {
                RejectReason::UnknownChannel => c.rejected_unknown += 1,
                RejectReason::RateLimited => c.rejected_rate_limited += 1,
                RejectReason::Unauthorized => c.rejected_unauthorized += 1,
                RejectReason::TooManySubscribers => c.rejected_full += 1,
            },
        }
        result
    }

    /// Removes `node` from the roster. Returns whether it was on it (leaving twice is fine).
    pub fn unsubscribe(&mut self, node: NodeId) -> bool {
        let removed = self.remove(node).is_some();
        if removed {
            self.counters.unsubscribed += 1;
        }
        removed
    }

    /// Removes every subscriber whose token chain has expired by `now_unix`; returns them.
    pub fn sweep(&mut self, now_unix: u64) -> Vec<Subscriber> {
        let mut evicted = Vec::new();
        while let Some(&(at, node)) = self.expiry.first() {
            if at > now_unix {
                break;
            }
            self.expiry.pop_first();
            evicted.extend(self.remove(node));
        }
        self.counters.evicted_expired += evicted.len() as u64;
        evicted
    }

    /// When the next token on the roster expires (unix seconds), if any.
    pub fn poll_timeout(&self) -> Option<u64> {
        self.expiry.first().map(|&(at, _)| at)
    }

    /// Removes every subscriber whose grant `auth` now considers revoked; returns them.
    pub fn drop_revoked(&mut self, auth: &Authenticator) -> Vec<Subscriber> {
        let revoked: Vec<NodeId> = self
            .subscribers
            .values()
            .filter(|s| s.grant.as_ref().is_some_and(|g| auth.grant_revoked(g)))
            .map(|s| s.node)
            .collect();
        let evicted: Vec<Subscriber> = revoked
            .into_iter()
            .filter_map(|node| self.remove(node))
            .collect();
        self.counters.evicted_revoked += evicted.len() as u64;
        evicted
    }

    /// The roster, by node id.
    pub fn subscribers(&self) -> impl ExactSizeIterator<Item = &Subscriber> {
        self.subscribers.values()
    }

    /// Fan-out targets: each subscriber and whether its delivery is reliable (the channel
    /// is reliable and the subscriber did not ask for best effort).
    pub fn recipients(&self) -> impl Iterator<Item = (NodeId, bool)> + '_ {
        self.subscribers
            .values()
            .map(|s| (s.node, self.config.reliable && !s.options.best_effort))
    }

    /// A subscriber's record.
    pub fn subscriber(&self, node: NodeId) -> Option<&Subscriber> {
        self.subscribers.get(&node)
    }

    /// Number of subscribers.
    pub fn len(&self) -> usize {
        self.subscribers.len()
    }

    /// Whether nobody is subscribed.
    pub fn is_empty(&self) -> bool {
        self.subscribers.is_empty()
    }

    /// The sequence number for the next published event (0, 1, 2, …).
    pub fn next_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        seq
    }

    /// Matchmaking: whether the local node, with these capabilities, may publish here.
    pub fn may_publish(&self, local_capabilities: &CapabilitySet) -> bool {
        self.config.publisher_fits(local_capabilities)
    }

    /// The channel name.
    pub fn name(&self) -> &ChannelName {
        &self.config.name
    }

    /// The channel hash.
    pub fn hash(&self) -> ChannelHash {
        self.hash
    }

    /// The configuration.
    pub fn config(&self) -> &ChannelConfig {
        &self.config
    }

    /// The trusted token roots in force.
    pub fn roots(&self) -> &BTreeSet<EntityId> {
        &self.roots
    }

    /// Totals.
    pub fn counters(&self) -> &ChannelCounters {
        &self.counters
    }

    fn decide(
        &mut self,
        now: u64,
        request: &SubscribeRequest<'_>,
        auth: &mut Authenticator,
    ) -> Result<Accepted, Reject> {
        if !self.config.visible_to(request.capabilities) {
            return Err(Reject::because(RejectReason::UnknownChannel));
        }
        if auth.admit(now, request.node).is_err() {
            return Err(Reject::because(RejectReason::RateLimited));
        }
        if !self.config.subscriber_fits(request.capabilities) {
            return Err(Reject::because(RejectReason::Unauthorized));
        }
        let grant = if self.config.require_token {
            let auth_request = AuthRequest {
                peer: request.node,
                subject: &request.entity,
                channel: self.hash,
                needed: TokenScope::SUBSCRIBE,
                roots: &self.roots,
                chain: request.tokens,
            };
            match auth.authorize(now, &auth_request) {
                Ok(grant) => Some(grant),
                Err(AuthError::RateLimited) => {
                    return Err(Reject::because(RejectReason::RateLimited));
                }
                Err(AuthError::Denied(why)) => {
                    return Err(Reject {
                        reason: RejectReason::Unauthorized,
                        detail: Some(why),
                    });
                }
            }
        } else {
            None
        };
        let renewed = self.subscribers.contains_key(&request.node);
        if !renewed && self.subscribers.len() >= self.config.max_subscribers {
            return Err(Reject::because(RejectReason::TooManySubscribers));
        }
        self.remove(request.node);
        let skew = auth.config().effective_skew();
        let token_expires_at = grant.as_ref().map(|g| g.not_after);
        let evict_at = token_expires_at.map(|not_after| not_after.saturating_add(skew));
        if let Some(at) = evict_at {
            self.expiry.insert((at, request.node));
        }
        self.subscribers.insert(
            request.node,
            Subscriber {
                node: request.node,
                nonce: request.nonce,
                entity: request.entity,
                options: request.options,
                since: now,
                grant,
                evict_at,
            },
        );
        Ok(Accepted {
            granted: Granted {
                reliable: self.config.reliable && !request.options.best_effort,
                priority: self.config.priority,
                token_expires_at,
            },
            renewed,
        })
    }

    fn remove(&mut self, node: NodeId) -> Option<Subscriber> {
        let subscriber = self.subscribers.remove(&node)?;
        if let Some(at) = subscriber.evict_at {
            self.expiry.remove(&(at, node));
        }
        Some(subscriber)
    }
}
