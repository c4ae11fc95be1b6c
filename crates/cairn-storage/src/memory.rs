//! The `memory` engine (the default): one ordered map per bucket.
//!
//! Durability comes from outside: the node writes every request to the WAL before applying it
//! and periodically streams `write_snapshot()` into a `SnapshotStore` file; a restart decodes the
//! newest snapshot and replays the WAL after its applied index.
//!
//! Snapshot format (all integers big-endian):
//! ```text
//! magic "CAIRNENG" | u32 schema version
//! per bucket: u8 bucket id | u64 entry count | entries: u32 key len, key, u32 value len, value
//! ```
//! The snapshot file around it carries the length and CRC (see `snapshot`).

use std::collections::{BTreeMap, HashSet};
use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use crate::bucket_map::BucketMap;
use crate::engine::{Engine, EngineError, SnapshotCut, SnapshotPart, WriteBatch, WriteOp};
use crate::schema::{Bucket, SCHEMA_VERSION, SCHEMA_VERSION_MIN};

const MAGIC: &[u8; 8] = b"CAIRNENG";

// A snapshot in parts writes the `Key` bucket first, where the format puts it.
const _: () = assert!(matches!(Bucket::ALL[0], Bucket::Key));

/// Bytes charged per entry on top of key and value: map node share, key box and `Bytes`
/// header. An estimate, so that the quota tracks real memory rather than payload alone.
const ENTRY_OVERHEAD_BYTES: u64 = 64;

/// In-memory engine; see the module doc. Values are boxed slices, not `Bytes`: 16 bytes less
/// per entry (~30 MB of RSS with a million keys); reads pay one copy of the value instead.
#[derive(Debug)]
pub struct MemoryEngine {
    buckets: [BucketMap; Bucket::ALL.len()],
    size_bytes: u64,
    /// Writes to the `Key` bucket that were not appends (compaction's removals): what makes a
    /// snapshot in parts start again (`SnapshotPart::Moved`).
    key_rewrites: u64,
    /// Unique in this process: a snapshot cut of another engine (one an installed snapshot
    /// replaced between two parts) is `Moved` too.
    id: u64,
}

/// Source of `MemoryEngine::id`.
static NEXT_ENGINE_ID: AtomicU64 = AtomicU64::new(1);

impl Default for MemoryEngine {
    fn default() -> MemoryEngine {
        MemoryEngine::new()
    }
}

impl MemoryEngine {
    pub fn new() -> MemoryEngine {
        let map = |bucket: Bucket| match bucket {
            // Revisions only grow: an append-only sorted vector (see `bucket_map`).
            Bucket::Key => BucketMap::Log(Vec::new()),
            _ => BucketMap::Tree(BTreeMap::new()),
        };
        MemoryEngine {
            buckets: Bucket::ALL.map(map),
            size_bytes: 0,
            key_rewrites: 0,
            id: NEXT_ENGINE_ID.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Rebuilds an engine from `write_snapshot` output.
    pub fn decode_snapshot(data: &[u8]) -> Result<MemoryEngine, EngineError> {
        let mut reader = Reader { data, pos: 0 };
        if reader.take(MAGIC.len())? != MAGIC {
            return Err(EngineError::BadMagic);
        }
        let version = reader.u32()?;
        if !(SCHEMA_VERSION_MIN..=SCHEMA_VERSION).contains(&version) {
            return Err(EngineError::SchemaVersion {
                found: version,
                expected: SCHEMA_VERSION,
            });
        }
        let mut engine = MemoryEngine::new();
        // Every bucket is written, in id order, so a snapshot cut at a bucket boundary is
        // still refused.
        let present = Bucket::ALL
            .into_iter()
            .filter(|bucket| bucket.since_version() <= version);
        for expected in present {
            let id = reader.take(1)?[0];
            let bucket = Bucket::from_id(id).ok_or(EngineError::UnknownBucket(id))?;
            if bucket != expected {
                return Err(EngineError::UnknownBucket(id));
            }
            let count = reader.u64()?;
            for _ in 0..count {
                let key_len = reader.u32()? as usize;
                let key = reader.take(key_len)?;
                let value_len = reader.u32()? as usize;
                let value = reader.take(value_len)?;
                engine.insert(bucket, key.into(), value.into());
            }
        }
        if reader.pos != data.len() {
            return Err(EngineError::TrailingBytes(reader.pos));
        }
        Ok(engine)
    }

    fn insert(&mut self, bucket: Bucket, key: Box<[u8]>, value: Box<[u8]>) {
        let key_len = key.len();
        let added = entry_bytes(key_len, value.len());
        if bucket == Bucket::Key && !self.buckets[bucket.slot()].appends(&key) {
            self.key_rewrites += 1;
        }
        if let Some(old) = self.buckets[bucket.slot()].insert(key, value) {
            self.size_bytes -= entry_bytes(key_len, old.len());
        }
        self.size_bytes += added;
    }

    /// Applies the deletes collected for `bucket`, in one pass over it.
    fn remove_pending(&mut self, bucket: Bucket, pending: &mut HashSet<Box<[u8]>>) {
        if pending.is_empty() {
            return;
        }
        if bucket == Bucket::Key {
            self.key_rewrites += 1;
        }
        for (key, old) in self.buckets[bucket.slot()].remove_all(pending) {
            self.size_bytes -= entry_bytes(key.len(), old.len());
        }
        pending.clear();
    }
}

fn entry_bytes(key_len: usize, value_len: usize) -> u64 {
    (key_len + value_len) as u64 + ENTRY_OVERHEAD_BYTES
}

impl Engine for MemoryEngine {
    fn get(&self, bucket: Bucket, key: &[u8]) -> Option<Bytes> {
        self.buckets[bucket.slot()]
            .get(key)
            .map(Bytes::copy_from_slice)
    }

    fn scan(
        &self,
        bucket: Bucket,
        start: &[u8],
        end: Option<&[u8]>,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) {
        self.buckets[bucket.slot()].visit(start, end, visit);
    }

    fn write(&mut self, batch: WriteBatch) {
        // Deletes are collected per bucket and applied in one pass (a compaction deletes
        // thousands of records); a put to a bucket first applies the deletes before it, so the
        // ops keep their order.
        let mut pending: [HashSet<Box<[u8]>>; Bucket::ALL.len()] = Default::default();
        for op in batch.into_ops() {
            match op {
                WriteOp::Put { bucket, key, value } => {
                    self.remove_pending(bucket, &mut pending[bucket.slot()]);
                    // Unique `Bytes` built from a `Vec` (how the store encodes records) turn
                    // back into that allocation without copying.
                    let value = Vec::from(value).into_boxed_slice();
                    self.insert(bucket, key.into(), value)
                }
                WriteOp::Delete { bucket, key } => {
                    pending[bucket.slot()].insert(key.into());
                }
            }
        }
        for bucket in Bucket::ALL {
            self.remove_pending(bucket, &mut pending[bucket.slot()]);
        }
    }

    fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    fn len(&self, bucket: Bucket) -> usize {
        self.buckets[bucket.slot()].len()
    }

    fn snapshot_cut(&self) -> SnapshotCut {
        let records = self.buckets[Bucket::Key.slot()].len();
        let mut head = Vec::with_capacity(MAGIC.len() + 4 + 1 + 8);
        head.extend_from_slice(MAGIC);
        head.extend_from_slice(&SCHEMA_VERSION.to_be_bytes());
        head.push(Bucket::Key as u8);
        head.extend_from_slice(&(records as u64).to_be_bytes());
        let mut tail = Vec::new();
        for bucket in Bucket::ALL.into_iter().filter(|b| *b != Bucket::Key) {
            let map = &self.buckets[bucket.slot()];
            tail.push(bucket as u8);
            tail.extend_from_slice(&(map.len() as u64).to_be_bytes());
            for (key, value) in map.iter() {
                write_entry(&mut tail, key, value).expect("writing to a Vec cannot fail");
            }
        }
        SnapshotCut {
            head,
            tail,
            records,
            written: 0,
            rewrites: self.key_rewrites,
            engine: self.id,
        }
    }

    fn write_snapshot_part(
        &self,
        cut: &mut SnapshotCut,
        out: &mut dyn Write,
        records_max: usize,
    ) -> io::Result<SnapshotPart> {
        if cut.engine != self.id || cut.rewrites != self.key_rewrites {
            return Ok(SnapshotPart::Moved);
        }
        if cut.written == 0 {
            out.write_all(&cut.head)?;
        }
        let to = cut.records.min(cut.written.saturating_add(records_max));
        for (key, value) in self.buckets[Bucket::Key.slot()].positions(cut.written, to) {
            write_entry(out, key, value)?;
        }
        cut.written = to;
        if to < cut.records {
            return Ok(SnapshotPart::More);
        }
        out.write_all(&cut.tail)?;
        Ok(SnapshotPart::Done)
    }
}

fn write_entry(out: &mut dyn Write, key: &[u8], value: &[u8]) -> io::Result<()> {
    out.write_all(&(key.len() as u32).to_be_bytes())?;
    out.write_all(key)?;
    out.write_all(&(value.len() as u32).to_be_bytes())?;
    out.write_all(value)
}

/// Cursor over snapshot bytes that turns running out of input into `Truncated`.
struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], EngineError> {
        let end = self
            .pos
            .checked_add(len)
            .filter(|end| *end <= self.data.len());
        let end = end.ok_or(EngineError::Truncated(self.pos))?;
        let bytes = &self.data[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn u32(&mut self) -> Result<u32, EngineError> {
        let bytes = self.take(4)?;
        Ok(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    fn u64(&mut self) -> Result<u64, EngineError> {
        let mut buf = [0u8; 8];
        buf.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(buf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> MemoryEngine {
        let mut engine = MemoryEngine::new();
        let mut batch = WriteBatch::new();
        batch.put(Bucket::Key, b"b".to_vec(), Bytes::from_static(b"2"));
        batch.put(Bucket::Key, b"a".to_vec(), Bytes::from_static(b"1"));
        batch.put(Bucket::Key, b"c".to_vec(), Bytes::from_static(b"3"));
        batch.put(
            Bucket::Meta,
            b"applied_index".to_vec(),
            Bytes::from_static(b"\0\0\0\0\0\0\0\x07"),
        );
        batch.delete(Bucket::Key, b"c".to_vec());
        engine.write(batch);
        engine
    }

    fn keys(engine: &MemoryEngine, start: &[u8], end: Option<&[u8]>) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        engine.scan(Bucket::Key, start, end, &mut |key, _| {
            out.push(key.to_vec());
            true
        });
        out
    }

    #[test]
    fn batch_applies_in_order_and_scan_is_ordered_and_bounded() {
        let engine = sample();
        assert_eq!(keys(&engine, b"", None), vec![b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(keys(&engine, b"a", Some(b"b")), vec![b"a".to_vec()]);
        assert!(keys(&engine, b"b", Some(b"a")).is_empty());
        assert_eq!(engine.get(Bucket::Key, b"c"), None);
        assert_eq!(engine.len(Bucket::Key), 2);
        assert_eq!(
            engine.size_bytes(),
            3 * ENTRY_OVERHEAD_BYTES + 2 + 2 + 13 + 8
        );
    }

    #[test]
    fn snapshot_round_trips_and_rejects_damage() {
        let engine = sample();
        let mut bytes = Vec::new();
        engine.write_snapshot(&mut bytes).expect("into a Vec");
        let restored = MemoryEngine::decode_snapshot(&bytes).expect("decodes");
        assert_eq!(restored.buckets, engine.buckets);
        assert_eq!(restored.size_bytes(), engine.size_bytes());
        for cut in 0..bytes.len() {
            let decoded = MemoryEngine::decode_snapshot(&bytes[..cut]);
            assert!(
                decoded.is_err(),
                "a {cut}-byte prefix of {} was accepted",
                bytes.len()
            );
        }
        let mut bad = bytes.clone();
        bad[0] ^= 1;
        assert_eq!(
            MemoryEngine::decode_snapshot(&bad).unwrap_err(),
            EngineError::BadMagic
        );
    }

    fn put_records(engine: &mut MemoryEngine, keys: std::ops::Range<u32>) {
        let mut batch = WriteBatch::new();
        // A small bucket changes with every call too.
        let lease = Bytes::from(format!("granted with {}", keys.start));
        batch.put(Bucket::Lease, b"lease".to_vec(), lease);
        for key in keys {
            let value = Bytes::from(format!("value of {key}"));
            batch.put(Bucket::Key, key.to_be_bytes().to_vec(), value);
        }
        engine.write(batch);
    }

    /// Writes `cut` in parts of `records_max`, letting `between` change the engine before
    /// every part after the first.
    fn write_parts(
        engine: &mut MemoryEngine,
        records_max: usize,
        mut between: impl FnMut(&mut MemoryEngine, usize),
    ) -> (Vec<u8>, SnapshotPart, usize) {
        let mut cut = engine.snapshot_cut();
        let mut out = Vec::new();
        let mut parts = 0;
        loop {
            if parts > 0 {
                between(engine, parts);
            }
            let part = engine
                .write_snapshot_part(&mut cut, &mut out, records_max)
                .expect("into a Vec");
            parts += 1;
            if part != SnapshotPart::More {
                return (out, part, parts);
            }
        }
    }

    #[test]
    fn a_snapshot_in_parts_holds_the_state_at_its_cut_while_newer_records_arrive() {
        let mut engine = MemoryEngine::new();
        put_records(&mut engine, 1..1000);
        let mut whole = Vec::new();
        engine.write_snapshot(&mut whole).expect("into a Vec");
        let mut next = 1000;
        let (parts_bytes, part, parts) = write_parts(&mut engine, 64, |engine, _| {
            put_records(engine, next..next + 10);
            next += 10;
        });
        assert_eq!(part, SnapshotPart::Done);
        assert_eq!(parts, 999usize.div_ceil(64));
        assert_eq!(
            parts_bytes, whole,
            "the parts differ from the state at the cut"
        );
        assert!(
            engine.len(Bucket::Key) > 1000,
            "nothing arrived between the parts"
        );
    }

    #[test]
    fn a_snapshot_in_parts_starts_again_when_records_are_removed_or_reordered() {
        let mut engine = MemoryEngine::new();
        put_records(&mut engine, 10..1000);
        let (_, part, parts) = write_parts(&mut engine, 100, |engine, part| {
            if part == 3 {
                let mut compaction = WriteBatch::new();
                compaction.delete(Bucket::Key, 10u32.to_be_bytes().to_vec());
                engine.write(compaction);
            }
        });
        assert_eq!((part, parts), (SnapshotPart::Moved, 4));
        let (_, part, parts) = write_parts(&mut engine, 100, |engine, part| {
            if part == 2 {
                put_records(engine, 5..6);
            }
        });
        assert_eq!((part, parts), (SnapshotPart::Moved, 3));
    }

    #[test]
    fn a_snapshot_cut_of_a_replaced_engine_is_moved() {
        let mut engine = MemoryEngine::new();
        put_records(&mut engine, 0..100);
        let mut cut = engine.snapshot_cut();
        let mut bytes = Vec::new();
        engine.write_snapshot(&mut bytes).expect("into a Vec");
        // What installing a snapshot does: the same state, a new engine, no rewrites yet.
        let installed = MemoryEngine::decode_snapshot(&bytes).expect("decodes");
        let part = installed
            .write_snapshot_part(&mut cut, &mut Vec::new(), 10)
            .expect("into a Vec");
        assert_eq!(part, SnapshotPart::Moved);
    }
}
