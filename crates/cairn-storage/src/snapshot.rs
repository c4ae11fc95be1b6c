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
//! **Writing** ([`SnapshotStore::writer`]): the payload streams into a temporary file
//! (`incoming-{n}.snap.tmp`) behind a placeholder header, with its CRC computed on the way;
//! [`SnapshotWriter::finish`] fills in the header, fsyncs, renames the file into place and
//! fsyncs the directory; only then are older snapshots beyond the newest `SNAPSHOTS_KEPT_MAX`
//! removed. A crash leaves either the old set or the new file complete; `*.snap.tmp`
//! leftovers are deleted at open. Streaming keeps a snapshot of a large state from costing a
//! second copy of that state in memory.
//!
//! **Receiving** ([`SnapshotStore::receive`]): a follower gets a leader's snapshot file byte for
//! byte (header included) into a temporary file, verifies it with
//! [`SnapshotStore::check_received`] before decoding it, and stores the payload as its own
//! snapshot through a writer.
//!
//! **Reading** (`load_latest`): newest first; a file whose header, length or CRC does not check
//! out is skipped with a warning and the next older one is tried.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use crate::error::{SnapshotCorruption, SnapshotError};
use crate::limits::{SNAPSHOTS_KEPT_MAX, SNAPSHOT_BYTES_MAX, SNAPSHOT_WRITE_BUFFER_BYTES};

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
    /// Serializes renaming files into place: pruning must see the set it prunes. A std
    /// mutex: it is taken around blocking file calls anyway.
    install_lock: Mutex<()>,
    /// Numbers the temporary files, so that a snapshot being built and one being received
    /// never share one.
    temporaries: AtomicU64,
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
            install_lock: Mutex::new(()),
            temporaries: AtomicU64::new(0),
        })
    }

    /// Starts a new snapshot: write its payload into the returned writer, then
    /// [`SnapshotWriter::finish`] it with its index. Dropped unfinished, it leaves nothing.
    pub fn writer(&self) -> Result<SnapshotWriter<'_>, SnapshotError> {
        let (file, tmp) = self.temporary()?;
        let mut out = BufWriter::with_capacity(SNAPSHOT_WRITE_BUFFER_BYTES, file);
        // A placeholder: the length, index and CRC are known only at `finish`.
        out.write_all(&[0; HEADER_BYTES])
            .map_err(|e| SnapshotError::io("write", &tmp, e))?;
        Ok(SnapshotWriter {
            store: self,
            out: Some(out),
            tmp,
            payload_crc: 0,
            payload_len: 0,
        })
    }

    /// A new temporary file (read-write, empty) to receive a leader's snapshot file into, and
    /// its path. The caller removes it when done; a restart removes leftovers.
    pub fn receive(&self) -> Result<(File, PathBuf), SnapshotError> {
        self.temporary()
    }

    /// Checks that `bytes` (a snapshot file received from a leader) is a whole, undamaged
    /// snapshot file for `index`; returns its payload, to be decoded and then stored through
    /// [`SnapshotStore::writer`].
    pub fn check_received(mut bytes: Vec<u8>, index: u64) -> Result<Vec<u8>, SnapshotError> {
        check(&bytes, index).map_err(|reason| SnapshotError::Received { reason })?;
        bytes.drain(..HEADER_BYTES);
        Ok(bytes)
    }

    /// The snapshot file at `index`, opened for reading at its first byte (header included:
    /// what a leader sends a follower), or `None` if there is none.
    pub fn open_file(&self, index: u64) -> Result<Option<File>, SnapshotError> {
        let path = self.dir.join(file_name(index));
        match File::open(&path) {
            Ok(file) => Ok(Some(file)),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(SnapshotError::io("open", &path, error)),
        }
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

    fn temporary(&self) -> Result<(File, PathBuf), SnapshotError> {
        let number = self.temporaries.fetch_add(1, Ordering::Relaxed);
        let tmp = self.dir.join(format!("incoming-{number}{TMP_SUFFIX}"));
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&tmp)
            .map_err(|e| SnapshotError::io("create", &tmp, e))?;
        Ok((file, tmp))
    }

    /// Renames the complete, fsynced file `tmp` into place as the snapshot at `index`
    /// (replacing one at the same index), fsyncs the directory, then keeps only the newest
    /// `SNAPSHOTS_KEPT_MAX` snapshots by index.
    fn install(&self, tmp: &Path, index: u64) -> Result<(), SnapshotError> {
        let _guard = self
            .install_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let path = self.dir.join(file_name(index));
        fs::rename(tmp, &path).map_err(|e| SnapshotError::io("rename", tmp, e))?;
        sync_dir(&self.dir)?;
        tracing::info!(index, path = %path.display(), "snapshot saved");
        self.prune()
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

/// A snapshot being written; see [`SnapshotStore::writer`].
pub struct SnapshotWriter<'a> {
    store: &'a SnapshotStore,
    /// `None` once finished.
    out: Option<BufWriter<File>>,
    tmp: PathBuf,
    /// CRC-32C of the payload written so far.
    payload_crc: u32,
    payload_len: u64,
}

impl Write for SnapshotWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let out = self.out.as_mut().expect("a finished writer is consumed");
        let written = out.write(buf)?;
        self.payload_crc = crc32c::crc32c_append(self.payload_crc, &buf[..written]);
        self.payload_len += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out
            .as_mut()
            .expect("a finished writer is consumed")
            .flush()
    }
}

impl SnapshotWriter<'_> {
    /// Completes the file as the snapshot at `index` (header, fsync) and installs it: renamed
    /// into place, directory fsynced, older snapshots pruned. Returns the file, open at its
    /// first byte (what a leader sends a follower).
    pub fn finish(mut self, index: u64) -> Result<File, SnapshotError> {
        assert!(
            self.payload_len <= SNAPSHOT_BYTES_MAX,
            "snapshot at {index}: {} bytes, the maximum is {SNAPSHOT_BYTES_MAX}",
            self.payload_len
        );
        let out = self.out.take().expect("finish runs once");
        let mut file = out
            .into_inner()
            .map_err(|e| SnapshotError::io("write", &self.tmp, e.into_error()))?;
        let header = encode_header(index, self.payload_len, self.payload_crc);
        file.seek(SeekFrom::Start(0))
            .and_then(|_| file.write_all(&header))
            .and_then(|()| file.sync_all())
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .map_err(|e| SnapshotError::io("write header", &self.tmp, e))?;
        self.store.install(&self.tmp, index)?;
        Ok(file)
    }
}

impl Drop for SnapshotWriter<'_> {
    fn drop(&mut self) {
        if self.out.take().is_some() {
            // Abandoned (an error while writing): the partial file is of no use. Failing to
            // remove it is harmless, the next open removes it.
            let _ = fs::remove_file(&self.tmp);
        }
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

/// The header of a snapshot at `index` whose payload has `payload_len` bytes and the CRC-32C
/// `payload_crc`. The stored CRC covers the header fields followed by the payload; the payload
/// was streamed before the header was known, so the two CRCs are combined.
fn encode_header(index: u64, payload_len: u64, payload_crc: u32) -> [u8; HEADER_BYTES] {
    let mut header = [0u8; HEADER_BYTES];
    header[0..8].copy_from_slice(MAGIC);
    header[8..12].copy_from_slice(&VERSION.to_le_bytes());
    header[12..20].copy_from_slice(&index.to_le_bytes());
    header[20..28].copy_from_slice(&payload_len.to_le_bytes());
    let payload_len = usize::try_from(payload_len).expect("a snapshot payload fits in memory");
    let crc = crc32c::crc32c_combine(
        crc32c::crc32c(&header[..CRC_OFFSET]),
        payload_crc,
        payload_len,
    );
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
        let mut bytes = encode_header(9, data.len() as u64, crc32c::crc32c(data)).to_vec();
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
