//! The apply pipeline: one log entry in, one result out, deterministically.
//!
//! Layers, outermost first (etcd's `uber_applier`): the *quota* layer refuses writes that would
//! grow the store while the NOSPACE alarm is raised, or that would push it over the quota (and
//! raises the alarm); then the request is dispatched to its handler. The applied index moves
//! with every entry, refused or not, because the refusal is itself the entry's result.

use cairn_proto::cairnpb::internal_request::Request;
use cairn_proto::cairnpb::InternalRequest;
use cairn_proto::etcdserverpb::alarm_request::AlarmAction;
use cairn_proto::etcdserverpb::request_op::Request as Op;
use cairn_proto::etcdserverpb::{
    AlarmMember, AlarmRequest, AlarmResponse, AlarmType, CompactionResponse, DeleteRangeResponse,
    LeaseGrantResponse, LeaseKeepAliveResponse, LeaseRevokeResponse, PutResponse, RequestOp,
    TxnRequest, TxnResponse,
};
use cairn_storage::schema::META_APPLIED_INDEX;

use crate::error::MvccError;
use crate::limits::QUOTA_PUT_OVERHEAD_BYTES;
use crate::response::header;
use crate::store::KvStore;

/// The result of one applied entry.
#[derive(Clone, Debug, PartialEq)]
pub enum ApplyResponse {
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
    Compaction(CompactionResponse),
    LeaseGrant(LeaseGrantResponse),
    LeaseRevoke(LeaseRevokeResponse),
    LeaseKeepAlive(LeaseKeepAliveResponse),
    Alarm(AlarmResponse),
}

impl KvStore {
    /// Applies log entry `index`. Entries must come in log order; one already applied (a replay
    /// after a snapshot) is a caller bug.
    pub fn apply(
        &mut self,
        index: u64,
        request: &InternalRequest,
    ) -> Result<ApplyResponse, MvccError> {
        let mut results = self.apply_batch(index, std::slice::from_ref(request));
        results.pop().expect("one result per request")
    }

    /// Applies the requests of log entry `index` in order, each with its own revision (the
    /// replication layer puts several proposals in one entry). Same ordering rule as `apply`.
    pub fn apply_batch(
        &mut self,
        index: u64,
        requests: &[InternalRequest],
    ) -> Vec<Result<ApplyResponse, MvccError>> {
        assert!(
            index > self.applied_index,
            "apply: entry {index} is not after the applied index {}",
            self.applied_index
        );
        let results = requests
            .iter()
            .map(|request| {
                self.apply_quota(request)
                    .and_then(|()| self.dispatch(request))
            })
            .collect();
        self.applied_index = index;
        self.put_meta(META_APPLIED_INDEX, index as i64);
        results
    }

    fn dispatch(&mut self, request: &InternalRequest) -> Result<ApplyResponse, MvccError> {
        let now = request.now_unix_ms;
        match request.request.as_ref().ok_or(MvccError::EmptyRequest)? {
            Request::Put(put) => self.apply_put(put).map(ApplyResponse::Put),
            Request::DeleteRange(delete) => {
                Ok(ApplyResponse::DeleteRange(self.apply_delete_range(delete)))
            }
            Request::Txn(txn) => self.apply_txn(txn).map(ApplyResponse::Txn),
            Request::Compaction(compaction) => self
                .apply_compaction(compaction)
                .map(ApplyResponse::Compaction),
            Request::LeaseGrant(grant) => self
                .lease_grant(grant.id, grant.ttl, now)
                .map(ApplyResponse::LeaseGrant),
            Request::LeaseRevoke(revoke) => {
                self.lease_revoke(revoke.id).map(ApplyResponse::LeaseRevoke)
            }
            Request::LeaseKeepAlive(keep_alive) => self
                .lease_keep_alive(keep_alive.id, now)
                .map(ApplyResponse::LeaseKeepAlive),
            Request::Alarm(alarm) => Ok(ApplyResponse::Alarm(self.apply_alarm(alarm))),
        }
    }

    /// The quota layer; see the module doc.
    fn apply_quota(&mut self, request: &InternalRequest) -> Result<(), MvccError> {
        let cost = match &request.request {
            Some(Request::Put(put)) => put_cost(&put.key, &put.value),
            Some(Request::Txn(txn)) => txn_cost(txn),
            Some(Request::LeaseGrant(_)) => QUOTA_PUT_OVERHEAD_BYTES,
            _ => return Ok(()),
        };
        if cost == 0 {
            return Ok(());
        }
        let nospace = AlarmType::Nospace as i32;
        if self.alarms.iter().any(|(_, alarm)| *alarm == nospace) {
            return Err(MvccError::NoSpace);
        }
        if self.engine.size_bytes() + cost >= self.config.quota_backend_bytes {
            self.set_alarm((self.config.member_id, nospace), true);
            return Err(MvccError::NoSpace);
        }
        Ok(())
    }

    fn apply_alarm(&mut self, request: &AlarmRequest) -> AlarmResponse {
        let member = (request.member_id, request.alarm);
        let alarms = match AlarmAction::try_from(request.action) {
            Ok(AlarmAction::Get) => self
                .alarms
                .iter()
                .filter(|(_, alarm)| {
                    request.alarm == AlarmType::None as i32 || *alarm == request.alarm
                })
                .copied()
                .collect(),
            Ok(AlarmAction::Activate) if request.alarm != AlarmType::None as i32 => {
                self.set_alarm(member, true);
                vec![member]
            }
            Ok(AlarmAction::Deactivate) if self.alarms.contains(&member) => {
                self.set_alarm(member, false);
                vec![member]
            }
            _ => Vec::new(),
        };
        let alarms = alarms
            .into_iter()
            .map(|(member_id, alarm)| AlarmMember { member_id, alarm })
            .collect();
        AlarmResponse {
            header: header(self.current_revision),
            alarms,
        }
    }
}

fn put_cost(key: &[u8], value: &[u8]) -> u64 {
    (key.len() + value.len()) as u64 + QUOTA_PUT_OVERHEAD_BYTES
}

/// etcd's `costTxn`: only one branch of a txn runs, so it costs its larger branch. Unlike
/// etcd, which charges nested txns nothing, a nested txn's puts count: a txn must not slip
/// writes past a raised NOSPACE alarm by nesting them.
fn txn_cost(txn: &TxnRequest) -> u64 {
    ops_cost(&txn.success).max(ops_cost(&txn.failure))
}

fn ops_cost(ops: &[RequestOp]) -> u64 {
    ops.iter()
        .map(|op| match &op.request {
            Some(Op::RequestPut(put)) => put_cost(&put.key, &put.value),
            Some(Op::RequestTxn(nested)) => txn_cost(nested),
            _ => 0,
        })
        .sum()
}
