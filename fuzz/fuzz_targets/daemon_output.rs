//! Daemon output decode: never panics; whatever decodes re-encodes to the same bytes, and
//! verifying it against an arbitrary daemon key never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netrun_messages::EntityId;
use netrun_runtime::daemon::{ChainVerifier, Output};

fuzz_target!(|data: &[u8]| {
    if let Ok(output) = Output::from_bytes(data) {
        assert_eq!(output.encoded_len(), data.len());
        assert_eq!(output.to_bytes().expect("decoded outputs are encodable"), data);
        let key = output
            .events()
            .first()
            .map_or([0; 32], |event| event.link.parent_hash);
        let mut verifier = ChainVerifier::new(EntityId(key));
        let _ = verifier.verify(&output);
    }
});
