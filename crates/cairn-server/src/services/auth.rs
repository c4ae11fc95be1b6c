//! The Auth service: enable/disable, authenticate, users and roles.
//!
//! Changes go through the log as the caller's requests, and the state machine checks at apply
//! time that the caller may administer (see `cairn_mvcc::auth`). Passwords are hashed here,
//! before proposing, so the log and the snapshots hold only bcrypt hashes. Reads (status,
//! get, list) are linearizable reads of the local auth store.

use cairn_mvcc::auth::AuthError;
use cairn_proto::cairnpb::internal_request::Request as Internal;
use cairn_proto::cairnpb::AuthInfo;
use cairn_proto::etcdserverpb::auth_server::Auth;
use cairn_proto::etcdserverpb::{
    AuthDisableRequest, AuthDisableResponse, AuthEnableRequest, AuthEnableResponse,
    AuthRoleAddRequest, AuthRoleAddResponse, AuthRoleDeleteRequest, AuthRoleDeleteResponse,
    AuthRoleGetRequest, AuthRoleGetResponse, AuthRoleGrantPermissionRequest,
    AuthRoleGrantPermissionResponse, AuthRoleListRequest, AuthRoleListResponse,
    AuthRoleRevokePermissionRequest, AuthRoleRevokePermissionResponse, AuthStatusRequest,
    AuthStatusResponse, AuthUserAddRequest, AuthUserAddResponse, AuthUserChangePasswordRequest,
    AuthUserChangePasswordResponse, AuthUserDeleteRequest, AuthUserDeleteResponse,
    AuthUserGetRequest, AuthUserGetResponse, AuthUserGrantRoleRequest, AuthUserGrantRoleResponse,
    AuthUserListRequest, AuthUserListResponse, AuthUserRevokeRoleRequest,
    AuthUserRevokeRoleResponse, AuthenticateRequest, AuthenticateResponse, ResponseHeader,
};
use tonic::{Request, Response, Status};

use crate::auth::password;
use crate::error::ServerError;
use crate::node::Node;

pub struct AuthService {
    node: Node,
}

impl AuthService {
    pub fn new(node: Node) -> AuthService {
        AuthService { node }
    }

    fn header(&self) -> Option<ResponseHeader> {
        Some(self.node.header(self.node.store().current_revision()))
    }

    /// The caller, once this member has applied everything committed before the call.
    async fn reader<T>(&self, request: &Request<T>) -> Result<AuthInfo, ServerError> {
        let caller = self.node.caller(request.metadata())?;
        self.node.read_index().await?;
        Ok(caller)
    }

    /// A linearizable read that needs the root role.
    async fn admin_reader<T>(&self, request: &Request<T>) -> Result<(), ServerError> {
        let caller = self.reader(request).await?;
        Ok(self.node.store().auth().check_admin(&caller.user)?)
    }

    /// Replaces a plain password by its hash; a no-password user keeps none.
    async fn hashed(&self, password: &mut String, no_password: bool) -> Result<String, Status> {
        let password = std::mem::take(password);
        if no_password {
            return Ok(String::new());
        }
        Ok(password::hash(password, self.node.config().bcrypt_cost).await?)
    }
}

/// Proposes the caller's auth change and answers with the header the apply produced.
macro_rules! auth_change {
    ($self:ident, $request:ident, $variant:ident) => {{
        let caller = $self.node.caller($request.metadata())?;
        propose_reply!(
            $self.node,
            caller,
            Internal::$variant($request.into_inner()),
            $variant
        )
    }};
}

#[tonic::async_trait]
impl Auth for AuthService {
    async fn auth_enable(
        &self,
        request: Request<AuthEnableRequest>,
    ) -> Result<Response<AuthEnableResponse>, Status> {
        auth_change!(self, request, AuthEnable)
    }

    async fn auth_disable(
        &self,
        request: Request<AuthDisableRequest>,
    ) -> Result<Response<AuthDisableResponse>, Status> {
        auth_change!(self, request, AuthDisable)
    }

    async fn auth_status(
        &self,
        request: Request<AuthStatusRequest>,
    ) -> Result<Response<AuthStatusResponse>, Status> {
        self.reader(&request).await?;
        let (enabled, auth_revision) = {
            let store = self.node.store();
            (store.auth().is_enabled(), store.auth().revision())
        };
        Ok(Response::new(AuthStatusResponse {
            header: self.header(),
            enabled,
            auth_revision,
        }))
    }

    async fn authenticate(
        &self,
        request: Request<AuthenticateRequest>,
    ) -> Result<Response<AuthenticateResponse>, Status> {
        let request = request.into_inner();
        self.node.read_index().await?;
        let stored = {
            let store = self.node.store();
            let auth = store.auth();
            if !auth.is_enabled() {
                return Err(ServerError::from(AuthError::AuthNotEnabled).into());
            }
            let user = auth.user(&request.name).ok_or(AuthError::AuthFailed);
            let user = user.map_err(ServerError::from)?;
            if user
                .options
                .as_ref()
                .is_some_and(|options| options.no_password)
            {
                return Err(ServerError::from(AuthError::AuthFailed).into());
            }
            user.password.clone()
        };
        if !password::matches(request.password, stored).await {
            return Err(ServerError::from(AuthError::AuthFailed).into());
        }
        let token = self.node.issue_token(&request.name).await?;
        Ok(Response::new(AuthenticateResponse {
            header: self.header(),
            token,
        }))
    }

    async fn user_add(
        &self,
        request: Request<AuthUserAddRequest>,
    ) -> Result<Response<AuthUserAddResponse>, Status> {
        let caller = self.node.caller(request.metadata())?;
        let mut request = request.into_inner();
        let no_password = request.options.as_ref().is_some_and(|o| o.no_password);
        if request.hashed_password.is_empty() {
            request.hashed_password = self.hashed(&mut request.password, no_password).await?;
        }
        request.password.clear();
        propose_reply!(self.node, caller, Internal::UserAdd(request), UserAdd)
    }

    async fn user_get(
        &self,
        request: Request<AuthUserGetRequest>,
    ) -> Result<Response<AuthUserGetResponse>, Status> {
        let caller = self.reader(&request).await?;
        let name = request.into_inner().name;
        let roles = {
            let store = self.node.store();
            // Users may look at themselves (etcd's rule).
            if caller.user != name {
                store
                    .auth()
                    .check_admin(&caller.user)
                    .map_err(ServerError::from)?;
            }
            store.auth().user_roles(&name).map_err(ServerError::from)?
        };
        Ok(Response::new(AuthUserGetResponse {
            header: self.header(),
            roles,
        }))
    }

    async fn user_list(
        &self,
        request: Request<AuthUserListRequest>,
    ) -> Result<Response<AuthUserListResponse>, Status> {
        self.admin_reader(&request).await?;
        let users = self.node.store().auth().user_names();
        Ok(Response::new(AuthUserListResponse {
            header: self.header(),
            users,
        }))
    }

    async fn user_delete(
        &self,
        request: Request<AuthUserDeleteRequest>,
    ) -> Result<Response<AuthUserDeleteResponse>, Status> {
        auth_change!(self, request, UserDelete)
    }

    async fn user_change_password(
        &self,
        request: Request<AuthUserChangePasswordRequest>,
    ) -> Result<Response<AuthUserChangePasswordResponse>, Status> {
        let caller = self.node.caller(request.metadata())?;
        let mut request = request.into_inner();
        if request.hashed_password.is_empty() {
            request.hashed_password = self.hashed(&mut request.password, false).await?;
        }
        request.password.clear();
        propose_reply!(
            self.node,
            caller,
            Internal::UserChangePassword(request),
            UserChangePassword
        )
    }

    async fn user_grant_role(
        &self,
        request: Request<AuthUserGrantRoleRequest>,
    ) -> Result<Response<AuthUserGrantRoleResponse>, Status> {
        auth_change!(self, request, UserGrantRole)
    }

    async fn user_revoke_role(
        &self,
        request: Request<AuthUserRevokeRoleRequest>,
    ) -> Result<Response<AuthUserRevokeRoleResponse>, Status> {
        auth_change!(self, request, UserRevokeRole)
    }

    async fn role_add(
        &self,
        request: Request<AuthRoleAddRequest>,
    ) -> Result<Response<AuthRoleAddResponse>, Status> {
        auth_change!(self, request, RoleAdd)
    }

    async fn role_get(
        &self,
        request: Request<AuthRoleGetRequest>,
    ) -> Result<Response<AuthRoleGetResponse>, Status> {
        let caller = self.reader(&request).await?;
        let role = request.into_inner().role;
        let perm = {
            let store = self.node.store();
            let auth = store.auth();
            // Holders of a role may look at it (etcd's rule).
            if !auth.user_has_role(&caller.user, &role) {
                auth.check_admin(&caller.user).map_err(ServerError::from)?;
            }
            auth.role_permissions(&role).map_err(ServerError::from)?
        };
        Ok(Response::new(AuthRoleGetResponse {
            header: self.header(),
            perm,
        }))
    }

    async fn role_list(
        &self,
        request: Request<AuthRoleListRequest>,
    ) -> Result<Response<AuthRoleListResponse>, Status> {
        self.admin_reader(&request).await?;
        let roles = self.node.store().auth().role_names();
        Ok(Response::new(AuthRoleListResponse {
            header: self.header(),
            roles,
        }))
    }

    async fn role_delete(
        &self,
        request: Request<AuthRoleDeleteRequest>,
    ) -> Result<Response<AuthRoleDeleteResponse>, Status> {
        auth_change!(self, request, RoleDelete)
    }

    async fn role_grant_permission(
        &self,
        request: Request<AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<AuthRoleGrantPermissionResponse>, Status> {
        auth_change!(self, request, RoleGrantPermission)
    }

    async fn role_revoke_permission(
        &self,
        request: Request<AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<AuthRoleRevokePermissionResponse>, Status> {
        auth_change!(self, request, RoleRevokePermission)
    }
}
