//! Watch over raw gRPC: a slow watcher is caught up with every event in order (no gap, no
//! duplicate); progress requests and periodic progress notifications; fragmentation of
//! responses larger than `--max-request-bytes`.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use cairn_proto::etcdserverpb::lease_client::LeaseClient;
use cairn_proto::etcdserverpb::request_op::Request as Op;
use cairn_proto::etcdserverpb::watch_client::WatchClient;
use cairn_proto::etcdserverpb::watch_request::RequestUnion;
use cairn_proto::etcdserverpb::{
    LeaseGrantRequest, LeaseRevokeRequest, PutRequest, RequestOp, TxnRequest, WatchCreateRequest,
    WatchProgressRequest, WatchRequest, WatchResponse,
};
use common::Cairn;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

struct Watch {
    requests: mpsc::Sender<WatchRequest>,
    responses: Streaming<WatchResponse>,
}

impl Watch {
    async fn open(cairn: &Cairn, create: WatchCreateRequest) -> Watch {
        let (requests, rx) = mpsc::channel(16);
        let mut client = WatchClient::new(common::channel(&cairn.endpoint()).await);
        let request = WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(create)),
        };
        requests.send(request).await.unwrap();
        let responses = client
            .watch(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        let mut watch = Watch {
            requests,
            responses,
        };
        assert!(
            watch.next().await.created,
            "the first response confirms creation"
        );
        watch
    }

    async fn next(&mut self) -> WatchResponse {
        let next = tokio::time::timeout(Duration::from_secs(10), self.responses.message()).await;
        next.expect("a watch response in time")
            .expect("no stream error")
            .expect("stream open")
    }
}

fn put(key: String, value: Vec<u8>) -> PutRequest {
    PutRequest {
        key: key.into_bytes(),
        value,
        ..Default::default()
    }
}

fn prefix_watch(prefix: &str) -> WatchCreateRequest {
    let mut end = prefix.as_bytes().to_vec();
    *end.last_mut().unwrap() += 1;
    WatchCreateRequest {
        key: prefix.as_bytes().to_vec(),
        range_end: end,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_watcher_gets_every_event_in_order_without_gaps() {
    let cairn = Cairn::start(&[]).await;
    let mut watch = Watch::open(&cairn, prefix_watch("s/")).await;

    // Phase 1: concurrent writers (puts and 2-key txns) while the watcher reads nothing.
    let mut writers = Vec::new();
    for writer in 0..4 {
        let mut kv = cairn.kv().await;
        writers.push(tokio::spawn(async move {
            let mut acknowledged = BTreeMap::new();
            for n in 0..500 {
                let key = |suffix: &str| format!("s/{writer}/{n}/{suffix}");
                let revision = if n % 5 == 0 {
                    let ops = ["a", "b"].map(|s| RequestOp {
                        request: Some(Op::RequestPut(put(key(s), vec![1; 64]))),
                    });
                    let txn = TxnRequest {
                        success: ops.to_vec(),
                        ..Default::default()
                    };
                    kv.txn(txn)
                        .await
                        .unwrap()
                        .into_inner()
                        .header
                        .unwrap()
                        .revision
                } else {
                    kv.put(put(key("a"), vec![2; 64]))
                        .await
                        .unwrap()
                        .into_inner()
                        .header
                        .unwrap()
                        .revision
                };
                acknowledged.insert(revision, if n % 5 == 0 { 2 } else { 1 });
            }
            acknowledged
        }));
    }
    let mut expected = BTreeMap::new();
    for writer in writers {
        expected.extend(writer.await.unwrap());
    }

    // Phase 2: now read. Every acknowledged revision arrives once, with all its events in one
    // response, revisions strictly increasing.
    let mut seen: BTreeMap<i64, usize> = BTreeMap::new();
    let mut last = 0;
    while seen.len() < expected.len() {
        let response = watch.next().await;
        let mut in_response: BTreeMap<i64, usize> = BTreeMap::new();
        for event in &response.events {
            let revision = event.kv.as_ref().unwrap().mod_revision;
            assert!(
                revision >= last,
                "events went backwards: {revision} after {last}"
            );
            last = revision;
            *in_response.entry(revision).or_default() += 1;
        }
        for (revision, count) in in_response {
            assert!(
                seen.insert(revision, count).is_none(),
                "revision {revision} delivered twice"
            );
        }
        assert!(response.header.unwrap().revision >= last);
    }
    assert_eq!(
        seen, expected,
        "events per revision differ from what was acknowledged"
    );
}

#[tokio::test]
async fn progress_requests_and_periodic_notifications_report_the_current_revision() {
    let cairn = Cairn::start(&["--experimental-watch-progress-notify-interval", "300ms"]).await;
    let mut kv = cairn.kv().await;
    let create = WatchCreateRequest {
        progress_notify: true,
        ..prefix_watch("p/")
    };
    let mut watch = Watch::open(&cairn, create).await;

    // Writes elsewhere move the revision without producing events for this watcher.
    let mut revision = 0;
    for n in 0..3 {
        revision = kv
            .put(put(format!("other/{n}"), vec![]))
            .await
            .unwrap()
            .into_inner()
            .header
            .unwrap()
            .revision;
    }
    let progress = WatchRequest {
        request_union: Some(RequestUnion::ProgressRequest(WatchProgressRequest {})),
    };
    watch.requests.send(progress).await.unwrap();
    let reply = loop {
        let response = watch.next().await;
        if response.watch_id == -1 {
            break response;
        }
    };
    assert!(reply.events.is_empty());
    assert_eq!(
        reply.header.unwrap().revision,
        revision,
        "progress reports the current revision"
    );

    // The periodic notification arrives for the idle watcher, with the current revision.
    let periodic = watch.next().await;
    assert_eq!((periodic.watch_id, periodic.events.len()), (0, 0));
    assert_eq!(periodic.header.unwrap().revision, revision);
}

#[tokio::test]
async fn large_revisions_are_fragmented_when_asked_and_reassemble_exactly() {
    let cairn = Cairn::start(&["--max-request-bytes", "20000"]).await;
    let mut kv = cairn.kv().await;
    let mut leases = LeaseClient::new(common::channel(&cairn.endpoint()).await);

    // One revision larger than any request: a lease revocation deletes its 8 keys at once, and
    // with prev_kv every delete event carries the 4 KB value it removed (~32 KB in all).
    let lease = leases
        .lease_grant(LeaseGrantRequest { ttl: 60, id: 0 })
        .await
        .unwrap()
        .into_inner()
        .id;
    for n in 0..8u8 {
        let request = PutRequest {
            lease,
            ..put(format!("f/{n}"), vec![n; 4000])
        };
        kv.put(request).await.unwrap();
    }
    let create = WatchCreateRequest {
        fragment: true,
        prev_kv: true,
        ..prefix_watch("f/")
    };
    let mut watch = Watch::open(&cairn, create).await;
    let revoked = leases
        .lease_revoke(LeaseRevokeRequest { id: lease })
        .await
        .unwrap()
        .into_inner();
    let revision = revoked.header.unwrap().revision;

    let mut events = Vec::new();
    let mut fragments = 0;
    loop {
        let response = watch.next().await;
        fragments += 1;
        events.extend(response.events);
        if !response.fragment {
            break;
        }
    }
    assert!(
        fragments > 1,
        "a ~32 KB revision must arrive in several fragments"
    );
    let keys: Vec<Vec<u8>> = events
        .iter()
        .map(|e| e.kv.as_ref().unwrap().key.clone())
        .collect();
    let expected: Vec<Vec<u8>> = (0..8).map(|n| format!("f/{n}").into_bytes()).collect();
    assert_eq!(
        keys, expected,
        "fragments reassemble to the whole revision, in key order"
    );
    for (n, event) in events.iter().enumerate() {
        assert_eq!(event.kv.as_ref().unwrap().mod_revision, revision);
        assert_eq!(event.prev_kv.as_ref().unwrap().value, vec![n as u8; 4000]);
    }
}
