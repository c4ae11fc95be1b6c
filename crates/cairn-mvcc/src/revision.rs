//! Revisions: the store-wide logical clock.
//!
//! Every write request gets one *main* revision; the individual changes inside it (the puts and
//! deletes of a txn) get *sub* revisions 0, 1, 2, … In the `Key` bucket a revision is the key:
//! `main` as 8 big-endian bytes, `_`, `sub` as 8 big-endian bytes, and a trailing `t` when the
//! record is a tombstone (a delete). Big-endian makes byte order equal revision order, so a scan
//! of the bucket walks history in order.

/// A (main, sub) revision pair.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Revision {
    pub main: i64,
    pub sub: i64,
}

/// Length of an encoded revision without the tombstone mark.
pub const REVISION_BYTES_LEN: usize = 17;

const TOMBSTONE_MARK: u8 = b't';

impl Revision {
    pub const fn new(main: i64, sub: i64) -> Revision {
        Revision { main, sub }
    }

    /// The `Key`-bucket key of this revision.
    pub fn to_bytes(self, tombstone: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(REVISION_BYTES_LEN + 1);
        out.extend_from_slice(&self.main.to_be_bytes());
        out.push(b'_');
        out.extend_from_slice(&self.sub.to_be_bytes());
        if tombstone {
            out.push(TOMBSTONE_MARK);
        }
        out
    }

    /// Decodes a `Key`-bucket key into the revision and whether it marks a tombstone. `None`
    /// when the bytes are not an encoded revision.
    pub fn from_bytes(bytes: &[u8]) -> Option<(Revision, bool)> {
        let tombstone = match bytes.len() {
            REVISION_BYTES_LEN => false,
            len if len == REVISION_BYTES_LEN + 1 && bytes[REVISION_BYTES_LEN] == TOMBSTONE_MARK => {
                true
            }
            _ => return None,
        };
        if bytes[8] != b'_' {
            return None;
        }
        let mut main = [0u8; 8];
        let mut sub = [0u8; 8];
        main.copy_from_slice(&bytes[..8]);
        sub.copy_from_slice(&bytes[9..17]);
        let revision = Revision::new(i64::from_be_bytes(main), i64::from_be_bytes(sub));
        Some((revision, tombstone))
    }

    /// The smallest bucket key at or after every record of main revision `main`.
    pub fn main_start_bytes(main: i64) -> Vec<u8> {
        Revision::new(main, 0).to_bytes(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_round_trips_and_sorts_like_revisions() {
        let revisions = [
            Revision::new(0, 0),
            Revision::new(1, 0),
            Revision::new(1, 1),
            Revision::new(2, 0),
            Revision::new(256, 3),
            Revision::new(i64::MAX, 0),
        ];
        for pair in revisions.windows(2) {
            assert!(pair[0].to_bytes(false) < pair[1].to_bytes(false));
            // A tombstone of the smaller revision still sorts before the next revision.
            assert!(pair[0].to_bytes(true) < pair[1].to_bytes(false));
        }
        for revision in revisions {
            for tombstone in [false, true] {
                assert_eq!(
                    Revision::from_bytes(&revision.to_bytes(tombstone)),
                    Some((revision, tombstone))
                );
            }
        }
    }

    #[test]
    fn malformed_bytes_are_not_revisions() {
        assert_eq!(Revision::from_bytes(b""), None);
        assert_eq!(Revision::from_bytes(&[0u8; 17]), None);
        let mut with_bad_mark = Revision::new(5, 0).to_bytes(false);
        with_bad_mark.push(b'x');
        assert_eq!(Revision::from_bytes(&with_bad_mark), None);
    }
}
