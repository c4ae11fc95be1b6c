//! The sequencer's decisions, sans I/O: given the batches scanned from every broker ring during
//! one epoch, which go into the global order (and at which index), which wait in an ORDER 5
//! hold buffer, and which are refused. The driver (`sequencer::driver`) does the scanning and
//! writes the result into shared memory; this file never touches memory, clocks or threads, so
//! its unit tests state exact outcomes.
//!
//! ORDER 5 rules, per publisher session (client id):
//! - a batch whose `batch_seq` is below the session's `next_seq` is already in the order:
//!   `Duplicate` (a resend after a lost connection is acknowledged, never ordered twice);
//! - `batch_seq == next_seq` is ordered, then every held successor that is now contiguous;
//! - a greater `batch_seq` is held until the gap fills; if the gap stays open longer than the
//!   session lease, the session is fenced at `next_seq`: its held batches are refused with
//!   `Fenced { next_seq }`, and so is every later batch of that session epoch. The publisher
//!   resends from `next_seq` under a higher epoch, so each batch is ordered exactly once.

use std::collections::{BTreeMap, HashMap};

use crate::shm::{Descriptor, GoiEntry, Outcome};
use crate::topic::OrderLevel;

/// A descriptor the driver found ready in a broker ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScannedBatch {
    pub broker: u32,
    pub ring_seq: u64,
    pub descriptor: Descriptor,
}

/// What one sealed epoch produced. Entries are consecutive from the index the core was at.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct EpochOutput {
    pub entries: Vec<GoiEntry>,
    /// Outcomes for ring slots: the ordered ones (to be written after the commit) and refusals.
    pub statuses: Vec<(u32, u64, Outcome)>,
}

#[derive(Debug)]
struct Held {
    batch: ScannedBatch,
    /// Other ring slots carrying the same batch (resends); they share its fate.
    copies: Vec<(u32, u64)>,
}

#[derive(Debug)]
struct Session {
    epoch: u32,
    next_seq: u64,
    fenced: bool,
    held: BTreeMap<u64, Held>,
    /// When the current gap opened (the first hold since `next_seq` last moved).
    gap_since_ms: Option<u64>,
}

pub struct SequencerCore {
    order: OrderLevel,
    session_lease_ms: u64,
    next_index: u64,
    next_message: u64,
    sessions: HashMap<u64, Session>,
}

impl SequencerCore {
    pub fn new(order: OrderLevel, session_lease_ms: u64) -> SequencerCore {
        assert!(order.sequenced(), "ORDER {order:?} has no sequencer");
        SequencerCore {
            order,
            session_lease_ms,
            next_index: 0,
            next_message: 0,
            sessions: HashMap::new(),
        }
    }

    /// Rebuilds state after a takeover: the GOI continues at `next_index` and `next_message`,
    /// and ORDER 5 sessions resume after the highest batch each has in `history` (the
    /// retained GOI entries, any order).
    pub fn recover(
        &mut self,
        next_index: u64,
        next_message: u64,
        history: impl Iterator<Item = GoiEntry>,
    ) {
        self.next_index = next_index;
        self.next_message = next_message;
        self.sessions.clear();
        for e in history {
            let s = self
                .sessions
                .entry(e.client_id)
                .or_insert_with(|| Session::new(e.session_epoch, 0));
            s.next_seq = s.next_seq.max(e.batch_seq + 1);
            s.epoch = s.epoch.max(e.session_epoch);
        }
    }

    pub fn next_index(&self) -> u64 {
        self.next_index
    }

    pub fn next_message(&self) -> u64 {
        self.next_message
    }

    /// Batches currently held (ORDER 5).
    pub fn held(&self) -> usize {
        self.sessions.values().map(|s| s.held.len()).sum()
    }

    /// Seals one epoch. `queues[b]` holds broker `b`'s batches in ring order; brokers are merged
    /// round-robin, so each broker's arrival order is kept.
    pub fn seal(&mut self, queues: &mut [Vec<ScannedBatch>], now_ms: u64) -> EpochOutput {
        let mut out = EpochOutput::default();
        let longest = queues.iter().map(Vec::len).max().unwrap_or(0);
        let mut drained: Vec<std::vec::Drain<'_, ScannedBatch>> =
            queues.iter_mut().map(|q| q.drain(..)).collect();
        for _ in 0..longest {
            for queue in drained.iter_mut() {
                if let Some(batch) = queue.next() {
                    self.admit(batch, now_ms, &mut out);
                }
            }
        }
        drop(drained);
        self.fence_expired_gaps(now_ms, &mut out);
        self.validate();
        out
    }

    fn admit(&mut self, batch: ScannedBatch, now_ms: u64, out: &mut EpochOutput) {
        if self.order == OrderLevel::Total {
            self.append(batch, out);
            return;
        }
        let d = batch.descriptor;
        let session = self
            .sessions
            .entry(d.client_id)
            .or_insert_with(|| Session::new(d.session_epoch, 0));
        if d.batch_seq < session.next_seq {
            out.statuses
                .push((batch.broker, batch.ring_seq, Outcome::Duplicate));
            return;
        }
        if d.session_epoch > session.epoch {
            // A new epoch starts after a fence: anything still held from before is refused.
            session.epoch = d.session_epoch;
            session.fenced = false;
            let next_seq = session.next_seq;
            for (_, held) in std::mem::take(&mut session.held) {
                refuse(&held, next_seq, out);
            }
            session.gap_since_ms = None;
        }
        let session = self.sessions.get_mut(&d.client_id).expect("session exists");
        if d.session_epoch < session.epoch || session.fenced {
            let next_seq = session.next_seq;
            out.statuses
                .push((batch.broker, batch.ring_seq, Outcome::Fenced { next_seq }));
            return;
        }
        if d.batch_seq > session.next_seq {
            match session.held.get_mut(&d.batch_seq) {
                Some(held) => held.copies.push((batch.broker, batch.ring_seq)),
                None => {
                    session.held.insert(
                        d.batch_seq,
                        Held {
                            batch,
                            copies: Vec::new(),
                        },
                    );
                }
            }
            session.gap_since_ms.get_or_insert(now_ms);
            return;
        }
        session.next_seq += 1;
        self.append(batch, out);
        self.release_contiguous(d.client_id, now_ms, out);
    }

    fn release_contiguous(&mut self, client_id: u64, now_ms: u64, out: &mut EpochOutput) {
        loop {
            let session = self.sessions.get_mut(&client_id).expect("session exists");
            let next_seq = session.next_seq;
            let Some(held) = session.held.remove(&next_seq) else {
                session.gap_since_ms = if session.held.is_empty() {
                    None
                } else {
                    Some(now_ms)
                };
                return;
            };
            session.next_seq += 1;
            for &(broker, ring_seq) in &held.copies {
                out.statuses.push((broker, ring_seq, Outcome::Duplicate));
            }
            self.append(held.batch, out);
        }
    }

    fn append(&mut self, batch: ScannedBatch, out: &mut EpochOutput) {
        let d = batch.descriptor;
        let entry = GoiEntry {
            batch_index: self.next_index,
            first_message: self.next_message,
            broker: batch.broker,
            message_count: d.message_count,
            payload_offset: d.payload_offset,
            byte_len: d.byte_len,
            session_epoch: d.session_epoch,
            client_id: d.client_id,
            batch_seq: d.batch_seq,
            ring_seq: batch.ring_seq,
        };
        out.statuses.push((
            batch.broker,
            batch.ring_seq,
            Outcome::Ordered {
                batch_index: entry.batch_index,
            },
        ));
        out.entries.push(entry);
        self.next_index += 1;
        self.next_message += u64::from(d.message_count);
    }

    fn fence_expired_gaps(&mut self, now_ms: u64, out: &mut EpochOutput) {
        for (client_id, session) in self.sessions.iter_mut() {
            let Some(since) = session.gap_since_ms else {
                continue;
            };
            if now_ms.saturating_sub(since) < self.session_lease_ms {
                continue;
            }
            tracing::warn!(
                client_id,
                epoch = session.epoch,
                next_seq = session.next_seq,
                held = session.held.len(),
                "session gap outlived its lease: fencing"
            );
            session.fenced = true;
            session.gap_since_ms = None;
            for (_, held) in std::mem::take(&mut session.held) {
                refuse(&held, session.next_seq, out);
            }
        }
    }

    /// Invariants: held batches are all beyond the gap; a session with held batches has an
    /// open gap timer; a fenced session holds nothing.
    pub fn validate(&self) {
        for (client, s) in &self.sessions {
            if let Some((&first, _)) = s.held.first_key_value() {
                assert!(
                    first > s.next_seq,
                    "client {client}: held seq {first} <= next_seq {}",
                    s.next_seq
                );
                assert!(
                    s.gap_since_ms.is_some(),
                    "client {client}: held batches without a gap timer"
                );
            }
            assert!(
                !s.fenced || s.held.is_empty(),
                "client {client}: fenced session holds batches"
            );
        }
    }
}

impl Session {
    fn new(epoch: u32, next_seq: u64) -> Session {
        Session {
            epoch,
            next_seq,
            fenced: false,
            held: BTreeMap::new(),
            gap_since_ms: None,
        }
    }
}

fn refuse(held: &Held, next_seq: u64, out: &mut EpochOutput) {
    out.statuses.push((
        held.batch.broker,
        held.batch.ring_seq,
        Outcome::Fenced { next_seq },
    ));
    for &(broker, ring_seq) in &held.copies {
        out.statuses
            .push((broker, ring_seq, Outcome::Fenced { next_seq }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(broker: u32, ring_seq: u64, client: u64, epoch: u32, seq: u64) -> ScannedBatch {
        ScannedBatch {
            broker,
            ring_seq,
            descriptor: Descriptor {
                payload_offset: ring_seq * 100,
                byte_len: 100,
                message_count: 2,
                client_id: client,
                session_epoch: epoch,
                connection_id: 0,
                batch_seq: seq,
            },
        }
    }

    fn ordered(out: &EpochOutput) -> Vec<(u64, u64)> {
        out.entries
            .iter()
            .map(|e| (e.client_id, e.batch_seq))
            .collect()
    }

    #[test]
    fn total_order_merges_brokers_round_robin_and_numbers_messages() {
        let mut core = SequencerCore::new(OrderLevel::Total, 1000);
        let mut queues = vec![
            vec![batch(0, 0, 1, 0, 5), batch(0, 1, 1, 0, 3)],
            vec![batch(1, 0, 2, 0, 0)],
        ];
        let out = core.seal(&mut queues, 0);
        assert_eq!(ordered(&out), vec![(1, 5), (2, 0), (1, 3)]);
        let firsts: Vec<u64> = out.entries.iter().map(|e| e.first_message).collect();
        assert_eq!(firsts, vec![0, 2, 4]);
        assert_eq!(core.next_index(), 3);
        assert!(queues.iter().all(Vec::is_empty));
    }

    #[test]
    fn session_fifo_holds_until_the_gap_fills() {
        let mut core = SequencerCore::new(OrderLevel::TotalSessionFifo, 1000);
        let out = core.seal(&mut [vec![batch(1, 0, 7, 0, 1)], vec![]], 0);
        assert!(out.entries.is_empty() && out.statuses.is_empty());
        assert_eq!(core.held(), 1);
        let out = core.seal(&mut [vec![], vec![batch(0, 0, 7, 0, 0)]], 10);
        assert_eq!(ordered(&out), vec![(7, 0), (7, 1)]);
        assert_eq!(core.held(), 0);
    }

    #[test]
    fn resends_are_duplicates_never_ordered_twice() {
        let mut core = SequencerCore::new(OrderLevel::TotalSessionFifo, 1000);
        core.seal(&mut [vec![batch(0, 0, 7, 0, 0)]], 0);
        // seq 2 held, then a resend of seq 2 and of seq 0 arrive on another broker.
        let out = core.seal(
            &mut [
                vec![batch(0, 1, 7, 0, 2)],
                vec![batch(1, 0, 7, 0, 2), batch(1, 1, 7, 0, 0)],
            ],
            1,
        );
        assert_eq!(out.statuses, vec![(1, 1, Outcome::Duplicate)]);
        let out = core.seal(&mut [vec![batch(0, 2, 7, 0, 1)], vec![]], 2);
        assert_eq!(ordered(&out), vec![(7, 1), (7, 2)]);
        assert!(
            out.statuses.contains(&(1, 0, Outcome::Duplicate)),
            "{:?}",
            out.statuses
        );
        assert!(out
            .statuses
            .contains(&(0, 1, Outcome::Ordered { batch_index: 2 })));
    }

    #[test]
    fn a_gap_outliving_the_lease_fences_the_session_until_a_new_epoch() {
        let mut core = SequencerCore::new(OrderLevel::TotalSessionFifo, 100);
        core.seal(
            &mut [vec![
                batch(0, 0, 7, 0, 0),
                batch(0, 1, 7, 0, 2),
                batch(0, 2, 7, 0, 3),
            ]],
            0,
        );
        let out = core.seal(&mut [vec![]], 99);
        assert!(out.statuses.is_empty(), "lease not over yet");
        let out = core.seal(&mut [vec![]], 100);
        assert_eq!(
            out.statuses,
            vec![
                (0, 1, Outcome::Fenced { next_seq: 1 }),
                (0, 2, Outcome::Fenced { next_seq: 1 })
            ]
        );
        // Late batches of the fenced epoch are refused, even the missing one.
        let out = core.seal(&mut [vec![batch(0, 3, 7, 0, 1)]], 101);
        assert_eq!(out.statuses, vec![(0, 3, Outcome::Fenced { next_seq: 1 })]);
        // The publisher resends the suffix under epoch 1: each batch ordered exactly once.
        let out = core.seal(
            &mut [vec![
                batch(0, 4, 7, 1, 1),
                batch(0, 5, 7, 1, 2),
                batch(0, 6, 7, 1, 3),
            ]],
            102,
        );
        assert_eq!(ordered(&out), vec![(7, 1), (7, 2), (7, 3)]);
        // A straggler of epoch 0 after the new epoch started is refused too.
        let out = core.seal(&mut [vec![batch(0, 7, 7, 0, 4)]], 103);
        assert_eq!(out.statuses, vec![(0, 7, Outcome::Fenced { next_seq: 4 })]);
    }

    #[test]
    fn sessions_do_not_block_each_other() {
        let mut core = SequencerCore::new(OrderLevel::TotalSessionFifo, 100);
        let out = core.seal(&mut [vec![batch(0, 0, 1, 0, 1), batch(0, 1, 2, 0, 0)]], 0);
        assert_eq!(ordered(&out), vec![(2, 0)]);
    }

    #[test]
    fn recovery_resumes_sessions_after_their_last_ordered_batch() {
        let mut core = SequencerCore::new(OrderLevel::TotalSessionFifo, 100);
        let first = core.seal(&mut [vec![batch(0, 0, 7, 0, 0), batch(0, 1, 7, 0, 1)]], 0);
        let mut standby = SequencerCore::new(OrderLevel::TotalSessionFifo, 100);
        standby.recover(
            core.next_index(),
            core.next_message(),
            first.entries.iter().copied(),
        );
        let out = standby.seal(&mut [vec![batch(1, 0, 7, 0, 1), batch(1, 1, 7, 0, 2)]], 1);
        assert_eq!(out.statuses[0], (1, 0, Outcome::Duplicate));
        assert_eq!(ordered(&out), vec![(7, 2)]);
        assert_eq!(out.entries[0].batch_index, 2);
        assert_eq!(out.entries[0].first_message, 4);
    }
}
