//! Deterministic-fault simulation: whole clusters (3 and 5 members) in one process over the
//! simulated network, random client workloads under random partitions, message loss, delay,
//! duplication, crashes and restarts; every run's history is checked for linearizability
//! (`cairn-check`) and every member must end with the same state.
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

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use cairn_check::{Call, Outcome, Recorder};
use cairn_consensus::network::sim::Faults;
use cairn_consensus::{ConsensusError, Replica};
use cairn_mvcc::ApplyResponse;
use cairn_proto::cairnpb::internal_request::Request;
use cairn_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use cairn_proto::etcdserverpb::request_op::Request as Op;
use cairn_proto::etcdserverpb::{
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use common::{seeds, SimCluster};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

const KEYS: u64 = 4;
const CLIENTS: u64 = 4;
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
    }
}

fn now_ns(start: Instant) -> u64 {
    start.elapsed().as_nanos() as u64
}

fn key(n: u64) -> Vec<u8> {
    format!("k{n}").into_bytes()
}

/// One client: random operations against random live members, recorded.
async fn client(
    id: u64,
    seed: u64,
    members: Arc<std::sync::Mutex<BTreeMap<u64, Replica>>>,
    recorder: Recorder,
    start: Instant,
) {
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
        let call = match rng.gen_range(0..10) {
            0..=3 => Call::Put { key: k, value },
            4..=6 => Call::Get { key: k },
            7 => Call::Delete { key: k },
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
        let outcome = execute(&replica, &call).await;
        tracing::info!(client = id, member = replica.member_id(), %call, %outcome, at_ns = now_ns(start), "op");
        recorder.complete(token, outcome, now_ns(start));
        tokio::time::sleep(Duration::from_millis(rng.gen_range(1..20))).await;
    }
}

async fn execute(replica: &Replica, call: &Call) -> Outcome {
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
            match propose(replica, request).await {
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
            match propose(replica, request).await {
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
            match propose(replica, request).await {
                Ok(ApplyResponse::Txn(txn)) => Outcome::CompareAndPut {
                    revision: txn.header.map_or(0, |h| h.revision),
                    succeeded: txn.succeeded,
                },
                _ => Outcome::Unknown,
            }
        }
    }
}

async fn propose(replica: &Replica, request: Request) -> Result<ApplyResponse, ConsensusError> {
    replica.propose(request, None, 0, 1 << 20).await
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

async fn nemesis(
    cluster: &mut SimCluster,
    plan: &Plan,
    rng: &mut StdRng,
    start: Instant,
    members: &Arc<std::sync::Mutex<BTreeMap<u64, Replica>>>,
) -> Result<(), String> {
    let mut leaders = BTreeMap::new();
    let ids = cluster.ids();
    let tolerated = (plan.size - 1) / 2;
    let mut down: BTreeSet<u64> = BTreeSet::new();
    while start.elapsed() < WORKLOAD {
        tokio::time::sleep(Duration::from_millis(
            rng.gen_range(plan.nemesis_ms.0..plan.nemesis_ms.1),
        ))
        .await;
        check_one_leader_per_term(cluster, &mut leaders)?;
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
                    cluster.restart(back).await;
                    let replica = cluster.replica(back).expect("restarted");
                    members.lock().expect("members").insert(back, replica);
                }
            }
            _ => {}
        }
    }
    for back in down {
        cluster.restart(back).await;
        let replica = cluster.replica(back).expect("restarted");
        members.lock().expect("members").insert(back, replica);
    }
    cluster.network.heal();
    check_one_leader_per_term(cluster, &mut leaders)
}

async fn run_seed(seed: u64) -> Result<String, String> {
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
    let mut rng = StdRng::seed_from_u64(seed ^ 0xfa17);
    nemesis(&mut cluster, &plan, &mut rng, start, &members).await?;
    for client in clients {
        client
            .await
            .map_err(|error| format!("client task: {error}"))?;
    }

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
        while let Err(error) = propose(&replica, request.clone()).await {
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
    let mut hashes = BTreeSet::new();
    for (id, replica) in cluster.up() {
        let store = replica.store();
        let hash = store
            .hash_kv(0)
            .map_err(|error| format!("hash on {id}: {error}"))?;
        hashes.insert((store.current_revision(), hash.hash));
    }
    if hashes.len() != 1 {
        return Err(format!("members diverged: (revision, hash) = {hashes:?}"));
    }

    let history = recorder.history();
    let report = cairn_check::check(&history)
        .map_err(|violation| format!("not linearizable: {violation}"))?;
    cluster.stop().await;
    Ok(format!("{plan:?}: {report:?}"))
}

#[tokio::test(start_paused = true)]
async fn random_faults_keep_histories_linearizable_and_members_identical() {
    let filter = std::env::var("CAIRN_SIM_LOG").unwrap_or_else(|_| "off".to_string());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
    let (mut failures, mut stalls) = (Vec::new(), Vec::new());
    let seeds = seeds(1, 2000);
    for &seed in &seeds {
        eprintln!("seed={seed} starting");
        match run_seed(seed).await {
            Ok(summary) => eprintln!("seed={seed} ok {summary}"),
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
    assert!(failures.is_empty(), "safety violated, seeds: {failures:?}");
    // A healed cluster that stays leaderless for the whole budget happens about once in
    // several thousand seeds (openraft's election timers are not seeded, so such a run does
    // not replay; see the issue note). More than that is a liveness regression.
    let stalls_max = seeds.len() / 500;
    assert!(
        stalls.len() <= stalls_max,
        "liveness: {} seeds stalled (at most {stalls_max} allowed): {stalls:?}",
        stalls.len()
    );
}
