//! Daemon snapshot decode: never panics; whatever decodes re-encodes to the same bytes,
//! verifying it never panics, and a verifier can start from it without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netrun_runtime::daemon::{ChainVerifier, DaemonSnapshot};

fuzz_target!(|data: &[u8]| {
    if let Ok(snapshot) = DaemonSnapshot::from_bytes(data) {
        assert_eq!(snapshot.encoded_len(), data.len());
        assert_eq!(
            snapshot.to_bytes().expect("decoded snapshots are encodable"),
            data
        );
        let _ = snapshot.verify(&snapshot.entity);
        let _ = ChainVerifier::from_snapshot(&snapshot);
    }
});
