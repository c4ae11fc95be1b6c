//! Cairn's wire formats: the `.proto` files and the Rust code generated from them.
//!
//! Owns: etcd's v3 API exactly as etcd 3.5 puts it on the wire (same packages, message names,
//! field numbers and enum values, so unmodified etcd clients interoperate), and Cairn's own
//! durable messages (the replicated log entry, the persisted lease record).
//!
//! Must not: hold logic. Validation, conversions and behaviour live in the crates that use these
//! types; this crate is only schemas and `prost`/`tonic` output.
//!
//! Layout (one module per protobuf package; `proto/` holds the sources):
//! - [`mvccpb`]: `KeyValue`, `Event` (`proto/etcd/api/mvccpb/kv.proto`).
//! - [`authpb`]: `User`, `Role`, `Permission` (`proto/etcd/api/authpb/auth.proto`).
//! - [`etcdserverpb`]: the KV, Watch, Lease, Cluster, Maintenance and Auth services, their
//!   messages, and `*_server` / `*_client` modules (`proto/etcd/api/etcdserverpb/rpc.proto`).
//! - [`v3electionpb`], [`v3lockpb`]: etcd's Election and Lock services
//!   (`proto/etcd/server/etcdserver/api/{v3election,v3lock}/…`).
//! - [`cairnpb`]: `InternalRequest` (one replicated log entry) and `LeaseRecord`
//!   (`proto/cairn/cairnpb/internal.proto`).
//! - [`raftpb`]: the peer protocol — openraft's messages, the durable raft log entry and vote,
//!   and the write/read-index requests a follower sends its leader (`proto/cairn/raftpb/raft.proto`).
//! - [`logpb`]: the ordered log's publisher/subscriber protocol (`proto/cairn/logpb/log.proto`).
//! - [`curppb`]: the native CURP-HO protocol (`proto/cairn/curppb/curp.proto`).
//!
//! The etcd packages also carry serde impls (protobuf's JSON mapping, for the HTTP gateway).
//!
//! Generated code is exempt from clippy; nothing else lives here.

/// etcd's MVCC types: `KeyValue`, `Event`.
#[allow(clippy::all)]
pub mod mvccpb {
    tonic::include_proto!("mvccpb");
    include!(concat!(env!("OUT_DIR"), "/mvccpb.serde.rs"));
}

/// etcd's auth store records: `User`, `Role`, `Permission`.
#[allow(clippy::all)]
pub mod authpb {
    tonic::include_proto!("authpb");
    include!(concat!(env!("OUT_DIR"), "/authpb.serde.rs"));
}

/// etcd's v3 gRPC API: messages plus `kv_server`, `watch_server`, … and their `*_client` twins.
#[allow(clippy::all)]
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.serde.rs"));
}

/// etcd's Election service.
#[allow(clippy::all)]
pub mod v3electionpb {
    tonic::include_proto!("v3electionpb");
}

/// etcd's Lock service.
#[allow(clippy::all)]
pub mod v3lockpb {
    tonic::include_proto!("v3lockpb");
}

/// Cairn's internal durable messages: the replicated log entry and the lease record.
#[allow(clippy::all)]
pub mod cairnpb {
    tonic::include_proto!("cairnpb");
}

/// Cairn's peer protocol: raft messages, the durable log entry, forwarded writes and reads.
#[allow(clippy::all)]
pub mod raftpb {
    tonic::include_proto!("raftpb");
}

/// The ordered log's protocol: publisher and subscriber frames exchanged with a broker.
#[allow(clippy::all)]
pub mod logpb {
    tonic::include_proto!("logpb");
}

/// The native CURP-HO protocol: client and replica messages, the replicated command, the
/// pool a new leader collects.
#[allow(clippy::all)]
pub mod curppb {
    tonic::include_proto!("curppb");
}

/// Framing of the native CURP-HO connection (format only): each message is a little-endian
/// `u32` length, then that many bytes of one protobuf message.
pub mod framing {
    /// Bytes of a frame's length prefix.
    pub const HEADER_BYTES: usize = 4;

    /// Appends `message` as one frame to `buffer`.
    pub fn encode<M: prost::Message>(message: &M, buffer: &mut Vec<u8>) {
        let len = message.encoded_len();
        let prefix = u32::try_from(len).expect("a frame is smaller than 4 GiB");
        buffer.reserve(HEADER_BYTES + len);
        buffer.extend_from_slice(&prefix.to_le_bytes());
        message
            .encode(buffer)
            .expect("a Vec grows as needed, so encoding cannot run out of room");
    }

    /// The body length a frame header announces.
    pub fn body_len(header: [u8; HEADER_BYTES]) -> usize {
        u32::from_le_bytes(header) as usize
    }
}
