//! Native CURP-HO operations on the store. A native `Put` is an etcd `Put` and a native
//! `Delete` an etcd `DeleteRange` of one key: each makes a revision and a watch event, so the
//! two APIs share one keyspace. `Get` and `Scan` read the current state. Results carry no
//! revision: a fast-path result must not depend on the order of commuting commands.

use cairn_proto::curppb::{self, op};
use cairn_proto::etcdserverpb::{DeleteRangeRequest, PutRequest, RangeRequest};

use crate::error::MvccError;
use crate::store::KvStore;

impl KvStore {
    /// Applies a replicated native command.
    pub(crate) fn apply_native(
        &mut self,
        command: &curppb::Command,
    ) -> Result<curppb::Result, MvccError> {
        let op = command
            .op
            .as_ref()
            .and_then(|op| op.op.as_ref())
            .ok_or(MvccError::EmptyRequest)?;
        match op {
            op::Op::Put(put) => {
                self.apply_put(&PutRequest {
                    key: put.key.clone(),
                    value: put.value.clone(),
                    ..Default::default()
                })?;
                Ok(curppb::Result::default())
            }
            op::Op::Delete(delete) => {
                let response = self.apply_delete_range(&DeleteRangeRequest {
                    key: delete.key.clone(),
                    ..Default::default()
                });
                Ok(curppb::Result {
                    deleted: response.deleted.max(0) as u64,
                    ..Default::default()
                })
            }
            op::Op::Get(_) | op::Op::Scan(_) => self.native_read(op),
        }
    }

    /// Evaluates a native read (`Get`, `Scan`) on the current state; a write op is refused.
    pub fn native_read(&self, op: &op::Op) -> Result<curppb::Result, MvccError> {
        let request = match op {
            op::Op::Get(get) => RangeRequest {
                key: get.key.clone(),
                ..Default::default()
            },
            op::Op::Scan(scan) => RangeRequest {
                // etcd's range forms: an empty start with an empty end would be "the key ''";
                // a native Scan of ["", "") means everything, etcd's ("\0", "\0").
                key: if scan.start.is_empty() {
                    vec![0]
                } else {
                    scan.start.clone()
                },
                range_end: if scan.end.is_empty() {
                    vec![0]
                } else {
                    scan.end.clone()
                },
                limit: i64::try_from(scan.limit).unwrap_or(i64::MAX),
                ..Default::default()
            },
            op::Op::Put(_) | op::Op::Delete(_) => return Err(MvccError::EmptyRequest),
        };
        let response = self.range(&request)?;
        Ok(curppb::Result {
            kvs: response
                .kvs
                .into_iter()
                .map(|kv| curppb::KeyValue {
                    key: kv.key,
                    value: kv.value,
                })
                .collect(),
            deleted: 0,
            more: response.more,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreConfig;
    use cairn_storage::memory::MemoryEngine;

    fn store() -> KvStore {
        KvStore::open(Box::new(MemoryEngine::new()), StoreConfig::default())
    }

    fn command(op: op::Op) -> curppb::Command {
        curppb::Command {
            id: Some(curppb::CommandId {
                client_id: 1,
                seq: 1,
            }),
            op: Some(curppb::Op { op: Some(op) }),
            consistency: curppb::Consistency::Strong as i32,
            causal_dep: 0,
        }
    }

    fn put(key: &str, value: &str) -> op::Op {
        op::Op::Put(curppb::Put {
            key: key.into(),
            value: value.into(),
        })
    }

    #[test]
    fn native_writes_make_revisions_and_reads_see_them() {
        let mut store = store();
        let before = store.current_revision();
        store.apply_native(&command(put("a", "1"))).unwrap();
        store.apply_native(&command(put("b", "2"))).unwrap();
        assert_eq!(store.current_revision(), before + 2);
        let get = store
            .native_read(&op::Op::Get(curppb::Get { key: "a".into() }))
            .unwrap();
        assert_eq!(get.kvs.len(), 1);
        assert_eq!(get.kvs[0].value, b"1");
        let all = op::Op::Scan(curppb::Scan {
            start: vec![],
            end: vec![],
            limit: 1,
        });
        let scan = store.native_read(&all).unwrap();
        assert_eq!((scan.kvs.len(), scan.more), (1, true));
        assert_eq!(scan.kvs[0].key, b"a");
        let deleted = store
            .apply_native(&command(op::Op::Delete(curppb::Delete { key: "a".into() })))
            .unwrap();
        assert_eq!(deleted.deleted, 1);
        let again = store
            .apply_native(&command(op::Op::Delete(curppb::Delete { key: "a".into() })))
            .unwrap();
        assert_eq!(again.deleted, 0);
        assert_eq!(store.current_revision(), before + 3);
    }

    #[test]
    fn a_command_without_an_op_is_refused() {
        let mut store = store();
        let mut empty = command(put("a", "1"));
        empty.op = None;
        assert_eq!(store.apply_native(&empty), Err(MvccError::EmptyRequest));
    }
}
