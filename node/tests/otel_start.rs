//! The real `netrun start` binary exports its spans to an OTLP receiver on loopback,
//! configured only through the standard `OTEL_EXPORTER_OTLP_*` variables (one node over
//! gRPC, one over HTTP/protobuf), and SIGTERM still flushes them. Without Python or pip
//! the test prints why and skips.

#[path = "../../tests/otlp/support.rs"]
mod support;

use serde_json::Value;

use support::*;

#[test]
fn netrun_start_exports_session_spans_and_flushes_them_on_sigterm() {
    let Some(collector) = Collector::start_or_skip() else {
        return;
    };
    let netrun = std::path::PathBuf::from(env!("CARGO_BIN_EXE_netrun"));
    let dir = tempfile::tempdir().expect("tempdir");
    let (a_dir, b_dir) = (dir.path().join("a"), dir.path().join("b"));

    let mut a = Process::spawn(
        clean_command(&netrun)
            .args(["start", "--bind", "127.0.0.1:0", "--data-dir"])
            .arg(&a_dir)
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", collector.grpc()),
    );
    let a_hello = a.line();
    let peer = format!(
        "{}={}",
        as_str(&a_hello["addr"]),
        as_str(&a_hello["public_key"])
    );
    let mut b = Process::spawn(
        clean_command(&netrun)
            .args([
                "start",
                "--bind",
                "127.0.0.1:0",
                "--peer",
                &peer,
                "--data-dir",
            ])
            .arg(&b_dir)
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", collector.http())
            .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
    );
    let b_hello = b.line();
    wait_for_peer_up(&netrun, &b_dir);

    // The batch processor exports every 5 s by default; the session came up well within
    // that, so spans that reach the receiver were flushed by the SIGTERM shutdown path.
    b.terminate();
    a.terminate();
    assert!(a.wait() && b.wait(), "both nodes exit cleanly on SIGTERM");
    let a_id = as_str(&a_hello["node_id"]).to_owned();
    let b_id = as_str(&b_hello["node_id"]).to_owned();
    let exported_by = |spans: &[Value], id: &str| {
        spans
            .iter()
            .any(|s| s["name"] == "session" && s["resource"]["service.instance.id"] == id)
    };
    let spans = collector.spans(|spans| exported_by(spans, &a_id) && exported_by(spans, &b_id));
    drop(collector);

    for (id, transport) in [(&a_id, "grpc"), (&b_id, "http")] {
        let session = spans
            .iter()
            .find(|s| s["name"] == "session" && s["resource"]["service.instance.id"] == id.as_str())
            .unwrap_or_else(|| panic!("no session span from {id} in {}", summary(&spans)));
        assert_eq!(session["transport"], transport);
        assert_eq!(session["resource"]["service.name"], "netrun");
    }
    assert!(
        spans.iter().any(|s| s["events"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e == "peer up"))),
        "the session lifecycle is visible as span events"
    );
    // B dialled A: B's handshake span is the initiator's, A's the responder's.
    for (id, role) in [(&b_id, "initiator"), (&a_id, "responder")] {
        assert!(
            spans.iter().any(|s| s["name"] == "netrun.handshake"
                && s["resource"]["service.instance.id"] == id.as_str()
                && s["attributes"]["role"] == role),
            "a {role} handshake span from {id} in {}",
            summary(&spans)
        );
    }
    assert!(
        !spans.iter().any(|s| s["name"] == "Actor"),
        "ractor's actor-lifetime spans stay out of export"
    );
}
