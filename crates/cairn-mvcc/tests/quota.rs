//! The storage quota: a write that would push the store past `quota_backend_bytes` raises the
//! NOSPACE alarm and is refused; while it is raised, everything that would grow the store is
//! refused and everything that shrinks or only reads it works; disarming it and compacting
//! frees the store again (etcd's `quotaApplierV3` and `applierV3Capped`).

mod common;

use cairn_mvcc::limits::QUOTA_PUT_OVERHEAD_BYTES;
use cairn_mvcc::{MvccError, StoreConfig};
use cairn_proto::etcdserverpb::alarm_request::AlarmAction;
use cairn_proto::etcdserverpb::{AlarmMember, AlarmType};
use common::*;
use tracing::info;

const MEMBER: u64 = 7;
const QUOTA_BYTES: u64 = 16 * 1024;
const NOSPACE: (u64, i32) = (MEMBER, AlarmType::Nospace as i32);

fn small_store() -> TestStore {
    TestStore::with_config(StoreConfig {
        quota_backend_bytes: QUOTA_BYTES,
        member_id: MEMBER,
        ..StoreConfig::default()
    })
}

/// Writes 1 KiB values to fresh keys until the quota refuses one; returns how many fit.
fn fill(s: &mut TestStore) -> usize {
    let value = "x".repeat(1024);
    for i in 0.. {
        assert!(
            i < 64,
            "a 16 KiB quota must refuse a 1 KiB write before 64 of them"
        );
        match s.try_put(put_req(&format!("big/{i:02}"), &value)) {
            Ok(_) => continue,
            Err(MvccError::NoSpace) => return i,
            Err(other) => panic!("unexpected {other}"),
        }
    }
    unreachable!()
}

#[test]
fn a_write_past_the_quota_raises_nospace_and_is_refused() {
    let mut s = small_store();
    let stored;
    {
        info!("fill the store with 1 KiB writes until one is refused");
        stored = fill(&mut s);
        assert!(stored > 0, "the first writes fit");
        assert!(
            s.store.size_bytes() < QUOTA_BYTES,
            "the store never went past the quota"
        );
        assert_eq!(s.keys("big/", &prefix_end("big/")).len(), stored);
    }
    {
        info!("the refusal raised NOSPACE on this member, visible to an alarm GET");
        assert_eq!(s.store.alarms(), vec![NOSPACE]);
        let response = s.alarm(AlarmAction::Get, 0, AlarmType::None);
        let raised = AlarmMember {
            member_id: MEMBER,
            alarm: AlarmType::Nospace as i32,
        };
        assert_eq!(response.alarms, vec![raised]);
        assert_eq!(
            MvccError::NoSpace.to_string(),
            "etcdserver: mvcc: database space exceeded"
        );
    }
    let before = s.revision();
    {
        info!("while raised, even a tiny put, a writing txn and a lease grant are refused");
        assert_eq!(s.try_put(put_req("tiny", "1")), Err(MvccError::NoSpace));
        let writing = txn(vec![], vec![put_op("tiny", "1")], vec![]);
        assert_eq!(s.txn(writing), Err(MvccError::NoSpace));
        let nested = txn(
            vec![],
            vec![txn_op(txn(vec![], vec![put_op("tiny", "1")], vec![]))],
            vec![],
        );
        assert_eq!(
            s.txn(nested),
            Err(MvccError::NoSpace),
            "nested puts count too"
        );
        assert_eq!(s.grant(1, 60), Err(MvccError::NoSpace));
        assert_eq!(s.revision(), before);
        assert_eq!(s.get("tiny"), None);
    }
    {
        info!("reads, read-only txns, deletes and deleting txns still work");
        assert!(s.get("big/00").is_some());
        let reading = txn(vec![], vec![range_op("big/00", "")], vec![]);
        assert!(s.txn(reading).unwrap().succeeded);
        assert_eq!(s.delete("big/00", "").deleted, 1);
        let deleting = txn(vec![], vec![delete_op("big/01", "")], vec![]);
        assert!(s.txn(deleting).unwrap().succeeded);
        assert_eq!(s.revision(), before + 2);
    }
}

#[test]
fn disarming_the_alarm_and_compacting_lets_writes_in_again() {
    let mut s = small_store();
    fill(&mut s);
    assert_eq!(s.store.alarms(), vec![NOSPACE]);
    {
        info!("delete everything and compact: the space is free, but the alarm still stands");
        s.delete("big/", &prefix_end("big/"));
        s.compact(s.revision()).unwrap();
        assert_eq!(s.try_put(put_req("after", "1")), Err(MvccError::NoSpace));
    }
    {
        info!("disarming someone else's alarm changes nothing");
        let response = s.alarm(AlarmAction::Deactivate, MEMBER + 1, AlarmType::Nospace);
        assert!(response.alarms.is_empty());
        assert_eq!(s.store.alarms(), vec![NOSPACE]);
    }
    {
        info!("disarming ours lets writes in again");
        let response = s.alarm(AlarmAction::Deactivate, MEMBER, AlarmType::Nospace);
        assert_eq!(response.alarms.len(), 1);
        assert!(s.store.alarms().is_empty());
        s.put("after", "1");
        assert_eq!(value_of(&s.get("after").unwrap()), "1");
        s.grant(1, 60).unwrap();
    }
}

#[test]
fn disarming_without_freeing_space_trips_the_alarm_again() {
    let mut s = small_store();
    fill(&mut s);
    s.alarm(AlarmAction::Deactivate, MEMBER, AlarmType::Nospace);
    assert!(s.store.alarms().is_empty());
    let value = "x".repeat(1024);
    assert_eq!(
        s.try_put(put_req("big/again", &value)),
        Err(MvccError::NoSpace)
    );
    assert_eq!(s.store.alarms(), vec![NOSPACE]);
}

#[test]
fn a_txn_costs_its_larger_branch_not_both() {
    // etcd's costTxn: only one branch runs, so the quota charges the larger one.
    let mut s = small_store();
    {
        info!("fill the store, disarm, and free the room of two 1 KiB writes");
        fill(&mut s);
        s.alarm(AlarmAction::Deactivate, MEMBER, AlarmType::Nospace);
        s.delete("big/00", "");
        s.delete("big/01", "");
        s.compact(s.revision()).unwrap();
    }
    let room = QUOTA_BYTES - s.store.size_bytes();
    {
        info!(
            room,
            "a put in each branch, each costing all but 100 bytes of the room"
        );
        let key_len = "then".len() as u64;
        let value_len = room - 100 - QUOTA_PUT_OVERHEAD_BYTES - key_len;
        let value = "x".repeat(value_len as usize);
        let one_branch = key_len + value_len + QUOTA_PUT_OVERHEAD_BYTES;
        assert!(
            one_branch < room && 2 * one_branch > room,
            "one branch fits, both do not"
        );
        let request = txn(
            vec![],
            vec![put_op("then", &value)],
            vec![put_op("else", &value)],
        );
        assert!(s.txn(request).unwrap().succeeded);
        assert!(s.store.alarms().is_empty());
        assert!(s.get("then").is_some());
    }
}
