//! The search's memory: which operations are linearized ([`Linearized`]) and which
//! (linearized set, state) pairs were already explored ([`Memo`]).
//!
//! Lowe's memo prunes a node equal to an explored one. Operations with unknown outcome allow a
//! stronger rule, *dominance*: a node with the same acknowledged operations linearized and the
//! same state as an explored node, but with a superset of its unknown operations applied, can do
//! nothing the explored node could not (unknown operations carry no obligation and block nobody),
//! so it is pruned too. Without it every subset of pending unknown writes would be a new node.

use std::collections::HashMap;
use std::hash::Hash;

/// A fixed-size set of small integers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Bitset {
    words: Box<[u64]>,
}

impl Bitset {
    pub(crate) fn new(len: usize) -> Self {
        Bitset {
            words: vec![0; len.div_ceil(64)].into_boxed_slice(),
        }
    }

    pub(crate) fn contains(&self, index: usize) -> bool {
        self.words[index / 64] & (1 << (index % 64)) != 0
    }

    fn set(&mut self, index: usize) {
        self.words[index / 64] |= 1 << (index % 64);
    }

    fn clear(&mut self, index: usize) {
        self.words[index / 64] &= !(1 << (index % 64));
    }

    fn is_subset_of(&self, other: &Bitset) -> bool {
        self.words
            .iter()
            .zip(other.words.iter())
            .all(|(mine, theirs)| mine & !theirs == 0)
    }
}

/// The linearized operations of one key: `ops[..acked]` in one bitset, unknown ones in another.
#[derive(Clone, Debug)]
pub(crate) struct Linearized {
    acked: Bitset,
    unknown: Bitset,
    acked_len: usize,
    acked_count: usize,
    /// Zobrist hash of `acked`, kept up to date on every change so hashing a node is O(1).
    acked_hash: u64,
}

impl Linearized {
    pub(crate) fn new(acked_len: usize, unknown_len: usize) -> Self {
        Linearized {
            acked: Bitset::new(acked_len),
            unknown: Bitset::new(unknown_len),
            acked_len,
            acked_count: 0,
            acked_hash: 0,
        }
    }

    pub(crate) fn contains(&self, op: usize) -> bool {
        match op.checked_sub(self.acked_len) {
            None => self.acked.contains(op),
            Some(unknown) => self.unknown.contains(unknown),
        }
    }

    /// Acknowledged operations linearized.
    pub(crate) fn acked_count(&self) -> usize {
        self.acked_count
    }

    pub(crate) fn insert(&mut self, op: usize) {
        assert!(!self.contains(op), "op {op} linearized twice");
        match op.checked_sub(self.acked_len) {
            None => {
                self.acked.set(op);
                self.acked_count += 1;
                self.acked_hash ^= zobrist(op);
            }
            Some(unknown) => self.unknown.set(unknown),
        }
    }

    pub(crate) fn remove(&mut self, op: usize) {
        assert!(self.contains(op), "op {op} removed but not linearized");
        match op.checked_sub(self.acked_len) {
            None => {
                self.acked.clear(op);
                self.acked_count -= 1;
                self.acked_hash ^= zobrist(op);
            }
            Some(unknown) => self.unknown.clear(unknown),
        }
    }
}

/// A random-looking 64-bit code per operation (splitmix64), so the XOR of a set's codes hashes it.
fn zobrist(op: usize) -> u64 {
    let mut z = (op as u64)
        .wrapping_add(1)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Explored nodes: (linearized set, search state `S`).
#[derive(Debug)]
pub(crate) struct Memo<S> {
    /// Keyed by the acknowledged set's hash and the state; each entry holds the acknowledged set
    /// itself and the minimal unknown sets explored with it.
    table: HashMap<(u64, S), Vec<Entry>>,
    states: u64,
}

#[derive(Debug)]
struct Entry {
    acked: Bitset,
    unknown: Vec<Bitset>,
}

impl<S: Copy + Eq + Hash> Memo<S> {
    pub(crate) fn new() -> Self {
        Memo {
            table: HashMap::new(),
            states: 0,
        }
    }

    /// Records the node and returns true, or returns false if an explored node dominates it.
    pub(crate) fn visit(&mut self, linearized: &Linearized, state: S) -> bool {
        let entries = self
            .table
            .entry((linearized.acked_hash, state))
            .or_default();
        match entries
            .iter_mut()
            .find(|entry| entry.acked == linearized.acked)
        {
            Some(entry) => {
                if entry
                    .unknown
                    .iter()
                    .any(|explored| explored.is_subset_of(&linearized.unknown))
                {
                    return false;
                }
                // Keep the sets minimal: the new one dominates its supersets.
                entry
                    .unknown
                    .retain(|explored| !linearized.unknown.is_subset_of(explored));
                entry.unknown.push(linearized.unknown.clone());
            }
            None => entries.push(Entry {
                acked: linearized.acked.clone(),
                unknown: vec![linearized.unknown.clone()],
            }),
        }
        self.states += 1;
        true
    }

    /// Nodes recorded so far.
    pub(crate) fn states(&self) -> u64 {
        self.states
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_nodes_are_pruned() {
        let mut memo = Memo::new();
        let mut linearized = Linearized::new(70, 0);
        linearized.insert(3);
        linearized.insert(65);
        assert!(memo.visit(&linearized, 'a'));
        assert!(!memo.visit(&linearized, 'a'));
        assert!(memo.visit(&linearized, 'b'));
        linearized.remove(65);
        assert!(memo.visit(&linearized, 'a'));
        assert_eq!(linearized.acked_count(), 1);
        assert_eq!(memo.states(), 3);
    }

    #[test]
    fn more_unknown_operations_are_dominated() {
        // Two acknowledged ops (0, 1) and two unknown ones (2, 3).
        let mut memo = Memo::new();
        let mut linearized = Linearized::new(2, 2);
        linearized.insert(0);
        linearized.insert(2);
        assert!(memo.visit(&linearized, ()));
        linearized.insert(3);
        assert!(!memo.visit(&linearized, ()), "superset of unknowns");
        linearized.remove(2);
        assert!(memo.visit(&linearized, ()), "{{3}} is no superset of {{2}}");
        linearized.remove(3);
        assert!(memo.visit(&linearized, ()), "the empty set dominates both");
        linearized.insert(2);
        assert!(!memo.visit(&linearized, ()));
        linearized.insert(1);
        assert!(memo.visit(&linearized, ()), "another acknowledged set");
    }
}
