//! Removed members, the etcd way.
//!
//! A member removed from the cluster may miss the entry that removes it: once the final
//! configuration commits, the leader stops replicating to it. Left alone it would campaign
//! forever. So every member remembers the ids its applied memberships removed and refuses
//! their raft requests with a "removed" refusal; a member that receives one knows it was
//! removed and stops (etcd's peers answer such a member `410 Gone`, and it stops itself).

use std::collections::BTreeSet;
use std::sync::{PoisonError, RwLock};

use tokio::sync::watch;

use crate::types::{MemberId, Membership};

/// What this member knows of removals; shared by the state machine (which records them), the
/// peer handler (which refuses removed senders) and the network (which hears refusals).
#[derive(Debug)]
pub struct Removals {
    /// Ids removed by an applied membership and not added back since.
    removed: RwLock<BTreeSet<MemberId>>,
    /// Set once a peer refused this member as removed.
    told: watch::Sender<bool>,
}

impl Removals {
    pub fn new(removed: BTreeSet<MemberId>) -> Removals {
        Removals {
            removed: RwLock::new(removed),
            told: watch::channel(false).0,
        }
    }

    /// Records the change from the applied membership `old` to `new`: whoever `old` listed and
    /// `new` does not is removed; whoever `new` lists is not (a member added back under the
    /// same id).
    pub fn applied(&self, old: &Membership, new: &Membership) {
        let listed_now: BTreeSet<MemberId> = new.nodes().map(|(id, _)| *id).collect();
        let mut removed = self.removed.write().unwrap_or_else(PoisonError::into_inner);
        removed.extend(old.nodes().map(|(id, _)| *id));
        removed.retain(|id| !listed_now.contains(id));
    }

    /// Replaces the record with the one a snapshot carries.
    pub fn restore(&self, removed: BTreeSet<MemberId>) {
        *self.removed.write().unwrap_or_else(PoisonError::into_inner) = removed;
    }

    pub fn snapshot(&self) -> BTreeSet<MemberId> {
        self.removed
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn is_removed(&self, id: MemberId) -> bool {
        self.removed
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&id)
    }

    /// A peer refused this member as removed.
    pub fn told_removed(&self) {
        self.told.send_replace(true);
    }

    /// Resolves once a peer refused this member as removed.
    pub async fn told(&self) {
        let mut told = self.told.subscribe();
        // The sender lives as long as `self`, so waiting cannot fail while we are borrowed.
        let _ = told.wait_for(|told| *told).await;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::types::Member;

    fn membership(voters: &[MemberId]) -> Membership {
        let nodes: BTreeMap<MemberId, Member> =
            voters.iter().map(|id| (*id, Member::default())).collect();
        Membership::new(vec![voters.iter().copied().collect()], nodes)
    }

    #[test]
    fn a_member_dropped_from_the_membership_is_removed_until_added_back() {
        let removals = Removals::new(BTreeSet::new());
        removals.applied(&membership(&[]), &membership(&[1, 2, 3]));
        assert!(!removals.is_removed(3), "never removed");
        removals.applied(&membership(&[1, 2, 3]), &membership(&[1, 2]));
        assert!(removals.is_removed(3));
        assert!(!removals.is_removed(1) && !removals.is_removed(2));
        assert!(!removals.is_removed(4), "never a member");
        removals.applied(&membership(&[1, 2]), &membership(&[1, 2, 3]));
        assert!(!removals.is_removed(3), "added back");
        assert_eq!(removals.snapshot(), BTreeSet::new());
    }

    #[tokio::test]
    async fn told_resolves_once_a_peer_refused_this_member() {
        let removals = std::sync::Arc::new(Removals::new(BTreeSet::new()));
        let waiting = tokio::spawn({
            let removals = removals.clone();
            async move { removals.told().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "nobody refused it yet");
        removals.told_removed();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("told resolves")
            .expect("task");
    }
}
