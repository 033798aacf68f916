//! Errors of supervisor operations.

use std::time::Duration;

use ractor::SpawnErr;

/// Why a supervisor operation failed, or why a supervisor itself failed.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// A child with this id already exists.
    #[error("duplicate child id {0:?}")]
    DuplicateChild(String),
    /// No child has this id.
    #[error("unknown child id {0:?}")]
    UnknownChild(String),
    /// The child exists but is not a supervisor.
    #[error("child {0:?} is not a supervisor")]
    NotASupervisor(String),
    /// The child's factory failed to start it.
    #[error("child {id:?} failed to start: {}", startup_cause(source))]
    Spawn {
        /// The child's id.
        id: String,
        /// The factory's error.
        #[source]
        source: SpawnErr,
    },
    /// More restarts than the intensity allows; the supervisor escalates by failing.
    #[error("restart intensity exceeded: {restarts} restarts within {period:?}")]
    IntensityExceeded {
        /// Restarts counted, including the refused one.
        restarts: u32,
        /// The intensity period.
        period: Duration,
    },
    /// The supervisor is not running (stopped, failed or shutting down).
    #[error("supervisor is not running")]
    Unavailable,
}

/// The innermost readable cause of a spawn error (ractor wraps the actor's own startup
/// error in `StartupFailed`, whose display alone says only "panicked during startup").
fn startup_cause(error: &SpawnErr) -> String {
    match error {
        SpawnErr::StartupFailed(inner) => inner.to_string(),
        other => other.to_string(),
    }
}
