//! `Router`: owns the routing table and publishes its snapshot for the data path.
//!
//! ```text
//!  PeerEvent (Wire::subscribe) ─┐  Up/Recovered of a direct session → route, metric 1
//!                               │  Suspected/Down → handle_peer_down (reroute)
//!  pingwave routes (Offer) ─────┼─▶ RoutingTable ──▶ RoutingSnapshot ──▶ Wire::routes()
//!  withdrawals (Withdraw) ──────┤                                          read per packet by
//!  discovery hints (Hint) ──────┤      expiry timer from poll_timeout
//!  resync tick / lagged events ─┘                                          the receive loop and
//!                                                                          routed sends
//! ```
//!
//! The router lives in the Transport subtree (one_for_all with `UdpTransport`). A new
//! incarnation starts from the sessions the wire holds; probe-learned routes come back with
//! the next pingwaves. It registers itself in the wire ([`Wire::router`]) so actors in other
//! subtrees reach the current incarnation through a [`RouterHandle`] without holding a
//! stale reference. Routed sessions (`PeerKeys::routed`) are never direct routes: only a
//! neighbour can be a next hop.

mod actor;

use std::sync::Arc;
use std::time::Duration;

use netrun_messages::NodeId;
use netrun_runtime::routing::{Route, RouteSource, RoutingConfig};
use ractor::RpcReplyPort;

pub use actor::RouterActor;

use crate::events::PeerEvent;
use crate::wire::Wire;

/// Startup inputs of the router.
#[derive(Debug)]
pub struct RouterArgs {
    /// The shared data path (sessions, events, the snapshot slot).
    pub wire: Arc<Wire>,
    /// Table limits.
    pub config: RoutingConfig,
}

/// One installed route, as `Node::routes` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteInfo {
    /// Where packets are going.
    pub destination: NodeId,
    /// The neighbour they are handed to.
    pub next_hop: NodeId,
    /// Path cost (hops; 1 for a direct session).
    pub metric: u32,
    /// Where the route was learned.
    pub source: RouteSource,
    /// How long it lives unless refreshed.
    pub expires_in: Duration,
}

/// Messages the router handles.
#[derive(Debug)]
pub enum RouterMsg {
    /// A session event (from the router's own subscription).
    Peer(PeerEvent),
    /// Re-read every session from the wire (events were missed, or the periodic check).
    Resync,
    /// Routes learned from pingwaves: `(destination, route)`.
    Offer(Vec<(NodeId, Route)>),
    /// Neighbours withdrew routes: `(destination, next hop)`; the pingwave candidate to the
    /// destination through that next hop goes.
    Withdraw(Vec<(NodeId, NodeId)>),
    /// A discovery backend suggests reaching `destination` through `next_hop`.
    Hint {
        /// The node to reach.
        destination: NodeId,
        /// The neighbour to go through.
        next_hop: NodeId,
        /// Path cost.
        metric: u32,
        /// How long the hint holds.
        ttl: Duration,
    },
    /// The expiry timer.
    Expire,
    /// Report every installed route, sorted by destination.
    Routes(RpcReplyPort<Vec<RouteInfo>>),
}

/// A handle on whichever router incarnation is running, resolved through the wire.
#[derive(Debug, Clone)]
pub struct RouterHandle {
    wire: Arc<Wire>,
}

impl RouterHandle {
    /// A handle for the router of `wire`'s node.
    pub fn new(wire: Arc<Wire>) -> Self {
        Self { wire }
    }

    /// Offers routes learned from pingwaves. Returns `false` if no router is running (the
    /// routes are dropped; the next waves offer them again).
    pub fn offer(&self, routes: Vec<(NodeId, Route)>) -> bool {
        self.send(RouterMsg::Offer(routes))
    }

    /// Drops the pingwave routes `(destination, next hop)` that neighbours withdrew.
    /// Returns `false` if no router is running (the routes then expire as usual).
    pub fn withdraw(&self, routes: Vec<(NodeId, NodeId)>) -> bool {
        self.send(RouterMsg::Withdraw(routes))
    }

    /// Suggests a path to `destination` through the neighbour `next_hop` for `ttl` (a
    /// discovery hint; replaced by any strictly better route). Returns `false` if no router
    /// is running.
    pub fn hint(&self, destination: NodeId, next_hop: NodeId, metric: u32, ttl: Duration) -> bool {
        self.send(RouterMsg::Hint {
            destination,
            next_hop,
            metric,
            ttl,
        })
    }

    /// Every installed route, sorted by destination (empty if no router is running).
    pub async fn routes(&self) -> Vec<RouteInfo> {
        let Some(router) = self.wire.router() else {
            return Vec::new();
        };
        let routes: Result<Vec<RouteInfo>, _> = ractor::call_t!(router, RouterMsg::Routes, 5000);
        routes.unwrap_or_default()
    }

    fn send(&self, message: RouterMsg) -> bool {
        self.wire
            .router()
            .is_some_and(|r| r.send_message(message).is_ok())
    }
}
