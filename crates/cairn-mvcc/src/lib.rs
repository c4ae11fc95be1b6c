//! cairn-mvcc — the deterministic MVCC key-value state machine behind the etcd API.
//!
//! Owns: `apply(index, entry) -> result` for every replicated request, range and txn
//! evaluation, the key index, compaction, the lease table, the watch event history, alarms,
//! the storage quota and the auth store. Must not: do network or disk I/O, read a clock or a global RNG. It writes
//! through `cairn_storage::engine::Engine`; time arrives inside the entries.
//!
//! Layout:
//! - `revision` — (main, sub) revisions and their byte encoding.
//! - `key_index`, `index` — one key's generations; the ordered index of all keys.
//! - `store` — `KvStore`: restore from the engine, read primitives, `WriteTxn`.
//! - `range`, `kv`, `txn`, `compaction`, `lease` — the etcd operations.
//! - `watch` — event history for watchers.
//! - `native` — the native CURP-HO operations (Put, Delete, Get, Scan) on the same keyspace.
//! - `apply` — the entry dispatcher with the quota layer; `validate` — stateless request checks.
//! - `auth` — users, roles, permissions and their checks; simple tokens.
//! - `hash` — history checksums; `limits`, `error`, `response`.

pub mod apply;
pub mod auth;
pub mod compaction;
pub mod error;
pub mod hash;
pub mod index;
pub mod key_index;
pub mod kv;
pub mod lease;
pub mod limits;
mod native;
pub mod range;
mod response;
pub mod revision;
pub mod store;
pub mod txn;
pub mod validate;
pub mod watch;

pub use apply::ApplyResponse;
pub use error::MvccError;
pub use store::{KvStore, StoreConfig};
