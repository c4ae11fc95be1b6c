//! openraft's type configuration for Cairn: what an entry carries, what a member is.

use bytes::Bytes;

use crate::snapshot_file::SnapshotFile;

openraft::declare_raft_types!(
    /// Cairn's raft: entries carry encoded `cairnpb.InternalRequest`s, members are etcd-style
    /// members, snapshots are snapshot files of the memory engine's state (`snapshot_file`).
    pub TypeConfig:
        D = Proposal,
        R = (),
        NodeId = u64,
        Node = Member,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = SnapshotFile,
);

/// A replicated request: an encoded `cairnpb.InternalRequest`. It stays encoded from the
/// proposer to the WAL and the wire; every member decodes it once, when applying. The apply
/// result does not travel through openraft (`R = ()`): the proposer's own state machine hands
/// it to the waiting client (see `wait.rs`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Proposal(pub Bytes);

/// A member as etcd's MemberList shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
}

pub type MemberId = u64;
pub type Raft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<MemberId>;
pub type Vote = openraft::Vote<MemberId>;
pub type Membership = openraft::Membership<MemberId, Member>;
pub type StoredMembership = openraft::StoredMembership<MemberId, Member>;
pub type SnapshotMeta = openraft::SnapshotMeta<MemberId, Member>;
pub type Snapshot = openraft::Snapshot<TypeConfig>;
pub type StorageError = openraft::StorageError<MemberId>;
pub type RaftMetrics = openraft::RaftMetrics<MemberId, Member>;
