//! Peer exchange: after a handshake, peers swap signed lists of the peers they know.
//!
//! A list is accepted only from the session peer that signed it, and only if the signature
//! verifies. Even then its entries are *hints*: a key and addresses worth trying. They are
//! never treated as identities; a [`ConnectHint`] becomes a peer only when a Noise handshake
//! with that key succeeds, which is the only proof that the key's holder is at the address.

use std::collections::HashMap;

use netrun_messages::discovery::{MAX_PEER_LIST_ENTRIES, PeerEntry, PeerListError, SignedPeerList};
use netrun_messages::{Identity, NodeId};
use thiserror::Error;

/// A peer worth trying to open a session with, as another node described it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectHint {
    /// The key and addresses to try; the node id derives from the key.
    pub entry: PeerEntry,
    /// The session peer whose signed list named it.
    pub learned_from: NodeId,
}

/// Why a peer list was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum PeerExchangeError {
    /// The list is signed by someone other than the session peer that sent it.
    #[error("peer list signed by {signer}, received from {peer}")]
    SignerNotPeer {
        /// The list's signer.
        signer: NodeId,
        /// The authenticated session peer.
        peer: NodeId,
    },
    /// The list failed verification.
    #[error(transparent)]
    Invalid(#[from] PeerListError),
}

/// Peer-exchange limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerExchangeConfig {
    /// Most hints kept; further new ones are dropped and counted.
    pub max_hints: usize,
}

impl Default for PeerExchangeConfig {
    fn default() -> Self {
        Self { max_hints: 1024 }
    }
}

/// The peer-exchange core of one node.
#[derive(Debug)]
pub struct PeerExchange {
    local: NodeId,
    config: PeerExchangeConfig,
    hints: HashMap<NodeId, ConnectHint>,
    dropped: u64,
}

impl PeerExchange {
    /// A core for node `local`.
    pub fn new(local: NodeId, config: PeerExchangeConfig) -> Self {
        Self {
            local,
            config,
            hints: HashMap::new(),
            dropped: 0,
        }
    }

    /// Builds this node's list from the peers it has sessions with (at most
    /// [`MAX_PEER_LIST_ENTRIES`], the first ones given).
    pub fn build_list(
        identity: &Identity,
        issued_at_ms: u64,
        peers: impl IntoIterator<Item = PeerEntry>,
    ) -> Result<SignedPeerList, PeerListError> {
        let entries = peers.into_iter().take(MAX_PEER_LIST_ENTRIES).collect();
        SignedPeerList::sign(identity, issued_at_ms, entries)
    }

    /// Takes a list received over the authenticated session with `peer`. Returns the hints
    /// that are new (not this node, not the sender, not already known).
    pub fn handle_list(
        &mut self,
        peer: NodeId,
        list: &SignedPeerList,
    ) -> Result<Vec<ConnectHint>, PeerExchangeError> {
        if list.signer != peer {
            return Err(PeerExchangeError::SignerNotPeer {
                signer: list.signer,
                peer,
            });
        }
        list.verify()?;
        let mut fresh = Vec::new();
        for entry in &list.entries {
            let id = entry.node_id();
            if id == self.local || id == peer || self.hints.contains_key(&id) {
                continue;
            }
            if self.hints.len() >= self.config.max_hints {
                self.dropped += 1;
                continue;
            }
            let hint = ConnectHint {
                entry: entry.clone(),
                learned_from: peer,
            };
            self.hints.insert(id, hint.clone());
            fresh.push(hint);
        }
        Ok(fresh)
    }

    /// A handshake with `node` succeeded (it is a peer now) or failed for good: either way
    /// the hint is spent.
    pub fn forget(&mut self, node: NodeId) -> Option<ConnectHint> {
        self.hints.remove(&node)
    }

    /// Hints held.
    pub fn len(&self) -> usize {
        self.hints.len()
    }

    /// Whether no hints are held.
    pub fn is_empty(&self) -> bool {
        self.hints.is_empty()
    }

    /// New hints dropped because the store was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seed: u8) -> PeerEntry {
        PeerEntry {
            public_key: Identity::from_seed([seed; 32]).entity_id(),
            addrs: vec![format!("10.0.0.{seed}:7000").parse().expect("addr")],
        }
    }

    #[test]
    fn lists_are_hints_from_their_signer_only() {
        let me = Identity::from_seed([1; 32]);
        let peer = Identity::from_seed([2; 32]);
        let mut px = PeerExchange::new(me.node_id(), PeerExchangeConfig { max_hints: 2 });
        let list = PeerExchange::build_list(
            &peer,
            10,
            [entry(1), entry(2), entry(3), entry(4), entry(5)],
        )
        .expect("signs");
        assert_eq!(
            px.handle_list(Identity::from_seed([9; 32]).node_id(), &list),
            Err(PeerExchangeError::SignerNotPeer {
                signer: peer.node_id(),
                peer: Identity::from_seed([9; 32]).node_id()
            })
        );
        let hints = px.handle_list(peer.node_id(), &list).expect("accepted");
        let ids: Vec<NodeId> = hints.iter().map(|h| h.entry.node_id()).collect();
        assert_eq!(
            ids,
            vec![entry(3).node_id(), entry(4).node_id()],
            "self and sender skipped, bounded"
        );
        assert_eq!(px.dropped(), 1);
        assert!(
            px.handle_list(peer.node_id(), &list)
                .expect("ok")
                .is_empty(),
            "no repeats"
        );
        let mut forged = list.clone();
        forged.entries.pop();
        assert!(matches!(
            px.handle_list(peer.node_id(), &forged),
            Err(PeerExchangeError::Invalid(_))
        ));
        assert!(px.forget(entry(3).node_id()).is_some());
        assert_eq!(px.len(), 1);
    }
}
