//! The client's errors.

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ClientError {
    /// The session needs at least one replica endpoint.
    #[error("no endpoints given")]
    NoEndpoints,
    /// `bound` does not name one of the endpoints.
    #[error("bound replica {bound} is not among the {endpoints} endpoints")]
    BadBound { bound: usize, endpoints: usize },
    /// An operation's timeout must end before the session forgets its unapplied writes: a
    /// weak write still waiting then would lose its place in the session's causal order.
    #[error("timeout {timeout:?} is not shorter than {max:?}")]
    BadTimeout {
        timeout: std::time::Duration,
        max: std::time::Duration,
    },
    /// The replicas refused the request (the protocol's error code and message).
    #[error("{code}: {message}")]
    Refused { code: String, message: String },
    /// The operation did not complete in time (no leader, a partition, …). A write may or may
    /// not have applied; retrying it with the same session is exactly-once.
    #[error("operation timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// The session was closed.
    #[error("session closed")]
    Closed,
}
