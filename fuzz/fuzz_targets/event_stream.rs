//! Event-stream reassembly: arbitrary bytes, cut into chunks at fuzzer-chosen points, never
//! panic the reassembler and never make it buffer more than one maximal frame; every
//! event it yields re-encodes to a frame that decodes to the same event; and whatever the
//! chunking, a reliable stream yields the same events as the whole byte string at once.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use netrun_messages::channel::event::EventFrame;
use netrun_runtime::channel::{Event, FrameReassembler, MAX_FRAME_LEN, pack};

fn run(chunks: impl Iterator<Item = Bytes>, reliable: bool) -> (Vec<Event>, bool) {
    let mut r = FrameReassembler::new(reliable);
    let mut out = Vec::new();
    for chunk in chunks {
        if r.push(chunk, &mut out).is_err() {
            return (out, false);
        }
        assert!(r.buffered() <= MAX_FRAME_LEN);
    }
    (out, true)
}

/// The frame an event was read from.
fn frame_of(event: &Event) -> EventFrame<'_> {
    EventFrame {
        channel: event.channel,
        seq: event.seq,
        trace: event.trace,
        payload: &event.payload,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    let bytes = Bytes::copy_from_slice(rest);
    let step = usize::from(cut).max(1);
    let chunks = (0..bytes.len())
        .step_by(step)
        .map(|at| bytes.slice(at..(at + step).min(bytes.len())));
    let (events, ok) = run(chunks.clone(), true);
    for event in &events {
        let frame = frame_of(event);
        let encoded = frame.to_vec().expect("decoded payloads fit");
        assert_eq!(EventFrame::decode(&encoded).expect("re-decodes"), frame);
    }
    let (whole, whole_ok) = run(std::iter::once(bytes.clone()), true);
    if ok && whole_ok {
        assert_eq!(events, whole, "chunking does not change a reliable stream");
    }
    let _ = run(chunks, false);

    // Packing the decoded events back gives pieces that cover the batch in order.
    let mut buf = Vec::new();
    let mut ends = Vec::new();
    for event in &whole {
        frame_of(event).encode_into(&mut buf).expect("fits");
        ends.push(buf.len());
    }
    let packed = pack(&ends, step * 8, true);
    let mut at = 0;
    for piece in &packed.pieces {
        assert_eq!(piece.range.start, at);
        assert!(piece.range.len() <= step * 8);
        at = piece.range.end;
    }
    assert_eq!(at, buf.len());
});
