//! `/metrics`: Prometheus text exposition (format 0.0.4) with etcd's metric names and types.
//!
//! Why no `prometheus` crate: every value already lives as an atomic (or a histogram of
//! atomics) in the layer that records it — the WAL its fsyncs, the replica its proposals, the
//! gRPC layer its calls — so a scrape only has to read them and print a few dozen lines. A
//! registry crate would add a second copy of each counter and a global registry to keep in step.
//!
//! Names and types follow etcd 3.5 (`etcd_server_*` are gauges where etcd's are, e.g.
//! `proposals_committed_total` is the raft commit index); where Cairn's equivalent differs the
//! HELP text says so.

pub mod grpc;

use std::fmt::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use cairn_storage::metrics::HistogramSnapshot;

use crate::node::Node;
use crate::services::maintenance::ETCD_VERSION;
use grpc::{GrpcMetrics, CODES, METHODS};

/// The content type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Prometheus text being written.
struct Exposition {
    out: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (position, (label, label_value)) in labels.iter().enumerate() {
                if position > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{label}=\"{label_value}\"");
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    fn gauge(&mut self, name: &str, help: &str, value: f64) {
        self.family(name, "gauge", help);
        self.sample(name, &[], value);
    }

    fn counter(&mut self, name: &str, help: &str, value: f64) {
        self.family(name, "counter", help);
        self.sample(name, &[], value);
    }

    fn histogram(&mut self, name: &str, help: &str, histogram: &HistogramSnapshot) {
        self.family(name, "histogram", help);
        let bucket = format!("{name}_bucket");
        for (bound, count) in &histogram.buckets {
            self.sample(&bucket, &[("le", &bound.to_string())], *count as f64);
        }
        self.sample(&bucket, &[("le", "+Inf")], histogram.count as f64);
        self.sample(&format!("{name}_sum"), &[], histogram.sum_seconds);
        self.sample(&format!("{name}_count"), &[], histogram.count as f64);
    }
}

/// Renders every metric of `node` and its gRPC server.
pub fn render(node: &Node, grpc: &GrpcMetrics) -> String {
    let mut out = Exposition {
        out: String::with_capacity(16 * 1024),
    };
    server_metrics(&mut out, node);
    disk_and_mvcc_metrics(&mut out, node);
    grpc_metrics(&mut out, grpc);
    process_metrics(&mut out);
    if let Some(extra) = node.config().extra_metrics {
        extra(&mut out.out);
    }
    out.out
}

fn server_metrics(out: &mut Exposition, node: &Node) {
    let status = node.status();
    let consensus = node.replica().consensus_metrics();
    let flag = |value: bool| if value { 1.0 } else { 0.0 };
    out.gauge(
        "etcd_server_has_leader",
        "Whether or not a leader exists. 1 is existence, 0 is not.",
        flag(status.leader.is_some()),
    );
    out.gauge(
        "etcd_server_is_leader",
        "Whether or not this member is a leader. 1 if is, 0 otherwise.",
        flag(status.leader == Some(node.identity().member_id)),
    );
    out.counter(
        "etcd_server_leader_changes_seen_total",
        "The number of leader changes seen.",
        consensus.leader_changes as f64,
    );
    out.gauge(
        "etcd_server_proposals_committed_total",
        "The total number of consensus proposals committed (the raft commit index; one raft \
         entry carries a batch of client requests).",
        consensus.committed_index as f64,
    );
    out.gauge(
        "etcd_server_proposals_applied_total",
        "The total number of consensus proposals applied (the raft applied index).",
        status.applied_index as f64,
    );
    out.gauge(
        "etcd_server_proposals_pending",
        "The current number of pending proposals to commit.",
        consensus.proposals_pending as f64,
    );
    out.counter(
        "etcd_server_proposals_failed_total",
        "The total number of failed proposals seen.",
        consensus.proposals_failed as f64,
    );
    out.family(
        "etcd_server_version",
        "gauge",
        "Which version is running. 1 for 'server_version' label with current version.",
    );
    out.sample(
        "etcd_server_version",
        &[("server_version", ETCD_VERSION)],
        1.0,
    );
}

fn disk_and_mvcc_metrics(out: &mut Exposition, node: &Node) {
    let replica = node.replica();
    let consensus = replica.consensus_metrics();
    out.histogram(
        "etcd_disk_wal_fsync_duration_seconds",
        "The latency distributions of fsync called by WAL (group-commit fdatasync of the raft \
         log).",
        &replica.wal_fsync_durations(),
    );
    out.histogram(
        "etcd_disk_backend_commit_duration_seconds",
        "The latency distributions of commit called by backend. Cairn: applying one batch of \
         committed raft entries to the state machine (engine writes under the store lock); the \
         memory engine has no separate commit.",
        &consensus.apply_seconds,
    );
    out.histogram(
        "etcd_debugging_snap_save_total_duration_seconds",
        "The total latency distributions of save called by snapshot (Cairn: streaming the whole \
         state into a snapshot file and fsyncing it).",
        &consensus.snapshot_save_seconds,
    );
    out.counter(
        "etcd_network_snapshot_receive_success",
        "Total number of successful snapshot receives (Cairn: snapshots received from a leader \
         and installed, all senders together).",
        consensus.snapshots_received as f64,
    );
    let (size_bytes, keys) = {
        let store = node.store();
        (store.size_bytes(), store.key_count())
    };
    out.gauge(
        "etcd_mvcc_db_total_size_in_bytes",
        "Total size of the underlying database physically allocated in bytes (Cairn: bytes the \
         engine holds, as the quota counts them).",
        size_bytes as f64,
    );
    out.gauge(
        "etcd_debugging_mvcc_keys_total",
        "Total number of keys (Cairn: keys in the index, deleted ones until compacted).",
        keys as f64,
    );
}

fn grpc_metrics(out: &mut Exposition, grpc: &GrpcMetrics) {
    out.counter(
        "etcd_network_client_grpc_received_bytes_total",
        "The total number of bytes received from grpc clients (message frames).",
        grpc.received_bytes() as f64,
    );
    out.counter(
        "etcd_network_client_grpc_sent_bytes_total",
        "The total number of bytes sent to grpc clients (message frames).",
        grpc.sent_bytes() as f64,
    );
    out.family(
        "grpc_server_started_total",
        "counter",
        "Total number of RPCs started on the server.",
    );
    for (method, (service, name, kind)) in METHODS.iter().enumerate() {
        let labels = [
            ("grpc_method", *name),
            ("grpc_service", *service),
            ("grpc_type", *kind),
        ];
        out.sample(
            "grpc_server_started_total",
            &labels,
            grpc.started(method) as f64,
        );
    }
    out.family(
        "grpc_server_handled_total",
        "counter",
        "Total number of RPCs completed on the server, regardless of success or failure.",
    );
    for (method, (service, name, kind)) in METHODS.iter().enumerate() {
        for (code, code_name) in CODES.iter().enumerate() {
            let handled = grpc.handled(method, code);
            // go-grpc-prometheus (etcd) pre-registers every code of every method; to keep the
            // scrape short, a method's codes appear once it has been called.
            if grpc.started(method) == 0 && handled == 0 {
                continue;
            }
            let labels = [
                ("grpc_code", *code_name),
                ("grpc_method", *name),
                ("grpc_service", *service),
                ("grpc_type", *kind),
            ];
            out.sample("grpc_server_handled_total", &labels, handled as f64);
        }
    }
}

fn process_metrics(out: &mut Exposition) {
    if let Some(resident) = process::resident_memory_bytes() {
        out.gauge(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            resident as f64,
        );
    }
    if let Some(started) = process::start_time_seconds() {
        out.gauge(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            started,
        );
    }
}

/// Process figures from `/proc` (Linux), as Prometheus' process collector reads them.
mod process {
    use super::*;

    fn page_bytes() -> u64 {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        u64::try_from(page).unwrap_or(4096)
    }

    pub fn resident_memory_bytes() -> Option<u64> {
        let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
        let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
        Some(pages * page_bytes())
    }

    /// Boot time plus the process' start in clock ticks after boot.
    pub fn start_time_seconds() -> Option<f64> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the command name (which may hold spaces) start at field 3.
        let after_name = &stat[stat.rfind(')')? + 2..];
        let ticks: f64 = after_name.split_whitespace().nth(19)?.parse().ok()?;
        let boot = std::fs::read_to_string("/proc/stat").ok()?;
        let boot_seconds: f64 = boot
            .lines()
            .find_map(|line| line.strip_prefix("btime "))?
            .trim()
            .parse()
            .ok()?;
        // SAFETY: sysconf has no preconditions.
        let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        let started = boot_seconds + ticks / ticks_per_second;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .ok()?
            .as_secs_f64();
        (started <= now + 1.0).then_some(started)
    }
}
