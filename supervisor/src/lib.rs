//! netrun supervision: an OTP-style supervisor actor on ractor.
//!
//! ractor links actors and reports their exits; this crate decides what to do about them.
//! A supervisor owns an ordered list of [`ChildSpec`]s and, when a child exits:
//!
//! - maps the exit to an [`ExitReason`] (see [`exit`] for the table);
//! - decides from the child's [`Restart`] type whether to restart it;
//! - counts the restart against its [`RestartIntensity`] and fails (escalates to its parent)
//!   when there are too many;
//! - for crashes, asks the child's [`CrashLoopGate`] and [`Backoff`] how long to wait;
//! - restarts the child and the siblings its [`Strategy`] names, in start order, after
//!   stopping those siblings in reverse start order.
//!
//! Callers hold [`ChildRef`]s, which follow a child across restarts and carry its
//! generation, and a [`SupervisorHandle`] to add and remove children, read the live
//! [`TreeSnapshot`] and shut the tree down. The runtime contract (delivery, restarts,
//! queued messages, shutdown order) is written down in `docs/runtime-semantics.md`.
//!
//! The policies (`intensity`, `backoff`, `gate`, `strategy`) are plain structs with time
//! as an input; the actor only drives them.

pub mod backoff;
pub mod child_ref;
pub mod config;
pub mod error;
pub mod exit;
pub mod gate;
pub mod intensity;
pub mod node_tree;
pub mod snapshot;
pub mod spec;
pub mod strategy;
mod supervisor;

pub use backoff::{Backoff, BackoffConfig};
pub use child_ref::{ChildRef, SendError};
pub use config::{SupervisorArgs, SupervisorConfig};
pub use error::SupervisorError;
pub use exit::ExitReason;
pub use gate::{CrashLoopConfig, CrashLoopGate, GateDecision};
pub use intensity::{IntensityTracker, RestartIntensity};
pub use snapshot::{ChildSnapshot, ChildState, SupervisorStats, TreeSnapshot};
pub use spec::{ChildKind, ChildSpec, Factory, Restart, SpawnFuture};
pub use strategy::Strategy;
pub use supervisor::{SupervisorHandle, spawn, spawn_linked};
