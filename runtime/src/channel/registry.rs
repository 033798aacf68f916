//! Every channel a node publishes, with one shared authenticator.

use std::collections::{BTreeMap, HashMap};

use netrun_messages::channel::membership::{self, EvictReason};
use netrun_messages::{
    Ack, AckResult, CapabilitySet, ChannelHash, ChannelName, EntityId, MembershipMessage, NodeId,
    RejectReason,
};
use thiserror::Error;

use super::auth::{AuthConfig, AuthConfigError, Authenticator, RevocationsFull};
use super::config::{ChannelConfig, ChannelConfigError};
use super::publisher::{Accepted, Channel, Reject, SubscribeRequest, Subscriber};

/// Registry limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegistryConfig {
    /// Most channels published at once.
    pub max_channels: usize,
    /// Authorization limits shared by every channel.
    pub auth: AuthConfig,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            max_channels: 1024,
            auth: AuthConfig::default(),
        }
    }
}

/// A [`RegistryConfig`] that cannot work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum RegistryConfigError {
    /// `max_channels` is zero.
    #[error("max_channels must be at least 1")]
    NoChannels,
    /// The authorization limits are invalid.
    #[error(transparent)]
    Auth(#[from] AuthConfigError),
}

/// Why a channel could not be registered.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RegisterError {
    /// The configuration is invalid.
    #[error(transparent)]
    Invalid(#[from] ChannelConfigError),
    /// The channel is registered already.
    #[error("channel {0} is already registered")]
    AlreadyRegistered(ChannelName),
    /// Another registered channel has the same hash.
    #[error("channel hash of {name} collides with {existing}")]
    HashCollision {
        /// The channel being registered.
        name: ChannelName,
        /// The registered channel with the same hash.
        existing: ChannelName,
    },
    /// `max_channels` channels are registered.
    #[error("too many channels ({0})")]
    TooManyChannels(usize),
}

/// A subscriber removed without asking: by a sweep, a revocation or the channel's
/// unregistration. The publisher tells it with [`Evicted::notice`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evicted {
    /// The channel.
    pub channel: ChannelName,
    /// The subscriber.
    pub node: NodeId,
    /// The nonce of the Subscribe that admitted or last renewed it.
    pub nonce: u64,
    /// Why.
    pub reason: EvictReason,
}

impl Evicted {
    /// The membership message that tells the subscriber (send it to [`Evicted::node`]).
    pub fn notice(&self) -> membership::Evicted {
        membership::Evicted {
            nonce: self.nonce,
            channel: self.channel.clone(),
            reason: self.reason,
        }
    }
}

/// The authenticated peer a membership message came from.
#[derive(Debug, Clone, Copy)]
pub struct Peer<'a> {
    /// Its node id (the session peer).
    pub node: NodeId,
    /// Its entity (the key its session authenticated).
    pub entity: EntityId,
    /// Its capabilities from the local capability index, if any.
    pub capabilities: Option<&'a CapabilitySet>,
}

/// The channels one node publishes.
///
/// The registry owns the [`Channel`] cores and the [`Authenticator`] they share, so a peer's
/// failure budget, the verified-chain cache and issuer revocations span all channels. It
/// also turns membership messages into acknowledgements
/// ([`ChannelRegistry::handle_message`]) for the actor that carries them.
///
/// Two channels whose names hash to the same [`ChannelHash`] are refused at registration:
/// tokens and event frames name channels by hash, so the hash must be unambiguous here.
#[derive(Debug)]
pub struct ChannelRegistry {
    local: EntityId,
    max_channels: usize,
    channels: BTreeMap<ChannelName, Channel>,
    by_hash: HashMap<ChannelHash, ChannelName>,
    auth: Authenticator,
}

impl ChannelRegistry {
    /// An empty registry for the node with key `local` (the default token root).
    pub fn new(local: EntityId, config: RegistryConfig) -> Result<Self, RegistryConfigError> {
        if config.max_channels == 0 {
            return Err(RegistryConfigError::NoChannels);
        }
        Ok(Self {
            local,
            max_channels: config.max_channels,
            channels: BTreeMap::new(),
            by_hash: HashMap::new(),
            auth: Authenticator::new(config.auth)?,
        })
    }

    /// Starts publishing a channel.
    pub fn register(&mut self, config: ChannelConfig) -> Result<(), RegisterError> {
        let name = config.name.clone();
        if self.channels.contains_key(&name) {
            return Err(RegisterError::AlreadyRegistered(name));
        }
        let hash = name.hash();
        if let Some(existing) = self.by_hash.get(&hash) {
            return Err(RegisterError::HashCollision {
                name,
                existing: existing.clone(),
            });
        }
        if self.channels.len() >= self.max_channels {
            return Err(RegisterError::TooManyChannels(self.max_channels));
        }
        let channel = Channel::new(self.local, config)?;
        self.by_hash.insert(hash, name.clone());
        self.channels.insert(name, channel);
        Ok(())
    }

    /// Stops publishing a channel; returns its last roster as evictions
    /// ([`EvictReason::ChannelClosed`]), or `None` if it was not registered.
    pub fn unregister(&mut self, name: &ChannelName) -> Option<Vec<Evicted>> {
        let channel = self.channels.remove(name)?;
        self.by_hash.remove(&channel.hash());
        Some(
            channel
                .subscribers()
                .map(|s| evicted(name, s, EvictReason::ChannelClosed))
                .collect(),
        )
    }

    /// Decides a subscribe to `name` (see [`Channel::subscribe`]); an unregistered name is
    /// `UnknownChannel`.
    pub fn subscribe(
        &mut self,
        now_unix: u64,
        name: &ChannelName,
        request: &SubscribeRequest<'_>,
    ) -> Result<Accepted, Reject> {
        match self.channels.get_mut(name) {
            Some(channel) => channel.subscribe(now_unix, request, &mut self.auth),
            None => Err(Reject {
                reason: RejectReason::UnknownChannel,
                detail: None,
            }),
        }
    }

    /// Removes `node` from `name`'s roster; whether it was on it. Idempotent.
    pub fn unsubscribe(&mut self, name: &ChannelName, node: NodeId) -> bool {
        self.channels
            .get_mut(name)
            .is_some_and(|channel| channel.unsubscribe(node))
    }

    /// Handles a membership message from `peer` and returns the [`Ack`] to send back
    /// (`None` for an `Ack` or an `Evicted`, which a publisher never answers: they are
    /// for subscribers).
    pub fn handle_message(
        &mut self,
        now_unix: u64,
        peer: Peer<'_>,
        message: &MembershipMessage,
    ) -> Option<Ack> {
        let result = match message {
            MembershipMessage::Subscribe(subscribe) => {
                let request = SubscribeRequest {
                    node: peer.node,
                    nonce: subscribe.nonce,
                    entity: peer.entity,
                    tokens: subscribe.tokens.as_slice(),
                    capabilities: peer.capabilities,
                    options: subscribe.options,
                };
                match self.subscribe(now_unix, &subscribe.channel, &request) {
                    Ok(accepted) => AckResult::Subscribed(accepted.granted),
                    Err(reject) => AckResult::Rejected(reject.reason),
                }
            }
            MembershipMessage::Unsubscribe(unsubscribe) => {
                self.unsubscribe(&unsubscribe.channel, peer.node);
                AckResult::Unsubscribed
            }
            MembershipMessage::Ack(_) | MembershipMessage::Evicted(_) => return None,
        };
        Some(Ack {
            nonce: message.nonce(),
            channel: message.channel().clone(),
            result,
        })
    }

    /// Removes every subscriber whose token expired by `now_unix`, on every channel.
    pub fn sweep(&mut self, now_unix: u64) -> Vec<Evicted> {
        let mut evicted = Vec::new();
        for (name, channel) in &mut self.channels {
            for subscriber in channel.sweep(now_unix) {
                evicted.push(self::evicted(name, &subscriber, EvictReason::TokenExpired));
            }
        }
        evicted
    }

    /// When the next token on any roster expires (unix seconds), if any.
    pub fn poll_timeout(&self) -> Option<u64> {
        self.channels
            .values()
            .filter_map(Channel::poll_timeout)
            .min()
    }

    /// Revokes every token `issuer` signed up to `now_unix` (see
    /// [`Authenticator::revoke_issuer`]) and drops the subscribers that relied on one.
    pub fn revoke_issuer(
        &mut self,
        now_unix: u64,
        issuer: EntityId,
    ) -> Result<Vec<Evicted>, RevocationsFull> {
        self.auth.revoke_issuer(now_unix, issuer)?;
        let mut evicted = Vec::new();
        for (name, channel) in &mut self.channels {
            for subscriber in channel.drop_revoked(&self.auth) {
                evicted.push(self::evicted(name, &subscriber, EvictReason::IssuerRevoked));
            }
        }
        Ok(evicted)
    }

    /// Removes `node` from every roster (its session is gone); returns the channels it
    /// was on.
    pub fn drop_peer(&mut self, node: NodeId) -> Vec<ChannelName> {
        self.channels
            .iter_mut()
            .filter_map(|(name, channel)| channel.unsubscribe(node).then(|| name.clone()))
            .collect()
    }

    /// A channel by name.
    pub fn channel(&self, name: &ChannelName) -> Option<&Channel> {
        self.channels.get(name)
    }

    /// A channel by name, mutable (for [`Channel::next_seq`]).
    pub fn channel_mut(&mut self, name: &ChannelName) -> Option<&mut Channel> {
        self.channels.get_mut(name)
    }

    /// A channel by hash.
    pub fn channel_by_hash(&self, hash: ChannelHash) -> Option<&Channel> {
        self.by_hash
            .get(&hash)
            .and_then(|name| self.channels.get(name))
    }

    /// Every registered channel, by name.
    pub fn channels(&self) -> impl ExactSizeIterator<Item = &Channel> {
        self.channels.values()
    }

    /// The shared authenticator (counters, generation).
    pub fn auth(&self) -> &Authenticator {
        &self.auth
    }
}

/// The eviction of `subscriber` from `channel`.
fn evicted(channel: &ChannelName, subscriber: &Subscriber, reason: EvictReason) -> Evicted {
    Evicted {
        channel: channel.clone(),
        node: subscriber.node,
        nonce: subscriber.nonce,
        reason,
    }
}
