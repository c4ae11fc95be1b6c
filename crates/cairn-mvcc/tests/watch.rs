//! Watch history (`KvStore::watch_events`): replay from a start revision in revision order,
//! key-range and NOPUT/NODELETE filters, prev_kv, whole revisions per read, resuming without
//! gaps or duplicates, and cancellation when the start revision is compacted.

mod common;

use cairn_mvcc::limits::WATCH_BATCH_REVISIONS_MAX;
use cairn_mvcc::watch::{WatchFilter, WatchRead};
use cairn_proto::mvccpb::event::EventType;
use cairn_proto::mvccpb::Event;
use common::*;
use tracing::info;

const PUT: i32 = EventType::Put as i32;
const DELETE: i32 = EventType::Delete as i32;

/// (type, key, value, mod_revision) of each event, for readable comparisons.
fn summary(events: &[Event]) -> Vec<(i32, String, String, i64)> {
    events
        .iter()
        .map(|e| {
            let kv = e.kv.as_ref().expect("events carry a kv");
            (e.r#type, text(&kv.key), value_of(kv), kv.mod_revision)
        })
        .collect()
}

fn read(s: &TestStore, filter: &WatchFilter, from: i64, events_max: usize) -> (Vec<Event>, i64) {
    match s.store.watch_events(filter, from, events_max) {
        WatchRead::Events {
            events,
            next_revision,
        } => (events, next_revision),
        WatchRead::Compacted { compact_revision } => panic!("compacted at {compact_revision}"),
    }
}

/// put a (2), put b (3), delete a (4), txn put a + put c (5), put other (6).
fn scripted() -> TestStore {
    let mut s = TestStore::new();
    s.put("a", "a1");
    s.put("b", "b1");
    s.delete("a", "");
    s.txn(txn(
        vec![],
        vec![put_op("a", "a2"), put_op("c", "c1")],
        vec![],
    ))
    .unwrap();
    s.put("z/other", "o");
    s
}

#[test]
fn replay_from_a_start_revision_returns_history_in_order() {
    let s = scripted();
    let filter = watch_filter("a", "z");
    {
        info!("from revision 3: everything from 3 on, in revision and sub revision order");
        let (events, next) = read(&s, &filter, 3, usize::MAX);
        assert_eq!(
            summary(&events),
            vec![
                (PUT, "b".into(), "b1".into(), 3),
                (DELETE, "a".into(), "".into(), 4),
                (PUT, "a".into(), "a2".into(), 5),
                (PUT, "c".into(), "c1".into(), 5),
            ]
        );
        assert_eq!(
            next,
            s.revision() + 1,
            "complete up to the current revision"
        );
    }
    {
        info!(
            "replay equals the writes: every event's kv is what a range read at its revision saw"
        );
        let (events, _) = read(&s, &filter, 1, usize::MAX);
        for event in events.iter().filter(|e| e.r#type == PUT) {
            let kv = event.kv.as_ref().unwrap();
            let at = s.get_at(&text(&kv.key), kv.mod_revision).unwrap();
            assert_eq!(at.as_ref(), Some(kv));
        }
    }
    {
        info!("a watcher that is current gets nothing and stays put");
        let (events, next) = read(&s, &filter, s.revision() + 1, usize::MAX);
        assert!(events.is_empty());
        assert_eq!(next, s.revision() + 1);
    }
    {
        info!("a start revision in the future: nothing yet, and no progress past it");
        let (events, next) = read(&s, &filter, s.revision() + 10, usize::MAX);
        assert!(events.is_empty());
        assert_eq!(next, s.revision() + 10);
    }
}

#[test]
fn events_are_limited_to_the_watched_range() {
    let s = scripted();
    let keys = |key: &str, end: &str| -> Vec<String> {
        summary(&s.events(key, end, 1))
            .into_iter()
            .map(|(_, key, _, _)| key)
            .collect()
    };
    assert_eq!(keys("a", ""), ["a", "a", "a"]);
    assert_eq!(keys("b", "c"), ["b"]);
    assert_eq!(keys("z/", &prefix_end("z/")), ["z/other"]);
    assert_eq!(keys("c", "\0"), ["c", "z/other"]);
    assert!(keys("q", "r").is_empty());
}

#[test]
fn prev_kv_carries_the_record_before_each_change_except_creations() {
    let mut s = TestStore::new();
    s.put("k", "v1");
    let first = s.get("k").unwrap();
    s.put("k", "v2");
    let second = s.get("k").unwrap();
    s.delete("k", "");
    s.put("k", "v3");
    let filter = WatchFilter {
        prev_kv: true,
        ..watch_filter("k", "")
    };
    let (events, _) = read(&s, &filter, 1, usize::MAX);
    let prev: Vec<Option<_>> = events.iter().map(|e| e.prev_kv.clone()).collect();
    assert_eq!(
        prev,
        vec![None, Some(first), Some(second), None],
        "create, update, delete, create"
    );
    {
        info!("without prev_kv the field stays empty");
        assert!(s.events("k", "", 1).iter().all(|e| e.prev_kv.is_none()));
    }
}

#[test]
fn no_put_and_no_delete_filters_drop_their_event_type() {
    let s = scripted();
    let all = s.events("\0", "\0", 1);
    for (no_put, no_delete) in [(true, false), (false, true), (true, true)] {
        info!(no_put, no_delete, "filtering");
        let filter = WatchFilter {
            no_put,
            no_delete,
            ..watch_filter("\0", "\0")
        };
        let (events, next) = read(&s, &filter, 1, usize::MAX);
        let expected: Vec<Event> = all
            .iter()
            .filter(|e| match e.r#type {
                PUT => !no_put,
                _ => !no_delete,
            })
            .cloned()
            .collect();
        assert_eq!(events, expected);
        assert_eq!(next, s.revision() + 1, "filtered watchers still progress");
    }
}

#[test]
fn a_revision_is_never_split_across_reads() {
    let mut s = TestStore::new();
    s.put("before", "1");
    let ops: Vec<_> = (0..5).map(|i| put_op(&format!("t{i}"), "v")).collect();
    let txn_revision = header_revision(&s.txn(txn(vec![], ops, vec![])).unwrap());
    s.put("after", "1");
    let filter = watch_filter("\0", "\0");
    {
        info!("events_max 2 would cut the txn's five events: all five come together");
        let (events, next) = read(&s, &filter, txn_revision, 2);
        assert_eq!(events.len(), 5);
        assert!(events
            .iter()
            .all(|e| e.kv.as_ref().unwrap().mod_revision == txn_revision));
        assert_eq!(
            next,
            txn_revision + 1,
            "and the read stops right after that revision"
        );
    }
    {
        info!("events_max 1 starting one revision earlier: that revision only");
        let (events, next) = read(&s, &filter, txn_revision - 1, 1);
        assert_eq!(
            summary(&events),
            vec![(PUT, "before".into(), "1".into(), txn_revision - 1)]
        );
        assert_eq!(next, txn_revision);
    }
}

#[test]
fn resuming_from_next_revision_sees_every_event_exactly_once() {
    let mut s = TestStore::new();
    {
        info!("a mixed history: single writes, multi-key txns, range deletes");
        for i in 0..30 {
            s.put(&format!("k{}", i % 7), &format!("v{i}"));
            if i % 5 == 0 {
                let ops = vec![put_op("m1", &i.to_string()), put_op("m2", &i.to_string())];
                s.txn(txn(vec![], ops, vec![])).unwrap();
            }
            if i % 9 == 0 {
                s.delete("k", &prefix_end("k"));
            }
        }
    }
    let filter = watch_filter("\0", "\0");
    let all = s.events("\0", "\0", 1);
    for events_max in [1, 2, 3, 100] {
        info!(events_max, "catching up in small reads");
        let mut from = 1;
        let mut collected = Vec::new();
        loop {
            let (events, next) = read(&s, &filter, from, events_max);
            assert!(next > from || from > s.revision(), "reads always progress");
            if let (Some(first), Some(last)) = (events.first(), events.last()) {
                assert!(first.kv.as_ref().unwrap().mod_revision >= from);
                assert!(last.kv.as_ref().unwrap().mod_revision < next);
            }
            collected.extend(events);
            if next > s.revision() {
                break;
            }
            from = next;
        }
        assert_eq!(collected, all, "no gap, no duplicate, same order");
    }
}

#[test]
fn a_catch_up_read_covers_at_most_the_batch_revision_limit() {
    let mut s = TestStore::new();
    let writes = WATCH_BATCH_REVISIONS_MAX + 5;
    for i in 0..writes {
        s.put("k", &i.to_string());
    }
    let filter = watch_filter("k", "");
    let (events, next) = read(&s, &filter, 2, usize::MAX);
    assert_eq!(events.len(), WATCH_BATCH_REVISIONS_MAX);
    assert_eq!(next, 2 + WATCH_BATCH_REVISIONS_MAX as i64);
    let (rest, next) = read(&s, &filter, next, usize::MAX);
    assert_eq!(rest.len(), 5);
    assert_eq!(next, s.revision() + 1);
}

#[test]
fn a_watch_from_a_compacted_revision_is_cancelled_with_the_compact_revision() {
    let mut s = scripted();
    let at = 4;
    let after_before_compaction = s.events("\0", "\0", at + 1);
    s.compact(at).unwrap();
    let filter = watch_filter("\0", "\0");
    {
        info!("below the compaction: cancelled, told where history starts");
        let read = s.store.watch_events(&filter, at - 1, usize::MAX);
        assert_eq!(
            read,
            WatchRead::Compacted {
                compact_revision: at
            }
        );
    }
    {
        info!("at the compaction revision: served; every event after it is intact");
        let (events, next) = read(&s, &filter, at, usize::MAX);
        assert_eq!(next, s.revision() + 1);
        let after: Vec<Event> = events
            .into_iter()
            .filter(|e| e.kv.as_ref().unwrap().mod_revision > at)
            .collect();
        assert_eq!(after, after_before_compaction);
    }
}

#[test]
fn delete_events_carry_the_key_and_the_deleting_revision() {
    let mut s = TestStore::new();
    s.put("a", "1");
    s.put("b", "2");
    let revision = header_revision(&s.delete("a", "c"));
    let events = s.events("\0", "\0", revision);
    for event in &events {
        let kv = event.kv.as_ref().unwrap();
        assert_eq!(event.r#type, DELETE);
        assert_eq!(kv.mod_revision, revision);
        assert_eq!((kv.create_revision, kv.version, kv.lease), (0, 0, 0));
        assert!(kv.value.is_empty());
    }
    assert_eq!(
        summary(&events)
            .into_iter()
            .map(|e| e.1)
            .collect::<Vec<_>>(),
        ["a", "b"]
    );
}
