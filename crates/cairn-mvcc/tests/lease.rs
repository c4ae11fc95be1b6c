//! Leases: grant (minimum and maximum TTL, duplicate ids), keep-alive from the entry's time,
//! expiry as the leader's loop sees it, revocation deleting every attached key in one
//! revision, TimeToLive and Leases.

mod common;

use cairn_mvcc::limits::{LEASE_TTL_S_MAX, LEASE_TTL_S_MIN};
use cairn_mvcc::{validate, MvccError};
use cairn_proto::etcdserverpb::LeaseGrantRequest;
use cairn_proto::mvccpb::event::EventType;
use common::*;
use tracing::info;

const SECOND_MS: i64 = 1000;

fn ttl_keys(s: &TestStore, id: i64) -> Vec<String> {
    let response = s.store.lease_time_to_live(id, true, s.now_ms);
    response.keys.iter().map(|key| text(key)).collect()
}

fn lease_ids(s: &TestStore) -> Vec<i64> {
    s.store.lease_leases().leases.iter().map(|l| l.id).collect()
}

#[test]
fn a_grant_below_the_minimum_ttl_is_raised_to_it() {
    let mut s = TestStore::new();
    assert_eq!(
        LEASE_TTL_S_MIN, 2,
        "1.5 x the 1 s election timeout, rounded up"
    );
    for (id, asked, granted) in [
        (1, 0, LEASE_TTL_S_MIN),
        (2, 1, LEASE_TTL_S_MIN),
        (3, 2, 2),
        (4, 60, 60),
    ] {
        info!(asked, "granting");
        let response = s.grant(id, asked).unwrap();
        assert_eq!((response.id, response.ttl), (id, granted));
        let ttl = s.store.lease_time_to_live(id, false, s.now_ms);
        assert_eq!((ttl.granted_ttl, ttl.ttl), (granted, granted));
        let lease = s.store.leases().get(id).unwrap();
        assert_eq!(lease.expiry_unix_ms, s.now_ms + granted * SECOND_MS);
    }
}

#[test]
fn a_grant_above_the_maximum_ttl_or_with_a_taken_id_is_refused() {
    let mut s = TestStore::new();
    {
        info!("one second above etcd's MaxLeaseTTL: refused at the edge and at apply");
        let error = s.grant(1, LEASE_TTL_S_MAX + 1).unwrap_err();
        assert_eq!(error, MvccError::LeaseTtlTooLarge);
        assert_eq!(error.to_string(), "etcdserver: too large lease TTL");
        let request = LeaseGrantRequest {
            ttl: LEASE_TTL_S_MAX + 1,
            id: 1,
        };
        assert_eq!(
            validate::check_lease_grant(&request),
            Err(MvccError::LeaseTtlTooLarge)
        );
        assert!(s.store.leases().is_empty());
    }
    {
        info!("exactly the maximum is allowed");
        assert_eq!(s.grant(1, LEASE_TTL_S_MAX).unwrap().ttl, LEASE_TTL_S_MAX);
    }
    {
        info!("granting a taken id again: lease exists, the first grant unchanged");
        let expiry = s.store.leases().get(1).unwrap().expiry_unix_ms;
        s.advance_ms(5 * SECOND_MS);
        let error = s.grant(1, 10).unwrap_err();
        assert_eq!(error, MvccError::LeaseExists);
        assert_eq!(error.to_string(), "etcdserver: lease already exists");
        let lease = s.store.leases().get(1).unwrap();
        assert_eq!(
            (lease.ttl_s, lease.expiry_unix_ms),
            (LEASE_TTL_S_MAX, expiry)
        );
    }
}

#[test]
fn clients_may_choose_negative_lease_ids() {
    let mut s = TestStore::new();
    s.grant(-7, 30).unwrap();
    s.put_with_lease("k", "v", -7);
    assert_eq!(ttl_keys(&s, -7), ["k"]);
    s.restart();
    assert_eq!(ttl_keys(&s, -7), ["k"], "a negative id survives a restart");
    s.revoke(-7).unwrap();
    assert_eq!(s.get("k"), None);
}

#[test]
fn keep_alive_extends_the_lease_from_the_entrys_time() {
    let mut s = TestStore::new();
    let granted_at = s.now_ms;
    s.grant(1, 10).unwrap();
    {
        info!("seven seconds later, 3 s remain");
        s.advance_ms(7 * SECOND_MS);
        assert_eq!(s.store.lease_time_to_live(1, false, s.now_ms).ttl, 3);
    }
    {
        info!("a keep-alive stamped now restores the full TTL from now");
        let before = s.revision();
        let response = s.keep_alive(1).unwrap();
        assert_eq!((response.id, response.ttl), (1, 10));
        assert_eq!(
            header_revision(&response),
            before,
            "keep-alive writes no revision"
        );
        let expiry = s.store.leases().get(1).unwrap().expiry_unix_ms;
        assert_eq!(expiry, s.now_ms + 10 * SECOND_MS);
        assert!(expiry > granted_at + 10 * SECOND_MS);
        assert_eq!(s.store.lease_time_to_live(1, false, s.now_ms).ttl, 10);
    }
    {
        info!("the leader's expiry loop: not expired at the old deadline, expired at the new one");
        let leases = s.store.leases();
        assert!(leases.expired(granted_at + 10 * SECOND_MS, 10).is_empty());
        assert_eq!(
            leases.expired(s.now_ms + 10 * SECOND_MS - 1, 10),
            Vec::<i64>::new()
        );
        assert_eq!(leases.expired(s.now_ms + 10 * SECOND_MS, 10), vec![1]);
    }
    {
        info!("once expired, a keep-alive cannot bring it back");
        s.advance_ms(10 * SECOND_MS);
        let error = s.keep_alive(1).unwrap_err();
        assert_eq!(error, MvccError::LeaseNotFound);
        assert_eq!(
            s.store.lease_time_to_live(1, false, s.now_ms).ttl,
            0,
            "never negative"
        );
    }
    {
        info!("an unknown lease cannot be kept alive either");
        assert_eq!(s.keep_alive(404), Err(MvccError::LeaseNotFound));
    }
}

#[test]
fn expired_lists_leases_soonest_first_up_to_max() {
    let mut s = TestStore::new();
    for (id, ttl) in [(10, 30), (20, 5), (30, 10), (40, 60)] {
        s.grant(id, ttl).unwrap();
    }
    let now = s.now_ms;
    let leases = s.store.leases();
    assert!(leases.expired(now + 4 * SECOND_MS, 10).is_empty());
    assert_eq!(leases.expired(now + 30 * SECOND_MS, 10), vec![20, 30, 10]);
    assert_eq!(leases.expired(now + 30 * SECOND_MS, 2), vec![20, 30]);
    assert_eq!(leases.expired(i64::MAX, 10), vec![20, 30, 10, 40]);
}

#[test]
fn revoke_deletes_every_attached_key_in_one_revision() {
    let mut s = TestStore::new();
    s.grant(1, 60).unwrap();
    for key in ["c", "a", "b"] {
        s.put_with_lease(key, "v", 1);
    }
    s.put("unrelated", "stays");
    let before = s.revision();
    {
        info!("revoking the lease");
        let response = s.revoke(1).unwrap();
        assert_eq!(header_revision(&response), before + 1);
        assert_eq!(
            s.revision(),
            before + 1,
            "one revision for all three deletes"
        );
    }
    {
        info!("all attached keys are gone, in key order, in that one revision");
        let events = s.events("\0", "\0", before + 1);
        let deleted: Vec<String> = events
            .iter()
            .map(|e| {
                assert_eq!(e.r#type, EventType::Delete as i32);
                assert_eq!(e.kv.as_ref().unwrap().mod_revision, before + 1);
                text(&e.kv.as_ref().unwrap().key)
            })
            .collect();
        assert_eq!(deleted, ["a", "b", "c"]);
        assert_eq!(s.keys("\0", "\0"), ["unrelated"]);
    }
    {
        info!("the lease itself is gone");
        assert!(lease_ids(&s).is_empty());
        assert_eq!(s.store.lease_time_to_live(1, true, s.now_ms).ttl, -1);
        assert_eq!(s.revoke(1), Err(MvccError::LeaseNotFound));
    }
}

#[test]
fn revoking_a_lease_without_keys_writes_no_revision() {
    let mut s = TestStore::new();
    s.grant(1, 60).unwrap();
    s.put("k", "v");
    let before = s.revision();
    let response = s.revoke(1).unwrap();
    assert_eq!(header_revision(&response), before);
    assert_eq!(s.revision(), before);
}

#[test]
fn keys_leave_a_lease_when_deleted_or_rewritten() {
    let mut s = TestStore::new();
    s.grant(1, 60).unwrap();
    s.put_with_lease("deleted", "v", 1);
    s.put_with_lease("rewritten", "v", 1);
    s.put_with_lease("kept", "v", 1);
    {
        info!("delete one, rewrite one without the lease, recreate the deleted one bare");
        s.delete("deleted", "");
        s.put("rewritten", "v2");
        s.put("deleted", "back, without a lease");
        assert_eq!(ttl_keys(&s, 1), ["kept"]);
    }
    {
        info!("revoking now deletes only the key still attached");
        s.revoke(1).unwrap();
        assert_eq!(s.keys("\0", "\0"), ["deleted", "rewritten"]);
    }
}

#[test]
fn time_to_live_and_leases_describe_granted_leases() {
    let mut s = TestStore::new();
    {
        info!("an unknown lease: TTL -1, as etcd");
        let unknown = s.store.lease_time_to_live(5, true, s.now_ms);
        assert_eq!((unknown.id, unknown.ttl, unknown.granted_ttl), (5, -1, 0));
        assert!(unknown.keys.is_empty());
    }
    s.grant(5, 30).unwrap();
    s.grant(3, 30).unwrap();
    s.put_with_lease("b", "v", 5);
    s.put_with_lease("a", "v", 5);
    {
        info!("keys only when asked for");
        assert_eq!(ttl_keys(&s, 5), ["a", "b"]);
        assert!(s
            .store
            .lease_time_to_live(5, false, s.now_ms)
            .keys
            .is_empty());
    }
    {
        info!("remaining TTL counts down in whole seconds, truncated");
        s.advance_ms(1_500);
        assert_eq!(s.store.lease_time_to_live(5, false, s.now_ms).ttl, 28);
    }
    {
        info!("Leases lists every id");
        assert_eq!(lease_ids(&s), vec![3, 5]);
        assert_eq!(header_revision(&s.store.lease_leases()), s.revision());
    }
}
