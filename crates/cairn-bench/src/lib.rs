//! cairn-bench — load generators. This crate holds `cairn bench kv`, a closed-loop load
//! generator for the etcd v3 API modelled on etcd's `benchmark` tool, so that etcd and Cairn
//! can be measured side by side with the very same client.
//!
//! Layout:
//! - `curp` — `cairn bench curp`: the native CURP-HO protocol under the prototype's knobs
//!   (op mix, Zipf keys, pendings, emulated delay), report and plot.
//! - `grpc` — a thin unary gRPC client over one HTTP/2 connection, so the generator takes
//!   little CPU from the server it shares the machine with.
//! - `kv` — flags, workload (put, range, txn-put), the run loop.
//! - `log` — pieces of `cairn bench log`: the machine ceilings (loopback TCP, memcpy) and the
//!   NATS JetStream peer measured side by side with the ordered log.
//! - `report` — latency histograms merged from every client and the JSON report.

pub mod curp;
pub mod grpc;
pub mod kv;
pub mod log;
pub mod report;
