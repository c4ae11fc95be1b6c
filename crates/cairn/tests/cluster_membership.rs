//! Membership changes under load, the etcd way: MemberAdd a learner to a loaded 3-member
//! cluster (sent to a follower, which forwards it), start it with
//! `--initial-cluster-state existing`, wait until it caught up, MemberPromote it, MemberRemove
//! the leader, which then stops by itself as etcd's does. Clients keep being served
//! throughout, the history stays linearizable and every remaining member ends with the same
//! state. MoveLeader (etcdctl move-leader) hands leadership to the member it names.

mod common;

use std::time::Duration;

use cairn_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use cairn_proto::etcdserverpb::{MoveLeaderRequest, PutRequest};
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
    let mut client = cluster.etcd_client(follower).await;
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
    let mut client = cluster.etcd_client(staying).await;
    let leaving_id = cluster.member_id(leaving).await;
    remove_member(&mut client, leaving_id).await;
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

/// MemberRemove as a careful user does it: a removal of the leader may time out when
/// leadership moves between the joint and the final configuration (the next leader finishes
/// it), so an error counts once the member is gone from the list, and is retried otherwise.
async fn remove_member(client: &mut etcd_client::Client, id: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let error = match client.member_remove(id).await {
            Ok(_) => return,
            Err(error) => error,
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        if let Ok(listed) = client.member_list().await {
            if listed.members().iter().all(|m| m.id() != id) {
                return;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "MemberRemove never took effect: {error}"
        );
    }
}

/// A member cut off while it is removed never receives its removal: the leader stops
/// replicating to it once the final configuration commits. Once the links heal, its peers
/// refuse its campaigns as those of a removed member, and it stops itself instead of
/// campaigning forever (etcd's peers answer it the same way).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_removed_while_cut_off_stops_once_it_hears_from_its_peers() {
    let mut cluster = CairnCluster::start(3).await;
    let leader = cluster.leader(Duration::from_secs(10)).await;
    let leaving = (leader + 1) % 3;
    let leaving_id = cluster.member_id(leaving).await;
    cluster.cut_off(leaving);
    let mut client = cluster.etcd_client(leader).await;
    client
        .member_remove(leaving_id)
        .await
        .expect("the two connected members commit the removal");
    // Cut off, it learns nothing: it keeps running (and campaigning, unheard).
    let early = cluster.wait_exit(leaving, Duration::from_secs(3)).await;
    assert!(
        early.is_none(),
        "stopped before hearing anything: {early:?}"
    );
    cluster.heal();
    let exited = cluster.wait_exit(leaving, Duration::from_secs(20)).await;
    assert!(
        exited.is_some_and(|status| status.success()),
        "the removed member stops itself cleanly: {exited:?}"
    );
    let listed = client.member_list().await.expect("MemberList");
    assert_eq!(listed.members().len(), 2, "the removal stands");
    put_through(
        &cluster.members[leader].endpoint(),
        b"after-removal",
        "the remaining members serve writes",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn move_leader_hands_leadership_to_the_named_member() {
    let Some(tool) = common::require_tool("etcdctl") else {
        return;
    };
    let cluster = CairnCluster::start(3).await;
    let leader = cluster.leader(Duration::from_secs(10)).await;
    let target = (leader + 1) % 3;
    let target_id = cluster.member_id(target).await;
    let endpoints: Vec<String> = cluster.members.iter().map(|m| m.endpoint()).collect();
    let all = endpoints.join(",");

    // A follower refuses: only the leader hands over (etcdctl finds it among the endpoints).
    let mut follower = MaintenanceClient::new(common::channel(&endpoints[target]).await);
    let refused = follower
        .move_leader(MoveLeaderRequest { target_id })
        .await
        .expect_err("a follower cannot move leadership");
    assert_eq!(refused.message(), "etcdserver: not leader");
    let mut at_leader = MaintenanceClient::new(common::channel(&endpoints[leader]).await);
    let unknown = at_leader
        .move_leader(MoveLeaderRequest { target_id: 0x1234 })
        .await
        .expect_err("no such member");
    assert_eq!(unknown.message(), "etcdserver: bad leader transferee");

    let hex = format!("{target_id:x}");
    let (tool_for_thread, all_for_thread) = (tool.clone(), all.clone());
    // etcdctl blocks its thread: off the runtime that drives the peer proxies.
    let out = tokio::task::spawn_blocking(move || {
        common::etcdctl_ok(
            &tool_for_thread,
            &all_for_thread,
            &["move-leader", &hex],
            None,
        )
    })
    .await
    .expect("etcdctl ran");
    assert!(out.contains("Leadership transferred"), "{out}");
    let now = cluster.leader(Duration::from_secs(10)).await;
    assert_eq!(now, target, "the named member leads");
    let reported = cluster.status(leader).await.expect("status");
    assert_eq!(
        reported.leader, target_id,
        "the old leader follows the new one"
    );
    put_through(
        &endpoints[leader],
        b"after-move",
        "writes go on, through the old leader too",
    )
    .await;
}

/// One put of `key` through the member at `endpoint`; panics with `expectation` if it fails.
async fn put_through(endpoint: &str, key: &[u8], expectation: &str) {
    let mut kv = common::cluster_kv(endpoint).await;
    kv.put(PutRequest {
        key: key.to_vec(),
        value: b"v".to_vec(),
        ..Default::default()
    })
    .await
    .expect(expectation);
}
