//! The call table and the dispatch table talking to each other through the wire codec.

use std::time::{Duration, Instant};

use bytes::Bytes;
use netrun_messages::NodeId;
use netrun_messages::rpc::{CallId, Credit, RpcFrame, ServiceName, Status, StreamItem};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;
use crate::test_clock::t0;

const CALLER: NodeId = NodeId(0xca11);
const SERVER: NodeId = NodeId(0x5e7e);
const OTHER: NodeId = NodeId(0x0bad);

/// Encodes and decodes, as the actors will.
fn wire(frame: RpcFrame<Bytes>) -> RpcFrame<Bytes> {
    let bytes = Bytes::from(frame.to_vec());
    RpcFrame::decode_bytes(&bytes).expect("own frames decode")
}

fn echo() -> ServiceName {
    ServiceName::from_static("echo").expect("valid")
}

fn server() -> Dispatch<u32> {
    let mut d = Dispatch::new(DispatchConfig::default());
    d.serve(echo()).expect("serve");
    d
}

fn rng() -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(0x5eed)
}

fn request_of(frame: RpcFrame<Bytes>) -> netrun_messages::rpc::Request<Bytes> {
    match wire(frame) {
        RpcFrame::Request(r) => r,
        other => panic!("not a request: {other:?}"),
    }
}

/// Starts a call to [`SERVER`] with the seeded RNG.
fn start<T: std::fmt::Debug>(
    calls: &mut Calls<T>,
    now: Instant,
    spec: CallSpec<'_>,
    ctx: T,
) -> (CallId, RpcFrame<Bytes>) {
    calls
        .start(now, SERVER, spec, ctx, &mut rng())
        .expect("start")
}

/// An empty unary request for `echo`, straight to the server (no caller table).
fn req(id: u64) -> netrun_messages::rpc::Request<Bytes> {
    netrun_messages::rpc::Request::new(CallId(id), echo().to_bytes(), Bytes::new()).expect("valid")
}

/// An empty stream item.
fn item(id: CallId, seq: u64) -> RpcFrame<Bytes> {
    RpcFrame::StreamItem(StreamItem::new(id, seq, Bytes::new()).expect("ok"))
}

fn finished<T>(calls: &mut Calls<T>) -> Finished<T> {
    loop {
        match calls.poll_event() {
            Some(CallEvent::Finished(f)) => return f,
            Some(CallEvent::Item { .. }) => continue,
            None => panic!("no finished event"),
        }
    }
}

#[test]
fn unary_round_trip() {
    let t0 = t0();
    let mut calls = Calls::new(CallsConfig::default());
    let mut dispatch = server();
    let service = echo();
    let spec = CallSpec::unary(&service, Bytes::from_static(b"ping"))
        .with_deadline(t0 + Duration::from_millis(1500))
        .traced();
    let (id, frame) = start(&mut calls, t0, spec, 7u8);
    assert_ne!(id, CallId(0));
    let request = request_of(frame);
    assert_eq!(request.deadline_ms(), 1500);
    let Admission::Dispatch(incoming) = dispatch.handle_request(t0, CALLER, request, 1) else {
        panic!("not admitted");
    };
    assert_eq!(incoming.service, echo());
    assert_eq!(&incoming.body[..], b"ping");
    assert!(incoming.traced && !incoming.streaming);
    assert_eq!(incoming.deadline, Some(t0 + Duration::from_millis(1500)));
    let done = dispatch
        .finish(t0, incoming.key, Ok(Bytes::from_static(b"pong")))
        .expect("in flight");
    assert_eq!(done.status, Status::OK);
    assert_eq!(done.ctx, 1);
    let t1 = t0 + Duration::from_micros(40);
    let verdict = calls.handle_frame(t1, SERVER, wire(done.frame.expect("response")));
    assert_eq!(verdict, FrameVerdict::Accepted);
    let f = finished(&mut calls);
    assert_eq!((f.call_id, f.ctx, f.target), (id, 7, SERVER));
    assert_eq!(f.result, Ok(Bytes::from_static(b"pong")));
    assert_eq!(f.latency, Duration::from_micros(40));
    assert!(calls.is_empty() && dispatch.is_idle());
    assert_eq!(calls.poll_timeout(), None);
}

#[test]
fn deadline_gives_timeout_and_cancel_that_the_server_sees() {
    let t0 = t0();
    let mut calls = Calls::new(CallsConfig::default());
    let mut dispatch = server();
    let service = echo();
    let deadline = t0 + Duration::from_millis(100);
    let spec = CallSpec::unary(&service, Bytes::new()).with_deadline(deadline);
    let (id, frame) = start(&mut calls, t0, spec, ());
    let Admission::Dispatch(incoming) = dispatch.handle_request(t0, CALLER, request_of(frame), 99)
    else {
        panic!("not admitted");
    };
    assert_eq!(calls.poll_timeout(), Some(deadline));
    calls.handle_timeout(deadline - Duration::from_millis(1));
    assert!(calls.poll_event().is_none());
    calls.handle_timeout(deadline);
    let f = finished(&mut calls);
    assert_eq!((f.call_id, f.result), (id, Err(RpcError::Timeout)));
    let (to, cancel) = calls.poll_transmit().expect("cancel queued");
    assert_eq!((to, cancel.clone()), (SERVER, RpcFrame::Cancel(id)));
    assert_eq!(calls.stats().timed_out, 1);
    // The handler is told through its context.
    let RpcFrame::Cancel(cancel_id) = wire(cancel) else {
        panic!("not a cancel");
    };
    assert_eq!(dispatch.handle_cancel(CALLER, cancel_id), Some(&99));
    assert_eq!(dispatch.is_cancelled(incoming.key), Some(true));
    assert_eq!(dispatch.handle_cancel(CALLER, cancel_id), None, "only once");
    // The late result is not sent, and a late response is dropped by the caller.
    let done = dispatch
        .finish(deadline, incoming.key, Ok(Bytes::new()))
        .expect("in flight");
    assert_eq!(done.status, Status::CANCELLED);
    assert!(done.frame.is_none());
    let late =
        RpcFrame::Response(netrun_messages::rpc::Response::ok(id, Bytes::new()).expect("ok"));
    assert_eq!(
        calls.handle_frame(deadline, SERVER, late),
        FrameVerdict::UnknownCall
    );
}

#[test]
fn server_deadline_expiry_is_reported_and_suppresses_the_result() {
    let t0 = t0();
    let mut calls = Calls::new(CallsConfig::default());
    let mut dispatch = server();
    let service = echo();
    let spec =
        CallSpec::unary(&service, Bytes::new()).with_deadline(t0 + Duration::from_millis(10));
    let (_, frame) = start(&mut calls, t0, spec, ());
    let Admission::Dispatch(incoming) = dispatch.handle_request(t0, CALLER, request_of(frame), 5)
    else {
        panic!("not admitted");
    };
    assert_eq!(
        dispatch.poll_timeout(),
        Some(t0 + Duration::from_millis(10))
    );
    dispatch.handle_timeout(t0 + Duration::from_millis(10));
    assert_eq!(
        dispatch.poll_event(),
        Some(ServerEvent::DeadlineExpired(incoming.key))
    );
    assert_eq!(dispatch.context(incoming.key), Some(&5));
    assert_eq!(dispatch.poll_timeout(), None);
    let done = dispatch
        .finish(
            t0 + Duration::from_millis(20),
            incoming.key,
            Ok(Bytes::new()),
        )
        .expect("in flight");
    assert_eq!(done.status, Status::DEADLINE_EXCEEDED);
    assert!(done.frame.is_none());
}

#[test]
fn responses_only_from_the_called_node() {
    let t0 = t0();
    let mut calls = Calls::new(CallsConfig::default());
    let service = echo();
    let (id, _) = start(&mut calls, t0, CallSpec::unary(&service, Bytes::new()), ());
    let forged = RpcFrame::Response(
        netrun_messages::rpc::Response::ok(id, Bytes::from_static(b"evil")).expect("ok"),
    );
    assert_eq!(
        calls.handle_frame(t0, OTHER, forged.clone()),
        FrameVerdict::WrongSender
    );
    assert_eq!(calls.stats().wrong_sender, 1);
    assert!(calls.poll_event().is_none(), "the call is still pending");
    assert_eq!(calls.len(), 1);
    let real = RpcFrame::Response(
        netrun_messages::rpc::Response::ok(id, Bytes::from_static(b"good")).expect("ok"),
    );
    assert_eq!(calls.handle_frame(t0, SERVER, real), FrameVerdict::Accepted);
    assert_eq!(finished(&mut calls).result, Ok(Bytes::from_static(b"good")));
    // Caller-to-server frames are not the call table's business.
    assert_eq!(
        calls.handle_frame(t0, SERVER, RpcFrame::Cancel(id)),
        FrameVerdict::Misdirected
    );
}

#[test]
fn server_errors_map_to_caller_errors() {
    let t0 = t0();
    let mut calls = Calls::new(CallsConfig::default());
    let mut dispatch = server();
    let missing = ServiceName::from_static("missing").expect("valid");
    let (_, frame) = start(&mut calls, t0, CallSpec::unary(&missing, Bytes::new()), ());
    let Admission::Refused {
        status,
        response,
        ctx,
    } = dispatch.handle_request(t0, CALLER, request_of(frame), 3)
    else {
        panic!("must be refused");
    };
    assert_eq!((status, ctx), (Status::NOT_FOUND, 3));
    calls.handle_frame(t0, SERVER, wire(response));
    let err = finished(&mut calls).result.expect_err("refused");
    assert!(matches!(
        err,
        RpcError::ServerError {
            status: Status::NOT_FOUND,
            ..
        }
    ));
    assert!(!err.is_retryable());

    // A panicking handler answers Internal, which is retryable.
    let service = echo();
    let (_, frame) = start(&mut calls, t0, CallSpec::unary(&service, Bytes::new()), ());
    let Admission::Dispatch(incoming) = dispatch.handle_request(t0, CALLER, request_of(frame), 4)
    else {
        panic!("admitted");
    };
    let done = dispatch
        .finish(
            t0,
            incoming.key,
            Err(HandlerError::internal("handler panicked")),
        )
        .expect("in flight");
    calls.handle_frame(t0, SERVER, wire(done.frame.expect("response")));
    let err = finished(&mut calls).result.expect_err("internal");
    assert_eq!(
        err,
        RpcError::ServerError {
            status: Status::INTERNAL,
            message: "handler panicked".into()
        }
    );
    assert!(err.is_retryable() && err.is_node_failure());
    // An application-band error keeps its code and is not retried.
    let (_, frame) = start(&mut calls, t0, CallSpec::unary(&service, Bytes::new()), ());
    let Admission::Dispatch(incoming) = dispatch.handle_request(t0, CALLER, request_of(frame), 4)
    else {
        panic!("admitted");
    };
    let app = HandlerError::application(0x8001, "x".repeat(5000)).expect("band");
    let done = dispatch
        .finish(t0, incoming.key, Err(app))
        .expect("in flight");
    calls.handle_frame(t0, SERVER, wire(done.frame.expect("response")));
    let RpcError::ServerError { status, message } = finished(&mut calls).result.expect_err("app")
    else {
        panic!("server error");
    };
    assert_eq!(status.code(), 0x8001);
    assert_eq!(
        message.len(),
        netrun_messages::rpc::MAX_MESSAGE_LEN,
        "cut to fit"
    );
    assert!(HandlerError::application(7, "").is_err());
}

#[test]
fn call_table_bounds_and_start_refusals() {
    let t0 = t0();
    let mut calls = Calls::new(CallsConfig {
        max_in_flight: 2,
        ..CallsConfig::default()
    });
    let service = echo();
    let mut r = rng();
    let spec = || CallSpec::unary(&service, Bytes::new());
    let (a, _) = calls.start(t0, SERVER, spec(), 1, &mut r).expect("first");
    let (b, _) = calls.start(t0, SERVER, spec(), 2, &mut r).expect("second");
    assert_ne!(a, b);
    let Err((err, ctx)) = calls.start(t0, SERVER, spec(), 3, &mut r) else {
        panic!("full");
    };
    assert_eq!((err, ctx), (RpcError::Overloaded, 3));
    // Dropping a pending call frees its slot and sends CANCEL.
    assert_eq!(calls.cancel(a), Some(1));
    assert_eq!(calls.cancel(a), None);
    assert_eq!(calls.poll_transmit(), Some((SERVER, RpcFrame::Cancel(a))));
    assert!(calls.start(t0, SERVER, spec(), 4, &mut r).is_ok());
    // A deadline already passed short-circuits.
    let mut calls = Calls::<u8>::new(CallsConfig::default());
    let Err((err, _)) = calls.start(t0, SERVER, spec().with_deadline(t0), 0, &mut r) else {
        panic!("expired");
    };
    assert_eq!(err, RpcError::Timeout);
    // Too large a body is a codec error.
    let huge = Bytes::from(vec![0u8; netrun_messages::rpc::MAX_RPC_BODY_LEN + 1]);
    let Err((err, _)) = calls.start(t0, SERVER, CallSpec::unary(&service, huge), 0, &mut r) else {
        panic!("too large");
    };
    assert!(matches!(err, RpcError::Codec(_)));
    assert!(calls.is_empty());
}

#[test]
fn call_ids_are_random_not_sequential() {
    let t0 = t0();
    let mut calls = Calls::new(CallsConfig::default());
    let service = echo();
    let mut r = rng();
    let ids: Vec<u64> = (0..4)
        .map(|_| {
            calls
                .start(
                    t0,
                    SERVER,
                    CallSpec::unary(&service, Bytes::new()),
                    (),
                    &mut r,
                )
                .expect("start")
                .0
                .0
        })
        .collect();
    assert!(ids.windows(2).all(|w| w[1] != w[0].wrapping_add(1)));
}

#[test]
fn dispatch_ignores_duplicates_and_enforces_bounds() {
    let t0 = t0();
    let mut dispatch: Dispatch<u32> = Dispatch::new(DispatchConfig {
        max_in_flight: 3,
        max_per_caller: 2,
        ..DispatchConfig::default()
    });
    dispatch.serve(echo()).expect("serve");
    assert_eq!(dispatch.serve(echo()), Err(ServeError::AlreadyServing));
    assert!(matches!(
        dispatch.handle_request(t0, CALLER, req(1), 0),
        Admission::Dispatch(_)
    ));
    assert!(matches!(
        dispatch.handle_request(t0, CALLER, req(1), 0),
        Admission::Duplicate { .. }
    ));
    // The same id from another caller is a different call.
    assert!(matches!(
        dispatch.handle_request(t0, OTHER, req(1), 0),
        Admission::Dispatch(_)
    ));
    assert!(matches!(
        dispatch.handle_request(t0, CALLER, req(2), 0),
        Admission::Dispatch(_)
    ));
    // Per-caller bound, then the global bound.
    let Admission::Refused { status, .. } = dispatch.handle_request(t0, CALLER, req(3), 0) else {
        panic!("per-caller bound");
    };
    assert_eq!(status, Status::RESOURCE_EXHAUSTED);
    let Admission::Refused { status, .. } = dispatch.handle_request(t0, NodeId(9), req(3), 0)
    else {
        panic!("global bound");
    };
    assert_eq!(status, Status::RESOURCE_EXHAUSTED);
    let stats = dispatch.stats();
    assert_eq!(
        (stats.admitted, stats.duplicates, stats.exhausted),
        (3, 1, 2)
    );
    assert_eq!(dispatch.in_flight(), 3);
}

#[test]
fn draining_refuses_new_calls_and_lets_in_flight_finish() {
    let t0 = t0();
    let mut dispatch = server();
    let Admission::Dispatch(a) = dispatch.handle_request(t0, CALLER, req(1), 0) else {
        panic!("admitted");
    };
    assert_eq!(
        dispatch.stop_serving("echo"),
        StopOutcome::Draining { in_flight: 1 }
    );
    assert!(!dispatch.is_serving("echo"));
    assert_eq!(dispatch.services().count(), 0);
    let Admission::Refused { status, .. } = dispatch.handle_request(t0, CALLER, req(2), 0) else {
        panic!("draining");
    };
    assert_eq!(status, Status::UNAVAILABLE);
    assert!(RpcError::from_status(status, "").is_retryable());
    // The in-flight call completes normally, then the service is gone.
    let done = dispatch
        .finish(t0, a.key, Ok(Bytes::from_static(b"ok")))
        .expect("in flight");
    assert!(done.frame.is_some());
    assert_eq!(dispatch.poll_event(), Some(ServerEvent::Drained(echo())));
    assert_eq!(dispatch.stop_serving("echo"), StopOutcome::NotServing);
    let Admission::Refused { status, .. } = dispatch.handle_request(t0, CALLER, req(3), 0) else {
        panic!("gone");
    };
    assert_eq!(status, Status::NOT_FOUND);
    // Serving again, then a whole-node drain.
    dispatch.serve(echo()).expect("serve again");
    assert_eq!(dispatch.stop_serving("echo"), StopOutcome::Stopped);
    dispatch.serve(echo()).expect("serve again");
    dispatch.drain_all();
    let Admission::Refused { status, .. } = dispatch.handle_request(t0, CALLER, req(4), 0) else {
        panic!("node draining");
    };
    assert_eq!(status, Status::UNAVAILABLE);
    assert!(dispatch.is_idle());
}

#[test]
fn resuming_a_draining_service_keeps_it() {
    let t0 = t0();
    let mut dispatch = server();
    let req = req(1);
    let Admission::Dispatch(a) = dispatch.handle_request(t0, CALLER, req, 0) else {
        panic!("admitted");
    };
    dispatch.stop_serving("echo");
    dispatch.serve(echo()).expect("resume");
    assert!(dispatch.is_serving("echo"));
    dispatch
        .finish(t0, a.key, Ok(Bytes::new()))
        .expect("in flight");
    assert_eq!(dispatch.poll_event(), None);
    assert!(dispatch.is_serving("echo"));
}

/// Runs one streaming call between the two tables with frames delivered in a random
/// order (each direction reordered within a batch) and the application consuming at a
/// random pace. Checks that the server never exceeds the credit it was given, and that
/// the caller delivers every item exactly once, in order, then the end.
///
/// With `lose_credits`, each CREDIT is lost with probability 1/3 and the clock moves on by
/// up to 200 ms a round (calling `handle_timeout`): the caller's re-sent grants must keep
/// the stream going. Returns the caller's counters.
fn streaming_run(seed: u64, items: u64, window: u32, lose_credits: bool) -> CallsStats {
    let t0 = t0();
    let mut now = t0;
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    let mut calls = Calls::new(CallsConfig {
        max_credit_resends: 10,
        ..CallsConfig::default()
    });
    let mut dispatch = server();
    let service = echo();
    let spec = CallSpec::streaming(&service, Bytes::new(), Some(window));
    let (id, frame) = calls.start(t0, SERVER, spec, (), &mut r).expect("start");
    let Admission::Dispatch(incoming) = dispatch.handle_request(t0, CALLER, request_of(frame), 0)
    else {
        panic!("admitted");
    };
    assert!(incoming.streaming);
    let key = incoming.key;
    let mut produced = 0u64;
    let mut ended = false;
    let mut delivered = Vec::new();
    let mut undelivered_to_app = 0u64;
    let mut to_caller: Vec<RpcFrame<Bytes>> = Vec::new();
    let mut to_server: Vec<RpcFrame<Bytes>> = Vec::new();
    let mut finished_ok = false;
    for _round in 0..10_000 {
        // Server: send what credit allows.
        while produced < items {
            let body = Bytes::from(produced.to_le_bytes().to_vec());
            match dispatch.send_item(key, &body) {
                Ok(frame) => {
                    to_caller.push(wire(frame));
                    produced += 1;
                }
                Err(ItemError::NoCredit) => break,
                Err(e) => panic!("send_item: {e}"),
            }
        }
        if produced == items && !ended {
            let done = dispatch
                .finish(t0, key, Ok(Bytes::new()))
                .expect("in flight");
            to_caller.push(wire(done.frame.expect("end")));
            ended = true;
        }
        // Deliver a random subset of the caller-bound frames in random order.
        shuffle(&mut to_caller, &mut r);
        let keep = r.gen_range(0..=to_caller.len());
        for frame in to_caller.drain(keep..) {
            let verdict = calls.handle_frame(now, SERVER, frame);
            assert!(
                matches!(verdict, FrameVerdict::Accepted),
                "seed {seed}: {verdict:?}"
            );
        }
        while let Some(event) = calls.poll_event() {
            match event {
                CallEvent::Item { call_id, seq, body } => {
                    assert_eq!(call_id, id);
                    assert_eq!(seq, delivered.len() as u64, "in order");
                    assert_eq!(&body[..], &seq.to_le_bytes());
                    delivered.push(seq);
                    undelivered_to_app += 1;
                }
                CallEvent::Finished(f) => {
                    assert_eq!(f.result, Ok(Bytes::new()));
                    finished_ok = true;
                }
            }
        }
        // The application consumes some of what it holds.
        let n = r.gen_range(0..=undelivered_to_app);
        undelivered_to_app -= n;
        calls.consumed(now, id, n);
        if lose_credits {
            now += Duration::from_millis(r.gen_range(0..=200));
            calls.handle_timeout(now);
        }
        while let Some((to, frame)) = calls.poll_transmit() {
            assert_eq!(to, SERVER);
            if lose_credits && r.gen_ratio(1, 3) {
                continue;
            }
            to_server.push(wire(frame));
        }
        shuffle(&mut to_server, &mut r);
        for frame in to_server.drain(..) {
            let RpcFrame::Credit(credit) = frame else {
                panic!("only credit flows back");
            };
            dispatch.handle_credit(CALLER, credit);
        }
        if finished_ok {
            break;
        }
    }
    assert!(finished_ok, "seed {seed}: stream did not finish");
    assert_eq!(delivered.len() as u64, items);
    assert!(calls.is_empty() && dispatch.is_idle());
    assert_eq!(calls.poll_timeout(), None, "no re-send left scheduled");
    calls.stats()
}

fn shuffle<T>(v: &mut [T], r: &mut ChaCha8Rng) {
    for i in (1..v.len()).rev() {
        let j = r.gen_range(0..=i);
        v.swap(i, j);
    }
}

#[test]
fn streaming_credit_is_never_exceeded_and_items_arrive_in_order() {
    for seed in 0..40 {
        let stats = streaming_run(seed, 100, 1 + (seed as u32 % 9), false);
        assert_eq!(stats.credits_resent, 0, "seed {seed}: no time passed");
    }
    streaming_run(99, 0, 4, false);
}

#[test]
fn streams_survive_lost_credits() {
    let mut resent = 0;
    for seed in 0..40 {
        resent += streaming_run(seed, 100, 1 + (seed as u32 % 9), true).credits_resent;
    }
    assert!(resent > 0, "some stall was repaired by a re-sent grant");
}

/// A window-4 stream whose first 4 items arrived and were consumed, with both CREDITs this
/// produced (grants 6 and 8) lost: the server is out of credit and the caller has nothing
/// to deliver. Everything happens at `t0`.
fn stalled_stream(t0: Instant) -> (Calls<()>, Dispatch<u32>, CallId, CallKey) {
    let mut calls = Calls::new(CallsConfig::default());
    let mut dispatch = server();
    let service = echo();
    let spec = CallSpec::streaming(&service, Bytes::new(), Some(4));
    let (id, frame) = start(&mut calls, t0, spec, ());
    let Admission::Dispatch(incoming) = dispatch.handle_request(t0, CALLER, request_of(frame), 0)
    else {
        panic!("admitted");
    };
    let key = incoming.key;
    for _ in 0..4 {
        let frame = dispatch.send_item(key, &Bytes::new()).expect("credit");
        assert_eq!(
            calls.handle_frame(t0, SERVER, wire(frame)),
            FrameVerdict::Accepted
        );
    }
    for grant in [6, 8] {
        calls.consumed(t0, id, 2);
        let credit = RpcFrame::Credit(Credit { call_id: id, grant });
        assert_eq!(calls.poll_transmit(), Some((SERVER, credit)), "lost");
    }
    assert_eq!(
        dispatch.send_item(key, &Bytes::new()),
        Err(ItemError::NoCredit)
    );
    (calls, dispatch, id, key)
}

#[test]
fn a_lost_credit_is_resent_after_a_silence_and_the_stream_completes() {
    let t0 = t0();
    let (mut calls, mut dispatch, id, key) = stalled_stream(t0);
    let after = CallsConfig::default().credit_resend_after;
    assert_eq!(calls.poll_timeout(), Some(t0 + after));
    calls.handle_timeout(t0 + after - Duration::from_millis(1));
    assert_eq!(calls.poll_transmit(), None, "not silent long enough");
    calls.handle_timeout(t0 + after);
    let Some((SERVER, RpcFrame::Credit(credit))) = calls.poll_transmit() else {
        panic!("the grant is repeated");
    };
    assert_eq!(credit.grant, 8, "the current total");
    assert_eq!(calls.stats().credits_resent, 1);
    assert_eq!(dispatch.handle_credit(CALLER, credit), Some(4));
    // The stream runs to its end (10 items) with no further re-send.
    let now = t0 + after;
    let mut sent = 4;
    while sent < 10 {
        while sent < 10 {
            let Ok(frame) = dispatch.send_item(key, &Bytes::new()) else {
                break;
            };
            assert_eq!(
                calls.handle_frame(now, SERVER, wire(frame)),
                FrameVerdict::Accepted
            );
            sent += 1;
        }
        let mut delivered = 0;
        while let Some(CallEvent::Item { .. }) = calls.poll_event() {
            delivered += 1;
        }
        calls.consumed(now, id, delivered);
        while let Some((_, frame)) = calls.poll_transmit() {
            let RpcFrame::Credit(credit) = wire(frame) else {
                panic!("only credit flows back");
            };
            dispatch.handle_credit(CALLER, credit);
        }
    }
    let end = dispatch
        .finish(now, key, Ok(Bytes::new()))
        .expect("in flight");
    calls.handle_frame(now, SERVER, wire(end.frame.expect("end")));
    assert_eq!(finished(&mut calls).result, Ok(Bytes::new()));
    assert_eq!(calls.poll_timeout(), None);
    assert_eq!(calls.stats().credits_resent, 1);
}

#[test]
fn credit_resends_back_off_and_stop() {
    let t0 = t0();
    let (mut calls, _dispatch, _id, _key) = stalled_stream(t0);
    let config = CallsConfig::default();
    let mut at = t0;
    for k in 0..config.max_credit_resends {
        at += config.credit_resend_after * (1 << k);
        assert_eq!(calls.poll_timeout(), Some(at), "re-send {k}");
        calls.handle_timeout(at);
        assert!(matches!(
            calls.poll_transmit(),
            Some((SERVER, RpcFrame::Credit(_)))
        ));
    }
    assert_eq!(calls.poll_timeout(), None, "bounded");
    assert_eq!(
        calls.stats().credits_resent,
        u64::from(config.max_credit_resends)
    );
}

#[test]
fn an_item_after_a_resend_stops_the_repeats() {
    let t0 = t0();
    let (mut calls, mut dispatch, id, key) = stalled_stream(t0);
    let after = CallsConfig::default().credit_resend_after;
    calls.handle_timeout(t0 + after);
    let Some((_, RpcFrame::Credit(credit))) = calls.poll_transmit() else {
        panic!("re-sent");
    };
    dispatch.handle_credit(CALLER, credit);
    let now = t0 + after * 2;
    let frame = dispatch.send_item(key, &Bytes::new()).expect("credit");
    calls.handle_frame(now, SERVER, wire(frame));
    assert_eq!(calls.poll_timeout(), None, "items are flowing");
    while calls.poll_event().is_some() {}
    calls.consumed(now, id, 1);
    // Item 4 of grant 8 arrived: the server still has credit, nothing to repeat.
    assert_eq!(calls.poll_timeout(), None);
}

#[test]
fn healthy_streams_repeat_no_credit() {
    let t0 = t0();
    let mut calls = Calls::new(CallsConfig::default());
    let service = echo();
    let spec = CallSpec::streaming(&service, Bytes::new(), Some(4));
    let (id, _) = start(&mut calls, t0, spec, ());
    // A slow producer within its first window: nothing was ever granted beyond it.
    calls.handle_frame(t0, SERVER, item(id, 0));
    calls.consumed(t0, id, 1);
    assert_eq!(calls.poll_timeout(), None);
    // A slow consumer: items wait for the application, the caller is the bottleneck.
    for seq in 1..4 {
        calls.handle_frame(t0, SERVER, item(id, seq));
    }
    calls.consumed(t0, id, 1);
    assert!(matches!(
        calls.poll_transmit(),
        Some((_, RpcFrame::Credit(_)))
    ));
    assert_eq!(calls.poll_timeout(), None);
    // The server provably got grant 6 (item 4 arrived) and is merely slow to send item 5.
    calls.consumed(t0, id, 2);
    calls.handle_frame(t0, SERVER, item(id, 4));
    calls.consumed(t0, id, 1);
    assert_eq!(calls.poll_timeout(), None);
    // An ended stream waits for nothing.
    let end = netrun_messages::rpc::StreamEnd::new(id, Status::OK, 5, Bytes::new()).expect("ok");
    calls.handle_frame(t0, SERVER, RpcFrame::StreamEnd(end));
    assert_eq!(finished(&mut calls).result, Ok(Bytes::new()));
    calls.handle_timeout(t0 + Duration::from_secs(60));
    assert_eq!(calls.poll_transmit(), None);
    assert_eq!(calls.stats().credits_resent, 0);
}

#[test]
fn server_refuses_items_beyond_credit() {
    let t0 = t0();
    let mut dispatch = server();
    let req = req(5).with_streaming(2);
    let Admission::Dispatch(inc) = dispatch.handle_request(t0, CALLER, req, 0) else {
        panic!("admitted");
    };
    let body = Bytes::from_static(b"x");
    assert!(dispatch.send_item(inc.key, &body).is_ok());
    assert!(dispatch.send_item(inc.key, &body).is_ok());
    assert_eq!(dispatch.send_item(inc.key, &body), Err(ItemError::NoCredit));
    assert_eq!(dispatch.credit(inc.key), Some(0));
    // A stale (smaller) grant never lowers the credit; a larger one raises it.
    let credit = |grant| Credit {
        call_id: CallId(5),
        grant,
    };
    assert_eq!(dispatch.handle_credit(CALLER, credit(1)), Some(0));
    assert_eq!(dispatch.handle_credit(CALLER, credit(5)), Some(3));
    // Credit from another node is not this call's.
    assert_eq!(dispatch.handle_credit(OTHER, credit(100)), None);
    // A huge grant is cut to the window limit.
    assert_eq!(
        dispatch.handle_credit(CALLER, credit(u64::MAX)),
        Some(u64::from(DispatchConfig::default().max_window))
    );
    assert_eq!(dispatch.stats().clamped_credits, 1);
    // Cancelled: no more items, and the end is not sent.
    dispatch.handle_cancel(CALLER, CallId(5));
    assert_eq!(
        dispatch.send_item(inc.key, &body),
        Err(ItemError::Cancelled)
    );
    let done = dispatch
        .finish(t0, inc.key, Ok(Bytes::new()))
        .expect("in flight");
    assert!(done.frame.is_none());
    assert_eq!(
        dispatch.send_item(inc.key, &body),
        Err(ItemError::UnknownCall)
    );
}

#[test]
fn streaming_error_end_after_items_and_unary_item_is_a_violation() {
    let t0 = t0();
    let mut calls = Calls::new(CallsConfig::default());
    let mut dispatch = server();
    let service = echo();
    let (id, frame) = start(
        &mut calls,
        t0,
        CallSpec::streaming(&service, Bytes::new(), Some(4)),
        (),
    );
    let Admission::Dispatch(inc) = dispatch.handle_request(t0, CALLER, request_of(frame), 0) else {
        panic!("admitted");
    };
    let first = dispatch
        .send_item(inc.key, &Bytes::from_static(b"a"))
        .expect("credit");
    let end = dispatch
        .finish(t0, inc.key, Err(HandlerError::internal("boom")))
        .expect("in flight")
        .frame
        .expect("end");
    // The end overtakes the item: the caller waits for the item, then fails.
    assert_eq!(
        calls.handle_frame(t0, SERVER, wire(end)),
        FrameVerdict::Accepted
    );
    assert!(calls.poll_event().is_none());
    calls.handle_frame(t0, SERVER, wire(first));
    assert!(matches!(
        calls.poll_event(),
        Some(CallEvent::Item { seq: 0, .. })
    ));
    let f = finished(&mut calls);
    assert_eq!(f.call_id, id);
    assert!(matches!(
        f.result,
        Err(RpcError::ServerError {
            status: Status::INTERNAL,
            ..
        })
    ));

    // An item for a unary call fails the call and cancels it.
    let (id, _) = start(&mut calls, t0, CallSpec::unary(&service, Bytes::new()), ());
    let stray = item(id, 0);
    assert_eq!(
        calls.handle_frame(t0, SERVER, stray),
        FrameVerdict::Violation(Violation::UnexpectedFrame)
    );
    assert_eq!(
        finished(&mut calls).result,
        Err(RpcError::Protocol(Violation::UnexpectedFrame))
    );
    assert_eq!(calls.poll_transmit(), Some((SERVER, RpcFrame::Cancel(id))));
}

#[test]
fn caller_rejects_items_beyond_its_credit() {
    let t0 = t0();
    let mut calls = Calls::new(CallsConfig::default());
    let service = echo();
    let (id, _) = start(
        &mut calls,
        t0,
        CallSpec::streaming(&service, Bytes::new(), Some(2)),
        (),
    );
    assert_eq!(
        calls.handle_frame(t0, SERVER, item(id, 1)),
        FrameVerdict::Accepted
    );
    assert_eq!(
        calls.handle_frame(t0, SERVER, item(id, 1)),
        FrameVerdict::Duplicate
    );
    assert_eq!(
        calls.handle_frame(t0, SERVER, item(id, 2)),
        FrameVerdict::Violation(Violation::BeyondCredit)
    );
    assert_eq!(
        finished(&mut calls).result,
        Err(RpcError::Protocol(Violation::BeyondCredit))
    );
    assert_eq!(calls.poll_transmit(), Some((SERVER, RpcFrame::Cancel(id))));
}

#[test]
fn credit_is_coalesced_and_never_stalls() {
    let t0 = t0();
    let mut calls = Calls::new(CallsConfig::default());
    let service = echo();
    let (id, _) = start(
        &mut calls,
        t0,
        CallSpec::streaming(&service, Bytes::new(), Some(4)),
        (),
    );
    for seq in 0..4 {
        calls.handle_frame(t0, SERVER, item(id, seq));
    }
    // Consuming one item does not move the grant by half a window yet.
    calls.consumed(t0, id, 1);
    assert_eq!(calls.poll_transmit(), None);
    calls.consumed(t0, id, 1);
    calls.consumed(t0, id, 1);
    // One CREDIT carries the latest total.
    assert_eq!(
        calls.poll_transmit(),
        Some((
            SERVER,
            RpcFrame::Credit(Credit {
                call_id: id,
                grant: 7
            })
        ))
    );
    assert_eq!(calls.poll_transmit(), None);
    // Consuming more than was delivered is capped at what was delivered (4 items): the
    // grant could move to 8 only, less than half a window past 7.
    calls.consumed(t0, id, 100);
    assert_eq!(calls.poll_transmit(), None);
    for seq in 4..7 {
        calls.handle_frame(t0, SERVER, item(id, seq));
    }
    // Every granted item consumed: the grant moves by a whole window.
    calls.consumed(t0, id, 3);
    assert_eq!(
        calls.poll_transmit(),
        Some((
            SERVER,
            RpcFrame::Credit(Credit {
                call_id: id,
                grant: 11
            })
        ))
    );
}

#[test]
fn stream_windows_are_kept_in_bounds() {
    let t0 = t0();
    let mut calls = Calls::new(CallsConfig {
        max_window: 16,
        ..CallsConfig::default()
    });
    let service = echo();
    for (asked, sent) in [(Some(0), 1), (Some(1000), 16), (None, 16)] {
        let spec = CallSpec::streaming(&service, Bytes::new(), asked);
        let (_, frame) = start(&mut calls, t0, spec, ());
        let request = request_of(frame);
        assert!(request.is_streaming());
        assert_eq!(request.window(), sent, "asked {asked:?}");
    }
}
