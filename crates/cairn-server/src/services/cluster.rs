//! The Cluster service. A single member lists itself; membership changes arrive with
//! replication.

use cairn_proto::etcdserverpb::cluster_server::Cluster;
use cairn_proto::etcdserverpb::{
    Member, MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse,
    MemberPromoteRequest, MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse,
    MemberUpdateRequest, MemberUpdateResponse,
};
use tonic::{Request, Response, Status};

use crate::error::ServerError;
use crate::node::Node;

pub struct ClusterService {
    node: Node,
}

impl ClusterService {
    pub fn new(node: Node) -> ClusterService {
        ClusterService { node }
    }

    fn this_member(&self) -> Member {
        let config = self.node.config();
        Member {
            id: self.node.identity().member_id,
            name: self.node.identity().name.clone(),
            peer_ur_ls: config.initial_advertise_peer_urls.clone(),
            client_ur_ls: config.advertise_client_urls.clone(),
            is_learner: false,
        }
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        _: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        Err(ServerError::Unsupported("MemberAdd").into())
    }

    async fn member_remove(
        &self,
        _: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        Err(ServerError::Unsupported("MemberRemove").into())
    }

    async fn member_update(
        &self,
        _: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        Err(ServerError::Unsupported("MemberUpdate").into())
    }

    async fn member_list(
        &self,
        _: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        let revision = self.node.store().current_revision();
        Ok(Response::new(MemberListResponse {
            header: Some(self.node.header(revision)),
            members: vec![self.this_member()],
        }))
    }

    async fn member_promote(
        &self,
        _: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        Err(ServerError::Unsupported("MemberPromote").into())
    }
}
