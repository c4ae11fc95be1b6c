//! The replicated state machine: openraft's `RaftStateMachine` over `cairn-mvcc`.
//!
//! Entries are applied in log order on openraft's state-machine task, under the store's write
//! lock, one batch at a time. After each batch the last applied log id and membership are
//! written into the store (`Bucket::Consensus`), so a snapshot of the engine is a snapshot of
//! the replica: restarting from it needs nothing else. Snapshot files are the engine's
//! snapshot bytes, in `snap/`, named by raft index; they are streamed to and from disk, never
//! held whole in memory except while a received or stored one is decoded.
//!
//! Hot path (`apply`): one decode per entry, no task or channel per entry; the proposer's
//! waiter gets its result straight from here.

use std::collections::BTreeSet;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use bytes::Bytes;
use cairn_mvcc::{KvStore, StoreConfig};
use cairn_proto::cairnpb::InternalRequest;
use cairn_proto::raftpb;
use cairn_storage::engine::{Engine, SnapshotPart};
use cairn_storage::memory::MemoryEngine;
use cairn_storage::snapshot::{SnapshotStore, SnapshotWriter};
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, StorageIOError};
use prost::Message;
use tokio::sync::watch;

use crate::curp::SessionTable;
use crate::error::OpenError;
use crate::limits::SNAPSHOT_PART_RECORDS;
use crate::metrics::ConsensusMetrics;
use crate::native::NativeState;
use crate::removal::Removals;
use crate::snapshot_file::SnapshotFile;
use crate::types::{
    Entry, LogId, MemberId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};
use crate::wait::WaitRegistry;
use crate::wire;

/// The state every part of the member reads: the store, what has been applied, the waiters.
pub struct Replicated {
    /// `std::sync::RwLock`: held only for in-memory work, never across an await; readers
    /// (Range, Watch) must not pay for an async lock.
    store: RwLock<KvStore>,
    revision: watch::Sender<i64>,
    /// Raft index of the last applied entry: forwarded writes and read-index waits watch it.
    applied_index: watch::Sender<u64>,
    pub waits: WaitRegistry,
    member_id: MemberId,
    metrics: Arc<ConsensusMetrics>,
    /// Client requests applied since this member started (one log entry carries many).
    requests_applied: AtomicU64,
    /// The native CURP-HO protocol's state: sessions, witness pool, sync waiters.
    pub native: NativeState,
    /// Members the applied memberships removed, and whether a peer said this one was.
    pub removals: Arc<Removals>,
}

impl Replicated {
    pub fn store(&self) -> std::sync::RwLockReadGuard<'_, KvStore> {
        self.store.read().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn revisions(&self) -> watch::Receiver<i64> {
        self.revision.subscribe()
    }

    pub fn applied_index(&self) -> watch::Receiver<u64> {
        self.applied_index.subscribe()
    }

    /// Client requests applied since this member started.
    pub fn requests_applied(&self) -> u64 {
        self.requests_applied.load(Ordering::Relaxed)
    }

    fn store_mut(&self) -> std::sync::RwLockWriteGuard<'_, KvStore> {
        self.store.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn publish(&self, store: &KvStore, applied_index: u64) {
        let revision = store.current_revision();
        self.revision
            .send_if_modified(|current| std::mem::replace(current, revision) != revision);
        self.applied_index
            .send_if_modified(|current| std::mem::replace(current, applied_index) != applied_index);
    }
}

/// How far the state machine has applied, as openraft sees it.
#[derive(Clone, Debug, Default)]
struct AppliedState {
    last_applied: Option<LogId>,
    membership: StoredMembership,
    /// The CURP-HO session table's encoding (empty: no session yet).
    curp_sessions: Bytes,
    /// The newest `RecoveryDone` term applied.
    curp_recovered_term: u64,
    /// Members an applied membership removed (see `removal.rs`).
    removed: BTreeSet<MemberId>,
}

impl AppliedState {
    fn encode(&self) -> Bytes {
        let (membership_log_id, membership) = wire::stored_membership_to_pb(&self.membership);
        let state = raftpb::AppliedState {
            last_applied: wire::option_log_id_to_pb(&self.last_applied),
            membership_log_id,
            membership,
            curp_sessions: self.curp_sessions.to_vec(),
            curp_recovered_term: self.curp_recovered_term,
            removed_members: self.removed.iter().copied().collect(),
        };
        Bytes::from(state.encode_to_vec())
    }

    fn decode(bytes: &[u8]) -> Result<AppliedState, String> {
        let state = raftpb::AppliedState::decode(bytes).map_err(|error| error.to_string())?;
        let membership =
            wire::stored_membership_from_pb(&state.membership_log_id, state.membership.as_ref())
                .map_err(|error| error.to_string())?;
        Ok(AppliedState {
            last_applied: wire::option_log_id_from_pb(&state.last_applied),
            membership,
            curp_sessions: Bytes::from(state.curp_sessions),
            curp_recovered_term: state.curp_recovered_term,
            removed: state.removed_members.into_iter().collect(),
        })
    }

    fn of_store(store: &KvStore) -> Result<AppliedState, String> {
        store
            .consensus_state()
            .map_or(Ok(AppliedState::default()), |bytes| {
                AppliedState::decode(&bytes)
            })
    }

    fn sessions(&self) -> Result<SessionTable, String> {
        if self.curp_sessions.is_empty() {
            return Ok(SessionTable::new());
        }
        SessionTable::decode(&self.curp_sessions).map_err(|error| error.to_string())
    }

    fn snapshot_meta(&self) -> SnapshotMeta {
        let last_log_id = self.last_applied;
        let snapshot_id = last_log_id.map_or("empty".to_string(), |id| {
            format!("{}-{}", id.leader_id.term, id.index)
        });
        SnapshotMeta {
            last_log_id,
            last_membership: self.membership.clone(),
            snapshot_id,
        }
    }
}

/// The requests of one entry: length-delimited `cairnpb.InternalRequest`s (see
/// `batcher.rs`). Decoding stops at the first that does not decode, the same way on every
/// member (leaders check forwarded bytes, so that means a bug, not an attack).
fn decode_batch(mut payload: &[u8]) -> Vec<InternalRequest> {
    let mut requests = Vec::new();
    while !payload.is_empty() {
        match InternalRequest::decode_length_delimited(&mut payload) {
            Ok(request) => requests.push(request),
            Err(_) => break,
        }
    }
    requests
}

/// openraft's state machine handle.
pub struct StateMachine {
    shared: Arc<Replicated>,
    snapshots: Arc<SnapshotStore>,
    applied: AppliedState,
    store_config: StoreConfig,
    /// Meta of the newest snapshot file, to answer `get_current_snapshot` without decoding it.
    latest: Arc<Mutex<Option<SnapshotMeta>>>,
    /// Snapshot files are read and written on the calling task (simulation).
    synchronous: bool,
}

/// Runs blocking file work on tokio's blocking pool, or right here when `synchronous`.
async fn blocking<T: Send + 'static>(
    synchronous: bool,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, tokio::task::JoinError> {
    if synchronous {
        Ok(work())
    } else {
        tokio::task::spawn_blocking(work).await
    }
}

impl StateMachine {
    /// Opens the state from the newest snapshot in `snapshots` (or empty).
    pub fn open(
        snapshots: SnapshotStore,
        store_config: StoreConfig,
        member_id: MemberId,
        first_proposal_id: u64,
        synchronous: bool,
        metrics: Arc<ConsensusMetrics>,
    ) -> Result<StateMachine, OpenError> {
        let engine: Box<dyn Engine> = match snapshots.load_latest()? {
            Some((_, data)) => Box::new(MemoryEngine::decode_snapshot(&data)?),
            None => Box::new(MemoryEngine::new()),
        };
        let store = KvStore::open(engine, store_config.clone());
        let applied = AppliedState::of_store(&store).map_err(|reason| OpenError::Corrupt {
            what: "snapshot consensus state".to_string(),
            reason,
        })?;
        let sessions = applied.sessions().map_err(|reason| OpenError::Corrupt {
            what: "snapshot CURP-HO sessions".to_string(),
            reason,
        })?;
        let latest = applied.last_applied.map(|_| applied.snapshot_meta());
        let (revision, _) = watch::channel(store.current_revision());
        let (applied_index, _) =
            watch::channel(applied.last_applied.map_or(0, |log_id| log_id.index));
        Ok(StateMachine {
            shared: Arc::new(Replicated {
                store: RwLock::new(store),
                revision,
                applied_index,
                waits: WaitRegistry::new(first_proposal_id),
                member_id,
                metrics,
                requests_applied: AtomicU64::new(0),
                native: NativeState::new(member_id, sessions, applied.curp_recovered_term),
                removals: Arc::new(Removals::new(applied.removed.clone())),
            }),
            snapshots: Arc::new(snapshots),
            applied,
            store_config,
            latest: Arc::new(Mutex::new(latest)),
            synchronous,
        })
    }

    pub fn shared(&self) -> Arc<Replicated> {
        self.shared.clone()
    }

    fn apply_entry(&mut self, store: &mut KvStore, entry: Entry) {
        let index = entry.log_id.index;
        let term = entry.log_id.leader_id.term;
        match entry.payload {
            EntryPayload::Normal(proposal) => {
                let requests = decode_batch(&proposal.0);
                let native = &self.shared.native;
                // Native commands apply once per id (the CURP-HO session table).
                let admissions = native.admit(&requests);
                let results = if admissions.iter().all(|admission| admission.applies()) {
                    store.apply_batch(index, &requests)
                } else {
                    let admitted: Vec<InternalRequest> = requests
                        .iter()
                        .zip(&admissions)
                        .filter(|(_, admission)| admission.applies())
                        .map(|(request, _)| request.clone())
                        .collect();
                    store.apply_batch(index, &admitted)
                };
                self.shared
                    .requests_applied
                    .fetch_add(requests.len() as u64, Ordering::Relaxed);
                let mut results = results.into_iter();
                for (request, admission) in requests.iter().zip(&admissions) {
                    let result = if admission.applies() {
                        results.next()
                    } else {
                        None
                    };
                    native.after_apply(store, term, request, admission, result.as_ref());
                    if let Some(result) = result {
                        if request.origin_member == self.shared.member_id {
                            self.shared.waits.complete(request.proposal_id, result);
                        }
                    }
                }
            }
            // Raft entry 0 (the initial membership) has no index in the store, which counts
            // from 1 like etcd's.
            EntryPayload::Blank if index == 0 => {}
            EntryPayload::Blank => store.apply_noop(index),
            EntryPayload::Membership(membership) => {
                let removals = &self.shared.removals;
                removals.applied(self.applied.membership.membership(), &membership);
                self.applied.removed = removals.snapshot();
                self.applied.membership = StoredMembership::new(Some(entry.log_id), membership);
                if index > 0 {
                    store.apply_noop(index);
                }
            }
        }
        self.applied.last_applied = Some(entry.log_id);
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok((self.applied.last_applied, self.applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<()>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let shared = self.shared.clone();
        let started = std::time::Instant::now();
        let mut store = shared.store_mut();
        let mut applied = 0;
        for entry in entries {
            self.apply_entry(&mut store, entry);
            applied += 1;
        }
        if let Some(sessions) = shared.native.take_dirty_sessions() {
            self.applied.curp_sessions = sessions;
        }
        self.applied.curp_recovered_term = shared.native.recovered_term();
        store.set_consensus_state(self.applied.encode());
        let index = self.applied.last_applied.map_or(0, |log_id| log_id.index);
        shared.publish(&store, index);
        drop(store);
        shared.metrics.apply_seconds.observe(started.elapsed());
        Ok(vec![(); applied])
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder {
            shared: self.shared.clone(),
            snapshots: self.snapshots.clone(),
            latest: self.latest.clone(),
            synchronous: self.synchronous,
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotFile>, StorageError> {
        let (file, path) = self
            .snapshots
            .receive()
            .map_err(|error| StorageIOError::write_snapshot(None, &error))?;
        Ok(Box::new(SnapshotFile::receiving(file, path)))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        mut snapshot: Box<SnapshotFile>,
    ) -> Result<(), StorageError> {
        let refuse = |reason: String| -> StorageError {
            StorageIOError::read_snapshot(Some(meta.signature()), &std::io::Error::other(reason))
                .into()
        };
        let index = meta.last_log_id.map_or(0, |log_id| log_id.index);
        let data = blocking(self.synchronous, move || {
            let bytes = snapshot.read_all().map_err(|error| error.to_string())?;
            SnapshotStore::check_received(bytes, index).map_err(|error| error.to_string())
        })
        .await
        .map_err(|error| refuse(error.to_string()))?
        .map_err(refuse)?;
        let engine =
            MemoryEngine::decode_snapshot(&data).map_err(|error| refuse(error.to_string()))?;
        let store = KvStore::open(Box::new(engine), self.store_config.clone());
        let applied = AppliedState::of_store(&store).map_err(refuse)?;
        if applied.last_applied != meta.last_log_id {
            return Err(refuse(format!(
                "snapshot data is at {:?}, its meta says {:?}",
                applied.last_applied, meta.last_log_id
            )));
        }
        let sessions = applied.sessions().map_err(refuse)?;
        let snapshots = self.snapshots.clone();
        blocking(self.synchronous, move || {
            let mut writer = snapshots.writer().map_err(|error| error.to_string())?;
            writer.write_all(&data).map_err(|error| error.to_string())?;
            writer.finish(index).map_err(|error| error.to_string())?;
            Ok(())
        })
        .await
        .map_err(|error| refuse(error.to_string()))?
        .map_err(refuse)?;
        {
            let mut current = self.shared.store_mut();
            *current = store;
            self.shared
                .native
                .restore(sessions, applied.curp_recovered_term);
            self.shared.removals.restore(applied.removed.clone());
            self.shared.publish(&current, index);
        }
        self.applied = applied;
        *lock(&self.latest) = Some(meta.clone());
        self.shared
            .metrics
            .snapshots_received
            .fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let Some(meta) = lock(&self.latest).clone() else {
            return Ok(None);
        };
        let index = meta.last_log_id.map_or(0, |log_id| log_id.index);
        let file = self
            .snapshots
            .open_file(index)
            .map_err(|error| StorageIOError::read_snapshot(Some(meta.signature()), &error))?;
        Ok(file.map(|file| Snapshot {
            meta,
            snapshot: Box::new(SnapshotFile::stored(file)),
        }))
    }
}

/// Builds a snapshot of the applied state and saves it as the newest snapshot file.
pub struct SnapshotBuilder {
    shared: Arc<Replicated>,
    snapshots: Arc<SnapshotStore>,
    latest: Arc<Mutex<Option<SnapshotMeta>>>,
    synchronous: bool,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let started = std::time::Instant::now();
        let shared = self.shared.clone();
        let snapshots = self.snapshots.clone();
        let built = blocking(self.synchronous, move || -> Result<_, std::io::Error> {
            let (applied, writer) = match write_in_parts(&shared, &snapshots)? {
                Some(written) => written,
                None => {
                    // A compaction moved the records between parts, or an installed snapshot
                    // replaced the store: write it again whole, under one hold of the read
                    // lock (applies wait, reads go on).
                    let mut writer = snapshots.writer().map_err(std::io::Error::other)?;
                    let store = shared.store();
                    store.write_snapshot(&mut writer)?;
                    let applied = AppliedState::of_store(&store).map_err(std::io::Error::other)?;
                    (applied, writer)
                }
            };
            // The fsync comes after the lock is released.
            let meta = applied.snapshot_meta();
            let index = meta.last_log_id.map_or(0, |log_id| log_id.index);
            let file = writer.finish(index).map_err(std::io::Error::other)?;
            Ok((meta, file))
        })
        .await
        .map_err(|error| StorageIOError::write_snapshot(None, &error))?;
        let (meta, file) = built.map_err(|error| StorageIOError::write_snapshot(None, &error))?;
        *lock(&self.latest) = Some(meta.clone());
        let elapsed = started.elapsed();
        self.shared.metrics.snapshot_save_seconds.observe(elapsed);
        tracing::info!(index = ?meta.last_log_id, ?elapsed, "snapshot built");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(SnapshotFile::stored(file)),
        })
    }
}

/// Writes a snapshot of the store as it is now into a new file of `snapshots`, taking the read
/// lock once per part (`SNAPSHOT_PART_RECORDS`) so that applies go on between parts. `None`
/// when a compaction between parts moved the records, or an installed snapshot replaced the
/// store (the partial file is dropped).
fn write_in_parts<'a>(
    shared: &Replicated,
    snapshots: &'a SnapshotStore,
) -> std::io::Result<Option<(AppliedState, SnapshotWriter<'a>)>> {
    let mut writer = snapshots.writer().map_err(std::io::Error::other)?;
    let (mut cut, applied) = {
        let store = shared.store();
        let applied = AppliedState::of_store(&store).map_err(std::io::Error::other)?;
        (store.snapshot_cut(), applied)
    };
    // Each part is encoded under the lock and written to the file (checksum, system calls)
    // after it is released.
    let mut part_bytes = Vec::new();
    loop {
        part_bytes.clear();
        let part =
            shared
                .store()
                .write_snapshot_part(&mut cut, &mut part_bytes, SNAPSHOT_PART_RECORDS)?;
        writer.write_all(&part_bytes)?;
        match part {
            SnapshotPart::More => {}
            SnapshotPart::Done => return Ok(Some((applied, writer))),
            SnapshotPart::Moved => return Ok(None),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
