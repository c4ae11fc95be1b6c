//! Typed errors of the storage layer.
//!
//! Two kinds stay apart: *corruption* (bytes on disk that no crash of ours can produce: the
//! node must not start on them) and *I/O failure* (the OS refused a call: the WAL stops taking
//! writes, because after a failed fsync nothing can be promised about what reached the disk).
//! Neither is "retry": both are fatal for the node, which restarts and recovers from disk.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// Why the write-ahead log could not do what was asked.
#[derive(Clone, Debug, thiserror::Error)]
pub enum WalError {
    /// An operating-system call on a WAL file or directory failed (`op` names the call). After
    /// this the WAL refuses every further write: see [`WalError::Failed`].
    #[error("wal: {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: Arc<io::Error>,
    },
    /// A segment holds bytes that a torn write cannot explain: damage anywhere but in the last
    /// records of the last segment, a bad segment header, or a valid record in the wrong place.
    #[error("wal: corrupt segment {path} at byte {offset}: {reason}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: Corruption,
    },
    /// An earlier write, fsync or file operation failed (`cause`); the WAL refuses all further
    /// writes. Restarting the node repairs the tail and replays what is durable.
    #[error("wal: refusing writes after an earlier failure: {cause}")]
    Failed {
        #[source]
        cause: Arc<WalError>,
    },
    /// The WAL was closed (or its writer thread is gone) before the request was handled.
    #[error("wal: closed")]
    Closed,
    /// `read` asked for an entry the WAL does not list: purged, not yet durable, or in a
    /// segment that recovery skipped because every entry in it was at or below `after_index`.
    #[error("wal: entry {index} is not in the log")]
    NotListed { index: u64 },
}

impl WalError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> WalError {
        WalError::Io {
            op,
            path: path.into(),
            source: Arc::new(source),
        }
    }
}

/// What exactly is wrong with bytes read back from a WAL segment.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Corruption {
    /// The segment does not start with the WAL magic bytes (or is shorter than a header).
    #[error("bad segment magic")]
    BadMagic,
    /// The segment header names a format version this build does not read.
    #[error("segment format version {found}, this build reads {expected}")]
    Version { found: u32, expected: u32 },
    /// The segment header's CRC does not match its bytes.
    #[error("segment header CRC mismatch")]
    HeaderCrc,
    /// The first index in the header differs from the one in the file name.
    #[error("segment header says first index {header}, file name says {name}")]
    FirstIndex { name: u64, header: u64 },
    /// The bytes end inside a record header or payload.
    #[error("record cut short")]
    Truncated,
    /// A record header claims a payload larger than `WAL_RECORD_DATA_BYTES_MAX`.
    #[error("record length {0} above the maximum")]
    Length(u32),
    /// A record's CRC does not match its header fields and payload.
    #[error("record CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Crc { stored: u32, computed: u32 },
    /// A record that checks out carries an index other than the next one in sequence.
    #[error("record index {found}, expected {expected}")]
    Index { expected: u64, found: u64 },
    /// Segment boundaries do not line up: a segment does not start right after its predecessor.
    #[error("segment starts at index {found}, expected {expected}")]
    Gap { expected: u64, found: u64 },
}

/// Why a snapshot could not be stored or loaded.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// An operating-system call on a snapshot file or directory failed (`op` names the call).
    #[error("snapshot: {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A snapshot file received from a leader is damaged or is not the one announced.
    #[error("snapshot: received file: {reason}")]
    Received { reason: SnapshotCorruption },
    /// Snapshot files exist but none of them checks out. Not reported as "no snapshot": the WAL
    /// has usually been purged up to a snapshot, so starting from nothing would silently lose
    /// state.
    #[error("snapshot: all {count} snapshot files in {dir} are corrupt (newest: {newest})")]
    AllCorrupt {
        dir: PathBuf,
        count: usize,
        newest: SnapshotCorruption,
    },
}

impl SnapshotError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        SnapshotError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

/// What exactly is wrong with a snapshot file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotCorruption {
    /// The file does not start with the snapshot magic bytes (or is shorter than a header).
    #[error("bad magic")]
    BadMagic,
    /// The header names a format version this build does not read.
    #[error("format version {found}, this build reads {expected}")]
    Version { found: u32, expected: u32 },
    /// The header's index differs from the one in the file name.
    #[error("header says index {header}, file name says {name}")]
    Index { name: u64, header: u64 },
    /// The file length does not equal header plus the payload length the header states.
    #[error("file holds {found} payload bytes, header says {expected}")]
    Length { expected: u64, found: u64 },
    /// The CRC does not match the header fields and payload.
    #[error("CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Crc { stored: u32, computed: u32 },
}
