//! What a new leader re-proposes when it takes office, from the pools of a majority.
//!
//! Rule (spec, "Garbage collection and recovery", sharpened as CURP's witnesses do): every
//! strong command *accepted* (answered `ok`) in at least recover-quorum of the collected pools
//! and not already in the new leader's log, plus every weak write found in any pool,
//! re-proposed per client in seq order; then `RecoveryDone(T)`. A pool also holds the commands
//! its witness rejected (so that later ones are checked against them: the conservative rule),
//! but a rejected copy is no evidence of a fast path and does not count.
//!
//! Why recover-quorum suffices: a command that completed on the fast path was accepted by a
//! superquorum (the leader's `ok` and superquorum−1 witnesses' `ok`), and any majority shares
//! at least recover-quorum replicas with any superquorum ([`Quorums::validate`]). That count
//! includes the leader that answered `ok`, so when the deposed leader is among the collected
//! replicas its pool must list the unapplied commands of its own log, each accepted iff the
//! leader answered it `ok`. Weak writes were acknowledged by the bound replica alone, so one
//! copy is reason enough to keep them.
//!
//! Why only accepted copies count: counting every pooled copy let a strong command X that
//! conflicts with a fast-completed Y reach recover-quorum too (X is pooled, rejected, at every
//! witness holding Y), and the plan's id order could put X before Y, changing the result Y
//! already returned. With accepted copies this cannot happen:
//! - a witness accepts at most one of two conflicting commands while both are pooled (it
//!   accepts only when nothing conflicting is pooled, and rejects every conflicting arrival
//!   while the accepted one stays); the leader likewise says `ok` to at most one of two
//!   conflicting unapplied log entries (only the earlier can be `ok`);
//! - Y is accepted by a superquorum S, so a majority M holds at most |M \ S| ≤ N − superquorum
//!   accepted copies of X, and N − superquorum < recover-quorum ([`Quorums::validate`]). A
//!   replica of S that no longer pools Y applied it, so Y is committed and in the new leader's
//!   log, and anything re-proposed lands after it.
//!
//! So no strong command conflicting with a fast-path one is re-proposed ahead of it (for odd N,
//! two conflicting commands cannot both have recover-quorum accepted copies in one majority at
//! all: 2·recover-quorum > majority). A strong command left out had not completed: not on the
//! fast path (that leaves recover-quorum accepted copies), not on the slow path (that commits
//! it, so it is in the new leader's log); its client retries it.
//!
//! Order: ascending command id, i.e. per client by seq and across clients by client id, so that
//! every run over the same pools yields the same list.

use std::collections::{BTreeMap, BTreeSet};

use super::command::{Command, CommandId};
use super::error::RecoveryError;
use super::quorum::Quorums;
use super::witness::PoolEntry;
use super::{ReplicaId, Term};

/// The new leader's recovery: re-propose `commands`, in order, then append
/// `RecoveryDone(term)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveryPlan {
    pub term: Term,
    pub commands: Vec<Command>,
}

impl RecoveryPlan {
    /// `pools` maps each responding replica to its pool (the new leader `leader` included);
    /// `in_log` holds the ids the new leader's log carries already.
    pub fn compute(
        quorums: &Quorums,
        term: Term,
        leader: ReplicaId,
        pools: &BTreeMap<ReplicaId, Vec<PoolEntry>>,
        in_log: &BTreeSet<CommandId>,
    ) -> Result<RecoveryPlan, RecoveryError> {
        if pools.len() < quorums.majority {
            return Err(RecoveryError::TooFewPools {
                pools: pools.len(),
                majority: quorums.majority,
            });
        }
        if !pools.contains_key(&leader) {
            return Err(RecoveryError::LeaderPoolMissing);
        }
        let commands = count_pools(pools)
            .into_values()
            .filter(|seen| !in_log.contains(&seen.command.id) && seen.recovered(quorums))
            .map(|seen| seen.command)
            .collect();
        Ok(RecoveryPlan { term, commands })
    }
}

/// One command as the collected pools hold it.
struct Seen {
    command: Command,
    /// Pools accepting it (answered `ok`).
    accepted: usize,
}

impl Seen {
    /// Any pooled weak write is kept (the bound replica alone acknowledged it); a strong
    /// command needs recover-quorum of accepted copies, the trace a fast path leaves.
    fn recovered(&self, quorums: &Quorums) -> bool {
        self.command.is_weak_write() || self.accepted >= quorums.recover
    }
}

/// Each pooled command id with its command and the number of pools accepting it. A pool
/// listing an id twice counts once, accepted if any of its copies is; if pools disagree on an
/// id's command (a client reusing an id), the copy of the lowest replica id is kept, so the
/// outcome still depends on the pools alone.
fn count_pools(pools: &BTreeMap<ReplicaId, Vec<PoolEntry>>) -> BTreeMap<CommandId, Seen> {
    let mut seen: BTreeMap<CommandId, Seen> = BTreeMap::new();
    for pool in pools.values() {
        let mut counted: BTreeSet<CommandId> = BTreeSet::new();
        for entry in pool {
            let id = entry.command.id;
            let seen = seen.entry(id).or_insert_with(|| Seen {
                command: entry.command.clone(),
                accepted: 0,
            });
            if entry.accepted && counted.insert(id) {
                seen.accepted += 1;
            }
        }
    }
    seen
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::curp::command::tests::{cmd, get, put};
    use crate::curp::command::Consistency;
    use crate::curp::quorum::{fast_path_reached, LeaderVote, WitnessVote};
    use crate::curp::witness::WitnessPool;

    fn pooled(command: &Command, accepted: bool) -> PoolEntry {
        PoolEntry {
            command: command.clone(),
            term: 1,
            accepted,
        }
    }

    /// An accepted `Put(k)`.
    fn entry(client_id: u64, seq: u64, consistency: Consistency) -> PoolEntry {
        pooled(&cmd(client_id, seq, put("k"), consistency), true)
    }

    /// The reported scenario's two commands: client 9's `Get(k)`, which completes on the fast
    /// path, and client 3's later `Put(k)`. X's id sorts first, so a plan holding both
    /// re-proposes X before Y.
    fn fast_get_and_later_put() -> (Command, Command) {
        let y = cmd(9, 1, get("k"), Consistency::Strong);
        let x = cmd(3, 1, put("k"), Consistency::Strong);
        assert!(x.id < y.id);
        (y, x)
    }

    fn ids(plan: &RecoveryPlan) -> Vec<(u64, u64)> {
        plan.commands
            .iter()
            .map(|c| (c.id.client_id, c.id.seq))
            .collect()
    }

    /// Every subset of `0..n` with at least `size_min` members, as bit masks.
    fn subsets(n: usize, size_min: usize) -> impl Iterator<Item = u32> {
        (0u32..1 << n).filter(move |mask| mask.count_ones() as usize >= size_min)
    }

    /// Fast-path command Y sits accepted in every pool of some superquorum; any majority
    /// (every one of them, each member as the new leader) must recover it. A later command X
    /// conflicting with Y is pooled but rejected at Y's holders and accepted everywhere else
    /// (the most copies it can have): it must never be in the plan, or it could be ordered
    /// before Y. Other pools also hold noise.
    fn fast_path_command_always_recovered(n: usize) {
        let q = Quorums::new(n);
        let (y, x) = fast_get_and_later_put();
        let noise = cmd(8, 1, put("n"), Consistency::Strong);
        let mut cases = 0;
        for holders in
            subsets(n, q.superquorum).filter(|m| m.count_ones() as usize == q.superquorum)
        {
            for majority in subsets(n, q.majority) {
                let pools: BTreeMap<ReplicaId, Vec<PoolEntry>> = (0..n as u64)
                    .filter(|r| majority & (1 << r) != 0)
                    .map(|r| {
                        let pool = if holders & (1 << r) != 0 {
                            vec![pooled(&y, true), pooled(&x, false)]
                        } else {
                            vec![pooled(&noise, false), pooled(&x, true)]
                        };
                        (r, pool)
                    })
                    .collect();
                for &leader in pools.keys() {
                    let plan = RecoveryPlan::compute(&q, 9, leader, &pools, &BTreeSet::new())
                        .expect("a majority of pools");
                    let case =
                        format!("N={n} holders={holders:b} majority={majority:b} leader={leader}");
                    assert!(plan.commands.contains(&y), "Y lost: {case}");
                    assert!(!plan.commands.contains(&x), "X recovered: {case}");
                    cases += 1;
                }
            }
        }
        assert!(cases > 0);
    }

    #[test]
    fn fast_path_command_recovered_from_any_majority_of_three() {
        fast_path_command_always_recovered(3);
    }

    #[test]
    fn fast_path_command_recovered_from_any_majority_of_five() {
        fast_path_command_always_recovered(5);
    }

    #[test]
    fn recover_quorum_is_the_threshold() {
        let q = Quorums::new(5); // recover = 2
        let once = entry(1, 1, Consistency::Strong);
        let twice = entry(2, 1, Consistency::Strong);
        let pools = BTreeMap::from([
            (1, vec![once.clone(), twice.clone(), twice.clone()]), // a repeat counts once
            (2, vec![twice.clone()]),
            (3, vec![]),
        ]);
        let plan = RecoveryPlan::compute(&q, 4, 1, &pools, &BTreeSet::new()).expect("plan");
        assert_eq!(ids(&plan), [(2, 1)]);
        assert_eq!(plan.term, 4);
    }

    /// The reported scenario, through real witness pools. N=3: replica 1 leads term 1; Y
    /// completes on the fast path; X arrives later, conflicting: every witness pools it but
    /// rejects it, and the leader orders it after Y with "not ok". Replica 1 fails. Counting
    /// pooled copies, X had 2 = recover-quorum copies in any majority and was re-proposed
    /// before Y, so Y's `Get` would have seen X's `Put`. Counting accepted copies, X is left
    /// out (its client, never answered, retries it) and Y alone is re-proposed.
    #[test]
    fn conflicting_later_command_rejected_by_witnesses_is_not_recovered() {
        let q = Quorums::new(3);
        let (y, x) = fast_get_and_later_put();
        let mut pools: BTreeMap<ReplicaId, Vec<PoolEntry>> = BTreeMap::new();
        let mut votes = Vec::new();
        for replica in [2, 3] {
            let mut pool = WitnessPool::new();
            let y_ok = pool.witness(y.clone(), 1).expect("pooled");
            let x_ok = pool.witness(x.clone(), 1).expect("pooled");
            assert!(y_ok && !x_ok);
            votes.push(WitnessVote {
                replica,
                term: 1,
                ok: y_ok,
            });
            pools.insert(replica, pool.entries_for_recovery());
        }
        let leader_y = LeaderVote { term: 1, ok: true };
        assert!(fast_path_reached(&q, leader_y, votes), "Y completed fast");
        // The deposed leader's pool: its unapplied log entries with its own answers.
        pools.insert(1, vec![pooled(&y, true), pooled(&x, false)]);
        let copies_of_x = pools
            .values()
            .filter(|p| p.iter().any(|e| e.command == x))
            .count();
        assert!(copies_of_x > q.recover, "X is pooled widely enough to bite");
        for (new_leader, other) in [(2, 3), (2, 1), (3, 1), (3, 2)] {
            let majority: BTreeMap<ReplicaId, Vec<PoolEntry>> = [new_leader, other]
                .into_iter()
                .map(|r| (r, pools[&r].clone()))
                .collect();
            let plan = RecoveryPlan::compute(&q, 2, new_leader, &majority, &BTreeSet::new())
                .expect("plan");
            assert_eq!(
                plan.commands,
                std::slice::from_ref(&y),
                "majority {new_leader}+{other}"
            );
        }
    }

    #[test]
    fn recover_quorum_counts_accepted_copies_only() {
        let q = Quorums::new(5); // recover = 2
        let once = cmd(1, 1, put("a"), Consistency::Strong);
        let twice = cmd(2, 1, put("b"), Consistency::Strong);
        let pools = BTreeMap::from([
            (1, vec![pooled(&once, true), pooled(&twice, false)]),
            (2, vec![pooled(&once, false), pooled(&twice, true)]),
            // A pool listing an id twice counts once, accepted if any copy is.
            (
                3,
                vec![
                    pooled(&once, false),
                    pooled(&twice, true),
                    pooled(&twice, false),
                ],
            ),
        ]);
        let plan = RecoveryPlan::compute(&q, 4, 1, &pools, &BTreeSet::new()).expect("plan");
        assert_eq!(
            ids(&plan),
            [(2, 1)],
            "`once` is pooled 3 times, accepted once"
        );
    }

    #[test]
    fn weak_write_in_one_pool_is_recovered() {
        let q = Quorums::new(3);
        let weak = cmd(1, 1, put("k"), Consistency::Weak);
        let pools = BTreeMap::from([
            (
                1,
                // Rejected or not: the bound replica may have acknowledged it.
                vec![pooled(&weak, false), entry(2, 1, Consistency::Strong)],
            ),
            (2, vec![]),
        ]);
        let plan = RecoveryPlan::compute(&q, 2, 1, &pools, &BTreeSet::new()).expect("plan");
        assert_eq!(
            ids(&plan),
            [(1, 1)],
            "the lone strong command is not recovered"
        );
    }

    #[test]
    fn commands_in_the_log_are_skipped() {
        let q = Quorums::new(3);
        let pools = BTreeMap::from([
            (
                1,
                vec![
                    entry(1, 1, Consistency::Strong),
                    entry(1, 2, Consistency::Weak),
                ],
            ),
            (
                2,
                vec![
                    entry(1, 1, Consistency::Strong),
                    entry(1, 2, Consistency::Weak),
                ],
            ),
        ]);
        let in_log = BTreeSet::from([
            CommandId {
                client_id: 1,
                seq: 1,
            },
            CommandId {
                client_id: 1,
                seq: 2,
            },
        ]);
        let plan = RecoveryPlan::compute(&q, 2, 1, &pools, &in_log).expect("plan");
        assert!(plan.commands.is_empty());
    }

    #[test]
    fn order_is_per_client_by_seq_then_by_client() {
        let q = Quorums::new(3);
        let all = vec![
            entry(9, 2, Consistency::Strong),
            entry(3, 5, Consistency::Weak),
            entry(9, 1, Consistency::Weak),
            entry(3, 4, Consistency::Strong),
        ];
        let mut reversed = all.clone();
        reversed.reverse();
        let pools = BTreeMap::from([(1, all), (2, reversed)]);
        let plan = RecoveryPlan::compute(&q, 2, 2, &pools, &BTreeSet::new()).expect("plan");
        assert_eq!(ids(&plan), [(3, 4), (3, 5), (9, 1), (9, 2)]);
    }

    #[test]
    fn too_few_pools_or_no_leader_pool_is_refused() {
        let q = Quorums::new(5);
        let two = BTreeMap::from([(1, vec![]), (2, vec![])]);
        assert_eq!(
            RecoveryPlan::compute(&q, 2, 1, &two, &BTreeSet::new()),
            Err(RecoveryError::TooFewPools {
                pools: 2,
                majority: 3
            })
        );
        let three = BTreeMap::from([(1, vec![]), (2, vec![]), (3, vec![])]);
        assert_eq!(
            RecoveryPlan::compute(&q, 2, 4, &three, &BTreeSet::new()),
            Err(RecoveryError::LeaderPoolMissing)
        );
    }
}
