//! `Replica`: one member of a Cairn cluster as the server uses it — propose a request and get
//! its apply result, wait for a linearizable read point, read the store, change membership.
//!
//! ```text
//!  propose ─ register waiter ─► leader here? ── raft.client_write ─────────┐
//!                                   └ no ──► Forward to the leader (peer) ─┤ committed
//!  result ◄── this member's state machine applies the entry, completes the waiter ◄┘
//! ```
//!
//! Reads: `read_index` asks the leader (itself or over the peer transport) for a read point
//! confirmed by a quorum, then waits until this member has applied it. Concurrent readers
//! share one round (see `read_index.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use cairn_mvcc::{ApplyResponse, KvStore, StoreConfig};
use cairn_proto::cairnpb::internal_request::Request;
use cairn_proto::cairnpb::{AuthInfo, InternalRequest};
use cairn_proto::raftpb;
use cairn_storage::metrics::HistogramSnapshot;
use cairn_storage::snapshot::SnapshotStore;
use cairn_storage::wal::{Wal, WalStats};
use openraft::SnapshotPolicy;
use prost::Message;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::batcher::ProposalBatcher;
use crate::election::{LeaderContact, Schedule};
use crate::error::{ConsensusError, OpenError};
use crate::log_store::LogStore;
use crate::metrics::{ConsensusMetrics, ConsensusMetricsSnapshot, PendingProposal};
use crate::network::{Network, PeerRequest, PeerResponse, Transport, TransportError};
use crate::peer::{change_membership, MembershipError, PeerHandler};
use crate::read_index::ReadBatcher;
use crate::state_machine::{Replicated, StateMachine};
use crate::types::{Member, MemberId, Raft, RaftMetrics};

/// How a replica runs.
#[derive(Clone, Debug)]
pub struct ReplicaConfig {
    pub member_id: MemberId,
    /// This member's directory (`<data-dir>/member`): `wal/`, `hard_state`, `snap/`.
    pub member_dir: PathBuf,
    pub store: StoreConfig,
    /// Members of a new cluster (`--initial-cluster` with `--initial-cluster-state new`): the
    /// log is initialized with them if it is empty. Empty when joining an existing cluster.
    pub initial_members: BTreeMap<MemberId, Member>,
    pub heartbeat_ms: u64,
    pub election_timeout_ms: u64,
    /// Entries between snapshots (`--snapshot-count`).
    pub snapshot_count: u64,
    /// How long a proposal or a read may wait for the cluster.
    pub request_timeout: Duration,
    /// Do disk I/O on the calling task instead of the WAL's writer thread and tokio's
    /// blocking pool. Only for simulation under a paused clock, which jumps to the next timer
    /// whenever the runtime waits on another thread; it costs group commit.
    pub synchronous_io: bool,
    /// Bytes of durable raft entries kept in memory; older ones are read back from the WAL
    /// (`limits::LOG_CACHE_BYTES_MAX` outside tests).
    pub log_cache_bytes: usize,
}

/// Where this member stands, for Status and response headers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplicaStatus {
    pub leader: Option<MemberId>,
    pub term: u64,
    pub last_log_index: u64,
    pub applied_index: u64,
    pub is_learner: bool,
}

/// A change of the cluster's membership (etcd's MemberAdd/Remove/Update/Promote).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MembershipChange {
    AddLearner(MemberId, Member),
    /// Added as a learner and made a voter at once (etcd's MemberAdd without `--learner`).
    AddVoter(MemberId, Member),
    Promote(MemberId),
    Remove(MemberId),
    Update(MemberId, Member),
}

impl MembershipChange {
    fn to_pb(&self) -> raftpb::MembershipChange {
        use raftpb::membership_change::Change;
        let member = |id: &MemberId, member: &Member| raftpb::Member {
            id: *id,
            name: member.name.clone(),
            peer_urls: member.peer_urls.clone(),
            client_urls: member.client_urls.clone(),
        };
        let change = match self {
            MembershipChange::AddLearner(id, m) => Change::AddLearner(member(id, m)),
            MembershipChange::AddVoter(id, m) => Change::AddVoter(member(id, m)),
            MembershipChange::Promote(id) => Change::Promote(*id),
            MembershipChange::Remove(id) => Change::Remove(*id),
            MembershipChange::Update(id, m) => Change::Update(member(id, m)),
        };
        raftpb::MembershipChange {
            change: Some(change),
        }
    }
}

/// A member of the cluster listed by MemberList.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberInfo {
    pub id: MemberId,
    pub member: Member,
    pub is_learner: bool,
}

/// A running replica; cheap to clone.
#[derive(Clone)]
pub struct Replica {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) id: MemberId,
    pub(crate) raft: Raft,
    pub(crate) shared: Arc<Replicated>,
    transport: Arc<dyn Transport>,
    reads: ReadBatcher,
    pub(crate) proposals: Arc<ProposalBatcher>,
    /// The log store's WAL (openraft owns the store): closed at shutdown, read for metrics.
    wal: Wal,
    metrics: Arc<ConsensusMetrics>,
    pub(crate) request_timeout: Duration,
    election_timeout_ms: u64,
}

impl Replica {
    /// Opens the member's durable state and starts its raft. Returns the replica and the
    /// handler its peer listener must serve.
    pub async fn open(
        config: ReplicaConfig,
        transport: Arc<dyn Transport>,
    ) -> Result<(Replica, PeerHandler), OpenError> {
        let log_store = LogStore::open(
            &config.member_dir,
            config.synchronous_io,
            config.log_cache_bytes,
        )?;
        let vote_term = log_store.vote_term();
        let wal = log_store.wal();
        let metrics = Arc::new(ConsensusMetrics::new(log_store.committed_index()));
        let snapshots = SnapshotStore::open(&config.member_dir.join("snap"))?;
        let first_proposal_id = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_micros() as u64;
        let state_machine = StateMachine::open(
            snapshots,
            config.store.clone(),
            config.member_id,
            first_proposal_id,
            config.synchronous_io,
            metrics.clone(),
        )?;
        let shared = state_machine.shared();
        let raft_config = openraft::Config {
            cluster_name: "cairn".to_string(),
            heartbeat_interval: config.heartbeat_ms,
            // openraft 0.9 makes a follower of a known leader wait its leader lease
            // (`election_timeout_max`) *plus* its own random timeout (drawn once, in
            // [min, max]) without a heartbeat before it campaigns; voters refuse votes during
            // their lease. With max = T/2 and min = T/4 a follower campaigns 0.75–1.0 T after
            // the leader fell silent and the first campaign wins, where etcd's followers wait
            // a random [T, 2T). (Max = T made it 1.5–2.0 T: slower than etcd.) `election`
            // makes the first campaign in the same range, but with a fresh draw each time and
            // not on openraft's tick, so members started together do not collide.
            election_timeout_min: config.election_timeout_ms / 4,
            election_timeout_max: config.election_timeout_ms / 2,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_count),
            // Entries kept behind a snapshot for followers a little behind; each may carry a
            // batch of requests, so few.
            max_in_snapshot_log_to_keep: config.snapshot_count.min(1_000),
            max_payload_entries: crate::limits::APPEND_ENTRIES_MAX,
            ..Default::default()
        }
        .validate()
        .map_err(|error| OpenError::Raft(error.to_string()))?;
        let schedule = Schedule {
            lease: Duration::from_millis(raft_config.election_timeout_max),
            election_timeout: Duration::from_millis(config.election_timeout_ms),
        };
        let raft = Raft::new(
            config.member_id,
            Arc::new(raft_config),
            Network::new(transport.clone(), shared.removals.clone()),
            log_store,
            state_machine,
        )
        .await
        .map_err(|error| OpenError::Raft(error.to_string()))?;
        let initialized = raft
            .is_initialized()
            .await
            .map_err(|error| OpenError::Raft(error.to_string()))?;
        if initialized {
            // Pools live in memory: what this member witnessed before it stopped is gone.
            shared.native.restarted_in(vote_term);
        }
        if !initialized && !config.initial_members.is_empty() {
            bootstrap(&raft, &config);
        } else if sole_voter(&raft, config.member_id) {
            // Nobody else can lead: campaign now instead of after an election timeout, so a
            // restarted single member serves at once (as etcd's does).
            let _ = raft.trigger().elect().await;
        }
        tokio::spawn(crate::metrics::watch_leader(raft.clone(), metrics.clone()));
        tokio::spawn(crate::snapshot_trigger::snapshot_every(
            raft.clone(),
            shared.clone(),
            config.snapshot_count,
        ));
        tokio::spawn(crate::joint_config::finish_joint_configs(
            raft.clone(),
            config.member_id,
            Duration::from_millis(2 * config.election_timeout_ms),
        ));
        let proposals = Arc::new(ProposalBatcher::start(raft.clone()));
        let contact = Arc::new(LeaderContact::default());
        tokio::spawn(crate::election::campaign_when_silent(
            raft.clone(),
            config.member_id,
            contact.clone(),
            schedule,
        ));
        let handler = PeerHandler::new(raft.clone(), proposals.clone(), shared.clone(), contact);
        let reads = ReadBatcher::start(raft.clone(), transport.clone(), config.member_id);
        let replica = Replica {
            inner: Arc::new(Inner {
                id: config.member_id,
                raft,
                shared,
                transport,
                reads,
                proposals,
                wal,
                metrics,
                request_timeout: config.request_timeout,
                election_timeout_ms: config.election_timeout_ms,
            }),
        };
        tokio::spawn(crate::native::recovery::watch_leadership(replica.clone()));
        Ok((replica, handler))
    }

    pub fn member_id(&self) -> MemberId {
        self.inner.id
    }

    /// Read access to the state. Hold it only for in-memory work.
    pub fn store(&self) -> std::sync::RwLockReadGuard<'_, KvStore> {
        self.inner.shared.store()
    }

    /// The newest applied revision.
    pub fn revisions(&self) -> watch::Receiver<i64> {
        self.inner.shared.revisions()
    }

    pub fn metrics(&self) -> watch::Receiver<RaftMetrics> {
        self.inner.raft.metrics()
    }

    pub fn wal_stats(&self) -> WalStats {
        self.inner.wal.stats()
    }

    /// Durations of the WAL's group-commit fsyncs.
    pub fn wal_fsync_durations(&self) -> HistogramSnapshot {
        self.inner.wal.fsync_durations()
    }

    /// Counters of proposals, commits, applies and leader changes.
    pub fn consensus_metrics(&self) -> ConsensusMetricsSnapshot {
        self.inner.metrics.snapshot()
    }

    pub fn is_leader(&self) -> bool {
        self.inner.raft.metrics().borrow().current_leader == Some(self.inner.id)
    }

    pub fn status(&self) -> ReplicaStatus {
        let metrics = self.inner.raft.metrics().borrow().clone();
        let is_learner = metrics
            .membership_config
            .membership()
            .learner_ids()
            .any(|id| id == self.inner.id);
        ReplicaStatus {
            leader: metrics.current_leader,
            term: metrics.current_term,
            last_log_index: metrics.last_log_index.unwrap_or(0),
            applied_index: metrics.last_applied.map_or(0, |log_id| log_id.index),
            is_learner,
        }
    }

    /// The members in the last applied membership, voters and learners.
    pub fn members(&self) -> Vec<MemberInfo> {
        let metrics = self.inner.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let learners: BTreeSet<MemberId> = membership.learner_ids().collect();
        membership
            .nodes()
            .map(|(id, member)| MemberInfo {
                id: *id,
                member: member.clone(),
                is_learner: learners.contains(id),
            })
            .collect()
    }

    /// Replicates `request` and returns its apply result, computed by this member's state
    /// machine at the revision every member gives it. `auth` names the client the state
    /// machine checks permissions for (`None`: the node's own request). `max_bytes` bounds the
    /// encoded entry.
    pub async fn propose(
        &self,
        request: Request,
        auth: Option<AuthInfo>,
        now_unix_ms: i64,
        max_bytes: usize,
    ) -> Result<ApplyResponse, ConsensusError> {
        let _pending = PendingProposal::start(&self.inner.metrics);
        let outcome = self
            .propose_pending(request, auth, now_unix_ms, max_bytes)
            .await;
        if let Err(error) = &outcome {
            if !matches!(error, ConsensusError::Mvcc(_)) {
                self.inner
                    .metrics
                    .proposals_failed
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        outcome
    }

    /// Like `propose`, but only if this member leads: never forwarded (a CURP-HO
    /// `RecoveryDone` belongs to the term of the leader that appends it).
    pub(crate) async fn propose_as_leader(
        &self,
        request: Request,
        now_unix_ms: i64,
    ) -> Result<ApplyResponse, ConsensusError> {
        self.propose_via(request, None, now_unix_ms, usize::MAX, Route::HereOnly)
            .await
    }

    async fn propose_pending(
        &self,
        request: Request,
        auth: Option<AuthInfo>,
        now_unix_ms: i64,
        max_bytes: usize,
    ) -> Result<ApplyResponse, ConsensusError> {
        self.propose_via(request, auth, now_unix_ms, max_bytes, Route::ToLeader)
            .await
    }

    async fn propose_via(
        &self,
        request: Request,
        auth: Option<AuthInfo>,
        now_unix_ms: i64,
        max_bytes: usize,
        route: Route,
    ) -> Result<ApplyResponse, ConsensusError> {
        let waits = &self.inner.shared.waits;
        let (proposal_id, result) = waits.register();
        let cancel = CancelOnDrop {
            replica: self,
            proposal_id,
        };
        let entry = InternalRequest {
            now_unix_ms,
            origin_member: self.inner.id,
            proposal_id,
            auth,
            request: Some(request),
        };
        let bytes = Bytes::from(entry.encode_to_vec());
        if bytes.len() > max_bytes {
            return Err(cairn_mvcc::MvccError::RequestTooLarge.into());
        }
        let deadline = tokio::time::Instant::now() + self.inner.request_timeout;
        let submitted = async {
            match route {
                Route::ToLeader => self.submit(bytes).await,
                Route::HereOnly => self.inner.proposals.submit(bytes).await,
            }
        };
        tokio::time::timeout_at(deadline, submitted)
            .await
            .map_err(|_| ConsensusError::Timeout)??;
        let applied = tokio::time::timeout_at(deadline, result)
            .await
            .map_err(|_| ConsensusError::Timeout)?;
        drop(cancel);
        match applied {
            Ok(result) => result.map_err(ConsensusError::from),
            // The registry dropped the waiter: the member is stopping.
            Err(_) => Err(ConsensusError::Stopped),
        }
    }

    /// Gets the entry committed, here if this member leads, else through the leader.
    async fn submit(&self, bytes: Bytes) -> Result<(), ConsensusError> {
        let mut leader = self.leader().await?;
        // A leader hint can be stale once or twice during an election; then give up.
        for _ in 0..3 {
            if leader == self.inner.id {
                // A failure may come after the entry was appended (leadership lost before
                // commit) and a later leader may still commit it: proposing it again would
                // apply it twice, so the batcher reports the outcome unknown instead.
                return self.inner.proposals.submit(bytes).await;
            }
            let request = PeerRequest::Forward(raftpb::ForwardRequest {
                request: bytes.clone(),
            });
            let hint = match self.call_member(leader, request).await {
                Ok(_) => return Ok(()),
                // The target does not lead: nothing was appended, retry at its hint.
                Err(TransportError::Refused(refusal)) if refusal.leader_id != 0 => {
                    refusal.leader_id
                }
                // It led and failed: the entry may still commit (see above).
                Err(TransportError::Refused(_)) => return Err(ConsensusError::LeaderChanged),
                Err(error) => return Err(unreachable(leader, error)),
            };
            leader = if hint != leader {
                hint
            } else {
                self.leader().await?
            };
        }
        Err(ConsensusError::LeaderChanged)
    }

    /// Waits until this member has applied everything committed before the call: a read of
    /// the store after this is linearizable.
    pub async fn read_index(&self) -> Result<(), ConsensusError> {
        let deadline = tokio::time::Instant::now() + self.inner.request_timeout;
        let index = tokio::time::timeout_at(deadline, self.inner.reads.read_index())
            .await
            .map_err(|_| ConsensusError::Timeout)??;
        let mut applied = self.inner.shared.applied_index();
        tracing::debug!(
            read_index = index,
            applied = *applied.borrow(),
            "linearizable read"
        );
        tokio::time::timeout_at(deadline, applied.wait_for(|applied| *applied >= index))
            .await
            .map_err(|_| ConsensusError::Timeout)?
            .map_err(|_| ConsensusError::Stopped)?;
        Ok(())
    }

    /// The current leader, waiting up to one request timeout for an election to end.
    async fn leader(&self) -> Result<MemberId, ConsensusError> {
        let mut metrics = self.inner.raft.metrics();
        let waited = tokio::time::timeout(
            self.inner.request_timeout,
            metrics.wait_for(|metrics| metrics.current_leader.is_some()),
        )
        .await;
        match waited {
            Ok(Ok(metrics)) => metrics.current_leader.ok_or(ConsensusError::NoLeader),
            Ok(Err(_)) => Err(ConsensusError::Stopped),
            Err(_) => Err(ConsensusError::NoLeader),
        }
    }

    pub(crate) async fn call_member(
        &self,
        leader: MemberId,
        request: PeerRequest,
    ) -> Result<PeerResponse, TransportError> {
        let member = self
            .members()
            .into_iter()
            .find(|info| info.id == leader)
            .map(|info| info.member)
            .ok_or_else(|| {
                TransportError::Unreachable(format!("leader {leader:x} is not a member"))
            })?;
        self.inner.transport.call(leader, &member, request).await
    }

    /// Hands this leader's leadership to voter `target` (etcd's MoveLeader, Raft's leadership
    /// transfer): waits until `target` holds the whole log, stops sending heartbeats (so the
    /// other members' leader leases run out) and not campaigning itself, and tells `target` to
    /// campaign until it leads. Writes arriving meanwhile keep replicating, and keep the leases
    /// alive: under a steady write load the transfer may time out, like etcd's.
    pub async fn transfer_leadership(&self, target: MemberId) -> Result<(), ConsensusError> {
        let raft = &self.inner.raft;
        if !self.is_leader() {
            return Err(ConsensusError::NotLeader);
        }
        if target == self.inner.id {
            return Ok(());
        }
        let is_voter = |metrics: &RaftMetrics| {
            let membership = metrics.membership_config.membership();
            membership.voter_ids().any(|voter| voter == target)
        };
        if !is_voter(&raft.metrics().borrow()) {
            return Err(ConsensusError::BadTransferee);
        }
        let deadline = tokio::time::Instant::now() + self.inner.request_timeout;
        raft.wait(Some(self.inner.request_timeout))
            .metrics(
                |metrics| {
                    let last = metrics.last_log_index.unwrap_or(0);
                    let matched = metrics.replication.as_ref().and_then(|progress| {
                        progress.get(&target).copied().flatten().map(|id| id.index)
                    });
                    matched >= Some(last)
                },
                "the transferee holds the whole log",
            )
            .await
            .map_err(|_| ConsensusError::Timeout)?;
        raft.runtime_config().heartbeat(false);
        raft.runtime_config().elect(false);
        let handed_over = async {
            loop {
                // Refused while the others' leases last: ask again until it takes.
                let request = PeerRequest::TimeoutNow(raftpb::TimeoutNowRequest {});
                let _ = self.call_member(target, request).await;
                let mut metrics = raft.metrics();
                let led_by_target = metrics.wait_for(|m| m.current_leader == Some(target));
                let retry = Duration::from_millis(self.inner.election_timeout_ms / 2);
                if tokio::time::timeout(retry, led_by_target).await.is_ok() {
                    return;
                }
            }
        };
        let outcome = tokio::time::timeout_at(deadline, handed_over).await;
        raft.runtime_config().heartbeat(true);
        raft.runtime_config().elect(true);
        outcome.map_err(|_| ConsensusError::Timeout)
    }

    /// Runs a membership change on the leader (here, or forwarded to it).
    pub async fn change_membership(&self, change: MembershipChange) -> Result<(), ConsensusError> {
        // A leader that loses its leadership in the middle of a change (a leader removing
        // itself while cut off, say) may never answer: like etcd, the caller gets "request
        // timed out" instead of waiting forever.
        tokio::time::timeout(
            self.inner.request_timeout,
            self.change_through_leader(change),
        )
        .await
        .map_err(|_| ConsensusError::Timeout)?
    }

    async fn change_through_leader(&self, change: MembershipChange) -> Result<(), ConsensusError> {
        let change = change.to_pb();
        let mut leader = self.leader().await?;
        for _ in 0..3 {
            let hint = if leader == self.inner.id {
                match change_membership(&self.inner.raft, change.clone()).await {
                    Ok(()) => return Ok(()),
                    Err(MembershipError::NotLeader(hint)) => hint,
                    Err(MembershipError::Refused(reason)) => {
                        return Err(ConsensusError::Membership(reason))
                    }
                    Err(MembershipError::Stopped) => return Err(ConsensusError::Stopped),
                }
            } else {
                let request = PeerRequest::ChangeMembership(change.clone());
                match self.call_member(leader, request).await {
                    Ok(_) => return Ok(()),
                    Err(TransportError::Refused(refusal)) if refusal.leader_id != 0 => {
                        Some(refusal.leader_id)
                    }
                    Err(TransportError::Refused(refusal)) => {
                        return Err(ConsensusError::Membership(refusal.message))
                    }
                    Err(error) => return Err(unreachable(leader, error)),
                }
            };
            leader = match hint {
                Some(hint) if hint != leader => hint,
                _ => self.leader().await?,
            };
        }
        Err(ConsensusError::LeaderChanged)
    }

    /// Resolves once this member has been removed from the cluster: a membership that listed
    /// it was followed by an applied one that does not, or a peer refused it as removed (it
    /// missed the entry that removed it). Never resolves for a member still waiting to be
    /// added (its membership is empty until the leader reaches it) or once raft has stopped.
    pub async fn removed(&self) {
        tokio::select! {
            () = self.removal_applied() => {}
            () = self.inner.shared.removals.told() => {}
        }
    }

    /// Watches the server metrics (they change with the membership, not with every append and
    /// apply), and the applied index only while a membership without this member is pending.
    async fn removal_applied(&self) {
        let mut server = self.inner.raft.server_metrics();
        let mut was_member = false;
        loop {
            let config = server.borrow_and_update().membership_config.clone();
            let listed = config
                .membership()
                .nodes()
                .any(|(id, _)| *id == self.inner.id);
            if listed {
                was_member = true;
            } else if was_member {
                // Only an applied (so committed) membership counts for a removal: an appended
                // one may still be truncated by the next leader.
                let mut data = self.inner.raft.data_metrics();
                let applied = data.wait_for(|data| config.log_id() <= &data.last_applied);
                tokio::select! {
                    applied = applied => match applied {
                        Ok(_) => return,
                        Err(_) => return std::future::pending().await,
                    },
                    changed = server.changed() => match changed {
                        Ok(()) => continue,
                        Err(_) => return std::future::pending().await,
                    },
                }
            }
            if server.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    /// Makes this member's record carry `member` (its name and client URLs), as etcd members
    /// publish their attributes once they start. Retries until it lands or the member stops.
    pub async fn publish(&self, member: Member) {
        loop {
            if !self.is_running() {
                return;
            }
            let current = self
                .members()
                .into_iter()
                .find(|info| info.id == self.inner.id);
            let Some(current) = current else {
                // A joining member learns the membership that lists it from its leader.
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            if current.member == member {
                return;
            }
            match self
                .change_membership(MembershipChange::Update(self.inner.id, member.clone()))
                .await
            {
                Ok(()) => return,
                Err(ConsensusError::Stopped) => return,
                Err(error) => {
                    tracing::debug!(%error, "publishing this member's attributes; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    /// Whether this member is stopping or stopped.
    pub fn is_running(&self) -> bool {
        self.inner.raft.metrics().borrow().running_state.is_ok()
    }

    /// Graceful stop: snapshot what was applied (a fast next start), stop raft, close the WAL.
    pub async fn shutdown(&self) {
        let raft = &self.inner.raft;
        let applied = raft.metrics().borrow().last_applied;
        let snapshot = raft.metrics().borrow().snapshot;
        if applied.is_some() && applied != snapshot && raft.trigger().snapshot().await.is_ok() {
            let waited = raft
                .wait(Some(Duration::from_secs(10)))
                .snapshot(applied.unwrap_or_default(), "final snapshot")
                .await;
            if let Err(error) = waited {
                warn!(%error, "final snapshot did not finish");
            }
        }
        self.halt().await;
    }

    /// Stops raft and closes the WAL without a final snapshot: the next start replays the log
    /// from the last snapshot, as after a crash.
    pub async fn halt(&self) {
        if let Err(error) = self.inner.raft.shutdown().await {
            warn!(%error, "raft did not stop cleanly");
        }
        if let Err(error) = self.inner.wal.close().await {
            warn!(%error, "closing the WAL failed");
        }
    }
}

/// Whether `member` is the only voter of the membership this replica knows.
fn sole_voter(raft: &Raft, member: MemberId) -> bool {
    let metrics = raft.metrics().borrow().clone();
    let voters: Vec<MemberId> = metrics.membership_config.membership().voter_ids().collect();
    voters == [member]
}

/// Initializes a new cluster's log with its initial members. Members that all initialize at
/// once all campaign at once and split the vote, then keep refusing each other for a leader
/// lease; so the members take turns: the one with the lowest id initializes at once, the
/// `n`-th one only if, `n` election timeouts later, nobody has brought it into the cluster
/// (its predecessors may not have started). Any majority still forms a cluster.
fn bootstrap(raft: &Raft, config: &ReplicaConfig) {
    let rank = config
        .initial_members
        .keys()
        .position(|id| *id == config.member_id)
        .unwrap_or(0) as u64;
    let delay = Duration::from_millis(rank * 2 * config.election_timeout_ms);
    let (raft, members) = (raft.clone(), config.initial_members.clone());
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        if raft.is_initialized().await.unwrap_or(true) {
            return;
        }
        info!(members = members.len(), rank, "initializing a new cluster");
        // Someone else's membership may arrive meanwhile; openraft then refuses, harmlessly.
        if let Err(error) = raft.initialize(members).await {
            tracing::debug!(%error, "initialization refused");
        }
    });
}

/// Where a proposal may be appended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    /// Here if this member leads, else forwarded to the leader.
    ToLeader,
    /// Here only; fails if this member does not lead.
    HereOnly,
}

/// Cancels a proposal's waiter if the proposing future ends early (deadline, dropped client).
struct CancelOnDrop<'a> {
    replica: &'a Replica,
    proposal_id: u64,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        self.replica.inner.shared.waits.cancel(self.proposal_id);
    }
}

fn unreachable(leader: MemberId, error: TransportError) -> ConsensusError {
    match error {
        TransportError::Timeout => ConsensusError::Timeout,
        error => ConsensusError::Unreachable {
            leader,
            reason: error.to_string(),
        },
    }
}
