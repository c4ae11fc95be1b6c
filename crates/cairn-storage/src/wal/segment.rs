//! Segment files: naming, the header, creation and the record scan (format in the `wal`
//! module doc).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Corruption, WalError};
use crate::wal::record::{self, RecordRef};

/// Bytes of the segment header; the first record starts here.
pub(crate) const SEGMENT_HEADER_BYTES: u64 = 24;

const MAGIC: &[u8; 8] = b"CAIRNWAL";
const VERSION: u32 = 1;
const SUFFIX: &str = ".wal";
const TMP_SUFFIX: &str = ".wal.tmp";

/// One segment file found in (or added to) the WAL directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SegmentFile {
    /// Index of the first record the segment holds (or would hold, if empty).
    pub first_index: u64,
    pub path: PathBuf,
}

/// What a scan of a segment's bytes found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Scan {
    /// Index the next record after the intact ones would carry.
    pub next_index: u64,
    /// Bytes up to the end of the last intact record.
    pub valid_len: u64,
    /// The first bad record after `valid_len`, if the intact records do not run to the end.
    pub damage: Option<Corruption>,
}

pub(crate) fn file_name(first_index: u64) -> String {
    format!("{first_index:016x}{SUFFIX}")
}

/// The first index encoded in a segment file name: exactly 16 lower-case hex digits + `.wal`,
/// the form `file_name` writes, so that name order is index order.
pub(crate) fn parse_name(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(SUFFIX)?;
    let canonical = hex.len() == 16 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    canonical
        .then(|| u64::from_str_radix(hex, 16).ok())
        .flatten()
}

fn encode_header(first_index: u64) -> [u8; SEGMENT_HEADER_BYTES as usize] {
    let mut header = [0u8; SEGMENT_HEADER_BYTES as usize];
    header[0..8].copy_from_slice(MAGIC);
    header[8..12].copy_from_slice(&VERSION.to_le_bytes());
    header[12..20].copy_from_slice(&first_index.to_le_bytes());
    let crc = crc32c::crc32c(&header[0..20]);
    header[20..24].copy_from_slice(&crc.to_le_bytes());
    header
}

/// Checks a segment header against the first index its file name promises.
fn check_header(bytes: &[u8], name_first_index: u64) -> Result<(), Corruption> {
    if bytes.len() < SEGMENT_HEADER_BYTES as usize || &bytes[0..8] != MAGIC {
        return Err(Corruption::BadMagic);
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if version != VERSION {
        return Err(Corruption::Version {
            found: version,
            expected: VERSION,
        });
    }
    let stored = u32::from_le_bytes(bytes[20..24].try_into().expect("4 bytes"));
    if crc32c::crc32c(&bytes[0..20]) != stored {
        return Err(Corruption::HeaderCrc);
    }
    let header_first_index = u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes"));
    if header_first_index != name_first_index || header_first_index == 0 {
        return Err(Corruption::FirstIndex {
            name: name_first_index,
            header: header_first_index,
        });
    }
    Ok(())
}

/// Checks the header of `segment` without reading its records.
pub(crate) fn check_header_file(segment: &SegmentFile) -> Result<(), WalError> {
    use std::io::Read;
    let mut header = Vec::with_capacity(SEGMENT_HEADER_BYTES as usize);
    File::open(&segment.path)
        .and_then(|file| file.take(SEGMENT_HEADER_BYTES).read_to_end(&mut header))
        .map_err(|e| WalError::io("read", &segment.path, e))?;
    check_header(&header, segment.first_index).map_err(|reason| corrupt(segment, 0, reason))
}

pub(crate) fn corrupt(segment: &SegmentFile, offset: u64, reason: Corruption) -> WalError {
    WalError::Corrupt {
        path: segment.path.clone(),
        offset,
        reason,
    }
}

/// Walks the records of a whole segment (`bytes`, header included), calling `visit` with the
/// offset of each intact record. Stops at the first record that does not decode: if every byte
/// from there on is zero it is the unwritten, preallocated rest of the segment (a record never
/// starts with zeros: its index is >= 1), otherwise it is reported as `damage` and the caller
/// decides whether that is a torn tail. A bad header, or an intact record out of sequence,
/// cannot come from a torn write and is an error (offset, reason).
pub(crate) fn scan(
    bytes: &[u8],
    first_index: u64,
    mut visit: impl FnMut(u64, RecordRef<'_>),
) -> Result<Scan, (u64, Corruption)> {
    check_header(bytes, first_index).map_err(|reason| (0, reason))?;
    let mut offset = SEGMENT_HEADER_BYTES as usize;
    let mut next_index = first_index;
    loop {
        match record::decode(&bytes[offset..]) {
            Ok(None) => {
                let valid_len = offset as u64;
                return Ok(Scan {
                    next_index,
                    valid_len,
                    damage: None,
                });
            }
            Ok(Some(record)) => {
                if record.index != next_index {
                    let reason = Corruption::Index {
                        expected: next_index,
                        found: record.index,
                    };
                    return Err((offset as u64, reason));
                }
                let len = record.encoded_len();
                visit(offset as u64, record);
                offset += len;
                next_index += 1;
            }
            Err(reason) => {
                let unwritten = bytes[offset..].iter().all(|byte| *byte == 0);
                return Ok(Scan {
                    next_index,
                    valid_len: offset as u64,
                    damage: (!unwritten).then_some(reason),
                });
            }
        }
    }
}

/// Segment files in `dir`, sorted by first index. Removes `*.wal.tmp` leftovers of a segment
/// creation that a crash interrupted (they were never renamed, so they hold no record).
pub(crate) fn list(dir: &Path) -> Result<Vec<SegmentFile>, WalError> {
    let mut segments = Vec::new();
    let mut removed_tmp = false;
    let entries = fs::read_dir(dir).map_err(|e| WalError::io("read_dir", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| WalError::io("read_dir", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let path = entry.path();
        if name.ends_with(TMP_SUFFIX) {
            fs::remove_file(&path).map_err(|e| WalError::io("remove", &path, e))?;
            removed_tmp = true;
        } else if let Some(first_index) = parse_name(name) {
            segments.push(SegmentFile { first_index, path });
        } else if name.ends_with(SUFFIX) {
            tracing::warn!(path = %path.display(), "ignoring file with a non-canonical wal name");
        }
    }
    if removed_tmp {
        sync_dir(dir)?;
    }
    segments.sort_by_key(|segment| segment.first_index);
    Ok(segments)
}

/// Creates the segment starting at `first_index` and returns it open for writing. The header
/// is written to a temporary name, fsynced, renamed into place and the directory fsynced, so a
/// file with a segment name always has a whole header: a bad header is corruption, never a
/// torn creation.
pub(crate) fn create(dir: &Path, first_index: u64) -> Result<(File, SegmentFile), WalError> {
    let name = file_name(first_index);
    let tmp = dir.join(format!("{name}.tmp"));
    let path = dir.join(name);
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&tmp)
        .map_err(|e| WalError::io("create", &tmp, e))?;
    file.write_all(&encode_header(first_index))
        .map_err(|e| WalError::io("write", &tmp, e))?;
    file.sync_all()
        .map_err(|e| WalError::io("fsync", &tmp, e))?;
    drop(file);
    fs::rename(&tmp, &path).map_err(|e| WalError::io("rename", &tmp, e))?;
    sync_dir(dir)?;
    let file = open_write(&path)?;
    Ok((file, SegmentFile { first_index, path }))
}

/// Opens an existing segment for positioned writes (the writer tracks where records end: with
/// preallocation that is not the file's end).
pub(crate) fn open_write(path: &Path) -> Result<File, WalError> {
    OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| WalError::io("open", path, e))
}

/// Cuts `file` to `len` bytes and makes the new length durable.
pub(crate) fn truncate(file: &File, path: &Path, len: u64) -> Result<(), WalError> {
    file.set_len(len)
        .map_err(|e| WalError::io("truncate", path, e))?;
    file.sync_all().map_err(|e| WalError::io("fsync", path, e))
}

/// Makes the directory's entries (created, renamed, removed files) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(|e| WalError::io("fsync dir", dir, e))
}

/// Creates `dir` if needed; a newly created directory is made durable in its parent.
pub(crate) fn create_dir(dir: &Path) -> Result<(), WalError> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir).map_err(|e| WalError::io("create_dir", dir, e))?;
    match dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => sync_dir(parent),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_by_index_and_only_canonical_names_parse() {
        assert_eq!(file_name(0x1f), "000000000000001f.wal");
        assert_eq!(parse_name(&file_name(u64::MAX)), Some(u64::MAX));
        assert!(file_name(9) < file_name(10) && file_name(0xff) < file_name(0x100));
        for bad in [
            "1f.wal",
            "000000000000001F.wal",
            "000000000000001f.wal.tmp",
            "x.wal",
        ] {
            assert_eq!(parse_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn header_round_trips_and_rejects_damage() {
        let header = encode_header(42);
        assert_eq!(check_header(&header, 42), Ok(()));
        assert_eq!(
            check_header(&header, 41),
            Err(Corruption::FirstIndex {
                name: 41,
                header: 42
            })
        );
        assert_eq!(check_header(&header[..23], 42), Err(Corruption::BadMagic));
        for byte in 8..header.len() {
            let mut bad = header;
            bad[byte] ^= 0x10;
            assert!(
                check_header(&bad, 42).is_err(),
                "flip in byte {byte} accepted"
            );
        }
    }

    #[test]
    fn scan_stops_at_damage_and_refuses_out_of_sequence_records() {
        let mut bytes = encode_header(5).to_vec();
        record::encode(5, 1, b"a", &mut bytes);
        record::encode(6, 1, b"b", &mut bytes);
        let whole = bytes.len() as u64;
        let mut seen = Vec::new();
        let scan_ok = scan(&bytes, 5, |offset, r| seen.push((offset, r.index))).unwrap();
        assert_eq!(
            scan_ok,
            Scan {
                next_index: 7,
                valid_len: whole,
                damage: None
            }
        );
        assert_eq!(seen, vec![(24, 5), (49, 6)]);

        let torn = scan(&bytes[..bytes.len() - 1], 5, |_, _| {}).unwrap();
        assert_eq!(
            torn,
            Scan {
                next_index: 6,
                valid_len: 49,
                damage: Some(Corruption::Truncated)
            }
        );

        // Zeros after the records are the unwritten, preallocated end; a stray byte in them
        // is damage at the end of the records.
        let mut preallocated = bytes.clone();
        preallocated.resize(4096, 0);
        let clean = Scan {
            next_index: 7,
            valid_len: whole,
            damage: None,
        };
        assert_eq!(scan(&preallocated, 5, |_, _| {}).unwrap(), clean);
        preallocated[4000] = 1;
        let damaged = scan(&preallocated, 5, |_, _| {}).unwrap();
        assert_eq!((damaged.valid_len, damaged.damage.is_some()), (whole, true));

        let mut skipped = encode_header(5).to_vec();
        record::encode(6, 1, b"b", &mut skipped);
        let expected = Corruption::Index {
            expected: 5,
            found: 6,
        };
        assert_eq!(scan(&skipped, 5, |_, _| {}), Err((24, expected)));
    }
}
