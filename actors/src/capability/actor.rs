//! The capability fold actor: announce timer, inbound pump, index updates, forwarding.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use netrun_messages::NodeId;
use netrun_messages::envelope::Subprotocol;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tracing::{Instrument, debug, info_span, warn};

use super::{CapabilityArgs, CapabilityHandle, CapabilityMsg};
use crate::clock::{unix_secs, until_unix_secs};
use crate::events::PeerEvent;
use crate::pump::{self, Tasks};
use crate::wire::{Inbound, Wire};

/// Offset of the node id in an encoded announcement (after the format byte).
const NODE_ID_AT: usize = 1;
/// Shortest timer wait: a deadline that is due now is handled at once, but a clock that
/// disagrees with itself never makes the actor spin.
const MIN_WAIT: Duration = Duration::from_millis(20);
/// Longest timer wait: the index's expiry and the announcer's schedule are re-read at
/// least this often.
const MAX_WAIT: Duration = Duration::from_secs(60);

/// The `CapabilityFold` actor.
#[derive(Debug, Clone, Copy, Default)]
pub struct CapabilityActor;

/// The capability fold actor's state.
#[derive(Debug)]
pub struct CapabilityState {
    wire: Arc<Wire>,
    handle: CapabilityHandle,
    /// Token of the armed timer; ticks with another token are stale.
    timer: u64,
    _tasks: Tasks,
}

impl Actor for CapabilityActor {
    type Msg = CapabilityMsg;
    type State = CapabilityState;
    type Arguments = CapabilityArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let wire = args.wire;
        // One batch in flight (a full queue drops newest, counted in
        // `dropped_handler_full`).
        let pump = pump::serve_envelopes(
            &wire,
            Subprotocol::CAPABILITY,
            myself.clone(),
            1,
            CapabilityMsg::Inbound,
        );
        // A missed Up only delays that peer's view until the next re-announcement.
        let watch = pump::peer_events(&wire, myself.clone(), CapabilityMsg::Peer, None);
        args.handle
            .shared
            .actor
            .store(Some(Arc::new(myself.clone())));
        myself.send_message(CapabilityMsg::Tick(0))?;
        Ok(CapabilityState {
            wire,
            handle: args.handle,
            timer: 0,
            _tasks: Tasks::new([pump, watch]),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let span = info_span!("capability_fold", node = %state.wire.local());
        state.dispatch(&myself, message).instrument(span).await;
        Ok(())
    }

    async fn post_stop(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.wire.unserve(Subprotocol::CAPABILITY);
        let shared = &state.handle.shared;
        // Forget this incarnation only if a newer one has not registered already.
        let current = shared.actor.load_full();
        if current.is_some_and(|a| a.get_id() == myself.get_id()) {
            shared.actor.store(None);
        }
        Ok(())
    }
}

impl CapabilityState {
    async fn dispatch(&mut self, myself: &ActorRef<CapabilityMsg>, message: CapabilityMsg) {
        match message {
            CapabilityMsg::Inbound(batch, _credit) => self.on_inbound(batch).await,
            CapabilityMsg::Peer(PeerEvent::Up { node, .. }) => self.on_peer_up(node).await,
            CapabilityMsg::Peer(_) => {}
            CapabilityMsg::Tick(token) if token == self.timer => {
                self.on_tick().await;
                self.arm(myself);
            }
            CapabilityMsg::Tick(_) => {}
            CapabilityMsg::Changed => self.arm(myself),
        }
    }

    /// Expires entries and announces if the announcer says so.
    async fn on_tick(&mut self) {
        let now = unix_secs();
        let expired = self.handle.index_mut().handle_timeout(now);
        if !expired.is_empty() {
            debug!(count = expired.len(), "capability entries expired");
        }
        let announcement = match self.handle.announcer().poll_announce(now) {
            Ok(announcement) => announcement,
            Err(e) => {
                warn!(error = %e, "capability announcement could not be signed");
                None
            }
        };
        let Some(announcement) = announcement else {
            return;
        };
        let bytes = match announcement.to_bytes() {
            Ok(bytes) => Bytes::from(bytes),
            Err(e) => {
                warn!(error = %e, "capability announcement could not be encoded");
                return;
            }
        };
        let version = announcement.version;
        if let Err(e) = self
            .handle
            .index_mut()
            .handle_announcement(now, announcement, None)
        {
            warn!(error = %e, "own capability announcement refused by the index");
        }
        let shared = &self.handle.shared;
        shared.own.store(Some(Arc::new(bytes.clone())));
        shared.counters.announced.fetch_add(1, Ordering::Relaxed);
        debug!(version, "announcing capabilities");
        for peer in self.peers() {
            self.send(peer, &bytes).await;
        }
    }

    /// Folds a batch of announcements and forwards the ones the index says to.
    async fn on_inbound(&mut self, batch: Vec<Inbound>) {
        let now = unix_secs();
        let counters = &self.handle.shared.counters;
        counters
            .received
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        let mut onward: Vec<(Vec<u8>, NodeId, Option<NodeId>)> = Vec::new();
        {
            let mut index = self.handle.index_mut();
            for inbound in &batch {
                let origin = claimed_node(&inbound.body);
                let via = (origin != Some(inbound.peer)).then_some(inbound.peer);
                match index.handle_announcement(now, inbound.body.as_ref(), via) {
                    Ok(outcome) if outcome.forward() => {
                        if let Some(copy) = next_hop_copy(&inbound.body) {
                            onward.push((copy, inbound.peer, origin));
                        }
                    }
                    Ok(_) => {}
                    Err(e) => debug!(peer = %inbound.peer, error = %e, "announcement refused"),
                }
            }
        }
        if onward.is_empty() {
            return;
        }
        let peers = self.peers();
        for (copy, from, origin) in onward {
            for &peer in &peers {
                if peer != from && Some(peer) != origin {
                    self.send(peer, &copy).await;
                    counters.forwarded.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// A new session peer gets this node's announcement and what the index holds.
    async fn on_peer_up(&mut self, peer: NodeId) {
        let own = self.handle.shared.own.load_full();
        if let Some(own) = own {
            self.send(peer, &own).await;
        }
        let local = self.handle.local();
        let copies: Vec<Vec<u8>> = {
            let index = self.handle.index();
            index
                .nodes()
                .iter()
                .filter(|&&node| node != local && node != peer)
                .filter_map(|&node| index.get(node))
                .filter(|entry| entry.announcement.hop_count + 1 < index.config().max_hops)
                .take(self.handle.shared.sync_on_up)
                .filter_map(|entry| {
                    let mut copy = entry.announcement.clone();
                    copy.hop_count += 1;
                    copy.to_bytes().ok()
                })
                .collect()
        };
        let counters = &self.handle.shared.counters;
        for copy in copies {
            self.send(peer, &copy).await;
            counters.synced.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Arms the timer at the earlier of the next announcement and the next expiry.
    fn arm(&mut self, myself: &ActorRef<CapabilityMsg>) {
        let announce = self.handle.announcer().poll_timeout();
        let expiry = self.handle.index().poll_timeout().unwrap_or(u64::MAX);
        // Act at the start of the due second.
        let wait = until_unix_secs(announce.min(expiry)).clamp(MIN_WAIT, MAX_WAIT);
        self.timer = self.timer.wrapping_add(1);
        let token = self.timer;
        myself.send_after(wait, move || CapabilityMsg::Tick(token));
    }

    /// Every established session peer.
    fn peers(&self) -> Vec<NodeId> {
        self.wire.peers().iter().map(|k| k.node).collect()
    }

    async fn send(&self, peer: NodeId, body: &[u8]) {
        let counters = &self.handle.shared.counters;
        match self
            .wire
            .send_envelope(peer, Subprotocol::CAPABILITY, None, body)
            .await
        {
            Ok(()) => counters.sent.fetch_add(1, Ordering::Relaxed),
            Err(e) => {
                debug!(%peer, error = %e, "announcement not sent");
                counters.send_errors.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

/// The node id an encoded announcement claims (unverified), if the bytes are long enough.
fn claimed_node(bytes: &[u8]) -> Option<NodeId> {
    let raw = bytes.get(NODE_ID_AT..NODE_ID_AT + 8)?;
    let mut id = [0u8; 8];
    id.copy_from_slice(raw);
    Some(NodeId(u64::from_le_bytes(id)))
}

/// A copy of an encoded announcement one hop further: the unsigned last byte, the hop
/// count, plus one. The index only asks for forwarding below its hop limit, so the count
/// cannot overflow; a saturated count would be refused downstream anyway.
fn next_hop_copy(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut copy = bytes.to_vec();
    let hops = copy.last_mut()?;
    *hops = hops.saturating_add(1);
    Some(copy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use netrun_messages::{CapabilityAnnouncement, CapabilitySet, Identity};

    #[test]
    fn claimed_node_and_hop_copy_read_the_layout() {
        let id = Identity::from_seed([3; 32]);
        let ann = CapabilityAnnouncement::sign(&id, 1, 1_800_000_000, 300, CapabilitySet::new())
            .expect("signs");
        let bytes = ann.to_bytes().expect("encodes");
        assert_eq!(claimed_node(&bytes), Some(id.node_id()));
        assert_eq!(claimed_node(&bytes[..5]), None);
        let copy = next_hop_copy(&bytes).expect("non-empty");
        let decoded = CapabilityAnnouncement::from_bytes(&copy).expect("decodes");
        assert_eq!(decoded.hop_count, 1);
        decoded
            .verify()
            .expect("the hop count is outside the signature");
    }
}
