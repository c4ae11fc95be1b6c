//! The wait registry: clients waiting for the result of the entry they proposed.
//!
//! Every member applies every entry, so the result a client waits for is computed by the
//! state machine of the member the client talks to, whichever member led. An entry names its
//! proposer and a proposal id; when the proposer applies it, the registry hands the result to
//! the waiting client (etcd's request id and `wait.Wait`). A write that a follower forwarded to
//! its leader is thus answered from the follower's own state, at the revision it will keep.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use cairn_mvcc::{ApplyResponse, MvccError};
use tokio::sync::oneshot;

pub type ApplyResult = Result<ApplyResponse, MvccError>;

/// Pending proposals of this member by proposal id.
pub struct WaitRegistry {
    next_id: AtomicU64,
    /// A std mutex: held for one map insert or remove, never across an await.
    pending: Mutex<HashMap<u64, oneshot::Sender<ApplyResult>>>,
}

impl WaitRegistry {
    /// Ids start at `first_id`. It must differ between runs of one member (the caller passes
    /// something time-derived): an entry proposed before a restart and applied after it must
    /// not find a new waiter with the same id.
    pub fn new(first_id: u64) -> WaitRegistry {
        WaitRegistry {
            next_id: AtomicU64::new(first_id),
            pending: Mutex::new(HashMap::new()),
        }
    }

    /// Reserves a proposal id and the receiver its result will arrive on.
    pub fn register(&self) -> (u64, oneshot::Receiver<ApplyResult>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (sender, receiver) = oneshot::channel();
        self.lock().insert(id, sender);
        (id, receiver)
    }

    /// Hands `result` to the waiter of `id`, if it still waits.
    pub fn complete(&self, id: u64, result: ApplyResult) {
        if let Some(sender) = self.lock().remove(&id) {
            // The client may have given up (deadline, disconnect): nothing to do then.
            let _ = sender.send(result);
        }
    }

    /// Forgets `id` (the proposal failed before it could be committed).
    pub fn cancel(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Waiters currently registered.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<ApplyResult>>> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_result_reaches_its_waiter_and_only_once() {
        let registry = WaitRegistry::new(100);
        let (first, first_result) = registry.register();
        let (second, second_result) = registry.register();
        assert_ne!(first, second);
        registry.complete(second, Err(MvccError::LeaseNotFound));
        registry.complete(second, Err(MvccError::NoSpace));
        assert!(matches!(
            second_result.await,
            Ok(Err(MvccError::LeaseNotFound))
        ));
        registry.cancel(first);
        assert!(
            first_result.await.is_err(),
            "a cancelled waiter gets nothing"
        );
        assert!(registry.is_empty());
    }
}
