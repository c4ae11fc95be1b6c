//! `KeyHistory`: the operations of one key in model form, ready for the search.
//!
//! Every call touches exactly one key and keys are independent registers, so a history is
//! linearizable iff each key's sub-history is (P-compositionality, Herlihy & Wing 1990). This
//! module splits a history by key, rejects malformed or impossible operations, interns values,
//! drops reads with unknown outcome (they never constrain anything), and with revisions gives each
//! acknowledged operation its [`RevisionSlot`].

use std::collections::{BTreeMap, HashMap};

use crate::error::Violation;
use crate::history::{Call, History, Key, Operation, Outcome, Value};
use crate::model::{RegisterOp, RevisionSlot, ValueId};

/// One key's operations, acknowledged ones first.
#[derive(Debug)]
pub(crate) struct KeyHistory {
    pub key: Key,
    /// `ops[..acked]` are acknowledged, `ops[acked..]` have unknown outcome.
    pub ops: Vec<KeyOp>,
    pub acked: usize,
    /// The value table: [`ValueId`] `i` is `values[i]`.
    pub values: Vec<Value>,
}

/// One operation of the key.
#[derive(Clone, Copy, Debug)]
pub(crate) struct KeyOp {
    /// Index into `History::operations`, to report the operation as recorded.
    pub history_index: usize,
    pub op: RegisterOp,
    pub invoke_ns: u64,
    /// None for an unknown outcome: the operation never returns.
    pub return_ns: Option<u64>,
    /// Present for acknowledged operations when revisions are used.
    pub slot: Option<RevisionSlot>,
}

/// Splits `history` by key, in key order.
pub(crate) fn split(history: &History, revisions: bool) -> Result<Vec<KeyHistory>, Violation> {
    // Value ids and mutation counts are u32 to keep search states small.
    assert!(
        history.operations.len() < u32::MAX as usize,
        "a history of {} operations is beyond the checker",
        history.operations.len()
    );
    let mut by_key: BTreeMap<&[u8], Vec<usize>> = BTreeMap::new();
    for (index, operation) in history.operations.iter().enumerate() {
        by_key.entry(operation.key()).or_default().push(index);
    }
    by_key
        .into_iter()
        .map(|(key, indices)| key_history(history, key, &indices, revisions))
        .collect()
}

fn key_history(
    history: &History,
    key: &[u8],
    indices: &[usize],
    revisions: bool,
) -> Result<KeyHistory, Violation> {
    let mut interner = Interner::default();
    let mut ops = Vec::with_capacity(indices.len());
    for &history_index in indices {
        let operation = &history.operations[history_index];
        let Some(op) = register_op(operation, &mut interner, revisions)? else {
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
    if revisions {
        assign_slots(history, &mut ops);
    }
    ops.sort_by_key(|op| (op.op.is_unknown(), op.invoke_ns, op.history_index));
    Ok(KeyHistory {
        key: key.to_vec(),
        acked: ops.iter().filter(|op| !op.op.is_unknown()).count(),
        ops,
        values: interner.values,
    })
}

/// The model form of `operation`, None for a read with unknown outcome.
fn register_op(
    operation: &Operation,
    interner: &mut Interner,
    revisions: bool,
) -> Result<Option<RegisterOp>, Violation> {
    let malformed = |reason| Violation::Malformed {
        operation: Box::new(operation.clone()),
        reason,
    };
    let impossible = |reason| Violation::ImpossibleOutcome {
        operation: Box::new(operation.clone()),
        reason,
    };
    if operation
        .returned_ns()
        .is_some_and(|r| r < operation.invoke_ns)
    {
        return Err(malformed("returned before it was invoked"));
    }
    let op = match (&operation.call, &operation.outcome) {
        (Call::Put { value, .. }, Outcome::Put { .. }) => RegisterOp::Put {
            value: interner.id(value),
        },
        (Call::Put { value, .. }, Outcome::Unknown) => RegisterOp::MaybePut {
            value: interner.id(value),
        },
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
                _ => return Err(malformed("the outcome does not answer the call")),
            }
        }
        _ => return Err(malformed("the outcome does not answer the call")),
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
        assert_eq!(a.ops[0].op, RegisterOp::Put { value: 0 });
        assert_eq!(a.ops[1].op, RegisterOp::MaybePut { value: 0 });
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
