//! The register model of one key: the sequential specification the search linearizes against.
//!
//! A key holds `Option<Value>` and the lease it is attached to. Put sets it (attaching the lease
//! it names, detaching any other), Delete clears it (and reports 1 if it was present, else 0),
//! CompareAndPut sets it iff it equals `expected` (and reports whether it did), Get returns it,
//! and a revoke of the key's lease clears it. A revoke that found no lease requires that the
//! key is not attached to it: a key outliving its lease is a lost deletion.
//!
//! A lease's existence is a register too, driven through the same ops by `key_history`: a grant
//! is a CompareAndPut from absent, a revoke a Delete, a keep-alive or LeasePut a Get. Values are interned per key ([`ValueId`]) so a state is small, `Copy` and cheap to
//! hash in the search's memo.
//!
//! With revisions the model is stronger, at no cost to its correctness on etcd histories:
//! acknowledged mutations of the key must apply in revision order, every acknowledged operation
//! must apply after exactly the acknowledged mutations at or below its header revision, header
//! revisions never go down along the order (etcd's counter only grows: this is what places a
//! revoke, which may not count as a mutation of the key, among the reads), and a read's
//! mod_revision must be the revision of the write it reads from. Without revisions
//! ([`RevisionSlot`] absent, `mod_revision` None) it is the plain register.

use crate::history::{Register, Value};

/// A value interned per key: index into the key's value table.
pub(crate) type ValueId = u32;

/// Stands for every value no operation of the key observes, in [`RegisterOp::symmetric`].
const UNOBSERVED: ValueId = ValueId::MAX;

/// One operation on the key in model form. The `Maybe*` variants are operations with unknown
/// outcome: the search may apply them (with the effect below) or never.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum RegisterOp {
    Put {
        value: ValueId,
        /// The lease the put attaches the key to; 0 for none (etcd's convention).
        lease: i64,
    },
    Get {
        value: Option<ValueId>,
        /// None when revisions are not used or the key was absent.
        mod_revision: Option<i64>,
    },
    Delete {
        deleted: i64,
    },
    CompareAndPut {
        expected: Option<ValueId>,
        value: ValueId,
        succeeded: bool,
    },
    /// A revoke of `lease` that found it: clears the key if it is attached to the lease. Not
    /// counted as a mutation: its outcome does not say whether it deleted this key.
    Revoke {
        lease: i64,
    },
    /// A revoke that found no lease `lease`: the key cannot be attached to it.
    RevokeRefused {
        lease: i64,
    },
    MaybePut {
        value: ValueId,
        lease: i64,
    },
    MaybeDelete,
    MaybeRevoke {
        lease: i64,
    },
    MaybeCompareAndPut {
        expected: Option<ValueId>,
        value: ValueId,
    },
}

impl RegisterOp {
    pub(crate) fn is_unknown(&self) -> bool {
        matches!(
            self,
            RegisterOp::MaybePut { .. }
                | RegisterOp::MaybeDelete
                | RegisterOp::MaybeRevoke { .. }
                | RegisterOp::MaybeCompareAndPut { .. }
        )
    }

    /// The value this op compares the register with: a read's value, a compare's expectation.
    pub(crate) fn observes(&self) -> Option<ValueId> {
        match *self {
            RegisterOp::Get { value, .. } => value,
            RegisterOp::CompareAndPut { expected, .. }
            | RegisterOp::MaybeCompareAndPut { expected, .. } => expected,
            _ => None,
        }
    }

    /// An unknown op with every value no op of the key observes (`observed[id]` false)
    /// replaced by one stand-in. The model only ever compares the register with observed values,
    /// so it cannot tell unobserved ones apart: two unknown ops with equal symmetric forms are
    /// interchangeable, and the search tries only one of them. Acknowledged ops are returned as
    /// they are.
    pub(crate) fn symmetric(&self, observed: &[bool]) -> RegisterOp {
        let stand_in = |value: ValueId| {
            if observed[value as usize] {
                value
            } else {
                UNOBSERVED
            }
        };
        match *self {
            RegisterOp::MaybePut { value, lease } => RegisterOp::MaybePut {
                value: stand_in(value),
                lease,
            },
            RegisterOp::MaybeCompareAndPut { expected, value } => RegisterOp::MaybeCompareAndPut {
                expected,
                value: stand_in(value),
            },
            other => other,
        }
    }

    /// Whether the op is acknowledged yet its effect depends on the state before it: a revoke
    /// clears the key only if it is attached. Every other acknowledged op's effect follows from
    /// its outcome, which the search's lazy application of unknown ops relies on.
    pub(crate) fn effect_depends_on_state(&self) -> bool {
        matches!(self, RegisterOp::Revoke { .. })
    }

    /// Whether the op's effect ignores the state before it. Such an unknown op makes any unknown
    /// op applied just before it pointless, which the search uses to prune.
    pub(crate) fn overwrites(&self) -> bool {
        matches!(self, RegisterOp::MaybePut { .. } | RegisterOp::MaybeDelete)
    }
}

/// Where an acknowledged operation sits among the acknowledged mutations of its key, by
/// revision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RevisionSlot {
    /// Acknowledged mutations of the key that must have applied before this operation: those
    /// with a lower revision for a mutation, those at or below the header revision otherwise.
    pub mutations_before: u32,
    /// The header revision (the mutation's own revision for a mutation).
    pub revision: i64,
}

/// The register after some prefix of operations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub(crate) struct State {
    pub value: Option<ValueId>,
    /// Revision of the write that produced `value`, when known.
    pub mod_revision: Option<i64>,
    /// Acknowledged mutations applied so far (counted only with revisions).
    pub mutations: u32,
    /// The lease the value is attached to; 0 for none.
    pub lease: i64,
    /// The highest header revision applied so far (with revisions). Determined by the set of
    /// acknowledged operations applied, so it adds no states to the search's memo.
    pub revision: i64,
}

/// Why the model refuses an operation in a state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mismatch {
    RevisionOrder {
        mutations: u32,
        mutations_before: u32,
    },
    RevisionBackwards {
        revision: i64,
        seen: i64,
    },
    ReadValue {
        read: Option<ValueId>,
        held: Option<ValueId>,
    },
    ReadModRevision {
        read: i64,
        held: i64,
    },
    DeleteCount {
        deleted: i64,
        held: Option<ValueId>,
    },
    CompareAndPut {
        succeeded: bool,
        held: Option<ValueId>,
    },
    /// A revoke found no lease, yet the key is still attached to it.
    StillAttached {
        lease: i64,
    },
    /// An unknown operation that would change nothing here; applying it is never needed.
    NoEffect,
}

/// Applies `op` to `state`, or says why the model forbids it there.
pub(crate) fn step(
    state: &State,
    op: &RegisterOp,
    slot: Option<&RevisionSlot>,
) -> Result<State, Mismatch> {
    let Some(slot) = slot else {
        return apply(state, op, None);
    };
    if state.mutations != slot.mutations_before {
        return Err(Mismatch::RevisionOrder {
            mutations: state.mutations,
            mutations_before: slot.mutations_before,
        });
    }
    if slot.revision < state.revision {
        return Err(Mismatch::RevisionBackwards {
            revision: slot.revision,
            seen: state.revision,
        });
    }
    let next = apply(state, op, Some(slot))?;
    Ok(State {
        revision: slot.revision,
        ..next
    })
}

/// The effect of `op` on `state`, once the revision checks passed.
fn apply(state: &State, op: &RegisterOp, slot: Option<&RevisionSlot>) -> Result<State, Mismatch> {
    let written = |value: Option<ValueId>, lease: i64| State {
        value,
        mod_revision: slot.filter(|_| value.is_some()).map(|slot| slot.revision),
        mutations: state.mutations + u32::from(slot.is_some()),
        lease,
        revision: state.revision,
    };
    let attached = |lease: i64| state.value.is_some() && state.lease == lease;
    let revoked = State {
        value: None,
        mod_revision: None,
        lease: 0,
        ..*state
    };
    match *op {
        RegisterOp::Put { value, lease } | RegisterOp::MaybePut { value, lease } => {
            Ok(written(Some(value), lease))
        }
        RegisterOp::Get {
            value,
            mod_revision,
        } => read(state, value, mod_revision),
        RegisterOp::Delete { deleted } => {
            let expected = i64::from(state.value.is_some());
            match deleted {
                _ if deleted != expected => Err(Mismatch::DeleteCount {
                    deleted,
                    held: state.value,
                }),
                0 => Ok(*state),
                _ => Ok(written(None, 0)),
            }
        }
        RegisterOp::MaybeDelete if state.value.is_some() => Ok(written(None, 0)),
        RegisterOp::Revoke { lease } if attached(lease) => Ok(revoked),
        RegisterOp::Revoke { .. } => Ok(*state),
        RegisterOp::MaybeRevoke { lease } if attached(lease) => Ok(revoked),
        RegisterOp::RevokeRefused { lease } if attached(lease) => {
            Err(Mismatch::StillAttached { lease })
        }
        RegisterOp::RevokeRefused { .. } => Ok(*state),
        RegisterOp::CompareAndPut {
            expected,
            value,
            succeeded,
        } => match (state.value == expected, succeeded) {
            (true, true) => Ok(written(Some(value), 0)),
            (false, false) => Ok(*state),
            _ => Err(Mismatch::CompareAndPut {
                succeeded,
                held: state.value,
            }),
        },
        RegisterOp::MaybeCompareAndPut { expected, value } if state.value == expected => {
            Ok(written(Some(value), 0))
        }
        RegisterOp::MaybeDelete
        | RegisterOp::MaybeRevoke { .. }
        | RegisterOp::MaybeCompareAndPut { .. } => Err(Mismatch::NoEffect),
    }
}

fn read(
    state: &State,
    value: Option<ValueId>,
    mod_revision: Option<i64>,
) -> Result<State, Mismatch> {
    if value != state.value {
        return Err(Mismatch::ReadValue {
            read: value,
            held: state.value,
        });
    }
    match (mod_revision, state.mod_revision) {
        (Some(read), Some(held)) if read != held => Err(Mismatch::ReadModRevision { read, held }),
        // The value came from a write with unknown outcome: the first read of it tells its
        // revision, and later reads of the same write must agree.
        (Some(read), None) if value.is_some() => Ok(State {
            mod_revision: Some(read),
            ..*state
        }),
        _ => Ok(*state),
    }
}

impl Mismatch {
    /// The reason in words, with values looked up in the key's value table.
    pub(crate) fn describe(&self, values: &[Value]) -> String {
        let show =
            |id: Option<ValueId>| Register(id.map(|id| values[id as usize].as_slice())).to_string();
        match *self {
            Mismatch::RevisionOrder {
                mutations,
                mutations_before,
            } => format!(
                "by its revision it follows {mutations_before} acknowledged mutations of the key, \
                 but {mutations} precede it here"
            ),
            Mismatch::RevisionBackwards { revision, seen } => format!(
                "its header revision {revision} is below revision {seen}, seen by an operation \
                 it would follow"
            ),
            Mismatch::ReadValue { read, held } => {
                format!("read {} but the register holds {}", show(read), show(held))
            }
            Mismatch::ReadModRevision { read, held } => format!(
                "read mod_revision {read} but the value held was written at revision {held}"
            ),
            Mismatch::DeleteCount { deleted, held } => {
                format!("deleted {deleted} but the register holds {}", show(held))
            }
            Mismatch::CompareAndPut { succeeded, held } => {
                let verdict = if succeeded { "succeeded" } else { "failed" };
                format!("{verdict} but the register holds {}", show(held))
            }
            Mismatch::StillAttached { lease } => format!(
                "the revoke found no lease {lease}, but the key is still attached to it \
                 (its revoke lost the deletion)"
            ),
            Mismatch::NoEffect => "outcome unknown and it would change nothing here".to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: ValueId = 0;
    const B: ValueId = 1;

    fn holding(value: Option<ValueId>) -> State {
        State {
            value,
            ..State::default()
        }
    }

    #[test]
    fn register_without_revisions() {
        let empty = State::default();
        let put = step(&empty, &RegisterOp::Put { value: A, lease: 0 }, None).unwrap();
        assert_eq!(put, holding(Some(A)));

        let get = |value| RegisterOp::Get {
            value,
            mod_revision: None,
        };
        assert_eq!(step(&put, &get(Some(A)), None), Ok(put));
        assert!(step(&put, &get(None), None).is_err());

        let delete = |deleted| RegisterOp::Delete { deleted };
        assert_eq!(step(&put, &delete(1), None), Ok(empty));
        assert!(step(&put, &delete(0), None).is_err());
        assert_eq!(step(&empty, &delete(0), None), Ok(empty));
        assert!(step(&empty, &delete(1), None).is_err());

        let cas = |expected, succeeded| RegisterOp::CompareAndPut {
            expected,
            value: B,
            succeeded,
        };
        assert_eq!(step(&put, &cas(Some(A), true), None), Ok(holding(Some(B))));
        assert_eq!(step(&put, &cas(None, false), None), Ok(put));
        assert!(step(&put, &cas(None, true), None).is_err());
        assert!(step(&empty, &cas(Some(A), true), None).is_err());
    }

    #[test]
    fn unknown_operations_apply_only_when_they_change_something() {
        let empty = State::default();
        assert_eq!(
            step(&empty, &RegisterOp::MaybeDelete, None),
            Err(Mismatch::NoEffect)
        );
        let maybe_cas = RegisterOp::MaybeCompareAndPut {
            expected: Some(A),
            value: B,
        };
        assert_eq!(step(&empty, &maybe_cas, None), Err(Mismatch::NoEffect));
        assert_eq!(
            step(&holding(Some(A)), &maybe_cas, None),
            Ok(holding(Some(B)))
        );
    }

    #[test]
    fn revisions_order_mutations_and_pin_reads() {
        let slot = |mutations_before, revision| RevisionSlot {
            mutations_before,
            revision,
        };
        let empty = State::default();
        // The second mutation of the key cannot apply first.
        assert!(matches!(
            step(
                &empty,
                &RegisterOp::Put { value: B, lease: 0 },
                Some(&slot(1, 5))
            ),
            Err(Mismatch::RevisionOrder { .. })
        ));
        let put = step(
            &empty,
            &RegisterOp::Put { value: A, lease: 0 },
            Some(&slot(0, 3)),
        )
        .unwrap();
        assert_eq!(put.mod_revision, Some(3));
        assert_eq!(put.mutations, 1);

        let get = |mod_revision| RegisterOp::Get {
            value: Some(A),
            mod_revision: Some(mod_revision),
        };
        let read = step(&put, &get(3), Some(&slot(1, 4)));
        assert_eq!(read, Ok(State { revision: 4, ..put }));
        // Header revisions never go down along the order.
        assert!(matches!(
            step(&read.unwrap(), &get(3), Some(&slot(1, 3))),
            Err(Mismatch::RevisionBackwards {
                revision: 3,
                seen: 4
            })
        ));
        assert!(matches!(
            step(&put, &get(2), Some(&slot(1, 4))),
            Err(Mismatch::ReadModRevision { read: 2, held: 3 })
        ));
        // A read at header revision 2 comes before the mutation at 3.
        assert!(step(&put, &get(3), Some(&slot(0, 2))).is_err());

        // A write with unknown outcome: the first read teaches its revision.
        let maybe = step(&put, &RegisterOp::MaybePut { value: A, lease: 0 }, None).unwrap();
        assert_eq!(maybe.mod_revision, None);
        let learned = step(&maybe, &get(9), Some(&slot(1, 9))).unwrap();
        assert_eq!(learned.mod_revision, Some(9));
        assert!(step(&learned, &get(8), Some(&slot(1, 9))).is_err());
    }

    #[test]
    fn a_revoke_clears_only_keys_attached_to_its_lease() {
        let put = |lease| RegisterOp::Put { value: A, lease };
        let attached = step(&State::default(), &put(7), None).unwrap();
        assert_eq!(attached.lease, 7);
        let revoke = |lease| RegisterOp::Revoke { lease };
        assert_eq!(step(&attached, &revoke(8), None), Ok(attached));
        assert_eq!(step(&attached, &revoke(7), None), Ok(State::default()));
        // A later put without the lease detaches the key.
        let detached = step(&attached, &put(0), None).unwrap();
        assert_eq!(step(&detached, &revoke(7), None), Ok(detached));
        // A revoke that found no lease: the key cannot still be attached to it.
        let refused = RegisterOp::RevokeRefused { lease: 7 };
        assert_eq!(
            step(&attached, &refused, None),
            Err(Mismatch::StillAttached { lease: 7 })
        );
        assert_eq!(step(&detached, &refused, None), Ok(detached));
        let maybe = RegisterOp::MaybeRevoke { lease: 7 };
        assert_eq!(step(&attached, &maybe, None), Ok(State::default()));
        assert_eq!(step(&detached, &maybe, None), Err(Mismatch::NoEffect));
    }

    #[test]
    fn symmetric_form_merges_unobserved_values() {
        let observed = [true, false, false];
        let maybe_put = |value| RegisterOp::MaybePut { value, lease: 0 };
        assert_eq!(
            maybe_put(1).symmetric(&observed),
            maybe_put(2).symmetric(&observed)
        );
        assert_ne!(
            maybe_put(0).symmetric(&observed),
            maybe_put(1).symmetric(&observed)
        );
        let read = RegisterOp::Get {
            value: Some(0),
            mod_revision: None,
        };
        assert_eq!(read.observes(), Some(0));
        assert_eq!(read.symmetric(&observed), read);
    }

    #[test]
    fn describe_names_values() {
        let values = vec![b"a".to_vec(), b"b".to_vec()];
        let mismatch = Mismatch::ReadValue {
            read: Some(A),
            held: None,
        };
        assert_eq!(
            mismatch.describe(&values),
            "read \"a\" but the register holds absent"
        );
    }
}
