//! Reno-style congestion window for reliable streams (bytes).
//!
//! Slow start doubles the window per round trip until `ssthresh`; congestion avoidance then
//! adds about one segment per round trip. A NACK-reported loss halves the window once per
//! recovery epoch (losses of segments sent before the last reduction do not count again);
//! a retransmission timeout drops the window to its floor.

/// Congestion state of one reliable stream.
#[derive(Debug, Clone)]
pub(crate) struct Reno {
    mss: u64,
    floor: u64,
    cap: u64,
    cwnd: u64,
    ssthresh: u64,
    /// Losses of segments below this sequence belong to the current epoch.
    recovery_until: u64,
}

/// Segments in the initial window (RFC 3390 allows up to 4 for large segments).
const INITIAL_SEGMENTS: u64 = 4;
/// Segments in the floor the window falls to on a timeout.
const FLOOR_SEGMENTS: u64 = 2;

impl Reno {
    /// A window for segments of at most `mss` bytes; it never grows past the larger of
    /// `cap` (the credit window, which bounds flight anyway) and the floor.
    pub(crate) fn new(mss: u64, cap: u64) -> Self {
        let floor = FLOOR_SEGMENTS * mss;
        let cap = cap.max(floor);
        Self {
            mss,
            floor,
            cap,
            cwnd: (INITIAL_SEGMENTS * mss).min(cap),
            ssthresh: u64::MAX,
            recovery_until: 0,
        }
    }

    /// Current window in bytes.
    pub(crate) fn window(&self) -> u64 {
        self.cwnd
    }

    /// `bytes` were newly acknowledged.
    pub(crate) fn on_ack(&mut self, bytes: u64) {
        let grow = if self.cwnd < self.ssthresh {
            bytes
        } else {
            (self.mss.saturating_mul(bytes) / self.cwnd.max(1)).max(1)
        };
        self.cwnd = self.cwnd.saturating_add(grow).min(self.cap);
    }

    /// Segment `seq` was reported lost while `flight` bytes were outstanding and the next
    /// new segment would be `next_seq`. Returns whether the window was reduced.
    pub(crate) fn on_loss(&mut self, seq: u64, next_seq: u64, flight: u64) -> bool {
        if seq < self.recovery_until {
            return false;
        }
        self.ssthresh = (flight / 2).max(self.floor);
        self.cwnd = self.ssthresh.min(self.cap);
        self.recovery_until = next_seq;
        true
    }

    /// The retransmission timer fired.
    pub(crate) fn on_timeout(&mut self, next_seq: u64, flight: u64) {
        self.ssthresh = (flight / 2).max(self.floor);
        self.cwnd = self.floor;
        self.recovery_until = next_seq;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_start_avoidance_loss_and_timeout() {
        let mut r = Reno::new(1000, 100_000);
        assert_eq!(r.window(), 4000);
        r.on_ack(4000);
        assert_eq!(r.window(), 8000, "slow start doubles per round");
        assert!(r.on_loss(10, 20, 8000));
        assert_eq!(r.window(), 4000, "multiplicative decrease");
        assert!(!r.on_loss(15, 25, 4000), "one decrease per epoch");
        r.on_ack(4000);
        assert_eq!(r.window(), 5000, "avoidance adds ~1 mss per window acked");
        r.on_timeout(30, 5000);
        assert_eq!(r.window(), 2000, "timeout falls to the floor");
        for _ in 0..1000 {
            r.on_ack(100_000);
        }
        assert_eq!(r.window(), 100_000, "capped by the credit window");
    }
}
