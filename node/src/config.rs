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
//! ```
//!
//! Invalid configuration is reported as one [`ConfigError`] naming the field, before
//! anything starts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use netrun_messages::EntityId;
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

        let mut peers = Vec::new();
        for (i, p) in file.peers.iter().enumerate() {
            peers.push(PeerConfig {
                addr: parse_addr(&format!("peers[{i}].addr"), &p.addr)?,
                public_key: parse_key(&format!("peers[{i}].public_key"), &p.public_key)?,
            });
        }
        if let Some(list) = env.var("NETRUN_PEERS") {
            for item in list.split(',').filter(|s| !s.trim().is_empty()) {
                peers.push(parse_peer("NETRUN_PEERS", item)?);
            }
        }
        for item in &overrides.peers {
            peers.push(parse_peer("--peer", item)?);
        }

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

        Ok(Self {
            data_dir,
            bind,
            bind_is_default,
            psk,
            peers,
            session,
            pingwave,
            telemetry,
        })
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
        let env = [("NETRUN_DATA_DIR", "/env"), ("NETRUN_PSK", psk.as_str())];
        let c = Config::load(&over, &env).expect("ok");
        assert_eq!(c.bind.port(), 3000);
        assert!(!c.bind_is_default);
        assert_eq!(c.data_dir, PathBuf::from("/env"));
        assert_eq!(c.psk, Some([0xcd; 32]));
        assert_eq!(c.peers.len(), 2);
        assert_eq!(c.session.heartbeat_interval, Duration::from_millis(500));
        assert_eq!(c.pingwave.interval, Duration::from_millis(250));
        assert_eq!(c.pingwave.radius, 6);
    }

    #[test]
    fn errors_name_the_field() {
        let dir = tempfile::tempdir().expect("tmp");
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
        for (text, field) in cases {
            let over = Overrides {
                config_file: Some(write(dir.path(), text)),
                ..Overrides::default()
            };
            let err = Config::load(&over, &[]).expect_err(text);
            assert_eq!(err.field, field, "{text}: {err}");
        }
        let over = Overrides {
            peers: vec!["127.0.0.1:1".into()],
            ..Overrides::default()
        };
        assert_eq!(Config::load(&over, &[]).expect_err("peer").field, "--peer");
    }
}
