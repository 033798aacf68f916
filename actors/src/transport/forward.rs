//! The relay step of the receive loop: datagrams addressed to another node.
//!
//! The loop owns a [`Relay`]: its recently-seen memory (no lock: one loop per socket) and
//! the routing snapshot it loaded at the start of the batch. A datagram is relayed only if
//! it came from a direct session neighbour's address; then
//! [`forward_decision`](netrun_runtime::routing::forward_decision) rewrites TTL and hop
//! count in place and names the next hop, and the datagram goes to that neighbour's
//! address with a non-blocking send. The payload is never read, let alone opened: a relay
//! holds no key for it. Every outcome has a counter.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use netrun_runtime::routing::{
    Decision, DropReason, RecentlySeen, RoutingSnapshot, forward_decision,
};
use tokio::net::UdpSocket;
use tracing::trace;

use crate::stats::TransportStats;
use crate::wire::Wire;

/// What the receive loop keeps for relaying.
#[derive(Debug, Default)]
pub(super) struct Relay {
    seen: RecentlySeen,
    routes: Arc<RoutingSnapshot>,
}

impl Relay {
    /// Loads the latest snapshot and ages the recently-seen memory, once per batch.
    pub(super) fn begin_batch(&mut self, wire: &Wire, now: Instant) {
        self.routes = wire.routes();
        self.seen.handle_tick(now);
    }

    /// Relays one datagram whose destination is not this node, or drops and counts it.
    pub(super) fn forward(
        &mut self,
        wire: &Wire,
        socket: &UdpSocket,
        datagram: &mut [u8],
        from: SocketAddr,
    ) {
        let stats = wire.stats();
        if !wire.is_neighbour(from) {
            TransportStats::bump(&stats.dropped_not_neighbour);
            return;
        }
        let next_hop = match forward_decision(wire.local(), &self.routes, datagram, &mut self.seen)
        {
            Decision::Forward { next_hop } => next_hop,
            // The caller only hands over datagrams for other nodes.
            Decision::Deliver => return,
            Decision::Drop(reason) => {
                let counter = match reason {
                    DropReason::Malformed => &stats.dropped_malformed,
                    DropReason::SelfOriginated => &stats.dropped_looped,
                    DropReason::Duplicate => &stats.dropped_duplicate,
                    DropReason::NoRoute => &stats.dropped_no_route,
                    DropReason::TtlExpired => &stats.dropped_ttl_expired,
                };
                TransportStats::bump(counter);
                return;
            }
        };
        let Some(addr) = wire.neighbour_addr(next_hop) else {
            // The snapshot names a neighbour whose session just ended.
            TransportStats::bump(&stats.dropped_no_route);
            return;
        };
        match socket.try_send_to(datagram, addr) {
            Ok(_) => {
                TransportStats::bump(&stats.forwarded);
                TransportStats::bump(&stats.tx_packets);
                stats.tx_bytes.fetch_add(datagram.len() as u64, Relaxed);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                TransportStats::bump(&stats.dropped_forward_full);
            }
            Err(e) => {
                trace!(error = %e, %addr, "relay send failed");
                TransportStats::bump(&stats.socket_errors);
            }
        }
    }
}
