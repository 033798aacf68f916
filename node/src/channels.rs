//! Channels on the [`Node`]: registering the channels this node publishes (one supervised
//! `channel/<name>` actor each, under the Channels subtree), publishing, subscribing to
//! other nodes' channels, token issuer revocation; and the control-socket operations
//! behind `netrun channel …` and `netrun caps`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use netrun_actors::channel::{
    ChannelActor, ChannelError, ChannelInfo, ChannelSubscription, ChannelsHandle, ChannelsStatus,
    PublishError, PublishReport, SubscribeConfig, SubscribeError, SubscriptionInfo,
};
use netrun_messages::{ChannelName, EntityId, NodeId};
use netrun_runtime::channel::{ChannelConfig, RegisterError, RevocationsFull};
use netrun_supervisor::ChildSpec;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::Instrument;

use crate::control::MAX_SUBSCRIPTIONS;
use crate::node::Node;

/// A control subscription nobody polled for this long is dropped (its client is gone).
const CONTROL_IDLE: Duration = Duration::from_secs(60);
/// Longest a control poll waits for an event.
const MAX_POLL_WAIT: Duration = Duration::from_secs(10);
/// Most events one control poll returns.
const MAX_POLL_EVENTS: usize = 256;

/// Events a local tap holds before further events to it are dropped (counted in the
/// publish report).
pub(crate) const LOCAL_TAP_QUEUE: usize = 1024;

/// The node's channel state, the control socket's subscriptions and the local taps.
#[derive(Debug)]
pub(crate) struct NodeChannels {
    pub(crate) handle: ChannelsHandle,
    control: Mutex<ControlSubscriptions>,
    /// Readers on this node of channels this node publishes (a daemon reading a channel
    /// of its own host): they get each published event without a session.
    taps: Mutex<HashMap<ChannelName, Vec<mpsc::Sender<Bytes>>>>,
}

/// The control socket's subscriptions and the slots claimed for subscribe requests still
/// waiting for their publisher; both count against [`MAX_SUBSCRIPTIONS`].
#[derive(Debug, Default)]
struct ControlSubscriptions {
    next: u64,
    subs: HashMap<u64, ControlSubscription>,
    claimed: usize,
}

#[derive(Debug)]
struct ControlSubscription {
    subscription: Arc<tokio::sync::Mutex<ChannelSubscription>>,
    last_poll: Instant,
}

impl NodeChannels {
    pub(crate) fn new(handle: ChannelsHandle) -> Self {
        Self {
            handle,
            control: Mutex::new(ControlSubscriptions::default()),
            taps: Mutex::new(HashMap::new()),
        }
    }

    /// A local reader of channel `name` (which this node must publish): every event
    /// published from now on, in order, until the receiver is dropped.
    pub(crate) fn tap(&self, name: &ChannelName) -> Result<mpsc::Receiver<Bytes>, SubscribeError> {
        if !self.handle.is_registered(name) {
            return Err(SubscribeError::UnknownChannel);
        }
        let (tx, rx) = mpsc::channel(LOCAL_TAP_QUEUE);
        lock(&self.taps).entry(name.clone()).or_default().push(tx);
        Ok(rx)
    }

    /// Ends the local readers of `name` (the channel is no longer published).
    fn close_taps(&self, name: &ChannelName) {
        lock(&self.taps).remove(name);
    }

    /// Hands `events` to the local readers of `name`; a full reader misses them (counted
    /// as dropped), a gone one is forgotten.
    fn feed_taps(&self, name: &ChannelName, events: &[Bytes]) -> PublishReport {
        let mut report = PublishReport::default();
        let mut taps = lock(&self.taps);
        let Some(readers) = taps.get_mut(name) else {
            return report;
        };
        readers.retain(|reader| !reader.is_closed());
        for reader in readers.iter() {
            for event in events {
                report.attempted += 1;
                match reader.try_send(event.clone()) {
                    Ok(()) => report.delivered += 1,
                    Err(_) => report.dropped += 1,
                }
            }
        }
        if readers.is_empty() {
            taps.remove(name);
        }
        report
    }

    fn control(&self) -> MutexGuard<'_, ControlSubscriptions> {
        lock(&self.control)
    }
}

/// A reader, on the publishing node, of one of its channels ([`Node::read_channel`]).
#[derive(Debug)]
pub struct ChannelReader {
    events: mpsc::Receiver<Bytes>,
}

impl ChannelReader {
    /// The next event's payload; `None` once the channel is unregistered.
    pub async fn recv(&mut self) -> Option<Bytes> {
        self.events.recv().await
    }
}

/// The supervisor child id of a channel's actor.
fn child_id(name: &ChannelName) -> String {
    format!("channel/{name}")
}

impl Node {
    /// Starts publishing a channel: a `channel/<name>` actor joins the Channels subtree.
    ///
    /// Refused: an invalid configuration, a name already registered, a name whose hash
    /// collides with a registered one's, or more than `max_channels` channels.
    pub async fn register_channel(&self, config: ChannelConfig) -> Result<(), ChannelError> {
        let handle = &self.channel_state().handle;
        let name = config.name.clone();
        let args = handle.prepare(config)?;
        let spec = ChildSpec::actor(child_id(&name), move || (ChannelActor, args.clone()));
        let added = match self.supervision().root.child_supervisor("channels").await {
            Ok(channels) => channels.add_child(spec).await,
            Err(e) => Err(e),
        };
        if let Err(e) = added {
            handle.release(&name);
            return Err(ChannelError::Spawn(e.to_string()));
        }
        Ok(())
    }

    /// Stops publishing `name`: its actor stops (closing every subscriber's stream) and the
    /// name is free again. Returns whether it was registered.
    pub async fn unregister_channel(&self, name: &ChannelName) -> bool {
        let handle = &self.channel_state().handle;
        if !handle.is_registered(name) {
            return false;
        }
        if let Ok(channels) = self.supervision().root.child_supervisor("channels").await {
            let _ = channels.remove_child(&child_id(name)).await;
        }
        self.channel_state().close_taps(name);
        handle.release(name)
    }

    /// Reads channel `name`, which this node publishes, on this node: every event
    /// published from now on, in order, without a session or a token. A reader more than
    /// 1,024 events behind misses the next ones (counted as dropped in the publish
    /// report); it ends when the channel is unregistered. `UnknownChannel` if this node
    /// does not publish `name`.
    pub fn read_channel(&self, name: &ChannelName) -> Result<ChannelReader, SubscribeError> {
        self.channel_state()
            .tap(name)
            .map(|events| ChannelReader { events })
    }

    /// Publishes one event on `name` to every current subscriber; see
    /// [`publish_many`](Self::publish_many).
    pub async fn publish(
        &self,
        name: &ChannelName,
        payload: impl Into<Bytes>,
    ) -> Result<PublishReport, PublishError> {
        self.publish_many(name, vec![payload.into()]).await
    }

    /// Publishes `events` on `name`, in order, to every current subscriber, over one
    /// stream per subscriber (reliable or best effort as granted).
    ///
    /// The report counts deliveries (events × subscribers): `delivered` were handed to a
    /// subscriber's stream, `dropped` were not (best effort: no credit; reliable: still no
    /// credit after the publish timeout, or no stream). Inside a traced span the frames
    /// carry its trace context.
    pub async fn publish_many(
        &self,
        name: &ChannelName,
        events: Vec<Bytes>,
    ) -> Result<PublishReport, PublishError> {
        let state = self.channel_state();
        let local = state.feed_taps(name, &events);
        let handle = &state.handle;
        if tracing::Span::current().is_disabled() {
            return handle.publish(name, events, None).await.map(|mut report| {
                report += local;
                report
            });
        }
        let span = tracing::info_span!(
            "netrun.channel.publish",
            otel.kind = "producer",
            node = %self.node_id(),
            channel = %name,
            events = events.len(),
        );
        let trace = crate::telemetry::outbound_context(&span);
        let mut report = handle.publish(name, events, trace).instrument(span).await?;
        report += local;
        Ok(report)
    }

    /// Subscribes to channel `name` on `publisher` (which must have a session with this
    /// node) and waits for its answer; refusals are typed ([`SubscribeError::Unauthorized`],
    /// `UnknownChannel`, `RateLimited`, `TooManySubscribers`). Subscribing again renews
    /// (for example with a fresh token); the previous receiver then ends.
    pub async fn subscribe_channel(
        &self,
        publisher: NodeId,
        name: &ChannelName,
        config: SubscribeConfig,
    ) -> Result<ChannelSubscription, SubscribeError> {
        self.channel_state()
            .handle
            .subscribe(publisher, name.clone(), config)
            .await
    }

    /// Leaves channel `name` on `publisher`. Events stop at once; succeeds whether or not
    /// this node was subscribed (idempotent). `Timeout` means the publisher did not confirm
    /// (locally the subscription has ended anyway).
    pub async fn unsubscribe_channel(
        &self,
        publisher: NodeId,
        name: &ChannelName,
    ) -> Result<(), SubscribeError> {
        self.channel_state()
            .handle
            .unsubscribe(publisher, name.clone())
            .await
    }

    /// Revokes every token `issuer` has signed so far, on every channel this node
    /// publishes: subscribers whose chain runs through one are dropped at once, and such
    /// tokens are refused from now on (tokens the issuer signs later are accepted).
    /// Returns how many subscriptions ended.
    pub fn revoke_token_issuer(&self, issuer: EntityId) -> Result<usize, RevocationsFull> {
        self.channel_state().handle.revoke_issuer(issuer)
    }

    /// The channels this node publishes, with their rosters and counters.
    pub fn channels(&self) -> Vec<ChannelInfo> {
        self.channel_state().handle.channels()
    }

    /// This node's subscriptions.
    pub async fn subscriptions(&self) -> Vec<SubscriptionInfo> {
        self.channel_state().handle.subscriptions().await
    }

    /// Node-wide channel counters.
    pub fn channel_status(&self) -> ChannelsStatus {
        self.channel_state().handle.status()
    }
}

/// Answers a channel or capability control operation, or `None` if `op` is not one.
pub(crate) async fn control(node: &Node, op: &str, request: &Value) -> Option<Value> {
    let result = match op {
        "caps" => caps(node, request),
        "channels" => Ok(channels_value(node).await),
        "channel_publish" => publish(node, request).await,
        "channel_subscribe" => subscribe(node, request).await,
        "channel_poll" => poll(node, request).await,
        "channel_unsubscribe" => unsubscribe(node, request).await,
        _ => return None,
    };
    Some(match result {
        Ok(value) => json!({"ok": true, "result": value}),
        Err(error) => json!({"ok": false, "error": error}),
    })
}

/// The `capabilities` part of `status`.
pub(crate) fn capability_status_value(node: &Node) -> Value {
    let s = node.capability_status();
    let r = s.index.rejected;
    json!({
        "nodes": s.nodes,
        "version": s.version,
        "announced": s.announced,
        "sent": s.sent,
        "forwarded": s.forwarded,
        "synced": s.synced,
        "received": s.received,
        "send_errors": s.send_errors,
        "accepted": s.index.accepted,
        "replaced": s.index.replaced,
        "duplicates": s.index.duplicates,
        "stale": s.index.stale,
        "expired": s.index.expired,
        "rejected": {
            "oversize": r.oversize,
            "malformed": r.malformed,
            "unknown_version": r.unknown_version,
            "node_id_mismatch": r.node_id_mismatch,
            "bad_signature": r.bad_signature,
            "too_many_hops": r.too_many_hops,
            "expired": r.expired,
            "from_future": r.from_future,
            "rebind_refused": r.rebind_refused,
            "full": r.full,
        },
    })
}

/// The `channels` part of `status`.
pub(crate) fn channel_status_value(node: &Node) -> Value {
    let s = node.channel_status();
    json!({
        "channels": s.channels,
        "published": s.published,
        "attempted": s.report.attempted,
        "delivered": s.report.delivered,
        "dropped": s.report.dropped,
        "requests_sent": s.requests_sent,
        "acks": s.acks,
        "bad_acks": s.bad_acks,
        "malformed": s.malformed,
        "timeouts": s.timeouts,
        "events_received": s.events_received,
        "streams_accepted": s.streams_accepted,
        "streams_refused": s.streams_refused,
        "bad_streams": s.bad_streams,
        "evictions_sent": s.evictions_sent,
        "evictions_received": s.evictions_received,
        "evictions_ignored": s.evictions_ignored,
        "auth": {
            "accepted": s.auth.accepted,
            "denied": s.auth.denied,
            "rate_limited": s.auth.rate_limited,
            "cache_hits": s.auth.cache_hits,
            "signatures_verified": s.auth.signatures_verified,
        },
    })
}

fn caps(node: &Node, request: &Value) -> Result<Value, String> {
    let text = request.get("filter").and_then(Value::as_str).unwrap_or("");
    let filter = crate::capabilities::parse_filter(text).map_err(|e| e.to_string())?;
    let handle = node.capability_handle();
    let list: Vec<Value> = handle.with_index(|index| {
        index
            .find(&filter)
            .into_iter()
            .filter_map(|n| index.get(n))
            .map(|entry| {
                let a = &entry.announcement;
                let c = &a.capabilities;
                let h = &c.hardware;
                json!({
                    "node_id": a.node_id.to_string(),
                    "public_key": a.entity_id.to_hex(),
                    "local": a.node_id == node.node_id(),
                    "version": a.version,
                    "tags": c.tags,
                    "metadata": c.metadata,
                    "hardware": {
                        "cpu_cores": h.cpu_cores,
                        "cpu_threads": h.cpu_threads,
                        "memory_gb": h.memory_gb,
                        "gpu": h.gpu.as_ref().map(|g| json!({
                            "vendor": crate::capabilities::vendor_name(g.vendor),
                            "model": g.model,
                            "vram_gb": g.vram_gb,
                        })),
                    },
                    "received_at": entry.received_at,
                    "expires_at": entry.expires_at,
                    "via": entry.via.map(|v| v.to_string()),
                    "hops": a.hop_count,
                })
            })
            .collect()
    });
    Ok(Value::Array(list))
}

async fn channels_value(node: &Node) -> Value {
    let published: Vec<Value> = node
        .channels()
        .into_iter()
        .map(|c| {
            json!({
                "name": c.name.as_str(),
                "hash": format!("{:08x}", c.hash.0),
                "reliable": c.reliable,
                "require_token": c.require_token,
                "priority": c.priority,
                "max_subscribers": c.max_subscribers,
                "running": c.running,
                "subscribers": c.subscribers.iter().map(|(n, exp)| json!({
                    "node_id": n.to_string(),
                    "token_expires_at": exp,
                })).collect::<Vec<_>>(),
                "published": c.published,
                "attempted": c.report.attempted,
                "delivered": c.report.delivered,
                "dropped": c.report.dropped,
                "rejected": {
                    "unknown": c.counters.rejected_unknown,
                    "unauthorized": c.counters.rejected_unauthorized,
                    "rate_limited": c.counters.rejected_rate_limited,
                    "full": c.counters.rejected_full,
                },
                "evicted_expired": c.counters.evicted_expired,
                "evicted_revoked": c.counters.evicted_revoked,
            })
        })
        .collect();
    let subscriptions: Vec<Value> = node
        .subscriptions()
        .await
        .into_iter()
        .map(|s| {
            json!({
                "publisher": s.publisher.to_string(),
                "name": s.channel.as_str(),
                "active": s.granted.is_some(),
                "reliable": s.granted.map(|g| g.reliable),
                "token_expires_at": s.granted.and_then(|g| g.token_expires_at),
                "streams": s.streams,
            })
        })
        .collect();
    json!({"published": published, "subscriptions": subscriptions})
}

fn name_of(request: &Value) -> Result<ChannelName, String> {
    let text = request
        .get("name")
        .and_then(Value::as_str)
        .ok_or("missing \"name\"")?;
    ChannelName::new(text).map_err(|e| format!("channel name: {e}"))
}

async fn publish(node: &Node, request: &Value) -> Result<Value, String> {
    let name = name_of(request)?;
    let register = request
        .get("register")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if register && !node.channel_state().handle.is_registered(&name) {
        match node
            .register_channel(ChannelConfig::new(name.clone()))
            .await
        {
            // Another request may have registered it in between.
            Ok(()) | Err(ChannelError::Register(RegisterError::AlreadyRegistered(_))) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    let data = match (
        request.get("data").and_then(Value::as_str),
        request.get("data_hex").and_then(Value::as_str),
    ) {
        (Some(text), None) => Bytes::copy_from_slice(text.as_bytes()),
        (None, Some(h)) => Bytes::from(hex::decode(h).map_err(|e| format!("data_hex: {e}"))?),
        _ => return Err("give exactly one of \"data\" and \"data_hex\"".into()),
    };
    let report = node.publish(&name, data).await.map_err(|e| e.to_string())?;
    Ok(json!({
        "attempted": report.attempted,
        "delivered": report.delivered,
        "dropped": report.dropped,
    }))
}

async fn subscribe(node: &Node, request: &Value) -> Result<Value, String> {
    let name = name_of(request)?;
    let publisher = request
        .get("publisher")
        .and_then(Value::as_str)
        .and_then(NodeId::parse)
        .ok_or("missing or invalid \"publisher\" (16 hex digits)")?;
    let state = node.channel_state();
    reap(state);
    // Claimed before the subscribe goes out: a request refused here touches no membership.
    let slot = SlotClaim::claim(&state.control).ok_or("too many control subscriptions")?;
    let subscription = node
        .subscribe_channel(publisher, &name, SubscribeConfig::new())
        .await
        .map_err(|e| e.to_string())?;
    let granted = subscription.granted();
    let id = slot.fill(subscription);
    Ok(json!({
        "subscription": id,
        "publisher": publisher.to_string(),
        "name": name.as_str(),
        "reliable": granted.reliable,
        "priority": granted.priority,
    }))
}

async fn poll(node: &Node, request: &Value) -> Result<Value, String> {
    let id = request
        .get("subscription")
        .and_then(Value::as_u64)
        .ok_or("missing \"subscription\"")?;
    let wait = request
        .get("wait_ms")
        .and_then(Value::as_u64)
        .map_or(Duration::from_secs(1), Duration::from_millis)
        .min(MAX_POLL_WAIT);
    let state = node.channel_state();
    let subscription = {
        let mut control = state.control();
        let sub = control
            .subs
            .get_mut(&id)
            .ok_or("no such subscription (it ended or expired)")?;
        sub.last_poll = Instant::now();
        Arc::clone(&sub.subscription)
    };
    let mut subscription = subscription.lock().await;
    let mut events = Vec::new();
    let mut ended = false;
    match tokio::time::timeout(wait, subscription.recv()).await {
        Ok(Some(event)) => events.push(event),
        Ok(None) => ended = true,
        Err(_) => {}
    }
    while events.len() < MAX_POLL_EVENTS {
        match subscription.try_recv() {
            Some(event) => events.push(event),
            None => break,
        }
    }
    let end_reason = ended
        .then(|| subscription.end_reason().map(|why| why.to_string()))
        .flatten();
    drop(subscription);
    if ended {
        state.control().subs.remove(&id);
    }
    let events: Vec<Value> = events
        .into_iter()
        .map(|e| {
            let text = std::str::from_utf8(&e.payload).ok();
            json!({
                "channel": e.channel.as_str(),
                "publisher": e.publisher.to_string(),
                "seq": e.seq,
                "data": text,
                "data_hex": text.is_none().then(|| hex::encode(&e.payload)),
            })
        })
        .collect();
    Ok(json!({"events": events, "ended": ended, "end_reason": end_reason}))
}

async fn unsubscribe(node: &Node, request: &Value) -> Result<Value, String> {
    let id = request
        .get("subscription")
        .and_then(Value::as_u64)
        .ok_or("missing \"subscription\"")?;
    let state = node.channel_state();
    let removed = state.control().subs.remove(&id);
    if let Some(sub) = removed {
        let (publisher, name) = {
            let sub = sub.subscription.lock().await;
            (sub.publisher(), sub.channel().clone())
        };
        node.unsubscribe_channel(publisher, &name)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(json!({}))
}

/// A slot of [`MAX_SUBSCRIPTIONS`] held for one subscribe request while it waits for
/// the publisher. [`SlotClaim::fill`] turns it into a held subscription; dropping it unfilled
/// (the subscribe failed, or the request was cancelled) frees the slot.
#[derive(Debug)]
struct SlotClaim<'a> {
    control: &'a Mutex<ControlSubscriptions>,
    filled: bool,
}

impl<'a> SlotClaim<'a> {
    /// Claims a slot, or `None` when held subscriptions and claimed slots reach the bound.
    /// The check and the claim happen under one lock, so concurrent requests cannot
    /// overshoot it.
    fn claim(control: &'a Mutex<ControlSubscriptions>) -> Option<Self> {
        let mut guard = lock(control);
        if guard.subs.len() + guard.claimed >= MAX_SUBSCRIPTIONS {
            return None;
        }
        guard.claimed += 1;
        Some(Self {
            control,
            filled: false,
        })
    }

    /// Holds `subscription` in the claimed slot; returns its control subscription id.
    fn fill(mut self, subscription: ChannelSubscription) -> u64 {
        let mut guard = lock(self.control);
        guard.claimed -= 1;
        guard.next += 1;
        let id = guard.next;
        guard.subs.insert(
            id,
            ControlSubscription {
                subscription: Arc::new(tokio::sync::Mutex::new(subscription)),
                last_poll: Instant::now(),
            },
        );
        self.filled = true;
        id
    }
}

impl Drop for SlotClaim<'_> {
    fn drop(&mut self) {
        if !self.filled {
            lock(self.control).claimed -= 1;
        }
    }
}

/// Locks the control subscriptions or the local taps; a panic elsewhere leaves either
/// consistent (every update is a single insert, remove, push or counter step), so a
/// poisoned lock is used as is.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Drops control subscriptions nobody polled recently (dropping one unsubscribes).
fn reap(state: &NodeChannels) {
    let now = Instant::now();
    state
        .control()
        .subs
        .retain(|_, sub| now.duration_since(sub.last_poll) < CONTROL_IDLE);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_stop_at_the_bound_and_a_dropped_claim_frees_its_slot() {
        let control = Mutex::new(ControlSubscriptions::default());
        let mut claims: Vec<SlotClaim<'_>> = (0..MAX_SUBSCRIPTIONS)
            .map(|_| SlotClaim::claim(&control).expect("below the bound"))
            .collect();
        assert!(SlotClaim::claim(&control).is_none(), "bound reached");
        claims.pop();
        let again = SlotClaim::claim(&control);
        assert!(again.is_some(), "a dropped claim frees its slot");
        drop(again);
        drop(claims);
        assert_eq!(lock(&control).claimed, 0);
    }
}
