//! cairn-client — the Rust client of Cairn's native CURP-HO protocol
//! (`shared/design/CURP-HO.md`).
//!
//! A [`Session`] is one client: a `client_id`, a `seq` that grows by one per command, one
//! connection per replica, and a *bound* replica (the nearest) that answers its weak
//! operations.
//!
//! - **Strong** ops ([`Session::strong`]) go to every replica. They complete on the fast path
//!   when the leader's `ok` and same-term `ok` witnesses make a superquorum (1 RTT), else when
//!   the leader's `SyncReply` arrives after the Raft commit (2 RTT). The rule is
//!   `cairn_consensus::curp::Completion`; the quorum sizes come from `Quorums::new(N)` with N
//!   the voters the replicas report.
//! - **Weak writes** ([`Session::weak`] with `Put`/`Delete`) go to the bound replica first,
//!   then to the others, through one FIFO send queue per replica; the bound replica's receipt
//!   completes them.
//! - **Weak reads** go to the bound replica with the highest revision this session has seen
//!   (monotonic reads); the session's own writes the replica has not applied yet are laid
//!   over its answer (read-your-writes).
//! - [`Session::flush`] waits until the bound replica has applied all of the session's
//!   commands: the durability point of weak writes.
//!
//! Every command carries its `causal_dep`: the seq of the session's latest weak write before
//! it. Replicas keep the causal barrier with it: the leader orders a command only after that
//! write (else it refuses with `CAUSAL_GAP`), and no member applies one over a gap. The
//! session answers `CAUSAL_GAP`, like a leader change, by resending its unapplied weak
//! writes in seq order, then whatever is in flight; retries do the same, the session's
//! operations sharing one resend of the whole set per retry period.
//!
//! A retry timer (default 1 s) resends an unfinished command to every replica; a replica
//! that applied it answers from its session table (exactly once). Leader changes need
//! nothing else for correctness: every replica gets every command, and the new leader's
//! recovery keeps what completed. For speed, a member that starts serving as leader (its
//! recovery done) says so on every native connection (`Serving`), and the session resends
//! everything in flight at once instead of waiting for the timer.
//!
//! Layout: `config`, `link` (one replica connection: FIFO writer, reader, reconnect,
//! emulated delay), `session` (commands, completion, read-your-writes), `error`.

mod config;
mod error;
mod link;
mod session;

pub use cairn_consensus::curp::Path;
pub use cairn_proto::curppb::{KeyValue, Result as OpResult};
pub use config::SessionConfig;
pub use error::ClientError;
pub use session::{Op, Outcome, Session};
