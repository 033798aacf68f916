//! Daemons on channels: every hosted daemon's outputs are published on its output channel
//! `daemons/<origin>` (reliable), and a daemon can take a channel's events as its input.
//!
//! The output channel is registered when the daemon is spawned and unregistered after it
//! stops, once its last outputs are out. Outputs leave the host actor through an
//! [`OutputSink`] that never blocks: a bounded queue (overflow counted) drained by one task
//! per node, which publishes each output's encoding ([`Output::to_bytes`], verifiable with
//! `ChainVerifier`). The task holds the node weakly and ends with it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use bytes::Bytes;
use netrun_actors::daemon::OutputSink;
use netrun_messages::{ChannelName, NodeId, OriginHash};
use netrun_runtime::channel::{ChannelConfig, RegisterError};
use netrun_runtime::daemon::Output;
use tokio::sync::mpsc;

use super::DaemonCallError;
use crate::node::{Inner, Node};
use netrun_actors::channel::{ChannelError, SubscribeConfig, SubscribeError};

/// Outputs queued for publication before new ones are dropped (counted).
pub const OUTPUT_QUEUE: usize = 4096;

/// The output channel of daemon `origin`: `daemons/<origin as 16 hex digits>`.
pub fn output_channel(origin: OriginHash) -> ChannelName {
    // 16 hex digits after a fixed prefix always form a valid channel name.
    ChannelName::new(&format!("daemons/{origin}"))
        .unwrap_or_else(|_| unreachable!("daemons/<16 hex digits> is a valid channel name"))
}

/// What the publishing task does next, in the order the daemons produced it.
#[derive(Debug)]
enum Item {
    /// Publish one output of a daemon.
    Output(OriginHash, Arc<Output>),
    /// The daemon stopped: unregister its output channel (unless it runs again).
    Retire(OriginHash),
}

/// The sink the node installs for every daemon it hosts.
#[derive(Debug)]
pub(crate) struct ChannelSink {
    /// Outputs not published (queue full, encoding or publish failed).
    dropped: Arc<AtomicU64>,
    /// Items waiting for the publishing task.
    queue: mpsc::Sender<Item>,
}

impl OutputSink for ChannelSink {
    fn publish(&self, origin: OriginHash, output: &Arc<Output>) {
        if self
            .queue
            .try_send(Item::Output(origin, Arc::clone(output)))
            .is_err()
        {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn retire(&self, origin: OriginHash) {
        // Rare, and it must not be lost (the channel would stay registered): wait for room.
        if let Err(mpsc::error::TrySendError::Full(item)) =
            self.queue.try_send(Item::Retire(origin))
        {
            let queue = self.queue.clone();
            tokio::spawn(async move {
                let _ = queue.send(item).await;
            });
        }
    }
}

/// Starts the publishing task for the node behind `node` and returns its sink. Outputs the
/// queue refused or that could not be published are counted in the sink.
pub(crate) fn start(node: Weak<Inner>) -> Arc<ChannelSink> {
    let (queue, mut rx) = mpsc::channel::<Item>(OUTPUT_QUEUE);
    let dropped = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&dropped);
    tokio::spawn(async move {
        let mut batch = Vec::with_capacity(PUBLISH_BATCH);
        while rx.recv_many(&mut batch, PUBLISH_BATCH).await > 0 {
            let Some(inner) = node.upgrade() else {
                return;
            };
            let node = Node::from_inner(inner);
            // Consecutive outputs of one daemon go out in one publish, in chain order.
            for run in batch.chunk_by(same_daemon_outputs) {
                match &run[0] {
                    Item::Retire(origin) => retire(&node, *origin).await,
                    Item::Output(origin, _) => {
                        let mut events = Vec::with_capacity(run.len());
                        for item in run {
                            let Item::Output(_, output) = item else {
                                continue;
                            };
                            match output.to_bytes() {
                                Ok(bytes) => events.push(Bytes::from(bytes)),
                                Err(_) => {
                                    counter.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                        publish(&node, *origin, events, &counter).await;
                    }
                }
            }
            batch.clear();
        }
    });
    Arc::new(ChannelSink { queue, dropped })
}

/// Items the publishing task takes from its queue at once.
const PUBLISH_BATCH: usize = 256;

/// Whether two queued items are outputs of the same daemon (so they share a publish).
fn same_daemon_outputs(a: &Item, b: &Item) -> bool {
    matches!((a, b), (Item::Output(x, _), Item::Output(y, _)) if x == y)
}

/// Registers daemon `origin`'s output channel (spawn time); one left registered by an
/// earlier run of the same identity is reused.
pub(crate) async fn register(node: &Node, origin: OriginHash) {
    let name = output_channel(origin);
    match node.register_channel(ChannelConfig::new(name)).await {
        Ok(()) | Err(ChannelError::Register(RegisterError::AlreadyRegistered(_))) => {}
        Err(e) => {
            tracing::warn!(%origin, error = %e, "daemon output channel not registered; its outputs stay local")
        }
    }
}

/// Unregisters a stopped daemon's output channel, unless the identity runs here again.
async fn retire(node: &Node, origin: OriginHash) {
    if node.daemon(origin).is_none() {
        node.unregister_channel(&output_channel(origin)).await;
    }
}

/// Publishes one daemon's outputs on its output channel.
async fn publish(node: &Node, origin: OriginHash, events: Vec<Bytes>, dropped: &AtomicU64) {
    let count = events.len() as u64;
    if let Err(e) = node.publish_many(&output_channel(origin), events).await {
        tracing::debug!(%origin, error = %e, "daemon outputs not published");
        dropped.fetch_add(count, Ordering::Relaxed);
    }
}

impl Node {
    /// Makes daemon `origin` (hosted here) a subscriber of `channel` on `publisher`: each
    /// event's payload becomes one input, delivered in order. Channels are named per
    /// publisher in netrun, so the publisher is part of the call; it may be this node (the
    /// daemon then reads the channel locally, without a session). The subscription ends
    /// when the daemon stops or the publisher ends it. Errors: the daemon is unknown here
    /// ([`DaemonCallError::NotFound`]) or the publisher refused
    /// ([`DaemonCallError::Subscribe`]).
    pub async fn subscribe_daemon(
        &self,
        origin: OriginHash,
        publisher: NodeId,
        channel: &ChannelName,
    ) -> Result<(), DaemonCallError> {
        let (entry, daemon) = self.hosted(origin)?;
        let refused = |e: SubscribeError| DaemonCallError::Subscribe(e.to_string());
        let name = channel.clone();
        let forward = move |payload: Bytes| {
            let daemon = daemon.clone();
            let name = name.clone();
            async move {
                let delivered = daemon.deliver(payload).await;
                if let Err(e) = &delivered {
                    tracing::debug!(%origin, channel = %name, error = %e, "channel input not delivered; subscription ends");
                }
                delivered.is_ok()
            }
        };
        let task = if publisher == self.node_id() {
            let mut tap = self.channel_state().tap(channel).map_err(refused)?;
            tokio::spawn(async move {
                while let Some(payload) = tap.recv().await {
                    if !forward(payload).await {
                        return;
                    }
                }
            })
        } else {
            let mut subscription = self
                .subscribe_channel(publisher, channel, SubscribeConfig::default())
                .await
                .map_err(refused)?;
            tokio::spawn(async move {
                while let Some(event) = subscription.recv().await {
                    if !forward(event.payload).await {
                        return;
                    }
                }
            })
        };
        entry.links.add_input(task);
        Ok(())
    }
}
