//! Explicit bounds of the server: queue sizes and batch sizes.

use std::time::Duration;

/// How long a client request may wait for the cluster (etcd: 5 s plus two election timeouts
/// at the default settings).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(7);

/// Watch responses buffered per Watch stream before the stream task waits for the client.
pub const WATCH_RESPONSES_QUEUED_MAX: usize = 128;

/// Events per watch response when catching up (whole revisions are never split).
pub const WATCH_EVENTS_PER_RESPONSE_MAX: usize = 1000;

/// Leader changes buffered per Election Observe stream before its task waits for the client.
pub const OBSERVE_RESPONSES_QUEUED_MAX: usize = 64;

/// Keep-alive responses buffered per LeaseKeepAlive stream.
pub const KEEPALIVE_RESPONSES_QUEUED_MAX: usize = 64;

/// Leases revoked per expiry tick; the rest wait for the next tick (etcd: 1000/s).
pub const LEASE_REVOKES_PER_TICK_MAX: usize = 500;

/// Bytes per Snapshot stream chunk (etcd: 32 KiB).
pub const SNAPSHOT_CHUNK_BYTES_MAX: usize = 32 * 1024;

/// Extra gRPC message room above `--max-request-bytes`, so that requests slightly above the
/// limit reach etcd's "request is too large" check instead of a transport error (etcd: 512 KiB).
pub const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// Bytes a native frame may carry beyond `--max-request-bytes` (ids, field tags).
pub const NATIVE_FRAME_OVERHEAD_BYTES: usize = 4 * 1024;

/// Replies queued per native connection before its reader stops reading the client.
pub const NATIVE_REPLIES_QUEUED_MAX: usize = 1024;
