//! Node configuration: embedded defaults, then a TOML file, then `NETRUN_*` environment
//! variables, then command-line flags; each layer overrides the one before.
//!
//! ```toml
//! data_dir = "/var/lib/netrun"      # identity, control socket
//! bind = "0.0.0.0:9470"             # UDP; if the port is taken, an ephemeral port is used
//! psk = "<64 hex chars>"            # mesh pre-shared key (or NETRUN_PSK)
//!
//! [[peers]]
//! addr = "192.0.2.7:9470"
//! public_key = "<64 hex chars>"
//!
//! [session]
//! heartbeat_interval_ms = 1000
//! suspect_after_ms = 3000
//! fail_after_ms = 8000
//! idle_timeout_ms = 30000
//!
//! [pingwave]                        # hop-bounded probes that build routes
//! enabled = true
//! interval_ms = 2000
//! radius = 4                        # hops a wave travels
//!
//! [telemetry]
//! log = "info"                      # env-filter syntax (or NETRUN_LOG / RUST_LOG)
//! otlp_endpoint = "http://127.0.0.1:4317"
//! otlp_protocol = "grpc"            # or "http"
//!
//! [discovery]
//! advertise = ["192.0.2.7:9470"]    # addresses in this node's DHT record (NETRUN_ADVERTISE)
//! auto_connect_limit = 64           # no automatic connects beyond this many sessions
//! reannounce_ms = 30000             # how often seeds are re-reported
//!
//! [[discovery.seeds]]               # bootstrap peers (NETRUN_SEEDS, --seed ADDR=PUBKEY)
//! addr = "192.0.2.8:9470"
//! public_key = "<64 hex chars>"
//!
//! [discovery.peer_exchange]         # NETRUN_PEER_EXCHANGE=on|off
//! enabled = true
//! interval_ms = 30000
//!
//! [discovery.dht]                   # NETRUN_DHT=on|off
//! enabled = true
//! record_ttl_secs = 3600
//! republish_interval_secs = 1200
//!
//! [discovery.mdns]                  # NETRUN_MDNS=on|off
//! enabled = false
//! service = "_netrun._udp.local"
//!
//! [discovery.mqtt]                  # NETRUN_MQTT=on|off, NETRUN_MQTT_BROKER
//! enabled = false
//! broker = "mqtt://127.0.0.1:1883"
//!
//! [capabilities]                    # what this node announces (NETRUN_TAGS adds tags)
//! tags = ["role:worker", "software.os=linux"]
//! metadata = { region = "eu-west" }
//! cpu_cores = 8
//! cpu_threads = 16
//! memory_gb = 32
//! gpu = { vendor = "nvidia", model = "RTX 4090", vram_gb = 24 }
//! min_interval_secs = 10            # changes are announced at most this often
//! reannounce_secs = 150             # periodic re-announcement, shorter than the TTL
//! ttl_secs = 300                    # how long peers keep an announcement
//!
//! [daemons]                         # who may place daemons on this node
//! accept_remote = true              # false: only daemons spawned on this node
//! accept_from = ["<16 hex digits>"] # if set, only these node ids may place daemons
//! ```
//!
//! Invalid configuration is reported as one [`ConfigError`] naming the field, before
//! anything starts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use netrun_messages::{CapabilitySet, EntityId, GpuInfo, Hardware, NodeId};
use netrun_runtime::capability::AnnouncerConfig;
use serde::Deserialize;
use thiserror::Error;

/// The UDP port a node binds when nothing else is configured.
pub const DEFAULT_PORT: u16 = 9470;

/// A configuration value that is wrong, named by its field.
#[derive(Debug, Error)]
#[error("invalid configuration: {field}: {message}")]
pub struct ConfigError {
    /// The field, as written in the TOML file (`session.heartbeat_interval_ms`).
    pub field: String,
    /// What is wrong and what would be right.
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A statically configured peer: where it is and who it must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    /// Its UDP address.
    pub addr: SocketAddr,
    /// Its ed25519 public key.
    pub public_key: EntityId,
}

/// Session timing (see `netrun_runtime` liveness for what each value means).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTiming {
    /// How often each side sends an authenticated heartbeat.
    pub heartbeat_interval: Duration,
    /// Silence after which a peer is Suspected.
    pub suspect_after: Duration,
    /// Silence after which a peer is Down.
    pub fail_after: Duration,
    /// Silence after which the session is closed.
    pub idle_timeout: Duration,
}

impl Default for SessionTiming {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_millis(1000),
            suspect_after: Duration::from_millis(3000),
            fail_after: Duration::from_millis(8000),
            idle_timeout: Duration::from_millis(30_000),
        }
    }
}

/// Pingwave probing: how often a node probes and how far its waves travel. Routes learned
/// from a wave live three intervals (two lost waves are tolerated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PingwaveSettings {
    /// Whether the node runs the pingwave actor (without it, it only learns direct routes).
    pub enabled: bool,
    /// Time between this node's waves.
    pub interval: Duration,
    /// Hop radius: how many hops a wave travels, so how far routes reach.
    pub radius: u8,
}

impl Default for PingwaveSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: Duration::from_secs(2),
            radius: 4,
        }
    }
}

/// OTLP transport protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OtlpProtocol {
    /// gRPC (default port 4317).
    #[default]
    Grpc,
    /// HTTP with protobuf bodies (default port 4318).
    Http,
}

/// Logging and tracing export.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TelemetryConfig {
    /// `tracing-subscriber` env-filter directive.
    pub log: Option<String>,
    /// OTLP collector endpoint; no exporter when `None`.
    pub otlp_endpoint: Option<String>,
    /// OTLP protocol.
    pub otlp_protocol: OtlpProtocol,
}

/// How this node finds peers (`[discovery]`).
///
/// [`Default`] is what `netrun start` runs: peer exchange and the DHT on, the LAN and
/// broker backends off. [`DiscoveryConfig::manual`] (the [`NodeBuilder`](crate::NodeBuilder)
/// default) runs only the coordinator and the seeds given, so a library user's node makes
/// no session it was not told to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryConfig {
    /// Seed peers for the bootstrap backend (static peers are seeds too).
    pub seeds: Vec<PeerConfig>,
    /// How often the seeds are re-reported.
    pub reannounce: Duration,
    /// Addresses this node publishes in its DHT contact record; empty means the bound
    /// address (when it is not `0.0.0.0` / `::`).
    pub advertise: Vec<SocketAddr>,
    /// No automatic connect once this many sessions are up.
    pub auto_connect_limit: usize,
    /// Peer exchange.
    pub peer_exchange: PeerExchangeOptions,
    /// The Kademlia DHT.
    pub dht: DhtOptions,
    /// mDNS on the local network.
    pub mdns: MdnsOptions,
    /// MQTT broker discovery.
    pub mqtt: MqttOptions,
}

/// `[discovery.peer_exchange]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerExchangeOptions {
    /// Whether signed peer lists are exchanged.
    pub enabled: bool,
    /// How often a list goes to one session peer in turn (a list also goes to every new
    /// session peer at once).
    pub interval: Duration,
}

/// `[discovery.dht]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DhtOptions {
    /// Whether the DHT runs.
    pub enabled: bool,
    /// Lifetime of this node's contact record.
    pub record_ttl: Duration,
    /// How often the contact record is published again.
    pub republish_interval: Duration,
}

/// `[discovery.mdns]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MdnsOptions {
    /// Whether the node advertises and browses on the LAN.
    pub enabled: bool,
    /// The DNS-SD service type.
    pub service: String,
}

/// `[discovery.mqtt]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttOptions {
    /// Whether the node announces itself on the broker.
    pub enabled: bool,
    /// The broker URL (`mqtt://host:port`; TLS is not supported yet).
    pub broker: String,
}

/// The mDNS service type netrun advertises.
pub const DEFAULT_MDNS_SERVICE: &str = "_netrun._udp.local";
/// The broker tried when none is configured.
pub const DEFAULT_MQTT_BROKER: &str = "mqtt://127.0.0.1:1883";

impl Default for DiscoveryConfig {
    fn default() -> Self {
        Self {
            seeds: Vec::new(),
            reannounce: Duration::from_secs(30),
            advertise: Vec::new(),
            auto_connect_limit: 64,
            peer_exchange: PeerExchangeOptions {
                enabled: true,
                interval: Duration::from_secs(30),
            },
            dht: DhtOptions {
                enabled: true,
                record_ttl: Duration::from_secs(3600),
                republish_interval: Duration::from_secs(1200),
            },
            mdns: MdnsOptions {
                enabled: false,
                service: DEFAULT_MDNS_SERVICE.to_string(),
            },
            mqtt: MqttOptions {
                enabled: false,
                broker: DEFAULT_MQTT_BROKER.to_string(),
            },
        }
    }
}

impl DiscoveryConfig {
    /// Only the coordinator and the given seeds: no peer exchange, DHT, mDNS or MQTT.
    pub fn manual() -> Self {
        let mut config = Self::default();
        config.peer_exchange.enabled = false;
        config.dht.enabled = false;
        config
    }
}

/// What the node announces about itself (`[capabilities]`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CapabilitiesConfig {
    /// Tags, metadata and hardware.
    pub set: CapabilitySet,
    /// Announcement cadence and TTL.
    pub timing: AnnouncerConfig,
}

/// Everything `netrun start` needs, after all layers are merged and validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// Data directory (identity file, control socket).
    pub data_dir: PathBuf,
    /// UDP bind address.
    pub bind: SocketAddr,
    /// Whether `bind` came from the defaults (then a taken port falls back to an ephemeral one).
    pub bind_is_default: bool,
    /// Mesh pre-shared key; `None` means the development key (with a loud warning).
    pub psk: Option<[u8; 32]>,
    /// Static peers.
    pub peers: Vec<PeerConfig>,
    /// Session timing.
    pub session: SessionTiming,
    /// Pingwave probing.
    pub pingwave: PingwaveSettings,
    /// Logging and tracing export.
    pub telemetry: TelemetryConfig,
    /// Peer discovery.
    pub discovery: DiscoveryConfig,
    /// What the node announces.
    pub capabilities: CapabilitiesConfig,
    /// Which peers may place daemons here.
    pub remote_spawns: crate::daemons::RemoteSpawns,
}

/// Overrides from the command line (each `None` keeps the lower layer's value).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--config FILE`.
    pub config_file: Option<PathBuf>,
    /// `--data-dir DIR`.
    pub data_dir: Option<PathBuf>,
    /// `--bind ADDR`.
    pub bind: Option<String>,
    /// `--peer ADDR=PUBKEY`, repeatable; added to the configured peers.
    pub peers: Vec<String>,
    /// `--seed ADDR=PUBKEY`, repeatable; added to the configured seeds.
    pub seeds: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    bind: Option<String>,
    psk: Option<String>,
    #[serde(default)]
    peers: Vec<FilePeer>,
    #[serde(default)]
    session: FileSession,
    #[serde(default)]
    pingwave: FilePingwave,
    #[serde(default)]
    telemetry: FileTelemetry,
    #[serde(default)]
    discovery: FileDiscovery,
    #[serde(default)]
    capabilities: FileCapabilities,
    #[serde(default)]
    daemons: FileDaemons,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDaemons {
    accept_remote: Option<bool>,
    accept_from: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileCapabilities {
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    metadata: std::collections::BTreeMap<String, String>,
    cpu_cores: Option<u32>,
    cpu_threads: Option<u32>,
    memory_gb: Option<u32>,
    gpu: Option<FileGpu>,
    min_interval_secs: Option<u64>,
    reannounce_secs: Option<u64>,
    ttl_secs: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileGpu {
    vendor: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    vram_gb: u32,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDiscovery {
    #[serde(default)]
    seeds: Vec<FilePeer>,
    reannounce_ms: Option<u64>,
    advertise: Option<Vec<String>>,
    auto_connect_limit: Option<usize>,
    #[serde(default)]
    peer_exchange: FileToggle,
    #[serde(default)]
    dht: FileDht,
    #[serde(default)]
    mdns: FileMdns,
    #[serde(default)]
    mqtt: FileMqtt,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileToggle {
    enabled: Option<bool>,
    interval_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDht {
    enabled: Option<bool>,
    record_ttl_secs: Option<u64>,
    republish_interval_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileMdns {
    enabled: Option<bool>,
    service: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileMqtt {
    enabled: Option<bool>,
    broker: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilePingwave {
    enabled: Option<bool>,
    interval_ms: Option<u64>,
    radius: Option<u8>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilePeer {
    addr: String,
    public_key: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSession {
    heartbeat_interval_ms: Option<u64>,
    suspect_after_ms: Option<u64>,
    fail_after_ms: Option<u64>,
    idle_timeout_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTelemetry {
    log: Option<String>,
    otlp_endpoint: Option<String>,
    otlp_protocol: Option<OtlpProtocol>,
}

/// A source of environment variables (the process environment, or a map in tests).
pub trait Env {
    /// The value of `name`, if set and not empty.
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

impl<const N: usize> Env for [(&str, &str); N] {
    fn var(&self, name: &str) -> Option<String> {
        self.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_string())
    }
}

impl Config {
    /// Merges defaults, the config file (if any), the environment and `overrides`.
    pub fn load(overrides: &Overrides, env: &impl Env) -> Result<Self, ConfigError> {
        let config_path = overrides
            .config_file
            .clone()
            .or_else(|| env.var("NETRUN_CONFIG").map(PathBuf::from));
        let file = match &config_path {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };

        let data_dir = overrides
            .data_dir
            .clone()
            .or_else(|| env.var("NETRUN_DATA_DIR").map(PathBuf::from))
            .or(file.data_dir)
            .unwrap_or_else(|| default_data_dir(env));

        let bind_text = overrides
            .bind
            .clone()
            .or_else(|| env.var("NETRUN_BIND"))
            .or(file.bind);
        let bind_is_default = bind_text.is_none();
        let bind = match bind_text {
            Some(text) => parse_addr("bind", &text)?,
            None => SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT)),
        };

        let psk = match env.var("NETRUN_PSK").or(file.psk) {
            Some(text) => Some(parse_psk(&text)?),
            None => None,
        };

        let peers = STATIC_PEERS.merge(&file.peers, env, &overrides.peers)?;

        let defaults = SessionTiming::default();
        let ms =
            |field: &str, value: Option<u64>, default: Duration| -> Result<Duration, ConfigError> {
                match value {
                    None => Ok(default),
                    Some(0) => Err(ConfigError::new(
                        format!("session.{field}"),
                        "must be greater than zero",
                    )),
                    Some(v) if v > 24 * 3600 * 1000 => Err(ConfigError::new(
                        format!("session.{field}"),
                        "must be at most one day",
                    )),
                    Some(v) => Ok(Duration::from_millis(v)),
                }
            };
        let session = SessionTiming {
            heartbeat_interval: ms(
                "heartbeat_interval_ms",
                file.session.heartbeat_interval_ms,
                defaults.heartbeat_interval,
            )?,
            suspect_after: ms(
                "suspect_after_ms",
                file.session.suspect_after_ms,
                defaults.suspect_after,
            )?,
            fail_after: ms(
                "fail_after_ms",
                file.session.fail_after_ms,
                defaults.fail_after,
            )?,
            idle_timeout: ms(
                "idle_timeout_ms",
                file.session.idle_timeout_ms,
                defaults.idle_timeout,
            )?,
        };
        if session.suspect_after <= session.heartbeat_interval {
            return Err(ConfigError::new(
                "session.suspect_after_ms",
                "must be longer than session.heartbeat_interval_ms",
            ));
        }
        if session.fail_after <= session.suspect_after {
            return Err(ConfigError::new(
                "session.fail_after_ms",
                "must be longer than session.suspect_after_ms",
            ));
        }
        if session.idle_timeout < session.fail_after {
            return Err(ConfigError::new(
                "session.idle_timeout_ms",
                "must be at least session.fail_after_ms",
            ));
        }

        let pingwave_defaults = PingwaveSettings::default();
        let pingwave = PingwaveSettings {
            enabled: file.pingwave.enabled.unwrap_or(pingwave_defaults.enabled),
            interval: match file.pingwave.interval_ms {
                None => pingwave_defaults.interval,
                Some(v) if (10..=3_600_000).contains(&v) => Duration::from_millis(v),
                Some(_) => {
                    return Err(ConfigError::new(
                        "pingwave.interval_ms",
                        "must be between 10 ms and one hour",
                    ));
                }
            },
            radius: match file.pingwave.radius {
                None => pingwave_defaults.radius,
                Some(r) if (1..=netrun_messages::header::DEFAULT_TTL).contains(&r) => r,
                Some(_) => {
                    return Err(ConfigError::new(
                        "pingwave.radius",
                        format!(
                            "must be between 1 and {} (the packet TTL)",
                            netrun_messages::header::DEFAULT_TTL
                        ),
                    ));
                }
            },
        };

        let telemetry = TelemetryConfig {
            log: env.var("NETRUN_LOG").or(file.telemetry.log),
            otlp_endpoint: env
                .var("OTEL_EXPORTER_OTLP_ENDPOINT")
                .or(file.telemetry.otlp_endpoint),
            otlp_protocol: match env.var("OTEL_EXPORTER_OTLP_PROTOCOL") {
                Some(p) if p == "grpc" => OtlpProtocol::Grpc,
                Some(p) if p.starts_with("http") => OtlpProtocol::Http,
                Some(p) => {
                    return Err(ConfigError::new(
                        "OTEL_EXPORTER_OTLP_PROTOCOL",
                        format!("{p:?} is not grpc, http/protobuf"),
                    ));
                }
                None => file.telemetry.otlp_protocol.unwrap_or_default(),
            },
        };

        let discovery = load_discovery(file.discovery, overrides, env)?;
        let capabilities = load_capabilities(file.capabilities, env)?;
        let remote_spawns = load_remote_spawns(file.daemons)?;

        Ok(Self {
            data_dir,
            bind,
            bind_is_default,
            psk,
            peers,
            session,
            pingwave,
            telemetry,
            discovery,
            capabilities,
            remote_spawns,
        })
    }
}

/// Reads `[daemons]`: `accept_remote = false` refuses every peer; a non-empty
/// `accept_from` lists the only node ids that may place daemons here.
fn load_remote_spawns(file: FileDaemons) -> Result<crate::daemons::RemoteSpawns, ConfigError> {
    use crate::daemons::RemoteSpawns;
    match (file.accept_remote.unwrap_or(true), file.accept_from) {
        (false, Some(_)) => Err(ConfigError::new(
            "daemons.accept_from",
            "cannot be set when accept_remote = false",
        )),
        (false, None) => Ok(RemoteSpawns::Nobody),
        (true, None) => Ok(RemoteSpawns::AnyPeer),
        (true, Some(nodes)) => {
            let nodes = nodes
                .iter()
                .map(|text| {
                    NodeId::parse(text).ok_or_else(|| {
                        ConfigError::new(
                            "daemons.accept_from",
                            format!("{text:?} is not a node id (16 hex digits)"),
                        )
                    })
                })
                .collect::<Result<_, _>>()?;
            Ok(RemoteSpawns::Only(nodes))
        }
    }
}

/// Reads `[capabilities]` plus the tags in `NETRUN_TAGS` (comma-separated).
fn load_capabilities(
    file: FileCapabilities,
    env: &impl Env,
) -> Result<CapabilitiesConfig, ConfigError> {
    let mut set = CapabilitySet::new();
    let env_tags = env.var("NETRUN_TAGS").unwrap_or_default();
    for tag in file
        .tags
        .iter()
        .map(String::as_str)
        .chain(comma_list(&env_tags))
    {
        set = set.with_tag(tag);
    }
    set.metadata = file.metadata;
    let mut hardware = Hardware::new(file.cpu_cores.unwrap_or(0), file.cpu_threads.unwrap_or(0))
        .with_memory_gb(file.memory_gb.unwrap_or(0));
    if let Some(gpu) = file.gpu {
        let vendor = crate::capabilities::parse_vendor(&gpu.vendor).ok_or_else(|| {
            ConfigError::new(
                "capabilities.gpu.vendor",
                format!("{:?} is not nvidia, amd, intel, apple or other", gpu.vendor),
            )
        })?;
        hardware = hardware.with_gpu(GpuInfo::new(vendor, gpu.model, gpu.vram_gb));
    }
    set = set.with_hardware(hardware);
    set.validate()
        .map_err(|e| ConfigError::new("capabilities", e.to_string()))?;
    let defaults = AnnouncerConfig::default();
    let timing = AnnouncerConfig {
        min_interval_secs: file.min_interval_secs.unwrap_or(defaults.min_interval_secs),
        reannounce_interval_secs: file
            .reannounce_secs
            .unwrap_or(defaults.reannounce_interval_secs),
        ttl_secs: file.ttl_secs.unwrap_or(defaults.ttl_secs),
    };
    timing
        .validate()
        .map_err(|e| ConfigError::new("capabilities.reannounce_secs", e.to_string()))?;
    Ok(CapabilitiesConfig { set, timing })
}

/// Merges `[discovery]` with `NETRUN_SEEDS`, `NETRUN_ADVERTISE`, `NETRUN_PEER_EXCHANGE`,
/// `NETRUN_DHT`, `NETRUN_MDNS`, `NETRUN_MQTT`, `NETRUN_MQTT_BROKER` and `--seed`.
fn load_discovery(
    file: FileDiscovery,
    overrides: &Overrides,
    env: &impl Env,
) -> Result<DiscoveryConfig, ConfigError> {
    let mut d = DiscoveryConfig {
        seeds: SEEDS.merge(&file.seeds, env, &overrides.seeds)?,
        ..DiscoveryConfig::default()
    };
    if let Some(ms) = file.reannounce_ms {
        d.reannounce = bounded_ms("discovery.reannounce_ms", ms)?;
    }
    match env.var("NETRUN_ADVERTISE") {
        Some(list) => {
            for item in comma_list(&list) {
                d.advertise.push(parse_addr("NETRUN_ADVERTISE", item)?);
            }
        }
        None => {
            for (i, a) in file.advertise.unwrap_or_default().iter().enumerate() {
                d.advertise
                    .push(parse_addr(&format!("discovery.advertise[{i}]"), a)?);
            }
        }
    }
    if d.advertise.len() > netrun_messages::discovery::MAX_ADDRS_PER_PEER {
        return Err(ConfigError::new(
            "discovery.advertise",
            format!(
                "at most {} addresses fit in a contact record",
                netrun_messages::discovery::MAX_ADDRS_PER_PEER
            ),
        ));
    }
    if let Some(limit) = file.auto_connect_limit {
        if limit > 4096 {
            return Err(ConfigError::new(
                "discovery.auto_connect_limit",
                "must be at most 4096 (the session limit)",
            ));
        }
        d.auto_connect_limit = limit;
    }

    let px = file.peer_exchange;
    d.peer_exchange.enabled =
        toggle(env, "NETRUN_PEER_EXCHANGE", px.enabled)?.unwrap_or(d.peer_exchange.enabled);
    if let Some(ms) = px.interval_ms {
        d.peer_exchange.interval = bounded_ms("discovery.peer_exchange.interval_ms", ms)?;
    }

    let dht = file.dht;
    d.dht.enabled = toggle(env, "NETRUN_DHT", dht.enabled)?.unwrap_or(d.dht.enabled);
    if let Some(s) = dht.record_ttl_secs {
        d.dht.record_ttl = bounded_ms("discovery.dht.record_ttl_secs", s.saturating_mul(1000))?;
    }
    if let Some(s) = dht.republish_interval_secs {
        d.dht.republish_interval = bounded_ms(
            "discovery.dht.republish_interval_secs",
            s.saturating_mul(1000),
        )?;
    }
    if d.dht.republish_interval >= d.dht.record_ttl {
        return Err(ConfigError::new(
            "discovery.dht.republish_interval_secs",
            "must be shorter than discovery.dht.record_ttl_secs, or the record lapses",
        ));
    }

    d.mdns.enabled = toggle(env, "NETRUN_MDNS", file.mdns.enabled)?.unwrap_or(d.mdns.enabled);
    if let Some(service) = file.mdns.service {
        let bare = service.trim_end_matches('.');
        if !(bare.ends_with("._udp.local") || bare.ends_with("._tcp.local"))
            || !bare.starts_with('_')
        {
            return Err(ConfigError::new(
                "discovery.mdns.service",
                format!("{service:?} is not a DNS-SD service type like \"_netrun._udp.local\""),
            ));
        }
        d.mdns.service = service;
    }

    d.mqtt.enabled = toggle(env, "NETRUN_MQTT", file.mqtt.enabled)?.unwrap_or(d.mqtt.enabled);
    if let Some(broker) = env.var("NETRUN_MQTT_BROKER").or(file.mqtt.broker) {
        let field = "discovery.mqtt.broker";
        if broker.starts_with("mqtts://") {
            return Err(ConfigError::new(
                field,
                format!("{broker:?}: TLS brokers (mqtts://) are not supported yet; use mqtt://"),
            ));
        }
        let rest = broker.strip_prefix("mqtt://").ok_or_else(|| {
            ConfigError::new(field, format!("{broker:?} is not mqtt://HOST:PORT"))
        })?;
        if rest.is_empty() || rest.contains('/') {
            return Err(ConfigError::new(
                field,
                format!("{broker:?} needs a host (and optional port), nothing else"),
            ));
        }
        d.mqtt.broker = broker;
    }
    Ok(d)
}

/// A duration in milliseconds: more than zero, at most a day.
fn bounded_ms(field: &str, ms: u64) -> Result<Duration, ConfigError> {
    match ms {
        0 => Err(ConfigError::new(field, "must be greater than zero")),
        v if v > 24 * 3600 * 1000 => Err(ConfigError::new(field, "must be at most one day")),
        v => Ok(Duration::from_millis(v)),
    }
}

/// An on/off switch: the environment variable `name` (on, off, true, false, 1, 0) over
/// the file's value.
fn toggle(env: &impl Env, name: &str, file: Option<bool>) -> Result<Option<bool>, ConfigError> {
    match env.var(name) {
        None => Ok(file),
        Some(v) => match v.trim().to_ascii_lowercase().as_str() {
            "1" | "on" | "true" | "yes" => Ok(Some(true)),
            "0" | "off" | "false" | "no" => Ok(Some(false)),
            _ => Err(ConfigError::new(name, format!("{v:?} is not on or off"))),
        },
    }
}

/// The data directory used when none is configured: `$XDG_DATA_HOME/netrun`,
/// `$HOME/.local/share/netrun`, or `./netrun-data`.
pub fn default_data_dir(env: &impl Env) -> PathBuf {
    if let Some(xdg) = env.var("XDG_DATA_HOME") {
        return Path::new(&xdg).join("netrun");
    }
    if let Some(home) = env.var("HOME") {
        return Path::new(&home).join(".local/share/netrun");
    }
    PathBuf::from("netrun-data")
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::new("--config", format!("cannot read {}: {e}", path.display()))
    })?;
    toml::from_str(&text).map_err(|e| {
        let field = e.message().split('`').nth(1).unwrap_or("file").to_string();
        ConfigError::new(field, format!("{}: {}", path.display(), e.message()))
    })
}

fn parse_addr(field: &str, text: &str) -> Result<SocketAddr, ConfigError> {
    text.trim().parse().map_err(|_| {
        ConfigError::new(
            field,
            format!("{text:?} is not an IP:PORT address (e.g. 127.0.0.1:9470)"),
        )
    })
}

fn parse_key(field: &str, text: &str) -> Result<EntityId, ConfigError> {
    EntityId::from_hex(text)
        .ok_or_else(|| ConfigError::new(field, "expected a 64-hex-character ed25519 public key"))
}

/// Where one list of peers comes from: `[[table]]` entries in the file, the environment
/// variable `var` (comma-separated `ADDR=PUBKEY`) and the repeatable flag `flag`. Each
/// source also names the field an error points at.
struct PeerSources {
    table: &'static str,
    var: &'static str,
    flag: &'static str,
}

/// Static peers: `[[peers]]`, `NETRUN_PEERS`, `--peer`.
const STATIC_PEERS: PeerSources = PeerSources {
    table: "peers",
    var: "NETRUN_PEERS",
    flag: "--peer",
};

/// Discovery seeds: `[[discovery.seeds]]`, `NETRUN_SEEDS`, `--seed`.
const SEEDS: PeerSources = PeerSources {
    table: "discovery.seeds",
    var: "NETRUN_SEEDS",
    flag: "--seed",
};

impl PeerSources {
    /// The file's peers, then the environment's, then the flags' — all of them, in that
    /// order.
    fn merge(
        &self,
        file: &[FilePeer],
        env: &impl Env,
        flags: &[String],
    ) -> Result<Vec<PeerConfig>, ConfigError> {
        let table = self.table;
        let mut peers = Vec::new();
        for (i, p) in file.iter().enumerate() {
            peers.push(PeerConfig {
                addr: parse_addr(&format!("{table}[{i}].addr"), &p.addr)?,
                public_key: parse_key(&format!("{table}[{i}].public_key"), &p.public_key)?,
            });
        }
        if let Some(list) = env.var(self.var) {
            for item in comma_list(&list) {
                peers.push(parse_peer(self.var, item)?);
            }
        }
        for item in flags {
            peers.push(parse_peer(self.flag, item)?);
        }
        Ok(peers)
    }
}

/// The non-empty items of a comma-separated list, trimmed.
fn comma_list(text: &str) -> impl Iterator<Item = &str> {
    text.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
}

/// Parses `ADDR=PUBKEY`.
pub fn parse_peer(field: &str, text: &str) -> Result<PeerConfig, ConfigError> {
    let (addr, key) = text.trim().split_once('=').ok_or_else(|| {
        ConfigError::new(
            field,
            format!("{text:?} is not ADDR=PUBKEY (e.g. 127.0.0.1:9470=ab12…)"),
        )
    })?;
    Ok(PeerConfig {
        addr: parse_addr(field, addr)?,
        public_key: parse_key(field, key)?,
    })
}

/// Parses a 64-hex-character PSK.
pub fn parse_psk(text: &str) -> Result<[u8; 32], ConfigError> {
    let bytes = hex::decode(text.trim())
        .ok()
        .filter(|b| b.len() == 32)
        .ok_or_else(|| ConfigError::new("psk", "expected 64 hex characters (32 bytes)"))?;
    let mut psk = [0u8; 32];
    psk.copy_from_slice(&bytes);
    Ok(psk)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("node.toml");
        std::fs::write(&path, text).expect("write");
        path
    }

    #[test]
    fn defaults_need_nothing() {
        let c = Config::load(&Overrides::default(), &[("HOME", "/home/u")]).expect("ok");
        assert_eq!(c.data_dir, PathBuf::from("/home/u/.local/share/netrun"));
        assert_eq!(c.bind.port(), DEFAULT_PORT);
        assert!(c.bind_is_default);
        assert!(c.psk.is_none());
        assert_eq!(c.session, SessionTiming::default());
        assert_eq!(c.pingwave, PingwaveSettings::default());
        let c = Config::load(&Overrides::default(), &[]).expect("ok");
        assert_eq!(c.data_dir, PathBuf::from("netrun-data"));
    }

    #[test]
    fn layers_override_in_order() {
        let dir = tempfile::tempdir().expect("tmp");
        let key = "11".repeat(32);
        let path = write(
            dir.path(),
            &format!(
                "bind = \"127.0.0.1:1000\"\ndata_dir = \"/file\"\n[[peers]]\naddr = \"127.0.0.1:2000\"\npublic_key = \"{key}\"\n[session]\nheartbeat_interval_ms = 500\n[pingwave]\ninterval_ms = 250\nradius = 6\n"
            ),
        );
        let over = Overrides {
            config_file: Some(path),
            bind: Some("127.0.0.1:3000".into()),
            peers: vec![format!("127.0.0.1:4000={key}")],
            ..Overrides::default()
        };
        let env = [("NETRUN_DATA_DIR", "/env"), ("NETRUN_PSK", "ab")];
        let err = Config::load(&over, &env).expect_err("bad psk");
        assert_eq!(err.field, "psk");
        let psk = "cd".repeat(32);
        let env_peers = format!(" , 127.0.0.1:5000={key} ,");
        let env = [
            ("NETRUN_DATA_DIR", "/env"),
            ("NETRUN_PSK", psk.as_str()),
            ("NETRUN_PEERS", env_peers.as_str()),
        ];
        let c = Config::load(&over, &env).expect("ok");
        assert_eq!(c.bind.port(), 3000);
        assert!(!c.bind_is_default);
        assert_eq!(c.data_dir, PathBuf::from("/env"));
        assert_eq!(c.psk, Some([0xcd; 32]));
        let ports: Vec<u16> = c.peers.iter().map(|p| p.addr.port()).collect();
        assert_eq!(ports, vec![2000, 5000, 4000], "file, env, flags");
        assert_eq!(c.session.heartbeat_interval, Duration::from_millis(500));
        assert_eq!(c.pingwave.interval, Duration::from_millis(250));
        assert_eq!(c.pingwave.radius, 6);
    }

    /// Loads each `(file text, field)` case as a config file and checks that loading fails
    /// naming that field.
    fn assert_each_fails_at(cases: &[(&str, &str)]) {
        let dir = tempfile::tempdir().expect("tmp");
        for &(text, field) in cases {
            let over = Overrides {
                config_file: Some(write(dir.path(), text)),
                ..Overrides::default()
            };
            let err = Config::load(&over, &[]).expect_err(text);
            assert_eq!(err.field, field, "{text}: {err}");
        }
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                "[session]\nheartbeat_interval_ms = 0\n",
                "session.heartbeat_interval_ms",
            ),
            (
                "[session]\nsuspect_after_ms = 100\n",
                "session.suspect_after_ms",
            ),
            ("bind = \"nowhere\"\n", "bind"),
            ("[pingwave]\nradius = 0\n", "pingwave.radius"),
            ("[pingwave]\ninterval_ms = 1\n", "pingwave.interval_ms"),
            ("bogus = 1\n", "bogus"),
            (
                "[[peers]]\naddr = \"127.0.0.1:1\"\npublic_key = \"zz\"\n",
                "peers[0].public_key",
            ),
        ];
        assert_each_fails_at(&cases);
        let over = Overrides {
            peers: vec!["127.0.0.1:1".into()],
            ..Overrides::default()
        };
        assert_eq!(Config::load(&over, &[]).expect_err("peer").field, "--peer");
    }

    #[test]
    fn daemons_section_sets_who_may_place_daemons() {
        use crate::daemons::RemoteSpawns;
        let c = Config::load(&Overrides::default(), &[]).expect("ok");
        assert_eq!(c.remote_spawns, RemoteSpawns::AnyPeer);
        let dir = tempfile::tempdir().expect("tmp");
        let load = |text: &str| {
            let over = Overrides {
                config_file: Some(write(dir.path(), text)),
                ..Overrides::default()
            };
            Config::load(&over, &[])
        };
        assert_eq!(
            load("[daemons]\naccept_remote = false\n")
                .expect("ok")
                .remote_spawns,
            RemoteSpawns::Nobody
        );
        let only = load("[daemons]\naccept_from = [\"00000000000000ff\"]\n").expect("ok");
        assert_eq!(
            only.remote_spawns,
            RemoteSpawns::Only([NodeId(0xff)].into_iter().collect())
        );
        assert!(only.remote_spawns.allows(NodeId(0xff)) && !only.remote_spawns.allows(NodeId(1)));
        assert_each_fails_at(&[
            ("[daemons]\naccept_from = [\"zz\"]\n", "daemons.accept_from"),
            (
                "[daemons]\naccept_remote = false\naccept_from = []\n",
                "daemons.accept_from",
            ),
        ]);
        assert!(load("[daemons]\nunknown = 1\n").is_err());
    }

    #[test]
    fn capabilities_from_file_and_env() {
        let c = Config::load(&Overrides::default(), &[]).expect("ok");
        assert_eq!(c.capabilities, CapabilitiesConfig::default());

        let dir = tempfile::tempdir().expect("tmp");
        let path = write(
            dir.path(),
            "[capabilities]\ntags = [\"role:worker\"]\nmetadata = { region = \"eu\" }\n\
             cpu_cores = 8\nmemory_gb = 32\ngpu = { vendor = \"NVIDIA\", model = \"x\", vram_gb = 24 }\n\
             min_interval_secs = 2\nreannounce_secs = 20\nttl_secs = 60\n",
        );
        let over = Overrides {
            config_file: Some(path),
            ..Overrides::default()
        };
        let caps = Config::load(&over, &[("NETRUN_TAGS", "gpu-pool, zone:a")])
            .expect("ok")
            .capabilities;
        assert!(caps.set.has_tag("role:worker") && caps.set.has_tag("gpu-pool"));
        assert!(caps.set.has_tag("zone:a"));
        assert_eq!(
            caps.set.metadata.get("region").map(String::as_str),
            Some("eu")
        );
        assert_eq!(caps.set.hardware.memory_gb, 32);
        let gpu = caps.set.hardware.gpu.expect("gpu");
        assert_eq!(
            (gpu.vendor, gpu.vram_gb),
            (netrun_messages::GpuVendor::Nvidia, 24)
        );
        assert_eq!(caps.timing.reannounce_interval_secs, 20);

        assert_each_fails_at(&[
            (
                "[capabilities]\ngpu = { vendor = \"acme\" }\n",
                "capabilities.gpu.vendor",
            ),
            (
                "[capabilities]\nreannounce_secs = 300\nttl_secs = 300\n",
                "capabilities.reannounce_secs",
            ),
        ]);
    }

    #[test]
    fn discovery_defaults_and_layers() {
        let c = Config::load(&Overrides::default(), &[]).expect("ok");
        assert_eq!(c.discovery, DiscoveryConfig::default());
        assert!(c.discovery.peer_exchange.enabled && c.discovery.dht.enabled);
        assert!(!c.discovery.mdns.enabled && !c.discovery.mqtt.enabled);
        let manual = DiscoveryConfig::manual();
        assert!(!manual.peer_exchange.enabled && !manual.dht.enabled);

        let dir = tempfile::tempdir().expect("tmp");
        let key = "22".repeat(32);
        let path = write(
            dir.path(),
            &format!(
                "[discovery]\nadvertise = [\"192.0.2.1:9470\"]\nauto_connect_limit = 8\nreannounce_ms = 500\n\
                 [[discovery.seeds]]\naddr = \"127.0.0.1:2000\"\npublic_key = \"{key}\"\n\
                 [discovery.peer_exchange]\nenabled = true\ninterval_ms = 250\n\
                 [discovery.dht]\nenabled = true\nrecord_ttl_secs = 600\nrepublish_interval_secs = 60\n\
                 [discovery.mdns]\nenabled = true\nservice = \"_other._udp.local\"\n\
                 [discovery.mqtt]\nenabled = true\nbroker = \"mqtt://broker:1884\"\n"
            ),
        );
        let over = Overrides {
            config_file: Some(path),
            seeds: vec![format!("127.0.0.1:3000={key}")],
            ..Overrides::default()
        };
        let seed_env = format!("127.0.0.1:4000={key}");
        let env = [
            ("NETRUN_SEEDS", seed_env.as_str()),
            ("NETRUN_DHT", "off"),
            ("NETRUN_MQTT_BROKER", "mqtt://env-broker:8883"),
        ];
        let d = Config::load(&over, &env).expect("ok").discovery;
        let ports: Vec<u16> = d.seeds.iter().map(|s| s.addr.port()).collect();
        assert_eq!(ports, vec![2000, 4000, 3000], "file, env, flags");
        assert_eq!(d.advertise, vec!["192.0.2.1:9470".parse().expect("addr")]);
        assert_eq!(d.auto_connect_limit, 8);
        assert_eq!(d.reannounce, Duration::from_millis(500));
        assert_eq!(d.peer_exchange.interval, Duration::from_millis(250));
        assert!(!d.dht.enabled, "the environment overrides the file");
        assert_eq!(d.dht.record_ttl, Duration::from_secs(600));
        assert!(d.mdns.enabled);
        assert_eq!(d.mdns.service, "_other._udp.local");
        assert!(d.mqtt.enabled);
        assert_eq!(d.mqtt.broker, "mqtt://env-broker:8883");
    }

    #[test]
    fn discovery_errors_name_the_field() {
        let cases = [
            (
                "[[discovery.seeds]]\naddr = \"x\"\npublic_key = \"00\"\n",
                "discovery.seeds[0].addr",
            ),
            (
                "[discovery.peer_exchange]\ninterval_ms = 0\n",
                "discovery.peer_exchange.interval_ms",
            ),
            (
                "[discovery.dht]\nrecord_ttl_secs = 60\nrepublish_interval_secs = 120\n",
                "discovery.dht.republish_interval_secs",
            ),
            (
                "[discovery.mdns]\nservice = \"netrun.local\"\n",
                "discovery.mdns.service",
            ),
            (
                "[discovery.mqtt]\nbroker = \"http://x\"\n",
                "discovery.mqtt.broker",
            ),
            (
                "[discovery.mqtt]\nbroker = \"mqtts://x:8883\"\n",
                "discovery.mqtt.broker",
            ),
            ("[discovery]\nbogus = 1\n", "bogus"),
        ];
        assert_each_fails_at(&cases);
        let err = Config::load(&Overrides::default(), &[("NETRUN_PEER_EXCHANGE", "maybe")])
            .expect_err("bad toggle");
        assert_eq!(err.field, "NETRUN_PEER_EXCHANGE");
        let over = Overrides {
            seeds: vec!["127.0.0.1:1".into()],
            ..Overrides::default()
        };
        assert_eq!(Config::load(&over, &[]).expect_err("seed").field, "--seed");
    }
}
