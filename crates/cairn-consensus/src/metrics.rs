//! What this layer counts for `/metrics` (etcd's `etcd_server_*` and backend commit twins).
//!
//! Plain atomics written where the event happens (proposals in `Replica::propose`, the commit
//! index in the log store, apply timing in the state machine, leader changes by a watcher of
//! openraft's metrics); the server reads them when scraped.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use cairn_storage::metrics::{Histogram, HistogramSnapshot};

use crate::types::{MemberId, Raft};

/// Counters of one replica; shared by its parts.
#[derive(Debug)]
pub struct ConsensusMetrics {
    /// Raft commit index as last reported to the log store (`etcd_server_proposals_committed_total`).
    committed_index: Arc<AtomicU64>,
    /// Proposals of this member waiting to be committed and applied.
    pub(crate) proposals_pending: AtomicI64,
    /// Proposals that failed for a consensus reason (no leader, leader change, timeout, stop);
    /// requests the state machine refused are not failures of consensus.
    pub(crate) proposals_failed: AtomicU64,
    /// Times this member saw a new leader (the first one included, as etcd counts).
    pub(crate) leader_changes: AtomicU64,
    /// Time to apply one batch of committed entries to the store, under its write lock.
    pub(crate) apply_seconds: Histogram,
    /// Snapshots received from a leader and installed.
    pub(crate) snapshots_received: AtomicU64,
    /// Time to build one snapshot of this member's state: streamed to its file and fsynced.
    pub(crate) snapshot_save_seconds: Histogram,
}

/// A reading of [`ConsensusMetrics`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConsensusMetricsSnapshot {
    pub committed_index: u64,
    pub proposals_pending: i64,
    pub proposals_failed: u64,
    pub leader_changes: u64,
    pub apply_seconds: HistogramSnapshot,
    pub snapshots_received: u64,
    pub snapshot_save_seconds: HistogramSnapshot,
}

impl ConsensusMetrics {
    /// `committed_index` is the log store's (see `LogStore::committed_index`).
    pub fn new(committed_index: Arc<AtomicU64>) -> ConsensusMetrics {
        ConsensusMetrics {
            committed_index,
            proposals_pending: AtomicI64::new(0),
            proposals_failed: AtomicU64::new(0),
            leader_changes: AtomicU64::new(0),
            apply_seconds: Histogram::disk_seconds(),
            snapshots_received: AtomicU64::new(0),
            snapshot_save_seconds: Histogram::disk_seconds(),
        }
    }

    pub fn snapshot(&self) -> ConsensusMetricsSnapshot {
        ConsensusMetricsSnapshot {
            committed_index: self.committed_index.load(Ordering::Relaxed),
            proposals_pending: self.proposals_pending.load(Ordering::Relaxed),
            proposals_failed: self.proposals_failed.load(Ordering::Relaxed),
            leader_changes: self.leader_changes.load(Ordering::Relaxed),
            apply_seconds: self.apply_seconds.snapshot(),
            snapshots_received: self.snapshots_received.load(Ordering::Relaxed),
            snapshot_save_seconds: self.snapshot_save_seconds.snapshot(),
        }
    }
}

/// Counts one pending proposal for as long as it lives.
pub(crate) struct PendingProposal<'a>(&'a ConsensusMetrics);

impl<'a> PendingProposal<'a> {
    pub(crate) fn start(metrics: &'a ConsensusMetrics) -> PendingProposal<'a> {
        metrics.proposals_pending.fetch_add(1, Ordering::Relaxed);
        PendingProposal(metrics)
    }
}

impl Drop for PendingProposal<'_> {
    fn drop(&mut self) {
        self.0.proposals_pending.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counts leader changes from openraft's metrics until the raft stops. (Server metrics: they
/// change with the leader, not with every append and apply as the full metrics do, so this
/// task is not woken once per raft loop.)
pub(crate) async fn watch_leader(raft: Raft, metrics: Arc<ConsensusMetrics>) {
    let mut raft_metrics = raft.server_metrics();
    let mut leader: Option<MemberId> = None;
    loop {
        let current = raft_metrics.borrow_and_update().current_leader;
        if current.is_some() && current != leader {
            metrics.leader_changes.fetch_add(1, Ordering::Relaxed);
        }
        leader = current;
        if raft_metrics.changed().await.is_err() {
            return;
        }
    }
}
