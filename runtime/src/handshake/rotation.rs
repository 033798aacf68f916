//! What to do when an initiation arrives for a node that already has a session.
//!
//! | existing session | new static key | new ephemeral | outcome |
//! |---|---|---|---|
//! | none | – | – | [`Rotation::Accept`] |
//! | any | same | same | [`Rotation::DropReplay`] |
//! | any | same | fresh | [`Rotation::AcceptRotation`] (peer restarted or rekeys) |
//! | alive | different | – | [`Rotation::RefuseFresh`] |
//! | timed out | different | – | [`Rotation::AcceptRotation`] |
//!
//! A different static key can only claim a node id it hashes to if it is the same ed25519
//! key (the responder checks this), so "different static" means a key collision attempt or
//! a re-keyed identity; a live session is never silently replaced by it.

use std::time::{Duration, Instant};

use subtle::ConstantTimeEq;

/// What the responder knows about the current session with the initiating node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveSession {
    /// The peer's Noise static key (X25519) in that session.
    pub static_key: [u8; 32],
    /// The initiator ephemeral of the handshake that created that session.
    pub initiator_ephemeral: [u8; 32],
    /// When an authenticated packet of that session last arrived.
    pub last_heard: Instant,
}

/// The decision for one initiation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotation {
    /// No existing session: accept.
    Accept,
    /// Replace the existing session once the new one is confirmed.
    AcceptRotation,
    /// The exact initiation was processed before: drop silently.
    DropReplay,
    /// A different key claims a node whose session is alive: refuse.
    RefuseFresh,
}

impl Rotation {
    /// Whether the handshake may proceed.
    pub fn accepts(self) -> bool {
        matches!(self, Self::Accept | Self::AcceptRotation)
    }
}

/// Decides an initiation against the existing session (a pure function; see module docs).
/// A session is alive while `now - last_heard < session_timeout`.
pub fn rotation(
    existing: Option<&LiveSession>,
    new_static: &[u8; 32],
    new_ephemeral: &[u8; 32],
    now: Instant,
    session_timeout: Duration,
) -> Rotation {
    let Some(live) = existing else {
        return Rotation::Accept;
    };
    let same_static: bool = live.static_key.ct_eq(new_static).into();
    if same_static {
        let same_ephemeral: bool = live.initiator_ephemeral.ct_eq(new_ephemeral).into();
        return if same_ephemeral {
            Rotation::DropReplay
        } else {
            Rotation::AcceptRotation
        };
    }
    if now.saturating_duration_since(live.last_heard) < session_timeout {
        Rotation::RefuseFresh
    } else {
        Rotation::AcceptRotation
    }
}

/// Simultaneous open: both nodes sent a first message before either answered. Exactly one
/// initiation must win, the same one on both sides, so the rule depends only on the two
/// node ids: the initiation of the node with the lower id wins. Returns whether `local`
/// keeps its own initiation (and so drops `remote`'s first message).
pub fn keeps_own_initiation(
    local: netrun_messages::NodeId,
    remote: netrun_messages::NodeId,
) -> bool {
    local < remote
}

#[cfg(test)]
mod tests {
    #[test]
    fn exactly_one_simultaneous_initiation_wins() {
        use netrun_messages::NodeId;
        for (a, b) in [(1u64, 2u64), (7, 3), (u64::MAX, 0)] {
            let (a, b) = (NodeId(a), NodeId(b));
            assert_ne!(
                super::keeps_own_initiation(a, b),
                super::keeps_own_initiation(b, a)
            );
        }
    }

    use super::*;

    #[test]
    fn table() {
        let t0 = crate::test_clock::t0();
        let timeout = Duration::from_secs(30);
        let live = LiveSession {
            static_key: [1; 32],
            initiator_ephemeral: [2; 32],
            last_heard: t0,
        };
        let at = |s| t0 + Duration::from_secs(s);
        assert_eq!(
            rotation(None, &[1; 32], &[2; 32], t0, timeout),
            Rotation::Accept
        );
        assert_eq!(
            rotation(Some(&live), &[1; 32], &[2; 32], at(1), timeout),
            Rotation::DropReplay
        );
        assert_eq!(
            rotation(Some(&live), &[1; 32], &[2; 32], at(99), timeout),
            Rotation::DropReplay
        );
        assert_eq!(
            rotation(Some(&live), &[1; 32], &[3; 32], at(1), timeout),
            Rotation::AcceptRotation
        );
        assert_eq!(
            rotation(Some(&live), &[9; 32], &[3; 32], at(29), timeout),
            Rotation::RefuseFresh
        );
        assert_eq!(
            rotation(Some(&live), &[9; 32], &[3; 32], at(30), timeout),
            Rotation::AcceptRotation
        );
        assert!(!Rotation::RefuseFresh.accepts());
        assert!(Rotation::AcceptRotation.accepts());
    }
}
