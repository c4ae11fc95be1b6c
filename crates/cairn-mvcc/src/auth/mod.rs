//! The auth store: users, roles with key-range permissions, the enabled flag and the auth
//! revision — replicated state like the keys, kept in its own buckets, never reachable through
//! KV requests — plus this member's simple tokens (volatile).
//!
//! Permission checks follow etcd: with auth disabled everything is allowed; enabled, a request
//! without a user is refused with "user name is empty", a user holding the `root` role may do
//! anything, other users need their roles' permissions to cover every key a request touches.
//! Writes are checked when they are applied (against the state at their place in the log, so a
//! revoked permission stops the very next write); reads by the server right before reading.
//!
//! Layout: `permission` — interval coverage; `tokens` — simple tokens; `apply` — the replicated
//! auth requests; `error` — etcd's messages.

pub mod apply;
pub mod error;
pub mod permission;
pub mod tokens;

use std::collections::BTreeMap;

use cairn_proto::authpb::permission::Type as PermType;
use cairn_proto::authpb::{Permission, Role, User};
use cairn_proto::cairnpb::internal_request::Request;
use cairn_proto::etcdserverpb::request_op::Request as Op;
use cairn_proto::etcdserverpb::{DeleteRangeRequest, PutRequest, RequestOp, TxnRequest};

pub use error::AuthError;
use permission::{covers, KeyInterval};
use tokens::SimpleTokens;

use crate::lease::LeaseTable;

/// The role that may do anything (etcd's `root`); the user of the same name administers.
pub const ROOT: &str = "root";

/// See the module doc.
pub struct AuthStore {
    pub(crate) enabled: bool,
    pub(crate) revision: u64,
    pub(crate) users: BTreeMap<String, User>,
    pub(crate) roles: BTreeMap<String, Role>,
    pub(crate) tokens: SimpleTokens,
}

impl AuthStore {
    pub(crate) fn new(token_ttl_ms: i64) -> AuthStore {
        AuthStore {
            enabled: false,
            revision: 0,
            users: BTreeMap::new(),
            roles: BTreeMap::new(),
            tokens: SimpleTokens::new(token_ttl_ms),
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// Bumped by every change of users, roles or the enabled flag.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    pub fn tokens(&self) -> &SimpleTokens {
        &self.tokens
    }

    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.get(name)
    }

    /// `UserGet`: the user's roles, sorted.
    pub fn user_roles(&self, name: &str) -> Result<Vec<String>, AuthError> {
        let user = self.users.get(name).ok_or(AuthError::UserNotFound)?;
        Ok(user.roles.clone())
    }

    /// `UserList`: every user name, sorted.
    pub fn user_names(&self) -> Vec<String> {
        self.users.keys().cloned().collect()
    }

    /// `RoleGet`: the role's permissions, sorted by key.
    pub fn role_permissions(&self, name: &str) -> Result<Vec<Permission>, AuthError> {
        let role = self.roles.get(name).ok_or(AuthError::RoleNotFound)?;
        Ok(role.key_permission.clone())
    }

    /// `RoleList`: every role name, sorted.
    pub fn role_names(&self) -> Vec<String> {
        self.roles.keys().cloned().collect()
    }

    pub fn user_has_role(&self, user: &str, role: &str) -> bool {
        self.users
            .get(user)
            .is_some_and(|user| user.roles.iter().any(|granted| granted == role))
    }

    /// etcd's `IsAdminPermitted`: auth administration, membership changes and maintenance.
    pub fn check_admin(&self, user: &str) -> Result<(), AuthError> {
        if !self.enabled {
            return Ok(());
        }
        if user.is_empty() {
            return Err(AuthError::UserEmpty);
        }
        if !self.users.contains_key(user) {
            return Err(AuthError::UserNotFound);
        }
        if self.user_has_role(user, ROOT) {
            Ok(())
        } else {
            Err(AuthError::PermissionDenied)
        }
    }

    /// etcd's `isOpPermitted`: may `user` do `wanted` on every key of `(key, range_end)`?
    pub fn check_range(
        &self,
        user: &str,
        key: &[u8],
        range_end: &[u8],
        wanted: PermType,
    ) -> Result<(), AuthError> {
        if !self.enabled {
            return Ok(());
        }
        if user.is_empty() {
            return Err(AuthError::UserEmpty);
        }
        let Some(found) = self.users.get(user) else {
            return Err(AuthError::PermissionDenied);
        };
        if found.roles.iter().any(|role| role == ROOT) {
            return Ok(());
        }
        let granted = found
            .roles
            .iter()
            .filter_map(|role| self.roles.get(role))
            .flat_map(|role| role.key_permission.iter());
        if covers(granted, wanted, &KeyInterval::new(key, range_end)) {
            Ok(())
        } else {
            Err(AuthError::PermissionDenied)
        }
    }

    /// Write permission on every key attached to `lease`: what revoking, renewing or putting
    /// under a lease needs (etcd's `checkLeasePuts`).
    pub fn check_lease_keys(
        &self,
        user: &str,
        lease: i64,
        leases: &LeaseTable,
    ) -> Result<(), AuthError> {
        if !self.enabled {
            return Ok(());
        }
        if user.is_empty() {
            return Err(AuthError::UserEmpty);
        }
        let Some(lease) = leases.get(lease) else {
            return Ok(());
        };
        lease
            .keys
            .iter()
            .try_for_each(|key| self.check_range(user, key, &[], PermType::Write))
    }

    /// The check of a replicated request, done by the state machine before applying it.
    pub(crate) fn check_request(
        &self,
        user: &str,
        request: &Request,
        leases: &LeaseTable,
    ) -> Result<(), AuthError> {
        if !self.enabled {
            return Ok(());
        }
        match request {
            Request::Put(put) => self.check_put(user, put, leases),
            Request::DeleteRange(delete) => self.check_delete_range(user, delete),
            Request::Txn(txn) => self.check_txn(user, txn, leases),
            Request::LeaseRevoke(revoke) => self.check_lease_keys(user, revoke.id, leases),
            Request::LeaseKeepAlive(keep_alive) => {
                self.check_lease_keys(user, keep_alive.id, leases)
            }
            // etcd lets any caller grant leases, compact and raise alarms.
            Request::Compaction(_) | Request::LeaseGrant(_) | Request::Alarm(_) => Ok(()),
            // The proposer checked the password; the apply checks the user still exists.
            Request::Authenticate(_) => Ok(()),
            Request::AuthEnable(_)
            | Request::AuthDisable(_)
            | Request::UserAdd(_)
            | Request::UserDelete(_)
            | Request::UserChangePassword(_)
            | Request::UserGrantRole(_)
            | Request::UserRevokeRole(_)
            | Request::RoleAdd(_)
            | Request::RoleDelete(_)
            | Request::RoleGrantPermission(_)
            | Request::RoleRevokePermission(_) => self.check_admin(user),
            // Native commands are proposed by the node for the native protocol, which refuses
            // every request while auth is enabled; a named caller must be an admin.
            Request::CurpCommand(_) | Request::CurpRecoveryDone(_) => self.check_admin(user),
        }
    }

    /// A txn needs read on every compare and on both branches' reads, and write on both
    /// branches' writes: which branch runs is not known before it runs (etcd's
    /// `checkTxnReqsPermission`).
    pub fn check_txn(
        &self,
        user: &str,
        txn: &TxnRequest,
        leases: &LeaseTable,
    ) -> Result<(), AuthError> {
        for compare in &txn.compare {
            self.check_range(user, &compare.key, &compare.range_end, PermType::Read)?;
        }
        txn.success
            .iter()
            .chain(&txn.failure)
            .try_for_each(|op| self.check_op(user, op, leases))
    }

    /// Write on the key, read too when the previous value is returned, and write on the keys
    /// of the lease the key joins.
    fn check_put(
        &self,
        user: &str,
        put: &PutRequest,
        leases: &LeaseTable,
    ) -> Result<(), AuthError> {
        self.check_range(user, &put.key, &[], PermType::Write)?;
        if put.prev_kv {
            self.check_range(user, &put.key, &[], PermType::Read)?;
        }
        self.check_lease_keys(user, put.lease, leases)
    }

    fn check_delete_range(&self, user: &str, delete: &DeleteRangeRequest) -> Result<(), AuthError> {
        let (key, range_end) = (&delete.key, &delete.range_end);
        self.check_range(user, key, range_end, PermType::Write)?;
        if delete.prev_kv {
            self.check_range(user, key, range_end, PermType::Read)?;
        }
        Ok(())
    }

    fn check_op(&self, user: &str, op: &RequestOp, leases: &LeaseTable) -> Result<(), AuthError> {
        match &op.request {
            Some(Op::RequestRange(range)) => {
                self.check_range(user, &range.key, &range.range_end, PermType::Read)
            }
            Some(Op::RequestPut(put)) => self.check_put(user, put, leases),
            Some(Op::RequestDeleteRange(delete)) => self.check_delete_range(user, delete),
            Some(Op::RequestTxn(nested)) => self.check_txn(user, nested, leases),
            None => Ok(()),
        }
    }
}
