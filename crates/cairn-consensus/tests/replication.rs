//! Replication over the simulated network without faults: a cluster forms, any member takes
//! writes, every member applies the same history.

mod common;

use std::time::Duration;

use cairn_proto::cairnpb::internal_request::Request;
use cairn_proto::etcdserverpb::{PutRequest, RangeRequest};
use common::{no_faults, SimCluster};

fn put(key: &str, value: &str) -> Request {
    Request::Put(PutRequest {
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
        ..Default::default()
    })
}

#[tokio::test(start_paused = true)]
async fn three_members_agree_on_writes_sent_to_any_of_them() {
    let cluster = SimCluster::start(3, 1, no_faults()).await;
    cluster
        .wait_converged(Duration::from_secs(10))
        .await
        .expect("a leader is elected");

    tracing::info!("each member proposes: followers forward, results come from their own apply");
    let mut revisions = Vec::new();
    for (round, (id, replica)) in cluster.up().into_iter().enumerate() {
        let response = replica
            .propose(
                put(&format!("k{round}"), &format!("from {id}")),
                None,
                0,
                1 << 20,
            )
            .await
            .unwrap_or_else(|error| panic!("put through member {id}: {error}"));
        let cairn_mvcc::ApplyResponse::Put(put) = response else {
            panic!("not a put response")
        };
        revisions.push(put.header.expect("header").revision);
    }
    assert_eq!(revisions, vec![2, 3, 4], "one revision per write, in order");

    tracing::info!("a linearizable read on every member sees all three writes");
    for (id, replica) in cluster.up() {
        replica
            .read_index()
            .await
            .unwrap_or_else(|error| panic!("read index on {id}: {error}"));
        let range = RangeRequest {
            key: b"k".to_vec(),
            range_end: b"l".to_vec(),
            ..Default::default()
        };
        let response = replica.store().range(&range).expect("range");
        assert_eq!(response.count, 3, "member {id} sees every write");
        assert_eq!(response.header.expect("header").revision, 4);
    }
    cluster.stop().await;
}

/// A stopped member leaves nothing running behind it: every task a replica spawns ends with
/// its raft. (Two did not: one retried CURP-HO recovery every 100 ms forever after its leader
/// stopped, one waited on a channel it kept open itself; over 2,000 simulated clusters they
/// made the simulation seven times slower.)
#[tokio::test(start_paused = true)]
async fn stopped_members_leave_no_task_behind() {
    let runtime = tokio::runtime::Handle::current().metrics();
    let before = runtime.num_alive_tasks();
    let cluster = SimCluster::start(3, 2, no_faults()).await;
    cluster
        .wait_converged(Duration::from_secs(10))
        .await
        .expect("a leader is elected");
    let (_, replica) = cluster.up().into_iter().next().expect("a member");
    replica
        .propose(put("k", "v"), None, 0, 1 << 20)
        .await
        .expect("put");
    drop(replica);
    assert!(
        runtime.num_alive_tasks() > before,
        "a running cluster has tasks"
    );
    cluster.stop().await;
    // Virtual time: a minute passes at once, and every retry loop would still be alive.
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(
        runtime.num_alive_tasks(),
        before,
        "tasks still alive a minute after every member stopped"
    );
}

/// A steady group of clients, each proposing again once its answer reached it, shares one raft
/// entry per round: the leader's batcher waits for the clients the last batch answered before
/// it cuts the next. (Cut at once, each batch took whoever was back first: the 200 proposals
/// below took 155 entries, most of them a commit round of their own.)
#[tokio::test(start_paused = true)]
async fn a_steady_group_of_clients_shares_one_entry_per_round() {
    const CLIENTS: usize = 20;
    const ROUNDS: usize = 10;
    let cluster = SimCluster::start(3, 3, no_faults()).await;
    cluster
        .wait_converged(Duration::from_secs(10))
        .await
        .expect("a leader is elected");
    let leader = cluster
        .up()
        .into_iter()
        .map(|(_, replica)| replica)
        .find(|replica| replica.is_leader())
        .expect("a leader");
    let last_log_index = |replica: &cairn_consensus::Replica| {
        replica
            .metrics()
            .borrow()
            .last_log_index
            .expect("a non-empty log")
    };
    let before = last_log_index(&leader);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let leader = leader.clone();
            tokio::spawn(async move {
                for round in 0..ROUNDS {
                    let key = format!("c{client}");
                    leader
                        .propose(put(&key, &round.to_string()), None, 0, 1 << 20)
                        .await
                        .unwrap_or_else(|error| panic!("client {client} round {round}: {error}"));
                    // Each client's answer and next request take their own time on the wire
                    // (less than the timer's millisecond: passes of the scheduler).
                    for _ in 0..client * 3 {
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect();
    for client in clients {
        client.await.expect("client task");
    }
    let entries = last_log_index(&leader) - before;
    // The first round may be cut before every client has proposed, once.
    assert!(
        entries <= ROUNDS as u64 + 1,
        "{CLIENTS} clients × {ROUNDS} rounds took {entries} entries"
    );
    let revision = *leader.revisions().borrow();
    assert_eq!(
        revision,
        1 + (CLIENTS * ROUNDS) as i64,
        "every proposal applied once"
    );
    cluster.stop().await;
}
