//! A new leader's CURP-HO recovery (spec, "Garbage collection and recovery"): before it
//! serves a native command in term T it
//! 1. waits until it has applied an entry of term T, so everything earlier in its log is
//!    applied and the session table says which commands the log holds;
//! 2. collects the pools of a majority, its own included;
//! 3. re-proposes what [`RecoveryPlan`] keeps (the exactly-once table skips what applied);
//! 4. appends `RecoveryDone(T)` and waits until it applies (every member then drops pool
//!    entries of older terms), drops its own witness entries, and starts serving T.
//!
//! Pools live in memory, so a restarted member's pool is *incomplete* (it does not count)
//! until it applies a `RecoveryDone` of a term after its restart. A recovery needs a majority
//! of complete pools; if every voter answered and fewer are complete, or after
//! `CURP_RECOVERY_STRICT_ATTEMPTS` failed attempts a majority answered at all, it goes on
//! with a warning: that many lost pools is beyond the f failures CURP-HO tolerates, and
//! stopping native service for good would be worse (a fast-path command that was not
//! committed may then be lost).
//!
//! It also fails the sync waiters of every command ordered in an older term: those may never
//! apply, and their clients retry.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use cairn_proto::cairnpb::internal_request::Request;
use cairn_proto::cairnpb::InternalRequest;
use cairn_proto::curppb;
use futures::stream::{FuturesUnordered, StreamExt};
use prost::Message;
use tracing::{debug, info, warn};

use super::convert::{command_to_pb, pool_entry_from_pb, pool_entry_to_pb};
use std::sync::atomic::Ordering;

use super::{lock, NativeState};
use crate::curp::{CommandId, PoolEntry, Quorums, RecoveryPlan, SessionCheck, Term};
use crate::error::ConsensusError;
use crate::limits::{CURP_POOL_COLLECT_TIMEOUT_MS, CURP_RECOVERY_STRICT_ATTEMPTS};
use crate::network::{PeerRequest, PeerResponse};
use crate::replica::Replica;
use crate::types::MemberId;

/// Why one recovery attempt failed; the watcher tries again while it still leads.
#[derive(Debug, thiserror::Error)]
enum RecoveryFailed {
    #[error("term {0} ended")]
    TermEnded(Term),
    #[error("pools of {got} members, a majority is {majority}")]
    TooFewPools { got: usize, majority: usize },
    #[error(transparent)]
    Plan(#[from] crate::curp::RecoveryError),
    #[error("RecoveryDone: {0}")]
    Marker(#[from] ConsensusError),
}

/// Watches this member's raft role; runs recovery whenever it leads a term it does not serve.
///
/// It watches openraft's server metrics, which change with the vote and the leader only (the
/// full metrics change on every append and apply, and would wake it once per raft loop). Their
/// vote is the persisted one: its term is the term this member leads once it leads.
pub(crate) async fn watch_leadership(replica: Replica) {
    let mut metrics = replica.inner.raft.server_metrics();
    let native = replica.native();
    let mut seen_term = 0;
    let mut attempts = 0;
    loop {
        let (term, leading) = {
            let metrics = metrics.borrow_and_update();
            (
                metrics.vote.leader_id().term,
                metrics.current_leader == Some(metrics.id),
            )
        };
        if term != seen_term {
            seen_term = term;
            attempts = 0;
            native.serving.send_replace(0);
            native.fail_syncs();
        }
        if leading && native.serving_term() != term {
            attempts += 1;
            let degraded = attempts > CURP_RECOVERY_STRICT_ATTEMPTS;
            match recover(&replica, term, degraded).await {
                Ok(recovered) => {
                    info!(
                        term,
                        recovered, "CURP-HO recovery done; serving native commands"
                    )
                }
                Err(error) => {
                    // Raft stopped (the attempt failed for that): nothing left to recover, and
                    // retrying would wake this task every 100 ms for as long as the process lives.
                    if metrics.has_changed().is_err() {
                        return;
                    }
                    warn!(%error, term, "CURP-HO recovery failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            }
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

/// One recovery attempt for `term`; returns how many commands it re-proposed.
///
/// `degraded`: strict attempts failed for want of complete pools; a majority of answers,
/// complete or not, is then enough (see the module doc).
async fn recover(replica: &Replica, term: Term, degraded: bool) -> Result<usize, RecoveryFailed> {
    let inner = &replica.inner;
    let native = replica.native();
    let mut metrics = inner.raft.metrics();
    let caught_up = metrics.wait_for(|metrics| {
        metrics.current_term != term
            || metrics
                .last_applied
                .is_some_and(|applied| applied.leader_id.term == term)
    });
    let still_term = match tokio::time::timeout(inner.request_timeout, caught_up).await {
        Ok(Ok(metrics)) => metrics.current_term == term,
        Ok(Err(_)) | Err(_) => false,
    };
    if !still_term {
        return Err(RecoveryFailed::TermEnded(term));
    }
    let voters: Vec<MemberId> = inner
        .raft
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .voter_ids()
        .collect();
    let quorums = Quorums::new(voters.len().max(1));
    let collected = collect_pools(replica, term, &voters, quorums.majority).await;
    let mut pools = collected.complete;
    // What the plan is computed from; incomplete pools below count as empty.
    let used: Vec<MemberId> = pools.keys().copied().collect();
    if pools.len() < quorums.majority {
        let answered = collected.incomplete.len() + pools.len();
        let enough = match degraded {
            true => answered >= quorums.majority,
            false => answered == voters.len(),
        };
        if !enough {
            return Err(RecoveryFailed::TooFewPools {
                got: pools.len(),
                majority: quorums.majority,
            });
        }
        // Every voter answered, but too many lost their pools in restarts for the
        // recover-quorum argument: more failures than CURP-HO tolerates. Go on (their
        // pools count as empty) rather than stop native service for good.
        // A sole voter has nothing to lose here: it acknowledges writes only once durable.
        if voters.len() > 1 {
            warn!(
                term,
                complete = pools.len(),
                "recovering with fewer complete pools than a majority: commands that completed \
                 on the fast path and were not committed before the restarts may be lost"
            );
        }
        for member in collected.incomplete {
            pools.entry(member).or_default();
        }
    }
    // The plan wants the leader's pool; an incomplete one counts for nothing.
    pools.entry(inner.id).or_default();
    let plan = RecoveryPlan::compute(&quorums, term, inner.id, &pools, &BTreeSet::new())?;
    tracing::debug!(
        member = inner.id,
        term,
        pools = ?pools.iter().map(|(member, pool)| (*member, pool.len())).collect::<Vec<_>>(),
        plan = ?plan.commands.iter().map(|command| command.id).collect::<Vec<_>>(),
        "recovery plan"
    );
    let now_unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as i64;
    let mut recovered = 0;
    {
        let sessions = lock(&native.sessions);
        // What this plan re-proposes, by client: the causal barrier holds across it too.
        let mut proposed: BTreeSet<CommandId> = BTreeSet::new();
        for command in &plan.commands {
            if sessions.check(command.id) != SessionCheck::New {
                continue;
            }
            let dep = command.dependency();
            // A dependency no pool holds was lost with the pools that did (a lagging witness
            // tags with its old term, and an older RecoveryDone dropped it): the command
            // would apply over the gap. Left out; its client resends both, in order.
            if !sessions.reached(dep.client_id, dep.seq) && !proposed.contains(&dep) {
                let (id, dep) = (command.id, dep.seq);
                debug!(
                    ?id,
                    dep, term, "recovery leaves out a command past a causal gap"
                );
                continue;
            }
            proposed.insert(command.id);
            let entry = InternalRequest {
                now_unix_ms,
                origin_member: inner.id,
                proposal_id: 0,
                auth: None,
                request: Some(Request::CurpCommand(command_to_pb(command))),
            };
            drop(
                inner
                    .proposals
                    .enqueue_native(Bytes::from(entry.encode_to_vec())),
            );
            recovered += 1;
        }
    }
    let marker = Request::CurpRecoveryDone(curppb::RecoveryDone { term, pools: used });
    replica.propose_as_leader(marker, now_unix_ms).await?;
    if inner.raft.metrics().borrow().current_term != term {
        return Err(RecoveryFailed::TermEnded(term));
    }
    // What this member witnessed up to now (as a candidate of `term`, too) was settled by the
    // plan or will be retried by its client; from here on its pool holds only what it orders.
    // Serving starts under the pool lock: a witness call that read "not leading" before it
    // cannot pool anything after the drop (`Replica::witness`).
    let mut pool = lock(&native.pool);
    pool.drop_before_term(term + 1, false);
    native.serving.send_replace(term);
    drop(pool);
    Ok(recovered)
}

/// The pools a new leader collected.
struct Collected {
    /// Complete pools by member.
    complete: BTreeMap<MemberId, Vec<PoolEntry>>,
    /// Members that answered with a pool incomplete since their restart (this one included).
    incomplete: Vec<MemberId>,
}

/// This member's pool and those of the other voters, until a majority of complete pools
/// answered, every voter answered, or the collection timed out.
async fn collect_pools(
    replica: &Replica,
    term: Term,
    voters: &[MemberId],
    majority: usize,
) -> Collected {
    let inner = &replica.inner;
    let mut collected = Collected {
        complete: BTreeMap::new(),
        incomplete: Vec::new(),
    };
    let own = replica.native().pool_for_recovery(term);
    match own.complete {
        true => {
            let entries = own
                .entries
                .iter()
                .filter_map(|e| pool_entry_from_pb(e).ok());
            collected.complete.insert(inner.id, entries.collect());
        }
        false => collected.incomplete.push(inner.id),
    }
    let mut calls: FuturesUnordered<_> = voters
        .iter()
        .filter(|voter| **voter != inner.id)
        .map(|voter| async move {
            let request = PeerRequest::CurpPool(curppb::PoolRequest { term });
            (*voter, replica.call_member(*voter, request).await)
        })
        .collect();
    let deadline =
        tokio::time::Instant::now() + Duration::from_millis(CURP_POOL_COLLECT_TIMEOUT_MS);
    while collected.complete.len() < majority {
        let Ok(Some((voter, answer))) = tokio::time::timeout_at(deadline, calls.next()).await
        else {
            break;
        };
        match answer {
            Ok(PeerResponse::CurpPool(response)) if !response.complete => {
                tracing::debug!(voter, "pool incomplete since a restart; not counted");
                collected.incomplete.push(voter);
            }
            Ok(PeerResponse::CurpPool(response)) => {
                let entries: Result<Vec<PoolEntry>, _> =
                    response.entries.iter().map(pool_entry_from_pb).collect();
                match entries {
                    Ok(entries) => {
                        collected.complete.insert(voter, entries);
                    }
                    Err(error) => warn!(voter, %error, "undecodable pool; not counted"),
                }
            }
            Ok(_) => warn!(voter, "pool request answered with another message"),
            Err(error) => tracing::debug!(voter, %error, "pool request failed"),
        }
    }
    collected
}

impl NativeState {
    /// Whether a leader of a later term than `term` collected this member's pool: this
    /// member, leading `term` as far as it knows, must then order nothing more. Its pool as
    /// collected is all the new leader learns from it, so an `ok` it gave afterwards could
    /// complete a fast path in `term` (with witnesses that answered before their own pools
    /// were collected) that no recovery sees. Call it under the pool lock: the hand-over
    /// takes that lock too.
    pub(crate) fn deposed(&self, term: Term) -> bool {
        self.witness_term.load(Ordering::Acquire) > term
    }

    /// This member's pool as a new leader of `term` collects it; from now on its witness
    /// replies carry `term` or later.
    pub(crate) fn pool_for_recovery(&self, term: Term) -> curppb::PoolResponse {
        let pool = lock(&self.pool);
        self.witness_term.fetch_max(term, Ordering::AcqRel);
        curppb::PoolResponse {
            entries: pool
                .entries_for_recovery()
                .iter()
                .map(pool_entry_to_pb)
                .collect(),
            complete: self.pool_complete(),
        }
    }
}
