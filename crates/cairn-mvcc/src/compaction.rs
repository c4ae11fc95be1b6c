//! `Compact`: dropping history older than a revision, physically.
//!
//! The key index decides, per key, which revisions `<= at` readers can still see (the newest
//! one of a live key); every other record at or below `at` is deleted from the engine in one
//! batch. Reads below `at` then fail with "required revision has been compacted".

use cairn_proto::etcdserverpb::{CompactionRequest, CompactionResponse};
use cairn_storage::engine::WriteBatch;
use cairn_storage::schema::{Bucket, META_COMPACT_REVISION};

use crate::error::MvccError;
use crate::response::header;
use crate::revision::Revision;
use crate::store::KvStore;

impl KvStore {
    pub(crate) fn apply_compaction(
        &mut self,
        request: &CompactionRequest,
    ) -> Result<CompactionResponse, MvccError> {
        let at = request.revision;
        if at <= self.compact_revision {
            return Err(MvccError::Compacted);
        }
        if at > self.current_revision {
            return Err(MvccError::FutureRevision);
        }
        let keep = self.index.compact(at);
        let mut batch = WriteBatch::new();
        let end = Revision::main_start_bytes(at + 1);
        self.engine
            .scan(Bucket::Key, &[], Some(&end), &mut |key, _| {
                let (revision, _) = Revision::from_bytes(key).expect("engine holds revision keys");
                if !keep.contains(&revision) {
                    batch.delete(Bucket::Key, key.to_vec());
                }
                true
            });
        self.engine.write(batch);
        self.compact_revision = at;
        self.put_meta(META_COMPACT_REVISION, at);
        Ok(CompactionResponse {
            header: header(self.current_revision),
        })
    }
}
