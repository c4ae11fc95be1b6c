//! `cairn bench log` (LOG.md "Benchmark"): the ordered log's publish, subscribe and
//! end-to-end figures, and what they are compared with, measured in the same run.
//!
//! Layout:
//! - `run` — the flags, the run matrix and the report.
//! - `ceiling` — the machine's loopback TCP bandwidth and single-core memcpy bandwidth, the
//!   ceiling every publish throughput is read against.
//! - `nats` — the side-by-side peer: NATS JetStream with acked publishes, driven by a minimal
//!   client on tokio, plus `NatsServer`, a throwaway `nats-server -js` for runs and tests.
//!
//! `ceiling` and `nats` do not depend on `cairn-log`: they measure what the log is compared with.

pub mod ceiling;
pub mod nats;
pub mod run;
