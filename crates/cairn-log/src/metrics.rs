//! The log's counters, rendered as Prometheus text. etcd has no twin for any of them, so they
//! are named `cairn_log_*`. Process-wide: a broker process holds one broker (tests that run
//! several in one process see their sum).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

pub struct LogMetrics {
    /// Batches received from publishers and published into a ring.
    pub batches_received: AtomicU64,
    /// Their payload bytes.
    pub bytes_received: AtomicU64,
    /// Publisher connections closed with an error frame (bad input, unknown topic, …).
    pub connections_refused: AtomicU64,
    /// Sequencer epochs that ordered at least one batch.
    pub epochs_sealed: AtomicU64,
    /// Batches given a global position.
    pub batches_ordered: AtomicU64,
    /// Ring slots refused because their session was fenced.
    pub batches_fenced: AtomicU64,
    /// Payload bytes written to subscribers.
    pub bytes_delivered: AtomicU64,
}

pub static METRICS: LogMetrics = LogMetrics {
    batches_received: AtomicU64::new(0),
    bytes_received: AtomicU64::new(0),
    connections_refused: AtomicU64::new(0),
    epochs_sealed: AtomicU64::new(0),
    batches_ordered: AtomicU64::new(0),
    batches_fenced: AtomicU64::new(0),
    bytes_delivered: AtomicU64::new(0),
};

impl LogMetrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// Appends the counters in the Prometheus text format (0.0.4).
pub fn render(out: &mut String) {
    let m = &METRICS;
    let families = [
        (
            "cairn_log_batches_received_total",
            "Batches received from publishers into shared memory.",
            &m.batches_received,
        ),
        (
            "cairn_log_received_bytes_total",
            "Payload bytes received from publishers.",
            &m.bytes_received,
        ),
        (
            "cairn_log_connections_refused_total",
            "Publisher connections closed with an error.",
            &m.connections_refused,
        ),
        (
            "cairn_log_sequencer_epochs_total",
            "Sequencer epochs that ordered at least one batch.",
            &m.epochs_sealed,
        ),
        (
            "cairn_log_batches_ordered_total",
            "Batches given a global position.",
            &m.batches_ordered,
        ),
        (
            "cairn_log_batches_fenced_total",
            "Batches refused because their session was fenced.",
            &m.batches_fenced,
        ),
        (
            "cairn_log_delivered_bytes_total",
            "Payload bytes sent to subscribers.",
            &m.bytes_delivered,
        ),
    ];
    for (name, help, value) in families {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
            value.load(Ordering::Relaxed)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_counter_with_help_and_type() {
        LogMetrics::add(&METRICS.bytes_delivered, 5);
        let mut out = String::new();
        render(&mut out);
        assert_eq!(out.matches("# TYPE cairn_log_").count(), 7);
        let line = out
            .lines()
            .find(|l| l.starts_with("cairn_log_delivered_bytes_total "))
            .unwrap();
        let value: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(value >= 5, "{line}");
    }
}
