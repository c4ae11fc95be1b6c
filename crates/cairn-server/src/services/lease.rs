//! The Lease service: grant, revoke, keep-alive stream, time-to-live, list.
//!
//! Grants get a random non-zero 63-bit id when the client leaves it 0; the id is chosen here,
//! before proposing, so that the log entry (and every replay of it) carries it.

use cairn_mvcc::validate;
use cairn_mvcc::MvccError;
use cairn_proto::authpb::permission::Type as PermType;
use cairn_proto::cairnpb::internal_request::Request as Internal;
use cairn_proto::cairnpb::AuthInfo;
use cairn_proto::etcdserverpb::lease_server::Lease;
use cairn_proto::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseLeasesRequest, LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse,
    LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::error::ServerError;
use crate::limits::KEEPALIVE_RESPONSES_QUEUED_MAX;
use crate::node::{now_unix_ms, until_stopping, Node};

pub struct LeaseService {
    node: Node,
}

impl LeaseService {
    pub fn new(node: Node) -> LeaseService {
        LeaseService { node }
    }
}

/// A random non-zero 63-bit lease id, as etcd picks for a grant without one.
pub(crate) fn random_lease_id() -> i64 {
    loop {
        let id = rand::random::<i64>() & i64::MAX;
        if id != 0 {
            return id;
        }
    }
}

/// One keep-alive: renews through the log; an unknown lease answers TTL 0, as etcd.
async fn keep_alive(
    node: &Node,
    caller: &AuthInfo,
    id: i64,
) -> Result<LeaseKeepAliveResponse, ServerError> {
    let request = Internal::LeaseKeepAlive(LeaseKeepAliveRequest { id });
    let mut response = match node.propose(caller, request).await {
        Ok(result) => expect_response!(result, LeaseKeepAlive),
        Err(ServerError::Mvcc(MvccError::LeaseNotFound)) => {
            let revision = node.store().current_revision();
            LeaseKeepAliveResponse {
                header: Some(node.header(revision)),
                id,
                ttl: 0,
            }
        }
        Err(error) => return Err(error),
    };
    node.fill_header(&mut response.header);
    Ok(response)
}

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(
        &self,
        request: Request<LeaseGrantRequest>,
    ) -> Result<Response<LeaseGrantResponse>, Status> {
        let caller = self.node.caller(request.metadata())?;
        let mut request = request.into_inner();
        validate::check_lease_grant(&request).map_err(ServerError::from)?;
        if request.id == 0 {
            request.id = random_lease_id();
        }
        propose_reply!(self.node, caller, Internal::LeaseGrant(request), LeaseGrant)
    }

    async fn lease_revoke(
        &self,
        request: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        let caller = self.node.caller(request.metadata())?;
        propose_reply!(
            self.node,
            caller,
            Internal::LeaseRevoke(request.into_inner()),
            LeaseRevoke
        )
    }

    type LeaseKeepAliveStream = ReceiverStream<Result<LeaseKeepAliveResponse, Status>>;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        // The stream's token is checked once, when it opens (etcd does the same); each renewal
        // is then checked against the lease's keys when it is applied.
        let caller = self.node.caller(request.metadata())?;
        let mut inbound = request.into_inner();
        let (out, responses) = mpsc::channel(KEEPALIVE_RESPONSES_QUEUED_MAX);
        let node = self.node.clone();
        let mut stopping = node.stopping();
        tokio::spawn(async move {
            loop {
                let message = tokio::select! {
                    message = inbound.message() => message,
                    _ = until_stopping(&mut stopping) => break,
                };
                let Ok(Some(request)) = message else { break };
                let reply = keep_alive(&node, &caller, request.id)
                    .await
                    .map_err(Status::from);
                let failed = reply.is_err();
                if out.send(reply).await.is_err() || failed {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(responses)))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        let caller = self.node.caller(request.metadata())?;
        let request = request.into_inner();
        let mut response = {
            let store = self.node.store();
            // Listing a lease's keys reveals their names: it needs read on each of them.
            if request.keys {
                if let Some(lease) = store.leases().get(request.id) {
                    for key in &lease.keys {
                        store
                            .auth()
                            .check_range(&caller.user, key, &[], PermType::Read)
                            .map_err(ServerError::from)?;
                    }
                }
            }
            store.lease_time_to_live(request.id, request.keys, now_unix_ms())
        };
        self.node.fill_header(&mut response.header);
        Ok(Response::new(response))
    }

    async fn lease_leases(
        &self,
        _request: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        let mut response = self.node.store().lease_leases();
        self.node.fill_header(&mut response.header);
        Ok(Response::new(response))
    }
}
