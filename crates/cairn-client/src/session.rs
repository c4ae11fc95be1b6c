//! A client session: commands with ids, their completion, weak reads with read-your-writes.
//! See the crate doc for the protocol.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use cairn_consensus::curp::{
    Command, CommandId, Completion, Consistency, KeySet, Path, Quorums, Reply,
};
use cairn_consensus::native::command_to_pb;
use cairn_proto::curppb::{self, client_message, server_message};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::config::SessionConfig;
use crate::error::ClientError;
use crate::link::{frame, Dispatch, Link};

pub use cairn_consensus::curp::Op;

/// A finished operation: its result, and for strong ops the path it completed on.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    pub result: curppb::Result,
    pub path: Option<Path>,
}

type Answer<T> = oneshot::Sender<Result<T, ClientError>>;

/// What the bound replica answered a weak read or a flush.
enum BoundAnswer {
    Read(curppb::WeakReadReply),
    Flushed(curppb::FlushReply),
}

/// How long a write stays in a session's unapplied set. Replicas forget a session whose
/// last applied write is `CURP_SESSION_IDLE_MS` old; a write resent after that would apply
/// again (its seq is new to them), over anything the session wrote since. Half that: a write
/// applied at all applied after it was issued, so its session is remembered until at least
/// an hour after issue. (An unflushed weak write that never applied in half an hour is lost.)
const UNAPPLIED_KEEP: std::time::Duration =
    std::time::Duration::from_millis(cairn_consensus::limits::CURP_SESSION_IDLE_MS / 2);

/// When a session last resent all its unapplied weak writes, and for which bump of
/// `resend_now`.
#[derive(Default)]
struct BulkResend {
    at: Option<Instant>,
    generation: u64,
    /// The highest seq resent since then: within the period only later writes go again.
    through: u64,
}

/// A causal-gap refusal resends what is in flight at most this often: every in-flight
/// operation answers a bump by resending (the session's one resend of all unapplied weak
/// writes, then its own command), and a gap the leader cannot fill at once (its pool full,
/// say) must not turn that into a loop at network speed.
const GAP_RESEND_INTERVAL: std::time::Duration = std::time::Duration::from_millis(50);

/// A write of the session the bound replica has not shown applied, and when it was issued.
struct Unapplied {
    command: Command,
    issued: Instant,
}

struct StrongInFlight {
    completion: Completion<curppb::Result>,
    done: Option<Answer<(curppb::Result, Path)>>,
}

/// What replies reach: the commands and reads in flight.
struct State {
    /// Voters as the replicas report them (N of the quorum arithmetic); 0 until one answers.
    voters: AtomicUsize,
    strong: Mutex<HashMap<CommandId, StrongInFlight>>,
    /// Weak writes waiting for the bound replica; answered with its applied revision and the
    /// seq up to which it has applied this session (zeros when the answer does not say).
    weak: Mutex<HashMap<CommandId, Answer<(i64, u64)>>>,
    bound: Mutex<HashMap<u64, Answer<BoundAnswer>>>,
    /// Bumped when a replica announces it serves as a new leader, or when the leader refused
    /// a command for a causal gap: everything in flight is resent at once (unapplied weak
    /// writes first) rather than on the retry timer.
    resend_now: tokio::sync::watch::Sender<u64>,
    /// When a causal gap last bumped `resend_now`.
    gap_resent: Mutex<Option<Instant>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn refused(error: &curppb::Error) -> ClientError {
    let code = curppb::Code::try_from(error.code)
        .map(|code| code.as_str_name().to_string())
        .unwrap_or_else(|_| format!("code {}", error.code));
    ClientError::Refused {
        code,
        message: error.message.clone(),
    }
}

/// Codes that mean "try again": the retry timer does (a causal gap at once).
fn retryable(code: i32) -> bool {
    matches!(
        curppb::Code::try_from(code),
        Ok(curppb::Code::NotReady
            | curppb::Code::Busy
            | curppb::Code::Unavailable
            | curppb::Code::CausalGap)
    )
}

fn command_id(id: Option<&curppb::CommandId>) -> Option<CommandId> {
    cairn_consensus::native::id_from_pb(id).ok()
}

impl Dispatch for State {
    fn dispatch(&self, _replica: usize, message: curppb::ServerMessage) {
        use server_message::Message;
        let Some(message) = message.message else {
            return;
        };
        match message {
            Message::HelloReply(hello) => {
                self.voters
                    .fetch_max(hello.voters as usize, Ordering::AcqRel);
            }
            Message::LeaderReply(leader) => self.absorb(
                leader.id.as_ref(),
                Reply::Leader {
                    replica: leader.member_id,
                    term: leader.term,
                    ok: leader.ok,
                    result: leader.result.unwrap_or_default(),
                },
            ),
            Message::WitnessReply(witness) => self.absorb(
                witness.id.as_ref(),
                Reply::Witness {
                    replica: witness.member_id,
                    term: witness.term,
                    ok: witness.ok,
                },
            ),
            // Only strong proposals get sync replies: a weak write is answered by a
            // `CausalReply` (or an error) whatever the bound replica made of it.
            Message::SyncReply(sync) => self.absorb(
                sync.id.as_ref(),
                Reply::Sync {
                    result: sync.result.unwrap_or_default(),
                },
            ),
            Message::CausalReply(causal) => {
                if let Some(id) = command_id(causal.id.as_ref()) {
                    if let Some(answer) = lock(&self.weak).remove(&id) {
                        let applied = (causal.applied_revision, causal.applied_seq);
                        let _ = answer.send(Ok(applied));
                    }
                }
            }
            Message::WeakReadReply(read) => {
                if let Some(answer) = lock(&self.bound).remove(&read.request_id) {
                    let _ = answer.send(Ok(BoundAnswer::Read(read)));
                }
            }
            Message::FlushReply(flushed) => {
                if let Some(answer) = lock(&self.bound).remove(&flushed.request_id) {
                    let _ = answer.send(Ok(BoundAnswer::Flushed(flushed)));
                }
            }
            Message::Error(error) => self.fail(&error),
            Message::Serving(serving) => {
                tracing::debug!(
                    replica = serving.member_id,
                    term = serving.term,
                    "a new leader serves; resending what is in flight"
                );
                self.resend_now.send_modify(|generation| *generation += 1);
            }
        }
    }
}

impl State {
    fn new() -> State {
        State {
            voters: AtomicUsize::new(0),
            strong: Mutex::new(HashMap::new()),
            weak: Mutex::new(HashMap::new()),
            bound: Mutex::new(HashMap::new()),
            resend_now: tokio::sync::watch::channel(0).0,
            gap_resent: Mutex::new(None),
        }
    }

    fn absorb(&self, id: Option<&curppb::CommandId>, reply: Reply<curppb::Result>) {
        let Some(id) = command_id(id) else {
            return;
        };
        let mut strong = lock(&self.strong);
        let Some(in_flight) = strong.get_mut(&id) else {
            return;
        };
        if let Some(done) = in_flight.completion.absorb(reply) {
            if let Some(answer) = in_flight.done.take() {
                let _ = answer.send(Ok((done.result, done.path)));
            }
            strong.remove(&id);
        }
    }

    /// A refusal ends the operation unless it says "retry".
    fn fail(&self, error: &curppb::Error) {
        if error.code == curppb::Code::CausalGap as i32 {
            // The leader lacks an earlier weak write of this session (lost with a connection
            // or a pool): resend them all, in order, ahead of what is in flight.
            let mut gap_resent = lock(&self.gap_resent);
            if gap_resent.is_none_or(|at| at.elapsed() >= GAP_RESEND_INTERVAL) {
                *gap_resent = Some(Instant::now());
                self.resend_now.send_modify(|generation| *generation += 1);
            }
        }
        if retryable(error.code) {
            return;
        }
        if let Some(id) = command_id(error.id.as_ref()) {
            if let Some(mut in_flight) = lock(&self.strong).remove(&id) {
                if let Some(answer) = in_flight.done.take() {
                    let _ = answer.send(Err(refused(error)));
                }
            }
            if let Some(answer) = lock(&self.weak).remove(&id) {
                // A resent weak write the session has moved past: a later command of this
                // session applied, and none applies before the unapplied weak writes issued
                // ahead of it (each names the last one as its dependency), so this one
                // applied. The replica cannot answer it from its session table, which keeps
                // only the latest. The answer carries no applied position: the write stays
                // unapplied (resent, laid over reads) until a later answer shows it applied.
                let outcome = match error.code == curppb::Code::Stale as i32 {
                    true => Ok((0, 0)),
                    false => Err(refused(error)),
                };
                let _ = answer.send(outcome);
            }
        } else if let Some(answer) = lock(&self.bound).remove(&error.request_id) {
            let _ = answer.send(Err(refused(error)));
        }
    }
}

/// One client session over the native protocol; share it with `Arc` to keep several
/// operations in flight.
pub struct Session {
    config: SessionConfig,
    client_id: u64,
    state: Arc<State>,
    links: Vec<Link>,
    /// Held while a command takes its seq and is queued to every replica, so every link
    /// carries the session's commands in seq order.
    send_order: tokio::sync::Mutex<()>,
    next_seq: AtomicU64,
    next_request: AtomicU64,
    /// Weak writes sent again (by retries, gap refusals and new leaders), for diagnostics.
    weak_resends: AtomicU64,
    /// The session's last resend of all its unapplied weak writes; held while one is sent,
    /// so an operation that skips it sends its own command after it.
    bulk_resent: tokio::sync::Mutex<BulkResend>,
    /// Seq of the latest weak write: the next command's `causal_dep`.
    last_weak: AtomicU64,
    /// Seq of the latest write, strong or weak (what `flush` waits for).
    last_write: AtomicU64,
    /// The highest revision a weak read or flush has shown this session.
    min_revision: AtomicI64,
    /// This session's writes the bound replica has not shown applied yet, by seq, for
    /// read-your-writes and for resending weak writes; forgotten after `UNAPPLIED_KEEP`.
    unapplied: Mutex<BTreeMap<u64, Unapplied>>,
}

impl Session {
    /// Opens a session: connects to every endpoint and waits (up to the timeout) until one
    /// replica has said how many voters the cluster has.
    pub async fn connect(config: SessionConfig) -> Result<Session, ClientError> {
        if config.endpoints.is_empty() {
            return Err(ClientError::NoEndpoints);
        }
        if config.bound >= config.endpoints.len() {
            return Err(ClientError::BadBound {
                bound: config.bound,
                endpoints: config.endpoints.len(),
            });
        }
        if config.timeout >= UNAPPLIED_KEEP {
            return Err(ClientError::BadTimeout {
                timeout: config.timeout,
                max: UNAPPLIED_KEEP,
            });
        }
        let state = Arc::new(State::new());
        let links = config
            .endpoints
            .iter()
            .enumerate()
            .map(|(replica, endpoint)| {
                let delay = match replica == config.bound {
                    true => std::time::Duration::ZERO,
                    false => config.delay,
                };
                Link::start(replica, endpoint.clone(), delay, state.clone())
            })
            .collect();
        // Always drawn, never chosen: replicas know a session only by its id, so two sessions
        // sharing one would have each other's commands taken for duplicates or for stale.
        let client_id = rand::random::<u64>().max(1);
        let deadline = Instant::now() + config.timeout;
        while state.voters.load(Ordering::Acquire) == 0 {
            if Instant::now() >= deadline {
                return Err(ClientError::Timeout(config.timeout));
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        Ok(Session {
            config,
            client_id,
            state,
            links,
            send_order: tokio::sync::Mutex::new(()),
            next_seq: AtomicU64::new(1),
            next_request: AtomicU64::new(1),
            weak_resends: AtomicU64::new(0),
            bulk_resent: tokio::sync::Mutex::new(BulkResend::default()),
            last_weak: AtomicU64::new(0),
            last_write: AtomicU64::new(0),
            min_revision: AtomicI64::new(0),
            unapplied: Mutex::new(BTreeMap::new()),
        })
    }

    pub fn client_id(&self) -> u64 {
        self.client_id
    }

    fn quorums(&self) -> Quorums {
        let voters = self.state.voters.load(Ordering::Acquire);
        Quorums::new(if voters == 0 {
            self.links.len()
        } else {
            voters
        })
    }

    /// A linearizable operation.
    pub async fn strong(&self, op: Op) -> Result<Outcome, ClientError> {
        validate(&op)?;
        let (answer, done) = oneshot::channel();
        let deadline = Instant::now() + self.config.timeout;
        let order = self
            .before_deadline(deadline, self.send_order.lock())
            .await?;
        let command = self.command(op, Consistency::Strong);
        lock(&self.state.strong).insert(
            command.id,
            StrongInFlight {
                completion: Completion::new(self.quorums()),
                done: Some(answer),
            },
        );
        let message = frame(client_message::Message::Propose(curppb::Propose {
            command: Some(command_to_pb(&command)),
        }));
        let sent = self
            .before_deadline(deadline, self.send_all(&message))
            .await;
        drop(order);
        // A retry resends the session's unapplied weak writes first: the leader orders this
        // command only after its causal dependency.
        let resend = || async {
            self.resend_weak_writes().await;
            self.send_all(&message).await;
        };
        let outcome = match sent {
            Ok(()) => self.await_retrying(deadline, done, resend).await,
            Err(timed_out) => Err(timed_out),
        };
        lock(&self.state.strong).remove(&command.id);
        let (result, path) = outcome?;
        Ok(Outcome {
            result,
            path: Some(path),
        })
    }

    /// A causal operation: a write completes when the bound replica has it; a read is
    /// answered by the bound replica.
    pub async fn weak(&self, op: Op) -> Result<Outcome, ClientError> {
        validate(&op)?;
        if !op.writes() {
            return self.weak_read(op).await;
        }
        let (answer, done) = oneshot::channel();
        let deadline = Instant::now() + self.config.timeout;
        let order = self
            .before_deadline(deadline, self.send_order.lock())
            .await?;
        let command = self.command(op, Consistency::Weak);
        self.last_weak.store(command.id.seq, Ordering::Release);
        lock(&self.state.weak).insert(command.id, answer);
        let (to_bound, to_others) = self.causal_frames(&command);
        // Cut short, the write stays among the unapplied ones that later resends carry.
        let sent = self
            .before_deadline(deadline, self.send_causal(&to_bound, &to_others))
            .await;
        drop(order);
        // Retries resend the unapplied weak writes, this one included, in seq order; this one
        // alone if a weak read showed it applied meanwhile (the bound replica answers it from
        // its session table).
        let resend = || async {
            let through = self.resend_weak_writes().await;
            if command.id.seq > through || !lock(&self.unapplied).contains_key(&command.id.seq) {
                self.weak_resends.fetch_add(1, Ordering::Relaxed);
                self.send_causal(&to_bound, &to_others).await;
            }
        };
        let outcome = match sent {
            Ok(()) => self.await_retrying(deadline, done, resend).await,
            Err(timed_out) => Err(timed_out),
        };
        lock(&self.state.weak).remove(&command.id);
        // Only the bound replica answers a weak write, and it says what a weak read would:
        // writes up to its applied seq need neither a resend nor an overlay, as long as later
        // reads wait for its applied revision. A session that only writes would otherwise keep
        // every write for `UNAPPLIED_KEEP`.
        let (applied_revision, applied_seq) = outcome?;
        self.saw(applied_revision, applied_seq);
        Ok(Outcome {
            result: curppb::Result::default(),
            path: None,
        })
    }

    /// Writes this session still keeps to resend and to lay over weak reads: those its bound
    /// replica has not yet shown applied (each weak write's answer and each weak read show
    /// how far it got).
    pub fn unapplied_writes(&self) -> usize {
        lock(&self.unapplied).len()
    }

    /// Weak writes this session has sent again so far (each resend counts once, whatever
    /// number of replicas it went to).
    pub fn weak_resends(&self) -> u64 {
        self.weak_resends.load(Ordering::Relaxed)
    }

    /// Waits until the bound replica has applied every command this session issued (the
    /// durability point of weak writes). Resends unapplied weak writes while it waits.
    pub async fn flush(&self) -> Result<(), ClientError> {
        // Only writes are in a replica's session table.
        let seq = self.last_write.load(Ordering::Acquire);
        if seq == 0 {
            return Ok(());
        }
        let request_id = self.next_request.fetch_add(1, Ordering::AcqRel);
        let message = frame(client_message::Message::Flush(curppb::Flush {
            client_id: self.client_id,
            request_id,
            seq,
        }));
        let answer = self
            .ask_bound(request_id, &message, || async {
                self.resend_weak_writes().await;
            })
            .await?;
        if let BoundAnswer::Flushed(flushed) = answer {
            self.saw(flushed.applied_revision, seq);
        }
        Ok(())
    }

    /// The next command of the session; called under `send_order`, so `last_weak` is the
    /// latest weak write queued before it.
    ///
    /// That write is its causal dependency only while it is in the unapplied set. Once the
    /// bound replica showed it applied it is committed, so every serving leader holds it;
    /// naming it anyway would have replicas that forgot the session (idle an hour) refuse the
    /// command for a gap, and a resend of a forgotten session's write applies it again.
    fn command(&self, op: Op, consistency: Consistency) -> Command {
        let seq = self.next_seq.fetch_add(1, Ordering::AcqRel);
        let now = Instant::now();
        let mut unapplied = lock(&self.unapplied);
        forget_stale(&mut unapplied, now);
        let last_weak = self.last_weak.load(Ordering::Acquire);
        let command = Command {
            id: CommandId {
                client_id: self.client_id,
                seq,
            },
            op,
            consistency,
            causal_dep: match unapplied.contains_key(&last_weak) {
                true => last_weak,
                false => 0,
            },
        };
        if command.writes() {
            self.last_write.fetch_max(seq, Ordering::AcqRel);
            let command = command.clone();
            unapplied.insert(
                seq,
                Unapplied {
                    command,
                    issued: now,
                },
            );
        }
        command
    }

    fn causal_frames(&self, command: &Command) -> (Bytes, Bytes) {
        let causal = |reply| {
            frame(client_message::Message::CausalPropose(
                curppb::CausalPropose {
                    command: Some(command_to_pb(command)),
                    reply,
                },
            ))
        };
        (causal(true), causal(false))
    }

    async fn send_all(&self, message: &Bytes) {
        for link in &self.links {
            link.send(message.clone()).await;
        }
    }

    /// The bound replica first, so it answers as early as it can.
    async fn send_causal(&self, to_bound: &Bytes, to_others: &Bytes) {
        self.links[self.config.bound].send(to_bound.clone()).await;
        for (replica, link) in self.links.iter().enumerate() {
            if replica != self.config.bound {
                link.send(to_others.clone()).await;
            }
        }
    }

    /// Resends every unapplied weak write, in seq order, once per retry period and once per
    /// `resend_now` generation; in between, only those issued since (above `through`). The
    /// in-flight operations all call this on their retry timers and on every bump, and each
    /// resending the whole set made a storm (measured: 1 M weak writes with 200 in flight sent
    /// 11.6 M resends, each `BUSY` from a lagging bound replica ~20 k of them). Held locked
    /// while the writes are queued, so a caller's own command goes after them on every link.
    /// Returns the highest seq resent within the period: writes up to it need no resend now.
    async fn resend_weak_writes(&self) -> u64 {
        let mut bulk = self.bulk_resent.lock().await;
        let generation = *self.state.resend_now.borrow();
        let recent = bulk.at.is_some_and(|at| at.elapsed() < self.config.retry);
        let whole = !(recent && bulk.generation == generation);
        let after = if whole { 0 } else { bulk.through };
        let weak: Vec<Command> = {
            let mut unapplied = lock(&self.unapplied);
            forget_stale(&mut unapplied, Instant::now());
            unapplied
                .range(after + 1..)
                .map(|(_, unapplied)| &unapplied.command)
                .filter(|command| command.consistency == Consistency::Weak)
                .cloned()
                .collect()
        };
        // Progress is kept write by write: a caller whose deadline cuts its resend short leaves
        // the next one to go on after what is already queued, not to start over.
        if whole {
            bulk.at = Some(Instant::now());
            bulk.generation = generation;
            bulk.through = 0;
        }
        for command in weak {
            let (to_bound, to_others) = self.causal_frames(&command);
            self.send_causal(&to_bound, &to_others).await;
            self.weak_resends.fetch_add(1, Ordering::Relaxed);
            bulk.through = bulk.through.max(command.id.seq);
        }
        // The period starts again once the writes are queued: a whole resend slower than a
        // retry period (a stalled link) must not let the next caller start another at once.
        if whole {
            bulk.at = Some(Instant::now());
        }
        bulk.through
    }

    async fn weak_read(&self, op: Op) -> Result<Outcome, ClientError> {
        let request_id = self.next_request.fetch_add(1, Ordering::AcqRel);
        let message = frame(client_message::Message::WeakRead(curppb::WeakRead {
            client_id: self.client_id,
            request_id,
            op: Some(cairn_consensus::native::op_to_pb(&op)),
            min_revision: self.min_revision.load(Ordering::Acquire),
        }));
        let answer = self.ask_bound(request_id, &message, || async {}).await?;
        let BoundAnswer::Read(read) = answer else {
            return Err(ClientError::Refused {
                code: "UNKNOWN".to_string(),
                message: "a flush reply answered a read".to_string(),
            });
        };
        self.saw(read.applied_revision, read.applied_seq);
        let result = self.overlay(&op, read.result.unwrap_or_default(), read.applied_seq);
        Ok(Outcome { result, path: None })
    }

    /// The bound replica showed `applied_revision` and that it applied this session up to
    /// `applied_seq`.
    fn saw(&self, applied_revision: i64, applied_seq: u64) {
        self.min_revision
            .fetch_max(applied_revision, Ordering::AcqRel);
        forget_applied(&mut lock(&self.unapplied), applied_seq);
    }

    /// Read-your-writes: lays this session's writes the replica had not applied (seq above
    /// `applied_seq`) over its answer, in seq order.
    fn overlay(&self, op: &Op, mut result: curppb::Result, applied_seq: u64) -> curppb::Result {
        let unapplied = lock(&self.unapplied);
        let read_keys = op.key_set();
        let mut changed = false;
        let mut kvs: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        for command in unapplied
            .range(applied_seq + 1..)
            .map(|(_, unapplied)| &unapplied.command)
        {
            let KeySet::Point(key) = command.key_set() else {
                continue;
            };
            if !read_keys.contains(&key) {
                continue;
            }
            if !changed {
                kvs = std::mem::take(&mut result.kvs)
                    .into_iter()
                    .map(|kv| (kv.key, kv.value))
                    .collect();
                changed = true;
            }
            match &command.op {
                Op::Put { value, .. } => {
                    kvs.insert(key.to_vec(), value.to_vec());
                }
                Op::Delete { .. } => {
                    kvs.remove(key.as_ref());
                }
                Op::Get { .. } | Op::Scan { .. } => {}
            }
        }
        if changed {
            let limit = match op {
                Op::Scan { limit, .. } if *limit > 0 => *limit as usize,
                _ => usize::MAX,
            };
            result.more |= kvs.len() > limit;
            result.kvs = kvs
                .into_iter()
                .take(limit)
                .map(|(key, value)| curppb::KeyValue { key, value })
                .collect();
        }
        result
    }

    async fn ask_bound<F, Fut>(
        &self,
        request_id: u64,
        message: &Bytes,
        on_retry: F,
    ) -> Result<BoundAnswer, ClientError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = ()>,
    {
        let (answer, done) = oneshot::channel();
        let deadline = Instant::now() + self.config.timeout;
        lock(&self.state.bound).insert(request_id, answer);
        let bound = &self.links[self.config.bound];
        let outcome = match self
            .before_deadline(deadline, bound.send(message.clone()))
            .await
        {
            Ok(()) => {
                self.await_retrying(deadline, done, || async {
                    on_retry().await;
                    bound.send(message.clone()).await;
                })
                .await
            }
            Err(timed_out) => Err(timed_out),
        };
        lock(&self.state.bound).remove(&request_id);
        outcome
    }

    /// Runs `step` (the first send of an operation, or the wait for the session's send
    /// order) unless `deadline` passes first: a link's queue to a silent replica fills, and a
    /// send then waits until that replica reads again.
    async fn before_deadline<T>(
        &self,
        deadline: Instant,
        step: impl Future<Output = T>,
    ) -> Result<T, ClientError> {
        tokio::time::timeout_at(deadline, step)
            .await
            .map_err(|_| ClientError::Timeout(self.config.timeout))
    }

    /// Waits for `done`, calling `resend` every retry period and whenever a new leader
    /// announces it serves, up to `deadline`.
    async fn await_retrying<T, F, Fut>(
        &self,
        deadline: Instant,
        mut done: oneshot::Receiver<Result<T, ClientError>>,
        resend: F,
    ) -> Result<T, ClientError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = ()>,
    {
        let timed_out = || Err(ClientError::Timeout(self.config.timeout));
        let mut resend_now = self.state.resend_now.subscribe();
        loop {
            let retry_at = (Instant::now() + self.config.retry).min(deadline);
            // Biased to the answer: one that arrived with the deadline is still the outcome.
            tokio::select! {
                biased;
                answered = &mut done => return answered.unwrap_or(Err(ClientError::Closed)),
                _ = tokio::time::sleep_until(retry_at) => {
                    if Instant::now() >= deadline {
                        return timed_out();
                    }
                }
                // The sender lives in `state`, as long as this session.
                Ok(()) = resend_now.changed() => {}
            }
            // A resend waits while a link's queue is full (a silent replica) and while another
            // operation resends the session's weak writes: the answer and the deadline still
            // end the operation. Dropped midway, a resend leaves the rest to the next one.
            tokio::select! {
                biased;
                answered = &mut done => return answered.unwrap_or(Err(ClientError::Closed)),
                _ = tokio::time::sleep_until(deadline) => return timed_out(),
                () = resend() => {}
            }
        }
    }
}

/// Drops the writes the bound replica has applied (seq up to `applied_seq`).
fn forget_applied(unapplied: &mut BTreeMap<u64, Unapplied>, applied_seq: u64) {
    forget_lowest_while(unapplied, |seq, _| seq <= applied_seq);
}

/// Drops the writes issued longer than `UNAPPLIED_KEEP` before `now` (the lowest seqs: seqs
/// are issued in time order).
fn forget_stale(unapplied: &mut BTreeMap<u64, Unapplied>, now: Instant) {
    forget_lowest_while(unapplied, |_, write| {
        now.duration_since(write.issued) >= UNAPPLIED_KEEP
    });
}

/// Drops writes from the lowest seq up while `forget` holds.
fn forget_lowest_while(
    unapplied: &mut BTreeMap<u64, Unapplied>,
    forget: impl Fn(u64, &Unapplied) -> bool,
) {
    while let Some(entry) = unapplied.first_entry() {
        if !forget(*entry.key(), entry.get()) {
            return;
        }
        entry.remove();
    }
}

fn validate(op: &Op) -> Result<(), ClientError> {
    op.validate().map_err(|error| ClientError::Refused {
        code: curppb::Code::InvalidArgument.as_str_name().to_string(),
        message: error.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A weak write waiting for its answer, and the receiver of that answer.
    fn waiting_weak_write(
        state: &State,
        seq: u64,
    ) -> oneshot::Receiver<Result<(i64, u64), ClientError>> {
        let (answer, done) = oneshot::channel();
        lock(&state.weak).insert(CommandId { client_id: 9, seq }, answer);
        done
    }

    fn refusal(seq: u64, code: curppb::Code) -> curppb::ServerMessage {
        curppb::ServerMessage {
            message: Some(server_message::Message::Error(curppb::Error {
                id: Some(curppb::CommandId { client_id: 9, seq }),
                request_id: 0,
                code: code.into(),
                message: "refused".into(),
            })),
        }
    }

    #[test]
    fn a_weak_write_refused_as_stale_completes_and_other_refusals_fail_it() {
        let state = State::new();
        let mut stale = waiting_weak_write(&state, 4);
        let mut too_large = waiting_weak_write(&state, 5);
        state.dispatch(0, refusal(4, curppb::Code::Stale));
        state.dispatch(0, refusal(5, curppb::Code::TooLarge));
        assert_eq!(stale.try_recv().expect("answered"), Ok((0, 0)));
        assert!(matches!(
            too_large.try_recv().expect("answered"),
            Err(ClientError::Refused { code, .. }) if code == "TOO_LARGE"
        ));
        assert!(lock(&state.weak).is_empty());
    }

    #[test]
    fn a_timeout_past_the_unapplied_keep_is_refused_before_connecting() {
        let config = SessionConfig {
            timeout: UNAPPLIED_KEEP,
            ..SessionConfig::new(vec!["127.0.0.1:1".into()])
        };
        let refused = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(async {
                // Without the check, connect would wait out the whole timeout for a voter.
                tokio::time::timeout(std::time::Duration::from_secs(5), Session::connect(config))
                    .await
            })
            .expect("refused at once");
        assert!(matches!(refused, Err(ClientError::BadTimeout { .. })));
    }
}
