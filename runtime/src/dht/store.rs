//! Bounded record storage with expiry.
//!
//! Records are kept by key; their expiries are also kept in an ordered set of
//! `(expires_at, key)`, updated on every put and removal, so the next expiry is the set's
//! first element and a sweep visits only the records that expired.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use netrun_messages::discovery::{DhtId, MAX_DHT_VALUE_LEN};
use thiserror::Error;

/// Storage limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreConfig {
    /// Most records held.
    pub max_records: usize,
    /// Most value bytes held in total.
    pub max_bytes: usize,
    /// Longest lifetime granted; longer requests are shortened to it.
    pub max_ttl: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            max_records: 4096,
            max_bytes: 4 * 1024 * 1024,
            max_ttl: Duration::from_secs(24 * 3600),
        }
    }
}

/// Why a record was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum StoreError {
    /// The value is larger than [`MAX_DHT_VALUE_LEN`].
    #[error("value of {0} bytes exceeds the record limit")]
    ValueTooLarge(usize),
    /// The count or byte limit would be exceeded (after dropping expired records); the new
    /// record is refused and existing ones are kept.
    #[error("record store is full")]
    Full,
    /// A zero lifetime.
    #[error("record lifetime is zero")]
    ZeroTtl,
    /// The contact record rules refused the value (see [`admit_store`](super::admit_store)).
    #[error("value refused: {0}")]
    Refused(#[from] super::contact::ContactStoreError),
}

#[derive(Debug, Clone)]
struct Record {
    value: Vec<u8>,
    expires_at: Instant,
}

/// Records by key, bounded by count and bytes; each record expires.
#[derive(Debug)]
pub struct RecordStore {
    config: StoreConfig,
    /// By key, so hand-offs to a newcomer go out in one order on every run.
    records: BTreeMap<DhtId, Record>,
    /// `(expires_at, key)` of every record in `records`, and nothing else.
    expiries: BTreeSet<(Instant, DhtId)>,
    bytes: usize,
}

impl RecordStore {
    /// An empty store.
    pub fn new(config: StoreConfig) -> Self {
        Self {
            config,
            records: BTreeMap::new(),
            expiries: BTreeSet::new(),
            bytes: 0,
        }
    }

    /// Stores (or replaces) `key` for `ttl`, capped at `max_ttl`.
    pub fn put(
        &mut self,
        now: Instant,
        key: DhtId,
        value: Vec<u8>,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        if value.len() > MAX_DHT_VALUE_LEN {
            return Err(StoreError::ValueTooLarge(value.len()));
        }
        if ttl.is_zero() {
            return Err(StoreError::ZeroTtl);
        }
        if !self.fits(&key, value.len()) {
            self.expire(now);
            if !self.fits(&key, value.len()) {
                return Err(StoreError::Full);
            }
        }
        let expires_at = now + ttl.min(self.config.max_ttl);
        self.bytes += value.len();
        if let Some(old) = self.records.insert(key, Record { value, expires_at }) {
            self.bytes -= old.value.len();
            self.expiries.remove(&(old.expires_at, key));
        }
        self.expiries.insert((expires_at, key));
        Ok(())
    }

    fn fits(&self, key: &DhtId, len: usize) -> bool {
        let old = self.records.get(key).map(|r| r.value.len());
        let count_ok = old.is_some() || self.records.len() < self.config.max_records;
        count_ok && self.bytes - old.unwrap_or(0) + len <= self.config.max_bytes
    }

    /// The live value under `key`.
    pub fn get(&self, now: Instant, key: &DhtId) -> Option<&[u8]> {
        self.records
            .get(key)
            .filter(|r| r.expires_at > now)
            .map(|r| r.value.as_slice())
    }

    /// Live records with their expiry.
    pub fn iter(&self, now: Instant) -> impl Iterator<Item = (DhtId, &[u8], Instant)> {
        self.records
            .iter()
            .filter(move |(_, r)| r.expires_at > now)
            .map(|(k, r)| (*k, r.value.as_slice(), r.expires_at))
    }

    /// Drops expired records; returns how many. Visits only the records that expired.
    pub fn expire(&mut self, now: Instant) -> usize {
        let mut dropped = 0;
        while let Some(&(expires_at, key)) = self.expiries.first() {
            if expires_at > now {
                break;
            }
            self.expiries.pop_first();
            if let Some(record) = self.records.remove(&key) {
                self.bytes -= record.value.len();
                dropped += 1;
            }
        }
        dropped
    }

    /// The earliest expiry.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.expiries.first().map(|(expires_at, _)| *expires_at)
    }

    /// Records held (live or not yet swept).
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Value bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_clock::t0;
    use proptest::prelude::*;

    fn key(n: u8) -> DhtId {
        DhtId([n; 32])
    }

    fn config(max_records: usize, max_bytes: usize) -> StoreConfig {
        StoreConfig {
            max_records,
            max_bytes,
            max_ttl: Duration::from_secs(100),
        }
    }

    #[test]
    fn a_replaced_record_keeps_only_its_new_expiry() {
        let now = t0();
        let at = |secs| now + Duration::from_secs(secs);
        let mut store = RecordStore::new(config(8, 1024));
        store
            .put(now, key(1), vec![1; 10], Duration::from_secs(10))
            .expect("fits");
        store
            .put(now, key(2), vec![2; 10], Duration::from_secs(20))
            .expect("fits");
        assert_eq!(store.poll_timeout(), Some(at(10)));
        store
            .put(now, key(1), vec![1; 4], Duration::from_secs(30))
            .expect("fits");
        assert_eq!(store.poll_timeout(), Some(at(20)));
        assert_eq!(store.bytes(), 14);
        assert_eq!(store.expire(at(25)), 1);
        assert_eq!(store.get(at(25), &key(1)), Some(&[1; 4][..]));
        assert_eq!(store.poll_timeout(), Some(at(30)));
        assert_eq!(store.expire(at(30)), 1);
        assert!(store.is_empty());
        assert_eq!((store.bytes(), store.poll_timeout()), (0, None));
    }

    proptest! {
        /// Against a model: the same records, bytes and next expiry after any mix of puts
        /// (new and replacing, some refused) and sweeps.
        #[test]
        fn matches_a_model(
            ops in proptest::collection::vec((0u8..3, 0u8..6, 0usize..40, 0u64..150, 0u64..60), 1..60)
        ) {
            let t0 = t0();
            let mut store = RecordStore::new(config(4, 100));
            let mut model: BTreeMap<DhtId, (usize, Instant)> = BTreeMap::new();
            for (op, k, len, ttl, at) in ops {
                let now = t0 + Duration::from_secs(at);
                if op == 0 {
                    store.expire(now);
                    model.retain(|_, (_, exp)| *exp > now);
                } else {
                    let ttl = Duration::from_secs(ttl);
                    let fits = |model: &BTreeMap<DhtId, (usize, Instant)>| {
                        let old = model.get(&key(k)).map(|(len, _)| *len);
                        let bytes: usize = model.values().map(|(len, _)| len).sum();
                        (old.is_some() || model.len() < 4) && bytes - old.unwrap_or(0) + len <= 100
                    };
                    let expect = if ttl.is_zero() {
                        false
                    } else if fits(&model) {
                        true
                    } else {
                        model.retain(|_, (_, exp)| *exp > now);
                        fits(&model)
                    };
                    let stored = store.put(now, key(k), vec![k; len], ttl).is_ok();
                    prop_assert_eq!(stored, expect);
                    if stored {
                        model.insert(key(k), (len, now + ttl.min(Duration::from_secs(100))));
                    }
                }
                prop_assert_eq!(store.len(), model.len());
                prop_assert_eq!(store.bytes(), model.values().map(|(len, _)| len).sum::<usize>());
                prop_assert_eq!(store.poll_timeout(), model.values().map(|(_, exp)| *exp).min());
                prop_assert_eq!(store.expiries.len(), store.records.len());
            }
        }
    }
}
