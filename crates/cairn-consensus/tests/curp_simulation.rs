//! CURP-HO under seeded faults: 3- and 5-member clusters in one process over the simulated
//! network, clients issuing strong native commands to every replica over lossy, delaying
//! client links, while the nemesis crashes the leader (often mid-fast-path), restarts it and
//! partitions members. Afterwards, for write-once keys (every `Put` writes a key no other
//! `Put` writes, so a register's history is checkable without revisions):
//! - **no completed write is lost**: every `Put` that completed, on the fast or the slow path,
//!   is in every member's final state with its value;
//! - **nothing is applied twice**: every key has etcd version 1 (a second apply of the same
//!   `Put` would make version 2);
//! - **reads are linearizable**: a `Get` invoked after a `Put` of its key completed returns
//!   that value; a `Get` returns only a value some `Put` of that key was invoked with, never
//!   before that invocation; once a `Get` returned a value, no `Get` invoked later misses it;
//! - members end identical (`HashKV`).
//!
//! Beside them, weak sessions, each bound to one replica, issue causal operations over FIFO
//! client links (seeded delays, no reordering within a link, messages to a down member lost)
//! with the client's rules (`WeakSession`: weak writes to every replica, complete once the
//! bound replica has them, resent until applied; weak reads at the bound replica no older
//! than the session's last seen revision, its own unapplied writes laid over; a final flush).
//! They check causal consistency (`check_weak`): reads return only written values,
//! read-your-writes, monotonic reads, and after the flush every write of the session applied
//! once on every member, in session order.
//!
//! The client side is the real completion rule (`curp::Completion`, fast path = leader `ok`
//! plus same-term witnesses making a superquorum, else the leader's sync reply) and the real
//! replica entry point (`Replica::native_propose`); only the client–replica link is simulated
//! (seeded delay and loss; a retry timer resends to every replica).
//!
//! Replay a failing seed: `CAIRN_SIM_SEED=<seed> cargo test -p cairn-consensus --test
//! curp_simulation`; `CAIRN_SIM_SEEDS=<n>` (and `CAIRN_SIM_FIRST=<seed>`) runs more;
//! `CAIRN_SIM_TRACE=1` prints how each command completed (path, and the replies it took);
//! `CAIRN_SIM_LOG=cairn_consensus::native=debug` the members' ordering, witnessing and
//! recovery plans. A replay repeats the faults and the workload, not every interleaving (the
//! WAL writes real files).

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use cairn_consensus::curp::{
    Command, CommandId, Completion, Consistency, Op, Path, Quorums, Reply,
};
use cairn_consensus::native::replica::{NativeError, ProposeReply, WeakReadReply};
use cairn_consensus::network::sim::Faults;
use cairn_consensus::network::{PeerRequest, PeerResponse};
use cairn_consensus::Replica;
use cairn_mvcc::KvStore;
use cairn_proto::curppb;
use cairn_proto::etcdserverpb::RangeRequest;
use cairn_proto::mvccpb::KeyValue;
use common::{seeds, SimCluster};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

const CLIENTS: u64 = 4;
const OPS_PER_CLIENT: u64 = 40;
/// Keys are written once each, and read by every client: reads conflict with writes.
const KEYS: u64 = CLIENTS * OPS_PER_CLIENT;
const RETRY: Duration = Duration::from_millis(400);
const OP_TIMEOUT: Duration = Duration::from_secs(6);
const CONVERGE_BUDGET: Duration = Duration::from_secs(60);
/// Prefix of a liveness failure (no leader, or a restarted member's pool never complete
/// again within the budget), told apart from safety violations.
const LIVENESS: &str = "liveness: ";

type Members = Arc<Mutex<BTreeMap<u64, Option<Replica>>>>;

#[derive(Clone, Debug)]
enum Event {
    Put {
        key: u64,
        value: String,
        invoked: Instant,
        completed: Option<(Instant, Path)>,
    },
    Get {
        key: u64,
        invoked: Instant,
        returned: Instant,
        value: Option<String>,
    },
}

fn key_name(key: u64) -> Bytes {
    Bytes::from(format!("k{key:04}"))
}

/// Key `key` in a member's final state.
fn read_key(store: &KvStore, member: u64, key: u64) -> Result<Option<KeyValue>, String> {
    let found = store
        .range(&RangeRequest {
            key: key_name(key).to_vec(),
            ..Default::default()
        })
        .map_err(|error| format!("range on {member}: {error}"))?;
    Ok(found.kvs.into_iter().next())
}

/// The proposer's clock, as the server stamps it (the session table's idle expiry runs on
/// these stamps).
fn now_unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as i64)
}

/// Sends `command` to every replica over the simulated client links and runs the client's
/// completion rule on the replies; `None` if it did not complete in time.
async fn run_command(
    members: &Members,
    command: Command,
    rng: &Mutex<StdRng>,
    drop_per_mille: u32,
) -> Option<(curppb::Result, Path)> {
    let replicas: Vec<(u64, Option<Replica>)> = members
        .lock()
        .expect("members")
        .iter()
        .map(|(id, replica)| (*id, replica.clone()))
        .collect();
    let mut completion = Completion::new(Quorums::new(replicas.len()));
    let mut seen = Vec::new();
    let (replies, mut received) = mpsc::unbounded_channel();
    let deadline = Instant::now() + OP_TIMEOUT;
    loop {
        let current: Vec<(u64, Option<Replica>)> = members
            .lock()
            .expect("members")
            .iter()
            .map(|(id, replica)| (*id, replica.clone()))
            .collect();
        for (id, replica) in current {
            let (delay_out, delay_back, lost) = {
                let mut rng = rng.lock().expect("rng");
                (
                    Duration::from_millis(rng.gen_range(0..20)),
                    Duration::from_millis(rng.gen_range(0..20)),
                    rng.gen_range(0..1000) < drop_per_mille,
                )
            };
            let (Some(replica), false) = (replica, lost) else {
                continue;
            };
            let command = command.clone();
            let replies = replies.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay_out).await;
                // A member that crashed meanwhile cannot answer (its handle outlives it here).
                if !replica.is_running() {
                    return;
                }
                let Ok(reply) = replica
                    .native_propose(command, now_unix_ms(), 1 << 20)
                    .await
                else {
                    return;
                };
                tokio::time::sleep(delay_back).await;
                match reply {
                    ProposeReply::Applied(result) => {
                        let _ = replies.send(Reply::Sync { result });
                    }
                    ProposeReply::Superseded => {}
                    ProposeReply::Witness { term, ok } => {
                        let _ = replies.send(Reply::Witness {
                            replica: id,
                            term,
                            ok,
                        });
                    }
                    ProposeReply::Leader {
                        term,
                        ok,
                        result,
                        sync,
                    } => {
                        let _ = replies.send(Reply::Leader {
                            replica: id,
                            term,
                            ok,
                            result: result.unwrap_or_default(),
                        });
                        let Some(sync) = sync else {
                            return;
                        };
                        if let Ok(result) = sync.await {
                            tokio::time::sleep(delay_back).await;
                            let _ = replies.send(Reply::Sync { result });
                        }
                    }
                }
            });
        }
        let retry_at = (Instant::now() + RETRY).min(deadline);
        loop {
            tokio::select! {
                Some(reply) = received.recv() => {
                    seen.push(format!("{reply:?}").chars().take(60).collect::<String>());
                    if let Some(done) = completion.absorb(reply) {
                        if std::env::var("CAIRN_SIM_TRACE").is_ok() {
                            eprintln!("{:?} done {:?} after {seen:?}", command.id, done.path);
                        }
                        return Some((done.result, done.path));
                    }
                }
                () = tokio::time::sleep_until(retry_at) => break,
            }
        }
        if Instant::now() >= deadline {
            return None;
        }
    }
}

async fn client(
    client_id: u64,
    members: Members,
    seed: u64,
    drop_per_mille: u32,
    events: Arc<Mutex<Vec<Event>>>,
) {
    let rng = Mutex::new(StdRng::seed_from_u64(seed ^ (client_id << 32)));
    let mut seq = 0;
    let mut written = 0;
    while written < OPS_PER_CLIENT {
        seq += 1;
        let write = rng.lock().expect("rng").gen_bool(0.5);
        let id = CommandId {
            client_id: client_id + 1,
            seq,
        };
        let invoked = Instant::now();
        if write {
            let key = client_id * OPS_PER_CLIENT + written;
            written += 1;
            let value = format!("c{client_id}-{seq}");
            let command = Command {
                id,
                op: Op::Put {
                    key: key_name(key),
                    value: Bytes::from(value.clone()),
                },
                consistency: Consistency::Strong,
                // Strong clients issue no weak writes.
                causal_dep: 0,
            };
            let outcome = run_command(&members, command, &rng, drop_per_mille).await;
            let completed = outcome.map(|(_, path)| (Instant::now(), path));
            events.lock().expect("events").push(Event::Put {
                key,
                value,
                invoked,
                completed,
            });
        } else {
            let key = rng.lock().expect("rng").gen_range(0..KEYS);
            let command = Command {
                id,
                op: Op::Get { key: key_name(key) },
                consistency: Consistency::Strong,
                causal_dep: 0,
            };
            if let Some((result, _)) = run_command(&members, command, &rng, drop_per_mille).await {
                let value = result
                    .kvs
                    .first()
                    .map(|kv| String::from_utf8_lossy(&kv.value).to_string());
                events.lock().expect("events").push(Event::Get {
                    key,
                    invoked,
                    returned: Instant::now(),
                    value,
                });
            }
        }
    }
}

/// Checks the write-once register rules of the module doc on `events`.
fn check_reads(events: &[Event]) -> Result<(), String> {
    let mut puts: BTreeMap<u64, (String, Instant, Option<Instant>)> = BTreeMap::new();
    for event in events {
        if let Event::Put {
            key,
            value,
            invoked,
            completed,
        } = event
        {
            puts.insert(*key, (value.clone(), *invoked, completed.map(|(at, _)| at)));
        }
    }
    let mut seen: BTreeMap<u64, Instant> = BTreeMap::new();
    for event in events {
        if let Event::Get {
            key,
            returned,
            value: Some(value),
            ..
        } = event
        {
            let Some((written, invoked, _)) = puts.get(key) else {
                return Err(format!(
                    "Get(k{key}) returned {value:?}, which no Put wrote"
                ));
            };
            if written != value || invoked > returned {
                return Err(format!(
                    "Get(k{key}) returned {value:?} before or without its Put ({written:?})"
                ));
            }
            let first = seen.entry(*key).or_insert(*returned);
            *first = (*first).min(*returned);
        }
    }
    for event in events {
        if let Event::Get {
            key,
            invoked,
            value: None,
            ..
        } = event
        {
            if let Some((value, _, Some(completed))) = puts.get(key) {
                if completed < invoked {
                    return Err(format!(
                        "Get(k{key}) invoked after Put({value}) completed found nothing"
                    ));
                }
            }
            if seen.get(key).is_some_and(|first| first < invoked) {
                return Err(format!(
                    "Get(k{key}) found nothing after an earlier Get had returned its value"
                ));
            }
        }
    }
    Ok(())
}

/// Weak (causal) sessions next to the strong clients, each bound to one replica.
const WEAK_SESSIONS: u64 = 2;
const WEAK_OPS_PER_SESSION: u64 = 30;
/// Weak sessions write their own keys, after the strong clients' keys, once each.
const WEAK_KEY_BASE: u64 = KEYS;
const WEAK_KEYS: u64 = WEAK_SESSIONS * WEAK_OPS_PER_SESSION;

/// One weak session's operations, in session order.
#[derive(Clone, Debug)]
enum WeakEvent {
    Put {
        seq: u64,
        key: u64,
        value: String,
        completed: bool,
    },
    Get {
        key: u64,
        value: Option<String>,
    },
}

/// What a session sends one replica.
enum LinkMessage {
    Propose(Command),
    Read {
        op: curppb::op::Op,
        min_revision: i64,
        answer: oneshot::Sender<WeakReadReply>,
    },
    Flush {
        seq: u64,
        answer: oneshot::Sender<()>,
    },
}

/// A session's connection to one replica: FIFO like TCP (each message waits a seeded delay
/// behind the one before it; none overtakes another), handled in arrival order as a server
/// connection handles it. Messages reaching a member that is down are lost, as on a broken
/// connection; the session resends what it still needs.
fn open_link(
    member: u64,
    client_id: u64,
    members: Members,
    seed: u64,
    answered: mpsc::UnboundedSender<(u64, CommandId)>,
) -> mpsc::UnboundedSender<LinkMessage> {
    let (sender, mut queue) = mpsc::unbounded_channel::<LinkMessage>();
    tokio::spawn(async move {
        let mut rng = StdRng::seed_from_u64(seed);
        while let Some(message) = queue.recv().await {
            tokio::time::sleep(Duration::from_millis(rng.gen_range(0..15))).await;
            let replica = members.lock().expect("members").get(&member).cloned();
            let Some(replica) = replica.flatten().filter(Replica::is_running) else {
                continue;
            };
            match message {
                LinkMessage::Propose(command) => {
                    let id = command.id;
                    let proposed = replica.native_propose(command, now_unix_ms(), 1 << 20);
                    if proposed.await.is_ok() {
                        let _ = answered.send((member, id));
                    }
                }
                // Reads and flushes wait for the replica to catch up without holding up the
                // link, as the server answers them.
                LinkMessage::Read {
                    op,
                    min_revision,
                    answer,
                } => {
                    tokio::spawn(async move {
                        let read = replica.native_weak_read(client_id, &op, min_revision);
                        if let Ok(reply) = read.await {
                            let _ = answer.send(reply);
                        }
                    });
                }
                LinkMessage::Flush { seq, answer } => {
                    tokio::spawn(async move {
                        if replica.native_flush(client_id, seq).await.is_ok() {
                            let _ = answer.send(());
                        }
                    });
                }
            }
        }
    });
    sender
}

/// A weak session: the client side of CURP-HO's causal operations as `cairn-client` runs
/// them (weak writes to every replica, complete once the bound replica has them; weak reads
/// at the bound replica no older than anything the session saw, with the session's own
/// unapplied writes laid over; a flush that resends unapplied writes until the bound replica
/// applied them all).
struct WeakSession {
    client_id: u64,
    bound: u64,
    links: BTreeMap<u64, mpsc::UnboundedSender<LinkMessage>>,
    answered: mpsc::UnboundedReceiver<(u64, CommandId)>,
    unapplied: BTreeMap<u64, Command>,
    min_revision: i64,
    seq: u64,
    events: Vec<WeakEvent>,
}

impl WeakSession {
    fn open(index: u64, members: &Members, seed: u64) -> WeakSession {
        let client_id = 100 + index;
        let ids: Vec<u64> = members.lock().expect("members").keys().copied().collect();
        let mut rng = StdRng::seed_from_u64(seed ^ (client_id << 32));
        let bound = ids[rng.gen_range(0..ids.len())];
        let (answers, answered) = mpsc::unbounded_channel();
        let links = ids
            .iter()
            .map(|&member| {
                let link_seed = rng.gen();
                let link = open_link(
                    member,
                    client_id,
                    members.clone(),
                    link_seed,
                    answers.clone(),
                );
                (member, link)
            })
            .collect();
        WeakSession {
            client_id,
            bound,
            links,
            answered,
            unapplied: BTreeMap::new(),
            min_revision: 0,
            seq: 0,
            events: Vec::new(),
        }
    }

    /// Sends every unapplied write again, in session order, to every replica.
    fn resend_unapplied(&self) {
        for command in self.unapplied.values() {
            self.propose_everywhere(command);
        }
    }

    /// Sends `command` to every replica (each link keeps it behind what it already carries).
    fn propose_everywhere(&self, command: &Command) {
        for link in self.links.values() {
            let _ = link.send(LinkMessage::Propose(command.clone()));
        }
    }

    async fn put(&mut self, key: u64) {
        self.seq += 1;
        let seq = self.seq;
        let value = format!("w{}-{seq}", self.client_id);
        let command = Command {
            id: CommandId {
                client_id: self.client_id,
                seq,
            },
            op: Op::Put {
                key: key_name(key),
                value: Bytes::from(value.clone()),
            },
            consistency: Consistency::Weak,
            // Every seq of a weak session is a weak write (its reads take none).
            causal_dep: seq - 1,
        };
        self.propose_everywhere(&command);
        self.unapplied.insert(seq, command.clone());
        let deadline = Instant::now() + OP_TIMEOUT;
        let mut completed = false;
        while !completed && Instant::now() < deadline {
            let retry_at = (Instant::now() + RETRY).min(deadline);
            match tokio::time::timeout_at(retry_at, self.answered.recv()).await {
                Ok(Some((member, id))) => completed = member == self.bound && id == command.id,
                Ok(None) => break,
                Err(_) => self.resend_unapplied(),
            }
        }
        self.events.push(WeakEvent::Put {
            seq,
            key,
            value,
            completed,
        });
    }

    async fn get(&mut self, key: u64) {
        let (answer, reply) = oneshot::channel();
        let op = Op::Get { key: key_name(key) };
        let Some(op) = cairn_consensus::native::op_to_pb(&op).op else {
            return;
        };
        let _ = self.links[&self.bound].send(LinkMessage::Read {
            op,
            min_revision: self.min_revision,
            answer,
        });
        let Ok(Ok(read)) = tokio::time::timeout(OP_TIMEOUT, reply).await else {
            return;
        };
        self.min_revision = self.min_revision.max(read.applied_revision);
        self.unapplied = self.unapplied.split_off(&(read.applied_seq + 1));
        // Read-your-writes: the session's own write the replica has not applied wins.
        let own = self
            .unapplied
            .values()
            .rev()
            .find_map(|command| match &command.op {
                Op::Put {
                    key: written,
                    value,
                } if *written == key_name(key) => Some(String::from_utf8_lossy(value).to_string()),
                _ => None,
            });
        let value = own.or_else(|| {
            read.result
                .kvs
                .first()
                .map(|kv| String::from_utf8_lossy(&kv.value).to_string())
        });
        self.events.push(WeakEvent::Get { key, value });
    }

    /// Waits until the bound replica has applied every write of the session, resending the
    /// unapplied ones meanwhile; false if that did not happen in time.
    async fn flush(&mut self) -> bool {
        let deadline = Instant::now() + CONVERGE_BUDGET;
        while Instant::now() < deadline {
            let (answer, flushed) = oneshot::channel();
            let _ = self.links[&self.bound].send(LinkMessage::Flush {
                seq: self.seq,
                answer,
            });
            if let Ok(Ok(())) = tokio::time::timeout(RETRY, flushed).await {
                return true;
            }
            self.resend_unapplied();
        }
        false
    }
}

async fn weak_session(index: u64, members: Members, seed: u64) -> WeakSession {
    let mut session = WeakSession::open(index, &members, seed);
    let mut rng = StdRng::seed_from_u64(seed ^ (session.client_id << 40));
    let mut written = 0;
    while written < WEAK_OPS_PER_SESSION {
        if rng.gen_bool(0.5) {
            session
                .put(WEAK_KEY_BASE + index * WEAK_OPS_PER_SESSION + written)
                .await;
            written += 1;
        } else {
            // Mostly its own keys (read-your-writes), sometimes anyone's.
            let key = if rng.gen_bool(0.7) && written > 0 {
                WEAK_KEY_BASE + index * WEAK_OPS_PER_SESSION + rng.gen_range(0..written)
            } else {
                rng.gen_range(0..WEAK_KEY_BASE + WEAK_KEYS)
            };
            session.get(key).await;
        }
    }
    session
}

/// The causal rules for weak sessions, on their histories and, once each session flushed,
/// on every member's final state:
/// - a weak read returns only a value some write of that key was invoked with;
/// - read-your-writes: after the session's write of a key completed, its reads of that key
///   return that value;
/// - monotonic reads: once a read returned a key's value, the session's later reads do too;
/// - after a flush, every write of the session (completed or not: the session resends) is
///   applied on every member, once, in session order (revisions grow with seq).
fn check_weak(
    sessions: &[WeakSession],
    strong: &[Event],
    cluster: &SimCluster,
) -> Result<(), String> {
    let mut written: BTreeMap<u64, String> = BTreeMap::new();
    for event in strong {
        if let Event::Put { key, value, .. } = event {
            written.insert(*key, value.clone());
        }
    }
    for session in sessions {
        for event in &session.events {
            if let WeakEvent::Put { key, value, .. } = event {
                written.insert(*key, value.clone());
            }
        }
    }
    for session in sessions {
        let who = format!(
            "weak session {} (bound to {})",
            session.client_id, session.bound
        );
        let mut own: BTreeMap<u64, String> = BTreeMap::new();
        let mut seen: BTreeMap<u64, String> = BTreeMap::new();
        for event in &session.events {
            match event {
                WeakEvent::Put {
                    key,
                    value,
                    completed: true,
                    ..
                } => {
                    own.insert(*key, value.clone());
                }
                WeakEvent::Put { .. } => {}
                WeakEvent::Get { key, value } => {
                    if let Some(value) = value {
                        if written.get(key) != Some(value) {
                            return Err(format!("{who}: read k{key}={value}, which no Put wrote"));
                        }
                    }
                    for (rule, expected) in [
                        ("its own write", own.get(key)),
                        ("an earlier read", seen.get(key)),
                    ] {
                        if let Some(expected) = expected {
                            if value.as_ref() != Some(expected) {
                                return Err(format!(
                                    "{who}: read k{key}={value:?} after {rule} showed {expected:?}"
                                ));
                            }
                        }
                    }
                    if let Some(value) = value {
                        seen.insert(*key, value.clone());
                    }
                }
            }
        }
        for (id, replica) in cluster.up() {
            let store = replica.store();
            let mut last_revision = 0;
            for event in &session.events {
                let WeakEvent::Put {
                    seq, key, value, ..
                } = event
                else {
                    continue;
                };
                let Some(kv) = read_key(&store, id, *key)? else {
                    return Err(format!(
                        "{who}: flushed write seq {seq} (k{key}) is missing on {id}"
                    ));
                };
                if kv.value != value.as_bytes() || kv.version != 1 {
                    return Err(format!(
                        "{who}: write seq {seq} (k{key}={value}) is {:?} version {} on {id}",
                        String::from_utf8_lossy(&kv.value),
                        kv.version
                    ));
                }
                if kv.mod_revision <= last_revision {
                    return Err(format!(
                        "{who}: write seq {seq} applied at revision {} on {id}, before an earlier write of the session ({last_revision})",
                        kv.mod_revision
                    ));
                }
                last_revision = kv.mod_revision;
            }
        }
    }
    Ok(())
}

async fn run_seed(seed: u64) -> Result<String, String> {
    let mut rng = StdRng::seed_from_u64(seed);
    let size = if rng.gen_bool(0.7) { 3 } else { 5 };
    let faults = Faults {
        drop_per_mille: rng.gen_range(0..30),
        duplicate_per_mille: rng.gen_range(0..20),
        delay_ms_max: rng.gen_range(1..15),
    };
    let client_drop = rng.gen_range(0..50);
    let mut cluster = SimCluster::start(size, seed, Faults::default()).await;
    cluster
        .wait_converged(CONVERGE_BUDGET)
        .await
        .map_err(|reason| format!("{LIVENESS}{reason}"))?;
    cluster.network.set_faults(faults);
    let members: Members = Arc::new(Mutex::new(cluster.replicas.clone()));
    let events = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| {
            tokio::spawn(client(
                id,
                members.clone(),
                seed,
                client_drop,
                events.clone(),
            ))
        })
        .collect();
    let weak_sessions: Vec<_> = (0..WEAK_SESSIONS)
        .map(|index| tokio::spawn(weak_session(index, members.clone(), seed)))
        .collect();
    // Nemesis: crash the leader while commands are in flight, bring it back; sometimes cut
    // a member off for a while.
    let mut crashes = 0;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(200..900))).await;
        // One witness memory lost at a time (CURP-HO tolerates f): a restarted member counts
        // again once a later term's recovery has been applied everywhere.
        let settled = Instant::now() + CONVERGE_BUDGET;
        while !cluster.up().iter().all(|(_, r)| r.native().pool_complete()) {
            if Instant::now() > settled {
                return Err(format!(
                    "{LIVENESS}a restarted member's pool never became complete"
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let leader = cluster.up().iter().find_map(|(_, r)| r.status().leader);
        if let Some(leader) = leader.filter(|_| rng.gen_bool(0.7)) {
            cluster.crash(leader).await;
            members.lock().expect("members").insert(leader, None);
            crashes += 1;
            tokio::time::sleep(Duration::from_millis(rng.gen_range(300..1500))).await;
            cluster.restart(leader).await;
            let replica = cluster.replica(leader);
            members.lock().expect("members").insert(leader, replica);
        } else {
            let ids = cluster.ids();
            let cut = ids[rng.gen_range(0..ids.len())];
            let others: Vec<u64> = ids.iter().copied().filter(|id| *id != cut).collect();
            cluster.network.partition(&[cut], &others);
            tokio::time::sleep(Duration::from_millis(rng.gen_range(300..1200))).await;
            cluster.network.heal();
        }
    }
    for client in clients {
        client
            .await
            .map_err(|error| format!("client task: {error}"))?;
    }
    cluster.network.set_faults(Faults::default());
    cluster.network.heal();
    cluster
        .wait_converged(CONVERGE_BUDGET)
        .await
        .map_err(|reason| format!("{LIVENESS}{reason}"))?;

    let mut sessions = Vec::new();
    for session in weak_sessions {
        let mut session = session
            .await
            .map_err(|error| format!("weak session task: {error}"))?;
        if !session.flush().await {
            return Err(format!(
                "{LIVENESS}weak session {} never flushed",
                session.client_id
            ));
        }
        sessions.push(session);
    }
    cluster
        .wait_converged(CONVERGE_BUDGET)
        .await
        .map_err(|reason| format!("{LIVENESS}{reason}"))?;
    cluster.members_agree()?;
    let events = events.lock().expect("events").clone();
    check_weak(&sessions, &events, &cluster)?;
    let weak_events = sessions.iter().flat_map(|session| &session.events);
    let (mut weak_puts, mut weak_reads_found) = (0, 0);
    for event in weak_events {
        match event {
            WeakEvent::Put {
                completed: true, ..
            } => weak_puts += 1,
            WeakEvent::Get { value: Some(_), .. } => weak_reads_found += 1,
            _ => {}
        }
    }
    let (mut fast, mut slow, mut lost_in_doubt) = (0, 0, 0);
    for (id, replica) in cluster.up() {
        let store = replica.store();
        for event in &events {
            let Event::Put {
                key,
                value,
                completed,
                ..
            } = event
            else {
                continue;
            };
            let kv = read_key(&store, id, *key)?;
            if let Some(kv) = &kv {
                if kv.version != 1 {
                    return Err(format!("k{key} applied {} times on {id}", kv.version));
                }
            }
            match (completed, kv.as_ref()) {
                (Some((_, path)), Some(kv)) if kv.value == value.as_bytes() => {
                    if id == cluster.ids()[0] {
                        fast += usize::from(*path == Path::Fast);
                        slow += usize::from(*path == Path::Slow);
                    }
                }
                (Some((_, path)), _) => {
                    let client = value[1..value.find('-').unwrap_or(1)]
                        .parse::<u64>()
                        .unwrap_or(0)
                        + 1;
                    return Err(format!(
                        "completed Put(k{key}={value}) ({path:?} path) is lost on member {id}: \
                         found {:?}, client {client} applied seq {}, pool {} complete {}",
                        kv.map(|kv| String::from_utf8_lossy(&kv.value).to_string()),
                        replica.native().applied_seq(client),
                        replica.native().pool_len(),
                        replica.native().pool_complete(),
                    ));
                }
                (None, _) => lost_in_doubt += usize::from(id == cluster.ids()[0] && kv.is_none()),
            }
        }
    }
    check_reads(&events)?;
    cluster.stop().await;
    Ok(format!(
        "size={size} {faults:?} client_drop={client_drop} crashes={crashes} fast={fast} slow={slow} unfinished_not_applied={lost_in_doubt} weak_puts_completed={weak_puts} weak_reads_found={weak_reads_found}"
    ))
}

#[tokio::test(start_paused = true)]
async fn fast_path_results_survive_leader_crashes_and_nothing_applies_twice() {
    common::init_logging();
    let (mut failures, mut stalls) = (Vec::new(), Vec::new());
    let mut fast_total = 0;
    let seeds = seeds(1, 400);
    for &seed in &seeds {
        match run_seed(seed).await {
            Ok(summary) => {
                eprintln!("seed={seed} ok {summary}");
                fast_total +=
                    usize::from(summary.contains("fast=") && !summary.contains("fast=0 "));
            }
            Err(reason) => {
                eprintln!("seed={seed} FAILED: {reason}\n  replay: CAIRN_SIM_SEED={seed} cargo test -p cairn-consensus --test curp_simulation");
                match reason.starts_with(LIVENESS) {
                    true => stalls.push(seed),
                    false => failures.push(seed),
                }
            }
        }
    }
    eprintln!("{} seeds, liveness stalls: {stalls:?}", seeds.len());
    // Rare stalls are known (see `simulation.rs` on openraft's unseeded election timers, and
    // the issue note on incomplete pools); more than one seed in 50 is a regression.
    assert!(
        stalls.len() <= seeds.len() / 50,
        "liveness: {} seeds stalled: {stalls:?}",
        stalls.len()
    );
    assert!(
        failures.is_empty(),
        "CURP-HO safety violated, seeds: {failures:?}"
    );
    assert!(
        fast_total * 2 >= seeds.len(),
        "the fast path was exercised in only {fast_total} of {} seeds",
        seeds.len()
    );
}

/// A leader whose pool a leader of a later term collected orders nothing more. Its pool as
/// collected is all the new leader learns from it: an `ok` given afterwards, with witnesses
/// that answered before their own pools were collected, would complete a fast path in the old
/// term that no recovery sees (seen in 1 of ~4,000 seeds of the suite above before the rule).
#[tokio::test(start_paused = true)]
async fn a_leader_whose_pool_a_later_term_collected_orders_nothing_more() {
    let cluster = SimCluster::start(3, 7, Faults::default()).await;
    cluster
        .wait_converged(CONVERGE_BUDGET)
        .await
        .expect("cluster converged");
    let (leader_id, leader) = cluster
        .up()
        .into_iter()
        .find(|(id, replica)| replica.cluster_view().leader == Some(*id))
        .expect("a leader");
    let mut serving = leader.native().watch_serving();
    let term = *serving
        .wait_for(|term| *term != 0)
        .await
        .expect("the leader serves");
    let put = |seq| Command {
        id: CommandId { client_id: 9, seq },
        op: Op::Put {
            key: key_name(seq),
            value: Bytes::from_static(b"v"),
        },
        consistency: Consistency::Strong,
        causal_dep: 0,
    };
    match leader.native_propose(put(1), now_unix_ms(), 1 << 20).await {
        Ok(ProposeReply::Leader { term: t, ok, .. }) => assert!(ok && t == term, "{t} {ok}"),
        other => panic!("the serving leader should order it: {other:?}"),
    }
    // Another member collects the leader's pool as a new leader of term + 1 does.
    let other = cluster.ids().into_iter().find(|id| *id != leader_id);
    let other = other.expect("another member");
    let request = PeerRequest::CurpPool(curppb::PoolRequest { term: term + 1 });
    let collected = cluster
        .network
        .endpoint(other)
        .call(leader_id, &common::member(leader_id), request)
        .await;
    assert!(
        matches!(collected, Ok(PeerResponse::CurpPool(_))),
        "{collected:?}"
    );
    match leader.native_propose(put(2), now_unix_ms(), 1 << 20).await {
        Err(NativeError::NotReady) => {}
        other => panic!("a deposed leader must not order: {other:?}"),
    }
    cluster.stop().await;
}
