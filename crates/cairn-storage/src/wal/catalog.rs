//! Where each written record sits: per segment, the byte offset of every record, so that
//! [`Wal::read`](super::Wal::read) fetches old entries with one positioned read per segment and
//! the layer above need not keep its log in memory.
//!
//! The writer thread is the only writer (after each fsync, at rolls, purges and truncations);
//! readers share it under an `RwLock`. A record is listed only once the fsync covering it
//! returned, so a reader never sees bytes a crash could still take back. Memory: 8 bytes per
//! record of the live segments.

use std::fs::File;
use std::path::PathBuf;

use bytes::Bytes;

use crate::error::{Corruption, WalError};
use crate::wal::record;
use crate::wal::Entry;

/// One segment's listed records.
#[derive(Debug)]
struct Located {
    first_index: u64,
    path: PathBuf,
    /// Index of the record at `offsets[0]`: the segment's first, unless recovery skipped the
    /// segment (every entry in it was at or below the caller's `after_index`: none listed) and
    /// a truncation later cut into it.
    first_listed: u64,
    /// `offsets[i]` is where record `first_listed + i` starts.
    offsets: Vec<u64>,
    /// The byte after the last listed record.
    end: u64,
}

/// The record locations of every live segment, oldest first.
#[derive(Debug, Default)]
pub(crate) struct Catalog {
    segments: Vec<Located>,
}

impl Catalog {
    /// Lists a segment after the existing ones, with the records at `offsets` ending at `end`.
    pub(crate) fn add_segment(
        &mut self,
        first_index: u64,
        path: PathBuf,
        offsets: Vec<u64>,
        end: u64,
    ) {
        if let Some(last) = self.segments.last() {
            assert!(
                last.first_index < first_index,
                "wal catalog: segment {first_index} listed after segment {}",
                last.first_index
            );
        }
        self.segments.push(Located {
            first_index,
            path,
            first_listed: first_index,
            offsets,
            end,
        });
    }

    /// Lists records just made durable at the end of the last segment.
    pub(crate) fn add_records(&mut self, offsets: &[u64], end: u64) {
        let last = self
            .segments
            .last_mut()
            .expect("wal catalog: records written without a segment");
        assert!(
            offsets.first().is_none_or(|first| *first >= last.end) && end >= last.end,
            "wal catalog: records listed before the end of segment {}",
            last.first_index
        );
        last.offsets.extend_from_slice(offsets);
        last.end = end;
    }

    /// Forgets the oldest segment (before its file is removed).
    pub(crate) fn remove_oldest(&mut self) {
        self.segments.remove(0);
    }

    /// Forgets every segment after the first `keep`, and in the last one kept every record past
    /// `end_offset`, which becomes its end: records `>= index`, where `end_offset` is where record
    /// `index` started, are gone.
    pub(crate) fn truncate(&mut self, keep: usize, index: u64, end_offset: u64) {
        self.segments.truncate(keep);
        if let Some(last) = self.segments.last_mut() {
            let kept = index
                .checked_sub(last.first_listed)
                .map(|kept| kept as usize);
            if let Some(kept) = kept.filter(|kept| *kept <= last.offsets.len()) {
                last.offsets.truncate(kept);
            } else {
                last.offsets.clear();
                last.first_listed = index;
            }
            last.end = end_offset;
        }
    }

    pub(crate) fn clear(&mut self) {
        self.segments.clear();
    }

    /// Opens the segments holding records `first..=last` and says which bytes to read. The
    /// files are opened here, under the caller's read lock, so that a purge that removes them
    /// afterwards cannot make the read fail.
    pub(crate) fn spans(&self, first: u64, last: u64) -> Result<Vec<Span>, WalError> {
        let mut spans = Vec::new();
        let mut next = first;
        while next <= last {
            let position = self
                .segments
                .partition_point(|segment| segment.first_index <= next)
                .checked_sub(1)
                .ok_or(WalError::NotListed { index: next })?;
            let segment = &self.segments[position];
            let skip = next
                .checked_sub(segment.first_listed)
                .map(|skip| skip as usize)
                .filter(|skip| *skip < segment.offsets.len())
                .ok_or(WalError::NotListed { index: next })?;
            let count = (segment.offsets.len() - skip).min((last - next + 1) as usize);
            let end = segment
                .offsets
                .get(skip + count)
                .copied()
                .unwrap_or(segment.end);
            let file =
                File::open(&segment.path).map_err(|e| WalError::io("open", &segment.path, e))?;
            spans.push(Span {
                file,
                path: segment.path.clone(),
                first_index: next,
                count,
                start: segment.offsets[skip],
                end,
            });
            next += count as u64;
        }
        Ok(spans)
    }
}

/// Consecutive records of one segment: `count` records from `first_index`, in bytes
/// `start..end` of `file`.
pub(crate) struct Span {
    file: File,
    path: PathBuf,
    first_index: u64,
    count: usize,
    start: u64,
    end: u64,
}

impl Span {
    /// Reads the records with one positioned read and checks each (CRC, index) as recovery
    /// would; the payloads share the one buffer.
    pub(crate) fn read_into(self, out: &mut Vec<Entry>) -> Result<(), WalError> {
        use std::os::unix::fs::FileExt;
        let mut buffer = vec![0; (self.end - self.start) as usize];
        self.file
            .read_exact_at(&mut buffer, self.start)
            .map_err(|e| WalError::io("read", &self.path, e))?;
        let bytes = Bytes::from(buffer);
        let mut position = 0;
        for expected in self.first_index..self.first_index + self.count as u64 {
            let corrupt = |reason| WalError::Corrupt {
                path: self.path.clone(),
                offset: self.start + position as u64,
                reason,
            };
            let record = record::decode(&bytes[position..])
                .map_err(corrupt)?
                .ok_or(corrupt(Corruption::Truncated))?;
            if record.index != expected {
                return Err(corrupt(Corruption::Index {
                    expected,
                    found: record.index,
                }));
            }
            let data_start = position + record::RECORD_HEADER_BYTES;
            let data = bytes.slice(data_start..data_start + record.data.len());
            let (index, term) = (record.index, record.term);
            position += record.encoded_len();
            out.push(Entry { index, term, data });
        }
        assert_eq!(
            position,
            bytes.len(),
            "wal catalog: records {}..{} of {} do not fill bytes {}..{}",
            self.first_index,
            self.first_index + self.count as u64,
            self.path.display(),
            self.start,
            self.end
        );
        Ok(())
    }
}
