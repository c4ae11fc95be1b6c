//! Whole-state snapshot files, written atomically, verified on load.
//!
//! # On-disk format
//!
//! One file per snapshot in the store's directory, named `{index:016x}.snap` (16 lower-case
//! hex digits: name order is index order). All integers little-endian:
//! ```text
//! 0   [u8; 8]  magic "CAIRNSNP"
//! 8   u32      format version (1)
//! 12  u64      index (must equal the one in the file name)
//! 20  u64      len: payload bytes (the file is exactly 32 + len bytes)
//! 28  u32      CRC-32C of bytes 0..28 followed by the payload
//! 32  [u8;len] payload (opaque: the engine's snapshot encoding)
//! ```
//!
//! **Writing** (`save`): the file is written as `{name}.tmp`, fsynced, renamed into place and
//! the directory fsynced; only then are older snapshots beyond the newest
//! `SNAPSHOTS_KEPT_MAX` removed. A crash leaves either the old set or the new file complete;
//! `*.snap.tmp` leftovers are deleted at open.
//!
//! **Reading** (`load_latest`): newest first; a file whose header, length or CRC does not check
//! out is skipped with a warning and the next older one is tried.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use crate::error::{SnapshotCorruption, SnapshotError};
use crate::limits::{SNAPSHOTS_KEPT_MAX, SNAPSHOT_BYTES_MAX};

const MAGIC: &[u8; 8] = b"CAIRNSNP";
const VERSION: u32 = 1;
const HEADER_BYTES: usize = 32;
/// The header bytes the CRC covers (all before the CRC field).
const CRC_OFFSET: usize = 28;
const SUFFIX: &str = ".snap";
const TMP_SUFFIX: &str = ".snap.tmp";

/// The snapshot files of one node.
#[derive(Debug)]
pub struct SnapshotStore {
    dir: PathBuf,
    /// Serializes `save`: two concurrent saves of one index would share a temporary file, and
    /// pruning must see the set it prunes. A std mutex: `save` is blocking I/O anyway.
    save_lock: Mutex<()>,
}

impl SnapshotStore {
    /// Opens (creating if needed) the store in `dir` and removes interrupted temporary files.
    pub fn open(dir: &Path) -> Result<SnapshotStore, SnapshotError> {
        if !dir.is_dir() {
            fs::create_dir_all(dir).map_err(|e| SnapshotError::io("create_dir", dir, e))?;
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                sync_dir(parent)?;
            }
        }
        let mut removed = false;
        for entry in read_dir(dir)? {
            if entry.1.ends_with(TMP_SUFFIX) {
                fs::remove_file(&entry.0).map_err(|e| SnapshotError::io("remove", &entry.0, e))?;
                removed = true;
            }
        }
        if removed {
            sync_dir(dir)?;
        }
        Ok(SnapshotStore {
            dir: dir.to_path_buf(),
            save_lock: Mutex::new(()),
        })
    }

    /// Writes `data` as the snapshot at `index` (replacing one at the same index), then keeps
    /// only the newest `SNAPSHOTS_KEPT_MAX` snapshots by index.
    pub fn save(&self, index: u64, data: &[u8]) -> Result<(), SnapshotError> {
        assert!(
            data.len() as u64 <= SNAPSHOT_BYTES_MAX,
            "snapshot at {index}: {} bytes, the maximum is {SNAPSHOT_BYTES_MAX}",
            data.len()
        );
        let _guard = self
            .save_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let name = file_name(index);
        let tmp = self.dir.join(format!("{name}.tmp"));
        let path = self.dir.join(name);
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&tmp)
            .map_err(|e| SnapshotError::io("create", &tmp, e))?;
        file.write_all(&encode_header(index, data))
            .and_then(|()| file.write_all(data))
            .map_err(|e| SnapshotError::io("write", &tmp, e))?;
        file.sync_all()
            .map_err(|e| SnapshotError::io("fsync", &tmp, e))?;
        drop(file);
        fs::rename(&tmp, &path).map_err(|e| SnapshotError::io("rename", &tmp, e))?;
        sync_dir(&self.dir)?;
        tracing::info!(index, bytes = data.len(), path = %path.display(), "snapshot saved");
        self.prune()
    }

    /// The newest snapshot that checks out, as (index, payload). A corrupt newer file is
    /// skipped with a warning. `Ok(None)` if there is no snapshot file at all; if there are
    /// some but none checks out, [`SnapshotError::AllCorrupt`] (never a silent empty state).
    pub fn load_latest(&self) -> Result<Option<(u64, Vec<u8>)>, SnapshotError> {
        let snapshots = self.list()?;
        let mut newest_damage = None;
        for (index, path) in snapshots.iter().rev() {
            let mut bytes = fs::read(path).map_err(|e| SnapshotError::io("read", path, e))?;
            match check(&bytes, *index) {
                Ok(()) => {
                    bytes.drain(..HEADER_BYTES);
                    return Ok(Some((*index, bytes)));
                }
                Err(reason) => {
                    tracing::warn!(path = %path.display(), %reason, "skipping corrupt snapshot");
                    newest_damage.get_or_insert(reason);
                }
            }
        }
        match newest_damage {
            None => Ok(None),
            Some(newest) => {
                let (dir, count) = (self.dir.clone(), snapshots.len());
                Err(SnapshotError::AllCorrupt { dir, count, newest })
            }
        }
    }

    /// Snapshot files sorted by index, oldest first.
    fn list(&self) -> Result<Vec<(u64, PathBuf)>, SnapshotError> {
        let mut snapshots: Vec<(u64, PathBuf)> = read_dir(&self.dir)?
            .into_iter()
            .filter_map(|(path, name)| parse_name(&name).map(|index| (index, path)))
            .collect();
        snapshots.sort_by_key(|(index, _)| *index);
        Ok(snapshots)
    }

    /// Removes all but the newest `SNAPSHOTS_KEPT_MAX` snapshots, oldest first.
    fn prune(&self) -> Result<(), SnapshotError> {
        let snapshots = self.list()?;
        let excess = snapshots.len().saturating_sub(SNAPSHOTS_KEPT_MAX);
        for (_, path) in &snapshots[..excess] {
            fs::remove_file(path).map_err(|e| SnapshotError::io("remove", path, e))?;
        }
        if excess > 0 {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }
}

fn file_name(index: u64) -> String {
    format!("{index:016x}{SUFFIX}")
}

fn parse_name(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(SUFFIX)?;
    let canonical = hex.len() == 16 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    canonical
        .then(|| u64::from_str_radix(hex, 16).ok())
        .flatten()
}

fn encode_header(index: u64, data: &[u8]) -> [u8; HEADER_BYTES] {
    let mut header = [0u8; HEADER_BYTES];
    header[0..8].copy_from_slice(MAGIC);
    header[8..12].copy_from_slice(&VERSION.to_le_bytes());
    header[12..20].copy_from_slice(&index.to_le_bytes());
    header[20..28].copy_from_slice(&(data.len() as u64).to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&header[..CRC_OFFSET]), data);
    header[CRC_OFFSET..].copy_from_slice(&crc.to_le_bytes());
    header
}

/// Verifies a whole snapshot file (`bytes`) that the file name says holds `name_index`.
fn check(bytes: &[u8], name_index: u64) -> Result<(), SnapshotCorruption> {
    if bytes.len() < HEADER_BYTES || &bytes[0..8] != MAGIC {
        return Err(SnapshotCorruption::BadMagic);
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if version != VERSION {
        return Err(SnapshotCorruption::Version {
            found: version,
            expected: VERSION,
        });
    }
    let index = u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes"));
    if index != name_index {
        return Err(SnapshotCorruption::Index {
            name: name_index,
            header: index,
        });
    }
    let expected = u64::from_le_bytes(bytes[20..28].try_into().expect("8 bytes"));
    let found = (bytes.len() - HEADER_BYTES) as u64;
    if expected != found || expected > SNAPSHOT_BYTES_MAX {
        return Err(SnapshotCorruption::Length { expected, found });
    }
    let stored = u32::from_le_bytes(bytes[CRC_OFFSET..HEADER_BYTES].try_into().expect("4 bytes"));
    let computed =
        crc32c::crc32c_append(crc32c::crc32c(&bytes[..CRC_OFFSET]), &bytes[HEADER_BYTES..]);
    if stored != computed {
        return Err(SnapshotCorruption::Crc { stored, computed });
    }
    Ok(())
}

/// (path, file name) of every entry in `dir` whose name is UTF-8.
fn read_dir(dir: &Path) -> Result<Vec<(PathBuf, String)>, SnapshotError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| SnapshotError::io("read_dir", dir, e))? {
        let entry = entry.map_err(|e| SnapshotError::io("read_dir", dir, e))?;
        if let Ok(name) = entry.file_name().into_string() {
            out.push((entry.path(), name));
        }
    }
    Ok(out)
}

fn sync_dir(dir: &Path) -> Result<(), SnapshotError> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(|e| SnapshotError::io("fsync dir", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_payload_damage_is_detected() {
        let data = b"engine bytes";
        let mut bytes = encode_header(9, data).to_vec();
        bytes.extend_from_slice(data);
        assert_eq!(check(&bytes, 9), Ok(()));
        assert_eq!(
            check(&bytes, 8),
            Err(SnapshotCorruption::Index { name: 8, header: 9 })
        );
        for cut in 0..bytes.len() {
            assert!(
                check(&bytes[..cut], 9).is_err(),
                "{cut}-byte prefix accepted"
            );
        }
        for byte in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[byte] ^= 0x01;
            assert!(check(&bad, 9).is_err(), "flip in byte {byte} accepted");
        }
    }

    #[test]
    fn names_round_trip() {
        assert_eq!(parse_name(&file_name(0xabc)), Some(0xabc));
        assert_eq!(parse_name("0000000000000abc.snap.tmp"), None);
        assert_eq!(parse_name("abc.snap"), None);
    }
}
