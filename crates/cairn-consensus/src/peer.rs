//! The receiving side of the peer transport: hands a peer's request to the local raft.

use cairn_proto::cairnpb::InternalRequest;
use cairn_proto::raftpb;
use prost::Message;

use openraft::error::{ClientWriteError, RaftError};
use openraft::raft::AppendEntriesResponse;
use openraft::ChangeMembers;

use std::sync::Arc;

use crate::batcher::ProposalBatcher;
use crate::election::LeaderContact;
use crate::network::{PeerRequest, PeerResponse};
use crate::state_machine::Replicated;
use crate::types::{MemberId, Raft, Vote};
use crate::wire;

/// Answers peer requests for one member; cheap to clone.
#[derive(Clone)]
pub struct PeerHandler {
    raft: Raft,
    proposals: Arc<ProposalBatcher>,
    shared: Arc<Replicated>,
    /// Told of every append or snapshot a leader of the current vote sends.
    contact: Arc<LeaderContact>,
}

impl PeerHandler {
    pub(crate) fn new(
        raft: Raft,
        proposals: Arc<ProposalBatcher>,
        shared: Arc<Replicated>,
        contact: Arc<LeaderContact>,
    ) -> PeerHandler {
        PeerHandler {
            raft,
            proposals,
            shared,
            contact,
        }
    }

    pub async fn handle(&self, request: PeerRequest) -> Result<PeerResponse, raftpb::PeerError> {
        match request {
            PeerRequest::AppendEntries(request) => {
                let request = wire::append_entries_request_from_pb(request).map_err(failed)?;
                self.refuse_removed(&request.vote)?;
                // Whether this member holds every entry the leader calls committed once the
                // append succeeds: the last entry it carries (or its anchor) reaches the
                // leader's commit index.
                let reaches = request
                    .entries
                    .last()
                    .map(|entry| entry.log_id.index)
                    .or(request.prev_log_id.map(|log_id| log_id.index));
                let covers_commit = reaches >= request.leader_commit.map(|log_id| log_id.index);
                // The leader spoke now, not once the append is flushed.
                self.contact.heard();
                let response = self.raft.append_entries(request).await.map_err(failed)?;
                match response {
                    AppendEntriesResponse::HigherVote(_) => {}
                    AppendEntriesResponse::Success => self.contact.heard_from_leader(covers_commit),
                    _ => self.contact.heard_from_leader(false),
                }
                Ok(PeerResponse::AppendEntries(
                    wire::append_entries_response_to_pb(&response),
                ))
            }
            PeerRequest::Vote(request) => {
                let request = openraft::raft::VoteRequest {
                    vote: wire::vote_from_pb(request.vote.as_ref()).map_err(failed)?,
                    last_log_id: wire::option_log_id_from_pb(&request.last_log_id),
                };
                self.refuse_removed(&request.vote)?;
                let candidate_log = request.last_log_id;
                let candidate_term = request.vote.leader_id.term;
                let response = self.raft.vote(request).await.map_err(failed)?;
                // The answer carries this member's own last log id.
                if candidate_log > response.last_log_id {
                    self.contact.saw_longer_log();
                } else if !response.vote_granted {
                    self.contact.saw_rival(candidate_term);
                }
                Ok(PeerResponse::Vote(raftpb::VoteResponse {
                    vote: Some(wire::vote_to_pb(&response.vote)),
                    vote_granted: response.vote_granted,
                    last_log_id: wire::option_log_id_to_pb(&response.last_log_id),
                }))
            }
            PeerRequest::InstallSnapshot(request) => {
                let request = wire::install_snapshot_request_from_pb(request).map_err(failed)?;
                self.refuse_removed(&request.vote)?;
                let response = self
                    .raft
                    .install_snapshot(request)
                    .await
                    .map_err(|error| refused(0, error.to_string()))?;
                self.contact.heard_from_leader(false);
                Ok(PeerResponse::InstallSnapshot(
                    raftpb::InstallSnapshotResponse {
                        vote: Some(wire::vote_to_pb(&response.vote)),
                    },
                ))
            }
            PeerRequest::Forward(request) => self.forward(request).await,
            PeerRequest::ChangeMembership(change) => {
                change_membership(&self.raft, change)
                    .await
                    .map_err(|error| {
                        let leader = match &error {
                            MembershipError::NotLeader(leader) => *leader,
                            _ => None,
                        };
                        refused(leader.unwrap_or(0), error.to_string())
                    })?;
                Ok(PeerResponse::ChangeMembership(
                    raftpb::MembershipChangeResponse {},
                ))
            }
            PeerRequest::TimeoutNow(_) => {
                self.raft
                    .trigger()
                    .elect()
                    .await
                    .map_err(|error| refused(0, error.to_string()))?;
                Ok(PeerResponse::TimeoutNow(raftpb::TimeoutNowResponse {}))
            }
            // A new leader collecting pools for its CURP-HO recovery. The pool is sent whatever
            // the term (entries carry their own terms, and the leader's plan weighs them); the
            // witness then answers in that term or later.
            PeerRequest::CurpPool(request) => Ok(PeerResponse::CurpPool(
                self.shared.native.pool_for_recovery(request.term),
            )),
            PeerRequest::ReadIndex(_) => {
                let (read_log_id, _) = self.raft.get_read_log_id().await.map_err(|error| {
                    let leader = error.forward_to_leader().and_then(|to| to.leader_id);
                    refused(leader.unwrap_or(0), error.to_string())
                })?;
                Ok(PeerResponse::ReadIndex(raftpb::ReadIndexResponse {
                    index: read_log_id.map_or(0, |log_id| log_id.index),
                }))
            }
        }
    }

    /// Refuses a raft request from a member the cluster removed (the vote names the sender),
    /// so that a removed member that missed its removal learns of it and stops. A member the
    /// newest membership lists again is served even before that membership applies here.
    fn refuse_removed(&self, vote: &Vote) -> Result<(), raftpb::PeerError> {
        let Some(sender) = vote.leader_id().voted_for() else {
            return Ok(());
        };
        if !self.shared.removals.is_removed(sender) {
            return Ok(());
        }
        let listed = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .nodes()
            .any(|(id, _)| *id == sender);
        if listed {
            return Ok(());
        }
        Err(raftpb::PeerError {
            leader_id: 0,
            message: format!("member {sender:x} was removed from the cluster"),
            removed: true,
        })
    }

    /// A follower's client write: replicated here if this member leads.
    async fn forward(
        &self,
        request: raftpb::ForwardRequest,
    ) -> Result<PeerResponse, raftpb::PeerError> {
        // Bytes from a peer are input: every member would fail to decode a bad entry, so it
        // never enters the log.
        InternalRequest::decode(request.request.as_ref())
            .map_err(|error| refused(0, format!("undecodable request: {error}")))?;
        // Not leading: nothing is appended, so the follower may retry at the hinted leader.
        let metrics = self.raft.metrics().borrow().clone();
        if metrics.current_leader != Some(metrics.id) {
            let hint = metrics.current_leader.unwrap_or(0);
            return Err(refused(hint, "not leader".to_string()));
        }
        // Leading: a failure from here on may come after the entry was appended (leadership
        // lost before commit), and a later leader may still commit it. So no leader hint: the
        // follower must not propose it again (it would apply twice).
        self.proposals
            .submit(request.request)
            .await
            .map_err(|error| refused(0, format!("leader changed: {error}")))?;
        Ok(PeerResponse::Forward(raftpb::ForwardResponse {
            index: self
                .raft
                .metrics()
                .borrow()
                .last_applied
                .map_or(0, |id| id.index),
        }))
    }
}

/// Why a membership change was not made.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    /// Only the leader changes the membership; the known leader, if any.
    #[error("not leader")]
    NotLeader(Option<MemberId>),
    /// Refused by raft (e.g. promoting a member that is not a learner).
    #[error("{0}")]
    Refused(String),
    #[error("member stopped")]
    Stopped,
}

/// Runs `change` on this member's raft, which must lead.
pub(crate) async fn change_membership(
    raft: &Raft,
    change: raftpb::MembershipChange,
) -> Result<(), MembershipError> {
    use raftpb::membership_change::Change;
    use std::collections::{BTreeMap, BTreeSet};
    let member_of = |member: raftpb::Member| {
        let id = member.id;
        (
            id,
            crate::types::Member {
                name: member.name,
                peer_urls: member.peer_urls,
                client_urls: member.client_urls,
            },
        )
    };
    let result = match change.change {
        None => return Err(MembershipError::Refused("empty membership change".into())),
        Some(Change::AddLearner(member)) => {
            let (id, member) = member_of(member);
            raft.add_learner(id, member, false).await.map(|_| ())
        }
        Some(Change::AddVoter(member)) => {
            let (id, member) = member_of(member);
            match raft.add_learner(id, member, false).await {
                Ok(_) => raft
                    .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                    .await
                    .map(|_| ()),
                Err(error) => Err(error),
            }
        }
        Some(Change::Promote(id)) => raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            .await
            .map(|_| ()),
        Some(Change::Remove(id)) => {
            let metrics = raft.metrics().borrow().clone();
            let is_voter = metrics
                .membership_config
                .membership()
                .voter_ids()
                .any(|voter| voter == id);
            let changes = if is_voter {
                ChangeMembers::RemoveVoters(BTreeSet::from([id]))
            } else {
                ChangeMembers::RemoveNodes(BTreeSet::from([id]))
            };
            raft.change_membership(changes, false).await.map(|_| ())
        }
        Some(Change::Update(member)) => {
            let (id, member) = member_of(member);
            raft.change_membership(
                ChangeMembers::SetNodes(BTreeMap::from([(id, member)])),
                false,
            )
            .await
            .map(|_| ())
        }
    };
    result.map_err(|error| match error {
        RaftError::APIError(ClientWriteError::ForwardToLeader(to)) => {
            MembershipError::NotLeader(to.leader_id)
        }
        RaftError::APIError(error) => MembershipError::Refused(error.to_string()),
        RaftError::Fatal(_) => MembershipError::Stopped,
    })
}

pub(crate) fn refused(leader_id: MemberId, message: String) -> raftpb::PeerError {
    raftpb::PeerError {
        leader_id,
        message,
        removed: false,
    }
}

/// A refusal without a leader hint: the message did not decode, or raft is stopping.
fn failed(error: impl std::fmt::Display) -> raftpb::PeerError {
    refused(0, error.to_string())
}
