//! Capabilities: the local node's announcement schedule and the index of everyone's.
//!
//! ```text
//!  Announcer ── poll_announce(now) ──► signed CapabilityAnnouncement
//!                                        │ own index (via = None)
//!                                        │ peers (CAPABILITY envelope)
//!  peer bytes ─► CapabilityIndex::handle_announcement(now, bytes, via)
//!                  verify → pin → store → Outcome { forward? }
//!  queries:      find(&filter), find_service(name), get(node)   (no network round trip)
//!  timer:        poll_timeout() / handle_timeout(now) drop entries past their TTL
//! ```
//!
//! - [`CapabilityIndex`]: the fold. Verifies every announcement before storing it, pins a
//!   node id to the first key that signed for it, keeps the newest version per node,
//!   expires entries by TTL, bounds the node count, and answers queries from posting lists.
//! - [`Announcer`]: decides when the local node announces (at start, on change with a
//!   minimum interval, and periodically within the TTL).
//!
//! Services: a node that serves nRPC service `s` carries the tag `nrpc:s`
//! ([`service_tag`]); [`CapabilityIndex::find_service`] is a lookup of that tag.
//!
//! All times are unix seconds, because announcements carry wall-clock timestamps.

mod announcer;
mod index;
mod postings;
#[cfg(test)]
mod tests;

pub use announcer::{Announcer, AnnouncerConfig, AnnouncerError};
pub use index::{
    CapabilityCounters, CapabilityIndex, Incoming, IndexConfig, IndexConfigError, IndexEntry,
    IndexError, Outcome, Rejections,
};

/// Prefix of the tag that advertises an nRPC service.
pub const SERVICE_TAG_PREFIX: &str = "nrpc:";

/// The tag that advertises nRPC service `service`: `nrpc:<service>`.
pub fn service_tag(service: &str) -> String {
    let mut tag = String::with_capacity(SERVICE_TAG_PREFIX.len() + service.len());
    tag.push_str(SERVICE_TAG_PREFIX);
    tag.push_str(service);
    tag
}
