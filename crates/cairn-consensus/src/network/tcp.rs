//! The real peer transport: gRPC (`raftpb.Raft`) over one long-lived HTTP/2 connection per
//! peer, opened lazily and reused. HTTP/2 multiplexes the requests of one connection; openraft
//! sends each peer's replication messages one at a time, so they arrive in order.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use cairn_proto::raftpb;
use cairn_proto::raftpb::raft_client::RaftClient;
use cairn_proto::raftpb::raft_server::{Raft as RaftService, RaftServer};
use prost::Message;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Request, Response, Status};

use crate::limits::PEER_MESSAGE_BYTES_MAX;
use crate::network::{PeerRequest, PeerResponse, Transport, TransportError, TransportFuture};
use crate::peer::PeerHandler;
use crate::types::{Member, MemberId};

/// Connect timeout for a peer connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Clients to the peers, by member id.
#[derive(Default)]
pub struct TcpTransport {
    /// A std mutex: held to look up or insert a client (a cheap clone of a channel handle).
    clients: Mutex<HashMap<MemberId, (String, RaftClient<Channel>)>>,
    /// Source address of peer connections. Set to the peer listener's own IP when it listens
    /// on a specific one, so a member's connections come from its peer address (what firewall
    /// rules, and the link-cutting proxy of the fault tests, key on).
    source: Option<IpAddr>,
    /// TLS towards peers with `https://` URLs.
    tls: Option<ClientTlsConfig>,
}

impl TcpTransport {
    pub fn new(source: Option<IpAddr>, tls: Option<ClientTlsConfig>) -> TcpTransport {
        TcpTransport {
            clients: Mutex::default(),
            source,
            tls,
        }
    }

    fn client(
        &self,
        target: MemberId,
        member: &Member,
    ) -> Result<RaftClient<Channel>, TransportError> {
        let url = member.peer_urls.first().ok_or_else(|| {
            TransportError::Unreachable(format!("member {target:x} has no peer URL"))
        })?;
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((known, client)) = clients.get(&target) {
            if known == url {
                return Ok(client.clone());
            }
        }
        let bad_url = |error: tonic::transport::Error| {
            TransportError::Unreachable(format!("peer URL {url}: {error}"))
        };
        let mut endpoint = Endpoint::from_shared(url.clone())
            .map_err(bad_url)?
            .connect_timeout(CONNECT_TIMEOUT)
            .local_address(self.source)
            .tcp_nodelay(true);
        if let Some(tls) = &self.tls {
            endpoint = endpoint.tls_config(tls.clone()).map_err(bad_url)?;
        }
        let client = RaftClient::new(endpoint.connect_lazy())
            .max_decoding_message_size(PEER_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(PEER_MESSAGE_BYTES_MAX);
        clients.insert(target, (url.clone(), client.clone()));
        Ok(client)
    }
}

impl Transport for TcpTransport {
    fn call(&self, target: MemberId, member: &Member, request: PeerRequest) -> TransportFuture {
        let client = self.client(target, member);
        Box::pin(async move {
            let mut client = client?;
            let response = match request {
                PeerRequest::AppendEntries(request) => client
                    .append_entries(request)
                    .await
                    .map(|r| PeerResponse::AppendEntries(r.into_inner())),
                PeerRequest::Vote(request) => client
                    .vote(request)
                    .await
                    .map(|r| PeerResponse::Vote(r.into_inner())),
                PeerRequest::InstallSnapshot(request) => client
                    .install_snapshot(request)
                    .await
                    .map(|r| PeerResponse::InstallSnapshot(r.into_inner())),
                PeerRequest::Forward(request) => client
                    .forward(request)
                    .await
                    .map(|r| PeerResponse::Forward(r.into_inner())),
                PeerRequest::ReadIndex(request) => client
                    .read_index(request)
                    .await
                    .map(|r| PeerResponse::ReadIndex(r.into_inner())),
                PeerRequest::ChangeMembership(request) => client
                    .change_membership(request)
                    .await
                    .map(|r| PeerResponse::ChangeMembership(r.into_inner())),
                PeerRequest::TimeoutNow(request) => client
                    .timeout_now(request)
                    .await
                    .map(|r| PeerResponse::TimeoutNow(r.into_inner())),
                PeerRequest::CurpPool(request) => client
                    .curp_pool(request)
                    .await
                    .map(|r| PeerResponse::CurpPool(r.into_inner())),
            };
            response.map_err(transport_error)
        })
    }
}

/// A refusal travels as `FAILED_PRECONDITION` with the encoded `raftpb.PeerError` as details;
/// anything else means the peer was not reached or did not answer.
fn transport_error(status: Status) -> TransportError {
    match status.code() {
        Code::FailedPrecondition => match raftpb::PeerError::decode(status.details()) {
            Ok(refusal) => TransportError::Refused(refusal),
            Err(_) => TransportError::Unreachable(status.message().to_string()),
        },
        Code::DeadlineExceeded => TransportError::Timeout,
        _ => TransportError::Unreachable(status.message().to_string()),
    }
}

fn refusal_status(refusal: raftpb::PeerError) -> Status {
    let details = refusal.encode_to_vec();
    Status::with_details(Code::FailedPrecondition, refusal.message, details.into())
}

/// The peer listener's gRPC service for `handler`.
pub fn peer_service(handler: PeerHandler) -> RaftServer<PeerService> {
    RaftServer::new(PeerService { handler })
        .max_decoding_message_size(PEER_MESSAGE_BYTES_MAX)
        .max_encoding_message_size(PEER_MESSAGE_BYTES_MAX)
}

pub struct PeerService {
    handler: PeerHandler,
}

impl PeerService {
    async fn handle(&self, request: PeerRequest) -> Result<PeerResponse, Status> {
        self.handler.handle(request).await.map_err(refusal_status)
    }
}

/// Unwraps the answer of the kind a method expects; the handler answers in kind.
macro_rules! answer {
    ($self:ident, $request:expr, $kind:ident) => {
        match $self
            .handle(PeerRequest::$kind($request.into_inner()))
            .await?
        {
            PeerResponse::$kind(response) => Ok(Response::new(response)),
            _ => Err(Status::internal("peer handler answered in the wrong kind")),
        }
    };
}

#[tonic::async_trait]
impl RaftService for PeerService {
    async fn append_entries(
        &self,
        request: Request<raftpb::AppendEntriesRequest>,
    ) -> Result<Response<raftpb::AppendEntriesResponse>, Status> {
        answer!(self, request, AppendEntries)
    }

    async fn vote(
        &self,
        request: Request<raftpb::VoteRequest>,
    ) -> Result<Response<raftpb::VoteResponse>, Status> {
        answer!(self, request, Vote)
    }

    async fn install_snapshot(
        &self,
        request: Request<raftpb::InstallSnapshotRequest>,
    ) -> Result<Response<raftpb::InstallSnapshotResponse>, Status> {
        answer!(self, request, InstallSnapshot)
    }

    async fn forward(
        &self,
        request: Request<raftpb::ForwardRequest>,
    ) -> Result<Response<raftpb::ForwardResponse>, Status> {
        answer!(self, request, Forward)
    }

    async fn read_index(
        &self,
        request: Request<raftpb::ReadIndexRequest>,
    ) -> Result<Response<raftpb::ReadIndexResponse>, Status> {
        answer!(self, request, ReadIndex)
    }

    async fn change_membership(
        &self,
        request: Request<raftpb::MembershipChange>,
    ) -> Result<Response<raftpb::MembershipChangeResponse>, Status> {
        answer!(self, request, ChangeMembership)
    }

    async fn timeout_now(
        &self,
        request: Request<raftpb::TimeoutNowRequest>,
    ) -> Result<Response<raftpb::TimeoutNowResponse>, Status> {
        answer!(self, request, TimeoutNow)
    }

    async fn curp_pool(
        &self,
        request: Request<cairn_proto::curppb::PoolRequest>,
    ) -> Result<Response<cairn_proto::curppb::PoolResponse>, Status> {
        answer!(self, request, CurpPool)
    }
}
