//! The Cluster service: MemberList from the replicated membership; MemberAdd, MemberRemove,
//! MemberUpdate and MemberPromote as raft membership changes (run on the leader).

use cairn_consensus::{MemberInfo, MembershipChange};
use cairn_proto::etcdserverpb::cluster_server::Cluster;
use cairn_proto::etcdserverpb::{
    Member, MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse,
    MemberPromoteRequest, MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse,
    MemberUpdateRequest, MemberUpdateResponse, ResponseHeader,
};
use tonic::{Request, Response, Status};

use crate::config::socket_addr;
use crate::error::ServerError;
use crate::identity::member_id_for;
use crate::node::Node;

pub struct ClusterService {
    node: Node,
}

impl ClusterService {
    pub fn new(node: Node) -> ClusterService {
        ClusterService { node }
    }

    fn members(&self) -> Vec<Member> {
        self.node.members().into_iter().map(etcd_member).collect()
    }

    fn header(&self) -> Option<ResponseHeader> {
        let revision = self.node.store().current_revision();
        Some(self.node.header(revision))
    }

    async fn change(&self, change: MembershipChange) -> Result<(), Status> {
        let replica = self.node.replica();
        Ok(replica
            .change_membership(change)
            .await
            .map_err(ServerError::from)?)
    }

    fn member(&self, id: u64) -> Result<MemberInfo, Status> {
        self.node
            .members()
            .into_iter()
            .find(|info| info.id == id)
            .ok_or_else(|| Status::not_found("etcdserver: member not found"))
    }
}

fn etcd_member(info: MemberInfo) -> Member {
    Member {
        id: info.id,
        name: info.member.name,
        peer_ur_ls: info.member.peer_urls,
        client_ur_ls: info.member.client_urls,
        is_learner: info.is_learner,
    }
}

/// etcd refuses peer URLs it cannot parse before touching the membership.
fn check_peer_urls(urls: &[String]) -> Result<(), Status> {
    if urls.is_empty() {
        return Err(Status::invalid_argument("etcdserver: no peer URLs"));
    }
    for url in urls {
        socket_addr(url).map_err(|error| Status::invalid_argument(error.to_string()))?;
    }
    Ok(())
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        request: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        // Membership changes need the root role while auth is enabled (etcd 3.5).
        self.node.admin(request.metadata())?;
        let request = request.into_inner();
        check_peer_urls(&request.peer_ur_ls)?;
        let id = member_id_for(
            &request.peer_ur_ls,
            &self.node.config().initial_cluster_token,
        );
        let known = self.node.members();
        if known.iter().any(|info| {
            info.id == id
                || info
                    .member
                    .peer_urls
                    .iter()
                    .any(|url| request.peer_ur_ls.contains(url))
        }) {
            return Err(Status::failed_precondition(
                "etcdserver: Peer URLs already exists",
            ));
        }
        let member = cairn_consensus::Member {
            name: String::new(),
            peer_urls: request.peer_ur_ls.clone(),
            client_urls: Vec::new(),
        };
        let change = if request.is_learner {
            MembershipChange::AddLearner(id, member)
        } else {
            MembershipChange::AddVoter(id, member)
        };
        self.change(change).await?;
        Ok(Response::new(MemberAddResponse {
            header: self.header(),
            member: Some(Member {
                id,
                name: String::new(),
                peer_ur_ls: request.peer_ur_ls,
                client_ur_ls: Vec::new(),
                is_learner: request.is_learner,
            }),
            members: self.members(),
        }))
    }

    async fn member_remove(
        &self,
        request: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        // Membership changes need the root role while auth is enabled (etcd 3.5).
        self.node.admin(request.metadata())?;
        let id = request.into_inner().id;
        self.member(id)?;
        self.change(MembershipChange::Remove(id)).await?;
        Ok(Response::new(MemberRemoveResponse {
            header: self.header(),
            members: self.members(),
        }))
    }

    async fn member_update(
        &self,
        request: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        // Membership changes need the root role while auth is enabled (etcd 3.5).
        self.node.admin(request.metadata())?;
        let request = request.into_inner();
        check_peer_urls(&request.peer_ur_ls)?;
        let mut member = self.member(request.id)?.member;
        member.peer_urls = request.peer_ur_ls;
        self.change(MembershipChange::Update(request.id, member))
            .await?;
        Ok(Response::new(MemberUpdateResponse {
            header: self.header(),
            members: self.members(),
        }))
    }

    async fn member_list(
        &self,
        _: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        Ok(Response::new(MemberListResponse {
            header: self.header(),
            members: self.members(),
        }))
    }

    async fn member_promote(
        &self,
        request: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        // Membership changes need the root role while auth is enabled (etcd 3.5).
        self.node.admin(request.metadata())?;
        let id = request.into_inner().id;
        if !self.member(id)?.is_learner {
            return Err(Status::failed_precondition(
                "etcdserver: can only promote a learner member",
            ));
        }
        self.change(MembershipChange::Promote(id)).await?;
        Ok(Response::new(MemberPromoteResponse {
            header: self.header(),
            members: self.members(),
        }))
    }
}
