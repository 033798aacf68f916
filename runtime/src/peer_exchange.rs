//! Peer exchange: after a handshake, peers swap signed lists of the peers they know.
//!
//! A list is accepted only from the session peer that signed it, and only if the signature
//! verifies. Even then its entries are *hints*: a key and addresses worth trying. They are
//! never treated as identities; a [`ConnectHint`] becomes a peer only when a Noise handshake
//! with that key succeeds, which is the only proof that the key's holder is at the address.
//!
//! A hint is held so that the same node, named again by the next lists, is not reported
//! again and again. It is spent by [`PeerExchange::forget`] (a session with its node came
//! up or went down) or expires [`PeerExchangeConfig::hint_ttl`] after it was learned, so a
//! node that is gone is not held forever and a node still named after the TTL is reported
//! afresh (which revives a peer the coordinator gave up connecting to). Hints are bounded
//! by count; expiries are kept in order, so [`PeerExchange::poll_timeout`] is one read and
//! [`PeerExchange::handle_timeout`] visits only the hints that expired.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

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
    /// Most hints kept; further new ones are dropped and counted (after expired ones are
    /// swept).
    pub max_hints: usize,
    /// How long a hint is held after the list that first named it. Ten minutes: twenty
    /// list intervals (30 s), so a node that every list names is reported to the
    /// coordinator about once per ten minutes rather than on every list, and a node that
    /// has left stops being held (and stops suppressing a fresh report) within that time.
    pub hint_ttl: Duration,
}

impl Default for PeerExchangeConfig {
    fn default() -> Self {
        Self {
            max_hints: 1024,
            hint_ttl: Duration::from_secs(600),
        }
    }
}

/// The peer-exchange core of one node.
#[derive(Debug)]
pub struct PeerExchange {
    local: NodeId,
    config: PeerExchangeConfig,
    /// Held hints by node, with when each expires.
    hints: HashMap<NodeId, (ConnectHint, Instant)>,
    /// `(expires_at, node)` of every held hint, and nothing else.
    expiries: BTreeSet<(Instant, NodeId)>,
    dropped: u64,
    expired: u64,
}

impl PeerExchange {
    /// A core for node `local`.
    pub fn new(local: NodeId, config: PeerExchangeConfig) -> Self {
        Self {
            local,
            config,
            hints: HashMap::new(),
            expiries: BTreeSet::new(),
            dropped: 0,
            expired: 0,
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

    /// Takes a list received at `now` over the authenticated session with `peer`. Returns
    /// the hints that are new (not this node, not the sender, not held); each is held until
    /// forgotten or until `hint_ttl` has passed.
    pub fn handle_list(
        &mut self,
        now: Instant,
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
        // An expired hint neither suppresses a report nor takes room.
        self.handle_timeout(now);
        let expires_at = now + self.config.hint_ttl;
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
            self.hints.insert(id, (hint.clone(), expires_at));
            self.expiries.insert((expires_at, id));
            fresh.push(hint);
        }
        Ok(fresh)
    }

    /// A handshake with `node` succeeded (it is a peer now) or failed for good: either way
    /// the hint is spent.
    pub fn forget(&mut self, node: NodeId) -> Option<ConnectHint> {
        let (hint, expires_at) = self.hints.remove(&node)?;
        self.expiries.remove(&(expires_at, node));
        Some(hint)
    }

    /// Drops the hints whose TTL has passed by `now`; returns how many.
    pub fn handle_timeout(&mut self, now: Instant) -> usize {
        let mut count = 0;
        while let Some(&(expires_at, node)) = self.expiries.first() {
            if expires_at > now {
                break;
            }
            self.expiries.pop_first();
            self.hints.remove(&node);
            count += 1;
        }
        self.expired += count as u64;
        count
    }

    /// When the next hint expires, if any is held.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.expiries.first().map(|(expires_at, _)| *expires_at)
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

    /// Hints dropped because their TTL passed.
    pub fn expired(&self) -> u64 {
        self.expired
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_clock::t0;

    use crate::test_clock::peer_entry as entry;

    #[test]
    fn lists_are_hints_from_their_signer_only() {
        let me = Identity::from_seed([1; 32]);
        let peer = Identity::from_seed([2; 32]);
        let now = t0();
        let mut px = PeerExchange::new(
            me.node_id(),
            PeerExchangeConfig {
                max_hints: 2,
                ..PeerExchangeConfig::default()
            },
        );
        let list = PeerExchange::build_list(
            &peer,
            10,
            [entry(1), entry(2), entry(3), entry(4), entry(5)],
        )
        .expect("signs");
        assert_eq!(
            px.handle_list(now, Identity::from_seed([9; 32]).node_id(), &list),
            Err(PeerExchangeError::SignerNotPeer {
                signer: peer.node_id(),
                peer: Identity::from_seed([9; 32]).node_id()
            })
        );
        let hints = px
            .handle_list(now, peer.node_id(), &list)
            .expect("accepted");
        let ids: Vec<NodeId> = hints.iter().map(|h| h.entry.node_id()).collect();
        assert_eq!(
            ids,
            vec![entry(3).node_id(), entry(4).node_id()],
            "self and sender skipped, bounded"
        );
        assert_eq!(px.dropped(), 1);
        assert!(
            px.handle_list(now, peer.node_id(), &list)
                .expect("ok")
                .is_empty(),
            "no repeats"
        );
        let mut forged = list.clone();
        forged.entries.pop();
        assert!(matches!(
            px.handle_list(now, peer.node_id(), &forged),
            Err(PeerExchangeError::Invalid(_))
        ));
        assert!(px.forget(entry(3).node_id()).is_some());
        assert_eq!(px.len(), 1);
    }

    #[test]
    fn hints_expire_after_their_ttl_and_are_then_reported_again() {
        let me = Identity::from_seed([1; 32]);
        let peer = Identity::from_seed([2; 32]);
        let ttl = Duration::from_secs(600);
        let config = PeerExchangeConfig {
            max_hints: 2,
            hint_ttl: ttl,
        };
        let mut px = PeerExchange::new(me.node_id(), config);
        let t = t0();
        let first = PeerExchange::build_list(&peer, 10, [entry(3)]).expect("signs");
        let second = PeerExchange::build_list(&peer, 20, [entry(4), entry(5)]).expect("signs");
        assert_eq!(
            px.handle_list(t, peer.node_id(), &first).map(|h| h.len()),
            Ok(1)
        );
        let later = t + Duration::from_secs(60);
        assert_eq!(
            px.handle_list(later, peer.node_id(), &second)
                .map(|h| h.len()),
            Ok(1),
            "full: one of two dropped"
        );
        assert_eq!((px.len(), px.dropped()), (2, 1));
        assert_eq!(px.poll_timeout(), Some(t + ttl));

        // Still held just before the TTL: no repeat report.
        assert_eq!(px.handle_timeout(t + ttl - Duration::from_millis(1)), 0);
        assert_eq!(
            px.handle_list(t + ttl - Duration::from_millis(1), peer.node_id(), &first),
            Ok(vec![])
        );
        // At the TTL the first hint goes, and nothing else.
        assert_eq!(px.handle_timeout(t + ttl), 1);
        assert_eq!((px.len(), px.expired()), (1, 1));
        assert_eq!(px.poll_timeout(), Some(later + ttl));
        // A node still named after its hint expired is reported afresh.
        let again = px
            .handle_list(t + ttl, peer.node_id(), &first)
            .expect("accepted");
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].entry.node_id(), entry(3).node_id());
        // A list handled after a TTL sweeps first, so expired hints never take room.
        let much_later = later + ttl * 3;
        let fresh = px
            .handle_list(much_later, peer.node_id(), &second)
            .expect("accepted");
        assert_eq!(fresh.len(), 2, "both fit once the old hints expired");
        assert_eq!(px.dropped(), 1);
        assert!(px.forget(entry(4).node_id()).is_some());
        assert_eq!(px.poll_timeout(), Some(much_later + ttl));
        assert!(px.forget(entry(5).node_id()).is_some());
        assert_eq!((px.len(), px.poll_timeout()), (0, None));
    }
}
