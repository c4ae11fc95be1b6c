//! The KV service: Range, Put, DeleteRange, Txn, Compact.
//!
//! Each RPC validates at the edge (etcd's errors), then reads from the store or proposes
//! through the node. A linearizable read (the default) first waits for a read index confirmed
//! by the leader's quorum; a serializable one reads this member's store as it is. Reads check
//! the caller's read permission under the same store borrow they read with.

use cairn_mvcc::txn::txn_writes;
use cairn_mvcc::validate;
use cairn_proto::authpb::permission::Type as PermType;
use cairn_proto::cairnpb::internal_request::Request as Internal;
use cairn_proto::etcdserverpb::kv_server::Kv;
use cairn_proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};
use tonic::{Request, Response, Status};

use crate::error::ServerError;
use crate::node::Node;

pub struct KvService {
    node: Node,
}

impl KvService {
    pub fn new(node: Node) -> KvService {
        KvService { node }
    }
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(
        &self,
        request: Request<RangeRequest>,
    ) -> Result<Response<RangeResponse>, Status> {
        let caller = self.node.caller(request.metadata())?;
        let request = request.into_inner();
        validate::check_range(&request).map_err(ServerError::from)?;
        if !request.serializable {
            self.node.read_index().await?;
        }
        let mut response = {
            let store = self.node.store();
            store
                .auth()
                .check_range(
                    &caller.user,
                    &request.key,
                    &request.range_end,
                    PermType::Read,
                )
                .map_err(ServerError::from)?;
            store.range(&request).map_err(ServerError::from)?
        };
        self.node.fill_header(&mut response.header);
        Ok(Response::new(response))
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let caller = self.node.caller(request.metadata())?;
        let request = request.into_inner();
        validate::check_put(&request).map_err(ServerError::from)?;
        propose_reply!(self.node, caller, Internal::Put(request), Put)
    }

    async fn delete_range(
        &self,
        request: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        let caller = self.node.caller(request.metadata())?;
        let request = request.into_inner();
        validate::check_delete_range(&request).map_err(ServerError::from)?;
        propose_reply!(
            self.node,
            caller,
            Internal::DeleteRange(request),
            DeleteRange
        )
    }

    async fn txn(&self, request: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let caller = self.node.caller(request.metadata())?;
        let request = request.into_inner();
        validate::check_txn(&request, self.node.config().max_txn_ops).map_err(ServerError::from)?;
        let mut response = if txn_writes(&request) {
            let result = self.node.propose(&caller, Internal::Txn(request)).await?;
            expect_response!(result, Txn)
        } else {
            if !txn_serializable(&request) {
                self.node.read_index().await?;
            }
            let store = self.node.store();
            store
                .auth()
                .check_txn(&caller.user, &request, store.leases())
                .map_err(ServerError::from)?;
            store.txn_read_only(&request).map_err(ServerError::from)?
        };
        self.node.fill_header(&mut response.header);
        Ok(Response::new(response))
    }

    async fn compact(
        &self,
        request: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        let caller = self.node.caller(request.metadata())?;
        propose_reply!(
            self.node,
            caller,
            Internal::Compaction(request.into_inner()),
            Compaction
        )
    }
}

/// etcd's `isTxnSerializable`: a read-only txn whose every range (nested ones included) asked
/// for a serializable read may skip the read index.
fn txn_serializable(request: &TxnRequest) -> bool {
    use cairn_proto::etcdserverpb::request_op::Request as Op;
    request
        .success
        .iter()
        .chain(&request.failure)
        .all(|op| match &op.request {
            Some(Op::RequestRange(range)) => range.serializable,
            Some(Op::RequestTxn(nested)) => txn_serializable(nested),
            _ => true,
        })
}
