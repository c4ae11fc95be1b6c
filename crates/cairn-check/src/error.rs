//! `Violation`: why a history is not a linearizable etcd history.
//!
//! Every variant carries the operations involved, and its message prints them (client, call,
//! times, outcome) so a failing test says what to look at without a debugger.

use std::fmt;

use crate::history::{Escaped, Key, Operation, Register, Value};

/// A history the checker rejects (or, for [`Violation::SearchLimit`], could not decide).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    /// The recording itself is broken: the outcome kind does not match the call, or the
    /// operation returned before it was invoked. A bug in the test harness.
    #[error("malformed operation ({reason}): {operation}")]
    Malformed {
        operation: Box<Operation>,
        reason: &'static str,
    },
    /// The store answered something no store could: a value with no mod_revision, a
    /// mod_revision above the header revision, a single-key delete that deleted more than one.
    #[error("impossible outcome ({reason}): {operation}")]
    ImpossibleOutcome {
        operation: Box<Operation>,
        reason: &'static str,
    },
    /// Two acknowledged mutations report the same revision.
    #[error("two acknowledged mutations report revision {revision}:\n  {first}\n  {second}")]
    DuplicateRevision {
        revision: i64,
        first: Box<Operation>,
        second: Box<Operation>,
    },
    /// `earlier` returned before `later` was invoked, yet `later` reports a lower revision (or,
    /// being a mutation, no higher one).
    #[error(
        "revision went backwards in real time: the first operation returned before the second \
         was invoked (a mutation must report a higher revision, anything else at least the \
         same):\n  first:  {earlier}\n  second: {later}"
    )]
    RevisionWentBackwards {
        earlier: Box<Operation>,
        later: Box<Operation>,
    },
    /// A read misses an acknowledged mutation of its key that must precede it: a stale read, or
    /// a lost write. By revision: the mutation's revision is at or below the read's header
    /// revision and above the mod_revision it returned. By real time: every write that could
    /// have produced what the read returned was followed by this mutation (the one after the
    /// latest such write), entirely before the read began.
    #[error(
        "stale read: the read misses an acknowledged mutation of its key that must precede it \
         (by revision or by real time):\n  read:   {read}\n  missed: {missed}"
    )]
    StaleRead {
        read: Box<Operation>,
        missed: Box<Operation>,
    },
    /// A read's mod_revision is the revision of an acknowledged mutation that did not write the
    /// value read (another key, a delete, another value).
    #[error(
        "the read's mod_revision belongs to a mutation that did not write the value read:\n  \
         read:  {read}\n  write: {write}"
    )]
    ReadMismatch {
        read: Box<Operation>,
        write: Box<Operation>,
    },
    /// A read returned a value that no Put or CompareAndPut (acknowledged or unknown) of its key
    /// had been asked to write by the time the read returned.
    #[error("the read returned a value nobody wrote to its key before it returned: {read}")]
    ValueNeverWritten { read: Box<Operation> },
    /// No order of the key's operations respects real time and the register model.
    #[error("{0}")]
    NotLinearizable(Box<NotLinearizable>),
    /// The search on `key` explored `states_max` states without deciding. Not a proof of a bug:
    /// raise `CheckOptions::search_states_max` or record a shorter history.
    #[error(
        "search on key {} gave up after {states_max} states without deciding",
        Escaped(.key)
    )]
    SearchLimit { key: Key, states_max: u64 },
}

/// Why the search failed on one key, told from the longest linearizable prefix it found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotLinearizable {
    pub key: Key,
    /// Acknowledged operations on the key.
    pub operations: usize,
    /// Acknowledged operations in the longest prefix the search could linearize.
    pub linearized: usize,
    /// The last operations of that prefix (unknown ones included), oldest first.
    pub prefix_tail: Vec<Operation>,
    /// The register after that prefix.
    pub register: Option<Value>,
    /// Every acknowledged operation real time allows next, with the reason the model refuses it.
    pub refused: Vec<Refusal>,
    /// Unknown operations real time would also allow next; none of them helps either.
    pub unknown_pending: usize,
}

/// One operation the model refused after the longest prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub operation: Operation,
    pub reason: String,
}

impl fmt::Display for NotLinearizable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "key {} is not linearizable: the longest linearizable prefix orders {} of its {} \
             acknowledged operations",
            Escaped(&self.key),
            self.linearized,
            self.operations
        )?;
        writeln!(
            f,
            "  register after the prefix: {}",
            Register(self.register.as_deref())
        )?;
        if !self.prefix_tail.is_empty() {
            writeln!(f, "  the prefix ends with:")?;
            for operation in &self.prefix_tail {
                writeln!(f, "    {operation}")?;
            }
        }
        write!(f, "  no operation real time allows next fits:")?;
        for refusal in &self.refused {
            write!(
                f,
                "\n    {}\n      -> {}",
                refusal.operation, refusal.reason
            )?;
        }
        if self.unknown_pending > 0 {
            write!(
                f,
                "\n    (and {} operations with unknown outcome, none of which helps)",
                self.unknown_pending
            )?;
        }
        Ok(())
    }
}
