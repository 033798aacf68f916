//! Bounded memory of recently relayed `(src, stream, counter)` triples.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use netrun_messages::NodeId;

/// Recently seen `(source, stream, counter)` triples, for loop and duplicate suppression.
///
/// Two generations of at most `capacity / 2` triples each: a triple is "seen" if it is in
/// either; inserts go to the current one, and when it fills (or `max_age` has passed since
/// the last rotation, checked by [`handle_tick`](Self::handle_tick)) the previous generation
/// is dropped and the current one becomes previous. So memory is bounded by `capacity`, a
/// triple is remembered for at least `capacity / 2` later inserts or one `max_age`,
/// whichever ends first, and no insert costs more than one hash-set operation (plus an
/// occasional clear). The age bound matters because a counter restarts when a session
/// rekeys; without it, a quiet relay could mistake a new session's first packets for old
/// ones.
#[derive(Debug)]
pub struct RecentlySeen {
    current: HashSet<(NodeId, u64, u64)>,
    previous: HashSet<(NodeId, u64, u64)>,
    generation_len: usize,
    max_age: Duration,
    rotated_at: Option<Instant>,
}

/// Triples a relay remembers by default: two generations of 2,048, enough for a few
/// thousand packets in flight through one relay within [`DEFAULT_SEEN_MAX_AGE`].
pub const DEFAULT_SEEN_CAPACITY: usize = 4096;
/// Default age bound: longer than any path's delivery time, far shorter than a session
/// lives before it can rekey and restart its counters.
pub const DEFAULT_SEEN_MAX_AGE: Duration = Duration::from_secs(2);

impl Default for RecentlySeen {
    fn default() -> Self {
        Self::new(DEFAULT_SEEN_CAPACITY, DEFAULT_SEEN_MAX_AGE)
    }
}

impl RecentlySeen {
    /// A memory of at most `capacity` triples (at least 2), each kept for at most about
    /// two `max_age` periods.
    pub fn new(capacity: usize, max_age: Duration) -> Self {
        let generation_len = (capacity / 2).max(1);
        Self {
            current: HashSet::with_capacity(generation_len),
            previous: HashSet::with_capacity(generation_len),
            generation_len,
            max_age,
            rotated_at: None,
        }
    }

    /// Records the triple; returns `true` if it was already remembered.
    #[inline]
    pub fn check_and_insert(&mut self, src: NodeId, stream: u64, counter: u64) -> bool {
        let key = (src, stream, counter);
        if self.previous.contains(&key) || !self.current.insert(key) {
            return true;
        }
        if self.current.len() >= self.generation_len {
            self.rotate();
        }
        false
    }

    /// Rotates a generation if `max_age` has passed since the last rotation.
    pub fn handle_tick(&mut self, now: Instant) {
        match self.rotated_at {
            None => self.rotated_at = Some(now),
            Some(at) if now.saturating_duration_since(at) >= self.max_age => {
                self.rotate();
                self.rotated_at = Some(now);
            }
            Some(_) => {}
        }
    }

    /// Triples remembered.
    pub fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn rotate(&mut self) {
        std::mem::swap(&mut self.current, &mut self.previous);
        self.current.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_clock::t0;

    #[test]
    fn remembers_then_forgets_within_bounds() {
        let mut s = RecentlySeen::new(8, Duration::from_secs(1));
        assert!(!s.check_and_insert(NodeId(1), 0, 1));
        assert!(s.check_and_insert(NodeId(1), 0, 1));
        for c in 2..100 {
            assert!(!s.check_and_insert(NodeId(1), 0, c));
            assert!(s.len() <= 8);
        }
        assert!(!s.check_and_insert(NodeId(1), 0, 1), "old triples age out");
        assert!(s.check_and_insert(NodeId(1), 0, 99));
    }

    #[test]
    fn ticks_age_out() {
        let t0 = t0();
        let mut s = RecentlySeen::new(1024, Duration::from_secs(1));
        s.handle_tick(t0);
        s.check_and_insert(NodeId(1), 0, 1);
        s.handle_tick(t0 + Duration::from_millis(1500));
        assert!(s.check_and_insert(NodeId(1), 0, 1), "one rotation keeps it");
        s.handle_tick(t0 + Duration::from_millis(3000));
        s.handle_tick(t0 + Duration::from_millis(4500));
        assert!(!s.check_and_insert(NodeId(1), 0, 1));
    }
}
