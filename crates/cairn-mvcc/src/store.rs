//! `KvStore`: the MVCC key-value state — key index, history in the engine, leases, alarms —
//! and the read and write primitives every request is built from.
//!
//! Reads take `&self` and see one revision; writes go through a [`WriteTxn`], which gives every
//! change of one request the same main revision and consecutive sub revisions, and makes the
//! request's own earlier changes visible to its later reads (etcd's `storeTxnWrite`).

use std::collections::BTreeSet;

use bytes::Bytes;
use cairn_proto::cairnpb::LeaseRecord;
use cairn_proto::mvccpb::KeyValue;
use cairn_storage::engine::{Engine, SnapshotCut, SnapshotPart, WriteBatch};
use cairn_storage::schema::{
    Bucket, CONSENSUS_APPLIED_STATE, META_APPLIED_INDEX, META_COMPACT_REVISION,
    META_CURRENT_REVISION,
};
use prost::Message;

use crate::auth::AuthStore;
use crate::error::MvccError;
use crate::index::{KeyRange, TreeIndex};
use crate::lease::LeaseTable;
use crate::limits::{QUOTA_BACKEND_BYTES_DEFAULT, SIMPLE_TOKEN_TTL_MS_DEFAULT};
use crate::revision::Revision;

/// Settings of the state machine that every replica must share.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Bytes the engine may hold before the NOSPACE alarm (`--quota-backend-bytes`).
    pub quota_backend_bytes: u64,
    /// Member that raises the NOSPACE alarm when a write hits the quota.
    pub member_id: u64,
    /// How long an unused simple token stays valid (`--auth-token-ttl`).
    pub simple_token_ttl_ms: i64,
}

impl Default for StoreConfig {
    fn default() -> StoreConfig {
        StoreConfig {
            quota_backend_bytes: QUOTA_BACKEND_BYTES_DEFAULT,
            member_id: 0,
            simple_token_ttl_ms: SIMPLE_TOKEN_TTL_MS_DEFAULT,
        }
    }
}

/// An alarm raised on a member: (member id, `etcdserverpb.AlarmType` value).
pub type Alarm = (u64, i32);

/// The state machine's data. See the module doc.
pub struct KvStore {
    pub(crate) engine: Box<dyn Engine>,
    pub(crate) index: TreeIndex,
    pub(crate) current_revision: i64,
    /// Revision of the last compaction; -1 before the first one (as etcd).
    pub(crate) compact_revision: i64,
    pub(crate) applied_index: u64,
    pub(crate) leases: LeaseTable,
    pub(crate) alarms: BTreeSet<Alarm>,
    pub(crate) auth: AuthStore,
    pub(crate) config: StoreConfig,
}

impl KvStore {
    /// Opens the store over `engine`, rebuilding the key index, leases and alarms from what the
    /// engine holds (empty engine: a fresh store at revision 1).
    pub fn open(engine: Box<dyn Engine>, config: StoreConfig) -> KvStore {
        let mut store = KvStore {
            engine,
            index: TreeIndex::default(),
            current_revision: 1,
            compact_revision: -1,
            applied_index: 0,
            leases: LeaseTable::default(),
            alarms: BTreeSet::new(),
            auth: AuthStore::new(config.simple_token_ttl_ms),
            config,
        };
        store.restore();
        store
    }

    fn restore(&mut self) {
        self.applied_index = self.meta(META_APPLIED_INDEX).map_or(0, |v| v as u64);
        self.compact_revision = self.meta(META_COMPACT_REVISION).unwrap_or(-1);
        let mut current = self.meta(META_CURRENT_REVISION).unwrap_or(1);
        // Records come in revision order, so replaying them into the index rebuilds every
        // key's generations exactly; a key's first record restores what compaction dropped
        // before it (its generation's create revision and version).
        self.engine.scan(Bucket::Key, &[], None, &mut |key, value| {
            let (revision, tombstone) = Revision::from_bytes(key)
                .unwrap_or_else(|| panic!("store: malformed revision key {key:?} in the engine"));
            current = current.max(revision.main);
            let kv = decode_kv(value);
            if tombstone {
                self.index.tombstone(&kv.key, revision);
            } else {
                let (created, version) = (kv.create_revision, kv.version);
                self.index.restore_put(&kv.key, revision, created, version);
            }
            true
        });
        // Leases first: attachments below refer to them.
        let mut leases = Vec::new();
        self.engine.scan(Bucket::Lease, &[], None, &mut |_, value| {
            leases.push(LeaseRecord::decode(value).expect("store: undecodable lease"));
            true
        });
        for record in leases {
            self.leases.restore_lease(record);
        }
        // Attachments follow the newest record of each live key.
        let mut attached = Vec::new();
        self.index
            .visit(&KeyRange::new(&[], &[0]), current, &mut |key, found| {
                attached.push((key.to_vec(), found.modified));
                true
            });
        for (key, modified) in attached {
            let lease = self.kv_at(modified).lease;
            if lease != 0 {
                self.leases.restore_attachment(lease, &key);
            }
        }
        self.current_revision = current.max(self.compact_revision);
        let alarms = &mut self.alarms;
        self.engine.scan(Bucket::Alarm, &[], None, &mut |key, _| {
            alarms.insert(decode_alarm_key(key));
            true
        });
        self.restore_auth();
    }

    pub(crate) fn meta(&self, name: &[u8]) -> Option<i64> {
        let value = self.engine.get(Bucket::Meta, name)?;
        let bytes: [u8; 8] = value
            .as_ref()
            .try_into()
            .expect("store: meta values are 8 bytes");
        Some(i64::from_be_bytes(bytes))
    }

    pub(crate) fn put_meta(&mut self, name: &[u8], value: i64) {
        let mut batch = WriteBatch::new();
        batch.put(
            Bucket::Meta,
            name.to_vec(),
            Bytes::copy_from_slice(&value.to_be_bytes()),
        );
        self.engine.write(batch);
    }

    /// Advances the applied index past entry `index`, which changes no data (a raft leader's
    /// blank entry, a membership change).
    pub fn apply_noop(&mut self, index: u64) {
        assert!(
            index > self.applied_index,
            "apply_noop: entry {index} is not after the applied index {}",
            self.applied_index
        );
        self.applied_index = index;
        self.put_meta(META_APPLIED_INDEX, index as i64);
    }

    /// The consensus layer's record kept with the data (see `schema::Bucket::Consensus`).
    pub fn consensus_state(&self) -> Option<Bytes> {
        self.engine.get(Bucket::Consensus, CONSENSUS_APPLIED_STATE)
    }

    /// Replaces the consensus layer's record; it is part of the next snapshot.
    pub fn set_consensus_state(&mut self, state: Bytes) {
        let mut batch = WriteBatch::new();
        batch.put(Bucket::Consensus, CONSENSUS_APPLIED_STATE.to_vec(), state);
        self.engine.write(batch);
    }

    /// Revision of the newest write.
    pub fn current_revision(&self) -> i64 {
        self.current_revision
    }

    /// Revision of the last compaction (-1: never compacted).
    pub fn compact_revision(&self) -> i64 {
        self.compact_revision
    }

    /// Index of the last log entry applied.
    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    /// Bytes the engine holds (what the quota and `Status.db_size` report).
    pub fn size_bytes(&self) -> u64 {
        self.engine.size_bytes()
    }

    /// Number of keys with history (etcd_debugging_mvcc_keys_total).
    pub fn key_count(&self) -> usize {
        self.index.len()
    }

    /// Alarms currently raised.
    pub fn alarms(&self) -> Vec<Alarm> {
        self.alarms.iter().copied().collect()
    }

    /// Streams the whole state to `out` (a snapshot file, the Maintenance Snapshot stream).
    pub fn write_snapshot(&self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        self.engine.write_snapshot(out)
    }

    /// Fixes the state a snapshot written in parts will hold (see `Engine::snapshot_cut`).
    pub fn snapshot_cut(&self) -> SnapshotCut {
        self.engine.snapshot_cut()
    }

    /// Writes the next part of `cut` (see `Engine::write_snapshot_part`).
    pub fn write_snapshot_part(
        &self,
        cut: &mut SnapshotCut,
        out: &mut dyn std::io::Write,
        records_max: usize,
    ) -> std::io::Result<SnapshotPart> {
        self.engine.write_snapshot_part(cut, out, records_max)
    }

    /// Checks a requested read revision against history: `requested <= 0` means `current`.
    pub(crate) fn read_revision(&self, requested: i64, current: i64) -> Result<i64, MvccError> {
        if requested > current {
            return Err(MvccError::FutureRevision);
        }
        if requested <= 0 {
            return Ok(current);
        }
        if requested < self.compact_revision {
            return Err(MvccError::Compacted);
        }
        Ok(requested)
    }

    /// The record stored at `revision` (a live put: the index only points at records it holds).
    pub(crate) fn kv_at(&self, revision: Revision) -> KeyValue {
        let value = self.engine.get(Bucket::Key, &revision.to_bytes(false));
        let value = value.unwrap_or_else(|| panic!("store: index points at missing {revision:?}"));
        decode_kv(&value)
    }

    /// Keys of `range` as of revision `at`: up to `limit` records (0: all) and the total count.
    pub(crate) fn range_at(
        &self,
        range: &KeyRange,
        at: i64,
        limit: usize,
        count_only: bool,
    ) -> (Vec<KeyValue>, i64) {
        let mut kvs = Vec::new();
        let mut count = 0i64;
        self.index.visit(range, at, &mut |_, found| {
            count += 1;
            if !count_only && (limit == 0 || kvs.len() < limit) {
                kvs.push(self.kv_at(found.modified));
            }
            true
        });
        (kvs, count)
    }

    /// The current value of `key` as of revision `at`.
    pub(crate) fn get_at(&self, key: &[u8], at: i64) -> Option<KeyValue> {
        self.index
            .get(key, at)
            .map(|found| self.kv_at(found.modified))
    }

    /// Starts the changes of one request.
    pub(crate) fn write_txn(&mut self) -> WriteTxn<'_> {
        let begin = self.current_revision;
        WriteTxn {
            store: self,
            begin,
            changes: 0,
        }
    }

    pub(crate) fn put_lease_record(&mut self, record: &LeaseRecord) {
        let mut batch = WriteBatch::new();
        let value = Bytes::from(record.encode_to_vec());
        batch.put(Bucket::Lease, record.id.to_be_bytes().to_vec(), value);
        self.engine.write(batch);
    }

    pub(crate) fn delete_lease_record(&mut self, id: i64) {
        let mut batch = WriteBatch::new();
        batch.delete(Bucket::Lease, id.to_be_bytes().to_vec());
        self.engine.write(batch);
    }

    pub(crate) fn set_alarm(&mut self, alarm: Alarm, raised: bool) {
        let mut batch = WriteBatch::new();
        let key = encode_alarm_key(alarm);
        if raised {
            self.alarms.insert(alarm);
            batch.put(Bucket::Alarm, key, Bytes::new());
        } else {
            self.alarms.remove(&alarm);
            batch.delete(Bucket::Alarm, key);
        }
        self.engine.write(batch);
    }

    /// Checks the agreement between the index and the engine (tests, debug builds): every
    /// revision the index holds has its record, and no revision is above the current one.
    pub fn validate(&self) {
        let mut records = 0usize;
        self.engine.scan(Bucket::Key, &[], None, &mut |key, _| {
            let (revision, _) = Revision::from_bytes(key).expect("revision key");
            assert!(
                revision.main <= self.current_revision,
                "record {revision:?} from the future"
            );
            records += 1;
            true
        });
        assert!(self.compact_revision <= self.current_revision);
        assert!(
            records >= self.index.len(),
            "index has keys without records"
        );
    }
}

/// The changes of one request; see the module doc.
pub(crate) struct WriteTxn<'a> {
    store: &'a mut KvStore,
    begin: i64,
    changes: i64,
}

impl WriteTxn<'_> {
    pub(crate) fn store(&self) -> &KvStore {
        self.store
    }

    /// The revision reads inside this request see: its own earlier changes included.
    pub(crate) fn read_revision(&self) -> i64 {
        self.begin + i64::from(self.changes > 0)
    }

    /// The revision this request will end at.
    pub(crate) fn end_revision(&self) -> i64 {
        self.read_revision()
    }

    /// Writes `key = value` attached to `lease` (0: none); returns the put's main revision.
    pub(crate) fn put(&mut self, key: &[u8], value: &[u8], lease: i64) -> i64 {
        let main = self.begin + 1;
        let revision = Revision::new(main, self.changes);
        let previous = self.store.index.put(key, revision);
        let (create_revision, version) = match previous {
            Some(found) => (found.created.main, found.version + 1),
            None => (main, 1),
        };
        let old_lease = match previous {
            Some(found) if !self.store.leases.is_empty() => self.store.kv_at(found.modified).lease,
            _ => 0,
        };
        let kv = KeyValue {
            key: key.to_vec(),
            create_revision,
            mod_revision: main,
            version,
            value: value.to_vec(),
            lease,
        };
        let mut batch = WriteBatch::new();
        batch.put(
            Bucket::Key,
            revision.to_bytes(false),
            Bytes::from(kv.encode_to_vec()),
        );
        self.store.engine.write(batch);
        if old_lease != 0 {
            self.store.leases.detach(old_lease, key);
        }
        if lease != 0 {
            self.store.leases.attach(lease, key);
        }
        self.changes += 1;
        main
    }

    /// Deletes every live key of `range`; returns the records deleted (as they were).
    pub(crate) fn delete_range(&mut self, range: &KeyRange) -> Vec<KeyValue> {
        let (deleted, _) = self.store.range_at(range, self.read_revision(), 0, false);
        for kv in &deleted {
            self.delete(kv);
        }
        deleted
    }

    fn delete(&mut self, old: &KeyValue) {
        let main = self.begin + 1;
        let revision = Revision::new(main, self.changes);
        let tombstone = KeyValue {
            key: old.key.clone(),
            mod_revision: main,
            ..KeyValue::default()
        };
        let mut batch = WriteBatch::new();
        batch.put(
            Bucket::Key,
            revision.to_bytes(true),
            Bytes::from(tombstone.encode_to_vec()),
        );
        self.store.engine.write(batch);
        self.store.index.tombstone(&old.key, revision);
        if old.lease != 0 {
            self.store.leases.detach(old.lease, &old.key);
        }
        self.changes += 1;
    }

    /// Finishes the request: the store's revision moves on iff anything changed. Returns the
    /// revision the request is answered with.
    pub(crate) fn end(self) -> i64 {
        let revision = self.end_revision();
        if self.changes > 0 {
            assert_eq!(
                revision,
                self.store.current_revision + 1,
                "one revision per request"
            );
            self.store.current_revision = revision;
            self.store.put_meta(META_CURRENT_REVISION, revision);
        }
        revision
    }
}

/// Decodes a `Key`-bucket record. The engine only holds records this module encoded (snapshot
/// files are CRC-checked on load), so a failure is a broken invariant.
pub(crate) fn decode_kv(bytes: &[u8]) -> KeyValue {
    KeyValue::decode(bytes).unwrap_or_else(|error| panic!("store: bad record: {error}"))
}

fn encode_alarm_key((member, alarm): Alarm) -> Vec<u8> {
    let mut key = member.to_be_bytes().to_vec();
    key.extend_from_slice(&alarm.to_be_bytes());
    key
}

fn decode_alarm_key(key: &[u8]) -> Alarm {
    assert_eq!(key.len(), 12, "store: alarm key of {} bytes", key.len());
    let mut member = [0u8; 8];
    member.copy_from_slice(&key[..8]);
    let mut alarm = [0u8; 4];
    alarm.copy_from_slice(&key[8..]);
    (u64::from_be_bytes(member), i32::from_be_bytes(alarm))
}
