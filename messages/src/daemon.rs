//! Daemon control messages: remote spawns, remote stops and the capability query.
//!
//! A node that places a daemon on a peer asks it to host the daemon ([`SpawnRequest`] →
//! [`SpawnReply`]), with the daemon's [`DaemonWiring`] (the nRPC services it serves and
//! the channels it reads) so it is reachable wherever it lands; the placing node may later
//! stop it ([`StopRequest`] → [`StopReply`]). A peer can also be asked what it offers
//! ([`CapabilityQuery`] → [`CapabilityReply`]). Every request carries a `request_id` the
//! reply echoes; the requester accepts a reply only from the node it asked.
//!
//! The messages are the rmp-serde body of a
//! [`Subprotocol::DAEMON`](crate::Subprotocol::DAEMON) envelope, as the externally tagged
//! enum [`DaemonControlMessage`] (structs are msgpack arrays in field order):
//!
//! ```text
//! DaemonControlMessage = { "Spawn":      [request_id u64, kind str, seed bin 32, config bin, host HostSettings, wiring Wiring] }
//!                      | { "SpawnReply": [request_id u64, result SpawnResult] }
//!                      | { "Stop":       [request_id u64, origin u64] }
//!                      | { "StopReply":  [request_id u64, result StopResult] }
//!                      | { "Query":      [request_id u64] }
//!                      | { "QueryReply": [request_id u64, capabilities bin (CapabilitySet), load_permille u16] }
//! HostSettings         = [signing Signing, snapshot_every u32, log_events u32, log_bytes u64, continue_on_error bool]
//! Signing              = "PerEvent" | { "Batch": [max_events u32, max_bytes u32, max_delay_micros u32] }
//! SpawnResult          = { "Spawned": [origin u64, entity bin 32] } | { "Refused": SpawnRefusal }
//! SpawnRefusal         = "FactoryNotFound" | "AlreadyRunning" | "Full" | "ShuttingDown"
//!                      | "NotPermitted" | { "Invalid": str ≤ 256 } | { "Failed": str ≤ 256 }
//! Wiring               = [services [[name str, reply Reply]] ≤ 16, inputs [[publisher u64, channel str]] ≤ 16]
//! Reply                = "Last" | "All"
//! StopResult           = "Stopped" | "NotFound" | "NotPermitted"
//! ```
//!
//! The identity seed is the daemon's ed25519 private key: it travels only inside a sealed
//! session packet (the envelope is the plaintext of an encrypted `Control` packet), is
//! held in a [`Zeroizing`] buffer and is never printed by `Debug`.
//!
//! Decoding ([`DaemonControlMessage::decode`]) is total and typed: the body is bounded by
//! the envelope limit, nesting is capped, nothing may follow the message, the kind, config
//! and reason lengths are bounded, the seed and entity are exactly 32 bytes, service and
//! channel names must be valid and at most [`MAX_WIRING`] of each, the capability set must
//! decode canonically and the load is at most 1000.

use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use zeroize::Zeroizing;

use crate::bounded::BoundedSeq;
use crate::capability::CapabilitySet;
use crate::channel::ChannelName;
use crate::envelope::{EncodeError, Envelope, Subprotocol, TraceContext, decode_body};
use crate::error::DecodeError;
use crate::ids::{EntityId, NodeId, OriginHash};
use crate::rpc::ServiceName;

/// Longest daemon kind name in bytes (the same bound the daemon registry applies).
pub const MAX_KIND_LEN: usize = 128;
/// Largest daemon configuration a spawn request carries: leaves room in one 64 KiB envelope
/// body for the kind, the seed and the host settings.
pub const MAX_CONFIG_LEN: usize = 48 * 1024;
/// Longest refusal reason in bytes; a reason is for a log line, not a payload.
pub const MAX_REASON_LEN: usize = 256;
/// The largest load a node reports: 1000 per mille, fully loaded.
pub const MAX_LOAD_PERMILLE: u16 = 1000;
/// Most services, and most channel inputs, one daemon's wiring names.
pub const MAX_WIRING: usize = 16;

/// One daemon control message (the body of a `DAEMON` envelope).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DaemonControlMessage {
    /// Host a daemon.
    Spawn(SpawnRequest),
    /// The answer to a [`SpawnRequest`].
    SpawnReply(SpawnReply),
    /// Stop a daemon this node placed here.
    Stop(StopRequest),
    /// The answer to a [`StopRequest`].
    StopReply(StopReply),
    /// What do you offer?
    Query(CapabilityQuery),
    /// The answer to a [`CapabilityQuery`].
    QueryReply(CapabilityReply),
}

/// A request to host a daemon of `kind` under the identity whose seed is given.
#[derive(Clone, PartialEq, Eq)]
pub struct SpawnRequest {
    /// Correlation id, echoed in the [`SpawnReply`].
    pub request_id: u64,
    /// The daemon kind; the receiver must have it registered.
    pub kind: String,
    /// The daemon's ed25519 seed (its identity; see the module docs).
    pub identity_seed: Zeroizing<[u8; 32]>,
    /// The daemon's configuration bytes (at most [`MAX_CONFIG_LEN`]).
    pub config: Bytes,
    /// How the receiving host runs it.
    pub host: HostSettings,
    /// What the daemon serves and reads once it runs.
    pub wiring: DaemonWiring,
}

/// How a daemon is connected to the mesh once it runs, wherever it was placed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DaemonWiring {
    /// nRPC services the hosting node serves with the daemon (at most [`MAX_WIRING`]).
    pub services: Vec<ServedService>,
    /// Channels whose events become the daemon's inputs (at most [`MAX_WIRING`]).
    pub inputs: Vec<ChannelInput>,
}

/// One nRPC service a daemon answers: each request body is one input, and the response
/// is made of the outputs the daemon produced for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedService {
    /// The service name.
    pub name: ServiceName,
    /// Which outputs make the response.
    pub reply: DaemonReply,
}

/// How a served daemon's outputs for one request become the response body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum DaemonReply {
    /// The payload of the last output (empty if the daemon produced none): for daemons
    /// that answer a request with one output, so typed callers decode it directly.
    #[default]
    Last,
    /// Every output payload, in chain order, as one msgpack array of binaries.
    All,
}

/// A channel a daemon reads: every event's payload becomes one input, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelInput {
    /// The node publishing the channel.
    pub publisher: NodeId,
    /// The channel.
    pub channel: ChannelName,
}

/// A request to stop a daemon the requester placed on the receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopRequest {
    /// Correlation id, echoed in the [`StopReply`].
    pub request_id: u64,
    /// The daemon.
    pub origin: OriginHash,
}

/// The answer to a [`StopRequest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopReply {
    /// The request's id.
    pub request_id: u64,
    /// What happened.
    pub result: StopResult,
}

/// Whether a remote stop happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StopResult {
    /// The daemon was stopped (a final snapshot was taken if it could be).
    Stopped,
    /// No such daemon runs on the node.
    NotFound,
    /// The daemon was not placed there by the requester, which may not stop it.
    NotPermitted,
}

impl fmt::Display for StopResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Stopped => "stopped",
            Self::NotFound => "no such daemon",
            Self::NotPermitted => "not placed by the requester",
        })
    }
}

/// How a host runs a daemon (the wire form of the runtime's host configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostSettings {
    /// Chain signing.
    pub signing: SigningSettings,
    /// Snapshot every this many accepted events (0 = on request or when the log fills).
    pub snapshot_every: u32,
    /// Input log capacity in events.
    pub log_events: u32,
    /// Input log capacity in bytes.
    pub log_bytes: u64,
    /// Whether an error from `process` is recorded and skipped instead of restarting.
    pub continue_on_error: bool,
}

/// Chain signing on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SigningSettings {
    /// One signature per event.
    PerEvent,
    /// One signed head per batch.
    Batch {
        /// Events that seal a batch.
        max_events: u32,
        /// Bytes that seal a batch.
        max_bytes: u32,
        /// Longest wait of an output in an open batch, in microseconds.
        max_delay_micros: u32,
    },
}

/// The answer to a [`SpawnRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpawnReply {
    /// The request's id.
    pub request_id: u64,
    /// What happened.
    pub result: SpawnResult,
}

/// Whether a remote spawn happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpawnResult {
    /// The daemon runs on the replying node.
    Spawned {
        /// Its origin hash.
        origin: OriginHash,
        /// Its public key.
        entity: EntityId,
    },
    /// The node did not spawn it.
    Refused(SpawnRefusal),
}

/// Why a node refused a spawn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SpawnRefusal {
    /// The kind is not registered on the node.
    FactoryNotFound,
    /// A daemon with this identity already runs on the node.
    AlreadyRunning,
    /// The node hosts as many daemons as it may.
    Full,
    /// The node is shutting down.
    ShuttingDown,
    /// The node does not host daemons for the requester (its remote-spawn policy).
    NotPermitted,
    /// The request is not acceptable (bad kind name, config or host settings).
    Invalid(String),
    /// The factory or the host failed to build the daemon.
    Failed(String),
}

/// A request for the receiver's capability set and load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapabilityQuery {
    /// Correlation id, echoed in the [`CapabilityReply`].
    pub request_id: u64,
}

/// What a node offers to daemons, and how loaded it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapabilityReply {
    /// The query's id.
    pub request_id: u64,
    /// The node's capability set.
    pub capabilities: CapabilitySet,
    /// Daemon slots in use, per mille (0 idle, 1000 full).
    pub load_permille: u16,
}

/// Why a daemon control body was refused.
#[derive(Debug, Error)]
pub enum DaemonControlError {
    /// The bytes are not a well-formed message.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The envelope is not a `DAEMON` envelope.
    #[error("not a daemon control envelope: subprotocol {0:#06x}")]
    WrongSubprotocol(u16),
    /// A field breaks its bound, so the message cannot be sent.
    #[error("daemon control {0} out of bounds")]
    OutOfBounds(&'static str),
    /// Serializing or enveloping failed.
    #[error(transparent)]
    Encode(#[from] EncodeError),
}

impl DaemonControlMessage {
    /// The rmp-serde body. Fails if a field breaks its bound.
    pub fn encode(&self) -> Result<Vec<u8>, DaemonControlError> {
        let raw = RawMessage::try_from(self)?;
        Ok(rmp_serde::to_vec(&raw).map_err(EncodeError::from)?)
    }

    /// A complete `DAEMON` envelope carrying this message.
    pub fn to_envelope(&self, trace: Option<TraceContext>) -> Result<Vec<u8>, DaemonControlError> {
        let body = self.encode()?;
        Ok(Envelope::new(Subprotocol::DAEMON, trace, &body)?.to_vec())
    }

    /// Decodes an rmp-serde body (see the [module docs](self) for every check).
    pub fn decode(body: &[u8]) -> Result<Self, DaemonControlError> {
        let raw: RawMessage = decode_body(body, "daemon control body")?;
        Ok(Self::try_from(raw)?)
    }

    /// Decodes the body of an envelope, which must be a `DAEMON` envelope.
    pub fn from_envelope(envelope: &Envelope<'_>) -> Result<Self, DaemonControlError> {
        if envelope.subprotocol != Subprotocol::DAEMON {
            return Err(DaemonControlError::WrongSubprotocol(envelope.subprotocol.0));
        }
        Self::decode(envelope.body)
    }

    /// The correlation id.
    pub fn request_id(&self) -> u64 {
        match self {
            Self::Spawn(m) => m.request_id,
            Self::SpawnReply(m) => m.request_id,
            Self::Stop(m) => m.request_id,
            Self::StopReply(m) => m.request_id,
            Self::Query(m) => m.request_id,
            Self::QueryReply(m) => m.request_id,
        }
    }
}

impl fmt::Debug for SpawnRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpawnRequest")
            .field("request_id", &self.request_id)
            .field("kind", &self.kind)
            .field("identity_seed", &"<redacted>")
            .field("config_len", &self.config.len())
            .field("host", &self.host)
            .field("wiring", &self.wiring)
            .finish()
    }
}

/// The wire shape: like the public types, with unvalidated lengths.
#[derive(Serialize, Deserialize)]
enum RawMessage {
    Spawn(RawSpawn),
    SpawnReply(RawSpawnReply),
    Stop(u64, u64),
    StopReply(u64, StopResult),
    Query(RawQuery),
    QueryReply(RawQueryReply),
}

#[derive(Serialize, Deserialize)]
struct RawSpawn {
    request_id: u64,
    kind: String,
    seed: Bytes,
    config: Bytes,
    host: HostSettings,
    wiring: RawWiring,
}

/// Bounded while decoded: at most [`MAX_WIRING`] entries of each are reserved or kept.
#[derive(Serialize, Deserialize)]
struct RawWiring {
    services: BoundedSeq<(String, DaemonReply), MAX_WIRING>,
    inputs: BoundedSeq<(u64, String), MAX_WIRING>,
}

#[derive(Serialize, Deserialize)]
struct RawSpawnReply {
    request_id: u64,
    result: RawResult,
}

#[derive(Serialize, Deserialize)]
enum RawResult {
    Spawned(u64, Bytes),
    Refused(SpawnRefusal),
}

#[derive(Serialize, Deserialize)]
struct RawQuery {
    request_id: u64,
}

#[derive(Serialize, Deserialize)]
struct RawQueryReply {
    request_id: u64,
    capabilities: Bytes,
    load_permille: u16,
}

impl TryFrom<&DaemonControlMessage> for RawMessage {
    type Error = DaemonControlError;

    fn try_from(message: &DaemonControlMessage) -> Result<Self, DaemonControlError> {
        // Encoding checks the same bounds as decoding: anything sent can be received.
        let bounded = |ok: bool, what| {
            if ok {
                Ok(())
            } else {
                Err(DaemonControlError::OutOfBounds(what))
            }
        };
        Ok(match message {
            DaemonControlMessage::Spawn(m) => {
                bounded(!m.kind.is_empty() && m.kind.len() <= MAX_KIND_LEN, "kind")?;
                bounded(m.config.len() <= MAX_CONFIG_LEN, "config")?;
                bounded(m.wiring.services.len() <= MAX_WIRING, "services")?;
                bounded(m.wiring.inputs.len() <= MAX_WIRING, "inputs")?;
                Self::Spawn(RawSpawn {
                    request_id: m.request_id,
                    kind: m.kind.clone(),
                    seed: Bytes::copy_from_slice(&m.identity_seed[..]),
                    config: m.config.clone(),
                    host: m.host,
                    wiring: RawWiring {
                        services: BoundedSeq::new(
                            m.wiring
                                .services
                                .iter()
                                .map(|s| (s.name.as_str().to_owned(), s.reply))
                                .collect(),
                        ),
                        inputs: BoundedSeq::new(
                            m.wiring
                                .inputs
                                .iter()
                                .map(|i| (i.publisher.0, i.channel.as_str().to_owned()))
                                .collect(),
                        ),
                    },
                })
            }
            DaemonControlMessage::Stop(m) => Self::Stop(m.request_id, m.origin.get()),
            DaemonControlMessage::StopReply(m) => Self::StopReply(m.request_id, m.result),
            DaemonControlMessage::SpawnReply(m) => {
                if let SpawnResult::Refused(refusal) = &m.result {
                    bounded(
                        refusal.reason().is_none_or(|r| r.len() <= MAX_REASON_LEN),
                        "reason",
                    )?;
                }
                Self::SpawnReply(RawSpawnReply {
                    request_id: m.request_id,
                    result: match &m.result {
                        SpawnResult::Spawned { origin, entity } => {
                            RawResult::Spawned(origin.get(), Bytes::copy_from_slice(&entity.0))
                        }
                        SpawnResult::Refused(refusal) => RawResult::Refused(refusal.clone()),
                    },
                })
            }
            DaemonControlMessage::Query(m) => Self::Query(RawQuery {
                request_id: m.request_id,
            }),
            DaemonControlMessage::QueryReply(m) => {
                bounded(m.load_permille <= MAX_LOAD_PERMILLE, "load")?;
                let capabilities = m
                    .capabilities
                    .to_bytes()
                    .map_err(|_| DaemonControlError::OutOfBounds("capability set"))?;
                Self::QueryReply(RawQueryReply {
                    request_id: m.request_id,
                    capabilities: Bytes::from(capabilities),
                    load_permille: m.load_permille,
                })
            }
        })
    }
}

impl TryFrom<RawMessage> for DaemonControlMessage {
    type Error = DecodeError;

    fn try_from(raw: RawMessage) -> Result<Self, DecodeError> {
        Ok(match raw {
            RawMessage::Spawn(m) => {
                if m.kind.is_empty() || m.kind.len() > MAX_KIND_LEN {
                    return Err(DecodeError::TooLong {
                        what: "daemon kind",
                        len: m.kind.len(),
                        max: MAX_KIND_LEN,
                    });
                }
                if m.config.len() > MAX_CONFIG_LEN {
                    return Err(DecodeError::TooLong {
                        what: "daemon config",
                        len: m.config.len(),
                        max: MAX_CONFIG_LEN,
                    });
                }
                let seed: [u8; 32] = m.seed[..]
                    .try_into()
                    .map_err(|_| DecodeError::Invalid("identity seed length"))?;
                Self::Spawn(SpawnRequest {
                    request_id: m.request_id,
                    kind: m.kind,
                    identity_seed: Zeroizing::new(seed),
                    config: m.config,
                    host: m.host,
                    wiring: DaemonWiring::try_from(m.wiring)?,
                })
            }
            RawMessage::Stop(request_id, origin) => Self::Stop(StopRequest {
                request_id,
                origin: OriginHash(origin),
            }),
            RawMessage::StopReply(request_id, result) => {
                Self::StopReply(StopReply { request_id, result })
            }
            RawMessage::SpawnReply(m) => {
                let result = match m.result {
                    RawResult::Spawned(origin, entity) => {
                        let entity: [u8; 32] = entity[..]
                            .try_into()
                            .map_err(|_| DecodeError::Invalid("entity length"))?;
                        SpawnResult::Spawned {
                            origin: OriginHash(origin),
                            entity: EntityId(entity),
                        }
                    }
                    RawResult::Refused(refusal) => {
                        if let Some(reason) = refusal.reason() {
                            if reason.len() > MAX_REASON_LEN {
                                return Err(DecodeError::TooLong {
                                    what: "refusal reason",
                                    len: reason.len(),
                                    max: MAX_REASON_LEN,
                                });
                            }
                        }
                        SpawnResult::Refused(refusal)
                    }
                };
                Self::SpawnReply(SpawnReply {
                    request_id: m.request_id,
                    result,
                })
            }
            RawMessage::Query(m) => Self::Query(CapabilityQuery {
                request_id: m.request_id,
            }),
            RawMessage::QueryReply(m) => {
                if m.load_permille > MAX_LOAD_PERMILLE {
                    return Err(DecodeError::Invalid("load above 1000 per mille"));
                }
                Self::QueryReply(CapabilityReply {
                    request_id: m.request_id,
                    capabilities: CapabilitySet::from_bytes(&m.capabilities)?,
                    load_permille: m.load_permille,
                })
            }
        })
    }
}

impl TryFrom<RawWiring> for DaemonWiring {
    type Error = DecodeError;

    fn try_from(raw: RawWiring) -> Result<Self, DecodeError> {
        let too_long = |what| {
            move |len| DecodeError::TooLong {
                what,
                len,
                max: MAX_WIRING,
            }
        };
        let services = raw
            .services
            .into_items()
            .map_err(too_long("daemon services"))?;
        let inputs = raw.inputs.into_items().map_err(too_long("daemon inputs"))?;
        let services = services
            .into_iter()
            .map(|(name, reply)| {
                let name =
                    ServiceName::new(&name).map_err(|_| DecodeError::Invalid("service name"))?;
                Ok(ServedService { name, reply })
            })
            .collect::<Result<_, DecodeError>>()?;
        let inputs = inputs
            .into_iter()
            .map(|(publisher, channel)| {
                let channel =
                    ChannelName::new(&channel).map_err(|_| DecodeError::Invalid("channel name"))?;
                Ok(ChannelInput {
                    publisher: NodeId(publisher),
                    channel,
                })
            })
            .collect::<Result<_, DecodeError>>()?;
        Ok(Self { services, inputs })
    }
}

impl SpawnRefusal {
    /// The free-text reason, for the variants that carry one.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Self::Invalid(reason) | Self::Failed(reason) => Some(reason),
            _ => None,
        }
    }

    /// A refusal whose reason is cut to [`MAX_REASON_LEN`] bytes (at a char boundary).
    pub fn failed(reason: impl fmt::Display) -> Self {
        Self::Failed(truncate(reason.to_string()))
    }

    /// Like [`failed`](Self::failed), for an unacceptable request.
    pub fn invalid(reason: impl fmt::Display) -> Self {
        Self::Invalid(truncate(reason.to_string()))
    }
}

impl fmt::Display for SpawnRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::FactoryNotFound => f.write_str("daemon kind not registered"),
            Self::AlreadyRunning => f.write_str("daemon already running"),
            Self::Full => f.write_str("node hosts its maximum of daemons"),
            Self::ShuttingDown => f.write_str("node is shutting down"),
            Self::NotPermitted => f.write_str("node does not host daemons for this peer"),
            Self::Invalid(reason) => write!(f, "invalid request: {reason}"),
            Self::Failed(reason) => write!(f, "spawn failed: {reason}"),
        }
    }
}

fn truncate(mut text: String) -> String {
    if text.len() > MAX_REASON_LEN {
        let mut end = MAX_REASON_LEN;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capability::{GpuInfo, GpuVendor, Hardware};
    use crate::envelope::MAX_BODY_LEN;
    use proptest::prelude::*;

    fn host() -> impl Strategy<Value = HostSettings> {
        (
            prop_oneof![
                Just(SigningSettings::PerEvent),
                (any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|(e, b, d)| {
                    SigningSettings::Batch {
                        max_events: e,
                        max_bytes: b,
                        max_delay_micros: d,
                    }
                }),
            ],
            any::<u32>(),
            any::<u32>(),
            any::<u64>(),
            any::<bool>(),
        )
            .prop_map(
                |(signing, snapshot_every, log_events, log_bytes, c)| HostSettings {
                    signing,
                    snapshot_every,
                    log_events,
                    log_bytes,
                    continue_on_error: c,
                },
            )
    }

    fn refusal() -> impl Strategy<Value = SpawnRefusal> {
        prop_oneof![
            Just(SpawnRefusal::FactoryNotFound),
            Just(SpawnRefusal::AlreadyRunning),
            Just(SpawnRefusal::Full),
            Just(SpawnRefusal::ShuttingDown),
            Just(SpawnRefusal::NotPermitted),
            "[a-z ]{0,40}".prop_map(SpawnRefusal::Invalid),
            "\\PC{0,60}".prop_map(SpawnRefusal::failed),
        ]
    }

    fn caps() -> impl Strategy<Value = CapabilitySet> {
        (
            proptest::collection::btree_set("[a-z:]{1,12}", 0..5),
            any::<bool>(),
            0u32..512,
        )
            .prop_map(|(tags, gpu, mem)| {
                let mut hw = Hardware::new(4, 8).with_memory_gb(mem);
                if gpu {
                    hw = hw.with_gpu(GpuInfo::new(GpuVendor::Nvidia, "a100", 80));
                }
                let mut set = CapabilitySet::new().with_hardware(hw);
                set.tags = tags;
                set
            })
    }

    fn wiring() -> impl Strategy<Value = DaemonWiring> {
        let service =
            ("[a-z][a-z0-9]{0,8}(\\.[a-z0-9]{1,8}){0,2}", any::<bool>()).prop_map(|(name, all)| {
                ServedService {
                    name: ServiceName::new(&name).expect("valid service name"),
                    reply: if all {
                        DaemonReply::All
                    } else {
                        DaemonReply::Last
                    },
                }
            });
        let input = (any::<u64>(), "[a-z][a-z0-9]{0,8}(/[a-z0-9]{1,8}){0,2}").prop_map(
            |(node, channel)| ChannelInput {
                publisher: NodeId(node),
                channel: ChannelName::new(&channel).expect("valid channel name"),
            },
        );
        (
            proptest::collection::vec(service, 0..4),
            proptest::collection::vec(input, 0..4),
        )
            .prop_map(|(services, inputs)| DaemonWiring { services, inputs })
    }

    fn stop_result() -> impl Strategy<Value = StopResult> {
        prop_oneof![
            Just(StopResult::Stopped),
            Just(StopResult::NotFound),
            Just(StopResult::NotPermitted),
        ]
    }

    fn message() -> impl Strategy<Value = DaemonControlMessage> {
        prop_oneof![
            (
                any::<u64>(),
                "[a-z.-]{1,40}",
                any::<[u8; 32]>(),
                proptest::collection::vec(any::<u8>(), 0..200),
                host(),
                wiring(),
            )
                .prop_map(|(request_id, kind, seed, config, host, wiring)| {
                    DaemonControlMessage::Spawn(SpawnRequest {
                        request_id,
                        kind,
                        identity_seed: Zeroizing::new(seed),
                        config: Bytes::from(config),
                        host,
                        wiring,
                    })
                }),
            (any::<u64>(), any::<u64>()).prop_map(|(request_id, origin)| {
                DaemonControlMessage::Stop(StopRequest {
                    request_id,
                    origin: OriginHash(origin),
                })
            }),
            (any::<u64>(), stop_result()).prop_map(|(request_id, result)| {
                DaemonControlMessage::StopReply(StopReply { request_id, result })
            }),
            (any::<u64>(), any::<u64>(), any::<[u8; 32]>()).prop_map(|(request_id, o, e)| {
                DaemonControlMessage::SpawnReply(SpawnReply {
                    request_id,
                    result: SpawnResult::Spawned {
                        origin: OriginHash(o),
                        entity: EntityId(e),
                    },
                })
            }),
            (any::<u64>(), refusal()).prop_map(|(request_id, r)| {
                DaemonControlMessage::SpawnReply(SpawnReply {
                    request_id,
                    result: SpawnResult::Refused(r),
                })
            }),
            any::<u64>()
                .prop_map(|request_id| DaemonControlMessage::Query(CapabilityQuery { request_id })),
            (any::<u64>(), caps(), 0u16..=MAX_LOAD_PERMILLE).prop_map(|(request_id, c, l)| {
                DaemonControlMessage::QueryReply(CapabilityReply {
                    request_id,
                    capabilities: c,
                    load_permille: l,
                })
            }),
        ]
    }

    proptest! {
        #[test]
        fn round_trip(msg in message(), traced: bool) {
            let body = msg.encode().expect("encodes");
            prop_assert_eq!(&DaemonControlMessage::decode(&body).expect("decodes"), &msg);
            let trace = traced.then_some(TraceContext { trace_id: [3; 16], span_id: [4; 8], flags: 1 });
            let bytes = msg.to_envelope(trace).expect("enveloped");
            let env = Envelope::decode(&bytes).expect("envelope decodes");
            prop_assert_eq!(env.trace, trace);
            prop_assert_eq!(DaemonControlMessage::from_envelope(&env).expect("decodes"), msg);
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            if let Ok(msg) = DaemonControlMessage::decode(&bytes) {
                let again = msg.encode().expect("re-encodes");
                prop_assert_eq!(DaemonControlMessage::decode(&again).expect("decodes"), msg);
            }
        }

        #[test]
        fn mutated_bodies_never_panic(msg in message(), at: usize, byte: u8) {
            let mut body = msg.encode().expect("encodes");
            let at = at % body.len();
            body[at] = byte;
            let _ = DaemonControlMessage::decode(&body);
        }
    }

    /// Host settings every bound accepts.
    const MINIMAL_HOST: HostSettings = HostSettings {
        signing: SigningSettings::PerEvent,
        snapshot_every: 0,
        log_events: 1,
        log_bytes: 1,
        continue_on_error: false,
    };

    fn raw(m: &RawMessage) -> Vec<u8> {
        rmp_serde::to_vec(m).expect("raw encodes")
    }

    #[test]
    fn bounds_are_enforced_on_decode() {
        let spawn = |kind: &str, seed: &[u8], config: usize| {
            raw(&RawMessage::Spawn(RawSpawn {
                request_id: 1,
                kind: kind.into(),
                seed: Bytes::copy_from_slice(seed),
                config: Bytes::from(vec![0; config]),
                host: MINIMAL_HOST,
                wiring: RawWiring {
                    services: BoundedSeq::new(Vec::new()),
                    inputs: BoundedSeq::new(Vec::new()),
                },
            }))
        };
        let wired = |services: Vec<(String, DaemonReply)>, inputs: Vec<(u64, String)>| {
            raw(&RawMessage::Spawn(RawSpawn {
                request_id: 1,
                kind: "k".into(),
                seed: Bytes::copy_from_slice(&[1; 32]),
                config: Bytes::new(),
                host: MINIMAL_HOST,
                wiring: RawWiring {
                    services: BoundedSeq::new(services),
                    inputs: BoundedSeq::new(inputs),
                },
            }))
        };
        let service = |name: &str| (name.to_owned(), DaemonReply::Last);
        let input = |name: &str| (7, name.to_owned());
        assert!(
            DaemonControlMessage::decode(&wired(vec![service("a.b")], vec![input("c/d")])).is_ok()
        );
        assert!(DaemonControlMessage::decode(&wired(vec![service("")], Vec::new())).is_err());
        assert!(DaemonControlMessage::decode(&wired(Vec::new(), vec![input("")])).is_err());
        assert!(
            DaemonControlMessage::decode(&wired(vec![service("s"); MAX_WIRING + 1], Vec::new()))
                .is_err()
        );
        assert!(
            DaemonControlMessage::decode(&wired(Vec::new(), vec![input("c"); MAX_WIRING + 1]))
                .is_err()
        );
        assert!(DaemonControlMessage::decode(&spawn("k", &[1; 32], 10)).is_ok());
        assert!(DaemonControlMessage::decode(&spawn("", &[1; 32], 10)).is_err());
        assert!(DaemonControlMessage::decode(&spawn(&"k".repeat(129), &[1; 32], 0)).is_err());
        assert!(DaemonControlMessage::decode(&spawn("k", &[1; 31], 0)).is_err());
        assert!(DaemonControlMessage::decode(&spawn("k", &[1; 33], 0)).is_err());
        assert!(DaemonControlMessage::decode(&spawn("k", &[1; 32], MAX_CONFIG_LEN + 1)).is_err());

        let reply = raw(&RawMessage::SpawnReply(RawSpawnReply {
            request_id: 2,
            result: RawResult::Refused(SpawnRefusal::Failed("x".repeat(MAX_REASON_LEN + 1))),
        }));
        assert!(DaemonControlMessage::decode(&reply).is_err());
        let entity = raw(&RawMessage::SpawnReply(RawSpawnReply {
            request_id: 2,
            result: RawResult::Spawned(7, Bytes::from_static(&[0; 5])),
        }));
        assert!(DaemonControlMessage::decode(&entity).is_err());

        let load = raw(&RawMessage::QueryReply(RawQueryReply {
            request_id: 3,
            capabilities: Bytes::from(CapabilitySet::new().to_bytes().expect("set")),
            load_permille: 1001,
        }));
        assert!(DaemonControlMessage::decode(&load).is_err());
        let bad_set = raw(&RawMessage::QueryReply(RawQueryReply {
            request_id: 3,
            capabilities: Bytes::from_static(&[9, 9, 9]),
            load_permille: 0,
        }));
        assert!(DaemonControlMessage::decode(&bad_set).is_err());

        let mut trailing = raw(&RawMessage::Query(RawQuery { request_id: 4 }));
        trailing.push(0);
        assert!(matches!(
            DaemonControlMessage::decode(&trailing),
            Err(DaemonControlError::Decode(DecodeError::TrailingBytes(1)))
        ));
        assert!(DaemonControlMessage::decode(&vec![0x91; MAX_BODY_LEN + 1]).is_err());
    }

    #[test]
    fn encode_refuses_what_decode_would_refuse() {
        let msg = DaemonControlMessage::Spawn(SpawnRequest {
            request_id: 1,
            kind: String::new(),
            identity_seed: Zeroizing::new([0; 32]),
            config: Bytes::new(),
            host: MINIMAL_HOST,
            wiring: DaemonWiring::default(),
        });
        assert!(msg.encode().is_err());
        let long = SpawnRefusal::failed("é".repeat(300));
        assert!(long.reason().is_some_and(|r| r.len() <= MAX_REASON_LEN));
    }

    #[test]
    fn debug_never_prints_the_seed() {
        let request = SpawnRequest {
            request_id: 1,
            kind: "k".into(),
            identity_seed: Zeroizing::new([0xab; 32]),
            config: Bytes::new(),
            host: MINIMAL_HOST,
            wiring: DaemonWiring::default(),
        };
        let text = format!("{request:?}");
        assert!(!text.contains("171") && !text.contains("ab, ab"), "{text}");
        assert!(text.contains("redacted"));
    }
}
