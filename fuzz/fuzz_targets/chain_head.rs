//! Chain head decode: never panics; whatever decodes re-encodes to the same bytes, and
//! verifying it under an arbitrary key never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netrun_messages::{ChainHead, EntityId};

fuzz_target!(|data: &[u8]| {
    if let Ok(head) = ChainHead::from_bytes(data) {
        assert_eq!(&head.to_bytes()[..], data);
        let _ = head.verify(&EntityId(head.head_hash));
    }
});
