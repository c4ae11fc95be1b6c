//! The etcd API through the real `etcd-client` crate against a real `cairn serve` process.

mod common;

use std::time::Duration;

use common::Cairn;
use etcd_client::{
    Compare, CompareOp, EventType, GetOptions, LeaseTimeToLiveOptions, PutOptions, SortOrder,
    SortTarget, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use sha2::{Digest, Sha256};

fn keys(kvs: &[etcd_client::KeyValue]) -> Vec<String> {
    kvs.iter()
        .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
        .collect()
}

fn grpc_error(error: etcd_client::Error) -> tonic::Status {
    match error {
        etcd_client::Error::GRpcStatus(status) => status,
        other => panic!("expected a gRPC status, got {other:?}"),
    }
}

#[tokio::test]
async fn range_options_match_etcd_semantics() {
    let cairn = Cairn::start(&[]).await;
    let mut client = cairn.client().await;

    // Phase 1: four keys, two under a shared prefix family, each put is one revision.
    let mut revisions = Vec::new();
    for (key, value) in [("a/1", "x"), ("a/2", "yy"), ("a/3", "z"), ("b", "w")] {
        let response = client.put(key, value, None).await.unwrap();
        revisions.push(response.header().unwrap().revision());
    }
    assert_eq!(
        revisions,
        vec![2, 3, 4, 5],
        "one revision per put, starting after 1"
    );

    // Phase 2: prefix, limit/more/count, sort, keys-only, count-only, from-key.
    let prefix = client
        .get("a/", Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    assert_eq!(keys(prefix.kvs()), ["a/1", "a/2", "a/3"]);
    let limited = client
        .get("a/", Some(GetOptions::new().with_prefix().with_limit(2)))
        .await
        .unwrap();
    assert_eq!(keys(limited.kvs()), ["a/1", "a/2"]);
    assert!(limited.more());
    assert_eq!(limited.count(), 3, "count ignores the limit");
    let sorted = GetOptions::new()
        .with_prefix()
        .with_sort(SortTarget::Key, SortOrder::Descend);
    let sorted = client.get("a/", Some(sorted)).await.unwrap();
    assert_eq!(keys(sorted.kvs()), ["a/3", "a/2", "a/1"]);
    let by_value = GetOptions::new()
        .with_prefix()
        .with_sort(SortTarget::Value, SortOrder::Ascend);
    let by_value = client.get("a/", Some(by_value)).await.unwrap();
    assert_eq!(keys(by_value.kvs()), ["a/1", "a/2", "a/3"]);
    let keys_only = client
        .get("a/", Some(GetOptions::new().with_prefix().with_keys_only()))
        .await;
    assert!(keys_only
        .unwrap()
        .kvs()
        .iter()
        .all(|kv| kv.value().is_empty()));
    let counted = client
        .get(
            "a/",
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await;
    let counted = counted.unwrap();
    assert!(counted.kvs().is_empty());
    assert_eq!(counted.count(), 3);
    let from_key = client
        .get("a/3", Some(GetOptions::new().with_from_key()))
        .await
        .unwrap();
    assert_eq!(keys(from_key.kvs()), ["a/3", "b"]);

    // Phase 3: history — an overwritten key still reads its old value at an old revision.
    client.put("a/1", "x2", None).await.unwrap();
    let old = client
        .get("a/1", Some(GetOptions::new().with_revision(2)))
        .await
        .unwrap();
    assert_eq!(old.kvs()[0].value(), b"x");
    let new = client.get("a/1", None).await.unwrap();
    let kv = &new.kvs()[0];
    assert_eq!(
        (
            kv.value(),
            kv.create_revision(),
            kv.mod_revision(),
            kv.version()
        ),
        (&b"x2"[..], 2, 6, 2)
    );
    let filtered = GetOptions::new().with_prefix().with_min_mod_revision(4);
    let filtered = client.get("a/", Some(filtered)).await.unwrap();
    assert_eq!(keys(filtered.kvs()), ["a/1", "a/3"]);
}

#[tokio::test]
async fn txn_compare_and_swap_as_kubernetes_uses_it() {
    let cairn = Cairn::start(&[]).await;
    let mut client = cairn.client().await;

    // Create = txn(mod_revision == 0 → put); a second create must fail and read the object.
    let create = || {
        Txn::new()
            .when([Compare::mod_revision(
                "/registry/pods/p",
                CompareOp::Equal,
                0,
            )])
            .and_then([TxnOp::put("/registry/pods/p", "v1", None)])
            .or_else([TxnOp::get("/registry/pods/p", None)])
    };
    let first = client.txn(create()).await.unwrap();
    assert!(first.succeeded());
    let created_at = first.header().unwrap().revision();
    let second = client.txn(create()).await.unwrap();
    assert!(!second.succeeded());
    assert_eq!(
        second.header().unwrap().revision(),
        created_at,
        "a failed read-only branch adds no revision"
    );
    match &second.op_responses()[0] {
        TxnOpResponse::Get(get) => assert_eq!(get.kvs()[0].mod_revision(), created_at),
        other => panic!("expected the get of the else branch, got {other:?}"),
    }

    // Update = txn(mod_revision == X → put); a stale X loses.
    let update = |expected| {
        Txn::new()
            .when([Compare::mod_revision(
                "/registry/pods/p",
                CompareOp::Equal,
                expected,
            )])
            .and_then([
                TxnOp::put("/registry/pods/p", "v2", None),
                TxnOp::put("/registry/pods/q", "v2", None),
            ])
    };
    let updated = client.txn(update(created_at)).await.unwrap();
    assert!(updated.succeeded());
    let both = client
        .get("/registry/pods/", Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    let mods: Vec<i64> = both.kvs().iter().map(|kv| kv.mod_revision()).collect();
    assert_eq!(
        mods,
        vec![created_at + 1, created_at + 1],
        "one revision for the whole txn"
    );
    assert!(!client.txn(update(created_at)).await.unwrap().succeeded());
}

#[tokio::test]
async fn watch_replays_history_then_streams_live_events() {
    let cairn = Cairn::start(&[]).await;
    let mut client = cairn.client().await;

    // Phase 1: history that the watch will replay.
    let start = client
        .put("w/1", "one", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    client.put("w/2", "two", None).await.unwrap();
    client.delete("w/1", None).await.unwrap();
    client.put("other", "ignored", None).await.unwrap();

    // Phase 2: a watch from `start` with prev_kv sees exactly those three events, in order.
    let options = WatchOptions::new()
        .with_prefix()
        .with_start_revision(start)
        .with_prev_key();
    let mut stream = client.watch("w/", Some(options)).await.unwrap();
    let mut events = Vec::new();
    let mut created = false;
    while events.len() < 3 {
        let response = tokio::time::timeout(Duration::from_secs(10), stream.message()).await;
        let response = response
            .expect("watch response in time")
            .unwrap()
            .expect("stream open");
        created |= response.created();
        for event in response.events() {
            let kv = event.kv().unwrap();
            let prev = event.prev_kv().map(|kv| kv.value().to_vec());
            events.push((
                event.event_type(),
                kv.key().to_vec(),
                kv.mod_revision(),
                prev,
            ));
        }
    }
    assert!(created, "the first response confirms creation");
    assert_eq!(events[0], (EventType::Put, b"w/1".to_vec(), start, None));
    assert_eq!(
        events[1],
        (EventType::Put, b"w/2".to_vec(), start + 1, None)
    );
    assert_eq!(
        events[2],
        (
            EventType::Delete,
            b"w/1".to_vec(),
            start + 2,
            Some(b"one".to_vec())
        )
    );

    // Phase 3: a live put arrives next, with no gap and no duplicate.
    let live = client
        .put("w/3", "three", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    let response = tokio::time::timeout(Duration::from_secs(10), stream.message()).await;
    let response = response
        .expect("live event in time")
        .unwrap()
        .expect("stream open");
    let revisions: Vec<i64> = response
        .events()
        .iter()
        .map(|e| e.kv().unwrap().mod_revision())
        .collect();
    assert_eq!(revisions, vec![live]);
}

#[tokio::test]
async fn lease_expiry_deletes_attached_keys_and_keepalive_extends() {
    let cairn = Cairn::start(&[]).await;
    let mut client = cairn.client().await;

    // Phase 1: a 2 s lease kept alive for 4 s keeps its key.
    let kept = client.lease_grant(2, None).await.unwrap().id();
    client
        .put("kept", "v", Some(PutOptions::new().with_lease(kept)))
        .await
        .unwrap();
    let (mut keeper, mut responses) = client.lease_keep_alive(kept).await.unwrap();
    for _ in 0..8 {
        keeper.keep_alive().await.unwrap();
        let response = responses
            .message()
            .await
            .unwrap()
            .expect("keep-alive answered");
        assert_eq!(response.ttl(), 2);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        client.get("kept", None).await.unwrap().count(),
        1,
        "kept alive past its TTL"
    );

    // Phase 2: TimeToLive lists the key; then, without keep-alives, the lease expires and the
    // key is deleted by the server, observed through a watch.
    let ttl = client
        .lease_time_to_live(kept, Some(LeaseTimeToLiveOptions::new().with_keys()))
        .await;
    let ttl = ttl.unwrap();
    assert_eq!(ttl.keys(), [b"kept".to_vec()]);
    assert!((0..=2).contains(&ttl.ttl()));
    drop(keeper);
    drop(responses);
    let mut watch = client.watch("kept", None).await.unwrap();
    let deleted = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let response = watch.message().await.unwrap().expect("stream open");
            if response
                .events()
                .iter()
                .any(|event| event.event_type() == EventType::Delete)
            {
                return;
            }
        }
    })
    .await;
    assert!(
        deleted.is_ok(),
        "the expired lease's key was not deleted within 10 s"
    );
    assert_eq!(client.get("kept", None).await.unwrap().count(), 0);
    let gone = client.lease_time_to_live(kept, None).await.unwrap();
    assert_eq!(gone.ttl(), -1, "an expired lease reads as unknown");
}

#[tokio::test]
async fn compaction_refuses_old_revisions_and_cancels_old_watches() {
    let cairn = Cairn::start(&[]).await;
    let mut client = cairn.client().await;
    for value in ["1", "2", "3", "4"] {
        client.put("c", value, None).await.unwrap();
    }
    client.compact(4, None).await.unwrap();

    let old = client
        .get("c", Some(GetOptions::new().with_revision(3)))
        .await
        .unwrap_err();
    let status = grpc_error(old);
    assert_eq!(status.code(), tonic::Code::OutOfRange);
    assert_eq!(
        status.message(),
        "etcdserver: mvcc: required revision has been compacted"
    );
    let at_compaction = client
        .get("c", Some(GetOptions::new().with_revision(4)))
        .await
        .unwrap();
    assert_eq!(at_compaction.kvs()[0].value(), b"3");
    let future = client
        .get("c", Some(GetOptions::new().with_revision(99)))
        .await
        .unwrap_err();
    assert_eq!(
        grpc_error(future).message(),
        "etcdserver: mvcc: required revision is a future revision"
    );
    let again = grpc_error(client.compact(4, None).await.unwrap_err());
    assert_eq!(
        again.message(),
        "etcdserver: mvcc: required revision has been compacted"
    );

    let mut watch = client
        .watch("c", Some(WatchOptions::new().with_start_revision(2)))
        .await
        .unwrap();
    let canceled = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let response = watch.message().await.unwrap().expect("stream open");
            if response.canceled() {
                return response.compact_revision();
            }
        }
    })
    .await
    .expect("cancellation in time");
    assert_eq!(canceled, 4);
}

#[tokio::test]
async fn status_members_and_snapshot_look_like_etcd() {
    let cairn = Cairn::start(&[]).await;
    let mut client = cairn.client().await;
    for n in 0..100 {
        client
            .put(format!("s/{n}"), vec![b'x'; 1000], None)
            .await
            .unwrap();
    }

    let status = client.status().await.unwrap();
    assert_eq!(status.version(), "3.5.17");
    let member_id = status.header().unwrap().member_id();
    assert_eq!(status.leader(), member_id);
    assert!(status.raft_index() >= 100);
    assert!(status.db_size() > 100_000);

    let members = client.member_list().await.unwrap();
    assert_eq!(members.members().len(), 1);
    assert_eq!(members.members()[0].id(), member_id);
    assert_eq!(members.members()[0].client_urls(), [cairn.endpoint()]);

    let mut stream = client.snapshot().await.unwrap();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.message().await.unwrap() {
        bytes.extend_from_slice(chunk.blob());
    }
    assert_eq!(
        bytes.len() % 512,
        32,
        "etcdctl's framing: 512-aligned body + SHA-256"
    );
    let (body, digest) = bytes.split_at(bytes.len() - 32);
    assert_eq!(Sha256::digest(body).as_slice(), digest);
    assert!(body.len() > 100_000, "the snapshot holds the data");
}

/// Concurrent clients each read their own writes, and the store counts every put once.
#[tokio::test]
async fn many_clients_see_their_own_writes() {
    let cairn = Cairn::start(&[]).await;
    let mut tasks = Vec::new();
    for client_id in 0..16 {
        let endpoint = cairn.endpoint();
        tasks.push(tokio::spawn(async move {
            let mut client = etcd_client::Client::connect([endpoint], None)
                .await
                .unwrap();
            let mut last = 0;
            for n in 0..50 {
                let key = format!("rw/{client_id}");
                let revision = client
                    .put(key.clone(), n.to_string(), None)
                    .await
                    .unwrap()
                    .header()
                    .unwrap()
                    .revision();
                assert!(revision > last, "revisions grow for one client");
                last = revision;
                let read = client.get(key, None).await.unwrap();
                assert_eq!(
                    read.kvs()[0].value(),
                    n.to_string().as_bytes(),
                    "read-your-writes"
                );
                assert!(
                    read.header().unwrap().revision() >= revision,
                    "monotonic reads"
                );
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let mut client = cairn.client().await;
    let all = client
        .get("rw/", Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    assert_eq!(all.count(), 16);
    assert!(all.kvs().iter().all(|kv| kv.version() == 50));
    let final_revision = client
        .get("x", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    assert_eq!(
        final_revision,
        1 + 16 * 50,
        "exactly one revision per acknowledged put"
    );
}
