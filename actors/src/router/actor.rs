//! The router actor: table, event subscription, expiry timer, snapshot publication.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use netrun_messages::NodeId;
use netrun_runtime::routing::{Route, RouteSource, RoutingTable};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::time::Instant;
use tracing::{debug, info_span};

use super::{RouteInfo, RouterArgs, RouterMsg};
use crate::events::PeerEvent;
use crate::pump::{self, Tasks};
use crate::wire::Wire;

/// How often the router re-reads the wire's sessions, refreshing direct routes and
/// withdrawing any whose session ended without an event reaching it.
const RESYNC_PERIOD: Duration = Duration::from_secs(5);
/// Lifetime of a direct route: refreshed every resync, so it only lapses if the router
/// stopped hearing about the session for several resyncs.
const DIRECT_ROUTE_TTL: Duration = Duration::from_secs(30);

/// The `Router` actor.
#[derive(Debug, Clone, Copy, Default)]
pub struct RouterActor;

/// The router's state.
#[derive(Debug)]
pub struct RouterState {
    wire: Arc<Wire>,
    table: RoutingTable,
    /// Direct neighbours the failure detector currently suspects (no direct route).
    suspected: HashSet<NodeId>,
    /// Version of the snapshot last stored in the wire.
    published: Option<u64>,
    /// Deadline the pending expiry timer was set for.
    armed: Option<Instant>,
    _tasks: Tasks,
}

impl Actor for RouterActor {
    type Msg = RouterMsg;
    type State = RouterState;
    type Arguments = RouterArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        // Subscribe before reading the sessions, so no change falls between the two; a
        // missed event resyncs from the wire.
        let events = pump::peer_events(
            &args.wire,
            myself.clone(),
            RouterMsg::Peer,
            Some(|| RouterMsg::Resync),
        );
        let resync = myself.send_interval(RESYNC_PERIOD, || RouterMsg::Resync);
        let mut state = RouterState {
            table: RoutingTable::new(args.wire.local(), args.config),
            wire: args.wire,
            suspected: HashSet::new(),
            published: None,
            armed: None,
            _tasks: Tasks::new([events, resync]),
        };
        state.resync_sessions(now());
        state.publish(&myself);
        state.wire.set_router(Some(myself));
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let _span = info_span!("router", node = %state.wire.local()).entered();
        let now = now();
        match message {
            RouterMsg::Peer(event) => state.on_event(now, event),
            RouterMsg::Resync => state.resync_sessions(now),
            RouterMsg::Offer(routes) => {
                for (destination, route) in routes {
                    state.offer(now, destination, route);
                }
            }
            RouterMsg::Withdraw(routes) => {
                for (destination, next_hop) in routes {
                    if state.table.handle_withdraw(destination, next_hop) {
                        debug!(%destination, %next_hop, "route withdrawn by the next hop");
                    }
                }
            }
            RouterMsg::Hint {
                destination,
                next_hop,
                metric,
                ttl,
            } => {
                let route = Route {
                    next_hop,
                    metric,
                    expires_at: (now + ttl).into_std(),
                    source: RouteSource::Discovery,
                };
                state.offer(now, destination, route);
            }
            RouterMsg::Expire => {
                state.armed = None;
                let changed = state.table.handle_timeout(now.into_std());
                if !changed.is_empty() {
                    debug!(?changed, "routes expired");
                }
            }
            RouterMsg::Routes(reply) => {
                let _ = reply.send(state.routes(now));
            }
        }
        state.publish(&myself);
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // The last snapshot stays in the wire: relays keep forwarding until a new
        // incarnation publishes its own.
        state.wire.set_router(None);
        Ok(())
    }
}

impl RouterState {
    fn on_event(&mut self, now: Instant, event: PeerEvent) {
        match event {
            PeerEvent::Up { node, .. } | PeerEvent::Recovered { node } => {
                self.suspected.remove(&node);
                self.add_direct(now, node);
            }
            // Silent → suspect → reroute: a suspected neighbour carries no traffic.
            PeerEvent::Suspected { node } => {
                if self.is_direct(node) {
                    self.suspected.insert(node);
                }
                self.peer_down(node);
            }
            PeerEvent::Down { node } => {
                self.suspected.remove(&node);
                self.peer_down(node);
            }
        }
    }

    /// Refreshes the direct route of every direct, unsuspected session and withdraws the
    /// routes through any neighbour that no longer has one.
    fn resync_sessions(&mut self, now: Instant) {
        let live: HashSet<NodeId> = self
            .wire
            .peers()
            .iter()
            .filter(|k| !k.routed)
            .map(|k| k.node)
            .collect();
        self.suspected.retain(|n| live.contains(n));
        let gone: Vec<NodeId> = self
            .table
            .routes()
            .map(|(_, r)| r.next_hop)
            .filter(|hop| !live.contains(hop))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        for hop in gone {
            self.peer_down(hop);
        }
        for node in live {
            if !self.suspected.contains(&node) {
                self.add_direct(now, node);
            }
        }
    }

    fn is_direct(&self, node: NodeId) -> bool {
        self.wire.peer(node).is_some_and(|k| !k.routed)
    }

    fn add_direct(&mut self, now: Instant, node: NodeId) {
        // Only a neighbour can be a next hop; a routed session's peer is reached through one.
        if !self.is_direct(node) {
            return;
        }
        let route = Route {
            next_hop: node,
            metric: 1,
            expires_at: (now + DIRECT_ROUTE_TTL).into_std(),
            source: RouteSource::Direct,
        };
        self.offer(now, node, route);
    }

    fn offer(&mut self, now: Instant, destination: NodeId, route: Route) {
        // A probe or hint through a neighbour the detector suspects would undo the reroute.
        if route.source != RouteSource::Direct && self.suspected.contains(&route.next_hop) {
            return;
        }
        if self.table.handle_route(now.into_std(), destination, route) {
            debug!(%destination, next_hop = %route.next_hop, metric = route.metric, "route installed");
        }
    }

    fn peer_down(&mut self, node: NodeId) {
        let changed = self.table.handle_peer_down(node);
        if !changed.is_empty() {
            debug!(%node, ?changed, "rerouted around a neighbour");
        }
    }

    fn routes(&self, now: Instant) -> Vec<RouteInfo> {
        let now = now.into_std();
        let mut routes: Vec<RouteInfo> = self
            .table
            .routes()
            .map(|(destination, r)| RouteInfo {
                destination,
                next_hop: r.next_hop,
                metric: r.metric,
                source: r.source,
                expires_in: r.expires_at.saturating_duration_since(now),
            })
            .collect();
        routes.sort_by_key(|r| r.destination);
        routes
    }

    /// Stores a changed snapshot in the wire and arms the expiry timer.
    fn publish(&mut self, myself: &ActorRef<RouterMsg>) {
        let snapshot = self.table.snapshot();
        if self.published != Some(snapshot.version()) {
            self.published = Some(snapshot.version());
            self.wire.set_routes(snapshot);
        }
        let Some(deadline) = self.table.poll_timeout() else {
            return;
        };
        let deadline = Instant::from_std(deadline);
        if self.armed.is_some_and(|armed| armed <= deadline) {
            return;
        }
        self.armed = Some(deadline);
        let wait = deadline.saturating_duration_since(Instant::now());
        myself.send_after(wait, || RouterMsg::Expire);
    }
}

/// The clock the router reads (tokio's, so paused-time tests drive it).
fn now() -> Instant {
    Instant::now()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::RouterHandle;
    use netrun_runtime::routing::RoutingConfig;

    fn pingwave_route(next_hop: u64, metric: u32, ttl: Duration) -> Route {
        Route {
            next_hop: NodeId(next_hop),
            metric,
            expires_at: (Instant::now() + ttl).into_std(),
            source: RouteSource::Pingwave,
        }
    }

    async fn settle(handle: &RouterHandle) -> Vec<RouteInfo> {
        // A call is answered after every message sent before it.
        handle.routes().await
    }

    #[tokio::test]
    async fn offers_reach_the_snapshot_and_expire_and_resync_withdraws() {
        let wire = Wire::new(NodeId(1));
        let args = RouterArgs {
            wire: Arc::clone(&wire),
            config: RoutingConfig::default(),
        };
        let (router, task) = Actor::spawn(None, RouterActor, args)
            .await
            .expect("router starts");
        let handle = RouterHandle::new(Arc::clone(&wire));
        assert!(wire.router().is_some());

        assert!(handle.offer(vec![
            (NodeId(9), pingwave_route(2, 3, Duration::from_secs(60))),
            (NodeId(8), pingwave_route(3, 2, Duration::from_millis(50))),
        ]));
        assert!(handle.hint(NodeId(7), NodeId(2), 5, Duration::from_secs(60)));
        let routes = settle(&handle).await;
        assert_eq!(
            routes
                .iter()
                .map(|r| (r.destination.0, r.next_hop.0, r.metric))
                .collect::<Vec<_>>(),
            vec![(7, 2, 5), (8, 3, 2), (9, 2, 3)]
        );
        assert_eq!(wire.routes().lookup(NodeId(9)), Some(NodeId(2)));
        assert_eq!(routes[0].source, RouteSource::Discovery);

        // The expiry timer drops the short-lived route without any other message.
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert_eq!(wire.routes().lookup(NodeId(8)), None);
        assert_eq!(wire.routes().lookup(NodeId(9)), Some(NodeId(2)));

        // A better route through another hop replaces the installed one at once.
        handle.offer(vec![(
            NodeId(9),
            pingwave_route(4, 2, Duration::from_secs(60)),
        )]);
        settle(&handle).await;
        assert_eq!(wire.routes().lookup(NodeId(9)), Some(NodeId(4)));

        // Hop 4 withdraws its route to 9: the route through 2 is back at once; a
        // withdrawal of a discovery hint changes nothing.
        assert!(handle.withdraw(vec![(NodeId(9), NodeId(4)), (NodeId(7), NodeId(2))]));
        settle(&handle).await;
        assert_eq!(wire.routes().lookup(NodeId(9)), Some(NodeId(2)));
        assert_eq!(wire.routes().lookup(NodeId(7)), Some(NodeId(2)));

        // No session backs next hops 2 and 4: a resync withdraws every route through them.
        router
            .send_message(RouterMsg::Resync)
            .expect("router running");
        assert!(settle(&handle).await.is_empty());
        assert!(wire.routes().is_empty());

        router.stop(None);
        task.await.expect("router stops");
        assert!(wire.router().is_none());
        assert!(!handle.offer(Vec::new()));
    }
}
