//! etcd's HTTP endpoints on the client port, driven by `curl` against a real `cairn serve`:
//! the JSON gateway (`/v3/...`, base64 keys and values, int64 as strings, etcd's error JSON),
//! a watch streamed over HTTP/1.1, `/health` and `/version` — with gRPC served on the same port
//! at the same time.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::time::Duration;

use cairn_proto::etcdserverpb::{PutRequest, RangeRequest};
use common::cluster::CairnCluster;
use common::http::{b64, curl, get, post, post_streaming, unb64, Answer};
use common::Cairn;
use serde_json::{json, Value};

/// A JSON int64 field: the gateway writes them as strings.
fn int(value: &Value) -> i64 {
    value
        .as_str()
        .unwrap_or_else(|| panic!("int64 as a string, got {value}"))
        .parse()
        .expect("decimal")
}

fn kv_pairs(range: &Value) -> Vec<(Vec<u8>, Vec<u8>)> {
    range["kvs"]
        .as_array()
        .map(|kvs| {
            kvs.iter()
                .map(|kv| {
                    let value = kv["value"].as_str().map(unb64).unwrap_or_default();
                    (unb64(kv["key"].as_str().expect("key")), value)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The next line of a streamed response, as JSON.
async fn next_line(lines: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> Value {
    let line = tokio::time::timeout(Duration::from_secs(10), lines.recv())
        .await
        .expect("a watch line within 10 s")
        .expect("stream open");
    serde_json::from_str(&line).unwrap_or_else(|error| panic!("{error}: {line}"))
}

/// POSTs `body` to `url`, asserting a 200 answer; its JSON.
async fn call(tool: &Path, url: &str, body: &Value) -> Value {
    ok(post(tool, url, body).await)
}

fn ok(answer: Answer) -> Value {
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer.json()
}

#[test]
fn base64_helpers_round_trip() {
    for text in [&b""[..], b"f", b"fo", b"foo", b"foob", b"\xff\x00\x10"] {
        assert_eq!(unb64(&b64(text)), text);
    }
    assert_eq!(b64(b"foo"), "Zm9v");
}

#[tokio::test]
async fn kv_round_trips_through_the_gateway_and_grpc_on_the_same_port() {
    let Some(tool) = common::http::curl_tool() else {
        return;
    };
    let cairn = Cairn::start(&[]).await;
    let url = |path: &str| format!("{}{path}", cairn.endpoint());
    let mut kv = cairn.kv().await;

    let put_revision = {
        tracing::info!("put over HTTP, bytes that are not UTF-8 included");
        let answer = call(
            &tool,
            &url("/v3/kv/put"),
            &json!({
                "key": b64(b"gw/a"), "value": b64(b"\x00\xffone")
            }),
        )
        .await;
        let header = &answer["header"];
        assert!(int(&header["revision"]) >= 2, "{answer}");
        for id in ["member_id", "cluster_id"] {
            let id: u64 = header[id]
                .as_str()
                .expect("uint64 as a string")
                .parse()
                .unwrap();
            assert_ne!(id, 0);
        }
        int(&header["revision"])
    };

    {
        tracing::info!("gRPC on the same port sees it, and writes one more");
        let range = kv
            .range(RangeRequest {
                key: b"gw/a".to_vec(),
                ..Default::default()
            })
            .await
            .expect("gRPC range on the HTTP port")
            .into_inner();
        assert_eq!(range.kvs[0].value, b"\x00\xffone");
        assert_eq!(range.kvs[0].mod_revision, put_revision);
        kv.put(PutRequest {
            key: b"gw/b".to_vec(),
            value: b"two".to_vec(),
            ..Default::default()
        })
        .await
        .expect("gRPC put");
    }

    {
        tracing::info!("prefix range over HTTP: both keys, count, proto field names");
        let range = call(
            &tool,
            &url("/v3/kv/range"),
            &json!({
                "key": b64(b"gw/"), "range_end": b64(b"gw0")
            }),
        )
        .await;
        assert_eq!(
            kv_pairs(&range),
            vec![
                (b"gw/a".to_vec(), b"\x00\xffone".to_vec()),
                (b"gw/b".to_vec(), b"two".to_vec())
            ]
        );
        assert_eq!(int(&range["count"]), 2);
        assert_eq!(int(&range["kvs"][0]["create_revision"]), put_revision);
        assert_eq!(int(&range["kvs"][0]["version"]), 1);
        tracing::info!("camelCase input is accepted too; keys_only leaves values out");
        let keys = call(
            &tool,
            &url("/v3/kv/range"),
            &json!({
                "key": b64(b"gw/"), "rangeEnd": b64(b"gw0"), "keysOnly": true
            }),
        )
        .await;
        assert_eq!(keys["kvs"].as_array().map(Vec::len), Some(2));
        assert!(keys["kvs"][0].get("value").is_none(), "{keys}");
    }

    {
        tracing::info!("txn: compare on version, success branch puts and reads");
        let txn = call(&tool,
            &url("/v3/kv/txn"),
            &json!({
                "compare": [{"key": b64(b"gw/a"), "target": "VERSION", "result": "EQUAL", "version": "1"}],
                "success": [
                    {"request_put": {"key": b64(b"gw/a"), "value": b64(b"three")}},
                    {"request_range": {"key": b64(b"gw/b")}}
                ],
                "failure": [{"request_delete_range": {"key": b64(b"gw/a")}}]
            })).await;
        assert_eq!(txn["succeeded"], json!(true), "{txn}");
        let read = &txn["responses"][1]["response_range"];
        assert_eq!(kv_pairs(read), vec![(b"gw/b".to_vec(), b"two".to_vec())]);
        tracing::info!("the same compare fails now: version is 2");
        let txn = call(&tool,
            &url("/v3/kv/txn"),
            &json!({
                "compare": [{"key": b64(b"gw/a"), "target": "VERSION", "result": "EQUAL", "version": "1"}],
                "success": [{"request_put": {"key": b64(b"gw/a"), "value": b64(b"never")}}]
            })).await;
        assert!(txn.get("succeeded").is_none(), "false is omitted: {txn}");
        let range = kv
            .range(RangeRequest {
                key: b"gw/a".to_vec(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(range.kvs[0].value, b"three");
    }

    {
        tracing::info!("deleterange with prev_kv returns what it deleted");
        let deleted = call(
            &tool,
            &url("/v3/kv/deleterange"),
            &json!({
                "key": b64(b"gw/"), "range_end": b64(b"gw0"), "prev_kv": true
            }),
        )
        .await;
        assert_eq!(int(&deleted["deleted"]), 2);
        assert_eq!(
            kv_pairs(&json!({"kvs": deleted["prev_kvs"]})),
            vec![
                (b"gw/a".to_vec(), b"three".to_vec()),
                (b"gw/b".to_vec(), b"two".to_vec())
            ]
        );
        let range = kv
            .range(RangeRequest {
                key: b"gw/".to_vec(),
                range_end: b"gw0".to_vec(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(range.kvs.is_empty());
    }
}

#[tokio::test]
async fn a_watch_over_curl_streams_later_puts_in_order() {
    let Some(tool) = common::http::curl_tool() else {
        return;
    };
    let cairn = Cairn::start(&[]).await;
    let mut kv = cairn.kv().await;
    let mut watch = post_streaming(
        &tool,
        &format!("{}/v3/watch", cairn.endpoint()),
        &json!({"create_request": {"key": b64(b"w/"), "range_end": b64(b"w0")}}),
    );
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    let stdout = watch.stdout.take().expect("piped");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if lines_tx.send(line).is_err() {
                return;
            }
        }
    });
    {
        tracing::info!("the first line confirms the watch");
        let created = next_line(&mut lines).await;
        assert_eq!(created["result"]["created"], json!(true), "{created}");
    }

    let mut revisions = Vec::new();
    {
        tracing::info!("five puts and a delete over gRPC, after the watch exists");
        for i in 0..5 {
            let put = kv
                .put(PutRequest {
                    key: format!("w/{i}").into_bytes(),
                    value: format!("v{i}").into_bytes(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            revisions.push(put.header.unwrap().revision);
        }
        kv.delete_range(cairn_proto::etcdserverpb::DeleteRangeRequest {
            key: b"w/0".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap();
    }

    {
        tracing::info!("every event arrives, in revision order, as {{\"result\": ...}} lines");
        let mut events = Vec::new();
        while events.len() < 6 {
            let line = next_line(&mut lines).await;
            for event in line["result"]["events"]
                .as_array()
                .cloned()
                .unwrap_or_default()
            {
                events.push(event);
            }
        }
        for (i, event) in events.iter().take(5).enumerate() {
            assert!(
                event.get("type").is_none(),
                "PUT is the zero value, omitted: {event}"
            );
            assert_eq!(
                unb64(event["kv"]["key"].as_str().unwrap()),
                format!("w/{i}").into_bytes()
            );
            assert_eq!(
                unb64(event["kv"]["value"].as_str().unwrap()),
                format!("v{i}").into_bytes()
            );
            assert_eq!(int(&event["kv"]["mod_revision"]), revisions[i]);
        }
        assert_eq!(events[5]["type"], json!("DELETE"));
        assert_eq!(int(&events[5]["kv"]["mod_revision"]), revisions[4] + 1);
    }
    let _ = watch.kill();
    let _ = watch.wait();
}

#[tokio::test]
async fn leases_grant_time_to_live_keepalive_and_revoke() {
    let Some(tool) = common::http::curl_tool() else {
        return;
    };
    let cairn = Cairn::start(&[]).await;
    let url = |path: &str| format!("{}{path}", cairn.endpoint());
    let grant = call(
        &tool,
        &url("/v3/lease/grant"),
        &json!({"TTL": 60, "ID": 7001}),
    )
    .await;
    assert_eq!(int(&grant["ID"]), 7001);
    assert_eq!(int(&grant["TTL"]), 60);
    call(
        &tool,
        &url("/v3/kv/put"),
        &json!({"key": b64(b"leased"), "value": b64(b"x"), "lease": "7001"}),
    )
    .await;

    for path in ["/v3/lease/timetolive", "/v3/kv/lease/timetolive"] {
        let ttl = call(&tool, &url(path), &json!({"ID": "7001", "keys": true})).await;
        assert_eq!(int(&ttl["grantedTTL"]), 60, "{path}: {ttl}");
        let remaining = int(&ttl["TTL"]);
        assert!((55..=60).contains(&remaining), "{path}: {ttl}");
        assert_eq!(ttl["keys"], json!([b64(b"leased")]));
    }
    let keepalive = curl(
        &tool,
        &[
            "-X",
            "POST",
            &url("/v3/lease/keepalive"),
            "-d",
            r#"{"ID":"7001"}"#,
        ],
    )
    .await;
    assert_eq!(keepalive.status, 200);
    let line: Value =
        serde_json::from_str(keepalive.body.lines().next().expect("one result")).unwrap();
    assert_eq!(int(&line["result"]["TTL"]), 60, "{line}");
    let leases = call(&tool, &url("/v3/lease/leases"), &json!({})).await;
    assert_eq!(leases["leases"], json!([{"ID": "7001"}]));

    call(&tool, &url("/v3/lease/revoke"), &json!({"ID": "7001"})).await;
    let ttl = call(&tool, &url("/v3/lease/timetolive"), &json!({"ID": "7001"})).await;
    assert_eq!(int(&ttl["TTL"]), -1, "an unknown lease has TTL -1: {ttl}");
    let range = call(&tool, &url("/v3/kv/range"), &json!({"key": b64(b"leased")})).await;
    assert!(
        range.get("kvs").is_none(),
        "the revoke deleted the key: {range}"
    );
}

#[tokio::test]
async fn bad_input_gets_etcds_error_json_and_status() {
    let Some(tool) = common::http::curl_tool() else {
        return;
    };
    let cairn = Cairn::start(&["--max-request-bytes", "4096"]).await;
    let url = |path: &str| format!("{}{path}", cairn.endpoint());
    let expect_error = |answer: Answer, status: u16, code: i64, message: &str| {
        assert_eq!(answer.status, status, "{}", answer.body);
        let body = answer.json();
        assert_eq!(body["code"], json!(code), "{body}");
        assert_eq!(body["error"], json!(message), "{body}");
        assert_eq!(body["message"], json!(message), "{body}");
    };

    tracing::info!("a value above --max-request-bytes");
    let big = post(
        &tool,
        &url("/v3/kv/put"),
        &json!({"key": b64(b"k"), "value": b64(&[7u8; 8192])}),
    )
    .await;
    expect_error(big, 400, 3, "etcdserver: request is too large");
    tracing::info!("an empty key");
    let empty = post(&tool, &url("/v3/kv/put"), &json!({"value": b64(b"v")})).await;
    expect_error(empty, 400, 3, "etcdserver: key is not provided");
    tracing::info!("a lease that does not exist: NotFound → 404");
    let lease = post(&tool, &url("/v3/lease/revoke"), &json!({"ID": "12345"})).await;
    expect_error(lease, 404, 5, "etcdserver: requested lease not found");
    tracing::info!("not JSON at all; a field of the wrong type");
    let garbage = curl(
        &tool,
        &["-X", "POST", &url("/v3/kv/put"), "-d", "{not json"],
    )
    .await;
    assert_eq!(garbage.status, 400, "{}", garbage.body);
    assert_eq!(garbage.json()["code"], json!(3));
    let mistyped = post(
        &tool,
        &url("/v3/kv/range"),
        &json!({"key": b64(b"k"), "limit": "x"}),
    )
    .await;
    assert_eq!(mistyped.status, 400, "{}", mistyped.body);
    assert_eq!(mistyped.json()["code"], json!(3));
    tracing::info!("unknown fields are dropped, as etcd 3.5's gateway (grpc-gateway v1) does");
    let unknown = post(
        &tool,
        &url("/v3/kv/range"),
        &json!({"key": b64(b"k"), "nope": 1}),
    )
    .await;
    assert_eq!(unknown.status, 200, "{}", unknown.body);
    tracing::info!("the member still serves");
    call(
        &tool,
        &url("/v3/kv/put"),
        &json!({"key": b64(b"k"), "value": b64(b"v")}),
    )
    .await;
}

/// `/version` matches what Status reports.
#[tokio::test]
async fn version_reports_the_etcd_version_status_reports() {
    let Some(tool) = common::http::curl_tool() else {
        return;
    };
    let cairn = Cairn::start(&[]).await;
    let version = ok(get(&tool, &format!("{}/version", cairn.endpoint())).await);
    let mut client = cairn.client().await;
    let status = client.status().await.unwrap();
    assert_eq!(version["etcdserver"], json!(status.version()));
    assert_eq!(version["etcdcluster"], json!("3.5.0"));
    let status_json = call(
        &tool,
        &format!("{}/v3/maintenance/status", cairn.endpoint()),
        &json!({}),
    )
    .await;
    assert_eq!(status_json["version"], json!(status.version()));
    let members = call(
        &tool,
        &format!("{}/v3/cluster/member/list", cairn.endpoint()),
        &json!({}),
    )
    .await;
    assert_eq!(
        members["members"].as_array().map(Vec::len),
        Some(1),
        "{members}"
    );
}

async fn health(tool: &Path, endpoint: &str, query: &str) -> (u16, Value) {
    let answer = get(tool, &format!("{endpoint}/health{query}")).await;
    let body = answer.json();
    (answer.status, body)
}

#[tokio::test]
async fn health_is_ok_on_a_serving_member_and_503_under_nospace() {
    let Some(tool) = common::http::curl_tool() else {
        return;
    };
    let cairn = Cairn::start(&["--quota-backend-bytes", "200000"]).await;
    assert_eq!(
        health(&tool, &cairn.endpoint(), "").await,
        (200, json!({"health": "true", "reason": ""}))
    );

    tracing::info!("fill the quota until NOSPACE refuses a write");
    let mut kv = cairn.kv().await;
    let mut accepted = 0;
    while kv
        .put(PutRequest {
            key: format!("q/{accepted}").into_bytes(),
            value: vec![b'x'; 10_000],
            ..Default::default()
        })
        .await
        .is_ok()
    {
        accepted += 1;
        assert!(accepted < 100, "the quota never triggered");
    }
    assert_eq!(
        health(&tool, &cairn.endpoint(), "").await,
        (503, json!({"health": "false", "reason": "ALARM NOSPACE"}))
    );
    tracing::info!("?exclude=NOSPACE ignores that alarm, as etcd's does");
    assert_eq!(
        health(&tool, &cairn.endpoint(), "?exclude=NOSPACE").await.0,
        200
    );
}

#[tokio::test]
async fn health_is_503_without_a_leader_and_serializable_still_answers() {
    let Some(tool) = common::http::curl_tool() else {
        return;
    };
    let mut cluster = CairnCluster::start(3).await;
    let leader = cluster.leader(Duration::from_secs(20)).await;
    let survivor = (leader + 1) % 3;
    let endpoint = cluster.members[survivor].endpoint();
    let before = health(&tool, &endpoint, "").await;
    assert_eq!(before.0, 200, "{}", before.1);

    tracing::info!("stop the two other members: no quorum, no leader");
    for index in 0..3 {
        if index != survivor {
            cluster.kill9(index);
        }
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let last = loop {
        let answer = health(&tool, &endpoint, "").await;
        if answer.0 == 503 {
            break answer;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still healthy: {}",
            answer.1
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(last.1["health"], json!("false"));
    let reason = last.1["reason"].as_str().unwrap_or_default().to_string();
    assert!(
        reason == "RAFT NO LEADER" || reason.starts_with("RANGE ERROR:"),
        "{reason}"
    );
    tracing::info!("a serializable check reads the local store and passes");
    assert_eq!(
        health(&tool, &endpoint, "?serializable=true").await,
        (200, json!({"health": "true", "reason": ""}))
    );
}
