//! Routing header parse and the relay rewrite: never panic; parse round-trips; forwarding
//! touches only the TTL and hop-count bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netrun_messages::routing::{Forward, ROUTING_HEADER_LEN, RoutingHeader};

fuzz_target!(|data: &[u8]| {
    let parsed = RoutingHeader::parse(data);
    if let Ok(rh) = parsed {
        let mut out = [0u8; ROUTING_HEADER_LEN];
        rh.write(&mut out);
        // The relay does not police the reserved bytes 5..8; everything else must match.
        assert_eq!(&out[..5], &data[..5]);
        assert_eq!(&out[8..], &data[8..ROUTING_HEADER_LEN]);
        assert_eq!(RoutingHeader::parse(&out).ok(), Some(rh));
    }
    let mut packet = data.to_vec();
    match RoutingHeader::forward_in_place(&mut packet) {
        Ok(Forward::Onward { dst }) => {
            assert_eq!(packet[3], data[3] - 1);
            assert_eq!(packet[4], data[4].saturating_add(1));
            if let Ok(rh) = parsed {
                assert_eq!(rh.dst, dst);
            }
            for (i, (a, b)) in packet.iter().zip(data).enumerate() {
                if i != 3 && i != 4 {
                    assert_eq!(a, b);
                }
            }
        }
        Ok(Forward::TtlExpired) => {
            assert_eq!(data[3], 0);
            assert_eq!(packet, data);
        }
        Err(_) => {
            assert!(parsed.is_err());
            assert_eq!(packet, data);
        }
    }
});
