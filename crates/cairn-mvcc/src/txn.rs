//! `Txn`: compares, then the success or failure operations, as one revision.
//!
//! As etcd does, the branch of every txn (nested ones included) is decided up front against the
//! state before the txn — the *path* — and the chosen operations are checked (range revisions,
//! puts that need a previous record or a lease) before anything is written, so a txn either
//! applies whole or not at all. Reads inside the txn then see its own earlier writes.

use std::cmp::Ordering;

use cairn_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use cairn_proto::etcdserverpb::request_op::Request;
use cairn_proto::etcdserverpb::response_op::Response;
use cairn_proto::etcdserverpb::{
    Compare, RequestOp, ResponseHeader, ResponseOp, TxnRequest, TxnResponse,
};
use cairn_proto::mvccpb::KeyValue;

use crate::error::MvccError;
use crate::index::KeyRange;
use crate::kv::{delete_range_in, put_in};
use crate::response::header;
use crate::store::{KvStore, WriteTxn};

impl KvStore {
    /// A txn as its own request.
    pub(crate) fn apply_txn(&mut self, request: &TxnRequest) -> Result<TxnResponse, MvccError> {
        let mut path = Vec::new();
        self.txn_path(request, &mut path);
        self.check_txn_ops(request, &path)?;
        let mut txn = self.write_txn();
        let mut response = execute(&mut txn, request, &path, &mut 0);
        response.header = header(txn.end());
        Ok(response)
    }

    /// A txn with no write in any branch, answered without a log entry.
    pub fn txn_read_only(&self, request: &TxnRequest) -> Result<TxnResponse, MvccError> {
        assert!(
            !txn_writes(request),
            "txn_read_only called with a writing txn"
        );
        let mut path = Vec::new();
        self.txn_path(request, &mut path);
        self.check_txn_ops(request, &path)?;
        let mut response = self.read_only_branch(request, &path, &mut 0)?;
        response.header = header(self.current_revision);
        Ok(response)
    }

    fn read_only_branch(
        &self,
        request: &TxnRequest,
        path: &[bool],
        cursor: &mut usize,
    ) -> Result<TxnResponse, MvccError> {
        let succeeded = path[*cursor];
        *cursor += 1;
        let mut responses = Vec::new();
        for op in branch(request, succeeded) {
            let response = match &op.request {
                Some(Request::RequestRange(range)) => Response::ResponseRange(self.range(range)?),
                Some(Request::RequestTxn(nested)) => {
                    let mut nested = self.read_only_branch(nested, path, cursor)?;
                    nested.header = Some(ResponseHeader::default());
                    Response::ResponseTxn(nested)
                }
                _ => unreachable!("read-only txn holds only ranges and txns"),
            };
            responses.push(ResponseOp {
                response: Some(response),
            });
        }
        Ok(TxnResponse {
            header: None,
            succeeded,
            responses,
        })
    }

    /// Appends, in pre-order, whether each txn (this one, then its nested ones in the chosen
    /// branch) takes its success branch.
    fn txn_path(&self, request: &TxnRequest, path: &mut Vec<bool>) {
        let succeeded = request
            .compare
            .iter()
            .all(|compare| self.compare_holds(compare));
        path.push(succeeded);
        for op in branch(request, succeeded) {
            if let Some(Request::RequestTxn(nested)) = &op.request {
                self.txn_path(nested, path);
            }
        }
    }

    /// etcd's `applyCompare`: a compare over a range holds when it holds for every key; over
    /// no key, it compares against an empty record, except VALUE which then fails.
    fn compare_holds(&self, compare: &Compare) -> bool {
        let range = KeyRange::new(&compare.key, &compare.range_end);
        let (kvs, _) = self.range_at(&range, self.current_revision, 0, false);
        if kvs.is_empty() {
            let is_value = compare.target == CompareTarget::Value as i32;
            return !is_value && compare_kv(compare, &KeyValue::default());
        }
        kvs.iter().all(|kv| compare_kv(compare, kv))
    }

    /// Checks the operations the path will run, against the state before the txn: every put,
    /// then every range. The two passes are etcd's `checkRequests` order, which decides the
    /// error a txn with several faults gets.
    fn check_txn_ops(&self, request: &TxnRequest, path: &[bool]) -> Result<(), MvccError> {
        let mut deleted_from = None;
        check_path_ops(request, path, &mut 0, &mut |op| {
            self.check_put_op(op, &mut deleted_from)
        })?;
        check_path_ops(request, path, &mut 0, &mut |op| self.check_range_op(op))
    }

    /// `deleted_from` is the smallest start of the deletes with a `"\0"` range end that run
    /// before `op`: the duplicate-key check lets such a delete precede a put of a key it covers
    /// (see `validate`), and nothing else in the txn can bring that key back before the put.
    /// An `ignore_value`/`ignore_lease` put of such a key finds no previous record when it
    /// runs: etcd panics mid-txn there; refusing it up front keeps the txn whole.
    fn check_put_op(
        &self,
        op: &RequestOp,
        deleted_from: &mut Option<Vec<u8>>,
    ) -> Result<(), MvccError> {
        match &op.request {
            Some(Request::RequestPut(put)) => {
                if put.ignore_value || put.ignore_lease {
                    let deleted = deleted_from.as_ref().is_some_and(|from| put.key >= *from);
                    if deleted || self.get_at(&put.key, self.current_revision).is_none() {
                        return Err(MvccError::KeyNotFound);
                    }
                }
                if put.lease != 0 && self.leases.get(put.lease).is_none() {
                    return Err(MvccError::LeaseNotFound);
                }
                Ok(())
            }
            Some(Request::RequestDeleteRange(delete)) if delete.range_end == [0] => {
                let from = deleted_from.get_or_insert_with(|| delete.key.clone());
                if delete.key < *from {
                    *from = delete.key.clone();
                }
                Ok(())
            }
            None => Err(MvccError::KeyNotFound),
            _ => Ok(()),
        }
    }

    /// etcd's `checkRequestRange`. Unlike a plain Range, which reads a negative revision as the
    /// current one, it refuses a revision below the compacted one, negative ones included.
    fn check_range_op(&self, op: &RequestOp) -> Result<(), MvccError> {
        let Some(Request::RequestRange(range)) = &op.request else {
            return Ok(());
        };
        match range.revision {
            0 => Ok(()),
            revision if revision > self.current_revision => Err(MvccError::FutureRevision),
            revision if revision < self.compact_revision => Err(MvccError::Compacted),
            _ => Ok(()),
        }
    }
}

/// Runs `check` on every operation the path will run except txns, whose own operations it
/// visits instead, in order.
fn check_path_ops(
    request: &TxnRequest,
    path: &[bool],
    cursor: &mut usize,
    check: &mut dyn FnMut(&RequestOp) -> Result<(), MvccError>,
) -> Result<(), MvccError> {
    let succeeded = path[*cursor];
    *cursor += 1;
    for op in branch(request, succeeded) {
        match &op.request {
            Some(Request::RequestTxn(nested)) => check_path_ops(nested, path, cursor, check)?,
            _ => check(op)?,
        }
    }
    Ok(())
}

fn branch(request: &TxnRequest, succeeded: bool) -> &[RequestOp] {
    if succeeded {
        &request.success
    } else {
        &request.failure
    }
}

/// etcd's `compareKV`. It reads only the union member that matches the target (another member,
/// or none, reads as Go's zero value), and an unknown target or result compares as equal.
fn compare_kv(compare: &Compare, kv: &KeyValue) -> bool {
    let union = &compare.target_union;
    let ordering = match CompareTarget::try_from(compare.target) {
        Ok(CompareTarget::Value) => match union {
            Some(TargetUnion::Value(value)) => kv.value.as_slice().cmp(value),
            _ => kv.value.as_slice().cmp(&[]),
        },
        Ok(target @ CompareTarget::Version) => kv.version.cmp(&union_number(target, union)),
        Ok(target @ CompareTarget::Create) => kv.create_revision.cmp(&union_number(target, union)),
        Ok(target @ CompareTarget::Mod) => kv.mod_revision.cmp(&union_number(target, union)),
        Ok(target @ CompareTarget::Lease) => kv.lease.cmp(&union_number(target, union)),
        Err(_) => Ordering::Equal,
    };
    match CompareResult::try_from(compare.result) {
        Ok(CompareResult::Equal) => ordering.is_eq(),
        Ok(CompareResult::NotEqual) => ordering.is_ne(),
        Ok(CompareResult::Greater) => ordering.is_gt(),
        Ok(CompareResult::Less) => ordering.is_lt(),
        Err(_) => true,
    }
}

/// The number a compare holds for a numeric target.
fn union_number(target: CompareTarget, union: &Option<TargetUnion>) -> i64 {
    match (target, union) {
        (CompareTarget::Version, Some(TargetUnion::Version(n)))
        | (CompareTarget::Create, Some(TargetUnion::CreateRevision(n)))
        | (CompareTarget::Mod, Some(TargetUnion::ModRevision(n)))
        | (CompareTarget::Lease, Some(TargetUnion::Lease(n))) => *n,
        _ => 0,
    }
}

/// Runs the branch the path chose. Every check already passed, so nothing here fails.
fn execute(
    txn: &mut WriteTxn<'_>,
    request: &TxnRequest,
    path: &[bool],
    cursor: &mut usize,
) -> TxnResponse {
    let succeeded = path[*cursor];
    *cursor += 1;
    let mut responses = Vec::new();
    for op in branch(request, succeeded) {
        let response = match &op.request {
            Some(Request::RequestRange(range)) => {
                let current = txn.read_revision();
                let result = txn.store().range_at_current(range, current);
                Response::ResponseRange(result.expect("txn ranges are checked before executing"))
            }
            Some(Request::RequestPut(put)) => {
                let result = put_in(txn, put);
                Response::ResponsePut(result.expect("txn puts are checked before executing"))
            }
            Some(Request::RequestDeleteRange(delete)) => {
                Response::ResponseDeleteRange(delete_range_in(txn, delete))
            }
            Some(Request::RequestTxn(nested)) => {
                let mut nested = execute(txn, nested, path, cursor);
                nested.header = Some(ResponseHeader::default());
                Response::ResponseTxn(nested)
            }
            None => unreachable!("empty txn ops are refused by the checks"),
        };
        responses.push(ResponseOp {
            response: Some(response),
        });
    }
    TxnResponse {
        header: None,
        succeeded,
        responses,
    }
}

/// Whether any branch of the txn (nested ones included) writes.
pub fn txn_writes(request: &TxnRequest) -> bool {
    request
        .success
        .iter()
        .chain(&request.failure)
        .any(|op| match &op.request {
            Some(Request::RequestPut(_)) | Some(Request::RequestDeleteRange(_)) => true,
            Some(Request::RequestTxn(nested)) => txn_writes(nested),
            Some(Request::RequestRange(_)) | None => false,
        })
}

#[cfg(test)]
mod tests {
    use cairn_proto::cairnpb::internal_request::Request as Entry;
    use cairn_proto::cairnpb::InternalRequest;
    use cairn_proto::etcdserverpb::{DeleteRangeRequest, PutRequest};
    use cairn_storage::memory::MemoryEngine;

    use super::*;
    use crate::validate::check_txn;
    use crate::StoreConfig;

    fn put(key: &str) -> PutRequest {
        PutRequest {
            key: key.into(),
            value: b"v".to_vec(),
            ..Default::default()
        }
    }

    fn entry(request: Entry) -> InternalRequest {
        InternalRequest {
            now_unix_ms: 0,
            request: Some(request),
            ..Default::default()
        }
    }

    /// Found by the differential test against etcd, which accepts this txn (a `"\0"` range end
    /// is no interval to its duplicate-key check) and then panics when the put finds "b" gone.
    #[test]
    fn an_ignore_value_put_after_a_delete_to_the_end_is_refused_whole() {
        let mut store = KvStore::open(Box::new(MemoryEngine::new()), StoreConfig::default());
        store.apply(1, &entry(Entry::Put(put("b")))).unwrap();
        let delete_from_a = DeleteRangeRequest {
            key: b"a".to_vec(),
            range_end: vec![0],
            prev_kv: false,
        };
        let ignore_value = PutRequest {
            value: Vec::new(),
            ignore_value: true,
            ..put("b")
        };
        let txn = |put: PutRequest| TxnRequest {
            compare: Vec::new(),
            success: vec![
                RequestOp {
                    request: Some(Request::RequestDeleteRange(delete_from_a.clone())),
                },
                RequestOp {
                    request: Some(Request::RequestPut(put)),
                },
            ],
            failure: Vec::new(),
        };
        assert_eq!(check_txn(&txn(ignore_value.clone()), 128), Ok(()));
        let refused = store.apply(2, &entry(Entry::Txn(txn(ignore_value))));
        assert_eq!(refused, Err(MvccError::KeyNotFound));
        assert_eq!(store.current_revision(), 2, "nothing of the txn is applied");
        // A plain put of the key runs after the delete, as in etcd.
        store.apply(3, &entry(Entry::Txn(txn(put("b"))))).unwrap();
        assert_eq!(store.get_at(b"b", 3).map(|kv| kv.create_revision), Some(3));
    }
}
