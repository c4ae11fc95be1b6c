//! Errors the state machine returns to clients. Every message is etcd's exact text, because
//! clients (Kubernetes included) match on it; `cairn-server` maps each variant to etcd's gRPC
//! code in one table.

use crate::auth::AuthError;

/// A request the state machine refused. Refusing never changes state.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MvccError {
    /// A Range/Put/DeleteRange/Compare with an empty key.
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    /// `ignore_value`/`ignore_lease` on a key that does not exist, or an empty txn op.
    #[error("etcdserver: key not found")]
    KeyNotFound,
    /// `ignore_value` together with a value.
    #[error("etcdserver: value is provided")]
    ValueProvided,
    /// `ignore_lease` together with a lease.
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    /// A txn with more operations than `--max-txn-ops` in one of its lists.
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    /// A txn that writes one key twice (or puts a key it also deletes).
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    /// A read or compaction below the compacted revision.
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted,
    /// A read or compaction above the current revision.
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRevision,
    /// A write while the NOSPACE alarm is raised, or one that would exceed the quota.
    #[error("etcdserver: mvcc: database space exceeded")]
    NoSpace,
    /// A lease id that is not granted (or already expired).
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    /// A grant with an id that is already in use.
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    /// A grant with a TTL above `lease_ttl_s_max`.
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
    /// An encoded request above `--max-request-bytes`.
    #[error("etcdserver: request is too large")]
    RequestTooLarge,
    /// A Range whose sort order or sort target is not one of the enum's values (etcd 3.5).
    #[error("etcdserver: invalid sort option")]
    InvalidSortOption,
    /// A log entry with no request in it (a bug or corruption upstream; nothing is applied).
    #[error("etcdserver: empty request")]
    EmptyRequest,
    /// The auth store refused the request or its caller.
    #[error(transparent)]
    Auth(#[from] AuthError),
}
