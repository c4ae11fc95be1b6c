//! The native CURP-HO protocol on a replica (see `shared/design/CURP-HO.md`): the state every
//! member keeps for it, the apply hooks, the leader's ordering and the witnesses' pooling
//! (`replica`), and the new leader's recovery (`recovery`). The pure rules live in `curp`;
//! this module holds them under locks and feeds them terms and entries.
//!
//! ```text
//!  Propose ─► leader (serving its term)?  ─ yes ─► not deposed, session check, causal_dep
//!     │                                            applied or pooled (else CAUSAL_GAP), pool
//!     │                                            check (+ no etcd-API write in flight), pool
//!     │                                            it, queue the entry now ─► LeaderReply
//!     └ no ─► session check, pool check (ok needs causal_dep here), pool it ─► WitnessReply
//!  apply ─► causal_dep applied? (else skipped: Gap) ─► session table (exactly once)
//!        ─► pool entry removed ─► sync waiters: SyncReply
//! ```
//!
//! Strong reads differ: a leader with no conflicting unapplied entry answers from the applied
//! state and logs nothing; witnesses only confirm their term and pool nothing (a read changes
//! nothing a recovery must keep). With a conflict the leader orders the read like a write.
//! Reads are never in the session table. A sole voter never answers a write `ok`: without a
//! witness, only the commit makes it durable.
//!
//! `after_apply` learns each entry's raft term, so a `RecoveryDone(T)` counts only in an entry
//! of term T.
//!
//! Locks, always taken in this order: the store (read or write), `sessions`, `pool`, `syncs`.
//! Apply holds the store's write lock while it records sessions and empties pools, so a leader
//! holding the read lock sees a pool and a store that agree: a command missing from the pool
//! is applied in the store.

mod convert;
pub mod recovery;
pub mod replica;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use cairn_mvcc::{ApplyResponse, KvStore, MvccError};
use cairn_proto::cairnpb::internal_request::Request;
use cairn_proto::cairnpb::InternalRequest;
use cairn_proto::curppb;
use prost::Message;
use tokio::sync::{oneshot, watch};

pub use convert::{
    command_from_pb, command_to_pb, id_from_pb, id_to_pb, op_from_pb, op_to_pb, InvalidCommand,
};

use crate::curp::{CommandId, SessionCheck, SessionTable, Term, WitnessPool};
use crate::limits::CURP_SESSION_IDLE_MS;
use crate::types::MemberId;

/// What a sync waiter receives once the command is applied.
pub type SyncResult = Result<curppb::Result, SyncError>;

#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum SyncError {
    /// The command's seq is below its session's latest applied one: it was not applied.
    #[error("command is older than its session's latest applied command")]
    Stale,
    /// The command's causal dependency was not applied before it: it was not applied.
    #[error("command's causal dependency was not applied before it; resend the session's unapplied weak writes first")]
    CausalGap,
    /// The state machine refused it (quota, …).
    #[error("{0}")]
    Refused(String),
    /// Leadership moved before the command applied here: retry.
    #[error("leader changed")]
    LeaderChanged,
}

/// The native protocol's state on one member.
pub struct NativeState {
    /// This member (is it among a `RecoveryDone`'s pools?).
    member_id: MemberId,
    sessions: Mutex<SessionTable>,
    sessions_dirty: AtomicBool,
    pool: Mutex<WitnessPool>,
    syncs: Mutex<HashMap<CommandId, Vec<oneshot::Sender<SyncResult>>>>,
    /// The term this member, leading, has recovered and serves native commands in; 0 when it
    /// does not lead or has not finished recovery.
    serving: watch::Sender<Term>,
    /// The newest `RecoveryDone(T)` applied here.
    recovered: watch::Sender<Term>,
    /// Set when the member restarted in term T: its pool lost what it held before, so it
    /// does not count for a recovery until it applies a `RecoveryDone` of a later term (a
    /// recovery that did not need it settled everything pooled before).
    amnesiac_through: std::sync::atomic::AtomicU64,
    /// The highest term a new leader collected this member's pool for. The pool is handed
    /// over and this raised under the pool lock, and witness replies carry at least this
    /// term, and a leader of an older term orders nothing more ([`NativeState::deposed`]): a
    /// command pooled after the hand-over can no longer complete on the fast path of an older
    /// term, which the collected pool would not show. (Raft's own term may lag:
    /// metrics are updated after the vote is stored.)
    witness_term: std::sync::atomic::AtomicU64,
}

/// What apply does with one request of an entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Apply it (every etcd-API request, and new native commands).
    Apply,
    /// A native command applied before: answer with the stored result.
    Duplicate(Bytes),
    /// A native command older than its session's latest: skip it.
    Stale,
    /// A native command whose causal dependency was not applied before it: skip it (its
    /// client resends the dependency, then the command).
    Gap,
}

impl Admission {
    pub(crate) fn applies(&self) -> bool {
        *self == Admission::Apply
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn writes(command: &curppb::Command) -> bool {
    matches!(
        command.op.as_ref().and_then(|op| op.op.as_ref()),
        Some(curppb::op::Op::Put(_) | curppb::op::Op::Delete(_))
    )
}

fn native_command(request: &InternalRequest) -> Option<&curppb::Command> {
    match &request.request {
        Some(Request::CurpCommand(command)) => Some(command),
        _ => None,
    }
}

/// A command's id as the log carries it; a command without one never passes the edge, so
/// one here is from a bug, and gets a fixed id every member agrees on.
fn logged_id(command: &curppb::Command) -> CommandId {
    id_from_pb(command.id.as_ref()).unwrap_or(CommandId {
        client_id: 0,
        seq: 0,
    })
}

impl NativeState {
    pub(crate) fn new(
        member_id: MemberId,
        sessions: SessionTable,
        recovered_term: Term,
    ) -> NativeState {
        NativeState {
            member_id,
            sessions: Mutex::new(sessions),
            sessions_dirty: AtomicBool::new(false),
            pool: Mutex::new(WitnessPool::new()),
            syncs: Mutex::new(HashMap::new()),
            serving: watch::channel(0).0,
            recovered: watch::channel(recovered_term).0,
            amnesiac_through: std::sync::atomic::AtomicU64::new(0),
            witness_term: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// This member restarted with its raft in `term`: its pool is incomplete until a later
    /// term's recovery is applied.
    pub(crate) fn restarted_in(&self, term: Term) {
        self.amnesiac_through.store(term.max(1), Ordering::Release);
    }

    /// Whether this member's pool holds everything it witnessed that is not settled.
    pub fn pool_complete(&self) -> bool {
        self.amnesiac_through.load(Ordering::Acquire) == 0
    }

    /// Replaces the session table and the recovered term (a snapshot was installed).
    pub(crate) fn restore(&self, sessions: SessionTable, recovered_term: Term) {
        *lock(&self.sessions) = sessions;
        self.sessions_dirty.store(false, Ordering::Release);
        self.recovered_through(recovered_term);
    }

    /// The newest `RecoveryDone` term applied here.
    pub(crate) fn recovered_term(&self) -> Term {
        *self.recovered.borrow()
    }

    /// A `RecoveryDone(term)` is applied (or arrived inside a snapshot): a later term's
    /// recovery than this member's restart makes its pool complete again.
    fn recovered_through(&self, term: Term) {
        let amnesiac = self.amnesiac_through.load(Ordering::Acquire);
        if amnesiac != 0 && term > amnesiac {
            self.amnesiac_through.store(0, Ordering::Release);
        }
        self.recovered.send_if_modified(|recovered| {
            let newer = term > *recovered;
            *recovered = (*recovered).max(term);
            newer
        });
    }

    /// The session table's encoding if it changed since the last call.
    pub(crate) fn take_dirty_sessions(&self) -> Option<Bytes> {
        if !self.sessions_dirty.swap(false, Ordering::AcqRel) {
            return None;
        }
        Some(Bytes::from(lock(&self.sessions).encode()))
    }

    /// Pooled commands (for metrics and tests).
    pub fn pool_len(&self) -> usize {
        lock(&self.pool).len()
    }

    /// Sessions in the exactly-once table.
    pub fn sessions_len(&self) -> usize {
        lock(&self.sessions).len()
    }

    /// The highest applied seq of `client_id` (0: none).
    pub fn applied_seq(&self, client_id: u64) -> u64 {
        lock(&self.sessions).applied_seq(client_id).unwrap_or(0)
    }

    pub fn serving_term(&self) -> Term {
        *self.serving.borrow()
    }

    /// Watches [`NativeState::serving_term`]: it changes when this member starts or stops
    /// serving as leader.
    pub fn watch_serving(&self) -> watch::Receiver<Term> {
        self.serving.subscribe()
    }

    /// Decides, for each request of one entry, whether it is applied. A command repeated
    /// inside the entry is applied once.
    pub(crate) fn admit(&self, requests: &[InternalRequest]) -> Vec<Admission> {
        if requests
            .iter()
            .all(|request| native_command(request).is_none())
        {
            return vec![Admission::Apply; requests.len()];
        }
        let sessions = lock(&self.sessions);
        let mut admitted: HashMap<u64, u64> = HashMap::new();
        requests
            .iter()
            .map(|request| {
                let Some(command) = native_command(request) else {
                    return Admission::Apply;
                };
                let id = logged_id(command);
                // The causal barrier, checked where every member decides alike: a write of the
                // session may never apply over a gap left by an earlier weak write.
                let dep = command.causal_dep;
                let dep_in_entry = admitted.get(&id.client_id).is_some_and(|seq| *seq >= dep);
                if !sessions.reached(id.client_id, dep) && !dep_in_entry {
                    return Admission::Gap;
                }
                // Reads change nothing: applied whenever they come, never recorded.
                if !writes(command) {
                    return Admission::Apply;
                }
                match admitted.get(&id.client_id) {
                    Some(seq) if id.seq == *seq => return Admission::Duplicate(Bytes::new()),
                    Some(seq) if id.seq < *seq => return Admission::Stale,
                    _ => {}
                }
                let check = sessions.check(id);
                if check == SessionCheck::New {
                    admitted.insert(id.client_id, id.seq);
                }
                match check {
                    SessionCheck::New => Admission::Apply,
                    SessionCheck::Duplicate(result) => Admission::Duplicate(result),
                    SessionCheck::Stale => Admission::Stale,
                }
            })
            .collect()
    }

    /// Runs after the entry's admitted requests were applied to `store`: records native
    /// commands in the session table, takes them out of the pool, answers their sync waiters;
    /// applies `RecoveryDone`. `result` is `None` for a request that was not applied.
    pub(crate) fn after_apply(
        &self,
        store: &KvStore,
        entry_term: Term,
        request: &InternalRequest,
        admission: &Admission,
        result: Option<&Result<ApplyResponse, MvccError>>,
    ) {
        match &request.request {
            Some(Request::CurpCommand(command)) => {
                let id = logged_id(command);
                let outcome = self.record(store, id, command, admission, result, request);
                lock(&self.pool).remove_applied(&id);
                let waiters = lock(&self.syncs).remove(&id);
                for waiter in waiters.into_iter().flatten() {
                    let _ = waiter.send(outcome.clone());
                }
            }
            // Only the leader of term T may close T's recovery: a marker that reached the log
            // in another term (forwarded, or a bug) would drop pool entries the current
            // leader's recovery has not settled.
            Some(Request::CurpRecoveryDone(done)) if done.term != entry_term => {
                tracing::warn!(
                    marker = done.term,
                    entry_term,
                    "RecoveryDone of another term ignored"
                );
            }
            Some(Request::CurpRecoveryDone(done)) => {
                // A pool the plan of `done.term` was not computed from may hold weak writes
                // that no pool it used showed (see `WitnessPool::drop_before_term`).
                let unused = !done.pools.is_empty() && !done.pools.contains(&self.member_id);
                lock(&self.pool).drop_before_term(done.term, unused);
                let now_ms = u64::try_from(request.now_unix_ms).unwrap_or(0);
                // Expiry runs only here, at one log position on every member, so the table
                // stays identical everywhere.
                if !lock(&self.sessions)
                    .expire(now_ms, CURP_SESSION_IDLE_MS)
                    .is_empty()
                {
                    self.sessions_dirty.store(true, Ordering::Release);
                }
                self.recovered_through(done.term);
            }
            _ => {}
        }
    }

    fn record(
        &self,
        store: &KvStore,
        id: CommandId,
        command: &curppb::Command,
        admission: &Admission,
        result: Option<&Result<ApplyResponse, MvccError>>,
        request: &InternalRequest,
    ) -> SyncResult {
        let op = command.op.as_ref().and_then(|op| op.op.as_ref());
        let writes = writes(command);
        match (admission, result) {
            // Reads are not in the session table: a retried read is evaluated afresh.
            (Admission::Apply, Some(Ok(ApplyResponse::Native(result)))) if !writes => {
                Ok(result.clone())
            }
            (Admission::Apply, Some(Ok(ApplyResponse::Native(result)))) => {
                let stored = Bytes::from(result.encode_to_vec());
                let now_ms = u64::try_from(request.now_unix_ms).unwrap_or(0);
                lock(&self.sessions).record(id, stored, now_ms);
                self.sessions_dirty.store(true, Ordering::Release);
                Ok(result.clone())
            }
            (Admission::Apply, Some(Err(error))) => Err(SyncError::Refused(error.to_string())),
            (Admission::Apply, _) => Err(SyncError::Refused("not a native result".to_string())),
            (Admission::Duplicate(_), _) if !writes => match op {
                Some(op) => store
                    .native_read(op)
                    .map_err(|error| SyncError::Refused(error.to_string())),
                None => Err(SyncError::Refused("command has no op".to_string())),
            },
            (Admission::Duplicate(stored), _) => curppb::Result::decode(stored.as_ref())
                .map_err(|error| SyncError::Refused(format!("stored result: {error}"))),
            (Admission::Stale, _) => Err(SyncError::Stale),
            (Admission::Gap, _) => Err(SyncError::CausalGap),
        }
    }

    /// Registers a waiter for `id`'s apply result.
    fn wait_sync(&self, id: CommandId) -> oneshot::Receiver<SyncResult> {
        let (sender, receiver) = oneshot::channel();
        lock(&self.syncs).entry(id).or_default().push(sender);
        receiver
    }

    /// Leadership moved: commands this member ordered may never apply here, so their waiters
    /// are told to retry.
    pub(crate) fn fail_syncs(&self) {
        let waiters: Vec<_> = lock(&self.syncs).drain().collect();
        for (_, senders) in waiters {
            for sender in senders {
                let _ = sender.send(Err(SyncError::LeaderChanged));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use cairn_mvcc::StoreConfig;
    use cairn_storage::memory::MemoryEngine;

    use super::*;
    use crate::curp::{Command, Consistency, Op};

    fn put(client_id: u64, consistency: Consistency) -> Command {
        Command {
            id: CommandId { client_id, seq: 1 },
            op: Op::Put {
                key: Bytes::from(format!("k{client_id}")),
                value: Bytes::from_static(b"v"),
            },
            consistency,
            causal_dep: 0,
        }
    }

    /// Member 1 pooled a weak and a strong write in term 2; `RecoveryDone(4)` drops both
    /// where the recovery used member 1's pool (or says nothing, as markers written before
    /// the list did), and only the strong one where it did not.
    #[test]
    fn recovery_done_keeps_weak_writes_only_in_pools_its_plan_did_not_use() {
        let store = KvStore::open(Box::new(MemoryEngine::new()), StoreConfig::default());
        for (pools, left) in [(vec![], 0), (vec![1, 2], 0), (vec![2, 3], 1)] {
            let native = NativeState::new(1, SessionTable::new(), 0);
            for command in [put(7, Consistency::Weak), put(8, Consistency::Strong)] {
                lock(&native.pool)
                    .witness(command, 2, true)
                    .expect("pooled");
            }
            let marker = InternalRequest {
                request: Some(Request::CurpRecoveryDone(curppb::RecoveryDone {
                    term: 4,
                    pools: pools.clone(),
                })),
                ..Default::default()
            };
            native.after_apply(&store, 4, &marker, &Admission::Apply, None);
            assert_eq!(native.pool_len(), left, "pools {pools:?}");
            assert_eq!(native.recovered_term(), 4);
        }
    }
}
