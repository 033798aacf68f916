//! Causal link decode: never panics; whatever decodes re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netrun_messages::CausalLink;

fuzz_target!(|data: &[u8]| {
    if let Ok(link) = CausalLink::from_bytes(data) {
        assert_eq!(&link.to_bytes()[..], data);
        let _ = link.is_canonical_genesis();
    }
});
