//! The witness pool: the commands a witness received from clients and has not applied yet.
//!
//! A witness answers a strong proposal `ok` iff no pooled command conflicts with it, strong or
//! weak, accepted or not (the conservative rule), and pools the command either way, tagged with
//! the term it arrived in and with whether it was accepted (answered `ok`). Weak writes are
//! pooled the same way, so a later conflicting strong op takes the slow path. Entries leave
//! when the replica applies them, or when it applies `RecoveryDone(T)` for every entry tagged
//! with a term below T.
//!
//! Invariant recovery rests on: of two conflicting pooled commands, at most one is accepted.
//! A command is accepted only when no pooled command conflicts with it, and while it stays
//! pooled every conflicting arrival (or retry) is answered "not ok". So a rejected copy is no
//! evidence that a fast path completed, and recovery counts only accepted strong copies.
//!
//! Several commands may touch one key, so the index maps a key to a list of ids. Points and
//! ranges are indexed apart in ordered maps: a range command finds the pooled points inside it
//! with one ordered range walk; pooled ranges are walked only up to the command's end, and not
//! at all for reads while no pooled range writes (only `Scan`, a read, has a range today).

use std::collections::BTreeMap;
use std::ops::Bound::{Excluded, Included, Unbounded};

use bytes::Bytes;

use super::command::{conflicts, Command, CommandId, Consistency, KeySet};
use super::error::WitnessError;
use super::limits::WITNESS_POOL_ENTRIES_MAX;
use super::Term;

/// A pooled command, the term it was received (or last re-received) in, and whether the
/// witness answered it `ok`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolEntry {
    pub command: Command,
    pub term: Term,
    /// `ok` was answered (to the first receipt or a retry). Only accepted strong copies count
    /// toward recover-quorum; a deposed leader lists its unapplied log entries with its own
    /// `ok`.
    pub accepted: bool,
}

/// One witness's pool.
#[derive(Debug)]
pub struct WitnessPool {
    entries: BTreeMap<CommandId, PoolEntry>,
    /// Point commands by key.
    points: BTreeMap<Bytes, Vec<CommandId>>,
    /// Range commands by start key.
    ranges: BTreeMap<Bytes, Vec<CommandId>>,
    /// Range commands that write: while zero, a read skips `ranges` (read-read commutes).
    range_writes: usize,
    entries_max: usize,
}

impl Default for WitnessPool {
    fn default() -> Self {
        WitnessPool::new()
    }
}

impl WitnessPool {
    pub fn new() -> WitnessPool {
        WitnessPool::with_entries_max(WITNESS_POOL_ENTRIES_MAX)
    }

    /// A pool holding at most `entries_max` (≤ [`WITNESS_POOL_ENTRIES_MAX`]) commands.
    pub fn with_entries_max(entries_max: usize) -> WitnessPool {
        assert!(
            (1..=WITNESS_POOL_ENTRIES_MAX).contains(&entries_max),
            "entries_max {entries_max} outside 1..={WITNESS_POOL_ENTRIES_MAX}"
        );
        WitnessPool {
            entries: BTreeMap::new(),
            points: BTreeMap::new(),
            ranges: BTreeMap::new(),
            range_writes: 0,
            entries_max,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, id: &CommandId) -> Option<&PoolEntry> {
        self.entries.get(id)
    }

    /// Answers a proposal received in `term`: `ok` iff no other pooled command conflicts and
    /// the command's causal dependency is here (`dep_settled`: the replica applied it, or it
    /// is pooled). The command is pooled whatever the answer.
    ///
    /// The dependency rule keeps a fast path recoverable: a strong command accepted by a
    /// superquorum then had its session's earlier weak write pooled (or applied) at each of
    /// them, so every majority a new leader collects shows that write too, and recovery can
    /// re-propose the command behind it instead of leaving it out past a gap.
    ///
    /// A retry of a pooled command is answered by the same rule and re-tagged with the newer
    /// term: left with its old tag, the `RecoveryDone` of the term the client now counts on
    /// would drop an entry backing that term's fast path. A retry answered `ok` marks the entry
    /// accepted; one answered "not ok" leaves the mark: a duplicate arriving after a later
    /// conflicting command must not take away the evidence of a fast path already completed.
    pub fn witness(
        &mut self,
        command: Command,
        term: Term,
        dep_settled: bool,
    ) -> Result<bool, WitnessError> {
        if command.consistency == Consistency::Weak && !command.writes() {
            return Err(WitnessError::WeakRead(command.id));
        }
        let dep_here = dep_settled || self.entries.contains_key(&command.dependency());
        let ok = dep_here && !self.conflicts_with_pool(&command);
        if let Some(entry) = self.entries.get_mut(&command.id) {
            if entry.command != command {
                return Err(WitnessError::IdReused(command.id));
            }
            entry.term = entry.term.max(term);
            entry.accepted |= ok;
            return Ok(ok);
        }
        if self.entries.len() >= self.entries_max {
            return Err(WitnessError::PoolFull {
                entries_max: self.entries_max,
            });
        }
        self.insert(command, term, ok);
        Ok(ok)
    }

    /// Removes a command the replica applied; `None` if it was not pooled (never received, or
    /// dropped by a `RecoveryDone`).
    pub fn remove_applied(&mut self, id: &CommandId) -> Option<PoolEntry> {
        let entry = self.entries.remove(id)?;
        let (index, key) = match entry.command.key_set() {
            KeySet::Point(key) => (&mut self.points, key),
            KeySet::Range { start, .. } => {
                if entry.command.writes() {
                    self.range_writes -= 1;
                }
                (&mut self.ranges, start)
            }
        };
        let Some(ids) = index.get_mut(key.as_ref()) else {
            panic!("pool index has no key {key:?} for pooled {id:?}");
        };
        let Some(position) = ids.iter().position(|pooled| pooled == id) else {
            panic!("pool index under {key:?} lacks pooled {id:?}: {ids:?}");
        };
        ids.swap_remove(position);
        if ids.is_empty() {
            index.remove(key.as_ref());
        }
        Some(entry)
    }

    /// Applies `RecoveryDone(term)`: drops every entry tagged with a term below `term`, whose
    /// fate the new leader's recovery has settled. Returns how many were dropped.
    ///
    /// `keep_weak`: the recovery of `term` did not use this pool, so it settled only what
    /// other pools showed. That is enough for strong commands (a fast path leaves
    /// recover-quorum copies in every majority), but a weak write may have reached only this
    /// replica, its bound one, which acknowledged it while lagging behind in an older term:
    /// it stays until it applies or a recovery that uses this pool re-proposes it.
    pub fn drop_before_term(&mut self, term: Term, keep_weak: bool) -> usize {
        let stale: Vec<CommandId> = self
            .entries
            .values()
            .filter(|entry| entry.term < term)
            .filter(|entry| !(keep_weak && entry.command.consistency == Consistency::Weak))
            .map(|e| e.command.id)
            .collect();
        for id in &stale {
            self.remove_applied(id);
        }
        stale.len()
    }

    /// The pool as a new leader collects it, in id order.
    pub fn entries_for_recovery(&self) -> Vec<PoolEntry> {
        self.entries.values().cloned().collect()
    }

    fn insert(&mut self, command: Command, term: Term, accepted: bool) {
        let id = command.id;
        match command.key_set() {
            KeySet::Point(key) => self.points.entry(key).or_default().push(id),
            KeySet::Range { start, .. } => {
                self.ranges.entry(start).or_default().push(id);
                if command.writes() {
                    self.range_writes += 1;
                }
            }
        }
        let entry = PoolEntry {
            command,
            term,
            accepted,
        };
        let previous = self.entries.insert(id, entry);
        assert!(
            previous.is_none(),
            "command {id:?} pooled twice: {previous:?}"
        );
    }

    /// Whether a pooled command other than `command` itself conflicts with it, without
    /// pooling it (a leader's check of a strong read, which is never pooled).
    pub fn conflicts(&self, command: &Command) -> bool {
        self.conflicts_with_pool(command)
    }

    /// Whether a pooled command other than `command` itself conflicts with it. The indexes
    /// narrow the candidates; [`conflicts`] decides.
    fn conflicts_with_pool(&self, command: &Command) -> bool {
        let set = command.key_set();
        if set.is_empty() {
            return false;
        }
        let clashes = |ids: &Vec<CommandId>| {
            ids.iter()
                .any(|id| *id != command.id && conflicts(command, &self.entry(id).command))
        };
        let point_hit = match &set {
            KeySet::Point(key) => self.points.get(key.as_ref()).is_some_and(clashes),
            KeySet::Range { start, end } => {
                let end_bound = if end.is_empty() {
                    Unbounded
                } else {
                    Excluded(end.as_ref())
                };
                let mut inside = self
                    .points
                    .range::<[u8], _>((Included(start.as_ref()), end_bound));
                inside.any(|(_, ids)| clashes(ids))
            }
        };
        if point_hit {
            return true;
        }
        if !command.writes() && self.range_writes == 0 {
            return false;
        }
        // Pooled ranges that could reach the command: those starting at or before its last key.
        let starts_up_to = match &set {
            KeySet::Point(key) => Included(key.as_ref()),
            KeySet::Range { end, .. } if end.is_empty() => Unbounded,
            KeySet::Range { end, .. } => Excluded(end.as_ref()),
        };
        let mut reaching = self.ranges.range::<[u8], _>((Unbounded, starts_up_to));
        reaching.any(|(_, ids)| clashes(ids))
    }

    fn entry(&self, id: &CommandId) -> &PoolEntry {
        let Some(entry) = self.entries.get(id) else {
            panic!("pool index names {id:?}, which has no entry");
        };
        entry
    }

    /// The indexes and the entry table describe the same commands: every entry sits exactly
    /// once in the index of its kind under its key, nothing else is indexed, no index list is
    /// empty, `range_writes` counts the writing ranges, and the pool is within its bound.
    pub fn validate(&self) {
        assert!(
            self.entries.len() <= self.entries_max,
            "pool holds {} entries over entries_max {}",
            self.entries.len(),
            self.entries_max
        );
        let mut range_writes = 0;
        for (id, entry) in &self.entries {
            assert_eq!(
                *id, entry.command.id,
                "entry under {id:?} holds {:?}",
                entry.command.id
            );
            let (index, key) = match entry.command.key_set() {
                KeySet::Point(key) => (&self.points, key),
                KeySet::Range { start, .. } => {
                    range_writes += usize::from(entry.command.writes());
                    (&self.ranges, start)
                }
            };
            let found = index
                .get(key.as_ref())
                .map_or(0, |ids| ids.iter().filter(|i| *i == id).count());
            assert_eq!(found, 1, "{id:?} indexed {found} times under {key:?}");
        }
        assert_eq!(range_writes, self.range_writes, "range_writes out of step");
        let indexed: usize = self
            .points
            .values()
            .chain(self.ranges.values())
            .map(Vec::len)
            .sum();
        assert_eq!(
            indexed,
            self.entries.len(),
            "index holds {indexed} ids for {} entries",
            self.entries.len()
        );
        let empty = self
            .points
            .iter()
            .chain(&self.ranges)
            .find(|(_, ids)| ids.is_empty());
        assert!(empty.is_none(), "empty index list under {empty:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::curp::command::tests::{cmd, delete, get, put, scan};
    use crate::curp::command::Op;

    fn strong(client_id: u64, seq: u64, op: Op) -> Command {
        cmd(client_id, seq, op, Consistency::Strong)
    }

    /// Witnesses and checks the pool's invariants after the transition.
    fn witness(pool: &mut WitnessPool, command: Command, term: Term) -> bool {
        let ok = pool.witness(command, term, true).expect("witness");
        pool.validate();
        assert_accepted_commute(pool);
        ok
    }

    /// Recovery's premise: no two accepted pooled commands conflict. Only pairs with a write
    /// can conflict, and accepted writes are few, so walk those against every accepted entry.
    fn assert_accepted_commute(pool: &WitnessPool) {
        let accepted: Vec<&Command> = pool
            .entries
            .values()
            .filter(|e| e.accepted)
            .map(|e| &e.command)
            .collect();
        for write in accepted.iter().filter(|c| c.writes()) {
            let clash = accepted
                .iter()
                .find(|other| other.id != write.id && conflicts(write, other));
            assert!(
                clash.is_none(),
                "accepted {write:?} conflicts with {clash:?}"
            );
        }
    }

    fn accepted(pool: &WitnessPool, client_id: u64, seq: u64) -> Option<bool> {
        pool.get(&CommandId { client_id, seq }).map(|e| e.accepted)
    }

    #[test]
    fn entry_records_the_answer_and_a_later_ok_only_adds() {
        let mut pool = WitnessPool::new();
        assert!(witness(&mut pool, strong(1, 1, get("k")), 1));
        assert!(!witness(&mut pool, strong(2, 1, put("k")), 1));
        assert_eq!(accepted(&pool, 1, 1), Some(true));
        assert_eq!(accepted(&pool, 2, 1), Some(false), "pooled though rejected");
        // A duplicate of the accepted read, arriving after the write, is answered "not ok"
        // but keeps its mark: its fast path may have completed.
        assert!(!witness(&mut pool, strong(1, 1, get("k")), 2));
        assert_eq!(accepted(&pool, 1, 1), Some(true));
        // Once the read is applied, a retry of the write is accepted.
        pool.remove_applied(&CommandId {
            client_id: 1,
            seq: 1,
        });
        assert!(witness(&mut pool, strong(2, 1, put("k")), 2));
        assert_eq!(accepted(&pool, 2, 1), Some(true));
    }

    #[test]
    fn conflicting_command_is_pooled_but_not_ok() {
        let mut pool = WitnessPool::new();
        assert!(witness(&mut pool, strong(1, 1, put("a")), 3));
        assert!(witness(&mut pool, strong(2, 1, put("b")), 3));
        assert!(!witness(&mut pool, strong(3, 1, get("a")), 3));
        assert_eq!(pool.len(), 3);
        assert!(
            !witness(&mut pool, strong(4, 1, put("b")), 3),
            "write-write conflicts"
        );
    }

    #[test]
    fn weak_write_blocks_a_later_strong_read() {
        let mut pool = WitnessPool::new();
        assert!(witness(
            &mut pool,
            cmd(1, 1, put("k"), Consistency::Weak),
            1
        ));
        assert!(!witness(&mut pool, strong(2, 1, get("k")), 1));
        assert!(!witness(&mut pool, strong(2, 2, scan("a", "z")), 1));
    }

    #[test]
    fn weak_read_is_refused() {
        let mut pool = WitnessPool::new();
        let id = CommandId {
            client_id: 1,
            seq: 1,
        };
        let weak_read = cmd(1, 1, get("k"), Consistency::Weak);
        assert_eq!(
            pool.witness(weak_read, 1, true),
            Err(WitnessError::WeakRead(id))
        );
        assert!(pool.is_empty());
    }

    #[test]
    fn several_commands_share_a_key() {
        let mut pool = WitnessPool::new();
        assert!(witness(&mut pool, strong(1, 1, get("k")), 1));
        assert!(
            witness(&mut pool, strong(2, 1, get("k")), 1),
            "read-read commutes"
        );
        assert!(!witness(&mut pool, strong(3, 1, delete("k")), 1));
        let write_id = CommandId {
            client_id: 3,
            seq: 1,
        };
        pool.remove_applied(&write_id).expect("pooled");
        pool.validate();
        pool.remove_applied(&CommandId {
            client_id: 1,
            seq: 1,
        })
        .expect("pooled");
        pool.validate();
        assert!(
            !witness(&mut pool, strong(4, 1, put("k")), 1),
            "one reader is still pooled"
        );
        pool.remove_applied(&CommandId {
            client_id: 2,
            seq: 1,
        })
        .expect("pooled");
        pool.remove_applied(&CommandId {
            client_id: 4,
            seq: 1,
        })
        .expect("pooled");
        pool.validate();
        assert!(pool.is_empty());
        assert!(witness(&mut pool, strong(5, 1, put("k")), 1));
    }

    #[test]
    fn range_checks_pooled_points() {
        let mut pool = WitnessPool::new();
        assert!(witness(&mut pool, strong(1, 1, put("b")), 1));
        assert!(!witness(&mut pool, strong(2, 1, scan("a", "c")), 1));
        assert!(
            !witness(&mut pool, strong(2, 2, scan("b", "b\0")), 1),
            "start is inside"
        );
        assert!(
            witness(&mut pool, strong(2, 3, scan("a", "b")), 1),
            "end is outside"
        );
        assert!(witness(&mut pool, strong(2, 4, scan("c", "")), 1));
        assert!(!witness(&mut pool, strong(2, 5, scan("", "")), 1));
        assert!(
            witness(&mut pool, strong(2, 6, scan("z", "a")), 1),
            "an empty range"
        );
    }

    #[test]
    fn point_write_checks_pooled_ranges() {
        let mut pool = WitnessPool::new();
        assert!(witness(&mut pool, strong(1, 1, scan("b", "d")), 1));
        assert!(witness(&mut pool, strong(1, 2, scan("x", "")), 1));
        assert!(
            witness(&mut pool, strong(2, 1, get("c")), 1),
            "reads commute with scans"
        );
        assert!(!witness(&mut pool, strong(3, 1, put("c")), 1));
        assert!(!witness(&mut pool, strong(3, 2, put("b")), 1));
        assert!(witness(&mut pool, strong(3, 3, put("d")), 1));
        assert!(witness(&mut pool, strong(3, 4, put("a")), 1));
        assert!(
            !witness(&mut pool, strong(3, 5, delete("zzz")), 1),
            "unbounded range"
        );
        assert!(witness(&mut pool, strong(3, 6, delete("w")), 1));
    }

    #[test]
    fn retry_is_answered_again_and_retagged() {
        let mut pool = WitnessPool::new();
        assert!(witness(&mut pool, strong(1, 1, put("a")), 4));
        assert!(
            witness(&mut pool, strong(1, 1, put("a")), 5),
            "a command never clashes with itself"
        );
        let id = CommandId {
            client_id: 1,
            seq: 1,
        };
        assert_eq!(pool.get(&id).map(|e| e.term), Some(5));
        assert!(witness(&mut pool, strong(1, 1, put("a")), 4));
        assert_eq!(
            pool.get(&id).map(|e| e.term),
            Some(5),
            "the tag never goes back"
        );
        assert_eq!(pool.len(), 1);
        assert_eq!(
            pool.witness(strong(1, 1, put("b")), 5, true),
            Err(WitnessError::IdReused(id))
        );
        // A later conflicting command makes the retry's answer "not ok".
        assert!(!witness(&mut pool, strong(2, 1, get("a")), 5));
        assert!(!witness(&mut pool, strong(1, 1, put("a")), 5));
    }

    #[test]
    fn full_pool_refuses_new_commands_only() {
        let mut pool = WitnessPool::with_entries_max(2);
        assert!(witness(&mut pool, strong(1, 1, put("a")), 1));
        assert!(witness(&mut pool, strong(1, 2, put("b")), 1));
        assert_eq!(
            pool.witness(strong(1, 3, put("c")), 1, true),
            Err(WitnessError::PoolFull { entries_max: 2 })
        );
        assert_eq!(pool.len(), 2);
        assert!(
            witness(&mut pool, strong(1, 2, put("b")), 1),
            "a retry still gets its answer"
        );
        pool.remove_applied(&CommandId {
            client_id: 1,
            seq: 1,
        });
        assert!(witness(&mut pool, strong(1, 3, put("c")), 1));
    }

    #[test]
    fn a_command_is_accepted_only_with_its_causal_dependency_here() {
        let mut pool = WitnessPool::new();
        let mut read = strong(1, 3, get("b"));
        read.causal_dep = 2;
        assert_eq!(
            pool.witness(read.clone(), 1, false),
            Ok(false),
            "seq 2 is missing"
        );
        assert!(!pool.get(&read.id).expect("pooled anyway").accepted);
        let mut weak_write = cmd(1, 2, put("a"), Consistency::Weak);
        weak_write.causal_dep = 1;
        assert_eq!(pool.witness(weak_write, 1, true), Ok(true), "seq 1 applied");
        assert_eq!(
            pool.witness(read.clone(), 1, false),
            Ok(true),
            "seq 2 is pooled"
        );
        assert!(pool.get(&read.id).expect("pooled").accepted);
        pool.validate();
    }

    #[test]
    fn an_uncollected_pool_keeps_its_weak_writes_through_recovery_done() {
        let mut pool = WitnessPool::new();
        witness(&mut pool, strong(1, 1, put("a")), 2);
        witness(&mut pool, cmd(2, 1, put("b"), Consistency::Weak), 2);
        witness(&mut pool, cmd(3, 1, put("c"), Consistency::Weak), 4);
        assert_eq!(
            pool.drop_before_term(4, true),
            1,
            "only the strong entry goes"
        );
        let left: Vec<u64> = pool
            .entries_for_recovery()
            .iter()
            .map(|entry| entry.command.id.client_id)
            .collect();
        assert_eq!(left, [2, 3]);
        assert_eq!(
            pool.drop_before_term(4, false),
            1,
            "collected: the old weak one goes"
        );
        pool.validate();
    }

    #[test]
    fn remove_applied_of_unknown_id_is_none() {
        let mut pool = WitnessPool::new();
        assert_eq!(
            pool.remove_applied(&CommandId {
                client_id: 9,
                seq: 9
            }),
            None
        );
    }

    #[test]
    fn recovery_done_drops_older_terms_only() {
        let mut pool = WitnessPool::new();
        witness(&mut pool, strong(1, 1, put("a")), 3);
        witness(&mut pool, strong(2, 1, scan("a", "")), 4);
        witness(&mut pool, strong(3, 1, put("c")), 5);
        witness(&mut pool, strong(4, 1, put("d")), 3);
        witness(&mut pool, strong(4, 1, put("d")), 5); // retried in term 5
        assert_eq!(pool.drop_before_term(5, false), 2);
        pool.validate();
        let left: Vec<(CommandId, Term)> = pool
            .entries_for_recovery()
            .iter()
            .map(|e| (e.command.id, e.term))
            .collect();
        assert_eq!(
            left,
            [
                (
                    CommandId {
                        client_id: 3,
                        seq: 1
                    },
                    5
                ),
                (
                    CommandId {
                        client_id: 4,
                        seq: 1
                    },
                    5
                )
            ]
        );
        assert!(
            witness(&mut pool, strong(5, 1, get("a")), 5),
            "the dropped write is gone"
        );
    }

    #[test]
    fn entries_for_recovery_are_in_id_order() {
        let mut pool = WitnessPool::new();
        witness(&mut pool, strong(2, 1, put("x")), 1);
        witness(&mut pool, strong(1, 2, put("y")), 1);
        witness(&mut pool, strong(1, 1, put("z")), 2);
        let ids: Vec<(u64, u64)> = pool
            .entries_for_recovery()
            .iter()
            .map(|e| (e.command.id.client_id, e.command.id.seq))
            .collect();
        assert_eq!(ids, [(1, 1), (1, 2), (2, 1)]);
    }

    #[test]
    #[should_panic(expected = "indexed 0 times")]
    fn validate_catches_an_index_out_of_step() {
        let mut pool = WitnessPool::new();
        witness(&mut pool, strong(1, 1, put("a")), 1);
        pool.points.clear();
        pool.validate();
    }

    /// The indexed check agrees with the rule applied to every pooled command, over a seeded
    /// random mix of points, ranges, reads, writes, retries and removals on a small keyspace;
    /// the accepted mark is the first `ok`, kept through later answers.
    #[test]
    fn indexed_check_matches_brute_force() {
        let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move |bound: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % bound
        };
        let keys = ["", "a", "b", "c", "d", "e"];
        let mut pool = WitnessPool::new();
        for seq in 0..2_000 {
            let action = next(8);
            let ids: Vec<CommandId> = pool.entries.keys().copied().collect();
            let pooled = (!ids.is_empty()).then(|| ids[next(ids.len() as u64) as usize]);
            if let (0 | 1, Some(id)) = (action, pooled) {
                assert!(pool.remove_applied(&id).is_some());
                pool.validate();
                continue;
            }
            let command = match (action, pooled) {
                (2, Some(id)) => pool.entries[&id].command.clone(), // a retry
                _ => {
                    let key = keys[1 + next(5) as usize];
                    let (start, end) = (keys[next(6) as usize], keys[next(6) as usize]);
                    let op = match next(5) {
                        0 => get(key),
                        1 => put(key),
                        2 => delete(key),
                        _ => scan(start, end),
                    };
                    strong(next(3), seq, op)
                }
            };
            let was_accepted = pool.get(&command.id).is_some_and(|e| e.accepted);
            let expected = !pool
                .entries
                .values()
                .any(|e| e.command.id != command.id && conflicts(&command, &e.command));
            assert_eq!(
                witness(&mut pool, command.clone(), 1),
                expected,
                "{command:?}"
            );
            let accepted = pool.get(&command.id).map(|e| e.accepted);
            assert_eq!(accepted, Some(was_accepted || expected), "{command:?}");
        }
    }
}
