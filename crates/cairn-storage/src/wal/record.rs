//! Record framing: one log entry as bytes in a segment (format in the `wal` module doc).
//!
//! The encoder asserts what the decoder verifies (payload length bound; the CRC it computes
//! over exactly the bytes the decoder checks), so a record this module writes is always one it
//! reads back.

use crate::error::Corruption;
use crate::limits::WAL_RECORD_DATA_BYTES_MAX;

/// Bytes before the payload: crc32c u32, length u32, index u64, term u64.
pub(crate) const RECORD_HEADER_BYTES: usize = 24;

/// Offset of the first byte the CRC covers (everything after the CRC field itself).
const CRC_COVERED_FROM: usize = 4;

/// A record decoded in place, borrowing its payload from the segment bytes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct RecordRef<'a> {
    pub index: u64,
    pub term: u64,
    pub data: &'a [u8],
}

impl RecordRef<'_> {
    /// Bytes the record occupies in the segment.
    pub fn encoded_len(&self) -> usize {
        RECORD_HEADER_BYTES + self.data.len()
    }
}

/// Appends the record for (`index`, `term`, `data`) to `out`.
pub(crate) fn encode(index: u64, term: u64, data: &[u8], out: &mut Vec<u8>) {
    assert!(
        data.len() <= WAL_RECORD_DATA_BYTES_MAX,
        "wal record for index {index}: {} payload bytes, the maximum is {WAL_RECORD_DATA_BYTES_MAX}",
        data.len()
    );
    assert!(index >= 1, "wal record index must be >= 1");
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(&index.to_le_bytes());
    out.extend_from_slice(&term.to_le_bytes());
    out.extend_from_slice(data);
    let crc = crc32c::crc32c(&out[start + CRC_COVERED_FROM..]);
    out[start..start + CRC_COVERED_FROM].copy_from_slice(&crc.to_le_bytes());
}

/// Decodes the record at the start of `bytes`. `Ok(None)` means `bytes` is empty: a clean end.
/// Any other shortfall, an oversized length or a CRC mismatch is an error; whether that error
/// is a torn tail or corruption is decided by the caller, which knows where the bytes sit.
pub(crate) fn decode(bytes: &[u8]) -> Result<Option<RecordRef<'_>>, Corruption> {
    if bytes.is_empty() {
        return Ok(None);
    }
    if bytes.len() < RECORD_HEADER_BYTES {
        return Err(Corruption::Truncated);
    }
    let stored = u32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes"));
    let len = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
    if len as usize > WAL_RECORD_DATA_BYTES_MAX {
        return Err(Corruption::Length(len));
    }
    let end = RECORD_HEADER_BYTES + len as usize;
    if bytes.len() < end {
        return Err(Corruption::Truncated);
    }
    let computed = crc32c::crc32c(&bytes[CRC_COVERED_FROM..end]);
    if computed != stored {
        return Err(Corruption::Crc { stored, computed });
    }
    Ok(Some(RecordRef {
        index: u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes")),
        term: u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes")),
        data: &bytes[RECORD_HEADER_BYTES..end],
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut out = Vec::new();
        encode(7, 3, b"hello wal", &mut out);
        out
    }

    #[test]
    fn round_trip_and_clean_end() {
        let bytes = sample();
        let record = decode(&bytes).unwrap().unwrap();
        assert_eq!(
            record,
            RecordRef {
                index: 7,
                term: 3,
                data: b"hello wal"
            }
        );
        assert_eq!(record.encoded_len(), bytes.len());
        assert_eq!(decode(&[]), Ok(None));
        let mut empty = Vec::new();
        encode(1, 0, b"", &mut empty);
        assert_eq!(decode(&empty).unwrap().unwrap().data, b"");
    }

    #[test]
    fn every_prefix_and_every_bit_flip_is_rejected() {
        let bytes = sample();
        for cut in 1..bytes.len() {
            assert_eq!(
                decode(&bytes[..cut]),
                Err(Corruption::Truncated),
                "cut at {cut}"
            );
        }
        for byte in 0..bytes.len() {
            for bit in 0..8 {
                let mut bad = bytes.clone();
                bad[byte] ^= 1 << bit;
                assert!(
                    decode(&bad).is_err(),
                    "flip of bit {bit} in byte {byte} accepted"
                );
            }
        }
    }

    #[test]
    fn oversized_length_is_refused_before_reading_payload() {
        let mut bytes = sample();
        bytes[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode(&bytes), Err(Corruption::Length(u32::MAX)));
    }

    #[test]
    #[should_panic(expected = "payload bytes, the maximum is")]
    fn encoder_asserts_the_length_bound() {
        encode(
            1,
            1,
            &vec![0; WAL_RECORD_DATA_BYTES_MAX + 1],
            &mut Vec::new(),
        );
    }
}
