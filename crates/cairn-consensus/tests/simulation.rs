//! Deterministic-fault simulation: whole clusters (3 and 5 members) in one process over the
//! simulated network, random client workloads (puts, deletes, txns with compares, reads, lease
//! grants, keep-alives, revokes and puts attached to leases) under random partitions, message
//! loss, delay, duplication, crashes, restarts and membership changes; every run's history is
//! checked for linearizability (`cairn-check`) and every member must end with the same state.
//!
//! Leases expire as in the server (`cairn-server/src/lease_expiry.rs`): an expiry driver asks
//! whichever member leads for the leases whose replicated expiry stamp has passed (stamps are
//! the proposers' clocks carried in the entries: virtual time here) and proposes their revokes.
//! The driver is one more client of the history: when an expiry happens is not a client's to
//! predict, so its revokes are recorded like any client's, and the checker holds the store to
//! them (every attached key gone at the revoke's revision, keep-alives refused afterwards).
//!
//! Membership changes (half the seeds): a new member starts with an empty log and no initial
//! members, is added as a learner, promoted to voter, then an old voter (maybe the leader) is
//! removed and stopped, so the cluster never has fewer voters than it started with. A change
//! openraft refuses (another in progress, no leader) is retried at a later tick. openraft 0.9
//! proposes the second half of a joint configuration only from the call that proposed the
//! first, so a leader change or a caller giving up leaves the cluster joint; the replica's
//! leader finishes such a configuration itself (`joint_config`), and the settling after
//! healing waits for that, so a regression there shows as a liveness failure here.
//!
//! One `u64` seed derives the cluster size, the fault rates, the workload and the nemesis
//! schedule. A failing seed prints the command that replays it:
//! `CAIRN_SIM_SEED=<seed> cargo test -p cairn-consensus --test simulation`.
//! `CAIRN_SIM_SEEDS=<n>` runs more seeds. Time is virtual (`tokio::time::pause`); the WAL's
//! writer thread does real (tmpfs) I/O, so a replay repeats the fault schedule and workload
//! exactly but not necessarily every interleaving.
//!
//! Invariants, each with its source:
//! - election safety: at most one leader per term (Raft §5.2), checked every nemesis tick;
//! - linearizability of the client history with etcd's revision rules (etcd's guarantee;
//!   `cairn-check`);
//! - state-machine safety: after healing, every member applied the same entries and holds the
//!   same key-value history (`HashKV` equal at the same revision) (Raft §5.4.3);
//! - liveness: once healed, the cluster takes a write through every member within a budget.
//!
//! Liveness stalls, and their cause: a healed cluster could stay leaderless for the whole
//! budget (1 to 5 seeds in 2,000, by 2026-11-24). Logs of a stalled seed showed every member
//! with the longest log campaigning at the same virtual instant, term after term (four of six
//! voters, 640 terms, every one a four-way split): with no leader, openraft 0.9 re-elects
//! after the member's election timeout, drawn once per process and checked on its tick, so
//! candidates whose draws fell in the same tick collided forever. `election.rs` now campaigns
//! again after a split vote on its own schedule, a fresh draw each time, ahead of openraft's
//! timer: no stall in 12,000 seeds since. openraft draws its timeouts from
//! `AsyncRuntime::thread_rng()`, not from the seed, so a stalled seed does not replay exactly
//! (the stalled seed above stalled in about a third of its runs).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use cairn_check::{Call, Outcome, Recorder};
use cairn_consensus::network::sim::Faults;
use cairn_consensus::{ConsensusError, MembershipChange, Replica};
use cairn_mvcc::error::MvccError;
use cairn_mvcc::ApplyResponse;
use cairn_proto::cairnpb::internal_request::Request;
use cairn_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use cairn_proto::etcdserverpb::request_op::Request as Op;
use cairn_proto::etcdserverpb::{
    Compare, DeleteRangeRequest, LeaseGrantRequest, LeaseKeepAliveRequest, LeaseRevokeRequest,
    PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use common::{member, seeds, SimCluster};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

const KEYS: u64 = 4;
const CLIENTS: u64 = 4;
/// The expiry driver's client id in the history.
const EXPIRY_CLIENT: u64 = CLIENTS;
/// Lease ids the clients use (explicit, so the history names them). Only lease 1 gets
/// keep-alives; the others live one TTL unless a client revokes them first.
const LEASES: i64 = 3;
/// The shortest TTL the store grants (`LEASE_TTL_S_MIN`): leases expire within the workload.
const LEASE_TTL_S: i64 = cairn_mvcc::limits::LEASE_TTL_S_MIN;
/// How often the expiry driver looks, as the server's loop does.
const EXPIRY_TICK: Duration = Duration::from_millis(250);
/// Revokes the expiry driver proposes per tick at most.
const EXPIRY_REVOKES_MAX: usize = 16;
/// How long the nemesis waits on one membership change before trying again at a later tick
/// (the change may still complete; the next attempt starts from what the members report).
const MEMBERSHIP_CHANGE_TIMEOUT: Duration = Duration::from_secs(3);
const WORKLOAD: Duration = Duration::from_secs(6);
/// Virtual time a healed cluster gets to elect a leader and catch up. openraft draws its
/// election timeouts from an unseeded RNG, so a rare seed sees a long run of split votes.
const CONVERGE_BUDGET: Duration = Duration::from_secs(90);

/// Prefix of a run's failure that is a liveness stall, not a safety violation.
const LIVENESS: &str = "liveness: ";

/// What one seed decides.
#[derive(Debug)]
struct Plan {
    size: u64,
    faults: Faults,
    nemesis_ms: (u64, u64),
    /// Whether the nemesis replaces a voter by a new member during the workload.
    membership: bool,
}

fn plan(seed: u64) -> Plan {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    Plan {
        size: if rng.gen_bool(0.7) { 3 } else { 5 },
        faults: Faults {
            drop_per_mille: rng.gen_range(0..60),
            duplicate_per_mille: rng.gen_range(0..30),
            delay_ms_max: rng.gen_range(0..25),
        },
        nemesis_ms: (200, rng.gen_range(400..1200)),
        membership: rng.gen_bool(0.5),
    }
}

/// What one seed exercised, beyond the checker's report.
#[derive(Debug, Default)]
struct Exercised {
    /// Acknowledged revokes by the expiry driver that found their lease.
    lease_expiries: usize,
    /// Membership changes that completed (add learner, promote, remove).
    membership_changes: usize,
}

fn now_ns(start: Instant) -> u64 {
    start.elapsed().as_nanos() as u64
}

/// The proposers' clock, carried in the entries (lease expiry stamps): virtual time.
fn now_ms(start: Instant) -> i64 {
    start.elapsed().as_millis() as i64
}

/// The members clients and the expiry driver may talk to, shared with the nemesis.
type Members = Arc<std::sync::Mutex<BTreeMap<u64, Replica>>>;

fn key(n: u64) -> Vec<u8> {
    format!("k{n}").into_bytes()
}

/// One client: random operations against random live members, recorded.
async fn client(id: u64, seed: u64, members: Members, recorder: Recorder, start: Instant) {
    let mut rng = StdRng::seed_from_u64(seed.wrapping_mul(31).wrapping_add(id));
    let mut written = 0u64;
    while start.elapsed() < WORKLOAD {
        let target = {
            let members = members.lock().expect("members");
            let ids: Vec<u64> = members.keys().copied().collect();
            if ids.is_empty() {
                None
            } else {
                let pick = ids[rng.gen_range(0..ids.len())];
                members.get(&pick).cloned()
            }
        };
        let Some(replica) = target else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let k = key(rng.gen_range(0..KEYS));
        written += 1;
        let value = format!("c{id}-{written}").into_bytes();
        let lease = rng.gen_range(1..=LEASES);
        let call = match rng.gen_range(0..100) {
            0..=29 => Call::Put { key: k, value },
            30..=54 => Call::Get { key: k },
            55..=59 => Call::Delete { key: k },
            60..=71 => Call::LeasePut {
                key: k,
                value,
                lease,
            },
            72..=79 => Call::LeaseKeepAlive { lease: 1 },
            80..=87 => Call::LeaseGrant { lease },
            88..=89 => Call::LeaseRevoke { lease },
            _ => {
                let expected = (rng.gen_bool(0.5)).then(|| {
                    format!(
                        "c{}-{}",
                        rng.gen_range(0..CLIENTS),
                        rng.gen_range(1..written.max(2))
                    )
                    .into_bytes()
                });
                Call::CompareAndPut {
                    key: k,
                    expected,
                    value,
                }
            }
        };
        let token = recorder.invoke(id, call.clone(), now_ns(start));
        let outcome = execute(&replica, &call, now_ms(start)).await;
        tracing::info!(client = id, member = replica.member_id(), %call, %outcome, at_ns = now_ns(start), "op");
        recorder.complete(token, outcome, now_ns(start));
        tokio::time::sleep(Duration::from_millis(rng.gen_range(1..20))).await;
    }
}

async fn execute(replica: &Replica, call: &Call, now_ms: i64) -> Outcome {
    match call {
        Call::Get { key } => {
            if replica.read_index().await.is_err() {
                return Outcome::Unknown;
            }
            let request = RangeRequest {
                key: key.clone(),
                ..Default::default()
            };
            let Ok(response) = replica.store().range(&request) else {
                return Outcome::Unknown;
            };
            let revision = response.header.map_or(0, |h| h.revision);
            match response.kvs.first() {
                Some(kv) => Outcome::Get {
                    revision,
                    value: Some(kv.value.clone()),
                    mod_revision: kv.mod_revision,
                },
                None => Outcome::Get {
                    revision,
                    value: None,
                    mod_revision: 0,
                },
            }
        }
        Call::Put { key, value } => {
            let request = Request::Put(PutRequest {
                key: key.clone(),
                value: value.clone(),
                ..Default::default()
            });
            match propose(replica, request, now_ms).await {
                Ok(ApplyResponse::Put(put)) => Outcome::Put {
                    revision: put.header.map_or(0, |h| h.revision),
                },
                _ => Outcome::Unknown,
            }
        }
        Call::Delete { key } => {
            let request = Request::DeleteRange(DeleteRangeRequest {
                key: key.clone(),
                ..Default::default()
            });
            match propose(replica, request, now_ms).await {
                Ok(ApplyResponse::DeleteRange(deleted)) => Outcome::Delete {
                    revision: deleted.header.map_or(0, |h| h.revision),
                    deleted: deleted.deleted,
                },
                _ => Outcome::Unknown,
            }
        }
        Call::CompareAndPut {
            key,
            expected,
            value,
        } => {
            let compare = match expected {
                Some(expected) => Compare {
                    result: CompareResult::Equal as i32,
                    target: CompareTarget::Value as i32,
                    key: key.clone(),
                    target_union: Some(TargetUnion::Value(expected.clone())),
                    ..Default::default()
                },
                None => Compare {
                    result: CompareResult::Equal as i32,
                    target: CompareTarget::Create as i32,
                    key: key.clone(),
                    target_union: Some(TargetUnion::CreateRevision(0)),
                    ..Default::default()
                },
            };
            let put = RequestOp {
                request: Some(Op::RequestPut(PutRequest {
                    key: key.clone(),
                    value: value.clone(),
                    ..Default::default()
                })),
            };
            let request = Request::Txn(TxnRequest {
                compare: vec![compare],
                success: vec![put],
                failure: vec![],
            });
            match propose(replica, request, now_ms).await {
                Ok(ApplyResponse::Txn(txn)) => Outcome::CompareAndPut {
                    revision: txn.header.map_or(0, |h| h.revision),
                    succeeded: txn.succeeded,
                },
                _ => Outcome::Unknown,
            }
        }
        Call::LeasePut { key, value, lease } => {
            let request = Request::Put(PutRequest {
                key: key.clone(),
                value: value.clone(),
                lease: *lease,
                ..Default::default()
            });
            lease_outcome(propose(replica, request, now_ms).await)
        }
        Call::LeaseGrant { lease } => {
            let request = Request::LeaseGrant(LeaseGrantRequest {
                ttl: LEASE_TTL_S,
                id: *lease,
            });
            lease_outcome(propose(replica, request, now_ms).await)
        }
        Call::LeaseRevoke { lease } => {
            let request = Request::LeaseRevoke(LeaseRevokeRequest { id: *lease });
            lease_outcome(propose(replica, request, now_ms).await)
        }
        Call::LeaseKeepAlive { lease } => {
            let request = Request::LeaseKeepAlive(LeaseKeepAliveRequest { id: *lease });
            lease_outcome(propose(replica, request, now_ms).await)
        }
    }
}

/// The outcome of a lease call, or of a put naming a lease: the store's refusal is an answer
/// (the entry applied and changed nothing), any other error leaves the outcome unknown.
fn lease_outcome(result: Result<ApplyResponse, ConsensusError>) -> Outcome {
    let revision = |header: Option<cairn_proto::etcdserverpb::ResponseHeader>| {
        header.map_or(0, |h| h.revision)
    };
    match result {
        Ok(ApplyResponse::Put(put)) => Outcome::Put {
            revision: revision(put.header),
        },
        Ok(ApplyResponse::LeaseGrant(grant)) => Outcome::Lease {
            revision: revision(grant.header),
        },
        Ok(ApplyResponse::LeaseRevoke(revoke)) => Outcome::Lease {
            revision: revision(revoke.header),
        },
        Ok(ApplyResponse::LeaseKeepAlive(kept)) => Outcome::Lease {
            revision: revision(kept.header),
        },
        Err(ConsensusError::Mvcc(MvccError::LeaseNotFound | MvccError::LeaseExists)) => {
            Outcome::LeaseRefused
        }
        _ => Outcome::Unknown,
    }
}

async fn propose(
    replica: &Replica,
    request: Request,
    now_ms: i64,
) -> Result<ApplyResponse, ConsensusError> {
    replica.propose(request, None, now_ms, 1 << 20).await
}

/// The server's expiry loop, over whichever member leads: revokes the leases whose expiry
/// stamp has passed, each revoke recorded in the history. Returns the revokes that found
/// their lease (the others lost a race with a client's revoke).
async fn expiry_driver(members: Members, recorder: Recorder, start: Instant) -> usize {
    let mut expired_count = 0;
    while start.elapsed() < WORKLOAD {
        tokio::time::sleep(EXPIRY_TICK).await;
        let leader = {
            let members = members.lock().expect("members");
            // The newest leader: a removed one may still think it leads (see `newest_leader`).
            members
                .values()
                .filter(|replica| replica.is_leader())
                .max_by_key(|replica| replica.status().term)
                .cloned()
        };
        let Some(leader) = leader else { continue };
        let expired = leader
            .store()
            .leases()
            .expired(now_ms(start), EXPIRY_REVOKES_MAX);
        for lease in expired {
            let call = Call::LeaseRevoke { lease };
            let token = recorder.invoke(EXPIRY_CLIENT, call.clone(), now_ns(start));
            let outcome = execute(&leader, &call, now_ms(start)).await;
            tracing::info!(member = leader.member_id(), %call, %outcome, "expiry");
            expired_count += usize::from(matches!(outcome, Outcome::Lease { .. }));
            recorder.complete(token, outcome, now_ns(start));
        }
    }
    expired_count
}

/// Election safety: no two members lead in the same term.
fn check_one_leader_per_term(
    cluster: &SimCluster,
    leaders: &mut BTreeMap<u64, u64>,
) -> Result<(), String> {
    for (id, replica) in cluster.up() {
        let status = replica.status();
        if status.leader == Some(id) {
            if let Some(other) = leaders.insert(status.term, id) {
                if other != id {
                    return Err(format!(
                        "members {other} and {id} both led term {}",
                        status.term
                    ));
                }
            }
        }
    }
    Ok(())
}

/// The nemesis's membership changes for one seed: member `joiner` replaces a voter, one
/// change per attempt, the next change chosen from the leader's view of the membership.
struct Reconfiguration {
    joiner: u64,
    /// Voters the cluster started with: never fewer after a change.
    voters_min: usize,
    started: bool,
    done: bool,
    /// Changes that completed.
    completed: usize,
}

impl Reconfiguration {
    fn new(plan: &Plan) -> Reconfiguration {
        Reconfiguration {
            joiner: plan.size + 1,
            voters_min: plan.size as usize,
            started: false,
            done: false,
            completed: 0,
        }
    }

    /// The next change the leader's view calls for: add the joiner as a learner, promote it,
    /// then remove a random other voter; None once a voter has been replaced. A change left
    /// joint is the replica's to finish (`joint_config`): while one is pending openraft
    /// refuses the next, which is retried.
    fn next_change(&self, leader: &Replica, rng: &mut StdRng) -> Option<MembershipChange> {
        let view = leader.members();
        let change = match view.iter().find(|info| info.id == self.joiner) {
            None => MembershipChange::AddLearner(self.joiner, member(self.joiner)),
            Some(info) if info.is_learner => MembershipChange::Promote(self.joiner),
            Some(_) => {
                let others: Vec<u64> = view
                    .iter()
                    .filter(|info| !info.is_learner && info.id != self.joiner)
                    .map(|info| info.id)
                    .collect();
                // Fewer: a removal reported as timed out completed after all.
                if others.len() < self.voters_min {
                    return None;
                }
                MembershipChange::Remove(others[rng.gen_range(0..others.len())])
            }
        };
        Some(change)
    }

    /// One attempt, through the leader. A refusal or a timeout is retried at a later tick.
    async fn step(
        &mut self,
        cluster: &mut SimCluster,
        members: &Members,
        down: &mut BTreeSet<u64>,
        rng: &mut StdRng,
    ) {
        if self.done {
            return;
        }
        if !self.started {
            tracing::info!(joiner = self.joiner, "a new member starts, empty");
            cluster.start_joiner(self.joiner).await;
            self.started = true;
        }
        let Some(leader) = newest_leader(cluster) else {
            return;
        };
        let Some(change) = self.next_change(&leader, rng) else {
            self.done = true;
            return;
        };
        let result = tokio::time::timeout(
            MEMBERSHIP_CHANGE_TIMEOUT,
            leader.change_membership(change.clone()),
        )
        .await;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::info!(?change, %error, "membership change refused; retrying later");
                return;
            }
            Err(_) => {
                tracing::info!(?change, "membership change timed out; retrying later");
                return;
            }
        }
        tracing::info!(?change, "membership changed");
        self.completed += 1;
        match change {
            MembershipChange::AddLearner(id, _) => {
                if let Some(replica) = cluster.replica(id) {
                    members.lock().expect("members").insert(id, replica);
                }
            }
            MembershipChange::Remove(id) => {
                members.lock().expect("members").remove(&id);
                down.remove(&id);
                cluster.remove(id).await;
                self.done = true;
            }
            _ => {}
        }
    }
}

async fn nemesis(
    cluster: &mut SimCluster,
    plan: &Plan,
    rng: &mut StdRng,
    start: Instant,
    members: &Members,
) -> Result<usize, String> {
    let mut leaders = BTreeMap::new();
    let tolerated = (plan.size - 1) / 2;
    let mut down: BTreeSet<u64> = BTreeSet::new();
    let mut reconfiguration = Reconfiguration::new(plan);
    while start.elapsed() < WORKLOAD {
        tokio::time::sleep(Duration::from_millis(
            rng.gen_range(plan.nemesis_ms.0..plan.nemesis_ms.1),
        ))
        .await;
        check_one_leader_per_term(cluster, &mut leaders)?;
        // Members come and go with membership changes.
        let ids = cluster.ids();
        match rng.gen_range(0..6) {
            0 => {
                let cut = rng.gen_range(1..=tolerated);
                let mut shuffled = ids.clone();
                for i in (1..shuffled.len()).rev() {
                    shuffled.swap(i, rng.gen_range(0..=i));
                }
                let (side, others) = shuffled.split_at(cut as usize);
                tracing::info!(?side, "partition");
                cluster.network.partition(side, others);
            }
            1 => {
                tracing::info!("heal");
                cluster.network.heal();
            }
            // The voter count moves between `size` and `size + 1`, so `tolerated` crashes
            // (voters or not) leave a quorum in every configuration, joint ones included.
            2 if (down.len() as u64) < tolerated => {
                let victim = ids[rng.gen_range(0..ids.len())];
                if down.insert(victim) {
                    tracing::info!(victim, "crash");
                    members.lock().expect("members").remove(&victim);
                    cluster.crash(victim).await;
                }
            }
            3 => {
                if let Some(&back) = down.iter().next() {
                    down.remove(&back);
                    tracing::info!(back, "restart");
                    restart(cluster, members, back).await;
                }
            }
            4 | 5 if plan.membership => {
                reconfiguration.step(cluster, members, &mut down, rng).await;
            }
            _ => {}
        }
    }
    for back in down {
        restart(cluster, members, back).await;
    }
    cluster.network.heal();
    check_one_leader_per_term(cluster, &mut leaders)?;
    Ok(reconfiguration.completed)
}

/// Brings member `id` back; clients use it again once it is a member.
async fn restart(cluster: &mut SimCluster, members: &Members, id: u64) {
    cluster.restart(id).await;
    let replica = cluster.replica(id).expect("restarted");
    let is_member = replica.members().iter().any(|info| info.id == id);
    if is_member {
        members.lock().expect("members").insert(id, replica);
    }
}

/// The running member that leads in the highest term. A leader removed from the membership
/// stops hearing from the cluster and (openraft 0.9) goes on calling itself leader of its old
/// term until it is stopped, which happens here only once its removal is known to be done.
fn newest_leader(cluster: &SimCluster) -> Option<Replica> {
    cluster
        .up()
        .into_iter()
        .map(|(_, replica)| replica)
        .filter(Replica::is_leader)
        .max_by_key(|replica| replica.status().term)
}

/// After healing, stops every running member the cluster's membership does not list: a joiner
/// whose addition never completed, a member whose removal completed after its timeout. The
/// view is the leader's once it has committed a write of its term (so everything before is
/// committed) and no joint configuration is pending.
async fn settle_membership(cluster: &mut SimCluster) -> Result<(), String> {
    let deadline = Instant::now() + CONVERGE_BUDGET;
    let nodes: BTreeSet<u64> = loop {
        if Instant::now() > deadline {
            let views: Vec<_> = cluster
                .up()
                .into_iter()
                .map(|(id, replica)| {
                    let metrics = replica.metrics().borrow().clone();
                    (id, replica.status(), metrics.membership_config)
                })
                .collect();
            return Err(format!(
                "{LIVENESS}membership did not settle after healing: {views:?}"
            ));
        }
        if let Some(leader) = newest_leader(cluster) {
            let request = Request::Put(PutRequest {
                key: b"settle".to_vec(),
                ..Default::default()
            });
            let written = propose(&leader, request, 0).await.is_ok();
            let metrics = leader.metrics().borrow().clone();
            let membership = metrics.membership_config.membership();
            // A joint configuration is finished by the leader itself (`joint_config`).
            if written && membership.get_joint_config().len() == 1 {
                break membership.nodes().map(|(id, _)| *id).collect();
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for id in cluster.ids() {
        if !nodes.contains(&id) {
            tracing::info!(id, "not a member after healing: stopped");
            cluster.remove(id).await;
        }
    }
    Ok(())
}

async fn run_seed(seed: u64) -> Result<(String, Exercised), String> {
    let plan = plan(seed);
    // The cluster forms on a clean network; the faults start with the workload. (Forming under
    // loss and duplication, 5 members once split votes for 90 s of virtual time, seed 1404 in
    // one run: an open liveness question about openraft's lease, see the issue note.)
    let mut cluster = SimCluster::start(plan.size, seed, Faults::default()).await;
    cluster
        .wait_converged(CONVERGE_BUDGET)
        .await
        .map_err(|reason| format!("{LIVENESS}{reason}"))?;
    cluster.network.set_faults(plan.faults);
    let recorder = Recorder::new();
    let start = Instant::now();
    let members = Arc::new(std::sync::Mutex::new(
        cluster.up().into_iter().collect::<BTreeMap<_, _>>(),
    ));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| tokio::spawn(client(id, seed, members.clone(), recorder.clone(), start)))
        .collect();
    let expiry = tokio::spawn(expiry_driver(members.clone(), recorder.clone(), start));
    let mut rng = StdRng::seed_from_u64(seed ^ 0xfa17);
    let membership_changes = nemesis(&mut cluster, &plan, &mut rng, start, &members).await?;
    for client in clients {
        client
            .await
            .map_err(|error| format!("client task: {error}"))?;
    }
    let lease_expiries = expiry
        .await
        .map_err(|error| format!("expiry driver task: {error}"))?;
    settle_membership(&mut cluster).await?;

    tracing::info!("liveness: healed, every member must take a write");
    cluster.network.set_faults(Faults::default());
    let deadline = Instant::now() + CONVERGE_BUDGET;
    for (id, replica) in cluster.up() {
        let request = Request::Put(PutRequest {
            key: b"final".to_vec(),
            value: id.to_be_bytes().to_vec(),
            ..Default::default()
        });
        // An election may still be settling: retry, but only within the budget.
        while let Err(error) = propose(&replica, request.clone(), 0).await {
            if Instant::now() > deadline {
                return Err(format!(
                    "{LIVENESS}final write through member {id}: {error} (status {:?})",
                    replica.status()
                ));
            }
            // Some refusals are immediate; the virtual clock only moves while tasks sleep.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    cluster
        .wait_converged(CONVERGE_BUDGET)
        .await
        .map_err(|reason| format!("{LIVENESS}{reason}"))?;

    tracing::info!("state-machine safety: identical history on every member");
    cluster.members_agree()?;

    let history = recorder.history();
    let report = cairn_check::check(&history)
        .map_err(|violation| format!("not linearizable: {violation}"))?;
    cluster.stop().await;
    let exercised = Exercised {
        lease_expiries,
        membership_changes,
    };
    Ok((format!("{plan:?}: {report:?} {exercised:?}"), exercised))
}

#[tokio::test(start_paused = true)]
async fn random_faults_keep_histories_linearizable_and_members_identical() {
    common::init_logging();
    let (mut failures, mut stalls) = (Vec::new(), Vec::new());
    let (mut seeds_with_expiries, mut expiries) = (0, 0);
    let (mut seeds_with_membership, mut replaced) = (0, 0);
    let seeds = seeds(1, 2000);
    for &seed in &seeds {
        eprintln!("seed={seed} starting");
        match run_seed(seed).await {
            Ok((summary, exercised)) => {
                eprintln!("seed={seed} ok {summary}");
                seeds_with_expiries += usize::from(exercised.lease_expiries > 0);
                expiries += exercised.lease_expiries;
                seeds_with_membership += usize::from(exercised.membership_changes > 0);
                // Add learner, promote, remove: a voter replaced.
                replaced += usize::from(exercised.membership_changes >= 3);
            }
            Err(reason) => {
                eprintln!("seed={seed} FAILED: {reason}\n  replay: CAIRN_SIM_SEED={seed} cargo test -p cairn-consensus --test simulation");
                if reason.starts_with(LIVENESS) {
                    stalls.push(seed);
                } else {
                    failures.push(seed);
                }
            }
        }
    }
    eprintln!(
        "{} seeds: seeds with lease expiries: {seeds_with_expiries} ({expiries} expiries), \
         seeds with membership changes: {seeds_with_membership} (a voter replaced in \
         {replaced}), liveness stalls: {}",
        seeds.len(),
        stalls.len()
    );
    assert!(failures.is_empty(), "safety violated, seeds: {failures:?}");
    // None in 12,000 seeds since split votes are broken (see the module doc); one in 2,000
    // is tolerated because openraft's election timers are not seeded, more is a regression.
    let stalls_max = seeds.len() / 2000;
    assert!(
        stalls.len() <= stalls_max,
        "liveness: {} seeds stalled (at most {stalls_max} allowed): {stalls:?}",
        stalls.len()
    );
}
