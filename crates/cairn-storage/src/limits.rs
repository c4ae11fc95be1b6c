//! Explicit bounds of the storage layer. Every queue, buffer and size check in this crate takes
//! its bound from a name here, so the limits can be read (and argued about) in one place.

/// Default size after which the WAL starts a new segment file (64 MiB, etcd's segment size).
/// A segment may exceed it by one append batch: a batch is never split across segments.
pub const WAL_SEGMENT_BYTES_MAX_DEFAULT: u64 = 64 * 1024 * 1024;

/// Largest payload one WAL record may carry. The encoder asserts it (the layer above bounds
/// requests far lower: etcd's `--max-request-bytes` is 1.5 MiB) and the decoder refuses a
/// record claiming more, so a torn length field cannot make recovery allocate gigabytes.
pub const WAL_RECORD_DATA_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Append batches that may wait between callers and the WAL writer thread. When the queue is
/// full, `Wal::append` blocks: the disk is behind and callers must slow down.
pub const WAL_QUEUE_BATCHES_MAX: usize = 1024;

/// Bytes the writer thread gathers from waiting batches before it issues its `write` + fsync.
/// Bounds the reused encode buffer; a single batch larger than this is still written whole.
pub const WAL_GROUP_BYTES_MAX: usize = 8 * 1024 * 1024;

/// Bytes of zeros the WAL writer writes past the end of the records whenever a write would run
/// past the zeros already there: the file length then changes once per this many bytes
/// written, not at every fsync. Also the most zeros recovery reads past the last record of a
/// segment.
pub const WAL_PREALLOCATE_BYTES: u64 = 1024 * 1024;

/// Buffer between a snapshot being streamed and its file: writes reach the kernel in pieces
/// this large, not one per key.
pub const SNAPSHOT_WRITE_BUFFER_BYTES: usize = 1024 * 1024;

/// Snapshot files kept by `SnapshotStore` (the newest ones, by index). Two, so that a
/// newest file found corrupt on load still leaves a usable one.
pub const SNAPSHOTS_KEPT_MAX: usize = 2;

/// Largest snapshot payload `SnapshotStore` writes or believes when reading a header (64 GiB:
/// far above any quota, low enough that a corrupt length field is caught before reading).
pub const SNAPSHOT_BYTES_MAX: u64 = 64 * 1024 * 1024 * 1024;

// A record at the maximum size must fit in a default segment, with room to spare.
const _: () = assert!((WAL_RECORD_DATA_BYTES_MAX as u64) < WAL_SEGMENT_BYTES_MAX_DEFAULT);
// The length field of a record is a u32.
const _: () = assert!(WAL_RECORD_DATA_BYTES_MAX <= u32::MAX as usize);
// A group is a slice of one segment's worth of writes, not more.
const _: () = assert!((WAL_GROUP_BYTES_MAX as u64) <= WAL_SEGMENT_BYTES_MAX_DEFAULT);
const _: () = assert!(WAL_QUEUE_BATCHES_MAX > 0);
const _: () = assert!(SNAPSHOTS_KEPT_MAX >= 2);
