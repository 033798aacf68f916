//! Channels: publisher-side membership with token authorization, and the subscriber's
//! bookkeeping.
//!
//! ```text
//!  subscriber                                   publisher
//!  Subscriptions::subscribe ── Subscribe ──►    ChannelRegistry::handle_message
//!                                                 Channel::subscribe: visible? → budget?
//!                                                 → matchmaking → token chain
//!                                                 (Authenticator: cheap checks, cache,
//!                                                  signatures) → roster bound
//!  Subscriptions::handle_ack ◄── Ack ─────────
//!  Subscriptions::accept_event ◄── EventFrame ─ Channel::recipients / next_seq
//!                                               timer: sweep(now) evicts expired tokens
//!                                               revoke_issuer(now, key) drops descendants
//!                                               unregister(name) evicts the whole roster
//!  Subscriptions::handle_evicted ◄── Evicted ── Evicted::notice, one per evicted subscriber
//! ```
//!
//! - [`ChannelConfig`]: visibility, `require_token` and token roots (the access control),
//!   publish / subscribe capability filters (matchmaking only), reliability, priority and
//!   the roster bound.
//! - [`Authenticator`]: token-chain verification with a verified-signature LRU cache, the
//!   per-peer failure limiter (checked before any signature) and issuer revocation.
//! - [`Channel`]: one channel's roster and subscribe decision; [`ChannelRegistry`]: all of a
//!   node's channels sharing one authenticator, speaking membership messages.
//! - [`Subscriptions`]: what this node subscribed to, ack and eviction matching, event
//!   admission.
//! - [`pack`] / [`FrameReassembler`]: event frames cut into stream sends and read back.
//!
//! Times are unix seconds, because tokens carry wall-clock validity.

mod auth;
mod config;
#[cfg(test)]
mod eviction_tests;
mod frames;
mod publisher;
mod registry;
mod subscriber;
#[cfg(test)]
mod tests;

pub use auth::{
    AuthConfig, AuthConfigError, AuthCounters, AuthError, AuthRequest, Authenticator, Grant,
    GrantLink, RevocationsFull, TokenRejection,
};
pub use config::{
    ChannelConfig, ChannelConfigError, MAX_SUBSCRIBERS_LIMIT, MAX_TOKEN_ROOTS, Visibility,
};
pub use frames::{Event, FrameReassembler, MAX_FRAME_LEN, Packed, Piece, ReassemblyError, pack};
pub use netrun_messages::channel::membership::EvictReason;
pub use publisher::{Accepted, Channel, ChannelCounters, Reject, SubscribeRequest, Subscriber};
pub use registry::{
    ChannelRegistry, Evicted, Peer, RegisterError, RegistryConfig, RegistryConfigError,
};
pub use subscriber::{
    AckError, Active, Answered, EvictionError, MAX_UNCONFIRMED, Pending, RequestKind,
    SubscriptionCounters, SubscriptionError, Subscriptions, SubscriptionsConfig,
};
