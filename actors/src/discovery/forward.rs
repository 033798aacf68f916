//! Tasks that move a queue's items into an actor's mailbox, bounded.
//!
//! ractor mailboxes are unbounded, so the envelope pump takes a credit (a semaphore
//! permit) per item it forwards and the item carries the credit until the actor has
//! handled it: at most `credits` items wait in the mailbox, and beyond that the wire's
//! bounded handler queue fills and drops (counted in `dropped_handler_full`). Both tasks end
//! when the actor is gone.

use std::sync::Arc;

use ractor::{ActorRef, Message};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast, mpsc};
use tokio::task::JoinHandle;

use crate::events::PeerEvent;
use crate::wire::Inbound;

/// Envelopes that may wait in a discovery actor's mailbox at once.
pub(crate) const MAILBOX_CREDITS: usize = 64;

/// A mailbox slot an item holds until it is handled (dropping it frees the slot).
#[derive(Debug)]
pub struct Credit {
    _permit: OwnedSemaphorePermit,
}

/// Forwards envelopes from `queue` to `to`, at most `credits` in its mailbox at once.
pub(crate) fn envelopes<M, F>(
    mut queue: mpsc::Receiver<Inbound>,
    to: ActorRef<M>,
    credits: usize,
    wrap: F,
) -> JoinHandle<()>
where
    M: Message,
    F: Fn(Inbound, Credit) -> M + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(credits.max(1)));
    tokio::spawn(async move {
        loop {
            let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
                return;
            };
            let Some(inbound) = queue.recv().await else {
                return;
            };
            if to
                .send_message(wrap(inbound, Credit { _permit: permit }))
                .is_err()
            {
                return;
            }
        }
    })
}

/// Forwards peer events to `to`; a lag (the actor's task fell more than the broadcast
/// capacity behind) is forwarded as `lagged` so the actor can resynchronise from the wire.
pub(crate) fn peer_events<M, F>(
    mut events: broadcast::Receiver<PeerEvent>,
    to: ActorRef<M>,
    wrap: F,
    lagged: fn() -> M,
) -> JoinHandle<()>
where
    M: Message,
    F: Fn(PeerEvent) -> M + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            let msg = match events.recv().await {
                Ok(event) => wrap(event),
                Err(broadcast::error::RecvError::Lagged(_)) => lagged(),
                Err(broadcast::error::RecvError::Closed) => return,
            };
            if to.send_message(msg).is_err() {
                return;
            }
        }
    })
}
