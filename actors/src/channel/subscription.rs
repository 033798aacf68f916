//! The subscriber's receive side: a subscription's queue and the application's receiver.

use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwapOption;
use netrun_messages::{ChannelName, Granted, NodeId};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{ChannelEvent, MembershipMsg, Shared, SubscriptionEnd};

/// Why one receiver ended, shared by the membership actor (which sets it once, before the
/// receiver's last sender goes) and the [`ChannelSubscription`] (which reads it).
pub(super) type EndCell = Arc<OnceLock<SubscriptionEnd>>;

/// Where a subscription's reader tasks put events: the current receiver's sender, or
/// nothing once the subscription ended. A renewal swaps in a new sender, which ends the
/// previous receiver.
#[derive(Debug)]
pub(super) struct Slot {
    tx: ArcSwapOption<mpsc::Sender<ChannelEvent>>,
    channel: ChannelName,
}

impl Slot {
    /// The current sender and the channel name, while the subscription lasts.
    pub(super) fn sender(&self) -> Option<(Arc<mpsc::Sender<ChannelEvent>>, ChannelName)> {
        self.tx.load_full().map(|tx| (tx, self.channel.clone()))
    }
}

/// The membership actor's record of one local subscription's delivery.
#[derive(Debug)]
pub(super) struct Sink {
    /// Which receiver is current (a dropped receiver that is not current changes nothing).
    pub(super) id: u64,
    pub(super) channel: ChannelName,
    slot: Arc<Slot>,
    /// The current receiver's end reason.
    end: EndCell,
    readers: Vec<JoinHandle<()>>,
    granted: Option<Granted>,
}

impl Sink {
    /// A sink for receiver `id`, whose end reason goes to `end`; nothing is delivered until
    /// [`Sink::install`].
    pub(super) fn new(id: u64, channel: ChannelName, end: EndCell) -> Self {
        Self {
            id,
            slot: Arc::new(Slot {
                tx: ArcSwapOption::empty(),
                channel: channel.clone(),
            }),
            channel,
            end,
            readers: Vec::new(),
            granted: None,
        }
    }

    /// Makes receiver `id` (fed by `sender`, its end reason going to `end`) the current
    /// one; a previous receiver ends as [`SubscriptionEnd::Renewed`].
    pub(super) fn install(
        &mut self,
        id: u64,
        sender: mpsc::Sender<ChannelEvent>,
        end: EndCell,
        granted: Option<Granted>,
    ) {
        if id != self.id {
            // Before its sender goes, so its receiver finds the reason when it ends.
            let _ = self.end.set(SubscriptionEnd::Renewed);
        }
        self.id = id;
        self.end = end;
        self.slot.tx.store(Some(Arc::new(sender)));
        if granted.is_some() {
            self.granted = granted;
        }
    }

    pub(super) fn slot(&self) -> Arc<Slot> {
        Arc::clone(&self.slot)
    }

    /// Adds the reader task of one more event stream (forgetting finished ones).
    pub(super) fn add_reader(&mut self, reader: JoinHandle<()>) {
        self.readers.retain(|r| !r.is_finished());
        self.readers.push(reader);
    }

    /// Event streams currently read.
    pub(super) fn streams(&self) -> usize {
        self.readers.iter().filter(|r| !r.is_finished()).count()
    }

    pub(super) fn granted(&self) -> Option<Granted> {
        self.granted
    }

    /// Ends delivery for `why` (unless the receiver has a reason already): the receiver
    /// drains what is queued and then ends; the readers stop (dropping their streams
    /// resets them, so the publisher stops sending).
    pub(super) fn close(self, why: SubscriptionEnd) {
        let _ = self.end.set(why);
        self.slot.tx.store(None);
        for reader in self.readers {
            reader.abort();
        }
    }
}

/// The application's end of one subscription: the publisher's events on one channel, in
/// the order the publisher sent them (reliable delivery) or in arrival order (best
/// effort).
///
/// [`recv`](Self::recv) returns `None` once the subscription ended: unsubscribed, renewed
/// (the new subscription has its own receiver), evicted by the publisher (token expired,
/// issuer revoked, channel unregistered), the publisher's session went down, or the node
/// is shutting down; [`end_reason`](Self::end_reason) then says which. Dropping the
/// receiver unsubscribes (without waiting for the publisher's answer).
#[derive(Debug)]
pub struct ChannelSubscription {
    rx: mpsc::Receiver<ChannelEvent>,
    publisher: NodeId,
    channel: ChannelName,
    granted: Granted,
    sink: u64,
    end: EndCell,
    shared: Arc<Shared>,
}

impl ChannelSubscription {
    pub(super) fn new(
        rx: mpsc::Receiver<ChannelEvent>,
        publisher: NodeId,
        channel: ChannelName,
        granted: Granted,
        sink: u64,
        end: EndCell,
        shared: Arc<Shared>,
    ) -> Self {
        Self {
            rx,
            publisher,
            channel,
            granted,
            sink,
            end,
            shared,
        }
    }

    /// The next event; `None` once the subscription ended and every queued event was read
    /// ([`end_reason`](Self::end_reason) says why).
    pub async fn recv(&mut self) -> Option<ChannelEvent> {
        self.rx.recv().await
    }

    /// Why the subscription ended, once it has: always set by the time
    /// [`recv`](Self::recv) returns `None` (it may be set while queued events remain to be
    /// read). `None` while it lasts.
    pub fn end_reason(&self) -> Option<SubscriptionEnd> {
        self.end.get().copied()
    }

    /// The next event if one is queued.
    pub fn try_recv(&mut self) -> Option<ChannelEvent> {
        self.rx.try_recv().ok()
    }

    /// The publisher.
    pub fn publisher(&self) -> NodeId {
        self.publisher
    }

    /// The channel.
    pub fn channel(&self) -> &ChannelName {
        &self.channel
    }

    /// What the publisher granted: reliability, priority, token expiry.
    pub fn granted(&self) -> Granted {
        self.granted
    }

    /// When the presented token stops being valid (unix seconds), if the channel took one:
    /// subscribe again with a fresh token before then, or the publisher's sweep ends the
    /// delivery.
    pub fn token_expires_at(&self) -> Option<u64> {
        self.granted.token_expires_at
    }
}

impl Drop for ChannelSubscription {
    fn drop(&mut self) {
        if let Some(actor) = self.shared.membership.load_full() {
            let _ = actor.send_message(MembershipMsg::Dropped {
                publisher: self.publisher,
                hash: self.channel.hash(),
                sink: self.sink,
            });
        }
    }
}
