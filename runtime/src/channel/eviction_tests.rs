//! Eviction notices end to end through encoded messages: the publisher's registry evicts
//! (sweep, revocation, unregistration) and says so; the subscriber's bookkeeping takes a
//! notice only from the subscription's publisher and only for an admission the publisher
//! may hold it under.

use netrun_messages::{
    Ack, AckResult, ChannelName, Envelope, Identity, MembershipMessage, NodeId, PermissionToken,
    RejectReason, SubscribeOptions, TokenChain, TokenScope,
};

use super::*;

const NOW: u64 = 1_800_000_000;

fn name(s: &str) -> ChannelName {
    ChannelName::new(s).expect("valid")
}

fn ident(n: u8) -> Identity {
    Identity::from_seed([n; 32])
}

/// A message after a trip through an encoded envelope.
fn wire(message: MembershipMessage) -> MembershipMessage {
    let bytes = message.to_envelope(None).expect("encodes");
    let env = Envelope::decode(&bytes).expect("envelope");
    MembershipMessage::from_envelope(&env).expect("decodes")
}

/// One publisher with a token-gated channel and one subscriber's bookkeeping.
struct Pair {
    publisher: Identity,
    subscriber: Identity,
    channel: ChannelName,
    registry: ChannelRegistry,
    subs: Subscriptions,
}

impl Pair {
    fn new() -> Self {
        let publisher = ident(1);
        let channel = name("alerts");
        let mut registry =
            ChannelRegistry::new(publisher.entity_id(), RegistryConfig::default()).expect("valid");
        registry
            .register(ChannelConfig::new(channel.clone()).with_require_token(true))
            .expect("registers");
        Self {
            publisher,
            subscriber: ident(2),
            channel,
            registry,
            subs: Subscriptions::new(SubscriptionsConfig::default()),
        }
    }

    fn p(&self) -> NodeId {
        self.publisher.node_id()
    }

    /// A token for the subscriber valid from `from` for `ttl` seconds.
    fn token(&self, from: u64, ttl: u64) -> TokenChain {
        TokenChain::single(
            PermissionToken::try_issue(
                &self.publisher,
                self.subscriber.entity_id(),
                TokenScope::SUBSCRIBE,
                self.channel.hash(),
                from,
                ttl,
                0,
                from,
            )
            .expect("issues"),
        )
    }

    /// Sends a subscribe under `nonce` at `now` and returns the publisher's ack (not yet
    /// delivered to the subscriber).
    fn ask(&mut self, nonce: u64, now: u64, tokens: TokenChain) -> Ack {
        let request = self
            .subs
            .subscribe(
                self.p(),
                self.channel.clone(),
                tokens,
                SubscribeOptions::default(),
                nonce,
            )
            .expect("room");
        let peer = Peer {
            node: self.subscriber.node_id(),
            entity: self.subscriber.entity_id(),
            capabilities: None,
        };
        self.registry
            .handle_message(now, peer, &wire(MembershipMessage::Subscribe(request)))
            .expect("answers")
    }

    /// A subscribe under `nonce` at `now`, answered and delivered.
    fn subscribe(&mut self, nonce: u64, now: u64, tokens: TokenChain) {
        let ack = self.ask(nonce, now, tokens);
        assert!(matches!(ack.result, AckResult::Subscribed(_)), "{ack:?}");
        self.subs.handle_ack(self.p(), &ack).expect("matches");
    }

    /// Delivers the notice of `evicted` from `from`.
    fn notify(&mut self, from: NodeId, evicted: &Evicted) -> Result<Active, EvictionError> {
        match wire(MembershipMessage::Evicted(evicted.notice())) {
            MembershipMessage::Evicted(notice) => self.subs.handle_evicted(from, &notice),
            other => panic!("unexpected {other:?}"),
        }
    }

    fn active(&self) -> bool {
        self.subs.get(self.p(), &self.channel).is_some()
    }
}

#[test]
fn an_expired_subscriber_is_told_once_by_its_publisher_only() {
    let mut pair = Pair::new();
    let tokens = pair.token(NOW, 120);
    pair.subscribe(21, NOW, tokens);
    assert_eq!(
        pair.subs
            .get(pair.p(), &pair.channel)
            .expect("active")
            .nonce,
        21
    );

    let evicted = pair.registry.sweep(NOW + 180);
    assert_eq!(
        evicted,
        vec![Evicted {
            channel: pair.channel.clone(),
            node: pair.subscriber.node_id(),
            nonce: 21,
            reason: EvictReason::TokenExpired,
        }]
    );
    // The same notice from a node that is not the publisher changes nothing.
    assert_eq!(
        pair.notify(ident(9).node_id(), &evicted[0]),
        Err(EvictionError::NotSubscribed)
    );
    assert!(pair.active());
    let ended = pair.notify(pair.p(), &evicted[0]).expect("taken");
    assert_eq!((ended.publisher, ended.nonce), (pair.p(), 21));
    assert!(!pair.active());
    assert!(
        pair.subs
            .accept_event(pair.p(), pair.channel.hash())
            .is_none()
    );
    // A repeated copy finds nothing to end.
    assert_eq!(
        pair.notify(pair.p(), &evicted[0]),
        Err(EvictionError::NotSubscribed)
    );
    let counters = pair.subs.counters();
    assert_eq!((counters.evictions, counters.bad_evictions), (1, 2));
}

#[test]
fn a_late_notice_about_an_earlier_admission_does_not_end_a_renewal() {
    let mut pair = Pair::new();
    let tokens = pair.token(NOW, 120);
    pair.subscribe(31, NOW, tokens);
    let evicted = pair.registry.sweep(NOW + 180);
    // The first copy is lost; the subscriber renews with a fresh token meanwhile.
    let tokens = pair.token(NOW + 180, 600);
    pair.subscribe(32, NOW + 180, tokens);
    assert_eq!(
        pair.notify(pair.p(), &evicted[0]),
        Err(EvictionError::Stale)
    );
    assert!(pair.active(), "the renewed subscription stands");
    // A notice for a name with the same key but another channel is not this one's.
    let other = Evicted {
        channel: name("other"),
        ..evicted[0].clone()
    };
    assert_eq!(
        pair.notify(pair.p(), &other),
        Err(EvictionError::NotSubscribed)
    );
}

/// A subscription admitted under nonce 41, renewed under 42 (admitted, its Ack lost), then
/// revoked; returns the pair and the eviction.
fn revoked_after_a_lost_renewal_ack() -> (Pair, Evicted) {
    let mut pair = Pair::new();
    let tokens = pair.token(NOW, 120);
    pair.subscribe(41, NOW, tokens);
    let tokens = pair.token(NOW + 60, 120);
    let _lost = pair.ask(42, NOW + 60, tokens);
    let mut evicted = pair
        .registry
        .revoke_issuer(NOW + 70, pair.publisher.entity_id())
        .expect("room");
    assert_eq!(evicted.len(), 1);
    (pair, evicted.remove(0))
}

#[test]
fn a_renewal_whose_ack_was_lost_or_refused_still_matches() {
    // The publisher holds the renewal's nonce, which the subscriber still awaits…
    let (mut pair, evicted) = revoked_after_a_lost_renewal_ack();
    assert_eq!(
        (evicted.nonce, evicted.reason),
        (42, EvictReason::IssuerRevoked)
    );
    pair.notify(pair.p(), &evicted)
        .expect("pending renewal matches");
    assert!(!pair.active());
    // …or has given up on.
    let (mut pair, evicted) = revoked_after_a_lost_renewal_ack();
    assert!(pair.subs.cancel(42).is_some());
    pair.notify(pair.p(), &evicted)
        .expect("unconfirmed renewal matches");
    assert!(!pair.active());

    // A refused renewal leaves the publisher holding the previous admission.
    let mut pair = Pair::new();
    let tokens = pair.token(NOW, 120);
    pair.subscribe(51, NOW, tokens);
    let refused = pair.ask(52, NOW + 10, TokenChain::default());
    assert_eq!(
        refused.result,
        AckResult::Rejected(RejectReason::Unauthorized)
    );
    pair.subs.handle_ack(pair.p(), &refused).expect("matches");
    assert!(pair.active(), "a refused renewal keeps the subscription");
    let evicted = pair.registry.sweep(NOW + 180);
    assert_eq!(evicted[0].nonce, 51);
    pair.notify(pair.p(), &evicted[0]).expect("matches");
    assert!(!pair.active());
}

#[test]
fn unconfirmed_renewals_are_bounded() {
    let mut pair = Pair::new();
    let tokens = pair.token(NOW, 3600);
    pair.subscribe(1, NOW, tokens);
    // Renewals that are never answered: the oldest beyond the bound is forgotten.
    for nonce in 100..100 + MAX_UNCONFIRMED as u64 + 1 {
        pair.subs
            .subscribe(
                pair.p(),
                pair.channel.clone(),
                TokenChain::default(),
                SubscribeOptions::default(),
                nonce,
            )
            .expect("room");
        pair.subs.cancel(nonce);
    }
    let notice = |nonce| Evicted {
        channel: pair.channel.clone(),
        node: pair.subscriber.node_id(),
        nonce,
        reason: EvictReason::IssuerRevoked,
    };
    let (oldest, newest) = (notice(100), notice(100 + MAX_UNCONFIRMED as u64));
    assert_eq!(pair.notify(pair.p(), &oldest), Err(EvictionError::Stale));
    pair.notify(pair.p(), &newest).expect("remembered");
}

#[test]
fn unregistering_evicts_the_roster_and_notices_name_the_publishers_channel() {
    // One subscriber on a same-named channel of two publishers: a notice from one ends
    // only the subscription to that one.
    let mut pair = Pair::new();
    let tokens = pair.token(NOW, 600);
    pair.subscribe(61, NOW, tokens);
    let other = ident(3).node_id();
    pair.subs
        .subscribe(
            other,
            pair.channel.clone(),
            TokenChain::default(),
            SubscribeOptions::default(),
            61,
        )
        .expect("room");
    let granted = netrun_messages::Granted {
        reliable: true,
        priority: 0,
        token_expires_at: None,
    };
    let ack = Ack {
        nonce: 61,
        channel: pair.channel.clone(),
        result: AckResult::Subscribed(granted),
    };
    pair.subs.handle_ack(other, &ack).expect("matches");

    let evicted = pair.registry.unregister(&pair.channel).expect("registered");
    assert_eq!(
        evicted,
        vec![Evicted {
            channel: pair.channel.clone(),
            node: pair.subscriber.node_id(),
            nonce: 61,
            reason: EvictReason::ChannelClosed,
        }]
    );
    let ended = pair.notify(pair.p(), &evicted[0]).expect("taken");
    assert_eq!(ended.publisher, pair.p());
    assert!(pair.subs.get(other, &pair.channel).is_some());
    // A publisher never answers a notice.
    let peer = Peer {
        node: pair.subscriber.node_id(),
        entity: pair.subscriber.entity_id(),
        capabilities: None,
    };
    let notice = MembershipMessage::Evicted(evicted[0].notice());
    assert!(pair.registry.handle_message(NOW, peer, &notice).is_none());
}
