//! The etcd API through Debian's real `etcdctl` (v3 API) against a real `cairn serve`.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{etcdctl, etcdctl_ok, require_tool, Cairn};

#[tokio::test]
async fn etcdctl_put_get_txn_and_options() {
    let Some(tool) = require_tool("etcdctl") else {
        return;
    };
    let cairn = Cairn::start(&[]).await;
    let endpoint = cairn.host_port();
    let run = |args: &[&str]| etcdctl_ok(&tool, &endpoint, args, None);

    assert_eq!(run(&["put", "k1", "v1"]).trim(), "OK");
    run(&["put", "k2", "v2"]);
    run(&["put", "k3", "v3"]);
    assert_eq!(run(&["get", "k1"]), "k1\nv1\n");
    assert_eq!(
        run(&["get", "k", "--prefix", "--keys-only"])
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["k1", "k2", "k3"]
    );
    assert_eq!(
        run(&[
            "get",
            "k",
            "--prefix",
            "--limit=1",
            "--sort-by=KEY",
            "--order=DESCEND"
        ]),
        "k3\nv3\n"
    );
    let json: serde_json::Value =
        serde_json::from_str(&run(&["get", "k", "--prefix", "--limit=1", "-w", "json"])).unwrap();
    assert_eq!(
        (json["count"].as_i64(), json["more"].as_bool()),
        (Some(3), Some(true))
    );
    assert_eq!(run(&["put", "k1", "v1b", "--prev-kv"]), "OK\nk1\nv1\n");
    assert_eq!(run(&["get", "k1", "--rev=2"]), "k1\nv1\n");

    // etcdctl txn reads compares, success ops and failure ops from stdin, blank-line separated.
    let txn = "value(\"k1\") = \"v1b\"\n\nput k2 swapped\ndel k3\n\nput k2 lost\n\n";
    let out = etcdctl_ok(&tool, &endpoint, &["txn"], Some(txn));
    assert_eq!(out.lines().next(), Some("SUCCESS"));
    assert_eq!(run(&["get", "k2", "--print-value-only"]).trim(), "swapped");
    assert_eq!(run(&["get", "k3"]), "");
    assert_eq!(run(&["del", "k", "--prefix"]).trim(), "2");
}

#[tokio::test]
async fn etcdctl_watch_replays_history() {
    let Some(tool) = require_tool("etcdctl") else {
        return;
    };
    let cairn = Cairn::start(&[]).await;
    let endpoint = cairn.host_port();
    etcdctl_ok(&tool, &endpoint, &["put", "w", "first"], None);
    etcdctl_ok(&tool, &endpoint, &["put", "w", "second"], None);
    etcdctl_ok(&tool, &endpoint, &["del", "w"], None);

    let mut watch = Command::new(&tool)
        .env("ETCDCTL_API", "3")
        .args([
            format!("--endpoints={endpoint}"),
            "watch".into(),
            "w".into(),
            "--rev=2".into(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = watch.stdout.take().unwrap();
    let lines = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .take(7)
            .map(|line| line.unwrap())
            .collect::<Vec<_>>()
    });
    let lines = tokio::time::timeout(Duration::from_secs(10), lines).await;
    let _ = watch.kill();
    let _ = watch.wait();
    let lines = lines.expect("watch output in time").unwrap();
    assert_eq!(lines, ["PUT", "w", "first", "PUT", "w", "second", "DELETE"]);
}

#[tokio::test]
async fn etcdctl_lease_compaction_snapshot_and_status() {
    let Some(tool) = require_tool("etcdctl") else {
        return;
    };
    let cairn = Cairn::start(&[]).await;
    let endpoint = cairn.host_port();
    let run = |args: &[&str]| etcdctl_ok(&tool, &endpoint, args, None);

    // Lease: grant, attach, keep alive once, time-to-live lists the key, revoke deletes it.
    let granted = run(&["lease", "grant", "60"]);
    let id = granted
        .split_whitespace()
        .nth(1)
        .expect("lease <id> granted with TTL(60s)")
        .to_string();
    run(&["put", "leased", "v", &format!("--lease={id}")]);
    assert!(run(&["lease", "keep-alive", "--once", &id]).contains("keepalived with TTL(60)"));
    let ttl = run(&["lease", "timetolive", &id, "--keys"]);
    assert!(
        ttl.contains("granted with TTL(60s)") && ttl.contains("attached keys([leased])"),
        "{ttl}"
    );
    assert!(run(&["lease", "list"]).contains(&id));
    run(&["lease", "revoke", &id]);
    assert_eq!(run(&["get", "leased"]), "");

    // Compaction: old revisions refused with etcd's message.
    run(&["put", "c", "1"]);
    run(&["put", "c", "2"]);
    let revision: serde_json::Value =
        serde_json::from_str(&run(&["get", "c", "-w", "json"])).unwrap();
    let revision = revision["header"]["revision"].as_i64().unwrap();
    assert_eq!(
        run(&["compaction", &revision.to_string()]).trim(),
        format!("compacted revision {revision}")
    );
    let old = etcdctl(
        &tool,
        &endpoint,
        &["get", "c", &format!("--rev={}", revision - 1)],
        None,
    );
    assert!(!old.status.success());
    assert!(String::from_utf8_lossy(&old.stderr)
        .contains("etcdserver: mvcc: required revision has been compacted"));

    // Snapshot save: etcdctl checks the framing and writes the file.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("snap.db");
    let saved = run(&["snapshot", "save", path.to_str().unwrap()]);
    assert!(saved.contains("Snapshot saved at"), "{saved}");
    assert_eq!(std::fs::metadata(&path).unwrap().len() % 512, 32);

    // Status and health.
    let status: serde_json::Value =
        serde_json::from_str(&run(&["endpoint", "status", "-w", "json"])).unwrap();
    let status = &status[0]["Status"];
    assert_eq!(status["version"], "3.5.17");
    assert_eq!(status["leader"], status["header"]["member_id"]);
    // etcdctl 3.4 reports health on stderr.
    let health = etcdctl(&tool, &endpoint, &["endpoint", "health"], None);
    assert!(health.status.success());
    assert!(String::from_utf8_lossy(&health.stderr).contains("is healthy"));
    let members = run(&["member", "list"]);
    assert!(members.contains(&cairn.endpoint()), "{members}");
}

/// etcdctl 3.4 puts the whole URL into the HTTP/2 `:authority`; Cairn must accept it as etcd
/// does (see `cairn_server::authority`).
#[tokio::test]
async fn etcdctl_accepts_endpoints_given_as_urls() {
    let Some(tool) = require_tool("etcdctl") else {
        return;
    };
    let cairn = Cairn::start(&[]).await;
    let url = cairn.endpoint();
    assert!(url.starts_with("http://"));
    assert_eq!(
        etcdctl_ok(&tool, &url, &["put", "u", "1"], None).trim(),
        "OK"
    );
    assert_eq!(
        etcdctl_ok(&tool, &url, &["put", "u", "2"], None).trim(),
        "OK"
    );
    assert_eq!(
        etcdctl_ok(&tool, &url, &["get", "u", "--print-value-only"], None).trim(),
        "2"
    );
    let txn = "value(\"u\") = \"2\"\n\nput u 3\n\n\n";
    assert_eq!(
        etcdctl_ok(&tool, &url, &["txn"], Some(txn)).lines().next(),
        Some("SUCCESS")
    );
    let status = etcdctl_ok(&tool, &url, &["endpoint", "status", "-w", "json"], None);
    assert!(status.contains("3.5.17"), "{status}");
}
