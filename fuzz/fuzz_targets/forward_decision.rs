//! The relay decision on arbitrary bytes: never panics, writes only bytes 3 and 4, and only
//! when it decides to forward.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use netrun_messages::NodeId;
use netrun_runtime::routing::{
    Decision, RecentlySeen, Route, RouteSource, RoutingConfig, RoutingTable, forward_decision,
};

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let local = NodeId(7);
    let mut table = RoutingTable::new(local, RoutingConfig::default());
    // Route every destination whose id is small, so both lookup outcomes are reachable.
    for dst in 0..16u64 {
        table.handle_route(
            now,
            NodeId(dst),
            Route {
                next_hop: NodeId(99),
                metric: 1,
                expires_at: now + Duration::from_secs(60),
                source: RouteSource::Pingwave,
            },
        );
    }
    let snapshot = table.snapshot();
    let mut seen = RecentlySeen::new(64, Duration::from_secs(1));
    let mut packet = data.to_vec();
    let decision = forward_decision(local, &snapshot, &mut packet, &mut seen);
    match decision {
        Decision::Forward { next_hop } => {
            assert_eq!(next_hop, NodeId(99));
            assert_eq!(packet[3], data[3] - 1);
            assert_eq!(packet[4], data[4].saturating_add(1));
            for (i, (a, b)) in packet.iter().zip(data).enumerate() {
                if i != 3 && i != 4 {
                    assert_eq!(a, b);
                }
            }
            // The same sealed packet again is a duplicate (handshake kinds rely on TTL).
            let mut again = data.to_vec();
            let again = forward_decision(local, &snapshot, &mut again, &mut seen);
            if data[1] >= 3 {
                assert!(matches!(again, Decision::Drop(_)));
            }
        }
        _ => assert_eq!(packet, data),
    }
});
