//! The CLI test harness: runs `netrun start` as a child process on its own data directory
//! (identity, control socket), runs client commands against it, parses their JSON, and
//! signals and reaps processes by PID.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The `netrun` binary under test.
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_netrun");
/// The mesh key every test node shares (`NETRUN_PSK`).
const PSK: &str = "4242424242424242424242424242424242424242424242424242424242424242";

/// A `netrun start` process, killed when dropped.
pub(crate) struct Running {
    /// The node process.
    pub(crate) child: Child,
    /// The JSON line the node printed first (`node_id`, `addr`, `public_key`).
    pub(crate) hello: Value,
}

impl Running {
    /// `ADDR=PUBKEY`, as `--peer` and `--seed` take it.
    pub(crate) fn contact(&self) -> String {
        format!(
            "{}={}",
            self.hello["addr"].as_str().expect("addr"),
            self.hello["public_key"].as_str().expect("key")
        )
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `netrun start` on a free loopback port with `data_dir`, the shared PSK and warnings-only
/// logs; add arguments or variables before [`launch`] or `.output()`.
pub(crate) fn start_command(data_dir: &Path) -> Command {
    let mut command = Command::new(BIN);
    command
        .args(["start", "--bind", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .env("NETRUN_PSK", PSK)
        .env("NETRUN_LOG", "warn");
    command
}

/// Spawns a `netrun start` command and waits for its hello line.
pub(crate) fn launch(command: &mut Command) -> Running {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn netrun start");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("first line");
    let hello: Value = serde_json::from_str(&line).expect("first stdout line is JSON");
    Running { child, hello }
}

/// Writes `text` as `node.toml` in `data_dir` (created if needed) and returns its path.
pub(crate) fn write_config(data_dir: &Path, text: &str) -> PathBuf {
    std::fs::create_dir_all(data_dir).expect("data dir");
    let path = data_dir.join("node.toml");
    std::fs::write(&path, text).expect("config");
    path
}

/// Runs `netrun ARGS --data-dir DATA_DIR` to completion.
pub(crate) fn netrun(args: &[&str], data_dir: &Path) -> Output {
    Command::new(BIN)
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .output()
        .expect("run netrun")
}

/// Runs a command that prints JSON and returns it; the command must succeed.
#[track_caller]
pub(crate) fn json_of(args: &[&str], data_dir: &Path) -> Value {
    success_json(&netrun(args, data_dir))
}

/// A finished command's stdout as JSON; the command must have succeeded.
#[track_caller]
pub(crate) fn success_json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "{}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

/// Retries `check` until it holds or `within` passes.
#[allow(
    dead_code,
    reason = "each test binary compiles this module; only some of them poll a condition"
)]
pub(crate) fn eventually(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends `signal` (`TERM`, `INT` …) to `child`.
pub(crate) fn signal(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status()
        .expect("kill");
    assert!(status.success(), "kill -{signal}");
}

/// Waits for `child` to exit, failing the test if it does not within `within`.
pub(crate) fn wait_exit(child: &mut Child, within: Duration) -> ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(Instant::now() < deadline, "did not exit within {within:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}
