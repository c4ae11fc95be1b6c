//! Errors of the node and their gRPC form: the one table from Cairn errors to etcd's status
//! codes and messages (etcd's `v3rpc/util.go`).

use cairn_consensus::ConsensusError;
use cairn_mvcc::auth::AuthError;
use cairn_mvcc::MvccError;
use tonic::{Code, Status};

/// Why the node could not serve a request.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The state machine refused the request; the client sees etcd's error.
    #[error(transparent)]
    Mvcc(#[from] MvccError),
    /// The node is shutting down (or its storage failed): retry on another member.
    #[error("etcdserver: server stopped")]
    Stopped,
    /// A feature that Cairn does not offer yet.
    #[error("etcdserver: {0} is not supported by this member")]
    Unsupported(&'static str),
    /// No leader: an election is running or this member is cut off from the quorum.
    #[error("etcdserver: no leader")]
    NoLeader,
    /// The leader changed while the request was in flight; it may have been applied.
    #[error("etcdserver: leader changed")]
    LeaderChanged,
    /// The cluster did not answer in time; the request may have been applied.
    #[error("etcdserver: request timed out")]
    Timeout,
    /// A membership change was refused.
    #[error("etcdserver: {0}")]
    Membership(String),
    /// Only the leader may do this (MoveLeader).
    #[error("etcdserver: not leader")]
    NotLeader,
    /// MoveLeader to a member that is not a voter, or that did not take over.
    #[error("etcdserver: bad leader transferee")]
    BadLeaderTransferee,
    /// A fault of this member that no client input explains.
    #[error("etcdserver: internal error: {0}")]
    Internal(String),
    /// Proclaim with a leader key that no longer exists with the given create revision
    /// (etcd's `concurrency.ErrElectionNotLeader`).
    #[error("election: not leader")]
    ElectionNotLeader,
    /// Leader of an election that has no candidate (etcd's `concurrency.ErrElectionNoLeader`).
    #[error("election: no leader")]
    ElectionNoLeader,
    /// Proclaim or Resign without a leader key (etcd's `v3election.ErrMissingLeaderKey`).
    #[error("\"leader\" field must be provided")]
    MissingLeaderKey,
    /// The lock waiter's key was deleted (its lease expired) while it waited for its turn
    /// (etcd's `concurrency.ErrSessionExpired`).
    #[error("mutex: session is expired")]
    SessionExpired,
}

impl ServerError {
    /// The status of a Lock or Election RPC. etcd serves these through its own Go client
    /// (`v3client`), which turns every server error into a plain `EtcdError` without a gRPC
    /// status, and its recipes return plain Go errors: grpc-go sends them all as `Unknown`
    /// with the error's text, so clients see `Unknown` for every error of these services.
    pub fn into_recipe_status(self) -> Status {
        Status::new(Code::Unknown, self.to_string())
    }
}

impl From<AuthError> for ServerError {
    fn from(error: AuthError) -> ServerError {
        ServerError::Mvcc(error.into())
    }
}

impl From<ConsensusError> for ServerError {
    fn from(error: ConsensusError) -> ServerError {
        match error {
            ConsensusError::Mvcc(error) => ServerError::Mvcc(error),
            ConsensusError::NoLeader => ServerError::NoLeader,
            ConsensusError::LeaderChanged => ServerError::LeaderChanged,
            ConsensusError::Timeout | ConsensusError::Unreachable { .. } => ServerError::Timeout,
            ConsensusError::Stopped => ServerError::Stopped,
            ConsensusError::Membership(reason) => ServerError::Membership(reason),
            ConsensusError::NotLeader => ServerError::NotLeader,
            ConsensusError::BadTransferee => ServerError::BadLeaderTransferee,
        }
    }
}

/// Errors from opening or running a node (the binary reports these and exits).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("data dir {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("replica: {0}")]
    Replica(String),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("cannot listen on {url}: {source}")]
    Listen { url: String, source: std::io::Error },
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

impl From<ServerError> for Status {
    fn from(error: ServerError) -> Status {
        let code = match &error {
            ServerError::Mvcc(mvcc) => mvcc_code(mvcc),
            ServerError::Stopped => Code::Unavailable,
            ServerError::Unsupported(_) => Code::Unimplemented,
            ServerError::NoLeader | ServerError::LeaderChanged | ServerError::Timeout => {
                Code::Unavailable
            }
            ServerError::Membership(_)
            | ServerError::NotLeader
            | ServerError::BadLeaderTransferee => Code::FailedPrecondition,
            ServerError::Internal(_) => Code::Internal,
            ServerError::ElectionNotLeader
            | ServerError::ElectionNoLeader
            | ServerError::MissingLeaderKey
            | ServerError::SessionExpired => Code::Unknown,
        };
        Status::new(code, error.to_string())
    }
}

fn mvcc_code(error: &MvccError) -> Code {
    match error {
        MvccError::EmptyKey
        | MvccError::KeyNotFound
        | MvccError::ValueProvided
        | MvccError::LeaseProvided
        | MvccError::TooManyOps
        | MvccError::DuplicateKey
        | MvccError::RequestTooLarge
        | MvccError::InvalidSortOption
        | MvccError::EmptyRequest => Code::InvalidArgument,
        MvccError::Compacted | MvccError::FutureRevision | MvccError::LeaseTtlTooLarge => {
            Code::OutOfRange
        }
        MvccError::NoSpace => Code::ResourceExhausted,
        MvccError::LeaseNotFound => Code::NotFound,
        MvccError::LeaseExists => Code::FailedPrecondition,
        MvccError::Auth(auth) => auth_code(auth),
    }
}

/// etcd's codes for auth refusals (`rpctypes/error.go`).
fn auth_code(error: &AuthError) -> Code {
    match error {
        AuthError::UserEmpty
        | AuthError::RoleEmpty
        | AuthError::AuthFailed
        | AuthError::PermissionNotGiven
        | AuthError::InvalidAuthMgmt
        | AuthError::AuthOldRevision => Code::InvalidArgument,
        AuthError::RootUserNotExist
        | AuthError::RootRoleNotExist
        | AuthError::UserAlreadyExist
        | AuthError::UserNotFound
        | AuthError::RoleAlreadyExist
        | AuthError::RoleNotFound
        | AuthError::RoleNotGranted
        | AuthError::PermissionNotGranted
        | AuthError::AuthNotEnabled => Code::FailedPrecondition,
        AuthError::PermissionDenied => Code::PermissionDenied,
        AuthError::InvalidAuthToken => Code::Unauthenticated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_carry_etcd_codes_and_messages() {
        let status = Status::from(ServerError::from(MvccError::Compacted));
        assert_eq!(status.code(), Code::OutOfRange);
        assert_eq!(
            status.message(),
            "etcdserver: mvcc: required revision has been compacted"
        );
        let status = Status::from(ServerError::from(MvccError::RequestTooLarge));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "etcdserver: request is too large");
        assert_eq!(
            Status::from(ServerError::from(MvccError::NoSpace)).code(),
            Code::ResourceExhausted
        );
        assert_eq!(
            Status::from(ServerError::from(MvccError::LeaseNotFound)).code(),
            Code::NotFound
        );
        assert_eq!(Status::from(ServerError::Stopped).code(), Code::Unavailable);
        let status = Status::from(ServerError::from(MvccError::from(
            AuthError::PermissionDenied,
        )));
        assert_eq!(status.code(), Code::PermissionDenied);
        assert_eq!(status.message(), "etcdserver: permission denied");
        let status = Status::from(ServerError::from(MvccError::from(
            AuthError::InvalidAuthToken,
        )));
        assert_eq!(status.code(), Code::Unauthenticated);
        assert_eq!(status.message(), "etcdserver: invalid auth token");
    }
}
