//! One topic as a broker process holds it: the mapped shared memory, this broker's payload
//! allocator and ring, the publisher connections waiting for acks, and (when this process won
//! the role) the topic's sequencer and ACK 2 replica writers.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use tokio::sync::mpsc;

use crate::broker::payload::PayloadLog;
use crate::durable;
use crate::error::Result;
use crate::sequencer::driver::SequencerDriver;
use crate::shm::layout::frontier;
use crate::shm::{Descriptor, TopicShm};
use crate::topic::TopicConfig;

/// What the acker tells a publisher connection about one of its batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckEvent {
    Done { batch_seq: u64 },
    Fenced { session_epoch: u32, next_seq: u64 },
}

pub struct TopicRuntime {
    pub config: TopicConfig,
    pub shm: Arc<TopicShm>,
    pub broker: u32,
    payload: Mutex<PayloadLog>,
    /// Serialises publication into the ring so ring order = publication order and RING_HEAD
    /// always counts complete descriptors (a crash leaves no hole). Held for a few stores.
    ring: Mutex<()>,
    connections: Mutex<HashMap<u32, mpsc::UnboundedSender<AckEvent>>>,
    stop: Arc<AtomicBool>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    sequencer: Mutex<Option<Arc<AtomicBool>>>,
}

impl TopicRuntime {
    /// Maps (creating if first) the topic's file under `shm_dir` and starts this broker's acker.
    pub fn open(
        config: TopicConfig,
        broker: u32,
        shm_dir: &Path,
        data_dir: &Path,
    ) -> Result<Arc<TopicRuntime>> {
        config.validate()?;
        std::fs::create_dir_all(shm_dir)?;
        let path = shm_dir.join(format!("{}.shm", config.name));
        let existed = path.exists();
        let shm = Arc::new(TopicShm::create_or_open(&path, &config)?);
        if !existed && config.ack == crate::topic::AckLevel::Durable {
            durable::restore(&shm, &durable::topic_dir(data_dir, &config.name))?;
        }
        shm.claim_broker_block(broker);
        let tail = shm.frontier(broker, frontier::PAYLOAD_TAIL);
        let topic = Arc::new(TopicRuntime {
            payload: Mutex::new(PayloadLog::new(shm.layout().payload_bytes, tail)),
            config,
            shm,
            broker,
            ring: Mutex::new(()),
            connections: Mutex::new(HashMap::new()),
            stop: Arc::new(AtomicBool::new(false)),
            threads: Mutex::new(Vec::new()),
            sequencer: Mutex::new(None),
        });
        if topic.config.order.sequenced() {
            let acker = Arc::clone(&topic);
            let handle = std::thread::Builder::new()
                .name(format!("acker-{}", topic.config.name))
                .spawn(move || crate::broker::acker::run(&acker))?;
            topic.threads.lock().expect("threads lock").push(handle);
        }
        Ok(topic)
    }

    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Reserves payload space, `None` while the log is full (the caller waits: backpressure).
    pub fn reserve_payload(&self, len: u32) -> Option<u64> {
        let mut payload = self.payload.lock().expect("payload lock");
        let (start, tail) = payload.reserve(len)?;
        // Readers validate copies against this tail: it must be visible before the bytes change.
        self.shm
            .set_frontier(self.broker, frontier::PAYLOAD_TAIL, tail);
        std::sync::atomic::fence(Ordering::SeqCst);
        Some(start)
    }

    pub fn release_payload(&self, start: u64) {
        self.payload.lock().expect("payload lock").release(start);
    }

    /// Publishes a complete batch into the ring; `None` while the ring is full (backpressure).
    pub fn publish(&self, d: &Descriptor) -> Option<u64> {
        let _ring = self.ring.lock().expect("ring lock");
        let head = self.shm.frontier(self.broker, frontier::RING_HEAD);
        let ring_slots = self.shm.layout().ring_slots;
        if self.config.order.sequenced() {
            let reusable = self
                .shm
                .consumed(self.broker)
                .min(self.shm.frontier(self.broker, frontier::ACKED));
            if head >= reusable + ring_slots {
                return None;
            }
        }
        self.shm.publish_descriptor(self.broker, head, d);
        self.shm
            .set_frontier(self.broker, frontier::RING_HEAD, head + 1);
        if !self.config.order.sequenced() {
            // No sequencer: the ring is this broker's own order and nothing else consumes it;
            // the batch is final, so its space joins the retention window right away.
            self.shm.set_consumed(self.broker, head + 1);
            self.shm
                .set_frontier(self.broker, frontier::ACKED, head + 1);
            self.release_payload(d.payload_offset);
        }
        Some(head)
    }

    pub fn register_connection(&self, id: u32, acks: mpsc::UnboundedSender<AckEvent>) {
        self.connections
            .lock()
            .expect("connections lock")
            .insert(id, acks);
    }

    pub fn unregister_connection(&self, id: u32) {
        self.connections
            .lock()
            .expect("connections lock")
            .remove(&id);
    }

    /// Delivers acker events; connections that are gone are skipped.
    pub fn notify(&self, events: &[(u32, AckEvent)]) {
        let connections = self.connections.lock().expect("connections lock");
        for (id, event) in events {
            if let Some(tx) = connections.get(id) {
                let _ = tx.send(*event);
            }
        }
    }

    pub fn is_sequencer(&self) -> bool {
        self.sequencer.lock().expect("sequencer lock").is_some()
    }

    /// Starts the sequencer (and ACK 2 replica writers) in this process.
    pub fn start_sequencer(self: &Arc<Self>, data_dir: &Path) -> Result<()> {
        let mut slot = self.sequencer.lock().expect("sequencer lock");
        if slot.is_some() {
            return Ok(());
        }
        let stop = Arc::new(AtomicBool::new(false));
        let driver = SequencerDriver::take_over(Arc::clone(&self.shm), &self.config);
        let mut threads = self.threads.lock().expect("threads lock");
        let (flag, topic) = (Arc::clone(&stop), Arc::clone(self));
        threads.push(
            std::thread::Builder::new()
                .name(format!("seq-{}", self.config.name))
                .spawn(move || {
                    topic.shm.claim_goi_block();
                    if let Err(e) = driver.run(&flag) {
                        tracing::warn!(topic = %topic.config.name, "sequencer stopped: {e}");
                    }
                    // The replica writers follow the sequencer's fate.
                    flag.store(true, Ordering::Relaxed);
                    topic.sequencer.lock().expect("sequencer lock").take();
                })?,
        );
        if self.config.ack == crate::topic::AckLevel::Durable {
            let dir = durable::topic_dir(data_dir, &self.config.name);
            for replica in 0..self.config.replication_factor {
                let (flag, shm, dir) = (Arc::clone(&stop), Arc::clone(&self.shm), dir.clone());
                threads.push(
                    std::thread::Builder::new()
                        .name(format!("durable-{replica}"))
                        .spawn(move || {
                            if let Err(e) = durable::run_replica(&shm, &dir, replica, &flag) {
                                tracing::error!(replica, "ACK 2 replica writer failed: {e}");
                            }
                        })?,
                );
            }
        }
        *slot = Some(stop);
        Ok(())
    }

    /// Stops this process's sequencer (the role was lost); a successor fences it anyway.
    pub fn stop_sequencer(&self) {
        if let Some(stop) = self.sequencer.lock().expect("sequencer lock").take() {
            stop.store(true, Ordering::Relaxed);
        }
    }

    /// Stops every thread of this topic and waits for them.
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::Relaxed);
        self.stop_sequencer();
        let threads = std::mem::take(&mut *self.threads.lock().expect("threads lock"));
        for t in threads {
            let _ = t.join();
        }
    }
}
