//! Checks on reads that need no revisions, before any search.
//!
//! 1. *Written*: a read returning a value was preceded by a Put or CompareAndPut of that value to
//!    that key (acknowledged or unknown) invoked no later than the read returned.
//! 2. *Not stale by real time*: some write that may have produced what the read returned (a
//!    write of the value, or for an absent key a delete or the initial state) is not followed,
//!    entirely between its return and the read's invoke, by an acknowledged mutation that
//!    produced something else. In any linearization the last write before the read produced
//!    what it returned, and such a mutation would come after that write and before the read.
//!    A write with unknown outcome is never followed in this sense: it may land at any time.
//!
//! Both are cheap and name the operations at fault; the search would find the same violations
//! but, on a long history, only after exhausting every order of what precedes them.

use std::collections::{BTreeMap, HashMap};

use crate::error::Violation;
use crate::history::{Call, History, Operation, Outcome};
use crate::key_history::attachable;

pub(crate) fn boxed(operation: &Operation) -> Box<Operation> {
    Box::new(operation.clone())
}

/// The acknowledged reads: (read, header revision, value, mod_revision).
pub(crate) fn acked_reads(
    history: &History,
) -> impl Iterator<Item = (&Operation, i64, Option<&[u8]>, i64)> {
    history
        .operations
        .iter()
        .filter_map(|operation| match &operation.outcome {
            Outcome::Get {
                revision,
                value,
                mod_revision,
            } => Some((operation, *revision, value.as_deref(), *mod_revision)),
            _ => None,
        })
}

/// Check 1.
pub(crate) fn check_written(history: &History) -> Result<(), Violation> {
    // (key, value) -> earliest invoke of an operation that may have written it.
    let mut first_write: HashMap<(&[u8], &[u8]), u64> = HashMap::new();
    for operation in &history.operations {
        if let (Some(key), Some(value)) = (operation.key(), operation.written_value()) {
            let invoke_ns = first_write.entry((key, value)).or_insert(u64::MAX);
            *invoke_ns = (*invoke_ns).min(operation.invoke_ns);
        }
    }
    for (read, _, value, _) in acked_reads(history) {
        let (Some(key), Some(value)) = (read.key(), value) else {
            continue;
        };
        match first_write.get(&(key, value)) {
            Some(&invoke_ns) if invoke_ns <= read.return_ns => {}
            _ => return Err(Violation::ValueNeverWritten { read: boxed(read) }),
        }
    }
    Ok(())
}

/// What a write leaves in the register: the value, or None for a delete.
type Effect<'a> = Option<&'a [u8]>;

/// Check 2, key by key (in key order, so the violation reported does not vary between runs).
/// A revoke of a lease the key may be attached to counts among the key's writers of absent.
pub(crate) fn check_stale(history: &History) -> Result<(), Violation> {
    let attachable = attachable(history);
    let mut by_key: BTreeMap<&[u8], Vec<&Operation>> = BTreeMap::new();
    for operation in &history.operations {
        if let Some(key) = operation.key() {
            by_key.entry(key).or_default().push(operation);
        }
        if let Call::LeaseRevoke { lease } = operation.call {
            for key in attachable.get(&lease).into_iter().flatten() {
                by_key.entry(key).or_default().push(operation);
            }
        }
    }
    for operations in by_key.values() {
        let writers = Writers::new(operations);
        let mutations = Mutations::new(operations);
        for &read in operations {
            let Outcome::Get { value, .. } = &read.outcome else {
                continue;
            };
            if let Some(missed) = writers.all_overwritten(read, value.as_deref(), &mutations) {
                return Err(Violation::StaleRead {
                    read: boxed(read),
                    missed: boxed(missed),
                });
            }
        }
    }
    Ok(())
}

/// A write that may have produced what a read returned.
#[derive(Clone, Copy)]
enum Writer<'a> {
    /// The empty store, for reads of an absent key.
    Initial,
    Acked(&'a Operation),
    /// A write with unknown outcome: it may land right before any read after its invoke.
    Unknown {
        invoke_ns: u64,
    },
}

/// One key's writers, by effect.
struct Writers<'a> {
    by_effect: HashMap<Effect<'a>, Vec<Writer<'a>>>,
}

impl<'a> Writers<'a> {
    fn new(operations: &[&'a Operation]) -> Self {
        let mut by_effect: HashMap<Effect<'a>, Vec<Writer<'a>>> = HashMap::new();
        by_effect.insert(None, vec![Writer::Initial]);
        for &operation in operations {
            let effect = match (&operation.call, &operation.outcome) {
                (Call::Delete { .. }, Outcome::Delete { deleted, .. }) if *deleted > 0 => None,
                (Call::Delete { .. }, Outcome::Unknown) => None,
                // Whether it deleted this key is unknown: it may have, at any time after its
                // invoke (a revoke that returned did so before returning, which is weaker).
                (Call::LeaseRevoke { .. }, Outcome::Lease { .. } | Outcome::Unknown) => {
                    by_effect.entry(None).or_default().push(Writer::Unknown {
                        invoke_ns: operation.invoke_ns,
                    });
                    continue;
                }
                _ => match operation.written_value() {
                    Some(value) => Some(value),
                    None => continue,
                },
            };
            let writer = match operation.outcome {
                Outcome::Unknown => Writer::Unknown {
                    invoke_ns: operation.invoke_ns,
                },
                _ => Writer::Acked(operation),
            };
            by_effect.entry(effect).or_default().push(writer);
        }
        Writers { by_effect }
    }

    /// If every writer that could precede `read` was overwritten before `read` began, the
    /// mutation that overwrote the latest of them.
    fn all_overwritten(
        &self,
        read: &Operation,
        effect: Effect<'_>,
        mutations: &Mutations<'a>,
    ) -> Option<&'a Operation> {
        // A value nobody wrote is `check_written`'s to report.
        let writers = self.by_effect.get(&effect)?;
        let mut latest: Option<(u64, &'a Operation)> = None;
        for writer in writers {
            let returned_ns = match *writer {
                Writer::Unknown { invoke_ns } if invoke_ns <= read.return_ns => return None,
                Writer::Acked(write) if write.invoke_ns > read.return_ns => continue,
                Writer::Unknown { .. } => continue,
                Writer::Initial => None,
                Writer::Acked(write) => Some(write.return_ns),
            };
            let overwrite = mutations.first_returning_after(returned_ns, effect)?;
            if overwrite.return_ns >= read.invoke_ns {
                return None;
            }
            let returned_ns = returned_ns.unwrap_or(0);
            if latest.is_none_or(|(latest_ns, _)| returned_ns >= latest_ns) {
                latest = Some((returned_ns, overwrite));
            }
        }
        latest.map(|(_, overwrite)| overwrite)
    }
}

/// One key's acknowledged mutations (Put, CompareAndPut that succeeded, Delete that deleted), by
/// invoke time, with per suffix the two earliest to return that differ in effect: the earliest
/// returning mutation with an effect other than `x` is the first of them unless that one has
/// effect `x`, then the second.
struct Mutations<'a> {
    invoke_ns: Vec<u64>,
    suffix_first: Vec<[Option<Mutation<'a>>; 2]>,
}

#[derive(Clone, Copy)]
struct Mutation<'a> {
    operation: &'a Operation,
    effect: Effect<'a>,
}

impl<'a> Mutations<'a> {
    fn new(operations: &[&'a Operation]) -> Self {
        let mut mutations: Vec<Mutation<'a>> = operations
            .iter()
            .filter(|operation| operation.outcome.mutation_revision().is_some())
            .map(|&operation| Mutation {
                operation,
                effect: operation.written_value(),
            })
            .collect();
        mutations.sort_by_key(|mutation| mutation.operation.invoke_ns);
        let mut suffix_first = vec![[None, None]; mutations.len() + 1];
        for (index, &mutation) in mutations.iter().enumerate().rev() {
            suffix_first[index] = earliest_two(suffix_first[index + 1], mutation);
        }
        Mutations {
            invoke_ns: mutations
                .iter()
                .map(|mutation| mutation.operation.invoke_ns)
                .collect(),
            suffix_first,
        }
    }

    /// The earliest-returning mutation invoked after `returned_ns` (after the start when None)
    /// whose effect is not `effect`.
    fn first_returning_after(
        &self,
        returned_ns: Option<u64>,
        effect: Effect<'_>,
    ) -> Option<&'a Operation> {
        let from = returned_ns.map_or(0, |returned_ns| {
            self.invoke_ns
                .partition_point(|&invoke_ns| invoke_ns <= returned_ns)
        });
        let [first, second] = self.suffix_first[from];
        let chosen = match first {
            Some(first) if first.effect == effect => second,
            _ => first,
        };
        chosen.map(|mutation| mutation.operation)
    }
}

/// Adds `mutation` to the two earliest-returning mutations with different effects.
fn earliest_two<'a>(
    [first, second]: [Option<Mutation<'a>>; 2],
    mutation: Mutation<'a>,
) -> [Option<Mutation<'a>>; 2] {
    let returns = |m: Mutation<'_>| m.operation.return_ns;
    match first {
        None => [Some(mutation), None],
        Some(first) if returns(mutation) < returns(first) => {
            // `first` is the earliest of the rest; if it shares the new effect, `second` is the
            // earliest with another one.
            let second = if first.effect != mutation.effect {
                Some(first)
            } else {
                second
            };
            [Some(mutation), second]
        }
        Some(first) => {
            let replaces_second = mutation.effect != first.effect
                && second.is_none_or(|second| returns(mutation) < returns(second));
            [
                Some(first),
                if replaces_second {
                    Some(mutation)
                } else {
                    second
                },
            ]
        }
    }
}
