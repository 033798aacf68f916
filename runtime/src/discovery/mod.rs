//! Discovery rules: the vocabulary every discovery backend reports in, the coordinator's
//! peer [`table`] (de-duplication, sources, connect schedule), and the [`mqtt`] backend's
//! announce table (topics, validation, incarnations, staleness). The backends and the
//! coordinator are actors in `netrun-actors`; what they decide lives here, with time as an
//! input.

use std::fmt;
use std::net::SocketAddr;

use netrun_messages::{EntityId, NodeId};
use serde::{Deserialize, Serialize};

pub mod mqtt;
pub mod table;

/// How a peer was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiscoverySource {
    /// A seed peer from the configuration.
    Seed,
    /// A signed peer list from a session peer.
    PeerExchange,
    /// A pingwave that reached this node.
    Pingwave,
    /// An mDNS advertisement on the local network.
    Mdns,
    /// A contact record found in the DHT.
    Dht,
    /// A retained announce on an MQTT broker.
    Mqtt,
    /// The peer connected to us, or the application connected to it.
    Inbound,
}

impl DiscoverySource {
    /// The lowercase name shown by `netrun peers` and `netrun discovery`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Seed => "seed",
            Self::PeerExchange => "peer_exchange",
            Self::Pingwave => "pingwave",
            Self::Mdns => "mdns",
            Self::Dht => "dht",
            Self::Mqtt => "mqtt",
            Self::Inbound => "inbound",
        }
    }
}

impl fmt::Display for DiscoverySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A peer a backend found: who it claims to be and where to try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveredPeer {
    /// The claimed node id (must equal the one derived from `entity`; the coordinator
    /// drops entries where it does not).
    pub node: NodeId,
    /// The claimed public key; the handshake proves it.
    pub entity: EntityId,
    /// Addresses to try, best first. Empty when the peer is only reachable through relays.
    pub addrs: Vec<SocketAddr>,
    /// Which backend found it.
    pub source: DiscoverySource,
}
