//! `Put` and `DeleteRange`: prev_kv, ignore_value, ignore_lease, lease attachment, deleted
//! counts, and the request checks etcd's `v3rpc/key.go` makes before proposing.

mod common;

use cairn_mvcc::{validate, MvccError};
use cairn_proto::etcdserverpb::{DeleteRangeRequest, PutRequest};
use common::*;
use tracing::info;

fn with_prev_kv(key: &str, value: &str) -> PutRequest {
    PutRequest {
        prev_kv: true,
        ..put_req(key, value)
    }
}

fn ignoring_value(key: &str) -> PutRequest {
    PutRequest {
        ignore_value: true,
        ..put_req(key, "")
    }
}

fn ignoring_lease(key: &str, value: &str) -> PutRequest {
    PutRequest {
        ignore_lease: true,
        ..put_req(key, value)
    }
}

fn lease_keys(s: &TestStore, lease: i64) -> Vec<String> {
    let response = s.store.lease_time_to_live(lease, true, s.now_ms);
    response.keys.iter().map(|key| text(key)).collect()
}

#[test]
fn put_returns_the_previous_record_only_when_asked() {
    let mut s = TestStore::new();
    {
        info!("prev_kv on a new key: there is nothing before");
        let response = s.try_put(with_prev_kv("k", "v1")).unwrap();
        assert_eq!(response.prev_kv, None);
    }
    let before = s.get("k").unwrap();
    {
        info!("prev_kv on an existing key: the whole record as it was");
        let response = s.try_put(with_prev_kv("k", "v2")).unwrap();
        assert_eq!(response.prev_kv, Some(before));
        assert_eq!(header_revision(&response), s.revision());
    }
    {
        info!("without prev_kv nothing comes back");
        assert_eq!(s.put("k", "v3").prev_kv, None);
    }
    {
        info!("after a delete the previous record is gone again");
        s.delete("k", "");
        assert_eq!(s.try_put(with_prev_kv("k", "v4")).unwrap().prev_kv, None);
    }
}

#[test]
fn ignore_value_rewrites_the_current_value_at_a_new_revision() {
    let mut s = TestStore::new();
    s.put("k", "kept");
    let before = s.get("k").unwrap();
    let response = s.try_put(ignoring_value("k")).unwrap();
    let after = s.get("k").unwrap();
    assert_eq!(after.value, before.value);
    assert_eq!(after.version, before.version + 1);
    assert_eq!(after.create_revision, before.create_revision);
    assert_eq!(after.mod_revision, header_revision(&response));
    assert!(after.mod_revision > before.mod_revision);
}

#[test]
fn ignore_lease_keeps_the_key_attached_and_a_plain_put_detaches_it() {
    let mut s = TestStore::new();
    let lease = 7;
    s.grant(lease, 60).unwrap();
    {
        info!("attach k to the lease");
        s.put_with_lease("k", "v1", lease);
        assert_eq!(s.get("k").unwrap().lease, lease);
        assert_eq!(lease_keys(&s, lease), ["k"]);
    }
    {
        info!("ignore_lease: the new value keeps the lease");
        s.try_put(ignoring_lease("k", "v2")).unwrap();
        let kv = s.get("k").unwrap();
        assert_eq!((value_of(&kv).as_str(), kv.lease), ("v2", lease));
        assert_eq!(lease_keys(&s, lease), ["k"]);
    }
    {
        info!("a put without a lease detaches the key");
        s.put("k", "v3");
        assert_eq!(s.get("k").unwrap().lease, 0);
        assert!(lease_keys(&s, lease).is_empty());
    }
    {
        info!("revoking the lease now leaves k alone");
        s.revoke(lease).unwrap();
        assert_eq!(value_of(&s.get("k").unwrap()), "v3");
    }
}

#[test]
fn moving_a_key_to_another_lease_detaches_it_from_the_first() {
    let mut s = TestStore::new();
    s.grant(1, 60).unwrap();
    s.grant(2, 60).unwrap();
    s.put_with_lease("k", "v", 1);
    s.put_with_lease("k", "v", 2);
    assert!(lease_keys(&s, 1).is_empty());
    assert_eq!(lease_keys(&s, 2), ["k"]);
    s.revoke(1).unwrap();
    assert!(
        s.get("k").is_some(),
        "revoking the old lease does not delete k"
    );
    s.revoke(2).unwrap();
    assert_eq!(s.get("k"), None);
}

#[test]
fn ignore_flags_need_an_existing_key() {
    let mut s = TestStore::new();
    let before = s.revision();
    for request in [ignoring_value("missing"), ignoring_lease("missing", "v")] {
        info!(?request, "ignore_* on a missing key");
        let error = s.try_put(request).unwrap_err();
        assert_eq!(error, MvccError::KeyNotFound);
        assert_eq!(error.to_string(), "etcdserver: key not found");
    }
    assert_eq!(s.revision(), before);
    assert_eq!(s.get("missing"), None);
    {
        info!("a deleted key is missing too");
        s.put("gone", "v");
        s.delete("gone", "");
        assert_eq!(
            s.try_put(ignoring_value("gone")),
            Err(MvccError::KeyNotFound)
        );
    }
}

#[test]
fn put_with_an_unknown_lease_is_refused_and_the_lease_is_checked_first() {
    let mut s = TestStore::new();
    let before = s.revision();
    {
        info!("an unknown lease: lease not found, nothing written");
        let request = PutRequest {
            lease: 99,
            ..put_req("k", "v")
        };
        let error = s.try_put(request).unwrap_err();
        assert_eq!(error, MvccError::LeaseNotFound);
        assert_eq!(error.to_string(), "etcdserver: requested lease not found");
        assert_eq!(s.get("k"), None);
    }
    {
        info!(
            "unknown lease and a missing key for ignore_value: the lease error wins (etcd's order)"
        );
        let request = PutRequest {
            lease: 99,
            ignore_value: true,
            ..put_req("k", "")
        };
        assert_eq!(s.try_put(request), Err(MvccError::LeaseNotFound));
    }
    assert_eq!(s.revision(), before);
}

#[test]
fn put_checks_refuse_contradicting_flags() {
    let cases = [
        (
            "ignore_value with a value",
            PutRequest {
                ignore_value: true,
                ..put_req("k", "v")
            },
            Err(MvccError::ValueProvided),
        ),
        (
            "ignore_value without a value",
            PutRequest {
                ignore_value: true,
                ..put_req("k", "")
            },
            Ok(()),
        ),
        (
            "ignore_lease with a lease",
            PutRequest {
                ignore_lease: true,
                lease: 5,
                ..put_req("k", "v")
            },
            Err(MvccError::LeaseProvided),
        ),
        (
            "ignore_lease without a lease",
            PutRequest {
                ignore_lease: true,
                ..put_req("k", "v")
            },
            Ok(()),
        ),
        ("an empty key", put_req("", "v"), Err(MvccError::EmptyKey)),
    ];
    for (why, request, expected) in cases {
        info!("{why}");
        assert_eq!(validate::check_put(&request), expected, "{why}");
    }
    assert_eq!(
        MvccError::ValueProvided.to_string(),
        "etcdserver: value is provided"
    );
    assert_eq!(
        MvccError::LeaseProvided.to_string(),
        "etcdserver: lease is provided"
    );
}

#[test]
fn delete_range_reports_the_deleted_count_and_previous_records() {
    let mut s = TestStore::new();
    for key in ["a", "b", "c", "d"] {
        s.put(key, &format!("value-{key}"));
    }
    let before = s.range(range_req("a", "c")).unwrap().kvs;
    {
        info!("delete [a, c) with prev_kv: two keys, their records as they were");
        let request = DeleteRangeRequest {
            prev_kv: true,
            ..delete_req("a", "c")
        };
        let response = s.delete_with(request);
        assert_eq!(response.deleted, 2);
        assert_eq!(response.prev_kvs, before);
        assert_eq!(header_revision(&response), s.revision());
        assert_eq!(s.keys("\0", "\0"), ["c", "d"]);
    }
    {
        info!("both tombstones carry the one revision of the request");
        let revision = s.revision();
        let events = s.events("\0", "\0", revision);
        assert_eq!(events.len(), 2);
        assert!(events
            .iter()
            .all(|e| e.kv.as_ref().unwrap().mod_revision == revision));
    }
    {
        info!("without prev_kv only the count comes back");
        let response = s.delete("c", "\0");
        assert_eq!(response.deleted, 2);
        assert!(response.prev_kvs.is_empty());
        assert!(s.keys("\0", "\0").is_empty());
    }
}
