//! `Compact`: history older than the compaction revision is dropped physically; the newest
//! record of every live key at that revision, and everything after it, stays readable.

mod common;

use cairn_mvcc::MvccError;
use cairn_proto::etcdserverpb::RangeRequest;
use cairn_proto::mvccpb::event::EventType;
use cairn_proto::mvccpb::KeyValue;
use common::*;
use tracing::info;

/// Every key's record at every revision from `from` to the current one.
fn history(s: &TestStore, from: i64) -> Vec<(i64, Vec<KeyValue>)> {
    (from..=s.revision())
        .map(|revision| {
            let request = RangeRequest {
                revision,
                ..range_req("\0", "\0")
            };
            (revision, s.range(request).unwrap().kvs)
        })
        .collect()
}

/// A key rewritten many times, one deleted, one re-created, one untouched.
fn busy_store() -> TestStore {
    let mut s = TestStore::new();
    s.put("steady", "s");
    for i in 0..10 {
        s.put("hot", &format!("hot-{i}-{}", "x".repeat(200)));
    }
    s.put("gone", "g");
    s.delete("gone", "");
    s.put("reborn", "1");
    s.delete("reborn", "");
    s.put("reborn", "2");
    s
}

#[test]
fn compaction_drops_old_records_and_keeps_the_newest_of_each_live_key() {
    let mut s = busy_store();
    let at = s.revision() - 1;
    let readable_before = history(&s, at);
    let size_before = s.store.size_bytes();
    let hash_before = s.store.hash_kv(0).unwrap();
    {
        info!("compact one revision below current");
        let response = s.compact(at).unwrap();
        assert_eq!(
            header_revision(&response),
            s.revision(),
            "answered at the current revision"
        );
        assert_eq!(s.store.compact_revision(), at);
    }
    {
        info!("the engine shrank and its history checksum changed: records are gone");
        let dropped_hot_records = 9 * 200;
        assert!(
            s.store.size_bytes() + dropped_hot_records < size_before,
            "{} bytes after, {size_before} before",
            s.store.size_bytes()
        );
        let hash_after = s.store.hash_kv(0).unwrap();
        assert_ne!(hash_after.hash, hash_before.hash);
        assert_eq!(hash_after.compact_revision, at);
    }
    {
        info!("what the engine holds at or below it is exactly the newest record per live key");
        let live_at: Vec<KeyValue> = readable_before[0].1.clone();
        let mut kept: Vec<KeyValue> = s
            .records()
            .into_iter()
            .filter(|(revision, _, _)| revision.main <= at)
            .map(|(_, tombstone, kv)| {
                assert!(
                    !tombstone,
                    "no tombstone survives at or below the compaction"
                );
                kv
            })
            .collect();
        kept.sort_by(|a, b| a.key.cmp(&b.key));
        assert_eq!(kept, live_at);
    }
    {
        info!("every revision from the compaction on reads as before");
        assert_eq!(history(&s, at), readable_before);
    }
    {
        info!("below it, reads are refused");
        let request = RangeRequest {
            revision: at - 1,
            ..range_req("hot", "")
        };
        assert_eq!(s.range(request), Err(MvccError::Compacted));
    }
}

#[test]
fn compaction_forgets_keys_deleted_before_it() {
    let mut s = TestStore::new();
    s.put("gone", "1");
    s.put("gone", "2");
    s.delete("gone", "");
    s.put("kept", "1");
    assert_eq!(s.store.key_count(), 2, "a deleted key still has history");
    s.compact(s.revision()).unwrap();
    assert_eq!(s.store.key_count(), 1, "its history is gone");
    let records = s.records();
    assert!(
        records.iter().all(|(_, _, kv)| kv.key != b"gone"),
        "no record of it remains"
    );
    {
        info!("re-creating it starts a fresh generation");
        let revision = header_revision(&s.put("gone", "3"));
        let kv = s.get("gone").unwrap();
        assert_eq!((kv.create_revision, kv.version), (revision, 1));
    }
}

#[test]
fn a_delete_after_the_compaction_revision_is_kept() {
    let mut s = TestStore::new();
    s.put("k", "v");
    let at = s.revision();
    let deleted_at = header_revision(&s.delete("k", ""));
    s.put("other", "x");
    s.compact(at).unwrap();
    assert_eq!(value_of(&s.get_at("k", at).unwrap().unwrap()), "v");
    assert_eq!(s.get_at("k", deleted_at).unwrap(), None);
    let events = s.events("k", "", at);
    let types: Vec<i32> = events.iter().map(|e| e.r#type).collect();
    assert_eq!(types, [EventType::Put as i32, EventType::Delete as i32]);
}

#[test]
fn compaction_keeps_version_and_create_revision_of_live_keys() {
    let mut s = TestStore::new();
    let created = header_revision(&s.put("k", "1"));
    s.put("k", "2");
    s.put("k", "3");
    s.compact(s.revision()).unwrap();
    s.put("k", "4");
    let kv = s.get("k").unwrap();
    assert_eq!(kv.version, 4, "the version counts compacted puts too");
    assert_eq!(kv.create_revision, created);
}

#[test]
fn compaction_revision_bounds() {
    let mut s = TestStore::new();
    for i in 0..5 {
        s.put("k", &i.to_string());
    }
    let current = s.revision();
    {
        info!("above the current revision: future");
        let error = s.compact(current + 1).unwrap_err();
        assert_eq!(error, MvccError::FutureRevision);
        assert_eq!(s.store.compact_revision(), -1, "nothing happened");
    }
    {
        info!("compacting does not write a revision");
        s.compact(3).unwrap();
        assert_eq!(s.revision(), current);
    }
    {
        info!("the same revision again, or one below: compacted");
        assert_eq!(s.compact(3), Err(MvccError::Compacted));
        assert_eq!(s.compact(2), Err(MvccError::Compacted));
        assert_eq!(s.store.compact_revision(), 3);
    }
    {
        info!("a later revision, up to the current one, is fine");
        s.compact(current).unwrap();
        assert_eq!(s.store.compact_revision(), current);
        assert_eq!(value_of(&s.get("k").unwrap()), "4");
    }
}

#[test]
fn hash_kv_is_a_function_of_history() {
    let mut a = busy_store();
    let mut b = busy_store();
    {
        info!("two stores that applied the same entries agree");
        assert_eq!(a.store.hash_kv(0).unwrap(), b.store.hash_kv(0).unwrap());
    }
    let at = a.revision() - 2;
    {
        info!("compacting both the same way keeps them in agreement");
        a.compact(at).unwrap();
        b.compact(at).unwrap();
        assert_eq!(a.store.hash_kv(0).unwrap(), b.store.hash_kv(0).unwrap());
    }
    {
        info!("one more write on one side tells them apart, but not below that write");
        let revision = a.revision();
        a.put("extra", "1");
        assert_ne!(a.store.hash_kv(0).unwrap(), b.store.hash_kv(0).unwrap());
        assert_eq!(
            a.store.hash_kv(revision).unwrap(),
            b.store.hash_kv(revision).unwrap()
        );
        assert_eq!(a.store.hash_kv(at - 1), Err(MvccError::Compacted));
    }
}
