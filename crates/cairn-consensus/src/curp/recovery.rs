//! What a new leader re-proposes when it takes office, from the pools of a majority.
//!
//! Rule (spec, "Garbage collection and recovery"): every command found in at least
//! recover-quorum of the collected pools and not already in the new leader's log, plus every
//! weak write found in any pool, re-proposed per client in seq order; then `RecoveryDone(T)`.
//!
//! Why recover-quorum suffices: a command that completed on the fast path sits in a
//! superquorum of pools, and any majority shares at least recover-quorum replicas with any
//! superquorum ([`Quorums::validate`]). That count includes the leader that answered `ok`, so
//! when the deposed leader is among the collected replicas its pool must list the unapplied
//! commands of its own log. Weak writes were acknowledged by the bound replica alone, so one
//! copy is reason enough to keep them.
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
        let seen = count_pools(pools);
        let commands = seen
            .into_values()
            .filter(|(command, pools)| {
                !in_log.contains(&command.id)
                    && (*pools >= quorums.recover || command.is_weak_write())
            })
            .map(|(command, _)| command)
            .collect();
        Ok(RecoveryPlan { term, commands })
    }
}

/// Each command id with its command and the number of pools holding it. A pool listing an id
/// twice counts once; if pools disagree on an id's command (a client reusing an id), the copy
/// of the lowest replica id is kept, so the outcome still depends on the pools alone.
fn count_pools(
    pools: &BTreeMap<ReplicaId, Vec<PoolEntry>>,
) -> BTreeMap<CommandId, (Command, usize)> {
    let mut seen: BTreeMap<CommandId, (Command, usize)> = BTreeMap::new();
    for pool in pools.values() {
        let mut counted: BTreeSet<CommandId> = BTreeSet::new();
        for entry in pool {
            if counted.insert(entry.command.id) {
                seen.entry(entry.command.id)
                    .or_insert_with(|| (entry.command.clone(), 0))
                    .1 += 1;
            }
        }
    }
    seen
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::curp::command::tests::{cmd, put};
    use crate::curp::command::Consistency;

    fn entry(client_id: u64, seq: u64, consistency: Consistency) -> PoolEntry {
        PoolEntry {
            command: cmd(client_id, seq, put("k"), consistency),
            term: 1,
        }
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

    /// A fast-path command sits in every pool of some superquorum; any majority (every one of
    /// them, each member as the new leader) must recover it. Other pools hold noise.
    fn fast_path_command_always_recovered(n: usize) {
        let q = Quorums::new(n);
        let fast = entry(7, 3, Consistency::Strong);
        let noise = entry(8, 1, Consistency::Strong);
        let mut cases = 0;
        for holders in
            subsets(n, q.superquorum).filter(|m| m.count_ones() as usize == q.superquorum)
        {
            for majority in subsets(n, q.majority) {
                let pools: BTreeMap<ReplicaId, Vec<PoolEntry>> = (0..n as u64)
                    .filter(|r| majority & (1 << r) != 0)
                    .map(|r| {
                        let held = holders & (1 << r) != 0;
                        (
                            r,
                            if held {
                                vec![fast.clone()]
                            } else {
                                vec![noise.clone()]
                            },
                        )
                    })
                    .collect();
                for &leader in pools.keys() {
                    let plan = RecoveryPlan::compute(&q, 9, leader, &pools, &BTreeSet::new())
                        .expect("a majority of pools");
                    assert!(
                        plan.commands.contains(&fast.command),
                        "N={n} holders={holders:b} majority={majority:b} leader={leader}"
                    );
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

    #[test]
    fn weak_write_in_one_pool_is_recovered() {
        let q = Quorums::new(3);
        let pools = BTreeMap::from([
            (
                1,
                vec![
                    entry(1, 1, Consistency::Weak),
                    entry(2, 1, Consistency::Strong),
                ],
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
