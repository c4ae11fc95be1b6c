//! `Recorder`: collects a [`History`] while clients run.
//!
//! Each client calls [`Recorder::invoke`] before sending a request and [`Recorder::complete`]
//! when the answer (or a timeout) arrives. Times are passed in, so a simulation can record on its
//! virtual clock. An operation never completed (the client crashed, the test stopped) comes out
//! of [`Recorder::history`] as [`Outcome::Unknown`]: it may have taken effect.

use std::sync::{Arc, Mutex, PoisonError};

use crate::history::{Call, History, Operation, Outcome};

/// Shared, clone-able history recorder.
///
/// A `std::sync::Mutex` rather than tokio's: the lock is held only to push or update one
/// element, never across an await, and the recorder must work from plain threads, async tasks and
/// a single-threaded simulation alike.
#[derive(Clone, Debug, Default)]
pub struct Recorder {
    operations: Arc<Mutex<Vec<Operation>>>,
}

/// Names one invoked operation; [`Recorder::complete`] consumes it, so an operation completes at
/// most once.
#[derive(Debug, PartialEq, Eq)]
pub struct OpToken {
    index: usize,
}

impl Recorder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `client` sent `call` at `now_ns`.
    pub fn invoke(&self, client: u64, call: Call, now_ns: u64) -> OpToken {
        let mut operations = self.lock();
        operations.push(Operation {
            client,
            call,
            invoke_ns: now_ns,
            return_ns: u64::MAX,
            outcome: Outcome::Unknown,
        });
        OpToken {
            index: operations.len() - 1,
        }
    }

    /// Records what came back for `token` at `now_ns`. Pass [`Outcome::Unknown`] for a timeout
    /// or a lost connection.
    ///
    /// Panics if `token` came from another recorder, or if `now_ns` is before the invoke time:
    /// both are bugs in the test harness, not in the system under test.
    pub fn complete(&self, token: OpToken, outcome: Outcome, now_ns: u64) {
        let mut operations = self.lock();
        let recorded = operations.len();
        let Some(operation) = operations.get_mut(token.index) else {
            panic!(
                "op token {} does not belong to this recorder ({recorded} operations)",
                token.index
            );
        };
        assert!(
            now_ns >= operation.invoke_ns,
            "operation completed at {now_ns} ns before it was invoked at {} ns: {operation}",
            operation.invoke_ns
        );
        operation.return_ns = now_ns;
        operation.outcome = outcome;
    }

    /// A snapshot of everything recorded so far; operations still in flight are unknown.
    pub fn history(&self) -> History {
        History::new(self.lock().clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Operation>> {
        // A client thread that panicked mid-test must not hide the history of the others: the
        // vector is valid after every statement that touches it, so the poison carries no news.
        self.operations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completed_and_pending_operations() {
        let recorder = Recorder::new();
        let put = recorder.invoke(
            1,
            Call::Put {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
            },
            10,
        );
        let clone = recorder.clone();
        let _get = clone.invoke(2, Call::Get { key: b"k".to_vec() }, 15);
        recorder.complete(put, Outcome::Put { revision: 2 }, 20);

        let history = recorder.history();
        assert_eq!(history.operations.len(), 2);
        assert_eq!(history.operations[0].outcome, Outcome::Put { revision: 2 });
        assert_eq!(history.operations[0].return_ns, 20);
        assert_eq!(history.operations[1].client, 2);
        assert_eq!(history.operations[1].outcome, Outcome::Unknown);
    }

    #[test]
    #[should_panic(expected = "before it was invoked")]
    fn completing_before_invoking_is_a_harness_bug() {
        let recorder = Recorder::new();
        let token = recorder.invoke(1, Call::Get { key: b"k".to_vec() }, 10);
        recorder.complete(token, Outcome::Unknown, 5);
    }
}
