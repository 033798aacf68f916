//! The subscriber side: which channels on which publishers this node asked for.

use std::collections::{HashMap, VecDeque};

use netrun_messages::channel::membership::{Evicted, Subscribe, Unsubscribe};
use netrun_messages::{
    Ack, AckResult, ChannelHash, ChannelName, Granted, NodeId, RejectReason, SubscribeOptions,
    TokenChain,
};
use thiserror::Error;

/// Subscriber-side limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscriptionsConfig {
    /// Most active subscriptions (plus pending subscribes).
    pub max_subscriptions: usize,
    /// Most requests awaiting an ack.
    pub max_pending: usize,
}

impl Default for SubscriptionsConfig {
    fn default() -> Self {
        Self {
            max_subscriptions: 1024,
            max_pending: 256,
        }
    }
}

/// Why a request could not be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum SubscriptionError {
    /// `max_pending` requests are awaiting acks.
    #[error("too many requests awaiting an ack")]
    TooManyPending,
    /// `max_subscriptions` subscriptions are active or pending.
    #[error("too many subscriptions")]
    TooManySubscriptions,
    /// The nonce is already in use by a pending request.
    #[error("nonce already in use")]
    NonceInUse,
}

/// Why an ack was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum AckError {
    /// No pending request has this nonce (late, duplicate or forged).
    #[error("no pending request with this nonce")]
    Unexpected,
    /// The ack came from another node than the request went to.
    #[error("ack from {from}, request went to {publisher}")]
    WrongPeer {
        /// Who sent the ack.
        from: NodeId,
        /// Who the request went to.
        publisher: NodeId,
    },
    /// The ack names another channel than the request.
    #[error("ack names another channel")]
    WrongChannel,
}

/// Why an eviction notice was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum EvictionError {
    /// No active subscription to this channel on the sending node: never held, ended
    /// already (a repeated notice), or the sender is not its publisher.
    #[error("no active subscription to this channel on the sender")]
    NotSubscribed,
    /// The nonce is not one this subscription was (possibly) admitted under: the notice
    /// is about an earlier admission, or forged.
    #[error("eviction names another admission")]
    Stale,
}

/// What a request was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// A subscribe with these options.
    Subscribe(SubscribeOptions),
    /// An unsubscribe.
    Unsubscribe,
}

/// A request awaiting its ack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The publisher asked.
    pub publisher: NodeId,
    /// The channel.
    pub channel: ChannelName,
    /// What was asked.
    pub kind: RequestKind,
}

/// An ack matched to its request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answered {
    /// The request's nonce.
    pub nonce: u64,
    /// The request.
    pub request: Pending,
    /// The publisher's answer.
    pub result: AckResult,
}

/// An active subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Active {
    /// The publisher.
    pub publisher: NodeId,
    /// The nonce of the subscribe whose `Subscribed` ack (last) confirmed it.
    pub nonce: u64,
    /// The channel.
    pub channel: ChannelName,
    /// What we asked for.
    pub options: SubscribeOptions,
    /// What the publisher granted.
    pub granted: Granted,
}

/// Subscriber-side totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SubscriptionCounters {
    /// Acks matched to a request.
    pub acks: u64,
    /// Acks refused (unexpected, wrong peer or channel).
    pub bad_acks: u64,
    /// Events for no active subscription.
    pub unsolicited_events: u64,
    /// Eviction notices that ended a subscription.
    pub evictions: u64,
    /// Eviction notices refused (no such subscription, repeats, earlier admissions).
    pub bad_evictions: u64,
}

/// This node's subscriptions.
///
/// [`Subscriptions`] builds `Subscribe` / `Unsubscribe` requests under caller-supplied
/// random nonces, matches each [`Ack`] to its request (only from the publisher it was sent
/// to, with the same channel), and keeps the active subscriptions that incoming events are
/// checked against: an event frame is accepted only for a (publisher, channel hash) pair
/// this node subscribed to. Timeouts are the caller's: it cancels a request it stopped
/// waiting for with [`Subscriptions::cancel`].
///
/// An [`Evicted`] notice ends a subscription ([`Subscriptions::handle_evicted`]) only when
/// it comes from that subscription's publisher and names a nonce the publisher may hold
/// the subscriber under: the subscribe that last confirmed it, a renewal sent since whose
/// answer did not confirm it (lost, timed out or refused; the last
/// [`MAX_UNCONFIRMED`] are remembered), or a subscribe still awaiting its ack. A
/// confirmed renewal forgets the nonces sent before it, so a late or repeated notice about
/// an earlier admission cannot end the renewed subscription.
#[derive(Debug, Default)]
pub struct Subscriptions {
    config: SubscriptionsConfig,
    pending: HashMap<u64, Pending>,
    active: HashMap<(NodeId, ChannelHash), Entry>,
    counters: SubscriptionCounters,
}

/// Renewal nonces remembered per subscription besides the confirmed one: more than the
/// renewals a subscriber sends while one eviction notice is in flight.
pub const MAX_UNCONFIRMED: usize = 8;

/// An active subscription and the renewals sent for it since it was last confirmed.
#[derive(Debug)]
struct Entry {
    active: Active,
    /// Nonces of subscribes sent for this subscription after `active.nonce`, oldest first.
    unconfirmed: VecDeque<u64>,
}

impl Subscriptions {
    /// No subscriptions.
    pub fn new(config: SubscriptionsConfig) -> Self {
        Self {
            config,
            ..Self::default()
        }
    }

    /// Records a subscribe to `channel` on `publisher` under the random `nonce` and returns
    /// the message to send. Re-subscribing (to renew a token) is allowed.
    pub fn subscribe(
        &mut self,
        publisher: NodeId,
        channel: ChannelName,
        tokens: TokenChain,
        options: SubscribeOptions,
        nonce: u64,
    ) -> Result<Subscribe, SubscriptionError> {
        self.check_pending(nonce)?;
        let key = (publisher, channel.hash());
        let pending_subscribes = self
            .pending
            .values()
            .filter(|p| matches!(p.kind, RequestKind::Subscribe(_)))
            .count();
        let full = self.active.len() + pending_subscribes >= self.config.max_subscriptions;
        match self.active.get_mut(&key) {
            Some(entry) => {
                if entry.unconfirmed.len() >= MAX_UNCONFIRMED {
                    entry.unconfirmed.pop_front();
                }
                entry.unconfirmed.push_back(nonce);
            }
            None if full => return Err(SubscriptionError::TooManySubscriptions),
            None => {}
        }
        self.pending.insert(
            nonce,
            Pending {
                publisher,
                channel: channel.clone(),
                kind: RequestKind::Subscribe(options),
            },
        );
        Ok(Subscribe {
            nonce,
            channel,
            tokens,
            options,
        })
    }

    /// Leaves `channel` on `publisher` at once (its events are no longer accepted) and
    /// returns the message to send under the random `nonce`. Idempotent.
    pub fn unsubscribe(
        &mut self,
        publisher: NodeId,
        channel: ChannelName,
        nonce: u64,
    ) -> Result<Unsubscribe, SubscriptionError> {
        self.check_pending(nonce)?;
        self.active.remove(&(publisher, channel.hash()));
        self.pending.insert(
            nonce,
            Pending {
                publisher,
                channel: channel.clone(),
                kind: RequestKind::Unsubscribe,
            },
        );
        Ok(Unsubscribe { nonce, channel })
    }

    /// Matches an ack received from session peer `from`. A `Subscribed` answer to a
    /// subscribe activates (or renews) the subscription; `UnknownChannel` or `Unsubscribed`
    /// ends it; any other refusal leaves a standing subscription as it was, as the
    /// publisher does.
    pub fn handle_ack(&mut self, from: NodeId, ack: &Ack) -> Result<Answered, AckError> {
        let result = self.match_ack(from, ack);
        match result {
            Ok(_) => self.counters.acks += 1,
            Err(_) => self.counters.bad_acks += 1,
        }
        result
    }

    /// Takes an eviction notice received from session peer `from`: it ends the active
    /// subscription it is about (returned) if `from` is that subscription's publisher and
    /// the nonce is one it may hold the subscription under (see the [type docs](Self)).
    pub fn handle_evicted(
        &mut self,
        from: NodeId,
        evicted: &Evicted,
    ) -> Result<Active, EvictionError> {
        let result = self.match_evicted(from, evicted);
        match result {
            Ok(_) => self.counters.evictions += 1,
            Err(_) => self.counters.bad_evictions += 1,
        }
        result
    }

    /// Forgets a pending request (the caller gave up waiting).
    pub fn cancel(&mut self, nonce: u64) -> Option<Pending> {
        self.pending.remove(&nonce)
    }

    /// The subscription an event from `publisher` on channel `hash` belongs to, if this
    /// node has one; counts the event as unsolicited otherwise.
    pub fn accept_event(&mut self, publisher: NodeId, hash: ChannelHash) -> Option<&Active> {
        let found = self.active.get(&(publisher, hash));
        if found.is_none() {
            self.counters.unsolicited_events += 1;
        }
        found.map(|entry| &entry.active)
    }

    /// An active subscription.
    pub fn get(&self, publisher: NodeId, channel: &ChannelName) -> Option<&Active> {
        self.active
            .get(&(publisher, channel.hash()))
            .map(|entry| &entry.active)
    }

    /// Every active subscription.
    pub fn active(&self) -> impl Iterator<Item = &Active> {
        self.active.values().map(|entry| &entry.active)
    }

    /// Subscriptions whose token expires within `margin_secs` of `now_unix`: re-subscribe
    /// with a fresh token before the publisher's sweep drops them.
    pub fn renewals_due(&self, now_unix: u64, margin_secs: u64) -> Vec<(NodeId, ChannelName)> {
        let deadline = now_unix.saturating_add(margin_secs);
        let mut due: Vec<_> = self
            .active()
            .filter(|a| a.granted.token_expires_at.is_some_and(|t| t <= deadline))
            .map(|a| (a.publisher, a.channel.clone()))
            .collect();
        due.sort();
        due
    }

    /// Drops every subscription and pending request involving `publisher` (its session is
    /// gone); returns the channels that were active.
    pub fn remove_publisher(&mut self, publisher: NodeId) -> Vec<ChannelName> {
        self.pending.retain(|_, p| p.publisher != publisher);
        let mut gone = Vec::new();
        self.active.retain(|_, entry| {
            let keep = entry.active.publisher != publisher;
            if !keep {
                gone.push(entry.active.channel.clone());
            }
            keep
        });
        gone.sort();
        gone
    }

    /// Number of pending requests.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Totals.
    pub fn counters(&self) -> &SubscriptionCounters {
        &self.counters
    }

    fn check_pending(&self, nonce: u64) -> Result<(), SubscriptionError> {
        if self.pending.contains_key(&nonce) {
            return Err(SubscriptionError::NonceInUse);
        }
        if self.pending.len() >= self.config.max_pending {
            return Err(SubscriptionError::TooManyPending);
        }
        Ok(())
    }

    fn match_ack(&mut self, from: NodeId, ack: &Ack) -> Result<Answered, AckError> {
        let pending = self.pending.get(&ack.nonce).ok_or(AckError::Unexpected)?;
        if pending.publisher != from {
            return Err(AckError::WrongPeer {
                from,
                publisher: pending.publisher,
            });
        }
        if pending.channel != ack.channel {
            return Err(AckError::WrongChannel);
        }
        let request = self
            .pending
            .remove(&ack.nonce)
            .ok_or(AckError::Unexpected)?;
        let key = (request.publisher, request.channel.hash());
        match (request.kind, ack.result) {
            (RequestKind::Subscribe(options), AckResult::Subscribed(granted)) => {
                let active = Active {
                    publisher: request.publisher,
                    nonce: ack.nonce,
                    channel: request.channel.clone(),
                    options,
                    granted,
                };
                let mut unconfirmed = self
                    .active
                    .remove(&key)
                    .map(|entry| entry.unconfirmed)
                    .unwrap_or_default();
                // The publisher now holds us under this nonce: renewals sent before it
                // are superseded, those sent after it may still be admitted.
                if let Some(at) = unconfirmed.iter().position(|&n| n == ack.nonce) {
                    unconfirmed.drain(..=at);
                }
                self.active.insert(
                    key,
                    Entry {
                        active,
                        unconfirmed,
                    },
                );
            }
            // The publisher no longer has the channel: nothing left to receive.
            (_, AckResult::Rejected(RejectReason::UnknownChannel))
            | (_, AckResult::Unsubscribed) => {
                self.active.remove(&key);
            }
            // A refused renewal keeps the standing subscription, as the publisher does.
            _ => {}
        }
        Ok(Answered {
            nonce: ack.nonce,
            request,
            result: ack.result,
        })
    }

    fn match_evicted(&mut self, from: NodeId, evicted: &Evicted) -> Result<Active, EvictionError> {
        let key = (from, evicted.channel.hash());
        let entry = self
            .active
            .get(&key)
            .filter(|entry| entry.active.channel == evicted.channel)
            .ok_or(EvictionError::NotSubscribed)?;
        let awaiting = self.pending.get(&evicted.nonce).is_some_and(|p| {
            p.publisher == from
                && p.channel == evicted.channel
                && matches!(p.kind, RequestKind::Subscribe(_))
        });
        if entry.active.nonce != evicted.nonce
            && !entry.unconfirmed.contains(&evicted.nonce)
            && !awaiting
        {
            return Err(EvictionError::Stale);
        }
        self.active
            .remove(&key)
            .map(|entry| entry.active)
            .ok_or(EvictionError::NotSubscribed)
    }
}
