//! A publisher's batch under construction, kept as segments so large messages are never copied
//! in user space: small messages (and every length prefix) are appended to a contiguous arena,
//! a large `Bytes` message becomes a segment of its own, and the sealed batch goes to the
//! socket with vectored writes. The wire bytes are identical either way (see `wire`).

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::AsyncWriteExt;

/// Messages at least this big are sent from the caller's buffer instead of being copied
/// (measured, 1 KiB messages: 3.9 GB/s referenced vs 2.3 GB/s copied on the 2-core host).
const ZERO_COPY_BYTES_MIN: usize = 1024;
/// The kernel's `IOV_MAX`: most slices one `writev` takes.
const IOV_MAX: usize = 1024;

pub struct BatchBuilder {
    /// Bytes the arena grabs at a time: a whole batch, so appending never regrows (and
    /// re-copies) it.
    arena_bytes: usize,
    arena: BytesMut,
    segments: Vec<Bytes>,
    bytes: usize,
    count: u32,
}

/// A sealed batch: the payload as segments, kept until acknowledged (for resends).
#[derive(Clone, Debug)]
pub struct Payload {
    pub segments: Vec<Bytes>,
    pub bytes: usize,
    pub count: u32,
}

impl BatchBuilder {
    pub fn new(batch_bytes: usize) -> BatchBuilder {
        BatchBuilder {
            arena_bytes: batch_bytes,
            arena: BytesMut::new(),
            segments: Vec::new(),
            bytes: 0,
            count: 0,
        }
    }

    fn make_room(&mut self, len: usize) {
        if self.arena.capacity() - self.arena.len() < len {
            self.arena.reserve(len.max(self.arena_bytes));
        }
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn count(&self) -> u32 {
        self.count
    }

    /// Appends a copy of `message`.
    pub fn push_copy(&mut self, message: &[u8]) {
        self.make_room(4 + message.len());
        self.arena.put_u32_le(message.len() as u32);
        self.arena.put_slice(message);
        self.bytes += 4 + message.len();
        self.count += 1;
    }

    /// Appends `message` without copying it when it is large.
    pub fn push_shared(&mut self, message: Bytes) {
        if message.len() < ZERO_COPY_BYTES_MIN {
            return self.push_copy(&message);
        }
        self.make_room(4);
        self.arena.put_u32_le(message.len() as u32);
        self.segments.push(self.arena.split().freeze());
        self.bytes += 4 + message.len();
        self.count += 1;
        self.segments.push(message);
    }

    /// Seals the batch and starts an empty one.
    pub fn seal(&mut self) -> Payload {
        if !self.arena.is_empty() {
            self.segments.push(self.arena.split().freeze());
        }
        let payload = Payload {
            segments: std::mem::take(&mut self.segments),
            bytes: self.bytes,
            count: self.count,
        };
        self.bytes = 0;
        self.count = 0;
        payload
    }
}

/// Writes `header` then every segment with as few `writev` calls as the kernel allows.
pub async fn write_vectored_all(
    writer: &mut (impl tokio::io::AsyncWrite + Unpin),
    header: &[u8],
    segments: &[Bytes],
) -> std::io::Result<()> {
    let mut parts: Vec<&[u8]> = Vec::with_capacity(segments.len() + 1);
    parts.push(header);
    parts.extend(segments.iter().map(|s| &s[..]).filter(|s| !s.is_empty()));
    let (mut first, mut offset) = (0usize, 0usize);
    while first < parts.len() {
        let end = (first + IOV_MAX).min(parts.len());
        let mut slices: Vec<std::io::IoSlice<'_>> = Vec::with_capacity(end - first);
        slices.push(std::io::IoSlice::new(&parts[first][offset..]));
        slices.extend(
            parts[first + 1..end]
                .iter()
                .map(|p| std::io::IoSlice::new(p)),
        );
        let mut written = writer.write_vectored(&slices).await?;
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        // Advance over whole parts, then into the partly written one.
        while first < parts.len() && written >= parts[first].len() - offset {
            written -= parts[first].len() - offset;
            first += 1;
            offset = 0;
        }
        offset += written;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_concatenate_to_the_wire_format() {
        let mut builder = BatchBuilder::new(64);
        builder.push_copy(b"small");
        builder.push_shared(Bytes::from(vec![7u8; 5000]));
        builder.push_shared(Bytes::from_static(b"tiny"));
        let payload = builder.seal();
        assert_eq!(payload.count, 3);
        let joined: Vec<u8> = payload
            .segments
            .iter()
            .flat_map(|s| s.iter().copied())
            .collect();
        assert_eq!(joined.len(), payload.bytes);
        let mut expected = Vec::new();
        for m in [&b"small"[..], &[7u8; 5000], b"tiny"] {
            crate::wire::push_message(&mut expected, m);
        }
        assert_eq!(joined, expected);
        assert_eq!(builder.seal().count, 0, "a sealed builder starts empty");
    }

    #[tokio::test]
    async fn vectored_writes_survive_partial_writes_and_many_slices() {
        let segments: Vec<Bytes> = (0..3000u32)
            .map(|i| Bytes::from(i.to_le_bytes().to_vec()))
            .collect();
        // A duplex pipe with a tiny buffer forces partial writes.
        let (mut tx, mut rx) = tokio::io::duplex(7);
        let reader = tokio::spawn(async move {
            let mut all = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut rx, &mut all)
                .await
                .unwrap();
            all
        });
        write_vectored_all(&mut tx, b"HDR", &segments)
            .await
            .unwrap();
        drop(tx);
        let all = reader.await.unwrap();
        let mut expected = b"HDR".to_vec();
        segments.iter().for_each(|s| expected.extend_from_slice(s));
        assert_eq!(all, expected);
    }
}
