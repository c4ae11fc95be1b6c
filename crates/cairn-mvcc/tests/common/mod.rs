//! Shared harness for the cairn-mvcc integration tests.
//!
//! [`TestStore`] wraps a `KvStore` over a `MemoryEngine` and applies requests the way the node
//! does: one log entry each, with the next log index and a test-controlled clock stamped into
//! the entry. After every entry it checks the store's invariants (`KvStore::validate`,
//! `LeaseTable::validate`), so every test also exercises them.
//!
//! The free functions build etcd requests tersely (`put_op("a", "1")`, `cmp_mod("k", Equal, 0)`).

// Each test file uses a different part of the harness.
#![allow(dead_code)]

use cairn_mvcc::revision::Revision;
use cairn_mvcc::watch::{WatchFilter, WatchRead};
use cairn_mvcc::{ApplyResponse, KvStore, MvccError, StoreConfig};
use cairn_proto::cairnpb::internal_request::Request;
use cairn_proto::cairnpb::{AuthInfo, InternalRequest};
use cairn_proto::etcdserverpb::alarm_request::AlarmAction;
use cairn_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use cairn_proto::etcdserverpb::request_op::Request as Op;
use cairn_proto::etcdserverpb::response_op::Response as OpResponse;
use cairn_proto::etcdserverpb::{
    AlarmRequest, AlarmResponse, AlarmType, CompactionRequest, CompactionResponse, Compare,
    DeleteRangeRequest, DeleteRangeResponse, LeaseGrantRequest, LeaseGrantResponse,
    LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseLeasesResponse, LeaseRevokeRequest,
    LeaseRevokeResponse, LeaseTimeToLiveResponse, PutRequest, PutResponse, RangeRequest,
    RangeResponse, RequestOp, ResponseOp, TxnRequest, TxnResponse,
};
use cairn_proto::mvccpb::{Event, KeyValue};
use cairn_storage::engine::Engine;
use cairn_storage::memory::MemoryEngine;
use cairn_storage::schema::Bucket;
use prost::Message;

/// The clock every test starts at (unix ms); any fixed value works, a realistic one reads well.
pub const T0_MS: i64 = 1_700_000_000_000;

/// Routes `tracing` output to the test harness (shown with `--nocapture` or on failure).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_test_writer()
        .try_init();
}

/// A store driven through `apply`, with an auto-incrementing log index and a settable clock.
pub struct TestStore {
    pub store: KvStore,
    pub config: StoreConfig,
    /// `now_unix_ms` stamped into the next entry.
    pub now_ms: i64,
}

impl Default for TestStore {
    fn default() -> TestStore {
        TestStore::new()
    }
}

impl TestStore {
    pub fn new() -> TestStore {
        TestStore::with_config(StoreConfig::default())
    }

    pub fn with_config(config: StoreConfig) -> TestStore {
        init_tracing();
        let store = KvStore::open(Box::new(MemoryEngine::new()), config.clone());
        TestStore {
            store,
            config,
            now_ms: T0_MS,
        }
    }

    /// Applies `request` as the next log entry and checks the store's invariants.
    pub fn apply(&mut self, request: Request) -> Result<ApplyResponse, MvccError> {
        self.apply_entry(None, request)
    }

    /// Applies `request` as a client request from `user` ("" = a client without a token).
    pub fn apply_as(&mut self, user: &str, request: Request) -> Result<ApplyResponse, MvccError> {
        let caller = AuthInfo {
            user: user.to_string(),
        };
        self.apply_entry(Some(caller), request)
    }

    fn apply_entry(
        &mut self,
        auth: Option<AuthInfo>,
        request: Request,
    ) -> Result<ApplyResponse, MvccError> {
        let index = self.store.applied_index() + 1;
        let entry = InternalRequest {
            now_unix_ms: self.now_ms,
            auth,
            request: Some(request),
            ..Default::default()
        };
        let result = self.store.apply(index, &entry);
        assert_eq!(
            self.store.applied_index(),
            index,
            "every entry moves the applied index, refused or not"
        );
        self.store.validate();
        self.store.leases().validate();
        result
    }

    /// The store's snapshot bytes, as a snapshot file holds them.
    fn snapshot_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::new();
        self.store
            .write_snapshot(&mut bytes)
            .expect("writing into a Vec cannot fail");
        bytes
    }

    /// Restarts the store from its snapshot bytes, as a node does after a crash.
    pub fn restart(&mut self) {
        let snapshot = self.snapshot_bytes();
        let engine = MemoryEngine::decode_snapshot(&snapshot).expect("snapshot decodes");
        self.store = KvStore::open(Box::new(engine), self.config.clone());
        self.store.validate();
        self.store.leases().validate();
    }

    /// An independent copy of the store (same bytes), as another replica would hold it.
    pub fn twin(&self) -> TestStore {
        let snapshot = self.snapshot_bytes();
        let engine = MemoryEngine::decode_snapshot(&snapshot).expect("snapshot decodes");
        TestStore {
            store: KvStore::open(Box::new(engine), self.config.clone()),
            config: self.config.clone(),
            now_ms: self.now_ms,
        }
    }

    pub fn advance_ms(&mut self, ms: i64) {
        self.now_ms += ms;
    }

    pub fn revision(&self) -> i64 {
        self.store.current_revision()
    }

    // --- writes -------------------------------------------------------------------------

    pub fn try_put(&mut self, request: PutRequest) -> Result<PutResponse, MvccError> {
        self.apply(Request::Put(request)).map(|r| match r {
            ApplyResponse::Put(put) => put,
            other => panic!("put answered with {other:?}"),
        })
    }

    /// A plain put that must succeed.
    pub fn put(&mut self, key: &str, value: &str) -> PutResponse {
        self.try_put(put_req(key, value)).expect("put applies")
    }

    pub fn put_with_lease(&mut self, key: &str, value: &str, lease: i64) -> PutResponse {
        let request = PutRequest {
            lease,
            ..put_req(key, value)
        };
        self.try_put(request).expect("put with lease applies")
    }

    pub fn delete_with(&mut self, request: DeleteRangeRequest) -> DeleteRangeResponse {
        match self.apply(Request::DeleteRange(request)) {
            Ok(ApplyResponse::DeleteRange(delete)) => delete,
            other => panic!("delete answered with {other:?}"),
        }
    }

    /// Deletes `key` (`end` empty) or the range `[key, end)`.
    pub fn delete(&mut self, key: &str, end: &str) -> DeleteRangeResponse {
        self.delete_with(delete_req(key, end))
    }

    pub fn txn(&mut self, request: TxnRequest) -> Result<TxnResponse, MvccError> {
        self.apply(Request::Txn(request)).map(|r| match r {
            ApplyResponse::Txn(txn) => txn,
            other => panic!("txn answered with {other:?}"),
        })
    }

    pub fn compact(&mut self, revision: i64) -> Result<CompactionResponse, MvccError> {
        let request = CompactionRequest {
            revision,
            physical: true,
        };
        self.apply(Request::Compaction(request)).map(|r| match r {
            ApplyResponse::Compaction(compaction) => compaction,
            other => panic!("compaction answered with {other:?}"),
        })
    }

    pub fn grant(&mut self, id: i64, ttl_s: i64) -> Result<LeaseGrantResponse, MvccError> {
        let request = LeaseGrantRequest { ttl: ttl_s, id };
        self.apply(Request::LeaseGrant(request)).map(|r| match r {
            ApplyResponse::LeaseGrant(grant) => grant,
            other => panic!("grant answered with {other:?}"),
        })
    }

    pub fn revoke(&mut self, id: i64) -> Result<LeaseRevokeResponse, MvccError> {
        self.apply(Request::LeaseRevoke(LeaseRevokeRequest { id }))
            .map(|r| match r {
                ApplyResponse::LeaseRevoke(revoke) => revoke,
                other => panic!("revoke answered with {other:?}"),
            })
    }

    pub fn keep_alive(&mut self, id: i64) -> Result<LeaseKeepAliveResponse, MvccError> {
        self.apply(Request::LeaseKeepAlive(LeaseKeepAliveRequest { id }))
            .map(|r| match r {
                ApplyResponse::LeaseKeepAlive(keep_alive) => keep_alive,
                other => panic!("keep-alive answered with {other:?}"),
            })
    }

    pub fn alarm(
        &mut self,
        action: AlarmAction,
        member_id: u64,
        alarm: AlarmType,
    ) -> AlarmResponse {
        let request = AlarmRequest {
            action: action as i32,
            member_id,
            alarm: alarm as i32,
        };
        match self.apply(Request::Alarm(request)) {
            Ok(ApplyResponse::Alarm(response)) => response,
            other => panic!("alarm answered with {other:?}"),
        }
    }

    // --- reads --------------------------------------------------------------------------

    pub fn range(&self, request: RangeRequest) -> Result<RangeResponse, MvccError> {
        self.store.range(&request)
    }

    /// The current record of `key`.
    pub fn get(&self, key: &str) -> Option<KeyValue> {
        self.get_at(key, 0).expect("a current read never fails")
    }

    /// The record of `key` as of `revision` (0: current).
    pub fn get_at(&self, key: &str, revision: i64) -> Result<Option<KeyValue>, MvccError> {
        let request = RangeRequest {
            revision,
            ..range_req(key, "")
        };
        let mut response = self.store.range(&request)?;
        assert!(
            response.kvs.len() <= 1,
            "a single-key range returns one key at most"
        );
        Ok(response.kvs.pop())
    }

    /// Keys of `[key, end)` now, as strings.
    pub fn keys(&self, key: &str, end: &str) -> Vec<String> {
        key_strings(&self.range(range_req(key, end)).expect("range").kvs)
    }

    /// Every history record the engine physically holds, in revision order: (revision,
    /// tombstone, record). Read from the snapshot bytes, so it sees what a restart would.
    pub fn records(&self) -> Vec<(Revision, bool, KeyValue)> {
        let snapshot = self.snapshot_bytes();
        let engine = MemoryEngine::decode_snapshot(&snapshot).expect("snapshot decodes");
        let mut records = Vec::new();
        engine.scan(Bucket::Key, &[], None, &mut |key, value| {
            let (revision, tombstone) = Revision::from_bytes(key).expect("a revision key");
            let kv = KeyValue::decode(value).expect("a KeyValue record");
            records.push((revision, tombstone, kv));
            true
        });
        records
    }

    /// Every event from `from` on for `[key, end)`, read in one go.
    pub fn events(&self, key: &str, end: &str, from: i64) -> Vec<Event> {
        match self
            .store
            .watch_events(&watch_filter(key, end), from, usize::MAX)
        {
            WatchRead::Events { events, .. } => events,
            WatchRead::Compacted { compact_revision } => {
                panic!("watch from {from} compacted at {compact_revision}")
            }
        }
    }
}

// --- request builders ---------------------------------------------------------------------

pub fn put_req(key: &str, value: &str) -> PutRequest {
    PutRequest {
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
        ..Default::default()
    }
}

pub fn range_req(key: &str, end: &str) -> RangeRequest {
    RangeRequest {
        key: key.as_bytes().to_vec(),
        range_end: end.as_bytes().to_vec(),
        ..Default::default()
    }
}

pub fn delete_req(key: &str, end: &str) -> DeleteRangeRequest {
    DeleteRangeRequest {
        key: key.as_bytes().to_vec(),
        range_end: end.as_bytes().to_vec(),
        ..Default::default()
    }
}

pub fn put_op(key: &str, value: &str) -> RequestOp {
    op(Op::RequestPut(put_req(key, value)))
}

pub fn range_op(key: &str, end: &str) -> RequestOp {
    op(Op::RequestRange(range_req(key, end)))
}

pub fn delete_op(key: &str, end: &str) -> RequestOp {
    op(Op::RequestDeleteRange(delete_req(key, end)))
}

pub fn txn_op(txn: TxnRequest) -> RequestOp {
    op(Op::RequestTxn(txn))
}

pub fn op(request: Op) -> RequestOp {
    RequestOp {
        request: Some(request),
    }
}

pub fn txn(compare: Vec<Compare>, success: Vec<RequestOp>, failure: Vec<RequestOp>) -> TxnRequest {
    TxnRequest {
        compare,
        success,
        failure,
    }
}

/// A compare on one key.
pub fn compare(
    key: &str,
    target: CompareTarget,
    result: CompareResult,
    union: TargetUnion,
) -> Compare {
    Compare {
        result: result as i32,
        target: target as i32,
        key: key.as_bytes().to_vec(),
        range_end: Vec::new(),
        target_union: Some(union),
    }
}

pub fn cmp_value(key: &str, result: CompareResult, value: &str) -> Compare {
    let union = TargetUnion::Value(value.as_bytes().to_vec());
    compare(key, CompareTarget::Value, result, union)
}

pub fn cmp_version(key: &str, result: CompareResult, version: i64) -> Compare {
    compare(
        key,
        CompareTarget::Version,
        result,
        TargetUnion::Version(version),
    )
}

pub fn cmp_create(key: &str, result: CompareResult, revision: i64) -> Compare {
    let union = TargetUnion::CreateRevision(revision);
    compare(key, CompareTarget::Create, result, union)
}

pub fn cmp_mod(key: &str, result: CompareResult, revision: i64) -> Compare {
    compare(
        key,
        CompareTarget::Mod,
        result,
        TargetUnion::ModRevision(revision),
    )
}

pub fn cmp_lease(key: &str, result: CompareResult, lease: i64) -> Compare {
    compare(key, CompareTarget::Lease, result, TargetUnion::Lease(lease))
}

/// etcd's `GetPrefixRangeEnd`: the smallest key after every key starting with `prefix`.
pub fn prefix_end(prefix: &str) -> String {
    let end = cairn_mvcc::index::prefix_end(prefix.as_bytes());
    String::from_utf8(end).expect("test prefixes are ASCII")
}

pub fn watch_filter(key: &str, end: &str) -> WatchFilter {
    WatchFilter {
        range: cairn_mvcc::index::KeyRange::new(key.as_bytes(), end.as_bytes()),
        no_put: false,
        no_delete: false,
        prev_kv: false,
    }
}

// --- response helpers ---------------------------------------------------------------------

pub fn key_strings(kvs: &[KeyValue]) -> Vec<String> {
    kvs.iter().map(|kv| text(&kv.key)).collect()
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("test keys and values are UTF-8")
}

pub fn value_of(kv: &KeyValue) -> String {
    text(&kv.value)
}

pub fn as_range(response: &ResponseOp) -> &RangeResponse {
    match &response.response {
        Some(OpResponse::ResponseRange(range)) => range,
        other => panic!("expected a range response, got {other:?}"),
    }
}

pub fn as_put(response: &ResponseOp) -> &PutResponse {
    match &response.response {
        Some(OpResponse::ResponsePut(put)) => put,
        other => panic!("expected a put response, got {other:?}"),
    }
}

pub fn as_delete(response: &ResponseOp) -> &DeleteRangeResponse {
    match &response.response {
        Some(OpResponse::ResponseDeleteRange(delete)) => delete,
        other => panic!("expected a delete response, got {other:?}"),
    }
}

pub fn as_txn(response: &ResponseOp) -> &TxnResponse {
    match &response.response {
        Some(OpResponse::ResponseTxn(txn)) => txn,
        other => panic!("expected a txn response, got {other:?}"),
    }
}

pub fn header_revision<T: HasHeader>(response: &T) -> i64 {
    response.header_revision()
}

/// Responses that carry a header; reads its revision.
pub trait HasHeader {
    fn header_revision(&self) -> i64;
}

macro_rules! has_header {
    ($($type:ty),*) => {
        $(impl HasHeader for $type {
            fn header_revision(&self) -> i64 {
                self.header.as_ref().expect("responses carry a header").revision
            }
        })*
    };
}

has_header!(
    PutResponse,
    RangeResponse,
    DeleteRangeResponse,
    TxnResponse,
    CompactionResponse,
    LeaseGrantResponse,
    LeaseRevokeResponse,
    LeaseKeepAliveResponse,
    LeaseLeasesResponse,
    LeaseTimeToLiveResponse,
    AlarmResponse
);

/// A tiny deterministic generator (SplitMix64): seeds reproduce forever, whatever version of
/// any RNG crate the workspace pins.
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0; the modulo bias is irrelevant at test sizes).
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "below(0)");
        self.next_u64() % n
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}
