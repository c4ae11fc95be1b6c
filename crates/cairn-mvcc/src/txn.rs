//! `Txn`: compares, then the success or failure operations, as one revision.
//!
//! As etcd does, the branch of every txn (nested ones included) is decided up front against the
//! state before the txn — the *path* — and the chosen operations are checked (range revisions,
//! puts that need a previous record or a lease) before anything is written, so a txn either
//! applies whole or not at all. Reads inside the txn then see its own earlier writes.

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
        self.check_txn_ops(request, &path, &mut 0)?;
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
        self.check_txn_ops(request, &path, &mut 0)?;
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

    /// Checks the operations the path will run, against the state before the txn.
    fn check_txn_ops(
        &self,
        request: &TxnRequest,
        path: &[bool],
        cursor: &mut usize,
    ) -> Result<(), MvccError> {
        let succeeded = path[*cursor];
        *cursor += 1;
        for op in branch(request, succeeded) {
            match &op.request {
                Some(Request::RequestRange(range)) => {
                    self.read_revision(range.revision, self.current_revision)?;
                }
                Some(Request::RequestPut(put)) => {
                    if put.ignore_value || put.ignore_lease {
                        self.get_at(&put.key, self.current_revision)
                            .ok_or(MvccError::KeyNotFound)?;
                    }
                    if put.lease != 0 && self.leases.get(put.lease).is_none() {
                        return Err(MvccError::LeaseNotFound);
                    }
                }
                Some(Request::RequestTxn(nested)) => self.check_txn_ops(nested, path, cursor)?,
                Some(Request::RequestDeleteRange(_)) => {}
                None => return Err(MvccError::KeyNotFound),
            }
        }
        Ok(())
    }
}

fn branch(request: &TxnRequest, succeeded: bool) -> &[RequestOp] {
    if succeeded {
        &request.success
    } else {
        &request.failure
    }
}

fn compare_kv(compare: &Compare, kv: &KeyValue) -> bool {
    let ordering = match (
        CompareTarget::try_from(compare.target),
        &compare.target_union,
    ) {
        (Ok(CompareTarget::Value), Some(TargetUnion::Value(value))) => {
            kv.value.as_slice().cmp(value)
        }
        (Ok(CompareTarget::Value), _) => kv.value.as_slice().cmp(&[]),
        (Ok(CompareTarget::Version), union) => kv.version.cmp(&union_number(union)),
        (Ok(CompareTarget::Create), union) => kv.create_revision.cmp(&union_number(union)),
        (Ok(CompareTarget::Mod), union) => kv.mod_revision.cmp(&union_number(union)),
        (Ok(CompareTarget::Lease), union) => kv.lease.cmp(&union_number(union)),
        (Err(_), _) => return false,
    };
    match CompareResult::try_from(compare.result) {
        Ok(CompareResult::Equal) => ordering.is_eq(),
        Ok(CompareResult::NotEqual) => ordering.is_ne(),
        Ok(CompareResult::Greater) => ordering.is_gt(),
        Ok(CompareResult::Less) => ordering.is_lt(),
        Err(_) => false,
    }
}

/// The number a compare holds for its target (a missing union reads as 0, as Go's zero value).
fn union_number(union: &Option<TargetUnion>) -> i64 {
    match union {
        Some(TargetUnion::Version(n))
        | Some(TargetUnion::CreateRevision(n))
        | Some(TargetUnion::ModRevision(n))
        | Some(TargetUnion::Lease(n)) => *n,
        Some(TargetUnion::Value(_)) | None => 0,
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
