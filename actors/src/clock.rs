//! The wall clock, for what is stamped or expires in Unix time (signed announcements and
//! lists, channel tokens, broker records). Liveness and protocol timers use tokio's
//! monotonic clock instead.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Time since the Unix epoch (zero if the clock reads before it).
fn since_epoch() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
}

/// Whole seconds since the Unix epoch.
pub(crate) fn unix_secs() -> u64 {
    since_epoch().as_secs()
}

/// Milliseconds since the Unix epoch.
pub(crate) fn unix_millis() -> u64 {
    u64::try_from(since_epoch().as_millis()).unwrap_or(u64::MAX)
}

/// How long until the Unix second `at` begins: zero if it has, saturating (never an
/// overflow) for a deadline at the end of time.
pub(crate) fn until_unix_secs(at: u64) -> Duration {
    Duration::from_secs(at).saturating_sub(since_epoch())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_until_a_unix_second() {
        let now = unix_secs();
        assert_eq!(until_unix_secs(now.saturating_sub(5)), Duration::ZERO);
        let wait = until_unix_secs(now + 10);
        assert!(wait > Duration::from_secs(8) && wait <= Duration::from_secs(10));
        assert!(until_unix_secs(u64::MAX) > Duration::from_secs(1 << 62));
        assert!(unix_millis() / 1000 >= now);
    }
}
