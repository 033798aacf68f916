//! Traces across two netrun processes, exported to a real OTLP receiver on loopback.
//!
//! The receiver is `tests/otlp/receiver.py` (Python, grpcio + opentelemetry-proto): it
//! takes OTLP/gRPC and OTLP/HTTP and writes every span it gets as a JSON line. The nodes
//! are two `otel-node` processes (`tests/otlp/otel_node.rs`): the receiving one exports
//! over gRPC and stops on SIGTERM; the sending one exports over HTTP/protobuf and exits
//! by itself. A second test runs the real `netrun start` binary twice (gRPC and
//! HTTP/protobuf, configured through the standard `OTEL_EXPORTER_OTLP_*` variables) and
//! checks that SIGTERM still flushes their spans. Without Python or pip the tests print
//! why and skip.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Generous: the first export opens a connection, and CI machines are slow.
const WAIT: Duration = Duration::from_secs(30);

/// Environment variables the OTLP exporter would read on its own; the test sets the
/// endpoint and protocol explicitly, so none of the developer's may leak in.
const OTEL_ENV: &[&str] = &[
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_TRACES_SAMPLER",
    "RUST_LOG",
    "NETRUN_CONFIG",
    "NETRUN_DATA_DIR",
    "NETRUN_LOG",
];

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
            .arg(manifest_dir().join("otlp/receiver.py"))
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

    // Session lifecycle reaches the collector as events on the session actor's spans.
    let peer_up = spans.iter().any(|s| {
        s["name"] == "session"
            && s["events"]
                .as_array()
                .is_some_and(|e| e.iter().any(|e| e == "peer up"))
    });
    assert!(peer_up, "a session span carries the `peer up` event");
}

#[test]
fn netrun_start_exports_session_spans_and_flushes_them_on_sigterm() {
    if let Err(reason) = receiver_available() {
        eprintln!("SKIPPED: no OTLP receiver: {reason}");
        return;
    }
    let netrun = match netrun_binary() {
        Ok(path) => path,
        Err(reason) => panic!("cannot build the netrun binary: {reason}"),
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let spans_file = dir.path().join("spans.jsonl");
    let mut collector = Process::spawn(
        clean_command("python3")
            .arg(manifest_dir().join("otlp/receiver.py"))
            .arg(&spans_file),
    );
    let endpoints = collector.line();
    let (a_dir, b_dir) = (dir.path().join("a"), dir.path().join("b"));

    let mut a = Process::spawn(
        clean_command(&netrun)
            .args(["start", "--bind", "127.0.0.1:0", "--data-dir"])
            .arg(&a_dir)
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", as_str(&endpoints["grpc"])),
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
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", as_str(&endpoints["http"]))
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
    let spans = poll_spans(&spans_file, |spans| {
        exported_by(spans, &a_id) && exported_by(spans, &b_id)
    });
    collector.kill();

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
    assert!(
        !spans.iter().any(|s| s["name"] == "Actor"),
        "ractor's actor-lifetime spans stay out of export"
    );
}

/// Polls `netrun peers` until the node in `data_dir` has a peer in state `up`.
fn wait_for_peer_up(netrun: &Path, data_dir: &Path) {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        let out = Command::new(netrun)
            .args(["peers", "--json", "--data-dir"])
            .arg(data_dir)
            .output()
            .expect("run netrun peers");
        let peers: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        let up = peers.as_array().is_some_and(|ps| {
            ps.iter().any(|p| {
                p["state"]
                    .as_str()
                    .is_some_and(|s| s.eq_ignore_ascii_case("up"))
            })
        });
        if up {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("no session came up at {}", data_dir.display());
}

/// The `netrun` binary of this build: Cargo builds only the library of a dependency, and
/// `CARGO_BIN_EXE_*` covers this package's own binaries only.
fn netrun_binary() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    // target/<profile>/deps/otel-<hash>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or("unexpected test executable path")?;
    let target_dir = profile_dir
        .parent()
        .ok_or("unexpected test executable path")?;
    // `cargo test --workspace` has built it already (the `netrun` package's own tests need
    // it); build it only when this package is tested alone.
    let built = profile_dir.join("netrun");
    if built.is_file() {
        return Ok(built);
    }
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev",
        Some(other) => other,
        None => return Err("unexpected test executable path".into()),
    };
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--quiet",
            "-p",
            "netrun",
            "--bin",
            "netrun",
            "--profile",
            profile,
        ])
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(manifest_dir())
        .status()
        .map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!("cargo build -p netrun --bin netrun: {status}"));
    }
    Ok(profile_dir.join("netrun"))
}

fn as_str(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v}"))
}

/// Whether the receiver's Python packages import; installs them with pip if not.
fn receiver_available() -> Result<(), String> {
    let imports = || {
        Command::new("python3")
            .args([
                "-c",
                "import grpc, opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if imports() {
        return Ok(());
    }
    let pip = Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(["grpcio", "opentelemetry-proto"])
        .status()
        .map_err(|e| format!("cannot run python3: {e}"))?;
    if !pip.success() {
        return Err(format!(
            "`python3 -m pip install grpcio opentelemetry-proto` failed ({pip})"
        ));
    }
    if imports() {
        Ok(())
    } else {
        Err("grpcio / opentelemetry-proto installed but do not import".into())
    }
}

/// The spans in `path`, once `done` holds for them (or at the deadline, as they are).
fn poll_spans(path: &Path, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        let spans: Vec<Value> = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        if done(&spans) || Instant::now() > deadline {
            return spans;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `name@instance` of every span, for failure messages.
fn summary(spans: &[Value]) -> String {
    let names: Vec<String> = spans
        .iter()
        .map(|s| format!("{}@{}", s["name"], s["resource"]["service.instance.id"]))
        .collect();
    names.join(", ")
}

fn find<'a>(spans: &'a [Value], name: &str) -> Option<&'a Value> {
    spans.iter().find(|s| s["name"] == name)
}

/// A command for `program` without the developer's OTLP and netrun settings.
fn clean_command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut command = Command::new(program);
    for var in OTEL_ENV {
        command.env_remove(var);
    }
    command
}

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn otel_node() -> &'static str {
    env!("CARGO_BIN_EXE_otel-node")
}

/// A child process that is killed (by its PID) if the test ends early.
struct Process {
    child: Child,
    lines: mpsc::Receiver<String>,
    name: String,
}

impl Process {
    fn spawn(command: &mut Command) -> Self {
        let name = format!("{command:?}");
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let stdout: ChildStdout = child.stdout.take().expect("piped stdout");
        // The processes print a handful of lines; 64 is never reached.
        let (tx, lines) = mpsc::sync_channel(64);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Self { child, lines, name }
    }

    /// The next JSON line the process prints.
    fn line(&mut self) -> HashMap<String, Value> {
        let line = self
            .lines
            .recv_timeout(WAIT)
            .unwrap_or_else(|e| panic!("{}: no output line ({e})", self.name));
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{}: {line:?}: {e}", self.name))
    }

    fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {}", self.child.id());
    }

    /// Waits for the process to exit; whether it succeeded.
    fn wait(&mut self) -> bool {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.child.try_wait().expect("try_wait") {
                Some(status) => return status.success(),
                None if Instant::now() > deadline => panic!("{} did not exit", self.name),
                None => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}
