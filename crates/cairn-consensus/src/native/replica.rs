//! The native protocol's entry points on a [`Replica`]: strong proposals and weak writes
//! (the leader orders, witnesses pool), weak reads and flushes at the bound replica.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use cairn_mvcc::KvStore;
use cairn_proto::cairnpb::internal_request::Request;
use cairn_proto::cairnpb::InternalRequest;
use cairn_proto::curppb::{self, op};
use prost::Message;
use tokio::sync::{oneshot, watch};

use super::convert::{command_to_pb, op_to_pb, InvalidCommand};
use super::{lock, NativeState, SyncError, SyncResult};
use crate::curp::{
    Command, CommandId, Consistency, Op, SessionCheck, SessionTable, Term, WitnessError,
    WitnessPool,
};
use crate::replica::Replica;
use crate::types::MemberId;

/// A replica's answer to a strong proposal or a weak write.
#[derive(Debug)]
pub enum ProposeReply {
    /// The command was applied here before (a retry): its result.
    Applied(curppb::Result),
    /// A witness pooled it; `ok` iff nothing pooled conflicts.
    Witness { term: Term, ok: bool },
    /// A witness has applied a later write of the same session: the leader ordered this one
    /// before that, so the witness has nothing to add (the leader answers).
    Superseded,
    /// The leader ordered it. `ok` iff no earlier unapplied entry conflicts; then `result` is
    /// its evaluation on the log prefix. `sync` resolves once it is applied; a strong read
    /// answered `ok` is not logged and has none (it completes when the witnesses confirm the
    /// term, or its client retries).
    Leader {
        term: Term,
        ok: bool,
        result: Option<curppb::Result>,
        sync: Option<SyncWait>,
    },
}

/// Resolves with a command's apply result on this member (the slow path's `SyncReply`).
#[derive(Debug)]
pub struct SyncWait(oneshot::Receiver<SyncResult>);

impl Future for SyncWait {
    type Output = SyncResult;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<SyncResult> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|received| received.unwrap_or(Err(SyncError::LeaderChanged)))
    }
}

/// Why a native request was refused.
#[derive(Debug, thiserror::Error)]
pub enum NativeError {
    #[error(transparent)]
    Invalid(#[from] InvalidCommand),
    #[error("a weak read must be a Get or a Scan")]
    WeakReadOfWrite,
    #[error("etcdserver: request is too large")]
    TooLarge,
    #[error("the leader is recovering or unknown; retry")]
    NotReady,
    #[error("command {0:?} is older than its session's latest applied command")]
    Stale(CommandId),
    #[error("command id {0:?} reused for a different command")]
    IdReused(CommandId),
    #[error("command {id:?} depends on the session's weak write seq {dep}, which has not reached the leader; resend the session's unapplied weak writes first")]
    CausalGap { id: CommandId, dep: u64 },
    #[error("witness pool full; retry")]
    Busy,
    #[error("timed out")]
    Timeout,
}

/// A weak read's answer.
#[derive(Clone, Debug, PartialEq)]
pub struct WeakReadReply {
    pub result: curppb::Result,
    /// The replica's applied revision when it read.
    pub applied_revision: i64,
    /// The highest seq of the reading client applied here (0: none).
    pub applied_seq: u64,
}

/// Who this member is and what it knows of the cluster (the native `HelloReply`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClusterView {
    pub member_id: MemberId,
    pub voters: usize,
    pub leader: Option<MemberId>,
}

impl Replica {
    pub fn native(&self) -> &NativeState {
        &self.inner.shared.native
    }

    pub fn cluster_view(&self) -> ClusterView {
        let metrics = self.inner.raft.metrics().borrow().clone();
        ClusterView {
            member_id: self.inner.id,
            voters: metrics.membership_config.membership().voter_ids().count(),
            leader: metrics.current_leader,
        }
    }

    /// A strong proposal or a weak write: the leader orders it, any other member witnesses
    /// it. A leader still recovering holds the command (up to the request timeout) until it
    /// serves, so a client connection's commands keep their order.
    pub async fn native_propose(
        &self,
        command: Command,
        now_unix_ms: i64,
        max_bytes: usize,
    ) -> Result<ProposeReply, NativeError> {
        let (leading, term, sole_voter) = {
            let metrics = self.inner.raft.metrics();
            let metrics = metrics.borrow();
            let voters = metrics.membership_config.membership().voter_ids().count();
            (
                metrics.current_leader == Some(self.inner.id),
                metrics.current_term,
                voters <= 1,
            )
        };
        if !leading {
            // The leader refuses an entry over the size limit; a witness that pooled it would
            // let its bound replica acknowledge a weak write that can never apply.
            self.entry_request(&command, now_unix_ms, max_bytes)?;
            return self.witness(command, term);
        }
        let serving = self.native().serving.subscribe();
        if !wait_until(serving, self.inner.request_timeout, |serving| {
            *serving == term
        })
        .await
        {
            return Err(NativeError::NotReady);
        }
        self.order(command, term, sole_voter, now_unix_ms, max_bytes)
    }

    /// The leader's side of a strong read: with no conflicting unapplied entry it reads the
    /// applied state and logs nothing; otherwise it is ordered like a write (slow path).
    fn order_read(
        &self,
        command: Command,
        term: Term,
        now_unix_ms: i64,
        max_bytes: usize,
    ) -> Result<ProposeReply, NativeError> {
        let inner = &self.inner;
        let native = self.native();
        {
            let store = inner.shared.store();
            let sessions = lock(&native.sessions);
            let pool = lock(&native.pool);
            may_order(native, &sessions, &pool, &command, term)?;
            drop(sessions);
            let ok = !pool.conflicts(&command) && inner.proposals.generic_pending() == 0;
            if let Some(result) = ok.then(|| speculate(&store, &command.op)).flatten() {
                return Ok(ProposeReply::Leader {
                    term,
                    ok: true,
                    result: Some(result),
                    sync: None,
                });
            }
        }
        let bytes = self.entry(&command, now_unix_ms, max_bytes)?;
        let _pool_order = lock(&native.pool);
        let sync = SyncWait(native.wait_sync(command.id));
        drop(inner.proposals.enqueue_native(bytes));
        Ok(ProposeReply::Leader {
            term,
            ok: false,
            result: None,
            sync: Some(sync),
        })
    }

    /// The command's log entry, encoded.
    fn entry(
        &self,
        command: &Command,
        now_unix_ms: i64,
        max_bytes: usize,
    ) -> Result<Bytes, NativeError> {
        let entry = self.entry_request(command, now_unix_ms, max_bytes)?;
        Ok(Bytes::from(entry.encode_to_vec()))
    }

    /// The command's log entry, checked against the size limit by its encoded length (a
    /// witness checks it too, without encoding it).
    fn entry_request(
        &self,
        command: &Command,
        now_unix_ms: i64,
        max_bytes: usize,
    ) -> Result<InternalRequest, NativeError> {
        let entry = InternalRequest {
            now_unix_ms,
            origin_member: self.inner.id,
            // Native results reach clients through sync waiters, not the wait registry.
            proposal_id: 0,
            auth: None,
            request: Some(Request::CurpCommand(command_to_pb(command))),
        };
        if entry.encoded_len() > max_bytes {
            return Err(NativeError::TooLarge);
        }
        Ok(entry)
    }

    /// The leader's side: appends the command to the log now and evaluates it on the prefix.
    fn order(
        &self,
        command: Command,
        term: Term,
        sole_voter: bool,
        now_unix_ms: i64,
        max_bytes: usize,
    ) -> Result<ProposeReply, NativeError> {
        if command.consistency == Consistency::Strong && !command.writes() {
            return self.order_read(command, term, now_unix_ms, max_bytes);
        }
        let inner = &self.inner;
        let bytes = self.entry(&command, now_unix_ms, max_bytes)?;
        let native = self.native();
        let store = inner.shared.store();
        let sessions = lock(&native.sessions);
        let check = match command.writes() {
            true => sessions.check(command.id),
            // Reads are not in the session table (they apply whenever they come).
            false => SessionCheck::New,
        };
        if let Some(applied) = applied_before(check, &command)? {
            return Ok(ProposeReply::Applied(applied));
        }
        let mut pool = lock(&native.pool);
        // (A retry of a command ordered here passes the barrier again: its dependency stays
        // pooled until applied.)
        may_order(native, &sessions, &pool, &command, term)?;
        if let Some(pooled) = pool.get(&command.id) {
            if pooled.command != command {
                return Err(NativeError::IdReused(command.id));
            }
            // A retry of a command this leader ordered already: its apply answers it.
            let sync = SyncWait(native.wait_sync(command.id));
            return Ok(ProposeReply::Leader {
                term,
                ok: false,
                result: None,
                sync: Some(sync),
            });
        }
        let id = command.id;
        let op = command.op.clone();
        // The dependency is here: checked just above.
        let pooled_ok = pool.witness(command, term, true).map_err(witness_error)?;
        // The leader does not know the keys of etcd-API writes in flight: any of them
        // conflicts. A sole voter has no witness to keep a write it acknowledged before the
        // fsync: its writes take the slow path (durable, as etcd's single member).
        let ok = pooled_ok && inner.proposals.generic_pending() == 0 && !sole_voter;
        let result = if ok { speculate(&store, &op) } else { None };
        tracing::debug!(member = inner.id, ?id, term, ok, "ordered");
        let sync = SyncWait(native.wait_sync(id));
        // Queued now, under the locks: the log order is the order replies were decided in.
        drop(inner.proposals.enqueue_native(bytes));
        Ok(ProposeReply::Leader {
            term,
            ok: result.is_some(),
            result,
            sync: Some(sync),
        })
    }

    /// A witness's side: pools the command. A strong read is not pooled: it changes nothing
    /// a recovery would have to keep, and the leader alone decides whether it conflicts; the
    /// witness only confirms its term (which is what stops a deposed leader's answer).
    fn witness(&self, command: Command, term: Term) -> Result<ProposeReply, NativeError> {
        let native = self.native();
        if command.consistency == Consistency::Strong && !command.writes() {
            let _pool_order = lock(&native.pool);
            let term = term.max(
                native
                    .witness_term
                    .load(std::sync::atomic::Ordering::Acquire),
            );
            return Ok(ProposeReply::Witness { term, ok: true });
        }
        let sessions = lock(&native.sessions);
        let check = match command.writes() {
            true => sessions.check(command.id),
            // Reads are not in the session table (they apply whenever they come).
            false => SessionCheck::New,
        };
        // A witness may apply a session's later write before the client's copy of an earlier
        // one reaches it (its link is slower than raft): the leader ordered that earlier
        // command already, so this copy is history, neither pooled nor refused.
        if check == SessionCheck::Stale {
            return Ok(ProposeReply::Superseded);
        }
        if let Some(applied) = applied_before(check, &command)? {
            return Ok(ProposeReply::Applied(applied));
        }
        let mut pool = lock(&native.pool);
        // Leading was read before the locks: a recovery that finished since would find in its
        // serving pool a command it never ordered (which `may_order` counts as ordered).
        // Recovery starts serving under the pool lock, so this check is exact.
        if native.serving_term() != 0 {
            return Err(NativeError::NotReady);
        }
        let term = term.max(
            native
                .witness_term
                .load(std::sync::atomic::Ordering::Acquire),
        );
        let id = command.id;
        let dep_settled = sessions.reached(id.client_id, command.causal_dep);
        let ok = pool
            .witness(command, term, dep_settled)
            .map_err(witness_error)?;
        tracing::debug!(member = self.inner.id, ?id, term, ok, "witnessed");
        Ok(ProposeReply::Witness { term, ok })
    }

    /// How far this replica applied `client_id`'s commands, and its applied revision read
    /// after that: a state at the revision holds every command up to the seq.
    pub fn native_applied(&self, client_id: u64) -> (u64, i64) {
        let applied_seq = self.native().applied_seq(client_id);
        (applied_seq, self.inner.shared.store().current_revision())
    }

    /// A weak read at this (bound) replica: waits until it has applied `min_revision`, then
    /// reads its applied state.
    pub async fn native_weak_read(
        &self,
        client_id: u64,
        op: &op::Op,
        min_revision: i64,
    ) -> Result<WeakReadReply, NativeError> {
        if matches!(op, op::Op::Put(_) | op::Op::Delete(_)) {
            return Err(NativeError::WeakReadOfWrite);
        }
        let revisions = self.inner.shared.revisions();
        let timeout = self.inner.request_timeout;
        if !wait_until(revisions, timeout, |revision| *revision >= min_revision).await {
            return Err(NativeError::Timeout);
        }
        let store = self.inner.shared.store();
        let result = store
            .native_read(op)
            .map_err(|_| NativeError::WeakReadOfWrite)?;
        Ok(WeakReadReply {
            result,
            applied_revision: store.current_revision(),
            applied_seq: self.native().applied_seq(client_id),
        })
    }

    /// Waits until this member has applied `client_id`'s commands up to `seq`; returns the
    /// applied revision then.
    pub async fn native_flush(&self, client_id: u64, seq: u64) -> Result<i64, NativeError> {
        let mut applied = self.inner.shared.applied_index();
        let flushed = async {
            loop {
                if self.native().applied_seq(client_id) >= seq {
                    return Ok(self.inner.shared.store().current_revision());
                }
                if applied.changed().await.is_err() {
                    return Err(NativeError::Timeout);
                }
            }
        };
        tokio::time::timeout(self.inner.request_timeout, flushed)
            .await
            .map_err(|_| NativeError::Timeout)?
    }
}

/// Waits, up to `timeout`, until the watched value satisfies `ready`; false when it did not
/// in time or the sender went away. Nearly every command finds it satisfied already and then
/// builds no `timeout`: building one reads the clock and clones the runtime handle even when
/// the future it wraps is ready at its first poll, on the path of every native command.
async fn wait_until<T>(
    mut receiver: watch::Receiver<T>,
    timeout: Duration,
    mut ready: impl FnMut(&T) -> bool,
) -> bool {
    if ready(&receiver.borrow()) {
        return true;
    }
    matches!(
        tokio::time::timeout(timeout, receiver.wait_for(ready)).await,
        Ok(Ok(_))
    )
}

/// The answer for a command the session table knows: `None` if it is new.
fn applied_before(
    check: SessionCheck,
    command: &Command,
) -> Result<Option<curppb::Result>, NativeError> {
    match check {
        SessionCheck::New => Ok(None),
        SessionCheck::Stale => Err(NativeError::Stale(command.id)),
        SessionCheck::Duplicate(stored) => Ok(Some(
            curppb::Result::decode(stored.as_ref()).unwrap_or_default(),
        )),
    }
}

/// What a serving leader checks under the pool lock before it orders `command`: no leader of
/// a later term took its pool ([`NativeState::deposed`]), and the causal barrier holds:
/// `command`'s dependency is applied, or this leader ordered it (a serving leader's pool holds
/// only what it ordered in its term and has not applied), so it comes first in the log.
fn may_order(
    native: &NativeState,
    sessions: &SessionTable,
    pool: &WitnessPool,
    command: &Command,
    term: Term,
) -> Result<(), NativeError> {
    if native.deposed(term) {
        return Err(NativeError::NotReady);
    }
    let dep = command.dependency();
    if !sessions.reached(dep.client_id, dep.seq) && pool.get(&dep).is_none() {
        return Err(NativeError::CausalGap {
            id: command.id,
            dep: dep.seq,
        });
    }
    Ok(())
}

/// A command's result on `store`, which holds every earlier entry that touches its keys.
fn speculate(store: &KvStore, op: &Op) -> Option<curppb::Result> {
    let read = |op: &Op| {
        let op = op_to_pb(op).op?;
        store.native_read(&op).ok()
    };
    match op {
        Op::Get { .. } | Op::Scan { .. } => read(op),
        Op::Put { .. } => Some(curppb::Result::default()),
        Op::Delete { key } => {
            let found = read(&Op::Get { key: key.clone() })?;
            Some(curppb::Result {
                deleted: found.kvs.len() as u64,
                ..Default::default()
            })
        }
    }
}

fn witness_error(error: WitnessError) -> NativeError {
    match error {
        WitnessError::PoolFull { .. } => NativeError::Busy,
        WitnessError::WeakRead(_) => NativeError::WeakReadOfWrite,
        WitnessError::IdReused(id) => NativeError::IdReused(id),
    }
}
