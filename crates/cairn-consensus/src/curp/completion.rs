//! The client's tracker of one strong operation: it absorbs replies as they arrive and says
//! when the operation is done, on the fast path (leader `ok` plus same-term `ok` witnesses
//! making a superquorum, see [`fast_path_reached`]) or on the slow path (the leader's
//! `SyncReply` after the Raft commit), whichever comes first, and only once.
//!
//! Replies of any term are kept: after a failover a retry brings a leader reply of a newer
//! term, and the fast path may complete in that term. The leader reply of the highest term
//! seen is the one that counts. A leader answering a retry from its session table (the command
//! was applied already) is a final answer; the driver hands it in as a [`Reply::Sync`].

use std::collections::BTreeSet;

use super::quorum::{fast_path_reached, LeaderVote, Quorums, WitnessVote};
use super::{ReplicaId, Term};

/// A reply to a strong proposal, carrying the result type `R`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply<R> {
    Leader {
        /// The member that answered as leader.
        replica: ReplicaId,
        term: Term,
        ok: bool,
        result: R,
    },
    Witness {
        replica: ReplicaId,
        term: Term,
        ok: bool,
    },
    Sync {
        result: R,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// One round trip: a superquorum witnessed the command without conflict.
    Fast,
    /// After the Raft commit and apply.
    Slow,
}

/// The operation completed, on `path`, with `result`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Done<R> {
    pub path: Path,
    pub result: R,
}

/// One strong operation in flight.
#[derive(Debug)]
pub struct Completion<R> {
    quorums: Quorums,
    /// The leader reply of the highest term seen.
    leader: Option<(LeaderVote, R)>,
    /// `ok` witness votes, one per (replica, term): `not ok` ones can never count.
    witnesses_ok: BTreeSet<WitnessVote>,
    done: bool,
}

impl<R: Clone> Completion<R> {
    pub fn new(quorums: Quorums) -> Completion<R> {
        Completion {
            quorums,
            leader: None,
            witnesses_ok: BTreeSet::new(),
            done: false,
        }
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Takes in one reply; returns the outcome the first time the operation completes, and
    /// `None` before and ever after.
    pub fn absorb(&mut self, reply: Reply<R>) -> Option<Done<R>> {
        if self.done {
            return None;
        }
        let done = match reply {
            Reply::Sync { result } => Some(Done {
                path: Path::Slow,
                result,
            }),
            Reply::Leader {
                replica,
                term,
                ok,
                result,
            } => {
                self.absorb_leader(LeaderVote { replica, term, ok }, result);
                self.fast_path()
            }
            Reply::Witness { replica, term, ok } => {
                if ok {
                    self.witnesses_ok.insert(WitnessVote { replica, term, ok });
                }
                self.fast_path()
            }
        };
        self.done = done.is_some();
        done
    }

    /// Keeps the reply of the newest term. Within a term the first reply stays: one leader
    /// computed it, and a repeat carries the same result.
    fn absorb_leader(&mut self, vote: LeaderVote, result: R) {
        let newer = self
            .leader
            .as_ref()
            .is_none_or(|(kept, _)| vote.term > kept.term);
        if newer {
            self.leader = Some((vote, result));
        }
    }

    fn fast_path(&self) -> Option<Done<R>> {
        let (vote, result) = self.leader.as_ref()?;
        let reached = fast_path_reached(&self.quorums, *vote, self.witnesses_ok.iter().copied());
        reached.then(|| Done {
            path: Path::Fast,
            result: result.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leader(term: Term, ok: bool, result: &'static str) -> Reply<&'static str> {
        Reply::Leader {
            replica: 1,
            term,
            ok,
            result,
        }
    }

    fn witness(replica: ReplicaId, term: Term, ok: bool) -> Reply<&'static str> {
        Reply::Witness { replica, term, ok }
    }

    fn fast(result: &'static str) -> Option<Done<&'static str>> {
        Some(Done {
            path: Path::Fast,
            result,
        })
    }

    #[test]
    fn fast_path_completes_on_the_reply_that_reaches_superquorum() {
        let mut op = Completion::new(Quorums::new(5));
        assert_eq!(op.absorb(witness(2, 3, true)), None);
        assert_eq!(op.absorb(leader(3, true, "r")), None);
        assert_eq!(op.absorb(witness(3, 3, true)), None);
        assert_eq!(op.absorb(witness(4, 3, true)), fast("r"));
        assert!(op.is_done());
        assert_eq!(op.absorb(witness(5, 3, true)), None, "never twice");
        assert_eq!(op.absorb(Reply::Sync { result: "r" }), None, "never twice");
    }

    #[test]
    fn witnesses_before_the_leader_complete_with_its_reply() {
        let mut op = Completion::new(Quorums::new(3));
        assert_eq!(op.absorb(witness(2, 1, true)), None);
        assert_eq!(op.absorb(witness(3, 1, true)), None);
        assert_eq!(op.absorb(leader(1, true, "r")), fast("r"));
    }

    #[test]
    fn slow_path_completes_on_sync_reply() {
        let mut op = Completion::new(Quorums::new(3));
        assert_eq!(op.absorb(leader(1, false, "spec")), None);
        assert_eq!(op.absorb(witness(2, 1, true)), None);
        assert_eq!(op.absorb(witness(3, 1, true)), None, "leader said not ok");
        let done = op.absorb(Reply::Sync { result: "applied" });
        assert_eq!(
            done,
            Some(Done {
                path: Path::Slow,
                result: "applied"
            })
        );
        assert_eq!(op.absorb(leader(1, true, "spec")), None);
    }

    #[test]
    fn sync_reply_alone_completes() {
        let mut op: Completion<u32> = Completion::new(Quorums::new(5));
        assert_eq!(
            op.absorb(Reply::Sync { result: 7 }),
            Some(Done {
                path: Path::Slow,
                result: 7
            })
        );
    }

    #[test]
    fn not_ok_or_other_term_witnesses_do_not_count() {
        let mut op = Completion::new(Quorums::new(3));
        assert_eq!(op.absorb(leader(2, true, "r")), None);
        assert_eq!(op.absorb(witness(2, 2, false)), None);
        assert_eq!(op.absorb(witness(3, 1, true)), None, "deposed term");
        assert_eq!(op.absorb(witness(3, 2, true)), None);
        assert_eq!(op.absorb(witness(3, 2, true)), None, "same replica again");
        assert_eq!(op.absorb(witness(2, 2, true)), fast("r"));
    }

    #[test]
    fn newer_leader_term_replaces_the_older_reply() {
        let mut op = Completion::new(Quorums::new(3));
        assert_eq!(op.absorb(leader(1, true, "old")), None);
        assert_eq!(op.absorb(witness(2, 1, true)), None);
        // Failover: the retry reaches the new leader of term 2, replica 2.
        let new_leader = Reply::Leader {
            replica: 2,
            term: 2,
            ok: true,
            result: "new",
        };
        assert_eq!(op.absorb(new_leader), None);
        assert_eq!(
            op.absorb(witness(3, 1, true)),
            None,
            "term 1 votes no longer count"
        );
        assert_eq!(
            op.absorb(leader(1, true, "old")),
            None,
            "older term ignored"
        );
        assert_eq!(op.absorb(witness(1, 2, true)), None);
        assert_eq!(op.absorb(witness(3, 2, true)), fast("new"));
    }

    #[test]
    fn single_replica_completes_on_leader_ok() {
        let mut op = Completion::new(Quorums::new(1));
        assert_eq!(op.absorb(leader(1, true, "r")), fast("r"));
    }
}
