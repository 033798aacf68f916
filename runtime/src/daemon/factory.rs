//! Daemon kinds: named constructors that turn a [`DaemonConfig`] into a daemon.
//!
//! A node registers each kind once, before it accepts spawns; a spawn (local, placed
//! remotely, or a restart) names the kind and passes the configuration. Factories are user
//! code, so [`DaemonFactories::build`] catches their panics.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use thiserror::Error;

use super::host::panic_message;
use super::{DaemonConfig, DaemonError, MeshDaemon};

/// Longest kind name in bytes.
pub const MAX_KIND_LEN: usize = 128;
/// Most kinds one registry holds.
pub const MAX_KINDS: usize = 1024;

/// A constructor of one daemon kind. Shared (`Arc`) so the registry, placed spawns and
/// restarts can all hold it.
pub type DaemonFactory =
    Arc<dyn Fn(&DaemonConfig) -> Result<Box<dyn MeshDaemon>, DaemonError> + Send + Sync>;

/// Wraps a closure as a [`DaemonFactory`].
pub fn factory<F>(f: F) -> DaemonFactory
where
    F: Fn(&DaemonConfig) -> Result<Box<dyn MeshDaemon>, DaemonError> + Send + Sync + 'static,
{
    Arc::new(f)
}

/// The kinds a node can run, by name.
#[derive(Clone, Default)]
pub struct DaemonFactories {
    kinds: BTreeMap<String, DaemonFactory>,
}

/// Why a kind could not be registered or built.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FactoryError {
    /// The kind is already registered; registrations are never overwritten.
    #[error("daemon kind `{0}` is already registered")]
    AlreadyRegistered(String),
    /// No factory is registered under this kind.
    #[error("daemon kind `{0}` is not registered")]
    NotFound(String),
    /// The kind name is empty or longer than [`MAX_KIND_LEN`].
    #[error("daemon kind name must be 1..={MAX_KIND_LEN} bytes")]
    BadName,
    /// The registry already holds [`MAX_KINDS`] kinds.
    #[error("at most {MAX_KINDS} daemon kinds")]
    Full,
    /// The factory refused the configuration.
    #[error("factory for `{kind}` failed: {error}")]
    Failed {
        /// The kind.
        kind: String,
        /// What the factory said.
        error: DaemonError,
    },
    /// The factory panicked.
    #[error("factory for `{kind}` panicked: {message}")]
    Panicked {
        /// The kind.
        kind: String,
        /// The panic message.
        message: String,
    },
}

impl DaemonFactories {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `kind`. Refuses to replace an existing registration.
    pub fn register(
        &mut self,
        kind: impl Into<String>,
        factory: DaemonFactory,
    ) -> Result<(), FactoryError> {
        let kind = kind.into();
        if kind.is_empty() || kind.len() > MAX_KIND_LEN {
            return Err(FactoryError::BadName);
        }
        if self.kinds.contains_key(&kind) {
            return Err(FactoryError::AlreadyRegistered(kind));
        }
        if self.kinds.len() >= MAX_KINDS {
            return Err(FactoryError::Full);
        }
        self.kinds.insert(kind, factory);
        Ok(())
    }

    /// The factory of `kind`.
    pub fn factory(&self, kind: &str) -> Option<&DaemonFactory> {
        self.kinds.get(kind)
    }

    /// Builds a daemon of `kind` from `config`; a panicking factory is an error.
    pub fn build(
        &self,
        kind: &str,
        config: &DaemonConfig,
    ) -> Result<Box<dyn MeshDaemon>, FactoryError> {
        let factory = self
            .kinds
            .get(kind)
            .ok_or_else(|| FactoryError::NotFound(kind.to_owned()))?;
        match catch_unwind(AssertUnwindSafe(|| factory(config))) {
            Ok(Ok(daemon)) => Ok(daemon),
            Ok(Err(error)) => Err(FactoryError::Failed {
                kind: kind.to_owned(),
                error,
            }),
            Err(payload) => Err(FactoryError::Panicked {
                kind: kind.to_owned(),
                message: panic_message(payload.as_ref()),
            }),
        }
    }

    /// Whether `kind` is registered.
    pub fn contains(&self, kind: &str) -> bool {
        self.kinds.contains_key(kind)
    }

    /// The registered kinds, in name order.
    pub fn kinds(&self) -> impl Iterator<Item = &str> {
        self.kinds.keys().map(String::as_str)
    }

    /// How many kinds are registered.
    pub fn len(&self) -> usize {
        self.kinds.len()
    }

    /// Whether no kind is registered.
    pub fn is_empty(&self) -> bool {
        self.kinds.is_empty()
    }
}

impl std::fmt::Debug for DaemonFactories {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.kinds.keys()).finish()
    }
}
