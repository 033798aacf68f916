//! MQTT discovery: find peers through a broker a site already runs.
//!
//! ```text
//!  netrun/<mesh>/nodes/<node>/announce   retained, signed MqttAnnounce, re-published every
//!                                        `announce_interval` and on every (re)connect
//!  netrun/<mesh>/nodes/<node>/goodbye    retained, signed goodbye: sent on a clean stop,
//!                                        and set as the last will, which the broker sends
//!                                        when the connection dies without a DISCONNECT
//!
//!  driver task (owns the rumqttc EventLoop)          MqttBackend::next_event
//!    connect ─ subscribe +/announce, +/goodbye          │ decode, verify, topic == payload,
//!    ─ publish own announce                             │ mesh, freshness, incarnation
//!    incoming publish ──bounded channel──────────────▶  ▼ peer table ─▶ Found / Lost
//!    broker lost: back off (×2 up to a cap), reconnect    timers: re-announce, expire peers
//! ```
//!
//! The broker is not trusted: every payload is signed by the node it names
//! ([`MqttAnnounce`]), the node id must derive from the key, the topic must name the same
//! node and kind, and the payload must name this mesh. Anything else is dropped and
//! counted, so a broker (or any client allowed to publish) can hide peers but cannot
//! invent them.
//!
//! A retained announce outlives its node when the node dies (the broker sends the last
//! will but keeps the retained announce), so both messages are retained and carry the
//! node's *incarnation* (random per process): a node that subscribes later receives the
//! announce and the goodbye of the same incarnation, in either order, and ends up with the
//! peer gone; a restarted node (new incarnation, later timestamp) is found again. To keep
//! the broker tidy, a node stopping cleanly also deletes its retained announce (an empty
//! retained publish), and every node that receives a valid goodbye for a live peer does the
//! same on the peer's behalf. Receivers refuse announces older than `peer_ttl` and report a
//! peer lost when its announce has not been refreshed for `peer_ttl`, which covers a lost
//! will.
//!
//! The topics and the peer table (validation, incarnations, staleness) are a sans-IO core,
//! [`netrun_runtime::discovery::mqtt`]; this module owns the broker connection and drives
//! it.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use netrun_messages::mqtt_announce::{AnnounceKind, MqttAnnounce};
use netrun_messages::{Identity, MeshFingerprint};
use rand_core::{OsRng, RngCore};
use rumqttc::{AsyncClient, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use netrun_runtime::discovery::mqtt::{Counters, Outcome, PeerTable};

use super::{BackendStatus, DiscoveryBackend, DiscoveryError, DiscoveryEvent, DiscoverySource};
use crate::clock::unix_millis;

pub use netrun_runtime::discovery::mqtt::{announce_topic, goodbye_topic};

/// Backend name in `netrun discovery` and in errors.
const NAME: &str = "mqtt";
/// Default MQTT port.
pub const DEFAULT_MQTT_PORT: u16 = 1883;
/// Incoming publishes queued between the driver task and the backend; beyond it they are
/// dropped and counted (the sender re-announces, so a drop delays discovery, no more).
const INBOUND_QUEUE: usize = 256;
/// Requests queued towards the rumqttc event loop.
const REQUEST_QUEUE: usize = 64;
/// Largest MQTT packet accepted from the broker. Well above [`MAX_MQTT_ANNOUNCE_LEN`] so
/// that a stray large message on our topics is refused by us (and counted) instead of
/// tearing the connection down in the client.
const MAX_PACKET: usize = 64 * 1024;
/// How long a clean stop waits for the goodbye and the disconnect to reach the broker.
const STOP_TIMEOUT: Duration = Duration::from_secs(3);

/// Configuration of the MQTT backend.
#[derive(Debug, Clone)]
pub struct MqttConfig {
    /// The broker: `mqtt://host:port`, `tcp://host:port` or `host[:port]` (port 1883 by
    /// default; IPv6 hosts in brackets). TLS (`mqtts://`) is not supported yet.
    pub broker: String,
    /// The mesh this node belongs to; it names the topics and is checked in every payload.
    pub mesh: MeshFingerprint,
    /// The node's identity: it signs announces and goodbyes.
    pub identity: Identity,
    /// Addresses peers should try, best first (at most
    /// [`MAX_ANNOUNCE_ADDRS`](netrun_messages::mqtt_announce::MAX_ANNOUNCE_ADDRS)).
    pub addrs: Vec<SocketAddr>,
    /// MQTT keepalive: the broker declares the connection dead (and sends the last will)
    /// after 1.5 × this without traffic. At least one second.
    pub keepalive: Duration,
    /// How often the retained announce is re-published (fresh timestamp).
    pub announce_interval: Duration,
    /// An announce older than this is refused, and a peer whose announce has not been
    /// refreshed for this long is reported lost. At least twice `announce_interval`.
    pub peer_ttl: Duration,
    /// Whether to delete a dead peer's retained announce when its goodbye arrives.
    pub clear_retained_on_goodbye: bool,
    /// Most peers (live or recently gone) remembered; new ones beyond it are dropped and
    /// counted.
    pub max_peers: usize,
    /// First reconnect delay after the broker is lost; doubles per failure.
    pub reconnect_min: Duration,
    /// Largest reconnect delay.
    pub reconnect_max: Duration,
}

impl MqttConfig {
    /// A configuration with the defaults: keepalive 30 s, announce every 30 s, peer TTL
    /// 120 s, retained announces of dead peers cleared, 4096 peers, reconnect backoff from
    /// 500 ms to 30 s.
    pub fn new(broker: impl Into<String>, mesh: MeshFingerprint, identity: Identity) -> Self {
        Self {
            broker: broker.into(),
            mesh,
            identity,
            addrs: Vec::new(),
            keepalive: Duration::from_secs(30),
            announce_interval: Duration::from_secs(30),
            peer_ttl: Duration::from_secs(120),
            clear_retained_on_goodbye: true,
            max_peers: 4096,
            reconnect_min: Duration::from_millis(500),
            reconnect_max: Duration::from_secs(30),
        }
    }
}

/// Counters of the MQTT backend (a snapshot).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MqttStats {
    /// Whether the client is connected to the broker now.
    pub connected: bool,
    /// Connections established (the first one included).
    pub connects: u64,
    /// Connection failures and losses.
    pub broker_errors: u64,
    /// The peer table's outcomes and rejections (found, lost, malformed, forged, foreign
    /// mesh, stale, table full).
    pub table: Counters,
    /// Publishes dropped because the inbound queue was full.
    pub queue_full: u64,
    /// Live peers in the table.
    pub peers: u64,
}

impl MqttStats {
    /// Publishes dropped: the inbound queue or the peer table was full.
    pub fn dropped(&self) -> u64 {
        self.table.table_full + self.queue_full
    }
}

/// The MQTT discovery backend (see the module docs).
pub struct MqttBackend {
    config: MqttConfig,
    host: String,
    port: u16,
    own: Arc<Announcer>,
    peers: PeerTable,
    shared: Arc<Shared>,
    link: Option<Link>,
    pending: VecDeque<DiscoveryEvent>,
    next_announce: Instant,
    next_sweep: Instant,
}

/// A running connection: the client handle, the driver task and its inbound queue.
struct Link {
    client: AsyncClient,
    inbound: mpsc::Receiver<Inbound>,
    driver: JoinHandle<()>,
}

/// One publish received from the broker.
struct Inbound {
    topic: String,
    payload: Bytes,
}

/// Counters shared with the driver task.
#[derive(Default)]
struct Shared {
    running: AtomicBool,
    connected: AtomicBool,
    connects: AtomicU64,
    broker_errors: AtomicU64,
    dropped: AtomicU64,
    last_error: Mutex<String>,
}

/// Signs this node's announces and goodbyes.
struct Announcer {
    identity: Identity,
    mesh: MeshFingerprint,
    incarnation: u64,
    addrs: Vec<SocketAddr>,
    announce_topic: String,
    goodbye_topic: String,
}

impl MqttBackend {
    /// Checks the configuration; nothing connects until [`start`](DiscoveryBackend::start).
    pub fn new(config: MqttConfig) -> Result<Self, DiscoveryError> {
        let (host, port) = parse_broker(&config.broker)?;
        if config.keepalive < Duration::from_secs(1) {
            return Err(config_error("keepalive must be at least 1 s"));
        }
        if config.announce_interval < Duration::from_secs(1) {
            return Err(config_error("announce_interval must be at least 1 s"));
        }
        if config.peer_ttl < config.announce_interval.saturating_mul(2) {
            return Err(config_error(
                "peer_ttl must be at least twice announce_interval",
            ));
        }
        if config.max_peers == 0 {
            return Err(config_error("max_peers must be at least 1"));
        }
        if config.reconnect_min.is_zero() || config.reconnect_max < config.reconnect_min {
            return Err(config_error(
                "reconnect_min must be > 0 and reconnect_max >= reconnect_min",
            ));
        }
        let node = config.identity.node_id();
        let own = Announcer {
            identity: config.identity.clone(),
            mesh: config.mesh,
            incarnation: OsRng.next_u64(),
            addrs: config.addrs.clone(),
            announce_topic: announce_topic(&config.mesh, node),
            goodbye_topic: goodbye_topic(&config.mesh, node),
        };
        // Signing once here checks the address bound.
        own.sign(AnnounceKind::Announce)?;
        let peers = PeerTable::new(
            config.mesh,
            node,
            config.peer_ttl,
            config.max_peers,
            config.clear_retained_on_goodbye,
        );
        let now = Instant::now();
        Ok(Self {
            config,
            host,
            port,
            own: Arc::new(own),
            peers,
            shared: Arc::new(Shared::default()),
            link: None,
            pending: VecDeque::new(),
            next_announce: now,
            next_sweep: now,
        })
    }

    /// This process's incarnation (random per backend; a goodbye ends only this one).
    pub fn incarnation(&self) -> u64 {
        self.own.incarnation
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> MqttStats {
        MqttStats {
            connected: self.shared.connected.load(Ordering::Relaxed),
            connects: self.shared.connects.load(Ordering::Relaxed),
            broker_errors: self.shared.broker_errors.load(Ordering::Relaxed),
            table: self.peers.counters(),
            queue_full: self.shared.dropped.load(Ordering::Relaxed),
            peers: self.peers.live() as u64,
        }
    }

    fn handle_inbound(&mut self, msg: Inbound) {
        let now = Instant::now().into_std();
        match self
            .peers
            .handle(now, unix_millis(), &msg.topic, &msg.payload)
        {
            Outcome::Found(peer) => self.pending.push_back(DiscoveryEvent::Found(peer)),
            Outcome::Lost { node, clear } => {
                if let (Some(topic), Some(link)) = (clear, &self.link) {
                    // An empty retained publish deletes the dead peer's retained announce.
                    if link
                        .client
                        .try_publish(topic, QoS::AtLeastOnce, true, Vec::new())
                        .is_err()
                    {
                        self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
                self.pending.push_back(DiscoveryEvent::Lost {
                    node,
                    source: DiscoverySource::Mqtt,
                });
            }
            Outcome::Ignored => {}
        }
    }

    fn on_timer(&mut self, now: Instant) {
        if now >= self.next_announce {
            self.next_announce = now + self.config.announce_interval;
            let connected = self.shared.connected.load(Ordering::Relaxed);
            match &self.link {
                Some(link) if connected => self.own.publish_announce(&link.client, &self.shared),
                _ => {}
            }
        }
        if now >= self.next_sweep {
            self.next_sweep = now + sweep_period(self.config.peer_ttl);
            for node in self.peers.expire(now.into_std()) {
                self.pending.push_back(DiscoveryEvent::Lost {
                    node,
                    source: DiscoverySource::Mqtt,
                });
            }
        }
    }
}

impl DiscoveryBackend for MqttBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn start(&mut self) -> Result<(), DiscoveryError> {
        if self.link.is_some() {
            return Ok(());
        }
        let node = self.config.identity.node_id();
        let mut options = MqttOptions::new(format!("netrun-{node}"), &self.host, self.port);
        options
            .set_keep_alive(self.config.keepalive)
            .set_clean_session(true)
            .set_max_packet_size(MAX_PACKET, MAX_PACKET)
            .set_last_will(LastWill::new(
                self.own.goodbye_topic.clone(),
                self.own.sign(AnnounceKind::Goodbye)?.to_vec(),
                QoS::AtLeastOnce,
                true,
            ));
        let (client, eventloop) = AsyncClient::new(options, REQUEST_QUEUE);
        let (tx, inbound) = mpsc::channel(INBOUND_QUEUE);
        let driver = tokio::spawn(drive(
            eventloop,
            client.clone(),
            Arc::clone(&self.own),
            Arc::clone(&self.shared),
            tx,
            [
                format!("netrun/{}/nodes/+/announce", self.config.mesh),
                format!("netrun/{}/nodes/+/goodbye", self.config.mesh),
            ],
            (self.config.reconnect_min, self.config.reconnect_max),
        ));
        let now = Instant::now();
        // The driver announces on connect; the timer takes over one interval later.
        self.next_announce = now + self.config.announce_interval;
        self.next_sweep = now + sweep_period(self.config.peer_ttl);
        self.link = Some(Link {
            client,
            inbound,
            driver,
        });
        self.shared.running.store(true, Ordering::Relaxed);
        Ok(())
    }

    async fn next_event(&mut self) -> Option<DiscoveryEvent> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            let deadline = self.next_announce.min(self.next_sweep);
            let link = self.link.as_mut()?;
            tokio::select! {
                msg = link.inbound.recv() => match msg {
                    Some(msg) => self.handle_inbound(msg),
                    // The driver ended: only after a stop or a panic; nothing more will come.
                    None => return None,
                },
                () = tokio::time::sleep_until(deadline) => self.on_timer(Instant::now()),
            }
        }
    }

    async fn stop(&mut self) {
        let Some(link) = self.link.take() else {
            return;
        };
        self.shared.running.store(false, Ordering::Relaxed);
        if self.shared.connected.load(Ordering::Relaxed) {
            let goodbye = self.own.sign(AnnounceKind::Goodbye).map(|m| m.to_vec());
            let client = link.client.clone();
            let own = Arc::clone(&self.own);
            let farewell = async move {
                if let Ok(goodbye) = goodbye {
                    client
                        .publish(&own.goodbye_topic, QoS::AtLeastOnce, true, goodbye)
                        .await?;
                }
                client
                    .publish(&own.announce_topic, QoS::AtLeastOnce, true, Vec::new())
                    .await?;
                client.disconnect().await
            };
            let sent = tokio::time::timeout(STOP_TIMEOUT, farewell).await;
            if matches!(sent, Ok(Ok(()))) {
                // The driver returns once the DISCONNECT has been written.
                let mut driver = link.driver;
                if tokio::time::timeout(STOP_TIMEOUT, &mut driver)
                    .await
                    .is_err()
                {
                    driver.abort();
                }
            } else {
                link.driver.abort();
            }
        } else {
            link.driver.abort();
        }
        self.shared.connected.store(false, Ordering::Relaxed);
    }

    fn status(&self) -> BackendStatus {
        let s = self.stats();
        let last_error = self
            .shared
            .last_error
            .lock()
            .map(|e| e.clone())
            .unwrap_or_default();
        let mut detail = format!(
            "broker {}:{} {}, topic netrun/{}/nodes, {} peers, connects {}, forged {}, \
             malformed {}, foreign mesh {}, stale {}, dropped {}",
            self.host,
            self.port,
            if s.connected {
                "connected"
            } else {
                "disconnected"
            },
            self.config.mesh,
            s.peers,
            s.connects,
            s.table.forged,
            s.table.malformed,
            s.table.foreign_mesh,
            s.table.stale,
            s.dropped(),
        );
        if !last_error.is_empty() {
            detail.push_str(", last error: ");
            detail.push_str(&last_error);
        }
        BackendStatus {
            name: NAME.to_owned(),
            running: self.shared.running.load(Ordering::Relaxed),
            found: s.table.found,
            errors: s.table.malformed
                + s.table.forged
                + s.table.foreign_mesh
                + s.broker_errors
                + s.dropped(),
            detail,
        }
    }
}

impl Drop for MqttBackend {
    fn drop(&mut self) {
        // Without a DISCONNECT the broker sends the last will: a dropped backend is a
        // vanished node, which is what it is.
        if let Some(link) = self.link.take() {
            link.driver.abort();
        }
    }
}

impl Announcer {
    fn sign(&self, kind: AnnounceKind) -> Result<MqttAnnounce, DiscoveryError> {
        let addrs = match kind {
            AnnounceKind::Announce => self.addrs.clone(),
            AnnounceKind::Goodbye => Vec::new(),
        };
        MqttAnnounce::sign(
            &self.identity,
            kind,
            self.mesh,
            self.incarnation,
            unix_millis(),
            addrs,
        )
        .map_err(|e| config_error(&e.to_string()))
    }

    fn publish_announce(&self, client: &AsyncClient, shared: &Shared) {
        let Ok(msg) = self.sign(AnnounceKind::Announce) else {
            return;
        };
        if client
            .try_publish(&self.announce_topic, QoS::AtLeastOnce, true, msg.to_vec())
            .is_err()
        {
            shared.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Drives the rumqttc event loop: (re)connects with backoff, subscribes and announces on
/// every connect, and forwards incoming publishes. Returns when the broker closes the
/// connection after a clean DISCONNECT.
async fn drive(
    mut eventloop: EventLoop,
    client: AsyncClient,
    own: Arc<Announcer>,
    shared: Arc<Shared>,
    tx: mpsc::Sender<Inbound>,
    filters: [String; 2],
    (backoff_min, backoff_max): (Duration, Duration),
) {
    let mut backoff = backoff_min;
    let mut closing = false;
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                shared.connected.store(true, Ordering::Relaxed);
                shared.connects.fetch_add(1, Ordering::Relaxed);
                backoff = backoff_min;
                // A clean session forgets subscriptions: subscribe on every connect.
                for filter in &filters {
                    if client.try_subscribe(filter, QoS::AtLeastOnce).is_err() {
                        shared.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
                own.publish_announce(&client, &shared);
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let msg = Inbound {
                    topic: p.topic,
                    payload: p.payload,
                };
                if tx.try_send(msg).is_err() {
                    shared.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                // Keep reading until the broker closes: closing with unread bytes (our own
                // goodbye echoed back) would reset the connection, and the broker could
                // drop what we sent last and publish the last will after all.
                shared.connected.store(false, Ordering::Relaxed);
                closing = true;
            }
            Ok(_) => {}
            Err(_) if closing => return,
            Err(e) => {
                shared.connected.store(false, Ordering::Relaxed);
                shared.broker_errors.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut last) = shared.last_error.lock() {
                    *last = e.to_string();
                }
                tracing::debug!(error = %e, ?backoff, "mqtt discovery: broker connection failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(backoff_max);
            }
        }
    }
}

/// Splits a broker URL into host and port.
fn parse_broker(url: &str) -> Result<(String, u16), DiscoveryError> {
    let url = url.trim();
    let rest = match url.split_once("://") {
        Some(("mqtt" | "tcp", rest)) => rest,
        Some(("mqtts" | "ssl" | "ws" | "wss", _)) => {
            return Err(config_error(
                "only plain mqtt:// brokers are supported (no TLS or websockets yet)",
            ));
        }
        Some((scheme, _)) => {
            return Err(config_error(&format!("unknown broker scheme {scheme:?}")));
        }
        None => url,
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
        let (host, after) = bracketed
            .split_once(']')
            .ok_or_else(|| config_error("unclosed '[' in broker address"))?;
        match after.strip_prefix(':') {
            Some(port) => (host, Some(port)),
            None if after.is_empty() => (host, None),
            None => return Err(config_error("unexpected text after ']' in broker address")),
        }
    } else {
        match rest.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        }
    };
    if host.is_empty() || host.contains(['/', '@', ' ']) {
        return Err(config_error(&format!("bad broker host {host:?}")));
    }
    let port = match port {
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| config_error(&format!("bad broker port {p:?}")))?,
        None => DEFAULT_MQTT_PORT,
    };
    Ok((host.to_owned(), port))
}

fn config_error(reason: &str) -> DiscoveryError {
    DiscoveryError::Config {
        backend: NAME,
        reason: reason.to_owned(),
    }
}

/// How often expired peers are looked for: a tenth of the TTL, so a peer is reported lost
/// at most 10 % late.
fn sweep_period(ttl: Duration) -> Duration {
    (ttl / 10).max(Duration::from_millis(100))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mesh() -> MeshFingerprint {
        MeshFingerprint::from_psk(&[7; 32])
    }

    #[test]
    fn broker_urls() {
        assert_eq!(
            parse_broker("mqtt://127.0.0.1:1884").expect("ok"),
            ("127.0.0.1".to_owned(), 1884)
        );
        assert_eq!(
            parse_broker("tcp://broker.lan").expect("ok"),
            ("broker.lan".to_owned(), 1883)
        );
        assert_eq!(
            parse_broker("[::1]:2000").expect("ok"),
            ("::1".to_owned(), 2000)
        );
        assert_eq!(
            parse_broker("localhost").expect("ok"),
            ("localhost".to_owned(), 1883)
        );
        for bad in [
            "mqtts://x:8883",
            "http://x",
            "x:0",
            "x:99999",
            "",
            "mqtt://",
            "[::1",
        ] {
            assert!(parse_broker(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn config_is_validated() {
        let base = || MqttConfig::new("127.0.0.1:1883", mesh(), Identity::from_seed([1; 32]));
        assert!(MqttBackend::new(base()).is_ok());
        let mut c = base();
        c.keepalive = Duration::from_millis(500);
        assert!(MqttBackend::new(c).is_err());
        let mut c = base();
        c.peer_ttl = Duration::from_secs(31);
        assert!(MqttBackend::new(c).is_err());
        let mut c = base();
        c.addrs = vec!["10.0.0.1:1".parse().expect("addr"); 9];
        assert!(MqttBackend::new(c).is_err());
    }
}
