//! Channel tests: configuration, token chains, rate limiting, sweeps, revocation, rosters
//! and the subscribe / ack exchange end to end through encoded messages.

use std::collections::{BTreeSet, HashMap};

use netrun_messages::{
    Ack, AckResult, CapabilityFilter, CapabilitySet, ChannelName, Envelope, Identity,
    MembershipMessage, NodeId, PermissionToken, RejectReason, SubscribeOptions, TokenChain,
    TokenScope,
};

use super::*;

const NOW: u64 = 1_800_000_000;

fn name(s: &str) -> ChannelName {
    ChannelName::new(s).expect("valid")
}

fn ident(n: u8) -> Identity {
    Identity::from_seed([n; 32])
}

fn issue(
    issuer: &Identity,
    subject: &Identity,
    channel: &ChannelName,
    scope: TokenScope,
    ttl: u64,
    depth: u8,
) -> PermissionToken {
    PermissionToken::try_issue(
        issuer,
        subject.entity_id(),
        scope,
        channel.hash(),
        NOW,
        ttl,
        depth,
        7,
    )
    .expect("issues")
}

/// The nonce [`request`] subscribes under.
const NONCE: u64 = 0x5eed;

fn request<'a>(who: &Identity, tokens: &'a [PermissionToken]) -> SubscribeRequest<'a> {
    SubscribeRequest {
        node: who.node_id(),
        nonce: NONCE,
        entity: who.entity_id(),
        tokens,
        capabilities: None,
        options: SubscribeOptions::default(),
    }
}

fn auth() -> Authenticator {
    Authenticator::new(AuthConfig::default()).expect("valid")
}

/// A token-gated channel published by `publisher`.
fn gated(publisher: &Identity, channel: &str) -> Channel {
    Channel::new(
        publisher.entity_id(),
        ChannelConfig::new(name(channel)).with_require_token(true),
    )
    .expect("valid")
}

fn rejection(result: Result<Accepted, Reject>) -> (RejectReason, Option<TokenRejection>) {
    let reject = result.expect_err("refused");
    (reject.reason, reject.detail)
}

#[test]
fn config_validation() {
    let base = ChannelConfig::new(name("a"));
    assert_eq!(base.validate(), Ok(()));
    assert_eq!(
        base.clone().with_max_subscribers(0).validate(),
        Err(ChannelConfigError::ZeroSubscribers)
    );
    assert_eq!(
        base.clone()
            .with_max_subscribers(MAX_SUBSCRIBERS_LIMIT + 1)
            .validate(),
        Err(ChannelConfigError::TooManySubscribers(
            MAX_SUBSCRIBERS_LIMIT + 1
        ))
    );
    assert_eq!(
        base.clone()
            .with_token_root(ident(1).entity_id())
            .validate(),
        Err(ChannelConfigError::RootsWithoutToken)
    );
    let mut many = base.clone().with_require_token(true);
    for n in 0..=MAX_TOKEN_ROOTS {
        many = many.with_token_root(ident(n as u8).entity_id());
    }
    assert_eq!(
        many.validate(),
        Err(ChannelConfigError::TooManyRoots(MAX_TOKEN_ROOTS + 1))
    );
    let mut wide = CapabilityFilter::new();
    for i in 0..=netrun_messages::capability::MAX_FILTER_TAGS {
        wide = wide.require_tag(format!("t{i}"));
    }
    assert!(matches!(
        base.clone().with_subscribe_filter(wide.clone()).validate(),
        Err(ChannelConfigError::Filter(_))
    ));
    assert!(matches!(
        base.with_visibility(Visibility::Filter(wide)).validate(),
        Err(ChannelConfigError::Filter(_))
    ));
    let bad_auth = AuthConfig {
        cache_capacity: 0,
        ..AuthConfig::default()
    };
    assert_eq!(
        bad_auth.validate(),
        Err(AuthConfigError::Zero("cache_capacity"))
    );
    let skewed = AuthConfig {
        clock_skew_secs: 3600,
        ..AuthConfig::default()
    };
    assert_eq!(skewed.effective_skew(), 300);
}

#[test]
fn open_channel_roster_and_fan_out() {
    let publisher = ident(1);
    let mut auth = auth();
    let mut ch = Channel::new(
        publisher.entity_id(),
        ChannelConfig::new(name("news")).with_priority(3),
    )
    .expect("valid");
    let (a, b) = (ident(2), ident(3));
    let ok = ch
        .subscribe(NOW, &request(&a, &[]), &mut auth)
        .expect("open");
    assert!(!ok.renewed);
    assert_eq!(ok.granted.priority, 3);
    assert!(ok.granted.reliable);
    assert_eq!(ok.granted.token_expires_at, None);
    let mut lossy = request(&b, &[]);
    lossy.options.best_effort = true;
    assert!(
        !ch.subscribe(NOW, &lossy, &mut auth)
            .expect("open")
            .granted
            .reliable
    );
    let mut recipients: Vec<_> = ch.recipients().collect();
    recipients.sort();
    let mut want = vec![(a.node_id(), true), (b.node_id(), false)];
    want.sort();
    assert_eq!(recipients, want);
    assert!(
        ch.subscribe(NOW, &request(&a, &[]), &mut auth)
            .expect("again")
            .renewed
    );
    assert_eq!(ch.len(), 2);
    assert!(ch.unsubscribe(a.node_id()));
    assert!(!ch.unsubscribe(a.node_id()), "idempotent");
    assert_eq!(ch.len(), 1);
    assert_eq!((ch.next_seq(), ch.next_seq()), (0, 1));
    assert_eq!(ch.poll_timeout(), None);
    let c = ch.counters();
    assert_eq!((c.subscribed, c.renewed, c.unsubscribed), (2, 1, 1));
}

#[test]
fn require_token_without_token_is_unauthorized() {
    let publisher = ident(1);
    let mut auth = auth();
    let mut ch = gated(&publisher, "secret");
    assert_eq!(
        rejection(ch.subscribe(NOW, &request(&ident(2), &[]), &mut auth)),
        (RejectReason::Unauthorized, Some(TokenRejection::Missing))
    );
    assert!(ch.is_empty());
    assert_eq!(ch.counters().rejected_unauthorized, 1);
}

#[test]
fn direct_token_checks() {
    let publisher = ident(1);
    let alice = ident(2);
    let mallory = ident(3);
    let ch_name = name("secret");
    let mut auth = auth();
    let mut ch = gated(&publisher, "secret");
    let sub = TokenScope::SUBSCRIBE;
    let good = issue(&publisher, &alice, &ch_name, sub, 600, 0);

    let mut check = |who: &Identity, token: PermissionToken, now: u64| {
        let tokens = [token];
        ch.subscribe(now, &request(who, &tokens), &mut auth)
            .map_err(|r| r.detail)
    };
    // Someone else's token.
    assert_eq!(
        check(&mallory, good, NOW),
        Err(Some(TokenRejection::WrongSubject))
    );
    // Another channel.
    let other = issue(&publisher, &alice, &name("other"), sub, 600, 0);
    assert_eq!(
        check(&alice, other, NOW),
        Err(Some(TokenRejection::WrongChannel))
    );
    // Publish-only scope.
    let publish = issue(&publisher, &alice, &ch_name, TokenScope::PUBLISH, 600, 0);
    assert_eq!(
        check(&alice, publish, NOW),
        Err(Some(TokenRejection::ScopeNotGranted))
    );
    // Issued by a key the channel does not trust.
    let self_made = issue(&alice, &alice, &ch_name, sub, 600, 0);
    assert_eq!(
        check(&alice, self_made, NOW),
        Err(Some(TokenRejection::UntrustedRoot))
    );
    // Tampered: the nonce is changed, the signature no longer verifies.
    let mut bytes = good.to_bytes();
    bytes[90] ^= 1;
    let tampered = PermissionToken::from_bytes(&bytes).expect("well formed");
    assert_eq!(
        check(&alice, tampered, NOW),
        Err(Some(TokenRejection::BadSignature))
    );
    // Validity window with 60 s skew.
    assert_eq!(
        check(&alice, good, NOW - 61),
        Err(Some(TokenRejection::NotYetValid))
    );
    assert_eq!(
        check(&alice, good, NOW + 600 + 60),
        Err(Some(TokenRejection::Expired))
    );
    let ok = check(&alice, good, NOW - 60).expect("within skew");
    assert_eq!(ok.granted.token_expires_at, Some(NOW + 600));
    assert!(check(&alice, good, NOW + 659).is_ok());
}

#[test]
fn default_root_is_the_publisher_and_roots_are_configurable() {
    let publisher = ident(1);
    let authority = ident(9);
    let alice = ident(2);
    let ch_name = name("ops");
    let mut auth = auth();
    let mut ch = Channel::new(
        publisher.entity_id(),
        ChannelConfig::new(ch_name.clone())
            .with_require_token(true)
            .with_token_root(authority.entity_id()),
    )
    .expect("valid");
    assert_eq!(ch.roots(), &BTreeSet::from([authority.entity_id()]));
    let from_publisher = [issue(
        &publisher,
        &alice,
        &ch_name,
        TokenScope::SUBSCRIBE,
        60,
        0,
    )];
    assert_eq!(
        rejection(ch.subscribe(NOW, &request(&alice, &from_publisher), &mut auth)).1,
        Some(TokenRejection::UntrustedRoot)
    );
    let from_authority = [issue(
        &authority,
        &alice,
        &ch_name,
        TokenScope::SUBSCRIBE,
        60,
        0,
    )];
    ch.subscribe(NOW, &request(&alice, &from_authority), &mut auth)
        .expect("rooted at the configured authority");
}

#[test]
fn delegation_chains() {
    let publisher = ident(1);
    let team = ident(2);
    let member = ident(3);
    let ch_name = name("team.feed");
    let mut auth = auth();
    let mut ch = gated(&publisher, "team.feed");
    let sub = TokenScope::SUBSCRIBE;
    let delegating = sub.with(TokenScope::DELEGATE);

    let root = issue(&publisher, &team, &ch_name, delegating, 3600, 1);
    let child = root
        .delegate(&team, member.entity_id(), sub, NOW, 600, 1)
        .expect("delegates");
    let ok = ch
        .subscribe(NOW, &request(&member, &[root, child]), &mut auth)
        .expect("valid chain");
    assert_eq!(ok.granted.token_expires_at, Some(NOW + 600));
    // The child alone is not rooted.
    assert_eq!(
        rejection(ch.subscribe(NOW, &request(&member, &[child]), &mut auth)).1,
        Some(TokenRejection::UntrustedRoot)
    );
    // A link signed by someone other than the parent's subject.
    let stranger = issue(&ident(7), &member, &ch_name, sub, 600, 0);
    assert_eq!(
        rejection(ch.subscribe(NOW, &request(&member, &[root, stranger]), &mut auth)).1,
        Some(TokenRejection::BrokenChain)
    );
    // The parent grants no DELEGATE.
    let plain = issue(&publisher, &team, &ch_name, sub, 3600, 1);
    let hand_made = issue(&team, &member, &ch_name, sub, 600, 0);
    assert_eq!(
        rejection(ch.subscribe(NOW, &request(&member, &[plain, hand_made]), &mut auth)).1,
        Some(TokenRejection::DelegationNotAllowed)
    );
    // The parent's depth is zero (the child was signed by hand, bypassing `delegate`).
    let flat = issue(&publisher, &team, &ch_name, delegating, 3600, 0);
    assert_eq!(
        rejection(ch.subscribe(NOW, &request(&member, &[flat, hand_made]), &mut auth)).1,
        Some(TokenRejection::DepthExhausted)
    );
    // The child claims more than the parent grants.
    let delegate_only = issue(&publisher, &team, &ch_name, TokenScope::DELEGATE, 3600, 1);
    assert_eq!(
        rejection(ch.subscribe(
            NOW,
            &request(&member, &[delegate_only, hand_made]),
            &mut auth
        ))
        .1,
        Some(TokenRejection::ScopeEscalation)
    );
    // The child outlives the parent.
    let short_root = issue(&publisher, &team, &ch_name, delegating, 60, 1);
    assert_eq!(
        rejection(ch.subscribe(NOW, &request(&member, &[short_root, hand_made]), &mut auth)).1,
        Some(TokenRejection::BrokenChain)
    );
    assert_eq!(ch.len(), 1);
}

#[test]
fn verified_chains_are_cached_but_rechecked() {
    let publisher = ident(1);
    let alice = ident(2);
    let ch_name = name("cached");
    let mut auth = auth();
    let mut ch = gated(&publisher, "cached");
    let token = [issue(
        &publisher,
        &alice,
        &ch_name,
        TokenScope::SUBSCRIBE,
        600,
        0,
    )];
    ch.subscribe(NOW, &request(&alice, &token), &mut auth)
        .expect("first");
    assert_eq!(auth.counters().signatures_verified, 1);
    assert_eq!(auth.cached(), 1);
    ch.subscribe(NOW + 1, &request(&alice, &token), &mut auth)
        .expect("renewal");
    assert_eq!(auth.counters().signatures_verified, 1, "served from cache");
    assert_eq!(auth.counters().cache_hits, 1);
    // A cache hit is still bound to its subject, channel and window.
    assert_eq!(
        rejection(ch.subscribe(NOW, &request(&ident(3), &token), &mut auth)).1,
        Some(TokenRejection::WrongSubject)
    );
    assert_eq!(
        rejection(ch.subscribe(NOW + 700, &request(&alice, &token), &mut auth)).1,
        Some(TokenRejection::Expired)
    );

    // The cache is a bounded LRU.
    let mut small = Authenticator::new(AuthConfig {
        cache_capacity: 2,
        ..AuthConfig::default()
    })
    .expect("valid");
    let mut ch = gated(&publisher, "cached");
    for n in 10..14 {
        let who = ident(n);
        let token = [issue(
            &publisher,
            &who,
            &ch_name,
            TokenScope::SUBSCRIBE,
            600,
            0,
        )];
        ch.subscribe(NOW, &request(&who, &token), &mut small)
            .expect("valid");
    }
    assert_eq!(small.cached(), 2);
}

#[test]
fn failures_are_rate_limited_before_any_signature_check() {
    let publisher = ident(1);
    let attacker = ident(2);
    let ch_name = name("guarded");
    let mut auth = auth();
    let mut ch = gated(&publisher, "guarded");
    // Well-formed, correctly addressed tokens with broken signatures: each costs a verify.
    let mut bytes = issue(
        &publisher,
        &attacker,
        &ch_name,
        TokenScope::SUBSCRIBE,
        600,
        0,
    )
    .to_bytes();
    bytes[100] ^= 1;
    let forged = [PermissionToken::from_bytes(&bytes).expect("well formed")];
    for _ in 0..16 {
        assert_eq!(
            rejection(ch.subscribe(NOW, &request(&attacker, &forged), &mut auth)).1,
            Some(TokenRejection::BadSignature)
        );
    }
    let verified = auth.counters().signatures_verified;
    assert_eq!(verified, 16);
    for _ in 0..100 {
        assert_eq!(
            rejection(ch.subscribe(NOW, &request(&attacker, &forged), &mut auth)).0,
            RejectReason::RateLimited
        );
    }
    assert_eq!(
        auth.counters().signatures_verified,
        verified,
        "no verify while limited"
    );
    assert_eq!(auth.counters().rate_limited, 100);
    assert_eq!(ch.counters().rejected_rate_limited, 100);
    // Other peers are unaffected.
    let alice = ident(3);
    let good = [issue(
        &publisher,
        &alice,
        &ch_name,
        TokenScope::SUBSCRIBE,
        600,
        0,
    )];
    ch.subscribe(NOW, &request(&alice, &good), &mut auth)
        .expect("unaffected");
    // The budget refills over the window (16 per 60 s: one every 3.75 s).
    assert!(!auth.allows(NOW + 3, attacker.node_id()));
    assert!(auth.allows(NOW + 4, attacker.node_id()));
    // A success clears the record.
    let fixed = [issue(
        &publisher,
        &attacker,
        &ch_name,
        TokenScope::SUBSCRIBE,
        600,
        0,
    )];
    ch.subscribe(NOW + 4, &request(&attacker, &fixed), &mut auth)
        .expect("valid now");
    for _ in 0..16 {
        let _ = ch.subscribe(NOW + 4, &request(&attacker, &forged), &mut auth);
    }
    assert!(!auth.allows(NOW + 4, attacker.node_id()));
}

#[test]
fn failure_table_is_bounded() {
    let publisher = ident(1);
    let mut auth = Authenticator::new(AuthConfig {
        max_tracked_peers: 3,
        failure_burst: 1,
        ..AuthConfig::default()
    })
    .expect("valid");
    let mut ch = gated(&publisher, "bounded");
    for n in 10..15 {
        let _ = ch.subscribe(NOW + u64::from(n), &request(&ident(n), &[]), &mut auth);
        assert!(!auth.allows(NOW + u64::from(n), ident(n).node_id()));
    }
    assert_eq!(auth.counters().peers_forgotten, 2);
    // The oldest records were forgotten; the newest are still limited.
    assert!(auth.allows(NOW + 14, ident(10).node_id()));
    assert!(!auth.allows(NOW + 14, ident(14).node_id()));
}

#[test]
fn sweep_evicts_expired_subscribers() {
    let publisher = ident(1);
    let ch_name = name("ticks");
    let mut auth = auth();
    let mut ch = gated(&publisher, "ticks");
    let short = ident(2);
    let long = ident(3);
    let open_ended = [issue(
        &publisher,
        &long,
        &ch_name,
        TokenScope::SUBSCRIBE,
        3600,
        0,
    )];
    let brief = [issue(
        &publisher,
        &short,
        &ch_name,
        TokenScope::SUBSCRIBE,
        120,
        0,
    )];
    ch.subscribe(NOW, &request(&short, &brief), &mut auth)
        .expect("ok");
    ch.subscribe(NOW, &request(&long, &open_ended), &mut auth)
        .expect("ok");
    // Eviction at not_after + skew: the first second the token fails the check.
    assert_eq!(ch.poll_timeout(), Some(NOW + 120 + 60));
    assert!(ch.sweep(NOW + 179).is_empty());
    let swept = ch.sweep(NOW + 180);
    assert_eq!(
        swept.iter().map(|s| (s.node, s.nonce)).collect::<Vec<_>>(),
        vec![(short.node_id(), NONCE)]
    );
    assert_eq!(
        ch.recipients().map(|(n, _)| n).collect::<Vec<_>>(),
        vec![long.node_id()],
        "an evicted subscriber receives nothing more"
    );
    assert_eq!(ch.poll_timeout(), Some(NOW + 3600 + 60));
    // Renewing with a fresh token moves the eviction.
    let renewed = [PermissionToken::try_issue(
        &publisher,
        long.entity_id(),
        TokenScope::SUBSCRIBE,
        ch_name.hash(),
        NOW + 3000,
        3600,
        0,
        8,
    )
    .expect("issues")];
    assert!(
        ch.subscribe(NOW + 3000, &request(&long, &renewed), &mut auth)
            .expect("renewed")
            .renewed
    );
    assert_eq!(ch.poll_timeout(), Some(NOW + 6600 + 60));
    assert!(ch.sweep(NOW + 3700).is_empty());
    assert_eq!(ch.counters().evicted_expired, 1);
}

#[test]
fn roster_bound_and_renewal_at_the_bound() {
    let publisher = ident(1);
    let mut auth = auth();
    let mut ch = Channel::new(
        publisher.entity_id(),
        ChannelConfig::new(name("small")).with_max_subscribers(2),
    )
    .expect("valid");
    for n in 2..4 {
        ch.subscribe(NOW, &request(&ident(n), &[]), &mut auth)
            .expect("room");
    }
    assert_eq!(
        rejection(ch.subscribe(NOW, &request(&ident(4), &[]), &mut auth)).0,
        RejectReason::TooManySubscribers
    );
    assert!(
        ch.subscribe(NOW, &request(&ident(2), &[]), &mut auth)
            .expect("renewal fits")
            .renewed
    );
}

#[test]
fn visibility_and_matchmaking() {
    let publisher = ident(1);
    let mut auth = auth();
    let gpu_only = CapabilityFilter::new().require_tag("gpu");
    let mut ch = Channel::new(
        publisher.entity_id(),
        ChannelConfig::new(name("jobs"))
            .with_visibility(Visibility::Filter(
                CapabilityFilter::new().require_tag("zone:eu"),
            ))
            .with_subscribe_filter(gpu_only)
            .with_publish_filter(CapabilityFilter::new().require_tag("scheduler")),
    )
    .expect("valid");
    let who = ident(2);
    let eu = CapabilitySet::new().with_tag("zone:eu");
    let eu_gpu = CapabilitySet::new().with_tag("zone:eu").with_tag("gpu");
    let us_gpu = CapabilitySet::new().with_tag("zone:us").with_tag("gpu");
    let with = |caps| SubscribeRequest {
        capabilities: caps,
        ..request(&who, &[])
    };
    assert_eq!(
        rejection(ch.subscribe(NOW, &with(None), &mut auth)).0,
        RejectReason::UnknownChannel
    );
    assert_eq!(
        rejection(ch.subscribe(NOW, &with(Some(&us_gpu)), &mut auth)).0,
        RejectReason::UnknownChannel
    );
    for _ in 0..50 {
        assert_eq!(
            rejection(ch.subscribe(NOW, &with(Some(&eu)), &mut auth)).0,
            RejectReason::Unauthorized
        );
    }
    assert!(
        auth.allows(NOW, who.node_id()),
        "matchmaking is not charged"
    );
    ch.subscribe(NOW, &with(Some(&eu_gpu)), &mut auth)
        .expect("fits");
    // Hidden now (it moved zone): the standing subscription ends.
    assert_eq!(
        rejection(ch.subscribe(NOW, &with(Some(&us_gpu)), &mut auth)).0,
        RejectReason::UnknownChannel
    );
    assert!(ch.is_empty());
    assert!(ch.may_publish(&CapabilitySet::new().with_tag("scheduler")));
    assert!(!ch.may_publish(&CapabilitySet::new()));
}

#[test]
fn issuer_revocation_drops_descendants_and_later_tokens_work() {
    let publisher = ident(1);
    let team = ident(2);
    let member = ident(3);
    let direct = ident(4);
    let ch_name = name("revocable");
    let mut reg =
        ChannelRegistry::new(publisher.entity_id(), RegistryConfig::default()).expect("valid");
    reg.register(ChannelConfig::new(ch_name.clone()).with_require_token(true))
        .expect("registers");
    let delegating = TokenScope::SUBSCRIBE.with(TokenScope::DELEGATE);
    let root = issue(&publisher, &team, &ch_name, delegating, 3600, 1);
    let child = root
        .delegate(
            &team,
            member.entity_id(),
            TokenScope::SUBSCRIBE,
            NOW,
            600,
            1,
        )
        .expect("delegates");
    let own = [issue(
        &publisher,
        &direct,
        &ch_name,
        TokenScope::SUBSCRIBE,
        600,
        0,
    )];
    reg.subscribe(NOW, &ch_name, &request(&member, &[root, child]))
        .expect("chain");
    reg.subscribe(NOW, &ch_name, &request(&direct, &own))
        .expect("direct");
    let generation = reg.auth().generation();

    // Revoking the team (the middle of member's chain) drops member only.
    let evicted = reg.revoke_issuer(NOW + 10, team.entity_id()).expect("room");
    assert_eq!(
        evicted,
        vec![Evicted {
            channel: ch_name.clone(),
            node: member.node_id(),
            nonce: NONCE,
            reason: EvictReason::IssuerRevoked,
        }]
    );
    assert!(reg.auth().generation() > generation);
    assert_eq!(
        reg.subscribe(NOW + 10, &ch_name, &request(&member, &[root, child]))
            .expect_err("revoked")
            .detail,
        Some(TokenRejection::Revoked)
    );
    // Revoking the publisher's own key drops every chain it rooted.
    let evicted = reg
        .revoke_issuer(NOW + 20, publisher.entity_id())
        .expect("room");
    assert_eq!(evicted.len(), 1);
    assert_eq!(evicted[0].node, direct.node_id());
    assert!(reg.channel(&ch_name).expect("registered").is_empty());
    // Tokens minted after the revocation are accepted again.
    let fresh = [PermissionToken::try_issue(
        &publisher,
        direct.entity_id(),
        TokenScope::SUBSCRIBE,
        ch_name.hash(),
        NOW + 21,
        600,
        0,
        9,
    )
    .expect("issues")];
    reg.subscribe(NOW + 21, &ch_name, &request(&direct, &fresh))
        .expect("re-issued token works");

    // The revocation table is bounded; expired cut-offs are pruned to make room.
    let mut auth = Authenticator::new(AuthConfig {
        max_revoked_issuers: 1,
        ..AuthConfig::default()
    })
    .expect("valid");
    auth.revoke_issuer(NOW, ident(20).entity_id())
        .expect("room");
    auth.revoke_issuer(NOW, ident(20).entity_id())
        .expect("same issuer");
    assert_eq!(
        auth.revoke_issuer(NOW, ident(21).entity_id()),
        Err(RevocationsFull)
    );
    auth.revoke_issuer(NOW + 366 * 86_400, ident(21).entity_id())
        .expect("the old cut-off was pruned");
}

#[test]
fn registry_names_hashes_and_bounds() {
    let publisher = ident(1);
    let mut reg = ChannelRegistry::new(
        publisher.entity_id(),
        RegistryConfig {
            max_channels: 3,
            ..RegistryConfig::default()
        },
    )
    .expect("valid");
    reg.register(ChannelConfig::new(name("FOO.bar")))
        .expect("registers");
    assert_eq!(
        reg.register(ChannelConfig::new(name("foo.BAR"))),
        Err(RegisterError::AlreadyRegistered(name("foo.bar")))
    );
    // `FOO.bar` and `foo.bar` are one channel.
    let alice = ident(2);
    reg.subscribe(NOW, &name("foo.bar"), &request(&alice, &[]))
        .expect("same channel");
    assert_eq!(reg.channel(&name("Foo.Bar")).expect("found").len(), 1);
    assert_eq!(
        reg.channel_by_hash(name("foo.bar").hash())
            .expect("by hash")
            .name(),
        &name("foo.bar")
    );
    assert_eq!(
        reg.subscribe(NOW, &name("nope"), &request(&alice, &[]))
            .expect_err("unknown")
            .reason,
        RejectReason::UnknownChannel
    );
    assert!(!reg.unsubscribe(&name("nope"), alice.node_id()));

    // Two names with one 32-bit hash cannot both be registered (birthday search).
    let mut seen: HashMap<u32, ChannelName> = HashMap::new();
    let (first, second) = (0u64..)
        .find_map(|i| {
            let n = name(&format!("c{i}"));
            seen.insert(n.hash().0, n.clone()).map(|prev| (prev, n))
        })
        .expect("a collision exists");
    reg.register(ChannelConfig::new(first.clone()))
        .expect("registers");
    assert_eq!(
        reg.register(ChannelConfig::new(second.clone())),
        Err(RegisterError::HashCollision {
            name: second,
            existing: first.clone()
        })
    );
    reg.register(ChannelConfig::new(name("third")))
        .expect("registers");
    assert_eq!(
        reg.register(ChannelConfig::new(name("fourth"))),
        Err(RegisterError::TooManyChannels(3))
    );
    assert!(matches!(
        reg.register(ChannelConfig::new(name("x")).with_max_subscribers(0)),
        Err(RegisterError::TooManyChannels(3))
    ));
    assert_eq!(reg.unregister(&first), Some(vec![]));
    assert!(matches!(
        reg.register(ChannelConfig::new(name("x")).with_max_subscribers(0)),
        Err(RegisterError::Invalid(ChannelConfigError::ZeroSubscribers))
    ));
    assert_eq!(reg.drop_peer(alice.node_id()), vec![name("foo.bar")]);
    assert_eq!(reg.unregister(&name("foo.bar")), Some(vec![]));
    assert_eq!(reg.unregister(&name("foo.bar")), None);
}

/// The whole exchange through encoded envelopes: subscriber bookkeeping on one side, the
/// registry on the other, then a sweep and an event check.
#[test]
fn subscribe_ack_round_trip_through_the_wire() {
    let publisher = ident(1);
    let subscriber = ident(2);
    let ch_name = name("sensors/temp");
    let mut reg =
        ChannelRegistry::new(publisher.entity_id(), RegistryConfig::default()).expect("valid");
    reg.register(
        ChannelConfig::new(ch_name.clone())
            .with_require_token(true)
            .with_priority(5),
    )
    .expect("registers");
    let mut subs = Subscriptions::new(SubscriptionsConfig::default());

    let wire = |message: MembershipMessage| -> MembershipMessage {
        let bytes = message.to_envelope(None).expect("encodes");
        let env = Envelope::decode(&bytes).expect("envelope");
        MembershipMessage::from_envelope(&env).expect("decodes")
    };
    let peer = Peer {
        node: subscriber.node_id(),
        entity: subscriber.entity_id(),
        capabilities: None,
    };

    // Without a token: refused, and the subscription stays inactive.
    let ask = subs
        .subscribe(
            publisher.node_id(),
            name("SENSORS/temp"),
            TokenChain::default(),
            SubscribeOptions::default(),
            11,
        )
        .expect("room");
    let ack = reg
        .handle_message(NOW, peer, &wire(MembershipMessage::Subscribe(ask)))
        .expect("answers");
    assert_eq!(ack.result, AckResult::Rejected(RejectReason::Unauthorized));
    let answered = subs.handle_ack(publisher.node_id(), &ack).expect("matches");
    assert_eq!(answered.nonce, 11);
    assert!(subs.get(publisher.node_id(), &ch_name).is_none());

    // With a token.
    let token = issue(
        &publisher,
        &subscriber,
        &ch_name,
        TokenScope::SUBSCRIBE,
        300,
        0,
    );
    let ask = subs
        .subscribe(
            publisher.node_id(),
            ch_name.clone(),
            TokenChain::single(token),
            SubscribeOptions::default(),
            12,
        )
        .expect("room");
    let ack = match wire(MembershipMessage::Ack(
        reg.handle_message(NOW, peer, &wire(MembershipMessage::Subscribe(ask)))
            .expect("answers"),
    )) {
        MembershipMessage::Ack(ack) => ack,
        other => panic!("unexpected {other:?}"),
    };
    // Acks only count from the publisher asked, for the channel asked.
    assert_eq!(
        subs.handle_ack(subscriber.node_id(), &ack),
        Err(AckError::WrongPeer {
            from: subscriber.node_id(),
            publisher: publisher.node_id()
        })
    );
    let wrong_channel = Ack {
        channel: name("other"),
        ..ack.clone()
    };
    assert_eq!(
        subs.handle_ack(publisher.node_id(), &wrong_channel),
        Err(AckError::WrongChannel)
    );
    subs.handle_ack(publisher.node_id(), &ack).expect("matches");
    assert_eq!(
        subs.handle_ack(publisher.node_id(), &ack),
        Err(AckError::Unexpected),
        "an ack is taken once"
    );
    assert_eq!(subs.counters().bad_acks, 3);
    let active = subs.get(publisher.node_id(), &ch_name).expect("active");
    assert_eq!(active.granted.priority, 5);
    assert_eq!(active.granted.token_expires_at, Some(NOW + 300));
    assert!(
        subs.accept_event(publisher.node_id(), ch_name.hash())
            .is_some()
    );
    assert!(
        subs.accept_event(ident(9).node_id(), ch_name.hash())
            .is_none()
    );
    assert_eq!(subs.counters().unsolicited_events, 1);
    assert_eq!(
        subs.renewals_due(NOW + 200, 120),
        vec![(publisher.node_id(), ch_name.clone())]
    );
    assert!(subs.renewals_due(NOW, 120).is_empty());

    // The publisher's sweep drops the subscriber once the token is past skew.
    assert_eq!(reg.poll_timeout(), Some(NOW + 360));
    let evicted = reg.sweep(NOW + 360);
    assert_eq!(evicted.len(), 1);
    assert_eq!(evicted[0].reason, EvictReason::TokenExpired);
    assert!(reg.channel(&ch_name).expect("registered").is_empty());

    // Unsubscribe is idempotent on both sides.
    for nonce in [13, 14] {
        let ask = subs
            .unsubscribe(publisher.node_id(), ch_name.clone(), nonce)
            .expect("room");
        let ack = reg
            .handle_message(NOW, peer, &wire(MembershipMessage::Unsubscribe(ask)))
            .expect("answers");
        assert_eq!(ack.result, AckResult::Unsubscribed);
        subs.handle_ack(publisher.node_id(), &ack).expect("matches");
    }
    assert!(subs.get(publisher.node_id(), &ch_name).is_none());
    assert_eq!(subs.pending(), 0);
    // A publisher never answers an Ack.
    assert!(
        reg.handle_message(NOW, peer, &MembershipMessage::Ack(ack))
            .is_none()
    );
}

#[test]
fn subscriber_side_bounds() {
    let publisher = NodeId(1);
    let mut subs = Subscriptions::new(SubscriptionsConfig {
        max_subscriptions: 2,
        max_pending: 3,
    });
    let opts = SubscribeOptions::default();
    subs.subscribe(publisher, name("a"), TokenChain::default(), opts, 1)
        .expect("room");
    assert_eq!(
        subs.subscribe(publisher, name("b"), TokenChain::default(), opts, 1),
        Err(SubscriptionError::NonceInUse)
    );
    subs.subscribe(publisher, name("b"), TokenChain::default(), opts, 2)
        .expect("room");
    assert_eq!(
        subs.subscribe(publisher, name("c"), TokenChain::default(), opts, 3),
        Err(SubscriptionError::TooManySubscriptions)
    );
    subs.unsubscribe(publisher, name("z"), 4).expect("room");
    assert_eq!(
        subs.unsubscribe(publisher, name("y"), 5),
        Err(SubscriptionError::TooManyPending)
    );
    assert!(subs.cancel(4).is_some());
    assert!(subs.cancel(4).is_none());
    let granted = netrun_messages::Granted {
        reliable: true,
        priority: 0,
        token_expires_at: None,
    };
    let ack = Ack {
        nonce: 1,
        channel: name("a"),
        result: AckResult::Subscribed(granted),
    };
    subs.handle_ack(publisher, &ack).expect("matches");
    // A refused renewal keeps the standing subscription; UnknownChannel ends it.
    subs.subscribe(publisher, name("a"), TokenChain::default(), opts, 6)
        .expect("renewal");
    let refused = Ack {
        nonce: 6,
        channel: name("a"),
        result: AckResult::Rejected(RejectReason::RateLimited),
    };
    subs.handle_ack(publisher, &refused).expect("matches");
    assert!(subs.get(publisher, &name("a")).is_some());
    subs.subscribe(publisher, name("a"), TokenChain::default(), opts, 7)
        .expect("renewal");
    let gone = Ack {
        nonce: 7,
        channel: name("a"),
        result: AckResult::Rejected(RejectReason::UnknownChannel),
    };
    subs.handle_ack(publisher, &gone).expect("matches");
    assert!(subs.get(publisher, &name("a")).is_none());
    assert_eq!(subs.remove_publisher(publisher), Vec::<ChannelName>::new());
    assert_eq!(subs.pending(), 0);
}
