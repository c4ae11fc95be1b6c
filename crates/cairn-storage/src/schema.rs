//! The on-disk (and in-snapshot) layout of the state machine's data, in one place.
//!
//! Every engine stores its data in the buckets below; the numeric ids are part of the snapshot
//! format and never change meaning. Bump [`SCHEMA_VERSION`] when a bucket's encoding changes.
//!
//! | bucket | id | key | value |
//! |---|---|---|---|
//! | `Key`   | 1 | revision: 8-byte BE main, `_`, 8-byte BE sub, optional `t` (tombstone) | `mvccpb.KeyValue` |
//! | `Meta`  | 2 | one of the `META_*` names below | 8-byte BE integer |
//! | `Lease` | 3 | 8-byte BE lease id | `cairnpb.LeaseRecord` |
//! | `Alarm` | 4 | 8-byte BE member id, 4-byte BE alarm type | empty |
//! | `Consensus` | 5 | [`CONSENSUS_APPLIED_STATE`] | `raftpb.AppliedState` (opaque here) |
//! | `AuthUser` | 6 | user name | `authpb.User` (password as a bcrypt hash) |
//! | `AuthRole` | 7 | role name | `authpb.Role` |
//!
//! Version 2 added the `Consensus` bucket; version 3 the auth buckets and the `META_AUTH_*`
//! scalars. A newer build reads older snapshots (their missing buckets are empty).

/// Version of the layout described above; written into every snapshot.
pub const SCHEMA_VERSION: u32 = 3;
/// Oldest layout this build still reads.
pub const SCHEMA_VERSION_MIN: u32 = 2;

/// A named keyspace inside an engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Bucket {
    /// MVCC history: one record per revision.
    Key = 1,
    /// Scalars the state machine keeps next to the data (applied index, compaction revision).
    Meta = 2,
    /// Leases with their expiry stamps.
    Lease = 3,
    /// Raised alarms (NOSPACE, CORRUPT) per member.
    Alarm = 4,
    /// What the consensus layer persists with the data (last applied log id, membership), so
    /// that a snapshot of the engine is a snapshot of the replica.
    Consensus = 5,
    /// Users of the auth store (etcd's `authUsers` bucket).
    AuthUser = 6,
    /// Roles of the auth store (etcd's `authRoles` bucket).
    AuthRole = 7,
}

impl Bucket {
    /// Every bucket, in id order.
    pub const ALL: [Bucket; 7] = [
        Bucket::Key,
        Bucket::Meta,
        Bucket::Lease,
        Bucket::Alarm,
        Bucket::Consensus,
        Bucket::AuthUser,
        Bucket::AuthRole,
    ];

    /// The schema version that introduced the bucket.
    pub fn since_version(self) -> u32 {
        match self {
            Bucket::Key | Bucket::Meta | Bucket::Lease | Bucket::Alarm | Bucket::Consensus => 2,
            Bucket::AuthUser | Bucket::AuthRole => 3,
        }
    }

    /// The bucket with numeric id `id`, if there is one.
    pub fn from_id(id: u8) -> Option<Bucket> {
        Bucket::ALL.into_iter().find(|bucket| *bucket as u8 == id)
    }

    /// Position of the bucket in arrays indexed by bucket.
    pub fn slot(self) -> usize {
        self as usize - 1
    }
}

/// Index of the last log entry whose effects are in the engine (etcd's "consistent index").
pub const META_APPLIED_INDEX: &[u8] = b"applied_index";
/// Revision of the last finished compaction.
pub const META_COMPACT_REVISION: &[u8] = b"compact_revision";
/// Current store revision (needed when the newest revisions were compacted away).
pub const META_CURRENT_REVISION: &[u8] = b"current_revision";
/// 1 while authentication is enabled (etcd's `authEnabled` flag).
pub const META_AUTH_ENABLED: &[u8] = b"auth_enabled";
/// The auth store's revision: bumped by every change of users, roles or the enabled flag.
pub const META_AUTH_REVISION: &[u8] = b"auth_revision";
/// The one key of the `Consensus` bucket.
pub const CONSENSUS_APPLIED_STATE: &[u8] = b"applied_state";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_ids_round_trip_and_slots_are_dense() {
        for (slot, bucket) in Bucket::ALL.into_iter().enumerate() {
            assert_eq!(Bucket::from_id(bucket as u8), Some(bucket));
            assert_eq!(bucket.slot(), slot);
        }
        assert_eq!(Bucket::from_id(0), None);
        assert_eq!(Bucket::from_id(8), None);
        assert!(Bucket::ALL
            .iter()
            .all(|bucket| bucket.since_version() <= SCHEMA_VERSION));
    }
}
