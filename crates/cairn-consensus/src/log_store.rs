//! The raft log store: openraft's `RaftLogStorage` on Cairn's WAL.
//!
//! Files (in the member's `wal/` directory and next to it):
//! - the WAL segments: one record per raft entry; record payload = `raftpb.Entry`; the WAL
//!   index is the raft index + 1, because openraft's first entry (the initial membership) has
//!   index 0 and the WAL starts at 1;
//! - `hard_state`: `raftpb.HardState` (vote, last purged log id), replaced atomically (write a
//!   temporary file, fsync, rename, fsync the directory) before `save_vote`/`purge` return.
//!
//! Durability: `append` queues the entries and returns; the WAL's group-commit thread fsyncs
//! and only then reports them flushed to openraft. The vote is durable before `save_vote`
//! returns.
//!
//! Memory: only the newest entries stay in memory (`LOG_CACHE_BYTES_MAX` in production, and
//! always every entry not yet durable, which openraft replicates before the local fsync).
//! Older ones are read back from the WAL, which lists where each record sits: for a follower
//! far behind, or the state machine catching up after a restart. Before, every entry since the
//! last snapshot (up to `--snapshot-count` requests, ~30 MB at etcd's default) sat in memory.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use cairn_proto::raftpb;
use cairn_storage::wal::{self, Wal, WalOptions};
use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{OptionalSend, StorageIOError};
use prost::Message;

use crate::error::OpenError;
use crate::types::{Entry, LogId, StorageError, TypeConfig, Vote};
use crate::wire;

const HARD_STATE_FILE: &str = "hard_state";

/// The newest entries of the log, contiguous by index, shared with the readers openraft's
/// replication tasks hold. Invariant: `entries` is a suffix of the unpurged log (empty only when
/// that is), and every unpurged entry before it is durable in the WAL.
#[derive(Default)]
struct LogCache {
    entries: VecDeque<Cached>,
    /// Sum of `Cached::bytes`.
    bytes: usize,
    /// Bytes of durable entries kept (see `evict`).
    bytes_max: usize,
    /// Raft index of the oldest entry of the log (in memory or only in the WAL); `None` when
    /// the log holds none.
    oldest: Option<u64>,
}

struct Cached {
    entry: Entry,
    /// Size of the entry's WAL record payload, as the cost of keeping it.
    bytes: usize,
}

impl LogCache {
    fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|cached| cached.entry.log_id.index)
    }

    fn last(&self) -> Option<LogId> {
        self.entries.back().map(|cached| cached.entry.log_id)
    }

    fn push(&mut self, entry: Entry, bytes: usize) {
        if let Some(last) = self.last() {
            assert_eq!(
                last.index + 1,
                entry.log_id.index,
                "log store: entry {} does not follow {}",
                entry.log_id.index,
                last.index
            );
        }
        self.oldest.get_or_insert(entry.log_id.index);
        self.bytes += bytes;
        self.entries.push_back(Cached { entry, bytes });
    }

    /// Drops the oldest entries, those at or below `durable` only, while more than `bytes_max`
    /// are kept; the newest entry always stays (it is the log's last id).
    fn evict(&mut self, durable: u64) {
        while self.bytes > self.bytes_max && self.entries.len() > 1 {
            let front = &self.entries[0];
            if front.entry.log_id.index > durable {
                break;
            }
            self.bytes -= front.bytes;
            self.entries.pop_front();
        }
    }

    /// Drops the entries at or above `cut`. Returns the index of the log's new last entry if
    /// only the WAL still holds it: the caller reloads it, since memory must not be empty
    /// while the log is not.
    fn truncate(&mut self, cut: u64) -> Option<u64> {
        while self.last().is_some_and(|last| last.index >= cut) {
            let cached = self.entries.pop_back().expect("a last entry");
            self.bytes -= cached.bytes;
        }
        if !self.entries.is_empty() {
            return None;
        }
        match self.oldest {
            Some(oldest) if oldest < cut => Some(cut - 1),
            _ => {
                self.oldest = None;
                None
            }
        }
    }

    /// Drops the entries at or below `index`.
    fn purge(&mut self, index: u64) {
        while self.first_index().is_some_and(|first| first <= index) {
            let cached = self.entries.pop_front().expect("a first entry");
            self.bytes -= cached.bytes;
        }
        self.oldest = match self.entries.is_empty() {
            true => None,
            false => self.oldest.map(|oldest| oldest.max(index + 1)),
        };
    }

    /// Splits a read of `range` into the part only the WAL still holds (raft indexes, both
    /// ends included) and the entries from memory.
    fn split(&self, range: impl RangeBounds<u64>) -> (Option<(u64, u64)>, Vec<Entry>) {
        let (Some(cached_first), Some(lowest)) = (self.first_index(), self.oldest) else {
            return (None, Vec::new());
        };
        let start = match range.start_bound() {
            Bound::Included(start) => *start,
            Bound::Excluded(start) => start + 1,
            Bound::Unbounded => lowest,
        }
        .max(lowest);
        let end = match range.end_bound() {
            Bound::Included(end) => Some(*end),
            Bound::Excluded(end) => end.checked_sub(1),
            Bound::Unbounded => Some(u64::MAX),
        };
        let from_wal = end
            .map(|end| (start, end.min(cached_first.saturating_sub(1))))
            .filter(|(first, last)| *first < cached_first && first <= last);
        let skip = start.saturating_sub(cached_first) as usize;
        let cached = self
            .entries
            .iter()
            .skip(skip)
            .map(|cached| &cached.entry)
            .take_while(|entry| range.contains(&entry.log_id.index))
            .cloned()
            .collect();
        (from_wal, cached)
    }
}

/// Reads entries for openraft's replication tasks and state machine worker.
#[derive(Clone)]
pub struct LogReader {
    cache: Arc<Mutex<LogCache>>,
    wal: Wal,
    /// Do file I/O on the calling task (simulation; see `ReplicaConfig::synchronous_io`).
    synchronous: bool,
}

impl LogReader {
    /// Raft entries `first..=last` from the WAL (raft entry i is WAL record i + 1).
    async fn read_wal(&self, first: u64, last: u64) -> Result<Vec<Entry>, StorageError> {
        let wal = self.wal.clone();
        let read = move || wal.read(first + 1, last + 1);
        let records = if self.synchronous {
            read()
        } else {
            tokio::task::spawn_blocking(read)
                .await
                .map_err(|error| StorageIOError::read_logs(&error))?
        }
        .map_err(|error| StorageIOError::read_logs(&error))?;
        records
            .iter()
            .map(|record| match wire::decode_entry(&record.data) {
                Ok(entry) if entry.log_id.index + 1 == record.index => Ok(entry),
                Ok(entry) => Err(io::Error::other(format!(
                    "WAL record {} holds raft entry {}",
                    record.index, entry.log_id.index
                ))),
                Err(error) => Err(io::Error::other(format!(
                    "WAL record {}: {error}",
                    record.index
                ))),
            })
            .collect::<Result<_, _>>()
            .map_err(|error| StorageIOError::read_logs(&error).into())
    }
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let (from_wal, cached) = lock(&self.cache).split(range);
        let Some((first, last)) = from_wal else {
            return Ok(cached);
        };
        let mut entries = self.read_wal(first, last).await?;
        entries.extend(cached);
        Ok(entries)
    }
}

/// The raft log of one member.
pub struct LogStore {
    dir: PathBuf,
    hard_state: raftpb::HardState,
    /// The cache, the WAL and the I/O mode, shared with the readers handed to openraft.
    reader: LogReader,
    /// The raft commit index openraft last reported, for metrics.
    committed_index: Arc<AtomicU64>,
}

impl LogStore {
    /// Opens the log in `dir` (creating it), replaying the WAL; the newest `cache_bytes_max`
    /// of it stay in memory.
    pub fn open(
        dir: &Path,
        synchronous: bool,
        cache_bytes_max: usize,
    ) -> Result<LogStore, OpenError> {
        std::fs::create_dir_all(dir).map_err(|source| OpenError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        let hard_state = read_hard_state(dir)?;
        let last_purged = hard_state.last_purged.as_ref().map(|id| id.index);
        let mut cache = LogCache {
            bytes_max: cache_bytes_max,
            ..LogCache::default()
        };
        let mut replay_error = None;
        // WAL index = raft index + 1, so the WAL indexes of purged entries are <= purged + 1.
        let after = last_purged.map_or(0, |index| index + 1);
        let options = WalOptions {
            inline: synchronous,
            ..WalOptions::default()
        };
        let wal = Wal::open(&dir.join("wal"), options, after, |record| {
            if replay_error.is_some() {
                return;
            }
            match wire::decode_entry(&record.data) {
                Ok(entry) if entry.log_id.index + 1 != record.index => {
                    replay_error = Some(format!(
                        "WAL record {} holds raft entry {}",
                        record.index, entry.log_id.index
                    ));
                }
                Ok(entry) => {
                    let expected = cache
                        .last()
                        .map(|last| last.index + 1)
                        .or(last_purged.map(|index| index + 1));
                    if expected.is_some_and(|expected| expected != entry.log_id.index) {
                        replay_error = Some(format!(
                            "log gap: entry {} after {expected:?}",
                            entry.log_id.index
                        ));
                        return;
                    }
                    cache.push(entry, record.data.len());
                    // Everything replayed is on disk already.
                    cache.evict(u64::MAX);
                }
                Err(error) => replay_error = Some(format!("WAL record {}: {error}", record.index)),
            }
        })?;
        if let Some(reason) = replay_error {
            return Err(OpenError::Corrupt {
                what: format!("raft log in {}", dir.display()),
                reason,
            });
        }
        Ok(LogStore {
            dir: dir.to_path_buf(),
            hard_state,
            reader: LogReader {
                cache: Arc::new(Mutex::new(cache)),
                wal,
                synchronous,
            },
            committed_index: Arc::new(AtomicU64::new(0)),
        })
    }

    /// A handle to the WAL, to close it and read its counters after openraft took the store.
    /// The term of the stored vote (0: none): the highest term this member ever entered.
    pub fn vote_term(&self) -> u64 {
        self.hard_state.vote.as_ref().map_or(0, |vote| vote.term)
    }

    pub fn wal(&self) -> Wal {
        self.reader.wal.clone()
    }

    /// The raft commit index as openraft reports it (`save_committed`), for metrics.
    pub fn committed_index(&self) -> Arc<AtomicU64> {
        self.committed_index.clone()
    }

    async fn save_hard_state(&self) -> Result<(), io::Error> {
        let (dir, bytes) = (self.dir.clone(), self.hard_state.encode_to_vec());
        if self.reader.synchronous {
            return write_atomically(&dir, HARD_STATE_FILE, &bytes);
        }
        tokio::task::spawn_blocking(move || write_atomically(&dir, HARD_STATE_FILE, &bytes))
            .await
            .map_err(io::Error::other)?
    }

    fn last_purged(&self) -> Option<LogId> {
        wire::option_log_id_from_pb(&self.hard_state.last_purged)
    }

    /// Brings entry `last` back from the WAL into the emptied memory (see `LogCache::truncate`).
    async fn reload_last_entry(&mut self, last: u64) -> Result<(), StorageError> {
        let mut reloaded = self.reader.read_wal(last, last).await?;
        let entry = reloaded
            .pop()
            .expect("read_wal returns the entry asked for");
        let bytes = wire::encode_entry(&entry).len();
        lock(&self.reader.cache).push(entry, bytes);
        Ok(())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        self.reader.try_get_log_entries(range).await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id = self.last_purged();
        let last = lock(&self.reader.cache).last();
        Ok(LogState {
            last_purged_log_id,
            last_log_id: last.or(last_purged_log_id),
        })
    }

    /// Only recorded for metrics: openraft re-derives the commit index after a restart.
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let index = committed.map_or(0, |log_id| log_id.index);
        self.committed_index.store(index, Ordering::Relaxed);
        Ok(())
    }

    async fn get_log_reader(&mut self) -> LogReader {
        self.reader.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.hard_state.vote = Some(wire::vote_to_pb(vote));
        self.save_hard_state()
            .await
            .map_err(|error| StorageIOError::write_vote(&error).into())
    }

    /// The vote is returned *uncommitted* even if it was a granted leadership: a leader that
    /// restarts with its committed vote resumes leading the same term without a new blank
    /// entry, while its commit index restarts at its applied index, so openraft's read index
    /// (max of commit index and this term's first entry) would be too low and a linearizable
    /// read served after it stale (found by the simulation, seed 817). Uncommitted, the member
    /// must win an election in a new term first, like a restarted etcd member.
    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        match &self.hard_state.vote {
            None => Ok(None),
            Some(vote) => {
                let mut vote = wire::vote_from_pb(Some(vote))
                    .map_err(|error| StorageIOError::read_vote(&error))?;
                vote.committed = false;
                Ok(Some(vote))
            }
        }
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        // openraft truncates before it overwrites, but the contract allows an append that
        // overlaps the tail: it replaces it. (Raft entry i is WAL record i + 1.)
        if let Some(first) = entries.first() {
            if first.log_id.index < self.reader.wal.last_index() {
                self.truncate(first.log_id).await?;
            }
        }
        let mut records = Vec::new();
        {
            let mut cache = lock(&self.reader.cache);
            for entry in entries {
                let record = wal::Entry {
                    index: entry.log_id.index + 1,
                    term: entry.log_id.leader_id.term,
                    data: wire::encode_entry(&entry),
                };
                cache.push(entry, record.data.len());
                records.push(record);
            }
        }
        // Reported flushed only from the WAL's callback, i.e. after its fdatasync; from then
        // on the WAL can serve the entries, so older ones may leave memory.
        let cache = self.reader.cache.clone();
        self.reader.wal.append(
            records,
            Box::new(move |result| {
                if let Ok(durable) = &result {
                    lock(&cache).evict(durable.saturating_sub(1));
                }
                callback.log_io_completed(result.map(|_| ()).map_err(io::Error::other))
            }),
        );
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let reload = lock(&self.reader.cache).truncate(log_id.index);
        if let Some(last) = reload {
            self.reload_last_entry(last).await?;
        }
        // Raft entries >= i are WAL records >= i + 1: keep the WAL up to record i.
        self.reader
            .wal
            .truncate_after(log_id.index)
            .await
            .map_err(|error| StorageIOError::write_logs(&error).into())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        assert!(
            self.last_purged()
                .is_none_or(|purged| purged.index <= log_id.index),
            "log store: purge to {log_id} behind the last purge {:?}",
            self.last_purged()
        );
        // Record the purge first: a crash after it leaves extra entries in the WAL, which the
        // next open skips; the reverse order would leave a log that starts past its record.
        self.hard_state.last_purged = Some(wire::log_id_to_pb(&log_id));
        self.save_hard_state()
            .await
            .map_err(|error| StorageIOError::write_logs(&error))?;
        lock(&self.reader.cache).purge(log_id.index);
        // Raft entries <= i are WAL records <= i + 1.
        self.reader
            .wal
            .purge_to(log_id.index + 1)
            .await
            .map_err(|error| StorageIOError::write_logs(&error).into())
    }
}

fn lock(cache: &Mutex<LogCache>) -> MutexGuard<'_, LogCache> {
    cache.lock().unwrap_or_else(PoisonError::into_inner)
}

fn read_hard_state(dir: &Path) -> Result<raftpb::HardState, OpenError> {
    let path = dir.join(HARD_STATE_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            raftpb::HardState::decode(bytes.as_slice()).map_err(|error| OpenError::Corrupt {
                what: path.display().to_string(),
                reason: error.to_string(),
            })
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(raftpb::HardState::default()),
        Err(source) => Err(OpenError::Io {
            path: path.display().to_string(),
            source,
        }),
    }
}

/// Replaces `dir/name` by `bytes` so that a crash leaves the old or the new file, never a mix.
pub(crate) fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let tmp = dir.join(format!("{name}.tmp"));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, dir.join(name))?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, EntryPayload};

    /// A cache of blank entries `first..=last`, 10 bytes each, keeping at most `bytes_max`.
    fn cache(first: u64, last: u64, bytes_max: usize) -> LogCache {
        let mut cache = LogCache {
            bytes_max,
            ..LogCache::default()
        };
        for index in first..=last {
            let entry = Entry {
                log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
                payload: EntryPayload::Blank,
            };
            cache.push(entry, 10);
        }
        cache
    }

    fn indexes(entries: &[Entry]) -> Vec<u64> {
        entries.iter().map(|entry| entry.log_id.index).collect()
    }

    #[test]
    fn eviction_keeps_entries_not_yet_durable_and_the_last_one() {
        let mut log = cache(5, 20, 50);
        log.evict(12);
        assert_eq!(
            (log.first_index(), log.oldest, log.bytes),
            (Some(13), Some(5), 80)
        );
        log.evict(u64::MAX);
        assert_eq!((log.first_index(), log.bytes), (Some(16), 50));
        let mut nothing_kept = cache(5, 20, 0);
        nothing_kept.evict(u64::MAX);
        assert_eq!(nothing_kept.first_index(), Some(20));
        assert_eq!(nothing_kept.last().map(|id| id.index), Some(20));
    }

    #[test]
    fn reads_split_between_the_wal_and_memory_within_the_log() {
        let mut log = cache(5, 20, 50);
        log.evict(12);
        let split = |range: (Bound<u64>, Bound<u64>)| {
            let (wal, cached) = log.split(range);
            (wal, indexes(&cached))
        };
        use Bound::{Excluded, Included, Unbounded};
        assert_eq!(
            split((Included(7), Excluded(15))),
            (Some((7, 12)), vec![13, 14])
        );
        assert_eq!(split((Unbounded, Included(6))), (Some((5, 6)), vec![]));
        assert_eq!(split((Included(0), Included(3))), (None, vec![]));
        assert_eq!(split((Included(14), Excluded(14))), (None, vec![]));
        assert_eq!(split((Included(0), Excluded(0))), (None, vec![]));
        assert_eq!(split((Included(19), Unbounded)), (None, vec![19, 20]));
        assert_eq!(split((Included(25), Unbounded)), (None, vec![]));
        let mut from_zero = cache(0, 10, 0);
        from_zero.evict(u64::MAX);
        let (wal, cached) = from_zero.split(0..0);
        assert_eq!((wal, cached.len()), (None, 0));
        assert_eq!(from_zero.split(0..=0).0, Some((0, 0)));
    }

    #[test]
    fn truncation_and_purge_keep_memory_a_suffix_of_the_log() {
        let mut log = cache(5, 20, 0);
        log.evict(u64::MAX);
        // Memory held only entry 20: the new last entry must come back from the WAL.
        assert_eq!(log.truncate(18), Some(17));
        assert_eq!(log.oldest, Some(5));
        let mut log = cache(5, 20, 0);
        log.evict(u64::MAX);
        assert_eq!(log.truncate(5), None);
        assert_eq!((log.oldest, log.last()), (None, None));
        let mut log = cache(5, 20, 1000);
        assert_eq!(log.truncate(18), None);
        log.purge(9);
        assert_eq!((log.first_index(), log.oldest), (Some(10), Some(10)));
        log.purge(30);
        assert_eq!((log.first_index(), log.oldest, log.bytes), (None, None, 0));
    }
}
