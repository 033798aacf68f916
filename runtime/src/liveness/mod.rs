//! Peer liveness: RTT estimation and the heartbeat-driven failure detector.
//!
//! ```text
//!   every authenticated packet ─▶ Liveness::on_authenticated_packet
//!   heartbeat packet (stream = probe << 1 | is_reply) ─▶ Liveness::on_heartbeat ─▶ reply?
//!   at poll_timeout: poll_heartbeat → ping to seal;  poll → Suspected / Failed /
//!                    Recovered / IdleTimeout
//! ```
//!
//! Heartbeats are sealed with the session keys (empty plaintext, the payload is the tag;
//! see [`crypto::open_heartbeat`](crate::crypto::open_heartbeat)), so only the real peer
//! can keep itself alive.

mod detector;
mod probe;
mod rtt;

pub use detector::{
    Liveness, LivenessConfig, LivenessConfigError, LivenessEvent, LivenessState, MAX_IDLE_TIMEOUT,
    MIN_HEARTBEAT_INTERVAL,
};
pub use probe::HeartbeatProbe;
pub use rtt::{RttConfig, RttEstimator};
