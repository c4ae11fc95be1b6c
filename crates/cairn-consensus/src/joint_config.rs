//! Finishing joint configurations nobody else will finish.
//!
//! openraft 0.9 changes membership in two steps — the joint configuration `c1c2`, then `c2` —
//! and proposes the second step only from the `change_membership` call that proposed the
//! first. If that leader loses leadership in between, or its caller gives up, the cluster stays
//! joint: every decision then needs a quorum of *both* member sets (harder to reach, and a
//! further change is refused). So the leader watches its committed membership and, when a
//! joint configuration outlives a full patience period, proposes `c2` itself (`c1c2` → `c2`
//! is what the original call would have done).

use std::time::Duration;

use openraft::ChangeMembers;
use tracing::{info, warn};

use crate::types::{MemberId, Raft};

/// Runs until raft stops. `patience` should exceed the time the proposing call itself needs
/// to commit the second step (a few heartbeats), so the two rarely race; when they do, openraft
/// refuses the second proposal, which is harmless.
pub(crate) async fn finish_joint_configs(raft: Raft, id: MemberId, patience: Duration) {
    let mut seen_joint = None;
    loop {
        tokio::time::sleep(patience).await;
        let metrics = raft.metrics().borrow().clone();
        if metrics.running_state.is_err() {
            return;
        }
        let config = &metrics.membership_config;
        let joint = config.membership().get_joint_config();
        let target = match joint.as_slice() {
            [_, target] if metrics.current_leader == Some(id) => target.clone(),
            _ => {
                seen_joint = None;
                continue;
            }
        };
        let log_id = *config.log_id();
        if seen_joint.as_ref() != Some(&log_id) {
            // First sighting: its proposer may still be finishing it.
            seen_joint = Some(log_id);
            continue;
        }
        info!(voters = ?target, "finishing a joint configuration left behind");
        match raft
            .change_membership(ChangeMembers::ReplaceAllVoters(target), false)
            .await
        {
            Ok(_) => seen_joint = None,
            Err(error) => warn!(%error, "finishing a joint configuration failed; retrying"),
        }
    }
}
