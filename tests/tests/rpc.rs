//! nRPC between real nodes on 127.0.0.1: unary and typed calls, deadlines and
//! cancellation, panics, draining, service calls with round robin and hedging, server
//! streaming with credit (including a lost CREDIT), and the actor's restart.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use netrun::rpc::{
    CallOptions, HandlerError, HedgePolicy, MAX_CALL_BODY_LEN, RequestContext, RetryPolicy,
    RpcError, SelectPolicy, SinkError, Status, StreamSink,
};
use netrun::{Node, NodeId};
use netrun_tests::{Relay, connect, connected_pair, eventually_async, has_up_peer, node};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc, oneshot};

const WAIT: Duration = Duration::from_secs(10);

fn echo(node: &Node, service: &str) -> netrun::rpc::ServeHandle {
    node.serve(service, |request: RequestContext| async move {
        Ok::<_, HandlerError>(request.body().clone())
    })
    .expect("serve echo")
}

/// A caller with a session to each of `N` fresh nodes.
async fn caller_connected_to<const N: usize>() -> (Node, [Node; N]) {
    let caller = node().await;
    let mut peers = Vec::with_capacity(N);
    for _ in 0..N {
        let peer = node().await;
        connect(&caller, &peer).await;
        peers.push(peer);
    }
    let peers = peers
        .try_into()
        .unwrap_or_else(|_: Vec<Node>| panic!("{N} nodes"));
    (caller, peers)
}

/// A service whose handler holds every call until the call is cancelled (or [`WAIT`]
/// passes), then answers. The handler signals `started` as a call comes in and reports on
/// `ends` whether its call was cancelled.
struct Stalling {
    _handle: netrun::rpc::ServeHandle,
    started: Arc<Notify>,
    ends: mpsc::Receiver<bool>,
}

impl Stalling {
    /// Serves `service` on `node`, answering `answer` once a call is let go.
    fn serve(node: &Node, service: &str, answer: &'static [u8]) -> Self {
        let started = Arc::new(Notify::new());
        let (ends_tx, ends) = mpsc::channel::<bool>(4);
        let signal = Arc::clone(&started);
        let handle = node
            .serve(service, move |request: RequestContext| {
                let started = Arc::clone(&signal);
                let ends = ends_tx.clone();
                async move {
                    started.notify_one();
                    let cancelled = tokio::select! {
                        () = request.cancellation().cancelled() => true,
                        () = tokio::time::sleep(WAIT) => false,
                    };
                    let _ = ends.send(cancelled).await;
                    Ok::<_, HandlerError>(Bytes::from_static(answer))
                }
            })
            .expect("serve");
        Self {
            _handle: handle,
            started,
            ends,
        }
    }

    /// Whether the handler's call was cancelled, as it reports within 2 s of now (`what`
    /// says why it should end by then).
    async fn ended_cancelled(&mut self, what: &str) -> bool {
        tokio::time::timeout(Duration::from_secs(2), self.ends.recv())
            .await
            .expect(what)
            .expect("report")
    }
}

fn server_error(result: Result<Bytes, RpcError>) -> Status {
    match result {
        Err(RpcError::ServerError { status, .. }) => status,
        other => panic!("expected a server error, got {other:?}"),
    }
}

#[tokio::test]
async fn unary_echo_round_trip_and_metrics() {
    let (a, b, b_id) = connected_pair().await;
    let _echo = echo(&b, "echo");
    let options = CallOptions::default();
    for size in [0usize, 32, 1024, MAX_CALL_BODY_LEN] {
        let body = Bytes::from(vec![0xa5; size]);
        let answer = a.call(b_id, "echo", body.clone(), &options).await;
        assert_eq!(answer.expect("echo answers"), body, "{size} bytes");
    }
    let too_big = Bytes::from(vec![0; MAX_CALL_BODY_LEN + 1]);
    assert_eq!(
        a.call(b_id, "echo", too_big, &options).await,
        Err(RpcError::TooLarge {
            len: MAX_CALL_BODY_LEN + 1,
            max: MAX_CALL_BODY_LEN
        })
    );
    assert_eq!(
        server_error(a.call(b_id, "nothing-here", &b"x"[..], &options).await),
        Status::NOT_FOUND
    );

    // A response that does not fit a datagram is answered `internal`, not sent.
    let _big = b
        .serve("big", |_request: RequestContext| async move {
            Ok::<_, HandlerError>(Bytes::from(vec![0; MAX_CALL_BODY_LEN + 1]))
        })
        .expect("serve");
    match a.call(b_id, "big", &b""[..], &options).await {
        Err(RpcError::ServerError { status, message }) => {
            assert_eq!(status, Status::INTERNAL);
            assert!(message.contains("exceeds"), "{message}");
        }
        other => panic!("expected internal, got {other:?}"),
    }

    // A node calls its own services without the network.
    let _own = echo(&a, "own");
    let answer = a.call(a.node_id(), "own", &b"self"[..], &options).await;
    assert_eq!(answer.expect("loopback call"), Bytes::from_static(b"self"));

    let served = b.rpc_status().await.expect("status");
    assert_eq!(served.services, vec!["big".to_string(), "echo".to_string()]);
    let inbound = &served.inbound["echo"];
    assert_eq!((inbound.calls, inbound.ok), (4, 4));
    let made = a.rpc_status().await.expect("status");
    let outbound = &made.outbound["echo"];
    assert_eq!(
        outbound.calls, 4,
        "a body too large never reaches the actor"
    );
    assert!(outbound.p50_us.is_some());
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Add {
    a: i64,
    b: i64,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Sum {
    sum: i64,
    by: String,
}

#[tokio::test]
async fn typed_call_round_trip_and_bad_body() {
    let (a, b, b_id) = connected_pair().await;
    let _adder = b
        .serve_typed("math.add", |request: RequestContext, add: Add| async move {
            Ok::<_, HandlerError>(Sum {
                sum: add.a + add.b,
                by: request.caller().to_string(),
            })
        })
        .expect("serve");
    let options = CallOptions::default();
    let sum: Sum = a
        .call_typed(b_id, "math.add", &Add { a: 40, b: 2 }, &options)
        .await
        .expect("typed call");
    assert_eq!(
        sum,
        Sum {
            sum: 42,
            by: a.node_id().to_string()
        }
    );
    // A body that is not an `Add` is refused by the typed wrapper, not by the handler.
    let refused = a.call(b_id, "math.add", &b"\xc1"[..], &options).await;
    assert_eq!(server_error(refused), Status::INVALID_ARGUMENT);
    // A response that is not the expected type is a decode error on the caller.
    let wrong: Result<Vec<u8>, _> = a
        .call_typed(b_id, "math.add", &Add { a: 1, b: 1 }, &options)
        .await;
    assert!(matches!(wrong, Err(RpcError::Codec(_))), "{wrong:?}");
}

#[tokio::test]
async fn deadline_times_out_the_caller_and_cancels_the_handler() {
    let (a, b, b_id) = connected_pair().await;
    let mut slow = Stalling::serve(&b, "slow", b"");
    let options = CallOptions::default().with_deadline(Duration::from_millis(200));
    let started = tokio::time::Instant::now();
    let result = a.call(b_id, "slow", &b"zzz"[..], &options).await;
    assert_eq!(result, Err(RpcError::Timeout));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_secs(2),
        "{took:?}"
    );
    assert!(
        slow.ended_cancelled("the handler ends soon after the deadline")
            .await,
        "the handler observed the cancellation"
    );
    let status = b.rpc_status().await.expect("status");
    let cancels = status.counters["requests_cancelled"] + status.counters["requests_expired"];
    assert_eq!(cancels, 1, "{:?}", status.counters);
    let caller = a.rpc_status().await.expect("status");
    assert_eq!(caller.counters["calls_timed_out"], 1);
    assert_eq!(caller.counters["cancels_sent"], 1);
}

#[tokio::test]
async fn dropping_a_pending_call_cancels_it_at_the_server() {
    let (a, b, b_id) = connected_pair().await;
    let mut slow = Stalling::serve(&b, "slow", b"");
    let call = {
        let a = a.clone();
        tokio::spawn(async move {
            a.call(b_id, "slow", &b""[..], &CallOptions::default())
                .await
        })
    };
    tokio::time::timeout(WAIT, slow.started.notified())
        .await
        .expect("the handler runs");
    call.abort();
    assert!(
        slow.ended_cancelled("the handler is cancelled soon after the caller gave up")
            .await
    );
    assert_eq!(
        a.rpc_status().await.expect("status").counters["calls_cancelled"],
        1
    );
}

#[tokio::test]
async fn a_panicking_handler_answers_internal_and_the_server_keeps_serving() {
    let (a, b, b_id) = connected_pair().await;
    let _fragile = b
        .serve("fragile", |request: RequestContext| async move {
            if request.body().as_ref() == b"panic" {
                panic!("asked to panic");
            }
            Ok::<_, HandlerError>(Bytes::from_static(b"fine"))
        })
        .expect("serve");
    let options = CallOptions::default();
    let result = a.call(b_id, "fragile", &b"panic"[..], &options).await;
    match result {
        Err(RpcError::ServerError { status, message }) => {
            assert_eq!(status, Status::INTERNAL);
            assert!(message.contains("asked to panic"), "{message}");
        }
        other => panic!("expected internal, got {other:?}"),
    }
    for _ in 0..3 {
        let ok = a.call(b_id, "fragile", &b"calm"[..], &options).await;
        assert_eq!(ok.expect("served again"), Bytes::from_static(b"fine"));
    }
    assert_eq!(
        b.rpc_status().await.expect("status").counters["handler_panics"],
        1
    );
}

#[tokio::test]
async fn dropping_the_serve_handle_drains_in_flight_calls() {
    let (a, b, b_id) = connected_pair().await;
    let gate = Arc::new(Notify::new());
    let entered = Arc::new(Notify::new());
    let handle = {
        let gate = Arc::clone(&gate);
        let entered = Arc::clone(&entered);
        b.serve("drain", move |_request: RequestContext| {
            let gate = Arc::clone(&gate);
            let entered = Arc::clone(&entered);
            async move {
                entered.notify_one();
                gate.notified().await;
                Ok::<_, HandlerError>(Bytes::from_static(b"finished"))
            }
        })
        .expect("serve")
    };
    let in_flight = {
        let a = a.clone();
        tokio::spawn(async move {
            a.call(b_id, "drain", &b""[..], &CallOptions::default())
                .await
        })
    };
    tokio::time::timeout(WAIT, entered.notified())
        .await
        .expect("the first call is in its handler");
    drop(handle);
    let options = CallOptions::default();
    assert_eq!(
        server_error(a.call(b_id, "drain", &b""[..], &options).await),
        Status::UNAVAILABLE,
        "a draining service refuses new calls"
    );
    gate.notify_one();
    let first = tokio::time::timeout(WAIT, in_flight)
        .await
        .expect("in time")
        .expect("task");
    assert_eq!(
        first.expect("in-flight call completes"),
        Bytes::from_static(b"finished")
    );
    assert_eq!(
        server_error(a.call(b_id, "drain", &b""[..], &options).await),
        Status::NOT_FOUND,
        "a drained service is gone"
    );
    // The name can be served again.
    let _again = echo(&b, "drain");
    let answer = a.call(b_id, "drain", &b"back"[..], &options).await;
    assert_eq!(answer.expect("served again"), Bytes::from_static(b"back"));
}

/// A caller connected to `N` servers, each serving `service` and counting its calls.
async fn caller_and_servers<const N: usize>(
    service: &str,
) -> (Node, Vec<(Node, Arc<AtomicU32>, netrun::rpc::ServeHandle)>) {
    let (caller, nodes) = caller_connected_to::<N>().await;
    let mut servers = Vec::new();
    for server in nodes {
        let count = Arc::new(AtomicU32::new(0));
        let counted = Arc::clone(&count);
        let id = server.node_id();
        let handle = server
            .serve(service, move |_request: RequestContext| {
                counted.fetch_add(1, Ordering::Relaxed);
                async move { Ok::<_, HandlerError>(Bytes::from(id.to_string())) }
            })
            .expect("serve");
        servers.push((server, count, handle));
    }
    // Selection is what these tests check, not where servers are learned (the capability
    // index fills in as announcements arrive): name exactly the three.
    let ids: Vec<NodeId> = servers.iter().map(|(s, _, _)| s.node_id()).collect();
    caller.set_service_directory(Arc::new(move |_: &netrun::rpc::ServiceName| ids.clone()));
    (caller, servers)
}

#[tokio::test]
async fn call_service_spreads_calls_round_robin_over_three_servers() {
    let (caller, servers) = caller_and_servers::<3>("work").await;
    let options = CallOptions::default();
    let mut answered: HashMap<String, u32> = HashMap::new();
    for _ in 0..30 {
        let answer = caller
            .call_service("work", &b"job"[..], &options)
            .await
            .expect("a server answers");
        *answered
            .entry(String::from_utf8(answer.to_vec()).expect("utf-8"))
            .or_default() += 1;
    }
    for (server, count, _) in &servers {
        assert_eq!(count.load(Ordering::Relaxed), 10, "each server got a third");
        assert_eq!(answered[&server.node_id().to_string()], 10);
    }
    // Sticky keeps one key on one server.
    let sticky = CallOptions::default().with_policy(SelectPolicy::sticky(b"user-7"));
    let first = caller
        .call_service("work", &b""[..], &sticky)
        .await
        .expect("sticky");
    for _ in 0..5 {
        let again = caller
            .call_service("work", &b""[..], &sticky)
            .await
            .expect("sticky");
        assert_eq!(again, first);
    }
    // A peer that does not serve the service is skipped (it answers not_found).
    let idle = node().await;
    connect(&caller, &idle).await;
    for _ in 0..8 {
        caller
            .call_service("work", &b""[..], &options)
            .await
            .expect("a serving node answers");
    }
    assert_eq!(
        server_error(caller.call_service("nobody", &b""[..], &options).await),
        Status::NOT_FOUND
    );
}

#[tokio::test]
async fn service_calls_skip_a_node_whose_breaker_opened() {
    let (caller, [good, bad]) = caller_connected_to().await;
    let _good = good
        .serve("svc", |_request: RequestContext| async move {
            Ok::<_, HandlerError>(Bytes::from_static(b"good"))
        })
        .expect("serve");
    let failures = Arc::new(AtomicU32::new(0));
    let counted = Arc::clone(&failures);
    let _bad = bad
        .serve("svc", move |_request: RequestContext| {
            counted.fetch_add(1, Ordering::Relaxed);
            async move { Err::<Bytes, _>(HandlerError::new(Status::UNAVAILABLE, "overloaded")) }
        })
        .expect("serve");
    let options = CallOptions::default();
    let mut ok = 0;
    for _ in 0..30 {
        if caller.call_service("svc", &b""[..], &options).await.is_ok() {
            ok += 1;
        }
    }
    // Five node failures within the window open the bad node's breaker (defaults); from
    // then on round robin only finds the good node.
    assert_eq!(failures.load(Ordering::Relaxed), 5);
    assert_eq!(ok, 25);
    let status = caller.rpc_status().await.expect("status");
    assert_eq!(status.outbound["svc"].errors.get("server_error"), Some(&5));
}

#[tokio::test]
async fn a_hedged_call_cancels_the_slow_loser() {
    let (caller, [one, two]) = caller_connected_to().await;
    // Round robin starts at the lowest node id: make that server the slow one.
    let (slow, fast) = if one.node_id() < two.node_id() {
        (&one, &two)
    } else {
        (&two, &one)
    };
    let mut loser = Stalling::serve(slow, "hedged", b"slow");
    let _fast = fast
        .serve("hedged", |_request: RequestContext| async move {
            Ok::<_, HandlerError>(Bytes::from_static(b"fast"))
        })
        .expect("serve");
    let options = CallOptions::default().with_hedge(HedgePolicy {
        delay: Duration::from_millis(50),
        max_hedges: 1,
    });
    let started = tokio::time::Instant::now();
    let answer = caller
        .call_service("hedged", &b""[..], &options)
        .await
        .expect("the hedge answers");
    assert_eq!(answer, Bytes::from_static(b"fast"));
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(
        loser.ended_cancelled("the loser ends soon").await,
        "the slow server's handler observed the cancel"
    );
    let status = slow.rpc_status().await.expect("status");
    assert_eq!(status.counters["requests_cancelled"], 1);
}

#[tokio::test]
async fn retries_cover_a_server_error_and_stop_at_non_retryable_ones() {
    let (a, b, b_id) = connected_pair().await;
    let calls = Arc::new(AtomicU32::new(0));
    let counted = Arc::clone(&calls);
    let _flaky = b
        .serve("flaky", move |_request: RequestContext| {
            let n = counted.fetch_add(1, Ordering::Relaxed);
            async move {
                if n < 2 {
                    Err(HandlerError::new(Status::UNAVAILABLE, "not yet"))
                } else {
                    Ok(Bytes::from_static(b"third time"))
                }
            }
        })
        .expect("serve");
    let retry = RetryPolicy::default()
        .with_max_attempts(3)
        .with_backoff(Duration::from_millis(5), Duration::from_millis(20));
    let options = CallOptions::default().with_retry(retry);
    let answer = a.call(b_id, "flaky", &b""[..], &options).await;
    assert_eq!(
        answer.expect("third attempt"),
        Bytes::from_static(b"third time")
    );
    assert_eq!(calls.load(Ordering::Relaxed), 3);
    // Application errors are not retried.
    let _app = b
        .serve("app", |_request: RequestContext| async move {
            Err::<Bytes, _>(HandlerError::application(0x8001, "bad input").expect("app band"))
        })
        .expect("serve");
    let failed = a.call(b_id, "app", &b""[..], &options).await;
    assert_eq!(server_error(failed), Status::from_code(0x8001));
}

#[tokio::test]
async fn streaming_delivers_in_order_within_the_credit_window() {
    let (a, b, b_id) = connected_pair().await;
    const ITEMS: u64 = 300;
    const WINDOW: u32 = 8;
    let max_credit = Arc::new(AtomicU64::new(0));
    let seen_credit = Arc::clone(&max_credit);
    let _counter = b
        .serve_streaming(
            "count",
            move |_request: RequestContext, mut sink: StreamSink| {
                let seen_credit = Arc::clone(&seen_credit);
                async move {
                    for i in 0..ITEMS {
                        seen_credit.fetch_max(sink.credit() as u64, Ordering::Relaxed);
                        sink.send(Bytes::copy_from_slice(&i.to_le_bytes()))
                            .await
                            .map_err(|e| HandlerError::internal(e.to_string()))?;
                    }
                    Err(HandlerError::application(0x8002, "done with an error").expect("app band"))
                }
            },
        )
        .expect("serve");
    let options = CallOptions::default().with_window(WINDOW);
    let mut stream = a
        .call_streaming(b_id, "count", &b""[..], &options)
        .expect("stream starts");
    let mut expected = 0u64;
    let end = loop {
        match tokio::time::timeout(WAIT, stream.next())
            .await
            .expect("in time")
        {
            Some(Ok(item)) => {
                let value = u64::from_le_bytes(item.as_ref().try_into().expect("8 bytes"));
                assert_eq!(value, expected, "in order");
                expected += 1;
                if expected % 50 == 0 {
                    // A slow reader: the server must wait for credit, not run ahead.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            Some(Err(e)) => break e,
            None => panic!("the stream ended without its error"),
        }
    };
    assert_eq!(
        expected, ITEMS,
        "every item before the terminal error ({end:?})"
    );
    assert!(
        matches!(&end, RpcError::ServerError { status, .. } if status.code() == 0x8002),
        "{end:?}"
    );
    assert!(stream.next().await.is_none(), "nothing after the end");
    assert!(
        max_credit.load(Ordering::Relaxed) <= u64::from(WINDOW),
        "the sink never had more credit than the window: {}",
        max_credit.load(Ordering::Relaxed)
    );
    let status = a.rpc_status().await.expect("status");
    assert!(status.counters["credits_sent"] > 0);
    assert_eq!(status.counters["protocol_violations"], 0);
}

/// A rpc status counter of `node`.
async fn rpc_counter(node: &Node, name: &str) -> u64 {
    node.rpc_status().await.expect("status").counters[name]
}

#[tokio::test]
async fn a_lost_credit_does_not_stall_a_stream() {
    const ITEMS: u64 = 6;
    let a = node().await;
    let b = node().await;
    // A's datagrams to B pass a relay that can drop them.
    let relay = Relay::start(b.local_addr()).await;
    let b_id = tokio::time::timeout(WAIT, a.connect(relay.addr(), b.public_key()))
        .await
        .expect("connect in time")
        .expect("connect through the relay");
    eventually_async(WAIT, "b has the session", || has_up_peer(&b, a.node_id())).await;
    let _counter = b
        .serve_streaming(
            "count",
            |_request: RequestContext, mut sink: StreamSink| async move {
                for i in 0..ITEMS {
                    sink.send(Bytes::copy_from_slice(&i.to_le_bytes()))
                        .await
                        .map_err(|e| HandlerError::internal(e.to_string()))?;
                }
                Ok(())
            },
        )
        .expect("serve");
    let options = CallOptions::default().with_window(2);
    let mut stream = a
        .call_streaming(b_id, "count", &b""[..], &options)
        .expect("stream starts");
    // B sends its window of 2 items and waits for credit; let them reach A.
    eventually_async(WAIT, "the first window sent", || async {
        rpc_counter(&b, "stream_items_sent").await == 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Every CREDIT for them is lost: B is out of credit, A has nothing to deliver.
    relay.set_blackhole(true);
    let credits_before = rpc_counter(&a, "credits_sent").await;
    let mut expected = 0u64;
    for _ in 0..2 {
        let item = tokio::time::timeout(WAIT, stream.next())
            .await
            .expect("buffered item")
            .expect("an item")
            .expect("ok");
        assert_eq!(item.as_ref(), &expected.to_le_bytes());
        expected += 1;
    }
    let lost = tokio::time::timeout(WAIT, async {
        while rpc_counter(&a, "credits_sent").await == credits_before {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    lost.await.expect("a CREDIT went into the black hole");
    tokio::time::sleep(Duration::from_millis(30)).await;
    relay.set_blackhole(false);
    // A repeats its grant after a silence: the stream finishes long before its 10 s
    // deadline.
    let started = tokio::time::Instant::now();
    loop {
        match tokio::time::timeout(Duration::from_secs(3), stream.next())
            .await
            .expect("the next item or the end comes without a stall")
        {
            Some(Ok(item)) => {
                assert_eq!(item.as_ref(), &expected.to_le_bytes(), "in order");
                expected += 1;
            }
            Some(Err(e)) => panic!("the stream failed: {e:?}"),
            None => break,
        }
    }
    assert_eq!(expected, ITEMS);
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(rpc_counter(&a, "credits_resent").await >= 1);
    assert_eq!(rpc_counter(&a, "protocol_violations").await, 0);
}

#[tokio::test]
async fn dropping_a_stream_cancels_the_server() {
    let (a, b, b_id) = connected_pair().await;
    let (done_tx, done) = oneshot::channel::<Result<u64, SinkError>>();
    let done_tx = Arc::new(std::sync::Mutex::new(Some(done_tx)));
    let _endless = b
        .serve_streaming(
            "endless",
            move |_request: RequestContext, mut sink: StreamSink| {
                let done_tx = Arc::clone(&done_tx);
                async move {
                    let mut sent = 0u64;
                    let end = loop {
                        if let Err(e) = sink.send(Bytes::from_static(b"tick")).await {
                            break e;
                        }
                        sent += 1;
                    };
                    if let Some(tx) = done_tx.lock().expect("lock").take() {
                        let _ = tx.send(if end == SinkError::Cancelled {
                            Ok(sent)
                        } else {
                            Err(end)
                        });
                    }
                    Ok(())
                }
            },
        )
        .expect("serve");
    let options = CallOptions::default().with_window(4);
    let mut stream = a
        .call_streaming(b_id, "endless", &b""[..], &options)
        .expect("stream starts");
    for _ in 0..10 {
        let item = tokio::time::timeout(WAIT, stream.next())
            .await
            .expect("in time");
        assert_eq!(
            item.expect("an item").expect("ok"),
            Bytes::from_static(b"tick")
        );
    }
    drop(stream);
    let sent = tokio::time::timeout(Duration::from_secs(2), done)
        .await
        .expect("the handler stops soon after the drop")
        .expect("report")
        .expect("stopped by cancellation");
    assert!(
        (10..=10 + 4 + 4).contains(&sent),
        "credit bounded the run-ahead: {sent}"
    );
}

#[tokio::test]
async fn the_rpc_actor_restarts_and_keeps_serving() {
    let (a, b, b_id) = connected_pair().await;
    let _echo = echo(&b, "echo");
    let options = CallOptions::default();
    a.call(b_id, "echo", &b"1"[..], &options)
        .await
        .expect("before");
    let rpc = &b.supervision().rpc;
    let generation = rpc.generation().expect("running");
    rpc.cell().expect("rpc actor").kill();
    let restarted = async {
        while rpc.generation() == Some(generation) || rpc.actor().is_none() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(WAIT, restarted)
        .await
        .expect("restarted");
    let answer = a
        .call(
            b_id,
            "echo",
            &b"2"[..],
            &options.clone().with_deadline(Duration::from_secs(2)),
        )
        .await;
    assert_eq!(
        answer.expect("served after restart"),
        Bytes::from_static(b"2")
    );
}
