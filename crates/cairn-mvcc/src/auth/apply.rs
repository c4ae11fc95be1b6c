//! The replicated auth requests, applied by the state machine (etcd's `authStore` writers).
//!
//! Every change writes the changed user or role and the bumped auth revision through the
//! engine in the same batch as the applied index, so a snapshot or a restart sees exactly the
//! auth state the log produced.

use bytes::Bytes;
use cairn_proto::authpb::{Role, User, UserAddOptions};
use cairn_proto::cairnpb::InternalAuthenticateRequest;
use cairn_proto::etcdserverpb::{
    AuthDisableResponse, AuthEnableResponse, AuthRoleAddRequest, AuthRoleAddResponse,
    AuthRoleDeleteRequest, AuthRoleDeleteResponse, AuthRoleGrantPermissionRequest,
    AuthRoleGrantPermissionResponse, AuthRoleRevokePermissionRequest,
    AuthRoleRevokePermissionResponse, AuthUserAddRequest, AuthUserAddResponse,
    AuthUserChangePasswordRequest, AuthUserChangePasswordResponse, AuthUserDeleteRequest,
    AuthUserDeleteResponse, AuthUserGrantRoleRequest, AuthUserGrantRoleResponse,
    AuthUserRevokeRoleRequest, AuthUserRevokeRoleResponse, AuthenticateResponse,
};
use cairn_storage::engine::WriteBatch;
use cairn_storage::schema::{Bucket, META_AUTH_ENABLED, META_AUTH_REVISION};
use prost::Message;

use super::permission::is_valid_permission_range;
use super::{AuthError, AuthStore, ROOT};
use crate::response::header;
use crate::store::KvStore;

impl KvStore {
    pub fn auth(&self) -> &AuthStore {
        &self.auth
    }

    /// Rebuilds the auth store from the engine (on open and after a snapshot install).
    pub(crate) fn restore_auth(&mut self) {
        let mut users = Vec::new();
        self.engine
            .scan(Bucket::AuthUser, &[], None, &mut |_, value| {
                users.push(User::decode(value).expect("auth: undecodable user record"));
                true
            });
        let mut roles = Vec::new();
        self.engine
            .scan(Bucket::AuthRole, &[], None, &mut |_, value| {
                roles.push(Role::decode(value).expect("auth: undecodable role record"));
                true
            });
        let enabled = self.meta(META_AUTH_ENABLED).unwrap_or(0) == 1;
        let revision = self.meta(META_AUTH_REVISION).unwrap_or(0) as u64;
        let auth = &mut self.auth;
        auth.enabled = enabled;
        auth.revision = revision;
        auth.users = users
            .into_iter()
            .map(|user| (String::from_utf8_lossy(&user.name).into_owned(), user))
            .collect();
        auth.roles = roles
            .into_iter()
            .map(|role| (String::from_utf8_lossy(&role.name).into_owned(), role))
            .collect();
    }

    pub(crate) fn auth_enable(&mut self) -> Result<AuthEnableResponse, AuthError> {
        if !self.auth.enabled {
            let root = self
                .auth
                .users
                .get(ROOT)
                .ok_or(AuthError::RootUserNotExist)?;
            if !root.roles.iter().any(|role| role == ROOT) {
                return Err(AuthError::RootRoleNotExist);
            }
            self.auth.enabled = true;
            self.put_meta(META_AUTH_ENABLED, 1);
            self.commit_auth_revision();
        }
        Ok(AuthEnableResponse {
            header: header(self.current_revision),
        })
    }

    pub(crate) fn auth_disable(&mut self) -> AuthDisableResponse {
        if self.auth.enabled {
            self.auth.enabled = false;
            self.auth.tokens.clear();
            self.put_meta(META_AUTH_ENABLED, 0);
            self.commit_auth_revision();
        }
        AuthDisableResponse {
            header: header(self.current_revision),
        }
    }

    /// Registers the simple token `<prefix>.<index>` for a user whose password the proposer
    /// checked.
    pub(crate) fn authenticate(
        &mut self,
        index: u64,
        request: &InternalAuthenticateRequest,
        now_unix_ms: i64,
    ) -> Result<AuthenticateResponse, AuthError> {
        if !self.auth.enabled {
            return Err(AuthError::AuthNotEnabled);
        }
        let user = self
            .auth
            .users
            .get(&request.name)
            .ok_or(AuthError::AuthFailed)?;
        if user
            .options
            .as_ref()
            .is_some_and(|options| options.no_password)
        {
            return Err(AuthError::AuthFailed);
        }
        let token = format!("{}.{index}", request.simple_token_prefix);
        self.auth
            .tokens
            .assign(token.clone(), &request.name, now_unix_ms);
        Ok(AuthenticateResponse {
            header: header(self.current_revision),
            token,
        })
    }

    /// `UserAdd`; the proposer replaced the password by its hash (`hashed_password`).
    pub(crate) fn user_add(
        &mut self,
        request: &AuthUserAddRequest,
    ) -> Result<AuthUserAddResponse, AuthError> {
        if request.name.is_empty() {
            return Err(AuthError::UserEmpty);
        }
        if self.auth.users.contains_key(&request.name) {
            return Err(AuthError::UserAlreadyExist);
        }
        let options = request
            .options
            .unwrap_or(UserAddOptions { no_password: false });
        let password = if options.no_password {
            Vec::new()
        } else {
            request.hashed_password.as_bytes().to_vec()
        };
        self.put_user(User {
            name: request.name.as_bytes().to_vec(),
            password,
            roles: Vec::new(),
            options: Some(options),
        });
        self.commit_auth_revision();
        Ok(AuthUserAddResponse {
            header: header(self.current_revision),
        })
    }

    pub(crate) fn user_delete(
        &mut self,
        request: &AuthUserDeleteRequest,
    ) -> Result<AuthUserDeleteResponse, AuthError> {
        if self.auth.enabled && request.name == ROOT {
            return Err(AuthError::InvalidAuthMgmt);
        }
        if self.auth.users.remove(&request.name).is_none() {
            return Err(AuthError::UserNotFound);
        }
        let mut batch = WriteBatch::new();
        batch.delete(Bucket::AuthUser, request.name.as_bytes().to_vec());
        self.engine.write(batch);
        self.auth.tokens.invalidate_user(&request.name);
        self.commit_auth_revision();
        Ok(AuthUserDeleteResponse {
            header: header(self.current_revision),
        })
    }

    pub(crate) fn user_change_password(
        &mut self,
        request: &AuthUserChangePasswordRequest,
    ) -> Result<AuthUserChangePasswordResponse, AuthError> {
        let mut user = self.user_record(&request.name)?;
        user.password = request.hashed_password.as_bytes().to_vec();
        self.put_user(user);
        self.auth.tokens.invalidate_user(&request.name);
        self.commit_auth_revision();
        Ok(AuthUserChangePasswordResponse {
            header: header(self.current_revision),
        })
    }

    pub(crate) fn user_grant_role(
        &mut self,
        request: &AuthUserGrantRoleRequest,
    ) -> Result<AuthUserGrantRoleResponse, AuthError> {
        let mut user = self.user_record(&request.user)?;
        // `root` needs no role record: granting it makes an administrator.
        if request.role != ROOT && !self.auth.roles.contains_key(&request.role) {
            return Err(AuthError::RoleNotFound);
        }
        // Granting a role twice is ignored, as etcd does.
        if let Err(at) = user.roles.binary_search(&request.role) {
            user.roles.insert(at, request.role.clone());
            self.put_user(user);
            self.commit_auth_revision();
        }
        Ok(AuthUserGrantRoleResponse {
            header: header(self.current_revision),
        })
    }

    pub(crate) fn user_revoke_role(
        &mut self,
        request: &AuthUserRevokeRoleRequest,
    ) -> Result<AuthUserRevokeRoleResponse, AuthError> {
        if self.auth.enabled && request.name == ROOT && request.role == ROOT {
            return Err(AuthError::InvalidAuthMgmt);
        }
        let mut user = self.user_record(&request.name)?;
        let at = user
            .roles
            .binary_search(&request.role)
            .map_err(|_| AuthError::RoleNotGranted)?;
        user.roles.remove(at);
        self.put_user(user);
        self.commit_auth_revision();
        Ok(AuthUserRevokeRoleResponse {
            header: header(self.current_revision),
        })
    }

    pub(crate) fn role_add(
        &mut self,
        request: &AuthRoleAddRequest,
    ) -> Result<AuthRoleAddResponse, AuthError> {
        if request.name.is_empty() {
            return Err(AuthError::RoleEmpty);
        }
        if self.auth.roles.contains_key(&request.name) {
            return Err(AuthError::RoleAlreadyExist);
        }
        self.put_role(Role {
            name: request.name.as_bytes().to_vec(),
            key_permission: Vec::new(),
        });
        self.commit_auth_revision();
        Ok(AuthRoleAddResponse {
            header: header(self.current_revision),
        })
    }

    /// Deletes the role and takes it from every user that holds it.
    pub(crate) fn role_delete(
        &mut self,
        request: &AuthRoleDeleteRequest,
    ) -> Result<AuthRoleDeleteResponse, AuthError> {
        if self.auth.enabled && request.role == ROOT {
            return Err(AuthError::InvalidAuthMgmt);
        }
        if self.auth.roles.remove(&request.role).is_none() {
            return Err(AuthError::RoleNotFound);
        }
        let mut batch = WriteBatch::new();
        batch.delete(Bucket::AuthRole, request.role.as_bytes().to_vec());
        self.engine.write(batch);
        let holders: Vec<User> = self
            .auth
            .users
            .values()
            .filter(|user| user.roles.contains(&request.role))
            .cloned()
            .collect();
        for mut user in holders {
            user.roles.retain(|role| *role != request.role);
            self.put_user(user);
        }
        self.commit_auth_revision();
        Ok(AuthRoleDeleteResponse {
            header: header(self.current_revision),
        })
    }

    /// Adds a permission, or changes the type of the one with the same interval.
    pub(crate) fn role_grant_permission(
        &mut self,
        request: &AuthRoleGrantPermissionRequest,
    ) -> Result<AuthRoleGrantPermissionResponse, AuthError> {
        let perm = request.perm.as_ref().ok_or(AuthError::PermissionNotGiven)?;
        if !is_valid_permission_range(&perm.key, &perm.range_end) {
            return Err(AuthError::InvalidAuthMgmt);
        }
        let mut role = self.role_record(&request.name)?;
        let position = role.key_permission.binary_search_by(|have| {
            (&have.key, &have.range_end).cmp(&(&perm.key, &perm.range_end))
        });
        match position {
            Ok(at) => role.key_permission[at].perm_type = perm.perm_type,
            Err(at) => role.key_permission.insert(at, perm.clone()),
        }
        self.put_role(role);
        self.commit_auth_revision();
        Ok(AuthRoleGrantPermissionResponse {
            header: header(self.current_revision),
        })
    }

    pub(crate) fn role_revoke_permission(
        &mut self,
        request: &AuthRoleRevokePermissionRequest,
    ) -> Result<AuthRoleRevokePermissionResponse, AuthError> {
        let mut role = self.role_record(&request.role)?;
        let before = role.key_permission.len();
        role.key_permission
            .retain(|perm| perm.key != request.key || perm.range_end != request.range_end);
        if role.key_permission.len() == before {
            return Err(AuthError::PermissionNotGranted);
        }
        self.put_role(role);
        self.commit_auth_revision();
        Ok(AuthRoleRevokePermissionResponse {
            header: header(self.current_revision),
        })
    }

    fn user_record(&self, name: &str) -> Result<User, AuthError> {
        self.auth
            .users
            .get(name)
            .cloned()
            .ok_or(AuthError::UserNotFound)
    }

    fn role_record(&self, name: &str) -> Result<Role, AuthError> {
        self.auth
            .roles
            .get(name)
            .cloned()
            .ok_or(AuthError::RoleNotFound)
    }

    fn put_user(&mut self, user: User) {
        let name = String::from_utf8_lossy(&user.name).into_owned();
        let mut batch = WriteBatch::new();
        batch.put(
            Bucket::AuthUser,
            user.name.clone(),
            Bytes::from(user.encode_to_vec()),
        );
        self.engine.write(batch);
        self.auth.users.insert(name, user);
    }

    fn put_role(&mut self, role: Role) {
        let name = String::from_utf8_lossy(&role.name).into_owned();
        let mut batch = WriteBatch::new();
        batch.put(
            Bucket::AuthRole,
            role.name.clone(),
            Bytes::from(role.encode_to_vec()),
        );
        self.engine.write(batch);
        self.auth.roles.insert(name, role);
    }

    fn commit_auth_revision(&mut self) {
        self.auth.revision += 1;
        self.put_meta(META_AUTH_REVISION, self.auth.revision as i64);
    }
}
