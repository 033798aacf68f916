//! Traces across two netrun processes, exported to a real OTLP receiver on loopback.
//!
//! The receiver is `tests/otlp/receiver.py` (Python, grpcio + opentelemetry-proto): it
//! takes OTLP/gRPC and OTLP/HTTP and writes every span it gets as a JSON line. The nodes
//! are two `otel-node` processes (`tests/otlp/otel_node.rs`): the receiving one exports
//! over gRPC and stops on SIGTERM; the sending one exports over HTTP/protobuf and exits
//! by itself. The `netrun start` binary is tested the same way in
//! `node/tests/otel_start.rs`, which runs it twice (gRPC and HTTP/protobuf, configured
//! through the standard `OTEL_EXPORTER_OTLP_*` variables) and checks that SIGTERM still
//! flushes their spans. Without Python or pip the tests print why and skip.

#[path = "../otlp/support.rs"]
mod support;

use support::*;

#[test]
fn a_datagram_sent_in_a_span_continues_the_trace_on_the_receiving_node() {
    let Some(collector) = Collector::start_or_skip() else {
        return;
    };
    let (mut receiver, receiver_id, mut sender) = otel_nodes(&collector, "receive", "send");
    assert!(sender.wait(), "the sending node exits cleanly");
    let got = receiver.line();
    assert_eq!(got["traced"], true, "the datagram carried a trace context");
    receiver.terminate();
    assert!(
        receiver.wait(),
        "the receiving node exits cleanly on SIGTERM"
    );

    // Both nodes flushed at shutdown, so their spans are already there; the short poll
    // only covers the receiver's write racing this read.
    let spans = collector.spans(|spans| {
        find(spans, "netrun.datagram.receive").is_some() && find(spans, "app.request").is_some()
    });

    let request = find(&spans, "app.request").expect("app.request span");
    let send = find(&spans, "netrun.datagram.send").expect("netrun.datagram.send span");
    let receive = find(&spans, "netrun.datagram.receive").expect("receive span");

    assert_eq!(send["trace_id"], request["trace_id"]);
    assert_eq!(
        send["parent_span_id"], request["span_id"],
        "send is a child of the user span"
    );
    assert_eq!(
        receive["trace_id"], request["trace_id"],
        "one trace across both processes"
    );
    assert_eq!(
        receive["parent_span_id"], send["span_id"],
        "the receiving node's span is a child of the sending node's span"
    );
    assert_eq!(
        request["transport"], "http",
        "the sender exported over OTLP/HTTP"
    );
    assert_eq!(
        receive["transport"], "grpc",
        "the receiver exported over OTLP/gRPC"
    );

    for span in [request, send, receive] {
        assert_eq!(span["resource"]["service.name"], "netrun");
    }
    let sender_id = send["resource"]["service.instance.id"].clone();
    assert_eq!(
        receive["resource"]["service.instance.id"],
        receiver_id.as_str()
    );
    assert_ne!(sender_id, receive["resource"]["service.instance.id"]);
    assert_eq!(receive["attributes"]["node"], receiver_id.as_str());
    assert_eq!(receive["attributes"]["peer"], sender_id);
    assert_eq!(receive["attributes"]["size"], 13);

    // Session lifecycle reaches the collector as span events: the initiator's `peer up`
    // is an event of its `netrun.handshake` span, the responder's of a `session` span.
    let peer_up = spans.iter().any(|s| {
        (s["name"] == "session" || s["name"] == "netrun.handshake")
            && s["events"]
                .as_array()
                .is_some_and(|e| e.iter().any(|e| e == "peer up"))
    });
    assert!(
        peer_up,
        "a session or handshake span carries the `peer up` event"
    );
}

#[test]
fn an_rpc_handler_span_is_a_child_of_the_callers_span() {
    let Some(collector) = Collector::start_or_skip() else {
        return;
    };
    let (mut server, server_id, mut caller) = otel_nodes(&collector, "serve", "call");
    assert_eq!(caller.line()["answer"], 11, "the echo answered");
    assert!(caller.wait(), "the calling node exits cleanly");
    assert_eq!(server.line()["handled"], 11);
    server.terminate();
    assert!(server.wait(), "the serving node exits cleanly on SIGTERM");

    let spans = collector.spans(|spans| {
        find(spans, "netrun.rpc.serve").is_some() && find(spans, "app.rpc").is_some()
    });
    let app = find(&spans, "app.rpc").expect("app.rpc span");
    // Retried attempts share one call span; the serve span is the one that answered.
    let call = find(&spans, "netrun.rpc.call").expect("netrun.rpc.call span");
    let serve = find(&spans, "netrun.rpc.serve").expect("netrun.rpc.serve span");
    assert_eq!(call["trace_id"], app["trace_id"]);
    assert_eq!(
        call["parent_span_id"], app["span_id"],
        "the call is a child of the app span"
    );
    assert_eq!(
        serve["trace_id"],
        app["trace_id"],
        "the handler's span joins the caller's trace across processes: {}",
        summary(&spans)
    );
    assert_eq!(
        serve["parent_span_id"], call["span_id"],
        "the handler's span is a child of the call span"
    );
    assert_eq!(call["attributes"]["rpc.service"], "traced.echo");
    assert_eq!(call["attributes"]["rpc.status"], "ok");
    assert_eq!(call["attributes"]["rpc.target"], server_id.as_str());
    assert!(
        call["attributes"]["rpc.latency_us"].is_i64()
            || call["attributes"]["rpc.latency_us"].is_u64()
    );
    assert_eq!(serve["attributes"]["rpc.service"], "traced.echo");
    assert_eq!(serve["attributes"]["rpc.status"], "ok");
    assert_eq!(serve["resource"]["service.instance.id"], server_id.as_str());
}

/// Starts an `otel-node` in the `listening` role, exporting over OTLP/gRPC, then one in the
/// `dialing` role that reaches it, exporting over OTLP/HTTP. Returns the listening process,
/// its node id and the dialing process.
fn otel_nodes(collector: &Collector, listening: &str, dialing: &str) -> (Process, String, Process) {
    let otel_node = env!("CARGO_BIN_EXE_otel-node");
    let mut listener =
        Process::spawn(clean_command(otel_node).args([listening, collector.grpc(), "grpc"]));
    let hello = listener.line();
    let listener_id = as_str(&hello["node_id"]).to_owned();
    let dialer = Process::spawn(clean_command(otel_node).args([
        dialing,
        collector.http(),
        "http",
        as_str(&hello["addr"]),
        as_str(&hello["public_key"]),
    ]));
    (listener, listener_id, dialer)
}
