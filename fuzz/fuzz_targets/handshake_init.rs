//! Fuzz the handshake responder (and the initiator's response parser) with arbitrary bytes.
//!
//! Byte 0 selects the mode: even → the input is the datagram as is; odd → the input is
//! XORed over a valid message-1 datagram, so mutations reach past the header checks.
#![no_main]

use std::sync::OnceLock;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use netrun_messages::Identity;
use netrun_runtime::handshake::{Initiator, LiveSession, Responder, ResponderConfig};
use netrun_runtime::rand_core::{CryptoRng, Error, RngCore};

const PSK: [u8; 32] = [7; 32];

/// A fixed-output RNG: fuzzing wants reproducible runs, not secret keys.
struct FixedRng(u8);

impl RngCore for FixedRng {
    fn next_u32(&mut self) -> u32 {
        u32::from_le_bytes([self.0; 4])
    }
    fn next_u64(&mut self) -> u64 {
        u64::from_le_bytes([self.0; 8])
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        dest.fill(self.0);
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl CryptoRng for FixedRng {}

struct Fixture {
    initiator: Identity,
    responder: Identity,
    valid_init: Vec<u8>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let initiator = Identity::from_seed([1; 32]);
        let responder = Identity::from_seed([2; 32]);
        let (_, valid_init) = Initiator::start(
            Instant::now(),
            &initiator,
            responder.entity_id(),
            &PSK,
            9,
            &mut FixedRng(3),
        )
        .expect("start");
        Fixture { initiator, responder, valid_init }
    })
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let now = Instant::now();
    let datagram: Vec<u8> = match data.first() {
        Some(mode) if mode % 2 == 1 => {
            let mut d = f.valid_init.clone();
            for (byte, x) in d.iter_mut().zip(&data[1..]) {
                *byte ^= x;
            }
            d
        }
        _ => data.to_vec(),
    };
    let mut responder = Responder::new(f.responder.clone(), &PSK, ResponderConfig::default());
    let live = LiveSession { static_key: [5; 32], initiator_ephemeral: [6; 32], last_heard: now };
    let _ = responder.handle_init(now, &datagram, None, &mut FixedRng(4));
    let _ = responder.handle_init(now, &datagram, Some(&live), &mut FixedRng(4));

    let (mut initiator, _) =
        Initiator::start(now, &f.initiator, f.responder.entity_id(), &PSK, 9, &mut FixedRng(3))
            .expect("start");
    let _ = initiator.handle_response(now, &datagram);
});
