//! The differential test: one seeded random sequence of KV and Lease operations, sent one at a
//! time and in the same order to a fresh etcd and a fresh Cairn, every response compared. etcd's
//! answer is the spec.
//!
//! Replay a failure with the seed and op count it prints:
//! `CAIRN_DIFF_SEED=<seed> CAIRN_DIFF_OPS=<n> cargo test -p cairn --test differential`.
//! The generator steers by etcd's answers (current and compacted revision, live leases), and etcd
//! answers a given sequence deterministically, so the same seed replays the same operations.
//!
//! Both sides must agree on success or failure; failures must carry the same gRPC code and
//! message; successes must be equal prost messages after these normalizations, each for a reason
//! that is not behaviour:
//! - every header's `cluster_id`, `member_id` and `raft_term` are zeroed (identities);
//! - LeaseTimeToLive `ttl` may differ by one second (time passes between the two calls);
//! - LeaseTimeToLive `keys` and LeaseLeases ids are compared sorted: etcd lists the keys from a
//!   Go map (any order) and the leases by expiry, Cairn both in order;
//! - a range sorted on a target other than KEY must have the same sequence of sort values, and
//!   the same kvs as a set: etcd's Go `sort.Sort` is not stable, so ties come out in any order
//!   (and the generator never combines such a sort with `limit`, which would cut at a tie).
//!
//! Leases are granted with long TTLs so that none expires during the run (expiry timing is not
//! comparable); a grant with a TTL below the minimum is followed at once by its time-to-live
//! and its revocation.

mod common;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Instant;

use cairn_mvcc::index::prefix_end;
use cairn_proto::etcdserverpb::compare::{CompareTarget, TargetUnion};
use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::lease_client::LeaseClient;
use cairn_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use cairn_proto::etcdserverpb::request_op::Request;
use cairn_proto::etcdserverpb::response_op::Response;
use cairn_proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, Compare, DeleteRangeRequest, DeleteRangeResponse,
    LeaseGrantRequest, LeaseGrantResponse, LeaseLeasesRequest, LeaseLeasesResponse,
    LeaseRevokeRequest, LeaseRevokeResponse, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
    PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp, ResponseHeader, TxnRequest,
    TxnResponse,
};
use cairn_proto::mvccpb::KeyValue;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tonic::transport::Channel;
use tonic::Code;

const SEED_DEFAULT: u64 = 0x5eed_ca12;
const OPS_DEFAULT: u64 = 10_000;

/// Prefixes of the key space (and one, "e", that holds no key).
const PREFIXES: [&str; 9] = ["a", "a/", "a/b/", "b/", "c", "c1", "d", "d/", "e"];

/// Few distinct values, so that VALUE compares hit and VALUE sorts tie.
const VALUES: [&str; 7] = ["", "v0", "v1", "v2", "v3", "x", "a-longer-value"];

/// Client-chosen lease ids come from `-LEASE_IDS..=LEASE_IDS` without 0 (0 makes the server
/// pick a random id, which two servers cannot agree on).
const LEASE_IDS: i64 = 1000;

/// TTLs of leases meant to outlive the run.
const LEASE_TTL_S_LONG: std::ops::RangeInclusive<i64> = 600..=3600;

/// How often a generated request carries a fault of its own (an empty key, a given value that
/// is to be ignored, a compacted revision…). Txns are mostly fault-free, see `next_op`.
const FAULT_P: f64 = 0.04;

/// etcd's `MaxLeaseTTL` plus one.
const LEASE_TTL_S_TOO_LARGE: i64 = 9_000_000_001;

#[tokio::test]
async fn differential_against_etcd() {
    let Some(etcd) = common::Etcd::start().await else {
        return;
    };
    let cairn = common::Cairn::start(&[]).await;
    let seed = env_u64("CAIRN_DIFF_SEED", SEED_DEFAULT);
    let ops = env_u64("CAIRN_DIFF_OPS", OPS_DEFAULT);
    let mut etcd_client = Client::connect(&etcd.endpoint()).await;
    let mut cairn_client = Client::connect(&cairn.endpoint()).await;
    let mut generator = Generator::new(seed);
    let mut outcomes: BTreeMap<&str, [u64; 2]> = BTreeMap::new();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let started = Instant::now();

    for number in 1..=ops {
        let op = generator.next_op();
        // Concurrent to the two servers, but each sees one op at a time, in sequence order.
        let (etcd_outcome, cairn_outcome) =
            tokio::join!(etcd_client.send(&op), cairn_client.send(&op));
        if let Err(why) = compare(&op, &etcd_outcome, &cairn_outcome) {
            panic!(
                "differential mismatch: {why}\n\
                 seed={seed} op #{number} (replay: CAIRN_DIFF_SEED={seed} CAIRN_DIFF_OPS={number})\n\
                 request: {}\n\
                 etcd:  {}\n\
                 cairn: {}",
                readable(format!("{op:?}")),
                readable(format!("{etcd_outcome:?}")),
                readable(format!("{cairn_outcome:?}")),
            );
        }
        generator.observe(&op, &etcd_outcome);
        outcomes.entry(op.kind()).or_default()[usize::from(etcd_outcome.is_err())] += 1;
        if let Err((_, message)) = &etcd_outcome {
            *errors
                .entry(format!("{} {message}", op.kind()))
                .or_default() += 1;
        }
    }

    eprintln!(
        "differential: {ops} ops, seed={seed}, {:.1?}, final revision {}, compacted {}; \
         [ok, error] per op: {outcomes:?}; errors: {errors:#?}",
        started.elapsed(),
        generator.revision,
        generator.compacted
    );
}

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(text) => text
            .parse()
            .unwrap_or_else(|_| panic!("{name}={text:?} is not a u64")),
        Err(_) => default,
    }
}

// ---------------------------------------------------------------------------------------------
// Operations and their outcomes
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Op {
    Range(RangeRequest),
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
    Compact(CompactionRequest),
    LeaseGrant(LeaseGrantRequest),
    LeaseRevoke(LeaseRevokeRequest),
    LeaseTimeToLive(LeaseTimeToLiveRequest),
    LeaseLeases(LeaseLeasesRequest),
}

impl Op {
    fn kind(&self) -> &'static str {
        match self {
            Op::Range(_) => "Range",
            Op::Put(_) => "Put",
            Op::DeleteRange(_) => "DeleteRange",
            Op::Txn(_) => "Txn",
            Op::Compact(_) => "Compact",
            Op::LeaseGrant(_) => "LeaseGrant",
            Op::LeaseRevoke(_) => "LeaseRevoke",
            Op::LeaseTimeToLive(_) => "LeaseTimeToLive",
            Op::LeaseLeases(_) => "LeaseLeases",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Reply {
    Range(RangeResponse),
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
    Compact(CompactionResponse),
    LeaseGrant(LeaseGrantResponse),
    LeaseRevoke(LeaseRevokeResponse),
    LeaseTimeToLive(LeaseTimeToLiveResponse),
    LeaseLeases(LeaseLeasesResponse),
}

impl Reply {
    fn header(&self) -> Option<&ResponseHeader> {
        match self {
            Reply::Range(r) => r.header.as_ref(),
            Reply::Put(r) => r.header.as_ref(),
            Reply::DeleteRange(r) => r.header.as_ref(),
            Reply::Txn(r) => r.header.as_ref(),
            Reply::Compact(r) => r.header.as_ref(),
            Reply::LeaseGrant(r) => r.header.as_ref(),
            Reply::LeaseRevoke(r) => r.header.as_ref(),
            Reply::LeaseTimeToLive(r) => r.header.as_ref(),
            Reply::LeaseLeases(r) => r.header.as_ref(),
        }
    }
}

/// A reply, or the gRPC code and message of the refusal.
type Outcome = Result<Reply, (Code, String)>;

struct Client {
    kv: KvClient<Channel>,
    lease: LeaseClient<Channel>,
}

impl Client {
    async fn connect(endpoint: &str) -> Client {
        let channel = common::channel(endpoint).await;
        Client {
            kv: KvClient::new(channel.clone()),
            lease: LeaseClient::new(channel),
        }
    }

    async fn send(&mut self, op: &Op) -> Outcome {
        let (kv, lease) = (&mut self.kv, &mut self.lease);
        let result = match op.clone() {
            Op::Range(r) => kv.range(r).await.map(|r| Reply::Range(r.into_inner())),
            Op::Put(r) => kv.put(r).await.map(|r| Reply::Put(r.into_inner())),
            Op::DeleteRange(r) => kv
                .delete_range(r)
                .await
                .map(|r| Reply::DeleteRange(r.into_inner())),
            Op::Txn(r) => kv.txn(r).await.map(|r| Reply::Txn(r.into_inner())),
            Op::Compact(r) => kv.compact(r).await.map(|r| Reply::Compact(r.into_inner())),
            Op::LeaseGrant(r) => lease
                .lease_grant(r)
                .await
                .map(|r| Reply::LeaseGrant(r.into_inner())),
            Op::LeaseRevoke(r) => lease
                .lease_revoke(r)
                .await
                .map(|r| Reply::LeaseRevoke(r.into_inner())),
            Op::LeaseTimeToLive(r) => lease
                .lease_time_to_live(r)
                .await
                .map(|r| Reply::LeaseTimeToLive(r.into_inner())),
            Op::LeaseLeases(r) => lease
                .lease_leases(r)
                .await
                .map(|r| Reply::LeaseLeases(r.into_inner())),
        };
        result.map_err(|status| (status.code(), status.message().to_string()))
    }
}

/// Debug output with byte lists (keys, values) shown as strings: `[97, 47, 49]` becomes
/// `"a/1"`. Lists with a byte outside printable ASCII (or NUL) stay as they are.
fn readable(debug: String) -> String {
    let mut out = String::with_capacity(debug.len());
    let mut rest = debug.as_str();
    while let Some(open) = rest.find('[') {
        out.push_str(&rest[..open]);
        rest = &rest[open..];
        let close = rest.find(']').unwrap_or(rest.len() - 1);
        let bytes: Option<Vec<u8>> = rest[1..close]
            .split(", ")
            .map(|n| {
                n.parse::<u8>()
                    .ok()
                    .filter(|b| *b == 0 || (32..127).contains(b))
            })
            .collect();
        match bytes {
            Some(bytes) if close > 1 => {
                out.push_str(&format!("{:?}", String::from_utf8(bytes).expect("ASCII")));
                rest = &rest[close + 1..];
            }
            _ => {
                out.push('[');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

// ---------------------------------------------------------------------------------------------
// Comparison
// ---------------------------------------------------------------------------------------------

/// Why the two outcomes of `op` differ, if they do (see the module doc for what may differ).
fn compare(op: &Op, etcd: &Outcome, cairn: &Outcome) -> Result<(), String> {
    match (etcd, cairn) {
        (Err(etcd), Err(cairn)) if etcd == cairn => Ok(()),
        (Err(_), Err(_)) => Err("different errors".into()),
        (Ok(_), Err(_)) => Err("only cairn failed".into()),
        (Err(_), Ok(_)) => Err("only etcd failed".into()),
        (Ok(etcd), Ok(cairn)) => compare_replies(op, etcd.clone(), cairn.clone()),
    }
}

fn compare_replies(op: &Op, mut etcd: Reply, mut cairn: Reply) -> Result<(), String> {
    clear_identities(&mut etcd);
    clear_identities(&mut cairn);
    match (op, &mut etcd, &mut cairn) {
        (Op::Range(request), Reply::Range(etcd), Reply::Range(cairn)) => {
            sort_ties(request, etcd, cairn)?;
        }
        (Op::Txn(request), Reply::Txn(etcd), Reply::Txn(cairn)) => {
            sort_ties_in_txn(request, etcd, cairn)?;
        }
        (_, Reply::LeaseTimeToLive(etcd), Reply::LeaseTimeToLive(cairn)) => {
            if (etcd.ttl - cairn.ttl).abs() > 1 {
                return Err(format!("ttl {} (etcd) vs {} (cairn)", etcd.ttl, cairn.ttl));
            }
            for reply in [etcd, cairn] {
                reply.ttl = 0;
                reply.keys.sort();
            }
        }
        (_, Reply::LeaseLeases(etcd), Reply::LeaseLeases(cairn)) => {
            for reply in [etcd, cairn] {
                reply.leases.sort_by_key(|lease| lease.id);
            }
        }
        _ => {}
    }
    if etcd == cairn {
        Ok(())
    } else {
        let (etcd, cairn) = (
            readable(format!("{etcd:?}")),
            readable(format!("{cairn:?}")),
        );
        Err(format!(
            "responses differ after normalization:\n  etcd:  {etcd}\n  cairn: {cairn}"
        ))
    }
}

fn clear_identity(header: &mut Option<ResponseHeader>) {
    if let Some(header) = header {
        header.cluster_id = 0;
        header.member_id = 0;
        header.raft_term = 0;
    }
}

fn clear_identities(reply: &mut Reply) {
    match reply {
        Reply::Range(r) => clear_identity(&mut r.header),
        Reply::Put(r) => clear_identity(&mut r.header),
        Reply::DeleteRange(r) => clear_identity(&mut r.header),
        Reply::Txn(r) => clear_identities_in_txn(r),
        Reply::Compact(r) => clear_identity(&mut r.header),
        Reply::LeaseGrant(r) => clear_identity(&mut r.header),
        Reply::LeaseRevoke(r) => clear_identity(&mut r.header),
        Reply::LeaseTimeToLive(r) => clear_identity(&mut r.header),
        Reply::LeaseLeases(r) => clear_identity(&mut r.header),
    }
}

fn clear_identities_in_txn(txn: &mut TxnResponse) {
    clear_identity(&mut txn.header);
    for op in &mut txn.responses {
        match &mut op.response {
            Some(Response::ResponseRange(r)) => clear_identity(&mut r.header),
            Some(Response::ResponsePut(r)) => clear_identity(&mut r.header),
            Some(Response::ResponseDeleteRange(r)) => clear_identity(&mut r.header),
            Some(Response::ResponseTxn(r)) => clear_identities_in_txn(r),
            None => {}
        }
    }
}

/// What a range was sorted on, as one comparable value.
fn sort_value(target: SortTarget, kv: &KeyValue) -> (i64, &[u8]) {
    match target {
        SortTarget::Key => (0, &kv.key),
        SortTarget::Version => (kv.version, &[]),
        SortTarget::Create => (kv.create_revision, &[]),
        SortTarget::Mod => (kv.mod_revision, &[]),
        SortTarget::Value => (0, &kv.value),
    }
}

/// Checks that a range sorted on a non-unique target has the same sequence of sort values on
/// both sides, then puts ties in key order so that the kvs compare as a set.
fn sort_ties(
    request: &RangeRequest,
    etcd: &mut RangeResponse,
    cairn: &mut RangeResponse,
) -> Result<(), String> {
    let target = SortTarget::try_from(request.sort_target).unwrap_or(SortTarget::Key);
    if target == SortTarget::Key {
        return Ok(());
    }
    let values = |reply: &RangeResponse| -> Vec<(i64, Vec<u8>)> {
        let values = reply.kvs.iter().map(|kv| sort_value(target, kv));
        values
            .map(|(number, bytes)| (number, bytes.to_vec()))
            .collect()
    };
    if values(etcd) != values(cairn) {
        return Err(format!("{target:?} sort values differ"));
    }
    for reply in [etcd, cairn] {
        reply.kvs.sort_by(|a, b| a.key.cmp(&b.key));
    }
    Ok(())
}

fn sort_ties_in_txn(
    request: &TxnRequest,
    etcd: &mut TxnResponse,
    cairn: &mut TxnResponse,
) -> Result<(), String> {
    if etcd.succeeded != cairn.succeeded {
        // The plain comparison reports it.
        return Ok(());
    }
    let ops = if etcd.succeeded {
        &request.success
    } else {
        &request.failure
    };
    let responses = etcd.responses.iter_mut().zip(cairn.responses.iter_mut());
    for (op, (etcd, cairn)) in ops.iter().zip(responses) {
        match (&op.request, &mut etcd.response, &mut cairn.response) {
            (
                Some(Request::RequestRange(request)),
                Some(Response::ResponseRange(etcd)),
                Some(Response::ResponseRange(cairn)),
            ) => sort_ties(request, etcd, cairn)?,
            (
                Some(Request::RequestTxn(request)),
                Some(Response::ResponseTxn(etcd)),
                Some(Response::ResponseTxn(cairn)),
            ) => sort_ties_in_txn(request, etcd, cairn)?,
            _ => {}
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Generation
// ---------------------------------------------------------------------------------------------

/// The seeded source of operations, steered by what etcd answered so far.
struct Generator {
    rng: StdRng,
    keys: Vec<Vec<u8>>,
    /// Current revision, as of etcd's last header.
    revision: i64,
    /// Last compacted revision (0 before the first compaction).
    compacted: i64,
    /// Leases granted and not revoked.
    leases: BTreeSet<i64>,
    /// Ops that must come next (the time-to-live and revocation of a short lease).
    follow_ups: VecDeque<Op>,
    /// Probability of a fault in the request being generated.
    fault_p: f64,
    /// Whether the txn being generated deletes with a `"\0"` range end. etcd's duplicate-key
    /// check misses that such a delete covers later puts, and an `ignore_value`/`ignore_lease`
    /// put of a key it deleted then panics etcd 3.4.23 mid-txn ("unexpected error during
    /// txn"); Cairn refuses that txn instead, so the generator leaves such puts out.
    txn_deletes_to_end: bool,
}

impl Generator {
    fn new(seed: u64) -> Generator {
        // 40 keys under a few shared prefixes, so that ranges, deletes and txns overlap.
        let mut keys: Vec<String> = ["a", "b", "d", "d/", "d/x"].map(String::from).into();
        keys.extend((0..10).map(|i| format!("a/{i}")));
        keys.extend((0..5).map(|i| format!("a/b/{i}")));
        keys.extend((0..10).map(|i| format!("b/{i}")));
        keys.extend((0..10).map(|i| format!("c{i}")));
        Generator {
            rng: StdRng::seed_from_u64(seed),
            keys: keys.into_iter().map(String::into_bytes).collect(),
            revision: 1,
            compacted: 0,
            leases: BTreeSet::new(),
            follow_ups: VecDeque::new(),
            fault_p: FAULT_P,
            txn_deletes_to_end: false,
        }
    }

    fn next_op(&mut self) -> Op {
        if let Some(op) = self.follow_ups.pop_front() {
            return op;
        }
        match self.rng.gen_range(0..100) {
            0..=26 => Op::Put(self.put()),
            27..=34 => Op::DeleteRange(self.delete_range()),
            35..=58 => Op::Range(self.range()),
            59..=80 => {
                // A fault anywhere refuses the whole txn, and a txn holds up to a few dozen
                // requests: most are kept fault-free so that their effects get compared.
                self.fault_p = if self.chance(0.2) { FAULT_P } else { 0.0 };
                let txn = self.txn(0);
                self.fault_p = FAULT_P;
                self.txn_deletes_to_end = false;
                Op::Txn(txn)
            }
            81..=82 => Op::Compact(self.compact()),
            83..=88 => Op::LeaseGrant(self.lease_grant()),
            89..=91 => Op::LeaseRevoke(LeaseRevokeRequest {
                id: self.lease_id(),
            }),
            92..=97 => Op::LeaseTimeToLive(LeaseTimeToLiveRequest {
                id: self.lease_id(),
                keys: self.rng.gen_bool(0.7),
            }),
            _ => Op::LeaseLeases(LeaseLeasesRequest {}),
        }
    }

    /// Learns the state the next ops are drawn against from etcd's answer.
    fn observe(&mut self, op: &Op, outcome: &Outcome) {
        let Ok(reply) = outcome else { return };
        if let Some(header) = reply.header() {
            self.revision = self.revision.max(header.revision);
        }
        match op {
            Op::Compact(request) => self.compacted = request.revision,
            Op::LeaseGrant(request) => _ = self.leases.insert(request.id),
            Op::LeaseRevoke(request) => _ = self.leases.remove(&request.id),
            _ => {}
        }
    }

    fn chance(&mut self, p: f64) -> bool {
        self.rng.gen_bool(p)
    }

    fn fault(&mut self) -> bool {
        self.rng.gen_bool(self.fault_p)
    }

    fn key(&mut self) -> Vec<u8> {
        self.keys[self.rng.gen_range(0..self.keys.len())].clone()
    }

    fn value(&mut self) -> Vec<u8> {
        VALUES[self.rng.gen_range(0..VALUES.len())]
            .as_bytes()
            .to_vec()
    }

    /// A (key, range_end) pair in one of etcd's forms: one key, a prefix, from a key on ("\0"),
    /// everything, or an explicit (possibly empty or inverted) interval.
    fn key_range(&mut self) -> (Vec<u8>, Vec<u8>) {
        match self.rng.gen_range(0..10) {
            0..=3 => (self.key(), Vec::new()),
            4..=6 => {
                let prefix = PREFIXES[self.rng.gen_range(0..PREFIXES.len())].as_bytes();
                (prefix.to_vec(), prefix_end(prefix))
            }
            7 => (self.key(), vec![0]),
            8 => (vec![0], vec![0]),
            _ => (self.key(), self.key()),
        }
    }

    /// A read revision: the current one (0) or anywhere in the history still readable; as a
    /// fault, compacted (negative included) or future.
    fn read_revision(&mut self) -> i64 {
        if self.fault() {
            return match self.chance(0.5) {
                true => self.rng.gen_range(-2..=self.compacted),
                false => self.revision + self.rng.gen_range(1..=3),
            };
        }
        match self.chance(0.6) {
            true => 0,
            false => self.rng.gen_range(self.compacted.max(1)..=self.revision),
        }
    }

    /// A min/max revision filter bound (0: unset).
    fn revision_filter(&mut self) -> i64 {
        match self.chance(0.1) {
            true => self.rng.gen_range(0..=self.revision + 1),
            false => 0,
        }
    }

    fn range(&mut self) -> RangeRequest {
        let (key, range_end) = match self.fault() {
            true => (Vec::new(), Vec::new()),
            false => self.key_range(),
        };
        let (sort_order, sort_target) = match self.chance(0.4) {
            true => (self.rng.gen_range(0..3), self.rng.gen_range(0..5)),
            false => (SortOrder::None as i32, SortTarget::Key as i32),
        };
        // A limit would cut a non-KEY sort at a tie, where etcd's order is unspecified.
        let limit = match sort_target == SortTarget::Key as i32 && self.chance(0.3) {
            // A negative limit means none, as 0 does.
            true if self.fault() => -self.rng.gen_range(1..=3),
            true => self.rng.gen_range(1..=6),
            false => 0,
        };
        RangeRequest {
            key,
            range_end,
            limit,
            revision: self.read_revision(),
            sort_order,
            sort_target,
            serializable: self.chance(0.2),
            keys_only: self.chance(0.15),
            count_only: self.chance(0.1),
            min_mod_revision: self.revision_filter(),
            max_mod_revision: self.revision_filter(),
            min_create_revision: self.revision_filter(),
            max_create_revision: self.revision_filter(),
        }
    }

    fn put(&mut self) -> PutRequest {
        let key = match self.fault() {
            true => Vec::new(),
            false => self.key(),
        };
        // Both fail on a key that does not exist: a fault that depends on the state.
        let ignore_value = !self.txn_deletes_to_end && self.chance(0.06);
        let ignore_lease = !self.txn_deletes_to_end && self.chance(0.06);
        // What is ignored is left out; giving it anyway is a fault.
        let value = match ignore_value && !self.fault() {
            true => Vec::new(),
            false => self.value(),
        };
        let lease = match ignore_lease && !self.fault() {
            true => 0,
            false => self.put_lease(),
        };
        PutRequest {
            key,
            value,
            lease,
            prev_kv: self.chance(0.5),
            ignore_value,
            ignore_lease,
        }
    }

    /// Mostly no lease, else a live one; as a fault, any id (perhaps unknown).
    fn put_lease(&mut self) -> i64 {
        if self.fault() {
            return self.lease_id();
        }
        match self.chance(0.6) {
            true => 0,
            false => self.live_lease().unwrap_or(0),
        }
    }

    fn live_lease(&mut self) -> Option<i64> {
        if self.leases.is_empty() {
            return None;
        }
        let index = self.rng.gen_range(0..self.leases.len());
        self.leases.iter().nth(index).copied()
    }

    /// A live lease or any id of the id space, negative ones included.
    fn lease_id(&mut self) -> i64 {
        if self.chance(0.6) {
            if let Some(id) = self.live_lease() {
                return id;
            }
        }
        self.any_lease_id()
    }

    /// Any id of the id space, negative ones included.
    fn any_lease_id(&mut self) -> i64 {
        let id = self.rng.gen_range(1..=LEASE_IDS);
        match self.chance(0.1) {
            true => -id,
            false => id,
        }
    }

    fn delete_range(&mut self) -> DeleteRangeRequest {
        let (key, range_end) = match self.fault() {
            true => (Vec::new(), Vec::new()),
            false if self.chance(0.5) => (self.key(), Vec::new()),
            false => self.key_range(),
        };
        DeleteRangeRequest {
            key,
            range_end,
            prev_kv: self.chance(0.5),
        }
    }

    fn compact(&mut self) -> CompactionRequest {
        let revision = match self.rng.gen_range(0..10) {
            0 => self.rng.gen_range(-1..=self.compacted),
            1 => self.revision + self.rng.gen_range(1..=3),
            _ => (self.compacted + self.rng.gen_range(1..=40)).min(self.revision),
        };
        CompactionRequest {
            revision,
            physical: self.chance(0.2),
        }
    }

    /// A grant with a client-chosen id (sometimes one in use). A TTL below the minimum leads to
    /// a lease that would expire within the run, so its checks and revocation follow at once.
    fn lease_grant(&mut self) -> LeaseGrantRequest {
        let id = match self.chance(0.2) {
            true => self.lease_id(),
            false => self.any_lease_id(),
        };
        let ttl = match self.rng.gen_range(0..20) {
            0..=2 => {
                self.follow_ups
                    .push_back(Op::LeaseTimeToLive(LeaseTimeToLiveRequest {
                        id,
                        keys: true,
                    }));
                self.follow_ups
                    .push_back(Op::LeaseRevoke(LeaseRevokeRequest { id }));
                self.rng.gen_range(-1..=1)
            }
            3 => LEASE_TTL_S_TOO_LARGE,
            _ => self.rng.gen_range(LEASE_TTL_S_LONG),
        };
        LeaseGrantRequest { ttl, id }
    }

    fn txn(&mut self, depth: u32) -> TxnRequest {
        let compares = self.rng.gen_range(0..=3);
        let mut txn = TxnRequest {
            compare: (0..compares).map(|_| self.compare()).collect(),
            success: self.txn_ops(depth),
            failure: self.txn_ops(depth),
        };
        if self.fault() {
            // Around etcd's --max-txn-ops (128 per list, nested txns share what is left).
            let len = self.rng.gen_range(120..=130);
            while txn.success.len() < len {
                let request = RangeRequest {
                    key: self.key(),
                    ..Default::default()
                };
                txn.success.push(RequestOp {
                    request: Some(Request::RequestRange(request)),
                });
            }
        }
        txn
    }

    /// Up to four operations; a txn nests at most two deep.
    fn txn_ops(&mut self, depth: u32) -> Vec<RequestOp> {
        let count = self.rng.gen_range(0..=4);
        let mut ops = Vec::with_capacity(count);
        for _ in 0..count {
            let request = match self.rng.gen_range(0..100) {
                _ if self.fault() => None,
                0..=30 => Some(Request::RequestRange(self.range())),
                31..=65 => Some(Request::RequestPut(self.put())),
                66..=89 => {
                    let delete = self.delete_range();
                    self.txn_deletes_to_end |= delete.range_end == [0];
                    Some(Request::RequestDeleteRange(delete))
                }
                _ if depth < 2 => Some(Request::RequestTxn(self.txn(depth + 1))),
                _ => Some(Request::RequestRange(self.range())),
            };
            ops.push(RequestOp { request });
        }
        ops
    }

    fn compare(&mut self) -> Compare {
        let (key, range_end) = match self.fault() {
            true => (Vec::new(), Vec::new()),
            false if self.chance(0.7) => (self.key(), Vec::new()),
            false => self.key_range(),
        };
        let target = self.rng.gen_range(0..5);
        let number = match CompareTarget::try_from(target).expect("drawn from the enum") {
            CompareTarget::Version => self.rng.gen_range(0..=4),
            CompareTarget::Create | CompareTarget::Mod => self.rng.gen_range(0..=self.revision + 1),
            CompareTarget::Lease => self.live_lease().filter(|_| self.chance(0.7)).unwrap_or(0),
            CompareTarget::Value => 0,
        };
        // Mostly the union member that matches the target; sometimes another one or none.
        let union_kind = match self.rng.gen_range(0..100) {
            0..=2 => self.rng.gen_range(0..5),
            3 => 5,
            _ => target,
        };
        let target_union = match union_kind {
            0 => Some(TargetUnion::Version(number)),
            1 => Some(TargetUnion::CreateRevision(number)),
            2 => Some(TargetUnion::ModRevision(number)),
            3 => Some(TargetUnion::Value(self.value())),
            4 => Some(TargetUnion::Lease(number)),
            _ => None,
        };
        // Rarely an enum value this proto version does not know (proto3 enums are open).
        let (result, target) = match self.chance(0.01) {
            true => (self.rng.gen_range(0..=4), self.rng.gen_range(0..=5)),
            false => (self.rng.gen_range(0..4), target),
        };
        Compare {
            result,
            target,
            key,
            range_end,
            target_union,
        }
    }
}
