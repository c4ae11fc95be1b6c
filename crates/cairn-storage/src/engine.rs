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

    /// Fixes what a snapshot taken in parts will hold: the state as it is now. Cheap: it
    /// copies only the small buckets; `write_snapshot_part` writes the `Key` bucket's records.
    fn snapshot_cut(&self) -> SnapshotCut;

    /// Writes the next part of `cut` to `out`: at most `records_max` records of the `Key`
    /// bucket, and the rest of the snapshot with the last of them. Between parts the caller
    /// may let writes in (appends of newer revisions leave the cut's records where they were);
    /// `Moved` means a write removed or reordered records since the cut, or the engine is not
    /// the one cut (an installed snapshot replaced it), and the bytes written so far are of no
    /// use.
    fn write_snapshot_part(
        &self,
        cut: &mut SnapshotCut,
        out: &mut dyn Write,
        records_max: usize,
    ) -> io::Result<SnapshotPart>;

    /// Streams the whole engine to `out` as one self-describing byte string (see `memory`
    /// for the format). Streamed, not returned: a snapshot file must not cost a second copy of
    /// the state in memory.
    fn write_snapshot(&self, out: &mut dyn Write) -> io::Result<()> {
        let mut cut = self.snapshot_cut();
        match self.write_snapshot_part(&mut cut, out, usize::MAX)? {
            SnapshotPart::Done => Ok(()),
            part => unreachable!("one part under one borrow ended {part:?}"),
        }
    }
}

/// A snapshot being written in parts (see `Engine::snapshot_cut`).
#[derive(Debug)]
pub struct SnapshotCut {
    /// Everything before the `Key` bucket's records (magic, version, bucket id and count).
    pub(crate) head: Vec<u8>,
    /// Everything after them: the other buckets, encoded at the cut (they are small).
    pub(crate) tail: Vec<u8>,
    /// The `Key` bucket's records at the cut, and how many of them are written.
    pub(crate) records: usize,
    pub(crate) written: usize,
    /// The engine's count of `Key` bucket rewrites at the cut, and which engine it was.
    pub(crate) rewrites: u64,
    pub(crate) engine: u64,
}

/// What `Engine::write_snapshot_part` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotPart {
    /// A part is written; more follow.
    More,
    /// The snapshot is complete.
    Done,
    /// Records of the cut were removed or reordered since: start again.
    Moved,
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
