//! `Put` and `DeleteRange`, applied alone or as operations of a txn.

use cairn_proto::etcdserverpb::{DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse};

use crate::error::MvccError;
use crate::index::KeyRange;
use crate::response::header;
use crate::store::{KvStore, WriteTxn};

impl KvStore {
    /// A `Put` as its own request. The lease is checked first, then the key (etcd's order).
    pub(crate) fn apply_put(&mut self, request: &PutRequest) -> Result<PutResponse, MvccError> {
        if request.lease != 0 && self.leases.get(request.lease).is_none() {
            return Err(MvccError::LeaseNotFound);
        }
        let mut txn = self.write_txn();
        let response = put_in(&mut txn, request)?;
        txn.end();
        Ok(response)
    }

    /// A `DeleteRange` as its own request. Deleting nothing leaves the revision unchanged.
    pub(crate) fn apply_delete_range(
        &mut self,
        request: &DeleteRangeRequest,
    ) -> DeleteRangeResponse {
        let mut txn = self.write_txn();
        let response = delete_range_in(&mut txn, request);
        txn.end();
        response
    }
}

/// Applies a put inside `txn`. Fails, before writing anything, when `ignore_value` or
/// `ignore_lease` needs a previous record that does not exist.
pub(crate) fn put_in(
    txn: &mut WriteTxn<'_>,
    request: &PutRequest,
) -> Result<PutResponse, MvccError> {
    let needs_previous = request.prev_kv || request.ignore_value || request.ignore_lease;
    let previous = match needs_previous {
        true => txn.store().get_at(&request.key, txn.read_revision()),
        false => None,
    };
    let ignores = request.ignore_value || request.ignore_lease;
    if ignores && previous.is_none() {
        return Err(MvccError::KeyNotFound);
    }
    let value = match (&previous, request.ignore_value) {
        (Some(previous), true) => previous.value.clone(),
        _ => request.value.clone(),
    };
    let lease = match (&previous, request.ignore_lease) {
        (Some(previous), true) => previous.lease,
        _ => request.lease,
    };
    let revision = txn.put(&request.key, &value, lease);
    let prev_kv = if request.prev_kv { previous } else { None };
    Ok(PutResponse {
        header: header(revision),
        prev_kv,
    })
}

/// Applies a delete inside `txn`.
pub(crate) fn delete_range_in(
    txn: &mut WriteTxn<'_>,
    request: &DeleteRangeRequest,
) -> DeleteRangeResponse {
    let deleted = txn.delete_range(&KeyRange::new(&request.key, &request.range_end));
    DeleteRangeResponse {
        header: header(txn.end_revision()),
        deleted: deleted.len() as i64,
        prev_kvs: if request.prev_kv { deleted } else { Vec::new() },
    }
}
