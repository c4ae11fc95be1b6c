//! The WAL writer thread: group commit, segment rolls, purge and truncate.
//!
//! Hot path (`run` → `stage` → `commit`). Must not happen here:
//! - more than one `write` and one fdatasync per wake-up (a segment roll is the only exception:
//!   the old segment is fsynced before the new one is created);
//! - a callback reported `Ok` before the fsync covering its entries returned;
//! - any write after a failed write or fsync (the writer stays failed until the node restarts);
//! - allocation per entry: records are encoded into one reused buffer;
//! - a lock held across I/O: the thread owns every file and all of its state.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, PoisonError, RwLock, RwLockWriteGuard};
use std::time::Instant;

use tokio::sync::oneshot;

use crate::error::{Corruption, WalError};
use crate::limits::{WAL_GROUP_BYTES_MAX, WAL_PREALLOCATE_BYTES};
use crate::metrics::Histogram;
use crate::wal::catalog::Catalog;
use crate::wal::record;
use crate::wal::repair::Recovered;
use crate::wal::segment::{self, SegmentFile, SEGMENT_HEADER_BYTES};
use crate::wal::{Entry, Flushed, WalStats};

/// Reply channel of a control command.
pub(crate) type Reply = oneshot::Sender<Result<(), WalError>>;

/// What callers hand the writer thread, in submission order.
pub(crate) enum Command {
    Append {
        entries: Vec<Entry>,
        flushed: Flushed,
    },
    PurgeTo {
        index: u64,
        reply: Reply,
    },
    TruncateAfter {
        index: u64,
        reply: Reply,
    },
    Close {
        reply: Reply,
    },
}

impl Command {
    /// Reports `error` to whoever waits on this command (the writer never saw it).
    pub(crate) fn refuse(self, error: WalError) {
        match self {
            Command::Append { flushed, .. } => flushed(Err(error)),
            Command::PurgeTo { reply, .. }
            | Command::TruncateAfter { reply, .. }
            | Command::Close { reply } => {
                let _ = reply.send(Err(error));
            }
        }
    }
}

/// Counters shared with the handle, written only by the writer thread.
#[derive(Debug)]
pub(crate) struct Counters {
    fsyncs: AtomicU64,
    entries_written: AtomicU64,
    bytes_written: AtomicU64,
    last_fsync_us: AtomicU64,
    /// Group-commit fdatasync durations (`etcd_disk_wal_fsync_duration_seconds`).
    pub(crate) fsync_seconds: Histogram,
    /// Test seam: when set, the next group-commit fsync fails as if the disk had.
    #[cfg(test)]
    pub(crate) fail_next_fsync: std::sync::atomic::AtomicBool,
}

impl Default for Counters {
    fn default() -> Counters {
        Counters {
            fsyncs: AtomicU64::new(0),
            entries_written: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
            last_fsync_us: AtomicU64::new(0),
            fsync_seconds: Histogram::disk_seconds(),
            #[cfg(test)]
            fail_next_fsync: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

impl Counters {
    pub(crate) fn snapshot(&self) -> WalStats {
        WalStats {
            fsyncs: self.fsyncs.load(Ordering::Relaxed),
            entries_written: self.entries_written.load(Ordering::Relaxed),
            bytes_written: self.bytes_written.load(Ordering::Relaxed),
            last_fsync_us: self.last_fsync_us.load(Ordering::Relaxed),
        }
    }
}

/// The segment receiving appends.
struct Active {
    file: File,
    first_index: u64,
    /// Index of the next record to encode (pending records included).
    next_index: u64,
    /// Where the written records end (pending records excluded).
    file_len: u64,
    /// The file's length: records plus the zeros written after them (`write_pending`).
    allocated: u64,
}

/// Whether `run` keeps going after a control command.
#[derive(PartialEq, Eq)]
pub(crate) enum Flow {
    Continue,
    Stop,
}

/// State owned by the writer thread.
pub(crate) struct Writer {
    dir: PathBuf,
    segment_bytes_max: u64,
    /// Every segment, sorted by first index; when `active` is set it is the last one.
    segments: Vec<SegmentFile>,
    active: Option<Active>,
    /// Records encoded for `active` but not yet written, how many there are, and where each
    /// will start in the segment.
    pending: Vec<u8>,
    pending_entries: u64,
    pending_offsets: Vec<u64>,
    /// Where durable records sit, shared with readers.
    catalog: Arc<RwLock<Catalog>>,
    /// Callbacks of the batches staged since the last commit, in submission order.
    waiting: Vec<Flushed>,
    /// Last index covered by a completed fsync.
    durable_index: u64,
    /// Set by the first failed file operation; from then on every request is refused.
    failed: Option<Arc<WalError>>,
    counters: Arc<Counters>,
}

impl Writer {
    pub(crate) fn new(
        dir: PathBuf,
        segment_bytes_max: u64,
        recovered: Recovered,
        catalog: Arc<RwLock<Catalog>>,
        counters: Arc<Counters>,
    ) -> Result<Writer, WalError> {
        let active = match (recovered.segments.last(), recovered.next_index) {
            (Some(last), Some(next_index)) => {
                let file = segment::open_write(&last.path)?;
                let allocated = file
                    .metadata()
                    .map_err(|e| WalError::io("stat", &last.path, e))?
                    .len();
                Some(Active {
                    file,
                    first_index: last.first_index,
                    next_index,
                    file_len: recovered.last_segment_len,
                    allocated,
                })
            }
            _ => None,
        };
        let durable_index = recovered.next_index.map_or(0, |next| next - 1);
        let writer = Writer {
            dir,
            segment_bytes_max,
            segments: recovered.segments,
            active,
            pending: Vec::new(),
            pending_entries: 0,
            pending_offsets: Vec::new(),
            catalog,
            waiting: Vec::new(),
            durable_index,
            failed: None,
            counters,
        };
        writer.validate();
        Ok(writer)
    }

    /// The thread body: every wake-up drains what is waiting (up to `WAL_GROUP_BYTES_MAX`)
    /// into one write + one fsync, then fires the callbacks. Returns on `Close` or when every
    /// handle is gone.
    pub(crate) fn run(mut self, queue: Receiver<Command>) {
        while let Ok(command) = queue.recv() {
            let mut next = Some(command);
            while let Some(command) = next {
                match command {
                    Command::Append { entries, flushed } => self.stage(entries, flushed),
                    control => {
                        self.commit();
                        if self.control(control) == Flow::Stop {
                            return;
                        }
                    }
                }
                next = if self.pending.len() < WAL_GROUP_BYTES_MAX {
                    queue.try_recv().ok()
                } else {
                    None
                };
            }
            self.commit();
        }
    }

    /// Handles one command at once, on the caller's thread (the inline mode of
    /// `WalOptions::inline`): an append is written and fsynced before this returns.
    pub(crate) fn handle_inline(&mut self, command: Command) -> Flow {
        match command {
            Command::Append { entries, flushed } => {
                self.stage(entries, flushed);
                self.commit();
                Flow::Continue
            }
            control => self.control(control),
        }
    }

    /// Encodes a batch into the pending buffer (rolling the segment first if it is full) and
    /// queues its callback for the next commit.
    fn stage(&mut self, entries: Vec<Entry>, flushed: Flushed) {
        self.waiting.push(flushed);
        if self.failed.is_some() || entries.is_empty() {
            return;
        }
        if let Err(error) = self.stage_entries(&entries) {
            self.fail(&error);
        }
    }

    fn stage_entries(&mut self, entries: &[Entry]) -> Result<(), WalError> {
        let first_index = entries[0].index;
        let roll = match &self.active {
            None => true,
            // Never roll an empty segment: the new one would get the same name.
            Some(active) => {
                active.next_index > active.first_index
                    && active.file_len + self.pending.len() as u64 >= self.segment_bytes_max
            }
        };
        if roll {
            // The old segment is durable before the new one exists: only the last segment can
            // ever hold a torn write.
            self.write_pending()?;
            self.roll(first_index)?;
        }
        let active = self
            .active
            .as_mut()
            .expect("a segment is active after roll");
        for entry in entries {
            assert_eq!(
                entry.index, active.next_index,
                "wal writer: entry index {} does not follow {}",
                entry.index, active.next_index
            );
            self.pending_offsets
                .push(active.file_len + self.pending.len() as u64);
            record::encode(entry.index, entry.term, &entry.data, &mut self.pending);
            active.next_index += 1;
        }
        self.pending_entries += entries.len() as u64;
        Ok(())
    }

    /// Writes and fsyncs the pending records, then reports the outcome to every waiting
    /// callback, in order.
    fn commit(&mut self) {
        if self.waiting.is_empty() && self.pending.is_empty() {
            return;
        }
        let result = match self.check_running().and_then(|()| self.write_pending()) {
            Ok(()) => Ok(self.durable_index),
            Err(error) => {
                self.fail(&error);
                Err(error)
            }
        };
        for flushed in self.waiting.drain(..) {
            flushed(result.clone());
        }
    }

    /// One `write` and one fdatasync for everything pending; advances `durable_index`.
    fn write_pending(&mut self) -> Result<(), WalError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let active = self
            .active
            .as_mut()
            .expect("pending records belong to the active segment");
        let path = &self.segments.last().expect("active segment is listed").path;
        let records = self.pending.len();
        let end = active.file_len + records as u64;
        if end > active.allocated {
            // Zeros written now, in the same `write`, make the blocks ahead ordinary written
            // data: the fdatasyncs of the records that later land there then flush data only.
            // Blocks reserved by `fallocate` stay "unwritten" extents, and every fdatasync
            // into one also writes the extent change (205 µs against 131 µs on this disk,
            // docs/perf/kv-cluster-notes.md); the one fdatasync that carries the zeros pays
            // ~0.5 ms more, once per `WAL_PREALLOCATE_BYTES`.
            let reserved = end + WAL_PREALLOCATE_BYTES;
            self.pending
                .resize(records + WAL_PREALLOCATE_BYTES as usize, 0);
            active.allocated = reserved;
        }
        let written = active.file.write_all_at(&self.pending, active.file_len);
        self.pending.truncate(records);
        written.map_err(|e| WalError::io("write", path, e))?;
        let started = Instant::now();
        #[cfg(test)]
        if self.counters.fail_next_fsync.swap(false, Ordering::Relaxed) {
            let injected = std::io::Error::other("injected fsync failure");
            return Err(WalError::io("fsync", path, injected));
        }
        // fdatasync covers the records, and the file length after zeros were added above.
        active
            .file
            .sync_data()
            .map_err(|e| WalError::io("fsync", path, e))?;
        let elapsed = started.elapsed();
        self.counters.fsync_seconds.observe(elapsed);
        let elapsed_us = elapsed.as_micros() as u64;
        self.counters.fsyncs.fetch_add(1, Ordering::Relaxed);
        self.counters
            .last_fsync_us
            .store(elapsed_us, Ordering::Relaxed);
        self.counters
            .bytes_written
            .fetch_add(self.pending.len() as u64, Ordering::Relaxed);
        self.counters
            .entries_written
            .fetch_add(self.pending_entries, Ordering::Relaxed);
        active.file_len += self.pending.len() as u64;
        self.durable_index = active.next_index - 1;
        lock(&self.catalog).add_records(&self.pending_offsets, active.file_len);
        self.pending.clear();
        self.pending_entries = 0;
        self.pending_offsets.clear();
        // One huge batch must not pin its buffer for the life of the process.
        if self.pending.capacity() > 2 * WAL_GROUP_BYTES_MAX {
            self.pending.shrink_to(WAL_GROUP_BYTES_MAX);
        }
        Ok(())
    }

    /// Creates the segment starting at `first_index` and makes it the active one.
    fn roll(&mut self, first_index: u64) -> Result<(), WalError> {
        assert!(
            self.pending.is_empty(),
            "wal writer: roll with unwritten records"
        );
        if let Some(last) = self.segments.last() {
            assert!(
                last.first_index < first_index,
                "wal writer: new segment {first_index} not after segment {}",
                last.first_index
            );
        }
        let (file, created) = segment::create(&self.dir, first_index)?;
        tracing::info!(path = %created.path.display(), first_index, "wal: new segment");
        let header_end = SEGMENT_HEADER_BYTES;
        lock(&self.catalog).add_segment(first_index, created.path.clone(), Vec::new(), header_end);
        self.segments.push(created);
        self.active = Some(Active {
            file,
            first_index,
            next_index: first_index,
            file_len: header_end,
            allocated: header_end,
        });
        Ok(())
    }

    fn control(&mut self, command: Command) -> Flow {
        let (result, reply, flow) = match command {
            Command::Append { .. } => unreachable!("appends are staged, not controlled"),
            Command::PurgeTo { index, reply } => {
                let result = self.check_running().and_then(|()| self.purge_to(index));
                (result, reply, Flow::Continue)
            }
            Command::TruncateAfter { index, reply } => {
                let result = self
                    .check_running()
                    .and_then(|()| self.truncate_after(index));
                (result, reply, Flow::Continue)
            }
            Command::Close { reply } => {
                // Everything queued before `Close` was committed by `run` just before this.
                self.active = None;
                (self.check_running(), reply, Flow::Stop)
            }
        };
        if let Err(error) = &result {
            self.fail(error);
        }
        self.validate();
        let _ = reply.send(result);
        flow
    }

    /// Removes every segment whose entries are all <= `index`. If that is every entry (or
    /// the log has none), the log restarts empty at `index + 1`, recorded by an empty segment.
    fn purge_to(&mut self, index: u64) -> Result<(), WalError> {
        let next_index = self.active.as_ref().map(|active| active.next_index);
        if index == 0 || next_index.is_some_and(|next| index + 1 < next) {
            // Oldest first, so that a crash midway leaves a contiguous suffix.
            let mut removed = 0;
            while self.segments.len() > 1 && self.segments[1].first_index - 1 <= index {
                let oldest = self.segments.remove(0);
                lock(&self.catalog).remove_oldest();
                remove_segment(&oldest)?;
                removed += 1;
            }
            if removed > 0 {
                segment::sync_dir(&self.dir)?;
                tracing::info!(index, removed, "wal: purged segments");
            }
            return Ok(());
        }
        let active_is_empty_at = self
            .active
            .as_ref()
            .filter(|a| a.next_index == a.first_index);
        if self.segments.len() == 1
            && active_is_empty_at.is_some_and(|a| a.first_index == index + 1)
        {
            return Ok(());
        }
        self.restart_at(index + 1)?;
        tracing::info!(index, "wal: purged every entry, log continues at index + 1");
        Ok(())
    }

    /// Drops every entry > `index`; the next append continues at `index + 1`.
    fn truncate_after(&mut self, index: u64) -> Result<(), WalError> {
        let Some(next_index) = self.active.as_ref().map(|active| active.next_index) else {
            return Ok(());
        };
        if index + 1 >= next_index {
            return Ok(());
        }
        let Some(keep) = self
            .segments
            .iter()
            .rposition(|s| s.first_index <= index + 1)
        else {
            // Every entry goes, and some that were purged long ago would have to as well.
            return self.restart_at(index + 1);
        };
        self.active = None;
        let kept = &self.segments[keep];
        let offset = offset_of(kept, index + 1)?;
        lock(&self.catalog).truncate(keep + 1, index + 1, offset);
        // Newest first, so that a crash midway leaves a contiguous prefix.
        let removed = self.segments.split_off(keep + 1);
        for segment in removed.iter().rev() {
            remove_segment(segment)?;
        }
        if !removed.is_empty() {
            segment::sync_dir(&self.dir)?;
        }
        let kept = &self.segments[keep];
        let file = segment::open_write(&kept.path)?;
        segment::truncate(&file, &kept.path, offset)?;
        let first_index = kept.first_index;
        self.active = Some(Active {
            file,
            first_index,
            next_index: index + 1,
            file_len: offset,
            allocated: offset,
        });
        self.durable_index = index;
        tracing::info!(index, removed = removed.len(), "wal: truncated after index");
        Ok(())
    }

    /// Removes every segment (newest first) and starts an empty one at `first_index`.
    fn restart_at(&mut self, first_index: u64) -> Result<(), WalError> {
        self.active = None;
        lock(&self.catalog).clear();
        while let Some(newest) = self.segments.pop() {
            remove_segment(&newest)?;
        }
        // A crash here leaves an empty directory: an empty log that accepts any first index,
        // which loses nothing the caller still wanted.
        segment::sync_dir(&self.dir)?;
        self.roll(first_index)?;
        self.durable_index = first_index - 1;
        Ok(())
    }

    fn check_running(&self) -> Result<(), WalError> {
        match &self.failed {
            Some(cause) => Err(WalError::Failed {
                cause: cause.clone(),
            }),
            None => Ok(()),
        }
    }

    fn fail(&mut self, error: &WalError) {
        if self.failed.is_none() {
            tracing::error!(%error, "wal: failed, refusing further writes");
            self.failed = Some(Arc::new(error.clone()));
        }
        self.pending.clear();
        self.pending_entries = 0;
        self.pending_offsets.clear();
    }

    /// The writer's ordering invariants; cheap, so checked after every control command.
    fn validate(&self) {
        for pair in self.segments.windows(2) {
            assert!(
                pair[0].first_index < pair[1].first_index,
                "wal writer: segments out of order: {} then {}",
                pair[0].first_index,
                pair[1].first_index
            );
        }
        if let Some(active) = &self.active {
            let last = self.segments.last().expect("active segment is listed");
            assert_eq!(
                active.first_index, last.first_index,
                "wal writer: active is not last"
            );
            assert!(
                active.next_index >= active.first_index,
                "wal writer: active before its start"
            );
            assert!(
                self.durable_index < active.next_index,
                "wal writer: durable past the end"
            );
        }
    }
}

/// The catalog for writing. Poisoning is ignored: a reader that panicked changed nothing.
fn lock(catalog: &RwLock<Catalog>) -> RwLockWriteGuard<'_, Catalog> {
    catalog.write().unwrap_or_else(PoisonError::into_inner)
}

fn remove_segment(segment: &SegmentFile) -> Result<(), WalError> {
    std::fs::remove_file(&segment.path).map_err(|e| WalError::io("remove", &segment.path, e))
}

/// Byte offset at which the record for `index` starts in `segment`.
fn offset_of(segment: &SegmentFile, index: u64) -> Result<u64, WalError> {
    if index == segment.first_index {
        return Ok(SEGMENT_HEADER_BYTES);
    }
    let bytes = std::fs::read(&segment.path).map_err(|e| WalError::io("read", &segment.path, e))?;
    let mut found = None;
    let scan = segment::scan(&bytes, segment.first_index, |offset, record| {
        if record.index == index {
            found = Some(offset);
        }
    })
    .map_err(|(offset, reason)| segment::corrupt(segment, offset, reason))?;
    found.ok_or_else(|| {
        let reason = scan.damage.unwrap_or(Corruption::Index {
            expected: index,
            found: scan.next_index,
        });
        segment::corrupt(segment, scan.valid_len, reason)
    })
}
