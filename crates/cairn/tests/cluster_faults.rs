//! A 3-member cluster of real `cairn serve` processes under concurrent load while the leader
//! is SIGKILLed, a member is paused (SIGSTOP/SIGCONT), a member is cut off by the peer proxy
//! and members restart. Afterwards: every member holds the same history (`HashKV` equal at
//! the same revision), every acknowledged write is there, and the recorded client history is
//! linearizable (`cairn-check`).

mod common;

use std::time::Duration;

use cairn_check::{Call, Outcome};
use cairn_proto::etcdserverpb::RangeRequest;
use common::cluster::CairnCluster;
use common::workload::Workload;

const LEADER_WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_kill_pause_and_cut_off_lose_no_acknowledged_write() {
    let mut cluster = CairnCluster::start(3).await;
    let endpoints: Vec<String> = cluster.members.iter().map(|m| m.endpoint()).collect();
    let workload = Workload::start(endpoints, 6, 7);
    workload.serving(50, "before any fault").await;

    tracing::info!("SIGKILL the leader; the others elect a new one and keep serving");
    let leader = cluster.leader(LEADER_WAIT).await;
    cluster.kill9(leader);
    workload.serving(50, "after the leader was killed").await;
    cluster.restart(leader).await;
    workload.serving(50, "after the old leader restarted").await;

    tracing::info!("SIGSTOP a follower for two election timeouts, then SIGCONT");
    let leader = cluster.leader(LEADER_WAIT).await;
    let follower = (leader + 1) % 3;
    cluster.pause(follower);
    workload.serving(50, "with a paused follower").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.resume(follower);

    tracing::info!("cut the leader off from its peers; the majority elects another");
    let leader = cluster.leader(LEADER_WAIT).await;
    cluster.cut_off(leader);
    workload.serving(50, "with the old leader cut off").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.heal();
    workload.serving(50, "after healing").await;

    tracing::info!("SIGKILL a follower and restart it");
    let leader = cluster.leader(LEADER_WAIT).await;
    let follower = (leader + 2) % 3;
    cluster.kill9(follower);
    workload.serving(30, "with a follower down").await;
    cluster.restart(follower).await;
    workload.serving(30, "after the follower restarted").await;

    let (recorder, calls) = workload.stop().await;
    let history = recorder.history();
    let revision = cluster.converged_hash(Duration::from_secs(20)).await;

    tracing::info!("every acknowledged put is on every member at its revision");
    for op in &history.operations {
        let (Call::Put { key, value }, Outcome::Put { revision: put_at }) = (&op.call, &op.outcome)
        else {
            continue;
        };
        for index in cluster.running() {
            let mut kv = common::cluster_kv(&cluster.members[index].endpoint()).await;
            let request = RangeRequest {
                key: key.clone(),
                revision: *put_at,
                serializable: true,
                ..Default::default()
            };
            let found = kv
                .range(request)
                .await
                .expect("range at revision")
                .into_inner();
            let kv = found
                .kvs
                .first()
                .unwrap_or_else(|| panic!("member {index} lost the put at {put_at}"));
            assert_eq!(&kv.value, value, "member {index} at revision {put_at}");
            assert_eq!(kv.mod_revision, *put_at);
        }
    }

    let report = cairn_check::check(&history).unwrap_or_else(|violation| panic!("{violation}"));
    eprintln!("{calls} calls, converged at revision {revision}: {report:?}");
    assert!(
        report.acknowledged_writes > 200,
        "the workload made progress: {report:?}"
    );
}
