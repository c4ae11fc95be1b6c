//! Framing of the log protocol (`logpb`): a little-endian u32 length, then a `ClientFrame` or
//! `BrokerFrame` protobuf envelope of that length. A `BatchHeader` / `BatchData` envelope is
//! followed by exactly `byte_size` raw payload bytes, outside the length, so a broker can read
//! them straight into shared memory and a subscriber can write them straight from it.
//!
//! Payload layout (what `byte_size` bytes contain): `message_count` messages, each a
//! little-endian u32 length and that many bytes, nothing else.

use prost::Message;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::{LogError, Result};
use crate::limits::{FRAME_BYTES_MAX, MESSAGE_BYTES_MAX};

/// Reads one envelope; `None` on a clean end of stream before its first byte.
pub async fn read_frame<M: Message + Default>(
    r: &mut (impl AsyncRead + Unpin),
) -> Result<Option<M>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let mut buf = vec![0u8; envelope_len(len)?];
    r.read_exact(&mut buf).await?;
    decode_envelope(&buf).map(Some)
}

/// `read_frame` for a blocking socket (the broker's ingest threads).
pub fn read_frame_blocking<M: Message + Default>(r: &mut impl std::io::Read) -> Result<Option<M>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let mut buf = vec![0u8; envelope_len(len)?];
    r.read_exact(&mut buf)?;
    decode_envelope(&buf).map(Some)
}

fn envelope_len(prefix: [u8; 4]) -> Result<usize> {
    let len = u32::from_le_bytes(prefix);
    if len > FRAME_BYTES_MAX {
        return Err(LogError::Malformed(format!(
            "frame of {len} bytes exceeds {FRAME_BYTES_MAX}"
        )));
    }
    Ok(len as usize)
}

fn decode_envelope<M: Message + Default>(buf: &[u8]) -> Result<M> {
    M::decode(buf).map_err(|e| LogError::Malformed(format!("bad frame: {e}")))
}

/// Appends one length-prefixed envelope to `out`.
pub fn encode_frame(m: &impl Message, out: &mut Vec<u8>) {
    let len = m.encoded_len();
    assert!(len <= FRAME_BYTES_MAX as usize, "envelope of {len} bytes");
    out.extend_from_slice(&(len as u32).to_le_bytes());
    m.encode(out).expect("Vec grows as needed");
}

pub async fn write_frame(w: &mut (impl AsyncWrite + Unpin), m: &impl Message) -> Result<()> {
    let mut buf = Vec::with_capacity(m.encoded_len() + 4);
    encode_frame(m, &mut buf);
    w.write_all(&buf).await?;
    Ok(())
}

/// Checks that `payload` is exactly `count` length-prefixed messages.
pub fn validate_messages(payload: &[u8], count: u32) -> Result<()> {
    let mut at = 0usize;
    for i in 0..count {
        let Some(len) = payload.get(at..at + 4) else {
            return Err(LogError::Malformed(format!(
                "batch ends inside message {i}'s length"
            )));
        };
        let len = u32::from_le_bytes(len.try_into().expect("4 bytes"));
        if len > MESSAGE_BYTES_MAX || at + 4 + len as usize > payload.len() {
            return Err(LogError::Malformed(format!(
                "message {i} of {len} bytes overruns the batch"
            )));
        }
        at += 4 + len as usize;
    }
    if at != payload.len() {
        return Err(LogError::Malformed(format!(
            "batch has {} bytes after its {count} messages",
            payload.len() - at
        )));
    }
    Ok(())
}

/// Appends one message (length prefix + bytes) to a batch being built.
pub fn push_message(batch: &mut Vec<u8>, message: &[u8]) {
    batch.extend_from_slice(&(message.len() as u32).to_le_bytes());
    batch.extend_from_slice(message);
}

/// Iterates the messages of a validated payload.
pub fn messages(payload: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut at = 0usize;
    std::iter::from_fn(move || {
        let len = u32::from_le_bytes(payload.get(at..at + 4)?.try_into().ok()?) as usize;
        let message = payload.get(at + 4..at + 4 + len)?;
        at += 4 + len;
        Some(message)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_framing_round_trips_and_rejects_garbage() {
        let mut batch = Vec::new();
        for m in [&b"a"[..], b"", b"hello"] {
            push_message(&mut batch, m);
        }
        validate_messages(&batch, 3).unwrap();
        assert_eq!(
            messages(&batch).collect::<Vec<_>>(),
            vec![&b"a"[..], b"", b"hello"]
        );
        assert!(validate_messages(&batch, 2).is_err(), "trailing bytes");
        assert!(validate_messages(&batch, 4).is_err(), "missing message");
        let mut lying = batch.clone();
        lying[0] = 200;
        assert!(validate_messages(&lying, 3).is_err(), "length overruns");
    }

    #[tokio::test]
    async fn oversized_frames_are_refused_before_allocation() {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&(FRAME_BYTES_MAX + 1).to_le_bytes());
        let err = read_frame::<cairn_proto::logpb::ClientFrame>(&mut bytes.as_slice())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("exceeds"), "{err}");
    }
}
