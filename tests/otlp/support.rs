//! Shared support for the OpenTelemetry tests: the OTLP receiver (`receiver.py`) as a
//! [`Collector`], span polling, and child processes that are always killed. Included by
//! `tests/tests/otel.rs`, `tests/tests/daemons.rs` and `node/tests/otel_start.rs` with
//! `#[path]`.
#![allow(dead_code, reason = "each including test uses a different part")]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Generous: the first export opens a connection, and CI machines are slow.
pub(crate) const WAIT: Duration = Duration::from_secs(30);

/// Environment variables the OTLP exporter would read on its own; the test sets the
/// endpoint and protocol explicitly, so none of the developer's may leak in.
pub(crate) const OTEL_ENV: &[&str] = &[
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

/// Polls `netrun peers` until the node in `data_dir` has a peer in state `up`.
pub(crate) fn wait_for_peer_up(netrun: &Path, data_dir: &Path) {
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

pub(crate) fn as_str(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v}"))
}

/// Whether the receiver's Python packages import; installs them with pip if not.
pub(crate) fn receiver_available() -> Result<(), String> {
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

/// The OTLP receiver on loopback, writing every span it gets to a file of its own;
/// killed by PID on drop.
pub(crate) struct Collector {
    // Declared before `_dir`, so the receiver is killed before its directory goes.
    process: Process,
    spans_file: PathBuf,
    grpc: String,
    http: String,
    _dir: tempfile::TempDir,
}

impl Collector {
    /// Starts the receiver and waits for its endpoints, or prints why it cannot run and
    /// returns `None`: the test then skips.
    pub(crate) fn start_or_skip() -> Option<Self> {
        if let Err(reason) = receiver_available() {
            eprintln!("SKIPPED: no OTLP receiver: {reason}");
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let spans_file = dir.path().join("spans.jsonl");
        let mut process = Process::spawn(
            clean_command("python3")
                .arg(receiver_script())
                .arg(&spans_file),
        );
        let endpoints = process.line();
        Some(Self {
            grpc: as_str(&endpoints["grpc"]).to_owned(),
            http: as_str(&endpoints["http"]).to_owned(),
            process,
            spans_file,
            _dir: dir,
        })
    }

    /// The OTLP/gRPC endpoint (`http://127.0.0.1:<port>`).
    pub(crate) fn grpc(&self) -> &str {
        &self.grpc
    }

    /// The OTLP/HTTP endpoint (`http://127.0.0.1:<port>`).
    pub(crate) fn http(&self) -> &str {
        &self.http
    }

    /// The spans received, once `done` holds for them (or after [`WAIT`], as they are).
    pub(crate) fn spans(&self, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        poll_spans(&self.spans_file, done)
    }
}

/// The spans in `path`, once `done` holds for them (or at the deadline, as they are).
pub(crate) fn poll_spans(path: &Path, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
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
pub(crate) fn summary(spans: &[Value]) -> String {
    let names: Vec<String> = spans
        .iter()
        .map(|s| format!("{}@{}", s["name"], s["resource"]["service.instance.id"]))
        .collect();
    names.join(", ")
}

pub(crate) fn find<'a>(spans: &'a [Value], name: &str) -> Option<&'a Value> {
    spans.iter().find(|s| s["name"] == name)
}

/// A command for `program` without the developer's OTLP and netrun settings.
pub(crate) fn clean_command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut command = Command::new(program);
    for var in OTEL_ENV {
        command.env_remove(var);
    }
    command
}

/// The repository root (both including packages sit one level below it).
pub(crate) fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The OTLP receiver script.
pub(crate) fn receiver_script() -> PathBuf {
    repo_root().join("tests/otlp/receiver.py")
}

/// A child process that is killed (by its PID) if the test ends early.
pub(crate) struct Process {
    child: Child,
    lines: mpsc::Receiver<String>,
    name: String,
}

impl Process {
    pub(crate) fn spawn(command: &mut Command) -> Self {
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
    pub(crate) fn line(&mut self) -> HashMap<String, Value> {
        let line = self
            .lines
            .recv_timeout(WAIT)
            .unwrap_or_else(|e| panic!("{}: no output line ({e})", self.name));
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{}: {line:?}: {e}", self.name))
    }

    pub(crate) fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {}", self.child.id());
    }

    /// Waits for the process to exit; whether it succeeded.
    pub(crate) fn wait(&mut self) -> bool {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.child.try_wait().expect("try_wait") {
                Some(status) => return status.success(),
                None if Instant::now() > deadline => panic!("{} did not exit", self.name),
                None => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}
