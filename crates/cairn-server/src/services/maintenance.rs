//! The Maintenance service: Status, Alarm, Hash, HashKV, Snapshot, Defragment, MoveLeader.

use cairn_mvcc::KvStore;
use cairn_proto::cairnpb::internal_request::Request as Internal;
use cairn_proto::etcdserverpb::maintenance_server::Maintenance;
use cairn_proto::etcdserverpb::{
    AlarmRequest, AlarmResponse, AlarmType, DefragmentRequest, DefragmentResponse,
    DowngradeRequest, DowngradeResponse, HashKvRequest, HashKvResponse, HashRequest, HashResponse,
    MoveLeaderRequest, MoveLeaderResponse, SnapshotRequest, SnapshotResponse, StatusRequest,
    StatusResponse,
};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::error::ServerError;
use crate::limits::SNAPSHOT_CHUNK_BYTES_MAX;
use crate::node::Node;

/// The etcd version Cairn speaks, as clients (Kubernetes) check it. Cairn's own version is in
/// the logs and `cairn --version`.
pub const ETCD_VERSION: &str = "3.5.17";

/// The cluster version etcd 3.5 reports (major.minor.0), on `/version`.
pub const ETCD_CLUSTER_VERSION: &str = "3.5.0";

pub struct MaintenanceService {
    node: Node,
}

impl MaintenanceService {
    pub fn new(node: Node) -> MaintenanceService {
        MaintenanceService { node }
    }
}

fn alarm_name(alarm: i32) -> &'static str {
    AlarmType::try_from(alarm).map_or("UNKNOWN", |alarm| alarm.as_str_name())
}

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn alarm(
        &self,
        request: Request<AlarmRequest>,
    ) -> Result<Response<AlarmResponse>, Status> {
        let caller = self.node.caller(request.metadata())?;
        propose_reply!(
            self.node,
            caller,
            Internal::Alarm(request.into_inner()),
            Alarm
        )
    }

    async fn status(
        &self,
        _request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let status = self.node.status();
        let store = self.node.store();
        let errors = store
            .alarms()
            .into_iter()
            .map(|(member, alarm)| format!("memberID:{member} alarm:{} ", alarm_name(alarm)))
            .collect();
        let response = StatusResponse {
            header: Some(self.node.header(store.current_revision())),
            version: ETCD_VERSION.into(),
            db_size: store.size_bytes() as i64,
            leader: status.leader.unwrap_or(0),
            raft_index: status.last_log_index,
            raft_term: status.term,
            raft_applied_index: status.applied_index,
            errors,
            db_size_in_use: store.size_bytes() as i64,
            is_learner: status.is_learner,
            db_size_quota: self.node.config().quota_backend_bytes as i64,
            ..Default::default()
        };
        Ok(Response::new(response))
    }

    async fn defragment(
        &self,
        request: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        self.node.admin(request.metadata())?;
        // The memory engine frees space as soon as compaction deletes records.
        let revision = self.node.store().current_revision();
        Ok(Response::new(DefragmentResponse {
            header: Some(self.node.header(revision)),
        }))
    }

    async fn hash(&self, request: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        self.node.admin(request.metadata())?;
        let store = self.node.store();
        let hash = store.hash_kv(0).map_err(ServerError::from)?;
        let header = Some(self.node.header(store.current_revision()));
        Ok(Response::new(HashResponse {
            header,
            hash: hash.hash,
        }))
    }

    async fn hash_kv(
        &self,
        request: Request<HashKvRequest>,
    ) -> Result<Response<HashKvResponse>, Status> {
        self.node.admin(request.metadata())?;
        let store = self.node.store();
        let hash = store
            .hash_kv(request.into_inner().revision)
            .map_err(ServerError::from)?;
        Ok(Response::new(HashKvResponse {
            header: Some(self.node.header(store.current_revision())),
            hash: hash.hash,
            compact_revision: hash.compact_revision,
            hash_revision: hash.hash_revision,
        }))
    }

    type SnapshotStream = ReceiverStream<Result<SnapshotResponse, Status>>;

    /// Streams a consistent copy of the whole state, then its SHA-256 as a last message (etcd's
    /// framing, which `etcdctl snapshot save` writes to a file as it comes).
    ///
    /// Body: `u64` big-endian length of the engine snapshot, the engine snapshot, zero padding to
    /// a multiple of 512 bytes (etcdctl checks `size % 512 == 32` because bolt files are
    /// page-aligned), then the SHA-256 of the body.
    async fn snapshot(
        &self,
        request: Request<SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        self.node.admin(request.metadata())?;
        let (data, revision) = {
            let store = self.node.store();
            (snapshot_body(&store), store.current_revision())
        };
        let header = Some(self.node.header(revision));
        let (out, responses) = mpsc::channel(4);
        tokio::spawn(async move {
            let digest = Sha256::digest(&data);
            let total = data.len();
            for (position, chunk) in data.chunks(SNAPSHOT_CHUNK_BYTES_MAX).enumerate() {
                let sent = position * SNAPSHOT_CHUNK_BYTES_MAX + chunk.len();
                let response = SnapshotResponse {
                    header,
                    remaining_bytes: (total - sent) as u64,
                    blob: chunk.to_vec(),
                    version: ETCD_VERSION.into(),
                };
                if out.send(Ok(response)).await.is_err() {
                    return;
                }
            }
            let last = SnapshotResponse {
                header,
                remaining_bytes: 0,
                blob: digest.to_vec(),
                version: ETCD_VERSION.into(),
            };
            let _ = out.send(Ok(last)).await;
        });
        Ok(Response::new(ReceiverStream::new(responses)))
    }

    async fn move_leader(
        &self,
        request: Request<MoveLeaderRequest>,
    ) -> Result<Response<MoveLeaderResponse>, Status> {
        self.node.admin(request.metadata())?;
        let target = request.into_inner().target_id;
        self.node
            .replica()
            .transfer_leadership(target)
            .await
            .map_err(ServerError::from)?;
        let revision = self.node.store().current_revision();
        Ok(Response::new(MoveLeaderResponse {
            header: Some(self.node.header(revision)),
        }))
    }

    async fn downgrade(
        &self,
        _request: Request<DowngradeRequest>,
    ) -> Result<Response<DowngradeResponse>, Status> {
        Err(ServerError::Unsupported("Downgrade").into())
    }
}

/// The Snapshot stream body of `store` (see `snapshot`), written in place: one copy of the
/// state, not two. The capacity is the quota's estimate of the state, which is above the
/// encoded size; pages of it that are never written cost no memory.
fn snapshot_body(store: &KvStore) -> Vec<u8> {
    const ALIGN: usize = 512;
    const LENGTH_BYTES: usize = 8;
    let estimate = usize::try_from(store.size_bytes()).unwrap_or(0);
    let mut body = Vec::with_capacity(LENGTH_BYTES + estimate);
    body.resize(LENGTH_BYTES, 0);
    store
        .write_snapshot(&mut body)
        .expect("writing into a Vec cannot fail");
    let engine_snapshot = (body.len() - LENGTH_BYTES) as u64;
    body[..LENGTH_BYTES].copy_from_slice(&engine_snapshot.to_be_bytes());
    body.resize(body.len().div_ceil(ALIGN) * ALIGN, 0);
    body
}
