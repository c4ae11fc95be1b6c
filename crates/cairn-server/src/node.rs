//! The node: durable, ordered application of requests to the state machine.
//!
//! ```text
//!  gRPC handlers ──propose()──► proposals queue ──► proposer thread ──append──► WAL writer thread
//!                                                   (batches, stamps time,      (write + one fsync
//!                                                    assigns log indexes)        per batch)
//!                                                                                    │ flushed
//!  reply (oneshot) ◄── applier task ◄──────────── flushed batches ◄─────────────────┘
//!                      (write lock, apply in log order, publish revision, snapshot)
//! ```
//!
//! A request is acknowledged only after its entry is fsynced *and* applied, so every reply
//! carries a revision that a restart reproduces (replay is deterministic) and reads served from
//! the store are linearizable on a single node. Group commit comes from the WAL: whatever queues
//! up during one fsync shares the next one.
//!
//! Hot path (proposer, applier): no per-byte allocation, no lock held across an await, no task
//! per request.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use cairn_mvcc::{ApplyResponse, KvStore, MvccError, StoreConfig};
use cairn_proto::cairnpb::internal_request::Request;
use cairn_proto::cairnpb::InternalRequest;
use cairn_proto::etcdserverpb::ResponseHeader;
use cairn_storage::engine::Engine;
use cairn_storage::memory::MemoryEngine;
use cairn_storage::snapshot::SnapshotStore;
use cairn_storage::wal::{Entry, Wal, WalOptions};
use prost::Message;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{error, info, warn};

use crate::config::ServerConfig;
use crate::error::{ServerError, StartError};
use crate::identity::Identity;
use crate::limits::{PROPOSALS_QUEUED_MAX, PROPOSAL_BATCH_MAX};

/// Raft term reported in headers. A single member never changes leader, so it stays 1 until
/// replication arrives.
pub const RAFT_TERM: u64 = 1;

struct Proposal {
    request: InternalRequest,
    reply: oneshot::Sender<Result<ApplyResponse, ServerError>>,
}

enum ProposerMessage {
    Propose(Proposal),
    Stop,
}

/// Entries the WAL reported durable (or failed to make durable), with their waiting clients.
struct FlushedBatch {
    result: Result<u64, cairn_storage::error::WalError>,
    proposals: Vec<(u64, Proposal)>,
}

/// A running node; cheap to clone.
#[derive(Clone)]
pub struct Node {
    inner: Arc<NodeInner>,
}

struct NodeInner {
    identity: Identity,
    config: ServerConfig,
    /// `std::sync::RwLock`, not tokio's: it is only ever held for in-memory work, never across
    /// an await, and readers (Range) must not pay for an async lock.
    store: Arc<RwLock<KvStore>>,
    proposals: mpsc::Sender<ProposerMessage>,
    revision: watch::Receiver<i64>,
    stopping: watch::Sender<bool>,
    stopped: AtomicBool,
    applier: Mutex<Option<tokio::task::JoinHandle<()>>>,
    wal: Wal,
    snapshots_taken: Arc<AtomicU64>,
}

impl Node {
    /// Opens the data dir (snapshot + WAL replay) and starts the proposer and applier.
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
        let (proposals_tx, proposals_rx) = mpsc::channel(PROPOSALS_QUEUED_MAX);
        let (flushed_tx, flushed_rx) = mpsc::unbounded_channel();
        let (stopping, _) = watch::channel(false);
        let snapshots_taken = Arc::new(AtomicU64::new(0));

        let proposer_wal = wal.clone();
        let runtime = tokio::runtime::Handle::current();
        std::thread::Builder::new()
            .name("cairn-proposer".into())
            .spawn(move || {
                run_proposer(proposals_rx, proposer_wal, next_index, flushed_tx, runtime)
            })
            .map_err(|source| StartError::DataDir {
                path: "proposer thread".into(),
                source,
            })?;
        let applier = Applier {
            store: store.clone(),
            revision: revision_tx,
            snapshots: Arc::new(snapshots),
            wal: wal.clone(),
            snapshot_count: config.snapshot_count,
            applied_since_snapshot: replayed,
            snapshot_running: Arc::new(AtomicBool::new(false)),
            snapshots_taken: snapshots_taken.clone(),
        };
        let applier = tokio::spawn(applier.run(flushed_rx));
        Ok(Node {
            inner: Arc::new(NodeInner {
                identity,
                config,
                store,
                proposals: proposals_tx,
                revision: revision_rx,
                stopping,
                stopped: AtomicBool::new(false),
                applier: Mutex::new(Some(applier)),
                wal,
                snapshots_taken,
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

    /// Snapshots written since start (tests and metrics).
    pub fn snapshots_taken(&self) -> u64 {
        self.inner.snapshots_taken.load(Ordering::Relaxed)
    }

    /// WAL counters (metrics).
    pub fn wal_stats(&self) -> cairn_storage::wal::WalStats {
        self.inner.wal.stats()
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
        let request = InternalRequest {
            now_unix_ms: 0,
            request: Some(request),
        };
        if request.encoded_len() > self.inner.config.max_request_bytes {
            return Err(MvccError::RequestTooLarge.into());
        }
        if self.inner.stopped.load(Ordering::Acquire) {
            return Err(ServerError::Stopped);
        }
        let (reply, result) = oneshot::channel();
        let message = ProposerMessage::Propose(Proposal { request, reply });
        self.inner
            .proposals
            .send(message)
            .await
            .map_err(|_| ServerError::Stopped)?;
        result.await.map_err(|_| ServerError::Stopped)?
    }

    /// Tells streams to end (first step of shutdown); proposals are still served.
    pub fn begin_stop(&self) {
        self.inner.stopping.send_replace(true);
    }

    /// Graceful stop: refuse new proposals, let queued ones finish (fsync + apply), close the
    /// WAL and write a final snapshot so that the next start is fast.
    pub async fn stop(&self) {
        if self.inner.stopped.swap(true, Ordering::AcqRel) {
            return;
        }
        self.inner.stopping.send_replace(true);
        let _ = self.inner.proposals.send(ProposerMessage::Stop).await;
        let applier = self
            .inner
            .applier
            .lock()
            .expect("applier handle lock")
            .take();
        if let Some(applier) = applier {
            if let Err(error) = applier.await {
                error!(%error, "applier task failed");
            }
        }
        info!("node stopped");
    }
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

/// The proposer: a thread, because `Wal::append` may block when the WAL queue is full, and that
/// backpressure must reach the proposals queue rather than stall a runtime worker.
fn run_proposer(
    mut proposals: mpsc::Receiver<ProposerMessage>,
    wal: Wal,
    mut next_index: u64,
    flushed: mpsc::UnboundedSender<FlushedBatch>,
    runtime: tokio::runtime::Handle,
) {
    let mut stop = false;
    while !stop {
        let Some(first) = proposals.blocking_recv() else {
            break;
        };
        let mut batch = Vec::new();
        let mut message = Some(first);
        while let Some(next) = message.take() {
            match next {
                ProposerMessage::Propose(proposal) => batch.push(proposal),
                ProposerMessage::Stop => stop = true,
            }
            if !stop && batch.len() < PROPOSAL_BATCH_MAX {
                message = proposals.try_recv().ok();
            }
        }
        if batch.is_empty() {
            continue;
        }
        let now = now_unix_ms();
        let mut entries = Vec::with_capacity(batch.len());
        let mut waiting = Vec::with_capacity(batch.len());
        for mut proposal in batch {
            proposal.request.now_unix_ms = now;
            let data = Bytes::from(proposal.request.encode_to_vec());
            entries.push(Entry {
                index: next_index,
                term: RAFT_TERM,
                data,
            });
            waiting.push((next_index, proposal));
            next_index += 1;
        }
        let flushed = flushed.clone();
        wal.append(
            entries,
            Box::new(move |result| {
                // The applier outlives every batch it is sent; if it is gone the node is down.
                let _ = flushed.send(FlushedBatch {
                    result,
                    proposals: waiting,
                });
            }),
        );
    }
    // Refuse what is still queued, then flush and close the WAL; its callbacks deliver the last
    // batches to the applier, which stops when this thread's sender and theirs are dropped.
    proposals.close();
    while let Ok(message) = proposals.try_recv() {
        if let ProposerMessage::Propose(proposal) = message {
            let _ = proposal.reply.send(Err(ServerError::Stopped));
        }
    }
    if let Err(error) = runtime.block_on(wal.close()) {
        error!(%error, "closing the WAL failed");
    }
}

/// Applies flushed batches in log order; owns snapshotting.
struct Applier {
    store: Arc<RwLock<KvStore>>,
    revision: watch::Sender<i64>,
    snapshots: Arc<SnapshotStore>,
    wal: Wal,
    snapshot_count: u64,
    applied_since_snapshot: u64,
    snapshot_running: Arc<AtomicBool>,
    snapshots_taken: Arc<AtomicU64>,
}

impl Applier {
    async fn run(mut self, mut flushed: mpsc::UnboundedReceiver<FlushedBatch>) {
        let mut failed = false;
        while let Some(batch) = flushed.recv().await {
            if failed {
                reply_all(batch.proposals, || ServerError::Stopped);
                continue;
            }
            if let Err(error) = batch.result {
                // Durability of these entries is unknown: never apply or acknowledge them, and
                // refuse everything after (etcd panics here; we stop serving writes).
                error!(%error, "WAL write failed; refusing all further writes");
                failed = true;
                reply_all(batch.proposals, || ServerError::Stopped);
                continue;
            }
            self.apply_batch(batch.proposals);
            if self.applied_since_snapshot >= self.snapshot_count {
                self.snapshot_in_background();
            }
        }
        if self.applied_since_snapshot > 0 && !failed {
            self.snapshot_now().await;
        }
    }

    fn apply_batch(&mut self, proposals: Vec<(u64, Proposal)>) {
        let mut results = Vec::with_capacity(proposals.len());
        let revision = {
            let mut store = self.store.write().expect("store lock poisoned");
            for (index, proposal) in &proposals {
                results.push(store.apply(*index, &proposal.request));
            }
            store.current_revision()
        };
        self.revision.send_replace(revision);
        self.applied_since_snapshot += proposals.len() as u64;
        for ((_, proposal), result) in proposals.into_iter().zip(results) {
            // A client that gave up (deadline, disconnect) no longer listens: nothing to do.
            let _ = proposal.reply.send(result.map_err(ServerError::from));
        }
    }

    /// Starts a snapshot unless one is running: state encoded here (the applier is the only
    /// writer, so the state cannot move meanwhile), file written and WAL purged off the task.
    fn snapshot_in_background(&mut self) {
        if self.snapshot_running.swap(true, Ordering::AcqRel) {
            return;
        }
        let (index, data) = self.encode();
        self.applied_since_snapshot = 0;
        let snapshots = self.snapshots.clone();
        let wal = self.wal.clone();
        let running = self.snapshot_running.clone();
        let taken = self.snapshots_taken.clone();
        tokio::spawn(async move {
            save_snapshot(snapshots, Some(wal), index, data, taken).await;
            running.store(false, Ordering::Release);
        });
    }

    async fn snapshot_now(&mut self) {
        let (index, data) = self.encode();
        self.applied_since_snapshot = 0;
        let snapshots = self.snapshots.clone();
        // The WAL is closed by now; the next start's first snapshot purges it.
        save_snapshot(snapshots, None, index, data, self.snapshots_taken.clone()).await;
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
    taken: Arc<AtomicU64>,
) {
    let bytes = data.len();
    let saved = tokio::task::spawn_blocking(move || snapshots.save(index, &data)).await;
    match saved {
        Ok(Ok(())) => {
            taken.fetch_add(1, Ordering::Relaxed);
            info!(index, bytes, "snapshot saved");
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

fn reply_all(proposals: Vec<(u64, Proposal)>, error: impl Fn() -> ServerError) {
    for (_, proposal) in proposals {
        let _ = proposal.reply.send(Err(error()));
    }
}
