//! [`DaemonClient`]: the requesting side of the daemon control subprotocol, and the
//! bookkeeping both sides share across control-actor incarnations.
//!
//! A request goes out as a `DAEMON` envelope with a fresh request id and waits for the
//! reply with that id from the node it was sent to (replies from anyone else, or with an
//! unknown id, are dropped and counted). Control envelopes ride single datagrams and are
//! not retransmitted, so a request is re-sent with the same id when an attempt times out;
//! the serving side answers a repeated spawn from its cache instead of spawning twice.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use netrun_messages::daemon::{
    CapabilityQuery, CapabilityReply, DaemonControlError, DaemonControlMessage, SpawnRefusal,
    SpawnRequest, SpawnResult, StopRequest, StopResult,
};
use netrun_messages::{EntityId, Identity, NodeId, OriginHash, Subprotocol};
use netrun_runtime::daemon::DaemonConfig;
use rand_core::{OsRng, RngCore};
use thiserror::Error;
use tokio::sync::oneshot;

use super::DaemonOptions;
use crate::wire::{SendError, Wire};

/// Most requests waiting for a reply at once.
const MAX_WAITERS: usize = 256;
/// Answers to spawns and stops remembered to answer repeated requests (one per recent
/// request).
const RECENT_ANSWERS: usize = 256;
/// Attempts per request: the first send and two re-sends.
const ATTEMPTS: u32 = 3;

/// Why a remote request did not succeed.
#[derive(Debug, Error)]
pub enum RemoteError {
    /// The request could not be sent (no session, too large for a datagram, …).
    #[error("send: {0}")]
    Send(#[from] SendError),
    /// The request could not be encoded (a field out of bounds).
    #[error(transparent)]
    Encode(#[from] DaemonControlError),
    /// No reply within the timeout, after every attempt.
    #[error("no reply from node {0}")]
    Timeout(NodeId),
    /// Too many requests are waiting for replies.
    #[error("too many daemon control requests in flight")]
    TooManyPending,
    /// The remote node did not stop the daemon.
    #[error("node {node} did not stop the daemon: {result}")]
    NotStopped {
        /// The node.
        node: NodeId,
        /// Why.
        result: StopResult,
    },
    /// The remote node refused the spawn.
    #[error("node {node} refused: {refusal}")]
    Refused {
        /// The node.
        node: NodeId,
        /// Why.
        refusal: SpawnRefusal,
    },
    /// The host configuration does not fit its wire form.
    #[error("host config: {0}")]
    Config(String),
}

/// The requesting side of the daemon control subprotocol (cheap to clone).
#[derive(Debug, Clone)]
pub struct DaemonClient {
    wire: Arc<Wire>,
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    next_id: AtomicU64,
    waiters: Mutex<HashMap<u64, Waiter>>,
    served: Mutex<Served>,
    /// Bodies that did not decode.
    malformed: AtomicU64,
    /// Replies nobody waited for (unknown id, or from another node than the one asked).
    unsolicited: AtomicU64,
}

#[derive(Debug)]
struct Waiter {
    peer: NodeId,
    reply: oneshot::Sender<DaemonControlMessage>,
}

/// The serving side's memory of spawn and stop requests: in flight, and recently
/// answered.
#[derive(Debug, Default)]
struct Served {
    in_flight: HashSet<(NodeId, u64)>,
    recent: VecDeque<((NodeId, u64), DaemonControlMessage)>,
}

/// What the serving side should do with a spawn or stop request.
pub(super) enum Disposition {
    /// Carry it out (it is now in flight).
    Start,
    /// Already answered: send this reply again.
    Answered(DaemonControlMessage),
    /// Being handled; its answer will go out.
    InFlight,
}

impl DaemonClient {
    /// A client sending over `wire`.
    pub fn new(wire: Arc<Wire>) -> Self {
        Self {
            wire,
            inner: Arc::new(Inner {
                next_id: AtomicU64::new(OsRng.next_u64()),
                waiters: Mutex::new(HashMap::new()),
                served: Mutex::new(Served::default()),
                malformed: AtomicU64::new(0),
                unsolicited: AtomicU64::new(0),
            }),
        }
    }

    /// Asks `peer` for its capability set and load.
    pub async fn query(
        &self,
        peer: NodeId,
        timeout: Duration,
    ) -> Result<CapabilityReply, RemoteError> {
        let reply = self
            .request(peer, timeout, |request_id| {
                DaemonControlMessage::Query(CapabilityQuery { request_id })
            })
            .await?;
        match reply {
            DaemonControlMessage::QueryReply(reply) => Ok(reply),
            _ => Err(RemoteError::Timeout(peer)),
        }
    }

    /// Asks `peer` to host a daemon of `kind` under `identity`, with the host configuration
    /// and wiring of `options` (the other options are the peer's defaults); returns its
    /// origin and entity as the peer reports them.
    pub async fn spawn(
        &self,
        peer: NodeId,
        kind: &str,
        identity: &Identity,
        config: &DaemonConfig,
        options: &DaemonOptions,
        timeout: Duration,
    ) -> Result<(OriginHash, EntityId), RemoteError> {
        let settings = options
            .host
            .to_wire()
            .map_err(|e| RemoteError::Config(e.to_string()))?;
        let seed = identity.seed();
        let reply = self
            .request(peer, timeout, |request_id| {
                DaemonControlMessage::Spawn(SpawnRequest {
                    request_id,
                    kind: kind.to_owned(),
                    identity_seed: seed.clone(),
                    config: Bytes::clone(config.as_bytes()),
                    host: settings,
                    wiring: options.wiring.clone(),
                })
            })
            .await?;
        match reply {
            DaemonControlMessage::SpawnReply(reply) => match reply.result {
                SpawnResult::Spawned { origin, entity } => Ok((origin, entity)),
                SpawnResult::Refused(refusal) => Err(RemoteError::Refused {
                    node: peer,
                    refusal,
                }),
            },
            _ => Err(RemoteError::Timeout(peer)),
        }
    }

    /// Asks `peer` to stop daemon `origin`, which this node placed there. The peer stops
    /// it with the daemon's grace period, so `timeout` should exceed that.
    pub async fn stop(
        &self,
        peer: NodeId,
        origin: OriginHash,
        timeout: Duration,
    ) -> Result<(), RemoteError> {
        let reply = self
            .request(peer, timeout, |request_id| {
                DaemonControlMessage::Stop(StopRequest { request_id, origin })
            })
            .await?;
        match reply {
            DaemonControlMessage::StopReply(reply) if reply.result == StopResult::Stopped => Ok(()),
            DaemonControlMessage::StopReply(reply) => Err(RemoteError::NotStopped {
                node: peer,
                result: reply.result,
            }),
            _ => Err(RemoteError::Timeout(peer)),
        }
    }

    /// Daemon control bodies that did not decode.
    pub fn malformed(&self) -> u64 {
        self.inner.malformed.load(Ordering::Relaxed)
    }

    /// Replies that matched no waiting request.
    pub fn unsolicited(&self) -> u64 {
        self.inner.unsolicited.load(Ordering::Relaxed)
    }

    /// The wire requests go out on.
    pub(super) fn wire(&self) -> &Arc<Wire> {
        &self.wire
    }

    /// Sends `build(id)` to `peer` up to [`ATTEMPTS`] times (same id) until a reply with
    /// that id comes from `peer`, within `timeout` in total.
    async fn request(
        &self,
        peer: NodeId,
        timeout: Duration,
        build: impl FnOnce(u64) -> DaemonControlMessage,
    ) -> Result<DaemonControlMessage, RemoteError> {
        let request_id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let body = build(request_id).encode()?;
        let (tx, mut rx) = oneshot::channel();
        {
            let mut waiters = lock(&self.inner.waiters);
            if waiters.len() >= MAX_WAITERS {
                return Err(RemoteError::TooManyPending);
            }
            waiters.insert(request_id, Waiter { peer, reply: tx });
        }
        let _guard = WaiterGuard {
            inner: &self.inner,
            request_id,
        };
        let per_attempt = timeout / ATTEMPTS;
        for attempt in 0..ATTEMPTS {
            let sent = self
                .wire
                .send_envelope(peer, Subprotocol::DAEMON, None, &body)
                .await;
            match sent {
                Ok(()) => {}
                // Nothing went out: the peer never saw the request.
                Err(error) if attempt == 0 => return Err(error.into()),
                // An earlier attempt went out and may have been acted on.
                Err(_) => return Err(RemoteError::Timeout(peer)),
            }
            match tokio::time::timeout(per_attempt, &mut rx).await {
                Ok(Ok(reply)) => return Ok(reply),
                Ok(Err(_)) => break,
                Err(_) => continue,
            }
        }
        Err(RemoteError::Timeout(peer))
    }

    /// Hands a reply to the request waiting for it, if it came from the node asked.
    pub(super) fn complete(&self, peer: NodeId, message: DaemonControlMessage) {
        let request_id = message.request_id();
        let waiter = {
            let mut waiters = lock(&self.inner.waiters);
            match waiters.get(&request_id) {
                Some(w) if w.peer == peer => waiters.remove(&request_id),
                _ => None,
            }
        };
        match waiter {
            Some(waiter) => {
                let _ = waiter.reply.send(message);
            }
            None => {
                self.inner.unsolicited.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Counts a body that did not decode.
    pub(super) fn count_malformed(&self) {
        self.inner.malformed.fetch_add(1, Ordering::Relaxed);
    }

    /// Registers a spawn or stop request about to be served (see [`Disposition`]). At
    /// most `max_in_flight` are served at once; beyond that the caller refuses.
    pub(super) fn begin_request(
        &self,
        key: (NodeId, u64),
        max_in_flight: usize,
    ) -> Option<Disposition> {
        let mut served = lock(&self.inner.served);
        if let Some((_, reply)) = served.recent.iter().find(|(k, _)| *k == key) {
            return Some(Disposition::Answered(reply.clone()));
        }
        if served.in_flight.contains(&key) {
            return Some(Disposition::InFlight);
        }
        if served.in_flight.len() >= max_in_flight {
            return None;
        }
        served.in_flight.insert(key);
        Some(Disposition::Start)
    }

    /// Records the reply to a served spawn or stop request.
    pub(super) fn finish_request(&self, key: (NodeId, u64), reply: DaemonControlMessage) {
        let mut served = lock(&self.inner.served);
        served.in_flight.remove(&key);
        if served.recent.len() >= RECENT_ANSWERS {
            served.recent.pop_front();
        }
        served.recent.push_back((key, reply));
    }
}

/// Removes a request's waiter however the request ends.
struct WaiterGuard<'a> {
    inner: &'a Inner,
    request_id: u64,
}

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        lock(&self.inner.waiters).remove(&self.request_id);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain maps with no invariant spanning a panic; keep using them.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
