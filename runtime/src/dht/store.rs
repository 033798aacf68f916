//! Bounded record storage with expiry.

use std::collections::BTreeMap;
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
    bytes: usize,
}

impl RecordStore {
    /// An empty store.
    pub fn new(config: StoreConfig) -> Self {
        Self {
            config,
            records: BTreeMap::new(),
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
        let old = self.records.get(&key).map_or(0, |r| r.value.len());
        self.bytes = self.bytes - old + value.len();
        let expires_at = now + ttl.min(self.config.max_ttl);
        self.records.insert(key, Record { value, expires_at });
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

    /// Drops expired records; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let before = self.records.len();
        let mut freed = 0;
        self.records.retain(|_, r| {
            let live = r.expires_at > now;
            if !live {
                freed += r.value.len();
            }
            live
        });
        self.bytes -= freed;
        before - self.records.len()
    }

    /// The earliest expiry.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.records.values().map(|r| r.expires_at).min()
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
