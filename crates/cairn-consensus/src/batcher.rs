//! Proposal batching on the leader: many client proposals, one raft entry.
//!
//! openraft 0.9 waits for each log append to be flushed before it takes the next one, so one
//! entry per proposal would mean one fsync per proposal. Instead proposals queue here; a
//! driver task packs everything queued (up to `PROPOSAL_BATCH_BYTES_MAX`) into one entry of
//! length-delimited `cairnpb.InternalRequest`s and submits it, with at most
//! `PROPOSAL_BATCHES_IN_FLIGHT_MAX` entries submitted and not yet applied. While those are in
//! flight the next batch fills up, so the batch grows with the load. Each request keeps its
//! own revision and result (the state machine applies them in order, the wait registry
//! delivers each result).
//!
//! Gathering: once a batch is applied, the next one waits (at most `PROPOSAL_LINGER_MAX`)
//! until as many proposals are queued as the last batch held. The clients that batch just
//! answered are the likeliest to propose next, a moment later; a batch cut at once would leave
//! them for the batch after, and a steady group of clients would split into two half-size
//! batches, each paying a whole commit round (see `limits.rs` for the figures).
//!
//! Order: entries reach raft in the order proposals were queued (the driver hands each entry
//! to raft before it takes the next batch), so a native CURP-HO client's commands, queued in
//! arrival order on its connection, are ordered the same way in the log (what lets the leader
//! order a command right behind the `causal_dep` it checked in its pool).
//!
//! The leader's CURP-HO conflict check treats every queued, not yet applied etcd-API request
//! as conflicting with everything (it does not know their key sets): `generic_pending` counts
//! them.
//!
//! Hot path: one queue push per proposal, one task per batch, no per-byte allocation beyond
//! the entry buffer.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::{BufMut, Bytes, BytesMut};
use openraft::error::ClientWriteError;
use tokio::sync::{oneshot, Notify, Semaphore};

use crate::error::ConsensusError;
use crate::limits::{
    PROPOSAL_BATCHES_IN_FLIGHT_MAX, PROPOSAL_BATCH_BYTES_MAX, PROPOSAL_LINGER_MAX,
};
use crate::types::{Proposal, Raft};

/// How a submitted batch ended, for each proposal in it.
#[derive(Clone, Copy, Debug)]
enum Submitted {
    /// Committed: the state machine hands each proposal its result.
    Committed,
    /// Leadership was lost: the entry may or may not commit later.
    LeaderChanged,
    Stopped,
}

/// A queued proposal: its bytes, its waiter, whether it is an etcd-API (generic) request.
type Waiter = (Bytes, oneshot::Sender<Submitted>, bool);

pub struct ProposalBatcher {
    shared: Arc<Shared>,
}

struct Shared {
    /// A std mutex: held for a push or a swap, never across an await.
    queue: Mutex<Vec<Waiter>>,
    kick: Notify,
    closed: AtomicBool,
    /// Generic requests queued or in flight and not yet applied.
    generic_pending: AtomicUsize,
}

impl ProposalBatcher {
    pub fn start(raft: Raft) -> ProposalBatcher {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Vec::new()),
            kick: Notify::new(),
            closed: AtomicBool::new(false),
            generic_pending: AtomicUsize::new(0),
        });
        tokio::spawn(drive(raft, shared.clone()));
        ProposalBatcher { shared }
    }

    /// Submits one encoded etcd-API `InternalRequest`; resolves once its entry is committed
    /// and applied.
    pub async fn submit(&self, request: Bytes) -> Result<(), ConsensusError> {
        self.enqueue(request, true).await
    }

    /// Queues one encoded native command now, behind everything queued before the call, and
    /// returns the future of its commit and apply.
    pub fn enqueue_native(
        &self,
        request: Bytes,
    ) -> impl Future<Output = Result<(), ConsensusError>> + Send + 'static {
        self.enqueue(request, false)
    }

    /// Generic requests queued or in flight and not yet applied.
    pub fn generic_pending(&self) -> usize {
        self.shared.generic_pending.load(Ordering::Acquire)
    }

    fn enqueue(
        &self,
        request: Bytes,
        generic: bool,
    ) -> impl Future<Output = Result<(), ConsensusError>> + Send + 'static {
        let (sender, receiver) = oneshot::channel();
        if generic {
            self.shared.generic_pending.fetch_add(1, Ordering::AcqRel);
        }
        lock(&self.shared.queue).push((request, sender, generic));
        self.shared.kick.notify_one();
        async move {
            match receiver.await {
                Ok(Submitted::Committed) => Ok(()),
                Ok(Submitted::LeaderChanged) => Err(ConsensusError::LeaderChanged),
                Ok(Submitted::Stopped) | Err(_) => Err(ConsensusError::Stopped),
            }
        }
    }
}

impl Drop for ProposalBatcher {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.kick.notify_one();
    }
}

async fn drive(raft: Raft, shared: Arc<Shared>) {
    let in_flight = Arc::new(Semaphore::new(PROPOSAL_BATCHES_IN_FLIGHT_MAX));
    let mut last_batch = 0;
    loop {
        let kicked = shared.kick.notified();
        if shared.closed.load(Ordering::Acquire) {
            return;
        }
        if lock(&shared.queue).is_empty() {
            kicked.await;
            continue;
        }
        // Wait for room first: what queues up meanwhile joins this batch.
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        gather(&shared, last_batch).await;
        let (entry, waiters, generic) = take_batch(&shared);
        last_batch = waiters.len();
        if waiters.is_empty() {
            continue;
        }
        // Handed to raft here, in queue order; only the wait for the outcome runs apart.
        let written = raft.client_write_ff(Proposal(entry)).await;
        let shared = shared.clone();
        tokio::spawn(async move {
            let outcome = match written {
                Err(_) => Submitted::Stopped,
                Ok(receiver) => match receiver.await {
                    Ok(Ok(_)) => Submitted::Committed,
                    Ok(Err(ClientWriteError::ForwardToLeader(_))) => Submitted::LeaderChanged,
                    Ok(Err(ClientWriteError::ChangeMembershipError(_))) => Submitted::LeaderChanged,
                    Err(_) => Submitted::Stopped,
                },
            };
            // Applied, or never will be by this leader: no longer a conflict here either way.
            shared.generic_pending.fetch_sub(generic, Ordering::AcqRel);
            for waiter in waiters {
                let _ = waiter.send(outcome);
            }
            drop(permit);
        });
    }
}

/// Waits until `expected` proposals are queued, for at most `PROPOSAL_LINGER_MAX`.
async fn gather(shared: &Shared, expected: usize) {
    let deadline = tokio::time::Instant::now() + PROPOSAL_LINGER_MAX;
    loop {
        let kicked = shared.kick.notified();
        if shared.closed.load(Ordering::Acquire) || lock(&shared.queue).len() >= expected {
            return;
        }
        if tokio::time::timeout_at(deadline, kicked).await.is_err() {
            return;
        }
    }
}

/// Takes queued proposals up to the batch size and encodes them into one entry payload.
/// Also returns how many of them are generic.
fn take_batch(shared: &Shared) -> (Bytes, Vec<oneshot::Sender<Submitted>>, usize) {
    let mut queue = lock(&shared.queue);
    let mut bytes = 0;
    let mut count = 0;
    for (request, _, _) in queue.iter() {
        let framed = request.len() + prost::length_delimiter_len(request.len());
        // A single proposal larger than the limit still goes, alone.
        if count > 0 && bytes + framed > PROPOSAL_BATCH_BYTES_MAX {
            break;
        }
        bytes += framed;
        count += 1;
    }
    let taken: Vec<Waiter> = queue.drain(..count).collect();
    if !queue.is_empty() {
        // The rest goes in the next batch.
        shared.kick.notify_one();
    }
    drop(queue);
    let mut entry = BytesMut::with_capacity(bytes);
    let mut waiters = Vec::with_capacity(taken.len());
    let mut generic = 0;
    for (request, waiter, is_generic) in taken {
        prost::encode_length_delimiter(request.len(), &mut entry)
            .expect("BytesMut grows as needed");
        entry.put_slice(&request);
        waiters.push(waiter);
        generic += usize::from(is_generic);
    }
    (entry.freeze(), waiters, generic)
}

fn lock(queue: &Mutex<Vec<Waiter>>) -> std::sync::MutexGuard<'_, Vec<Waiter>> {
    queue.lock().unwrap_or_else(PoisonError::into_inner)
}
