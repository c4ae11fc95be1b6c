//! `/metrics` on a real `cairn serve`: scraped with `curl`, parsed by a small reader of the
//! Prometheus text format below, checked for etcd's names and types, and watched moving under
//! a known load.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use cairn_proto::etcdserverpb::{PutRequest, RangeRequest};
use common::cluster::CairnCluster;
use common::http::{curl_tool, get};
use common::Cairn;

/// One scrape: metric family types and every sample by name and sorted labels.
#[derive(Debug, Default)]
struct Scrape {
    types: BTreeMap<String, String>,
    samples: BTreeMap<(String, Vec<(String, String)>), f64>,
}

impl Scrape {
    /// Parses the text exposition format (0.0.4): `# TYPE` lines, `name{labels} value` lines.
    fn parse(text: &str) -> Scrape {
        let mut scrape = Scrape::default();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
                let previous = scrape.types.insert(name.to_string(), kind.to_string());
                assert!(previous.is_none(), "{name} typed twice");
                continue;
            }
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect("sample value");
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("bad value: {line}"));
            let (name, labels) = match series.split_once('{') {
                None => (series.to_string(), Vec::new()),
                Some((name, labels)) => {
                    let labels = labels.strip_suffix('}').expect("closing brace");
                    let mut parsed: Vec<(String, String)> = labels
                        .split(',')
                        .map(|pair| {
                            let (key, value) = pair.split_once('=').expect("label=value");
                            let value = value.strip_prefix('"').and_then(|v| v.strip_suffix('"'));
                            (key.to_string(), value.expect("quoted").to_string())
                        })
                        .collect();
                    parsed.sort();
                    (name.to_string(), parsed)
                }
            };
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .filter(|family| scrape.types.get(*family).map(String::as_str) == Some("histogram"))
                .unwrap_or(&name);
            assert!(
                scrape.types.contains_key(family),
                "sample before its TYPE: {line}"
            );
            scrape.samples.insert((name.clone(), labels), value);
        }
        scrape
    }

    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let mut labels: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        labels.sort();
        *self
            .samples
            .get(&(name.to_string(), labels.clone()))
            .unwrap_or_else(|| panic!("no sample {name}{labels:?}"))
    }

    fn plain(&self, name: &str) -> f64 {
        self.value(name, &[])
    }

    fn put_calls(&self, series: &str, code: Option<&str>) -> f64 {
        let mut labels = vec![
            ("grpc_method", "Put"),
            ("grpc_service", "etcdserverpb.KV"),
            ("grpc_type", "unary"),
        ];
        if let Some(code) = code {
            labels.push(("grpc_code", code));
        }
        self.value(series, &labels)
    }
}

async fn scrape(tool: &std::path::Path, endpoint: &str) -> Scrape {
    let answer = get(tool, &format!("{endpoint}/metrics")).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    Scrape::parse(&answer.body)
}

#[tokio::test]
async fn every_listed_metric_is_exposed_with_etcds_type() {
    let Some(tool) = curl_tool() else { return };
    let cairn = Cairn::start(&[]).await;
    cairn
        .kv()
        .await
        .put(PutRequest {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap();
    let scrape = scrape(&tool, &cairn.endpoint()).await;
    let expected = [
        ("etcd_server_has_leader", "gauge"),
        ("etcd_server_is_leader", "gauge"),
        ("etcd_server_leader_changes_seen_total", "counter"),
        ("etcd_server_proposals_committed_total", "gauge"),
        ("etcd_server_proposals_applied_total", "gauge"),
        ("etcd_server_proposals_pending", "gauge"),
        ("etcd_server_proposals_failed_total", "counter"),
        ("etcd_disk_wal_fsync_duration_seconds", "histogram"),
        ("etcd_disk_backend_commit_duration_seconds", "histogram"),
        (
            "etcd_debugging_snap_save_total_duration_seconds",
            "histogram",
        ),
        ("etcd_network_snapshot_receive_success", "counter"),
        ("etcd_mvcc_db_total_size_in_bytes", "gauge"),
        ("etcd_debugging_mvcc_keys_total", "gauge"),
        ("etcd_server_version", "gauge"),
        ("etcd_network_client_grpc_received_bytes_total", "counter"),
        ("etcd_network_client_grpc_sent_bytes_total", "counter"),
        ("grpc_server_started_total", "counter"),
        ("grpc_server_handled_total", "counter"),
        ("process_resident_memory_bytes", "gauge"),
        ("process_start_time_seconds", "gauge"),
    ];
    for (name, kind) in expected {
        assert_eq!(
            scrape.types.get(name).map(String::as_str),
            Some(kind),
            "{name}"
        );
    }
    assert_eq!(scrape.plain("etcd_server_has_leader"), 1.0);
    assert_eq!(scrape.plain("etcd_server_is_leader"), 1.0);
    assert!(scrape.plain("etcd_server_leader_changes_seen_total") >= 1.0);
    assert_eq!(
        scrape.value("etcd_server_version", &[("server_version", "3.5.17")]),
        1.0
    );
    assert!(scrape.plain("etcd_mvcc_db_total_size_in_bytes") > 0.0);
    assert_eq!(scrape.plain("etcd_network_snapshot_receive_success"), 0.0);
    assert!(scrape.plain("process_resident_memory_bytes") > 1e6);
    let started = scrape.plain("process_start_time_seconds");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        started <= now + 1.0 && started > now - 600.0,
        "{started} vs {now}"
    );
    tracing::info!("histogram buckets are etcd's: 1 ms doubling to 8.192 s, then +Inf");
    for histogram in [
        "etcd_disk_wal_fsync_duration_seconds",
        "etcd_disk_backend_commit_duration_seconds",
    ] {
        let bucket = format!("{histogram}_bucket");
        let bounds: Vec<String> = scrape
            .samples
            .keys()
            .filter(|(name, _)| *name == bucket)
            .map(|(_, labels)| labels[0].1.clone())
            .collect();
        assert_eq!(bounds.len(), 15, "{histogram}: {bounds:?}");
        assert!(bounds.contains(&"0.001".to_string()) && bounds.contains(&"8.192".to_string()));
        let count = scrape.plain(&format!("{histogram}_count"));
        assert_eq!(scrape.value(&bucket, &[("le", "+Inf")]), count);
        assert!(count >= 1.0, "{histogram} observed the put");
    }
}

#[tokio::test]
async fn counters_move_under_a_known_load() {
    let Some(tool) = curl_tool() else { return };
    let cairn = Cairn::start(&[]).await;
    let mut kv = cairn.kv().await;
    const PUTS: usize = 50;
    let before = scrape(&tool, &cairn.endpoint()).await;

    {
        tracing::info!("{PUTS} sequential puts (one raft entry each), and one refused put");
        for i in 0..PUTS {
            kv.put(PutRequest {
                key: format!("m/{i}").into_bytes(),
                value: vec![b'v'; 100],
                ..Default::default()
            })
            .await
            .unwrap();
        }
        let refused = kv.put(PutRequest::default()).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        kv.range(RangeRequest {
            key: b"m/".to_vec(),
            range_end: b"m0".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap();
    }

    let after = scrape(&tool, &cairn.endpoint()).await;
    let delta = |name: &str| after.plain(name) - before.plain(name);
    let n = PUTS as f64;
    assert!(delta("etcd_server_proposals_committed_total") >= n);
    assert!(delta("etcd_server_proposals_applied_total") >= n);
    assert!(
        after.plain("etcd_server_proposals_committed_total")
            >= after.plain("etcd_server_proposals_applied_total")
    );
    assert_eq!(after.plain("etcd_server_proposals_pending"), 0.0);
    assert_eq!(after.plain("etcd_server_proposals_failed_total"), 0.0);
    assert_eq!(
        after.put_calls("grpc_server_started_total", None)
            - before.put_calls("grpc_server_started_total", None),
        n + 1.0
    );
    assert_eq!(after.put_calls("grpc_server_handled_total", Some("OK")), n);
    assert_eq!(
        after.put_calls("grpc_server_handled_total", Some("InvalidArgument")),
        1.0
    );
    assert!(delta("etcd_disk_wal_fsync_duration_seconds_count") >= n);
    assert!(delta("etcd_disk_wal_fsync_duration_seconds_sum") > 0.0);
    assert!(delta("etcd_disk_backend_commit_duration_seconds_count") >= n);
    assert_eq!(after.plain("etcd_debugging_mvcc_keys_total"), n);
    assert!(delta("etcd_mvcc_db_total_size_in_bytes") >= n * 100.0);
    assert!(delta("etcd_network_client_grpc_received_bytes_total") >= n * 100.0);
    assert!(
        delta("etcd_network_client_grpc_sent_bytes_total") > n * 100.0,
        "the range sent the values back"
    );
}

#[tokio::test]
async fn followers_report_a_leader_that_is_not_them() {
    let Some(tool) = curl_tool() else { return };
    let cluster = CairnCluster::start(3).await;
    let leader = cluster.leader(Duration::from_secs(20)).await;
    for (index, member) in cluster.members.iter().enumerate() {
        let scrape = scrape(&tool, &member.endpoint()).await;
        assert_eq!(
            scrape.plain("etcd_server_has_leader"),
            1.0,
            "member {index}"
        );
        let is_leader = if index == leader { 1.0 } else { 0.0 };
        assert_eq!(
            scrape.plain("etcd_server_is_leader"),
            is_leader,
            "member {index}"
        );
        assert!(scrape.plain("etcd_server_leader_changes_seen_total") >= 1.0);
    }
}
