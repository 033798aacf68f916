//! Causal event and signed event decode: never panic; whatever decodes re-encodes to the
//! same bytes; verifying a decoded event against itself never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netrun_messages::{CausalEvent, EntityId, SignedEvent};

fuzz_target!(|data: &[u8]| {
    if let Ok(event) = CausalEvent::from_bytes(data) {
        assert_eq!(event.encoded_len(), data.len());
        assert_eq!(
            event.to_bytes().expect("decoded events are encodable"),
            data
        );
    }
    if let Ok(signed) = SignedEvent::from_bytes(data) {
        assert_eq!(signed.encoded_len(), data.len());
        assert_eq!(
            signed.to_bytes().expect("decoded events are encodable"),
            data
        );
        let signer = EntityId(signed.event.link.parent_hash);
        let prev = signed.event.link;
        let _ = signed.verify(&signer, None);
        let _ = signed.verify(&signer, Some(&prev));
    }
});
