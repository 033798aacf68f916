//! Stream segment header and control frame decoders: never panic; whatever decodes
//! re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use netrun_messages::stream::{SEGMENT_HEADER_LEN, SegmentHeader, StreamFrame};

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = StreamFrame::decode(data) {
        assert_eq!(frame.encoded_len(), data.len());
        assert_eq!(frame.to_vec(), data);
    }
    if let Ok((header, payload)) = SegmentHeader::parse(data) {
        assert_eq!(&header.encode()[..], &data[..SEGMENT_HEADER_LEN]);
        assert_eq!(payload, &data[SEGMENT_HEADER_LEN..]);
    }
});
