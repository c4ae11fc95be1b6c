//! `Range`: history reads, the compaction and future-revision bounds, `range_end` forms,
//! `limit`/`more`/`count`, `count_only`, `keys_only`, sorting and the revision filters — as
//! etcd 3.5's `applierV3backend.Range` does them.

mod common;

use cairn_mvcc::{validate, MvccError};
use cairn_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use cairn_proto::etcdserverpb::RangeRequest;
use cairn_proto::mvccpb::KeyValue;
use common::*;
use tracing::info;

/// Every sort target with the field it orders by.
const TARGETS: [SortTarget; 5] = [
    SortTarget::Key,
    SortTarget::Version,
    SortTarget::Create,
    SortTarget::Mod,
    SortTarget::Value,
];

/// The model of a sort: a stable sort on the target's field (ties keep key order, as the
/// store's index yields keys ascending).
fn sorted_keys(kvs: &[KeyValue], target: SortTarget, order: SortOrder) -> Vec<String> {
    let mut kvs = kvs.to_vec();
    let field = |kv: &KeyValue| -> Vec<u8> {
        match target {
            SortTarget::Key => kv.key.clone(),
            SortTarget::Value => kv.value.clone(),
            SortTarget::Version => kv.version.to_be_bytes().to_vec(),
            SortTarget::Create => kv.create_revision.to_be_bytes().to_vec(),
            SortTarget::Mod => kv.mod_revision.to_be_bytes().to_vec(),
        }
    };
    match order {
        SortOrder::None | SortOrder::Ascend => kvs.sort_by_key(|kv| field(kv)),
        SortOrder::Descend => kvs.sort_by_key(|kv| std::cmp::Reverse(field(kv))),
    }
    key_strings(&kvs)
}

fn sorted(s: &TestStore, target: SortTarget, order: SortOrder) -> Vec<String> {
    let request = RangeRequest {
        sort_target: target as i32,
        sort_order: order as i32,
        ..range_req("\0", "\0")
    };
    key_strings(&s.range(request).unwrap().kvs)
}

#[test]
fn range_reads_any_revision_of_history_and_answers_with_the_current_one() {
    let mut s = TestStore::new();
    let mut expected: Vec<(i64, Option<&str>)> = vec![(1, None)];
    {
        info!("history of one key: v1, v2, deleted, v3");
        expected.push((header_revision(&s.put("k", "v1")), Some("v1")));
        expected.push((header_revision(&s.put("k", "v2")), Some("v2")));
        expected.push((header_revision(&s.delete("k", "")), None));
        expected.push((header_revision(&s.put("k", "v3")), Some("v3")));
    }
    {
        info!("each revision reads what was written at it; the header is always current");
        let current = s.revision();
        for (revision, value) in expected {
            let request = RangeRequest {
                revision,
                ..range_req("k", "")
            };
            let response = s.range(request).unwrap();
            assert_eq!(
                response.kvs.first().map(value_of).as_deref(),
                value,
                "at {revision}"
            );
            assert_eq!(header_revision(&response), current);
        }
    }
}

#[test]
fn range_below_the_compaction_is_compacted_at_it_allowed_and_above_current_is_future() {
    let mut s = TestStore::new();
    for value in ["v1", "v2", "v3", "v4"] {
        s.put("k", value);
    }
    let compacted_at = s.revision() - 1;
    s.compact(compacted_at).unwrap();
    let at = |revision| RangeRequest {
        revision,
        ..range_req("k", "")
    };
    {
        info!("one below the compaction revision: compacted, with etcd's message");
        let error = s.range(at(compacted_at - 1)).unwrap_err();
        assert_eq!(error, MvccError::Compacted);
        assert_eq!(
            error.to_string(),
            "etcdserver: mvcc: required revision has been compacted"
        );
    }
    {
        info!("exactly the compaction revision stays readable");
        let kvs = s.range(at(compacted_at)).unwrap().kvs;
        assert_eq!(kvs[0].mod_revision, compacted_at);
        assert_eq!(value_of(&kvs[0]), "v3");
    }
    {
        info!("one past the current revision: a future revision");
        let error = s.range(at(s.revision() + 1)).unwrap_err();
        assert_eq!(error, MvccError::FutureRevision);
        assert_eq!(
            error.to_string(),
            "etcdserver: mvcc: required revision is a future revision"
        );
        assert!(
            s.range(at(s.revision())).is_ok(),
            "the current revision itself is fine"
        );
        assert!(
            s.range(at(0)).is_ok() && s.range(at(-3)).is_ok(),
            "<= 0 means current"
        );
    }
}

#[test]
fn range_end_forms_follow_etcd() {
    let mut s = TestStore::new();
    let all = ["a", "ab", "abc", "b", "c"];
    for key in all {
        s.put(key, key);
    }
    let (prefix_a, prefix_ab) = (prefix_end("a"), prefix_end("ab"));
    let cases: Vec<(&str, &str, &str, Vec<&str>)> = vec![
        ("empty range_end: exactly one key", "a", "", vec!["a"]),
        ("missing single key", "aa", "", vec![]),
        (
            "\\0 range_end: every key from key on",
            "ab",
            "\0",
            vec!["ab", "abc", "b", "c"],
        ),
        (
            "\\0 key and range_end: everything",
            "\0",
            "\0",
            all.to_vec(),
        ),
        (
            "prefix end: the prefix",
            "a",
            &prefix_a,
            vec!["a", "ab", "abc"],
        ),
        (
            "prefix end of a longer prefix",
            "ab",
            &prefix_ab,
            vec!["ab", "abc"],
        ),
        ("[key, end) excludes end", "a", "b", vec!["a", "ab", "abc"]),
        ("end == key: nothing", "b", "b", vec![]),
        ("end < key: nothing", "c", "a", vec![]),
    ];
    for (why, key, end, expected) in cases {
        info!("{why}");
        assert_eq!(s.keys(key, end), expected, "{why}");
        let count = s.range(range_req(key, end)).unwrap().count;
        assert_eq!(count, expected.len() as i64, "{why}: count");
    }
}

#[test]
fn limit_cuts_the_result_sets_more_and_count_stays_the_total() {
    let mut s = TestStore::new();
    let keys = ["k1", "k2", "k3", "k4", "k5"];
    for key in keys {
        s.put(key, "v");
    }
    for limit in 0..=7i64 {
        info!(limit, "paging with a limit");
        let request = RangeRequest {
            limit,
            ..range_req("k", &prefix_end("k"))
        };
        let response = s.range(request).unwrap();
        let shown = match limit {
            0 => keys.len(),
            limit => keys.len().min(limit as usize),
        };
        assert_eq!(
            key_strings(&response.kvs),
            keys[..shown].to_vec(),
            "limit {limit}"
        );
        assert_eq!(response.more, shown < keys.len(), "limit {limit}: more");
        assert_eq!(
            response.count,
            keys.len() as i64,
            "limit {limit}: count ignores limit"
        );
    }
    {
        info!("Kubernetes-style paging: continue after the last key, at a fixed revision");
        let revision = s.revision();
        s.put("k6", "written after the list started");
        let mut seen = Vec::new();
        let mut start = "k".to_string();
        loop {
            let request = RangeRequest {
                limit: 2,
                revision,
                ..range_req(&start, &prefix_end("k"))
            };
            let page = s.range(request).unwrap();
            seen.extend(key_strings(&page.kvs));
            if !page.more {
                break;
            }
            start = format!("{}\0", seen.last().unwrap());
        }
        assert_eq!(
            seen,
            keys.to_vec(),
            "the page walk sees exactly the snapshot"
        );
    }
}

#[test]
fn count_only_answers_the_count_without_kvs() {
    let mut s = TestStore::new();
    for key in ["a", "b", "c"] {
        s.put(key, "v");
    }
    for limit in [0, 1] {
        info!(limit, "count_only, with and without a limit");
        let request = RangeRequest {
            count_only: true,
            limit,
            ..range_req("\0", "\0")
        };
        let response = s.range(request).unwrap();
        assert!(response.kvs.is_empty());
        assert_eq!(response.count, 3);
        assert!(!response.more, "no kvs, so nothing more to page");
    }
}

#[test]
fn keys_only_drops_values_and_keeps_everything_else() {
    let mut s = TestStore::new();
    s.put("a", "value-a");
    s.put("a", "value-a2");
    s.put("b", "value-b");
    let full = s.range(range_req("\0", "\0")).unwrap();
    let keys_only = s
        .range(RangeRequest {
            keys_only: true,
            ..range_req("\0", "\0")
        })
        .unwrap();
    let without_values: Vec<KeyValue> = full
        .kvs
        .iter()
        .map(|kv| KeyValue {
            value: Vec::new(),
            ..kv.clone()
        })
        .collect();
    assert!(full.kvs.iter().all(|kv| !kv.value.is_empty()));
    assert_eq!(keys_only.kvs, without_values);
    assert_eq!(keys_only.count, full.count);
}

/// Four keys whose create, mod, version and value orders all differ from key order and from
/// each other.
fn sort_fixture() -> TestStore {
    let mut s = TestStore::new();
    s.put("c", "2"); // created first
    s.put("a", "4");
    s.put("d", "1");
    s.put("b", "3"); // created last
    s.put("d", "1"); // d: version 2
    s.put("a", "4"); // a: version 2
    s.put("a", "4"); // a: version 3, modified most recently but one
    s.put("c", "2"); // c: version 2, modified last
    s
}

#[test]
fn sort_by_every_target_in_both_orders() {
    let s = sort_fixture();
    let kvs = s.range(range_req("\0", "\0")).unwrap().kvs;
    let key_order = key_strings(&kvs);
    for target in TARGETS {
        for order in [SortOrder::Ascend, SortOrder::Descend] {
            info!(?target, ?order, "sorting");
            let expected = sorted_keys(&kvs, target, order);
            assert_eq!(sorted(&s, target, order), expected, "{target:?} {order:?}");
            if target != SortTarget::Key && order == SortOrder::Ascend {
                assert_ne!(
                    expected, key_order,
                    "the fixture must tell {target:?} from KEY"
                );
            }
        }
    }
    {
        info!("the fixture's orders, spelled out");
        assert_eq!(
            sorted(&s, SortTarget::Create, SortOrder::Ascend),
            ["c", "a", "d", "b"]
        );
        assert_eq!(
            sorted(&s, SortTarget::Mod, SortOrder::Descend),
            ["c", "a", "d", "b"]
        );
        assert_eq!(
            sorted(&s, SortTarget::Value, SortOrder::Ascend),
            ["d", "c", "b", "a"]
        );
        assert_eq!(
            sorted(&s, SortTarget::Key, SortOrder::Descend),
            ["d", "c", "b", "a"]
        );
    }
}

#[test]
fn sort_order_none_is_ascending_for_any_target_but_key() {
    let s = sort_fixture();
    for target in TARGETS {
        info!(?target, "no order given");
        assert_eq!(
            sorted(&s, target, SortOrder::None),
            sorted(&s, target, SortOrder::Ascend),
            "{target:?}"
        );
    }
    assert_eq!(
        sorted(&s, SortTarget::Key, SortOrder::None),
        ["a", "b", "c", "d"]
    );
}

#[test]
fn descending_sort_keeps_key_order_among_ties() {
    let mut s = TestStore::new();
    for key in ["d", "b", "a", "c"] {
        s.put(key, "same");
    }
    s.put("e", "zzz");
    {
        info!("equal values and versions: ties stay in key order, in both directions");
        for target in [SortTarget::Value, SortTarget::Version] {
            let descending = sorted(&s, target, SortOrder::Descend);
            let ascending = sorted(&s, target, SortOrder::Ascend);
            let ties = ["a", "b", "c", "d"];
            match target {
                SortTarget::Value => {
                    assert_eq!(descending, ["e", "a", "b", "c", "d"]);
                    assert_eq!(ascending, ["a", "b", "c", "d", "e"]);
                }
                _ => {
                    assert_eq!(&descending[..], &["a", "b", "c", "d", "e"][..]);
                    assert_eq!(&ascending[..4], &ties[..]);
                }
            }
        }
    }
}

#[test]
fn sorting_happens_before_the_limit() {
    let s = sort_fixture();
    let request = RangeRequest {
        sort_target: SortTarget::Mod as i32,
        sort_order: SortOrder::Descend as i32,
        limit: 2,
        ..range_req("\0", "\0")
    };
    let response = s.range(request).unwrap();
    let kvs = s.range(range_req("\0", "\0")).unwrap().kvs;
    let newest_two = sorted_keys(&kvs, SortTarget::Mod, SortOrder::Descend)[..2].to_vec();
    assert_eq!(
        key_strings(&response.kvs),
        newest_two,
        "the two most recently modified"
    );
    assert!(response.more);
    assert_eq!(response.count, 4);
}

/// The model of one revision filter: which records it keeps.
type Keep = Box<dyn Fn(&KeyValue) -> bool>;

#[test]
fn revision_filters_prune_by_mod_and_create_revision() {
    let s = sort_fixture();
    let kvs = s.range(range_req("\0", "\0")).unwrap().kvs;
    let filter = |request: RangeRequest| key_strings(&s.range(request).unwrap().kvs);
    let model = |keep: &dyn Fn(&KeyValue) -> bool| -> Vec<String> {
        key_strings(
            &kvs.iter()
                .filter(|kv| keep(kv))
                .cloned()
                .collect::<Vec<_>>(),
        )
    };
    let base = range_req("\0", "\0");
    for bound in 2..=s.revision() {
        info!(bound, "each filter against its model");
        let cases: [(RangeRequest, Keep); 4] = [
            (
                RangeRequest {
                    min_mod_revision: bound,
                    ..base.clone()
                },
                Box::new(move |kv| kv.mod_revision >= bound),
            ),
            (
                RangeRequest {
                    max_mod_revision: bound,
                    ..base.clone()
                },
                Box::new(move |kv| kv.mod_revision <= bound),
            ),
            (
                RangeRequest {
                    min_create_revision: bound,
                    ..base.clone()
                },
                Box::new(move |kv| kv.create_revision >= bound),
            ),
            (
                RangeRequest {
                    max_create_revision: bound,
                    ..base.clone()
                },
                Box::new(move |kv| kv.create_revision <= bound),
            ),
        ];
        for (request, keep) in cases {
            assert_eq!(filter(request.clone()), model(&*keep), "{request:?}");
            let count = s.range(request).unwrap().count;
            assert_eq!(count, kvs.len() as i64, "count is taken before pruning");
        }
    }
    {
        info!("filters and limit combine: prune first, then cut, then `more`");
        let request = RangeRequest {
            min_create_revision: 3,
            limit: 1,
            ..base.clone()
        };
        let response = s.range(request).unwrap();
        let pruned = model(&|kv| kv.create_revision >= 3);
        assert_eq!(key_strings(&response.kvs), pruned[..1].to_vec());
        assert_eq!(response.more, pruned.len() > 1);
    }
}

#[test]
fn empty_keys_are_refused_with_etcds_message() {
    let error = validate::check_range(&range_req("", "")).unwrap_err();
    assert_eq!(error, MvccError::EmptyKey);
    assert_eq!(error.to_string(), "etcdserver: key is not provided");
    assert_eq!(
        validate::check_range(&range_req("", "\0")),
        Err(MvccError::EmptyKey)
    );
    assert_eq!(validate::check_range(&range_req("\0", "\0")), Ok(()));
    assert_eq!(
        validate::check_delete_range(&delete_req("", "z")),
        Err(MvccError::EmptyKey)
    );
    assert_eq!(
        validate::check_put(&put_req("", "v")),
        Err(MvccError::EmptyKey)
    );
}
