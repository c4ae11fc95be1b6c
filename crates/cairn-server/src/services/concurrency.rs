//! The server side of etcd's `clientv3/concurrency` recipes, shared by the Lock and Election
//! services: a queue of waiters under a key prefix, ordered by create revision.
//!
//! A waiter's key is `prefix + hex(lease)`, attached to its lease; the waiter whose key has the
//! smallest create revision holds the lock (or leads the election). Everyone else waits until
//! every key created before theirs is gone — released, resigned, or deleted with its lease.
//!
//! etcd runs these recipes inside the server through its own Go client. Cairn runs the same
//! steps against the node: every write is one proposal (a txn, as etcd's), every decision
//! follows a read index (etcd's linearizable Get), and waiting for a deletion re-checks the
//! local store at each applied revision (etcd watches the key on the member it talks to).
//! Deletions are final, so a condition seen true on this member stays true everywhere.

use cairn_mvcc::index::{prefix_end, KeyRange};
use cairn_mvcc::watch::{WatchFilter, WatchRead};
use cairn_proto::authpb::permission::Type as PermType;
use cairn_proto::cairnpb::internal_request::Request as Internal;
use cairn_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use cairn_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use cairn_proto::etcdserverpb::request_op::Request as Op;
use cairn_proto::etcdserverpb::response_op::Response as OpResponse;
use cairn_proto::etcdserverpb::{
    Compare, LeaseGrantRequest, PutRequest, RangeRequest, RequestOp, TxnRequest, TxnResponse,
};
use cairn_proto::mvccpb::{Event, KeyValue};
use tokio::sync::watch;
use tonic::metadata::MetadataMap;
use tonic::{Response, Status};

use crate::error::ServerError;
use crate::limits::WATCH_EVENTS_PER_RESPONSE_MAX;
use crate::node::{until_stopping, Node};
use crate::services::lease::random_lease_id;

/// TTL of the lease granted for a waiter that names none (etcd's `defaultSessionTTL`). Like
/// etcd's orphaned server-side session, nobody keeps it alive: the key goes after a minute.
const SESSION_TTL_S: i64 = 60;

/// The prefix of the queue for lock or election `name` (etcd appends "/").
pub(crate) fn queue_prefix(name: &[u8]) -> Vec<u8> {
    let mut prefix = name.to_vec();
    prefix.push(b'/');
    prefix
}

/// A waiter's key: the prefix and the lease id in hex, as Go's `%x` prints an `int64` (a minus
/// sign for negative ids, which only a client sending a bogus lease can produce).
fn waiter_key(prefix: &[u8], lease: i64) -> Vec<u8> {
    let sign = if lease < 0 { "-" } else { "" };
    let mut key = prefix.to_vec();
    key.extend_from_slice(format!("{sign}{:x}", lease.unsigned_abs()).as_bytes());
    key
}

/// The key under `prefix` created first (`first = true`) or last, with create revision at most
/// `max_create_revision` (0: any): etcd's `WithFirstCreate` / `WithLastCreate` reads.
fn edge_created(prefix: &[u8], first: bool, max_create_revision: i64) -> RangeRequest {
    let order = if first {
        SortOrder::Ascend
    } else {
        SortOrder::Descend
    };
    RangeRequest {
        key: prefix.to_vec(),
        range_end: prefix_end(prefix),
        limit: 1,
        sort_order: order as i32,
        sort_target: SortTarget::Create as i32,
        max_create_revision,
        ..Default::default()
    }
}

/// Refuses a caller that may not read (and, when `write`, write) every key of `range_end`'s
/// range from `key` (etcd's encoding). The recipe's own reads and writes then run as the
/// node: etcd runs them with the caller's token, which asks the same of the caller up front.
pub(crate) fn authorize(
    node: &Node,
    metadata: &MetadataMap,
    key: &[u8],
    range_end: &[u8],
    write: bool,
) -> Result<(), ServerError> {
    let caller = node.caller(metadata)?;
    let store = node.store();
    let auth = store.auth();
    auth.check_range(&caller.user, key, range_end, PermType::Read)?;
    if write {
        auth.check_range(&caller.user, key, range_end, PermType::Write)?;
    }
    Ok(())
}

/// `authorize` for the whole queue of lock or election `name`.
pub(crate) fn authorize_queue(
    node: &Node,
    metadata: &MetadataMap,
    name: &[u8],
    write: bool,
) -> Result<(), ServerError> {
    let prefix = queue_prefix(name);
    authorize(node, metadata, &prefix, &prefix_end(&prefix), write)
}

/// Runs `call` if `allowed`, answering either way in the form of these services (`reply`).
pub(crate) async fn reply_if<T>(
    allowed: Result<(), ServerError>,
    call: impl std::future::Future<Output = Result<T, ServerError>>,
) -> Result<Response<T>, Status> {
    match allowed {
        Ok(()) => reply(call.await),
        Err(refused) => reply(Err(refused)),
    }
}

pub(crate) fn get(key: &[u8]) -> RangeRequest {
    RangeRequest {
        key: key.to_vec(),
        ..Default::default()
    }
}

/// The answer of a Lock or Election RPC, a refusal in the form etcd gives these services.
pub(crate) fn reply<T>(result: Result<T, ServerError>) -> Result<Response<T>, Status> {
    result
        .map(Response::new)
        .map_err(ServerError::into_recipe_status)
}

/// A txn that only applies while `key` still has create revision `create_revision` (0: while
/// it does not exist) — the ownership check of every recipe step.
pub(crate) fn txn_if_created(
    key: &[u8],
    create_revision: i64,
    success: Vec<Op>,
    failure: Vec<Op>,
) -> TxnRequest {
    let op = |request| RequestOp {
        request: Some(request),
    };
    TxnRequest {
        compare: vec![Compare {
            result: CompareResult::Equal as i32,
            target: CompareTarget::Create as i32,
            key: key.to_vec(),
            range_end: Vec::new(),
            target_union: Some(TargetUnion::CreateRevision(create_revision)),
        }],
        success: success.into_iter().map(op).collect(),
        failure: failure.into_iter().map(op).collect(),
    }
}

/// Proposes a recipe txn and returns its response (header not yet filled).
pub(crate) async fn propose_txn(node: &Node, txn: TxnRequest) -> Result<TxnResponse, ServerError> {
    cairn_mvcc::validate::check_txn(&txn, node.config().max_txn_ops)?;
    let result = node.propose_internal(Internal::Txn(txn)).await?;
    Ok(expect_response!(result, Txn))
}

/// A put of `value` on `key` under `lease`.
pub(crate) fn put(key: &[u8], value: &[u8], lease: i64) -> Op {
    Op::RequestPut(PutRequest {
        key: key.to_vec(),
        value: value.to_vec(),
        lease,
        ..Default::default()
    })
}

/// The first key of range response `index` of a recipe txn. The txn was built here, so a
/// missing range response is a bug, not bad input.
fn first_kv(response: &TxnResponse, index: usize) -> Option<&KeyValue> {
    match response
        .responses
        .get(index)
        .and_then(|op| op.response.as_ref())
    {
        Some(OpResponse::ResponseRange(range)) => range.kvs.first(),
        other => panic!("recipe txn answer {index} is not a range: {other:?}"),
    }
}

/// The lease a waiter's key lives on: the client's, or — when it names none — a fresh one,
/// as etcd's server-side session grants.
pub(crate) async fn session_lease(node: &Node, lease: i64) -> Result<i64, ServerError> {
    if lease != 0 {
        return Ok(lease);
    }
    let grant = LeaseGrantRequest {
        ttl: SESSION_TTL_S,
        id: random_lease_id(),
    };
    let result = node.propose_internal(Internal::LeaseGrant(grant)).await?;
    Ok(expect_response!(result, LeaseGrant).id)
}

/// A waiter's place in the queue, as the enqueueing txn found it.
pub(crate) struct Place {
    pub key: Vec<u8>,
    /// Create revision of `key`: the waiter's position.
    pub create_revision: i64,
    /// The txn's answer (its header is the recipe's header when nobody is ahead).
    pub txn: TxnResponse,
    /// The value of `key` when it already existed (the lease re-joined the queue).
    pub existing_value: Option<Vec<u8>>,
    /// No key under the prefix was created before `key`: the waiter is at the head already.
    pub at_head: bool,
}

/// Joins the queue under `prefix` with `value` on `lease`, or finds the place this lease
/// already holds: one txn, as etcd's `Mutex.tryAcquire` and `Election.Campaign`.
pub(crate) async fn enqueue(
    node: &Node,
    prefix: &[u8],
    lease: i64,
    value: &[u8],
) -> Result<Place, ServerError> {
    let key = waiter_key(prefix, lease);
    let head = || Op::RequestRange(edge_created(prefix, true, 0));
    let txn = txn_if_created(
        &key,
        0,
        vec![put(&key, value, lease), head()],
        vec![Op::RequestRange(get(&key)), head()],
    );
    let txn = propose_txn(node, txn).await?;
    let (create_revision, existing_value) = if txn.succeeded {
        let revision = txn.header.as_ref().map_or(0, |header| header.revision);
        (revision, None)
    } else {
        // The compare failed, so the key existed at the txn's revision and the range has it.
        let kv = first_kv(&txn, 0).expect("an existing key is read back");
        (kv.create_revision, Some(kv.value.clone()))
    };
    let at_head = first_kv(&txn, 1).is_none_or(|head| head.create_revision == create_revision);
    Ok(Place {
        key,
        create_revision,
        txn,
        existing_value,
        at_head,
    })
}

/// Create revision of `key` in this member's store; 0 when it does not exist.
fn create_revision_of(node: &Node, key: &[u8]) -> Result<i64, ServerError> {
    let response = node.store().range(&get(key))?;
    Ok(response.kvs.first().map_or(0, |kv| kv.create_revision))
}

/// Waits for the next applied revision; fails when the node stops.
async fn next_revision(
    revisions: &mut watch::Receiver<i64>,
    stopping: &mut watch::Receiver<bool>,
) -> Result<(), ServerError> {
    tokio::select! {
        changed = revisions.changed() => changed.map_err(|_| ServerError::Stopped),
        _ = until_stopping(stopping) => Err(ServerError::Stopped),
    }
}

/// Waits until no key under `prefix` has a create revision up to `max_create_revision`
/// (etcd's `waitDeletes`): find the newest such key, wait for its deletion, look again.
pub(crate) async fn wait_deletes(
    node: &Node,
    prefix: &[u8],
    max_create_revision: i64,
) -> Result<(), ServerError> {
    // Subscribed before the first look, so no revision applied after it goes unnoticed.
    let mut revisions = node.revisions();
    let mut stopping = node.stopping();
    let newest_before = edge_created(prefix, false, max_create_revision);
    loop {
        node.read_index().await?;
        let Some(ahead) = node.store().range(&newest_before)?.kvs.pop() else {
            return Ok(());
        };
        // Deleted, or deleted and created again: either way this incarnation is gone.
        while create_revision_of(node, &ahead.key)? == ahead.create_revision {
            next_revision(&mut revisions, &mut stopping).await?;
        }
    }
}

/// A linearizable read of the key under `prefix` created first (the lock holder or election
/// leader), with the revision it was read at.
pub(crate) async fn head(
    node: &Node,
    prefix: &[u8],
) -> Result<(i64, Option<KeyValue>), ServerError> {
    node.read_index().await?;
    let mut response = node.store().range(&edge_created(prefix, true, 0))?;
    let revision = response.header.map_or(0, |header| header.revision);
    Ok((revision, response.kvs.pop()))
}

/// A watcher on this member's event history: what etcd's recipes get from a Watch.
pub(crate) struct HistoryWatch {
    filter: WatchFilter,
    /// First revision not yet read.
    next: i64,
    revisions: watch::Receiver<i64>,
    stopping: watch::Receiver<bool>,
}

impl HistoryWatch {
    /// Events on `key` (or every key under it when `prefix`) from revision `from` on.
    pub(crate) fn new(node: &Node, key: &[u8], prefix: bool, from: i64) -> HistoryWatch {
        let range_end = if prefix { prefix_end(key) } else { Vec::new() };
        HistoryWatch {
            filter: WatchFilter {
                range: KeyRange::new(key, &range_end),
                no_put: false,
                no_delete: false,
                prev_kv: false,
            },
            next: from,
            revisions: node.revisions(),
            stopping: node.stopping(),
        }
    }

    /// The next batch of events (whole revisions) and the revision it is complete up to.
    /// Fails when the history was compacted past the watcher (etcd cancels such a watch)
    /// or the node stops.
    pub(crate) async fn next(&mut self, node: &Node) -> Result<(i64, Vec<Event>), ServerError> {
        loop {
            let (read, current) = {
                let store = node.store();
                let read =
                    store.watch_events(&self.filter, self.next, WATCH_EVENTS_PER_RESPONSE_MAX);
                (read, store.current_revision())
            };
            match read {
                WatchRead::Compacted { .. } => return Err(cairn_mvcc::MvccError::Compacted.into()),
                WatchRead::Events {
                    events,
                    next_revision,
                } => {
                    self.next = next_revision;
                    if !events.is_empty() {
                        return Ok((next_revision - 1, events));
                    }
                }
            }
            if self.next > current {
                next_revision(&mut self.revisions, &mut self.stopping).await?;
            }
        }
    }
}

/// Takes a waiter out of the queue when its RPC ends without an answer: etcd deletes the key
/// of a `Lock` or `Campaign` whose client gave up while waiting.
pub(crate) struct Withdraw {
    node: Node,
    /// The proposal that withdraws; `None` once the waiter keeps its place.
    request: Option<Internal>,
}

impl Withdraw {
    pub(crate) fn new(node: &Node, request: Internal) -> Withdraw {
        Withdraw {
            node: node.clone(),
            request: Some(request),
        }
    }

    /// The waiter keeps its key (it got the lock or leadership, or etcd would leave it).
    pub(crate) fn keep(mut self) {
        self.request = None;
    }

    /// Withdraws before answering. Like etcd, a failure here is not reported: the caller
    /// answers with the error that made it give up, and the lease bounds the key's life.
    pub(crate) async fn now(mut self) {
        if let Some(request) = self.request.take() {
            let _ = self.node.propose_internal(request).await;
        }
    }
}

impl Drop for Withdraw {
    /// The RPC future was dropped (the client cancelled): `Drop` cannot wait, so the
    /// withdrawal runs as its own task.
    fn drop(&mut self) {
        let Some(request) = self.request.take() else {
            return;
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let node = self.node.clone();
            runtime.spawn(async move {
                let _ = node.propose_internal(request).await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiter_keys_follow_etcd() {
        assert_eq!(queue_prefix(b"lock"), b"lock/");
        assert_eq!(waiter_key(b"lock/", 0x694d7a), b"lock/694d7a");
        assert_eq!(waiter_key(b"lock/", -1), b"lock/-1");
    }
}
