//! Drives the `netrun` binary as a user would.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::{
    BIN, Running, json_of, launch, netrun, signal, start_command, success_json, wait_exit,
    write_config,
};

fn start(data_dir: &Path, extra: &[&str]) -> Running {
    launch(start_command(data_dir).args(extra))
}

fn peers_of(data_dir: &Path) -> Vec<Value> {
    json_of(&["peers", "--json"], data_dir)
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Waits until `a` and `b` each list the other as up; returns their peer lists.
fn wait_peered(
    (a, a_dir): (&Running, &Path),
    (b, b_dir): (&Running, &Path),
    within: Duration,
) -> (Vec<Value>, Vec<Value>) {
    let up = |list: &[Value], node: &Running| {
        list.iter()
            .any(|p| p["node_id"] == node.hello["node_id"] && p["state"] == "up")
    };
    let deadline = Instant::now() + within;
    loop {
        let (on_a, on_b) = (peers_of(a_dir), peers_of(b_dir));
        if up(&on_b, a) && up(&on_a, b) {
            return (on_a, on_b);
        }
        assert!(
            Instant::now() < deadline,
            "peers never came up: a={on_a:?} b={on_b:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn two_node_processes_peer_and_stop_cleanly() {
    let dir = tempfile::tempdir().expect("tmp");
    let (a_dir, b_dir) = (dir.path().join("a"), dir.path().join("b"));
    let mut a = start(&a_dir, &[]);
    for key in ["node_id", "addr", "public_key"] {
        assert!(
            a.hello[key].is_string(),
            "hello line has {key}: {}",
            a.hello
        );
    }
    let mut b = start(&b_dir, &["--peer", &a.contact()]);
    wait_peered((&a, &a_dir), (&b, &b_dir), Duration::from_secs(10));

    let out = netrun(&["peers"], &a_dir);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(b.hello["node_id"].as_str().expect("id")),
        "{text}"
    );

    let status = json_of(&["status", "--json"], &a_dir);
    assert_eq!(status["node_id"], a.hello["node_id"]);
    assert_eq!(status["tree"]["name"], "root");
    let subtrees: Vec<&str> = status["tree"]["children"]
        .as_array()
        .expect("children")
        .iter()
        .filter_map(|c| c["id"].as_str())
        .collect();
    for expected in [
        "transport",
        "sessions",
        "discovery",
        "state",
        "channels",
        "daemons",
        "control",
    ] {
        assert!(subtrees.contains(&expected), "{expected} in {subtrees:?}");
    }

    for node in [&mut a, &mut b] {
        signal(&node.child, "TERM");
        let status = wait_exit(&mut node.child, Duration::from_secs(1));
        assert_eq!(status.code(), Some(0), "graceful exit");
    }
    assert!(
        !a_dir.join("control.sock").exists(),
        "control socket removed at shutdown"
    );
}

#[test]
fn user_errors_get_one_line_and_an_exit_code() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = netrun(&["status"], &dir.path().join("nothing-here"));
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no node is running") && err.contains("netrun start"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    let config = write_config(dir.path(), "[session]\nheartbeat_interval_ms = 0\n");
    let out = Command::new(BIN)
        .args(["start", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("session.heartbeat_interval_ms"), "{err}");
    assert!(!dir.path().join("identity.key").exists(), "nothing started");

    let out = Command::new(BIN)
        .args(["start", "--peer", "nonsense"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(BIN)
        .arg("no-such-command")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(BIN).arg("--help").output().expect("run");
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Exit codes"));
}

#[test]
fn a_second_node_on_the_same_data_dir_is_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let _first = start(dir.path(), &[]);
    let out = start_command(dir.path()).output().expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already running"), "{err}");
}

#[test]
fn identity_new_then_show_and_never_replace() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = netrun(&["identity", "show"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("netrun identity new"));

    let created = json_of(&["identity", "new", "--json"], dir.path());
    let shown = json_of(&["identity", "show", "--json"], dir.path());
    assert_eq!(created["node_id"], shown["node_id"]);
    assert_eq!(created["public_key"], shown["public_key"]);

    let out = netrun(&["identity", "new"], dir.path());
    assert_eq!(
        out.status.code(),
        Some(1),
        "an existing identity is never replaced"
    );

    // The node started on this data directory uses the same identity.
    let node = start(dir.path(), &[]);
    assert_eq!(node.hello["node_id"], shown["node_id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_call_through_a_running_node() {
    use netrun::Node;
    use netrun::rpc::{HandlerError, RequestContext};

    #[derive(serde::Deserialize)]
    struct Add {
        a: i64,
        b: i64,
    }

    let dir = tempfile::tempdir().expect("tmp");
    let psk = [0x42; 32];
    let a = Node::builder()
        .psk(psk)
        .control_socket(dir.path().join(netrun::control::CONTROL_SOCKET))
        .start()
        .await
        .expect("a starts");
    let b = Node::builder().psk(psk).start().await.expect("b starts");
    let b_id = a
        .connect(b.local_addr(), b.public_key())
        .await
        .expect("connect");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !b.peers().await.iter().any(|p| p.node == a.node_id()) {
        assert!(Instant::now() < deadline, "b never saw the session");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let _echo = b
        .serve("echo", |request: RequestContext| async move {
            Ok::<_, HandlerError>(request.body().clone())
        })
        .expect("serve echo");
    let _add = b
        .serve_typed(
            "math.add",
            |_request: RequestContext, add: Add| async move {
                Ok::<_, HandlerError>(serde_json::json!({ "sum": add.a + add.b }))
            },
        )
        .expect("serve add");
    let id = b_id.to_string();
    let call = |service: &str, body: &str, json: bool| {
        let mut args: Vec<String> = ["rpc", "call", &id, service, body]
            .iter()
            .map(|s| s.to_string())
            .collect();
        if json {
            args.push("--json".into());
        }
        args
    };

    let out = netrun_async(
        &call("echo", r#"{"hello":[1,2,3],"n":null}"#, false),
        dir.path(),
    )
    .await;
    let body = success_json(&out);
    assert_eq!(body, serde_json::json!({"hello": [1, 2, 3], "n": null}));

    let out = netrun_async(&call("math.add", r#"{"a":40,"b":2}"#, true), dir.path()).await;
    let result = success_json(&out);
    assert_eq!(result["body"], serde_json::json!({"sum": 42}));
    assert_eq!(result["node"], id.as_str());
    assert!(result["latency_us"].is_u64());

    let out = netrun_async(&call("math.add", r#""not an Add""#, false), dir.path()).await;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid_argument"), "{err}");

    let out = netrun_async(&call("nothing", "{}", false), dir.path()).await;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not_found"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    let out = netrun_async(&call("echo", "{not json", false), dir.path()).await;
    assert_eq!(out.status.code(), Some(2));
    let out = netrun_async(&["rpc", "call", "xyz", "echo", "{}"], dir.path()).await;
    assert_eq!(out.status.code(), Some(2));
    let out = netrun_async(&call("echo", "{}", false), &dir.path().join("elsewhere")).await;
    assert_eq!(out.status.code(), Some(3), "no node running there");

    let out = netrun_async(&["status", "--json"], dir.path()).await;
    let status: Value = serde_json::from_slice(&out.stdout).expect("status json");
    assert_eq!(status["rpc"]["outbound"]["echo"]["calls"], 1);
    assert_eq!(
        status["rpc"]["outbound"]["math.add"]["errors"]["server_error"],
        1
    );
    let out = netrun_async(&["status"], dir.path()).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("called echo"), "{text}");
    a.shutdown().await;
    b.shutdown().await;
}

#[test]
fn peers_show_how_they_were_found_and_discovery_shows_the_backends() {
    let dir = tempfile::tempdir().expect("tmp");
    let (a_dir, b_dir) = (dir.path().join("a"), dir.path().join("b"));
    let a = start(&a_dir, &[]);
    let b = start(&b_dir, &["--seed", &a.contact()]);
    let (a_id, b_id) = (&a.hello["node_id"], &b.hello["node_id"]);
    let (on_a, on_b) = wait_peered((&a, &a_dir), (&b, &b_dir), Duration::from_secs(20));
    let entry = |list: &[Value], id: &Value| {
        list.iter()
            .find(|p| &p["node_id"] == id)
            .cloned()
            .expect("listed")
    };
    assert_eq!(entry(&on_b, a_id)["source"], "seed", "{on_b:?}");
    assert_eq!(entry(&on_a, b_id)["source"], "inbound", "{on_a:?}");

    let out = netrun(&["peers"], &b_dir);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("SOURCE") && text.contains("seed"), "{text}");

    let status = json_of(&["discovery", "--json"], &b_dir);
    let backends = status["backends"].as_array().expect("backends");
    for name in ["bootstrap", "peer_exchange", "dht"] {
        let row = backends
            .iter()
            .find(|b| b["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {backends:?}"));
        assert_eq!(row["running"], true, "{row}");
    }
    assert!(
        status["coordinator"]["peers"].as_u64() >= Some(1),
        "{status}"
    );
    let seeded = status["peers"]
        .as_array()
        .expect("peers")
        .iter()
        .find(|p| &p["node_id"] == a_id)
        .cloned()
        .expect("a is a discovered peer");
    assert_eq!(seeded["source"], "seed");
    assert_eq!(seeded["connected"], true);

    let out = netrun(&["discovery"], &b_dir);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for expected in [
        "BACKEND",
        "bootstrap",
        "peer_exchange",
        "dht",
        "running",
        "coordinator",
    ] {
        assert!(text.contains(expected), "{expected} in {text}");
    }
    let out = netrun(&["discovery"], &dir.path().join("nothing-here"));
    assert_eq!(out.status.code(), Some(3));
}

/// A counter daemon for the daemon commands (the `netrun start` binary hosts no kinds, so
/// the node runs in this process and the CLI talks to its control socket).
struct Counter(u64);

impl netrun::MeshDaemon for Counter {
    fn name(&self) -> &str {
        "counter"
    }

    fn process(
        &mut self,
        _: &netrun::CausalEvent,
    ) -> Result<Vec<netrun::Bytes>, netrun::DaemonError> {
        self.0 += 1;
        Ok(vec![netrun::Bytes::copy_from_slice(&self.0.to_le_bytes())])
    }

    fn snapshot(&self) -> Option<netrun::Bytes> {
        Some(netrun::Bytes::copy_from_slice(&self.0.to_le_bytes()))
    }
}

/// Runs the CLI off the async runtime, so the in-process node keeps answering.
async fn netrun_async(args: &[impl AsRef<str>], data_dir: &Path) -> Output {
    let args: Vec<String> = args.iter().map(|a| a.as_ref().to_owned()).collect();
    let data_dir = data_dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        netrun(&args, &data_dir)
    })
    .await
    .expect("cli ran")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemons_are_listed_snapshotted_and_stopped_from_the_cli() {
    let dir = tempfile::tempdir().expect("tmp");
    let node = netrun::Node::builder()
        .control_socket(dir.path().join(netrun::control::CONTROL_SOCKET))
        .start()
        .await
        .expect("node");
    node.register_daemon_kind("counter", netrun::factory(|_| Ok(Box::new(Counter(0)))))
        .expect("register");
    let daemon = node
        .spawn_daemon(
            "counter",
            netrun::Identity::generate(),
            netrun::DaemonConfig::empty(),
        )
        .await
        .expect("spawn");
    for _ in 0..3 {
        daemon.deliver("tick").await.expect("processed");
    }
    let origin = daemon.origin_hash().to_string();

    let out = netrun_async(&["daemons", "--json"], dir.path()).await;
    let list = success_json(&out);
    let d = &list[0];
    assert_eq!(d["origin"], origin.as_str());
    assert_eq!(d["kind"], "counter");
    assert_eq!(d["state"], "running");
    assert_eq!(d["health"], "healthy");
    assert_eq!(d["events_processed"], 3);
    assert_eq!(d["restarts"], 0);
    assert_eq!(d["node_id"], node.node_id().to_string().as_str());
    let human = netrun_async(&["daemons"], dir.path()).await;
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(text.contains(&origin) && text.contains("running"), "{text}");

    let file = dir.path().join("counter.snap");
    let out = netrun_async(
        &[
            "daemon",
            "snapshot",
            &origin,
            "--json",
            "--out",
            file.to_str().expect("utf-8 path"),
        ],
        dir.path(),
    )
    .await;
    let snap = success_json(&out);
    assert_eq!(snap["last_input_seq"], 3);
    let bytes = std::fs::read(&file).expect("snapshot file");
    let decoded = netrun::DaemonSnapshot::from_bytes(&bytes).expect("a signed snapshot");
    decoded
        .verify(&daemon.entity())
        .expect("signed by the daemon");
    assert_eq!(decoded.state.as_deref(), Some(&3u64.to_le_bytes()[..]));

    let out = netrun_async(&["daemon", "stop", &origin, "--json"], dir.path()).await;
    let stopped = success_json(&out);
    assert_eq!(stopped["stopped"], true);
    assert_eq!(stopped["snapshot"]["last_input_seq"], 3);
    let out = netrun_async(&["daemons"], dir.path()).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "no daemons");

    // Errors: a malformed origin is a usage error, an unknown one a runtime failure.
    let out = netrun_async(&["daemon", "stop", "not-hex"], dir.path()).await;
    assert_eq!(out.status.code(), Some(2));
    let out = netrun_async(&["daemon", "snapshot", &origin], dir.path()).await;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no daemon"), "{err}");
    node.shutdown().await;
}

/// Needs the tag `host`, so placement puts it on the one node that has it.
struct Tagged;

impl netrun::MeshDaemon for Tagged {
    fn name(&self) -> &str {
        "tagged"
    }

    fn requirements(&self) -> netrun::CapabilityFilter {
        netrun::CapabilityFilter::new().require_tag("host")
    }

    fn process(
        &mut self,
        _: &netrun::CausalEvent,
    ) -> Result<Vec<netrun::Bytes>, netrun::DaemonError> {
        Ok(Vec::new())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_placed_daemon_is_stopped_on_its_host_from_the_placers_cli() {
    let dir = tempfile::tempdir().expect("tmp");
    let placer = netrun::Node::builder()
        .control_socket(dir.path().join(netrun::control::CONTROL_SOCKET))
        .start()
        .await
        .expect("placer");
    let host = netrun::Node::builder()
        .capabilities(netrun::CapabilitySet::new().with_tag("host"))
        .start()
        .await
        .expect("host");
    for node in [&placer, &host] {
        node.register_daemon_kind("tagged", netrun::factory(|_| Ok(Box::new(Tagged))))
            .expect("register");
    }
    placer
        .connect(host.local_addr(), host.public_key())
        .await
        .expect("connect");
    let placed = placer
        .spawn_daemon_placed(
            "tagged",
            netrun::Identity::generate(),
            netrun::DaemonConfig::empty(),
        )
        .await
        .expect("placed");
    assert_eq!(placed.node, host.node_id());
    let origin = placed.origin_hash.to_string();
    let host_id = host.node_id().to_string();

    let out = netrun_async(&["daemon", "stop", &origin, "--node", "zz"], dir.path()).await;
    assert_eq!(
        out.status.code(),
        Some(2),
        "a malformed node id is a usage error"
    );
    let out = netrun_async(
        &["daemon", "stop", &origin, "--node", &host_id, "--json"],
        dir.path(),
    )
    .await;
    let stopped = success_json(&out);
    assert_eq!(stopped["stopped"], true);
    assert_eq!(stopped["node"], host_id.as_str());
    assert!(host.daemons().await.is_empty());
    placer.shutdown().await;
    host.shutdown().await;
}
