//! Revisions: one store-wide counter, +1 per write request; sub revisions inside a request;
//! per-key create_revision / mod_revision / version (etcd's "Revisions" guarantee).

mod common;

use cairn_proto::etcdserverpb::compare::CompareResult::{Equal, Greater};
use cairn_proto::mvccpb::event::EventType;
use common::*;
use tracing::info;

#[test]
fn fresh_store_starts_at_revision_1_and_the_first_write_takes_revision_2() {
    let mut s = TestStore::new();
    {
        info!("a fresh store is at revision 1, never compacted, nothing applied");
        assert_eq!(s.revision(), 1);
        assert_eq!(s.store.compact_revision(), -1);
        assert_eq!(s.store.applied_index(), 0);
        let empty = s.range(range_req("\0", "\0")).unwrap();
        assert!(empty.kvs.is_empty());
        assert_eq!(
            header_revision(&empty),
            1,
            "reads answer with the current revision"
        );
    }
    {
        info!("the first put creates the key at revision 2, version 1");
        let put = s.put("k", "v");
        assert_eq!(header_revision(&put), 2);
        let kv = s.get("k").unwrap();
        assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 2, 1));
        assert_eq!(s.revision(), 2);
    }
}

#[test]
fn every_write_request_takes_exactly_one_main_revision() {
    let mut s = TestStore::new();
    let mut expected = s.revision();
    {
        info!("puts and deletes each move the revision by one and answer with it");
        for key in ["a", "b", "c"] {
            expected += 1;
            assert_eq!(header_revision(&s.put(key, "1")), expected);
            assert_eq!(s.revision(), expected);
        }
        expected += 1;
        let delete = s.delete("a", "c");
        assert_eq!(delete.deleted, 2);
        assert_eq!(
            header_revision(&delete),
            expected,
            "a range delete is one revision"
        );
        assert_eq!(s.revision(), expected);
    }
    {
        info!("a txn with several writes is one revision, shared by all its records");
        expected += 1;
        let ops = vec![
            put_op("x", "1"),
            put_op("y", "1"),
            delete_op("c", ""),
            put_op("z", "1"),
        ];
        let response = s.txn(txn(vec![], ops, vec![])).unwrap();
        assert_eq!(header_revision(&response), expected);
        assert_eq!(s.revision(), expected);
        for key in ["x", "y", "z"] {
            assert_eq!(s.get(key).unwrap().mod_revision, expected, "{key}");
        }
        let deleted = s.events("c", "", expected);
        assert_eq!(deleted.len(), 1);
        assert_eq!(deleted[0].kv.as_ref().unwrap().mod_revision, expected);
    }
}

#[test]
fn writes_inside_one_txn_get_sub_revisions_in_operation_order() {
    let mut s = TestStore::new();
    s.put("c", "old");
    {
        info!("ops written out of key order: events come back in op order, not key order");
        let ops = vec![put_op("b", "1"), delete_op("c", ""), put_op("a", "1")];
        let revision = header_revision(&s.txn(txn(vec![], ops, vec![])).unwrap());
        let events = s.events("\0", "\0", revision);
        let seen: Vec<(String, i32, i64)> = events
            .iter()
            .map(|e| {
                let kv = e.kv.as_ref().unwrap();
                (text(&kv.key), e.r#type, kv.mod_revision)
            })
            .collect();
        let put = EventType::Put as i32;
        let delete = EventType::Delete as i32;
        assert_eq!(
            seen,
            vec![
                ("b".to_string(), put, revision),
                ("c".to_string(), delete, revision),
                ("a".to_string(), put, revision),
            ]
        );
    }
}

#[test]
fn version_counts_puts_and_a_delete_starts_a_new_generation() {
    let mut s = TestStore::new();
    let mut put_revisions = Vec::new();
    {
        info!("three puts: version 1, 2, 3; create_revision fixed, mod_revision moves");
        for value in ["v1", "v2", "v3"] {
            put_revisions.push(header_revision(&s.put("k", value)));
        }
        let kv = s.get("k").unwrap();
        assert_eq!(kv.version, 3);
        assert_eq!(kv.create_revision, put_revisions[0]);
        assert_eq!(kv.mod_revision, put_revisions[2]);
    }
    let deleted_at;
    {
        info!("a delete ends the generation: the key reads as absent");
        deleted_at = header_revision(&s.delete("k", ""));
        assert_eq!(s.get("k"), None);
    }
    {
        info!("re-creating the key starts over: version 1, create_revision = mod_revision");
        let recreated = header_revision(&s.put("k", "again"));
        let kv = s.get("k").unwrap();
        assert_eq!(
            (kv.create_revision, kv.mod_revision, kv.version),
            (recreated, recreated, 1)
        );
        assert!(recreated > deleted_at);
    }
    {
        info!("history still holds the old generation as it was");
        for (i, revision) in put_revisions.iter().enumerate() {
            let old = s.get_at("k", *revision).unwrap().unwrap();
            assert_eq!(old.version, i as i64 + 1);
            assert_eq!(old.create_revision, put_revisions[0]);
            assert_eq!(old.mod_revision, *revision);
        }
        assert_eq!(
            s.get_at("k", deleted_at).unwrap(),
            None,
            "deleted at that revision"
        );
    }
}

#[test]
fn deleting_nothing_does_not_bump_the_revision() {
    let mut s = TestStore::new();
    s.put("present", "1");
    let before = s.revision();
    {
        info!("deleting a missing key, an empty range and an inverted range changes nothing");
        for (key, end) in [("missing", ""), ("x", "y"), ("z", "a")] {
            let delete = s.delete(key, end);
            assert_eq!(delete.deleted, 0, "[{key}, {end})");
            assert_eq!(
                header_revision(&delete),
                before,
                "answered at the unchanged revision"
            );
            assert_eq!(s.revision(), before);
        }
    }
    {
        info!("a txn whose only write deletes nothing changes nothing either");
        let response = s
            .txn(txn(vec![], vec![delete_op("missing", "")], vec![]))
            .unwrap();
        assert_eq!(header_revision(&response), before);
        assert_eq!(s.revision(), before);
    }
    {
        info!("deleting an already deleted key is deleting nothing");
        let deleted_at = header_revision(&s.delete("present", ""));
        assert_eq!(deleted_at, before + 1);
        assert_eq!(s.delete("present", "").deleted, 0);
        assert_eq!(s.revision(), deleted_at);
    }
}

#[test]
fn read_only_and_empty_txns_do_not_bump_the_revision() {
    let mut s = TestStore::new();
    s.put("k", "v");
    let before = s.revision();
    {
        info!("a read-only txn answered locally sees the current revision");
        let request = txn(
            vec![cmp_version("k", Equal, 1)],
            vec![range_op("k", "")],
            vec![],
        );
        let response = s.store.txn_read_only(&request).unwrap();
        assert!(response.succeeded);
        assert_eq!(header_revision(&response), before);
        assert_eq!(s.revision(), before);
    }
    {
        info!("the same read-only txn applied through the log leaves the revision alone");
        let request = txn(
            vec![cmp_version("k", Equal, 1)],
            vec![range_op("k", "")],
            vec![],
        );
        let applied = s.txn(request.clone()).unwrap();
        assert_eq!(header_revision(&applied), before);
        assert_eq!(
            applied,
            s.store.txn_read_only(&request).unwrap(),
            "both paths agree"
        );
    }
    {
        info!("a txn whose writes sit in the branch not taken writes nothing");
        let request = txn(
            vec![cmp_version("k", Greater, 5)],
            vec![put_op("k", "new")],
            vec![],
        );
        let response = s.txn(request).unwrap();
        assert!(!response.succeeded);
        assert!(response.responses.is_empty());
        assert_eq!(header_revision(&response), before);
        assert_eq!(value_of(&s.get("k").unwrap()), "v");
    }
    assert_eq!(s.revision(), before);
}

#[test]
fn refused_requests_leave_the_revision_but_move_the_applied_index() {
    let mut s = TestStore::new();
    s.put("a", "1");
    let before = s.revision();
    let applied = s.store.applied_index();
    {
        info!("a put with ignore_value on a missing key is refused");
        let request = cairn_proto::etcdserverpb::PutRequest {
            ignore_value: true,
            ..put_req("missing", "")
        };
        assert_eq!(s.try_put(request), Err(cairn_mvcc::MvccError::KeyNotFound));
    }
    {
        info!("a txn with one refused op writes none of its ops");
        let request = cairn_proto::etcdserverpb::PutRequest {
            lease: 42,
            ..put_req("b", "1")
        };
        let ops = vec![
            put_op("a", "2"),
            op(cairn_proto::etcdserverpb::request_op::Request::RequestPut(
                request,
            )),
        ];
        assert_eq!(
            s.txn(txn(vec![], ops, vec![])),
            Err(cairn_mvcc::MvccError::LeaseNotFound)
        );
        assert_eq!(
            value_of(&s.get("a").unwrap()),
            "1",
            "the first op was not applied"
        );
        assert_eq!(s.get("b"), None);
    }
    assert_eq!(s.revision(), before);
    assert_eq!(s.store.applied_index(), applied + 2);
}
