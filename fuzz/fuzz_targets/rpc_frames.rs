//! nRPC frame decoder: never panics; whatever decodes re-encodes to the same bytes, both
//! as a borrowed view and as shared `Bytes` slices. Decoded frames are then fed to a call
//! table and a dispatch table that hold a call with the frame's id, so the cores' real
//! paths (not just "unknown call") must take arbitrary frames without panicking.
#![no_main]

use std::time::Instant;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use netrun_messages::NodeId;
use netrun_messages::rpc::{Request, RpcFrame, ServiceName};
use netrun_runtime::rand_core::{self, RngCore};
use netrun_runtime::rpc::{CallSpec, Calls, CallsConfig, Dispatch, DispatchConfig};

/// Hands out one fixed value, so the call table picks the frame's call id.
struct Fixed(u64);

impl RngCore for Fixed {
    fn next_u32(&mut self) -> u32 {
        self.0 as u32
    }
    fn next_u64(&mut self) -> u64 {
        self.0
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        dest.fill(0);
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        dest.fill(0);
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(frame) = RpcFrame::decode(data) else {
        return;
    };
    assert_eq!(frame.encoded_len(), data.len());
    assert_eq!(frame.to_vec(), data);
    let shared = Bytes::copy_from_slice(data);
    let owned = RpcFrame::decode_bytes(&shared).expect("decodes as a slice, so as bytes");
    assert_eq!(owned.borrowed(), frame);

    let now = Instant::now();
    let peer = NodeId(1);
    let call_id = owned.call_id();
    let echo = ServiceName::from_static("echo").expect("valid name");
    let streaming = data.len() % 2 == 0;

    // Caller side: a pending call with the frame's id, to the frame's sender.
    let mut calls: Calls<()> = Calls::new(CallsConfig::default());
    let spec = if streaming {
        CallSpec::streaming(&echo, Bytes::new(), Some(4))
    } else {
        CallSpec::unary(&echo, Bytes::new())
    };
    let _ = calls.start(now, peer, spec, (), &mut Fixed(call_id.0));

    // Server side: an admitted request with the frame's id from the frame's sender.
    let mut dispatch: Dispatch<()> = Dispatch::new(DispatchConfig::default());
    let _ = dispatch.serve(echo.clone());
    if let Ok(request) = Request::new(call_id, echo.to_bytes(), Bytes::new()) {
        let request = if streaming { request.with_streaming(2) } else { request };
        let _ = dispatch.handle_request(now, peer, request, ());
    }

    match owned {
        RpcFrame::Request(request) => {
            let _ = dispatch.handle_request(now, peer, request, ());
        }
        RpcFrame::Cancel(id) => {
            let _ = dispatch.handle_cancel(peer, id);
        }
        RpcFrame::Credit(credit) => {
            let _ = dispatch.handle_credit(peer, credit);
        }
        other => {
            let _ = calls.handle_frame(now, peer, other);
            calls.consumed(now, call_id, 1);
            while calls.poll_event().is_some() {}
            while calls.poll_transmit().is_some() {}
        }
    }
    calls.handle_timeout(now);
    while calls.poll_transmit().is_some() {}
    dispatch.handle_timeout(now);
    while dispatch.poll_event().is_some() {}
});
