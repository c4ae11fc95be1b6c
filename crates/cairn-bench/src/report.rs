//! Latency statistics and the report printed at the end of a run.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Microsecond latencies of one client; merged into one histogram at the end, so percentiles
/// come from every raw sample rather than from averaged summaries.
pub struct Latencies {
    histogram: Histogram<u64>,
}

impl Default for Latencies {
    fn default() -> Latencies {
        // 1 µs .. 60 s with 3 significant digits.
        let histogram =
            Histogram::new_with_bounds(1, 60_000_000, 3).expect("static bounds are valid");
        Latencies { histogram }
    }
}

impl Latencies {
    pub fn record(&mut self, latency: Duration) {
        let micros = (latency.as_micros() as u64).clamp(1, 60_000_000);
        self.histogram
            .record(micros)
            .expect("clamped into the histogram's range");
    }

    pub fn merge(&mut self, other: &Latencies) {
        self.histogram
            .add(&other.histogram)
            .expect("histograms share their bounds");
    }

    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    pub fn millis_at(&self, quantile: f64) -> f64 {
        self.histogram.value_at_quantile(quantile) as f64 / 1000.0
    }
}

/// Latency summary in milliseconds.
#[derive(Debug, Serialize)]
pub struct LatencyMs {
    pub avg: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
}

/// What `cairn bench kv --json` prints.
#[derive(Debug, Serialize)]
pub struct Report {
    pub op: String,
    pub total: u64,
    pub qps: f64,
    pub duration_s: f64,
    pub latency_ms: LatencyMs,
    pub errors: u64,
    /// What the first failed request got back (not in the JSON: its fields are etcd
    /// `benchmark`'s); the CLI prints it on stderr.
    #[serde(skip)]
    pub first_error: Option<String>,
}

impl Report {
    pub fn new(op: &str, latencies: &Latencies, errors: u64, elapsed: Duration) -> Report {
        let total = latencies.count();
        let seconds = elapsed.as_secs_f64().max(1e-9);
        Report {
            op: op.to_string(),
            total,
            qps: round2(total as f64 / seconds),
            duration_s: round2(seconds),
            latency_ms: LatencyMs {
                avg: round3(latencies.histogram.mean() / 1000.0),
                p50: round3(latencies.millis_at(0.5)),
                p90: round3(latencies.millis_at(0.9)),
                p99: round3(latencies.millis_at(0.99)),
                p999: round3(latencies.millis_at(0.999)),
            },
            errors,
            first_error: None,
        }
    }

    /// The human-readable summary.
    pub fn render(&self) -> String {
        let l = &self.latency_ms;
        format!(
            "{op}: {total} requests in {d:.2}s, {qps:.0} req/s, {errors} errors\n  latency ms: avg {avg} p50 {p50} p90 {p90} p99 {p99} p99.9 {p999}",
            op = self.op,
            total = self.total,
            d = self.duration_s,
            qps = self.qps,
            errors = self.errors,
            avg = l.avg,
            p50 = l.p50,
            p90 = l.p90,
            p99 = l.p99,
            p999 = l.p999,
        )
    }
}

fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_merged_samples() {
        let mut fast = Latencies::default();
        let mut slow = Latencies::default();
        for _ in 0..90 {
            fast.record(Duration::from_millis(1));
        }
        for _ in 0..10 {
            slow.record(Duration::from_millis(100));
        }
        fast.merge(&slow);
        let report = Report::new("put", &fast, 0, Duration::from_secs(2));
        assert_eq!(report.total, 100);
        assert_eq!(report.qps, 50.0);
        assert!((report.latency_ms.p50 - 1.0).abs() < 0.01, "{report:?}");
        assert!((report.latency_ms.p99 - 100.0).abs() < 0.1, "{report:?}");
        assert!((report.latency_ms.avg - 10.9).abs() < 0.1, "{report:?}");
    }
}
