//! Wire compatibility with the real `etcd-client` crate.
//!
//! etcd-client's `build-server` feature re-exports its raw prost types as `etcd_client::proto::Pb*`
//! (generated from etcd's own `.proto` files). Each test builds a message with *our* types, every
//! field set to a non-default value, then:
//! 1. decodes our bytes as etcd-client's type and checks a few fields by name;
//! 2. re-encodes etcd-client's value and requires the *same bytes*. prost drops fields it does not
//!    know, so a wrong field number, a wrong wire type or a missing field changes the bytes;
//! 3. decodes those bytes back into our type and requires the original value.

use std::fmt::Debug;

use cairn_proto::etcdserverpb as pb;
use cairn_proto::mvccpb;
use etcd_client::proto as etcd;
use prost::Message;

/// Sends `ours` through etcd-client's type `T` and back; returns etcd-client's decoded value.
fn cross<O, T>(ours: &O) -> T
where
    O: Message + Default + PartialEq + Debug,
    T: Message + Default,
{
    let bytes = ours.encode_to_vec();
    assert!(
        !bytes.is_empty(),
        "test message has no fields set: {ours:?}"
    );
    let theirs = T::decode(bytes.as_slice()).expect("etcd-client decodes our bytes");
    assert_eq!(
        theirs.encode_to_vec(),
        bytes,
        "etcd-client re-encoded {ours:?} differently: a field number or type differs"
    );
    let back = O::decode(bytes.as_slice()).expect("we decode our own bytes");
    assert_eq!(&back, ours);
    theirs
}

fn header() -> pb::ResponseHeader {
    pb::ResponseHeader {
        cluster_id: 0x1122_3344_5566_7788,
        member_id: 42,
        revision: 1_000,
        raft_term: 7,
    }
}

#[test]
fn put_request_with_lease_prev_kv_and_ignore_flags() {
    let ours = pb::PutRequest {
        key: b"foo".to_vec(),
        value: b"bar".to_vec(),
        lease: 0x7eed,
        prev_kv: true,
        ignore_value: true,
        ignore_lease: true,
    };
    let theirs: etcd::PbPutRequest = cross(&ours);
    assert_eq!(theirs.key, b"foo");
    assert_eq!(theirs.lease, 0x7eed);
    assert!(theirs.prev_kv && theirs.ignore_value && theirs.ignore_lease);
}

#[test]
fn range_request_with_every_option() {
    let mut ours = pb::RangeRequest {
        key: b"a".to_vec(),
        range_end: b"z".to_vec(),
        limit: 10,
        revision: 99,
        serializable: true,
        keys_only: true,
        count_only: true,
        min_mod_revision: 2,
        max_mod_revision: 3,
        min_create_revision: 4,
        max_create_revision: 5,
        ..Default::default()
    };
    ours.set_sort_order(pb::range_request::SortOrder::Descend);
    ours.set_sort_target(pb::range_request::SortTarget::Value);
    let theirs: etcd::PbRangeRequest = cross(&ours);
    assert_eq!(theirs.range_end, b"z");
    assert_eq!(theirs.sort_order, 2, "DESCEND");
    assert_eq!(theirs.sort_target, 4, "VALUE");
    assert_eq!(theirs.max_create_revision, 5);
}

#[test]
fn txn_request_with_compare_and_nested_ops() {
    use pb::request_op::Request as Op;

    let mut compare = pb::Compare {
        key: b"k".to_vec(),
        range_end: b"l".to_vec(),
        target_union: Some(pb::compare::TargetUnion::ModRevision(7)),
        ..Default::default()
    };
    compare.set_result(pb::compare::CompareResult::NotEqual);
    compare.set_target(pb::compare::CompareTarget::Mod);
    let nested = pb::TxnRequest {
        compare: vec![],
        success: vec![pb::RequestOp {
            request: Some(Op::RequestDeleteRange(pb::DeleteRangeRequest {
                key: b"d".to_vec(),
                range_end: b"e".to_vec(),
                prev_kv: true,
            })),
        }],
        failure: vec![],
    };
    let ours = pb::TxnRequest {
        compare: vec![compare],
        success: vec![
            pb::RequestOp {
                request: Some(Op::RequestPut(pb::PutRequest {
                    key: b"k".to_vec(),
                    value: b"v".to_vec(),
                    ..Default::default()
                })),
            },
            pb::RequestOp {
                request: Some(Op::RequestTxn(nested)),
            },
        ],
        failure: vec![pb::RequestOp {
            request: Some(Op::RequestRange(pb::RangeRequest {
                key: b"k".to_vec(),
                ..Default::default()
            })),
        }],
    };
    let theirs: etcd::PbTxnRequest = cross(&ours);
    let c = &theirs.compare[0];
    assert_eq!((c.result, c.target), (3, 2), "NOT_EQUAL on MOD");
    assert_eq!(c.range_end, b"l");
    assert_eq!(c.target_union, Some(etcd::PbTargetUnion::ModRevision(7)));
    match &theirs.success[1].request {
        Some(etcd::PbTxnOpRequest::RequestTxn(inner)) => assert!(matches!(
            &inner.success[0].request,
            Some(etcd::PbTxnOpRequest::RequestDeleteRange(d)) if d.prev_kv && d.key == b"d"
        )),
        other => panic!("expected a nested txn, got {other:?}"),
    }
    assert!(matches!(
        theirs.failure[0].request,
        Some(etcd::PbTxnOpRequest::RequestRange(_))
    ));
}

#[test]
fn watch_create_request_with_filters_prev_kv_fragment_and_id() {
    use pb::watch_create_request::FilterType;

    let create = pb::WatchCreateRequest {
        key: b"w".to_vec(),
        range_end: b"x".to_vec(),
        start_revision: 5,
        progress_notify: true,
        filters: vec![FilterType::Noput as i32, FilterType::Nodelete as i32],
        prev_kv: true,
        watch_id: 77,
        fragment: true,
    };
    let ours = pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(create)),
    };
    let theirs: etcd::PbWatchRequest = cross(&ours);
    match theirs.request_union {
        Some(etcd::PbWatchRequestUnion::CreateRequest(c)) => {
            assert_eq!(c.filters, vec![0, 1], "NOPUT, NODELETE");
            assert_eq!((c.watch_id, c.start_revision), (77, 5));
            assert!(c.prev_kv && c.fragment && c.progress_notify);
        }
        other => panic!("expected a create request, got {other:?}"),
    }

    let cancel = pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CancelRequest(
            pb::WatchCancelRequest { watch_id: 77 },
        )),
    };
    let _: etcd::PbWatchRequest = cross(&cancel);
}

#[test]
fn watch_response_with_events() {
    let kv = mvccpb::KeyValue {
        key: b"k".to_vec(),
        create_revision: 2,
        mod_revision: 3,
        version: 2,
        value: b"v".to_vec(),
        lease: 9,
    };
    let ours = pb::WatchResponse {
        header: Some(header()),
        watch_id: 1,
        created: true,
        canceled: true,
        compact_revision: 4,
        cancel_reason: "compacted".into(),
        fragment: true,
        events: vec![mvccpb::Event {
            r#type: mvccpb::event::EventType::Delete as i32,
            kv: Some(kv.clone()),
            prev_kv: Some(kv),
        }],
    };
    let theirs: etcd::PbWatchResponse = cross(&ours);
    assert_eq!(theirs.events[0].r#type, 1, "DELETE");
    assert_eq!(
        theirs.events[0].prev_kv.as_ref().map(|kv| kv.lease),
        Some(9)
    );
}

#[test]
fn lease_grant_request() {
    let ours = pb::LeaseGrantRequest {
        ttl: 60,
        id: 0x1234,
    };
    let theirs: etcd::PbLeaseGrantRequest = cross(&ours);
    assert_eq!((theirs.ttl, theirs.id), (60, 0x1234));
}

#[test]
fn status_response_with_every_field() {
    let ours = pb::StatusResponse {
        header: Some(header()),
        version: "3.5.17".into(),
        db_size: 1 << 20,
        leader: 42,
        raft_index: 100,
        raft_term: 7,
        raft_applied_index: 99,
        errors: vec!["NOSPACE".into()],
        db_size_in_use: 1 << 19,
        is_learner: true,
        storage_version: "3.5.0".into(),
        db_size_quota: 2 << 30,
        downgrade_info: Some(pb::DowngradeInfo {
            enabled: true,
            target_version: "3.4.0".into(),
        }),
    };
    let theirs: etcd::PbStatusResponse = cross(&ours);
    assert_eq!(theirs.version, "3.5.17");
    assert_eq!(theirs.raft_applied_index, 99);
    assert_eq!(theirs.header.map(|h| h.member_id), Some(42));
}
