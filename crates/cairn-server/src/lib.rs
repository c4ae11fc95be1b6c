//! cairn-server — the node: configuration, bootstrap from the data dir, the durable apply
//! pipeline, and the etcd v3 gRPC services in front of it.
//!
//! Owns: turning client calls into validated proposals and reads, the WAL → apply pipeline,
//! snapshots, lease expiry timing, response headers, the error → gRPC status table.
//! Must not: contain state-machine logic (that is `cairn-mvcc`), or format bytes on disk (that
//! is `cairn-storage`).
//!
//! Layout:
//! - `config` — `ServerConfig`, named after etcd's flags; `identity` — member and cluster ids.
//! - `node` — open/recover, propose, apply, snapshot, stop.
//! - `lease_expiry` — the loop that revokes expired leases through the log.
//! - `auth` — tokens (simple, JWT) and password hashing; the checks live in `cairn_mvcc::auth`.
//! - `services/` — KV, Watch, Lease, Maintenance, Cluster, Auth, Election, Lock (the last two
//!   on `services/concurrency`, etcd's lock/election recipes run on the server).
//! - `server` — `run(config, shutdown)`: listeners, gRPC server, graceful shutdown.
//! - `native/` — the native CURP-HO listener: framed TCP, one reader and one writer per
//!   connection, handing proposals, weak reads and flushes to the replica.
//! - `http/` — the HTTP/1.1 side of the client port: etcd's JSON gateway, `/health`,
//!   `/version`, `/metrics`; `metrics` — Prometheus exposition, the gRPC call counters.
//! - `authority` — accepts clients that send a URL as the HTTP/2 `:authority` (etcdctl 3.4).
//! - `tls` — rustls for https client and peer URLs.
//! - `error`, `limits`.

pub mod auth;
pub mod authority;
pub mod config;
pub mod error;
pub mod http;
pub mod identity;
pub mod lease_expiry;
pub mod limits;
pub mod metrics;
pub mod native;
pub mod node;
pub mod server;
pub mod services;
pub mod tls;

pub use config::{ClusterState, ServerConfig};
pub use server::run;
