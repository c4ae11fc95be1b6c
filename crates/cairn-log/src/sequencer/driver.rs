//! Runs a topic's sequencer on its own thread: scan every broker ring into per-broker queues
//! (no lock per batch), seal an epoch every `epoch_us` or as soon as a scan finds nothing new,
//! reserve its GOI range with one atomic, write the entries, commit the prefix, then publish
//! each ring slot's outcome for the brokers' ackers.
//!
//! Hot path: no allocation per batch beyond the queues' amortised growth, no syscalls but the
//! idle sleep, no locks.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{LogError, Result};
use crate::metrics::{LogMetrics, METRICS};
use crate::sequencer::core::{ScannedBatch, SequencerCore};
use crate::shm::layout::frontier;
use crate::shm::{GoiEntry, Outcome, TopicShm};
use crate::topic::TopicConfig;

/// Scan at most this many descriptors per broker per pass, so one busy broker cannot starve
/// the others' queues within an epoch.
const SCAN_BATCH_MAX: usize = 1024;

pub struct SequencerDriver {
    shm: Arc<TopicShm>,
    core: SequencerCore,
    epoch: u64,
    epoch_len: Duration,
    /// Next ring seq to scan, per broker.
    cursors: Vec<u64>,
    queues: Vec<Vec<ScannedBatch>>,
    /// Ring slots a previous sequencer committed whose status it may not have written.
    already_ordered: HashSet<(u32, u64)>,
    started: Instant,
}

impl SequencerDriver {
    /// Takes the sequencer role for the topic in `shm` (fencing any previous holder) and
    /// rebuilds the state from the GOI.
    pub fn take_over(shm: Arc<TopicShm>, topic: &TopicConfig) -> SequencerDriver {
        let state = shm.take_over();
        let brokers = shm.layout().brokers_max as u32;
        let retained = shm.layout().goi_slots.min(state.committed);
        let history: Vec<GoiEntry> = (state.committed - retained..state.committed)
            .filter_map(|i| shm.read_goi(i))
            .collect();
        let next_message = history
            .last()
            .map_or(0, |e| e.first_message + u64::from(e.message_count));
        let mut core = SequencerCore::new(topic.order, topic.session_lease_ms);
        core.recover(state.committed, next_message, history.iter().copied());

        let cursors: Vec<u64> = (0..brokers)
            .map(|b| shm.frontier(b, frontier::ACKED))
            .collect();
        let mut already_ordered = HashSet::new();
        for e in &history {
            // Only entries whose descriptor is still the one in the ring (restored entries
            // and recycled slots are not).
            let in_ring = shm.read_descriptor(e.broker, e.ring_seq).is_some_and(|d| {
                d.payload_offset == e.payload_offset && d.batch_seq == e.batch_seq
            });
            if in_ring && e.ring_seq >= cursors[e.broker as usize] {
                // The previous sequencer may have died between commit and statuses.
                shm.write_status(
                    e.broker,
                    e.ring_seq,
                    Outcome::Ordered {
                        batch_index: e.batch_index,
                    },
                );
                already_ordered.insert((e.broker, e.ring_seq));
            }
        }
        tracing::info!(topic = %topic.name, epoch = state.epoch, committed = state.committed,
            "took over as sequencer");
        SequencerDriver {
            shm,
            core,
            epoch: state.epoch,
            epoch_len: Duration::from_micros(topic.epoch_us),
            cursors,
            queues: (0..brokers).map(|_| Vec::new()).collect(),
            already_ordered,
            started: Instant::now(),
        }
    }

    pub fn fencing_epoch(&self) -> u64 {
        self.epoch
    }

    /// Runs until `stop` is set, or fails with `LogError::Protocol` once another sequencer has
    /// taken over (this one is then a zombie and must do nothing more).
    pub fn run(mut self, stop: &AtomicBool) -> Result<()> {
        // Half an epoch: an idle sequencer seals early, a busy one wakes twice per epoch.
        let idle_sleep = (self.epoch_len / 2).max(Duration::from_micros(20));
        let mut epoch_start = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let found = self.scan();
            let pending = self.queues.iter().any(|q| !q.is_empty());
            let epoch_over = epoch_start.elapsed() >= self.epoch_len;
            if (pending && (found == 0 || epoch_over)) || (self.core.held() > 0 && epoch_over) {
                self.seal()?;
                epoch_start = Instant::now();
            }
            if found == 0 {
                std::thread::sleep(idle_sleep);
            }
        }
        Ok(())
    }

    /// One pass over every ring; returns how many descriptors were queued.
    fn scan(&mut self) -> usize {
        let mut found = 0;
        for broker in 0..self.cursors.len() as u32 {
            let b = broker as usize;
            let start = self.cursors[b];
            while self.cursors[b] - start < SCAN_BATCH_MAX as u64 {
                let ring_seq = self.cursors[b];
                let Some(descriptor) = self.shm.read_descriptor(broker, ring_seq) else {
                    break;
                };
                self.cursors[b] += 1;
                let decided = self.shm.read_status(broker, ring_seq).is_some()
                    || self.already_ordered.remove(&(broker, ring_seq));
                if !decided {
                    self.queues[b].push(ScannedBatch {
                        broker,
                        ring_seq,
                        descriptor,
                    });
                    found += 1;
                }
            }
            if self.cursors[b] > self.shm.consumed(broker) {
                self.shm.set_consumed(broker, self.cursors[b]);
            }
        }
        found
    }

    fn seal(&mut self) -> Result<()> {
        let now_ms = self.started.elapsed().as_millis() as u64;
        let from = self.core.next_index();
        let out = self.core.seal(&mut self.queues, now_ms);
        let to = self.core.next_index();
        assert_eq!(
            to - from,
            out.entries.len() as u64,
            "core numbered entries contiguously"
        );
        if from < to {
            if !self.shm.try_reserve(self.epoch, from, to) {
                return Err(self.fenced());
            }
            for entry in &out.entries {
                self.shm.write_goi(entry);
            }
            if !self.shm.try_commit(self.epoch, from, to) {
                return Err(self.fenced());
            }
            LogMetrics::add(&METRICS.epochs_sealed, 1);
            LogMetrics::add(&METRICS.batches_ordered, to - from);
        }
        let fenced = out
            .statuses
            .iter()
            .filter(|(_, _, o)| matches!(o, Outcome::Fenced { .. }));
        LogMetrics::add(&METRICS.batches_fenced, fenced.count() as u64);
        for (broker, ring_seq, outcome) in out.statuses {
            self.shm.write_status(broker, ring_seq, outcome);
        }
        Ok(())
    }

    fn fenced(&self) -> LogError {
        tracing::warn!(epoch = self.epoch, "fenced by a newer sequencer; stopping");
        LogError::Protocol(format!(
            "sequencer epoch {} was fenced by a takeover",
            self.epoch
        ))
    }
}
