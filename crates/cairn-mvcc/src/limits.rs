//! Explicit bounds of the state machine. Defaults follow etcd 3.5's flags.

/// `--max-txn-ops`: operations per txn list (compare, success, failure).
pub const TXN_OPS_MAX_DEFAULT: usize = 128;

/// `--max-request-bytes`: largest encoded request (1.5 MiB).
pub const REQUEST_BYTES_MAX_DEFAULT: usize = 3 * 512 * 1024;

/// `--quota-backend-bytes`: storage quota before the NOSPACE alarm (2 GiB).
pub const QUOTA_BACKEND_BYTES_DEFAULT: u64 = 2 * 1024 * 1024 * 1024;

/// etcd's `MaxLeaseTTL`: the largest TTL a lease may be granted with, in seconds.
pub const LEASE_TTL_S_MAX: i64 = 9_000_000_000;

/// Smallest TTL a lease gets (etcd: 1.5 × election timeout of 1 s, rounded up), in seconds.
pub const LEASE_TTL_S_MIN: i64 = 2;

/// Most revisions one watch response carries when catching up from history (etcd's
/// `watchBatchMaxRevs`).
pub const WATCH_BATCH_REVISIONS_MAX: usize = 1000;

/// Bytes charged against the quota for each put on top of key and value (etcd's estimate of
/// bucket overhead).
pub const QUOTA_PUT_OVERHEAD_BYTES: u64 = 256;

const _: () = assert!(LEASE_TTL_S_MIN > 0 && LEASE_TTL_S_MIN < LEASE_TTL_S_MAX);
const _: () = assert!(REQUEST_BYTES_MAX_DEFAULT as u64 <= QUOTA_BACKEND_BYTES_DEFAULT);

/// etcd's default `--auth-token-ttl`: an unused simple token expires after 5 minutes.
pub const SIMPLE_TOKEN_TTL_MS_DEFAULT: i64 = 300_000;
