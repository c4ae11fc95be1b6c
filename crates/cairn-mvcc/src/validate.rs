//! Checks a request must pass before it is proposed, with etcd's errors (the `check*Request`
//! functions of etcd's `v3rpc/key.go`). They look at the request alone, never at the state.

use std::collections::HashSet;

use cairn_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use cairn_proto::etcdserverpb::request_op::Request;
use cairn_proto::etcdserverpb::{
    DeleteRangeRequest, LeaseGrantRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};

use crate::error::MvccError;
use crate::index::KeyRange;
use crate::limits::LEASE_TTL_S_MAX;

pub fn check_range(request: &RangeRequest) -> Result<(), MvccError> {
    non_empty_key(&request.key)?;
    let order_known = SortOrder::try_from(request.sort_order).is_ok();
    let target_known = SortTarget::try_from(request.sort_target).is_ok();
    if !order_known || !target_known {
        return Err(MvccError::InvalidSortOption);
    }
    Ok(())
}

pub fn check_put(request: &PutRequest) -> Result<(), MvccError> {
    non_empty_key(&request.key)?;
    if request.ignore_value && !request.value.is_empty() {
        return Err(MvccError::ValueProvided);
    }
    if request.ignore_lease && request.lease != 0 {
        return Err(MvccError::LeaseProvided);
    }
    Ok(())
}

pub fn check_delete_range(request: &DeleteRangeRequest) -> Result<(), MvccError> {
    non_empty_key(&request.key)
}

pub fn check_lease_grant(request: &LeaseGrantRequest) -> Result<(), MvccError> {
    if request.ttl > LEASE_TTL_S_MAX {
        return Err(MvccError::LeaseTtlTooLarge);
    }
    Ok(())
}

/// A txn: sizes and keys of every operation, then no key written twice.
pub fn check_txn(request: &TxnRequest, txn_ops_max: usize) -> Result<(), MvccError> {
    check_txn_ops(request, txn_ops_max)?;
    collect_writes(&request.success)?;
    collect_writes(&request.failure)?;
    Ok(())
}

fn check_txn_ops(request: &TxnRequest, txn_ops_max: usize) -> Result<(), MvccError> {
    let ops = request
        .compare
        .len()
        .max(request.success.len())
        .max(request.failure.len());
    if ops > txn_ops_max {
        return Err(MvccError::TooManyOps);
    }
    for compare in &request.compare {
        non_empty_key(&compare.key)?;
    }
    for op in request.success.iter().chain(&request.failure) {
        check_op(op, txn_ops_max - ops)?;
    }
    Ok(())
}

fn check_op(op: &RequestOp, txn_ops_max: usize) -> Result<(), MvccError> {
    match &op.request {
        Some(Request::RequestRange(range)) => check_range(range),
        Some(Request::RequestPut(put)) => check_put(put),
        Some(Request::RequestDeleteRange(delete)) => check_delete_range(delete),
        Some(Request::RequestTxn(nested)) => check_txn_ops(nested, txn_ops_max),
        None => Err(MvccError::KeyNotFound),
    }
}

fn non_empty_key(key: &[u8]) -> Result<(), MvccError> {
    if key.is_empty() {
        return Err(MvccError::EmptyKey);
    }
    Ok(())
}

/// The keys a delete covers as etcd's `checkIntervals` sees them: its interval tree takes
/// `range_end` literally, so a `"\0"` end (every key from `key` on, when applied) makes an
/// interval that ends before it starts and clashes with no put.
fn deleted_interval(delete: &DeleteRangeRequest) -> KeyRange {
    match delete.range_end.as_slice() {
        [] => KeyRange::Single(delete.key.clone()),
        end => KeyRange::Span {
            start: delete.key.clone(),
            end: Some(end.to_vec()),
        },
    }
}

/// The keys one list of txn operations may write: puts and deleted ranges.
struct Writes {
    puts: HashSet<Vec<u8>>,
    deletes: Vec<KeyRange>,
}

impl Writes {
    fn deleted(&self, key: &[u8]) -> bool {
        self.deletes.iter().any(|range| range.contains(key))
    }
}

/// etcd's `checkIntervals`: within one list (nested txns included) a key may be put once and
/// may not be both put and deleted. A nested txn's success and failure lists exclude each other,
/// so the same key in both is fine.
fn collect_writes(ops: &[RequestOp]) -> Result<Writes, MvccError> {
    let mut writes = Writes {
        puts: HashSet::new(),
        deletes: Vec::new(),
    };
    for op in ops {
        if let Some(Request::RequestDeleteRange(delete)) = &op.request {
            writes.deletes.push(deleted_interval(delete));
        }
    }
    for op in ops {
        let Some(Request::RequestTxn(nested)) = &op.request else {
            continue;
        };
        let then = collect_writes(&nested.success)?;
        let otherwise = collect_writes(&nested.failure)?;
        for key in &then.puts {
            if writes.puts.contains(key) || writes.deleted(key) {
                return Err(MvccError::DuplicateKey);
            }
            writes.puts.insert(key.clone());
        }
        for key in &otherwise.puts {
            let clash = writes.puts.contains(key) && !then.puts.contains(key);
            if clash || writes.deleted(key) {
                return Err(MvccError::DuplicateKey);
            }
            writes.puts.insert(key.clone());
        }
        writes.deletes.extend(then.deletes);
        writes.deletes.extend(otherwise.deletes);
    }
    for op in ops {
        let Some(Request::RequestPut(put)) = &op.request else {
            continue;
        };
        if writes.puts.contains(&put.key) || writes.deleted(&put.key) {
            return Err(MvccError::DuplicateKey);
        }
        writes.puts.insert(put.key.clone());
    }
    Ok(writes)
}
