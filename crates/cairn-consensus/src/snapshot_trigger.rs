//! Snapshots every `--snapshot-count` applied *requests*, as etcd counts them.
//!
//! openraft's own policy counts log entries, but one entry carries a whole batch of proposals
//! (see `batcher`), so under load the log since the last snapshot — kept in memory by the log
//! store and replayed on restart — could hold many times `--snapshot-count` requests (a
//! million puts made ~900 MiB of RSS where the data is ~400). This loop asks openraft for a
//! snapshot each time that many requests were applied; openraft then purges the log behind it.
//!
//! Members apply the same requests, so counted from zero they would all snapshot at once: on
//! a host (or a disk) they share, three snapshot writes at once stall every member's WAL
//! fsyncs, and no quorum is left to commit until they end. Each member counts from its own
//! phase in the interval instead (drawn from its id: random ids spread the phases, though two
//! may fall close), so a follower's snapshot usually leaves the leader and the other follower
//! a quorum.

use std::sync::Arc;

use crate::state_machine::Replicated;
use crate::types::Raft;

/// The applied-request count of a member's first snapshot: within the next interval, at its
/// own phase.
fn first_due(applied: u64, requests: u64, phase: u64) -> u64 {
    applied.saturating_add(requests - phase % requests)
}

/// The next snapshot's count once `now` reached `due`: the first point of the member's grid
/// past `now`. Not `now + requests`: the overshoot of each trigger would add up and let the
/// members' phases drift back together.
fn next_due(due: u64, now: u64, requests: u64) -> u64 {
    debug_assert!(now >= due, "a snapshot is triggered only once due");
    let intervals_passed = (now - due) / requests + 1;
    due.saturating_add(intervals_passed.saturating_mul(requests))
}

/// Triggers a snapshot each time `requests` more were applied, the first after
/// `requests - phase % requests`.
pub(crate) async fn snapshot_every(raft: Raft, shared: Arc<Replicated>, requests: u64, phase: u64) {
    assert!(requests > 0, "snapshot interval must be positive");
    let mut applied = shared.applied_index();
    // `shared` outlives raft (this task holds it): raft's own metrics end when raft stops.
    let mut raft_state = raft.server_metrics();
    let mut due = first_due(shared.requests_applied(), requests, phase);
    loop {
        tokio::select! {
            changed = applied.changed() => if changed.is_err() {
                return;
            },
            changed = raft_state.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
        }
        let now = shared.requests_applied();
        if now < due {
            continue;
        }
        due = next_due(due, now, requests);
        if raft.trigger().snapshot().await.is_err() {
            // Raft stopped.
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{first_due, next_due};

    #[test]
    fn members_take_their_first_snapshot_at_their_own_phase_within_one_interval() {
        let ids = [0x9e37_79b9_7f4a_7c15_u64, 0x3c6e_f372_fe94_f82a, 7];
        let dues: Vec<u64> = ids.iter().map(|&id| first_due(500, 100_000, id)).collect();
        for &due in &dues {
            assert!(
                due > 500 && due <= 100_500,
                "{due} outside the next interval"
            );
        }
        assert!(dues[0] != dues[1] && dues[1] != dues[2] && dues[0] != dues[2]);
        assert_eq!(
            first_due(500, 100_000, 0),
            100_500,
            "phase 0 counts a whole interval"
        );
    }

    #[test]
    fn later_snapshots_stay_on_the_members_grid() {
        assert_eq!(next_due(100, 100, 50), 150);
        assert_eq!(
            next_due(100, 130, 50),
            150,
            "an overshoot does not shift the grid"
        );
        assert_eq!(next_due(100, 260, 50), 300, "missed points are skipped");
        assert_eq!(next_due(u64::MAX - 10, u64::MAX - 5, 50), u64::MAX);
        assert_eq!(first_due(u64::MAX - 1, 100, 3), u64::MAX);
    }
}
