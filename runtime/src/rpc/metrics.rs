//! Per-service RPC metrics: calls, errors by kind, and a latency histogram.
//!
//! The histogram has fixed log-linear buckets over whole microseconds: values below 8 µs
//! get a bucket each, and every power of two above is split into 8 equal sub-buckets, so
//! a bucket is at most 12.5 % wide and 496 buckets cover every `u64` of microseconds.
//! Recording is an index computation and three additions; percentiles are estimated as
//! the middle of the bucket holding the requested rank (clamped to the largest value
//! seen), within the bucket's width of the true value; the top rank is the exact maximum.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use netrun_messages::rpc::{ServiceName, Status};
use serde::Serialize;

use super::{ErrorKind, RpcError};

/// Services tracked per direction; calls to further services are only counted in
/// [`RpcMetrics::untracked`].
pub const MAX_METRIC_SERVICES: usize = 1024;

/// Sub-buckets per power of two, as a bit count (8 sub-buckets).
const SUB_BITS: u32 = 3;
const SUB: u64 = 1 << SUB_BITS;
/// Buckets needed for every u64: 8 linear ones, then 8 per octave for octaves 3..=63.
const BUCKETS: usize = ((64 - SUB_BITS as usize) + 1) * SUB as usize;

/// A fixed-bucket latency histogram (microsecond resolution).
#[derive(Debug, Clone)]
pub struct LatencyHistogram {
    counts: Box<[u64; BUCKETS]>,
    total: u64,
    sum_micros: u64,
    max_micros: u64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyHistogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Self {
            counts: Box::new([0; BUCKETS]),
            total: 0,
            sum_micros: 0,
            max_micros: 0,
        }
    }

    /// Records one latency.
    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.counts[bucket_of(micros)] += 1;
        self.total += 1;
        self.sum_micros = self.sum_micros.saturating_add(micros);
        self.max_micros = self.max_micros.max(micros);
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The estimated `q`-quantile (`q` in 0.0..=1.0, clamped), `None` when empty.
    pub fn percentile(&self, q: f64) -> Option<Duration> {
        if self.total == 0 {
            return None;
        }
        let q = if q.is_nan() { 1.0 } else { q.clamp(0.0, 1.0) };
        // Float-to-int `as` saturates; the rank is clamped to 1..=total.
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        if rank == self.total {
            return Some(Duration::from_micros(self.max_micros));
        }
        let mut seen = 0u64;
        for (i, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                let (lo, hi) = bucket_bounds(i);
                let mid = lo + (hi - lo) / 2;
                return Some(Duration::from_micros(mid.min(self.max_micros)));
            }
        }
        Some(Duration::from_micros(self.max_micros))
    }

    /// The mean, `None` when empty.
    pub fn mean(&self) -> Option<Duration> {
        (self.total > 0).then(|| Duration::from_micros(self.sum_micros / self.total))
    }

    /// The largest value recorded, `None` when empty.
    pub fn max(&self) -> Option<Duration> {
        (self.total > 0).then(|| Duration::from_micros(self.max_micros))
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &Self) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
        self.total += other.total;
        self.sum_micros = self.sum_micros.saturating_add(other.sum_micros);
        self.max_micros = self.max_micros.max(other.max_micros);
    }
}

/// Counters of one service in one direction.
#[derive(Debug, Clone, Default)]
pub struct ServiceMetrics {
    /// Calls that finished.
    pub calls: u64,
    /// Calls that finished Ok.
    pub ok: u64,
    /// Failed calls by [`ErrorKind::index`].
    pub errors: [u64; ErrorKind::COUNT],
    /// Latency of every finished call (Ok or not).
    pub latency: LatencyHistogram,
}

impl ServiceMetrics {
    /// Records one finished call.
    pub fn record(&mut self, latency: Duration, outcome: Result<(), ErrorKind>) {
        self.calls += 1;
        match outcome {
            Ok(()) => self.ok += 1,
            Err(kind) => self.errors[kind.index()] += 1,
        }
        self.latency.record(latency);
    }

    /// Failed calls of one kind.
    pub fn errors_of(&self, kind: ErrorKind) -> u64 {
        self.errors[kind.index()]
    }

    /// A serializable summary.
    pub fn snapshot(&self) -> ServiceSnapshot {
        let micros =
            |d: Option<Duration>| d.map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        ServiceSnapshot {
            calls: self.calls,
            ok: self.ok,
            errors: ErrorKind::ALL
                .iter()
                .filter(|k| self.errors[k.index()] > 0)
                .map(|k| (k.as_str(), self.errors[k.index()]))
                .collect(),
            p50_us: micros(self.latency.percentile(0.50)),
            p90_us: micros(self.latency.percentile(0.90)),
            p99_us: micros(self.latency.percentile(0.99)),
            max_us: micros(self.latency.max()),
            mean_us: micros(self.latency.mean()),
        }
    }
}

/// A summary of [`ServiceMetrics`] for status output and export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceSnapshot {
    /// Calls that finished.
    pub calls: u64,
    /// Calls that finished Ok.
    pub ok: u64,
    /// Non-zero error counts by kind name.
    pub errors: BTreeMap<&'static str, u64>,
    /// Median latency, µs.
    pub p50_us: Option<u64>,
    /// 90th percentile latency, µs.
    pub p90_us: Option<u64>,
    /// 99th percentile latency, µs.
    pub p99_us: Option<u64>,
    /// Largest latency, µs.
    pub max_us: Option<u64>,
    /// Mean latency, µs.
    pub mean_us: Option<u64>,
}

/// Which side of a call the metrics describe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Calls this node made.
    Outbound,
    /// Calls this node served.
    Inbound,
}

/// Metrics of every service, per direction, bounded by [`MAX_METRIC_SERVICES`].
#[derive(Debug, Clone, Default)]
pub struct RpcMetrics {
    outbound: HashMap<ServiceName, ServiceMetrics>,
    inbound: HashMap<ServiceName, ServiceMetrics>,
    untracked: u64,
}

impl RpcMetrics {
    /// No metrics yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a finished call of `service`.
    pub fn record(
        &mut self,
        direction: Direction,
        service: &ServiceName,
        latency: Duration,
        outcome: Result<(), ErrorKind>,
    ) {
        let map = self.map_mut(direction);
        if let Some(m) = map.get_mut(service.as_str()) {
            m.record(latency, outcome);
            return;
        }
        if map.len() >= MAX_METRIC_SERVICES {
            self.untracked += 1;
            return;
        }
        map.entry(service.clone())
            .or_default()
            .record(latency, outcome);
    }

    /// Records a call's result as the caller saw it.
    pub fn record_call(
        &mut self,
        service: &ServiceName,
        latency: Duration,
        result: Result<(), &RpcError>,
    ) {
        self.record(
            Direction::Outbound,
            service,
            latency,
            result.map_err(RpcError::kind),
        );
    }

    /// Records a served request by the status it finished with.
    pub fn record_served(&mut self, service: &ServiceName, elapsed: Duration, status: Status) {
        let outcome = if status.is_ok() {
            Ok(())
        } else {
            Err(RpcError::from_status(status, "").kind())
        };
        self.record(Direction::Inbound, service, elapsed, outcome);
    }

    /// The metrics of one service.
    pub fn service(&self, direction: Direction, service: &str) -> Option<&ServiceMetrics> {
        self.map(direction).get(service)
    }

    /// Summaries of every service in one direction, by name.
    pub fn snapshot(&self, direction: Direction) -> BTreeMap<String, ServiceSnapshot> {
        self.map(direction)
            .iter()
            .map(|(name, m)| (name.as_str().to_owned(), m.snapshot()))
            .collect()
    }

    /// Calls not recorded because the service table was full.
    pub fn untracked(&self) -> u64 {
        self.untracked
    }

    fn map(&self, direction: Direction) -> &HashMap<ServiceName, ServiceMetrics> {
        match direction {
            Direction::Outbound => &self.outbound,
            Direction::Inbound => &self.inbound,
        }
    }

    fn map_mut(&mut self, direction: Direction) -> &mut HashMap<ServiceName, ServiceMetrics> {
        match direction {
            Direction::Outbound => &mut self.outbound,
            Direction::Inbound => &mut self.inbound,
        }
    }
}

/// The bucket of a value in microseconds.
fn bucket_of(micros: u64) -> usize {
    if micros < SUB {
        return micros as usize;
    }
    let octave = 63 - micros.leading_zeros();
    let sub = (micros >> (octave - SUB_BITS)) & (SUB - 1);
    ((octave - SUB_BITS + 1) as usize) * SUB as usize + sub as usize
}

/// The smallest and largest value of a bucket.
fn bucket_bounds(index: usize) -> (u64, u64) {
    let sub_count = SUB as usize;
    if index < sub_count {
        return (index as u64, index as u64);
    }
    let octave = (index / sub_count) as u32 + SUB_BITS - 1;
    let sub = (index % sub_count) as u64;
    let width = 1u64 << (octave - SUB_BITS);
    let lo = (1u64 << octave) + sub * width;
    (lo, lo + (width - 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn buckets_contain_their_values(v: u64) {
            let i = bucket_of(v);
            prop_assert!(i < BUCKETS);
            let (lo, hi) = bucket_bounds(i);
            prop_assert!(lo <= v && v <= hi, "{} not in [{}, {}] (bucket {})", v, lo, hi, i);
            // Width at most 1/8 of the lower bound above the linear range.
            if v >= SUB {
                prop_assert!((hi - lo) <= lo / SUB);
            }
        }
    }

    #[test]
    fn buckets_are_contiguous_and_cover_u64() {
        let mut next = 0u64;
        for i in 0..BUCKETS {
            let (lo, hi) = bucket_bounds(i);
            assert_eq!(lo, next, "bucket {i}");
            assert_eq!(bucket_of(lo), i);
            assert_eq!(bucket_of(hi), i);
            next = hi.wrapping_add(1);
        }
        assert_eq!(next, 0, "the last bucket ends at u64::MAX");
    }

    #[test]
    fn percentiles_are_within_a_bucket() {
        let mut h = LatencyHistogram::new();
        assert_eq!(h.percentile(0.5), None);
        for us in 1..=1000u64 {
            h.record(Duration::from_micros(us));
        }
        assert_eq!(h.count(), 1000);
        for (q, exact) in [(0.5, 500.0), (0.9, 900.0), (0.99, 990.0)] {
            let est = h.percentile(q).expect("non-empty").as_micros() as f64;
            assert!(
                (est - exact).abs() <= exact * 0.125,
                "q={q}: {est} vs {exact}"
            );
        }
        assert_eq!(h.percentile(1.0), Some(Duration::from_micros(1000)));
        assert_eq!(h.max(), Some(Duration::from_micros(1000)));
        assert_eq!(h.mean(), Some(Duration::from_micros(500)));
        let mut other = LatencyHistogram::new();
        other.record(Duration::from_secs(2));
        h.merge(&other);
        assert_eq!(h.count(), 1001);
        assert_eq!(h.max(), Some(Duration::from_secs(2)));
    }

    #[test]
    fn service_metrics_count_errors_by_kind() {
        let echo = ServiceName::new("echo").expect("valid");
        let mut m = RpcMetrics::new();
        m.record_call(&echo, Duration::from_micros(40), Ok(()));
        m.record_call(&echo, Duration::from_millis(5), Err(&RpcError::Timeout));
        m.record_call(&echo, Duration::from_millis(5), Err(&RpcError::Timeout));
        m.record_served(&echo, Duration::from_micros(10), Status::INTERNAL);
        let out = m.service(Direction::Outbound, "echo").expect("tracked");
        assert_eq!((out.calls, out.ok), (3, 1));
        assert_eq!(out.errors_of(ErrorKind::Timeout), 2);
        let inbound = m.service(Direction::Inbound, "echo").expect("tracked");
        assert_eq!(inbound.errors_of(ErrorKind::Server), 1);
        let snap = m.snapshot(Direction::Outbound);
        let echo_snap = &snap["echo"];
        assert_eq!(echo_snap.errors.get("timeout"), Some(&2));
        assert_eq!(echo_snap.calls, 3);
        assert!(echo_snap.p99_us.is_some());
    }

    #[test]
    fn service_table_is_bounded() {
        let mut m = RpcMetrics::new();
        for i in 0..MAX_METRIC_SERVICES + 5 {
            let name = ServiceName::new(&format!("s{i}")).expect("valid");
            m.record(Direction::Outbound, &name, Duration::ZERO, Ok(()));
        }
        assert_eq!(m.snapshot(Direction::Outbound).len(), MAX_METRIC_SERVICES);
        assert_eq!(m.untracked(), 5);
    }
}
