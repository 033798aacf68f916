//! Capability announcement decode: never panics; whatever decodes re-encodes to the same
//! bytes, and verifying it never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netrun_messages::CapabilityAnnouncement;

fuzz_target!(|data: &[u8]| {
    if let Ok(ann) = CapabilityAnnouncement::from_bytes(data) {
        assert_eq!(ann.encoded_len(), Ok(data.len()));
        assert_eq!(
            ann.to_bytes().expect("decoded announcements are encodable"),
            data
        );
        let _ = ann.verify();
        let _ = ann.is_expired(u64::MAX);
    }
});
