//! Round trips, fixed layouts and refusals of the RPC codec; status and service-name rules.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::error::DecodeError;

#[test]
fn status_bands() {
    assert_eq!(Status::application(0x8000), Ok(Status::from_code(0x8000)));
    assert_eq!(Status::application(0xFFFF).map(Status::code), Ok(0xFFFF));
    assert_eq!(
        Status::application(0x7FFF),
        Err(StatusError::NotApplication(0x7FFF))
    );
    assert_eq!(Status::application(4), Err(StatusError::NotApplication(4)));
    assert!(Status::OK.is_ok() && !Status::INTERNAL.is_ok());
    assert_eq!(Status::NOT_FOUND.to_string(), "not_found");
    assert_eq!(Status::from_code(9).to_string(), "reserved(0x0009)");
    assert_eq!(Status::from_code(0x8001).to_string(), "application(0x8001)");
    assert!(Status::from_code(0x8001).is_application());
    assert!(!Status::CAPABILITY_DENIED.is_application());
}

#[test]
fn service_name_rules() {
    assert!(ServiceName::new("echo").is_ok());
    assert!(ServiceName::new("inference/v2:run-1.x_y").is_ok());
    assert_eq!(ServiceName::new("").err(), Some(ServiceNameError::Empty));
    assert_eq!(
        ServiceName::new("a b").err(),
        Some(ServiceNameError::BadByte { at: 1, byte: b' ' })
    );
    assert!(matches!(
        ServiceName::new("é"),
        Err(ServiceNameError::BadByte { at: 0, .. })
    ));
    assert!(ServiceName::new(&"x".repeat(MAX_SERVICE_LEN)).is_ok());
    assert_eq!(
        ServiceName::new(&"x".repeat(MAX_SERVICE_LEN + 1)).err(),
        Some(ServiceNameError::TooLong(MAX_SERVICE_LEN + 1))
    );
    let echo = ServiceName::from_static("echo").expect("valid");
    assert_eq!(echo.capability_tag(), "nrpc:echo");
    assert!(echo.capability_tag().len() <= 128);
    assert_ne!(echo, ServiceName::new("Echo").expect("valid"));
}

#[test]
fn service_name_map_lookup_by_str() {
    let mut map = HashMap::new();
    map.insert(ServiceName::new("echo").expect("valid"), 1);
    assert_eq!(map.get("echo"), Some(&1));
    assert_eq!(map.get("ech"), None);
}

fn service() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(0x21u8..=0x7E, 1..=MAX_SERVICE_LEN)
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..600)
}

fn message() -> impl Strategy<Value = Vec<u8>> {
    ".{0,80}".prop_map(|s: String| bounded_message(&s).as_bytes().to_vec())
}

fn status() -> impl Strategy<Value = Status> {
    any::<u16>().prop_map(Status::from_code)
}

fn frame() -> impl Strategy<Value = RpcFrame<Vec<u8>>> {
    prop_oneof![
        (
            any::<u64>(),
            service(),
            body(),
            any::<u32>(),
            proptest::option::of(any::<u32>()),
            any::<bool>()
        )
            .prop_map(|(id, s, b, deadline, window, traced)| {
                let mut r = Request::new(CallId(id), s, b)
                    .expect("valid")
                    .with_deadline_ms(deadline);
                if let Some(w) = window {
                    r = r.with_streaming(w);
                }
                if traced {
                    r = r.with_traced();
                }
                RpcFrame::Request(r)
            }),
        (any::<u64>(), body())
            .prop_map(|(id, b)| RpcFrame::Response(Response::ok(CallId(id), b).expect("ok"))),
        (any::<u64>(), 1u16.., message()).prop_map(|(id, s, m)| {
            RpcFrame::Response(Response::error(CallId(id), Status::from_code(s), m).expect("valid"))
        }),
        any::<u64>().prop_map(|id| RpcFrame::Cancel(CallId(id))),
        (any::<u64>(), any::<u64>(), body()).prop_map(|(id, seq, b)| {
            RpcFrame::StreamItem(StreamItem::new(CallId(id), seq, b).expect("valid"))
        }),
        (any::<u64>(), status(), any::<u64>(), message()).prop_map(|(id, s, n, m)| {
            RpcFrame::StreamEnd(StreamEnd::new(CallId(id), s, n, m).expect("valid"))
        }),
        (any::<u64>(), any::<u64>()).prop_map(|(id, grant)| {
            RpcFrame::Credit(Credit {
                call_id: CallId(id),
                grant,
            })
        }),
    ]
}

proptest! {
    #[test]
    fn frame_round_trip(f in frame()) {
        let bytes = f.to_vec();
        prop_assert_eq!(f.encoded_len(), bytes.len());
        prop_assert!(bytes.len() <= MAX_FRAME_LEN);
        let back = RpcFrame::decode(&bytes).expect("decodes");
        prop_assert_eq!(&back, &f.borrowed());
        prop_assert_eq!(back.kind(), f.kind());
        prop_assert_eq!(back.call_id(), f.call_id());
        let shared = Bytes::from(bytes.clone());
        let owned = RpcFrame::decode_bytes(&shared).expect("decodes");
        prop_assert_eq!(owned.to_vec(), bytes);
    }

    #[test]
    fn decode_never_panics_and_reencodes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(frame) = RpcFrame::decode(&bytes) {
            prop_assert_eq!(frame.encoded_len(), bytes.len());
            prop_assert_eq!(frame.to_vec(), bytes);
        }
    }

    #[test]
    fn decode_of_mutated_frames_is_total(f in frame(), at: usize, byte: u8) {
        let mut bytes = f.to_vec();
        let i = at % bytes.len();
        bytes[i] = byte;
        if let Ok(frame) = RpcFrame::decode(&bytes) {
            prop_assert_eq!(frame.to_vec(), bytes);
        }
    }
}

fn request_bytes() -> Vec<u8> {
    RpcFrame::Request(
        Request::new(CallId(0x0102_0304_0506_0708), &b"echo"[..], &b"hi"[..])
            .expect("valid")
            .with_deadline_ms(1500),
    )
    .to_vec()
}

#[test]
fn request_layout_is_fixed() {
    let b = request_bytes();
    assert_eq!(b.len(), REQUEST_FIXED_LEN + 4 + 2);
    assert_eq!(&b[..4], &[1, 1, 0, 0]);
    assert_eq!(&b[4..12], &0x0102_0304_0506_0708u64.to_le_bytes());
    assert_eq!(&b[12..16], &1500u32.to_le_bytes());
    assert_eq!(&b[16..20], &[0, 0, 0, 0]);
    assert_eq!(b[20], 4);
    assert_eq!(&b[21..25], b"echo");
    assert_eq!(&b[25..], b"hi");
}

#[test]
fn other_layouts_are_fixed() {
    let credit = RpcFrame::<&[u8]>::Credit(Credit {
        call_id: CallId(9),
        grant: 16,
    })
    .to_vec();
    assert_eq!(credit.len(), CREDIT_LEN);
    assert_eq!(&credit[..4], &[1, 6, 0, 0]);
    assert_eq!(&credit[12..], &16u64.to_le_bytes());
    let cancel = RpcFrame::<&[u8]>::Cancel(CallId(9)).to_vec();
    assert_eq!(cancel, [&[1, 3, 0, 0][..], &9u64.to_le_bytes()].concat());
    let err = RpcFrame::Response(
        Response::error(CallId(1), Status::NOT_FOUND, &b"no such service"[..]).expect("ok"),
    )
    .to_vec();
    assert_eq!(&err[..4], &[1, 2, 3, 0]);
    assert_eq!(&err[12..], b"no such service");
    let end = RpcFrame::StreamEnd(
        StreamEnd::new(CallId(1), Status::from_code(0x8001), 5, &b""[..]).expect("ok"),
    )
    .to_vec();
    assert_eq!(&end[..4], &[1, 5, 0x01, 0x80]);
    assert_eq!(&end[12..20], &5u64.to_le_bytes());
}

#[test]
fn decode_bytes_shares_the_buffer() {
    let shared = Bytes::from(request_bytes());
    let RpcFrame::Request(r) = RpcFrame::decode_bytes(&shared).expect("decodes") else {
        panic!("not a request");
    };
    let base = shared.as_ptr() as usize;
    assert_eq!(r.body().as_ptr() as usize, base + 25);
    assert_eq!(r.service_name().as_str(), "echo");
    assert_eq!(r.service(), "echo");
    assert_eq!(r.deadline(), Some(Duration::from_millis(1500)));
    assert!(!r.is_streaming());
}

#[test]
fn rejects_malformed() {
    let good = request_bytes();
    let err = |v: &[u8]| RpcFrame::decode(v).expect_err("must fail");
    let mut v = good.clone();
    v[0] = 2;
    assert!(matches!(
        err(&v),
        DecodeError::UnknownVersion { version: 2, .. }
    ));
    let mut v = good.clone();
    v[1] = 7;
    assert!(matches!(err(&v), DecodeError::Invalid("rpc frame kind")));
    let mut v = good.clone();
    v[2] = 4;
    assert!(matches!(err(&v), DecodeError::Reserved(_)));
    // A window without the STREAMING flag.
    let mut v = good.clone();
    v[16] = 1;
    assert!(matches!(
        err(&v),
        DecodeError::Reserved("rpc request window")
    ));
    // Service length past the end, zero, and a bad byte.
    let mut v = good.clone();
    v[20] = 200;
    assert!(matches!(err(&v), DecodeError::Truncated { .. }));
    let mut v = good.clone();
    v[20] = 0;
    assert!(matches!(err(&v), DecodeError::Invalid("rpc service name")));
    let mut v = good.clone();
    v[22] = b' ';
    assert!(matches!(err(&v), DecodeError::Invalid("rpc service name")));
    for cut in [0, 1, 11, 20] {
        assert!(matches!(err(&good[..cut]), DecodeError::Truncated { .. }));
    }
    let mut cancel = RpcFrame::<&[u8]>::Cancel(CallId(1)).to_vec();
    cancel.push(0);
    assert!(matches!(err(&cancel), DecodeError::TrailingBytes(1)));
    let mut cancel = RpcFrame::<&[u8]>::Cancel(CallId(1)).to_vec();
    cancel[2] = 1;
    assert!(matches!(err(&cancel), DecodeError::Reserved(_)));
    let credit = RpcFrame::<&[u8]>::Credit(Credit {
        call_id: CallId(1),
        grant: 1,
    })
    .to_vec();
    assert!(matches!(err(&credit[..19]), DecodeError::Truncated { .. }));
    // An error message that is not UTF-8.
    let mut bad = vec![1, 2, 4, 0];
    bad.extend_from_slice(&1u64.to_le_bytes());
    bad.extend_from_slice(&[0xff, 0xfe]);
    assert!(matches!(
        err(&bad),
        DecodeError::Invalid("rpc message utf-8")
    ));
    // ... while an Ok body may be anything.
    bad[2] = 0;
    assert!(RpcFrame::decode(&bad).is_ok());
}

#[test]
fn length_bounds() {
    let mut big = vec![1, 2, 0, 0];
    big.extend_from_slice(&1u64.to_le_bytes());
    big.resize(FRAME_HEADER_LEN + MAX_RPC_BODY_LEN, 0);
    assert!(RpcFrame::decode(&big).is_ok());
    big.push(0);
    assert!(matches!(
        RpcFrame::decode(&big),
        Err(DecodeError::TooLong {
            what: "rpc body",
            ..
        })
    ));
    big.resize(MAX_FRAME_LEN + 1, 0);
    assert!(matches!(
        RpcFrame::decode(&big),
        Err(DecodeError::TooLong {
            what: "rpc frame",
            ..
        })
    ));
    let mut msg = vec![1, 2, 4, 0];
    msg.extend_from_slice(&1u64.to_le_bytes());
    msg.resize(FRAME_HEADER_LEN + MAX_MESSAGE_LEN + 1, b'a');
    assert!(matches!(
        RpcFrame::decode(&msg),
        Err(DecodeError::TooLong {
            what: "rpc message",
            ..
        })
    ));
    let huge = vec![0u8; MAX_RPC_BODY_LEN + 1];
    assert!(matches!(
        Request::new(CallId(1), &b"s"[..], &huge[..]),
        Err(FrameError::BodyTooLong { .. })
    ));
    assert!(matches!(
        Response::ok(CallId(1), &huge[..]),
        Err(FrameError::BodyTooLong { .. })
    ));
    assert_eq!(
        Response::error(CallId(1), Status::OK, &b""[..]),
        Err(FrameError::OkIsNotAnError)
    );
    assert_eq!(
        Response::error(CallId(1), Status::INTERNAL, &[0xffu8][..]),
        Err(FrameError::MessageNotUtf8)
    );
    assert!(matches!(
        Request::new(CallId(1), &b""[..], &b""[..]),
        Err(FrameError::Service(ServiceNameError::Empty))
    ));
}

#[test]
fn bounded_message_cuts_at_char_boundary() {
    let long = "é".repeat(MAX_MESSAGE_LEN);
    let cut = bounded_message(&long);
    assert!(cut.len() <= MAX_MESSAGE_LEN);
    assert_eq!(cut.len(), MAX_MESSAGE_LEN);
    let odd = format!("a{long}");
    let cut = bounded_message(&odd);
    assert_eq!(cut.len(), MAX_MESSAGE_LEN - 1);
    assert_eq!(bounded_message("short"), "short");
}
