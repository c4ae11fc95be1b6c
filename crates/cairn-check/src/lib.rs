//! cairn-check — proves a recorded client history of an etcd-like KV store linearizable.
//!
//! Owns: the history types and their [`Recorder`], the register model of one key, cheap checks
//! that name the operations at fault (some from etcd's revision counter, some from real time),
//! and a Wing–Gong/Lowe linearizability search per key. Used by the simulation and the
//! real-process fault tests of other crates.
//!
//! Must not: depend on any other Cairn crate, read a clock or an RNG (times come from the
//! caller), or assume an operation with unknown outcome was lost.
//!
//! Layout:
//! - `history` — `Call`, `Outcome`, `Operation`, `History`; `recorder` — `Recorder`, `OpToken`.
//! - `checker` — `check`, `check_with`, `CheckOptions`, `Report`: the layers in order.
//! - `key_history` — split by key, validate, intern values, place operations by revision.
//! - `reads` — read checks that need no revisions (value written, not stale by real time).
//! - `revisions` — the checks revisions allow (uniqueness, real-time order, reads see newest).
//! - `model` — the register of one key; `linearizability` — the search; `events`, `memo`,
//!   `symmetry` — its candidate list, its memory of explored states, interchangeable unknowns.
//! - `error` — `Violation`; `limits` — search and report bounds.

mod checker;
mod error;
mod events;
mod history;
mod key_history;
pub mod limits;
mod linearizability;
mod memo;
mod model;
mod reads;
mod recorder;
mod revisions;
mod symmetry;

pub use checker::{check, check_with, CheckOptions, Report};
pub use error::{NotLinearizable, Refusal, Violation};
pub use history::{Call, History, Key, Operation, Outcome, Value};
pub use recorder::{OpToken, Recorder};
