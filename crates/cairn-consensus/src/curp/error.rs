//! Errors of the CURP-HO cores. All are about inputs (client commands, peers' pools, decoded
//! bytes); broken invariants of the cores' own state panic instead (STYLE.md 9).

use thiserror::Error;

use super::command::CommandId;

/// A client command that must not enter the protocol.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CommandError {
    /// `Get`, `Put` or `Delete` named the empty key (etcd's text for the same refusal).
    #[error("etcdserver: key is not provided")]
    EmptyKey,
}

/// Why a witness did not pool a command. The driver answers the client "not ok", so the
/// command takes the slow path.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum WitnessError {
    /// The pool holds `entries_max` commands already (the leader is far behind or gone).
    #[error("witness pool full ({entries_max} entries)")]
    PoolFull { entries_max: usize },
    /// Weak reads are answered by the bound replica alone and never witnessed.
    #[error("weak read {0:?} sent to a witness")]
    WeakRead(CommandId),
    /// A client sent a different command under an id already pooled.
    #[error("command id {0:?} reused for a different command")]
    IdReused(CommandId),
}

/// Why a new leader cannot compute its recovery from the pools it collected.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RecoveryError {
    /// Fewer pools than a majority: a fast-path command might be missed.
    #[error("recovery needs {majority} pools, has {pools}")]
    TooFewPools { pools: usize, majority: usize },
    /// The new leader's own pool is not among them (the spec requires it).
    #[error("recovery pools lack the new leader's own pool")]
    LeaderPoolMissing,
}

/// Bytes that do not decode into a session table (a snapshot part read from disk or a peer).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SessionDecodeError {
    #[error("session table: unknown version {0}")]
    Version(u8),
    #[error("session table: truncated at byte {0}")]
    Truncated(usize),
    #[error("session table: {0} trailing bytes")]
    Trailing(usize),
    #[error("session table: client ids not strictly increasing at client {0:x}")]
    Unordered(u64),
    #[error("session table: result of {len} bytes over the {max} limit")]
    ResultTooLarge { len: usize, max: usize },
}
