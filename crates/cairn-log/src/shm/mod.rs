//! A topic's shared-memory file: the "CXL memory" every broker process on the host maps.
//!
//! ```text
//! [header page]   magic, version, sizes, order/ack, READY (stored last by the creator)
//! [control page]  line 0: RESERVED, COMMITTED  (sequencer; each `fence epoch << 48 | count`)
//!                 lines 1-3: void ranges left by sequencer takeovers (sequencer)
//!                 from byte 2048: one line per ACK 2 replica: durable GOI entries (its writer)
//! per broker b:   frontier line: RING_HEAD, PAYLOAD_TAIL, ACKED          (broker b)
//!                 consumed line: ring slots scanned                       (sequencer)
//!                 descriptor ring: ring_slots x 64 B, READY stored last  (broker b)
//!                 status ring: ring_slots x 16 B, [ring_seq+1, outcome]  (sequencer)
//!                 payload log: segments of `SEGMENT_BYTES`, used circularly
//! [GOI]           goi_slots x 64 B entries, INDEX stored last             (sequencer)
//! ```
//!
//! Rules (LOG.md "Data path rules"): every 128-byte line has one writer; counters only grow;
//! the file holds offsets, never pointers; a record's completion word (descriptor READY, GOI
//! INDEX, status sequence) is stored last with release ordering and read first with acquire,
//! and it names the sequence number it completes, so a recycled slot never passes for a new one.
//! Pages are claimed for writing before the data path needs them, because first-touch faults
//! inside `recv()` serialise on a kernel lock: the creator stores to every page of the file
//! (allocating it), and each process claims again, in its own mapping, the block it writes (a
//! broker its ring and payload log, the sequencer the order index). The claim is a store from
//! user space, not `MADV_POPULATE_WRITE`, and it is repeated in every mapping even though a
//! populated mapping of tmpfs takes writes without faulting: on the project's VMs, payload
//! received into pages no store of this mapping had touched arrived ~1/3 slower the first time
//! round (4 KiB ORDER 2, one broker populated by the madvise: 3.1-3.3 vs 4.5-4.8 GB/s; a second
//! broker's block unclaimed: 3.9 vs 4.6-4.7 GB/s; docs/perf/log.md). The likely cost is the
//! CPU setting each page table entry's dirty bit on first write, which a VM makes expensive.
//!
//! Payload bytes are not atomics: a receiving connection owns its reserved range until its
//! descriptor is published, and readers copy a range out and then re-check that the broker's
//! reservation tail has not lapped it (`payload_still_valid`).

pub mod layout;

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{fence, AtomicU64, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use memmap2::{MmapOptions, MmapRaw};

use crate::error::{LogError, Result};
use crate::limits::VOID_RANGES_MAX;
use crate::topic::TopicConfig;
use layout::{control, descriptor, frontier, goi, header, Layout, LAYOUT_VERSION, LINE, MAGIC};

const COUNT_BITS: u32 = 48;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;

/// A batch as its broker announced it in the descriptor ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Descriptor {
    pub payload_offset: u64,
    pub byte_len: u32,
    pub message_count: u32,
    pub client_id: u64,
    pub session_epoch: u32,
    pub connection_id: u32,
    pub batch_seq: u64,
}

/// What the sequencer decided for a ring slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// In the GOI at this batch index.
    Ordered { batch_index: u64 },
    /// Refused: the session was fenced; batches below `next_seq` are in the order.
    Fenced { next_seq: u64 },
    /// Already in the order (a resend); nothing new was added.
    Duplicate,
}

const OUTCOME_ORDERED: u64 = 1 << 62;
const OUTCOME_FENCED: u64 = 2 << 62;
const OUTCOME_DUPLICATE: u64 = 3 << 62;
const OUTCOME_VALUE: u64 = (1 << 62) - 1;

impl Outcome {
    fn encode(self) -> u64 {
        match self {
            Outcome::Ordered { batch_index } => OUTCOME_ORDERED | batch_index,
            Outcome::Fenced { next_seq } => OUTCOME_FENCED | next_seq,
            Outcome::Duplicate => OUTCOME_DUPLICATE,
        }
    }

    fn decode(word: u64) -> Option<Outcome> {
        let value = word & OUTCOME_VALUE;
        match word & !OUTCOME_VALUE {
            OUTCOME_ORDERED => Some(Outcome::Ordered { batch_index: value }),
            OUTCOME_FENCED => Some(Outcome::Fenced { next_seq: value }),
            OUTCOME_DUPLICATE => Some(Outcome::Duplicate),
            _ => None,
        }
    }
}

/// One entry of the global order index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GoiEntry {
    pub batch_index: u64,
    pub first_message: u64,
    pub broker: u32,
    pub message_count: u32,
    pub payload_offset: u64,
    pub byte_len: u32,
    pub session_epoch: u32,
    pub client_id: u64,
    pub batch_seq: u64,
    pub ring_seq: u64,
}

/// The sequencer words of the control block, unpacked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SequencerState {
    pub epoch: u64,
    pub reserved: u64,
    pub committed: u64,
}

pub struct TopicShm {
    map: MmapRaw,
    layout: Layout,
    path: PathBuf,
    order: u32,
    ack: u32,
    replication_factor: u32,
}

// Safety: every shared word is accessed through `AtomicU64`; payload ranges are written only by
// the connection that reserved them and read only after their descriptor was published.
unsafe impl Send for TopicShm {}
unsafe impl Sync for TopicShm {}

impl TopicShm {
    /// Maps `path`, creating and pre-faulting it if this process is the first (`O_EXCL`
    /// decides), otherwise waiting until the creator has stored READY.
    pub fn create_or_open(path: &Path, topic: &TopicConfig) -> Result<TopicShm> {
        match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
        {
            Ok(file) => Self::create(path, file, topic),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Self::open(path),
            Err(e) => Err(e.into()),
        }
    }

    fn create(path: &Path, file: File, topic: &TopicConfig) -> Result<TopicShm> {
        let layout = Layout::of(topic);
        file.set_len(layout.total_bytes())?;
        let map = MmapOptions::new().map_raw(&file)?;
        claim_for_write(&map, 0..layout.total_bytes());
        let shm = TopicShm {
            map,
            layout,
            path: path.to_path_buf(),
            order: topic.order.into(),
            ack: topic.ack.into(),
            replication_factor: topic.replication_factor,
        };
        let set = |word: u64, value: u64| shm.word(word * 8).store(value, Ordering::Relaxed);
        set(header::MAGIC, MAGIC);
        set(header::VERSION, LAYOUT_VERSION);
        set(header::BROKERS_MAX, layout.brokers_max);
        set(header::RING_SLOTS, layout.ring_slots);
        set(header::PAYLOAD_BYTES, layout.payload_bytes);
        set(header::GOI_SLOTS, layout.goi_slots);
        set(header::ORDER, u64::from(u32::from(topic.order)));
        set(header::ACK, u64::from(u32::from(topic.ack)));
        set(header::REPLICATION_FACTOR, topic.replication_factor.into());
        shm.word(header::READY * 8).store(1, Ordering::Release);
        tracing::info!(path = %path.display(), bytes = layout.total_bytes(), "created topic shared memory");
        Ok(shm)
    }

    /// Maps an existing file; its header is the authority on sizes and levels.
    pub fn open(path: &Path) -> Result<TopicShm> {
        let bad = |reason: String| LogError::BadShm {
            path: path.display().to_string(),
            reason,
        };
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        // The creator sizes the file, pre-faults it and stores READY last.
        loop {
            let len = file.metadata()?.len();
            if len >= layout::HEADER_BYTES {
                let map = MmapOptions::new()
                    .len(layout::HEADER_BYTES as usize)
                    .map_raw(&file)?;
                let words = map.as_ptr() as *const AtomicU64;
                // Safety: the mapping is at least one page, page aligned.
                let read = |w: u64| unsafe { (*words.add(w as usize)).load(Ordering::Acquire) };
                if read(header::READY) == 1 {
                    if read(header::MAGIC) != MAGIC || read(header::VERSION) != LAYOUT_VERSION {
                        return Err(bad("not a Cairn log file of layout version 1".into()));
                    }
                    let layout = Layout {
                        brokers_max: read(header::BROKERS_MAX),
                        ring_slots: read(header::RING_SLOTS),
                        payload_bytes: read(header::PAYLOAD_BYTES),
                        goi_slots: read(header::GOI_SLOTS),
                    };
                    if !layout.ring_slots.is_power_of_two()
                        || !layout.goi_slots.is_power_of_two()
                        || layout.total_bytes() != len
                    {
                        return Err(bad(format!(
                            "header sizes {layout:?} do not match length {len}"
                        )));
                    }
                    let (order, ack, rf) = (
                        read(header::ORDER),
                        read(header::ACK),
                        read(header::REPLICATION_FACTOR),
                    );
                    let map = MmapOptions::new().populate().map_raw(&file)?;
                    return Ok(TopicShm {
                        map,
                        layout,
                        path: path.to_path_buf(),
                        order: order as u32,
                        ack: ack as u32,
                        replication_factor: rf as u32,
                    });
                }
            }
            if Instant::now() > deadline {
                return Err(bad("creator never finished (READY not set)".into()));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Claims `broker`'s block for writing in this process's mapping (see the module doc).
    pub fn claim_broker_block(&self, broker: u32) {
        claim_for_write(&self.map, self.layout.broker_block(broker));
    }

    /// Claims the global order index for writing in this process's mapping.
    pub fn claim_goi_block(&self) {
        claim_for_write(&self.map, self.layout.goi_block());
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn order(&self) -> u32 {
        self.order
    }

    pub fn ack(&self) -> u32 {
        self.ack
    }

    pub fn replication_factor(&self) -> u32 {
        self.replication_factor
    }

    fn word(&self, byte_offset: u64) -> &AtomicU64 {
        assert!(
            byte_offset % 8 == 0 && byte_offset + 8 <= self.layout_len(),
            "word {byte_offset}"
        );
        // Safety: in bounds (checked), 8-byte aligned (the map is page aligned), and shared
        // words are only ever accessed atomically.
        unsafe { &*(self.map.as_mut_ptr().add(byte_offset as usize) as *const AtomicU64) }
    }

    fn layout_len(&self) -> u64 {
        self.map.len() as u64
    }

    // ---- broker frontier ------------------------------------------------------------------

    pub fn frontier(&self, broker: u32, field: u64) -> u64 {
        self.word(self.layout.frontier(broker, field))
            .load(Ordering::Acquire)
    }

    pub fn set_frontier(&self, broker: u32, field: u64, value: u64) {
        let word = self.word(self.layout.frontier(broker, field));
        debug_assert!(
            word.load(Ordering::Relaxed) <= value,
            "frontier {field} went backwards"
        );
        word.store(value, Ordering::Release);
    }

    pub fn consumed(&self, broker: u32) -> u64 {
        self.word(self.layout.consumed(broker))
            .load(Ordering::Acquire)
    }

    pub fn set_consumed(&self, broker: u32, value: u64) {
        let word = self.word(self.layout.consumed(broker));
        assert!(
            word.load(Ordering::Relaxed) <= value,
            "consumed cursor went backwards"
        );
        word.store(value, Ordering::Release);
    }

    // ---- descriptors ----------------------------------------------------------------------

    /// Stores a descriptor's fields, then READY (release): a reader that sees READY sees all.
    pub fn publish_descriptor(&self, broker: u32, ring_seq: u64, d: &Descriptor) {
        let at = |w| self.word(self.layout.descriptor(broker, ring_seq, w));
        at(descriptor::PAYLOAD_OFFSET).store(d.payload_offset, Ordering::Relaxed);
        at(descriptor::SIZES).store(
            u64::from(d.byte_len) | u64::from(d.message_count) << 32,
            Ordering::Relaxed,
        );
        at(descriptor::CLIENT_ID).store(d.client_id, Ordering::Relaxed);
        at(descriptor::SESSION).store(
            u64::from(d.session_epoch) | u64::from(d.connection_id) << 32,
            Ordering::Relaxed,
        );
        at(descriptor::BATCH_SEQ).store(d.batch_seq, Ordering::Relaxed);
        at(descriptor::READY).store(ring_seq + 1, Ordering::Release);
    }

    /// The descriptor at `ring_seq` if it is published and not yet recycled.
    pub fn read_descriptor(&self, broker: u32, ring_seq: u64) -> Option<Descriptor> {
        let at = |w| self.word(self.layout.descriptor(broker, ring_seq, w));
        self.read_complete(at(descriptor::READY), ring_seq + 1, || {
            let sizes = at(descriptor::SIZES).load(Ordering::Relaxed);
            let session = at(descriptor::SESSION).load(Ordering::Relaxed);
            Descriptor {
                payload_offset: at(descriptor::PAYLOAD_OFFSET).load(Ordering::Relaxed),
                byte_len: sizes as u32,
                message_count: (sizes >> 32) as u32,
                client_id: at(descriptor::CLIENT_ID).load(Ordering::Relaxed),
                session_epoch: session as u32,
                connection_id: (session >> 32) as u32,
                batch_seq: at(descriptor::BATCH_SEQ).load(Ordering::Relaxed),
            }
        })
    }

    /// Reads a record whose completion word holds `expected` once the record is complete:
    /// check the word, read the fields, check it again. A writer recycling the slot stores its
    /// fields before the completion word, so a torn read of a recycled slot is discarded.
    fn read_complete<T>(
        &self,
        done: &AtomicU64,
        expected: u64,
        fields: impl FnOnce() -> T,
    ) -> Option<T> {
        if done.load(Ordering::Acquire) != expected {
            return None;
        }
        let value = fields();
        fence(Ordering::Acquire);
        (done.load(Ordering::Relaxed) == expected).then_some(value)
    }

    // ---- statuses -------------------------------------------------------------------------

    pub fn write_status(&self, broker: u32, ring_seq: u64, outcome: Outcome) {
        let at = |w| self.word(self.layout.status(broker, ring_seq, w));
        at(1).store(outcome.encode(), Ordering::Relaxed);
        at(0).store(ring_seq + 1, Ordering::Release);
    }

    pub fn read_status(&self, broker: u32, ring_seq: u64) -> Option<Outcome> {
        let at = |w| self.word(self.layout.status(broker, ring_seq, w));
        self.read_complete(at(0), ring_seq + 1, || at(1).load(Ordering::Relaxed))
            .and_then(Outcome::decode)
    }

    // ---- payload --------------------------------------------------------------------------

    /// The bytes at logical `offset` of `broker`'s payload log, for the connection that
    /// reserved them to receive into.
    ///
    /// # Safety
    /// The caller must own `[offset, offset + len)` (reserved, descriptor not yet published)
    /// and the range must not cross a segment boundary.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn payload_mut(&self, broker: u32, offset: u64, len: u32) -> &mut [u8] {
        let (start, len) = self.payload_range(broker, offset, len);
        std::slice::from_raw_parts_mut(self.map.as_mut_ptr().add(start), len)
    }

    /// Replaces `out` with a published batch's payload; false if the bytes were recycled
    /// while being copied (the copy must then be discarded).
    pub fn read_payload(&self, broker: u32, offset: u64, len: u32, out: &mut Vec<u8>) -> bool {
        let (start, len) = self.payload_range(broker, offset, len);
        // Safety: in bounds (checked by payload_range); a concurrent recycle can only make the
        // copy stale, which the check below detects; u8 has no invalid values.
        let src = unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(start), len) };
        out.clear();
        out.extend_from_slice(src);
        self.payload_still_valid(broker, offset)
    }

    /// True if the payload at `[offset, offset + len)` was not overwritten: the broker's
    /// reservation tail has not lapped it.
    pub fn payload_still_valid(&self, broker: u32, offset: u64) -> bool {
        fence(Ordering::Acquire);
        // A later reservation overlaps these bytes physically only once it reaches one whole
        // log length past them.
        self.frontier(broker, frontier::PAYLOAD_TAIL) <= offset + self.layout.payload_bytes
    }

    fn payload_range(&self, broker: u32, offset: u64, len: u32) -> (usize, usize) {
        let phys = offset % self.layout.payload_bytes;
        assert!(
            phys + u64::from(len) <= self.layout.payload_bytes,
            "batch at {offset}+{len} wraps the payload log"
        );
        ((self.layout.payload(broker) + phys) as usize, len as usize)
    }

    // ---- global order index ---------------------------------------------------------------

    pub fn write_goi(&self, e: &GoiEntry) {
        let at = |w| self.word(self.layout.goi(e.batch_index, w));
        at(goi::FIRST_MESSAGE).store(e.first_message, Ordering::Relaxed);
        at(goi::BROKER_COUNT).store(
            u64::from(e.broker) | u64::from(e.message_count) << 32,
            Ordering::Relaxed,
        );
        at(goi::PAYLOAD_OFFSET).store(e.payload_offset, Ordering::Relaxed);
        at(goi::LEN_EPOCH).store(
            u64::from(e.byte_len) | u64::from(e.session_epoch) << 32,
            Ordering::Relaxed,
        );
        at(goi::CLIENT_ID).store(e.client_id, Ordering::Relaxed);
        at(goi::BATCH_SEQ).store(e.batch_seq, Ordering::Relaxed);
        at(goi::RING_SEQ).store(e.ring_seq, Ordering::Relaxed);
        at(goi::INDEX).store(e.batch_index + 1, Ordering::Release);
    }

    /// The GOI entry at `index`, if it was written and not yet recycled.
    pub fn read_goi(&self, index: u64) -> Option<GoiEntry> {
        let at = |w| self.word(self.layout.goi(index, w));
        self.read_complete(at(goi::INDEX), index + 1, || {
            let broker_count = at(goi::BROKER_COUNT).load(Ordering::Relaxed);
            let len_epoch = at(goi::LEN_EPOCH).load(Ordering::Relaxed);
            GoiEntry {
                batch_index: index,
                first_message: at(goi::FIRST_MESSAGE).load(Ordering::Relaxed),
                broker: broker_count as u32,
                message_count: (broker_count >> 32) as u32,
                payload_offset: at(goi::PAYLOAD_OFFSET).load(Ordering::Relaxed),
                byte_len: len_epoch as u32,
                session_epoch: (len_epoch >> 32) as u32,
                client_id: at(goi::CLIENT_ID).load(Ordering::Relaxed),
                batch_seq: at(goi::BATCH_SEQ).load(Ordering::Relaxed),
                ring_seq: at(goi::RING_SEQ).load(Ordering::Relaxed),
            }
        })
    }

    // ---- sequencer control ----------------------------------------------------------------

    pub fn sequencer_state(&self) -> SequencerState {
        let reserved = self.word(control::RESERVED).load(Ordering::Acquire);
        let committed = self.word(control::COMMITTED).load(Ordering::Acquire);
        SequencerState {
            epoch: committed >> COUNT_BITS,
            reserved: reserved & COUNT_MASK,
            committed: committed & COUNT_MASK,
        }
    }

    /// The committed prefix: GOI entries `0..committed` are final.
    pub fn committed(&self) -> u64 {
        self.word(control::COMMITTED).load(Ordering::Acquire) & COUNT_MASK
    }

    /// Reserves GOI indexes `from..to` for a sequencer of `epoch` (one atomic per epoch). Fails
    /// if another sequencer has taken over since.
    pub fn try_reserve(&self, epoch: u64, from: u64, to: u64) -> bool {
        let word = self.word(control::RESERVED);
        word.compare_exchange(
            pack(epoch, from),
            pack(epoch, to),
            Ordering::AcqRel,
            Ordering::Acquire,
        )
        .is_ok()
    }

    /// Publishes `from..to` as committed. Fails (and the entries stay invisible) if the caller
    /// has been fenced by a takeover.
    pub fn try_commit(&self, epoch: u64, from: u64, to: u64) -> bool {
        let word = self.word(control::COMMITTED);
        word.compare_exchange(
            pack(epoch, from),
            pack(epoch, to),
            Ordering::AcqRel,
            Ordering::Acquire,
        )
        .is_ok()
    }

    /// Becomes the sequencer: bumps the fencing epoch in both control words so a zombie's
    /// reservation and commit fail from now on. Entries a zombie reserved but never committed
    /// become a void range that readers skip. Returns the new state.
    pub fn take_over(&self) -> SequencerState {
        let reserved_word = self.word(control::RESERVED);
        let committed_word = self.word(control::COMMITTED);
        loop {
            let reserved = reserved_word.load(Ordering::Acquire);
            let epoch = (reserved >> COUNT_BITS) + 1;
            let reserved_count = reserved & COUNT_MASK;
            if reserved_word
                .compare_exchange(
                    reserved,
                    pack(epoch, reserved_count),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_err()
            {
                continue;
            }
            // The old sequencer can no longer reserve; its commits of already reserved ranges
            // fail once COMMITTED carries the new epoch too.
            let committed = committed_word.swap(pack(epoch, reserved_count), Ordering::AcqRel);
            let committed_count = committed & COUNT_MASK;
            if committed_count < reserved_count {
                self.record_void(committed_count, reserved_count);
            }
            return SequencerState {
                epoch,
                reserved: reserved_count,
                committed: reserved_count,
            };
        }
    }

    /// Sets the committed prefix of a freshly created file being restored from disk.
    pub fn restore_committed(&self, committed: u64) {
        assert_eq!(
            self.sequencer_state(),
            SequencerState {
                epoch: 0,
                reserved: 0,
                committed: 0
            },
            "restore into a used file"
        );
        self.word(control::RESERVED)
            .store(pack(0, committed), Ordering::Release);
        self.word(control::COMMITTED)
            .store(pack(0, committed), Ordering::Release);
    }

    fn record_void(&self, from: u64, to: u64) {
        let count = self.word(control::VOID_COUNT);
        let n = count.load(Ordering::Acquire);
        let slot = (n % VOID_RANGES_MAX as u64) * 16;
        self.word(control::VOID_RANGES + slot)
            .store(from, Ordering::Relaxed);
        self.word(control::VOID_RANGES + slot + 8)
            .store(to, Ordering::Relaxed);
        count.store(n + 1, Ordering::Release);
        tracing::warn!(
            from,
            to,
            "sequencer takeover voided GOI entries a fenced sequencer reserved"
        );
    }

    /// True if GOI `index` lies in a range voided by a takeover (no entry will be committed).
    pub fn is_void(&self, index: u64) -> bool {
        let n = self.word(control::VOID_COUNT).load(Ordering::Acquire);
        (n.saturating_sub(VOID_RANGES_MAX as u64)..n).any(|i| {
            let slot = (i % VOID_RANGES_MAX as u64) * 16;
            let from = self
                .word(control::VOID_RANGES + slot)
                .load(Ordering::Relaxed);
            let to = self
                .word(control::VOID_RANGES + slot + 8)
                .load(Ordering::Relaxed);
            (from..to).contains(&index)
        })
    }

    // ---- durability -----------------------------------------------------------------------

    pub fn durable(&self, replica: u32) -> u64 {
        self.word(control::DURABLE + u64::from(replica) * LINE)
            .load(Ordering::Acquire)
    }

    pub fn set_durable(&self, replica: u32, value: u64) {
        self.word(control::DURABLE + u64::from(replica) * LINE)
            .store(value, Ordering::Release);
    }

    /// GOI entries durable on every replica.
    pub fn durable_everywhere(&self) -> u64 {
        (0..self.replication_factor)
            .map(|r| self.durable(r))
            .min()
            .unwrap_or(0)
    }
}

fn pack(epoch: u64, count: u64) -> u64 {
    assert!(
        count <= COUNT_MASK && epoch < 1 << (64 - COUNT_BITS),
        "control word overflow"
    );
    epoch << COUNT_BITS | count
}

/// Writes to every page of `range` so this mapping holds it allocated, writable and dirty. The
/// write is a compare-and-swap of a byte with itself: it leaves any bytes already there (a
/// broker restarting over its own log, readers copying from it) unchanged, and unlike an
/// atomic `or` with zero, which the compiler turns into a load, it is a store to the MMU.
fn claim_for_write(map: &MmapRaw, range: std::ops::Range<u64>) {
    assert!(range.end <= map.len() as u64, "claim beyond the mapping");
    for at in range.step_by(layout::PAGE as usize) {
        // Safety: in bounds (asserted); any byte is a valid AtomicU8, and swapping a byte for
        // itself does not change what a concurrent reader sees.
        let byte = unsafe { &*(map.as_mut_ptr().add(at as usize) as *const AtomicU8) };
        let value = byte.load(Ordering::Relaxed);
        // Failure is fine: whoever changed the byte has claimed the page already.
        let _ = byte.compare_exchange(value, value, Ordering::Relaxed, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topic::{AckLevel, OrderLevel};

    fn small_topic() -> TopicConfig {
        TopicConfig {
            brokers_max: 2,
            payload_bytes_per_broker: 8 << 20,
            ring_slots: 16,
            goi_slots: 64,
            ..TopicConfig::new("t", OrderLevel::Total, AckLevel::Ordered)
        }
    }

    fn entry(batch_index: u64) -> GoiEntry {
        GoiEntry {
            batch_index,
            first_message: batch_index * 10,
            broker: 1,
            message_count: 10,
            payload_offset: batch_index * 100,
            byte_len: 100,
            session_epoch: 0,
            client_id: 7,
            batch_seq: batch_index,
            ring_seq: batch_index,
        }
    }

    #[test]
    fn a_takeover_fences_the_old_sequencer_and_voids_what_it_reserved() {
        let dir = tempfile::tempdir().unwrap();
        let shm = TopicShm::create_or_open(&dir.path().join("t.shm"), &small_topic()).unwrap();
        let old = shm.take_over();
        assert_eq!((old.epoch, old.committed), (1, 0));
        assert!(shm.try_reserve(old.epoch, 0, 2));
        shm.write_goi(&entry(0));
        shm.write_goi(&entry(1));

        let new = shm.take_over();
        assert_eq!((new.epoch, new.reserved, new.committed), (2, 2, 2));
        assert!(
            !shm.try_commit(old.epoch, 0, 2),
            "the fenced sequencer cannot commit"
        );
        assert!(!shm.try_reserve(old.epoch, 2, 3), "nor reserve again");
        assert!(shm.is_void(0) && shm.is_void(1) && !shm.is_void(2));

        assert!(shm.try_reserve(new.epoch, 2, 3));
        shm.write_goi(&entry(2));
        assert!(shm.try_commit(new.epoch, 2, 3));
        assert_eq!(shm.committed(), 3);
        assert_eq!(shm.read_goi(2), Some(entry(2)));
    }

    #[test]
    fn records_are_visible_only_once_complete_and_until_recycled() {
        let dir = tempfile::tempdir().unwrap();
        let topic = small_topic();
        let shm = TopicShm::create_or_open(&dir.path().join("t.shm"), &topic).unwrap();
        let d = Descriptor {
            payload_offset: 4096,
            byte_len: 10,
            message_count: 1,
            client_id: 3,
            session_epoch: 1,
            connection_id: 9,
            batch_seq: 5,
        };
        assert_eq!(shm.read_descriptor(1, 5), None, "not published yet");
        shm.publish_descriptor(1, 5, &d);
        assert_eq!(shm.read_descriptor(1, 5), Some(d));
        assert_eq!(
            shm.read_descriptor(1, 5 + topic.ring_slots),
            None,
            "a later lap of the slot"
        );
        assert_eq!(shm.read_descriptor(0, 5), None, "another broker's ring");
        shm.write_status(1, 5, Outcome::Fenced { next_seq: 4 });
        assert_eq!(shm.read_status(1, 5), Some(Outcome::Fenced { next_seq: 4 }));
        assert_eq!(shm.read_goi(3), None);
        shm.write_goi(&entry(3));
        assert_eq!(
            shm.read_goi(3 + topic.goi_slots),
            None,
            "a recycled GOI slot names its index"
        );
    }

    #[test]
    fn a_copy_is_valid_until_the_reservation_tail_laps_it() {
        let dir = tempfile::tempdir().unwrap();
        let topic = small_topic();
        let shm = TopicShm::create_or_open(&dir.path().join("t.shm"), &topic).unwrap();
        let log = topic.payload_bytes_per_broker;
        // Safety: nobody else uses the fresh file.
        unsafe { shm.payload_mut(0, 100, 3) }.copy_from_slice(b"abc");
        shm.set_frontier(0, frontier::PAYLOAD_TAIL, 103);
        let mut out = Vec::new();
        assert!(shm.read_payload(0, 100, 3, &mut out));
        assert_eq!(out, b"abc");
        shm.set_frontier(0, frontier::PAYLOAD_TAIL, log + 100);
        assert!(
            shm.read_payload(0, 100, 3, &mut out),
            "a full lap ending right before it"
        );
        shm.set_frontier(0, frontier::PAYLOAD_TAIL, log + 101);
        assert!(
            !shm.read_payload(0, 100, 3, &mut out),
            "the next reservation overwrote it"
        );
    }

    /// Page faults this thread has taken so far.
    fn minor_faults() -> i64 {
        // Safety: getrusage only writes the struct we pass.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        assert_eq!(
            unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) },
            0
        );
        usage.ru_minflt
    }

    /// Stores into every page of `range` of `map`; returns the faults it took.
    fn faults_writing(map: &MmapRaw, range: std::ops::Range<u64>) -> i64 {
        assert!(range.end <= map.len() as u64);
        let before = minor_faults();
        for at in range.step_by(layout::PAGE as usize) {
            // Safety: in bounds; the test owns the mapping.
            unsafe { std::ptr::write_volatile(map.as_mut_ptr().add(at as usize), 7) };
        }
        minor_faults() - before
    }

    #[test]
    fn a_created_file_takes_stores_without_faults_and_a_claim_keeps_the_bytes() {
        // tmpfs, as in production: on a disk file system writeback write-protects pages again.
        let dir = tempfile::tempdir_in("/dev/shm").unwrap();
        let path = dir.path().join("t.shm");
        let topic = small_topic();
        let creator = TopicShm::create_or_open(&path, &topic).unwrap();
        let layout = *creator.layout();
        // The counter sees faults: a range no one has touched takes one per page.
        let fresh = MmapRaw::from(
            MmapOptions::new()
                .len(64 * layout::PAGE as usize)
                .map_anon()
                .unwrap(),
        );
        assert!(faults_writing(&fresh, 0..64 * layout::PAGE) >= 64);
        // (The header stays as it is: the second mapping reads it.)
        let after_header = layout.broker_block(0).start..layout.total_bytes();
        assert_eq!(faults_writing(&creator.map, after_header), 0);

        // A second process's claims run over live bytes (the 7 just stored at each page's
        // first byte, the byte a claim writes): they must not change them.
        let second = TopicShm::open(&path).unwrap();
        second.claim_broker_block(1);
        second.claim_goi_block();
        for page in [layout.broker_block(1), layout.goi_block()]
            .into_iter()
            .flat_map(|block| block.step_by(layout::PAGE as usize))
        {
            assert_eq!(creator.word(page).load(Ordering::Relaxed) & 0xff, 7);
        }
    }

    #[test]
    fn a_second_mapping_sees_the_creators_header_and_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.shm");
        let topic = small_topic();
        let first = TopicShm::create_or_open(&path, &topic).unwrap();
        first.write_goi(&entry(0));
        let other = TopicConfig {
            ring_slots: 1024,
            ..topic.clone()
        };
        let second = TopicShm::create_or_open(&path, &other).unwrap();
        assert_eq!(
            second.layout().ring_slots,
            topic.ring_slots,
            "the file's header is the authority"
        );
        assert_eq!(second.read_goi(0), Some(entry(0)));
        let mut junk = vec![0u8; 8192];
        junk[..8].copy_from_slice(b"GARBAGE!");
        junk[16] = 1; // READY
        std::fs::write(dir.path().join("junk.shm"), junk).unwrap();
        let err = TopicShm::open(&dir.path().join("junk.shm"))
            .err()
            .map(|e| e.to_string());
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains("not a Cairn log file")),
            "{err:?}"
        );
    }
}
