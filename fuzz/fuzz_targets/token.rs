//! Permission token decode: never panics; whatever decodes re-encodes to the same bytes,
//! and checking it against any clock never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netrun_messages::token::{PermissionToken, TokenScope, WIRE_SIZE};

fuzz_target!(|data: &[u8]| {
    if let Ok(token) = PermissionToken::from_bytes(data) {
        assert_eq!(data.len(), WIRE_SIZE);
        assert_eq!(&token.to_bytes()[..], data);
        let now = token.not_before().wrapping_mul(3);
        let _ = token.check(
            now,
            u64::from(data[0]) * 7,
            token.subject(),
            token.channel_hash(),
            TokenScope::SUBSCRIBE,
        );
    }
});
