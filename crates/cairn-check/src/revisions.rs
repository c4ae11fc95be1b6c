//! Checks that follow from etcd revisions alone, before any search.
//!
//! etcd keeps one revision counter for the whole store, bumped once by every request that
//! changes something; every response header carries the counter as the request saw it, and a
//! read returns the revision of the write it reads from (`mod_revision`). For a linearizable
//! store this gives, over acknowledged operations:
//!
//! 1. each mutation (Put, Delete that deleted, CompareAndPut that succeeded) has its own revision;
//! 2. if `a` returned before `b` was invoked, `rev(a) <= rev(b)`, and `rev(a) < rev(b)` when `b`
//!    is a mutation (it moved the counter past what `a` saw);
//! 3. a read at header revision `R` with mod_revision `m` sees the newest mutation of its key at
//!    or below `R`: no acknowledged mutation of the key lies in `(m, R]`, and the acknowledged
//!    mutation at `m`, if any, is a write of that value to that key. A read of an absent key
//!    misses no acknowledged write unless a delete with unknown outcome or a revoke of a lease
//!    the key may be attached to may explain it. If the write at `m` attached the key to a
//!    lease, no acknowledged revoke of that lease lies in `[m, R]` (it would have deleted the
//!    key: a key outliving its lease).
//!
//! These are cheap (O(n log n)) and name the exact pair of operations at fault. Checks on reads
//! that need no revisions live in `reads`.

use std::collections::HashMap;

use crate::error::Violation;
use crate::history::{Call, History, Outcome};
use crate::key_history::attachable;
use crate::reads::{acked_reads, boxed};

/// Runs every revision check; the first violation found is returned.
pub(crate) fn check(history: &History) -> Result<(), Violation> {
    let mutations = unique_mutations(history)?;
    real_time_order(history)?;
    reads_see_newest_mutation(history, &mutations)
}

/// Check 1: the acknowledged mutations by revision.
fn unique_mutations(history: &History) -> Result<HashMap<i64, usize>, Violation> {
    let mut mutations = HashMap::new();
    for (index, operation) in history.operations.iter().enumerate() {
        let Some(revision) = operation.outcome.mutation_revision() else {
            continue;
        };
        if let Some(first) = mutations.insert(revision, index) {
            return Err(Violation::DuplicateRevision {
                revision,
                first: boxed(&history.operations[first]),
                second: boxed(operation),
            });
        }
    }
    Ok(mutations)
}

/// Check 2, as one sweep: operations in invoke order, against the highest revision among those
/// that returned before.
fn real_time_order(history: &History) -> Result<(), Violation> {
    let operations = &history.operations;
    // (index, header revision) of every acknowledged operation.
    let acked: Vec<(usize, i64)> = operations
        .iter()
        .enumerate()
        .filter_map(|(index, operation)| Some((index, operation.outcome.revision()?)))
        .collect();
    let mut by_invoke = acked.clone();
    by_invoke.sort_by_key(|&(index, _)| operations[index].invoke_ns);
    let mut by_return = acked;
    by_return.sort_by_key(|&(index, _)| operations[index].return_ns);

    let mut returned = by_return.into_iter().peekable();
    // (revision, index) of the highest revision returned so far.
    let mut highest: Option<(i64, usize)> = None;
    for (later, revision) in by_invoke {
        let invoke_ns = operations[later].invoke_ns;
        while let Some((earlier, seen)) =
            returned.next_if(|&(index, _)| operations[index].return_ns < invoke_ns)
        {
            if highest.is_none_or(|(highest, _)| seen > highest) {
                highest = Some((seen, earlier));
            }
        }
        let Some((seen, earlier)) = highest else {
            continue;
        };
        let is_mutation = operations[later].outcome.mutation_revision().is_some();
        if revision < seen || (is_mutation && revision == seen) {
            return Err(Violation::RevisionWentBackwards {
                earlier: boxed(&operations[earlier]),
                later: boxed(&operations[later]),
            });
        }
    }
    Ok(())
}

/// Check 3.
fn reads_see_newest_mutation(
    history: &History,
    mutations: &HashMap<i64, usize>,
) -> Result<(), Violation> {
    let operations = &history.operations;
    // Per key: its acknowledged mutations as (revision, index), by revision.
    let mut by_key: HashMap<&[u8], Vec<(i64, usize)>> = HashMap::new();
    for (&revision, &index) in mutations {
        let Some(key) = operations[index].key() else {
            continue;
        };
        by_key.entry(key).or_default().push((revision, index));
    }
    by_key.values_mut().for_each(|list| list.sort_unstable());
    let maybe_deleted = maybe_deleted(history);
    let revokes = acked_revokes(history);

    for (read, revision, value, mod_revision) in acked_reads(history) {
        let key = read.key().unwrap_or_default();
        let newest = by_key.get(key).and_then(|list| {
            let at_or_below = list.partition_point(|&(r, _)| r <= revision);
            at_or_below.checked_sub(1).map(|i| list[i])
        });
        let missed = match (value, newest) {
            (Some(_), Some((newest_revision, newest))) if newest_revision > mod_revision => {
                Some(newest)
            }
            (None, Some((_, newest))) => {
                let delete_may_explain = maybe_deleted
                    .get(key)
                    .is_some_and(|&invoke_ns| invoke_ns <= read.return_ns);
                let newest_wrote = operations[newest].written_value().is_some();
                (newest_wrote && !delete_may_explain).then_some(newest)
            }
            _ => None,
        };
        let write = value.and_then(|_| mutations.get(&mod_revision));
        let missed = missed.or_else(|| {
            let lease = operations[*write?].call.lease()?;
            missed_revoke(&revokes, lease, mod_revision, revision)
        });
        if let Some(missed) = missed {
            return Err(Violation::StaleRead {
                read: boxed(read),
                missed: boxed(&operations[missed]),
            });
        }
        if let (Some(value), Some(&write)) = (value, write) {
            let write = &operations[write];
            if write.key() != read.key() || write.written_value() != Some(value) {
                return Err(Violation::ReadMismatch {
                    read: boxed(read),
                    write: boxed(write),
                });
            }
        }
    }
    Ok(())
}

/// Per key: the earliest invoke of an operation that may have deleted it without an
/// acknowledged mutation saying so: a delete with unknown outcome, or a revoke (acknowledged
/// or not) of a lease the key may be attached to.
fn maybe_deleted(history: &History) -> HashMap<&[u8], u64> {
    let attachable = attachable(history);
    let mut maybe_deleted: HashMap<&[u8], u64> = HashMap::new();
    for operation in &history.operations {
        let keys: Vec<&[u8]> = match (&operation.call, &operation.outcome) {
            (Call::Delete { key }, Outcome::Unknown) => vec![key],
            (Call::LeaseRevoke { lease }, Outcome::Lease { .. } | Outcome::Unknown) => attachable
                .get(lease)
                .into_iter()
                .flatten()
                .copied()
                .collect(),
            _ => continue,
        };
        for key in keys {
            let invoke_ns = maybe_deleted.entry(key).or_insert(u64::MAX);
            *invoke_ns = (*invoke_ns).min(operation.invoke_ns);
        }
    }
    maybe_deleted
}

/// Per lease: its acknowledged revokes that found it, as (revision, index), by revision.
fn acked_revokes(history: &History) -> HashMap<i64, Vec<(i64, usize)>> {
    let mut revokes: HashMap<i64, Vec<(i64, usize)>> = HashMap::new();
    for (index, operation) in history.operations.iter().enumerate() {
        if let (Call::LeaseRevoke { lease }, Outcome::Lease { revision }) =
            (&operation.call, &operation.outcome)
        {
            revokes.entry(*lease).or_default().push((*revision, index));
        }
    }
    revokes.values_mut().for_each(|list| list.sort_unstable());
    revokes
}

/// A revoke of `lease` at a revision in `[written, read]`: a key written at `written` with that
/// lease and not written since cannot still be there at `read`. (A revoke at `written` itself
/// came after the write and found the key attached, so it must have deleted it at a revision of
/// its own.)
fn missed_revoke(
    revokes: &HashMap<i64, Vec<(i64, usize)>>,
    lease: i64,
    written: i64,
    read: i64,
) -> Option<usize> {
    let list = revokes.get(&lease)?;
    let from = list.partition_point(|&(revision, _)| revision < written);
    list.get(from)
        .filter(|&&(revision, _)| revision <= read)
        .map(|&(_, index)| index)
}
