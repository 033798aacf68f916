//! netrun: a latency-first, end-to-end encrypted mesh runtime built as a supervised actor
//! system.
//!
//! This crate is the public API and the `netrun` binary. It assembles the supervision tree
//! from the lower crates (`netrun-supervisor` → `netrun-actors` → `netrun-runtime` →
//! `netrun-messages`), reads configuration, installs logging and trace export, and chooses
//! exit codes. Nothing below it does any of those.

mod capabilities;
mod channels;
pub mod config;
pub mod control;
pub mod daemons;
pub mod identity_file;
mod lan;
mod node;
pub mod rpc;
pub mod telemetry;

pub use capabilities::{FilterParseError, parse_filter, parse_vendor, vendor_name};
pub use netrun_actors::capability::{CapabilityConfig, CapabilityHandle, CapabilityStatus};
pub use netrun_actors::channel::{
    ChannelError, ChannelEvent, ChannelInfo, ChannelSubscription, ChannelsConfig, ChannelsStatus,
    EVICTION_COPIES, PublishError, PublishReport, SubscribeConfig, SubscribeError, SubscriptionEnd,
    SubscriptionInfo,
};
pub use netrun_actors::discovery::coordinator::CoordinatorStats;
pub use netrun_actors::discovery::table::TableStats;
pub use netrun_actors::discovery::{
    BackendStatus, DiscoveredPeer, DiscoveryBackend, DiscoveryError, DiscoveryEvent,
    DiscoverySource, DiscoveryStatus, FoundPeer, PeerContact,
};
pub use netrun_actors::events::PeerEvent;
pub use netrun_actors::pingwave::{PingwaveStatus, SeenNode};
pub use netrun_actors::router::RouteInfo;
pub use netrun_actors::session::{ConnectError, PeerInfo, PeerState};
pub use netrun_actors::stats::TransportSnapshot;
pub use netrun_actors::stream::{StreamHandle, StreamOpenError, StreamReceiver, StreamSender};
pub use netrun_actors::transport::Received;
pub use netrun_actors::wire::SendError;
pub use netrun_messages::stream::ResetReason;
pub use netrun_runtime::routing::RouteSource;
pub use netrun_runtime::stream::{
    BlockingPolicy, Reliability, RetryPolicy, StreamConfig, StreamError, StreamStats,
};
pub use netrun_supervisor::node_tree::NodeTree;
pub use node::{DEFAULT_INBOUND_CAPACITY, DEVELOPMENT_PSK, Node, NodeBuilder, StartError};

pub use daemons::{
    CapabilityFilter, CapabilitySet, CausalEvent, ChainVerifier, DaemonCallError, DaemonConfig,
    DaemonControl, DaemonError, DaemonHandle, DaemonHealth, DaemonInfo, DaemonInput, DaemonOptions,
    DaemonSnapshot, DaemonSpawnError, DaemonState, GpuInfo, GpuVendor, Hardware, MeshDaemon,
    Output, PlacedDaemon, factory,
};

pub use bytes::Bytes;
pub use channels::ChannelReader;
pub use identity_file::{IdentityFile, IdentityFileError};
// Capability sets, filters and hardware come with the daemons' exports above.
pub use netrun_messages::{
    CapabilityAnnouncement, ChannelHash, Granted, PermissionToken, Subprotocol, SubscribeOptions,
    TokenChain, TokenScope,
};
pub use netrun_messages::{ChannelName, EntityId, Identity, NodeId, OriginHash};
pub use netrun_runtime::capability::{
    AnnouncerConfig, AnnouncerError, IndexConfig, IndexEntry, service_tag,
};
pub use netrun_runtime::channel::{
    AuthConfig, ChannelConfig, EvictReason, RegisterError, RegistryConfig, RevocationsFull,
    SubscriptionsConfig, Visibility,
};

/// The README's Rust example, compiled as a doctest so the README cannot drift from the API.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
