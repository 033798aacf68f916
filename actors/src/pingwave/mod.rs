//! `Pingwave`: drives the pingwave core over sessions.
//!
//! ```text
//!  timer (core.poll_timeout) ──▶ poll_wave ──▶ Wave to every direct neighbour
//!  Wire::serve(PINGWAVE) ──▶ bounded queue ──▶ pump (one batch in flight) ──▶ actor
//!      Wave from neighbour N ──▶ core.handle_wave(now, N, link RTT, wave)
//!          ├─ echo    ──▶ N (it is the origin: it measures the link RTT)
//!          ├─ forward ──▶ every other direct neighbour (hop radius)
//!          └─ route   ──▶ router: origin via N, metric = hops (RouterHandle::offer)
//!      Echo from N ──▶ core.handle_echo ──▶ link RTT on the edge to N
//!      Withdraw from N ──▶ core.handle_withdraw ──▶ router: drop origin via N
//!                                                  (RouterHandle::withdraw)
//!  PeerEvent Suspected/Down ──▶ core.handle_peer_down (paths through N forgotten)
//!  after each of these ──▶ core.poll_withdraw ──▶ Withdraw to every neighbour, or to one
//! ```
//!
//! Only direct sessions are neighbours: waves are never sent over, nor accepted from, a
//! routed session, because a route's next hop must be a node this one can hand packets to.
//! The acceptance rule (fresher sequence and not worse hops), duplicate suppression and
//! self-edge filtering are the core's (`netrun_runtime::pingwave`). The actor lives in the
//! Discovery subtree. Every wave interval it publishes the nodes it has heard and its
//! counters into a [`PingwaveHandle`], which outlives its incarnations: the discovery
//! coordinator (source `pingwave`) and `Node::pingwave_seen` read it without a call.

mod actor;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use netrun_messages::NodeId;
use netrun_runtime::pingwave::PingwaveConfig;

pub use actor::PingwaveActor;

use crate::events::PeerEvent;
use crate::pump::Credit;
use crate::wire::{Inbound, Wire};

/// Startup inputs of the pingwave actor.
#[derive(Debug)]
pub struct PingwaveArgs {
    /// The shared data path.
    pub wire: Arc<Wire>,
    /// Interval, hop radius, route lifetime, bounds.
    pub config: PingwaveConfig,
    /// Where the actor publishes what it has seen (shared across its incarnations).
    pub handle: PingwaveHandle,
}

/// What the pingwave actor last published: the nodes it has heard and its counters.
///
/// Cloning shares the view; the actor replaces it once per wave interval, so a reader is
/// at most one interval behind.
#[derive(Debug, Clone, Default)]
pub struct PingwaveHandle {
    view: Arc<ArcSwap<PingwaveView>>,
}

#[derive(Debug, Default)]
struct PingwaveView {
    seen: Vec<SeenNode>,
    status: PingwaveStatus,
}

impl PingwaveHandle {
    /// An empty view, for the actor to fill.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every node heard from, sorted by id.
    pub fn seen(&self) -> Vec<SeenNode> {
        self.view.load().seen.clone()
    }

    /// The counters.
    pub fn status(&self) -> PingwaveStatus {
        self.view.load().status
    }

    fn publish(&self, seen: Vec<SeenNode>, status: PingwaveStatus) {
        self.view.store(Arc::new(PingwaveView { seen, status }));
    }
}

/// A node this node's pingwaves have heard from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeenNode {
    /// The wave's origin.
    pub node: NodeId,
    /// Hops to it on the recorded path (1 = a direct neighbour).
    pub hops: u8,
    /// The neighbour the recorded path goes through.
    pub via: NodeId,
    /// Sum of the measured link RTTs along the recorded path.
    pub rtt: Duration,
    /// Freshest wave sequence heard from it.
    pub last_seq: u64,
}

/// Counters of the pingwave actor (since its current incarnation started).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PingwaveStatus {
    /// Waves this node started.
    pub waves_started: u64,
    /// Wave, echo and withdrawal messages sent (started, relayed, echoed, withdrawn; one
    /// per neighbour).
    pub sent: u64,
    /// Wave, echo and withdrawal messages received.
    pub received: u64,
    /// Withdrawals sent (one per neighbour).
    pub withdrawals_sent: u64,
    /// Withdrawals received that removed a route through their sender.
    pub withdrawals_accepted: u64,
    /// Messages that did not decode.
    pub malformed: u64,
    /// Messages from a peer that is not a direct neighbour (ignored).
    pub not_neighbour: u64,
    /// Origins in the proximity graph.
    pub nodes: usize,
    /// Direct edges in the proximity graph.
    pub edges: usize,
}

/// Messages the pingwave actor handles.
#[derive(Debug)]
pub enum PingwaveMsg {
    /// Envelopes from the bounded queue; the credit is held until they are handled, so the
    /// queue's bound holds.
    Inbound(Vec<Inbound>, Credit),
    /// A session event.
    Peer(PeerEvent),
    /// The wave timer.
    Tick,
}
