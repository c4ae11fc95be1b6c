//! Membership changes under load, the etcd way: MemberAdd a learner to a loaded 3-member
//! cluster (sent to a follower, which forwards it), start it with
//! `--initial-cluster-state existing`, wait until it caught up, MemberPromote it, MemberRemove
//! the leader, which then stops by itself as etcd's does. Clients keep being served
//! throughout, the history stays linearizable and every remaining member ends with the same
//! state.

mod common;

use std::time::Duration;

use common::cluster::CairnCluster;
use common::workload::Workload;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learner_joins_is_promoted_and_an_old_member_leaves_under_load() {
    let mut cluster = CairnCluster::start(3).await;
    let endpoints: Vec<String> = cluster.members.iter().map(|m| m.endpoint()).collect();
    let workload = Workload::start(endpoints, 4, 11);
    workload.serving(100, "before any change").await;

    tracing::info!("MemberAdd --learner through a follower; the new member joins");
    let leader = cluster.leader(Duration::from_secs(10)).await;
    let follower = (leader + 1) % 3;
    let (learner, learner_id) = cluster.add_member(follower, true).await;
    let mut client = etcd_client::Client::connect([cluster.members[follower].endpoint()], None)
        .await
        .expect("connect");
    let listed = client.member_list().await.expect("MemberList");
    let entry = listed
        .members()
        .iter()
        .find(|m| m.id() == learner_id)
        .expect("learner listed");
    assert!(entry.is_learner(), "added as a learner: {entry:?}");
    workload.serving(100, "while the learner catches up").await;

    tracing::info!("the learner catches up, then MemberPromote makes it a voter");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (ours, theirs) = (cluster.status(learner).await, cluster.status(leader).await);
        if let (Some(ours), Some(theirs)) = (ours, theirs) {
            assert!(ours.is_learner, "a learner says so in Status");
            if ours.raft_applied_index + 10 >= theirs.raft_applied_index {
                break;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the learner did not catch up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    client
        .member_promote(learner_id)
        .await
        .expect("MemberPromote");
    let listed = client.member_list().await.expect("MemberList");
    let entry = listed
        .members()
        .iter()
        .find(|m| m.id() == learner_id)
        .expect("member listed");
    assert!(!entry.is_learner(), "promoted: {entry:?}");
    assert_eq!(
        entry.name(),
        format!("m{}", learner + 1),
        "the new member published its name"
    );
    workload.serving(100, "after the promotion").await;

    tracing::info!("MemberRemove the leader: it commits its own removal and stops itself");
    let leaving = cluster.leader(Duration::from_secs(10)).await;
    let staying = (leaving + 1) % 3;
    let mut client = etcd_client::Client::connect([cluster.members[staying].endpoint()], None)
        .await
        .expect("connect");
    let leaving_id = cluster
        .status(leaving)
        .await
        .expect("status")
        .header
        .expect("header")
        .member_id;
    client
        .member_remove(leaving_id)
        .await
        .expect("MemberRemove");
    let listed = client.member_list().await.expect("MemberList");
    assert!(
        listed.members().iter().all(|m| m.id() != leaving_id),
        "removed from the list"
    );
    assert_eq!(listed.members().len(), 3);
    let exited = cluster.wait_exit(leaving, Duration::from_secs(20)).await;
    assert!(
        exited.is_some_and(|status| status.success()),
        "a removed member stops itself cleanly: {exited:?}"
    );
    workload.serving(100, "after the removal").await;

    let (recorder, _) = workload.stop().await;
    cluster.converged_hash(Duration::from_secs(20)).await;
    let report =
        cairn_check::check(&recorder.history()).unwrap_or_else(|violation| panic!("{violation}"));
    assert!(
        report.acknowledged_writes > 200,
        "the workload made progress: {report:?}"
    );
}
