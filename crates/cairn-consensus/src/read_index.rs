//! Batched read index: concurrent linearizable readers share one leadership confirmation.
//!
//! A reader queues a sender and kicks the driver task. The driver takes everything queued,
//! asks the leader for one read point (a quorum round), and answers them all. A reader that
//! queued while a round was running waits for the next one: the round must *start* after the
//! read was invoked, or it could miss a write that completed in between.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use cairn_proto::raftpb;
use tokio::sync::{oneshot, Notify};

use crate::error::ConsensusError;
use crate::limits::READ_INDEX_WAITERS_MAX;
use crate::network::{PeerRequest, PeerResponse, Transport, TransportError};
use crate::types::{MemberId, Raft};

/// Why a read-index round failed; cloned to every reader of the round.
#[derive(Clone, Debug)]
enum RoundError {
    NoLeader,
    Unreachable(MemberId, String),
    Timeout,
    Stopped,
}

impl From<RoundError> for ConsensusError {
    fn from(error: RoundError) -> ConsensusError {
        match error {
            RoundError::NoLeader => ConsensusError::NoLeader,
            RoundError::Unreachable(leader, reason) => {
                ConsensusError::Unreachable { leader, reason }
            }
            RoundError::Timeout => ConsensusError::Timeout,
            RoundError::Stopped => ConsensusError::Stopped,
        }
    }
}

type Waiter = oneshot::Sender<Result<u64, RoundError>>;

pub struct ReadBatcher {
    shared: Arc<Shared>,
}

struct Shared {
    /// A std mutex: held for a push or a swap, never across an await.
    waiting: Mutex<Vec<Waiter>>,
    kick: Notify,
    /// Set when the batcher is dropped: the driver ends.
    closed: AtomicBool,
}

impl ReadBatcher {
    /// Starts the driver task; it ends when the batcher is dropped.
    pub fn start(raft: Raft, transport: Arc<dyn Transport>, member_id: MemberId) -> ReadBatcher {
        let shared = Arc::new(Shared {
            waiting: Mutex::new(Vec::new()),
            kick: Notify::new(),
            closed: AtomicBool::new(false),
        });
        let driver = shared.clone();
        tokio::spawn(async move {
            let source = Source {
                raft,
                transport,
                member_id,
            };
            loop {
                let kicked = driver.kick.notified();
                if driver.closed.load(Ordering::Acquire) {
                    return;
                }
                let batch = std::mem::take(&mut *lock(&driver.waiting));
                if batch.is_empty() {
                    kicked.await;
                    continue;
                }
                let result = source.read_point().await;
                for waiter in batch {
                    let _ = waiter.send(result.clone());
                }
            }
        });
        ReadBatcher { shared }
    }

    /// A raft index such that a state machine that applied it serves linearizable reads.
    pub async fn read_index(&self) -> Result<u64, ConsensusError> {
        let (sender, receiver) = oneshot::channel();
        {
            let mut waiting = lock(&self.shared.waiting);
            if waiting.len() >= READ_INDEX_WAITERS_MAX {
                return Err(ConsensusError::Timeout);
            }
            waiting.push(sender);
        }
        self.shared.kick.notify_one();
        match receiver.await {
            Ok(result) => result.map_err(ConsensusError::from),
            Err(_) => Err(ConsensusError::Stopped),
        }
    }
}

impl Drop for ReadBatcher {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.kick.notify_one();
    }
}

struct Source {
    raft: Raft,
    transport: Arc<dyn Transport>,
    member_id: MemberId,
}

impl Source {
    async fn read_point(&self) -> Result<u64, RoundError> {
        // During an election, wait for its end (the caller bounds the wait), as etcd does.
        let mut watch = self.raft.metrics();
        let metrics = watch
            .wait_for(|m| m.current_leader.is_some() || m.running_state.is_err())
            .await
            .map_err(|_| RoundError::Stopped)?
            .clone();
        if metrics.running_state.is_err() {
            return Err(RoundError::Stopped);
        }
        let leader = metrics.current_leader.ok_or(RoundError::NoLeader)?;
        if leader == self.member_id {
            let (read_log_id, _) =
                self.raft.get_read_log_id().await.map_err(|error| {
                    match error.forward_to_leader() {
                        Some(_) => RoundError::NoLeader,
                        None => RoundError::Unreachable(leader, error.to_string()),
                    }
                })?;
            return Ok(read_log_id.map_or(0, |log_id| log_id.index));
        }
        let member = metrics
            .membership_config
            .membership()
            .get_node(&leader)
            .cloned()
            .ok_or(RoundError::NoLeader)?;
        tracing::debug!(leader, "asking the leader for a read index");
        let request = PeerRequest::ReadIndex(raftpb::ReadIndexRequest {});
        match self.transport.call(leader, &member, request).await {
            Ok(PeerResponse::ReadIndex(response)) => Ok(response.index),
            Ok(_) => Err(RoundError::Unreachable(
                leader,
                "answer of the wrong kind".into(),
            )),
            Err(TransportError::Timeout) => Err(RoundError::Timeout),
            Err(TransportError::Refused(_)) => Err(RoundError::NoLeader),
            Err(error) => Err(RoundError::Unreachable(leader, error.to_string())),
        }
    }
}

fn lock(waiting: &Mutex<Vec<Waiter>>) -> std::sync::MutexGuard<'_, Vec<Waiter>> {
    waiting.lock().unwrap_or_else(PoisonError::into_inner)
}
