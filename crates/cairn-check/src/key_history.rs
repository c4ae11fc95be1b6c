//! `KeyHistory`: the operations of one object (a key, or a lease's existence) in model form,
//! ready for the search.
//!
//! Keys are independent registers, so a history is linearizable iff each key's sub-history is
//! (P-compositionality, Herlihy & Wing 1990). Lease calls are projected onto the objects they
//! touch: a `LeasePut` onto its key and its lease, a revoke onto its lease and onto every key
//! some `LeasePut` of the history attached to it. Checking each projection is sound (a
//! linearization of the whole history projects onto one of each) though it does not see that
//! a revoke deletes all its keys at once; the revision checks (`revisions`) cover part of that.
//!
//! This module splits a history by object, rejects malformed or impossible operations, interns
//! values, drops reads with unknown outcome (they never constrain anything), and with revisions
//! gives each acknowledged operation on a key its [`RevisionSlot`]. Lease objects get no slots:
//! grants and keep-alives do not move etcd's revision counter.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::error::Violation;
use crate::history::{Call, History, Key, Operation, Outcome, Value};
use crate::model::{RegisterOp, RevisionSlot, ValueId};

/// What a lease object's register holds while the lease exists.
const GRANTED: &[u8] = b"granted";

/// One object's operations, acknowledged ones first.
#[derive(Debug)]
pub(crate) struct KeyHistory {
    /// The key, or for a lease `<lease N>` (the name reports use).
    pub key: Key,
    /// `ops[..acked]` are acknowledged, `ops[acked..]` have unknown outcome.
    pub ops: Vec<KeyOp>,
    pub acked: usize,
    /// The value table: [`ValueId`] `i` is `values[i]`.
    pub values: Vec<Value>,
}

/// One operation of the object.
#[derive(Clone, Copy, Debug)]
pub(crate) struct KeyOp {
    /// Index into `History::operations`, to report the operation as recorded.
    pub history_index: usize,
    pub op: RegisterOp,
    pub invoke_ns: u64,
    /// None for an unknown outcome: the operation never returns.
    pub return_ns: Option<u64>,
    /// Present for acknowledged operations on keys when revisions are used.
    pub slot: Option<RevisionSlot>,
}

/// What the search linearizes: a key, or whether a lease exists. Keys sort first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Object<'a> {
    Key(&'a [u8]),
    Lease(i64),
}

/// Per lease, the keys some `LeasePut` of the history (whatever its outcome) names with it: the
/// only keys a revoke of the lease may delete.
pub(crate) fn attachable(history: &History) -> HashMap<i64, BTreeSet<&[u8]>> {
    let mut keys: HashMap<i64, BTreeSet<&[u8]>> = HashMap::new();
    for operation in &history.operations {
        if let Call::LeasePut { key, lease, .. } = &operation.call {
            keys.entry(*lease).or_default().insert(key);
        }
    }
    keys
}

/// Splits `history` by object, keys in key order first, then leases.
pub(crate) fn split(history: &History, revisions: bool) -> Result<Vec<KeyHistory>, Violation> {
    // Value ids and mutation counts are u32 to keep search states small.
    assert!(
        history.operations.len() < u32::MAX as usize,
        "a history of {} operations is beyond the checker",
        history.operations.len()
    );
    let attachable = attachable(history);
    let mut by_object: BTreeMap<Object<'_>, Vec<usize>> = BTreeMap::new();
    for (index, operation) in history.operations.iter().enumerate() {
        if let Some(key) = operation.key() {
            by_object.entry(Object::Key(key)).or_default().push(index);
        }
        let Some(lease) = operation.call.lease() else {
            continue;
        };
        by_object
            .entry(Object::Lease(lease))
            .or_default()
            .push(index);
        if let Call::LeaseRevoke { .. } = operation.call {
            for key in attachable.get(&lease).into_iter().flatten() {
                by_object.entry(Object::Key(key)).or_default().push(index);
            }
        }
    }
    by_object
        .into_iter()
        .map(|(object, indices)| key_history(history, object, &indices, revisions))
        .collect()
}

fn key_history(
    history: &History,
    object: Object<'_>,
    indices: &[usize],
    revisions: bool,
) -> Result<KeyHistory, Violation> {
    let mut interner = Interner::default();
    let mut ops = Vec::with_capacity(indices.len());
    for &history_index in indices {
        let operation = &history.operations[history_index];
        if operation
            .returned_ns()
            .is_some_and(|r| r < operation.invoke_ns)
        {
            return Err(Violation::Malformed {
                operation: Box::new(operation.clone()),
                reason: "returned before it was invoked",
            });
        }
        let op = match object {
            Object::Key(_) => register_op(operation, &mut interner, revisions)?,
            Object::Lease(_) => lease_op(operation, &mut interner)?,
        };
        let Some(op) = op else {
            continue;
        };
        ops.push(KeyOp {
            history_index,
            op,
            invoke_ns: operation.invoke_ns,
            return_ns: operation.returned_ns(),
            slot: None,
        });
    }
    if revisions && matches!(object, Object::Key(_)) {
        assign_slots(history, &mut ops);
    }
    ops.sort_by_key(|op| (op.op.is_unknown(), op.invoke_ns, op.history_index));
    let key = match object {
        Object::Key(key) => key.to_vec(),
        Object::Lease(lease) => format!("<lease {lease}>").into_bytes(),
    };
    Ok(KeyHistory {
        key,
        acked: ops.iter().filter(|op| !op.op.is_unknown()).count(),
        ops,
        values: interner.values,
    })
}

fn malformed(operation: &Operation) -> Violation {
    Violation::Malformed {
        operation: Box::new(operation.clone()),
        reason: "the outcome does not answer the call",
    }
}

/// The model form of `operation` on its key (or, for a revoke, on a key it may delete), None
/// when it does not constrain the key: a read with unknown outcome, a refused `LeasePut`.
fn register_op(
    operation: &Operation,
    interner: &mut Interner,
    revisions: bool,
) -> Result<Option<RegisterOp>, Violation> {
    let impossible = |reason| Violation::ImpossibleOutcome {
        operation: Box::new(operation.clone()),
        reason,
    };
    let op = match (&operation.call, &operation.outcome) {
        (Call::Put { value, .. }, Outcome::Put { .. }) => RegisterOp::Put {
            value: interner.id(value),
            lease: 0,
        },
        (Call::Put { value, .. }, Outcome::Unknown) => RegisterOp::MaybePut {
            value: interner.id(value),
            lease: 0,
        },
        (Call::LeasePut { value, lease, .. }, Outcome::Put { .. }) => RegisterOp::Put {
            value: interner.id(value),
            lease: *lease,
        },
        (Call::LeasePut { value, lease, .. }, Outcome::Unknown) => RegisterOp::MaybePut {
            value: interner.id(value),
            lease: *lease,
        },
        (Call::LeasePut { .. }, Outcome::LeaseRefused) => return Ok(None),
        (Call::LeaseRevoke { lease }, Outcome::Lease { .. }) => {
            RegisterOp::Revoke { lease: *lease }
        }
        (Call::LeaseRevoke { lease }, Outcome::LeaseRefused) => {
            RegisterOp::RevokeRefused { lease: *lease }
        }
        (Call::LeaseRevoke { lease }, Outcome::Unknown) => {
            RegisterOp::MaybeRevoke { lease: *lease }
        }
        (
            Call::Get { .. },
            Outcome::Get {
                revision,
                value,
                mod_revision,
            },
        ) => read_op(
            *revision,
            value.as_deref(),
            *mod_revision,
            interner,
            revisions,
        )
        .map_err(impossible)?,
        (Call::Get { .. }, Outcome::Unknown) => return Ok(None),
        (Call::Delete { .. }, Outcome::Delete { deleted, .. }) => {
            if !(0..=1).contains(deleted) {
                return Err(impossible("a delete of one key deletes 0 or 1"));
            }
            RegisterOp::Delete { deleted: *deleted }
        }
        (Call::Delete { .. }, Outcome::Unknown) => RegisterOp::MaybeDelete,
        (
            Call::CompareAndPut {
                expected, value, ..
            },
            outcome,
        ) => {
            let expected = expected.as_deref().map(|expected| interner.id(expected));
            let value = interner.id(value);
            match outcome {
                Outcome::CompareAndPut { succeeded, .. } => RegisterOp::CompareAndPut {
                    expected,
                    value,
                    succeeded: *succeeded,
                },
                Outcome::Unknown => RegisterOp::MaybeCompareAndPut { expected, value },
                _ => return Err(malformed(operation)),
            }
        }
        _ => return Err(malformed(operation)),
    };
    Ok(Some(op))
}

/// The model form of `operation` on its lease's existence: a grant puts the register from
/// absent, a revoke deletes it, a keep-alive that succeeded and a `LeasePut` read it. None when
/// it does not constrain the lease: a read with unknown outcome, a refused keep-alive (the lease
/// may exist but have expired).
fn lease_op(
    operation: &Operation,
    interner: &mut Interner,
) -> Result<Option<RegisterOp>, Violation> {
    let granted = interner.id(GRANTED);
    let read = |present: bool| RegisterOp::Get {
        value: present.then_some(granted),
        mod_revision: None,
    };
    let grant = |succeeded| RegisterOp::CompareAndPut {
        expected: None,
        value: granted,
        succeeded,
    };
    let op = match (&operation.call, &operation.outcome) {
        (Call::LeaseGrant { .. }, Outcome::Lease { .. }) => grant(true),
        (Call::LeaseGrant { .. }, Outcome::LeaseRefused) => grant(false),
        (Call::LeaseGrant { .. }, Outcome::Unknown) => RegisterOp::MaybeCompareAndPut {
            expected: None,
            value: granted,
        },
        (Call::LeaseRevoke { .. }, Outcome::Lease { .. }) => RegisterOp::Delete { deleted: 1 },
        (Call::LeaseRevoke { .. }, Outcome::LeaseRefused) => RegisterOp::Delete { deleted: 0 },
        (Call::LeaseRevoke { .. }, Outcome::Unknown) => RegisterOp::MaybeDelete,
        (Call::LeaseKeepAlive { .. }, Outcome::Lease { .. }) => read(true),
        (Call::LeaseKeepAlive { .. }, Outcome::LeaseRefused | Outcome::Unknown) => return Ok(None),
        (Call::LeasePut { .. }, Outcome::Put { .. }) => read(true),
        (Call::LeasePut { .. }, Outcome::LeaseRefused) => read(false),
        (Call::LeasePut { .. }, Outcome::Unknown) => return Ok(None),
        _ => return Err(malformed(operation)),
    };
    Ok(Some(op))
}

/// A read in model form, or why its revisions cannot be (checked only when revisions are used:
/// a client without them may leave the fields zero).
fn read_op(
    revision: i64,
    value: Option<&[u8]>,
    mod_revision: i64,
    interner: &mut Interner,
    revisions: bool,
) -> Result<RegisterOp, &'static str> {
    if revisions {
        match value {
            Some(_) if mod_revision < 1 => return Err("a value read with a mod_revision below 1"),
            None if mod_revision != 0 => {
                return Err("an absent key read with a nonzero mod_revision")
            }
            _ if mod_revision > revision => return Err("a mod_revision above the header revision"),
            _ => {}
        }
    }
    Ok(RegisterOp::Get {
        value: value.map(|value| interner.id(value)),
        mod_revision: Some(mod_revision).filter(|_| revisions && value.is_some()),
    })
}

/// Places each acknowledged operation among the acknowledged mutations of its key.
fn assign_slots(history: &History, ops: &mut [KeyOp]) {
    let outcome = |op: &KeyOp| &history.operations[op.history_index].outcome;
    let mut mutations: Vec<i64> = ops
        .iter()
        .filter_map(|op| outcome(op).mutation_revision())
        .collect();
    mutations.sort_unstable();
    for op in ops.iter_mut() {
        let outcome = outcome(op);
        let Some(revision) = outcome.revision() else {
            continue;
        };
        let mutations_before = if outcome.mutation_revision().is_some() {
            mutations.partition_point(|&r| r < revision)
        } else {
            mutations.partition_point(|&r| r <= revision)
        };
        op.slot = Some(RevisionSlot {
            // Bounded by the history length, checked in `split`.
            mutations_before: mutations_before as u32,
            revision,
        });
    }
}

/// Gives equal values equal ids.
#[derive(Default)]
struct Interner {
    ids: HashMap<Value, ValueId>,
    values: Vec<Value>,
}

impl Interner {
    fn id(&mut self, value: &[u8]) -> ValueId {
        if let Some(&id) = self.ids.get(value) {
            return id;
        }
        // Bounded by the history length, checked in `split`.
        let id = self.values.len() as ValueId;
        self.values.push(value.to_vec());
        self.ids.insert(value.to_vec(), id);
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(call: Call, invoke_ns: u64, return_ns: u64, outcome: Outcome) -> Operation {
        Operation {
            client: 1,
            call,
            invoke_ns,
            return_ns,
            outcome,
        }
    }

    #[test]
    fn splits_by_key_interns_and_drops_unknown_reads() {
        let k = |name: &str| name.as_bytes().to_vec();
        let history = History::new(vec![
            op(
                Call::Get { key: k("b") },
                0,
                1,
                Outcome::Get {
                    revision: 1,
                    value: None,
                    mod_revision: 0,
                },
            ),
            op(
                Call::Put {
                    key: k("a"),
                    value: k("x"),
                },
                2,
                3,
                Outcome::Unknown,
            ),
            op(
                Call::Put {
                    key: k("a"),
                    value: k("x"),
                },
                4,
                5,
                Outcome::Put { revision: 2 },
            ),
            op(Call::Get { key: k("a") }, 6, 7, Outcome::Unknown),
        ]);
        let keys = split(&history, true).unwrap();
        assert_eq!(keys.len(), 2);
        let a = &keys[0];
        assert_eq!(a.key, k("a"));
        assert_eq!((a.ops.len(), a.acked), (2, 1));
        assert_eq!(a.ops[0].op, RegisterOp::Put { value: 0, lease: 0 });
        assert_eq!(a.ops[1].op, RegisterOp::MaybePut { value: 0, lease: 0 });
        assert_eq!(a.values, vec![k("x")]);
        assert_eq!(
            a.ops[0].slot,
            Some(RevisionSlot {
                mutations_before: 0,
                revision: 2
            })
        );
        assert_eq!(a.ops[1].slot, None);
    }

    #[test]
    fn rejects_an_outcome_that_does_not_answer_the_call() {
        let history = History::new(vec![op(
            Call::Get { key: b"k".to_vec() },
            0,
            1,
            Outcome::Put { revision: 2 },
        )]);
        assert!(matches!(
            split(&history, true),
            Err(Violation::Malformed { .. })
        ));
    }
}
