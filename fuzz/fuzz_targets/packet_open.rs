//! Fuzz `open_datagram` / `open_heartbeat` with arbitrary bytes.
//!
//! Byte 0 selects the mode: even → the input is the datagram as is; odd → the input is
//! XORed over a validly sealed datagram (or heartbeat), so mutations reach the AEAD and the
//! replay window. Invariant checked: a mutated datagram never opens unless it equals the
//! original in every authenticated byte.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netrun_messages::{Header, NodeId, PacketKind};
use netrun_runtime::crypto::{
    RxKey, TxKey, open_datagram, open_heartbeat, seal_datagram, seal_heartbeat,
};

const KEY: [u8; 32] = [0x42; 32];

fuzz_target!(|data: &[u8]| {
    let tx = TxKey::with_counter(&KEY, 5);
    let rx = RxKey::new(&KEY);
    let mut sealed = Vec::new();
    let mode = data.first().copied().unwrap_or(0);
    if mode % 4 == 3 {
        seal_heartbeat(&tx, NodeId(1), NodeId(2), 4, &mut sealed).expect("seal");
    } else {
        let header = Header::new(PacketKind::Data, NodeId(1), NodeId(2));
        let body = data.get(1..).unwrap_or(&[]);
        seal_datagram(&tx, header, &body[..body.len().min(64)], &mut sealed).expect("seal");
    }
    let mut datagram = if mode % 2 == 1 {
        let mut d = sealed.clone();
        for (byte, x) in d.iter_mut().zip(data.iter().skip(1)) {
            *byte ^= x;
        }
        d
    } else {
        data.to_vec()
    };
    let heartbeat = open_heartbeat(&rx, &datagram);
    let opened = open_datagram(&rx, &mut datagram);
    if mode % 2 == 1 {
        // Only ttl (byte 3) and hop_count (byte 4) are not authenticated.
        let mut masked_out: Vec<u8> = data.iter().skip(1).copied().collect();
        masked_out.resize(sealed.len(), 0);
        masked_out[3] = 0;
        masked_out[4] = 0;
        let authenticated_change = masked_out.iter().any(|&x| x != 0);
        if authenticated_change {
            assert!(heartbeat.is_err() && opened.is_err(), "a tampered datagram opened");
        }
    }
});
