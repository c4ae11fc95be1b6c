//! openraft's storage test suite against Cairn's log store (on the WAL) and state machine.

use std::sync::Arc;

use cairn_consensus::limits::LOG_CACHE_BYTES_MAX;
use cairn_consensus::log_store::LogStore;
use cairn_consensus::metrics::ConsensusMetrics;
use cairn_consensus::state_machine::StateMachine;
use cairn_consensus::types::{StorageError, TypeConfig};
use cairn_mvcc::StoreConfig;
use cairn_storage::snapshot::SnapshotStore;
use openraft::testing::{StoreBuilder, Suite};

/// Builds stores that keep `log_cache_bytes` of durable entries in memory.
struct Builder {
    log_cache_bytes: usize,
}

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = LogStore::open(dir.path(), false, self.log_cache_bytes).expect("log store opens");
        let metrics = Arc::new(ConsensusMetrics::new(log.committed_index()));
        let snapshots = SnapshotStore::open(&dir.path().join("snap")).expect("snapshot store");
        let state_machine =
            StateMachine::open(snapshots, StoreConfig::default(), 1, 1, false, metrics)
                .expect("state machine opens");
        Ok((dir, log, state_machine))
    }
}

#[test]
fn log_store_and_state_machine_pass_openraft_suite() {
    let builder = Builder {
        log_cache_bytes: LOG_CACHE_BYTES_MAX,
    };
    Suite::test_all(builder).expect("openraft storage suite");
}

/// The same suite with no durable entry kept in memory: every read of an older entry goes to
/// the WAL, and truncations reload the new last entry from it.
#[test]
fn the_suite_passes_with_the_log_read_back_from_the_wal() {
    Suite::test_all(Builder { log_cache_bytes: 0 }).expect("openraft storage suite");
}
