//! Packet header parse: never panics; whatever parses re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netrun_messages::header::{HEADER_LEN, Header};

fuzz_target!(|data: &[u8]| {
    if let Ok((header, payload)) = Header::parse(data) {
        assert_eq!(&header.encode()[..], &data[..HEADER_LEN]);
        assert_eq!(payload, &data[HEADER_LEN..]);
        assert_eq!(payload.len(), header.payload_len as usize);
        assert_eq!(Header::aad_of(&header.encode()), header.aad());
    }
});
