//! The lease expiry loop: the only place that reads the clock to expire leases.
//!
//! Only the leader expires leases. Expiry stamps are replicated state (wall-clock ms carried
//! by the entries), so a new leader sees each lease's remaining TTL unchanged.
//!
//! Every tick it asks the store which leases expired by wall-clock now and proposes their
//! revocation through the log (so the deletions get one revision each and replay identically).
//! Revocations of one tick are proposed together and share a WAL fsync.

use std::time::Duration;

use cairn_proto::cairnpb::internal_request::Request as Internal;
use cairn_proto::etcdserverpb::LeaseRevokeRequest;
use futures::future::join_all;
use tracing::{debug, warn};

use crate::error::ServerError;
use crate::limits::LEASE_REVOKES_PER_TICK_MAX;
use crate::node::{now_unix_ms, until_stopping, Node};

const TICK: Duration = Duration::from_millis(250);

pub async fn run(node: Node) {
    let mut tick = tokio::time::interval(TICK);
    let mut stopping = node.stopping();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = until_stopping(&mut stopping) => return,
        }
        // Leases expire only on the leader, through the log: followers would race it.
        if !node.replica().is_leader() {
            continue;
        }
        let expired = node
            .store()
            .leases()
            .expired(now_unix_ms(), LEASE_REVOKES_PER_TICK_MAX);
        if expired.is_empty() {
            continue;
        }
        debug!(count = expired.len(), "revoking expired leases");
        let revokes = expired
            .iter()
            .map(|id| node.propose_internal(Internal::LeaseRevoke(LeaseRevokeRequest { id: *id })));
        for result in join_all(revokes).await {
            match result {
                // Revoked by its owner meanwhile: nothing left to do.
                Ok(_) | Err(ServerError::Mvcc(cairn_mvcc::MvccError::LeaseNotFound)) => {}
                Err(ServerError::Stopped) => return,
                Err(error) => warn!(%error, "revoking an expired lease failed"),
            }
        }
    }
}
