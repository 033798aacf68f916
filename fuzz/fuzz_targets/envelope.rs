//! Control envelope decode: never panics; whatever decodes re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netrun_messages::envelope::Envelope;

fuzz_target!(|data: &[u8]| {
    if let Ok(env) = Envelope::decode(data) {
        assert_eq!(env.encoded_len(), data.len());
        assert_eq!(env.to_vec(), data);
    }
});
