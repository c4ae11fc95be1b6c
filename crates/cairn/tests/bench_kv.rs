//! `cairn bench kv` against real servers: every request it reports reached the server exactly
//! once (checked through the store's revision and key count), failed requests are counted as
//! errors, and the load generator's thin gRPC client works against Debian's etcd as well as
//! against Cairn.

mod common;

use std::process::{Command, Output};

use cairn_proto::etcdserverpb::RangeRequest;
use common::{Cairn, Etcd};
use serde_json::Value;

/// Runs `cairn bench kv --endpoints ENDPOINT --json ARGS` (ARGS split on whitespace).
fn bench(endpoint: &str, args: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["bench", "kv", "--endpoints", endpoint, "--json"])
        .args(args.split_whitespace())
        .output()
        .expect("running cairn bench kv")
}

fn report(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "cairn bench kv failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().expect("a JSON report line");
    serde_json::from_str(line).expect("the report is JSON")
}

fn assert_all_succeeded(report: &Value, total: u64) {
    assert_eq!(report["total"], total, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
}

/// 600 sequential puts over 300 keys from 8 clients on 3 connections: the report counts 600
/// successes, and the server's history agrees (300 keys, one revision per put).
async fn puts_land_once_each(endpoint: &str) {
    let output = bench(
        endpoint,
        "--clients 8 --conns 3 --total 600 put --key-size 8 --val-size 64 --key-space-size 300 --sequential-keys",
    );
    let report = report(&output);
    assert_eq!(report["op"], "put");
    assert_all_succeeded(&report, 600);
    let latency = &report["latency_ms"];
    let (p50, p99) = (latency["p50"].as_f64(), latency["p99"].as_f64());
    assert!(p50 > Some(0.0) && p50 <= p99, "latencies {latency}");

    let mut kv = common::cluster_kv(endpoint).await;
    let all = kv
        .range(RangeRequest {
            key: vec![0],
            range_end: vec![0],
            count_only: true,
            ..Default::default()
        })
        .await
        .expect("range over every key")
        .into_inner();
    assert_eq!(all.count, 300);
    let header = all.header.expect("response header");
    assert_eq!(header.revision, 1 + 600, "one revision per reported put");
}

#[tokio::test]
async fn puts_reported_by_the_benchmark_are_the_puts_cairn_applied() {
    let cairn = Cairn::start(&[]).await;
    puts_land_once_each(&cairn.endpoint()).await;
}

#[tokio::test]
async fn the_benchmark_client_speaks_to_etcd_too() {
    let Some(etcd) = Etcd::start().await else {
        return;
    };
    puts_land_once_each(&etcd.endpoint()).await;
    let ranges = report(&bench(
        &etcd.endpoint(),
        "--clients 4 --total 100 range k --consistency s",
    ));
    assert_all_succeeded(&ranges, 100);
}

#[tokio::test]
async fn rejected_requests_are_counted_as_errors_and_the_server_keeps_serving() {
    let cairn = Cairn::start(&["--max-request-bytes", "4096"]).await;
    let output = bench(
        &cairn.endpoint(),
        "--clients 2 --total 10 put --val-size 8192",
    );
    let oversized = report(&output);
    assert_eq!(oversized["errors"], 10);
    assert_eq!(oversized["total"], 0);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(
            "10 requests failed; the first with: gRPC status 3: etcdserver: request is too large"
        ),
        "the first error is shown: {stderr}"
    );
    let fine = report(&bench(
        &cairn.endpoint(),
        "--clients 2 --total 10 put --val-size 100",
    ));
    assert_all_succeeded(&fine, 10);
}

#[test]
fn unusable_endpoints_fail_with_a_clear_message() {
    let port = common::free_port();
    for (endpoint, expected) in [
        (
            "https://127.0.0.1:2379".to_string(),
            "only http:// endpoints",
        ),
        ("not a url".to_string(), "not a URL"),
        (format!("http://127.0.0.1:{port}"), "cannot connect"),
    ] {
        let output = bench(&endpoint, "--total 1 put");
        assert!(!output.status.success(), "{endpoint} was accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{endpoint}: {stderr}");
    }
}
