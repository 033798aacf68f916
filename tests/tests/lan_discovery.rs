//! LAN and broker discovery against real components.
//!
//! - **MQTT**: a real Mosquitto broker on a free loopback port (started and stopped by
//!   PID here), one backend in this process as the observer, and `discovery-node`
//!   processes (`tests/lan/discovery_node.rs`) as the other nodes, so one can be killed
//!   with SIGKILL to trigger its last will. Without `mosquitto` the tests print why and
//!   skip, unless `NETRUN_REQUIRE_MOSQUITTO=1` (set by `scripts/test`), where they fail.
//! - **mDNS**: a network namespace created per test (`ip netns add`, loopback up), with
//!   every node a `discovery-node` process run through `ip netns exec`, so the multicast
//!   traffic never leaves the namespace. One test also runs a real `avahi-daemon` (on a
//!   private D-Bus) in the namespace and checks that `avahi-browse` sees the service.
//!   Without root or `ip` (or, for that test, the Avahi tools) they print why and skip.
//!
//! Namespaces, brokers and processes are removed in `Drop`, so a failing assertion still
//! cleans up.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use netrun_actors::discovery::mqtt::{MqttBackend, MqttConfig, announce_topic};
use netrun_actors::discovery::{DiscoveryBackend, DiscoveryEvent, DiscoverySource};
use netrun_messages::mqtt_announce::{AnnounceKind, MqttAnnounce};
use netrun_messages::{Identity, MeshFingerprint, NodeId};
use netrun_tests::eventually_async;
use serde_json::Value;

/// Generous: CI machines are slow, and mDNS probing alone takes most of a second.
const WAIT: Duration = Duration::from_secs(20);

fn discovery_node() -> &'static str {
    env!("CARGO_BIN_EXE_discovery-node")
}

fn node_of(seed: u8) -> NodeId {
    Identity::from_seed([seed; 32]).node_id()
}

fn mesh_of(psk: u8) -> MeshFingerprint {
    MeshFingerprint::from_psk(&[psk; 32])
}

// ---------------------------------------------------------------------------------------
// MQTT

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_nodes_discover_each_other_and_a_clean_stop_says_goodbye() {
    let Some(broker) = Broker::start_or_skip() else {
        return;
    };
    let mut a = started_observer(&broker, 1).await;
    let mut b = broker.spawn_node(2, 1);

    let found = expect_found(&mut a, node_of(2)).await;
    assert_eq!(found.0, Identity::from_seed([2; 32]).entity_id().to_hex());
    assert_eq!(
        found.1,
        vec!["127.0.0.1:4002".parse::<SocketAddr>().expect("addr")]
    );
    b.expect(|v| v["found"] == node_of(1).to_string());

    b.send("stop");
    b.expect(|v| v["stopped"] == true);
    assert!(b.wait_success(), "discovery-node exits cleanly");
    expect_lost(&mut a, node_of(2)).await;

    // B left a retained goodbye (and deleted its retained announce): a node arriving now
    // has A, and B only as gone.
    assert_newcomer_finds_only(&broker, node_of(1)).await;
    assert_eq!(a.stats().table.forged + a.stats().table.malformed, 0);
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_last_will_reports_a_killed_node_lost() {
    let Some(broker) = Broker::start_or_skip() else {
        return;
    };
    let mut a = started_observer(&broker, 1).await;
    let mut b = broker.spawn_node(2, 1);
    expect_found(&mut a, node_of(2)).await;

    // SIGKILL: no DISCONNECT, so the broker publishes B's last will once its 1 s
    // keepalive lapses (1.5 × keepalive).
    let killed_at = Instant::now();
    b.kill();
    expect_lost(&mut a, node_of(2)).await;
    eprintln!("last will arrived {:?} after SIGKILL", killed_at.elapsed());

    // The will is retained: a node arriving now has B only as gone.
    assert_newcomer_finds_only(&broker, node_of(1)).await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_forged_announces_are_rejected_and_counted() {
    let Some(broker) = Broker::start_or_skip() else {
        return;
    };
    let mut a = started_observer(&broker, 1).await;
    // Wait until A is subscribed: it then sees its own retained announce come back.
    eventually_async(WAIT, "A to connect", || async { a.stats().connected }).await;

    let mesh = mesh_of(1);
    let victim = Identity::from_seed([5; 32]);
    let forger = Identity::from_seed([6; 32]);
    let honest = Identity::from_seed([7; 32]);
    let now = wall_ms();
    let addrs = vec!["192.0.2.1:4000".parse().expect("addr")];
    let sign = |id: &Identity, mesh| {
        MqttAnnounce::sign(id, AnnounceKind::Announce, mesh, 1, now, addrs.clone()).expect("signs")
    };
    let victim_topic = announce_topic(&mesh, victim.node_id());

    // 1. The forger's own valid announce, published as the victim.
    let as_victim = sign(&forger, mesh).to_vec();
    // 2. The victim's id and key, signed by the forger.
    let mut stolen = sign(&forger, mesh);
    stolen.node = victim.node_id();
    stolen.public_key = victim.entity_id();
    // 3. Garbage.
    // 4. A valid announce of another mesh, replayed into this one.
    let foreign = sign(&honest, mesh_of(2)).to_vec();
    // 5. The honest announce that must be the only thing found.
    let genuine = sign(&honest, mesh).to_vec();
    let honest_topic = announce_topic(&mesh, honest.node_id());
    raw_publish(
        &broker,
        vec![
            (victim_topic.clone(), as_victim),
            (victim_topic.clone(), stolen.to_vec()),
            (victim_topic, b"not an announce".to_vec()),
            (honest_topic.clone(), foreign),
            (honest_topic, genuine),
        ],
    )
    .await;

    expect_found(&mut a, honest.node_id()).await;
    let stats = a.stats();
    assert_eq!(
        stats.table.found, 1,
        "only the genuine announce is reported: {stats:?}"
    );
    assert_eq!(stats.table.forged, 2, "{stats:?}");
    assert_eq!(stats.table.malformed, 1, "{stats:?}");
    assert_eq!(stats.table.foreign_mesh, 1, "{stats:?}");
    let status = a.status();
    assert!(status.errors >= 4, "{status:?}");
    assert!(status.detail.contains("forged 2"), "{}", status.detail);
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_reconnects_after_the_broker_restarts() {
    let Some(mut broker) = Broker::start_or_skip() else {
        return;
    };
    let mut a = started_observer(&broker, 1).await;
    eventually_async(WAIT, "A to connect", || async { a.stats().connected }).await;

    broker.restart();
    eventually_async(WAIT, "A to notice the broker is gone", || async {
        a.stats().broker_errors > 0
    })
    .await;
    // The new broker has no retained state: A must re-subscribe and re-announce for a
    // newcomer and A to find each other.
    let mut b = broker.spawn_node(2, 1);
    expect_found(&mut a, node_of(2)).await;
    b.expect(|v| v["found"] == node_of(1).to_string());
    assert!(a.stats().connects >= 2, "{:?}", a.stats());
    b.send("stop");
    assert!(b.wait_success());
    a.stop().await;
}

/// A started in-process MQTT backend with test timings, as node `seed` of mesh 1.
async fn started_observer(broker: &Broker, seed: u8) -> MqttBackend {
    let mut config = MqttConfig::new(broker.url(), mesh_of(1), Identity::from_seed([seed; 32]));
    config.keepalive = Duration::from_secs(1);
    config.announce_interval = Duration::from_secs(1);
    config.peer_ttl = Duration::from_secs(30);
    config.reconnect_min = Duration::from_millis(100);
    config.reconnect_max = Duration::from_millis(500);
    config.addrs = vec![SocketAddr::from(([127, 0, 0, 1], 4000 + u16::from(seed)))];
    let mut backend = MqttBackend::new(config).expect("valid config");
    backend.start().await.expect("start");
    backend
}

/// A node arriving now (seed 3) finds `node` and ends up with it as its only live peer:
/// whatever else the broker retained was a goodbye or a last will.
async fn assert_newcomer_finds_only(broker: &Broker, node: NodeId) {
    let mut newcomer = started_observer(broker, 3).await;
    expect_found(&mut newcomer, node).await;
    assert_only_live(&mut newcomer, node).await;
    newcomer.stop().await;
}

/// Skips events until `wanted` accepts one and returns what it made of it; fails the test
/// after [`WAIT`] with `what` as the missing event.
async fn next_matching<T>(
    backend: &mut impl DiscoveryBackend,
    what: &str,
    mut wanted: impl FnMut(DiscoveryEvent) -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let event = tokio::time::timeout_at(deadline, backend.next_event())
            .await
            .unwrap_or_else(|_| panic!("no {what} within {WAIT:?}"))
            .expect("backend ended");
        if let Some(matched) = wanted(event) {
            return matched;
        }
    }
}

/// Waits for `Found(node)`; returns its key (hex) and addresses.
async fn expect_found(
    backend: &mut impl DiscoveryBackend,
    node: NodeId,
) -> (String, Vec<SocketAddr>) {
    next_matching(backend, &format!("Found({node})"), |event| match event {
        DiscoveryEvent::Found(peer) if peer.node == node => {
            assert_eq!(peer.source, DiscoverySource::Mqtt);
            Some((peer.entity.to_hex(), peer.addrs))
        }
        _ => None,
    })
    .await
}

/// Waits for `Lost(node)` from MQTT.
async fn expect_lost(backend: &mut impl DiscoveryBackend, node: NodeId) {
    let lost = DiscoveryEvent::Lost {
        node,
        source: DiscoverySource::Mqtt,
    };
    next_matching(backend, &format!("Lost({node})"), |event| {
        (event == lost).then_some(())
    })
    .await;
}

/// Lets retained messages settle for a second, then asserts `node` is the only live peer
/// (whatever else was found was also reported lost).
async fn assert_only_live(backend: &mut MqttBackend, node: NodeId) {
    let mut live = std::collections::BTreeSet::from([node]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    while let Ok(event) = tokio::time::timeout_at(deadline, backend.next_event()).await {
        match event {
            Some(DiscoveryEvent::Found(peer)) => {
                live.insert(peer.node);
            }
            Some(DiscoveryEvent::Lost { node, .. }) => {
                live.remove(&node);
            }
            None => break,
        }
    }
    assert_eq!(live, std::collections::BTreeSet::from([node]));
    assert_eq!(backend.stats().peers, 1, "{:?}", backend.stats());
}

/// Publishes `messages` in order from a plain MQTT client, then disconnects.
async fn raw_publish(broker: &Broker, messages: Vec<(String, Vec<u8>)>) {
    let mut options = rumqttc::MqttOptions::new("netrun-test-forger", "127.0.0.1", broker.port);
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 16);
    let count = messages.len();
    tokio::spawn(async move {
        for (topic, payload) in messages {
            client
                .publish(topic, rumqttc::QoS::AtLeastOnce, false, payload)
                .await
                .expect("queue publish");
        }
    });
    let mut acked = 0;
    let deadline = tokio::time::Instant::now() + WAIT;
    while acked < count {
        let event = tokio::time::timeout_at(deadline, eventloop.poll())
            .await
            .expect("broker acks the raw publishes")
            .expect("raw client connection");
        if let rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)) = event {
            acked += 1;
        }
    }
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Polls `cond` every 50 ms, blocking the thread (for the mDNS tests, which run no async
/// runtime); fails the test after [`WAIT`].
fn wait_until(cond: impl Fn() -> bool, what: &str) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The whole user path: two `netrun` nodes with `[discovery.mqtt]` enabled and nothing
/// else find each other through the broker, and the coordinator opens a session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_enabled_nodes_connect_through_the_broker() {
    let Some(broker) = Broker::start_or_skip() else {
        return;
    };
    let start = |seed: u8| {
        let mut discovery = netrun::config::DiscoveryConfig::manual();
        discovery.mqtt.enabled = true;
        discovery.mqtt.broker = broker.url();
        netrun_tests::start(
            netrun_tests::builder()
                .identity(Identity::from_seed([seed; 32]))
                .discovery(discovery),
        )
    };
    let a = start(11).await;
    let b = start(12).await;
    eventually_async(WAIT, "a session through MQTT discovery", || async {
        a.peers().await.iter().any(|p| p.node == b.node_id())
            && b.peers().await.iter().any(|p| p.node == a.node_id())
    })
    .await;
    // Whichever side connected first, each one's MQTT backend reports the other too.
    for (node, other) in [(&a, b.node_id()), (&b, a.node_id())] {
        eventually_async(WAIT, "the other node reported by MQTT", || async {
            node.discovered()
                .await
                .iter()
                .any(|p| p.node == other && p.sources.contains(&DiscoverySource::Mqtt))
        })
        .await;
    }
    a.send(b.node_id(), b"over mqtt discovery")
        .await
        .expect("send");
    let got = tokio::time::timeout(WAIT, b.recv())
        .await
        .expect("recv")
        .expect("datagram");
    assert_eq!(&got.payload[..], b"over mqtt discovery");
    a.shutdown().await;
    b.shutdown().await;
}

/// A Mosquitto broker on a free loopback port, stopped by PID on drop.
struct Broker {
    binary: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

impl Broker {
    /// Starts a broker, or prints why not and returns `None` (panics instead when
    /// `NETRUN_REQUIRE_MOSQUITTO=1`).
    fn start_or_skip() -> Option<Self> {
        let Some(binary) = find_binary("mosquitto") else {
            let reason = "mosquitto is not installed (scripts/install-test-deps installs it)";
            assert!(
                std::env::var("NETRUN_REQUIRE_MOSQUITTO").as_deref() != Ok("1"),
                "NETRUN_REQUIRE_MOSQUITTO=1 but {reason}"
            );
            eprintln!("SKIPPED: {reason}");
            return None;
        };
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut broker = Self {
            binary,
            dir: tempfile::tempdir().expect("tempdir"),
            port,
            child: None,
        };
        broker.launch();
        Some(broker)
    }

    fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// A `discovery-node` process on MQTT through this broker, as node `seed` of mesh `psk`.
    fn spawn_node(&self, seed: u8, psk: u8) -> NodeProcess {
        NodeProcess::spawn(Command::new(discovery_node()).args([
            "mqtt",
            &seed.to_string(),
            &psk.to_string(),
            &self.url(),
        ]))
    }

    fn launch(&mut self) {
        let conf = self.dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {} 127.0.0.1\nallow_anonymous true\npersistence false\n",
                self.port
            ),
        )
        .expect("write mosquitto.conf");
        let log = std::fs::File::create(self.dir.path().join("mosquitto.log")).expect("log");
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn mosquitto");
        self.child = Some(child);
        let deadline = Instant::now() + WAIT;
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not listen on {}: {}",
                self.port,
                std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the broker (all retained state is lost) and starts a new one on the same port.
    fn restart(&mut self) {
        self.stop();
        std::thread::sleep(Duration::from_millis(300));
        self.launch();
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------------------
// mDNS

#[test]
fn mdns_nodes_of_one_mesh_find_each_other_and_ignore_another_mesh() {
    let Some(ns) = Netns::create_or_skip() else {
        return;
    };
    let mut a = ns.spawn_node(1, 1, 4001);
    let mut b = ns.spawn_node(2, 1, 4002);
    let _c = ns.spawn_node(3, 2, 4003);

    let found = a.expect(|v| v["found"] == node_of(2).to_string());
    assert_eq!(
        found["key"],
        Identity::from_seed([2; 32]).entity_id().to_hex()
    );
    let addrs: Vec<&str> = found["addrs"]
        .as_array()
        .expect("addrs")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(addrs.contains(&"127.0.0.1:4002"), "{addrs:?}");
    b.expect(|v| v["found"] == node_of(1).to_string());

    // C (another PSK) is heard and ignored: A counts it and never reports it.
    let deadline = Instant::now() + WAIT;
    loop {
        a.send("status");
        let status = a.expect(|v| v.get("status").is_some());
        let detail = status["status"]["detail"].as_str().unwrap_or_default();
        if counter(detail, "foreign mesh") >= 1 {
            break;
        }
        assert!(Instant::now() < deadline, "C never heard: {detail}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let c_node = node_of(3).to_string();
    assert!(
        !a.seen.iter().any(|v| v["found"] == c_node.as_str()),
        "a node of another mesh was reported: {:?}",
        a.seen
    );

    // A clean stop sends mDNS goodbyes: A reports B lost.
    b.send("stop");
    b.expect(|v| v["stopped"] == true);
    assert!(b.wait_success());
    a.expect(|v| v["lost"] == node_of(2).to_string());
}

#[test]
fn mdns_service_is_visible_to_avahi_browse() {
    let Some(ns) = Netns::create_or_skip() else {
        return;
    };
    let (Some(dbus), Some(avahi), Some(browse)) = (
        find_binary("dbus-daemon"),
        find_binary("avahi-daemon"),
        find_binary("avahi-browse"),
    ) else {
        eprintln!(
            "SKIPPED: dbus-daemon, avahi-daemon or avahi-browse missing \
             (apt-get install avahi-daemon avahi-utils)"
        );
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let bus = dir.path().join("bus.sock");
    let bus_address = format!("unix:path={}", bus.display());
    std::fs::write(dir.path().join("bus.conf"), dbus_config(&bus)).expect("bus.conf");
    std::fs::write(dir.path().join("avahi.conf"), AVAHI_CONFIG).expect("avahi.conf");

    // A private system bus (avahi-daemon talks only to the system bus; the address comes
    // from DBUS_SYSTEM_BUS_ADDRESS) and avahi-daemon, both inside the namespace.
    let _bus = Daemon::spawn(ns.exec(&dbus).args([
        "--nofork",
        "--nopidfile",
        &format!("--config-file={}", dir.path().join("bus.conf").display()),
    ]));
    wait_until(|| bus.exists(), "dbus-daemon to start");
    let avahi_log = dir.path().join("avahi.log");
    let mut avahi_daemon = Daemon::spawn(
        ns.exec(&avahi)
            .env("DBUS_SYSTEM_BUS_ADDRESS", &bus_address)
            .arg("-f")
            .arg(dir.path().join("avahi.conf"))
            .args(["--no-drop-root", "--no-chroot", "--no-rlimits"])
            .stderr(std::fs::File::create(&avahi_log).expect("log")),
    );
    let deadline = Instant::now() + WAIT;
    loop {
        let log = std::fs::read_to_string(&avahi_log).unwrap_or_default();
        if log.contains("Server startup complete") {
            break;
        }
        if avahi_daemon.exited() || Instant::now() > deadline {
            // Typically another avahi-daemon owns /run/avahi-daemon/pid on this host.
            eprintln!("SKIPPED: avahi-daemon did not start in the namespace:\n{log}");
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    let mut a = ns.spawn_node(1, 1, 4001);
    a.expect(|v| v.get("ready").is_some());
    let instance = format!("netrun-{}", node_of(1));
    let mesh = format!("mesh={}", mesh_of(1));
    let deadline = Instant::now() + WAIT;
    let mut last = String::new();
    while Instant::now() < deadline {
        let out = ns
            .exec(&browse)
            .env("DBUS_SYSTEM_BUS_ADDRESS", &bus_address)
            .args(["--resolve", "--parsable", "--terminate", "_netrun._udp"])
            .output()
            .expect("run avahi-browse");
        last = String::from_utf8_lossy(&out.stdout).into_owned();
        let resolved = last
            .lines()
            .find(|l| l.starts_with("=;") && l.contains(&instance));
        if let Some(line) = resolved {
            assert!(line.contains(&mesh), "TXT record carries the mesh: {line}");
            assert!(line.contains(";4001;"), "SRV port: {line}");
            assert!(
                line.contains(&format!(
                    "key={}",
                    Identity::from_seed([1; 32]).entity_id().to_hex()
                )),
                "TXT record carries the key: {line}"
            );
            return;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    panic!("avahi-browse never resolved {instance}; last output:\n{last}");
}

fn counter(detail: &str, name: &str) -> u64 {
    detail
        .split(", ")
        .find_map(|part| part.strip_prefix(name))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

fn dbus_config(socket: &Path) -> String {
    format!(
        r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"#,
        socket.display()
    )
}

/// Avahi on the namespace's loopback only, publishing nothing of its own.
const AVAHI_CONFIG: &str = "[server]
use-ipv4=yes
use-ipv6=no
allow-interfaces=lo
enable-dbus=yes
disallow-other-stacks=no
[publish]
publish-addresses=no
publish-hinfo=no
publish-workstation=no
[wide-area]
enable-wide-area=no
";

/// A network namespace with its loopback up, deleted on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn create_or_skip() -> Option<Self> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let uid = Command::new("id").arg("-u").output().ok().and_then(|o| {
            String::from_utf8(o.stdout)
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok())
        });
        if uid != Some(0) {
            eprintln!("SKIPPED: creating a network namespace needs root (uid {uid:?})");
            return None;
        }
        if find_binary("ip").is_none() {
            eprintln!("SKIPPED: `ip` (iproute2) is not installed");
            return None;
        }
        let name = format!(
            "netrun-lan-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let added = Command::new("ip").args(["netns", "add", &name]).status();
        if !added.as_ref().is_ok_and(|s| s.success()) {
            eprintln!("SKIPPED: `ip netns add {name}` failed ({added:?})");
            return None;
        }
        let ns = Self { name };
        let up = Command::new("ip")
            .args(["-n", &ns.name, "link", "set", "lo", "up"])
            .status();
        assert!(up.is_ok_and(|s| s.success()), "loopback up in {}", ns.name);
        Some(ns)
    }

    /// A command run inside the namespace (`ip netns exec` execs it, so the child's PID is
    /// the program's own).
    fn exec(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    fn spawn_node(&self, seed: u8, psk: u8, port: u16) -> NodeProcess {
        let mut cmd = self.exec(discovery_node());
        cmd.args([
            "mdns",
            &seed.to_string(),
            &psk.to_string(),
            &port.to_string(),
        ]);
        NodeProcess::spawn(&mut cmd)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

// ---------------------------------------------------------------------------------------
// Processes

/// A `discovery-node` process: JSON lines out, commands in; killed by PID on drop.
struct NodeProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<Value>,
    seen: Vec<Value>,
}

impl NodeProcess {
    fn spawn(cmd: &mut Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn discovery-node");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::sync_channel(1024);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        Self {
            stdin: child.stdin.take(),
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// The next line matching `pred` (earlier lines are kept in `seen`).
    fn expect(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(v) => {
                    self.seen.push(v.clone());
                    if pred(&v) {
                        return v;
                    }
                }
                Err(_) => panic!("expected line not printed; saw {:?}", self.seen),
            }
        }
    }

    fn send(&mut self, command: &str) {
        if let Some(stdin) = self.stdin.as_mut() {
            writeln!(stdin, "{command}").expect("write to discovery-node");
        }
    }

    fn wait_success(&mut self) -> bool {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return status.success(),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                _ => return false,
            }
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A helper daemon (dbus-daemon, avahi-daemon): SIGTERM by PID on drop, then SIGKILL.
struct Daemon {
    child: Child,
}

impl Daemon {
    fn spawn(cmd: &mut Command) -> Self {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn daemon");
        Self { child }
    }

    fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SIGTERM lets avahi-daemon remove its pid file.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `name` on `PATH` or in the sbin directories (where Debian puts daemons).
fn find_binary(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}
