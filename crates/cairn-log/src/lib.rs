//! cairn-log — the totally ordered publish/subscribe log (`../shared/design/LOG.md`): brokers
//! receive publishers' batches straight into a shared-memory file every broker on the host maps;
//! a per-topic sequencer orders batch *descriptors* only, an epoch at a time; subscribers read
//! the one global order.
//!
//! Owns: the shared-memory layout, broker ingest and acks, the sequencer, ACK 2 segment files,
//! subscriber serving, the publisher/subscriber client and the topic/broker records in Cairn's
//! KV store. Must not: reach into Cairn's server or state machine — the KV store is used through
//! the etcd API like any client.
//!
//! Layout:
//! - `topic` — topic configuration, order and ack levels.
//! - `shm` — the shared-memory file (`shm::layout` holds the offsets).
//! - `sequencer` — `core` (sans-I/O decisions: epochs, ORDER 5 hold buffer, fencing) and
//!   `driver` (the thread that scans rings and publishes the GOI).
//! - `broker` — the broker process: ingest, acker, subscriber serving, payload allocator.
//! - `durable` — ACK 2 replica segment files and restore from them.
//! - `control` — topics, brokers and sequencer roles in the KV store.
//! - `client` — publisher and subscriber.
//! - `metrics` — the `cairn_log_*` counters as Prometheus text.
//! - `wire` — the protocol's framing; `limits`, `error`.

pub mod broker;
pub mod client;
pub mod control;
pub mod durable;
pub mod error;
pub mod limits;
pub mod metrics;
pub mod sequencer;
pub mod shm;
pub mod topic;
pub mod wire;

pub use error::{LogError, Result};
