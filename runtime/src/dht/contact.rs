//! Acceptance rules for signed contact records, on both sides of the DHT.
//!
//! - A resolver ([`contact_record`]) takes a value found under `{mesh}:node:{node}` only if
//!   it decodes as a [`SignedContact`], its key derives `node`, and its signature verifies.
//! - A storing node ([`admit_store`]) holds any value that decodes as a [`SignedContact`] to
//!   the same rules (its key must be `{mesh}:node:{record's node id}`), refuses replacing a
//!   held record with an older one, and refuses replacing a held record with anything that
//!   is not a valid record for that key.
//!
//! Values that are not contact records and go to keys that hold none are not judged here:
//! a storing node cannot tell which node a key belongs to without the record.

use netrun_messages::discovery::{ContactError, DhtId, PeerEntry, SignedContact};
use netrun_messages::{DecodeError, NodeId};
use thiserror::Error;

use super::key::NamespacedKey;

/// Why a value found under a node's key was not taken as its contact.
#[derive(Debug, Error)]
pub enum ContactRecordError {
    /// The value is not a contact record.
    #[error("contact record: {0}")]
    Decode(#[from] DecodeError),
    /// The record's key derives another node id than the one looked up.
    #[error("contact record is for node {found}, not {wanted}")]
    WrongNode {
        /// The node looked up.
        wanted: NodeId,
        /// The node the record's key derives.
        found: NodeId,
    },
    /// The signature does not verify under the record's key.
    #[error(transparent)]
    Contact(#[from] ContactError),
}

/// Why a storing node refused a value under a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ContactStoreError {
    /// The value is a contact record, but the key is not `{mesh}:node:{its node id}`.
    #[error("contact record stored under another key than its node's")]
    WrongKey,
    /// The value is a contact record whose signature does not verify.
    #[error(transparent)]
    Contact(#[from] ContactError),
    /// The key holds a record issued later than the offered one.
    #[error("contact record issued at {offered} ms is older than the held one ({held} ms)")]
    Older {
        /// Issue time of the held record.
        held: u64,
        /// Issue time of the offered record.
        offered: u64,
    },
    /// The key holds a valid contact record and the value is not one.
    #[error("value would replace a signed contact record")]
    NotAContact,
}

/// Decodes and verifies a contact record found under `{mesh}:node:{node}`: it must decode,
/// its key must derive `node`, and its signature must verify. The entry is a hint to
/// connect to, not an identity: the handshake proves the key.
pub fn contact_record(node: NodeId, value: &[u8]) -> Result<PeerEntry, ContactRecordError> {
    let record = SignedContact::decode(value)?;
    let found = record.node_id();
    if found != node {
        return Err(ContactRecordError::WrongNode {
            wanted: node,
            found,
        });
    }
    record.verify()?;
    Ok(record.entry)
}

/// Whether a storing node takes `value` under `key`, which now holds `held` (a value this
/// node admitted by these rules, so a held contact record's signature is not checked
/// again).
///
/// `mesh_prefix` is this node's key namespace; without one (or with one that cannot form a
/// key), a contact record's key cannot be checked and every contact record is refused as
/// [`ContactStoreError::WrongKey`].
pub fn admit_store(
    mesh_prefix: Option<&str>,
    key: &DhtId,
    value: &[u8],
    held: Option<&[u8]>,
) -> Result<(), ContactStoreError> {
    if held == Some(value) {
        // The value held, offered again (a hand-off or a retried STORE): only its lifetime
        // changes, and it was checked when first admitted.
        return Ok(());
    }
    let held = held
        .and_then(|v| SignedContact::decode(v).ok())
        .filter(|r| record_key_matches(mesh_prefix, key, r));
    let Ok(offered) = SignedContact::decode(value) else {
        return match held {
            Some(_) => Err(ContactStoreError::NotAContact),
            None => Ok(()),
        };
    };
    if !record_key_matches(mesh_prefix, key, &offered) {
        return Err(ContactStoreError::WrongKey);
    }
    offered.verify()?;
    match held {
        Some(h) if h.issued_at_ms > offered.issued_at_ms => Err(ContactStoreError::Older {
            held: h.issued_at_ms,
            offered: offered.issued_at_ms,
        }),
        _ => Ok(()),
    }
}

fn record_key_matches(mesh_prefix: Option<&str>, key: &DhtId, record: &SignedContact) -> bool {
    mesh_prefix
        .and_then(|p| NamespacedKey::node_record(p, record.node_id()).ok())
        .is_some_and(|k| k.id() == *key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_clock::peer_entry;
    use netrun_messages::Identity;
    use netrun_messages::Signature;

    const MESH: &str = "0123456789abcdef";

    fn identity(seed: u8) -> Identity {
        Identity::from_seed([seed; 32])
    }

    fn signed(seed: u8, at: u64) -> SignedContact {
        SignedContact::sign(&identity(seed), at, peer_entry(seed)).expect("signs")
    }

    fn key_of(seed: u8) -> DhtId {
        NamespacedKey::node_record(MESH, peer_entry(seed).node_id())
            .expect("key")
            .id()
    }

    #[test]
    fn resolvers_take_only_a_verified_record_of_the_node_asked_for() {
        let node = peer_entry(1).node_id();
        let good = signed(1, 10).to_vec();
        assert_eq!(contact_record(node, &good).expect("valid"), peer_entry(1));

        // Another node's valid record.
        assert!(matches!(
            contact_record(node, &signed(2, 10).to_vec()),
            Err(ContactRecordError::WrongNode { wanted, .. }) if wanted == node
        ));
        // The real key with the attacker's addresses and its own signature.
        let mut forged = signed(1, 10);
        forged.entry.addrs = peer_entry(2).addrs;
        assert!(matches!(
            contact_record(node, &forged.to_vec()),
            Err(ContactRecordError::Contact(ContactError::Signature(_)))
        ));
        forged.signature = Signature([7; 64]);
        assert!(contact_record(node, &forged.to_vec()).is_err());
        // An unsigned peer entry (the old record) and garbage.
        let mut unsigned = Vec::new();
        peer_entry(1).encode_into(&mut unsigned);
        assert!(matches!(
            contact_record(node, &unsigned),
            Err(ContactRecordError::Decode(_))
        ));
        assert!(matches!(
            contact_record(node, b"garbage"),
            Err(ContactRecordError::Decode(_))
        ));
    }

    #[test]
    fn storing_nodes_check_key_signature_and_age() {
        let mesh = Some(MESH);
        let key = key_of(1);
        let v10 = signed(1, 10).to_vec();
        let v20 = signed(1, 20).to_vec();
        assert_eq!(admit_store(mesh, &key, &v10, None), Ok(()));
        // Republished (same or newer issue time) replaces.
        assert_eq!(admit_store(mesh, &key, &v10, Some(&v10)), Ok(()));
        assert_eq!(admit_store(mesh, &key, &v20, Some(&v10)), Ok(()));
        // Replay of an older record.
        assert_eq!(
            admit_store(mesh, &key, &v10, Some(&v20)),
            Err(ContactStoreError::Older {
                held: 20,
                offered: 10
            })
        );
        // A valid record under another node's key, or in another mesh.
        assert_eq!(
            admit_store(mesh, &key_of(2), &v10, None),
            Err(ContactStoreError::WrongKey)
        );
        assert_eq!(
            admit_store(Some("fedcba9876543210"), &key, &v10, None),
            Err(ContactStoreError::WrongKey)
        );
        assert_eq!(
            admit_store(None, &key, &v10, None),
            Err(ContactStoreError::WrongKey)
        );
        // A forged signature, with or without a record held.
        let mut forged = signed(1, 30);
        forged.entry.addrs = peer_entry(2).addrs;
        let forged = forged.to_vec();
        for held in [None, Some(&v20[..])] {
            assert!(matches!(
                admit_store(mesh, &key, &forged, held),
                Err(ContactStoreError::Contact(_))
            ));
        }
        // Garbage over a signed record is refused; over garbage (or nothing) it is not
        // judged, and a signed record replaces it.
        assert_eq!(
            admit_store(mesh, &key, b"garbage", Some(&v20)),
            Err(ContactStoreError::NotAContact)
        );
        assert_eq!(admit_store(mesh, &key, b"garbage", None), Ok(()));
        assert_eq!(admit_store(mesh, &key, b"more", Some(b"garbage")), Ok(()));
        assert_eq!(admit_store(mesh, &key, &v10, Some(b"garbage")), Ok(()));
    }
}
