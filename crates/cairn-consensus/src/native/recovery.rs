//! A new leader's CURP-HO recovery (spec, "Garbage collection and recovery"): before it
//! serves a native command in term T it
//! 1. waits until it has applied an entry of term T, so everything earlier in its log is
//!    applied and the session table says which commands the log holds;
//! 2. collects the pools of a majority, its own included;
//! 3. re-proposes what [`RecoveryPlan`] keeps (the exactly-once table skips what applied);
//! 4. appends `RecoveryDone(T)` and waits until it applies (every member then drops pool
//!    entries of older terms), drops its own witness entries, and starts serving T.
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
use tracing::{info, warn};

use super::convert::{command_to_pb, pool_entry_from_pb, pool_entry_to_pb};
use super::{lock, NativeState};
use crate::curp::{PoolEntry, Quorums, RecoveryPlan, SessionCheck, Term};
use crate::error::ConsensusError;
use crate::limits::CURP_POOL_COLLECT_TIMEOUT_MS;
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
pub(crate) async fn watch_leadership(replica: Replica) {
    let mut metrics = replica.inner.raft.metrics();
    let native = replica.native();
    let mut seen_term = 0;
    loop {
        let (term, leading) = {
            let metrics = metrics.borrow_and_update();
            (
                metrics.current_term,
                metrics.current_leader == Some(metrics.id),
            )
        };
        if term != seen_term {
            seen_term = term;
            native.serving.send_replace(0);
            native.fail_syncs();
        }
        if leading && native.serving_term() != term {
            match recover(&replica, term).await {
                Ok(recovered) => {
                    info!(
                        term,
                        recovered, "CURP-HO recovery done; serving native commands"
                    )
                }
                Err(error) => {
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
async fn recover(replica: &Replica, term: Term) -> Result<usize, RecoveryFailed> {
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
    let pools = collect_pools(replica, term, &voters, quorums.majority).await;
    if pools.len() < quorums.majority {
        return Err(RecoveryFailed::TooFewPools {
            got: pools.len(),
            majority: quorums.majority,
        });
    }
    let plan = RecoveryPlan::compute(&quorums, term, inner.id, &pools, &BTreeSet::new())?;
    let now_unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as i64;
    let mut recovered = 0;
    {
        let sessions = lock(&native.sessions);
        for command in &plan.commands {
            if sessions.check(command.id) != SessionCheck::New {
                continue;
            }
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
    let marker = Request::CurpRecoveryDone(curppb::RecoveryDone { term });
    replica
        .propose(marker, None, now_unix_ms, usize::MAX)
        .await?;
    if inner.raft.metrics().borrow().current_term != term {
        return Err(RecoveryFailed::TermEnded(term));
    }
    // What this member witnessed up to now (as a candidate of `term`, too) was settled by the
    // plan or will be retried by its client; from here on its pool holds only what it orders.
    lock(&native.pool).drop_before_term(term + 1);
    native.serving.send_replace(term);
    Ok(recovered)
}

/// This member's pool and those of the other voters, until a majority answered or the
/// collection timed out.
async fn collect_pools(
    replica: &Replica,
    term: Term,
    voters: &[MemberId],
    majority: usize,
) -> BTreeMap<MemberId, Vec<PoolEntry>> {
    let inner = &replica.inner;
    let mut pools = BTreeMap::new();
    pools.insert(
        inner.id,
        lock(&replica.native().pool).entries_for_recovery(),
    );
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
    while pools.len() < majority {
        let Ok(Some((voter, answer))) = tokio::time::timeout_at(deadline, calls.next()).await
        else {
            break;
        };
        match answer {
            Ok(PeerResponse::CurpPool(response)) => {
                let entries: Result<Vec<PoolEntry>, _> =
                    response.entries.iter().map(pool_entry_from_pb).collect();
                match entries {
                    Ok(entries) => {
                        pools.insert(voter, entries);
                    }
                    Err(error) => warn!(voter, %error, "undecodable pool; not counted"),
                }
            }
            Ok(_) => warn!(voter, "pool request answered with another message"),
            Err(error) => tracing::debug!(voter, %error, "pool request failed"),
        }
    }
    pools
}

impl NativeState {
    /// This member's pool as a new leader of `term` collects it.
    pub(crate) fn pool_for_recovery(&self) -> curppb::PoolResponse {
        curppb::PoolResponse {
            entries: lock(&self.pool)
                .entries_for_recovery()
                .iter()
                .map(pool_entry_to_pb)
                .collect(),
        }
    }
}
