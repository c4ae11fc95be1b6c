//! Conversions between openraft's types and their `raftpb` wire/disk form. Conversions from
//! the wire are fallible: bytes from a peer or the disk are input, never trusted.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use cairn_proto::raftpb;
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest};
use openraft::{CommittedLeaderId, EntryPayload};

use crate::error::WireError;
use crate::types::{
    Entry, LogId, Member, MemberId, Membership, Proposal, SnapshotMeta, StoredMembership,
    TypeConfig, Vote,
};

pub fn log_id_to_pb(log_id: &LogId) -> raftpb::LogId {
    raftpb::LogId {
        term: log_id.leader_id.term,
        index: log_id.index,
    }
}

pub fn log_id_from_pb(log_id: &raftpb::LogId) -> LogId {
    LogId::new(CommittedLeaderId::new(log_id.term, 0), log_id.index)
}

pub fn option_log_id_to_pb(log_id: &Option<LogId>) -> Option<raftpb::LogId> {
    log_id.as_ref().map(log_id_to_pb)
}

pub fn option_log_id_from_pb(log_id: &Option<raftpb::LogId>) -> Option<LogId> {
    log_id.as_ref().map(log_id_from_pb)
}

pub fn vote_to_pb(vote: &Vote) -> raftpb::Vote {
    raftpb::Vote {
        term: vote.leader_id.term,
        voted_for: vote.leader_id.voted_for,
        committed: vote.committed,
    }
}

pub fn vote_from_pb(vote: Option<&raftpb::Vote>) -> Result<Vote, WireError> {
    let vote = vote.ok_or(WireError::Missing("vote"))?;
    let mut decoded = Vote::new(vote.term, 0);
    decoded.leader_id.voted_for = vote.voted_for;
    decoded.committed = vote.committed;
    Ok(decoded)
}

pub fn membership_to_pb(membership: &Membership) -> raftpb::Membership {
    raftpb::Membership {
        configs: membership
            .get_joint_config()
            .iter()
            .map(|voters| raftpb::VoterSet {
                ids: voters.iter().copied().collect(),
            })
            .collect(),
        members: membership
            .nodes()
            .map(|(id, member)| raftpb::Member {
                id: *id,
                name: member.name.clone(),
                peer_urls: member.peer_urls.clone(),
                client_urls: member.client_urls.clone(),
            })
            .collect(),
    }
}

pub fn membership_from_pb(membership: &raftpb::Membership) -> Result<Membership, WireError> {
    let configs: Vec<BTreeSet<MemberId>> = membership
        .configs
        .iter()
        .map(|voters| voters.ids.iter().copied().collect())
        .collect();
    let members: BTreeMap<MemberId, Member> = membership
        .members
        .iter()
        .map(|member| {
            let decoded = Member {
                name: member.name.clone(),
                peer_urls: member.peer_urls.clone(),
                client_urls: member.client_urls.clone(),
            };
            (member.id, decoded)
        })
        .collect();
    // openraft asserts on a voter without a node; from the wire that is input, so check here.
    for voter in configs.iter().flatten() {
        if !members.contains_key(voter) {
            return Err(WireError::Invalid(format!(
                "voter {voter:x} has no member record"
            )));
        }
    }
    if configs.is_empty() {
        return Err(WireError::Missing("membership voter set"));
    }
    Ok(Membership::new(configs, members))
}

/// A stored membership on the wire; `None` for the empty one a member has before it joins.
pub fn stored_membership_to_pb(
    stored: &StoredMembership,
) -> (Option<raftpb::LogId>, Option<raftpb::Membership>) {
    let membership = stored.membership();
    let encoded = (!membership.get_joint_config().is_empty()).then(|| membership_to_pb(membership));
    (option_log_id_to_pb(stored.log_id()), encoded)
}

pub fn stored_membership_from_pb(
    log_id: &Option<raftpb::LogId>,
    membership: Option<&raftpb::Membership>,
) -> Result<StoredMembership, WireError> {
    match membership {
        Some(membership) => Ok(StoredMembership::new(
            option_log_id_from_pb(log_id),
            membership_from_pb(membership)?,
        )),
        None => Ok(StoredMembership::default()),
    }
}

pub fn entry_to_pb(entry: &Entry) -> raftpb::Entry {
    let payload = match &entry.payload {
        EntryPayload::Blank => None,
        EntryPayload::Normal(proposal) => Some(raftpb::entry::Payload::Request(proposal.0.clone())),
        EntryPayload::Membership(membership) => Some(raftpb::entry::Payload::Membership(
            membership_to_pb(membership),
        )),
    };
    raftpb::Entry {
        log_id: Some(log_id_to_pb(&entry.log_id)),
        payload,
    }
}

pub fn entry_from_pb(entry: raftpb::Entry) -> Result<Entry, WireError> {
    let log_id = entry
        .log_id
        .as_ref()
        .ok_or(WireError::Missing("entry log id"))?;
    let payload = match entry.payload {
        None => EntryPayload::Blank,
        Some(raftpb::entry::Payload::Request(request)) => EntryPayload::Normal(Proposal(request)),
        Some(raftpb::entry::Payload::Membership(membership)) => {
            EntryPayload::Membership(membership_from_pb(&membership)?)
        }
    };
    Ok(Entry {
        log_id: log_id_from_pb(log_id),
        payload,
    })
}

/// Decodes an entry from its durable bytes (a WAL record payload).
pub fn decode_entry(bytes: &[u8]) -> Result<Entry, WireError> {
    use prost::Message;
    let entry =
        raftpb::Entry::decode(bytes).map_err(|error| WireError::Invalid(error.to_string()))?;
    entry_from_pb(entry)
}

/// Encodes an entry into its durable bytes.
pub fn encode_entry(entry: &Entry) -> Bytes {
    use prost::Message;
    Bytes::from(entry_to_pb(entry).encode_to_vec())
}

/// openraft's replication request on the wire.
pub fn append_entries_request_to_pb(
    request: &AppendEntriesRequest<TypeConfig>,
) -> raftpb::AppendEntriesRequest {
    raftpb::AppendEntriesRequest {
        vote: Some(vote_to_pb(&request.vote)),
        prev_log_id: option_log_id_to_pb(&request.prev_log_id),
        entries: request.entries.iter().map(entry_to_pb).collect(),
        leader_commit: option_log_id_to_pb(&request.leader_commit),
    }
}

pub fn append_entries_request_from_pb(
    request: raftpb::AppendEntriesRequest,
) -> Result<AppendEntriesRequest<TypeConfig>, WireError> {
    Ok(AppendEntriesRequest {
        vote: vote_from_pb(request.vote.as_ref())?,
        prev_log_id: option_log_id_from_pb(&request.prev_log_id),
        entries: request
            .entries
            .into_iter()
            .map(entry_from_pb)
            .collect::<Result<_, _>>()?,
        leader_commit: option_log_id_from_pb(&request.leader_commit),
    })
}

pub fn append_entries_response_to_pb(
    response: &AppendEntriesResponse<MemberId>,
) -> raftpb::AppendEntriesResponse {
    use raftpb::append_entries_response::Kind;
    let (kind, matching, vote) = match response {
        AppendEntriesResponse::Success => (Kind::Success, None, None),
        AppendEntriesResponse::PartialSuccess(matching) => {
            (Kind::PartialSuccess, option_log_id_to_pb(matching), None)
        }
        AppendEntriesResponse::Conflict => (Kind::Conflict, None, None),
        AppendEntriesResponse::HigherVote(vote) => (Kind::HigherVote, None, Some(vote_to_pb(vote))),
    };
    raftpb::AppendEntriesResponse {
        kind: kind as i32,
        matching,
        vote,
    }
}

pub fn append_entries_response_from_pb(
    response: &raftpb::AppendEntriesResponse,
) -> Result<AppendEntriesResponse<MemberId>, WireError> {
    use raftpb::append_entries_response::Kind;
    match Kind::try_from(response.kind) {
        Ok(Kind::Success) => Ok(AppendEntriesResponse::Success),
        Ok(Kind::PartialSuccess) => Ok(AppendEntriesResponse::PartialSuccess(
            option_log_id_from_pb(&response.matching),
        )),
        Ok(Kind::Conflict) => Ok(AppendEntriesResponse::Conflict),
        Ok(Kind::HigherVote) => Ok(AppendEntriesResponse::HigherVote(vote_from_pb(
            response.vote.as_ref(),
        )?)),
        Err(_) => Err(WireError::Invalid(format!(
            "append entries answer kind {}",
            response.kind
        ))),
    }
}

pub fn install_snapshot_request_to_pb(
    request: &InstallSnapshotRequest<TypeConfig>,
) -> raftpb::InstallSnapshotRequest {
    let (membership_log_id, membership) = stored_membership_to_pb(&request.meta.last_membership);
    raftpb::InstallSnapshotRequest {
        vote: Some(vote_to_pb(&request.vote)),
        meta: Some(raftpb::SnapshotMeta {
            last_log_id: option_log_id_to_pb(&request.meta.last_log_id),
            state: Some(raftpb::AppliedState {
                last_applied: option_log_id_to_pb(&request.meta.last_log_id),
                membership_log_id,
                membership,
                // Snapshot meta only: the sessions and removals travel inside the snapshot data.
                curp_sessions: Vec::new(),
                curp_recovered_term: 0,
                removed_members: Vec::new(),
            }),
            snapshot_id: request.meta.snapshot_id.clone(),
        }),
        offset: request.offset,
        data: request.data.clone(),
        done: request.done,
    }
}

pub fn install_snapshot_request_from_pb(
    request: raftpb::InstallSnapshotRequest,
) -> Result<InstallSnapshotRequest<TypeConfig>, WireError> {
    let meta = request.meta.ok_or(WireError::Missing("snapshot meta"))?;
    let state = meta.state.ok_or(WireError::Missing("snapshot state"))?;
    Ok(InstallSnapshotRequest {
        vote: vote_from_pb(request.vote.as_ref())?,
        meta: SnapshotMeta {
            last_log_id: option_log_id_from_pb(&meta.last_log_id),
            last_membership: stored_membership_from_pb(
                &state.membership_log_id,
                state.membership.as_ref(),
            )?,
            snapshot_id: meta.snapshot_id,
        },
        offset: request.offset,
        data: request.data,
        done: request.done,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str) -> Member {
        Member {
            name: name.to_string(),
            peer_urls: vec![format!("http://{name}:2380")],
            client_urls: vec![format!("http://{name}:2379")],
        }
    }

    #[test]
    fn entries_round_trip_through_their_durable_bytes() {
        let members = BTreeMap::from([(1, member("a")), (2, member("b")), (3, member("c"))]);
        let membership = Membership::new(vec![BTreeSet::from([1, 2])], members);
        let log_id = LogId::new(CommittedLeaderId::new(7, 0), 42);
        let entries = [
            Entry {
                log_id,
                payload: EntryPayload::Blank,
            },
            Entry {
                log_id,
                payload: EntryPayload::Normal(Proposal(Bytes::from_static(b"request"))),
            },
            Entry {
                log_id,
                payload: EntryPayload::Membership(membership),
            },
        ];
        for entry in entries {
            let decoded = decode_entry(&encode_entry(&entry)).expect("decodes");
            assert_eq!(decoded.log_id, entry.log_id);
            assert_eq!(decoded.payload, entry.payload);
        }
    }

    #[test]
    fn a_vote_round_trips_with_and_without_a_candidate() {
        let mut committed = Vote::new_committed(5, 3);
        committed.commit();
        let mut unvoted = Vote::new(2, 0);
        unvoted.leader_id.voted_for = None;
        for vote in [committed, Vote::new(4, 2), unvoted] {
            assert_eq!(
                vote_from_pb(Some(&vote_to_pb(&vote))).expect("decodes"),
                vote
            );
        }
    }

    #[test]
    fn a_membership_naming_a_voter_without_a_member_record_is_refused() {
        let membership = raftpb::Membership {
            configs: vec![raftpb::VoterSet { ids: vec![1, 9] }],
            members: vec![raftpb::Member {
                id: 1,
                ..Default::default()
            }],
        };
        assert!(matches!(
            membership_from_pb(&membership),
            Err(WireError::Invalid(_))
        ));
    }

    #[test]
    fn garbage_bytes_are_an_error_not_a_panic() {
        assert!(decode_entry(&[0xff, 0xff, 0xff]).is_err());
        assert!(matches!(
            decode_entry(&[]),
            Err(WireError::Missing("entry log id"))
        ));
    }
}
