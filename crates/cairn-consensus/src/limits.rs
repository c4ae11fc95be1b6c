//! Bounds of the consensus layer (see STYLE.md: every queue and batch takes its bound here).

/// Entries per AppendEntries message. An entry is at most `request_bytes_max` (1.5 MiB by
/// default) plus framing, so one message stays under [`PEER_MESSAGE_BYTES_MAX`].
pub const APPEND_ENTRIES_MAX: u64 = 64;

/// Largest peer message accepted or sent (gRPC frame limit on the peer listener).
pub const PEER_MESSAGE_BYTES_MAX: usize = 128 * 1024 * 1024;

/// Readers that may wait for one read-index round.
pub const READ_INDEX_WAITERS_MAX: usize = 65_536;

const _: () = assert!(APPEND_ENTRIES_MAX as usize * 2 * 1024 * 1024 <= PEER_MESSAGE_BYTES_MAX);
