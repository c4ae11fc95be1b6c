//! Quorum sizes of CURP-HO and the client's fast-path decision.
//!
//! All sizes come from [`Quorums::new`] so that the arithmetic lives in one place (the Go
//! prototype had bugs exactly here). For N replicas, f = ⌊(N−1)/2⌋ and:
//!
//! | name | value | N=3 | N=5 | N=7 |
//! |---|---|---|---|---|
//! | majority | ⌊N/2⌋+1 | 2 | 3 | 4 |
//! | superquorum (fast quorum, leader included) | ⌊3N/4⌋+1 | 3 | 4 | 6 |
//! | recover quorum | ⌈f/2⌉+1 | 2 | 2 | 3 |
//!
//! The spec also writes the superquorum as f+⌈f/2⌉+1; the two agree for every odd N (the
//! sizes Cairn runs) but not for even N, where ⌊3N/4⌋+1 is larger (N=4: 4 against 3). Larger
//! is the safe side, so ⌊3N/4⌋+1 is the one computed.

use std::collections::BTreeSet;

use super::{ReplicaId, Term};

/// The quorum sizes for one cluster size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quorums {
    /// N, the voting replicas.
    pub replicas: usize,
    /// Failures tolerated: ⌊(N−1)/2⌋.
    pub f: usize,
    /// ⌊N/2⌋+1: Raft's commit and election quorum, and the pools a new leader collects.
    pub majority: usize,
    /// ⌊3N/4⌋+1: `ok` replies, the leader's included, that complete a fast path.
    pub superquorum: usize,
    /// ⌈f/2⌉+1: pools of a majority that must hold a command for recovery to re-propose it.
    pub recover: usize,
}

impl Quorums {
    pub fn new(replicas: usize) -> Quorums {
        assert!(
            replicas >= 1,
            "a cluster has at least one replica, got {replicas}"
        );
        let f = (replicas - 1) / 2;
        let quorums = Quorums {
            replicas,
            f,
            majority: replicas / 2 + 1,
            superquorum: 3 * replicas / 4 + 1,
            recover: f.div_ceil(2) + 1,
        };
        quorums.validate();
        quorums
    }

    /// The relations recovery's safety rests on.
    pub fn validate(&self) {
        let Quorums {
            replicas,
            majority,
            superquorum,
            recover,
            ..
        } = *self;
        assert!(
            majority <= superquorum && superquorum <= replicas,
            "majority {majority} <= superquorum {superquorum} <= replicas {replicas}"
        );
        // Any majority shares at least `recover` replicas with any superquorum, so a command
        // that completed on the fast path is found in `recover` pools of every majority.
        assert!(
            superquorum + majority - replicas >= recover,
            "superquorum {superquorum} + majority {majority} - replicas {replicas} < recover \
             {recover}"
        );
        // The replicas outside a superquorum cannot make recover-quorum alone, so a command
        // conflicting with a fast-path one (rejected wherever that one is accepted) never
        // gathers recover-quorum accepted copies (see `recovery`).
        assert!(
            replicas - superquorum < recover,
            "replicas {replicas} - superquorum {superquorum} >= recover {recover}"
        );
    }
}

/// The leader's reply to a strong proposal, as the fast-path rule sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaderVote {
    /// The member that answered as leader.
    pub replica: ReplicaId,
    pub term: Term,
    pub ok: bool,
}

/// One witness's reply to a strong proposal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct WitnessVote {
    pub replica: ReplicaId,
    pub term: Term,
    pub ok: bool,
}

/// Whether the client may complete on the fast path: the leader said `ok`, and `ok` witnesses
/// carrying the leader's term make, with the leader, a superquorum. A replica counts once
/// however many replies it sent. A witness of another term never counts: that is what stops a
/// deposed leader's answer from completing (its witnesses have moved on to the new term).
///
/// A witness reply from the leader's own member never counts, even in the leader's term: a
/// leader that restarts (or steps down) without a term change answers retries as a witness
/// of that same term, and one member must not make two votes of a superquorum.
pub fn fast_path_reached(
    quorums: &Quorums,
    leader: LeaderVote,
    witnesses: impl IntoIterator<Item = WitnessVote>,
) -> bool {
    if !leader.ok {
        return false;
    }
    let agreeing: BTreeSet<ReplicaId> = witnesses
        .into_iter()
        .filter(|vote| vote.ok && vote.term == leader.term && vote.replica != leader.replica)
        .map(|vote| vote.replica)
        .collect();
    agreeing.len() + 1 >= quorums.superquorum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_for_one_to_nine_replicas() {
        // (N, f, majority, superquorum, recover)
        let expected = [
            (1, 0, 1, 1, 1),
            (2, 0, 2, 2, 1),
            (3, 1, 2, 3, 2),
            (4, 1, 3, 4, 2),
            (5, 2, 3, 4, 2),
            (6, 2, 4, 5, 2),
            (7, 3, 4, 6, 3),
            (8, 3, 5, 7, 3),
            (9, 4, 5, 7, 3),
        ];
        for (n, f, majority, superquorum, recover) in expected {
            let q = Quorums::new(n);
            assert_eq!(
                (q.replicas, q.f, q.majority, q.superquorum, q.recover),
                (n, f, majority, superquorum, recover),
                "N={n}"
            );
        }
    }

    #[test]
    fn superquorum_is_f_plus_half_f_plus_one_for_odd_sizes() {
        for n in (1..=99).step_by(2) {
            let q = Quorums::new(n);
            assert_eq!(q.superquorum, q.f + q.f.div_ceil(2) + 1, "N={n}");
        }
        // Even sizes: the spec's second form is smaller; the computed one errs to safety.
        for n in (2..=98).step_by(2) {
            let q = Quorums::new(n);
            let spec_form = q.f + q.f.div_ceil(2) + 1;
            assert!(
                q.superquorum >= spec_form,
                "N={n}: {} < {spec_form}",
                q.superquorum
            );
        }
    }

    #[test]
    fn validate_holds_up_to_a_hundred_replicas() {
        for n in 1..=100 {
            Quorums::new(n).validate();
        }
    }

    #[test]
    #[should_panic(expected = "at least one replica")]
    fn zero_replicas_is_refused() {
        Quorums::new(0);
    }

    fn ok(replica: ReplicaId, term: Term) -> WitnessVote {
        WitnessVote {
            replica,
            term,
            ok: true,
        }
    }

    const LEADER_OK: LeaderVote = LeaderVote {
        replica: 1,
        term: 7,
        ok: true,
    };

    #[test]
    fn fast_path_needs_superquorum_with_leader() {
        let q5 = Quorums::new(5);
        // Leader + 3 witnesses = 4 = superquorum.
        assert!(fast_path_reached(
            &q5,
            LEADER_OK,
            [ok(2, 7), ok(3, 7), ok(4, 7)]
        ));
        // Leader + 2 witnesses = 3 (a majority, not enough).
        assert!(!fast_path_reached(&q5, LEADER_OK, [ok(2, 7), ok(3, 7)]));
        let q3 = Quorums::new(3);
        assert!(fast_path_reached(&q3, LEADER_OK, [ok(2, 7), ok(3, 7)]));
        assert!(!fast_path_reached(&q3, LEADER_OK, [ok(2, 7)]));
        // One replica: the leader alone.
        assert!(fast_path_reached(&Quorums::new(1), LEADER_OK, []));
    }

    #[test]
    fn fast_path_needs_leader_ok() {
        let q3 = Quorums::new(3);
        let leader = LeaderVote {
            replica: 1,
            term: 7,
            ok: false,
        };
        assert!(!fast_path_reached(&q3, leader, [ok(2, 7), ok(3, 7)]));
        assert!(!fast_path_reached(&Quorums::new(1), leader, []));
    }

    #[test]
    fn the_leaders_own_witness_reply_never_counts() {
        let q3 = Quorums::new(3);
        // Member 1 led term 7, restarted still in term 7 and witnessed a retry.
        assert!(!fast_path_reached(&q3, LEADER_OK, [ok(1, 7), ok(2, 7)]));
        assert!(fast_path_reached(
            &q3,
            LEADER_OK,
            [ok(1, 7), ok(2, 7), ok(3, 7)]
        ));
    }

    #[test]
    fn duplicate_witness_replies_count_once() {
        let q3 = Quorums::new(3);
        assert!(!fast_path_reached(
            &q3,
            LEADER_OK,
            [ok(2, 7), ok(2, 7), ok(2, 7)]
        ));
    }

    #[test]
    fn witness_of_another_term_never_counts() {
        let q3 = Quorums::new(3);
        assert!(!fast_path_reached(&q3, LEADER_OK, [ok(2, 7), ok(3, 8)]));
        assert!(!fast_path_reached(&q3, LEADER_OK, [ok(2, 6), ok(3, 7)]));
        // The same replica answering in two terms still counts once, in the leader's term.
        assert!(!fast_path_reached(&q3, LEADER_OK, [ok(2, 7), ok(2, 8)]));
    }

    #[test]
    fn not_ok_witness_never_counts() {
        let q3 = Quorums::new(3);
        let no = WitnessVote {
            replica: 3,
            term: 7,
            ok: false,
        };
        assert!(!fast_path_reached(&q3, LEADER_OK, [ok(2, 7), no]));
    }
}
