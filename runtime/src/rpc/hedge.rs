//! Hedged calls: if the first target is slow, ask another one too and take the first reply.
//!
//! The primary attempt starts at t = 0; hedge *i* becomes due at `delay × i` (up to
//! `max_hedges`), always to a target not tried yet — never the same node twice. The
//! first successful reply wins and every other attempt still outstanding is reported for
//! CANCEL. A failed reply waits for the others; when the last outstanding attempt fails,
//! its error is the result (deterministic: the last one to finish) and no new hedge is
//! launched. Each attempt is an ordinary call in the caller's [`Calls`](super::Calls)
//! table; this struct only tracks the group.

use std::time::{Duration, Instant};

use netrun_messages::NodeId;
use netrun_messages::rpc::CallId;
use thiserror::Error;

/// Most hedges one call may add to its primary attempt.
pub const MAX_HEDGES: u32 = 4;

/// When and how much to hedge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HedgePolicy {
    /// Wait before each further attempt. Default 50 ms.
    pub delay: Duration,
    /// Attempts besides the primary, at most [`MAX_HEDGES`]. Default 1.
    pub max_hedges: u32,
}

impl Default for HedgePolicy {
    fn default() -> Self {
        Self {
            delay: Duration::from_millis(50),
            max_hedges: 1,
        }
    }
}

/// Why an attempt could not join the group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum HedgeError {
    /// The target was already tried in this group.
    #[error("target already tried")]
    SameTarget,
    /// The group has its primary plus `max_hedges` attempts.
    #[error("no hedge left")]
    Exhausted,
    /// The group already has its result.
    #[error("hedged call already finished")]
    Finished,
}

/// What to do after a reply ([`Hedge::handle_reply`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HedgeStep {
    /// Other attempts are outstanding: wait for them.
    Wait,
    /// The group is decided: `winner`'s result is the call's result (its success, or the
    /// last error); cancel every attempt in `cancel`.
    Done {
        /// The attempt whose result stands.
        winner: CallId,
        /// Attempts still outstanding, to CANCEL.
        cancel: Vec<(NodeId, CallId)>,
    },
    /// The reply is for no outstanding attempt of this group (or the group is decided).
    Ignored,
}

/// One hedged call: its attempts and the hedge timer.
#[derive(Debug, Clone)]
pub struct Hedge {
    policy: HedgePolicy,
    started: Instant,
    attempts: Vec<Attempt>,
    /// No further hedge will be launched (decided, exhausted, or no fresh target left).
    closed: bool,
    finished: bool,
}

#[derive(Debug, Clone, Copy)]
struct Attempt {
    target: NodeId,
    call_id: CallId,
    outstanding: bool,
}

impl Hedge {
    /// A group whose primary attempt `call_id` went to `primary` at `now`.
    pub fn new(now: Instant, policy: HedgePolicy, primary: NodeId, call_id: CallId) -> Self {
        let policy = HedgePolicy {
            max_hedges: policy.max_hedges.min(MAX_HEDGES),
            ..policy
        };
        Self {
            closed: policy.max_hedges == 0,
            policy,
            started: now,
            attempts: vec![Attempt {
                target: primary,
                call_id,
                outstanding: true,
            }],
            finished: false,
        }
    }

    /// When the next hedge is due, if one may still be launched.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.closed || self.finished {
            return None;
        }
        // attempts.len() ≤ 1 + MAX_HEDGES, so the factor fits in u32.
        let hedges = self.attempts.len() as u32;
        self.started
            .checked_add(self.policy.delay.saturating_mul(hedges))
    }

    /// At `now`, the target of the hedge that is due: the first of `candidates` (in the
    /// caller's preference order) not tried yet. `None` when no hedge is due; when one is
    /// due but every candidate was tried, hedging stops for this group. Start the call,
    /// then register it with [`Hedge::add_attempt`].
    pub fn handle_timeout(&mut self, now: Instant, candidates: &[NodeId]) -> Option<NodeId> {
        let due = self.poll_timeout()?;
        if now < due {
            return None;
        }
        let fresh = candidates.iter().copied().find(|c| !self.tried(*c));
        if fresh.is_none() {
            self.closed = true;
        }
        fresh
    }

    /// Registers a launched hedge. Refuses a target already tried, a group at its limit
    /// and a decided group (cancel that call).
    pub fn add_attempt(&mut self, target: NodeId, call_id: CallId) -> Result<(), HedgeError> {
        if self.finished {
            return Err(HedgeError::Finished);
        }
        if self.tried(target) {
            return Err(HedgeError::SameTarget);
        }
        if self.attempts.len() as u32 > self.policy.max_hedges {
            return Err(HedgeError::Exhausted);
        }
        self.attempts.push(Attempt {
            target,
            call_id,
            outstanding: true,
        });
        if self.attempts.len() as u32 > self.policy.max_hedges {
            self.closed = true;
        }
        Ok(())
    }

    /// An attempt ended, successfully or not.
    pub fn handle_reply(&mut self, call_id: CallId, success: bool) -> HedgeStep {
        if self.finished {
            return HedgeStep::Ignored;
        }
        let Some(attempt) = self
            .attempts
            .iter_mut()
            .find(|a| a.call_id == call_id && a.outstanding)
        else {
            return HedgeStep::Ignored;
        };
        attempt.outstanding = false;
        let others_outstanding = self.attempts.iter().any(|a| a.outstanding);
        if !success && others_outstanding {
            return HedgeStep::Wait;
        }
        self.finished = true;
        self.closed = true;
        let cancel = self
            .attempts
            .iter_mut()
            .filter(|a| a.outstanding)
            .map(|a| {
                a.outstanding = false;
                (a.target, a.call_id)
            })
            .collect();
        HedgeStep::Done {
            winner: call_id,
            cancel,
        }
    }

    /// Every attempt still outstanding (to cancel when the whole call is dropped).
    pub fn outstanding(&self) -> impl Iterator<Item = (NodeId, CallId)> + '_ {
        self.attempts
            .iter()
            .filter(|a| a.outstanding)
            .map(|a| (a.target, a.call_id))
    }

    /// The targets tried so far, in launch order.
    pub fn targets(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.attempts.iter().map(|a| a.target)
    }

    /// Whether the group is decided.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    fn tried(&self, target: NodeId) -> bool {
        self.attempts.iter().any(|a| a.target == target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_clock::t0;

    const A: NodeId = NodeId(1);
    const B: NodeId = NodeId(2);
    const C: NodeId = NodeId(3);

    fn policy(max_hedges: u32) -> HedgePolicy {
        HedgePolicy {
            delay: Duration::from_millis(50),
            max_hedges,
        }
    }

    #[test]
    fn hedge_never_picks_the_same_target_and_cancels_losers() {
        let t0 = t0();
        let mut h = Hedge::new(t0, policy(2), A, CallId(10));
        assert_eq!(h.poll_timeout(), Some(t0 + Duration::from_millis(50)));
        assert_eq!(
            h.handle_timeout(t0 + Duration::from_millis(49), &[A, B, C]),
            None
        );
        // Candidates in preference order start with the primary: it is skipped.
        let target = h.handle_timeout(t0 + Duration::from_millis(50), &[A, B, C]);
        assert_eq!(target, Some(B));
        assert_eq!(h.add_attempt(A, CallId(11)), Err(HedgeError::SameTarget));
        h.add_attempt(B, CallId(11)).expect("fresh target");
        assert_eq!(h.poll_timeout(), Some(t0 + Duration::from_millis(100)));
        let target = h.handle_timeout(t0 + Duration::from_millis(100), &[B, A, C]);
        assert_eq!(target, Some(C));
        h.add_attempt(C, CallId(12)).expect("fresh target");
        assert_eq!(h.poll_timeout(), None, "two hedges used");
        assert_eq!(
            h.add_attempt(NodeId(4), CallId(13)),
            Err(HedgeError::Exhausted)
        );
        let targets: Vec<_> = h.targets().collect();
        assert_eq!(targets, vec![A, B, C]);
        // B answers first: A and C are cancelled.
        let step = h.handle_reply(CallId(11), true);
        assert_eq!(
            step,
            HedgeStep::Done {
                winner: CallId(11),
                cancel: vec![(A, CallId(10)), (C, CallId(12))],
            }
        );
        assert!(h.is_finished());
        assert_eq!(h.handle_reply(CallId(10), true), HedgeStep::Ignored);
        assert_eq!(h.outstanding().count(), 0);
    }

    #[test]
    fn failures_wait_for_the_rest_and_the_last_error_stands() {
        let t0 = t0();
        let mut h = Hedge::new(t0, policy(1), A, CallId(1));
        assert_eq!(
            h.handle_timeout(t0 + Duration::from_millis(60), &[A, B]),
            Some(B)
        );
        h.add_attempt(B, CallId(2)).expect("fresh");
        assert_eq!(h.handle_reply(CallId(1), false), HedgeStep::Wait);
        assert_eq!(h.handle_reply(CallId(1), false), HedgeStep::Ignored);
        assert_eq!(
            h.handle_reply(CallId(2), false),
            HedgeStep::Done {
                winner: CallId(2),
                cancel: vec![],
            }
        );
    }

    #[test]
    fn a_failed_primary_before_the_hedge_ends_the_group() {
        let t0 = t0();
        let mut h = Hedge::new(t0, policy(1), A, CallId(1));
        assert_eq!(
            h.handle_reply(CallId(1), false),
            HedgeStep::Done {
                winner: CallId(1),
                cancel: vec![],
            }
        );
        assert_eq!(h.poll_timeout(), None);
        assert_eq!(h.add_attempt(B, CallId(2)), Err(HedgeError::Finished));
    }

    #[test]
    fn no_fresh_candidate_stops_hedging() {
        let t0 = t0();
        let mut h = Hedge::new(t0, policy(3), A, CallId(1));
        assert_eq!(h.handle_timeout(t0 + Duration::from_secs(1), &[A]), None);
        assert_eq!(h.poll_timeout(), None);
        let capped = Hedge::new(t0, policy(100), A, CallId(1));
        assert_eq!(capped.policy.max_hedges, MAX_HEDGES);
        assert_eq!(Hedge::new(t0, policy(0), A, CallId(1)).poll_timeout(), None);
    }
}
