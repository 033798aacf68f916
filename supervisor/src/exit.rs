//! Structured exit reasons and the mapping from ractor's termination events.
//!
//! ractor reports a child's end as either `ActorTerminated(cell, state, Option<String>)`
//! or `ActorFailed(cell, error)`. [`ExitReason::from_stop_reason`] and
//! [`ExitReason::from_failure`] turn those into one closed vocabulary:
//!
//! | ractor event                                   | exit reason            |
//! |------------------------------------------------|------------------------|
//! | `ActorTerminated(.., None)`                    | `Normal`               |
//! | `ActorTerminated(.., Some("normal"))`           | `Normal`               |
//! | `ActorTerminated(.., Some("Drained"))`          | `Normal`               |
//! | `ActorTerminated(.., Some("shutdown"))`         | `Shutdown`             |
//! | `ActorTerminated(.., Some("migrated"))`         | `Migrated`             |
//! | `ActorTerminated(.., Some("killed"))`           | `Killed`               |
//! | `ActorTerminated(.., Some("actor_task_cancelled"))` | `Killed`           |
//! | `ActorTerminated(.., Some(other))`              | `Failed(other)`        |
//! | `ActorFailed(.., err)` (error or panic)         | `Failed(err text)`     |
//!
//! Any stop reason outside the table is abnormal, as in OTP: a child that wants a clean
//! exit stops with no reason or with one of the constants in [`reason`].

use serde::{Deserialize, Serialize};

/// Stop-reason strings a child passes to `ActorRef::stop(Some(..))` to say why it ended.
pub mod reason {
    /// The child finished its work; transient children are not restarted.
    pub const NORMAL: &str = "normal";
    /// The child was asked to shut down; transient children are not restarted.
    pub const SHUTDOWN: &str = "shutdown";
    /// The child moved to another node; never counted as a crash.
    pub const MIGRATED: &str = "migrated";
    /// ractor's own reason for a child ended by the kill signal.
    pub const KILLED: &str = "killed";
    /// ractor's reason when the actor's task was cancelled under it.
    pub(crate) const TASK_CANCELLED: &str = "actor_task_cancelled";
    /// ractor's reason after `drain()` emptied the mailbox.
    pub(crate) const DRAINED: &str = "Drained";
}

/// Why one incarnation of a child ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", content = "detail", rename_all = "snake_case")]
pub enum ExitReason {
    /// Finished on its own without error.
    Normal,
    /// Stopped on request (by its supervisor or an operator).
    Shutdown,
    /// Returned an error, panicked, or stopped with an unrecognised reason.
    Failed(String),
    /// Ended by the kill signal (it ignored a stop, or a parent died).
    Killed,
    /// Handed over to another node; never a crash.
    Migrated,
}

impl ExitReason {
    /// Maps the optional reason string of `SupervisionEvent::ActorTerminated`.
    pub fn from_stop_reason(text: Option<&str>) -> Self {
        match text {
            None | Some(reason::NORMAL) | Some(reason::DRAINED) => Self::Normal,
            Some(reason::SHUTDOWN) => Self::Shutdown,
            Some(reason::MIGRATED) => Self::Migrated,
            Some(reason::KILLED) | Some(reason::TASK_CANCELLED) => Self::Killed,
            Some(other) => Self::Failed(other.to_owned()),
        }
    }

    /// Maps the error carried by `SupervisionEvent::ActorFailed`.
    pub fn from_failure(error: &dyn std::fmt::Display) -> Self {
        Self::Failed(error.to_string())
    }

    /// Whether this exit counts as a crash (feeds backoff and the crash-loop gate).
    pub fn is_crash(&self) -> bool {
        matches!(self, Self::Failed(_) | Self::Killed)
    }

    /// Whether this exit is a clean end for a transient child (no restart).
    pub fn is_clean(&self) -> bool {
        matches!(self, Self::Normal | Self::Shutdown | Self::Migrated)
    }
}

impl std::fmt::Display for ExitReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Normal => f.write_str("normal"),
            Self::Shutdown => f.write_str("shutdown"),
            Self::Failed(text) => write!(f, "failed: {text}"),
            Self::Killed => f.write_str("killed"),
            Self::Migrated => f.write_str("migrated"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_reasons_map_to_the_table() {
        assert_eq!(ExitReason::from_stop_reason(None), ExitReason::Normal);
        assert_eq!(
            ExitReason::from_stop_reason(Some("normal")),
            ExitReason::Normal
        );
        assert_eq!(
            ExitReason::from_stop_reason(Some("Drained")),
            ExitReason::Normal
        );
        assert_eq!(
            ExitReason::from_stop_reason(Some("shutdown")),
            ExitReason::Shutdown
        );
        assert_eq!(
            ExitReason::from_stop_reason(Some("migrated")),
            ExitReason::Migrated
        );
        assert_eq!(
            ExitReason::from_stop_reason(Some("killed")),
            ExitReason::Killed
        );
        assert_eq!(
            ExitReason::from_stop_reason(Some("actor_task_cancelled")),
            ExitReason::Killed
        );
        assert_eq!(
            ExitReason::from_stop_reason(Some("disk gone")),
            ExitReason::Failed("disk gone".into())
        );
    }

    #[test]
    fn migration_is_clean_and_not_a_crash() {
        assert!(ExitReason::Migrated.is_clean());
        assert!(!ExitReason::Migrated.is_crash());
        assert!(ExitReason::Killed.is_crash());
        assert!(!ExitReason::Killed.is_clean());
    }
}
