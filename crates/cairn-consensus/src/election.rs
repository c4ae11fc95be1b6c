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
//! (the campaign changed the vote), openraft's timer takes over, unless the vote split (below):
//! campaigning early there as well doubled the elections of a member cut off from the others
//! (measured in the simulation) for nothing.
//!
//! Only a member that can win campaigns early: one that, at the leader's last append, held
//! every entry the leader called committed, and has not since seen a candidate with a longer
//! log. A member behind the others (restarted, or cut off for a while) would do harm:
//! openraft 0.9 voters do not adopt the higher term of a vote they refuse for a short log, so
//! if the member behind kept raising its term, the member that could win would campaign at a
//! term already taken and be refused in turn, round after round. openraft's own timer backs
//! off in that case (`smaller_log_timeout`); this task stays silent.
//!
//! Split votes. With no leader, openraft's timer alone can split the vote forever: each
//! member's timeout is drawn once per process and checked on a tick, so candidates whose
//! draws fall in the same tick campaign together at every term (the simulation stalled that
//! way: four members with equal logs, 640 terms in 60 s, every one a four-way split). So a
//! member that refused a rival candidate of its own term or newer, whose log was no longer
//! than its own, campaigns again on this task's schedule, a fresh draw each time, ahead of
//! openraft's timer; the first to wake wins. A member cut off from the others sees no rival
//! and leaves its campaigns to openraft's timer, as before.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;
use tracing::debug;

use crate::types::{MemberId, Raft};

/// What this member heard from leaders and candidates (see the module doc).
#[derive(Debug)]
pub(crate) struct LeaderContact(Mutex<Contact>);

#[derive(Debug)]
struct Contact {
    /// The last time the leader reached this member or the vote changed.
    last: Instant,
    /// This member held every entry the leader called committed at its last append.
    up_to_date: bool,
    /// A candidate with a longer log asked for this member's vote since the leader's last
    /// append.
    longer_log_seen: bool,
    /// The highest term of a rival candidate this member refused, whose log was no longer
    /// than its own (0: none).
    rival_term: u64,
}

impl Default for LeaderContact {
    fn default() -> Self {
        LeaderContact(Mutex::new(Contact {
            last: Instant::now(),
            up_to_date: false,
            longer_log_seen: false,
            rival_term: 0,
        }))
    }
}

impl LeaderContact {
    /// An append or snapshot from the leader; `up_to_date`: this member now holds every
    /// entry the leader calls committed.
    pub(crate) fn heard_from_leader(&self, up_to_date: bool) {
        let mut contact = self.lock();
        contact.last = Instant::now();
        contact.up_to_date = up_to_date;
        contact.longer_log_seen = false;
    }

    /// A candidate with a longer log than this member's asked for its vote.
    pub(crate) fn saw_longer_log(&self) {
        let mut contact = self.lock();
        contact.up_to_date = false;
        contact.longer_log_seen = true;
    }

    /// This member refused its vote to a candidate of `term` whose log is no longer than its
    /// own.
    pub(crate) fn saw_rival(&self, term: u64) {
        let mut contact = self.lock();
        contact.rival_term = contact.rival_term.max(term);
    }

    /// A message that may come from the leader arrived, or the vote changed: the silence
    /// starts again.
    pub(crate) fn heard(&self) {
        self.lock().last = Instant::now();
    }

    fn last(&self) -> Instant {
        self.lock().last
    }

    fn up_to_date(&self) -> bool {
        self.lock().up_to_date
    }

    /// With no leader at `term`: a rival as long-logged as this member split the vote.
    fn split_vote(&self, term: u64) -> bool {
        let contact = self.lock();
        contact.rival_term >= term && !contact.longer_log_seen
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Contact> {
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
        self.lease + self.draw_after_split()
    }

    /// How long after a vote change with no leader known before campaigning again, if the
    /// vote split: a fresh draw in `[T/4, T/2)`, ahead of openraft's own timer (at least
    /// `T/2` after the vote change, no lease: voters with no leader grant votes at once).
    fn draw_after_split(&self) -> Duration {
        let low = self.election_timeout / 4;
        let high = (self.election_timeout / 2).max(low + Duration::from_millis(1));
        rand::thread_rng().gen_range(low..high)
    }

    fn draw_for(&self, vote: &openraft::Vote<MemberId>) -> Duration {
        if vote.is_committed() {
            self.draw()
        } else {
            self.draw_after_split()
        }
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
    let mut seen_vote: Option<openraft::Vote<MemberId>> = None;
    let mut wait = schedule.draw();
    loop {
        let may_campaign = {
            let metrics = metrics.borrow_and_update();
            if seen_vote.as_ref() != Some(&metrics.vote) {
                seen_vote = Some(metrics.vote);
                contact.heard();
                wait = schedule.draw_for(&metrics.vote);
            }
            metrics.current_leader != Some(id)
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
                let vote = seen_vote.expect("the vote was read before the wait");
                let campaign = if vote.is_committed() {
                    contact.up_to_date()
                } else {
                    contact.split_vote(vote.leader_id.term)
                };
                if campaign {
                    debug!(
                        silent_ms = wait.as_millis() as u64,
                        leader_known = vote.is_committed(),
                        "campaigning: the leader fell silent, or the last vote split"
                    );
                    if raft.trigger().elect().await.is_err() {
                        return;
                    }
                }
                // The next look is one more silent period away: after an attempt openraft
                // did not act on, or while this member is behind.
                contact.heard();
                wait = schedule.draw_for(&vote);
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
    fn a_split_vote_needs_a_rival_no_longer_than_this_member_at_its_term() {
        let contact = LeaderContact::default();
        assert!(!contact.split_vote(3), "no rival yet");
        contact.saw_rival(2);
        assert!(!contact.split_vote(3), "a rival of an older term");
        contact.saw_rival(3);
        assert!(contact.split_vote(3));
        contact.saw_longer_log();
        assert!(
            !contact.split_vote(3),
            "a longer log can win: leave it the field"
        );
        contact.heard_from_leader(true);
        assert!(
            contact.split_vote(3),
            "a leader's append forgets the longer log"
        );
        assert!(!contact.split_vote(4), "a newer term needs a new rival");
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
