//! Hand-written histories: known-good ones pass, known-bad ones fail with the violation that
//! names their bug, both with revisions and (where the bug does not depend on them) without.

use cairn_check::{
    check, check_with, Call, CheckOptions, History, Operation, Outcome, Recorder, Violation,
};

/// Builds histories tersely: keys and values are strings, times are `[invoke, return]`.
#[derive(Default)]
struct Builder {
    operations: Vec<Operation>,
}

impl Builder {
    fn push(
        &mut self,
        client: u64,
        call: Call,
        [invoke_ns, return_ns]: [u64; 2],
        outcome: Outcome,
    ) {
        self.operations.push(Operation {
            client,
            call,
            invoke_ns,
            return_ns,
            outcome,
        });
    }

    fn put(
        &mut self,
        client: u64,
        key: &str,
        value: &str,
        times: [u64; 2],
        revision: i64,
    ) -> &mut Self {
        let call = Call::Put {
            key: key.into(),
            value: value.into(),
        };
        self.push(client, call, times, Outcome::Put { revision });
        self
    }

    /// `read` is the value and its mod_revision, None for an absent key.
    fn get(
        &mut self,
        client: u64,
        key: &str,
        read: Option<(&str, i64)>,
        times: [u64; 2],
        revision: i64,
    ) -> &mut Self {
        let outcome = Outcome::Get {
            revision,
            value: read.map(|(value, _)| value.into()),
            mod_revision: read.map_or(0, |(_, mod_revision)| mod_revision),
        };
        self.push(client, Call::Get { key: key.into() }, times, outcome);
        self
    }

    fn delete(
        &mut self,
        client: u64,
        key: &str,
        deleted: i64,
        times: [u64; 2],
        revision: i64,
    ) -> &mut Self {
        let outcome = Outcome::Delete { revision, deleted };
        self.push(client, Call::Delete { key: key.into() }, times, outcome);
        self
    }

    /// A CompareAndPut of `(expected, value)`.
    fn cas(
        &mut self,
        client: u64,
        key: &str,
        (expected, value): (Option<&str>, &str),
        succeeded: bool,
        times: [u64; 2],
        revision: i64,
    ) -> &mut Self {
        let call = compare_and_put(key, expected, value);
        self.push(
            client,
            call,
            times,
            Outcome::CompareAndPut {
                revision,
                succeeded,
            },
        );
        self
    }

    /// An operation that timed out: invoked at `invoke_ns`, outcome unknown.
    fn unknown(&mut self, client: u64, call: Call, invoke_ns: u64) -> &mut Self {
        self.push(client, call, [invoke_ns, invoke_ns + 1], Outcome::Unknown);
        self
    }

    fn history(&self) -> History {
        History::new(self.operations.clone())
    }
}

fn put(key: &str, value: &str) -> Call {
    Call::Put {
        key: key.into(),
        value: value.into(),
    }
}

fn delete(key: &str) -> Call {
    Call::Delete { key: key.into() }
}

fn compare_and_put(key: &str, expected: Option<&str>, value: &str) -> Call {
    Call::CompareAndPut {
        key: key.into(),
        expected: expected.map(Into::into),
        value: value.into(),
    }
}

fn without_revisions() -> CheckOptions {
    CheckOptions {
        revisions: false,
        ..CheckOptions::default()
    }
}

/// Both layers accept the history.
fn assert_passes(history: &History) {
    if let Err(violation) = check(history) {
        panic!("expected a pass, got: {violation}");
    }
    if let Err(violation) = check_with(history, &without_revisions()) {
        panic!("expected a pass without revisions, got: {violation}");
    }
}

fn expect_violation(result: Result<cairn_check::Report, Violation>) -> Violation {
    match result {
        Ok(report) => panic!("expected a violation, got a pass: {report:?}"),
        Err(violation) => violation,
    }
}

mod known_good {
    use super::*;

    #[test]
    fn empty_history_passes() {
        let report = check(&History::default()).unwrap();
        assert_eq!(report.operations, 0);
    }

    #[test]
    fn sequential_history_of_every_operation_passes() {
        let history = Builder::default()
            .get(1, "a", None, [0, 10], 1)
            .put(1, "a", "1", [20, 30], 2)
            .get(2, "a", Some(("1", 2)), [40, 50], 2)
            .cas(2, "a", (Some("1"), "2"), true, [60, 70], 3)
            .cas(1, "a", (None, "3"), false, [80, 90], 3)
            .put(1, "b", "x", [100, 110], 4)
            .get(1, "a", Some(("2", 3)), [120, 130], 4)
            .delete(2, "a", 1, [140, 150], 5)
            .delete(2, "a", 0, [160, 170], 5)
            .get(1, "a", None, [180, 190], 5)
            .cas(1, "a", (None, "4"), true, [200, 210], 6)
            .history();
        assert_passes(&history);
        let report = check(&history).unwrap();
        assert_eq!(report.operations, 11);
        assert_eq!(report.keys, 2);
        assert_eq!(report.acknowledged_writes, 7);
        assert_eq!(report.unknown_operations, 0);
        assert!(report.states_explored >= 11);
    }

    #[test]
    fn concurrent_writes_may_be_read_in_revision_order() {
        // Two overlapping puts; reads during and after them see them in revision order.
        let history = Builder::default()
            .put(1, "a", "1", [0, 100], 3)
            .put(2, "a", "2", [10, 90], 2)
            .get(3, "a", Some(("2", 2)), [20, 30], 2)
            .get(3, "a", Some(("1", 3)), [110, 120], 3)
            .history();
        assert_passes(&history);
    }

    #[test]
    fn read_concurrent_with_a_write_may_see_either_value() {
        let history = Builder::default()
            .put(1, "a", "old", [0, 10], 2)
            .put(1, "a", "new", [20, 100], 3)
            .get(2, "a", Some(("old", 2)), [30, 40], 2)
            .get(3, "a", Some(("new", 3)), [50, 60], 3)
            .get(2, "a", Some(("new", 3)), [110, 120], 3)
            .history();
        assert_passes(&history);
    }

    #[test]
    fn recorded_history_passes() {
        let recorder = Recorder::new();
        let token = recorder.invoke(1, put("a", "1"), 0);
        recorder.complete(token, Outcome::Put { revision: 2 }, 10);
        let read = recorder.invoke(2, Call::Get { key: "a".into() }, 20);
        // Still in flight when the test ends: unknown.
        let _lost = recorder.invoke(1, put("a", "2"), 25);
        recorder.complete(
            read,
            Outcome::Get {
                revision: 3,
                value: Some("2".into()),
                mod_revision: 3,
            },
            30,
        );
        let history = recorder.history();
        assert_passes(&history);
        assert_eq!(check(&history).unwrap().unknown_operations, 1);
    }
}

mod unknown_outcomes {
    use super::*;

    #[test]
    fn unknown_put_that_took_effect_is_accepted() {
        let history = Builder::default()
            .put(1, "a", "1", [0, 10], 2)
            .unknown(2, put("a", "2"), 15)
            .get(3, "a", Some(("2", 3)), [40, 50], 3)
            .put(1, "b", "x", [60, 70], 4)
            .get(3, "a", Some(("2", 3)), [80, 90], 4)
            .history();
        assert_passes(&history);
    }

    #[test]
    fn unknown_put_that_did_not_take_effect_is_accepted() {
        let history = Builder::default()
            .put(1, "a", "1", [0, 10], 2)
            .unknown(2, put("a", "2"), 15)
            .get(3, "a", Some(("1", 2)), [40, 50], 2)
            .put(1, "a", "3", [60, 70], 3)
            .get(3, "a", Some(("3", 3)), [80, 90], 3)
            .history();
        assert_passes(&history);
    }

    #[test]
    fn unknown_write_may_take_effect_long_after_its_client_gave_up() {
        // The put of "2" timed out at 15 but reached the store after the put of "3".
        let history = Builder::default()
            .put(1, "a", "1", [0, 10], 2)
            .unknown(2, put("a", "2"), 15)
            .put(1, "a", "3", [20, 30], 3)
            .get(3, "a", Some(("2", 4)), [40, 50], 4)
            .history();
        assert_passes(&history);
    }

    #[test]
    fn unknown_delete_either_way_is_accepted() {
        let took_effect = Builder::default()
            .put(1, "a", "1", [0, 10], 2)
            .unknown(2, delete("a"), 15)
            .get(3, "a", None, [40, 50], 3)
            .history();
        assert_passes(&took_effect);
        let did_not = Builder::default()
            .put(1, "a", "1", [0, 10], 2)
            .unknown(2, delete("a"), 15)
            .get(3, "a", Some(("1", 2)), [40, 50], 2)
            .history();
        assert_passes(&did_not);
    }

    #[test]
    fn unknown_compare_and_put_either_way_is_accepted() {
        for read in [("1", 2), ("2", 3)] {
            let history = Builder::default()
                .put(1, "a", "1", [0, 10], 2)
                .unknown(2, compare_and_put("a", Some("1"), "2"), 15)
                .get(3, "a", Some(read), [40, 50], read.1)
                .history();
            assert_passes(&history);
        }
    }

    #[test]
    fn many_pending_unknown_writes_stay_cheap() {
        // Forty timed-out puts that never took effect, then a long run of acknowledged ops that
        // keeps all of them pending: the search must not try their subsets.
        let mut builder = Builder::default();
        for client in 0..40 {
            builder.unknown(100 + client, put("a", &format!("lost{client}")), client);
        }
        let mut revision = 1;
        for step in 0..200u64 {
            let t = 1000 + step * 20;
            revision += 1;
            let value = format!("v{step}");
            builder.put(1, "a", &value, [t, t + 5], revision);
            builder.get(2, "a", Some((&value, revision)), [t + 10, t + 15], revision);
        }
        let history = builder.history();
        assert_passes(&history);
        let report = check(&history).unwrap();
        assert!(
            report.states_explored < 10_000,
            "explored {} states",
            report.states_explored
        );
    }

    #[test]
    fn unknown_write_cannot_explain_a_read_before_its_invoke() {
        let history = Builder::default()
            .put(1, "a", "1", [0, 10], 2)
            .get(3, "a", Some(("2", 3)), [20, 30], 3)
            .unknown(2, put("a", "2"), 40)
            .history();
        for options in [CheckOptions::default(), without_revisions()] {
            let violation = expect_violation(check_with(&history, &options));
            assert!(
                matches!(violation, Violation::ValueNeverWritten { .. }),
                "{violation}"
            );
        }
    }

    #[test]
    fn a_write_that_was_overwritten_does_not_come_back() {
        // "2" (unknown) may land after "3", but once a read saw "2" and a later read "3", the
        // second would need "3" written twice.
        let history = Builder::default()
            .put(1, "a", "1", [0, 10], 2)
            .unknown(2, put("a", "2"), 15)
            .put(1, "a", "3", [20, 30], 3)
            .get(3, "a", Some(("2", 4)), [40, 50], 4)
            .get(3, "a", Some(("3", 3)), [60, 70], 4)
            .history();
        let violation = expect_violation(check_with(&history, &without_revisions()));
        assert!(
            matches!(violation, Violation::NotLinearizable(_)),
            "{violation}"
        );
        let violation = expect_violation(check(&history));
        assert!(
            matches!(violation, Violation::NotLinearizable(_)),
            "{violation}"
        );
    }

    #[test]
    fn reads_of_an_unknown_write_agree_on_its_revision() {
        let history = Builder::default()
            .unknown(1, put("a", "x"), 0)
            .put(2, "b", "y", [5, 10], 2)
            .get(3, "a", Some(("x", 3)), [20, 30], 3)
            .get(3, "a", Some(("x", 1)), [40, 50], 3)
            .history();
        let violation = expect_violation(check(&history));
        assert!(
            matches!(violation, Violation::NotLinearizable(_)),
            "{violation}"
        );
        assert!(
            violation.to_string().contains("read mod_revision 1"),
            "{violation}"
        );
        assert!(check_with(&history, &without_revisions()).is_ok());
    }
}

mod known_bad {
    use super::*;

    #[test]
    fn stale_read_after_a_completed_write() {
        let history = Builder::default()
            .put(1, "a", "1", [0, 10], 2)
            .put(1, "a", "2", [20, 30], 3)
            .get(2, "a", Some(("1", 2)), [40, 50], 3)
            .history();
        // By revision, and without revisions by real time alone.
        for options in [CheckOptions::default(), without_revisions()] {
            let violation = expect_violation(check_with(&history, &options));
            let Violation::StaleRead { read, missed } = &violation else {
                panic!("expected StaleRead, got: {violation}");
            };
            assert_eq!(read.client, 2);
            assert_eq!(missed.outcome, Outcome::Put { revision: 3 });
            let message = violation.to_string();
            assert!(message.contains("stale read"), "{message}");
            assert!(
                message.contains(
                    "client 1 put(\"a\", \"2\") invoked 20 ns, returned 30 ns: ok at revision 3"
                ),
                "{message}"
            );
        }
    }

    #[test]
    fn lost_acknowledged_write() {
        let history = Builder::default()
            .put(1, "a", "1", [0, 10], 2)
            .get(2, "a", None, [20, 30], 2)
            .history();
        for options in [CheckOptions::default(), without_revisions()] {
            let violation = expect_violation(check_with(&history, &options));
            assert!(
                matches!(&violation, Violation::StaleRead { missed, .. } if missed.client == 1),
                "{violation}"
            );
        }
    }

    #[test]
    fn read_misses_both_of_two_concurrent_writes() {
        // Both puts finished before the read; whichever went last, the read sees neither.
        let history = Builder::default()
            .put(4, "a", "0", [0, 5], 1)
            .put(1, "a", "1", [10, 20], 2)
            .put(2, "a", "2", [10, 20], 3)
            .get(3, "a", Some(("0", 1)), [30, 40], 3)
            .history();
        for options in [CheckOptions::default(), without_revisions()] {
            let violation = expect_violation(check_with(&history, &options));
            assert!(
                matches!(violation, Violation::StaleRead { .. }),
                "{violation}"
            );
        }
    }

    #[test]
    fn new_old_inversion_needs_the_search() {
        // Concurrent puts, then two reads in sequence seeing them in opposite orders. No single
        // pair of operations is out of real-time order; only the search (or revisions) sees it.
        let history = Builder::default()
            .put(1, "a", "1", [0, 10], 2)
            .put(2, "a", "2", [0, 10], 3)
            .get(3, "a", Some(("2", 3)), [20, 30], 3)
            .get(3, "a", Some(("1", 2)), [40, 50], 3)
            .history();
        let violation = expect_violation(check(&history));
        assert!(
            matches!(violation, Violation::StaleRead { .. }),
            "{violation}"
        );

        let violation = expect_violation(check_with(&history, &without_revisions()));
        let Violation::NotLinearizable(details) = &violation else {
            panic!("expected NotLinearizable, got: {violation}");
        };
        assert_eq!(details.key, b"a");
        assert_eq!((details.linearized, details.operations), (3, 4));
        assert_eq!(details.register.as_deref(), Some(&b"2"[..]));
        assert_eq!(details.refused.len(), 1);
        assert_eq!(details.refused[0].operation, history.operations[3]);
        let message = violation.to_string();
        assert!(
            message.contains("read \"1\" but the register holds \"2\""),
            "{message}"
        );
    }

    #[test]
    fn duplicate_revision() {
        let history = Builder::default()
            .put(1, "a", "1", [0, 10], 2)
            .put(2, "b", "1", [20, 30], 2)
            .history();
        let violation = expect_violation(check(&history));
        assert!(
            matches!(violation, Violation::DuplicateRevision { revision: 2, .. }),
            "{violation}"
        );
        // The registers alone are fine: only revisions show the bug.
        assert!(check_with(&history, &without_revisions()).is_ok());
    }

    #[test]
    fn revision_going_backwards_in_real_time() {
        let read_behind = Builder::default()
            .put(1, "a", "1", [0, 10], 5)
            .get(2, "b", None, [20, 30], 3)
            .history();
        let violation = expect_violation(check(&read_behind));
        assert!(
            matches!(&violation, Violation::RevisionWentBackwards { earlier, later }
                if earlier.client == 1 && later.client == 2),
            "{violation}"
        );

        // A mutation must move past what an earlier read saw.
        let mutation_not_ahead = Builder::default()
            .get(1, "a", None, [0, 10], 5)
            .put(2, "b", "1", [20, 30], 5)
            .history();
        let violation = expect_violation(check(&mutation_not_ahead));
        assert!(
            matches!(violation, Violation::RevisionWentBackwards { .. }),
            "{violation}"
        );

        // Overlapping operations may report revisions in either order.
        let overlapping = Builder::default()
            .put(1, "a", "1", [0, 30], 5)
            .get(2, "b", None, [10, 20], 4)
            .history();
        assert!(check(&overlapping).is_ok());
    }

    #[test]
    fn read_of_a_value_never_written() {
        let history = Builder::default()
            .put(1, "a", "1", [0, 10], 2)
            .get(2, "a", Some(("zzz", 2)), [20, 30], 2)
            .history();
        for options in [CheckOptions::default(), without_revisions()] {
            let violation = expect_violation(check_with(&history, &options));
            assert!(
                matches!(&violation, Violation::ValueNeverWritten { read } if read.client == 2),
                "{violation}"
            );
            assert!(violation.to_string().contains("\"zzz\""), "{violation}");
        }
    }

    #[test]
    fn read_naming_another_keys_revision() {
        let history = Builder::default()
            .put(1, "a", "1", [0, 10], 2)
            .put(1, "b", "1", [20, 30], 3)
            .get(2, "a", Some(("1", 3)), [40, 50], 3)
            .history();
        let violation = expect_violation(check(&history));
        assert!(
            matches!(&violation, Violation::ReadMismatch { write, .. } if write.key() == Some(b"b")),
            "{violation}"
        );
    }

    #[test]
    fn compare_and_put_success_that_could_not_have_succeeded() {
        let history = Builder::default()
            .put(1, "a", "1", [0, 10], 2)
            .cas(2, "a", (Some("0"), "2"), true, [20, 30], 3)
            .history();
        for options in [CheckOptions::default(), without_revisions()] {
            let violation = expect_violation(check_with(&history, &options));
            let Violation::NotLinearizable(details) = &violation else {
                panic!("expected NotLinearizable, got: {violation}");
            };
            assert_eq!(details.linearized, 1);
            assert!(
                violation
                    .to_string()
                    .contains("succeeded but the register holds \"1\""),
                "{violation}"
            );
        }
    }

    #[test]
    fn compare_and_put_failure_that_should_have_succeeded() {
        let history = Builder::default()
            .put(1, "a", "1", [0, 10], 2)
            .cas(2, "a", (Some("1"), "2"), false, [20, 30], 2)
            .history();
        let violation = expect_violation(check(&history));
        assert!(
            matches!(violation, Violation::NotLinearizable(_)),
            "{violation}"
        );
    }

    #[test]
    fn delete_count_wrong() {
        let deleted_absent = Builder::default().delete(1, "a", 1, [0, 10], 2).history();
        let missed_present = Builder::default()
            .put(1, "a", "1", [0, 10], 2)
            .delete(2, "a", 0, [20, 30], 2)
            .history();
        for history in [deleted_absent, missed_present] {
            for options in [CheckOptions::default(), without_revisions()] {
                let violation = expect_violation(check_with(&history, &options));
                assert!(
                    matches!(violation, Violation::NotLinearizable(_)),
                    "{violation}"
                );
                assert!(violation.to_string().contains("deleted "), "{violation}");
            }
        }
        let two = Builder::default().delete(1, "a", 2, [0, 10], 2).history();
        let violation = expect_violation(check(&two));
        assert!(
            matches!(violation, Violation::ImpossibleOutcome { .. }),
            "{violation}"
        );
    }

    #[test]
    fn writes_applied_out_of_revision_order() {
        // Concurrent puts; the later read's mod_revision says "1" won, yet "1" has the lower
        // revision. The register alone allows it (put "2" then put "1").
        let history = Builder::default()
            .put(1, "a", "1", [0, 10], 2)
            .put(2, "a", "2", [0, 10], 3)
            .get(3, "a", Some(("1", 2)), [20, 30], 3)
            .history();
        let violation = expect_violation(check(&history));
        assert!(
            matches!(violation, Violation::StaleRead { .. }),
            "{violation}"
        );
        assert!(check_with(&history, &without_revisions()).is_ok());
    }

    #[test]
    fn malformed_recordings_are_reported() {
        let mut wrong_kind = Builder::default();
        wrong_kind.push(
            1,
            put("a", "1"),
            [0, 10],
            Outcome::Delete {
                revision: 2,
                deleted: 1,
            },
        );
        let violation = expect_violation(check(&wrong_kind.history()));
        assert!(
            matches!(violation, Violation::Malformed { .. }),
            "{violation}"
        );

        let backwards = Builder::default().put(1, "a", "1", [10, 5], 2).history();
        let violation = expect_violation(check(&backwards));
        assert!(
            matches!(violation, Violation::Malformed { .. }),
            "{violation}"
        );

        let no_mod_revision = Builder::default()
            .get(1, "a", Some(("1", 0)), [0, 10], 2)
            .history();
        let violation = expect_violation(check(&no_mod_revision));
        assert!(
            matches!(violation, Violation::ImpossibleOutcome { .. }),
            "{violation}"
        );
    }
}

/// Lease calls: grants with explicit ids, puts attached to leases, revokes (by clients or by the
/// expiry driver, recorded alike) that delete every attached key at one revision.
mod leases {
    use super::*;

    const LEASE: i64 = 7;

    /// The search's refutation of `history` (the cheap checks pass it on).
    fn not_linearizable(history: &History) -> cairn_check::NotLinearizable {
        match expect_violation(check(history)) {
            Violation::NotLinearizable(details) => *details,
            violation => panic!("expected NotLinearizable, got: {violation}"),
        }
    }

    fn lease_put(key: &str, value: &str) -> Call {
        Call::LeasePut {
            key: key.into(),
            value: value.into(),
            lease: LEASE,
        }
    }

    impl Builder {
        fn lease(&mut self, call: Call, times: [u64; 2], outcome: Outcome) -> &mut Self {
            self.push(9, call, times, outcome);
            self
        }

        fn grant(&mut self, times: [u64; 2], revision: i64) -> &mut Self {
            self.lease(
                Call::LeaseGrant { lease: LEASE },
                times,
                Outcome::Lease { revision },
            )
        }

        fn revoke(&mut self, times: [u64; 2], outcome: Outcome) -> &mut Self {
            self.lease(Call::LeaseRevoke { lease: LEASE }, times, outcome)
        }
    }

    /// grant at 1; "a" and "b" attached to the lease at 2 and 3.
    fn granted_and_attached() -> Builder {
        let mut builder = Builder::default();
        builder
            .grant([0, 10], 1)
            .lease(lease_put("a", "1"), [20, 30], Outcome::Put { revision: 2 })
            .lease(lease_put("b", "1"), [40, 50], Outcome::Put { revision: 3 });
        builder
    }

    #[test]
    fn a_revoke_deletes_every_attached_key_at_one_revision() {
        let history = granted_and_attached()
            .put(1, "c", "1", [60, 70], 4)
            .revoke([80, 90], Outcome::Lease { revision: 5 })
            .get(1, "a", None, [100, 110], 5)
            .get(1, "b", None, [100, 110], 5)
            .get(1, "c", Some(("1", 4)), [100, 110], 5)
            // The lease is gone: keep-alives and puts naming it are refused.
            .lease(
                Call::LeaseKeepAlive { lease: LEASE },
                [120, 130],
                Outcome::LeaseRefused,
            )
            .lease(lease_put("a", "2"), [140, 150], Outcome::LeaseRefused)
            .history();
        assert_passes(&history);
    }

    #[test]
    fn a_detached_key_outlives_its_old_lease() {
        let history = granted_and_attached()
            .put(1, "a", "2", [60, 70], 4)
            .revoke([80, 90], Outcome::Lease { revision: 5 })
            .get(1, "a", Some(("2", 4)), [100, 110], 5)
            .history();
        assert_passes(&history);
    }

    #[test]
    fn a_read_concurrent_with_a_revoke_sees_before_or_after_by_revision() {
        let history = granted_and_attached()
            .revoke([60, 100], Outcome::Lease { revision: 4 })
            .get(1, "a", Some(("1", 2)), [70, 80], 3)
            .get(2, "b", None, [70, 80], 4)
            .history();
        assert_passes(&history);
    }

    #[test]
    fn an_expiry_or_revoke_with_unknown_outcome_explains_a_vanished_key() {
        let history = granted_and_attached()
            .unknown(9, Call::LeaseRevoke { lease: LEASE }, 60)
            .get(1, "a", None, [100, 110], 4)
            // The lease is gone: its id can be granted again.
            .grant([120, 130], 4)
            .history();
        assert_passes(&history);
    }

    #[test]
    fn a_key_surviving_its_revoked_lease_fails() {
        let history = granted_and_attached()
            .revoke([60, 70], Outcome::Lease { revision: 4 })
            .get(1, "a", Some(("1", 2)), [80, 90], 4)
            .history();
        let violation = expect_violation(check(&history));
        let Violation::StaleRead { missed, .. } = &violation else {
            panic!("expected StaleRead, got: {violation}");
        };
        assert_eq!(missed.call, Call::LeaseRevoke { lease: LEASE });
        // Without revisions the search refutes it from real time.
        let violation = expect_violation(check_with(&history, &without_revisions()));
        assert!(
            matches!(violation, Violation::NotLinearizable(ref details) if details.key == b"a"),
            "{violation}"
        );
    }

    #[test]
    fn a_read_at_the_revokes_revision_that_still_sees_the_key_fails() {
        // Concurrent in real time, but revision 4 includes the revoke's deletion.
        let history = granted_and_attached()
            .revoke([60, 100], Outcome::Lease { revision: 4 })
            .get(1, "a", Some(("1", 2)), [70, 80], 4)
            .history();
        let violation = expect_violation(check(&history));
        assert!(
            matches!(violation, Violation::StaleRead { .. }),
            "{violation}"
        );
    }

    #[test]
    fn a_key_gone_before_its_revoke_by_revision_fails() {
        // Read absent at revision 3, before the revoke's revision 4: "a" was still there.
        let history = granted_and_attached()
            .revoke([60, 100], Outcome::Lease { revision: 4 })
            .get(1, "a", None, [70, 80], 3)
            .history();
        let details = not_linearizable(&history);
        assert_eq!(details.key, b"a");
    }

    #[test]
    fn a_lost_lease_deletion_fails() {
        // The lease vanished (a revoke that found nothing) yet "a" is still attached to it.
        let history = granted_and_attached()
            .revoke([60, 70], Outcome::LeaseRefused)
            .history();
        let details = not_linearizable(&history);
        assert_eq!(details.key, b"a");
        assert!(
            details.refused[0].reason.contains("still attached"),
            "{details}"
        );
    }

    #[test]
    fn a_keep_alive_of_a_revoked_lease_fails() {
        let history = Builder::default()
            .grant([0, 10], 1)
            .revoke([20, 30], Outcome::Lease { revision: 1 })
            .lease(
                Call::LeaseKeepAlive { lease: LEASE },
                [40, 50],
                Outcome::Lease { revision: 1 },
            )
            .history();
        let details = not_linearizable(&history);
        assert_eq!(details.key, b"<lease 7>");
    }

    #[test]
    fn a_put_on_a_revoked_lease_or_a_second_grant_fails() {
        let put_after_revoke = Builder::default()
            .grant([0, 10], 1)
            .revoke([20, 30], Outcome::Lease { revision: 1 })
            .lease(lease_put("a", "1"), [40, 50], Outcome::Put { revision: 2 })
            .history();
        let granted_twice = Builder::default()
            .grant([0, 10], 1)
            .grant([20, 30], 1)
            .history();
        for history in [put_after_revoke, granted_twice] {
            assert_eq!(not_linearizable(&history).key, b"<lease 7>");
        }
    }
}
