//! Capability filter decode: never panics; whatever decodes re-encodes to the same bytes.
//! The tail of the input, if it decodes as a set, is matched against the filter.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netrun_messages::{CapabilityFilter, CapabilitySet};

fuzz_target!(|data: &[u8]| {
    let split = data.first().map_or(0, |&b| usize::from(b)).min(data.len());
    let (filter_bytes, set_bytes) = data.split_at(split);
    if let Ok(filter) = CapabilityFilter::from_bytes(filter_bytes) {
        assert_eq!(filter.encoded_len(), Ok(filter_bytes.len()));
        assert_eq!(
            filter.to_bytes().expect("decoded filters are encodable"),
            filter_bytes
        );
        if let Ok(set) = CapabilitySet::from_bytes(set_bytes) {
            let _ = filter.matches(&set);
        }
    }
    if let Ok(filter) = CapabilityFilter::from_bytes(data) {
        assert_eq!(
            filter.to_bytes().expect("decoded filters are encodable"),
            data
        );
    }
});
