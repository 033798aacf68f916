//! The background tasks of subsystem actors: moving what the wire hands a subsystem into
//! its actor's mailbox, bounded, and ending those tasks with the actor.
//!
//! ractor mailboxes are unbounded, so the envelope pump (`serve_envelopes`) takes a
//! [`Credit`] (a semaphore permit) per batch it forwards and the batch carries it until the
//! actor has handled it: at most `credits` batches of at most [`PUMP_BATCH`] envelopes wait
//! in the mailbox, and beyond that the wire's bounded handler queue fills and drops newest
//! (counted in `dropped_handler_full`). The peer-event task (`peer_events`) forwards the
//! wire's session events. Both end by themselves when the actor is gone; `Tasks` aborts
//! them (and an actor's interval timers) when the actor's state is dropped.

use std::sync::Arc;

use netrun_messages::envelope::Subprotocol;
use ractor::{ActorRef, Message};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tracing::debug;

use crate::events::PeerEvent;
use crate::wire::{INBOUND_CAPACITY, Inbound, Wire};

/// Most envelopes handed to an actor in one message.
pub const PUMP_BATCH: usize = 64;

/// A mailbox slot a batch holds until it is handled (dropping it frees the slot).
#[derive(Debug)]
pub struct Credit {
    _permit: OwnedSemaphorePermit,
}

/// Routes `subprotocol`'s envelopes to a fresh bounded queue (replacing the queue of a
/// previous incarnation, whose pump then ends) and spawns the task that forwards them to
/// `to` in batches, at most `credits` batches in its mailbox at once.
pub(crate) fn serve_envelopes<M, F>(
    wire: &Wire,
    subprotocol: Subprotocol,
    to: ActorRef<M>,
    credits: usize,
    wrap: F,
) -> JoinHandle<()>
where
    M: Message,
    F: Fn(Vec<Inbound>, Credit) -> M + Send + 'static,
{
    let (queue, mut inbound) = mpsc::channel(INBOUND_CAPACITY);
    wire.serve(subprotocol, queue);
    let slots = Arc::new(Semaphore::new(credits.max(1)));
    tokio::spawn(async move {
        let mut batch = Vec::with_capacity(PUMP_BATCH);
        loop {
            // Credit first: while the actor is busy, envelopes gather in the queue and the
            // next batch takes them all at once.
            let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
                return;
            };
            if inbound.recv_many(&mut batch, PUMP_BATCH).await == 0 {
                return;
            }
            // Exactly as large as the batch (small batches stay small allocations), while
            // `batch` keeps its capacity for the next `recv_many`.
            #[allow(clippy::drain_collect, reason = "mem::take would drop the capacity")]
            let envelopes: Vec<Inbound> = batch.drain(..).collect();
            if to
                .send_message(wrap(envelopes, Credit { _permit: permit }))
                .is_err()
            {
                return;
            }
        }
    })
}

/// Subscribes to the wire's peer events now and spawns the task that forwards them to `to`.
/// A lag (the task fell more than the broadcast capacity behind) is forwarded as
/// `lagged()` when given, so the actor can resynchronise from the wire, and skipped
/// otherwise.
pub(crate) fn peer_events<M, F>(
    wire: &Wire,
    to: ActorRef<M>,
    wrap: F,
    lagged: Option<fn() -> M>,
) -> JoinHandle<()>
where
    M: Message,
    F: Fn(PeerEvent) -> M + Send + 'static,
{
    let mut events = wire.subscribe();
    tokio::spawn(async move {
        loop {
            let msg = match events.recv().await {
                Ok(event) => wrap(event),
                Err(RecvError::Lagged(missed)) => {
                    debug!(missed, "peer events missed");
                    match lagged {
                        Some(lagged) => lagged(),
                        None => continue,
                    }
                }
                Err(RecvError::Closed) => return,
            };
            if to.send_message(msg).is_err() {
                return;
            }
        }
    })
}

/// Tasks that live as long as an actor's state: aborted when it is dropped (after
/// `post_stop`, or when the actor is killed).
#[derive(Debug, Default)]
pub(crate) struct Tasks(Vec<JoinHandle<()>>);

impl Tasks {
    /// Owns `tasks`.
    pub(crate) fn new(tasks: impl IntoIterator<Item = JoinHandle<()>>) -> Self {
        Self(tasks.into_iter().collect())
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}
