//! The per-packet relay decision.

use netrun_messages::NodeId;
use netrun_messages::header::HEADER_LEN;
use netrun_messages::routing::{Forward, RoutingHeader};

use super::seen::RecentlySeen;
use super::table::RoutingSnapshot;

/// What to do with a received datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// It is for this node: hand it to the session with its source.
    Deliver,
    /// Send it (already rewritten) to `next_hop`.
    Forward {
        /// The neighbour to send it to.
        next_hop: NodeId,
    },
    /// Drop it, and count the reason.
    Drop(DropReason),
}

/// Why a datagram was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// The header did not parse or the datagram is shorter than a packet header.
    Malformed,
    /// This node is the source: the packet looped back.
    SelfOriginated,
    /// The same `(src, stream, counter)` passed through recently.
    Duplicate,
    /// No route to the destination.
    NoRoute,
    /// The TTL ran out here.
    TtlExpired,
}

/// Decides what node `local` does with `packet` and, when forwarding, rewrites its TTL and
/// hop count in place (bytes 3 and 4; nothing else is written, the payload is never read).
///
/// Order: parse → self-originated → deliver if addressed here → duplicate suppression on
/// `(src, stream, counter)` for sealed kinds (handshake packets carry counter 0 and are
/// retried verbatim, so they rely on TTL alone) → route lookup → TTL. A packet dropped for
/// lack of a route is left unmodified.
#[inline]
pub fn forward_decision(
    local: NodeId,
    snapshot: &RoutingSnapshot,
    packet: &mut [u8],
    seen: &mut RecentlySeen,
) -> Decision {
    if packet.len() < HEADER_LEN {
        return Decision::Drop(DropReason::Malformed);
    }
    let Ok(rh) = RoutingHeader::parse(packet) else {
        return Decision::Drop(DropReason::Malformed);
    };
    if rh.src == local {
        return Decision::Drop(DropReason::SelfOriginated);
    }
    if rh.dst == local {
        return Decision::Deliver;
    }
    if rh.kind.is_sealed() {
        let stream = le_u64(&packet[24..32]);
        let counter = le_u64(&packet[32..40]);
        if seen.check_and_insert(rh.src, stream, counter) {
            return Decision::Drop(DropReason::Duplicate);
        }
    }
    let Some(next_hop) = snapshot.lookup(rh.dst) else {
        return Decision::Drop(DropReason::NoRoute);
    };
    match RoutingHeader::forward_in_place(packet) {
        Ok(Forward::Onward { .. }) => Decision::Forward { next_hop },
        Ok(Forward::TtlExpired) => Decision::Drop(DropReason::TtlExpired),
        Err(_) => Decision::Drop(DropReason::Malformed),
    }
}

#[inline]
fn le_u64(bytes: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[..8]);
    u64::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::{Route, RouteSource, RoutingConfig, RoutingTable};
    use crate::test_clock::t0;
    use netrun_messages::header::{Header, PacketKind};
    use std::time::Duration;

    #[test]
    fn each_drop_reason_and_forward() {
        let now = t0();
        let me = NodeId(1);
        let mut t = RoutingTable::new(me, RoutingConfig::default());
        t.handle_route(
            now,
            NodeId(9),
            Route {
                next_hop: NodeId(2),
                metric: 1,
                expires_at: now + Duration::from_secs(5),
                source: RouteSource::Direct,
            },
        );
        let snap = t.snapshot();
        let mut seen = RecentlySeen::new(16, Duration::from_secs(1));
        let mut decide = |src: u64, dst: u64, ttl: u8, counter: u64| {
            let mut h = Header::new(PacketKind::Data, NodeId(src), NodeId(dst));
            h.ttl = ttl;
            h.counter = counter;
            let mut p = h.encode().to_vec();
            let before = p.clone();
            let d = forward_decision(me, &snap, &mut p, &mut seen);
            (d, p != before)
        };
        assert_eq!(
            decide(5, 9, 4, 1),
            (
                Decision::Forward {
                    next_hop: NodeId(2)
                },
                true
            )
        );
        assert_eq!(
            decide(5, 9, 4, 1),
            (Decision::Drop(DropReason::Duplicate), false)
        );
        assert_eq!(
            decide(1, 9, 4, 2),
            (Decision::Drop(DropReason::SelfOriginated), false)
        );
        assert_eq!(decide(5, 1, 4, 3), (Decision::Deliver, false));
        assert_eq!(
            decide(5, 8, 4, 4),
            (Decision::Drop(DropReason::NoRoute), false)
        );
        assert_eq!(
            decide(5, 9, 0, 5),
            (Decision::Drop(DropReason::TtlExpired), false)
        );
        let mut short = vec![1u8; 30];
        assert_eq!(
            forward_decision(me, &snap, &mut short, &mut seen),
            Decision::Drop(DropReason::Malformed)
        );
    }
}
