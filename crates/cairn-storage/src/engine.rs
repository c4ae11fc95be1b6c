//! The `Engine` trait: the ordered key-value store the state machine writes through.
//!
//! The state machine (cairn-mvcc) never touches files; it reads and writes buckets (see
//! `schema`) through this trait and hands a whole request's changes over as one `WriteBatch`,
//! which an engine applies atomically. Durability is the engine's business: the memory engine
//! relies on the WAL plus periodic snapshots, a persistent engine would store the applied index
//! in the same batch as the data.

use std::io::{self, Write};

use bytes::Bytes;

use crate::schema::Bucket;

/// One change inside a [`WriteBatch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteOp {
    Put {
        bucket: Bucket,
        key: Vec<u8>,
        value: Bytes,
    },
    Delete {
        bucket: Bucket,
        key: Vec<u8>,
    },
}

/// Changes applied together, in order, all or nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteBatch {
    ops: Vec<WriteOp>,
}

impl WriteBatch {
    pub fn new() -> WriteBatch {
        WriteBatch::default()
    }

    pub fn put(&mut self, bucket: Bucket, key: Vec<u8>, value: Bytes) {
        self.ops.push(WriteOp::Put { bucket, key, value });
    }

    pub fn delete(&mut self, bucket: Bucket, key: Vec<u8>) {
        self.ops.push(WriteOp::Delete { bucket, key });
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub fn ops(&self) -> &[WriteOp] {
        &self.ops
    }

    pub fn into_ops(self) -> Vec<WriteOp> {
        self.ops
    }
}

/// An ordered key-value store with buckets.
pub trait Engine: Send + Sync + 'static {
    /// The value stored under `key`, if any.
    fn get(&self, bucket: Bucket, key: &[u8]) -> Option<Bytes>;

    /// Visits, in ascending key order, every entry with `start <= key < end` (`end = None`: to
    /// the end of the bucket) until `visit` returns `false`.
    fn scan(
        &self,
        bucket: Bucket,
        start: &[u8],
        end: Option<&[u8]>,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    );

    /// Applies every op of `batch`, in order, atomically with respect to readers.
    fn write(&mut self, batch: WriteBatch);

    /// Bytes of data held (keys + values + per-entry overhead): what the storage quota counts.
    fn size_bytes(&self) -> u64;

    /// Number of entries in `bucket`.
    fn len(&self, bucket: Bucket) -> usize;

    /// Whether `bucket` holds no entry.
    fn is_empty(&self, bucket: Bucket) -> bool {
        self.len(bucket) == 0
    }

    /// Streams the whole engine to `out` as one self-describing byte string (see `memory`
    /// for the format). Streamed, not returned: a snapshot file must not cost a second copy of
    /// the state in memory.
    fn write_snapshot(&self, out: &mut dyn Write) -> io::Result<()>;
}

/// Why an engine could not be rebuilt from snapshot bytes. The bytes come from disk, so this is
/// an error, never a panic.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EngineError {
    /// The snapshot does not start with the engine's magic bytes.
    #[error("engine snapshot: bad magic")]
    BadMagic,
    /// The snapshot was written with a schema this build does not know.
    #[error("engine snapshot: schema version {found}, this build reads {expected}")]
    SchemaVersion { found: u32, expected: u32 },
    /// A bucket id outside `schema::Bucket`.
    #[error("engine snapshot: unknown bucket id {0}")]
    UnknownBucket(u8),
    /// The bytes end in the middle of a field.
    #[error("engine snapshot: truncated at byte {0}")]
    Truncated(usize),
    /// Bytes follow the last bucket.
    #[error("engine snapshot: unexpected bytes after the last bucket, at byte {0}")]
    TrailingBytes(usize),
}
