//! Errors of the consensus layer. "Retry or forward" errors (no leader, leader changed,
//! timeout) stay apart from the fatal "stopped" and from the state machine's own refusals.

use cairn_mvcc::MvccError;
use thiserror::Error;

use crate::types::MemberId;

/// Why a proposal or a linearizable read did not complete.
#[derive(Debug, Error)]
pub enum ConsensusError {
    /// No leader is known: an election is running or this member is cut off. Retry.
    #[error("no leader")]
    NoLeader,
    /// The leader changed while the request was in flight; it may or may not have applied.
    #[error("leader changed")]
    LeaderChanged,
    /// The request did not complete in time; it may or may not have applied.
    #[error("request timed out")]
    Timeout,
    /// The leader could not be reached.
    #[error("leader {leader:x} unreachable: {reason}")]
    Unreachable { leader: MemberId, reason: String },
    /// This member is stopping or stopped.
    #[error("member stopped")]
    Stopped,
    /// The state machine refused the request (etcd's error).
    #[error(transparent)]
    Mvcc(#[from] MvccError),
    /// A membership change was refused (unknown member, not a learner, …).
    #[error("{0}")]
    Membership(String),
    /// Only the leader may do this (hand over its leadership).
    #[error("not leader")]
    NotLeader,
    /// A leadership transfer to a member that is not a voter, or that did not take over.
    #[error("bad leader transferee")]
    BadTransferee,
}

/// A message from a peer or the disk that does not decode into what it claims to be.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum WireError {
    #[error("missing {0}")]
    Missing(&'static str),
    #[error("invalid message: {0}")]
    Invalid(String),
}

/// Why opening the replica's durable state failed.
#[derive(Debug, Error)]
pub enum OpenError {
    #[error(transparent)]
    Wal(#[from] cairn_storage::error::WalError),
    #[error(transparent)]
    Snapshot(#[from] cairn_storage::error::SnapshotError),
    #[error(transparent)]
    Engine(#[from] cairn_storage::engine::EngineError),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{what}: {reason}")]
    Corrupt { what: String, reason: String },
    #[error("raft: {0}")]
    Raft(String),
}
