//! `Hash` and `HashKV`: a checksum of the MVCC history, for comparing replicas.

use cairn_storage::schema::Bucket;

use crate::error::MvccError;
use crate::revision::Revision;
use crate::store::KvStore;

/// A history checksum with the revisions it covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvHash {
    /// CRC32C over every record (revision key and value) up to `hash_revision`.
    pub hash: u32,
    pub compact_revision: i64,
    pub hash_revision: i64,
}

impl KvStore {
    /// Checksum of history up to `revision` (0: current). Two replicas that applied the same
    /// log agree on it.
    pub fn hash_kv(&self, revision: i64) -> Result<KvHash, MvccError> {
        let at = self.read_revision(revision, self.current_revision)?;
        let end = Revision::main_start_bytes(at + 1);
        let mut hash = 0u32;
        self.engine
            .scan(Bucket::Key, &[], Some(&end), &mut |key, value| {
                hash = crc32c::crc32c_append(hash, key);
                hash = crc32c::crc32c_append(hash, value);
                true
            });
        Ok(KvHash {
            hash,
            compact_revision: self.compact_revision,
            hash_revision: at,
        })
    }
}
