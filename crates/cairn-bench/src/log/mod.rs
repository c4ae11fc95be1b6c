//! Pieces of `cairn bench log` that do not depend on the ordered log itself (LOG.md
//! "Benchmark"): what a figure is compared with, measured in the same run.
//!
//! Layout:
//! - `ceiling` — the machine's loopback TCP bandwidth and single-core memcpy bandwidth, the
//!   ceiling every publish throughput is read against.
//! - `nats` — the side-by-side peer: NATS JetStream with acked publishes, driven by a minimal
//!   client on tokio, plus `NatsServer`, a throwaway `nats-server -js` for runs and tests.
//!
//! Neither module depends on `cairn-log`: both measure what the log is compared with.

pub mod ceiling;
pub mod nats;
