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
//!
//! Version 2 added the `Consensus` bucket.

/// Version of the layout described above; written into every snapshot.
pub const SCHEMA_VERSION: u32 = 2;

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
}

impl Bucket {
    /// Every bucket, in id order.
    pub const ALL: [Bucket; 5] = [
        Bucket::Key,
        Bucket::Meta,
        Bucket::Lease,
        Bucket::Alarm,
        Bucket::Consensus,
    ];

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
        assert_eq!(Bucket::from_id(6), None);
    }
}
