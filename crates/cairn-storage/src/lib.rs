//! cairn-storage — the bottom layer: the write-ahead log, snapshot files and the `Engine`
//! trait with its engines.
//!
//! Owns: bytes on disk and their formats. Must not: know about raft, etcd or gRPC — every
//! payload it stores is opaque bytes chosen by the layer above.
//!
//! Layout:
//! - `wal/` — segmented append-only log, CRC per record, group commit, torn-tail repair.
//! - `snapshot` — whole-state snapshot files written atomically (tmp + fsync + rename).
//! - `engine` — the `Engine` trait the state machine writes through.
//! - `memory` — the default engine: ordered in-memory maps, persisted by snapshot + WAL replay.
//! - `bucket_map` — the map behind one bucket: a B-tree, or a sorted log for growing keys.
//! - `inline_key` — the sorted log's keys, inline in their slot when short.
//! - `schema` — every bucket and meta key with its numeric id.
//! - `metrics` — lock-free latency histograms (etcd's disk buckets) for the layers above.
//! - `limits`, `error` — explicit bounds and the typed errors of this crate.

pub mod bucket_map;
pub mod engine;
pub mod error;
pub mod inline_key;
pub mod limits;
pub mod memory;
pub mod metrics;
pub mod schema;
pub mod snapshot;
pub mod wal;
