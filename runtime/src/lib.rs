//! netrun protocol cores (sans-IO).
//!
//! Every core is a plain struct driven by its caller: inputs go in through `handle_*` /
//! `on_*` methods that take the current time, outputs come out as return values or through
//! `poll_*`, and `poll_timeout` says when to call again. No core opens a socket, reads a
//! clock or draws from a global RNG, so a deterministic simulation can drive all of them.
//!
//! - [`daemon`]: the `MeshDaemon` contract and the host that runs one daemon: failure
//!   capture, signed causal-chain outputs, snapshots, lossless restore, placement.
//! - [`crypto`]: per-packet AEAD, replay window, send/receive keys, datagram seal/open.
//! - [`handshake`]: the Noise `IKpsk2` handshake that produces session keys, the
//!   session-rotation rules and the retry backoff.
//! - [`liveness`]: RTT estimation and the per-peer failure detector driven by heartbeats.
//! - [`routing`]: the routing table, its read-only snapshot and the per-packet relay decision.
//! - [`pingwave`]: hop-bounded probes that build the proximity graph and feed routes.
//! - [`peer_exchange`]: signed peer lists from session peers, taken as connect hints only.
//! - [`discovery`]: what discovery backends report, the coordinator's peer table
//!   (de-duplication, sources, connect backoff) and the MQTT backend's announce table.
//! - [`dht`]: the Kademlia table, iterative lookups and bounded record storage.
//! - [`stream`]: per-peer streams: credit windows, backpressure, reliable retransmit.
//! - [`rpc`]: nRPC call and dispatch tables, retry / hedge / circuit breaker, node
//!   selection and per-service metrics.
//! - [`capability`]: the capability index (verified announcements, TTL expiry, indexed
//!   queries) and the local announcement schedule.
//! - [`channel`]: publisher-side channel membership (token auth, rate limits, sweeps,
//!   revocation) and subscriber-side bookkeeping.

pub mod capability;
pub mod channel;
pub mod crypto;
pub mod daemon;
pub mod dht;
pub mod discovery;
pub mod handshake;
pub mod liveness;
pub mod peer_exchange;
pub mod pingwave;
pub mod routing;
pub mod rpc;
pub mod stream;

/// The `rand_core` version the cores take randomness from (`CryptoRngCore`, and `OsRng`
/// for production callers), re-exported so callers need not match versions by hand.
pub use rand_core;

#[cfg(test)]
mod test_clock {
    use netrun_messages::Identity;
    use netrun_messages::discovery::PeerEntry;

    /// The origin of a test's `Instant`s: arbitrary, only offsets from it matter. The one
    /// clock read in this crate, and only in tests.
    #[allow(clippy::disallowed_methods)]
    pub(crate) fn t0() -> std::time::Instant {
        std::time::Instant::now()
    }

    /// The peer entry of the identity seeded with `seed`, at `10.0.0.<seed>:7000`.
    pub(crate) fn peer_entry(seed: u8) -> PeerEntry {
        PeerEntry {
            public_key: Identity::from_seed([seed; 32]).entity_id(),
            addrs: vec![std::net::SocketAddr::from(([10, 0, 0, seed], 7000))],
        }
    }
}
