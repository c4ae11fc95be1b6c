//! A member that falls behind the leader's purged log catches up from a snapshot: a follower
//! is SIGKILLed, the others take enough writes to snapshot and purge their logs past it
//! (`--snapshot-count 100`), and the restarted follower gets the leader's snapshot file over
//! the peer transport. It must end with the same state (`HashKV`) and every acknowledged write
//! at its revision, and count the install in `etcd_network_snapshot_receive_success`.

mod common;

use std::time::Duration;

use cairn_proto::etcdserverpb::{PutRequest, RangeRequest};
use common::cluster::CairnCluster;
use common::http::{curl, curl_tool};

const LEADER_WAIT: Duration = Duration::from_secs(10);
/// Entries between snapshots; openraft then keeps at most this many entries behind one.
const SNAPSHOT_COUNT: &str = "100";
/// Sequential puts while the follower is down: each is its own log entry, so this is several
/// snapshot intervals past the follower.
const PUTS_WHILE_DOWN: usize = 600;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_behind_the_purged_log_catches_up_from_a_snapshot() {
    let Some(curl_path) = curl_tool() else { return };
    let mut cluster = CairnCluster::start_with(3, &["--snapshot-count", SNAPSHOT_COUNT]).await;
    let leader = cluster.leader(LEADER_WAIT).await;
    let behind = (leader + 1) % 3;
    cluster.kill9(behind);

    let mut kv = common::cluster_kv(&cluster.members[leader].endpoint()).await;
    let mut acknowledged = Vec::with_capacity(PUTS_WHILE_DOWN);
    for i in 0..PUTS_WHILE_DOWN {
        let (key, value) = (format!("key-{i:04}"), format!("value-{i}"));
        let put = kv
            .put(PutRequest {
                key: key.clone().into_bytes(),
                value: value.clone().into_bytes(),
                ..Default::default()
            })
            .await
            .expect("a put with two of three members up")
            .into_inner();
        let revision = put.header.expect("response header").revision;
        acknowledged.push((key, value, revision));
    }

    cluster.restart(behind).await;
    cluster.converged_hash(Duration::from_secs(30)).await;

    let endpoint = cluster.members[behind].endpoint();
    let metrics = curl(&curl_path, &[&format!("{endpoint}/metrics")]).await;
    assert_eq!(metrics.status, 200, "{}", metrics.body);
    let received = metrics
        .body
        .lines()
        .find_map(|line| line.strip_prefix("etcd_network_snapshot_receive_success "))
        .map(|value| value.trim().parse::<f64>().expect("a number"))
        .expect("etcd_network_snapshot_receive_success is exposed");
    assert!(
        received >= 1.0,
        "the member caught up without a snapshot (log not purged?)"
    );

    let mut kv = common::cluster_kv(&endpoint).await;
    for (key, value, revision) in acknowledged {
        let found = kv
            .range(RangeRequest {
                key: key.clone().into_bytes(),
                serializable: true,
                ..Default::default()
            })
            .await
            .expect("serializable range on the member that caught up")
            .into_inner();
        let [kv] = found.kvs.as_slice() else {
            panic!("{key} missing after catching up: {found:?}");
        };
        assert_eq!(kv.value, value.as_bytes(), "{key}");
        assert_eq!(kv.mod_revision, revision, "{key}");
    }
}
