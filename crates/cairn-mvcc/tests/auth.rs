//! The auth store as the state machine applies it: etcd's rules for users, roles and
//! permissions, the enable preconditions, the permission check of every client write at its
//! place in the log, simple tokens, and survival of restarts.

mod common;

use cairn_mvcc::auth::AuthError;
use cairn_mvcc::{ApplyResponse, MvccError};
use cairn_proto::authpb::permission::Type as PermType;
use cairn_proto::authpb::{Permission, UserAddOptions};
use cairn_proto::cairnpb::internal_request::Request;
use cairn_proto::cairnpb::InternalAuthenticateRequest;
use cairn_proto::etcdserverpb::compare::CompareResult;
use cairn_proto::etcdserverpb::{
    AuthDisableRequest, AuthEnableRequest, AuthRoleAddRequest, AuthRoleDeleteRequest,
    AuthRoleGrantPermissionRequest, AuthRoleRevokePermissionRequest, AuthUserAddRequest,
    AuthUserChangePasswordRequest, AuthUserDeleteRequest, AuthUserGrantRoleRequest,
    AuthUserRevokeRoleRequest, LeaseKeepAliveRequest, LeaseRevokeRequest, PutRequest,
};
use common::*;

fn user_add(name: &str) -> Request {
    Request::UserAdd(AuthUserAddRequest {
        name: name.into(),
        hashed_password: format!("hash-of-{name}"),
        ..Default::default()
    })
}

fn grant_role(user: &str, role: &str) -> Request {
    Request::UserGrantRole(AuthUserGrantRoleRequest {
        user: user.into(),
        role: role.into(),
    })
}

fn role_add(name: &str) -> Request {
    Request::RoleAdd(AuthRoleAddRequest { name: name.into() })
}

fn grant_perm(role: &str, kind: PermType, key: &str, range_end: &[u8]) -> Request {
    Request::RoleGrantPermission(AuthRoleGrantPermissionRequest {
        name: role.into(),
        perm: Some(Permission {
            perm_type: kind as i32,
            key: key.into(),
            range_end: range_end.to_vec(),
        }),
    })
}

fn revoke_perm(role: &str, key: &str, range_end: &[u8]) -> Request {
    Request::RoleRevokePermission(AuthRoleRevokePermissionRequest {
        role: role.into(),
        key: key.into(),
        range_end: range_end.to_vec(),
    })
}

fn put(key: &str) -> Request {
    Request::Put(put_req(key, "v"))
}

fn auth_err(result: Result<ApplyResponse, MvccError>) -> AuthError {
    match result {
        Err(MvccError::Auth(error)) => error,
        other => panic!("expected an auth refusal, got {other:?}"),
    }
}

/// root (with the root role), alice with role `app` = readwrite on [app/, app0), auth on.
fn enabled_store() -> TestStore {
    let mut s = TestStore::new();
    for request in [
        user_add("root"),
        grant_role("root", "root"),
        user_add("alice"),
        role_add("app"),
        grant_perm("app", PermType::Readwrite, "app/", b"app0"),
        grant_role("alice", "app"),
        Request::AuthEnable(AuthEnableRequest {}),
    ] {
        s.apply_as("", request)
            .expect("setup applies while auth is off");
    }
    assert!(s.store.auth().is_enabled());
    s
}

#[test]
fn enabling_needs_a_root_user_holding_the_root_role() {
    let mut s = TestStore::new();
    let enable = || Request::AuthEnable(AuthEnableRequest {});
    assert_eq!(auth_err(s.apply(enable())), AuthError::RootUserNotExist);
    s.apply(user_add("root")).unwrap();
    assert_eq!(auth_err(s.apply(enable())), AuthError::RootRoleNotExist);
    s.apply(grant_role("root", "root")).unwrap();
    let before = s.store.auth().revision();
    s.apply(enable()).unwrap();
    assert!(s.store.auth().is_enabled());
    assert_eq!(s.store.auth().revision(), before + 1);
    s.apply(enable()).unwrap();
    assert_eq!(
        s.store.auth().revision(),
        before + 1,
        "enabling twice is a no-op"
    );
}

#[test]
fn users_and_roles_follow_etcds_rules() {
    let mut s = TestStore::new();
    s.apply(user_add("alice")).unwrap();
    assert_eq!(
        auth_err(s.apply(user_add("alice"))),
        AuthError::UserAlreadyExist
    );
    assert_eq!(auth_err(s.apply(user_add(""))), AuthError::UserEmpty);
    assert_eq!(auth_err(s.apply(role_add(""))), AuthError::RoleEmpty);
    assert_eq!(
        auth_err(s.apply(grant_role("alice", "nope"))),
        AuthError::RoleNotFound
    );
    assert_eq!(
        auth_err(s.apply(grant_role("bob", "root"))),
        AuthError::UserNotFound
    );
    s.apply(role_add("b")).unwrap();
    s.apply(role_add("a")).unwrap();
    assert_eq!(
        auth_err(s.apply(role_add("a"))),
        AuthError::RoleAlreadyExist
    );
    s.apply(grant_role("alice", "b")).unwrap();
    s.apply(grant_role("alice", "a")).unwrap();
    let revision = s.store.auth().revision();
    s.apply(grant_role("alice", "a")).unwrap();
    assert_eq!(
        s.store.auth().revision(),
        revision,
        "a second grant is ignored"
    );
    assert_eq!(s.store.auth().user_roles("alice").unwrap(), ["a", "b"]);
    assert_eq!(s.store.auth().role_names(), ["a", "b"]);
    let revoke = |role: &str| {
        Request::UserRevokeRole(AuthUserRevokeRoleRequest {
            name: "alice".into(),
            role: role.into(),
        })
    };
    s.apply(revoke("b")).unwrap();
    assert_eq!(auth_err(s.apply(revoke("b"))), AuthError::RoleNotGranted);
    // Deleting a role takes it from its holders.
    s.apply(Request::RoleDelete(AuthRoleDeleteRequest {
        role: "a".into(),
    }))
    .unwrap();
    assert!(s.store.auth().user_roles("alice").unwrap().is_empty());
    let delete = || {
        Request::UserDelete(AuthUserDeleteRequest {
            name: "alice".into(),
        })
    };
    s.apply(delete()).unwrap();
    assert_eq!(auth_err(s.apply(delete())), AuthError::UserNotFound);
    assert_eq!(
        s.store.auth().user_roles("alice"),
        Err(AuthError::UserNotFound)
    );
}

#[test]
fn permissions_are_kept_sorted_updated_in_place_and_revoked_exactly() {
    let mut s = TestStore::new();
    s.apply(role_add("r")).unwrap();
    s.apply(grant_perm("r", PermType::Read, "b", b"")).unwrap();
    s.apply(grant_perm("r", PermType::Read, "a", b"c")).unwrap();
    s.apply(grant_perm("r", PermType::Write, "b", b"")).unwrap();
    let perms = s.store.auth().role_permissions("r").unwrap();
    let listed: Vec<(String, i32)> = perms
        .iter()
        .map(|perm| (text(&perm.key), perm.perm_type))
        .collect();
    assert_eq!(
        listed,
        [
            ("a".into(), PermType::Read as i32),
            ("b".into(), PermType::Write as i32)
        ]
    );
    assert_eq!(
        auth_err(s.apply(grant_perm("r", PermType::Read, "z", b"a"))),
        AuthError::InvalidAuthMgmt,
        "an empty interval"
    );
    assert_eq!(
        auth_err(s.apply(revoke_perm("r", "a", b""))),
        AuthError::PermissionNotGranted,
        "revocation names the exact interval"
    );
    s.apply(revoke_perm("r", "a", b"c")).unwrap();
    assert_eq!(s.store.auth().role_permissions("r").unwrap().len(), 1);
    assert_eq!(
        auth_err(s.apply(Request::RoleGrantPermission(
            AuthRoleGrantPermissionRequest {
                name: "r".into(),
                perm: None,
            }
        ))),
        AuthError::PermissionNotGiven
    );
}

#[test]
fn writes_are_checked_against_the_auth_state_at_their_place_in_the_log() {
    let mut s = enabled_store();
    s.apply_as("alice", put("app/1")).unwrap();
    assert_eq!(
        auth_err(s.apply_as("alice", put("other"))),
        AuthError::PermissionDenied
    );
    assert_eq!(auth_err(s.apply_as("", put("app/1"))), AuthError::UserEmpty);
    assert_eq!(
        auth_err(s.apply_as("mallory", put("app/1"))),
        AuthError::PermissionDenied
    );
    s.apply_as("root", put("other")).unwrap();
    // The node's own requests (no caller) are never refused.
    s.apply(put("other")).unwrap();
    // A range delete must lie wholly inside the grant.
    let delete = |end: &str| Request::DeleteRange(delete_req("app/", end));
    s.apply_as("alice", delete("app0")).unwrap();
    assert_eq!(
        auth_err(s.apply_as("alice", delete("b"))),
        AuthError::PermissionDenied
    );
    // Revoking the permission stops the very next write.
    s.apply_as("root", revoke_perm("app", "app/", b"app0"))
        .unwrap();
    assert_eq!(
        auth_err(s.apply_as("alice", put("app/1"))),
        AuthError::PermissionDenied
    );
    // Administration needs root.
    assert_eq!(
        auth_err(s.apply_as("alice", role_add("x"))),
        AuthError::PermissionDenied
    );
    s.apply_as("root", role_add("x")).unwrap();
}

#[test]
fn a_txn_needs_permission_for_both_branches_and_its_compares() {
    let mut s = enabled_store();
    s.apply_as("root", put("secret")).unwrap();
    let inside = txn(
        vec![cmp_version("app/a", CompareResult::Equal, 0)],
        vec![put_op("app/a", "1")],
        vec![range_op("app/a", "")],
    );
    s.apply_as("alice", Request::Txn(inside)).unwrap();
    let compare_outside = txn(
        vec![cmp_version("secret", CompareResult::Equal, 0)],
        vec![put_op("app/a", "1")],
        vec![],
    );
    let failure_outside = txn(
        vec![],
        vec![put_op("app/a", "2")],
        vec![put_op("secret", "x")],
    );
    let nested_outside = txn(
        vec![],
        vec![txn_op(txn(vec![], vec![range_op("secret", "")], vec![]))],
        vec![],
    );
    for (what, request) in [
        ("compare", compare_outside),
        ("failure branch", failure_outside),
        ("nested txn", nested_outside),
    ] {
        assert_eq!(
            auth_err(s.apply_as("alice", Request::Txn(request))),
            AuthError::PermissionDenied,
            "{what}"
        );
    }
    assert_eq!(
        value_of(&s.get("secret").unwrap()),
        "v",
        "nothing was applied"
    );
}

#[test]
fn lease_operations_need_write_on_the_leases_keys() {
    let mut s = enabled_store();
    s.grant(7, 60).unwrap();
    s.apply_as(
        "root",
        Request::Put(PutRequest {
            lease: 7,
            ..put_req("secret", "v")
        }),
    )
    .unwrap();
    let keep_alive = Request::LeaseKeepAlive(LeaseKeepAliveRequest { id: 7 });
    assert_eq!(
        auth_err(s.apply_as("alice", keep_alive.clone())),
        AuthError::PermissionDenied
    );
    let revoke = Request::LeaseRevoke(LeaseRevokeRequest { id: 7 });
    assert_eq!(
        auth_err(s.apply_as("alice", revoke.clone())),
        AuthError::PermissionDenied
    );
    let join = Request::Put(PutRequest {
        lease: 7,
        ..put_req("app/x", "v")
    });
    assert_eq!(
        auth_err(s.apply_as("alice", join)),
        AuthError::PermissionDenied
    );
    s.apply_as("root", keep_alive).unwrap();
    s.apply_as("root", revoke).unwrap();
    assert!(s.get("secret").is_none());
}

#[test]
fn authenticate_assigns_a_token_every_replica_knows_until_the_user_changes() {
    let mut s = enabled_store();
    let mut twin = s.twin();
    let authenticate = |name: &str| {
        Request::Authenticate(InternalAuthenticateRequest {
            name: name.into(),
            simple_token_prefix: "abcdef".into(),
        })
    };
    let token = match s.apply(authenticate("alice")).unwrap() {
        ApplyResponse::Authenticate(response) => response.token,
        other => panic!("{other:?}"),
    };
    twin.apply(authenticate("alice")).unwrap();
    let index = s.store.applied_index();
    assert_eq!(token, format!("abcdef.{index}"));
    for replica in [&s, &twin] {
        let user = replica.store.auth().tokens().user(&token, s.now_ms);
        assert_eq!(user.as_deref(), Some("alice"));
    }
    assert_eq!(
        auth_err(s.apply(authenticate("nobody"))),
        AuthError::AuthFailed
    );
    s.apply_as(
        "root",
        Request::UserChangePassword(AuthUserChangePasswordRequest {
            name: "alice".into(),
            hashed_password: "new".into(),
            ..Default::default()
        }),
    )
    .unwrap();
    assert_eq!(s.store.auth().tokens().user(&token, s.now_ms), None);
    // A no-password user cannot authenticate; disabling auth drops every token.
    s.apply_as(
        "root",
        Request::UserAdd(AuthUserAddRequest {
            name: "svc".into(),
            options: Some(UserAddOptions { no_password: true }),
            ..Default::default()
        }),
    )
    .unwrap();
    assert_eq!(
        auth_err(s.apply(authenticate("svc"))),
        AuthError::AuthFailed
    );
    s.apply(authenticate("alice")).unwrap();
    s.apply_as("root", Request::AuthDisable(AuthDisableRequest {}))
        .unwrap();
    assert!(s.store.auth().tokens().is_empty());
    assert_eq!(
        auth_err(s.apply(authenticate("alice"))),
        AuthError::AuthNotEnabled
    );
}

#[test]
fn root_cannot_be_removed_while_auth_is_enabled() {
    let mut s = enabled_store();
    let delete_root = Request::UserDelete(AuthUserDeleteRequest {
        name: "root".into(),
    });
    assert_eq!(
        auth_err(s.apply_as("root", delete_root)),
        AuthError::InvalidAuthMgmt
    );
    let revoke_root = Request::UserRevokeRole(AuthUserRevokeRoleRequest {
        name: "root".into(),
        role: "root".into(),
    });
    assert_eq!(
        auth_err(s.apply_as("root", revoke_root)),
        AuthError::InvalidAuthMgmt
    );
}

#[test]
fn the_auth_store_survives_a_restart_and_tokens_do_not() {
    let mut s = enabled_store();
    s.apply(Request::Authenticate(InternalAuthenticateRequest {
        name: "alice".into(),
        simple_token_prefix: "p".into(),
    }))
    .unwrap();
    let revision = s.store.auth().revision();
    s.restart();
    let auth = s.store.auth();
    assert!(auth.is_enabled());
    assert_eq!(auth.revision(), revision);
    assert_eq!(auth.user_names(), ["alice", "root"]);
    assert_eq!(auth.user_roles("alice").unwrap(), ["app"]);
    assert_eq!(auth.role_permissions("app").unwrap().len(), 1);
    assert!(auth.tokens().is_empty(), "tokens are volatile");
    assert_eq!(
        auth.user("alice").map(|user| user.password.clone()),
        Some(b"hash-of-alice".to_vec())
    );
    assert_eq!(
        auth_err(s.apply_as("alice", put("other"))),
        AuthError::PermissionDenied
    );
}
