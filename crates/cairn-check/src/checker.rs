//! `check`: the entry point, running the layers in order of cost.
//!
//! First the history is split by key and every operation validated (malformed or impossible
//! outcomes). Then the cheap checks run over the whole history, each naming the operations at
//! fault: every value read was written, the revision checks, no read is stale by real time.
//! Last, the linearizability search runs key by key; it alone is complete.

use crate::error::Violation;
use crate::history::{Call, History, Outcome};
use crate::key_history;
use crate::limits::SEARCH_STATES_MAX_DEFAULT;
use crate::linearizability;
use crate::reads;
use crate::revisions;

/// How to check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckOptions {
    /// Trust the etcd revisions in outcomes: run the revision checks and let revisions order the
    /// search. Turn off for a client that sees no revisions; the search alone is still a complete
    /// linearizability check, but refuting a violation deep in a long history of one key with
    /// many unknown outcomes may then run into `search_states_max` (revisions pin acknowledged
    /// operations in place and keep that search small).
    pub revisions: bool,
    /// States the search may explore on one key before giving up with
    /// [`Violation::SearchLimit`].
    pub search_states_max: u64,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            revisions: true,
            search_states_max: SEARCH_STATES_MAX_DEFAULT,
        }
    }
}

/// What a passing check covered, so a test can assert its history was not trivially small.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Operations in the history.
    pub operations: usize,
    /// Distinct objects searched: keys, and leases (whether each exists).
    pub keys: usize,
    /// Acknowledged operations other than Get, whatever their outcome.
    pub acknowledged_writes: usize,
    /// Operations with unknown outcome.
    pub unknown_operations: usize,
    /// Search states explored over all keys.
    pub states_explored: u64,
}

/// Proves `history` linearizable for an etcd-like KV store, revisions included.
pub fn check(history: &History) -> Result<Report, Violation> {
    check_with(history, &CheckOptions::default())
}

/// [`check`] with explicit options.
pub fn check_with(history: &History, options: &CheckOptions) -> Result<Report, Violation> {
    let keys = key_history::split(history, options.revisions)?;
    reads::check_written(history)?;
    if options.revisions {
        revisions::check(history)?;
    }
    reads::check_stale(history)?;
    let mut states_explored = 0;
    for key in &keys {
        states_explored += linearizability::check_key(key, history, options.search_states_max)?;
    }
    let operations = &history.operations;
    Ok(Report {
        operations: operations.len(),
        keys: keys.len(),
        acknowledged_writes: operations
            .iter()
            .filter(|op| op.outcome != Outcome::Unknown && !matches!(op.call, Call::Get { .. }))
            .count(),
        unknown_operations: operations
            .iter()
            .filter(|op| op.outcome == Outcome::Unknown)
            .count(),
        states_explored,
    })
}
