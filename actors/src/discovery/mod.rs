//! Discovery: how a node finds peers without manual peering.
//!
//! ```text
//!  Bootstrap ─┐  (config seeds)
//!  PeerExchange ─┤  (signed peer lists from session peers)
//!  Pingwave ─┤  (hop-bounded probes; also feeds the router)     DiscoveryEvent
//!  Mdns ─┤  (_netrun._udp.local on the LAN)              ──────────────▶ Coordinator
//!  Kademlia ─┤  (DHT contact records over sessions)                       │ de-dup by node id,
//!  Mqtt ─┘  (retained announce / last-will goodbye on a broker)          │ record the source,
//!                                                                          ▼ connect new peers
//!                                                                      Sessions
//! ```
//!
//! Every backend is its own supervised actor under the Discovery subtree, so one that
//! crashes is restarted without disturbing the others. A backend reports what it finds as
//! [`DiscoveryEvent`]s; a discovered peer is a *hint* (an address and a key to try), never
//! an identity: the Noise handshake proves who answers.
//!
//! - [`DiscoveryHandle`]: what backends report to and what the node asks; it follows the
//!   coordinator and the DHT actor across restarts and holds the backends' status board.
//! - [`coordinator`]: the [`PeerTable`](table::PeerTable) (de-dup, sources, connect
//!   schedule with backoff) driven by an actor that hands new peers to `Sessions`.
//! - [`backend`]: the generic actor that drives any [`DiscoveryBackend`];
//!   [`bootstrap`] is the config-seed backend.
//! - [`peer_exchange`] and [`kademlia`]: backends that speak over mesh sessions
//!   (`PEER_EXCHANGE` and `DHT` envelopes), actors of their own.

pub mod backend;
pub mod bootstrap;
pub mod coordinator;
mod handle;
pub mod kademlia;
pub mod peer_exchange;

pub mod mdns;
pub mod mqtt;

use std::future::Future;
use std::net::SocketAddr;

use netrun_messages::{EntityId, NodeId};
use serde::{Deserialize, Serialize};

pub use handle::{DiscoveryHandle, DiscoveryStatus, REPORT_QUEUE};
pub use netrun_runtime::discovery::table::{self, FoundPeer};
pub use netrun_runtime::discovery::{DiscoveredPeer, DiscoverySource};

/// Where a node can be reached, as the DHT (or a session) says: a hint to connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerContact {
    /// The node id (derived from `public_key`).
    pub node: NodeId,
    /// Its public key; a handshake proves it.
    pub public_key: EntityId,
    /// Addresses to try.
    pub addrs: Vec<SocketAddr>,
}

/// The mesh fingerprint as text ([`MeshFingerprint`](netrun_messages::MeshFingerprint) in
/// hex: derived from the PSK, never the PSK itself), so meshes sharing a LAN, a broker or a
/// DHT keyspace can tell each other apart. It is also the DHT's mesh prefix.
pub fn mesh_fingerprint(psk: &[u8; 32]) -> String {
    netrun_messages::MeshFingerprint::from_psk(psk).to_hex()
}

/// What a backend reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiscoveryEvent {
    /// A peer was found (or found again).
    Found(DiscoveredPeer),
    /// A backend learned that a peer left (an MQTT goodbye or last will, an mDNS removal).
    Lost {
        /// The peer.
        node: NodeId,
        /// Which backend says so.
        source: DiscoverySource,
    },
}

/// A backend's state, as `netrun discovery` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendStatus {
    /// The backend's name.
    pub name: String,
    /// Whether it is running.
    pub running: bool,
    /// Peers it reported since it started.
    pub found: u64,
    /// Errors since it started (bad advertisements, broker errors, …).
    pub errors: u64,
    /// One line of backend-specific detail (broker URL, service name, table size, …).
    pub detail: String,
}

/// Why a backend could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The backend's configuration is unusable.
    #[error("invalid {backend} configuration: {reason}")]
    Config {
        /// Which backend.
        backend: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The backend's external resource (socket, broker, daemon) failed.
    #[error("{backend}: {source}")]
    Io {
        /// Which backend.
        backend: &'static str,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
}

/// A discovery mechanism outside the mesh (a LAN protocol, a broker, a config list),
/// driven by a generic backend actor.
///
/// The actor calls [`start`](Self::start) once, then [`next_event`](Self::next_event) in a
/// loop with a bounded wait (so stop requests are served between calls), forwarding each
/// event to the coordinator, and [`stop`](Self::stop) when it shuts down (a clean stop is
/// where goodbyes are sent). Backends that speak over mesh sessions (peer exchange,
/// pingwave, DHT) are actors of their own and report to the coordinator directly.
pub trait DiscoveryBackend: Send + 'static {
    /// A short name (`mdns`, `mqtt`, …).
    fn name(&self) -> &'static str;

    /// Starts advertising and browsing.
    fn start(&mut self) -> impl Future<Output = Result<(), DiscoveryError>> + Send;

    /// The next event; `None` when the backend has nothing more to report, ever.
    ///
    /// Must be cancel-safe: the driving actor wraps every call in a bounded timeout and
    /// calls again later, so a dropped future must not lose an event.
    fn next_event(&mut self) -> impl Future<Output = Option<DiscoveryEvent>> + Send;

    /// Stops advertising (sending goodbyes where the mechanism has them).
    fn stop(&mut self) -> impl Future<Output = ()> + Send;

    /// Counters and detail for `netrun discovery`.
    fn status(&self) -> BackendStatus;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mesh_fingerprints_are_stable_and_differ_per_psk() {
        let a = mesh_fingerprint(&[1; 32]);
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(a, mesh_fingerprint(&[1; 32]), "deterministic");
        assert_ne!(a, mesh_fingerprint(&[2; 32]));
    }
}
