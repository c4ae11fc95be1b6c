//! The node: durable, ordered application of requests to the state machine.
//!
//! ```text
//!  gRPC handler ── propose(): stamp time, encode, ──► WAL writer thread ──► flushed callback
//!                 then under `log_tail`: assign the     (write + one fdatasync  (on the writer
//!                 next index and append                  per group of waiting    thread: apply
//!                                                        appends)                under the store
//!  reply (oneshot) ◄──────────────────────────────────────────────────────────── write lock,
//!                                                                                 publish revision,
//!                                                                                 maybe snapshot)
//! ```
//!
//! A request is acknowledged only after its entry is fsynced *and* applied, so every reply
//! carries a revision that a restart reproduces (replay is deterministic) and reads served from
//! the store are linearizable on a single node. Group commit comes from the WAL: whatever queues
//! up during one fsync shares the next one. A write costs two thread wake-ups (handler → WAL
//! writer → handler): the apply runs in the WAL's flushed callback rather than on another task.
//!
//! Hot path (`propose`, `Applier::flushed`): no per-byte allocation, no lock held across an
//! await, no task per request.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use cairn_mvcc::{ApplyResponse, KvStore, MvccError, StoreConfig};
use cairn_proto::cairnpb::internal_request::Request;
use cairn_proto::cairnpb::InternalRequest;
use cairn_proto::etcdserverpb::ResponseHeader;
use cairn_storage::engine::Engine;
use cairn_storage::error::WalError;
use cairn_storage::memory::MemoryEngine;
use cairn_storage::snapshot::SnapshotStore;
use cairn_storage::wal::{Entry, Wal, WalOptions};
use prost::Message;
use tokio::sync::{oneshot, watch};
use tracing::{error, info, warn};

use crate::config::ServerConfig;
use crate::error::{ServerError, StartError};
use crate::identity::Identity;
use crate::limits::SNAPSHOT_WAL_BYTES_MAX;

/// Raft term reported in headers. A single member never changes leader, so it stays 1 until
/// replication arrives.
pub const RAFT_TERM: u64 = 1;

type Reply = oneshot::Sender<Result<ApplyResponse, ServerError>>;

/// A running node; cheap to clone.
#[derive(Clone)]
pub struct Node {
    inner: Arc<NodeInner>,
}

/// Where the next entry goes. Assigning the index and handing the entry to the WAL happen under
/// one lock so that entries reach the WAL in index order.
struct LogTail {
    next_index: u64,
    closed: bool,
}

struct NodeInner {
    identity: Identity,
    config: ServerConfig,
    /// `std::sync::RwLock`, not tokio's: it is only ever held for in-memory work, never across
    /// an await, and readers (Range) must not pay for an async lock.
    store: Arc<RwLock<KvStore>>,
    /// `std::sync::Mutex`: held for an index increment and a queue push. `Wal::append` blocks
    /// only when the WAL queue is full, which is exactly the backpressure writers should feel.
    log_tail: Mutex<LogTail>,
    /// Shared with every flushed callback; they run one at a time on the WAL writer thread.
    applier: Arc<Mutex<Applier>>,
    revision: watch::Receiver<i64>,
    stopping: watch::Sender<bool>,
    wal: Wal,
}

impl Node {
    /// Opens the data dir (snapshot + WAL replay) and starts serving proposals.
    pub async fn open(config: ServerConfig) -> Result<Node, StartError> {
        config.validate()?;
        let member_dir = config.data_dir.join("member");
        for dir in [member_dir.join("wal"), member_dir.join("snap")] {
            std::fs::create_dir_all(&dir).map_err(|source| StartError::DataDir {
                path: dir.display().to_string(),
                source,
            })?;
        }
        let identity = Identity::load_or_create(&member_dir, &config)?;
        let started = std::time::Instant::now();
        let snapshots = SnapshotStore::open(&member_dir.join("snap"))?;
        let engine: Box<dyn Engine> = match snapshots.load_latest()? {
            Some((_, data)) => Box::new(MemoryEngine::decode_snapshot(&data)?),
            None => Box::new(MemoryEngine::new()),
        };
        let store_config = StoreConfig {
            quota_backend_bytes: config.quota_backend_bytes,
            member_id: identity.member_id,
        };
        let mut store = KvStore::open(engine, store_config);
        let snapshot_index = store.applied_index();
        let mut replay_error = None;
        let mut replayed = 0u64;
        let wal = Wal::open(
            &member_dir.join("wal"),
            WalOptions::default(),
            snapshot_index,
            |entry| {
                if replay_error.is_some() {
                    return;
                }
                // A purged or lost stretch between the snapshot and the log would silently
                // drop acknowledged writes: refuse to start instead.
                let expected = snapshot_index + replayed + 1;
                if entry.index != expected {
                    replay_error = Some(StartError::CorruptEntry {
                        index: entry.index,
                        reason: format!("log gap: expected entry {expected} after the snapshot"),
                    });
                    return;
                }
                match InternalRequest::decode(entry.data.as_ref()) {
                    Ok(request) => {
                        // A refused request was refused the first time too: its result is dropped.
                        let _ = store.apply(entry.index, &request);
                        replayed += 1;
                    }
                    Err(error) => {
                        replay_error = Some(StartError::CorruptEntry {
                            index: entry.index,
                            reason: error.to_string(),
                        })
                    }
                }
            },
        )?;
        if let Some(error) = replay_error {
            return Err(error);
        }
        info!(
            member_id = format!("{:x}", identity.member_id),
            snapshot_index,
            replayed,
            revision = store.current_revision(),
            keys = store.key_count(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "recovered state"
        );
        let next_index = wal.last_index().max(store.applied_index()) + 1;
        let (revision_tx, revision_rx) = watch::channel(store.current_revision());
        let store = Arc::new(RwLock::new(store));
        let (stopping, _) = watch::channel(false);
        let applier = Applier {
            store: store.clone(),
            revision: revision_tx,
            snapshots: Arc::new(snapshots),
            wal: wal.clone(),
            runtime: tokio::runtime::Handle::current(),
            snapshot_count: config.snapshot_count,
            applied_since_snapshot: replayed,
            bytes_since_snapshot: 0,
            snapshot_running: Arc::new(AtomicBool::new(false)),
            failed: false,
        };
        Ok(Node {
            inner: Arc::new(NodeInner {
                identity,
                config,
                store,
                log_tail: Mutex::new(LogTail {
                    next_index,
                    closed: false,
                }),
                applier: Arc::new(Mutex::new(applier)),
                revision: revision_rx,
                stopping,
                wal,
            }),
        })
    }

    pub fn identity(&self) -> &Identity {
        &self.inner.identity
    }

    pub fn config(&self) -> &ServerConfig {
        &self.inner.config
    }

    /// Read access to the state. Hold it only for in-memory work.
    pub fn store(&self) -> RwLockReadGuard<'_, KvStore> {
        self.inner
            .store
            .read()
            .expect("store lock poisoned: an apply panicked")
    }

    /// The newest applied revision, updated after every applied batch.
    pub fn revisions(&self) -> watch::Receiver<i64> {
        self.inner.revision.clone()
    }

    /// Becomes true when the node starts shutting down; streams select on it.
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.inner.stopping.subscribe()
    }

    /// A response header for `revision` with this member's ids.
    pub fn header(&self, revision: i64) -> ResponseHeader {
        ResponseHeader {
            cluster_id: self.inner.identity.cluster_id,
            member_id: self.inner.identity.member_id,
            revision,
            raft_term: RAFT_TERM,
        }
    }

    /// Replaces a state-machine header (revision only) by a full one.
    pub fn fill_header(&self, header: &mut Option<ResponseHeader>) {
        let revision = header.as_ref().map_or(0, |header| header.revision);
        *header = Some(self.header(revision));
    }

    /// Proposes `request`: returns once it is durable and applied, with the apply result.
    pub async fn propose(&self, request: Request) -> Result<ApplyResponse, ServerError> {
        let mut request = InternalRequest {
            now_unix_ms: now_unix_ms(),
            request: Some(request),
        };
        let data = request.encode_to_vec();
        if data.len() > self.inner.config.max_request_bytes {
            return Err(MvccError::RequestTooLarge.into());
        }
        let data = Bytes::from(data);
        let (reply, result) = oneshot::channel();
        {
            let mut tail = lock(&self.inner.log_tail);
            if tail.closed {
                return Err(ServerError::Stopped);
            }
            let index = tail.next_index;
            tail.next_index += 1;
            let applier = self.inner.applier.clone();
            let bytes = data.len() as u64;
            let entry = Entry {
                index,
                term: RAFT_TERM,
                data,
            };
            // The decoded request travels with the entry, so applying never decodes it again.
            let request = std::mem::take(&mut request);
            let flushed = move |result| {
                let entry = AppliedEntry {
                    index,
                    bytes,
                    request: &request,
                };
                lock(&applier).flushed(result, entry, reply)
            };
            self.inner.wal.append(vec![entry], Box::new(flushed));
        }
        result.await.map_err(|_| ServerError::Stopped)?
    }

    /// Tells streams to end (first step of shutdown); proposals are still served.
    pub fn begin_stop(&self) {
        self.inner.stopping.send_replace(true);
    }

    /// Graceful stop: refuse new proposals, let queued ones finish (fsync + apply), close the
    /// WAL and write a final snapshot so that the next start is fast.
    pub async fn stop(&self) {
        {
            let mut tail = lock(&self.inner.log_tail);
            if tail.closed {
                return;
            }
            tail.closed = true;
        }
        self.begin_stop();
        if let Err(error) = self.inner.wal.close().await {
            error!(%error, "closing the WAL failed");
        }
        let applier = self.inner.applier.clone();
        let (snapshots, index, data) = {
            let applier = lock(&applier);
            if applier.failed || applier.applied_since_snapshot == 0 {
                info!("node stopped");
                return;
            }
            let (index, data) = applier.encode();
            (applier.snapshots.clone(), index, data)
        };
        // The WAL is closed by now; the next start's first snapshot purges it.
        save_snapshot(snapshots, None, index, data).await;
        info!("node stopped");
    }
}

/// Locks a mutex of this module. Poisoning means a callback panicked on a broken invariant,
/// which already took the node down.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .expect("node mutex poisoned by a panicked apply")
}

/// Resolves once shutdown begins. The guard `wait_for` yields is dropped in here, so the
/// futures of callers that select on this stay `Send`.
pub async fn until_stopping(stopping: &mut watch::Receiver<bool>) {
    let _ = stopping.wait_for(|stopping| *stopping).await.map(|_| ());
}

/// Wall-clock milliseconds since the epoch: the time stamped into entries.
pub fn now_unix_ms() -> i64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    since_epoch.as_millis() as i64
}

/// One durable entry on its way into the state machine.
struct AppliedEntry<'a> {
    index: u64,
    /// Encoded size in the WAL.
    bytes: u64,
    request: &'a InternalRequest,
}

/// Applies flushed entries in log order and owns snapshotting. Its `flushed` runs on the WAL
/// writer thread, once per entry, in index order.
struct Applier {
    store: Arc<RwLock<KvStore>>,
    revision: watch::Sender<i64>,
    snapshots: Arc<SnapshotStore>,
    wal: Wal,
    runtime: tokio::runtime::Handle,
    snapshot_count: u64,
    applied_since_snapshot: u64,
    /// WAL payload bytes applied since the last snapshot.
    bytes_since_snapshot: u64,
    snapshot_running: Arc<AtomicBool>,
    /// The WAL failed once: durability of later entries is unknown, so nothing more is applied
    /// or acknowledged (etcd panics here; we stop serving writes).
    failed: bool,
}

impl Applier {
    fn flushed(&mut self, result: Result<u64, WalError>, entry: AppliedEntry<'_>, reply: Reply) {
        if let Err(error) = result {
            if !self.failed {
                error!(%error, "WAL write failed; refusing all further writes");
            }
            self.failed = true;
        }
        if self.failed {
            let _ = reply.send(Err(ServerError::Stopped));
            return;
        }
        let (result, revision) = {
            let mut store = self.store.write().expect("store lock poisoned");
            let result = store.apply(entry.index, entry.request);
            (result, store.current_revision())
        };
        self.revision
            .send_if_modified(|current| std::mem::replace(current, revision) != revision);
        // A client that gave up (deadline, disconnect) no longer listens: nothing to do.
        let _ = reply.send(result.map_err(ServerError::from));
        self.applied_since_snapshot += 1;
        self.bytes_since_snapshot += entry.bytes;
        // Periodic (every `--snapshot-count` entries) and by size: a WAL full of large values
        // must not make a restart replay gigabytes.
        let due = self.applied_since_snapshot >= self.snapshot_count
            || self.bytes_since_snapshot >= SNAPSHOT_WAL_BYTES_MAX;
        if due {
            self.snapshot_in_background();
        }
    }

    /// Starts a snapshot unless one is running: state encoded here (the applier is the only
    /// writer, so the state cannot move meanwhile), file written and WAL purged off-thread.
    fn snapshot_in_background(&mut self) {
        if self.snapshot_running.swap(true, Ordering::AcqRel) {
            return;
        }
        let (index, data) = self.encode();
        self.applied_since_snapshot = 0;
        self.bytes_since_snapshot = 0;
        let snapshots = self.snapshots.clone();
        let wal = self.wal.clone();
        let running = self.snapshot_running.clone();
        self.runtime.spawn(async move {
            save_snapshot(snapshots, Some(wal), index, data).await;
            running.store(false, Ordering::Release);
        });
    }

    fn encode(&self) -> (u64, Vec<u8>) {
        let store = self.store.read().expect("store lock poisoned");
        (store.applied_index(), store.encode_snapshot())
    }
}

async fn save_snapshot(
    snapshots: Arc<SnapshotStore>,
    purge: Option<Wal>,
    index: u64,
    data: Vec<u8>,
) {
    let saved = tokio::task::spawn_blocking(move || snapshots.save(index, &data)).await;
    match saved {
        Ok(Ok(())) => {
            if let Some(wal) = purge {
                if let Err(error) = wal.purge_to(index).await {
                    warn!(%error, "purging the WAL after a snapshot failed");
                }
            }
        }
        Ok(Err(error)) => warn!(%error, index, "snapshot failed; the WAL keeps everything"),
        Err(error) => warn!(%error, index, "snapshot task failed"),
    }
}
