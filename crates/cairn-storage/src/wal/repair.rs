//! Recovery at open: read the segments in order, replay entries, repair a torn tail.
//!
//! The torn-tail rule (see the `wal` module doc): only the last segment may end in a bad
//! record, because the writer fsyncs a segment before it creates the next one. There the log is
//! cut at the first bad record (everything after it was never reported flushed). Anywhere else
//! a bad record is corruption and open fails.

use std::fs;
use std::path::Path;

use bytes::Bytes;

use crate::error::{Corruption, WalError};
use crate::wal::catalog::Catalog;
use crate::wal::segment::{self, SegmentFile};
use crate::wal::Entry;

/// The log as found (and repaired) on disk.
#[derive(Debug)]
pub(crate) struct Recovered {
    /// Segments sorted by first index; the last one is where appends continue.
    pub segments: Vec<SegmentFile>,
    /// Index the next appended entry must carry; `None` if there is no segment at all (then
    /// the first append may start at any index).
    pub next_index: Option<u64>,
    /// Length of the last segment after repair.
    pub last_segment_len: u64,
    /// Where the records read at open sit (segments skipped at open list none).
    pub catalog: Catalog,
}

/// Opens (creating if needed) the log in `dir`, replays every entry with index > `after_index`
/// in order and truncates a torn tail. On error, `replay` may already have seen a prefix.
pub(crate) fn recover(
    dir: &Path,
    after_index: u64,
    mut replay: impl FnMut(Entry),
) -> Result<Recovered, WalError> {
    segment::create_dir(dir)?;
    let segments = segment::list(dir)?;
    let mut next_index = None;
    let mut last_segment_len = 0;
    let mut catalog = Catalog::default();
    for (position, current) in segments.iter().enumerate() {
        if let Some(expected) = next_index {
            if current.first_index != expected {
                let reason = Corruption::Gap {
                    expected,
                    found: current.first_index,
                };
                return Err(segment::corrupt(current, 0, reason));
            }
        }
        let following = segments.get(position + 1);
        // A segment followed by one that starts at or below `after_index + 1` holds nothing to
        // replay: skip reading its records (purge removes it soon), check only its header.
        if let Some(following) = following {
            if following.first_index.saturating_sub(1) <= after_index {
                segment::check_header_file(current)?;
                catalog.add_segment(current.first_index, current.path.clone(), Vec::new(), 0);
                next_index = Some(following.first_index);
                continue;
            }
        }
        let bytes = fs::read(&current.path).map_err(|e| WalError::io("read", &current.path, e))?;
        let mut offsets = Vec::new();
        let scan = segment::scan(&bytes, current.first_index, |offset, record| {
            offsets.push(offset);
            if record.index > after_index {
                let data = Bytes::copy_from_slice(record.data);
                replay(Entry {
                    index: record.index,
                    term: record.term,
                    data,
                });
            }
        })
        .map_err(|(offset, reason)| segment::corrupt(current, offset, reason))?;
        if let Some(reason) = scan.damage {
            if following.is_some() {
                return Err(segment::corrupt(current, scan.valid_len, reason));
            }
            repair_tail(current, &bytes, scan.valid_len, &reason)?;
        }
        catalog.add_segment(
            current.first_index,
            current.path.clone(),
            offsets,
            scan.valid_len,
        );
        next_index = Some(scan.next_index);
        last_segment_len = scan.valid_len;
    }
    Ok(Recovered {
        segments,
        next_index,
        last_segment_len,
        catalog,
    })
}

/// Cuts the last segment at `valid_len`, durably, so that new records follow the intact ones
/// and the torn bytes can never be read as part of the log.
fn repair_tail(
    last: &SegmentFile,
    bytes: &[u8],
    valid_len: u64,
    reason: &Corruption,
) -> Result<(), WalError> {
    tracing::warn!(
        path = %last.path.display(),
        offset = valid_len,
        dropped_bytes = bytes.len() as u64 - valid_len,
        %reason,
        "wal: truncating torn tail"
    );
    let file = segment::open_write(&last.path)?;
    segment::truncate(&file, &last.path, valid_len)
}
