//! Stream configuration and its validation.

use std::time::Duration;

use netrun_messages::stream::MAX_SEGMENT_DATA;
use thiserror::Error;

use crate::liveness::RttConfig;

/// Credit window a stream starts with when nobody says otherwise: 64 KiB, the value the
/// reference system uses and the size a receiver auto-creates an unknown stream with.
pub const DEFAULT_WINDOW_BYTES: u32 = 64 * 1024;
/// Smallest window: below one small segment a stream cannot make progress usefully.
pub const MIN_WINDOW_BYTES: u32 = 1024;
/// Largest window: bounds the per-stream receive buffer and retransmit table.
pub const MAX_WINDOW_BYTES: u32 = 64 * 1024 * 1024;
/// Consecutive retransmission timeouts without progress before a reliable stream fails.
/// With the RTO clamped to 2 s this gives up within (8 + 1) × 2 s = 18 s of silence.
pub const DEFAULT_MAX_RETRIES: u32 = 8;
/// Upper bound on `max_retries`, so the give-up time stays bounded.
pub const MAX_RETRIES_LIMIT: u32 = 64;
/// Longest interval at which a receiver repeats a NACK for gaps that persist (the per-tick
/// gap scan), before backoff; a quarter of it caps the reorder tolerance. Both shrink to
/// the measured repair time on faster paths.
pub const DEFAULT_NACK_INTERVAL: Duration = Duration::from_millis(20);

/// Whether lost segments are repaired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Reliability {
    /// Delivered on arrival, never repaired; losses are counted, never duplicated.
    BestEffort,
    /// Retransmitted until acknowledged and delivered in order, or the stream fails.
    #[default]
    Reliable,
}

/// The RTT clamp streams use: RFC 6298 estimation, RTO within [10 ms, 2 s], 200 ms before
/// the first sample (a mesh link, not the open Internet's 1 s).
pub const fn stream_rtt_config() -> RttConfig {
    RttConfig {
        initial_rto: Duration::from_millis(200),
        min_rto: Duration::from_millis(10),
        max_rto: Duration::from_secs(2),
        granularity: Duration::from_millis(1),
    }
}

/// Configuration of one stream. Both ends should use the same reliability and window; a
/// receiver drops (and counts) data beyond the credit it granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamConfig {
    /// Repair lost segments or not.
    pub reliability: Reliability,
    /// Credit window in bytes: most bytes sent but not yet consumed by the receiver.
    pub window_bytes: u32,
    /// Scheduling priority among a session's streams; higher goes first.
    pub priority: u8,
    /// Most application bytes per send (one segment).
    pub max_segment: usize,
    /// Consecutive RTO expiries without progress before the stream fails.
    pub max_retries: u32,
    /// RTT estimation and RTO clamp.
    pub rtt: RttConfig,
    /// Longest interval at which a receiver repeats a NACK for persisting gaps (before
    /// backoff); a quarter of it caps the reorder tolerance.
    pub nack_interval: Duration,
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            reliability: Reliability::Reliable,
            window_bytes: DEFAULT_WINDOW_BYTES,
            priority: 0,
            max_segment: MAX_SEGMENT_DATA,
            max_retries: DEFAULT_MAX_RETRIES,
            rtt: stream_rtt_config(),
            nack_interval: DEFAULT_NACK_INTERVAL,
        }
    }
}

impl StreamConfig {
    /// The defaults: reliable, 64 KiB window, priority 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the reliability.
    #[must_use]
    pub fn with_reliability(mut self, reliability: Reliability) -> Self {
        self.reliability = reliability;
        self
    }

    /// Sets the credit window in bytes.
    #[must_use]
    pub fn with_window_bytes(mut self, window_bytes: u32) -> Self {
        self.window_bytes = window_bytes;
        self
    }

    /// Sets the priority.
    #[must_use]
    pub fn with_priority(mut self, priority: u8) -> Self {
        self.priority = priority;
        self
    }

    /// Sets the largest send.
    #[must_use]
    pub fn with_max_segment(mut self, max_segment: usize) -> Self {
        self.max_segment = max_segment;
        self
    }

    /// Sets the retry limit.
    #[must_use]
    pub fn with_max_retries(mut self, max_retries: u32) -> Self {
        self.max_retries = max_retries;
        self
    }

    /// Whether the stream is reliable.
    pub fn is_reliable(&self) -> bool {
        self.reliability == Reliability::Reliable
    }

    /// Upper bound on how long a reliable stream keeps retrying without progress before it
    /// fails: `(max_retries + 1) × max_rto`. A pending read gives up after the same time.
    pub fn give_up_time(&self) -> Duration {
        self.rtt
            .max_rto
            .saturating_mul(self.max_retries.saturating_add(1))
    }

    /// Checks every field against its bounds.
    pub fn validate(&self) -> Result<(), StreamConfigError> {
        if !(MIN_WINDOW_BYTES..=MAX_WINDOW_BYTES).contains(&self.window_bytes) {
            return Err(StreamConfigError::Window(self.window_bytes));
        }
        if self.max_segment == 0 || self.max_segment > MAX_SEGMENT_DATA {
            return Err(StreamConfigError::Segment(self.max_segment));
        }
        if self.max_retries == 0 || self.max_retries > MAX_RETRIES_LIMIT {
            return Err(StreamConfigError::Retries(self.max_retries));
        }
        let rtt = &self.rtt;
        if rtt.min_rto.is_zero() || rtt.min_rto > rtt.max_rto {
            return Err(StreamConfigError::Rto);
        }
        if self.nack_interval.is_zero() {
            return Err(StreamConfigError::NackInterval);
        }
        Ok(())
    }
}

/// Why a [`StreamConfig`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StreamConfigError {
    /// The window is outside [`MIN_WINDOW_BYTES`]`..=`[`MAX_WINDOW_BYTES`].
    #[error("window of {0} bytes is out of range")]
    Window(u32),
    /// The segment size is 0 or over the segment payload limit.
    #[error("max segment of {0} bytes is out of range")]
    Segment(usize),
    /// `max_retries` is 0 or over [`MAX_RETRIES_LIMIT`].
    #[error("max retries {0} is out of range")]
    Retries(u32),
    /// The RTO clamp is empty or has a zero floor.
    #[error("rto clamp is invalid")]
    Rto,
    /// The NACK interval is zero.
    #[error("nack interval is zero")]
    NackInterval,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_bounds_are_checked() {
        let c = StreamConfig::new();
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.window_bytes, 64 * 1024);
        assert_eq!(c.give_up_time(), Duration::from_secs(18));
        assert_eq!(
            c.with_window_bytes(10).validate(),
            Err(StreamConfigError::Window(10))
        );
        assert_eq!(
            c.with_max_segment(0).validate(),
            Err(StreamConfigError::Segment(0))
        );
        assert_eq!(
            c.with_max_retries(0).validate(),
            Err(StreamConfigError::Retries(0))
        );
        let mut bad = c;
        bad.rtt.min_rto = Duration::ZERO;
        assert_eq!(bad.validate(), Err(StreamConfigError::Rto));
        let mut bad = c;
        bad.nack_interval = Duration::ZERO;
        assert_eq!(bad.validate(), Err(StreamConfigError::NackInterval));
    }
}
