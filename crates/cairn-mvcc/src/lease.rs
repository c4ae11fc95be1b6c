//! Leases: the table of granted leases, their attached keys, and the expiry queue.
//!
//! Time never comes from a clock here. Every grant and keep-alive carries the proposer's
//! wall-clock stamp (`InternalRequest.now_unix_ms`), and the lease's expiry is that stamp plus
//! its TTL, persisted in the `Lease` bucket. So replaying the log rebuilds the same expiries, and
//! a restart keeps each lease's remaining TTL. Only the node that runs the expiry loop (the
//! leader) asks [`LeaseTable::expired`] with its clock and proposes the revocations; a
//! revocation deletes every attached key in one revision.

use std::collections::{BTreeSet, HashMap};

use cairn_proto::cairnpb::LeaseRecord;
use cairn_proto::etcdserverpb::{
    LeaseGrantResponse, LeaseKeepAliveResponse, LeaseLeasesResponse, LeaseRevokeResponse,
    LeaseStatus, LeaseTimeToLiveResponse,
};

use crate::error::MvccError;
use crate::index::KeyRange;
use crate::limits::{LEASE_TTL_S_MAX, LEASE_TTL_S_MIN};
use crate::response::header;
use crate::store::KvStore;

/// One granted lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub id: i64,
    /// Granted TTL in seconds (after raising it to the minimum).
    pub ttl_s: i64,
    pub expiry_unix_ms: i64,
    /// Keys whose newest record carries this lease.
    pub keys: BTreeSet<Vec<u8>>,
}

/// Every lease, plus an ordered expiry queue. A `BTreeSet<(expiry, id)>` does the job of a
/// min-heap but can also remove an entry when a lease is renewed or revoked, so it never holds
/// stale entries and `expired` needs no mutation.
#[derive(Debug, Default)]
pub struct LeaseTable {
    leases: HashMap<i64, Lease>,
    expiry_queue: BTreeSet<(i64, i64)>,
}

impl LeaseTable {
    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }

    pub fn len(&self) -> usize {
        self.leases.len()
    }

    pub fn get(&self, id: i64) -> Option<&Lease> {
        self.leases.get(&id)
    }

    /// Ids of leases whose expiry is `<= now_unix_ms`, soonest first, at most `max`.
    pub fn expired(&self, now_unix_ms: i64, max: usize) -> Vec<i64> {
        self.expiry_queue
            .iter()
            .take_while(|(expiry, _)| *expiry <= now_unix_ms)
            .take(max)
            .map(|(_, id)| *id)
            .collect()
    }

    fn insert(&mut self, lease: Lease) {
        self.expiry_queue.insert((lease.expiry_unix_ms, lease.id));
        let previous = self.leases.insert(lease.id, lease);
        assert!(
            previous.is_none(),
            "lease: inserted an id that is already granted"
        );
    }

    fn set_expiry(&mut self, id: i64, expiry_unix_ms: i64) {
        let lease = self
            .leases
            .get_mut(&id)
            .expect("lease: renewing an unknown lease");
        self.expiry_queue.remove(&(lease.expiry_unix_ms, id));
        lease.expiry_unix_ms = expiry_unix_ms;
        self.expiry_queue.insert((expiry_unix_ms, id));
    }

    fn remove(&mut self, id: i64) -> Option<Lease> {
        let lease = self.leases.remove(&id)?;
        self.expiry_queue.remove(&(lease.expiry_unix_ms, id));
        Some(lease)
    }

    pub(crate) fn attach(&mut self, id: i64, key: &[u8]) {
        let lease = self.leases.get_mut(&id);
        let lease = lease.unwrap_or_else(|| panic!("lease: attaching to unknown lease {id}"));
        lease.keys.insert(key.to_vec());
    }

    pub(crate) fn detach(&mut self, id: i64, key: &[u8]) {
        if let Some(lease) = self.leases.get_mut(&id) {
            lease.keys.remove(key);
        }
    }

    pub(crate) fn restore_lease(&mut self, record: LeaseRecord) {
        self.insert(Lease {
            id: record.id,
            ttl_s: record.ttl,
            expiry_unix_ms: record.expiry_unix_ms,
            keys: BTreeSet::new(),
        });
    }

    pub(crate) fn restore_attachment(&mut self, id: i64, key: &[u8]) {
        self.attach(id, key);
    }

    /// The queue and the table hold exactly the same leases.
    pub fn validate(&self) {
        assert_eq!(
            self.leases.len(),
            self.expiry_queue.len(),
            "lease: queue and table differ"
        );
        for (expiry, id) in &self.expiry_queue {
            assert_eq!(self.leases.get(id).map(|l| l.expiry_unix_ms), Some(*expiry));
        }
    }
}

fn record(lease: &Lease) -> LeaseRecord {
    LeaseRecord {
        id: lease.id,
        ttl: lease.ttl_s,
        expiry_unix_ms: lease.expiry_unix_ms,
    }
}

/// Whole seconds left before `expiry`, as etcd reports them (truncated, never negative).
fn remaining_s(expiry_unix_ms: i64, now_unix_ms: i64) -> i64 {
    (expiry_unix_ms - now_unix_ms).max(0) / 1000
}

impl KvStore {
    pub fn leases(&self) -> &LeaseTable {
        &self.leases
    }

    pub(crate) fn lease_grant(
        &mut self,
        id: i64,
        ttl_s: i64,
        now_unix_ms: i64,
    ) -> Result<LeaseGrantResponse, MvccError> {
        // Clients may choose any non-zero id, negative ones included (etcd accepts them); 0
        // asks for a random id, which the proposer fills in.
        assert!(
            id != 0,
            "lease: the proposer picks the id of a grant (got {id})"
        );
        if ttl_s > LEASE_TTL_S_MAX {
            return Err(MvccError::LeaseTtlTooLarge);
        }
        if self.leases.get(id).is_some() {
            return Err(MvccError::LeaseExists);
        }
        let ttl_s = ttl_s.max(LEASE_TTL_S_MIN);
        let lease = Lease {
            id,
            ttl_s,
            expiry_unix_ms: now_unix_ms.saturating_add(ttl_s.saturating_mul(1000)),
            keys: BTreeSet::new(),
        };
        self.put_lease_record(&record(&lease));
        self.leases.insert(lease);
        Ok(LeaseGrantResponse {
            header: header(self.current_revision),
            id,
            ttl: ttl_s,
            error: String::new(),
        })
    }

    /// Revokes lease `id`, deleting its keys (in key order) in one revision.
    pub(crate) fn lease_revoke(&mut self, id: i64) -> Result<LeaseRevokeResponse, MvccError> {
        let lease = self.leases.remove(id).ok_or(MvccError::LeaseNotFound)?;
        self.delete_lease_record(id);
        let mut txn = self.write_txn();
        for key in &lease.keys {
            txn.delete_range(&KeyRange::Single(key.clone()));
        }
        let revision = txn.end();
        Ok(LeaseRevokeResponse {
            header: header(revision),
        })
    }

    pub(crate) fn lease_keep_alive(
        &mut self,
        id: i64,
        now_unix_ms: i64,
    ) -> Result<LeaseKeepAliveResponse, MvccError> {
        let lease = self.leases.get(id).ok_or(MvccError::LeaseNotFound)?;
        if lease.expiry_unix_ms <= now_unix_ms {
            // Expired but not yet revoked: etcd refuses to bring it back.
            return Err(MvccError::LeaseNotFound);
        }
        let ttl_s = lease.ttl_s;
        self.leases
            .set_expiry(id, now_unix_ms.saturating_add(ttl_s * 1000));
        let updated = record(self.leases.get(id).expect("renewed above"));
        self.put_lease_record(&updated);
        Ok(LeaseKeepAliveResponse {
            header: header(self.current_revision),
            id,
            ttl: ttl_s,
        })
    }

    /// `LeaseTimeToLive`: an unknown lease answers with TTL -1, as etcd.
    pub fn lease_time_to_live(
        &self,
        id: i64,
        keys: bool,
        now_unix_ms: i64,
    ) -> LeaseTimeToLiveResponse {
        let Some(lease) = self.leases.get(id) else {
            return LeaseTimeToLiveResponse {
                header: header(self.current_revision),
                id,
                ttl: -1,
                ..Default::default()
            };
        };
        LeaseTimeToLiveResponse {
            header: header(self.current_revision),
            id,
            ttl: remaining_s(lease.expiry_unix_ms, now_unix_ms),
            granted_ttl: lease.ttl_s,
            keys: if keys {
                lease.keys.iter().cloned().collect()
            } else {
                Vec::new()
            },
        }
    }

    /// `LeaseLeases`, ordered by id.
    pub fn lease_leases(&self) -> LeaseLeasesResponse {
        let mut ids: Vec<i64> = self.leases.leases.keys().copied().collect();
        ids.sort_unstable();
        LeaseLeasesResponse {
            header: header(self.current_revision),
            leases: ids.into_iter().map(|id| LeaseStatus { id }).collect(),
        }
    }
}
