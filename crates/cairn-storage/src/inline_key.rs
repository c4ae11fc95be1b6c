//! `InlineKey`: a bucket key kept inside its slot when it is short, boxed otherwise.
//!
//! The `Key` bucket holds one entry per revision, keyed by the 17- or 18-byte revision; boxed,
//! each such key cost a 16-byte pointer plus a heap block. Inline it costs the 24-byte slot
//! alone: 21 MiB less RSS with a million revisions (measured in
//! docs/perf/kv-single-node-notes.md). cairn-mvcc's key index keys its B-tree with it too, so
//! that a lookup compares keys inside the nodes it reads instead of following a pointer each.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::fmt;
use std::ops::Deref;

/// Longest key kept inline: what fits beside the length and the enum tag in 24 bytes.
const INLINE_BYTES_MAX: usize = 22;

#[derive(Clone)]
pub enum InlineKey {
    Inline {
        len: u8,
        bytes: [u8; INLINE_BYTES_MAX],
    },
    Boxed(Box<[u8]>),
}

const _: () = assert!(std::mem::size_of::<InlineKey>() == 24);

impl InlineKey {
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            InlineKey::Inline { len, bytes } => &bytes[..*len as usize],
            InlineKey::Boxed(boxed) => boxed,
        }
    }

    pub fn into_boxed(self) -> Box<[u8]> {
        match self {
            InlineKey::Inline { .. } => self.as_bytes().into(),
            InlineKey::Boxed(boxed) => boxed,
        }
    }
}

impl From<Box<[u8]>> for InlineKey {
    fn from(key: Box<[u8]>) -> InlineKey {
        if key.len() > INLINE_BYTES_MAX {
            return InlineKey::Boxed(key);
        }
        InlineKey::from(&key[..])
    }
}

impl From<&[u8]> for InlineKey {
    fn from(key: &[u8]) -> InlineKey {
        if key.len() > INLINE_BYTES_MAX {
            return InlineKey::Boxed(key.into());
        }
        let mut bytes = [0; INLINE_BYTES_MAX];
        bytes[..key.len()].copy_from_slice(key);
        InlineKey::Inline {
            len: key.len() as u8,
            bytes,
        }
    }
}

/// Maps keyed by `InlineKey` are searched with plain byte slices; `Ord` below is byte order,
/// as `Borrow` requires.
impl Borrow<[u8]> for InlineKey {
    #[inline]
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl Deref for InlineKey {
    type Target = [u8];

    #[inline]
    fn deref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl PartialEq for InlineKey {
    #[inline]
    fn eq(&self, other: &InlineKey) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for InlineKey {}

impl PartialOrd for InlineKey {
    #[inline]
    fn partial_cmp(&self, other: &InlineKey) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Byte order, whichever way each side is stored.
impl Ord for InlineKey {
    #[inline]
    fn cmp(&self, other: &InlineKey) -> Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

impl fmt::Debug for InlineKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_keys_are_inline_and_every_key_keeps_its_bytes_and_order() {
        let keys: Vec<Box<[u8]>> = (0..=40usize)
            .flat_map(|len| [vec![0x61; len], vec![0xff; len]])
            .map(Vec::into_boxed_slice)
            .collect();
        for key in &keys {
            let inline = InlineKey::from(key.clone());
            assert_eq!(
                matches!(inline, InlineKey::Inline { .. }),
                key.len() <= INLINE_BYTES_MAX
            );
            assert_eq!(inline.as_bytes(), &key[..]);
            assert_eq!(InlineKey::from(&key[..]), inline);
            assert_eq!(inline.clone().into_boxed(), *key);
            for other in &keys {
                assert_eq!(inline.cmp(&InlineKey::from(other.clone())), key.cmp(other));
            }
        }
    }
}
