//! Restarts reproduce the exact state: same keys, same revisions, same compaction, same
//! leases with their remaining TTL — after a graceful stop and after SIGKILL.

mod common;

use std::time::Duration;

use cairn_proto::etcdserverpb::lease_client::LeaseClient;
use cairn_proto::etcdserverpb::{
    CompactionRequest, DeleteRangeRequest, LeaseGrantRequest, LeaseTimeToLiveRequest, PutRequest,
    RangeRequest, RangeResponse,
};
use common::{wait_until, Cairn};

async fn dump(cairn: &Cairn) -> (RangeResponse, RangeResponse) {
    let mut kv = cairn.kv().await;
    let all = RangeRequest {
        key: vec![0],
        range_end: vec![0],
        ..Default::default()
    };
    let mut now = kv.range(all.clone()).await.unwrap().into_inner();
    let mut old = kv
        .range(RangeRequest { revision: 8, ..all })
        .await
        .unwrap()
        .into_inner();
    // A restarted member wins a new election, as etcd's does: the raft term moves on.
    for response in [&mut now, &mut old] {
        if let Some(header) = response.header.as_mut() {
            header.raft_term = 0;
        }
    }
    (now, old)
}

async fn ttl(cairn: &Cairn, id: i64) -> i64 {
    let mut leases = LeaseClient::new(common::channel(&cairn.endpoint()).await);
    let request = LeaseTimeToLiveRequest { id, keys: false };
    leases
        .lease_time_to_live(request)
        .await
        .unwrap()
        .into_inner()
        .ttl
}

#[tokio::test]
async fn restart_reproduces_keys_revisions_compaction_and_leases() {
    let dir = tempfile::tempdir().unwrap();
    let mut cairn = Cairn::start_in(&dir.path().join("data"), &[]).await;
    let mut kv = cairn.kv().await;
    let mut leases = LeaseClient::new(common::channel(&cairn.endpoint()).await);

    // Phase 1: history with overwrites, deletes, a compaction, and two leases.
    let long = leases
        .lease_grant(LeaseGrantRequest { ttl: 120, id: 0 })
        .await
        .unwrap()
        .into_inner()
        .id;
    let short = leases
        .lease_grant(LeaseGrantRequest { ttl: 8, id: 7 })
        .await
        .unwrap()
        .into_inner()
        .id;
    for n in 0..20 {
        let key = format!("k/{}", n % 7).into_bytes();
        let lease = if n == 19 { long } else { 0 };
        kv.put(PutRequest {
            key,
            value: vec![n as u8; 100],
            lease,
            ..Default::default()
        })
        .await
        .unwrap();
    }
    kv.put(PutRequest {
        key: b"short".to_vec(),
        value: b"v".to_vec(),
        lease: short,
        ..Default::default()
    })
    .await
    .unwrap();
    kv.delete_range(DeleteRangeRequest {
        key: b"k/3".to_vec(),
        ..Default::default()
    })
    .await
    .unwrap();
    kv.compact(CompactionRequest {
        revision: 6,
        physical: true,
    })
    .await
    .unwrap();
    let before = dump(&cairn).await;
    let long_ttl = ttl(&cairn, long).await;

    // Phase 2: graceful stop (SIGTERM) and restart: identical answers.
    assert!(cairn.terminate(), "SIGTERM must end the member cleanly");
    cairn.restart().await;
    assert_eq!(dump(&cairn).await, before, "state after a graceful restart");
    let after = ttl(&cairn, long).await;
    assert!(
        (long_ttl - 3..=long_ttl).contains(&after),
        "remaining TTL {after} vs {long_ttl} before"
    );
    let mut kv = cairn.kv().await;
    let compacted = kv
        .range(RangeRequest {
            key: b"k/0".to_vec(),
            revision: 5,
            ..Default::default()
        })
        .await;
    assert_eq!(
        compacted.unwrap_err().message(),
        "etcdserver: mvcc: required revision has been compacted"
    );

    // Phase 3: SIGKILL and restart: still identical.
    cairn.kill9();
    cairn.restart().await;
    assert_eq!(dump(&cairn).await.1, before.1, "history after a crash");
    assert_eq!(dump(&cairn).await.0.kvs, before.0.kvs, "keys after a crash");

    // Phase 4: the short lease (8 s) kept counting through both restarts: it expires on
    // schedule, deleting its key, and the long one is untouched.
    wait_until(
        "the short lease to expire",
        Duration::from_secs(20),
        || async { ttl(&cairn, short).await == -1 },
    )
    .await;
    let short_key = RangeRequest {
        key: b"short".to_vec(),
        ..Default::default()
    };
    assert!(kv
        .range(short_key)
        .await
        .unwrap()
        .into_inner()
        .kvs
        .is_empty());
    assert!(ttl(&cairn, long).await > 100);
}
