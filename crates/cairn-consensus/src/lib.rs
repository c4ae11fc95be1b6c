//! cairn-consensus — replication of the state machine with openraft.
//!
//! Owns: openraft's type configuration, the raft log store on Cairn's WAL, the state-machine
//! adapter over `cairn-mvcc`, the peer transport (a trait with a TCP and a simulated
//! implementation) and [`Replica`], the member the server drives: propose and get the apply
//! result, linearizable read points, membership. Must not: know etcd's wire types beyond the
//! replicated request it carries, or serve clients.
//!
//! Layout:
//! - `curp` — CURP-HO protocol logic as pure cores: quorums, commands, witness pool, completion,
//!   recovery, sessions.
//! - `types` — openraft type config, `Member`, `Proposal`.
//! - `wire` — openraft types ↔ `raftpb` (wire and disk).
//! - `log_store` — `RaftLogStorage` on the WAL plus the hard-state file.
//! - `state_machine` — `RaftStateMachine` over `KvStore`; snapshots; `snapshot_trigger` —
//!   a snapshot every `--snapshot-count` applied requests.
//! - `wait` — proposal waiters; `batcher` — proposals packed into entries; `read_index` —
//!   batched read points.
//! - `native` — the native CURP-HO protocol on a member: its state (sessions, witness pool,
//!   sync waiters), the apply hooks, leader ordering and witnessing, recovery on leader change.
//! - `network` — the `Transport` trait, openraft's network over it, `tcp` and `sim`.
//! - `metrics` — counters of proposals, commits, applies and leader changes.
//! - `peer` — answers peer requests; `removal` — members removed from the cluster, whose
//!   raft requests peers refuse; `replica` — the member; `joint_config` — the leader
//!   finishes membership changes openraft left joint; `limits`, `error`.

mod batcher;
pub mod curp;
mod election;
pub mod error;
mod joint_config;
pub mod limits;
pub mod log_store;
pub mod metrics;
pub mod native;
pub mod network;
pub mod peer;
mod read_index;
pub mod removal;
pub mod replica;
pub mod snapshot_file;
mod snapshot_trigger;
pub mod state_machine;
pub mod types;
pub mod wait;
pub mod wire;

pub use error::{ConsensusError, OpenError};
pub use replica::{MemberInfo, MembershipChange, Replica, ReplicaConfig, ReplicaStatus};
pub use types::{Member, MemberId};
