//! netrun's vocabulary: everything that crosses a process boundary.
//!
//! This crate is pure data. It knows identities ([`Identity`], [`NodeId`], [`EntityId`],
//! [`OriginHash`]), the fixed-layout packet and routing headers, the control envelope that
//! carries every subprotocol message, channel names, permission tokens, capability sets and
//! signed announcements, and causal event chains. It opens no sockets or files and reads no
//! clocks: wall-clock time is always an argument.
//!
//! Every decoder of untrusted bytes is total: it returns a typed error, never panics, and
//! bounds every length and count before it allocates.

mod bounded;
pub mod capability;
pub mod causal;
pub mod channel;
pub mod daemon;
pub mod discovery;
pub mod envelope;
pub mod error;
pub mod header;
pub mod identity;
pub mod ids;
pub mod mesh_fingerprint;
pub mod mqtt_announce;
mod reader;
pub mod routing;
pub mod rpc;
pub mod stream;
pub mod token;

pub use capability::{
    AnnouncementError, CapabilityAnnouncement, CapabilityError, CapabilityFilter, CapabilitySet,
    GpuInfo, GpuVendor, Hardware,
};
pub use causal::{
    CausalChain, CausalEvent, CausalLink, ChainError, ChainHead, SignedEvent, verify_chain,
};
pub use channel::event::EventFrame;
pub use channel::membership::{
    Ack, AckResult, EvictReason, Evicted, Granted, MembershipError, MembershipMessage,
    RejectReason, Subscribe, SubscribeOptions, TokenChain, Unsubscribe,
};
pub use channel::{ChannelHash, ChannelName, ChannelNameError};
pub use daemon::{DaemonControlError, DaemonControlMessage};
pub use envelope::{Envelope, Subprotocol, TraceContext};
pub use error::DecodeError;
pub use header::{Header, PacketFlags, PacketKind};
pub use identity::{Identity, Signature, SignatureError};
pub use ids::{EntityId, NodeId, OriginHash};
pub use mesh_fingerprint::MeshFingerprint;
pub use routing::RoutingHeader;
pub use rpc::{CallId, RpcFrame, ServiceName, Status};
pub use token::{PermissionToken, TokenError, TokenScope};
