//! Traces across two netrun processes, exported to a real OTLP receiver on loopback.
//!
//! The receiver is `tests/otlp/receiver.py` (Python, grpcio + opentelemetry-proto): it
//! takes OTLP/gRPC and OTLP/HTTP and writes every span it gets as a JSON line. The nodes
//! are two `otel-node` processes (`tests/otlp/otel_node.rs`): the receiving one exports
//! over gRPC and stops on SIGTERM; the sending one exports over HTTP/protobuf and exits
//! by itself. The `netrun start` binary is tested the same way in `node/tests/otel_start.rs`, which runs it twice (gRPC and
//! HTTP/protobuf, configured through the standard `OTEL_EXPORTER_OTLP_*` variables) and
//! checks that SIGTERM still flushes their spans. Without Python or pip the tests print
//! why and skip.

#[path = "../otlp/support.rs"]
mod support;

use support::*;

#[test]
fn a_datagram_sent_in_a_span_continues_the_trace_on_the_receiving_node() {
    if let Err(reason) = receiver_available() {
        eprintln!("SKIPPED: no OTLP receiver: {reason}");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let spans_file = dir.path().join("spans.jsonl");

    let mut collector = Process::spawn(
        clean_command("python3")
            .arg(receiver_script())
            .arg(&spans_file),
    );
    let endpoints = collector.line();
    let grpc = endpoints["grpc"].as_str().expect("grpc endpoint");
    let http = endpoints["http"].as_str().expect("http endpoint");

    let mut receiver = Process::spawn(clean_command(otel_node()).args(["receive", grpc, "grpc"]));
    let hello = receiver.line();
    let receiver_id = hello["node_id"].as_str().expect("node_id").to_owned();
    let mut sender = Process::spawn(clean_command(otel_node()).args([
        "send",
        http,
        "http",
        hello["addr"].as_str().expect("addr"),
        hello["public_key"].as_str().expect("public_key"),
    ]));
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
    let spans = poll_spans(&spans_file, |spans| {
        find(spans, "netrun.datagram.receive").is_some() && find(spans, "app.request").is_some()
    });
    collector.kill();

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

fn otel_node() -> &'static str {
    env!("CARGO_BIN_EXE_otel-node")
}
