//! Auth end to end: etcdctl's user/role/auth flows against a real `cairn serve`, refusals
//! with etcd's errors on range, put, watch and lease keep-alive, a revoked permission taking
//! effect on the next request, the Lock service acting for its caller, admin-only RPCs, JWT tokens, and simple tokens honoured by every
//! member of a cluster.

mod common;

use std::time::Duration;

use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use cairn_proto::etcdserverpb::{HashKvRequest, PutRequest, RangeRequest};
use common::cluster::CairnCluster;
use common::{channel, etcdctl, etcdctl_ok, require_tool, wait_until, Cairn};
use etcd_client::{ConnectOptions, Permission, PutOptions};
use tonic::{Code, Request};

/// Fast hashing: the tests check behaviour, not the KDF's cost.
const FAST_BCRYPT: [&str; 2] = ["--bcrypt-cost", "4"];

/// Runs etcdctl and returns (success, stdout + stderr).
fn etcdctl_as(
    tool: &std::path::Path,
    endpoint: &str,
    user: Option<&str>,
    args: &[&str],
) -> (bool, String) {
    let user_flag = user.map(|user| format!("--user={user}"));
    let mut full: Vec<&str> = user_flag.iter().map(String::as_str).collect();
    full.extend_from_slice(args);
    let output = etcdctl(tool, endpoint, &full, None);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// root:rootpw (root role), alice:alicepw with role `app` = readwrite on prefix `app/`, auth on.
fn set_up_users(tool: &std::path::Path, endpoint: &str) {
    let run = |args: &[&str]| etcdctl_ok(tool, endpoint, args, None);
    run(&["user", "add", "root:rootpw"]);
    run(&["role", "add", "app"]);
    run(&[
        "role",
        "grant-permission",
        "app",
        "readwrite",
        "app/",
        "--prefix=true",
    ]);
    run(&["user", "add", "alice:alicepw"]);
    run(&["user", "grant-role", "alice", "app"]);
    // etcdctl adds the root role and grants it to root when the server asks for it.
    assert_eq!(run(&["auth", "enable"]).trim(), "Authentication Enabled");
}

fn with_token<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("token", token.parse().expect("ASCII token"));
    request
}

fn put(key: &str) -> PutRequest {
    PutRequest {
        key: key.into(),
        value: b"v".to_vec(),
        ..Default::default()
    }
}

#[tokio::test]
async fn etcdctl_auth_flow_enforces_permissions_with_etcds_errors() {
    let Some(tool) = require_tool("etcdctl") else {
        return;
    };
    let cairn = Cairn::start(&FAST_BCRYPT).await;
    let endpoint = cairn.host_port();
    set_up_users(&tool, &endpoint);
    let root = Some("root:rootpw");
    let alice = Some("alice:alicepw");

    // No credentials: etcd's "user name is empty"; a wrong password: "authentication failed".
    let (ok, out) = etcdctl_as(&tool, &endpoint, None, &["put", "app/1", "v"]);
    assert!(
        !ok && out.contains("etcdserver: user name is empty"),
        "{out}"
    );
    let (ok, out) = etcdctl_as(&tool, &endpoint, Some("alice:wrong"), &["get", "app/1"]);
    assert!(
        !ok && out.contains("authentication failed, invalid user ID or password"),
        "{out}"
    );

    // Alice inside her prefix, and refused outside it (put and range).
    let (ok, out) = etcdctl_as(&tool, &endpoint, alice, &["put", "app/1", "hello"]);
    assert!(ok, "{out}");
    let (ok, out) = etcdctl_as(
        &tool,
        &endpoint,
        alice,
        &["get", "app/1", "--print-value-only"],
    );
    assert!(ok && out.trim() == "hello", "{out}");
    etcdctl_as(&tool, &endpoint, root, &["put", "secret", "s"]);
    for args in [
        &["put", "secret", "x"][..],
        &["get", "secret"],
        &["get", "app/", "--prefix=false", "--from-key"],
    ] {
        let (ok, out) = etcdctl_as(&tool, &endpoint, alice, args);
        assert!(
            !ok && out.contains("etcdserver: permission denied"),
            "{args:?}: {out}"
        );
    }
    let (ok, out) = etcdctl_as(
        &tool,
        &endpoint,
        root,
        &["get", "secret", "--print-value-only"],
    );
    assert!(ok && out.trim() == "s", "root reads everything: {out}");

    // Administration is root's: alice may read herself but not list users or add roles.
    let (ok, out) = etcdctl_as(&tool, &endpoint, alice, &["user", "get", "alice"]);
    assert!(ok && out.contains("app"), "{out}");
    for args in [
        &["user", "list"][..],
        &["role", "add", "x"],
        &["user", "get", "root"],
    ] {
        let (ok, out) = etcdctl_as(&tool, &endpoint, alice, args);
        assert!(!ok && out.contains("permission denied"), "{args:?}: {out}");
    }
    let (ok, out) = etcdctl_as(&tool, &endpoint, root, &["user", "list"]);
    assert!(
        ok && out.split_whitespace().collect::<Vec<_>>() == ["alice", "root"],
        "{out}"
    );
    let (ok, out) = etcdctl_as(&tool, &endpoint, root, &["role", "get", "app"]);
    assert!(ok && out.contains("app/"), "{out}");
    let (ok, out) = etcdctl_as(&tool, &endpoint, root, &["auth", "status"]);
    assert!(ok && out.contains("true"), "{out}");

    // Auth off again: anyone may do anything.
    let (ok, out) = etcdctl_as(&tool, &endpoint, root, &["auth", "disable"]);
    assert!(ok, "{out}");
    let (ok, out) = etcdctl_as(
        &tool,
        &endpoint,
        None,
        &["get", "secret", "--print-value-only"],
    );
    assert!(ok && out.trim() == "s", "{out}");
}

#[tokio::test]
async fn watch_keepalive_and_revocation_are_enforced_on_a_live_token() {
    let Some(tool) = require_tool("etcdctl") else {
        return;
    };
    let cairn = Cairn::start(&FAST_BCRYPT).await;
    set_up_users(&tool, &cairn.host_port());
    let connect = |user: &str, password: &str| {
        let options = ConnectOptions::new().with_user(user, password);
        etcd_client::Client::connect([cairn.endpoint()], Some(options))
    };
    let mut root = connect("root", "rootpw").await.expect("root connects");
    let mut alice = connect("alice", "alicepw").await.expect("alice connects");

    // A watch outside alice's range is created and cancelled with etcd's reason.
    let mut refused = alice
        .watch("secret", None)
        .await
        .expect("watch stream opens");
    let response = refused
        .message()
        .await
        .expect("stream")
        .expect("a response");
    assert!(response.created() && response.canceled(), "{response:?}");
    assert!(response.cancel_reason().contains("permission denied"));
    // Inside it, events arrive.
    let mut allowed = alice
        .watch("app/w", None)
        .await
        .expect("watch stream opens");
    let created = allowed.message().await.expect("stream").expect("created");
    assert!(created.created() && !created.canceled());
    alice
        .put("app/w", "1", None)
        .await
        .expect("alice writes her prefix");
    let events = allowed.message().await.expect("stream").expect("events");
    assert_eq!(events.events().len(), 1);

    // Keep-alive of a lease that holds a key alice may not write: refused.
    let lease = root.lease_grant(60, None).await.expect("grant").id();
    root.put("secret", "s", Some(PutOptions::new().with_lease(lease)))
        .await
        .expect("root attaches a key");
    // The client sends the first renewal as it opens the stream, so the refusal may end the
    // call before or after its response headers.
    let error = match alice.lease_keep_alive(lease).await {
        Err(error) => error,
        Ok((_keeper, mut replies)) => replies.message().await.expect_err("keep-alive refused"),
    };
    assert!(error.to_string().contains("permission denied"), "{error}");
    // Root renews it fine.
    let (mut keeper, mut replies) = root.lease_keep_alive(lease).await.expect("stream opens");
    keeper.keep_alive().await.expect("request sent");
    let renewed = replies.message().await.expect("renewal").expect("a reply");
    assert_eq!(renewed.ttl(), 60);

    // The Lock service acts for its caller: only inside alice's prefix.
    let held = alice
        .lock("app/lock", None)
        .await
        .expect("alice locks her prefix");
    alice.unlock(held.key()).await.expect("and unlocks");
    let error = alice
        .lock("secret-lock", None)
        .await
        .expect_err("lock outside");
    assert!(error.to_string().contains("permission denied"), "{error}");

    // Revoking the permission stops alice's very next write, on the same token.
    alice.put("app/before", "1", None).await.expect("permitted");
    root.role_revoke_permission(
        "app",
        "app/",
        Some(etcd_client::RoleRevokePermissionOptions::new().with_prefix()),
    )
    .await
    .expect("revoke");
    let error = alice
        .put("app/after", "1", None)
        .await
        .expect_err("write after revocation");
    assert!(error.to_string().contains("permission denied"), "{error}");
    let error = alice
        .get("app/before", None)
        .await
        .expect_err("read after revocation");
    assert!(error.to_string().contains("permission denied"), "{error}");
    // And granting it back works at once too.
    root.role_grant_permission("app", Permission::read_write("app/").with_prefix())
        .await
        .expect("grant");
    alice
        .put("app/after", "1", None)
        .await
        .expect("permitted again");
}

#[tokio::test]
async fn maintenance_and_membership_need_root_and_bad_tokens_are_refused() {
    let Some(tool) = require_tool("etcdctl") else {
        return;
    };
    let cairn = Cairn::start(&FAST_BCRYPT).await;
    set_up_users(&tool, &cairn.host_port());
    let auth = etcd_client::Client::connect([cairn.endpoint()], None)
        .await
        .expect("connects");
    let token = auth
        .auth_client()
        .authenticate("alice".into(), "alicepw".into())
        .await
        .expect("alice authenticates")
        .token()
        .to_string();
    let mut maintenance = MaintenanceClient::new(channel(&cairn.endpoint()).await);
    let refused = maintenance
        .hash_kv(with_token(HashKvRequest { revision: 0 }, &token))
        .await
        .expect_err("HashKV is for root");
    assert_eq!(refused.code(), Code::PermissionDenied);
    let (ok, out) = etcdctl_as(
        &tool,
        &cairn.host_port(),
        Some("alice:alicepw"),
        &["member", "add", "x", "--peer-urls=http://127.0.0.1:1"],
    );
    assert!(!ok && out.contains("permission denied"), "{out}");
    let (ok, out) = etcdctl_as(
        &tool,
        &cairn.host_port(),
        Some("root:rootpw"),
        &["endpoint", "hashkv"],
    );
    assert!(ok, "{out}");

    let mut kv = KvClient::new(channel(&cairn.endpoint()).await);
    let forged = kv
        .put(with_token(put("app/x"), "forged.1"))
        .await
        .expect_err("unknown token");
    assert_eq!(
        (forged.code(), forged.message()),
        (Code::Unauthenticated, "etcdserver: invalid auth token")
    );
    kv.put(with_token(put("app/x"), &token))
        .await
        .expect("a real token works");
}

#[tokio::test]
async fn jwt_tokens_verify_by_signature_and_expire_with_the_auth_revision() {
    let Some(tool) = require_tool("etcdctl") else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let key = dir.path().join("jwt.key");
    std::fs::write(&key, b"a shared HMAC key for the test").expect("key file");
    let spec = format!("jwt,priv-key={},sign-method=HS256,ttl=10m", key.display());
    let cairn = Cairn::start(&["--auth-token", &spec, FAST_BCRYPT[0], FAST_BCRYPT[1]]).await;
    set_up_users(&tool, &cairn.host_port());
    let (ok, out) = etcdctl_as(
        &tool,
        &cairn.host_port(),
        Some("alice:alicepw"),
        &["put", "app/1", "v"],
    );
    assert!(ok, "{out}");

    let client = etcd_client::Client::connect([cairn.endpoint()], None)
        .await
        .expect("connects");
    let token = client
        .auth_client()
        .authenticate("alice".into(), "alicepw".into())
        .await
        .expect("alice authenticates")
        .token()
        .to_string();
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    let mut kv = KvClient::new(channel(&cairn.endpoint()).await);
    kv.range(with_token(
        RangeRequest {
            key: b"app/1".to_vec(),
            ..Default::default()
        },
        &token,
    ))
    .await
    .expect("the JWT reads");
    // Any auth change makes older JWTs stale: clients must authenticate again.
    etcdctl_ok(
        &tool,
        &cairn.host_port(),
        &["--user=root:rootpw", "role", "add", "other"],
        None,
    );
    let stale = kv
        .put(with_token(put("app/2"), &token))
        .await
        .expect_err("stale JWT");
    assert_eq!(
        (stale.code(), stale.message()),
        (
            Code::InvalidArgument,
            "etcdserver: revision of auth store is old"
        )
    );
    let tampered = format!("{}x", token);
    let refused = kv
        .put(with_token(put("app/2"), &tampered))
        .await
        .expect_err("bad signature");
    assert_eq!(refused.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn a_simple_token_from_one_member_works_on_every_member() {
    let Some(tool) = require_tool("etcdctl") else {
        return;
    };
    let cluster = CairnCluster::start(3).await;
    cluster.leader(Duration::from_secs(20)).await;
    let endpoint = |i: usize| cluster.members[i].endpoint();
    // Member 0 forwards writes once its links to the leader are up.
    let kv = KvClient::new(channel(&endpoint(0)).await);
    wait_until("member 0 to take writes", Duration::from_secs(20), || {
        let mut kv = kv.clone();
        async move { kv.put(put("ready")).await.is_ok() }
    })
    .await;
    // etcdctl blocks its thread: run it off the runtime that drives the cluster's peer proxies.
    let host_port = endpoint(0).trim_start_matches("http://").to_string();
    tokio::task::spawn_blocking(move || set_up_users(&tool, &host_port))
        .await
        .expect("set-up ran");
    let client = etcd_client::Client::connect([endpoint(0)], None)
        .await
        .expect("connects");
    let token = client
        .auth_client()
        .authenticate("alice".into(), "alicepw".into())
        .await
        .expect("alice authenticates")
        .token()
        .to_string();
    for member in 0..3 {
        let mut kv = KvClient::new(channel(&endpoint(member)).await);
        // Followers learn the token when they apply the entry that carried it.
        let key = format!("app/from-{member}");
        wait_until(
            "the token to reach the member",
            Duration::from_secs(10),
            || {
                let mut kv = kv.clone();
                let key = key.clone();
                let token = token.clone();
                async move { kv.put(with_token(put(&key), &token)).await.is_ok() }
            },
        )
        .await;
        let refused = kv
            .put(with_token(put("secret"), &token))
            .await
            .expect_err("outside alice's prefix");
        assert_eq!(refused.code(), Code::PermissionDenied, "member {member}");
    }
}
