//! A recorded client workload against a cluster: puts, linearizable gets, deletes and
//! compare-and-puts on a few keys, spread over the members, every call recorded with its
//! invoke and return times for `cairn-check`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_check::{Call, Outcome, Recorder};
use cairn_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::request_op::Request as Op;
use cairn_proto::etcdserverpb::{
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tonic::transport::Channel;

/// Longer than an election, so a write to a healthy cluster never times out; a call to a
/// dead member fails fast (connection refused) and a paused one ends as unknown.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);
const KEYS: u64 = 5;

pub struct Workload {
    pub recorder: Recorder,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<u64>>,
}

impl Workload {
    /// Starts `clients` clients, each sending to the endpoints in turn.
    pub fn start(endpoints: Vec<String>, clients: u64, seed: u64) -> Workload {
        let recorder = Recorder::new();
        let stop = Arc::new(AtomicBool::new(false));
        let start = Instant::now();
        let tasks = (0..clients)
            .map(|client| {
                let endpoints = endpoints.clone();
                let (recorder, stop) = (recorder.clone(), stop.clone());
                tokio::spawn(run_client(client, seed, endpoints, recorder, stop, start))
            })
            .collect();
        Workload {
            recorder,
            stop,
            tasks,
        }
    }

    pub fn acknowledged(&self) -> usize {
        self.recorder
            .history()
            .operations
            .iter()
            .filter(|op| op.outcome != Outcome::Unknown)
            .count()
    }

    /// Waits until `more` further calls were acknowledged: the cluster is serving. Fails the
    /// test after 20 s, naming `what` was going on.
    pub async fn serving(&self, more: usize, what: &str) {
        let target = self.acknowledged() + more;
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.acknowledged() < target {
            assert!(Instant::now() < deadline, "cluster stopped serving: {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the clients; returns the number of calls made.
    pub async fn stop(self) -> (Recorder, u64) {
        self.stop.store(true, Ordering::Release);
        let mut calls = 0;
        for task in self.tasks {
            calls += task.await.expect("client task");
        }
        (self.recorder, calls)
    }
}

fn ns(start: Instant) -> u64 {
    start.elapsed().as_nanos() as u64
}

async fn run_client(
    id: u64,
    seed: u64,
    endpoints: Vec<String>,
    recorder: Recorder,
    stop: Arc<AtomicBool>,
    start: Instant,
) -> u64 {
    let mut rng = StdRng::seed_from_u64(seed.wrapping_mul(1_000_003).wrapping_add(id));
    let mut clients: Vec<Option<KvClient<Channel>>> = vec![None; endpoints.len()];
    let mut calls = 0;
    while !stop.load(Ordering::Acquire) {
        let target = (id as usize + calls as usize) % endpoints.len();
        calls += 1;
        let key = format!("k{}", rng.gen_range(0..KEYS)).into_bytes();
        let value = format!("c{id}-{calls}").into_bytes();
        let call = match rng.gen_range(0..10) {
            0..=3 => Call::Put { key, value },
            4..=6 => Call::Get { key },
            7 => Call::Delete { key },
            _ => Call::CompareAndPut {
                key,
                expected: None,
                value,
            },
        };
        if clients[target].is_none() {
            let endpoint = Channel::from_shared(endpoints[target].clone()).expect("url");
            clients[target] = Some(KvClient::new(endpoint.connect_lazy()));
        }
        let client = clients[target].clone().expect("client");
        let token = recorder.invoke(id, call.clone(), ns(start));
        let outcome = tokio::time::timeout(CALL_TIMEOUT, execute(client, &call))
            .await
            .unwrap_or(Outcome::Unknown);
        recorder.complete(token, outcome.clone(), ns(start));
        if outcome == Outcome::Unknown {
            // A dead or cut-off member: back off a little before the next call.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    calls
}

async fn execute(mut client: KvClient<Channel>, call: &Call) -> Outcome {
    let revision = |header: Option<cairn_proto::etcdserverpb::ResponseHeader>| {
        header.map_or(0, |h| h.revision)
    };
    match call {
        Call::Get { key } => {
            let request = RangeRequest {
                key: key.clone(),
                ..Default::default()
            };
            match client.range(request).await {
                Ok(response) => {
                    let response = response.into_inner();
                    let kv = response.kvs.first();
                    Outcome::Get {
                        revision: revision(response.header),
                        value: kv.map(|kv| kv.value.clone()),
                        mod_revision: kv.map_or(0, |kv| kv.mod_revision),
                    }
                }
                Err(_) => Outcome::Unknown,
            }
        }
        Call::Put { key, value } => {
            let request = PutRequest {
                key: key.clone(),
                value: value.clone(),
                ..Default::default()
            };
            match client.put(request).await {
                Ok(response) => Outcome::Put {
                    revision: revision(response.into_inner().header),
                },
                Err(_) => Outcome::Unknown,
            }
        }
        Call::Delete { key } => {
            let request = DeleteRangeRequest {
                key: key.clone(),
                ..Default::default()
            };
            match client.delete_range(request).await {
                Ok(response) => {
                    let response = response.into_inner();
                    Outcome::Delete {
                        revision: revision(response.header),
                        deleted: response.deleted,
                    }
                }
                Err(_) => Outcome::Unknown,
            }
        }
        Call::CompareAndPut {
            key,
            expected,
            value,
        } => {
            let compare = match expected {
                None => Compare {
                    result: CompareResult::Equal as i32,
                    target: CompareTarget::Create as i32,
                    key: key.clone(),
                    target_union: Some(TargetUnion::CreateRevision(0)),
                    ..Default::default()
                },
                Some(expected) => Compare {
                    result: CompareResult::Equal as i32,
                    target: CompareTarget::Value as i32,
                    key: key.clone(),
                    target_union: Some(TargetUnion::Value(expected.clone())),
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
            let request = TxnRequest {
                compare: vec![compare],
                success: vec![put],
                failure: vec![],
            };
            match client.txn(request).await {
                Ok(response) => {
                    let response = response.into_inner();
                    Outcome::CompareAndPut {
                        revision: revision(response.header),
                        succeeded: response.succeeded,
                    }
                }
                Err(_) => Outcome::Unknown,
            }
        }
        // This workload's calls are drawn above: no lease calls.
        Call::LeasePut { .. }
        | Call::LeaseGrant { .. }
        | Call::LeaseRevoke { .. }
        | Call::LeaseKeepAlive { .. } => unreachable!("the workload makes no lease calls: {call}"),
    }
}
