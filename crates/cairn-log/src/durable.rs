//! ACK 2: durable copies of the global order on this host. Replica `r` of a topic follows the
//! committed prefix and appends every ordered batch to its own segment files under
//! `<data-dir>/<topic>/replica-<r>/`, fsyncs once for everything it wrote (group commit), then
//! publishes how far it is durable in its control-block line. Brokers acknowledge an ACK 2
//! batch only once every replica has it.
//!
//! Record format (little endian), one per GOI entry, segments named by the first batch index
//! they hold (`{index:020}.seg`):
//!
//! ```text
//! u32 body_len | u32 crc32c(body) | body
//! body = u64 batch_index | u64 first_message | u32 broker | u32 message_count
//!      | u64 client_id | u32 session_epoch | u64 batch_seq | payload (the batch's messages)
//! ```
//!
//! Recovery reads records while length and CRC check out and truncates a torn tail.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::broker::payload::PayloadLog;
use crate::error::{LogError, Result};
use crate::shm::layout::frontier;
use crate::shm::{GoiEntry, TopicShm};

const RECORD_FIXED_BYTES: usize = 8 + 8 + 4 + 4 + 8 + 4 + 8;
const SEGMENT_ROLL_BYTES: u64 = 256 * 1024 * 1024;
/// Write at most this much before an fsync, so acks flow under sustained load.
const GROUP_BYTES_MAX: usize = 16 * 1024 * 1024;
const IDLE_SLEEP: Duration = Duration::from_micros(50);

pub fn topic_dir(data_dir: &Path, topic: &str) -> PathBuf {
    data_dir.join(topic)
}

fn replica_dir(topic_dir: &Path, replica: u32) -> PathBuf {
    topic_dir.join(format!("replica-{replica}"))
}

/// One recovered record.
pub struct Record {
    pub entry: GoiEntry,
    pub payload: Vec<u8>,
}

/// Runs replica `replica`'s writer until `stop` (on the sequencer's process).
pub fn run_replica(
    shm: &TopicShm,
    topic_dir: &Path,
    replica: u32,
    stop: &AtomicBool,
) -> Result<()> {
    let dir = replica_dir(topic_dir, replica);
    std::fs::create_dir_all(&dir)?;
    let Some(_lock) = lock_replica(&dir, stop)? else {
        return Ok(());
    };
    let existing = read_records(&dir)?;
    // The replica's own files are the truth of what it holds (after a restore, replicas that
    // were behind catch up from the restored shared memory).
    let mut next = existing.last().map_or(0, |r| r.entry.batch_index + 1);
    let mut segment = SegmentWriter::open(&dir, next)?;
    let mut scratch = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let committed = shm.committed();
        if next >= committed {
            std::thread::sleep(IDLE_SLEEP);
            continue;
        }
        let mut written = 0usize;
        while next < committed && written < GROUP_BYTES_MAX {
            if !shm.is_void(next) {
                let entry = shm
                    .read_goi(next)
                    .ok_or_else(|| lost(next, "GOI entry recycled"))?;
                if !shm.read_payload(
                    entry.broker,
                    entry.payload_offset,
                    entry.byte_len,
                    &mut scratch,
                ) {
                    return Err(lost(next, "payload recycled"));
                }
                written += segment.append(&entry, &scratch)?;
            }
            next += 1;
        }
        segment.sync()?;
        shm.set_durable(replica, next);
        if segment.bytes >= SEGMENT_ROLL_BYTES {
            segment = SegmentWriter::open(&dir, next)?;
        }
    }
    Ok(())
}

/// Takes the replica's writer lock (an exclusive `flock` on `<dir>/LOCK`, released when the
/// file closes, even by a crash). A former sequencer that was paused past its lease may still run
/// its writer until it notices the fence; the new writer waits rather than interleave appends.
/// `None` if `stop` was raised while waiting.
fn lock_replica(dir: &Path, stop: &AtomicBool) -> Result<Option<File>> {
    use std::os::fd::AsRawFd;
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("LOCK"))?;
    let mut warned = false;
    loop {
        // Safety: a valid open descriptor; flock has no memory effects.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(Some(file));
        }
        let error = std::io::Error::last_os_error();
        if error.kind() != std::io::ErrorKind::WouldBlock {
            return Err(error.into());
        }
        if stop.load(Ordering::Relaxed) {
            return Ok(None);
        }
        if !warned {
            tracing::warn!(dir = %dir.display(), "another ACK 2 writer holds this replica; waiting for it to stop");
            warned = true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn lost(index: u64, why: &str) -> LogError {
    LogError::Protocol(format!("ACK 2 writer fell behind at GOI {index}: {why}"))
}

struct SegmentWriter {
    out: BufWriter<File>,
    bytes: u64,
}

impl SegmentWriter {
    fn open(dir: &Path, first_index: u64) -> Result<SegmentWriter> {
        let path = dir.join(format!("{first_index:020}.seg"));
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let bytes = file.metadata()?.len();
        // The new segment's directory entry must survive a crash too.
        File::open(dir)?.sync_all()?;
        Ok(SegmentWriter {
            out: BufWriter::with_capacity(1 << 20, file),
            bytes,
        })
    }

    fn append(&mut self, e: &GoiEntry, payload: &[u8]) -> Result<usize> {
        let mut body = Vec::with_capacity(RECORD_FIXED_BYTES + payload.len());
        body.extend_from_slice(&e.batch_index.to_le_bytes());
        body.extend_from_slice(&e.first_message.to_le_bytes());
        body.extend_from_slice(&e.broker.to_le_bytes());
        body.extend_from_slice(&e.message_count.to_le_bytes());
        body.extend_from_slice(&e.client_id.to_le_bytes());
        body.extend_from_slice(&e.session_epoch.to_le_bytes());
        body.extend_from_slice(&e.batch_seq.to_le_bytes());
        body.extend_from_slice(payload);
        self.out.write_all(&(body.len() as u32).to_le_bytes())?;
        self.out.write_all(&crc32c::crc32c(&body).to_le_bytes())?;
        self.out.write_all(&body)?;
        let n = 8 + body.len();
        self.bytes += n as u64;
        Ok(n)
    }

    fn sync(&mut self) -> Result<()> {
        self.out.flush()?;
        self.out.get_ref().sync_data()?;
        Ok(())
    }
}

/// Every intact record of a replica, in index order; a torn tail is truncated away.
pub fn read_records(dir: &Path) -> Result<Vec<Record>> {
    let mut segments: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "seg"))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    segments.sort();
    let mut records = Vec::new();
    for path in segments {
        let mut bytes = Vec::new();
        File::open(&path)?.read_to_end(&mut bytes)?;
        let mut at = 0usize;
        while let Some(record) = decode_record(&bytes[at..]) {
            at += 8 + RECORD_FIXED_BYTES + record.payload.len();
            records.push(record);
        }
        if at < bytes.len() {
            tracing::warn!(path = %path.display(), kept = at, dropped = bytes.len() - at, "truncating torn ACK 2 segment tail");
            OpenOptions::new()
                .write(true)
                .open(&path)?
                .set_len(at as u64)?;
        }
    }
    Ok(records)
}

fn decode_record(bytes: &[u8]) -> Option<Record> {
    let len = u32::from_le_bytes(bytes.get(0..4)?.try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(bytes.get(4..8)?.try_into().ok()?);
    let body = bytes.get(8..8 + len)?;
    if len < RECORD_FIXED_BYTES || crc32c::crc32c(body) != crc {
        return None;
    }
    let u64_at = |at: usize| u64::from_le_bytes(body[at..at + 8].try_into().expect("8 bytes"));
    let u32_at = |at: usize| u32::from_le_bytes(body[at..at + 4].try_into().expect("4 bytes"));
    let payload = body[RECORD_FIXED_BYTES..].to_vec();
    Some(Record {
        entry: GoiEntry {
            batch_index: u64_at(0),
            first_message: u64_at(8),
            broker: u32_at(16),
            message_count: u32_at(20),
            payload_offset: 0,
            byte_len: payload.len() as u32,
            client_id: u64_at(24),
            session_epoch: u32_at(32),
            batch_seq: u64_at(36),
            ring_seq: 0,
        },
        payload,
    })
}

/// Rebuilds a freshly created shared-memory file from the first replica that has records
/// (after every process and the shared memory itself were lost): payload back into each
/// broker's log, GOI entries at their original indexes, committed prefix after the last.
pub fn restore(shm: &TopicShm, topic_dir: &Path) -> Result<()> {
    let records = (0..shm.replication_factor())
        .map(|r| read_records(&replica_dir(topic_dir, r)))
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .max_by_key(|records| records.last().map_or(0, |r| r.entry.batch_index + 1));
    let Some(records) = records.filter(|r| !r.is_empty()) else {
        return Ok(());
    };
    let brokers = shm.layout().brokers_max as u32;
    let mut logs: Vec<PayloadLog> = (0..brokers)
        .map(|_| PayloadLog::new(shm.layout().payload_bytes, 0))
        .collect();
    for record in &records {
        let broker = record.entry.broker.min(brokers - 1);
        let log = &mut logs[broker as usize];
        // Released at once: older batches than the log holds are recycled, as a running broker
        // would have done.
        let (offset, tail) = log
            .reserve(record.entry.byte_len)
            .expect("a released log has room");
        log.release(offset);
        shm.set_frontier(broker, frontier::PAYLOAD_TAIL, tail);
        // Safety: the file is fresh and this process is its only user until restore returns.
        unsafe { shm.payload_mut(broker, offset, record.entry.byte_len) }
            .copy_from_slice(&record.payload);
        shm.write_goi(&GoiEntry {
            payload_offset: offset,
            broker,
            ..record.entry
        });
    }
    let next = records.last().map_or(0, |r| r.entry.batch_index + 1);
    shm.restore_committed(next);
    tracing::info!(
        batches = records.len(),
        next,
        "restored topic from its ACK 2 replicas"
    );
    Ok(())
}
