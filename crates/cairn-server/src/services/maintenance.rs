//! The Maintenance service: Status, Alarm, Hash, HashKV, Snapshot, Defragment, MoveLeader.

use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};

use cairn_proto::cairnpb::internal_request::Request as Internal;
use cairn_proto::etcdserverpb::maintenance_server::Maintenance;
use cairn_proto::etcdserverpb::{
    AlarmRequest, AlarmResponse, AlarmType, DefragmentRequest, DefragmentResponse,
    DowngradeRequest, DowngradeResponse, HashKvRequest, HashKvResponse, HashRequest, HashResponse,
    MoveLeaderRequest, MoveLeaderResponse, ResponseHeader, SnapshotRequest, SnapshotResponse,
    StatusRequest, StatusResponse,
};
use cairn_storage::limits::SNAPSHOT_WRITE_BUFFER_BYTES;
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
        let node = self.node.clone();
        let (body, revision) = tokio::task::spawn_blocking(move || write_snapshot_body(&node))
            .await
            .map_err(snapshot_failed)?
            .map_err(snapshot_failed)?;
        let header = Some(self.node.header(revision));
        let (out, responses) = mpsc::channel(4);
        tokio::task::spawn_blocking(move || stream_snapshot_body(body, header, out));
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

/// Writes the Snapshot stream body of the current state (see `snapshot`) into an unnamed
/// temporary file in the data dir and returns it, at its start, with the revision it holds.
/// The state is written under the store's read lock (writes wait, reads go on) but never held
/// in memory: a snapshot of a large state must not double the member's RSS, and the stream to
/// a slow client must not hold the lock.
fn write_snapshot_body(node: &Node) -> std::io::Result<(File, i64)> {
    const ALIGN: u64 = 512;
    const LENGTH_BYTES: u64 = 8;
    let file = tempfile::tempfile_in(&node.config().data_dir)?;
    let mut out = BufWriter::with_capacity(SNAPSHOT_WRITE_BUFFER_BYTES, file);
    out.write_all(&[0; LENGTH_BYTES as usize])?;
    let revision = {
        let store = node.store();
        store.write_snapshot(&mut out)?;
        store.current_revision()
    };
    let mut file = out.into_inner().map_err(|error| error.into_error())?;
    let written = file.stream_position()?;
    // Zero padding to the alignment, then the engine snapshot's length in front.
    file.set_len(written.div_ceil(ALIGN) * ALIGN)?;
    file.seek(SeekFrom::Start(0))?;
    file.write_all(&(written - LENGTH_BYTES).to_be_bytes())?;
    file.seek(SeekFrom::Start(0))?;
    Ok((file, revision))
}

/// A Snapshot stream that failed on this member's side (temporary file, thread).
fn snapshot_failed(error: impl std::fmt::Display) -> Status {
    Status::internal(format!("snapshot: {error}"))
}

/// Sends `body` in chunks, then its SHA-256 (computed on the way), on a blocking thread.
fn stream_snapshot_body(
    mut body: File,
    header: Option<ResponseHeader>,
    out: mpsc::Sender<Result<SnapshotResponse, Status>>,
) {
    let response = |remaining_bytes, blob| SnapshotResponse {
        header,
        remaining_bytes,
        blob,
        version: ETCD_VERSION.into(),
    };
    let total = match body.metadata() {
        Ok(metadata) => metadata.len(),
        Err(error) => {
            let _ = out.blocking_send(Err(snapshot_failed(error)));
            return;
        }
    };
    let mut digest = Sha256::new();
    let mut chunk = vec![0; SNAPSHOT_CHUNK_BYTES_MAX];
    let mut sent = 0;
    while sent < total {
        let len = (total - sent).min(chunk.len() as u64) as usize;
        if let Err(error) = body.read_exact(&mut chunk[..len]) {
            let _ = out.blocking_send(Err(snapshot_failed(error)));
            return;
        }
        digest.update(&chunk[..len]);
        sent += len as u64;
        if out
            .blocking_send(Ok(response(total - sent, chunk[..len].to_vec())))
            .is_err()
        {
            return;
        }
    }
    let _ = out.blocking_send(Ok(response(0, digest.finalize().to_vec())));
}
