//! The Election service (etcd's `v3election`): etcd's `concurrency.Election` run on the server.
//!
//! Candidates queue under `name/` exactly as lock waiters do (see `concurrency`); the leader is
//! the key created first, and its value is the leader's proclamation.
//! - `Campaign` queues `name/<lease in hex>` with the value and answers once the candidate
//!   leads; a client that gives up while waiting has its key deleted.
//! - `Proclaim` and `Resign` act only while the leader key still has the create revision
//!   named in the request (`LeaderKey.rev`); a stale `Resign` succeeds and does nothing.
//! - `Leader` reads the current leader; `Observe` streams it, then each new proclamation and
//!   each new leader, until the client leaves or the node stops.

use cairn_proto::cairnpb::internal_request::Request as Internal;
use cairn_proto::etcdserverpb::request_op::Request as Op;
use cairn_proto::etcdserverpb::{DeleteRangeRequest, TxnRequest};
use cairn_proto::mvccpb::event::EventType;
use cairn_proto::mvccpb::KeyValue;
use cairn_proto::v3electionpb::election_server::Election;
use cairn_proto::v3electionpb::{
    CampaignRequest, CampaignResponse, LeaderKey, LeaderRequest, LeaderResponse, ProclaimRequest,
    ProclaimResponse, ResignRequest, ResignResponse,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::error::ServerError;
use crate::limits::OBSERVE_RESPONSES_QUEUED_MAX;
use crate::node::{until_stopping, Node};
use crate::services::concurrency::{self, reply_if, HistoryWatch, Withdraw};

pub struct ElectionService {
    node: Node,
}

impl ElectionService {
    pub fn new(node: Node) -> ElectionService {
        ElectionService { node }
    }
}

/// Deletes `key` if it still has `rev` as create revision (etcd's `Election.Resign`).
fn resign_txn(key: &[u8], rev: i64) -> TxnRequest {
    let delete = Op::RequestDeleteRange(DeleteRangeRequest {
        key: key.to_vec(),
        ..Default::default()
    });
    concurrency::txn_if_created(key, rev, vec![delete], Vec::new())
}

/// Puts `value` on the leader key while it keeps its create revision (etcd's
/// `Election.Proclaim`); the header revision of the txn.
async fn proclaim_value(
    node: &Node,
    key: &[u8],
    rev: i64,
    lease: i64,
    value: &[u8],
) -> Result<i64, ServerError> {
    let put = concurrency::put(key, value, lease);
    let txn = concurrency::txn_if_created(key, rev, vec![put], Vec::new());
    let response = concurrency::propose_txn(node, txn).await?;
    if !response.succeeded {
        return Err(ServerError::ElectionNotLeader);
    }
    Ok(response.header.map_or(0, |header| header.revision))
}

async fn campaign(node: &Node, request: CampaignRequest) -> Result<CampaignResponse, ServerError> {
    let lease = concurrency::session_lease(node, request.lease).await?;
    let prefix = concurrency::queue_prefix(&request.name);
    let place = concurrency::enqueue(node, &prefix, lease, &request.value).await?;
    let resign = resign_txn(&place.key, place.create_revision);
    let withdraw = Withdraw::new(node, Internal::Txn(resign));
    // A candidate already queued on this lease with another value proclaims the new one.
    if place
        .existing_value
        .as_ref()
        .is_some_and(|v| *v != request.value)
    {
        let rev = place.create_revision;
        if let Err(error) = proclaim_value(node, &place.key, rev, lease, &request.value).await {
            withdraw.now().await;
            return Err(error);
        }
    }
    if !place.at_head {
        match concurrency::wait_deletes(node, &prefix, place.create_revision - 1).await {
            Ok(()) => {}
            // Shutdown stands for etcd's cancelled context: the candidate withdraws.
            Err(ServerError::Stopped) => {
                withdraw.now().await;
                return Err(ServerError::Stopped);
            }
            // etcd leaves the key queued when the wait fails for another reason.
            Err(error) => {
                withdraw.keep();
                return Err(error);
            }
        }
    }
    withdraw.keep();
    // etcd answers with the header of the enqueueing txn, however long the wait was.
    let revision = place.txn.header.map_or(0, |header| header.revision);
    Ok(CampaignResponse {
        header: Some(node.header(revision)),
        leader: Some(LeaderKey {
            name: request.name,
            key: place.key,
            rev: place.create_revision,
            lease,
        }),
    })
}

async fn proclaim(node: &Node, request: ProclaimRequest) -> Result<ProclaimResponse, ServerError> {
    let leader = request.leader.ok_or(ServerError::MissingLeaderKey)?;
    let lease = concurrency::session_lease(node, leader.lease).await?;
    let revision = proclaim_value(node, &leader.key, leader.rev, lease, &request.value).await?;
    Ok(ProclaimResponse {
        header: Some(node.header(revision)),
    })
}

async fn resign(node: &Node, request: ResignRequest) -> Result<ResignResponse, ServerError> {
    let leader = request.leader.ok_or(ServerError::MissingLeaderKey)?;
    let mut response = concurrency::propose_txn(node, resign_txn(&leader.key, leader.rev)).await?;
    node.fill_header(&mut response.header);
    Ok(ResignResponse {
        header: response.header,
    })
}

async fn leader(node: &Node, request: LeaderRequest) -> Result<LeaderResponse, ServerError> {
    let prefix = concurrency::queue_prefix(&request.name);
    match concurrency::head(node, &prefix).await? {
        (revision, Some(kv)) => Ok(leader_response(node, revision, kv)),
        (_, None) => Err(ServerError::ElectionNoLeader),
    }
}

fn leader_response(node: &Node, revision: i64, kv: KeyValue) -> LeaderResponse {
    LeaderResponse {
        header: Some(node.header(revision)),
        kv: Some(kv),
    }
}

type Observers = mpsc::Sender<Result<LeaderResponse, Status>>;

/// etcd's `Election.observe`: the leader now (or, with none, the first key put under the
/// prefix), then every put on that key until it is deleted; then again. Returns when the
/// client is gone or a read fails (etcd then ends the stream without an error).
async fn observe(node: &Node, prefix: &[u8], out: &Observers) -> Result<(), ServerError> {
    loop {
        let (revision, leader) = concurrency::head(node, prefix).await?;
        let (revision, leader) = match leader {
            Some(kv) => (revision, kv),
            None => first_put(node, prefix, revision).await?,
        };
        let key = leader.key.clone();
        let send = |revision, kv| out.send(Ok(leader_response(node, revision, kv)));
        send(revision, leader)
            .await
            .map_err(|_| ServerError::Stopped)?;
        let mut watch = HistoryWatch::new(node, &key, false, revision + 1);
        'leader: loop {
            let (revision, events) = watch.next(node).await?;
            for event in events {
                if event.r#type == EventType::Delete as i32 {
                    break 'leader;
                }
                let kv = event.kv.unwrap_or_default();
                send(revision, kv).await.map_err(|_| ServerError::Stopped)?;
            }
        }
    }
}

/// The first key put under `prefix` from revision `from` on, with its revision.
async fn first_put(node: &Node, prefix: &[u8], from: i64) -> Result<(i64, KeyValue), ServerError> {
    let mut watch = HistoryWatch::new(node, prefix, true, from);
    loop {
        let (_, events) = watch.next(node).await?;
        let put = events
            .into_iter()
            .filter(|event| event.r#type == EventType::Put as i32)
            .find_map(|event| event.kv);
        if let Some(kv) = put {
            return Ok((kv.mod_revision, kv));
        }
    }
}

/// Proclaim and Resign write the leader key of the election they name; without a leader key
/// the call itself answers etcd's error.
fn authorize_leader<T>(
    node: &Node,
    request: &Request<T>,
    leader: Option<&LeaderKey>,
) -> Result<(), ServerError> {
    match leader {
        Some(leader) => concurrency::authorize_queue(node, request.metadata(), &leader.name, true),
        None => Ok(()),
    }
}

#[tonic::async_trait]
impl Election for ElectionService {
    async fn campaign(
        &self,
        request: Request<CampaignRequest>,
    ) -> Result<Response<CampaignResponse>, Status> {
        let name = &request.get_ref().name;
        let allowed = concurrency::authorize_queue(&self.node, request.metadata(), name, true);
        reply_if(allowed, campaign(&self.node, request.into_inner())).await
    }

    async fn proclaim(
        &self,
        request: Request<ProclaimRequest>,
    ) -> Result<Response<ProclaimResponse>, Status> {
        let allowed = authorize_leader(&self.node, &request, request.get_ref().leader.as_ref());
        reply_if(allowed, proclaim(&self.node, request.into_inner())).await
    }

    async fn leader(
        &self,
        request: Request<LeaderRequest>,
    ) -> Result<Response<LeaderResponse>, Status> {
        let name = &request.get_ref().name;
        let allowed = concurrency::authorize_queue(&self.node, request.metadata(), name, false);
        reply_if(allowed, leader(&self.node, request.into_inner())).await
    }

    type ObserveStream = ReceiverStream<Result<LeaderResponse, Status>>;

    async fn observe(
        &self,
        request: Request<LeaderRequest>,
    ) -> Result<Response<Self::ObserveStream>, Status> {
        let name = &request.get_ref().name;
        concurrency::authorize_queue(&self.node, request.metadata(), name, false)
            .map_err(ServerError::into_recipe_status)?;
        let prefix = concurrency::queue_prefix(&request.into_inner().name);
        let (out, responses) = mpsc::channel(OBSERVE_RESPONSES_QUEUED_MAX);
        let node = self.node.clone();
        let mut stopping = node.stopping();
        tokio::spawn(async move {
            // Whatever ends first ends the stream: etcd's observer stops on a failed read,
            // the client leaving, or the server stopping; none of them is an error to send.
            tokio::select! {
                _ = observe(&node, &prefix, &out) => {}
                _ = out.closed() => {}
                _ = until_stopping(&mut stopping) => {}
            }
        });
        Ok(Response::new(ReceiverStream::new(responses)))
    }

    async fn resign(
        &self,
        request: Request<ResignRequest>,
    ) -> Result<Response<ResignResponse>, Status> {
        let allowed = authorize_leader(&self.node, &request, request.get_ref().leader.as_ref());
        reply_if(allowed, resign(&self.node, request.into_inner())).await
    }
}
