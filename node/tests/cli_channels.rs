//! Drives `netrun caps` and `netrun channel publish|subscribe|list` against two node
//! processes, as a user would.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use common::{
    BIN, Running, json_of, launch, netrun, signal, start_command, wait_exit, write_config,
};

/// How long the mesh gets to show each change.
const SETTLE: Duration = Duration::from_secs(10);

/// A node with `config` as its file and only static peers (no DHT, no peer exchange).
fn start(data_dir: &Path, config: &str, extra: &[&str]) -> Running {
    let config_path = write_config(data_dir, config);
    launch(
        start_command(data_dir)
            .arg("--config")
            .arg(&config_path)
            .args(extra)
            .env("NETRUN_DHT", "off")
            .env("NETRUN_PEER_EXCHANGE", "off"),
    )
}

/// Retries `check` until it holds or [`SETTLE`] passes.
fn eventually(what: &str, check: impl FnMut() -> bool) {
    common::eventually(what, SETTLE, check);
}

#[test]
fn caps_publish_subscribe_and_list_through_the_cli() {
    let dir = tempfile::tempdir().expect("tmp");
    let (a_dir, b_dir) = (dir.path().join("a"), dir.path().join("b"));
    let a = start(
        &a_dir,
        "[capabilities]\ntags = [\"role:publisher\"]\ncpu_cores = 4\nmemory_gb = 8\n\
         min_interval_secs = 1\nreannounce_secs = 5\nttl_secs = 30\n",
        &[],
    );
    let peer = a.contact();
    let b = start(
        &b_dir,
        "[capabilities]\ntags = [\"role:gpu\"]\ngpu = { vendor = \"nvidia\", model = \"T4\", vram_gb = 16 }\n\
         min_interval_secs = 1\nreannounce_secs = 5\nttl_secs = 30\n",
        &["--peer", &peer],
    );
    let a_id = a.hello["node_id"].as_str().expect("id").to_string();
    let b_id = b.hello["node_id"].as_str().expect("id").to_string();

    // `caps`: each node sees both, and the filter selects the GPU node.
    eventually("a knows both nodes", || {
        json_of(&["caps", "--json"], &a_dir)
            .as_array()
            .is_some_and(|l| l.len() == 2)
    });
    let gpus = json_of(&["caps", "--json", "--filter", "gpu,vendor=nvidia"], &a_dir);
    let gpus = gpus.as_array().expect("array");
    assert_eq!(gpus.len(), 1);
    assert_eq!(gpus[0]["node_id"], b_id.as_str());
    assert_eq!(gpus[0]["hardware"]["gpu"]["vram_gb"], 16);
    let tagged = json_of(&["caps", "--json", "--filter", "role:publisher"], &b_dir);
    assert_eq!(tagged[0]["node_id"], a_id.as_str());
    assert_eq!(tagged[0]["local"], false);
    let human = netrun(&["caps"], &a_dir);
    assert!(human.status.success());
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.contains("nvidia T4 16GB") && text.contains("(this node)"),
        "{text}"
    );
    let bad = netrun(&["caps", "--filter", "speed=9"], &a_dir);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown filter term"));

    // Publishing registers the channel on a; nobody listens yet.
    let first = json_of(
        &["channel", "publish", "--json", "News.Today", "hello"],
        &a_dir,
    );
    assert_eq!(first["attempted"], 0);

    // `channel subscribe` on b prints events as JSON lines.
    let mut sub = Command::new(BIN)
        .args([
            "channel",
            "subscribe",
            "--json",
            &a_id,
            "news.today",
            "--data-dir",
        ])
        .arg(&b_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn subscribe");
    eventually("a has a subscriber", || {
        json_of(&["channel", "list", "--json"], &a_dir)["published"][0]["subscribers"]
            .as_array()
            .is_some_and(|s| s.len() == 1)
    });
    let file = dir.path().join("event.bin");
    std::fs::write(&file, [0xff, 0x00, 0x01]).expect("write");
    let sent = json_of(
        &["channel", "publish", "--json", "news.today", "world"],
        &a_dir,
    );
    assert_eq!(
        (sent["attempted"].as_u64(), sent["delivered"].as_u64()),
        (Some(1), Some(1))
    );
    let at_file = format!("@{}", file.display());
    json_of(
        &["channel", "publish", "--json", "news.today", &at_file],
        &a_dir,
    );

    let mut lines = BufReader::new(sub.stdout.take().expect("stdout")).lines();
    let event: Value =
        serde_json::from_str(&lines.next().expect("a line").expect("read")).expect("json");
    assert_eq!(event["data"], "world");
    assert_eq!(event["channel"], "news.today");
    assert_eq!(event["publisher"], a_id.as_str());
    assert_eq!(event["seq"], 1, "the first publish had seq 0");
    let binary: Value =
        serde_json::from_str(&lines.next().expect("a line").expect("read")).expect("json");
    assert_eq!(binary["data_hex"], "ff0001");

    // `channel list` on both sides.
    let on_b = json_of(&["channel", "list", "--json"], &b_dir);
    assert_eq!(on_b["subscriptions"][0]["publisher"], a_id.as_str());
    assert_eq!(on_b["subscriptions"][0]["active"], true);
    let listed = netrun(&["channel", "list"], &a_dir);
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(
        text.contains("news.today") && text.contains("reliable"),
        "{text}"
    );

    // Ctrl-C ends the subscription cleanly and the publisher forgets the subscriber.
    signal(&sub, "INT");
    let exit = wait_exit(&mut sub, SETTLE);
    assert!(exit.success(), "{exit:?}");
    eventually("a dropped the subscriber", || {
        json_of(&["channel", "list", "--json"], &a_dir)["published"][0]["subscribers"]
            .as_array()
            .is_some_and(Vec::is_empty)
    });

    // `status` carries the capability and channel counters.
    let status = json_of(&["status", "--json"], &a_dir);
    assert_eq!(status["capabilities"]["nodes"], 2);
    assert_eq!(status["channels"]["channels"], 1);
    assert!(status["channels"]["delivered"].as_u64() >= Some(2));

    // Subscribing to a channel a does not publish is a one-line error.
    let missing = netrun(&["channel", "subscribe", &a_id, "nope"], &b_dir);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("unknown channel"));
}
