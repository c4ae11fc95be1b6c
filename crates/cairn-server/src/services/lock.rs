//! The Lock service (etcd's `v3lock`): Lock and Unlock, etcd's `concurrency.Mutex` run on the
//! server.
//!
//! `Lock(name, lease)` queues the key `name/<lease in hex>` on the lease (or finds it already
//! queued) and answers once every key under `name/` created before it is gone; the key is the
//! proof of ownership for as long as it exists. A client that gives up while waiting has its
//! key deleted, as etcd does. `Unlock(key)` deletes the key.

use cairn_mvcc::validate;
use cairn_proto::cairnpb::internal_request::Request as Internal;
use cairn_proto::etcdserverpb::DeleteRangeRequest;
use cairn_proto::v3lockpb::lock_server::Lock;
use cairn_proto::v3lockpb::{LockRequest, LockResponse, UnlockRequest, UnlockResponse};
use tonic::{Request, Response, Status};

use crate::error::ServerError;
use crate::node::Node;
use crate::services::concurrency::{self, reply_if, Withdraw};

pub struct LockService {
    node: Node,
}

impl LockService {
    pub fn new(node: Node) -> LockService {
        LockService { node }
    }
}

fn delete(key: &[u8]) -> Internal {
    Internal::DeleteRange(DeleteRangeRequest {
        key: key.to_vec(),
        ..Default::default()
    })
}

/// etcd's `Mutex.Lock` with a session on `request.lease`.
async fn lock(node: &Node, request: LockRequest) -> Result<LockResponse, ServerError> {
    let lease = concurrency::session_lease(node, request.lease).await?;
    let prefix = concurrency::queue_prefix(&request.name);
    let place = concurrency::enqueue(node, &prefix, lease, b"").await?;
    let withdraw = Withdraw::new(node, delete(&place.key));
    let revision = if place.at_head {
        place.txn.header.map_or(0, |header| header.revision)
    } else {
        match acquired_revision(node, &prefix, &place.key, place.create_revision).await {
            Ok(Some(revision)) => revision,
            // The key went with its lease while waiting: nothing left to delete.
            Ok(None) => {
                withdraw.keep();
                return Err(ServerError::SessionExpired);
            }
            Err(error) => {
                withdraw.now().await;
                return Err(error);
            }
        }
    };
    withdraw.keep();
    Ok(LockResponse {
        header: Some(node.header(revision)),
        key: place.key,
    })
}

/// Waits for the turn of `key`, then checks (linearizably) that it still exists: the
/// revision of that read, or `None` when the key is gone.
async fn acquired_revision(
    node: &Node,
    prefix: &[u8],
    key: &[u8],
    create_revision: i64,
) -> Result<Option<i64>, ServerError> {
    concurrency::wait_deletes(node, prefix, create_revision - 1).await?;
    node.read_index().await?;
    let found = node.store().range(&concurrency::get(key))?;
    let revision = found.header.map_or(0, |header| header.revision);
    Ok((!found.kvs.is_empty()).then_some(revision))
}

/// etcd's `Unlock`: a plain delete of the key, whoever holds it.
async fn unlock(node: &Node, key: Vec<u8>) -> Result<UnlockResponse, ServerError> {
    let request = DeleteRangeRequest {
        key,
        ..Default::default()
    };
    validate::check_delete_range(&request)?;
    let result = node
        .propose_internal(Internal::DeleteRange(request))
        .await?;
    let mut deleted = expect_response!(result, DeleteRange);
    node.fill_header(&mut deleted.header);
    Ok(UnlockResponse {
        header: deleted.header,
    })
}

#[tonic::async_trait]
impl Lock for LockService {
    async fn lock(&self, request: Request<LockRequest>) -> Result<Response<LockResponse>, Status> {
        let name = &request.get_ref().name;
        let allowed = concurrency::authorize_queue(&self.node, request.metadata(), name, true);
        reply_if(allowed, lock(&self.node, request.into_inner())).await
    }

    async fn unlock(
        &self,
        request: Request<UnlockRequest>,
    ) -> Result<Response<UnlockResponse>, Status> {
        let key = &request.get_ref().key;
        let allowed = concurrency::authorize(&self.node, request.metadata(), key, &[], true);
        reply_if(allowed, unlock(&self.node, request.into_inner().key)).await
    }
}
