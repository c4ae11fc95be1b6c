//! The `memory` engine (the default): one ordered map per bucket.
//!
//! Durability comes from outside: the node writes every request to the WAL before applying it
//! and periodically stores `encode_snapshot()` through `SnapshotStore`; a restart decodes the
//! newest snapshot and replays the WAL after its applied index.
//!
//! Snapshot format (all integers big-endian):
//! ```text
//! magic "CAIRNENG" | u32 schema version
//! per bucket: u8 bucket id | u64 entry count | entries: u32 key len, key, u32 value len, value
//! ```
//! The snapshot file around it carries the length and CRC (see `snapshot`).

use std::collections::BTreeMap;
use std::ops::Bound;

use bytes::Bytes;

use crate::engine::{Engine, EngineError, WriteBatch, WriteOp};
use crate::schema::{Bucket, SCHEMA_VERSION};

const MAGIC: &[u8; 8] = b"CAIRNENG";

/// Bytes charged per entry on top of key and value: map node share, key box and `Bytes`
/// header. An estimate, so that the quota tracks real memory rather than payload alone.
const ENTRY_OVERHEAD_BYTES: u64 = 64;

/// Values are boxed slices, not `Bytes`: 16 bytes less in every B-tree slot, and slots are only
/// about half full when keys arrive in order (revisions always do). With a million keys that
/// is ~30 MB of RSS; reads pay one copy of the value instead.
type Map = BTreeMap<Box<[u8]>, Box<[u8]>>;

/// In-memory engine; see the module doc.
#[derive(Default, Debug)]
pub struct MemoryEngine {
    buckets: [Map; Bucket::ALL.len()],
    size_bytes: u64,
}

impl MemoryEngine {
    pub fn new() -> MemoryEngine {
        MemoryEngine::default()
    }

    /// Rebuilds an engine from `encode_snapshot` output.
    pub fn decode_snapshot(data: &[u8]) -> Result<MemoryEngine, EngineError> {
        let mut reader = Reader { data, pos: 0 };
        if reader.take(MAGIC.len())? != MAGIC {
            return Err(EngineError::BadMagic);
        }
        let version = reader.u32()?;
        if version != SCHEMA_VERSION {
            return Err(EngineError::SchemaVersion {
                found: version,
                expected: SCHEMA_VERSION,
            });
        }
        let mut engine = MemoryEngine::new();
        // Every bucket is written, in id order, so a snapshot cut at a bucket boundary is
        // still refused.
        for expected in Bucket::ALL {
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
        let added = entry_bytes(&key, &value);
        if let Some(old) = self.buckets[bucket.slot()].insert(key.clone(), value) {
            self.size_bytes -= entry_bytes(&key, &old);
        }
        self.size_bytes += added;
    }

    fn remove(&mut self, bucket: Bucket, key: &[u8]) {
        if let Some((key, old)) = self.buckets[bucket.slot()].remove_entry(key) {
            self.size_bytes -= entry_bytes(&key, &old);
        }
    }
}

fn entry_bytes(key: &[u8], value: &[u8]) -> u64 {
    key.len() as u64 + value.len() as u64 + ENTRY_OVERHEAD_BYTES
}

impl Engine for MemoryEngine {
    fn get(&self, bucket: Bucket, key: &[u8]) -> Option<Bytes> {
        let value = self.buckets[bucket.slot()].get(key)?;
        Some(Bytes::copy_from_slice(value))
    }

    fn scan(
        &self,
        bucket: Bucket,
        start: &[u8],
        end: Option<&[u8]>,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) {
        let upper = match end {
            Some(end) if end <= start => return,
            Some(end) => Bound::Excluded(end),
            None => Bound::Unbounded,
        };
        let range = self.buckets[bucket.slot()].range::<[u8], _>((Bound::Included(start), upper));
        for (key, value) in range {
            if !visit(key, value) {
                break;
            }
        }
    }

    fn write(&mut self, batch: WriteBatch) {
        for op in batch.into_ops() {
            match op {
                WriteOp::Put { bucket, key, value } => {
                    // Unique `Bytes` built from a `Vec` (how the store encodes records) turn
                    // back into that allocation without copying.
                    let value = Vec::from(value).into_boxed_slice();
                    self.insert(bucket, key.into(), value)
                }
                WriteOp::Delete { bucket, key } => self.remove(bucket, &key),
            }
        }
    }

    fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    fn len(&self, bucket: Bucket) -> usize {
        self.buckets[bucket.slot()].len()
    }

    fn encode_snapshot(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.size_bytes as usize + 64);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&SCHEMA_VERSION.to_be_bytes());
        for bucket in Bucket::ALL {
            let map = &self.buckets[bucket.slot()];
            out.push(bucket as u8);
            out.extend_from_slice(&(map.len() as u64).to_be_bytes());
            for (key, value) in map {
                out.extend_from_slice(&(key.len() as u32).to_be_bytes());
                out.extend_from_slice(key);
                out.extend_from_slice(&(value.len() as u32).to_be_bytes());
                out.extend_from_slice(value);
            }
        }
        out
    }
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
        let bytes = engine.encode_snapshot();
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
}
