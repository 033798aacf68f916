//! One direction of a session: [`TxKey`] seals, [`RxKey`] opens.
//!
//! Both are `Sync`: many tasks may seal with one `TxKey` at once (the counter is an atomic),
//! and many may open with one `RxKey` (the replay window is behind one short lock taken only
//! after the tag verified).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::cipher::{AeadError, KEY_LEN, PacketCipher};
use super::replay::{self, ReplayError, ReplayWindow};
use netrun_messages::header::TAG_LEN;

/// After this many packets a session reports [`TxKey::needs_rekey`]: far below any counter
/// limit, so a re-handshake has ample time to finish while sealing continues.
pub const REKEY_AFTER_PACKETS: u64 = 1 << 48;
/// Hard limit: counters at or above it are never used. Below `u64::MAX` (which receivers
/// refuse) with room for concurrent `fetch_add`s that overshoot.
pub const REJECT_AFTER_PACKETS: u64 = 1 << 60;

/// The sending half of a session: a packet cipher and the next nonce counter.
pub struct TxKey {
    cipher: PacketCipher,
    next: AtomicU64,
}

/// The counter space of a [`TxKey`] is used up; the session must re-handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("send counter exhausted; re-handshake required")]
pub struct CounterExhausted;

impl TxKey {
    /// A send key whose first packet uses counter 0.
    pub fn new(key: &[u8; KEY_LEN]) -> Self {
        Self::with_counter(key, 0)
    }

    /// A send key whose next packet uses `counter` (tests and benches start near limits).
    pub fn with_counter(key: &[u8; KEY_LEN], counter: u64) -> Self {
        Self {
            cipher: PacketCipher::new(key),
            next: AtomicU64::new(counter),
        }
    }

    /// Reserves the next counter. Each value is handed out once.
    #[inline]
    pub fn next_counter(&self) -> Result<u64, CounterExhausted> {
        // Relaxed suffices: uniqueness comes from the atomic read-modify-write itself; no
        // other memory is published through this counter.
        let counter = self.next.fetch_add(1, Ordering::Relaxed);
        if counter >= REJECT_AFTER_PACKETS {
            // Pin the counter back to the limit so that callers that keep trying can never
            // walk it around to a reused value.
            self.next.store(REJECT_AFTER_PACKETS, Ordering::Relaxed);
            return Err(CounterExhausted);
        }
        Ok(counter)
    }

    /// Counters handed out so far.
    pub fn sent(&self) -> u64 {
        self.next.load(Ordering::Relaxed)
    }

    /// Whether the session should re-handshake soon ([`REKEY_AFTER_PACKETS`] reached).
    pub fn needs_rekey(&self) -> bool {
        self.sent() >= REKEY_AFTER_PACKETS
    }

    /// The underlying cipher.
    pub fn cipher(&self) -> &PacketCipher {
        &self.cipher
    }
}

impl std::fmt::Debug for TxKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TxKey")
            .field("sent", &self.sent())
            .finish_non_exhaustive()
    }
}

/// The receiving half of a session: a packet cipher and the replay window.
pub struct RxKey {
    cipher: PacketCipher,
    window: Mutex<ReplayWindow>,
    /// Mirror of the window's `top`, read without the lock for the cheap pre-AEAD check.
    top_hint: AtomicU64,
}

impl RxKey {
    /// A receive key with an empty replay window.
    pub fn new(key: &[u8; KEY_LEN]) -> Self {
        Self {
            cipher: PacketCipher::new(key),
            window: Mutex::new(ReplayWindow::new()),
            top_hint: AtomicU64::new(0),
        }
    }

    /// The cheap check before any AEAD work: exhaustion, forward jump and age, lock-free.
    /// Duplicates inside the window are caught by [`RxKey::commit`] after the tag verified.
    #[inline]
    pub fn precheck(&self, counter: u64) -> Result<(), ReplayError> {
        replay::check_coarse(self.top_hint.load(Ordering::Acquire), counter)
    }

    /// Verifies and decrypts `buf` (ciphertext ‖ tag) in place without touching the window.
    #[inline]
    pub fn open_in_place(
        &self,
        counter: u64,
        aad: &[u8],
        buf: &mut [u8],
    ) -> Result<usize, AeadError> {
        self.cipher.open_in_place(counter, aad, buf)
    }

    /// Verifies an empty-plaintext tag (heartbeat) without touching the window.
    #[inline]
    pub fn verify_empty(
        &self,
        counter: u64,
        aad: &[u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), AeadError> {
        self.cipher.verify_empty(counter, aad, tag)
    }

    /// Records an authenticated counter: the one lock of the receive path.
    #[inline]
    pub fn commit(&self, counter: u64) -> Result<(), ReplayError> {
        // A poisoned lock only means another thread panicked while holding it; the window
        // itself is always consistent between statements, so keep using it.
        let mut window = self.window.lock().unwrap_or_else(|p| p.into_inner());
        window.commit(counter)?;
        self.top_hint.store(window.top(), Ordering::Release);
        Ok(())
    }

    /// Whether at least one packet was authenticated and committed under this key. For a
    /// responder this is the key confirmation: the initiator derived the same keys.
    pub fn has_authenticated(&self) -> bool {
        self.top_hint.load(Ordering::Acquire) > 0
    }
}

impl std::fmt::Debug for RxKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RxKey")
            .field("top", &self.top_hint.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zeroize::Zeroizing;

    fn assert_sync<T: Send + Sync>() {}

    #[test]
    fn keys_are_send_and_sync() {
        assert_sync::<TxKey>();
        assert_sync::<RxKey>();
    }

    #[test]
    fn counters_are_unique_across_threads() {
        let tx = TxKey::new(&Zeroizing::new([1; 32]));
        let mut all: Vec<u64> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        (0..1000)
                            .map(|_| tx.next_counter().unwrap())
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        });
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 4000);
    }

    #[test]
    fn exhaustion_and_rekey() {
        let key = Zeroizing::new([1; 32]);
        let tx = TxKey::with_counter(&key, REKEY_AFTER_PACKETS - 1);
        assert!(!tx.needs_rekey());
        tx.next_counter().unwrap();
        assert!(tx.needs_rekey());
        let tx = TxKey::with_counter(&key, REJECT_AFTER_PACKETS - 1);
        assert_eq!(tx.next_counter(), Ok(REJECT_AFTER_PACKETS - 1));
        assert_eq!(tx.next_counter(), Err(CounterExhausted));
        assert_eq!(tx.next_counter(), Err(CounterExhausted));
        assert_eq!(tx.sent(), REJECT_AFTER_PACKETS);
    }
}
