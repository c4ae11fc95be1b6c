//! The peer transport: how members reach each other.
//!
//! [`Transport`] is the seam between the protocol and the network: it carries `raftpb`
//! messages, so the real implementation ([`tcp`], framed TCP over one connection per peer
//! pair) and the simulated one ([`sim`], one process, seeded faults) exercise the same
//! conversions; [`delay`] wraps either with an emulated one-way link delay for benchmarks.
//! [`RaftNetwork`] adapts a transport to openraft's `RaftNetworkFactory`; the
//! receiving side is [`crate::peer::PeerHandler`].

pub mod delay;
pub mod sim;
pub mod tcp;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use cairn_proto::raftpb;
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, Unreachable};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use thiserror::Error;

use crate::error::WireError;
use crate::limits::{PEER_BACKOFF_FIRST, PEER_BACKOFF_MAX};
use crate::removal::Removals;
use crate::types::{Member, MemberId, TypeConfig};
use crate::wire;

/// A request from one member to another.
#[derive(Clone, Debug)]
pub enum PeerRequest {
    AppendEntries(raftpb::AppendEntriesRequest),
    Vote(raftpb::VoteRequest),
    InstallSnapshot(raftpb::InstallSnapshotRequest),
    Forward(raftpb::ForwardRequest),
    ReadIndex(raftpb::ReadIndexRequest),
    ChangeMembership(raftpb::MembershipChange),
    TimeoutNow(raftpb::TimeoutNowRequest),
    CurpPool(cairn_proto::curppb::PoolRequest),
}

/// The answer to a [`PeerRequest`] of the same kind.
#[derive(Clone, Debug)]
pub enum PeerResponse {
    AppendEntries(raftpb::AppendEntriesResponse),
    Vote(raftpb::VoteResponse),
    InstallSnapshot(raftpb::InstallSnapshotResponse),
    Forward(raftpb::ForwardResponse),
    ReadIndex(raftpb::ReadIndexResponse),
    ChangeMembership(raftpb::MembershipChangeResponse),
    TimeoutNow(raftpb::TimeoutNowResponse),
    CurpPool(cairn_proto::curppb::PoolResponse),
}

/// Why a peer call failed.
#[derive(Clone, Debug, Error)]
pub enum TransportError {
    /// The peer could not be reached (connection refused, dropped, partitioned).
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// No answer in time: the request may or may not have been processed.
    #[error("timed out")]
    Timeout,
    /// The peer answered with a refusal.
    #[error("refused by peer: {}", .0.message)]
    Refused(raftpb::PeerError),
}

pub type TransportFuture =
    Pin<Box<dyn Future<Output = Result<PeerResponse, TransportError>> + Send>>;

/// Sends a request to a member and waits for its answer. Implementations keep one connection
/// per peer and deliver the requests of one caller to one peer in order.
pub trait Transport: Send + Sync + 'static {
    fn call(&self, target: MemberId, member: &Member, request: PeerRequest) -> TransportFuture;
}

/// openraft's network factory over a [`Transport`].
#[derive(Clone)]
pub struct Network {
    transport: Arc<dyn Transport>,
    /// Told when a peer refuses this member as removed.
    removals: Arc<Removals>,
}

impl Network {
    pub fn new(transport: Arc<dyn Transport>, removals: Arc<Removals>) -> Network {
        Network {
            transport,
            removals,
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: MemberId, member: &Member) -> PeerClient {
        PeerClient {
            transport: self.transport.clone(),
            removals: self.removals.clone(),
            target,
            member: member.clone(),
        }
    }
}

/// openraft's client for one peer.
pub struct PeerClient {
    transport: Arc<dyn Transport>,
    removals: Arc<Removals>,
    target: MemberId,
    member: Member,
}

type RpcError<E = openraft::error::Infallible> = RPCError<MemberId, Member, RaftError<MemberId, E>>;

impl PeerClient {
    async fn call<E: std::error::Error>(
        &self,
        request: PeerRequest,
        option: &RPCOption,
    ) -> Result<PeerResponse, RpcError<E>> {
        let call = self.transport.call(self.target, &self.member, request);
        match tokio::time::timeout(option.hard_ttl(), call).await {
            Err(_) | Ok(Err(TransportError::Timeout)) => Err(RPCError::Unreachable(
                Unreachable::new(&TransportError::Timeout),
            )),
            Ok(Err(error @ TransportError::Unreachable(_))) => {
                Err(RPCError::Unreachable(Unreachable::new(&error)))
            }
            Ok(Err(TransportError::Refused(refusal))) => {
                if refusal.removed {
                    self.removals.told_removed();
                }
                Err(RPCError::Network(NetworkError::new(
                    &TransportError::Refused(refusal),
                )))
            }
            Ok(Ok(response)) => Ok(response),
        }
    }
}

fn bad_answer<E: std::error::Error>(error: WireError) -> RpcError<E> {
    RPCError::Network(NetworkError::new(&error))
}

fn wrong_kind<E: std::error::Error>() -> RpcError<E> {
    bad_answer(WireError::Invalid("answer of the wrong kind".to_string()))
}

impl RaftNetwork<TypeConfig> for PeerClient {
    fn backoff(&self) -> Backoff {
        let doubling = std::iter::successors(Some(PEER_BACKOFF_FIRST), |wait| Some(*wait * 2));
        Backoff::new(doubling.map(|wait| wait.min(PEER_BACKOFF_MAX)))
    }

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<MemberId>, RpcError> {
        let request = wire::append_entries_request_to_pb(&rpc);
        match self
            .call(PeerRequest::AppendEntries(request), &option)
            .await?
        {
            PeerResponse::AppendEntries(response) => {
                wire::append_entries_response_from_pb(&response).map_err(bad_answer)
            }
            _ => Err(wrong_kind()),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<MemberId>, RpcError<InstallSnapshotError>> {
        let request = wire::install_snapshot_request_to_pb(&rpc);
        match self
            .call(PeerRequest::InstallSnapshot(request), &option)
            .await?
        {
            PeerResponse::InstallSnapshot(response) => Ok(InstallSnapshotResponse {
                vote: wire::vote_from_pb(response.vote.as_ref()).map_err(bad_answer)?,
            }),
            _ => Err(wrong_kind()),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<MemberId>,
        option: RPCOption,
    ) -> Result<VoteResponse<MemberId>, RpcError> {
        let request = raftpb::VoteRequest {
            vote: Some(wire::vote_to_pb(&rpc.vote)),
            last_log_id: wire::option_log_id_to_pb(&rpc.last_log_id),
        };
        match self.call(PeerRequest::Vote(request), &option).await? {
            PeerResponse::Vote(response) => Ok(VoteResponse {
                vote: wire::vote_from_pb(response.vote.as_ref()).map_err(bad_answer)?,
                vote_granted: response.vote_granted,
                last_log_id: wire::option_log_id_from_pb(&response.last_log_id),
            }),
            _ => Err(wrong_kind()),
        }
    }
}
