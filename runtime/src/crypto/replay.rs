//! Sliding anti-replay window over 64-bit packet counters.
//!
//! The window remembers which of the last [`WINDOW_SIZE`] counters below the highest accepted
//! one were seen. A counter is admissible when it is
//! - not `u64::MAX` (the sender's key is exhausted long before; a peer sending it is broken),
//! - not more than [`MAX_FORWARD`] ahead of the highest seen (a larger authenticated jump is
//!   refused and the session must re-handshake; the bitmap is never reset to make room),
//! - not older than the window, and not already seen.
//!
//! [`ReplayWindow::check`] is the cheap test done before the AEAD; [`ReplayWindow::commit`]
//! records a counter after its tag verified (and re-checks, so a duplicate that raced through
//! two AEAD opens is still accepted once).

use thiserror::Error;

/// Number of counters remembered below the highest accepted one. Matches WireGuard-class
/// reordering tolerance: a burst of 1024 packets may arrive in any order.
pub const WINDOW_SIZE: u64 = 1024;
/// Largest forward jump of the highest counter that one packet may cause. Beyond it the
/// sender has lost more than 65 536 packets in a row, or is misbehaving: re-handshake.
pub const MAX_FORWARD: u64 = 65_536;

const WORDS: usize = (WINDOW_SIZE / 64) as usize;

/// Why a counter was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ReplayError {
    /// The counter was already accepted.
    #[error("counter {0} already received")]
    Duplicate(u64),
    /// The counter is below the window; it cannot be told apart from a replay.
    #[error("counter {0} is older than the replay window")]
    TooOld(u64),
    /// The counter jumps more than [`MAX_FORWARD`] past the highest accepted one.
    #[error("counter {0} jumps too far ahead; a fresh handshake is required")]
    TooFarAhead(u64),
    /// The counter is `u64::MAX`, which is never valid.
    #[error("counter space exhausted")]
    Exhausted,
}

/// The receive-side replay window of one session direction.
#[derive(Debug, Clone, Default)]
pub struct ReplayWindow {
    /// One more than the highest accepted counter; 0 when nothing was accepted yet.
    top: u64,
    /// Bit `c % WINDOW_SIZE` is set when counter `c` (in `[top - WINDOW_SIZE, top)`) was seen.
    bits: [u64; WORDS],
}

impl ReplayWindow {
    /// An empty window: counters `0..=MAX_FORWARD - 1` are admissible.
    pub fn new() -> Self {
        Self::default()
    }

    /// One more than the highest accepted counter (0 before the first).
    pub fn top(&self) -> u64 {
        self.top
    }

    /// Whether `counter` could be accepted now. Does not change the window.
    #[inline]
    pub fn check(&self, counter: u64) -> Result<(), ReplayError> {
        check_coarse(self.top, counter)?;
        if counter < self.top && self.bit(counter) {
            return Err(ReplayError::Duplicate(counter));
        }
        Ok(())
    }

    /// Records `counter` as received. Call only after its packet authenticated.
    #[inline]
    pub fn commit(&mut self, counter: u64) -> Result<(), ReplayError> {
        self.check(counter)?;
        if counter >= self.top {
            self.advance(counter + 1);
        }
        let (word, mask) = slot(counter);
        self.bits[word] |= mask;
        Ok(())
    }

    fn bit(&self, counter: u64) -> bool {
        let (word, mask) = slot(counter);
        self.bits[word] & mask != 0
    }

    /// Moves `top` forward to `new_top`, forgetting the counters that leave the window.
    fn advance(&mut self, new_top: u64) {
        let step = new_top - self.top;
        if step >= WINDOW_SIZE {
            self.bits = [0; WORDS];
        } else {
            for counter in self.top..new_top {
                let (word, mask) = slot(counter);
                self.bits[word] &= !mask;
            }
        }
        self.top = new_top;
    }
}

/// The checks that need only `top` (no bitmap): exhaustion, forward jump, age.
#[inline]
pub(crate) fn check_coarse(top: u64, counter: u64) -> Result<(), ReplayError> {
    if counter == u64::MAX {
        return Err(ReplayError::Exhausted);
    }
    if counter >= top {
        if counter - top >= MAX_FORWARD {
            return Err(ReplayError::TooFarAhead(counter));
        }
    } else if top - counter > WINDOW_SIZE {
        return Err(ReplayError::TooOld(counter));
    }
    Ok(())
}

#[inline]
fn slot(counter: u64) -> (usize, u64) {
    let index = counter % WINDOW_SIZE;
    ((index / 64) as usize, 1u64 << (index % 64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn accepts_in_order_and_rejects_duplicates() {
        let mut w = ReplayWindow::new();
        for c in 0..3000 {
            assert_eq!(w.commit(c), Ok(()));
            assert_eq!(w.commit(c), Err(ReplayError::Duplicate(c)));
        }
        assert_eq!(w.top(), 3000);
    }

    #[test]
    fn window_edges() {
        let mut w = ReplayWindow::new();
        w.commit(5000).unwrap();
        // Oldest admissible counter: top - WINDOW_SIZE = 5001 - 1024.
        assert_eq!(w.check(5001 - WINDOW_SIZE), Ok(()));
        assert_eq!(
            w.check(5000 - WINDOW_SIZE),
            Err(ReplayError::TooOld(5000 - WINDOW_SIZE))
        );
        w.commit(5001 - WINDOW_SIZE).unwrap();
        assert_eq!(
            w.commit(5001 - WINDOW_SIZE),
            Err(ReplayError::Duplicate(5001 - WINDOW_SIZE))
        );
    }

    #[test]
    fn forward_jump_limit_is_refused_not_reset() {
        let mut w = ReplayWindow::new();
        w.commit(10).unwrap();
        let far = 11 + MAX_FORWARD;
        assert_eq!(w.commit(far), Err(ReplayError::TooFarAhead(far)));
        // Nothing was forgotten: 10 is still a duplicate, 9 still fresh.
        assert_eq!(w.commit(10), Err(ReplayError::Duplicate(10)));
        assert_eq!(w.commit(9), Ok(()));
        assert_eq!(w.commit(far - 1), Ok(()));
        assert_eq!(
            ReplayWindow::new().check(MAX_FORWARD),
            Err(ReplayError::TooFarAhead(MAX_FORWARD))
        );
        assert_eq!(ReplayWindow::new().check(MAX_FORWARD - 1), Ok(()));
    }

    #[test]
    fn max_counter_rejected() {
        let w = ReplayWindow {
            top: u64::MAX - 1,
            bits: [0; WORDS],
        };
        assert_eq!(w.check(u64::MAX), Err(ReplayError::Exhausted));
        assert_eq!(w.check(u64::MAX - 1), Ok(()));
    }

    proptest! {
        /// Against a model (set of accepted counters + highest): the window accepts a counter
        /// iff the model says it is fresh, in range, and within the forward limit.
        #[test]
        fn matches_model(ops in proptest::collection::vec(0u64..5000, 1..600)) {
            let mut w = ReplayWindow::new();
            let mut seen = BTreeSet::new();
            let mut top = 0u64;
            for c in ops {
                let expect_ok = c.checked_sub(top).is_none_or(|d| d < MAX_FORWARD)
                    && top.saturating_sub(c) <= WINDOW_SIZE
                    && !seen.contains(&c);
                let got = w.commit(c);
                prop_assert_eq!(got.is_ok(), expect_ok, "counter {} top {}", c, top);
                if got.is_ok() {
                    seen.insert(c);
                    top = top.max(c + 1);
                }
            }
        }
    }
}
