//! mDNS discovery: advertise and browse `_netrun._udp.local.` on the local network.
//!
//! ```text
//!  MdnsBackend ── mdns-sd ServiceDaemon (its own thread, UDP 5353, multicast)
//!    register  netrun-<node>._netrun._udp.local.  SRV port, A/AAAA, TXT:
//!                v=1  node=<16 hex>  key=<64 hex ed25519>  mesh=<32 hex fingerprint>
//!    browse    ServiceResolved ─▶ check TXT ─▶ Found{node, key, addrs × port}
//!              ServiceRemoved  ─▶ Lost{node}   (goodbye packets, or TTL expiry)
//! ```
//!
//! Everyone on the LAN hears everyone, so the TXT record carries the mesh fingerprint
//! ([`MeshFingerprint`], derived from the PSK, never the PSK) and nodes ignore services of
//! other meshes. A TXT record is a hint, not an identity: the node id must be the one the
//! key derives (else the record is malformed), and the Noise handshake proves the key.
//! Rejected records are counted, never reported.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, SocketAddrV6};
use std::time::Duration;

use mdns_sd::{
    DaemonEvent, IfKind, ResolvedService, ScopedIp, ServiceDaemon, ServiceEvent, ServiceInfo,
};
use netrun_messages::{EntityId, MeshFingerprint, NodeId};

use super::{
    BackendStatus, DiscoveredPeer, DiscoveryBackend, DiscoveryError, DiscoveryEvent,
    DiscoverySource,
};

/// Backend name in `netrun discovery` and in errors.
const NAME: &str = "mdns";
/// The DNS-SD service type netrun advertises and browses.
pub const DEFAULT_SERVICE_TYPE: &str = "_netrun._udp.local.";
/// Version of the TXT record layout.
const TXT_VERSION: &str = "1";
/// Most addresses reported per peer (the same bound as an MQTT announce).
const MAX_ADDRS: usize = 8;
/// How long a clean stop waits for the daemon to send its goodbye packets.
const STOP_TIMEOUT: Duration = Duration::from_secs(2);

/// Configuration of the mDNS backend.
#[derive(Debug, Clone)]
pub struct MdnsConfig {
    /// The DNS-SD service type, ending in `._udp.local.`.
    pub service_type: String,
    /// The node's ed25519 public key; the node id advertised is the one it derives.
    pub public_key: EntityId,
    /// The node's UDP port (the SRV record's port).
    pub port: u16,
    /// Addresses to advertise; empty advertises every address of the selected interfaces
    /// and follows address changes.
    pub addrs: Vec<IpAddr>,
    /// The mesh fingerprint; services with another one are ignored.
    pub mesh: MeshFingerprint,
    /// Interface names to use (`eth0`, …); empty uses every interface.
    pub interfaces: Vec<String>,
    /// The mDNS UDP port: 5353 on real networks; another only for isolated tests.
    pub mdns_port: u16,
    /// Most peers (advertised instances) remembered; new ones beyond it are dropped and
    /// counted.
    pub max_peers: usize,
}

impl MdnsConfig {
    /// A configuration with the defaults: `_netrun._udp.local.`, every interface and
    /// address, mDNS port 5353, 1024 peers.
    pub fn new(public_key: EntityId, port: u16, mesh: MeshFingerprint) -> Self {
        Self {
            service_type: DEFAULT_SERVICE_TYPE.to_owned(),
            public_key,
            port,
            addrs: Vec::new(),
            mesh,
            interfaces: Vec::new(),
            mdns_port: mdns_sd::MDNS_PORT,
            max_peers: 1024,
        }
    }
}

/// Counters of the mDNS backend (a snapshot).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MdnsStats {
    /// Found events reported.
    pub found: u64,
    /// Lost events reported.
    pub lost: u64,
    /// Services of another mesh, ignored.
    pub foreign_mesh: u64,
    /// Services whose TXT record, port or addresses were unusable.
    pub malformed: u64,
    /// Services dropped because the peer table was full.
    pub table_full: u64,
    /// Errors the mDNS daemon reported (sockets, interfaces).
    pub daemon_errors: u64,
    /// Peers in the table.
    pub peers: u64,
}

/// The mDNS discovery backend (see the module docs).
pub struct MdnsBackend {
    config: MdnsConfig,
    node: NodeId,
    instance: String,
    peers: MdnsPeers,
    daemon_errors: u64,
    running: Option<Running>,
}

/// The daemon and its channels while the backend runs.
struct Running {
    daemon: ServiceDaemon,
    fullname: String,
    browse: mdns_sd::Receiver<ServiceEvent>,
    monitor: mdns_sd::Receiver<DaemonEvent>,
}

impl MdnsBackend {
    /// Checks the configuration; nothing is sent until [`start`](DiscoveryBackend::start).
    pub fn new(config: MdnsConfig) -> Result<Self, DiscoveryError> {
        let ty = &config.service_type;
        if !(ty.starts_with('_') && ty.ends_with("._udp.local.")) {
            return Err(config_error(
                "service_type must look like `_name._udp.local.`",
            ));
        }
        if config.port == 0 {
            return Err(config_error("port must not be 0"));
        }
        if config.max_peers == 0 {
            return Err(config_error("max_peers must be at least 1"));
        }
        let node = config.public_key.node_id();
        let peers = MdnsPeers::new(config.mesh, node, config.max_peers);
        Ok(Self {
            instance: format!("netrun-{node}"),
            node,
            config,
            peers,
            daemon_errors: 0,
            running: None,
        })
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> MdnsStats {
        let c = self.peers.counters;
        MdnsStats {
            found: c.found,
            lost: c.lost,
            foreign_mesh: c.foreign_mesh,
            malformed: c.malformed,
            table_full: c.table_full,
            daemon_errors: self.daemon_errors,
            peers: self.peers.by_name.len() as u64,
        }
    }

    /// The TXT properties this node advertises.
    fn txt(&self) -> [(&'static str, String); 4] {
        [
            ("v", TXT_VERSION.to_owned()),
            ("node", self.node.to_string()),
            ("key", self.config.public_key.to_hex()),
            ("mesh", self.config.mesh.to_hex()),
        ]
    }

    fn handle(&mut self, event: ServiceEvent) -> Option<DiscoveryEvent> {
        match event {
            ServiceEvent::ServiceResolved(resolved) => {
                let advert = Advert::from_resolved(&resolved);
                self.peers.resolved(advert).map(DiscoveryEvent::Found)
            }
            ServiceEvent::ServiceRemoved(_, fullname) => {
                self.peers
                    .removed(&fullname)
                    .map(|node| DiscoveryEvent::Lost {
                        node,
                        source: DiscoverySource::Mdns,
                    })
            }
            _ => None,
        }
    }
}

impl DiscoveryBackend for MdnsBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn start(&mut self) -> Result<(), DiscoveryError> {
        if self.running.is_some() {
            return Ok(());
        }
        let daemon = ServiceDaemon::new_with_port(self.config.mdns_port).map_err(daemon_error)?;
        let started = (|| {
            if !self.config.interfaces.is_empty() {
                daemon.disable_interface(IfKind::All)?;
                let names: Vec<IfKind> = self
                    .config
                    .interfaces
                    .iter()
                    .map(|n| IfKind::Name(n.clone()))
                    .collect();
                daemon.enable_interface(names)?;
            }
            let monitor = daemon.monitor()?;
            let host = format!("{}.local.", self.instance);
            let txt = self.txt();
            let txt: Vec<(&str, &str)> = txt.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let info = ServiceInfo::new(
                &self.config.service_type,
                &self.instance,
                &host,
                &self.config.addrs[..],
                self.config.port,
                &txt[..],
            )?;
            let info = if self.config.addrs.is_empty() {
                info.enable_addr_auto()
            } else {
                info
            };
            let fullname = info.get_fullname().to_owned();
            daemon.register(info)?;
            let browse = daemon.browse(&self.config.service_type)?;
            Ok::<_, mdns_sd::Error>((fullname, browse, monitor))
        })();
        match started {
            Ok((fullname, browse, monitor)) => {
                self.running = Some(Running {
                    daemon,
                    fullname,
                    browse,
                    monitor,
                });
                Ok(())
            }
            Err(e) => {
                let _ = daemon.shutdown();
                Err(daemon_error(e))
            }
        }
    }

    async fn next_event(&mut self) -> Option<DiscoveryEvent> {
        loop {
            let running = self.running.as_ref()?;
            tokio::select! {
                event = running.browse.recv_async() => match event {
                    Ok(event) => {
                        if let Some(event) = self.handle(event) {
                            return Some(event);
                        }
                    }
                    // The daemon ended (stopped, or its thread failed): nothing more comes.
                    Err(_) => return None,
                },
                event = running.monitor.recv_async() => match event {
                    Ok(DaemonEvent::Error(e)) => {
                        self.daemon_errors += 1;
                        tracing::debug!(error = %e, "mdns discovery: daemon error");
                    }
                    Ok(_) => {}
                    Err(_) => return None,
                },
            }
        }
    }

    async fn stop(&mut self) {
        let Some(running) = self.running.take() else {
            return;
        };
        // Unregistering sends goodbye packets (TTL 0), so browsers drop us at once.
        if let Ok(done) = running.daemon.unregister(&running.fullname) {
            let _ = tokio::time::timeout(STOP_TIMEOUT, done.recv_async()).await;
        }
        let _ = running.daemon.stop_browse(&self.config.service_type);
        if let Ok(done) = running.daemon.shutdown() {
            let _ = tokio::time::timeout(STOP_TIMEOUT, done.recv_async()).await;
        }
    }

    fn status(&self) -> BackendStatus {
        let s = self.stats();
        let interfaces = if self.config.interfaces.is_empty() {
            "all interfaces".to_owned()
        } else {
            self.config.interfaces.join(",")
        };
        BackendStatus {
            name: NAME.to_owned(),
            running: self.running.is_some(),
            found: s.found,
            errors: s.malformed + s.table_full + s.daemon_errors,
            detail: format!(
                "{} as {} on {}, mesh {}, {} peers, foreign mesh {}, malformed {}, \
                 table full {}, daemon errors {}",
                self.config.service_type,
                self.instance,
                interfaces,
                self.config.mesh,
                s.peers,
                s.foreign_mesh,
                s.malformed,
                s.table_full,
                s.daemon_errors,
            ),
        }
    }
}

impl Drop for MdnsBackend {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            let _ = running.daemon.shutdown();
        }
    }
}

fn config_error(reason: &str) -> DiscoveryError {
    DiscoveryError::Config {
        backend: NAME,
        reason: reason.to_owned(),
    }
}

fn daemon_error(e: mdns_sd::Error) -> DiscoveryError {
    DiscoveryError::Io {
        backend: NAME,
        source: io::Error::other(e.to_string()),
    }
}

// ---------------------------------------------------------------------------------------
// Peer table: TXT validation and instance tracking, without I/O.

/// A resolved service, reduced to what the table needs.
#[derive(Debug, Clone)]
struct Advert {
    fullname: String,
    port: u16,
    ips: Vec<SocketAddr>,
    txt: HashMap<String, String>,
}

impl Advert {
    fn from_resolved(r: &ResolvedService) -> Self {
        let port = r.get_port();
        let ips = r
            .get_addresses()
            .iter()
            .map(|ip| match ip {
                ScopedIp::V6(v6) => {
                    let scope = if v6.addr().is_unicast_link_local() {
                        v6.scope_id().index
                    } else {
                        0
                    };
                    SocketAddr::V6(SocketAddrV6::new(*v6.addr(), port, 0, scope))
                }
                other => SocketAddr::new(other.to_ip_addr(), port),
            })
            .collect();
        let txt = r
            .get_properties()
            .iter()
            .map(|p| (p.key().to_ascii_lowercase(), p.val_str().to_owned()))
            .collect();
        Self {
            fullname: r.get_fullname().to_owned(),
            port,
            ips,
            txt,
        }
    }
}

/// Rejection and event counters of the table.
#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    found: u64,
    lost: u64,
    foreign_mesh: u64,
    malformed: u64,
    table_full: u64,
}

/// Known instances: full service name → the peer it advertised.
struct MdnsPeers {
    mesh: MeshFingerprint,
    own: NodeId,
    max: usize,
    by_name: HashMap<String, DiscoveredPeer>,
    counters: Counters,
}

impl MdnsPeers {
    fn new(mesh: MeshFingerprint, own: NodeId, max: usize) -> Self {
        Self {
            mesh,
            own,
            max,
            by_name: HashMap::new(),
            counters: Counters::default(),
        }
    }

    /// A resolved (or re-resolved) instance: a peer to report when it is new or changed.
    fn resolved(&mut self, advert: Advert) -> Option<DiscoveredPeer> {
        let txt = |k: &str| advert.txt.get(k).map(String::as_str);
        let key = txt("key").and_then(EntityId::from_hex);
        let node = txt("node").and_then(parse_node);
        let mesh = txt("mesh").and_then(MeshFingerprint::from_hex);
        let (Some(TXT_VERSION), Some(key), Some(node), Some(mesh)) = (txt("v"), key, node, mesh)
        else {
            self.counters.malformed += 1;
            return None;
        };
        if mesh != self.mesh {
            self.counters.foreign_mesh += 1;
            return None;
        }
        if key.node_id() != node || advert.port == 0 {
            self.counters.malformed += 1;
            return None;
        }
        if node == self.own {
            return None;
        }
        let peer = DiscoveredPeer {
            node,
            entity: key,
            addrs: order_addrs(advert.ips),
            source: DiscoverySource::Mdns,
        };
        if self.by_name.get(&advert.fullname) == Some(&peer) {
            return None;
        }
        if !self.by_name.contains_key(&advert.fullname) && self.by_name.len() >= self.max {
            self.counters.table_full += 1;
            return None;
        }
        self.by_name.insert(advert.fullname, peer.clone());
        self.counters.found += 1;
        Some(peer)
    }

    /// An instance went away: the peer to report lost, if we had reported it.
    fn removed(&mut self, fullname: &str) -> Option<NodeId> {
        let peer = self.by_name.remove(fullname)?;
        self.counters.lost += 1;
        Some(peer.node)
    }
}

/// Orders addresses best first (IPv4, global IPv6, link-local IPv6, loopback last),
/// de-duplicated, at most [`MAX_ADDRS`].
fn order_addrs(mut addrs: Vec<SocketAddr>) -> Vec<SocketAddr> {
    let rank = |a: &SocketAddr| match a.ip() {
        ip if ip.is_loopback() => 3,
        IpAddr::V4(_) => 0,
        IpAddr::V6(v6) if v6.is_unicast_link_local() => 2,
        IpAddr::V6(_) => 1,
    };
    addrs.sort_by_key(|a| (rank(a), *a));
    addrs.dedup();
    addrs.truncate(MAX_ADDRS);
    addrs
}

fn parse_node(text: &str) -> Option<NodeId> {
    if text.len() != 16 {
        return None;
    }
    u64::from_str_radix(text, 16).ok().map(NodeId)
}

#[cfg(test)]
mod tests {
    use super::*;
    use netrun_messages::Identity;

    fn mesh() -> MeshFingerprint {
        MeshFingerprint::from_psk(&[9; 32])
    }

    fn advert(id: &Identity, mesh: MeshFingerprint, name: &str) -> Advert {
        let txt = [
            ("v", "1".to_owned()),
            ("node", id.node_id().to_string()),
            ("key", id.entity_id().to_hex()),
            ("mesh", mesh.to_hex()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        Advert {
            fullname: format!("{name}._netrun._udp.local."),
            port: 4000,
            ips: vec![
                "[fe80::1%2]:4000".parse().expect("addr"),
                "127.0.0.1:4000".parse().expect("addr"),
                "10.0.0.2:4000".parse().expect("addr"),
            ],
            txt,
        }
    }

    #[test]
    fn found_changed_and_lost() {
        let own = Identity::from_seed([0; 32]);
        let mut t = MdnsPeers::new(mesh(), own.node_id(), 8);
        let peer = Identity::from_seed([1; 32]);
        let a = advert(&peer, mesh(), "a");
        let found = t.resolved(a.clone()).expect("found");
        assert_eq!(found.node, peer.node_id());
        assert_eq!(found.entity, peer.entity_id());
        assert_eq!(found.source, DiscoverySource::Mdns);
        assert_eq!(found.addrs[0], "10.0.0.2:4000".parse().expect("addr"));
        assert_eq!(
            found.addrs.last(),
            Some(&"127.0.0.1:4000".parse().expect("addr"))
        );
        // The same record again is not news; new addresses are.
        assert_eq!(t.resolved(a.clone()), None);
        let mut moved = a.clone();
        moved.ips = vec!["10.0.0.3:4000".parse().expect("addr")];
        assert!(t.resolved(moved).is_some());
        assert_eq!(t.removed(&a.fullname), Some(peer.node_id()));
        assert_eq!(t.removed(&a.fullname), None);
        assert_eq!((t.counters.found, t.counters.lost), (2, 1));
        // Our own advertisement is ignored without counting an error.
        assert_eq!(t.resolved(advert(&own, mesh(), "me")), None);
        assert_eq!(t.counters.malformed + t.counters.foreign_mesh, 0);
    }

    #[test]
    fn foreign_malformed_and_full_are_counted() {
        let mut t = MdnsPeers::new(mesh(), NodeId(0), 1);
        let peer = Identity::from_seed([1; 32]);
        assert_eq!(
            t.resolved(advert(&peer, MeshFingerprint::from_psk(&[8; 32]), "x")),
            None
        );
        assert_eq!(t.counters.foreign_mesh, 1);

        let other = Identity::from_seed([2; 32]);
        let mut mismatched = advert(&peer, mesh(), "y");
        mismatched
            .txt
            .insert("node".to_owned(), other.node_id().to_string());
        assert_eq!(t.resolved(mismatched), None);
        let mut no_key = advert(&peer, mesh(), "z");
        no_key.txt.remove("key");
        assert_eq!(t.resolved(no_key), None);
        let mut bad_version = advert(&peer, mesh(), "w");
        bad_version.txt.insert("v".to_owned(), "2".to_owned());
        assert_eq!(t.resolved(bad_version), None);
        let mut bad_hex = advert(&peer, mesh(), "u");
        bad_hex.txt.insert("key".to_owned(), "zz".repeat(32));
        assert_eq!(t.resolved(bad_hex), None);
        let mut no_port = advert(&peer, mesh(), "p");
        no_port.port = 0;
        assert_eq!(t.resolved(no_port), None);
        assert_eq!(t.counters.malformed, 5);

        assert!(t.resolved(advert(&peer, mesh(), "a")).is_some());
        assert_eq!(t.resolved(advert(&other, mesh(), "b")), None);
        assert_eq!(t.counters.table_full, 1);
    }

    #[test]
    fn addresses_are_ordered_deduplicated_and_bounded() {
        let many: Vec<SocketAddr> = (0..20)
            .map(|i| SocketAddr::from(([10, 0, 0, i % 12], 1)))
            .collect();
        let out = order_addrs(many);
        assert_eq!(out.len(), MAX_ADDRS);
        let mut sorted = out.clone();
        sorted.dedup();
        assert_eq!(sorted.len(), out.len());
    }

    #[test]
    fn config_is_validated() {
        let key = Identity::from_seed([1; 32]).entity_id();
        assert!(MdnsBackend::new(MdnsConfig::new(key, 4000, mesh())).is_ok());
        assert!(MdnsBackend::new(MdnsConfig::new(key, 0, mesh())).is_err());
        let mut c = MdnsConfig::new(key, 4000, mesh());
        c.service_type = "_netrun._tcp.local.".to_owned();
        assert!(MdnsBackend::new(c).is_err());
    }
}
