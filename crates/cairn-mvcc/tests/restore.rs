//! Restore: a store reopened from its snapshot bytes is the same state machine — the same
//! reads at every revision, revisions, compaction point, leases with their expiry and keys,
//! alarms and applied index — and it applies the next entries exactly as a store that never
//! restarted.

mod common;

use cairn_mvcc::MvccError;
use cairn_proto::etcdserverpb::alarm_request::AlarmAction;
use cairn_proto::etcdserverpb::{AlarmType, PutRequest, RangeRequest};
use common::*;
use tracing::info;

/// Everything a client or the node can observe of a store, at one clock reading.
#[derive(Debug, PartialEq)]
struct Observed {
    current_revision: i64,
    compact_revision: i64,
    applied_index: u64,
    history: Vec<Result<Vec<cairn_proto::mvccpb::KeyValue>, MvccError>>,
    hash: cairn_mvcc::hash::KvHash,
    key_count: usize,
    leases: Vec<(i64, i64, i64, Vec<Vec<u8>>)>,
    expiry: Vec<(i64, i64)>,
    expired_soon: Vec<i64>,
    alarms: Vec<(u64, i32)>,
}

fn observe(s: &TestStore) -> Observed {
    let history = (1..=s.revision())
        .map(|revision| {
            let request = RangeRequest {
                revision,
                ..range_req("\0", "\0")
            };
            s.range(request).map(|response| response.kvs)
        })
        .collect();
    let ids: Vec<i64> = s.store.lease_leases().leases.iter().map(|l| l.id).collect();
    let leases = ids
        .iter()
        .map(|id| {
            let ttl = s.store.lease_time_to_live(*id, true, s.now_ms);
            (ttl.id, ttl.ttl, ttl.granted_ttl, ttl.keys)
        })
        .collect();
    let expiry = ids
        .iter()
        .map(|id| (*id, s.store.leases().get(*id).unwrap().expiry_unix_ms))
        .collect();
    Observed {
        current_revision: s.revision(),
        compact_revision: s.store.compact_revision(),
        applied_index: s.store.applied_index(),
        history,
        hash: s.store.hash_kv(0).unwrap(),
        key_count: s.store.key_count(),
        leases,
        expiry,
        expired_soon: s.store.leases().expired(s.now_ms + 20_000, 100),
        alarms: s.store.alarms(),
    }
}

/// A store with every kind of state: history, a compaction, leases with keys and renewed
/// expiries, and an alarm.
fn rich_store() -> TestStore {
    let mut s = TestStore::new();
    s.put("t1", "0");
    for i in 0..5 {
        s.put("hot", &format!("v{i}"));
    }
    s.put("doomed", "x");
    s.delete("doomed", "");
    s.grant(100, 15).unwrap();
    s.grant(200, 60).unwrap();
    s.put_with_lease("leased/a", "1", 100);
    s.put_with_lease("leased/b", "1", 200);
    s.txn(txn(
        vec![],
        vec![put_op("t1", "1"), put_op("t2", "2"), delete_op("hot", "")],
        vec![],
    ))
    .unwrap();
    s.compact(s.revision()).unwrap();
    s.put("hot", "reborn");
    s.advance_ms(4_000);
    s.keep_alive(200).unwrap();
    s.alarm(AlarmAction::Activate, 3, AlarmType::Corrupt);
    s
}

#[test]
fn a_restarted_store_observes_exactly_as_before() {
    let mut s = rich_store();
    let before = observe(&s);
    {
        info!("the fixture holds what the test claims to cover");
        assert!(before.compact_revision > 1);
        assert!(
            before.history.iter().any(|read| read.is_err()),
            "some history is compacted"
        );
        assert_eq!(before.leases.len(), 2);
        assert_eq!(before.alarms, vec![(3, AlarmType::Corrupt as i32)]);
    }
    {
        info!("restart from the snapshot bytes and compare everything");
        s.restart();
        assert_eq!(observe(&s), before);
    }
}

/// One request (or a few) applied the same way to two stores.
type Step = Box<dyn Fn(&mut TestStore)>;

#[test]
fn a_restarted_store_applies_the_next_entries_like_one_that_never_stopped() {
    let mut running = rich_store();
    let mut restarted = running.twin();
    let steps: Vec<(&str, Step)> = vec![
        (
            "put a key compacted down to one record",
            Box::new(|s| {
                s.put("t1", "again");
            }),
        ),
        (
            "put a key re-created after compaction",
            Box::new(|s| {
                s.put("hot", "again");
            }),
        ),
        (
            "put with prev_kv and ignore_lease",
            Box::new(|s| {
                let request = PutRequest {
                    prev_kv: true,
                    ignore_lease: true,
                    ..put_req("leased/a", "2")
                };
                s.try_put(request).unwrap();
            }),
        ),
        (
            "revoke a lease",
            Box::new(|s| {
                s.revoke(100).unwrap();
            }),
        ),
        (
            "keep the other alive later",
            Box::new(|s| {
                s.advance_ms(1_000);
                s.keep_alive(200).unwrap();
            }),
        ),
        (
            "compact again",
            Box::new(|s| {
                s.compact(s.revision()).unwrap();
            }),
        ),
    ];
    for (why, step) in steps {
        info!("{why}");
        step(&mut running);
        step(&mut restarted);
        assert_eq!(observe(&restarted), observe(&running), "after: {why}");
        assert_eq!(restarted.records(), running.records(), "after: {why}");
    }
}

#[test]
fn version_and_create_revision_survive_compaction_and_restart() {
    let mut s = TestStore::new();
    let created = header_revision(&s.put("k", "1"));
    s.put("k", "2");
    s.put("k", "3");
    s.put("other", "x");
    {
        info!("compact so that only k's newest record is left, then restart");
        s.compact(s.revision()).unwrap();
        s.restart();
        let kv = s.get("k").unwrap();
        assert_eq!((kv.create_revision, kv.version), (created, 3));
    }
    {
        info!("the next put continues the generation: version 4, same create_revision");
        s.put("k", "4");
        let kv = s.get("k").unwrap();
        assert_eq!((kv.create_revision, kv.version), (created, 4));
    }
}

#[test]
fn restart_keeps_lease_expiry_so_remaining_ttl_survives() {
    let mut s = TestStore::new();
    s.grant(1, 30).unwrap();
    s.put_with_lease("k", "v", 1);
    s.advance_ms(10_000);
    let expiry = s.store.leases().get(1).unwrap().expiry_unix_ms;
    s.restart();
    {
        info!("the expiry is a stored time stamp, so 20 s remain after the restart");
        assert_eq!(s.store.leases().get(1).unwrap().expiry_unix_ms, expiry);
        assert_eq!(s.store.lease_time_to_live(1, false, s.now_ms).ttl, 20);
        assert_eq!(s.store.leases().expired(expiry, 10), vec![1]);
    }
    {
        info!("and the expiry loop's revoke still deletes the attached key");
        s.now_ms = expiry;
        s.revoke(1).unwrap();
        assert_eq!(s.get("k"), None);
    }
}

#[test]
fn a_raised_nospace_alarm_survives_a_restart() {
    let mut s = TestStore::new();
    s.alarm(
        AlarmAction::Activate,
        s.config.member_id,
        AlarmType::Nospace,
    );
    s.restart();
    assert_eq!(s.try_put(put_req("k", "v")), Err(MvccError::NoSpace));
}

#[test]
#[should_panic(expected = "is not after the applied index")]
fn replaying_an_applied_entry_after_restart_is_a_caller_bug() {
    let mut s = TestStore::new();
    s.put("k", "v");
    s.restart();
    let applied = s.store.applied_index();
    assert_eq!(applied, 1, "the applied index survives the restart");
    let entry = cairn_proto::cairnpb::InternalRequest {
        now_unix_ms: s.now_ms,
        request: Some(cairn_proto::cairnpb::internal_request::Request::Put(
            put_req("k", "again"),
        )),
        ..Default::default()
    };
    let _ = s.store.apply(applied, &entry);
}
