//! openraft's snapshot data: a snapshot file on disk, read and written in place.
//!
//! A snapshot is as large as the state; holding it in a buffer (openraft's usual
//! `Cursor<Vec<u8>>`) would cost a second copy of the state whenever one is sent or received.
//! A leader streams its snapshot file to a follower chunk by chunk (header included, so the
//! follower can verify it as it verifies its own files); a follower writes the chunks into a
//! temporary file of its `SnapshotStore`, which it reads back, checks and decodes on install.
//!
//! The file calls run inside `poll_*`, on the calling task. That is deliberate: openraft moves
//! one chunk per call (`snapshot_max_chunk_size`, 3 MiB by default), from or into the page
//! cache, once per lagging follower; and going through `spawn_blocking` would make the order
//! of events in the deterministic simulation depend on the blocking pool's threads.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncSeek, AsyncWrite, ReadBuf};

/// A snapshot file handed to openraft; see the module doc.
#[derive(Debug)]
pub struct SnapshotFile {
    file: File,
    /// The temporary file a received snapshot is written into; removed when dropped.
    received: Option<PathBuf>,
    /// Where the last `start_seek` landed, for `poll_complete`.
    seeked: Option<u64>,
}

impl SnapshotFile {
    /// A stored snapshot file, to be sent.
    pub fn stored(file: File) -> SnapshotFile {
        SnapshotFile {
            file,
            received: None,
            seeked: None,
        }
    }

    /// A temporary file of the snapshot store to receive a snapshot into.
    pub fn receiving(file: File, path: PathBuf) -> SnapshotFile {
        SnapshotFile {
            file,
            received: Some(path),
            seeked: None,
        }
    }

    /// The whole file, from its first byte.
    pub fn read_all(&mut self) -> io::Result<Vec<u8>> {
        let mut bytes = Vec::new();
        self.file.seek(SeekFrom::Start(0))?;
        self.file.read_to_end(&mut bytes)?;
        Ok(bytes)
    }
}

impl Drop for SnapshotFile {
    fn drop(&mut self) {
        if let Some(path) = &self.received {
            // Installed (its bytes are in the store's own file by now) or abandoned. Failing to
            // remove it is harmless: the store removes temporary files when it opens.
            let _ = fs::remove_file(path);
        }
    }
}

impl AsyncRead for SnapshotFile {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let read = this.file.read(buf.initialize_unfilled())?;
        buf.advance(read);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for SnapshotFile {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(self.get_mut().file.write(buf))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Unbuffered; durability is the store's fsync when the file is adopted.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl AsyncSeek for SnapshotFile {
    fn start_seek(self: Pin<&mut Self>, position: SeekFrom) -> io::Result<()> {
        let this = self.get_mut();
        this.seeked = Some(this.file.seek(position)?);
        Ok(())
    }

    fn poll_complete(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<u64>> {
        let this = self.get_mut();
        Poll::Ready(match this.seeked.take() {
            Some(position) => Ok(position),
            None => this.file.stream_position(),
        })
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn chunks_written_at_offsets_read_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("incoming.snap.tmp");
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let mut received = SnapshotFile::receiving(file, path.clone());
        // openraft seeks to each chunk's offset when it is not the next byte.
        received.seek(SeekFrom::Start(4)).await.unwrap();
        received.write_all(b"world").await.unwrap();
        assert_eq!(received.seek(SeekFrom::Start(0)).await.unwrap(), 0);
        received.write_all(b"helo").await.unwrap();
        assert_eq!(received.seek(SeekFrom::End(0)).await.unwrap(), 9);
        received.seek(SeekFrom::Start(0)).await.unwrap();
        let mut back = String::new();
        received.read_to_string(&mut back).await.unwrap();
        assert_eq!(back, "heloworld");
        assert_eq!(received.read_all().unwrap(), b"heloworld");

        // Dropping a received file removes the temporary file.
        drop(received);
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn a_stored_file_is_left_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0000000000000009.snap");
        fs::write(&path, b"snapshot").unwrap();
        let mut stored = SnapshotFile::stored(File::open(&path).unwrap());
        let mut back = Vec::new();
        stored.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"snapshot");
        drop(stored);
        assert!(path.exists());
    }
}
