//! Native CURP-HO commands: operations, ids, key sets and the conflict rule.
//!
//! A key set is a point or a half-open range `[start, end)`; an empty `end` means "to the end
//! of the keyspace" (an empty `start` is the first key, so `["", "")` is everything). Two
//! commands conflict when their key sets intersect and at least one writes; commands that do
//! not conflict commute, which is what lets a witness say `ok`.

use bytes::Bytes;

use super::error::CommandError;

/// A client session's id.
pub type ClientId = u64;

/// `(client_id, seq)`: `seq` grows by one for every command a session issues. Ordered by
/// client, then seq, which is the order recovery re-proposes in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CommandId {
    pub client_id: ClientId,
    pub seq: u64,
}

/// What the client asked for: linearizable, or causal at its bound replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consistency {
    Strong,
    Weak,
}

/// A native operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Get {
        key: Bytes,
    },
    Put {
        key: Bytes,
        value: Bytes,
    },
    Delete {
        key: Bytes,
    },
    /// Keys in `[start, end)`, at most `limit` of them (0: no limit).
    Scan {
        start: Bytes,
        end: Bytes,
        limit: u64,
    },
}

/// The keys a command touches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySet {
    Point(Bytes),
    /// `[start, end)`; an empty `end` is unbounded.
    Range {
        start: Bytes,
        end: Bytes,
    },
}

/// A command as clients propose it and witnesses pool it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    pub id: CommandId,
    pub op: Op,
    pub consistency: Consistency,
    /// Seq of the session's latest weak write issued before this command (0: none). The
    /// leader orders, recovery re-proposes and apply admits the command only after that
    /// write: the causal barrier, kept by the replicas rather than trusted to the links
    /// (a lost copy or a witness's stale term can otherwise leave a gap that a later write
    /// of the session closes over; see `native::NativeState::admit`).
    pub causal_dep: u64,
}

impl Op {
    pub fn writes(&self) -> bool {
        matches!(self, Op::Put { .. } | Op::Delete { .. })
    }

    /// A `Scan`'s key set is its whole range, whatever its `limit`: which keys fall within the
    /// limit depends on the state, and a conflict check must not.
    pub fn key_set(&self) -> KeySet {
        match self {
            Op::Get { key } | Op::Put { key, .. } | Op::Delete { key } => {
                KeySet::Point(key.clone())
            }
            Op::Scan { start, end, .. } => KeySet::Range {
                start: start.clone(),
                end: end.clone(),
            },
        }
    }

    /// Checks a client's op before it enters the protocol.
    pub fn validate(&self) -> Result<(), CommandError> {
        match self {
            Op::Get { key } | Op::Put { key, .. } | Op::Delete { key } if key.is_empty() => {
                Err(CommandError::EmptyKey)
            }
            _ => Ok(()),
        }
    }
}

/// Whether `key` sorts before a range end (an empty end is past every key).
fn below_end(key: &[u8], end: &[u8]) -> bool {
    end.is_empty() || key < end
}

impl KeySet {
    /// A range whose bounded end is not after its start holds no key.
    pub fn is_empty(&self) -> bool {
        match self {
            KeySet::Point(_) => false,
            KeySet::Range { start, end } => !below_end(start, end),
        }
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        match self {
            KeySet::Point(point) => point.as_ref() == key,
            KeySet::Range { start, end } => start.as_ref() <= key && below_end(key, end),
        }
    }

    pub fn intersects(&self, other: &KeySet) -> bool {
        match (self, other) {
            (KeySet::Point(key), set) | (set, KeySet::Point(key)) => set.contains(key),
            (
                KeySet::Range {
                    start: a,
                    end: a_end,
                },
                KeySet::Range {
                    start: b,
                    end: b_end,
                },
            ) => {
                !self.is_empty() && !other.is_empty() && below_end(a, b_end) && below_end(b, a_end)
            }
        }
    }
}

impl Command {
    /// The id of the command's causal dependency, the session's weak write it must follow
    /// (seq 0: none, an id no command has).
    pub fn dependency(&self) -> CommandId {
        CommandId {
            client_id: self.id.client_id,
            seq: self.causal_dep,
        }
    }

    pub fn writes(&self) -> bool {
        self.op.writes()
    }

    pub fn key_set(&self) -> KeySet {
        self.op.key_set()
    }

    pub fn is_weak_write(&self) -> bool {
        self.consistency == Consistency::Weak && self.writes()
    }
}

/// Whether `a` and `b` fail to commute: their key sets intersect and at least one writes.
/// Consistency plays no part: a weak write conflicts like a strong one (the conservative rule).
pub fn conflicts(a: &Command, b: &Command) -> bool {
    (a.writes() || b.writes()) && a.key_set().intersects(&b.key_set())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn cmd(client_id: ClientId, seq: u64, op: Op, consistency: Consistency) -> Command {
        Command {
            id: CommandId { client_id, seq },
            op,
            consistency,
            causal_dep: 0,
        }
    }

    pub(crate) fn get(key: &str) -> Op {
        Op::Get {
            key: Bytes::copy_from_slice(key.as_bytes()),
        }
    }

    pub(crate) fn put(key: &str) -> Op {
        Op::Put {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::from_static(b"v"),
        }
    }

    pub(crate) fn delete(key: &str) -> Op {
        Op::Delete {
            key: Bytes::copy_from_slice(key.as_bytes()),
        }
    }

    pub(crate) fn scan(start: &str, end: &str) -> Op {
        Op::Scan {
            start: Bytes::copy_from_slice(start.as_bytes()),
            end: Bytes::copy_from_slice(end.as_bytes()),
            limit: 1,
        }
    }

    fn strong(op: Op) -> Command {
        cmd(1, 1, op, Consistency::Strong)
    }

    fn weak(op: Op) -> Command {
        cmd(2, 1, op, Consistency::Weak)
    }

    fn range(start: &str, end: &str) -> KeySet {
        KeySet::Range {
            start: Bytes::copy_from_slice(start.as_bytes()),
            end: Bytes::copy_from_slice(end.as_bytes()),
        }
    }

    #[test]
    fn point_against_point() {
        assert!(conflicts(&strong(put("a")), &strong(get("a"))));
        assert!(conflicts(&strong(put("a")), &strong(delete("a"))));
        assert!(!conflicts(&strong(put("a")), &strong(put("b"))));
        assert!(!conflicts(&strong(put("a")), &strong(get("ab"))));
    }

    #[test]
    fn read_read_never_conflicts() {
        assert!(!conflicts(&strong(get("a")), &strong(get("a"))));
        assert!(!conflicts(&strong(get("a")), &strong(scan("", ""))));
        assert!(!conflicts(&strong(scan("a", "z")), &weak(scan("b", ""))));
    }

    #[test]
    fn point_against_half_open_range() {
        let scan_b_d = strong(scan("b", "d"));
        assert!(conflicts(&scan_b_d, &strong(put("b"))), "start is inside");
        assert!(conflicts(&scan_b_d, &strong(put("c\u{ff}"))));
        assert!(!conflicts(&scan_b_d, &strong(put("d"))), "end is outside");
        assert!(!conflicts(&scan_b_d, &strong(put("a"))));
        // Empty end: unbounded.
        assert!(conflicts(&strong(scan("b", "")), &strong(delete("zzzz"))));
        assert!(!conflicts(&strong(scan("b", "")), &strong(delete("a"))));
        // Empty start and end: the whole keyspace.
        assert!(conflicts(&strong(scan("", "")), &strong(put("\0"))));
    }

    #[test]
    fn range_against_range() {
        assert!(range("a", "c").intersects(&range("b", "d")));
        assert!(range("b", "d").intersects(&range("a", "c")));
        assert!(
            !range("a", "c").intersects(&range("c", "e")),
            "touching ends are disjoint"
        );
        assert!(!range("c", "e").intersects(&range("a", "c")));
        assert!(range("a", "").intersects(&range("x", "y")));
        assert!(range("a", "").intersects(&range("b", "")));
        assert!(!range("x", "").intersects(&range("a", "x")));
        assert!(range("a", "z").intersects(&range("c", "d")), "containment");
    }

    #[test]
    fn empty_range_touches_nothing() {
        let empty = range("c", "c");
        let inverted = range("d", "a");
        assert!(empty.is_empty() && inverted.is_empty());
        assert!(!range("", "").is_empty() && !range("a", "").is_empty());
        assert!(!empty.intersects(&range("", "")));
        assert!(!inverted.intersects(&range("", "")));
        assert!(!inverted.contains(b"b"));
        assert!(!empty.contains(b"c"));
    }

    #[test]
    fn weak_writes_conflict_like_strong_ones() {
        assert!(conflicts(&weak(put("a")), &strong(get("a"))));
        assert!(conflicts(&strong(scan("a", "b")), &weak(delete("a"))));
        assert!(weak(put("a")).is_weak_write());
        assert!(!weak(get("a")).is_weak_write() && !strong(put("a")).is_weak_write());
    }

    #[test]
    fn validate_refuses_empty_point_keys_only() {
        assert_eq!(get("").validate(), Err(CommandError::EmptyKey));
        assert_eq!(put("").validate(), Err(CommandError::EmptyKey));
        assert_eq!(delete("").validate(), Err(CommandError::EmptyKey));
        assert_eq!(scan("", "").validate(), Ok(()));
        assert_eq!(put("a").validate(), Ok(()));
    }

    #[test]
    fn ids_order_by_client_then_seq() {
        let a = CommandId {
            client_id: 1,
            seq: 9,
        };
        let b = CommandId {
            client_id: 2,
            seq: 1,
        };
        let c = CommandId {
            client_id: 2,
            seq: 2,
        };
        assert!(a < b && b < c);
    }
}
