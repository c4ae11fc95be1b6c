//! The write-ahead log: a segmented, append-only file log of opaque entries with a CRC per
//! record and group commit. The raft log store writes through it; it knows nothing of raft
//! beyond the (index, term) pair each entry carries.
//!
//! # On-disk format
//!
//! A WAL is one directory of *segment* files. All integers are little-endian.
//!
//! **Segment naming.** `{first_index:016x}.wal`: the index of the segment's first record as
//! exactly 16 lower-case hex digits, so name order is index order. Segments are contiguous: each
//! starts at the index after the last record of its predecessor. A new segment is started when
//! the current one has reached `segment_bytes_max` (it may exceed it by one append batch: a
//! batch is never split). A segment is created as `{name}.tmp`, its header written and fsynced,
//! then renamed and the directory fsynced; leftover `*.wal.tmp` files are deleted at open.
//!
//! **Segment header** (24 bytes):
//! ```text
//! 0   [u8; 8]  magic "CAIRNWAL"
//! 8   u32      format version (1)
//! 12  u64      first index (must equal the one in the file name; >= 1)
//! 20  u32      CRC-32C of bytes 0..20
//! ```
//!
//! **Record** (24-byte header + payload, no padding, one per entry, back to back after the
//! segment header):
//! ```text
//! 0   u32      CRC-32C (Castagnoli) of bytes 4..24+len: length, index, term and payload
//! 4   u32      len: payload bytes, <= WAL_RECORD_DATA_BYTES_MAX
//! 8   u64      index (the first record's equals the segment's first index, then +1 each)
//! 16  u64      term
//! 24  [u8;len] payload (opaque)
//! ```
//! The CRC covers the length, so a damaged length field cannot make a damaged record look
//! whole. The encoder asserts the length bound the decoder checks.
//!
//! **Preallocation.** Records are written at their offset, not appended, into zeros written
//! ahead of them (`WAL_PREALLOCATE_BYTES` at a time, with the records that cross into new
//! space), so the bytes after the last record are zeros. etcd `fallocate`s its WAL instead;
//! written zeros also spare every later fdatasync the extent conversion of a reserved block.
//! A record never starts with zeros (its index is >= 1), so where the records stop and only
//! zeros follow, the segment ends cleanly.
//!
//! **Durability.** Records reach the disk by `write` + `fdatasync` of the last segment; an
//! append is reported flushed only after the fdatasync covering it returned. A segment is
//! fsynced before the next one is created, and the directory is fsynced after every segment is
//! created or removed.
//!
//! **Torn-tail rule.** A crash can only tear records the last segment received after its last
//! completed fsync. So at open the last segment is cut (and the cut fsynced) at its first record
//! that is incomplete, claims a length above the bound, or fails its CRC, unless only zeros
//! follow (the clean end above); everything before it is the log. A bad record in any other
//! segment, a bad segment header, a record that checks out but carries the wrong index, or
//! segments that are not contiguous are corruption: open fails with [`WalError::Corrupt`].
//! Segments entirely at or below `after_index` are not read at open (only their header is
//! checked).
//!
//! # Threads
//!
//! A dedicated OS thread owns the files. Callers queue batches on a bounded channel; each time
//! the thread wakes it drains everything waiting into one `write` and one fdatasync, then calls
//! the batches' callbacks in submission order (group commit: fsync costs ~0.6 ms here, so one
//! fsync per request would cap a node near 1.5K writes/s). The first failed write or fsync is
//! reported to the callbacks waiting on it, and every later request is refused with
//! [`WalError::Failed`]: after a failed fsync nothing can be promised about the page cache.
//!
//! # Reads
//!
//! [`Wal::read`] returns durable entries by index: the `catalog` lists where every record of
//! the live segments starts (filled by recovery and then by the writer after each fsync), so a
//! read is one positioned read per segment it touches, checked like recovery checks.
//!
//! Layout: `record` (framing), `segment` (files, header, scan), `repair` (recovery at open),
//! `writer` (the thread), `catalog` (record locations, for reads).

mod catalog;
mod record;
mod repair;
mod segment;
mod writer;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::thread::JoinHandle;

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::error::WalError;
use crate::limits::{
    WAL_QUEUE_BATCHES_MAX, WAL_RECORD_DATA_BYTES_MAX, WAL_SEGMENT_BYTES_MAX_DEFAULT,
};
use crate::metrics::HistogramSnapshot;
use catalog::Catalog;
use writer::{Command, Counters, Reply, Writer};

/// One log entry. `data` is opaque to the WAL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub index: u64,
    pub term: u64,
    pub data: Bytes,
}

/// Tunables of a WAL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalOptions {
    /// Size after which a new segment file is started.
    pub segment_bytes_max: u64,
    /// Write and fsync on the caller's thread, inside `append`, instead of on the writer
    /// thread (no group commit). For deterministic simulation: a paused tokio clock jumps
    /// whenever the runtime waits on another thread, so the disk must not be one.
    pub inline: bool,
}

impl Default for WalOptions {
    fn default() -> WalOptions {
        WalOptions {
            segment_bytes_max: WAL_SEGMENT_BYTES_MAX_DEFAULT,
            inline: false,
        }
    }
}

/// Counters for metrics, cumulative since open.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalStats {
    /// fdatasyncs of segment data by group commit (directory and segment-creation fsyncs are
    /// not counted).
    pub fsyncs: u64,
    /// Entries written and fsynced.
    pub entries_written: u64,
    /// Record bytes written and fsynced.
    pub bytes_written: u64,
    /// Duration of the most recent group-commit fdatasync, in microseconds.
    pub last_fsync_us: u64,
}

/// Called once per append batch, on the writer thread, after the batch is durable (`Ok` with
/// the last durable index, which is at least the batch's last index) or when it cannot be.
/// It must be quick and must not call back into the WAL (the writer thread is running it).
pub type Flushed = Box<dyn FnOnce(Result<u64, WalError>) + Send>;

/// Handle to an open WAL; clones share one log and one writer thread.
#[derive(Clone)]
pub struct Wal {
    inner: Arc<Inner>,
}

struct Inner {
    /// The sending end and the next index to queue, under one lock so that the order of the
    /// channel is the order in which contiguity was checked. A `std` mutex: it is held only
    /// to check and send, never across an `.await`, and `append` is a plain function. It is not
    /// a hot-path global lock in practice: the raft log store is the only appender.
    queue: Mutex<Queue>,
    /// `Queue::next_index - 1`, readable without the lock (which a full queue may hold).
    last_index: AtomicU64,
    catalog: Arc<RwLock<Catalog>>,
    counters: Arc<Counters>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

struct Queue {
    /// `None` once closed.
    ///
    /// Why `std::sync::mpsc::sync_channel`: the receiver is a plain OS thread that must block
    /// while idle (fsync blocks; keeping it off the tokio pool keeps those stalls away from
    /// request tasks), and the bound gives back-pressure: when `WAL_QUEUE_BATCHES_MAX` batches
    /// wait, the disk is behind and `append` blocks its caller until the writer takes the next
    /// group, about one fsync. A tokio channel would need an async `append` to do the same.
    sender: Option<Sink>,
    /// Index the next appended entry must carry; `None` while the log has never held a segment
    /// (then any first index >= 1 is accepted).
    next_index: Option<u64>,
}

/// Where commands go: the writer thread, or (inline mode) the writer itself, run on the
/// caller's thread under the queue lock.
enum Sink {
    Thread(SyncSender<Command>),
    Inline(Box<Writer>),
}

impl Sink {
    /// Hands `command` over; gives it back if the writer is gone.
    fn send(&mut self, command: Command) -> Result<(), Command> {
        match self {
            Sink::Thread(sender) => sender.send(command).map_err(|refused| refused.0),
            Sink::Inline(writer) => {
                writer.handle_inline(command);
                Ok(())
            }
        }
    }
}

impl Wal {
    /// Opens or creates the log in `dir`, repairs a torn tail (see the module doc), and calls
    /// `replay` in index order for every entry with index > `after_index`. If the log was purged
    /// beyond `after_index`, the first replayed index is above `after_index + 1`: the caller
    /// checks. On error `replay` may have seen a prefix of the log.
    pub fn open(
        dir: &Path,
        options: WalOptions,
        after_index: u64,
        replay: impl FnMut(Entry),
    ) -> Result<Wal, WalError> {
        assert!(
            options.segment_bytes_max > 0,
            "wal: segment_bytes_max must be > 0"
        );
        let mut recovered = repair::recover(dir, after_index, replay)?;
        let next_index = recovered.next_index;
        let counters = Arc::new(Counters::default());
        let catalog = Arc::new(RwLock::new(std::mem::take(&mut recovered.catalog)));
        let writer = Writer::new(
            dir.to_path_buf(),
            options.segment_bytes_max,
            recovered,
            catalog.clone(),
            counters.clone(),
        )?;
        let (sink, thread) = if options.inline {
            (Sink::Inline(Box::new(writer)), None)
        } else {
            let (sender, receiver) = sync_channel(WAL_QUEUE_BATCHES_MAX);
            let thread = std::thread::Builder::new()
                .name("cairn-wal-writer".into())
                .spawn(move || writer.run(receiver))
                .map_err(|e| WalError::io("spawn writer thread for", dir, e))?;
            (Sink::Thread(sender), Some(thread))
        };
        let inner = Inner {
            queue: Mutex::new(Queue {
                sender: Some(sink),
                next_index,
            }),
            last_index: AtomicU64::new(next_index.map_or(0, |next| next - 1)),
            catalog,
            counters,
            thread: Mutex::new(thread),
        };
        Ok(Wal {
            inner: Arc::new(inner),
        })
    }

    /// Index of the last entry queued (durable or not yet), or the index the log was truncated
    /// or purged to if that is higher: the next append must carry `last_index() + 1`. 0 for a
    /// log that never held anything (then the first append may carry any index >= 1).
    pub fn last_index(&self) -> u64 {
        self.inner.last_index.load(Ordering::Acquire)
    }

    /// Queues `entries` for writing; `flushed` runs on the writer thread once they are written
    /// and fsynced, in submission order (see [`Flushed`]). Blocks briefly when
    /// `WAL_QUEUE_BATCHES_MAX` batches are already waiting. After `close`, `flushed` is called
    /// right away, on this thread, with [`WalError::Closed`]. An empty batch is a flush
    /// barrier: its callback runs after everything queued before it is durable.
    ///
    /// Panics (caller bug) if the entries do not continue the queued log at `last_index() + 1`
    /// with consecutive indexes, or if a payload exceeds `WAL_RECORD_DATA_BYTES_MAX`.
    pub fn append(&self, entries: Vec<Entry>, flushed: Flushed) {
        let mut queue = self.inner.lock_queue();
        check_batch(queue.next_index, &entries);
        let Some(sender) = &mut queue.sender else {
            drop(queue);
            return flushed(Err(WalError::Closed));
        };
        let last = entries.last().map(|entry| entry.index);
        match sender.send(Command::Append { entries, flushed }) {
            Ok(()) => {
                if let Some(last) = last {
                    queue.next_index = Some(last + 1);
                    self.inner.last_index.store(last, Ordering::Release);
                }
            }
            Err(refused) => {
                drop(queue);
                refused.refuse(WalError::Closed);
            }
        }
    }

    /// The durable entries `first..=last`, read from their segments (blocking file I/O: call it
    /// off the async runtime). [`WalError::NotListed`] if one of them is not durable yet, was
    /// purged, or sits in a segment recovery skipped; [`WalError::Corrupt`] if the bytes on
    /// disk no longer check out.
    pub fn read(&self, first: u64, last: u64) -> Result<Vec<Entry>, WalError> {
        let spans = self
            .inner
            .catalog
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .spans(first, last)?;
        let mut entries = Vec::new();
        for span in spans {
            span.read_into(&mut entries)?;
        }
        Ok(entries)
    }

    /// Appends `entries` and waits until they are durable; returns the last durable index.
    pub async fn append_flushed(&self, entries: Vec<Entry>) -> Result<u64, WalError> {
        let (sender, receiver) = oneshot::channel();
        self.append(
            entries,
            Box::new(move |result| {
                let _ = sender.send(result);
            }),
        );
        receiver.await.unwrap_or(Err(WalError::Closed))
    }

    /// Removes whole segments whose entries are all <= `index` (after a snapshot at `index`).
    /// If that is every entry (`index >= last_index()`), the log becomes empty and continues at
    /// `index + 1` (as after installing a snapshot newer than the log).
    pub async fn purge_to(&self, index: u64) -> Result<(), WalError> {
        self.control(
            |reply| Command::PurgeTo { index, reply },
            |queue| {
                let past_end = queue.next_index.is_none_or(|next| index + 1 > next);
                (index > 0 && past_end).then_some(index + 1)
            },
        )
        .await
    }

    /// Drops every entry > `index` (raft log conflict); the next append continues at
    /// `index + 1`. Entries queued before this call are written first, then dropped.
    pub async fn truncate_after(&self, index: u64) -> Result<(), WalError> {
        self.control(
            |reply| Command::TruncateAfter { index, reply },
            |queue| {
                queue
                    .next_index
                    .filter(|next| index + 1 < *next)
                    .map(|_| index + 1)
            },
        )
        .await
    }

    /// Writes and fsyncs everything queued, then stops the writer thread. Idempotent: later
    /// calls return `Ok`. Returns the writer's failure if it had failed.
    pub async fn close(&self) -> Result<(), WalError> {
        let (reply, receiver) = oneshot::channel();
        {
            let mut queue = self.inner.lock_queue();
            let Some(mut sender) = queue.sender.take() else {
                return Ok(());
            };
            if let Err(refused) = sender.send(Command::Close { reply }) {
                refused.refuse(WalError::Closed);
            }
        }
        let result = receiver.await.unwrap_or(Err(WalError::Closed));
        // The thread has answered and is returning, so this join is short.
        self.inner.join_writer();
        result
    }

    /// Counters for metrics.
    pub fn stats(&self) -> WalStats {
        self.inner.counters.snapshot()
    }

    /// Durations of the group-commit fdatasyncs so far.
    pub fn fsync_durations(&self) -> HistogramSnapshot {
        self.inner.counters.fsync_seconds.snapshot()
    }

    /// Sends a control command, updating the queued next index with `next_index` (computed
    /// under the same lock, so that it agrees with the order of the channel).
    async fn control(
        &self,
        command: impl FnOnce(Reply) -> Command,
        next_index: impl FnOnce(&Queue) -> Option<u64>,
    ) -> Result<(), WalError> {
        let (reply, receiver) = oneshot::channel();
        {
            let mut queue = self.inner.lock_queue();
            let next = next_index(&queue);
            let Some(sender) = &mut queue.sender else {
                return Err(WalError::Closed);
            };
            if let Err(refused) = sender.send(command(reply)) {
                refused.refuse(WalError::Closed);
            } else if let Some(next) = next {
                queue.next_index = Some(next);
                self.inner.last_index.store(next - 1, Ordering::Release);
            }
        }
        receiver.await.unwrap_or(Err(WalError::Closed))
    }

    #[cfg(test)]
    fn fail_next_fsync(&self) {
        self.inner
            .counters
            .fail_next_fsync
            .store(true, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("last_index", &self.last_index())
            .finish_non_exhaustive()
    }
}

// The log store above shares the handle across tasks and threads.
const _: () = {
    const fn send_sync<T: Send + Sync + Clone + 'static>() {}
    send_sync::<Wal>()
};

/// The caller-bug checks of `append`: contiguity with the queued log, bounded payloads.
fn check_batch(next_index: Option<u64>, entries: &[Entry]) {
    let Some(first) = entries.first() else { return };
    assert!(
        first.index >= 1,
        "wal append: index 0 is not a valid entry index"
    );
    if let Some(next) = next_index {
        assert_eq!(
            first.index,
            next,
            "wal append: entry {} does not follow {}",
            first.index,
            next - 1
        );
    }
    for pair in entries.windows(2) {
        assert_eq!(
            pair[1].index,
            pair[0].index + 1,
            "wal append: entry {} follows {} inside one batch",
            pair[1].index,
            pair[0].index
        );
    }
    for entry in entries {
        assert!(
            entry.data.len() <= WAL_RECORD_DATA_BYTES_MAX,
            "wal append: entry {} has {} bytes, the maximum is {WAL_RECORD_DATA_BYTES_MAX}",
            entry.index,
            entry.data.len()
        );
    }
}

impl Inner {
    /// The queue lock. Poisoning is ignored: every panic under it (a failed caller-bug assert)
    /// happens before the state is changed.
    fn lock_queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn join_writer(&self) {
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(thread) = thread {
            // The last handle can be dropped by a callback on the writer thread itself.
            if thread.thread().id() != std::thread::current().id() && thread.join().is_err() {
                tracing::error!("wal: writer thread panicked");
            }
        }
    }
}

impl Drop for Inner {
    /// Without `close`, dropping the last handle still writes and fsyncs what was queued: the
    /// writer sees the channel disconnect, commits, and exits.
    fn drop(&mut self) {
        self.lock_queue().sender = None;
        self.join_writer();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Compile-time check: the async methods can run on a multi-threaded runtime.
    #[allow(dead_code)]
    fn futures_are_send(wal: &Wal) {
        fn send<T: Send>(_: T) {}
        send(wal.append_flushed(Vec::new()));
        send(wal.purge_to(1));
        send(wal.truncate_after(1));
        send(wal.close());
    }

    fn entry(index: u64) -> Entry {
        Entry {
            index,
            term: 1,
            data: Bytes::from(format!("entry {index}")),
        }
    }

    #[tokio::test]
    async fn failed_fsync_is_reported_and_the_wal_refuses_further_writes() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(dir.path(), WalOptions::default(), 0, |_| {}).unwrap();
        assert_eq!(wal.append_flushed(vec![entry(1)]).await.unwrap(), 1);
        wal.fail_next_fsync();
        let error = wal.append_flushed(vec![entry(2)]).await.unwrap_err();
        assert!(matches!(error, WalError::Io { op: "fsync", .. }), "{error}");
        let error = wal.append_flushed(vec![entry(3)]).await.unwrap_err();
        assert!(matches!(error, WalError::Failed { .. }), "{error}");
        assert!(matches!(
            wal.truncate_after(1).await,
            Err(WalError::Failed { .. })
        ));
        assert!(matches!(wal.close().await, Err(WalError::Failed { .. })));
        assert_eq!(wal.stats().fsyncs, 1);
    }

    #[test]
    #[should_panic(expected = "does not follow")]
    fn a_gap_in_the_sequence_is_a_caller_bug() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(dir.path(), WalOptions::default(), 0, |_| {}).unwrap();
        wal.append(vec![entry(1)], Box::new(|_| {}));
        wal.append(vec![entry(3)], Box::new(|_| {}));
    }
}
