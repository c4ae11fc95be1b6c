//! CURP-HO protocol logic (see `shared/design/CURP-HO.md`, the authority): pure, deterministic
//! cores that the async driver will feed with messages, terms and times.
//!
//! Must not: do I/O, read a clock or a global RNG, or touch openraft. Terms and times are
//! passed in, so every rule here is unit-tested by asserting exact outcomes.
//!
//! Layout:
//! - `quorum` — [`Quorums`]: f, majority, superquorum, recover quorum for N replicas; the
//!   fast-path decision.
//! - `command` — [`Command`]: native ops, command ids, key sets and the conflict rule.
//! - `witness` — [`WitnessPool`]: a witness's unapplied commands, the conservative `ok` rule,
//!   garbage collection by apply and by `RecoveryDone(T)`.
//! - `completion` — [`Completion`]: the client's tracker of one strong op (fast or slow path).
//! - `recovery` — [`RecoveryPlan`]: what a new leader re-proposes from a majority's pools.
//! - `session` — [`SessionTable`]: exactly-once table of the replicated state.
//! - `limits`, `error`.

pub mod command;
pub mod completion;
pub mod error;
pub mod limits;
pub mod quorum;
pub mod recovery;
pub mod session;
pub mod witness;

pub use command::{conflicts, ClientId, Command, CommandId, Consistency, KeySet, Op};
pub use completion::{Completion, Done, Path, Reply};
pub use error::{CommandError, RecoveryError, SessionDecodeError, WitnessError};
pub use quorum::{fast_path_reached, LeaderVote, Quorums, WitnessVote};
pub use recovery::RecoveryPlan;
pub use session::{SessionCheck, SessionTable};
pub use witness::{PoolEntry, WitnessPool};

/// A Raft term, as the leader and witnesses tag their replies and pool entries with it.
pub type Term = u64;

/// A replica's member id.
pub type ReplicaId = u64;
