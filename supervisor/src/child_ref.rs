//! Handles that survive restarts.
//!
//! The supervisor owns one slot per child and writes the current incarnation (its
//! cell and generation) into it on every start, and clears it when the incarnation ends.
//! A [`ChildRef`] reads the slot at send time, so it always reaches the live incarnation.
//! Generations start at 1 and increase by one per incarnation; they are never reused.

use std::marker::PhantomData;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::{ActorCell, ActorRef, Message, MessagingErr, RpcReplyPort};

/// Why a message could not be handed to a child.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// No incarnation is running (restarting, backing off, gated or stopped).
    #[error("child is not running")]
    NotRunning,
    /// The caller asked for a generation that is no longer (or not yet) current.
    #[error("stale generation {requested} (current {current:?})")]
    StaleGeneration {
        /// Generation the caller addressed.
        requested: u64,
        /// Generation running now, if any.
        current: Option<u64>,
    },
    /// The incarnation's mailbox closed before the message was queued (it just died).
    #[error("child mailbox is closed")]
    Closed,
    /// The child does not accept this message type.
    #[error("child does not accept this message type")]
    WrongType,
    /// A call got no reply within its timeout.
    #[error("call timed out")]
    Timeout,
    /// The incarnation ended (or dropped the reply port) before replying.
    #[error("reply port dropped before a reply")]
    NoReply,
}

/// The live incarnation of one child, shared between the supervisor and its handles.
#[derive(Debug, Default)]
pub(crate) struct Slot {
    inner: RwLock<SlotState>,
}

#[derive(Debug, Default)]
struct SlotState {
    current: Option<ActorCell>,
    generation: u64,
}

impl Slot {
    fn read(&self) -> RwLockReadGuard<'_, SlotState> {
        // A poisoned lock only means a panic elsewhere while holding it; the data is a
        // cell and a counter, always consistent, so keep using it.
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, SlotState> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Generation the next incarnation will get.
    pub(crate) fn next_generation(&self) -> u64 {
        self.read().generation + 1
    }

    /// Publishes a new incarnation.
    pub(crate) fn set(&self, cell: ActorCell, generation: u64) {
        let mut state = self.write();
        state.current = Some(cell);
        state.generation = generation;
    }

    /// Marks the child as not running.
    pub(crate) fn clear(&self) {
        self.write().current = None;
    }

    pub(crate) fn current(&self) -> Option<(ActorCell, u64)> {
        let state = self.read();
        state.current.clone().map(|cell| (cell, state.generation))
    }

    pub(crate) fn generation(&self) -> u64 {
        self.read().generation
    }
}

/// A typed handle on a supervised child that follows it across restarts.
pub struct ChildRef<M> {
    id: String,
    slot: Arc<Slot>,
    _msg: PhantomData<fn(M)>,
}

impl<M: Message> ChildRef<M> {
    pub(crate) fn new(id: String, slot: Arc<Slot>) -> Self {
        Self {
            id,
            slot,
            _msg: PhantomData,
        }
    }

    /// The child's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Generation of the running incarnation, if one is running.
    pub fn generation(&self) -> Option<u64> {
        self.slot.current().map(|(_, g)| g)
    }

    /// The running incarnation, if any.
    pub fn actor(&self) -> Option<ActorRef<M>> {
        self.slot.current().map(|(cell, _)| ActorRef::from(cell))
    }

    /// The running incarnation's cell, if any (to stop, kill or link to it).
    pub fn cell(&self) -> Option<ActorCell> {
        self.slot.current().map(|(cell, _)| cell)
    }

    /// Sends to the running incarnation; returns the generation it was queued for.
    pub fn send(&self, msg: M) -> Result<u64, SendError> {
        let (cell, generation) = self.slot.current().ok_or(SendError::NotRunning)?;
        cell.send_message::<M>(msg).map_err(map_messaging)?;
        Ok(generation)
    }

    /// Sends only if `generation` is still the running incarnation.
    pub fn send_if_generation(&self, generation: u64, msg: M) -> Result<(), SendError> {
        let current = self.slot.current();
        match current {
            Some((cell, g)) if g == generation => {
                cell.send_message::<M>(msg).map_err(map_messaging)
            }
            Some((_, g)) => Err(SendError::StaleGeneration {
                requested: generation,
                current: Some(g),
            }),
            None => Err(SendError::StaleGeneration {
                requested: generation,
                current: None,
            }),
        }
    }

    /// Request/response to the running incarnation.
    pub async fn call<R, F>(&self, build: F, timeout: Option<Duration>) -> Result<R, SendError>
    where
        R: Send + 'static,
        F: FnOnce(RpcReplyPort<R>) -> M,
    {
        let (cell, _) = self.slot.current().ok_or(SendError::NotRunning)?;
        let actor: ActorRef<M> = ActorRef::from(cell);
        match actor.call(build, timeout).await.map_err(map_messaging)? {
            CallResult::Success(reply) => Ok(reply),
            CallResult::Timeout => Err(SendError::Timeout),
            CallResult::SenderError => Err(SendError::NoReply),
        }
    }
}

impl<M> Clone for ChildRef<M> {
    fn clone(&self) -> Self {
        Self {
            id: self.id.clone(),
            slot: Arc::clone(&self.slot),
            _msg: PhantomData,
        }
    }
}

impl<M> std::fmt::Debug for ChildRef<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildRef")
            .field("id", &self.id)
            .field("generation", &self.slot.generation())
            .finish()
    }
}

fn map_messaging<T>(err: MessagingErr<T>) -> SendError {
    match err {
        MessagingErr::InvalidActorType => SendError::WrongType,
        _ => SendError::Closed,
    }
}
