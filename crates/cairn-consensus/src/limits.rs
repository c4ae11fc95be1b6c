//! Bounds of the consensus layer (see STYLE.md: every queue and batch takes its bound here).

use std::time::Duration;

/// Entries per AppendEntries message. An entry is a batch of at most
/// [`PROPOSAL_BATCH_BYTES_MAX`] plus one proposal, so one message stays under
/// [`PEER_MESSAGE_BYTES_MAX`].
pub const APPEND_ENTRIES_MAX: u64 = 16;

/// Largest peer message accepted or sent (one frame of a peer connection).
pub const PEER_MESSAGE_BYTES_MAX: usize = 128 * 1024 * 1024;

/// Calls queued for one peer connection before callers wait (the writer drains the queue into
/// the socket, so a full queue means the peer or the network is not keeping up).
pub const PEER_CALLS_QUEUED_MAX: usize = 1024;

/// Requests of one incoming peer connection being handled at once; the reader stops reading
/// (and TCP pushes back on the caller) while this many are open.
pub const PEER_CALLS_SERVED_MAX: usize = 1024;

/// Bytes a peer connection's writer gathers from its queue into one write.
pub const PEER_WRITE_BATCH_BYTES: usize = 1024 * 1024;

/// Bytes of durable raft entries the log store keeps in memory (entries not yet durable are
/// kept whatever their size); older ones are read back from the WAL. Covers the replication
/// pipeline and the apply lag many times over at full load.
pub const LOG_CACHE_BYTES_MAX: usize = 8 * 1024 * 1024;

/// Readers that may wait for one read-index round.
pub const READ_INDEX_WAITERS_MAX: usize = 65_536;

const _: () = assert!(
    APPEND_ENTRIES_MAX as usize * (PROPOSAL_BATCH_BYTES_MAX + 2 * 1024 * 1024)
        <= PEER_MESSAGE_BYTES_MAX
);

/// Bytes of proposals packed into one raft entry. A WAL record holds up to 16 MiB; one
/// proposal is at most `--max-request-bytes` (1.5 MiB by default) and goes alone if larger.
pub const PROPOSAL_BATCH_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Batches submitted to raft and not yet applied. One: everything that queues while a batch
/// is in flight goes in the next. With two, the second batch was cut right as the first
/// completed, before its clients had sent their next requests, so batches came out half as
/// big for the same fsyncs and per-entry work: single-node puts (100 clients) 37-42k -> 39-45k
/// req/s, 3-member cluster 17-19k -> 19-20k, CURP headline mix 40k -> 42k ops/s.
pub const PROPOSAL_BATCHES_IN_FLIGHT_MAX: usize = 1;

/// Longest a free batch slot waits for the clients the last batch answered to propose again
/// (`batcher::gather`). 3-member cluster on loopback, 100 clients putting through the leader:
/// cut at once, batches held ~50 proposals (half the clients, the other half came back just
/// after each cut) and the leader did 24k puts/s; gathering, ~100 and 31-33k puts/s, p99
/// 12 -> 9 ms. The answered clients were all back 1.4-1.6 ms after the answers went out; the
/// wait starts when the first of them is back and ran out at 1 ms in 9 cuts of 200. A lone
/// client never waits (its batch of one is already there).
pub const PROPOSAL_LINGER_MAX: Duration = Duration::from_millis(1);

/// A CURP-HO client session idle this long (by the leader's clock in the log) is forgotten at
/// the next `RecoveryDone`. A client must not retry one command for longer.
pub const CURP_SESSION_IDLE_MS: u64 = 60 * 60 * 1000;

/// How long a new leader waits for the pools of a majority before it tries again.
pub const CURP_POOL_COLLECT_TIMEOUT_MS: u64 = 2_000;

/// Recovery attempts that insist on a majority of complete pools before a majority of
/// answers, complete or not, is accepted (see `native::recovery`).
pub const CURP_RECOVERY_STRICT_ATTEMPTS: u32 = 5;

/// Records of the `Key` bucket a snapshot writes per hold of the store's read lock; applies
/// wait for one part (~1 ms), not for the whole state. Written under one hold, a snapshot of
/// the CURP-HO benchmark's state stopped every member's applies for 21 ms after 10 s and
/// 136 ms after 40 s, growing with the data, every `--snapshot-count` requests.
pub const SNAPSHOT_PART_RECORDS: usize = 4096;

/// How long openraft stops replicating to a peer after a call to it failed as unreachable or
/// timed out (our transport reports a timeout as unreachable): `PEER_BACKOFF_FIRST`, doubling
/// on each failure in a row up to `PEER_BACKOFF_MAX`. openraft's default is 500 ms from the
/// first failure: a follower whose disk stalled past one heartbeat interval (the call's
/// timeout) then got nothing for half a second, and when both followers stalled together (a
/// snapshot written by all three members on one disk) the leader committed nothing for that
/// long. 1 M weak writes with 200 in flight: 20.2k, 21.1k ops/s with openraft's back-off,
/// 25.8k, 25.1k with a constant 50 ms, 27.9k with this doubling (docs/perf/curp.md). A peer
/// that stays down still costs two attempts a second.
pub const PEER_BACKOFF_FIRST: Duration = Duration::from_millis(50);
pub const PEER_BACKOFF_MAX: Duration = Duration::from_millis(500);
