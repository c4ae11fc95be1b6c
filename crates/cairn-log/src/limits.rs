//! Explicit limits of the ordered log. Every queue, buffer and region takes its bound from one
//! of these names; the compile-time checks at the bottom keep them consistent.

/// Largest batch a publisher may send (LOG.md: "default up to 2 MiB").
pub const BATCH_BYTES_MAX: u32 = 2 * 1024 * 1024;

/// Largest single message inside a batch (its u32 length prefix included).
pub const MESSAGE_BYTES_MAX: u32 = BATCH_BYTES_MAX;

/// Largest protobuf envelope on the wire (headers only; payload travels beside it).
pub const FRAME_BYTES_MAX: u32 = 64 * 1024;

/// Brokers a topic's shared-memory file has room for.
pub const BROKERS_MAX: u32 = 64;

/// ACK 2 copies a topic may ask for (one segment file each on this host).
pub const REPLICATION_FACTOR_MAX: u32 = 8;

/// Sequencer takeovers remembered in the control block (each leaves a void GOI range).
pub const VOID_RANGES_MAX: usize = 16;

/// Payload segment size: a batch never straddles two segments.
pub const SEGMENT_BYTES: u64 = 4 * 1024 * 1024;

/// Topic names: short, and safe as a file name and a KV key component.
pub const TOPIC_NAME_BYTES_MAX: usize = 200;

/// Batches a publisher keeps unacknowledged per broker connection before it waits.
pub const PUBLISHER_INFLIGHT_BATCHES_MAX: usize = 64;

const _: () = assert!(
    SEGMENT_BYTES >= BATCH_BYTES_MAX as u64,
    "a batch must fit a segment"
);
const _: () = assert!(MESSAGE_BYTES_MAX <= BATCH_BYTES_MAX);
const _: () = assert!(
    REPLICATION_FACTOR_MAX <= 8,
    "the control block has 8 durable lines"
);
