//! When a follower campaigns.
//!
//! openraft 0.9 checks for an election timeout only on its tick (every 1.5 heartbeat
//! intervals) and draws each member's timeout once per process. Members started together
//! tick in step, so two followers of a dead leader often campaign in the same tick, split the
//! vote, and, with the same draws, collide again on the next round: a failover then takes
//! seconds instead of one election timeout (and the simulation, where every member shares one
//! clock, could stall for good).
//!
//! This task makes the first campaign after a leader falls silent, ahead of openraft's timer
//! and with a fresh random draw each time: once the leader has been silent for the leader
//! lease (openraft's `election_timeout_max`: until then voters refuse every candidate) plus
//! `[T/4, T/2)`, openraft's own range for its timer, at a finer grain. The leader's word is each append or snapshot it sends ([`LeaderContact`],
//! fed by the peer handler); a vote change restarts the clock too. Once no leader is known
//! (the campaign changed the vote), openraft's timer takes over: campaigning early there as
//! well doubled the elections of a member cut off from the others (measured in the
//! simulation) for nothing.
//!
//! Only a member that can win campaigns early: one that, at the leader's last append, held
//! every entry the leader called committed, and has not since seen a candidate with a longer
//! log. A member behind the others (restarted, or cut off for a while) would do harm:
//! openraft 0.9 voters do not adopt the higher term of a vote they refuse for a short log, so
//! if the member behind kept raising its term, the member that could win would campaign at a
//! term already taken and be refused in turn, round after round. openraft's own timer backs
//! off in that case (`smaller_log_timeout`); this task stays silent.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;
use tracing::debug;

use crate::types::{MemberId, Raft};

/// The last time the leader reached this member or the vote changed, and whether this member
/// may win an election (see the module doc).
#[derive(Debug)]
pub(crate) struct LeaderContact(Mutex<(Instant, bool)>);

impl Default for LeaderContact {
    fn default() -> Self {
        LeaderContact(Mutex::new((Instant::now(), false)))
    }
}

impl LeaderContact {
    /// An append or snapshot from the leader; `up_to_date`: this member now holds every
    /// entry the leader calls committed.
    pub(crate) fn heard_from_leader(&self, up_to_date: bool) {
        *self.lock() = (Instant::now(), up_to_date);
    }

    /// A candidate with a longer log than this member's asked for its vote.
    pub(crate) fn saw_longer_log(&self) {
        self.lock().1 = false;
    }

    /// A message that may come from the leader arrived, or the vote changed: the silence
    /// starts again.
    pub(crate) fn heard(&self) {
        self.lock().0 = Instant::now();
    }

    fn last(&self) -> Instant {
        self.lock().0
    }

    fn up_to_date(&self) -> bool {
        self.lock().1
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Instant, bool)> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The campaign schedule for an election timeout `T` and a leader lease of `lease`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Schedule {
    pub lease: Duration,
    pub election_timeout: Duration,
}

impl Schedule {
    /// How long the leader must be silent before a campaign: `lease` plus a fresh draw in
    /// `[T/4, T/2)`. A shorter wait campaigned on every brief silence (a lost heartbeat or
    /// two, a short partition), which the simulation counted as 40% more elections.
    fn draw(&self) -> Duration {
        let low = self.election_timeout / 4;
        let high = (self.election_timeout / 2).max(low + Duration::from_millis(1));
        self.lease + rand::thread_rng().gen_range(low..high)
    }
}

/// Runs until raft stops. See the module doc.
pub(crate) async fn campaign_when_silent(
    raft: Raft,
    id: MemberId,
    contact: Arc<LeaderContact>,
    schedule: Schedule,
) {
    // Server metrics change only with the vote, the leader or the membership, not with
    // every append and apply.
    let mut metrics = raft.server_metrics();
    let mut seen_vote = None;
    let mut wait = schedule.draw();
    loop {
        let may_campaign = {
            let metrics = metrics.borrow_and_update();
            if seen_vote.as_ref() != Some(&metrics.vote) {
                seen_vote = Some(metrics.vote);
                contact.heard();
                wait = schedule.draw();
            }
            metrics.vote.is_committed()
                && metrics.current_leader != Some(id)
                && metrics
                    .membership_config
                    .membership()
                    .voter_ids()
                    .any(|voter| voter == id)
        };
        if !may_campaign {
            if metrics.changed().await.is_err() {
                return;
            }
            continue;
        }
        tokio::select! {
            changed = metrics.changed() => if changed.is_err() {
                return;
            },
            () = tokio::time::sleep_until(contact.last() + wait) => {
                // The leader may have spoken while this task slept.
                if contact.last() + wait > Instant::now() {
                    continue;
                }
                if contact.up_to_date() {
                    debug!(silent_ms = wait.as_millis() as u64, "campaigning: the leader fell silent");
                    if raft.trigger().elect().await.is_err() {
                        return;
                    }
                }
                // The next look is one more silent period away: after an attempt openraft
                // did not act on, or while this member is behind.
                contact.heard();
                wait = schedule.draw();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule() -> Schedule {
        Schedule {
            lease: Duration::from_millis(500),
            election_timeout: Duration::from_millis(1000),
        }
    }

    fn assert_spread(draws: &[Duration], low_ms: u64, high_ms: u64) {
        for draw in draws {
            assert!(*draw >= Duration::from_millis(low_ms), "{draw:?}");
            assert!(*draw < Duration::from_millis(high_ms), "{draw:?}");
        }
        let distinct: std::collections::BTreeSet<_> = draws.iter().collect();
        assert!(distinct.len() > 50, "draws must differ: {}", distinct.len());
    }

    #[test]
    fn a_follower_waits_out_the_lease_then_a_fresh_quarter_to_half_timeout() {
        let draws: Vec<Duration> = (0..200).map(|_| schedule().draw()).collect();
        assert_spread(&draws, 750, 1000);
    }

    #[test]
    fn a_tiny_timeout_still_leaves_a_range() {
        let schedule = Schedule {
            lease: Duration::ZERO,
            election_timeout: Duration::from_millis(2),
        };
        assert!(schedule.draw() < Duration::from_millis(2));
    }

    #[test]
    fn contact_tracks_who_may_win() {
        let contact = LeaderContact::default();
        assert!(!contact.up_to_date(), "nobody heard yet");
        contact.heard_from_leader(true);
        assert!(contact.up_to_date());
        contact.saw_longer_log();
        assert!(!contact.up_to_date());
        contact.heard_from_leader(false);
        assert!(!contact.up_to_date());
    }
}
