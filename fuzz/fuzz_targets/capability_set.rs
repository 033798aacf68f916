//! Capability set decode: never panics; whatever decodes is within the encode limits and
//! re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netrun_messages::CapabilitySet;

fuzz_target!(|data: &[u8]| {
    if let Ok(set) = CapabilitySet::from_bytes(data) {
        assert_eq!(set.encoded_len(), Ok(data.len()));
        assert_eq!(set.to_bytes().expect("decoded sets are encodable"), data);
    }
});
