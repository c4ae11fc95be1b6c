//! The apply pipeline: one log entry in, one result out, deterministically.
//!
//! Layers, outermost first (etcd's `uber_applier`): the *auth* layer refuses a client request
//! its caller may not make (see `auth`); the *quota* layer refuses writes that would
//! grow the store while the NOSPACE alarm is raised, or that would push it over the quota (and
//! raises the alarm); then the request is dispatched to its handler. The applied index moves
//! with every entry, refused or not, because the refusal is itself the entry's result.

use cairn_proto::cairnpb::internal_request::Request;
use cairn_proto::cairnpb::InternalRequest;
use cairn_proto::etcdserverpb::alarm_request::AlarmAction;
use cairn_proto::etcdserverpb::request_op::Request as Op;
use cairn_proto::etcdserverpb::{
    AlarmMember, AlarmRequest, AlarmResponse, AlarmType, AuthDisableResponse, AuthEnableResponse,
    AuthRoleAddResponse, AuthRoleDeleteResponse, AuthRoleGrantPermissionResponse,
    AuthRoleRevokePermissionResponse, AuthUserAddResponse, AuthUserChangePasswordResponse,
    AuthUserDeleteResponse, AuthUserGrantRoleResponse, AuthUserRevokeRoleResponse,
    AuthenticateResponse, CompactionResponse, DeleteRangeResponse, LeaseGrantResponse,
    LeaseKeepAliveResponse, LeaseRevokeResponse, PutResponse, RequestOp, TxnRequest, TxnResponse,
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
    AuthEnable(AuthEnableResponse),
    AuthDisable(AuthDisableResponse),
    Authenticate(AuthenticateResponse),
    UserAdd(AuthUserAddResponse),
    UserDelete(AuthUserDeleteResponse),
    UserChangePassword(AuthUserChangePasswordResponse),
    UserGrantRole(AuthUserGrantRoleResponse),
    UserRevokeRole(AuthUserRevokeRoleResponse),
    RoleAdd(AuthRoleAddResponse),
    RoleDelete(AuthRoleDeleteResponse),
    RoleGrantPermission(AuthRoleGrantPermissionResponse),
    RoleRevokePermission(AuthRoleRevokePermissionResponse),
    /// A native CURP-HO command's result.
    Native(cairn_proto::curppb::Result),
    /// An entry that changes no state (a CURP-HO `RecoveryDone` marker).
    Marker,
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
                self.apply_auth(request)
                    .and_then(|()| self.apply_quota(request))
                    .and_then(|()| self.dispatch(index, request))
            })
            .collect();
        self.applied_index = index;
        self.put_meta(META_APPLIED_INDEX, index as i64);
        results
    }

    fn dispatch(
        &mut self,
        index: u64,
        request: &InternalRequest,
    ) -> Result<ApplyResponse, MvccError> {
        let now = request.now_unix_ms;
        let response = match request.request.as_ref().ok_or(MvccError::EmptyRequest)? {
            Request::Put(put) => ApplyResponse::Put(self.apply_put(put)?),
            Request::DeleteRange(delete) => {
                ApplyResponse::DeleteRange(self.apply_delete_range(delete))
            }
            Request::Txn(txn) => ApplyResponse::Txn(self.apply_txn(txn)?),
            Request::Compaction(compaction) => {
                ApplyResponse::Compaction(self.apply_compaction(compaction)?)
            }
            Request::LeaseGrant(grant) => {
                ApplyResponse::LeaseGrant(self.lease_grant(grant.id, grant.ttl, now)?)
            }
            Request::LeaseRevoke(revoke) => {
                ApplyResponse::LeaseRevoke(self.lease_revoke(revoke.id)?)
            }
            Request::LeaseKeepAlive(keep_alive) => {
                ApplyResponse::LeaseKeepAlive(self.lease_keep_alive(keep_alive.id, now)?)
            }
            Request::Alarm(alarm) => ApplyResponse::Alarm(self.apply_alarm(alarm)),
            Request::AuthEnable(_) => ApplyResponse::AuthEnable(self.auth_enable()?),
            Request::AuthDisable(_) => ApplyResponse::AuthDisable(self.auth_disable()),
            Request::Authenticate(authenticate) => {
                ApplyResponse::Authenticate(self.authenticate(index, authenticate, now)?)
            }
            Request::UserAdd(add) => ApplyResponse::UserAdd(self.user_add(add)?),
            Request::UserDelete(delete) => ApplyResponse::UserDelete(self.user_delete(delete)?),
            Request::UserChangePassword(change) => {
                ApplyResponse::UserChangePassword(self.user_change_password(change)?)
            }
            Request::UserGrantRole(grant) => {
                ApplyResponse::UserGrantRole(self.user_grant_role(grant)?)
            }
            Request::UserRevokeRole(revoke) => {
                ApplyResponse::UserRevokeRole(self.user_revoke_role(revoke)?)
            }
            Request::RoleAdd(add) => ApplyResponse::RoleAdd(self.role_add(add)?),
            Request::RoleDelete(delete) => ApplyResponse::RoleDelete(self.role_delete(delete)?),
            Request::RoleGrantPermission(grant) => {
                ApplyResponse::RoleGrantPermission(self.role_grant_permission(grant)?)
            }
            Request::RoleRevokePermission(revoke) => {
                ApplyResponse::RoleRevokePermission(self.role_revoke_permission(revoke)?)
            }
            Request::CurpCommand(command) => ApplyResponse::Native(self.apply_native(command)?),
            Request::CurpRecoveryDone(_) => ApplyResponse::Marker,
        };
        Ok(response)
    }

    /// The auth layer: a client request (one that names its caller) must be permitted by the
    /// auth store as it is at this point of the log. The node's own requests name no caller.
    fn apply_auth(&self, request: &InternalRequest) -> Result<(), MvccError> {
        let (Some(caller), Some(inner)) = (&request.auth, &request.request) else {
            return Ok(());
        };
        Ok(self.auth.check_request(&caller.user, inner, &self.leases)?)
    }

    /// The quota layer; see the module doc.
    fn apply_quota(&mut self, request: &InternalRequest) -> Result<(), MvccError> {
        let cost = match &request.request {
            Some(Request::Put(put)) => put_cost(&put.key, &put.value),
            Some(Request::Txn(txn)) => txn_cost(txn),
            Some(Request::LeaseGrant(_)) => QUOTA_PUT_OVERHEAD_BYTES,
            Some(Request::CurpCommand(command)) => native_cost(command),
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

/// A native `Put` costs what an etcd `Put` of the same key and value does.
fn native_cost(command: &cairn_proto::curppb::Command) -> u64 {
    use cairn_proto::curppb::op::Op;
    match command.op.as_ref().and_then(|op| op.op.as_ref()) {
        Some(Op::Put(put)) => put_cost(&put.key, &put.value),
        _ => 0,
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
