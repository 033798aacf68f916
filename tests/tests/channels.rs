//! Channels between real nodes on 127.0.0.1: token-gated subscribes, the expiry sweep,
//! issuer revocation, eviction notices and the reasons subscriptions end with, canonical
//! names, reliable fan-out under injected loss, idempotent unsubscribe, roster bounds,
//! capability visibility and the control socket's bound on subscriptions under concurrent
//! requests.

use std::time::Duration;

use bytes::Bytes;
use netrun::control;
use netrun::{
    AuthConfig, CapabilityFilter, CapabilitySet, ChannelConfig, ChannelName, ChannelsConfig,
    Identity, Node, PermissionToken, RegisterError, RegistryConfig, SubscribeConfig,
    SubscribeError, TokenChain, TokenScope, Visibility,
};
use netrun_actors::channel::{EVICTION_COPIES, SubscriptionEnd};
use netrun_runtime::channel::EvictReason;
use netrun_tests::{
    WAIT, builder, connect, eventually, eventually_async, quick_announcements, unix_now,
};
use tokio::time::timeout;

fn name(text: &str) -> ChannelName {
    ChannelName::new(text).expect("valid name")
}

/// Channel settings for tests: no clock skew (so a token is swept the second it expires),
/// sweeps at least every 200 ms, a generous publish timeout (reliable means reliable here).
fn channel_config() -> ChannelsConfig {
    ChannelsConfig {
        registry: RegistryConfig {
            auth: AuthConfig {
                clock_skew_secs: 0,
                ..AuthConfig::default()
            },
            ..RegistryConfig::default()
        },
        publish_timeout: Duration::from_secs(30),
        sweep_interval: Duration::from_millis(200),
        ..ChannelsConfig::default()
    }
}

async fn start_with(identity: Identity, capabilities: CapabilitySet) -> Node {
    netrun_tests::start(
        builder()
            .identity(identity)
            .capabilities(capabilities)
            .capability_config(quick_announcements())
            .channel_config(channel_config()),
    )
    .await
}

async fn start() -> Node {
    start_with(Identity::generate(), CapabilitySet::new()).await
}

/// Subscribe settings carrying a token that `issuer` grants `subject` for `channel`, valid
/// for `ttl` seconds from now.
fn with_token(
    issuer: &Identity,
    subject: &Node,
    channel: &ChannelName,
    ttl: u64,
) -> SubscribeConfig {
    let token = PermissionToken::try_issue(
        issuer,
        subject.public_key(),
        TokenScope::SUBSCRIBE,
        channel.hash(),
        unix_now(),
        ttl,
        0,
        rand::random(),
    )
    .expect("issues");
    SubscribeConfig::new().with_tokens(TokenChain::single(token))
}

/// A publisher (and the identity it signs tokens with) that requires a token to subscribe
/// to `channel`, and a subscriber with a session to it.
async fn token_gated(channel: &ChannelName) -> (Identity, Node, Node) {
    let publisher_id = Identity::generate();
    let publisher = start_with(publisher_id.clone(), CapabilitySet::new()).await;
    let subscriber = start().await;
    connect(&subscriber, &publisher).await;
    publisher
        .register_channel(ChannelConfig::new(channel.clone()).with_require_token(true))
        .await
        .expect("registers");
    (publisher_id, publisher, subscriber)
}

async fn recv(sub: &mut netrun::ChannelSubscription) -> netrun::ChannelEvent {
    timeout(WAIT, sub.recv())
        .await
        .expect("event in time")
        .expect("subscription open")
}

/// Nothing arrives for `quiet`.
async fn silent(sub: &mut netrun::ChannelSubscription, quiet: Duration) {
    if let Ok(Some(event)) = timeout(quiet, sub.recv()).await {
        panic!("unexpected event seq {}", event.seq);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_gated_channel_needs_a_valid_token() {
    let channel = name("alerts.high");
    let (publisher_id, publisher, subscriber) = token_gated(&channel).await;
    let p = publisher.node_id();

    // No token: Unauthorized.
    let refused = subscriber
        .subscribe_channel(p, &channel, SubscribeConfig::new())
        .await;
    assert_eq!(refused.err(), Some(SubscribeError::Unauthorized));
    // A token from a key that is not a root: Unauthorized.
    let stranger = Identity::generate();
    let refused = subscriber
        .subscribe_channel(
            p,
            &channel,
            with_token(&stranger, &subscriber, &channel, 60),
        )
        .await;
    assert_eq!(refused.err(), Some(SubscribeError::Unauthorized));
    // A token for another subscriber: Unauthorized.
    let refused = subscriber
        .subscribe_channel(
            p,
            &channel,
            with_token(&publisher_id, &publisher, &channel, 60),
        )
        .await;
    assert_eq!(refused.err(), Some(SubscribeError::Unauthorized));

    // The publisher's own grant for this subscriber: subscribed, and events flow.
    let mut sub = subscriber
        .subscribe_channel(
            p,
            &channel,
            with_token(&publisher_id, &subscriber, &channel, 60),
        )
        .await
        .expect("subscribes with a token");
    assert!(sub.token_expires_at().is_some());
    let report = publisher
        .publish(&channel, &b"fire"[..])
        .await
        .expect("publishes");
    assert_eq!(
        (report.attempted, report.delivered, report.dropped),
        (1, 1, 0)
    );
    let event = recv(&mut sub).await;
    assert_eq!(&event.payload[..], b"fire");
    assert_eq!(event.publisher, p);
    assert_eq!(event.channel, channel);
    let status = publisher.channel_status();
    assert_eq!(status.auth.denied, 3);
    assert_eq!(status.auth.accepted, 1);

    // Revoking the issuer drops the subscriber at once.
    assert_eq!(
        publisher
            .revoke_token_issuer(publisher_id.entity_id())
            .expect("room"),
        1
    );
    let report = publisher
        .publish(&channel, &b"after"[..])
        .await
        .expect("publishes");
    assert_eq!(report.attempted, 0);
    silent(&mut sub, Duration::from_millis(300)).await;
}

/// The subscription's end: `recv` returns `None` within `within` (after any queued
/// events), and the reason is set by then.
async fn ended(sub: &mut netrun::ChannelSubscription, within: Duration) -> SubscriptionEnd {
    timeout(within, async { while sub.recv().await.is_some() {} })
        .await
        .expect("the subscription ends in time");
    sub.end_reason()
        .expect("an ended subscription has a reason")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_ends_the_subscription_and_says_so() {
    let channel = name("metrics.evict");
    let (publisher_id, publisher, subscriber) = token_gated(&channel).await;
    let p = publisher.node_id();
    let mut sub = subscriber
        .subscribe_channel(
            p,
            &channel,
            with_token(&publisher_id, &subscriber, &channel, 2),
        )
        .await
        .expect("subscribes");
    assert_eq!(sub.end_reason(), None, "open");
    publisher
        .publish(&channel, &b"before"[..])
        .await
        .expect("publishes");
    assert_eq!(&recv(&mut sub).await.payload[..], b"before");

    // Two seconds of token, swept at expiry (no skew), told at once: a few seconds in all,
    // with room for a loaded machine.
    let why = ended(&mut sub, Duration::from_secs(8)).await;
    assert_eq!(why, SubscriptionEnd::Evicted(EvictReason::TokenExpired));
    assert_eq!(why.to_string(), "evicted: token expired");
    assert!(subscriber.subscriptions().await.is_empty());
    let channels = publisher.channels();
    assert!(channels[0].subscribers.is_empty(), "swept from the roster");
    assert_eq!(channels[0].counters.evicted_expired, 1);
    let report = publisher
        .publish(&channel, &b"after"[..])
        .await
        .expect("publishes");
    assert_eq!(report.attempted, 0, "nobody left to deliver to");
    assert_eq!(publisher.channel_status().evictions_sent, 1);
    assert_eq!(subscriber.channel_status().evictions_received, 1);
    // The repeated copies find no subscription and are counted.
    eventually("the repeated notices to be ignored", || {
        subscriber.channel_status().evictions_ignored == u64::from(EVICTION_COPIES) - 1
    })
    .await;

    // Subscribing again with a fresh token works, and the late copies did not end it.
    let mut again = subscriber
        .subscribe_channel(
            p,
            &channel,
            with_token(&publisher_id, &subscriber, &channel, 60),
        )
        .await
        .expect("subscribes again");
    publisher
        .publish(&channel, &b"again"[..])
        .await
        .expect("publishes");
    assert_eq!(&recv(&mut again).await.payload[..], b"again");
    assert_eq!(again.end_reason(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_issuer_ends_the_subscription_and_says_so() {
    let channel = name("alerts.revoked");
    let (publisher_id, publisher, subscriber) = token_gated(&channel).await;
    let mut sub = subscriber
        .subscribe_channel(
            publisher.node_id(),
            &channel,
            with_token(&publisher_id, &subscriber, &channel, 600),
        )
        .await
        .expect("subscribes");
    assert_eq!(
        publisher
            .revoke_token_issuer(publisher_id.entity_id())
            .expect("room"),
        1
    );
    let why = ended(&mut sub, Duration::from_secs(5)).await;
    assert_eq!(why, SubscriptionEnd::Evicted(EvictReason::IssuerRevoked));
    assert_eq!(subscriber.channel_status().evictions_received, 1);
}

/// A subscriber holds the same channel name on two publishers. Unregistering it on one
/// ends that subscription only: the other publisher's notice names a subscription the
/// subscriber holds with someone else, which must not end it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notice_ends_only_the_subscription_to_its_sender() {
    let channel = name("shared.name");
    let first = start().await;
    let second = start().await;
    let subscriber = start().await;
    connect(&subscriber, &first).await;
    connect(&subscriber, &second).await;
    let mut subs = Vec::new();
    for publisher in [&first, &second] {
        publisher
            .register_channel(ChannelConfig::new(channel.clone()))
            .await
            .expect("registers");
        subs.push(
            subscriber
                .subscribe_channel(publisher.node_id(), &channel, SubscribeConfig::new())
                .await
                .expect("subscribes"),
        );
    }
    let [from_first, from_second] = &mut subs[..] else {
        unreachable!("two subscriptions")
    };

    assert!(second.unregister_channel(&channel).await);
    let why = ended(from_second, Duration::from_secs(5)).await;
    assert_eq!(why, SubscriptionEnd::Evicted(EvictReason::ChannelClosed));
    eventually("every copy of the notice to arrive", || {
        let status = subscriber.channel_status();
        status.evictions_received + status.evictions_ignored == u64::from(EVICTION_COPIES)
    })
    .await;
    assert_eq!(
        from_first.end_reason(),
        None,
        "the other subscription stands"
    );
    first
        .publish(&channel, &b"still here"[..])
        .await
        .expect("publishes");
    assert_eq!(&recv(from_first).await.payload[..], b"still here");

    // Subscriptions that end on this side say why too.
    subscriber
        .unsubscribe_channel(first.node_id(), &channel)
        .await
        .expect("leaves");
    assert_eq!(ended(from_first, WAIT).await, SubscriptionEnd::Unsubscribed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_differing_in_case_are_one_channel() {
    let publisher = start().await;
    let subscriber = start().await;
    connect(&subscriber, &publisher).await;
    publisher
        .register_channel(ChannelConfig::new(name("FOO.bar")))
        .await
        .expect("registers");
    let again = publisher
        .register_channel(ChannelConfig::new(name("foo.bar")))
        .await;
    assert!(matches!(
        again,
        Err(netrun::ChannelError::Register(
            RegisterError::AlreadyRegistered(_)
        ))
    ));
    let mut sub = subscriber
        .subscribe_channel(
            publisher.node_id(),
            &name("foo.BAR"),
            SubscribeConfig::new(),
        )
        .await
        .expect("subscribes");
    publisher
        .publish(&name("Foo.Bar"), &b"one channel"[..])
        .await
        .expect("publishes");
    let event = recv(&mut sub).await;
    assert_eq!(event.channel.as_str(), "foo.bar");
    assert_eq!(&event.payload[..], b"one channel");
    assert_eq!(publisher.channels().len(), 1);

    // Unregistered (under any case), the name is free again and unknown to subscribers.
    assert!(publisher.unregister_channel(&name("FOO.BAR")).await);
    assert!(!publisher.unregister_channel(&name("foo.bar")).await);
    assert!(matches!(
        publisher.publish(&name("foo.bar"), &b"x"[..]).await,
        Err(netrun::PublishError::UnknownChannel(_))
    ));
    let gone = subscriber
        .subscribe_channel(
            publisher.node_id(),
            &name("foo.bar"),
            SubscribeConfig::new(),
        )
        .await;
    assert_eq!(gone.err(), Some(SubscribeError::UnknownChannel));
    publisher
        .register_channel(ChannelConfig::new(name("foo.bar")))
        .await
        .expect("registers again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reliable_fan_out_to_two_subscribers_under_ten_percent_loss() {
    let publisher = start().await;
    let s1 = start().await;
    let s2 = start().await;
    connect(&s1, &publisher).await;
    connect(&s2, &publisher).await;
    let channel = name("ticks");
    publisher
        .register_channel(ChannelConfig::new(channel.clone()))
        .await
        .expect("registers");
    let p = publisher.node_id();
    let mut subs = Vec::new();
    for node in [&s1, &s2] {
        subs.push(
            node.subscribe_channel(p, &channel, SubscribeConfig::new())
                .await
                .expect("subscribes"),
        );
    }
    for (i, node) in [&publisher, &s1, &s2].into_iter().enumerate() {
        node.set_loss(0.10, 100 + i as u64);
    }

    const EVENTS: u64 = 3000;
    let readers: Vec<_> = subs
        .into_iter()
        .map(|mut sub| {
            tokio::spawn(async move {
                for expected in 0..EVENTS {
                    let event = timeout(Duration::from_secs(60), sub.recv())
                        .await
                        .expect("event in time")
                        .expect("open");
                    assert_eq!(event.seq, expected, "in order, no gaps");
                    assert_eq!(
                        &event.payload[..],
                        format!("event {expected:05}").as_bytes()
                    );
                }
                sub
            })
        })
        .collect();
    let mut total = netrun::PublishReport::default();
    for batch in 0..EVENTS / 50 {
        let events: Vec<Bytes> = (batch * 50..batch * 50 + 50)
            .map(|i| Bytes::from(format!("event {i:05}")))
            .collect();
        total += publisher
            .publish_many(&channel, events)
            .await
            .expect("publishes");
    }
    assert_eq!(total.attempted, 2 * EVENTS);
    assert_eq!(total.delivered, 2 * EVENTS);
    assert_eq!(total.dropped, 0);
    for reader in readers {
        let mut sub = timeout(Duration::from_secs(90), reader)
            .await
            .expect("reader done")
            .expect("reader ok");
        silent(&mut sub, Duration::from_millis(200)).await;
    }
    assert!(publisher.stats().dropped_injected > 0, "loss was injected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_is_idempotent_and_stops_delivery() {
    let publisher = start().await;
    let subscriber = start().await;
    connect(&subscriber, &publisher).await;
    let channel = name("news");
    publisher
        .register_channel(ChannelConfig::new(channel.clone()))
        .await
        .expect("registers");
    let p = publisher.node_id();
    // Leaving a channel one never joined is fine.
    subscriber
        .unsubscribe_channel(p, &channel)
        .await
        .expect("idempotent");
    let mut sub = subscriber
        .subscribe_channel(p, &channel, SubscribeConfig::new())
        .await
        .expect("subscribes");
    publisher
        .publish(&channel, &b"1"[..])
        .await
        .expect("publishes");
    assert_eq!(&recv(&mut sub).await.payload[..], b"1");
    subscriber
        .unsubscribe_channel(p, &channel)
        .await
        .expect("leaves");
    subscriber
        .unsubscribe_channel(p, &channel)
        .await
        .expect("leaves twice");
    assert!(timeout(WAIT, sub.recv()).await.expect("ends").is_none());
    let report = publisher
        .publish(&channel, &b"2"[..])
        .await
        .expect("publishes");
    assert_eq!(report.attempted, 0, "the publisher dropped the subscriber");
    assert!(subscriber.subscriptions().await.is_empty());

    // Dropping a receiver leaves too.
    let sub = subscriber
        .subscribe_channel(p, &channel, SubscribeConfig::new())
        .await
        .expect("subscribes again");
    drop(sub);
    eventually("the dropped receiver to leave", || {
        publisher.channels()[0].subscribers.is_empty()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roster_bound_unknown_channels_and_visibility() {
    let publisher = start().await;
    let s1 = start().await;
    let s2 = start_with(
        Identity::generate(),
        CapabilitySet::new().with_tag("role:gpu-worker"),
    )
    .await;
    connect(&s1, &publisher).await;
    connect(&s2, &publisher).await;
    let p = publisher.node_id();

    let small = name("small");
    publisher
        .register_channel(ChannelConfig::new(small.clone()).with_max_subscribers(1))
        .await
        .expect("registers");
    let _first = s1
        .subscribe_channel(p, &small, SubscribeConfig::new())
        .await
        .expect("first fits");
    let full = s2
        .subscribe_channel(p, &small, SubscribeConfig::new())
        .await;
    assert_eq!(full.err(), Some(SubscribeError::TooManySubscribers));
    // Renewing while on the roster does not count against the bound.
    let _renewed = s1
        .subscribe_channel(p, &small, SubscribeConfig::new())
        .await
        .expect("renewal fits");

    let missing = s1
        .subscribe_channel(p, &name("nope"), SubscribeConfig::new())
        .await;
    assert_eq!(missing.err(), Some(SubscribeError::UnknownChannel));

    // Visible only to nodes announcing the tag: s1 is told it does not exist.
    let hidden = name("gpu.jobs");
    publisher
        .register_channel(
            ChannelConfig::new(hidden.clone()).with_visibility(Visibility::Filter(
                CapabilityFilter::new().require_tag("role:gpu-worker"),
            )),
        )
        .await
        .expect("registers");
    eventually("the publisher to index s2", || {
        publisher.capability_of(s2.node_id()).is_some()
    })
    .await;
    let refused = s1
        .subscribe_channel(p, &hidden, SubscribeConfig::new())
        .await;
    assert_eq!(refused.err(), Some(SubscribeError::UnknownChannel));
    let mut sub = s2
        .subscribe_channel(p, &hidden, SubscribeConfig::new())
        .await
        .expect("visible to s2");
    publisher
        .publish(&hidden, &b"job"[..])
        .await
        .expect("publishes");
    assert_eq!(&recv(&mut sub).await.payload[..], b"job");

    // No session: NotConnected, without waiting for a timeout.
    let loner = start().await;
    let lonely = loner
        .subscribe_channel(p, &small, SubscribeConfig::new())
        .await;
    assert_eq!(lonely.err(), Some(SubscribeError::NotConnected));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn best_effort_subscribers_and_publisher_restart() {
    let publisher = start().await;
    let subscriber = start().await;
    connect(&subscriber, &publisher).await;
    let channel = name("video.frames");
    publisher
        .register_channel(ChannelConfig::new(channel.clone()).with_reliable(false))
        .await
        .expect("registers");
    let p = publisher.node_id();
    let mut sub = subscriber
        .subscribe_channel(p, &channel, SubscribeConfig::new())
        .await
        .expect("subscribes");
    assert!(!sub.granted().reliable);
    let report = publisher
        .publish(&channel, &b"frame"[..])
        .await
        .expect("publishes");
    assert_eq!(report.attempted, 1);
    assert_eq!(report.delivered + report.dropped, 1);
    assert_eq!(&recv(&mut sub).await.payload[..], b"frame");

    // A crashed channel actor restarts with its roster; the next publish opens a new
    // stream and the subscriber keeps receiving.
    let child = publisher
        .supervision()
        .root
        .child_supervisor("channels")
        .await
        .expect("channels subtree")
        .child_ref::<netrun_actors::channel::ChannelMsg>("channel/video.frames")
        .await
        .expect("channel child");
    let generation = child.generation().expect("running");
    child.cell().expect("running").kill();
    eventually("the channel actor to restart", || {
        child.generation().is_some_and(|g| g != generation)
    })
    .await;
    eventually_async(WAIT, "the channel to take publishes again", || async {
        let report = publisher.publish(&channel, &b"after restart"[..]).await;
        report
            .inspect(|report| assert_eq!(report.attempted, 1, "the roster survived the restart"))
            .is_ok()
    })
    .await;
    let event = recv(&mut sub).await;
    assert_eq!(&event.payload[..], b"after restart");
    assert_eq!(event.seq, 1, "sequence numbers continue");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_control_subscribes_never_exceed_the_bound() {
    // Requests in flight at once: fewer than the control socket's connection limit (32).
    const CONCURRENT: usize = 24;
    // Filled one by one first, so that the concurrent requests straddle the bound.
    let held = control::MAX_SUBSCRIPTIONS - CONCURRENT / 2;
    let publisher = start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let subscriber = netrun_tests::start(
        builder()
            .channel_config(channel_config())
            .control_socket(dir.path().join(control::CONTROL_SOCKET)),
    )
    .await;
    connect(&subscriber, &publisher).await;
    let names: Vec<ChannelName> = (0..held + CONCURRENT)
        .map(|i| name(&format!("bound.{i}")))
        .collect();
    for channel in &names {
        publisher
            .register_channel(ChannelConfig::new(channel.clone()))
            .await
            .expect("registers");
    }
    let publisher_id = publisher.node_id().to_string();
    let subscribe = |channel: &ChannelName| {
        let request = serde_json::json!({
            "op": "channel_subscribe",
            "publisher": publisher_id,
            "name": channel.as_str(),
        });
        let data_dir = dir.path().to_path_buf();
        async move { control::request_json(&data_dir, &request).await }
    };
    for channel in &names[..held] {
        subscribe(channel).await.expect("below the bound");
    }

    let mut requests = tokio::task::JoinSet::new();
    for channel in &names[held..] {
        requests.spawn(subscribe(channel));
    }
    let mut accepted = 0;
    while let Some(answer) = requests.join_next().await {
        match answer.expect("request task") {
            Ok(_) => accepted += 1,
            Err(control::ClientError::Refused(e)) => {
                assert_eq!(e, "too many control subscriptions");
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(held + accepted, control::MAX_SUBSCRIPTIONS);
    assert_eq!(
        subscriber.subscriptions().await.len(),
        control::MAX_SUBSCRIPTIONS,
        "a refused request subscribes to nothing"
    );
}
