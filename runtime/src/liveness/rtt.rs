//! Round-trip time estimation after RFC 6298 (SRTT, RTTVAR, RTO).

use std::time::Duration;

/// Clamp applied to the retransmission timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RttConfig {
    /// RTO before the first sample. RFC 6298 §2.1: 1 s.
    pub initial_rto: Duration,
    /// Lower clamp. RFC 6298 recommends 1 s for TCP over the Internet; a mesh of
    /// heartbeat-probed links wants faster loss detection, so 200 ms (the Linux TCP floor).
    pub min_rto: Duration,
    /// Upper clamp. RFC 6298 §2.5 allows ≥ 60 s.
    pub max_rto: Duration,
    /// Clock granularity `G` added to the variance term. 1 ms.
    pub granularity: Duration,
}

impl Default for RttConfig {
    fn default() -> Self {
        Self {
            initial_rto: Duration::from_secs(1),
            min_rto: Duration::from_millis(200),
            max_rto: Duration::from_secs(60),
            granularity: Duration::from_millis(1),
        }
    }
}

/// Smoothed RTT and variance from RTT samples (RFC 6298 §2).
#[derive(Debug, Clone)]
pub struct RttEstimator {
    config: RttConfig,
    srtt: Option<Duration>,
    rttvar: Duration,
    rto: Duration,
    latest: Option<Duration>,
}

impl RttEstimator {
    /// An estimator with no samples; `rto()` is the initial RTO.
    pub fn new(config: RttConfig) -> Self {
        Self {
            rto: config.initial_rto.clamp(config.min_rto, config.max_rto),
            config,
            srtt: None,
            rttvar: Duration::ZERO,
            latest: None,
        }
    }

    /// Adds one RTT measurement (from a probe that was not retransmitted: Karn's rule).
    pub fn on_sample(&mut self, rtt: Duration) {
        self.latest = Some(rtt);
        match self.srtt {
            None => {
                // §2.2: SRTT = R, RTTVAR = R/2.
                self.srtt = Some(rtt);
                self.rttvar = rtt / 2;
            }
            Some(srtt) => {
                // §2.3 with alpha = 1/8, beta = 1/4; RTTVAR first, using the old SRTT.
                let delta = srtt.abs_diff(rtt);
                self.rttvar = (self.rttvar * 3 + delta) / 4;
                self.srtt = Some((srtt * 7 + rtt) / 8);
            }
        }
        let srtt = self.srtt.unwrap_or(rtt);
        let var = (self.rttvar * 4).max(self.config.granularity);
        self.rto = (srtt + var).clamp(self.config.min_rto, self.config.max_rto);
    }

    /// §5.5: after a timeout the RTO doubles (up to the clamp) until the next sample.
    pub fn on_timeout(&mut self) {
        self.rto = (self.rto * 2).min(self.config.max_rto);
    }

    /// Smoothed RTT, once there is a sample.
    pub fn srtt(&self) -> Option<Duration> {
        self.srtt
    }

    /// RTT variance estimate.
    pub fn rttvar(&self) -> Duration {
        self.rttvar
    }

    /// The most recent sample.
    pub fn latest(&self) -> Option<Duration> {
        self.latest
    }

    /// Current retransmission timeout (clamped).
    pub fn rto(&self) -> Duration {
        self.rto
    }
}

impl Default for RttEstimator {
    fn default() -> Self {
        Self::new(RttConfig::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn first_and_later_samples_follow_rfc6298() {
        let mut e = RttEstimator::default();
        assert_eq!(e.rto(), Duration::from_secs(1));
        e.on_sample(100 * MS);
        assert_eq!(e.srtt(), Some(100 * MS));
        assert_eq!(e.rttvar(), 50 * MS);
        assert_eq!(e.rto(), 300 * MS);
        e.on_sample(200 * MS);
        // RTTVAR = 3/4·50 + 1/4·100 = 62.5; SRTT = 7/8·100 + 1/8·200 = 112.5.
        assert_eq!(e.rttvar(), Duration::from_micros(62_500));
        assert_eq!(e.srtt(), Some(Duration::from_micros(112_500)));
        assert_eq!(e.rto(), Duration::from_micros(362_500));
    }

    #[test]
    fn clamps_and_backoff() {
        let mut e = RttEstimator::default();
        for _ in 0..50 {
            e.on_sample(MS);
        }
        assert_eq!(e.rto(), 200 * MS);
        for _ in 0..20 {
            e.on_timeout();
        }
        assert_eq!(e.rto(), Duration::from_secs(60));
    }
}
