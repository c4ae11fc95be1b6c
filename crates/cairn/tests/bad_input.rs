//! Bad input gets etcd's error code and message; the member stays healthy and loses nothing.

mod common;

use cairn_proto::etcdserverpb::request_op::Request as Op;
use cairn_proto::etcdserverpb::{
    DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use common::Cairn;
use tonic::Code;

fn put(key: &str, value: &[u8]) -> PutRequest {
    PutRequest {
        key: key.as_bytes().to_vec(),
        value: value.to_vec(),
        ..Default::default()
    }
}

fn put_op(key: &str) -> RequestOp {
    RequestOp {
        request: Some(Op::RequestPut(put(key, b"v"))),
    }
}

fn assert_status(result: Result<impl std::fmt::Debug, tonic::Status>, code: Code, message: &str) {
    let status = result.expect_err("the request must be refused");
    assert_eq!((status.code(), status.message()), (code, message));
}

#[tokio::test]
async fn invalid_requests_get_etcd_errors_and_change_nothing() {
    let cairn = Cairn::start(&[]).await;
    let mut kv = cairn.kv().await;
    let witness = kv.put(put("witness", b"kept")).await.unwrap().into_inner();
    let revision = witness.header.unwrap().revision;

    // Oversized: above --max-request-bytes (1.5 MiB) but within the gRPC message limit.
    let big = vec![b'x'; 1_600_000];
    assert_status(
        kv.put(put("big", &big)).await,
        Code::InvalidArgument,
        "etcdserver: request is too large",
    );
    // Empty keys.
    assert_status(
        kv.put(put("", b"v")).await,
        Code::InvalidArgument,
        "etcdserver: key is not provided",
    );
    let empty_range = RangeRequest::default();
    assert_status(
        kv.range(empty_range).await,
        Code::InvalidArgument,
        "etcdserver: key is not provided",
    );
    let empty_delete = DeleteRangeRequest::default();
    assert_status(
        kv.delete_range(empty_delete).await,
        Code::InvalidArgument,
        "etcdserver: key is not provided",
    );
    // ignore_value with a value; ignore_value on a missing key.
    let mut both = put("witness", b"v");
    both.ignore_value = true;
    assert_status(
        kv.put(both).await,
        Code::InvalidArgument,
        "etcdserver: value is provided",
    );
    let mut missing = put("missing", b"");
    missing.ignore_value = true;
    assert_status(
        kv.put(missing).await,
        Code::InvalidArgument,
        "etcdserver: key not found",
    );
    // Txn over 128 ops; 128 is fine.
    let ops = |n: usize| {
        (0..n)
            .map(|i| put_op(&format!("t/{i}")))
            .collect::<Vec<_>>()
    };
    let too_many = TxnRequest {
        success: ops(129),
        ..Default::default()
    };
    assert_status(
        kv.txn(too_many).await,
        Code::InvalidArgument,
        "etcdserver: too many operations in txn request",
    );
    // Duplicate key in one txn.
    let duplicate = TxnRequest {
        success: vec![put_op("d"), put_op("d")],
        ..Default::default()
    };
    assert_status(
        kv.txn(duplicate).await,
        Code::InvalidArgument,
        "etcdserver: duplicate key given in txn request",
    );
    // Unknown lease.
    let mut leased = put("leased", b"v");
    leased.lease = 12345;
    assert_status(
        kv.put(leased).await,
        Code::NotFound,
        "etcdserver: requested lease not found",
    );
    // A sort order outside the enum (etcd 3.5 refuses it).
    let bad_sort = RangeRequest {
        key: b"witness".to_vec(),
        sort_order: 7,
        ..Default::default()
    };
    assert_status(
        kv.range(bad_sort).await,
        Code::InvalidArgument,
        "etcdserver: invalid sort option",
    );
    // Future revision.
    let future = RangeRequest {
        key: b"witness".to_vec(),
        revision: revision + 100,
        ..Default::default()
    };
    assert_status(
        kv.range(future).await,
        Code::OutOfRange,
        "etcdserver: mvcc: required revision is a future revision",
    );

    // Nothing above was applied: the revision did not move and the witness is intact.
    let fine = TxnRequest {
        success: ops(128),
        ..Default::default()
    };
    let fine = kv.txn(fine).await.unwrap().into_inner();
    assert_eq!(
        fine.header.unwrap().revision,
        revision + 1,
        "refused requests took no revision"
    );
    let read = kv
        .range(RangeRequest {
            key: b"witness".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(read.into_inner().kvs[0].value, b"kept");
}

/// A message that is not a `PutRequest` on the wire: field 1 (`key`, bytes) sent as a varint.
#[derive(Clone, PartialEq, prost::Message)]
struct Malformed {
    #[prost(uint64, tag = "1")]
    key: u64,
}

#[tokio::test]
async fn malformed_grpc_payload_is_refused_and_the_member_keeps_serving() {
    let cairn = Cairn::start(&[]).await;
    let channel = common::channel(&cairn.endpoint()).await;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static("/etcdserverpb.KV/Put");
    let codec =
        tonic_prost::ProstCodec::<Malformed, cairn_proto::etcdserverpb::PutResponse>::default();
    let result = grpc
        .unary(tonic::Request::new(Malformed { key: 7 }), path, codec)
        .await;
    let status = result.expect_err("a malformed payload must be refused");
    assert_eq!(status.code(), Code::Internal, "{status:?}");

    let mut kv = cairn.kv().await;
    let after = kv.put(put("after", b"ok")).await.unwrap().into_inner();
    assert_eq!(
        after.header.unwrap().revision,
        2,
        "the bad call applied nothing"
    );
}

#[tokio::test]
async fn compacted_revision_is_out_of_range() {
    let cairn = Cairn::start(&[]).await;
    let mut kv = cairn.kv().await;
    for _ in 0..3 {
        kv.put(put("k", b"v")).await.unwrap();
    }
    let compact = cairn_proto::etcdserverpb::CompactionRequest {
        revision: 3,
        physical: true,
    };
    kv.compact(compact).await.unwrap();
    let old = RangeRequest {
        key: b"k".to_vec(),
        revision: 2,
        ..Default::default()
    };
    assert_status(
        kv.range(old).await,
        Code::OutOfRange,
        "etcdserver: mvcc: required revision has been compacted",
    );
    assert_status(
        kv.compact(compact).await,
        Code::OutOfRange,
        "etcdserver: mvcc: required revision has been compacted",
    );
}

#[tokio::test]
async fn storage_quota_raises_nospace_and_refuses_writes_until_disarmed() {
    let cairn = Cairn::start(&["--quota-backend-bytes", "200000"]).await;
    let mut kv = cairn.kv().await;
    let mut accepted = 0;
    let refusal = loop {
        match kv.put(put(&format!("q/{accepted}"), &[b'x'; 10_000])).await {
            Ok(_) => accepted += 1,
            Err(status) => break status,
        }
        assert!(accepted < 100, "the quota never triggered");
    };
    assert_eq!(refusal.code(), Code::ResourceExhausted);
    assert_eq!(
        refusal.message(),
        "etcdserver: mvcc: database space exceeded"
    );
    let mut client = cairn.client().await;
    let alarms = client
        .alarm(
            etcd_client::AlarmAction::Get,
            etcd_client::AlarmType::None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(alarms.alarms().len(), 1);
    assert_eq!(alarms.alarms()[0].alarm(), etcd_client::AlarmType::Nospace);
    let status = client.status().await.unwrap();
    assert!(
        status
            .errors()
            .iter()
            .any(|error| error.contains("NOSPACE")),
        "{:?}",
        status.errors()
    );

    // Deletes are still allowed; small writes stay refused while the alarm is raised.
    let delete = DeleteRangeRequest {
        key: b"q/".to_vec(),
        range_end: b"q0".to_vec(),
        ..Default::default()
    };
    let deleted = kv.delete_range(delete).await.unwrap().into_inner();
    assert_eq!(deleted.deleted, accepted);
    assert_eq!(
        kv.put(put("small", b"v")).await.unwrap_err().code(),
        Code::ResourceExhausted
    );

    // Compact the history away, disarm: writes work again; nothing acknowledged was lost.
    let revision = deleted.header.unwrap().revision;
    kv.compact(cairn_proto::etcdserverpb::CompactionRequest {
        revision,
        physical: true,
    })
    .await
    .unwrap();
    let member = alarms.alarms()[0].member_id();
    let mut disarm = etcd_client::AlarmOptions::new();
    disarm.with_member(member);
    client
        .alarm(
            etcd_client::AlarmAction::Deactivate,
            etcd_client::AlarmType::Nospace,
            Some(disarm),
        )
        .await
        .unwrap();
    kv.put(put("small", b"v")).await.unwrap();
}
