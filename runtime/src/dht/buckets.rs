//! k-buckets: contacts by XOR distance, least recently seen first, with a replacement cache.

use std::collections::VecDeque;
use std::time::Instant;

use netrun_messages::NodeId;
use netrun_messages::discovery::{DhtId, PeerEntry};

use super::key::{bucket_index, xor_distance};

/// A DHT contact: a peer entry and the DHT id its key derives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    /// BLAKE3 of the public key.
    pub id: DhtId,
    /// Key and addresses.
    pub entry: PeerEntry,
}

impl Contact {
    /// The contact of a peer entry.
    pub fn new(entry: PeerEntry) -> Self {
        Self {
            id: DhtId::of_public_key(&entry.public_key),
            entry,
        }
    }

    /// The node id the key derives.
    pub fn node_id(&self) -> NodeId {
        self.entry.node_id()
    }
}

/// What [`KBuckets::insert`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InsertOutcome {
    /// Added to its bucket.
    Inserted,
    /// Already present: moved to the most-recently-seen end (addresses refreshed).
    Updated,
    /// The bucket is full: the contact waits in the replacement cache. Long-lived contacts
    /// are preferred; `lru` (the least recently seen) is evicted only when a request to it
    /// fails ([`KBuckets::remove`]).
    Pending {
        /// The least recently seen contact of the full bucket.
        lru: Contact,
    },
    /// The contact is this node.
    Local,
}

#[derive(Debug, Default, Clone)]
struct Bucket {
    /// Front: least recently seen.
    entries: VecDeque<Contact>,
    replacements: VecDeque<Contact>,
    touched_at: Option<Instant>,
}

/// The 256 k-buckets of one node.
#[derive(Debug)]
pub struct KBuckets {
    local: DhtId,
    k: usize,
    replacement_len: usize,
    buckets: Vec<Bucket>,
    len: usize,
}

impl KBuckets {
    /// Empty buckets around `local`, `k` contacts each, `replacement_len` cached spares each.
    pub fn new(local: DhtId, k: usize, replacement_len: usize) -> Self {
        Self {
            local,
            k: k.max(1),
            replacement_len,
            buckets: vec![Bucket::default(); 256],
            len: 0,
        }
    }

    /// Records that `contact` was seen (it sent us something or answered).
    pub fn insert(&mut self, now: Instant, contact: Contact) -> InsertOutcome {
        let Some(i) = bucket_index(&self.local, &contact.id) else {
            return InsertOutcome::Local;
        };
        let k = self.k;
        let bucket = &mut self.buckets[i];
        bucket.touched_at = Some(now);
        if let Some(pos) = bucket.entries.iter().position(|c| c.id == contact.id) {
            bucket.entries.remove(pos);
            bucket.entries.push_back(contact);
            return InsertOutcome::Updated;
        }
        if bucket.entries.len() < k {
            bucket.entries.push_back(contact);
            self.len += 1;
            return InsertOutcome::Inserted;
        }
        bucket.replacements.retain(|c| c.id != contact.id);
        if self.replacement_len > 0 {
            if bucket.replacements.len() >= self.replacement_len {
                bucket.replacements.pop_front();
            }
            bucket.replacements.push_back(contact);
        }
        match bucket.entries.front() {
            Some(lru) => InsertOutcome::Pending { lru: lru.clone() },
            None => InsertOutcome::Local,
        }
    }

    /// Removes a contact that failed to answer; the most recent spare takes its place.
    pub fn remove(&mut self, id: &DhtId) -> bool {
        let Some(i) = bucket_index(&self.local, id) else {
            return false;
        };
        let bucket = &mut self.buckets[i];
        bucket.replacements.retain(|c| c.id != *id);
        let Some(pos) = bucket.entries.iter().position(|c| c.id == *id) else {
            return false;
        };
        bucket.entries.remove(pos);
        self.len -= 1;
        if let Some(spare) = bucket.replacements.pop_back() {
            bucket.entries.push_back(spare);
            self.len += 1;
        }
        true
    }

    /// Up to `n` contacts closest to `target`, closest first.
    pub fn closest(&self, target: &DhtId, n: usize) -> Vec<Contact> {
        let mut all: Vec<(super::key::Distance, &Contact)> = self
            .buckets
            .iter()
            .flat_map(|b| b.entries.iter())
            .map(|c| (xor_distance(&c.id, target), c))
            .collect();
        let n = n.min(all.len());
        if n == 0 {
            return Vec::new();
        }
        all.select_nth_unstable_by_key(n - 1, |(d, _)| *d);
        all.truncate(n);
        all.sort_unstable_by_key(|(d, _)| *d);
        all.into_iter().map(|(_, c)| c.clone()).collect()
    }

    /// How many contacts are strictly closer to `target` than `distance`, counting at most
    /// to `limit` (no allocation).
    pub fn count_closer(
        &self,
        target: &DhtId,
        distance: &super::key::Distance,
        limit: usize,
    ) -> usize {
        let mut n = 0;
        for c in self.buckets.iter().flat_map(|b| b.entries.iter()) {
            if xor_distance(&c.id, target) < *distance {
                n += 1;
                if n >= limit {
                    break;
                }
            }
        }
        n
    }

    /// Marks bucket `index` as recently used (a lookup ran in its range).
    pub fn touch(&mut self, index: usize, now: Instant) {
        if let Some(b) = self.buckets.get_mut(index) {
            b.touched_at = Some(now);
        }
    }

    /// Non-empty buckets not used since `before`.
    pub fn stale_buckets(&self, before: Instant) -> Vec<usize> {
        self.buckets
            .iter()
            .enumerate()
            .filter(|(_, b)| !b.entries.is_empty() && b.touched_at.is_none_or(|t| t <= before))
            .map(|(i, _)| i)
            .collect()
    }

    /// Contacts in bucket `index`.
    pub fn bucket_len(&self, index: usize) -> usize {
        self.buckets.get(index).map_or(0, |b| b.entries.len())
    }

    /// Whether `id` is in the table.
    pub fn contains(&self, id: &DhtId) -> bool {
        bucket_index(&self.local, id)
            .is_some_and(|i| self.buckets[i].entries.iter().any(|c| c.id == *id))
    }

    /// Contacts held (O(1)).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no contact is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_clock::t0;
    use netrun_messages::EntityId;

    fn contact(first: u8, last: u8) -> Contact {
        let mut id = [0u8; 32];
        id[0] = first;
        id[31] = last;
        Contact {
            id: DhtId(id),
            entry: PeerEntry {
                public_key: EntityId([last; 32]),
                addrs: vec![],
            },
        }
    }

    #[test]
    fn full_bucket_keeps_old_contacts_and_promotes_spares_on_failure() {
        let now = t0();
        let mut t = KBuckets::new(DhtId([0; 32]), 2, 1);
        assert_eq!(t.insert(now, contact(0x80, 1)), InsertOutcome::Inserted);
        assert_eq!(t.insert(now, contact(0x81, 2)), InsertOutcome::Inserted);
        assert_eq!(t.insert(now, contact(0x80, 1)), InsertOutcome::Updated);
        assert_eq!(
            t.insert(now, contact(0x82, 3)),
            InsertOutcome::Pending {
                lru: contact(0x81, 2)
            }
        );
        assert_eq!(
            t.insert(now, contact(0x83, 4)),
            InsertOutcome::Pending {
                lru: contact(0x81, 2)
            }
        );
        assert_eq!((t.len(), t.bucket_len(255)), (2, 2));
        assert!(t.remove(&contact(0x81, 2).id));
        assert!(t.contains(&contact(0x83, 4).id), "newest spare promoted");
        assert!(
            !t.contains(&contact(0x82, 3).id),
            "replacement cache is bounded"
        );
        assert_eq!(t.insert(now, contact(0, 0)), InsertOutcome::Local);
        let closest = t.closest(&contact(0x83, 0).id, 1);
        assert_eq!(closest, vec![contact(0x83, 4)]);
        assert_eq!(t.stale_buckets(now), vec![255]);
        assert!(
            t.stale_buckets(now - std::time::Duration::from_secs(1))
                .is_empty()
        );
    }
}
