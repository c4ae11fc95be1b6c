//! Bounds of the CURP-HO cores (STYLE.md 11: every pool and table takes its bound here).

/// Commands one witness pool holds. A pool drains as the leader applies, so a full pool means
/// the leader is far behind or gone; refusing (the client then waits for the slow path) keeps a
/// witness's memory bounded instead of growing with an outage.
pub const WITNESS_POOL_ENTRIES_MAX: usize = 65_536;

/// Bytes of one result kept in the session table. Native write results carry no value or
/// revision, so they are tiny; the bound only stops one client from bloating every snapshot.
pub const SESSION_RESULT_BYTES_MAX: usize = 64 * 1024;

// A stored result is sent back to a retrying client in one peer-sized message.
const _: () = assert!(SESSION_RESULT_BYTES_MAX <= crate::limits::PEER_MESSAGE_BYTES_MAX);
