//! What a spawn passes to a daemon ([`DaemonConfig`]) and how its host behaves
//! ([`HostConfig`]), with validation.

use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use thiserror::Error;

use super::DaemonError;

/// Largest [`DaemonConfig`]: a placed spawn carries it in one control envelope body
/// (64 KiB) next to the kind name and identity material.
pub const MAX_CONFIG_LEN: usize = 48 * 1024;
/// Most events a signed batch may hold (configuration bound; one input's outputs may make
/// a batch of up to [`MAX_OUTPUTS_PER_EVENT`] on their own).
pub const MAX_BATCH_EVENTS: u32 = 4096;
/// Most outputs one `process` call may return; more is a failure. Bounds the work and
/// memory one event can cause.
pub const MAX_OUTPUTS_PER_EVENT: usize = 1024;
/// Largest input log, in events.
pub const MAX_LOG_EVENTS: usize = 1 << 20;
/// Default batch size: one ed25519 signature (~20 µs) per 256 events is under 0.1 µs per
/// event, and 256 small events fit one 64 KiB envelope.
pub const DEFAULT_BATCH_EVENTS: u32 = 256;
/// Default batch byte budget: keeps an encoded batch of small events inside one 64 KiB
/// control envelope body.
pub const DEFAULT_BATCH_BYTES: usize = 60 * 1024;
/// Default longest wait of an output in an unsealed batch: a timer tick on most runtimes,
/// small next to a network hop.
pub const DEFAULT_BATCH_DELAY: Duration = Duration::from_millis(2);
/// Default snapshot cadence in accepted events.
pub const DEFAULT_SNAPSHOT_EVERY: u32 = 1024;
/// Default input log capacity in events: four snapshot periods, so the log fills only if
/// snapshots keep failing.
pub const DEFAULT_LOG_EVENTS: usize = 4 * DEFAULT_SNAPSHOT_EVERY as usize;
/// Default input log capacity in payload bytes.
pub const DEFAULT_LOG_BYTES: usize = 16 * 1024 * 1024;
/// Longest allowed batch delay: a batch is a latency trade, not a buffer.
const MAX_BATCH_DELAY: Duration = Duration::from_secs(1);
/// Largest batch byte budget.
const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// The user's configuration for one daemon, passed to its factory at spawn: opaque bytes,
/// usually a MessagePack-encoded value ([`from_value`](Self::from_value) /
/// [`decode`](Self::decode)). At most [`MAX_CONFIG_LEN`] bytes.
#[derive(Debug, Clone, PartialEq, Eq, Default, Hash)]
pub struct DaemonConfig {
    bytes: Bytes,
}

/// How the host signs the daemon's causal chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainSigning {
    /// Every output is a [`SignedEvent`](netrun_messages::SignedEvent): verifiable alone,
    /// published at once, one ed25519 signature (~20 µs) each.
    PerEvent,
    /// Outputs are collected into a batch sealed by one signed
    /// [`ChainHead`](netrun_messages::ChainHead) over its last event. A batch is sealed
    /// after the input that brings it to `max_events` or `max_bytes`, when its oldest output
    /// has waited `max_delay`, and before a snapshot or on [`flush`](super::DaemonHost::flush).
    Batch {
        /// Events that seal a batch.
        max_events: u32,
        /// Encoded bytes that seal a batch.
        max_bytes: usize,
        /// Longest time an output waits for its batch to be sealed.
        max_delay: Duration,
    },
}

/// What the host does when `process` returns an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ErrorPolicy {
    /// Treat it like a panic: the host fails and the supervisor restarts the daemon from
    /// its snapshot (the failed event is not replayed).
    #[default]
    Restart,
    /// Record the failure and keep going; the event had no effect.
    Continue,
}

/// How a [`DaemonHost`](super::DaemonHost) runs its daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostConfig {
    /// Per-event or per-batch chain signing.
    pub signing: ChainSigning,
    /// Take a snapshot every this many accepted events; 0 = only on request or when the
    /// input log is full.
    pub snapshot_every: u32,
    /// Input log capacity in events. A full log forces a snapshot before the next event is
    /// accepted (see [`DaemonHost::deliver`](super::DaemonHost::deliver)).
    pub log_events: usize,
    /// Input log capacity in payload bytes (same rule as `log_events`).
    pub log_bytes: usize,
    /// What an error from `process` means.
    pub error_policy: ErrorPolicy,
}

/// A configuration is out of range or could not be encoded.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The daemon configuration is larger than [`MAX_CONFIG_LEN`].
    #[error("daemon config of {len} bytes exceeds {max}")]
    TooLong {
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The value could not be encoded as MessagePack.
    #[error("daemon config does not encode: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
    /// A host configuration field is out of range.
    #[error("host config: {0}")]
    Invalid(&'static str),
}

impl DaemonConfig {
    /// No configuration.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Wraps raw bytes.
    pub fn from_bytes(bytes: impl Into<Bytes>) -> Result<Self, ConfigError> {
        let bytes = bytes.into();
        if bytes.len() > MAX_CONFIG_LEN {
            return Err(ConfigError::TooLong {
                len: bytes.len(),
                max: MAX_CONFIG_LEN,
            });
        }
        Ok(Self { bytes })
    }

    /// Encodes `value` as MessagePack (field names kept, so the type can grow).
    pub fn from_value<T: Serialize + ?Sized>(value: &T) -> Result<Self, ConfigError> {
        Self::from_bytes(rmp_serde::to_vec_named(value)?)
    }

    /// Decodes the configuration as a MessagePack value; a factory's usual first line.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, DaemonError> {
        rmp_serde::from_slice(&self.bytes).map_err(|e| DaemonError::InvalidConfig(e.to_string()))
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// Whether there is no configuration.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

impl Default for ChainSigning {
    fn default() -> Self {
        Self::Batch {
            max_events: DEFAULT_BATCH_EVENTS,
            max_bytes: DEFAULT_BATCH_BYTES,
            max_delay: DEFAULT_BATCH_DELAY,
        }
    }
}

impl Default for HostConfig {
    fn default() -> Self {
        Self {
            signing: ChainSigning::default(),
            snapshot_every: DEFAULT_SNAPSHOT_EVERY,
            log_events: DEFAULT_LOG_EVENTS,
            log_bytes: DEFAULT_LOG_BYTES,
            error_policy: ErrorPolicy::default(),
        }
    }
}

impl HostConfig {
    /// Checks every field against its bounds.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.log_events == 0 || self.log_events > MAX_LOG_EVENTS {
            return Err(ConfigError::Invalid(
                "log_events must be 1..=MAX_LOG_EVENTS",
            ));
        }
        if self.log_bytes == 0 {
            return Err(ConfigError::Invalid("log_bytes must be positive"));
        }
        if let ChainSigning::Batch {
            max_events,
            max_bytes,
            max_delay,
        } = self.signing
        {
            if max_events == 0 || max_events > MAX_BATCH_EVENTS {
                return Err(ConfigError::Invalid(
                    "batch max_events must be 1..=MAX_BATCH_EVENTS",
                ));
            }
            if max_bytes == 0 || max_bytes > MAX_BATCH_BYTES {
                return Err(ConfigError::Invalid("batch max_bytes must be 1..=4 MiB"));
            }
            if max_delay > MAX_BATCH_DELAY {
                return Err(ConfigError::Invalid("batch max_delay must be at most 1 s"));
            }
        }
        Ok(())
    }

    /// A configuration that signs every event (see [`ChainSigning::PerEvent`]).
    #[must_use]
    pub fn per_event(mut self) -> Self {
        self.signing = ChainSigning::PerEvent;
        self
    }
}
