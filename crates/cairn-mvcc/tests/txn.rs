//! `Txn`: compares on every target with every result, over keys, ranges and missing keys;
//! nested txns; reads that see the txn's own writes; sub-response headers; atomicity; and the
//! request checks (`validate::check_txn`: op limits, duplicate keys, empty keys).

mod common;

use std::cmp::Ordering;

use cairn_mvcc::limits::TXN_OPS_MAX_DEFAULT;
use cairn_mvcc::{validate, MvccError};
use cairn_proto::etcdserverpb::compare::CompareResult::{self, Equal, Greater, Less, NotEqual};
use cairn_proto::etcdserverpb::compare::{CompareTarget, TargetUnion};
use cairn_proto::etcdserverpb::request_op::Request as Op;
use cairn_proto::etcdserverpb::{Compare, PutRequest, RangeRequest, RequestOp, TxnRequest};
use common::*;
use tracing::info;

const RESULTS: [CompareResult; 4] = [Equal, NotEqual, Greater, Less];

/// The model of a compare result: what `actual <op> operand` means.
fn holds(result: CompareResult, actual_vs_operand: Ordering) -> bool {
    match result {
        Equal => actual_vs_operand.is_eq(),
        NotEqual => actual_vs_operand.is_ne(),
        Greater => actual_vs_operand.is_gt(),
        Less => actual_vs_operand.is_lt(),
    }
}

/// Builds a compare on a numeric target (`cmp_version`, `cmp_mod`, …).
type NumericCompare = fn(&str, CompareResult, i64) -> Compare;

/// Which branch a txn with `compares` takes, evaluated without writing.
fn succeeds(s: &TestStore, compares: Vec<Compare>) -> bool {
    let request = txn(compares, vec![range_op("k", "")], vec![]);
    let response = s.store.txn_read_only(&request).unwrap();
    assert_eq!(
        response.responses.len(),
        usize::from(response.succeeded),
        "branch ran"
    );
    response.succeeded
}

/// A key with lease 7, value "m", version 2, create and mod revisions apart.
fn compare_fixture() -> TestStore {
    let mut s = TestStore::new();
    s.grant(7, 60).unwrap();
    s.put("k", "a");
    s.put("other", "x");
    s.put_with_lease("k", "m", 7);
    s
}

#[test]
fn compares_on_every_target_with_every_result_match_the_model() {
    let s = compare_fixture();
    let kv = s.get("k").unwrap();
    assert!(kv.create_revision != kv.mod_revision && kv.version == 2 && kv.lease == 7);
    for result in RESULTS {
        {
            info!(?result, "VALUE against a smaller, equal and larger operand");
            for operand in ["l", "m", "n", "", "mm"] {
                let expected = holds(result, kv.value.as_slice().cmp(operand.as_bytes()));
                let actual = succeeds(&s, vec![cmp_value("k", result, operand)]);
                assert_eq!(actual, expected, "value {result:?} {operand:?}");
            }
        }
        let numbers: [(&str, i64, NumericCompare); 4] = [
            ("version", kv.version, cmp_version),
            ("create", kv.create_revision, cmp_create),
            ("mod", kv.mod_revision, cmp_mod),
            ("lease", kv.lease, cmp_lease),
        ];
        for (target, actual_number, build) in numbers {
            info!(
                ?result,
                target, "numeric target against actual - 1, actual, actual + 1"
            );
            for operand in [actual_number - 1, actual_number, actual_number + 1] {
                let expected = holds(result, actual_number.cmp(&operand));
                let actual = succeeds(&s, vec![build("k", result, operand)]);
                assert_eq!(actual, expected, "{target} {result:?} {operand}");
            }
        }
    }
}

#[test]
fn all_compares_must_hold_for_the_success_branch() {
    let s = compare_fixture();
    let kv = s.get("k").unwrap();
    let true_one = cmp_version("k", Equal, kv.version);
    let false_one = cmp_mod("k", Less, kv.mod_revision);
    assert!(succeeds(&s, vec![]), "no compares: success");
    assert!(succeeds(&s, vec![true_one.clone(), true_one.clone()]));
    assert!(!succeeds(&s, vec![true_one.clone(), false_one.clone()]));
    assert!(!succeeds(&s, vec![false_one, true_one]));
}

#[test]
fn compares_on_a_missing_key_see_zeroes_except_value_which_always_fails() {
    let s = compare_fixture();
    let cases = [
        ("version == 0", cmp_version("missing", Equal, 0), true),
        ("create == 0", cmp_create("missing", Equal, 0), true),
        (
            "mod == 0 (Kubernetes' create)",
            cmp_mod("missing", Equal, 0),
            true,
        ),
        ("lease == 0", cmp_lease("missing", Equal, 0), true),
        ("version > 0", cmp_version("missing", Greater, 0), false),
        ("value == \"\"", cmp_value("missing", Equal, ""), false),
        ("value != \"x\"", cmp_value("missing", NotEqual, "x"), false),
        ("value < \"x\"", cmp_value("missing", Less, "x"), false),
    ];
    for (why, compare, expected) in cases {
        info!("missing key: {why}");
        assert_eq!(succeeds(&s, vec![compare]), expected, "{why}");
    }
}

#[test]
fn a_compare_over_a_range_holds_only_when_it_holds_for_every_key() {
    let mut s = TestStore::new();
    s.put("p/1", "one");
    s.put("p/2", "two");
    s.put("p/2", "two");
    let prefix = prefix_end("p/");
    let over = |mut compare: Compare, end: &str| {
        compare.range_end = end.as_bytes().to_vec();
        compare
    };
    let cases = [
        (
            "every key has version > 0",
            over(cmp_version("p/", Greater, 0), &prefix),
            true,
        ),
        (
            "only p/1 has version 1",
            over(cmp_version("p/", Equal, 1), &prefix),
            false,
        ),
        (
            "every version < 3",
            over(cmp_version("p/", Less, 3), &prefix),
            true,
        ),
        (
            "every value > \"a\"",
            over(cmp_value("p/", Greater, "a"), &prefix),
            true,
        ),
        (
            "one value is \"one\"",
            over(cmp_value("p/", Equal, "one"), &prefix),
            false,
        ),
        (
            "\\0 end: from p/2 on",
            over(cmp_version("p/2", Equal, 2), "\0"),
            true,
        ),
        (
            "empty range: version == 0",
            over(cmp_version("q/", Equal, 0), "q0"),
            true,
        ),
        (
            "empty range: value fails",
            over(cmp_value("q/", Equal, ""), "q0"),
            false,
        ),
    ];
    for (why, compare, expected) in cases {
        info!("over a range: {why}");
        let request = txn(vec![compare], vec![], vec![]);
        assert_eq!(
            s.store.txn_read_only(&request).unwrap().succeeded,
            expected,
            "{why}"
        );
    }
}

#[test]
fn a_compare_reads_only_the_operand_of_its_own_target() {
    // etcd's compareKV takes the operand from the union only when its type matches the
    // target; otherwise the operand is Go's zero value.
    let s = compare_fixture();
    let kv = s.get("k").unwrap();
    let mismatched = |target: CompareTarget, result, union| Compare {
        result: result as i32,
        target: target as i32,
        key: b"k".to_vec(),
        range_end: Vec::new(),
        target_union: Some(union),
    };
    let version_as_mod = TargetUnion::Version(kv.mod_revision);
    {
        info!("MOD with a Version union: compared against 0, not the union's number");
        let equal = mismatched(CompareTarget::Mod, Equal, version_as_mod.clone());
        assert!(!succeeds(&s, vec![equal]));
        let greater = mismatched(CompareTarget::Mod, Greater, version_as_mod);
        assert!(succeeds(&s, vec![greater]));
    }
    {
        info!("VERSION with a Value union and VALUE with a numeric union read zero / empty");
        let version = mismatched(
            CompareTarget::Version,
            Greater,
            TargetUnion::Value(b"9".to_vec()),
        );
        assert!(succeeds(&s, vec![version]), "version 2 > 0");
        let value = mismatched(CompareTarget::Value, Greater, TargetUnion::Version(1));
        assert!(succeeds(&s, vec![value]), "\"m\" > \"\"");
    }
    {
        info!("no union at all is a zero operand too");
        let mut bare = cmp_create("k", Greater, 0);
        bare.target_union = None;
        assert!(succeeds(&s, vec![bare]));
    }
}

#[test]
fn kubernetes_create_and_update_through_compare_and_swap() {
    let mut s = TestStore::new();
    let create = |value: &str| {
        txn(
            vec![cmp_mod("obj", Equal, 0)],
            vec![put_op("obj", value)],
            vec![range_op("obj", "")],
        )
    };
    {
        info!("create: mod_revision == 0 holds only while the key is missing");
        let first = s.txn(create("v1")).unwrap();
        assert!(first.succeeded);
        let second = s.txn(create("v2")).unwrap();
        assert!(!second.succeeded);
        let existing = &as_range(&second.responses[0]).kvs[0];
        assert_eq!(
            value_of(existing),
            "v1",
            "the failure branch returns the current object"
        );
    }
    let seen = s.get("obj").unwrap().mod_revision;
    let update = |expected: i64, value: &str| {
        txn(
            vec![cmp_mod("obj", Equal, expected)],
            vec![put_op("obj", value)],
            vec![range_op("obj", "")],
        )
    };
    {
        info!("update with the revision we read: succeeds");
        assert!(s.txn(update(seen, "v2")).unwrap().succeeded);
    }
    {
        info!("a stale update loses and learns the new revision");
        let stale = s.txn(update(seen, "v3")).unwrap();
        assert!(!stale.succeeded);
        let current = &as_range(&stale.responses[0]).kvs[0];
        assert_eq!(value_of(current), "v2");
        assert_eq!(current.mod_revision, s.revision());
    }
}

#[test]
fn reads_inside_a_txn_see_its_earlier_writes_and_answer_with_its_revision() {
    let mut s = TestStore::new();
    s.put("a", "old");
    s.put("b", "doomed");
    let begin = s.revision();
    let ops = vec![
        range_op("a", ""),
        put_op("a", "new"),
        range_op("a", ""),
        delete_op("b", ""),
        range_op("b", ""),
        delete_op("nothing", ""),
        range_op("\0", "\0"),
    ];
    let response = s.txn(txn(vec![], ops, vec![])).unwrap();
    let end = begin + 1;
    assert_eq!(header_revision(&response), end);
    let r = &response.responses;
    {
        info!("before any write, a read sees the old value at the old revision");
        assert_eq!(value_of(&as_range(&r[0]).kvs[0]), "old");
        assert_eq!(header_revision(as_range(&r[0])), begin);
    }
    {
        info!("after the put: the new value, stamped with the txn's revision");
        assert_eq!(header_revision(as_put(&r[1])), end);
        let read = as_range(&r[2]);
        assert_eq!(value_of(&read.kvs[0]), "new");
        assert_eq!(read.kvs[0].mod_revision, end);
        assert_eq!(header_revision(read), end);
    }
    {
        info!("after the delete: b is gone inside the txn already");
        assert_eq!(as_delete(&r[3]).deleted, 1);
        assert_eq!(header_revision(as_delete(&r[3])), end);
        assert!(as_range(&r[4]).kvs.is_empty());
        assert_eq!(as_delete(&r[5]).deleted, 0);
        assert_eq!(
            header_revision(as_delete(&r[5])),
            end,
            "the txn has changes already"
        );
        assert_eq!(key_strings(&as_range(&r[6]).kvs), ["a"]);
    }
}

#[test]
fn nested_txns_pick_their_branch_against_the_state_before_the_txn() {
    let mut s = TestStore::new();
    s.put("flag", "old");
    let begin = s.revision();
    let nested = txn(
        vec![cmp_value("flag", Equal, "old")],
        vec![put_op("saw", "old"), range_op("flag", "")],
        vec![put_op("saw", "new")],
    );
    let outer = txn(
        vec![cmp_version("flag", Equal, 1)],
        vec![put_op("flag", "new"), txn_op(nested)],
        vec![],
    );
    let response = s.txn(outer).unwrap();
    {
        info!("the nested compare saw flag=old although the outer txn had just written new");
        assert!(response.succeeded);
        assert_eq!(value_of(&s.get("saw").unwrap()), "old");
    }
    {
        info!("the nested response: its branch, its reads, an empty header");
        let inner = as_txn(&response.responses[1]);
        assert!(inner.succeeded);
        assert_eq!(
            inner.header.as_ref().unwrap().revision,
            0,
            "nested headers are empty"
        );
        assert_eq!(header_revision(as_put(&inner.responses[0])), begin + 1);
        let read = as_range(&inner.responses[1]);
        assert_eq!(
            value_of(&read.kvs[0]),
            "new",
            "its reads see the outer write"
        );
    }
    {
        info!("all of it is one revision");
        assert_eq!(s.revision(), begin + 1);
        assert_eq!(header_revision(&response), begin + 1);
    }
}

#[test]
fn nested_failure_branches_run_and_deep_nesting_works() {
    let mut s = TestStore::new();
    s.put("k", "v");
    let innermost = txn(
        vec![cmp_value("k", Equal, "v")],
        vec![put_op("depth", "3")],
        vec![],
    );
    let middle = txn(
        vec![cmp_value("k", Equal, "other")],
        vec![put_op("depth", "wrong")],
        vec![txn_op(innermost)],
    );
    let outer = txn(vec![], vec![txn_op(middle), put_op("outer", "1")], vec![]);
    let response = s.txn(outer).unwrap();
    let middle = as_txn(&response.responses[0]);
    assert!(!middle.succeeded, "the middle compare failed");
    let innermost = as_txn(&middle.responses[0]);
    assert!(innermost.succeeded);
    assert_eq!(value_of(&s.get("depth").unwrap()), "3");
    assert_eq!(value_of(&s.get("outer").unwrap()), "1");
}

#[test]
fn a_txn_applies_whole_or_not_at_all() {
    let mut s = TestStore::new();
    s.put("a", "1");
    s.put("a", "2");
    s.put("a", "3");
    s.compact(s.revision() - 1).unwrap();
    let before = s.revision();
    let hash = s.store.hash_kv(0).unwrap();
    let failing_ops: Vec<(&str, RequestOp, MvccError)> = vec![
        (
            "put with ignore_value on a missing key",
            op(Op::RequestPut(PutRequest {
                ignore_value: true,
                ..put_req("missing", "")
            })),
            MvccError::KeyNotFound,
        ),
        (
            "put with an unknown lease",
            op(Op::RequestPut(PutRequest {
                lease: 5,
                ..put_req("b", "")
            })),
            MvccError::LeaseNotFound,
        ),
        (
            "range below the compaction",
            op(Op::RequestRange(RangeRequest {
                revision: 2,
                ..range_req("a", "")
            })),
            MvccError::Compacted,
        ),
        (
            "range in the future",
            op(Op::RequestRange(RangeRequest {
                revision: before + 1,
                ..range_req("a", "")
            })),
            MvccError::FutureRevision,
        ),
        (
            "an empty op",
            RequestOp { request: None },
            MvccError::KeyNotFound,
        ),
    ];
    for (why, failing, error) in failing_ops {
        info!("a txn with {why} after a put and a delete");
        let ops = vec![put_op("x", "1"), delete_op("a", ""), failing];
        assert_eq!(s.txn(txn(vec![], ops, vec![])), Err(error), "{why}");
        assert_eq!(s.revision(), before, "{why}: no revision");
        assert_eq!(s.store.hash_kv(0).unwrap(), hash, "{why}: no record");
        assert_eq!(s.get("x"), None);
        assert_eq!(value_of(&s.get("a").unwrap()), "3");
    }
    {
        info!("the same op in the branch not taken is not checked");
        let ops = vec![put_op("x", "1")];
        let bad = vec![op(Op::RequestPut(PutRequest {
            lease: 5,
            ..put_req("b", "")
        }))];
        let response = s.txn(txn(vec![], ops, bad)).unwrap();
        assert!(response.succeeded);
        assert_eq!(s.revision(), before + 1);
    }
}

#[test]
fn read_only_txn_reports_range_errors() {
    let mut s = TestStore::new();
    s.put("a", "1");
    s.put("a", "2");
    s.compact(s.revision()).unwrap();
    let compacted = txn(
        vec![],
        vec![op(Op::RequestRange(RangeRequest {
            revision: 2,
            ..range_req("a", "")
        }))],
        vec![],
    );
    assert_eq!(s.store.txn_read_only(&compacted), Err(MvccError::Compacted));
    let future = txn(
        vec![],
        vec![op(Op::RequestRange(RangeRequest {
            revision: 99,
            ..range_req("a", "")
        }))],
        vec![],
    );
    assert_eq!(
        s.store.txn_read_only(&future),
        Err(MvccError::FutureRevision)
    );
}

// --- request checks -----------------------------------------------------------------------

fn puts(count: usize) -> Vec<RequestOp> {
    (0..count)
        .map(|i| put_op(&format!("k{i:03}"), "v"))
        .collect()
}

fn check(request: &TxnRequest) -> Result<(), MvccError> {
    validate::check_txn(request, TXN_OPS_MAX_DEFAULT)
}

#[test]
fn a_txn_holds_at_most_128_operations_per_list() {
    assert_eq!(TXN_OPS_MAX_DEFAULT, 128, "etcd's --max-txn-ops default");
    let max = TXN_OPS_MAX_DEFAULT;
    let compares = |n: usize| {
        (0..n)
            .map(|i| cmp_version(&format!("k{i}"), Equal, 0))
            .collect::<Vec<_>>()
    };
    {
        info!("128 in any list is fine");
        assert_eq!(check(&txn(vec![], puts(max), vec![])), Ok(()));
        assert_eq!(check(&txn(compares(max), vec![], puts(max))), Ok(()));
    }
    {
        info!("129 in any one list is too many");
        for request in [
            txn(vec![], puts(max + 1), vec![]),
            txn(vec![], vec![], puts(max + 1)),
            txn(compares(max + 1), vec![], vec![]),
        ] {
            let error = check(&request).unwrap_err();
            assert_eq!(error, MvccError::TooManyOps);
            assert_eq!(
                error.to_string(),
                "etcdserver: too many operations in txn request"
            );
        }
    }
    {
        info!("a nested txn gets the budget its parent left (etcd: maxTxnOps - opc)");
        let parent_ops = 100;
        let fits = max - parent_ops;
        let with_nested = |nested_ops: usize| {
            let mut ops = puts(parent_ops - 1);
            let nested: Vec<RequestOp> = (0..nested_ops)
                .map(|i| put_op(&format!("n{i:03}"), "v"))
                .collect();
            ops.push(txn_op(txn(vec![], nested, vec![])));
            txn(vec![], ops, vec![])
        };
        assert_eq!(check(&with_nested(fits)), Ok(()));
        assert_eq!(check(&with_nested(fits + 1)), Err(MvccError::TooManyOps));
    }
}

#[test]
fn a_key_may_be_written_once_per_txn_branch() {
    let put = |key: &str| put_op(key, "v");
    let del = |key: &str, end: &str| delete_op(key, end);
    let nested =
        |success: Vec<RequestOp>, failure: Vec<RequestOp>| txn_op(txn(vec![], success, failure));
    let cases: Vec<(&str, Vec<RequestOp>, Result<(), MvccError>)> = vec![
        (
            "two puts of one key",
            vec![put("a"), put("a")],
            Err(MvccError::DuplicateKey),
        ),
        ("puts of different keys", vec![put("a"), put("b")], Ok(())),
        (
            "a put inside a range deleted before it",
            vec![del("a", "c"), put("b")],
            Err(MvccError::DuplicateKey),
        ),
        (
            "a put inside a range deleted after it",
            vec![put("b"), del("a", "c")],
            Err(MvccError::DuplicateKey),
        ),
        (
            "a put of a single key also deleted",
            vec![put("a"), del("a", "")],
            Err(MvccError::DuplicateKey),
        ),
        (
            "a put just outside the deleted range",
            vec![del("a", "c"), put("c")],
            Ok(()),
        ),
        (
            "overlapping deletes",
            vec![del("a", "c"), del("b", "d")],
            Ok(()),
        ),
        (
            "the same key in success and failure of one nested txn",
            vec![nested(vec![put("a")], vec![put("a")])],
            Ok(()),
        ),
        (
            "a nested put and an outer put of one key",
            vec![nested(vec![put("a")], vec![]), put("a")],
            Err(MvccError::DuplicateKey),
        ),
        (
            "a nested failure put and an outer put",
            vec![put("a"), nested(vec![], vec![put("a")])],
            Err(MvccError::DuplicateKey),
        ),
        (
            "puts of one key in two nested txns",
            vec![
                nested(vec![put("a")], vec![]),
                nested(vec![put("a")], vec![]),
            ],
            Err(MvccError::DuplicateKey),
        ),
        (
            "a nested delete covering an outer put",
            vec![nested(vec![del("a", "z")], vec![]), put("m")],
            Err(MvccError::DuplicateKey),
        ),
        (
            "an outer delete covering a nested put",
            vec![del("a", "z"), nested(vec![put("m")], vec![])],
            Err(MvccError::DuplicateKey),
        ),
        (
            "a duplicate deep inside",
            vec![nested(
                vec![nested(vec![put("a"), put("a")], vec![])],
                vec![],
            )],
            Err(MvccError::DuplicateKey),
        ),
    ];
    for (why, ops, expected) in cases {
        info!("{why}");
        assert_eq!(check(&txn(vec![], ops, vec![])), expected, "{why}");
    }
    {
        info!("success and failure of the top-level txn are separate lists");
        assert_eq!(check(&txn(vec![], vec![put("a")], vec![put("a")])), Ok(()));
    }
    assert_eq!(
        MvccError::DuplicateKey.to_string(),
        "etcdserver: duplicate key given in txn request"
    );
}

#[test]
fn txn_checks_reach_every_compare_and_op() {
    let mut empty_compare = cmp_version("k", Equal, 0);
    empty_compare.key.clear();
    let cases: Vec<(&str, TxnRequest, MvccError)> = vec![
        (
            "a compare with an empty key",
            txn(vec![empty_compare], vec![], vec![]),
            MvccError::EmptyKey,
        ),
        (
            "a put with an empty key",
            txn(vec![], vec![put_op("", "v")], vec![]),
            MvccError::EmptyKey,
        ),
        (
            "a failure range with an empty key",
            txn(vec![], vec![], vec![range_op("", "")]),
            MvccError::EmptyKey,
        ),
        (
            "a nested delete with an empty key",
            txn(
                vec![],
                vec![txn_op(txn(vec![], vec![delete_op("", "")], vec![]))],
                vec![],
            ),
            MvccError::EmptyKey,
        ),
        (
            "a nested put with a value and ignore_value",
            txn(
                vec![],
                vec![txn_op(txn(
                    vec![],
                    vec![op(Op::RequestPut(PutRequest {
                        ignore_value: true,
                        ..put_req("k", "v")
                    }))],
                    vec![],
                ))],
                vec![],
            ),
            MvccError::ValueProvided,
        ),
        (
            "an empty op",
            txn(vec![], vec![RequestOp { request: None }], vec![]),
            MvccError::KeyNotFound,
        ),
    ];
    for (why, request, expected) in cases {
        info!("{why}");
        assert_eq!(check(&request), Err(expected), "{why}");
    }
}
