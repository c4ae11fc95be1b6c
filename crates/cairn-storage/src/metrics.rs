//! Lock-free latency histograms, the shape Prometheus exposes (cumulative `le` buckets, a count
//! and a sum), and the buckets etcd uses for its disk metrics.
//!
//! Each layer records its own timings here (the WAL its fsyncs, the state machine its applies);
//! the server reads snapshots and formats them. Recording is a few relaxed atomic adds: no lock,
//! no allocation.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// etcd's buckets for `etcd_disk_wal_fsync_duration_seconds` and
/// `etcd_disk_backend_commit_duration_seconds`: `prometheus.ExponentialBuckets(0.001, 2, 14)`,
/// 1 ms to 8.192 s.
pub const DISK_SECONDS_BUCKETS: [f64; 14] = [
    0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096,
    8.192,
];

/// A histogram of durations over fixed upper bounds (seconds).
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Observations per bucket (not cumulative); one more than `bounds` for `+Inf`.
    buckets: Box<[AtomicU64]>,
    sum_ns: AtomicU64,
}

/// A histogram read at one moment: cumulative bucket counts, as Prometheus exposes them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HistogramSnapshot {
    /// `(upper bound in seconds, observations <= bound)`, ascending; `+Inf` is `count`.
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    pub sum_seconds: f64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        assert!(
            bounds.windows(2).all(|pair| pair[0] < pair[1]),
            "histogram bounds must ascend: {bounds:?}"
        );
        Histogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_ns: AtomicU64::new(0),
        }
    }

    /// A histogram with etcd's disk buckets.
    pub fn disk_seconds() -> Histogram {
        Histogram::new(&DISK_SECONDS_BUCKETS)
    }

    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let bucket = self
            .bounds
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(self.bounds.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_ns.fetch_add(nanos, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(self.bounds.len());
        for (bound, count) in self.bounds.iter().zip(self.buckets.iter()) {
            cumulative += count.load(Ordering::Relaxed);
            buckets.push((*bound, cumulative));
        }
        let count = cumulative + self.buckets[self.bounds.len()].load(Ordering::Relaxed);
        HistogramSnapshot {
            buckets,
            count,
            sum_seconds: self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_cumulative_buckets() {
        let histogram = Histogram::disk_seconds();
        histogram.observe(Duration::from_micros(500));
        histogram.observe(Duration::from_millis(3));
        histogram.observe(Duration::from_secs(10));
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.count, 3);
        assert_eq!(snapshot.buckets[0], (0.001, 1));
        assert_eq!(snapshot.buckets[1], (0.002, 1));
        assert_eq!(snapshot.buckets[2], (0.004, 2));
        assert_eq!(snapshot.buckets.last().unwrap(), &(8.192, 2));
        assert!((snapshot.sum_seconds - 10.0035).abs() < 1e-9);
    }
}
