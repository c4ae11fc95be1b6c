//! A recorded client history: what each client asked, when, and what came back.
//!
//! Times are whatever clock the caller runs on (a simulation's virtual clock or a real monotonic
//! one), in nanoseconds; only their order matters. An operation whose outcome is
//! [`Outcome::Unknown`] (timeout, lost connection) may or may not have taken effect, and its
//! `return_ns` is ignored: it is treated as still running forever.

use std::fmt;

/// A key of the store.
pub type Key = Vec<u8>;

/// A value of the store.
pub type Value = Vec<u8>;

/// What a client asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    Put {
        key: Key,
        value: Value,
    },
    Get {
        key: Key,
    },
    Delete {
        key: Key,
    },
    /// A txn: if the key's current value equals `expected` (None = key absent) then put `value`.
    CompareAndPut {
        key: Key,
        expected: Option<Value>,
        value: Value,
    },
    /// A put that attaches the key to `lease` (etcd's `PutRequest.lease`); refused when the lease
    /// does not exist. Any later write of the key without it detaches the key.
    LeasePut {
        key: Key,
        value: Value,
        lease: i64,
    },
    /// LeaseGrant with the id chosen by the client, so that histories name their leases; refused
    /// when the id is in use. The TTL is not modelled: when a lease expires the expiry driver's
    /// revoke is recorded like any client's.
    LeaseGrant {
        lease: i64,
    },
    /// LeaseRevoke, by a client or by the leader's expiry loop: deletes every key attached to the
    /// lease, all at one revision (none, and no revision, when no key is attached).
    LeaseRevoke {
        lease: i64,
    },
    /// LeaseKeepAlive: succeeds only on a lease that exists. It may also fail on one that exists
    /// but expired and awaits its revoke, which a client cannot tell from real time.
    LeaseKeepAlive {
        lease: i64,
    },
}

impl Call {
    /// The key this call names, if any: lease calls other than `LeasePut` name none (a revoke
    /// touches whatever keys are attached to its lease).
    pub fn key(&self) -> Option<&[u8]> {
        match self {
            Call::Put { key, .. }
            | Call::Get { key }
            | Call::Delete { key }
            | Call::CompareAndPut { key, .. }
            | Call::LeasePut { key, .. } => Some(key),
            Call::LeaseGrant { .. } | Call::LeaseRevoke { .. } | Call::LeaseKeepAlive { .. } => {
                None
            }
        }
    }

    /// The lease this call names, if any.
    pub fn lease(&self) -> Option<i64> {
        match *self {
            Call::LeasePut { lease, .. }
            | Call::LeaseGrant { lease }
            | Call::LeaseRevoke { lease }
            | Call::LeaseKeepAlive { lease } => Some(lease),
            _ => None,
        }
    }
}

/// What came back. Revisions are etcd revisions: the store's revision counter goes +1 for every
/// request that changes something; a request that changes nothing (a Get, a Delete of an absent
/// key, a failed CompareAndPut) reports the current revision in its header without bumping it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Put {
        revision: i64,
    },
    Get {
        revision: i64,
        value: Option<Value>,
        /// The revision of the write that produced `value`; 0 when the key is absent.
        mod_revision: i64,
    },
    Delete {
        revision: i64,
        deleted: i64,
    },
    CompareAndPut {
        revision: i64,
        succeeded: bool,
    },
    /// A lease call that took effect: a grant of a new lease, a revoke of an existing one, a
    /// keep-alive of a live one. (A `LeasePut` that took effect answers [`Outcome::Put`].)
    Lease {
        revision: i64,
    },
    /// A lease call refused, with no header (etcd answers an error): a grant of an id in use, or
    /// a revoke, keep-alive or `LeasePut` naming a lease that does not exist (a keep-alive also
    /// when its lease expired).
    LeaseRefused,
    /// Timed out / connection lost: the call may or may not have taken effect (never assume
    /// lost).
    Unknown,
}

impl Outcome {
    /// The header revision, or `None` for an unknown outcome.
    pub fn revision(&self) -> Option<i64> {
        match self {
            Outcome::Put { revision }
            | Outcome::Get { revision, .. }
            | Outcome::Delete { revision, .. }
            | Outcome::CompareAndPut { revision, .. }
            | Outcome::Lease { revision } => Some(*revision),
            Outcome::LeaseRefused | Outcome::Unknown => None,
        }
    }

    /// The revision this outcome created, if it reports a change of state (a Put, a Delete
    /// that deleted, a CompareAndPut that succeeded). A revoke's outcome does not say whether it
    /// deleted anything, so it reports none.
    pub fn mutation_revision(&self) -> Option<i64> {
        match self {
            Outcome::Put { revision } => Some(*revision),
            Outcome::Delete { revision, deleted } if *deleted > 0 => Some(*revision),
            Outcome::CompareAndPut {
                revision,
                succeeded: true,
            } => Some(*revision),
            _ => None,
        }
    }
}

/// One client request with its interval and outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    pub client: u64,
    pub call: Call,
    pub invoke_ns: u64,
    /// Ignored (treated as +infinity) when `outcome` is [`Outcome::Unknown`].
    pub return_ns: u64,
    pub outcome: Outcome,
}

impl Operation {
    /// The key the operation names, if any.
    pub fn key(&self) -> Option<&[u8]> {
        self.call.key()
    }

    /// When the operation returned, or `None` if its outcome is unknown.
    pub fn returned_ns(&self) -> Option<u64> {
        match self.outcome {
            Outcome::Unknown => None,
            _ => Some(self.return_ns),
        }
    }

    /// The value this operation may have written to its key: a Put, a LeasePut that was not
    /// refused, or a CompareAndPut that succeeded or whose outcome is unknown.
    pub(crate) fn written_value(&self) -> Option<&[u8]> {
        match (&self.call, &self.outcome) {
            (Call::LeasePut { .. }, Outcome::LeaseRefused) => None,
            (Call::Put { value, .. } | Call::LeasePut { value, .. }, _) => Some(value),
            (
                Call::CompareAndPut { value, .. },
                Outcome::CompareAndPut {
                    succeeded: true, ..
                }
                | Outcome::Unknown,
            ) => Some(value),
            _ => None,
        }
    }
}

/// Every operation the clients issued, in any order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    pub operations: Vec<Operation>,
}

impl History {
    pub fn new(operations: Vec<Operation>) -> Self {
        History { operations }
    }
}

impl From<Vec<Operation>> for History {
    fn from(operations: Vec<Operation>) -> Self {
        History { operations }
    }
}

/// Bytes shown as a quoted, escaped string, so keys and values in violations stay readable.
pub(crate) struct Escaped<'a>(pub &'a [u8]);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", self.0.escape_ascii())
    }
}

/// A register value: an escaped string, or `absent`.
pub(crate) struct Register<'a>(pub Option<&'a [u8]>);

impl fmt::Display for Register<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(value) => Escaped(value).fmt(f),
            None => f.write_str("absent"),
        }
    }
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Call::Put { key, value } => write!(f, "put({}, {})", Escaped(key), Escaped(value)),
            Call::Get { key } => write!(f, "get({})", Escaped(key)),
            Call::Delete { key } => write!(f, "delete({})", Escaped(key)),
            Call::CompareAndPut {
                key,
                expected,
                value,
            } => write!(
                f,
                "compare_and_put({}, expected {}, value {})",
                Escaped(key),
                Register(expected.as_deref()),
                Escaped(value)
            ),
            Call::LeasePut { key, value, lease } => write!(
                f,
                "put({}, {}, lease {lease})",
                Escaped(key),
                Escaped(value)
            ),
            Call::LeaseGrant { lease } => write!(f, "lease_grant({lease})"),
            Call::LeaseRevoke { lease } => write!(f, "lease_revoke({lease})"),
            Call::LeaseKeepAlive { lease } => write!(f, "lease_keep_alive({lease})"),
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Put { revision } => write!(f, "ok at revision {revision}"),
            Outcome::Get {
                revision,
                value: Some(value),
                mod_revision,
            } => write!(
                f,
                "{} (mod_revision {mod_revision}) at revision {revision}",
                Escaped(value)
            ),
            Outcome::Get {
                revision,
                value: None,
                ..
            } => write!(f, "absent at revision {revision}"),
            Outcome::Delete { revision, deleted } => {
                write!(f, "deleted {deleted} at revision {revision}")
            }
            Outcome::CompareAndPut {
                revision,
                succeeded,
            } => {
                let verdict = if *succeeded { "succeeded" } else { "failed" };
                write!(f, "{verdict} at revision {revision}")
            }
            Outcome::Lease { revision } => write!(f, "ok at revision {revision}"),
            Outcome::LeaseRefused => f.write_str("refused (lease exists / not found)"),
            Outcome::Unknown => f.write_str("unknown"),
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "client {} {} invoked {} ns, ",
            self.client, self.call, self.invoke_ns
        )?;
        match self.returned_ns() {
            Some(return_ns) => write!(f, "returned {return_ns} ns: {}", self.outcome),
            None => f.write_str("outcome unknown"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_client_call_times_and_outcome() {
        let op = Operation {
            client: 3,
            call: Call::CompareAndPut {
                key: b"k".to_vec(),
                expected: None,
                value: b"v\n".to_vec(),
            },
            invoke_ns: 10,
            return_ns: 20,
            outcome: Outcome::CompareAndPut {
                revision: 7,
                succeeded: false,
            },
        };
        assert_eq!(
            op.to_string(),
            "client 3 compare_and_put(\"k\", expected absent, value \"v\\n\") invoked 10 ns, \
             returned 20 ns: failed at revision 7"
        );
        let unknown = Operation {
            outcome: Outcome::Unknown,
            ..op
        };
        assert!(unknown
            .to_string()
            .ends_with("invoked 10 ns, outcome unknown"));
    }

    #[test]
    fn mutation_revision_only_for_changes() {
        assert_eq!(Outcome::Put { revision: 4 }.mutation_revision(), Some(4));
        let noop_delete = Outcome::Delete {
            revision: 4,
            deleted: 0,
        };
        assert_eq!(noop_delete.mutation_revision(), None);
        assert_eq!(noop_delete.revision(), Some(4));
        let failed = Outcome::CompareAndPut {
            revision: 4,
            succeeded: false,
        };
        assert_eq!(failed.mutation_revision(), None);
        assert_eq!(Outcome::Unknown.revision(), None);
    }
}
