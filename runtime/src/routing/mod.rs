//! Routing: which neighbour a packet for a destination goes to, and what a relay does with it.
//!
//! ```text
//!  sessions ─┐                       ┌─▶ RoutingSnapshot (Arc, immutable) ─▶ forward_decision
//!  pingwaves ┼─▶ RoutingTable ── on ─┤      read by the transport's receive loop per packet
//!  discovery ┘   change rebuilds     └─▶ lookup(dst) for local sends
//!  failure detector ─▶ handle_peer_down(next hop) ─▶ reroute to the next-best candidate
//!  withdrawal from a neighbour ─▶ handle_withdraw(dst, neighbour) ─▶ same, for one dst
//! ```
//!
//! - [`RoutingTable`] keeps up to a few candidate routes per destination (one per next hop)
//!   and installs the best; the installed route changes only for a strictly better one, or
//!   when it expires, its next hop goes down or its next hop withdraws it.
//! - [`RoutingSnapshot`] is the read-only `destination → next hop` map the table publishes;
//!   cloning it is one reference-count increment.
//! - [`forward_decision`] is the per-packet relay step: parse the routing header, drop
//!   self-originated and recently seen packets, look up the next hop, rewrite TTL and hop
//!   count in place. It never reads past the 48-byte header.

mod forward;
mod seen;
mod table;

pub use forward::{Decision, DropReason, forward_decision};
pub use seen::{DEFAULT_SEEN_CAPACITY, DEFAULT_SEEN_MAX_AGE, RecentlySeen};
pub use table::{Route, RouteSource, RoutingConfig, RoutingSnapshot, RoutingTable};
