//! `Range`: reading keys at a revision with etcd's options.
//!
//! Order of work, as etcd's `applierV3backend.Range`: pick the read revision; fetch (one extra
//! key when only `limit` applies, to know `more`; everything when sorting or filtering by
//! revision); prune by min/max mod/create revision; sort (ascending by default when a target
//! other than KEY is given); cut to `limit`. `count` is the number of keys in the range at the
//! revision before pruning, whatever the limit.

use std::cmp::Ordering;

use cairn_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use cairn_proto::etcdserverpb::{RangeRequest, RangeResponse};
use cairn_proto::mvccpb::KeyValue;

use crate::error::MvccError;
use crate::index::KeyRange;
use crate::response::header;
use crate::store::KvStore;

impl KvStore {
    /// A `Range` on the current state.
    pub fn range(&self, request: &RangeRequest) -> Result<RangeResponse, MvccError> {
        self.range_at_current(request, self.current_revision)
    }

    /// A `Range` where `current` is the newest revision visible (inside a write txn it includes
    /// the txn's own earlier changes).
    pub(crate) fn range_at_current(
        &self,
        request: &RangeRequest,
        current: i64,
    ) -> Result<RangeResponse, MvccError> {
        let at = self.read_revision(request.revision, current)?;
        let sort_order = SortOrder::try_from(request.sort_order).unwrap_or(SortOrder::None);
        let sort_target = SortTarget::try_from(request.sort_target).unwrap_or(SortTarget::Key);
        let filtered = request.min_mod_revision != 0
            || request.max_mod_revision != 0
            || request.min_create_revision != 0
            || request.max_create_revision != 0;
        let fetch_all = sort_order != SortOrder::None || filtered;
        let fetch_limit = match request.limit {
            limit if limit > 0 && !fetch_all => limit as usize + 1,
            _ => 0,
        };
        let range = KeyRange::new(&request.key, &request.range_end);
        let (mut kvs, count) = self.range_at(&range, at, fetch_limit, request.count_only);
        if filtered {
            kvs.retain(|kv| passes_revision_filters(request, kv));
        }
        let sort_order = match (sort_order, sort_target) {
            (SortOrder::None, SortTarget::Key) => SortOrder::None,
            // Keys come out ascending already; any other target sorts ascending by default.
            (SortOrder::None, _) => SortOrder::Ascend,
            (order, _) => order,
        };
        // Stable sorts with the comparator flipped for DESCEND: ties keep key order either way,
        // as etcd's sort does on the result sizes clients page through.
        match sort_order {
            SortOrder::None => {}
            SortOrder::Ascend => kvs.sort_by(|a, b| compare_by(sort_target, a, b)),
            SortOrder::Descend => kvs.sort_by(|a, b| compare_by(sort_target, b, a)),
        }
        let mut more = false;
        if request.limit > 0 && kvs.len() > request.limit as usize {
            kvs.truncate(request.limit as usize);
            more = true;
        }
        if request.keys_only {
            for kv in &mut kvs {
                kv.value.clear();
            }
        }
        Ok(RangeResponse {
            header: header(current),
            kvs,
            more,
            count,
        })
    }
}

fn passes_revision_filters(request: &RangeRequest, kv: &KeyValue) -> bool {
    let above = |value: i64, min: i64| min == 0 || value >= min;
    let below = |value: i64, max: i64| max == 0 || value <= max;
    above(kv.mod_revision, request.min_mod_revision)
        && below(kv.mod_revision, request.max_mod_revision)
        && above(kv.create_revision, request.min_create_revision)
        && below(kv.create_revision, request.max_create_revision)
}

fn compare_by(target: SortTarget, a: &KeyValue, b: &KeyValue) -> Ordering {
    match target {
        SortTarget::Key => a.key.cmp(&b.key),
        SortTarget::Version => a.version.cmp(&b.version),
        SortTarget::Create => a.create_revision.cmp(&b.create_revision),
        SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
        SortTarget::Value => a.value.cmp(&b.value),
    }
}
