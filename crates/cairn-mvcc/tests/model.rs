//! Seeded randomized check against a model (STYLE 21: histories are checked against models).
//!
//! One `u64` seed drives a few thousand random requests — puts (with leases, prev_kv,
//! ignore_value/ignore_lease), single and range deletes, compare-and-swap txns that read their
//! own writes, compactions, lease grants and revokes, restarts — against two stores: one that
//! restarts from its snapshot now and then and one that never does. The model is the simplest
//! thing that can be right: the whole key space as a `BTreeMap` per revision. After every
//! request both stores must answer alike and as the model says; ranges at random historical
//! revisions, watch replays and history checksums are compared along the way.
//!
//! A failure prints `seed=…`; rerun it with `CAIRN_MVCC_SEED=<seed> cargo test -p cairn-mvcc
//! --test model`.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use cairn_mvcc::limits::TXN_OPS_MAX_DEFAULT;
use cairn_mvcc::watch::WatchRead;
use cairn_mvcc::{validate, ApplyResponse, MvccError};
use cairn_proto::cairnpb::internal_request::Request;
use cairn_proto::etcdserverpb::compare::CompareResult;
use cairn_proto::etcdserverpb::{
    CompactionRequest, DeleteRangeRequest, LeaseGrantRequest, LeaseRevokeRequest, PutRequest,
    RangeRequest,
};
use cairn_proto::mvccpb::event::EventType;
use cairn_proto::mvccpb::KeyValue;
use common::*;
use tracing::info;

const OPS_PER_SEED: usize = 2_000;
const SEEDS: [u64; 4] = [1, 2, 0x5eed, 0xc0ffee];

/// A small key space, with prefixes, so that ranges and rewrites collide often.
const KEYS: [&str; 12] = [
    "a", "a/1", "a/2", "a/3", "b", "b/1", "c", "d", "e", "f/x", "f/y", "g",
];

type State = BTreeMap<Vec<u8>, KeyValue>;

/// The model: the state after every revision, the compaction point and the granted leases.
struct Model {
    /// `history[r]` is the key space at revision `r`; `history[0]` is unused.
    history: Vec<State>,
    compact_revision: i64,
    leases: BTreeSet<i64>,
}

impl Model {
    fn new() -> Model {
        Model {
            history: vec![State::new(), State::new()],
            compact_revision: -1,
            leases: BTreeSet::new(),
        }
    }

    fn revision(&self) -> i64 {
        self.history.len() as i64 - 1
    }

    fn current(&self) -> &State {
        self.history.last().expect("history starts non-empty")
    }

    /// The range `[key, end)` at `revision`, with etcd's read-revision rules.
    fn range(&self, key: &[u8], end: &[u8], revision: i64) -> Result<Vec<KeyValue>, MvccError> {
        if revision > self.revision() {
            return Err(MvccError::FutureRevision);
        }
        let at = if revision <= 0 {
            self.revision()
        } else {
            revision
        };
        if revision > 0 && at < self.compact_revision {
            return Err(MvccError::Compacted);
        }
        let state = &self.history[at as usize];
        Ok(state
            .values()
            .filter(|kv| in_range(&kv.key, key, end))
            .cloned()
            .collect())
    }
}

/// etcd's (key, range_end) membership.
fn in_range(candidate: &[u8], key: &[u8], end: &[u8]) -> bool {
    match end {
        [] => candidate == key,
        [0] => candidate >= key,
        end => candidate >= key && candidate < end,
    }
}

/// The writes of one request, applied to a copy of the current state at revision `revision`.
struct Writer {
    state: State,
    revision: i64,
    changed: bool,
}

impl Writer {
    fn new(model: &Model) -> Writer {
        Writer {
            state: model.current().clone(),
            revision: model.revision() + 1,
            changed: false,
        }
    }

    fn put(&mut self, key: &[u8], value: &[u8], lease: i64) {
        let (create_revision, version) = match self.state.get(key) {
            Some(previous) => (previous.create_revision, previous.version + 1),
            None => (self.revision, 1),
        };
        let kv = KeyValue {
            key: key.to_vec(),
            create_revision,
            mod_revision: self.revision,
            version,
            value: value.to_vec(),
            lease,
        };
        self.state.insert(key.to_vec(), kv);
        self.changed = true;
    }

    fn delete(&mut self, key: &[u8], end: &[u8]) -> Vec<KeyValue> {
        let doomed: Vec<KeyValue> = self
            .state
            .values()
            .filter(|kv| in_range(&kv.key, key, end))
            .cloned()
            .collect();
        for kv in &doomed {
            self.state.remove(&kv.key);
            self.changed = true;
        }
        doomed
    }

    /// The revision reads inside the request answer with.
    fn read_revision(&self) -> i64 {
        self.revision - 1 + i64::from(self.changed)
    }

    fn commit(self, model: &mut Model) -> i64 {
        if self.changed {
            model.history.push(self.state);
        }
        model.revision()
    }
}

/// Two stores fed the same entries: `main` restarts now and then, `steady` never does.
struct Pair {
    main: TestStore,
    steady: TestStore,
}

impl Pair {
    fn apply(&mut self, request: Request) -> Result<ApplyResponse, MvccError> {
        let main = self.main.apply(request.clone());
        let steady = self.steady.apply(request);
        assert_eq!(main, steady, "a restarted store answered differently");
        main
    }
}

struct Run {
    rng: SplitMix64,
    model: Model,
    stores: Pair,
    next_lease: i64,
    values: u64,
}

impl Run {
    fn key(&mut self) -> &'static str {
        KEYS[self.rng.below(KEYS.len() as u64) as usize]
    }

    fn value(&mut self) -> String {
        self.values += 1;
        format!("v{}", self.values)
    }

    /// A random (key, range_end): one key, a prefix, a span, from-key, or an inverted span.
    fn key_range(&mut self) -> (String, String) {
        let key = self.key().to_string();
        match self.rng.below(5) {
            0 => (key, String::new()),
            1 => {
                let prefix = &key[..1];
                (prefix.to_string(), prefix_end(prefix))
            }
            2 => (key, "\0".to_string()),
            _ => {
                let other = self.key().to_string();
                (key, other)
            }
        }
    }

    fn existing_lease(&mut self) -> Option<i64> {
        let leases: Vec<i64> = self.model.leases.iter().copied().collect();
        match leases.len() {
            0 => None,
            n => Some(leases[self.rng.below(n as u64) as usize]),
        }
    }

    fn step(&mut self) {
        match self.rng.below(100) {
            0..=34 => self.put(),
            35..=44 => self.delete(),
            45..=64 => self.txn(),
            65..=67 => self.compact(),
            68..=71 => self.grant(),
            72..=74 => self.revoke(),
            75..=76 => {
                self.stores.main.restart();
            }
            _ => self.check_range(),
        }
    }

    fn put(&mut self) {
        let key = self.key();
        let value = self.value();
        let previous = self.model.current().get(key.as_bytes()).cloned();
        let mut request = PutRequest {
            prev_kv: self.rng.chance(30),
            ..put_req(key, &value)
        };
        match self.rng.below(10) {
            0 => {
                request.ignore_value = true;
                request.value.clear();
            }
            1 => request.ignore_lease = true,
            2..=4 => request.lease = self.existing_lease().unwrap_or(0),
            5 => request.lease = 999_999, // never granted
            _ => {}
        }
        validate::check_put(&request).expect("the generator makes valid puts");
        let result = self.stores.apply(Request::Put(request.clone()));
        let expected_error = if request.lease != 0 && !self.model.leases.contains(&request.lease) {
            Some(MvccError::LeaseNotFound)
        } else if (request.ignore_value || request.ignore_lease) && previous.is_none() {
            Some(MvccError::KeyNotFound)
        } else {
            None
        };
        if let Some(error) = expected_error {
            assert_eq!(result, Err(error), "{request:?}");
            return;
        }
        let mut writer = Writer::new(&self.model);
        let value = match (&previous, request.ignore_value) {
            (Some(previous), true) => previous.value.clone(),
            _ => request.value.clone(),
        };
        let lease = match (&previous, request.ignore_lease) {
            (Some(previous), true) => previous.lease,
            _ => request.lease,
        };
        writer.put(key.as_bytes(), &value, lease);
        let revision = writer.commit(&mut self.model);
        let Ok(ApplyResponse::Put(response)) = result else {
            panic!("{request:?} answered {result:?}");
        };
        assert_eq!(header_revision(&response), revision);
        let expected_prev = if request.prev_kv { previous } else { None };
        assert_eq!(response.prev_kv, expected_prev, "{request:?}");
    }

    fn delete(&mut self) {
        let (key, end) = self.key_range();
        let request = DeleteRangeRequest {
            prev_kv: self.rng.chance(50),
            ..delete_req(&key, &end)
        };
        let result = self.stores.apply(Request::DeleteRange(request.clone()));
        let mut writer = Writer::new(&self.model);
        let deleted = writer.delete(key.as_bytes(), end.as_bytes());
        let revision = writer.commit(&mut self.model);
        let Ok(ApplyResponse::DeleteRange(response)) = result else {
            panic!("{request:?} answered {result:?}");
        };
        assert_eq!(response.deleted, deleted.len() as i64, "{request:?}");
        assert_eq!(header_revision(&response), revision);
        let expected_prev = if request.prev_kv { deleted } else { Vec::new() };
        assert_eq!(response.prev_kvs, expected_prev, "{request:?}");
    }

    /// A compare-and-swap: compare one key's mod revision (right or wrong), then write two
    /// distinct keys and read a range inside the txn.
    fn txn(&mut self) {
        let watched = self.key();
        let actual_mod = self
            .model
            .current()
            .get(watched.as_bytes())
            .map_or(0, |kv| kv.mod_revision);
        let operand = if self.rng.chance(60) {
            actual_mod
        } else {
            self.rng.below(5) as i64
        };
        let put_key = self.key();
        let mut delete_key = self.key();
        while delete_key == put_key {
            delete_key = self.key();
        }
        let (read_key, read_end) = self.key_range();
        let put_value = self.value();
        let else_value = self.value();
        let request = txn(
            vec![cmp_mod(watched, CompareResult::Equal, operand)],
            vec![
                put_op(put_key, &put_value),
                delete_op(delete_key, ""),
                range_op(&read_key, &read_end),
            ],
            vec![put_op(watched, &else_value), range_op(&read_key, &read_end)],
        );
        validate::check_txn(&request, TXN_OPS_MAX_DEFAULT).expect("the generator makes valid txns");
        let result = self.stores.apply(Request::Txn(request.clone()));
        let Ok(ApplyResponse::Txn(response)) = result else {
            panic!("{request:?} answered {result:?}");
        };
        let succeeded = actual_mod == operand;
        assert_eq!(response.succeeded, succeeded, "{request:?}");
        let mut writer = Writer::new(&self.model);
        let read = if succeeded {
            writer.put(put_key.as_bytes(), put_value.as_bytes(), 0);
            writer.delete(delete_key.as_bytes(), b"");
            &response.responses[2]
        } else {
            writer.put(watched.as_bytes(), else_value.as_bytes(), 0);
            &response.responses[1]
        };
        let seen: Vec<KeyValue> = writer
            .state
            .values()
            .filter(|kv| in_range(&kv.key, read_key.as_bytes(), read_end.as_bytes()))
            .cloned()
            .collect();
        assert_eq!(
            as_range(read).kvs,
            seen,
            "the txn's read sees its own writes"
        );
        assert_eq!(header_revision(as_range(read)), writer.read_revision());
        let revision = writer.commit(&mut self.model);
        assert_eq!(header_revision(&response), revision);
    }

    /// Compacts mostly 50–200 revisions behind the current one, so that a wide window of
    /// history stays readable; sometimes at the edges (below or at the compaction point, the
    /// future).
    fn compact(&mut self) {
        let current = self.model.revision();
        let lowest = (self.model.compact_revision - 1).max(0);
        let edges = [lowest, self.model.compact_revision, current + 1];
        let revision = if self.rng.chance(20) {
            edges[self.rng.below(edges.len() as u64) as usize]
        } else {
            (current - 50 - self.rng.below(150) as i64).max(0)
        };
        let request = CompactionRequest {
            revision,
            physical: true,
        };
        let result = self.stores.apply(Request::Compaction(request));
        if revision <= self.model.compact_revision {
            assert_eq!(result, Err(MvccError::Compacted));
        } else if revision > current {
            assert_eq!(result, Err(MvccError::FutureRevision));
        } else {
            assert!(result.is_ok(), "compact at {revision}: {result:?}");
            self.model.compact_revision = revision;
        }
        assert_eq!(
            self.stores.main.store.compact_revision(),
            self.model.compact_revision
        );
    }

    fn grant(&mut self) {
        self.next_lease += 1;
        let id = self.next_lease;
        let request = LeaseGrantRequest { ttl: 60, id };
        let result = self.stores.apply(Request::LeaseGrant(request));
        assert!(result.is_ok(), "grant {id}: {result:?}");
        self.model.leases.insert(id);
    }

    fn revoke(&mut self) {
        let id = match self.existing_lease() {
            Some(id) if self.rng.chance(90) => id,
            _ => 424_242, // never granted
        };
        let result = self
            .stores
            .apply(Request::LeaseRevoke(LeaseRevokeRequest { id }));
        if !self.model.leases.remove(&id) {
            assert_eq!(result, Err(MvccError::LeaseNotFound));
            return;
        }
        let mut writer = Writer::new(&self.model);
        let attached: Vec<Vec<u8>> = writer
            .state
            .values()
            .filter(|kv| kv.lease == id)
            .map(|kv| kv.key.clone())
            .collect();
        for key in attached {
            writer.delete(&key, b"");
        }
        let revision = writer.commit(&mut self.model);
        let Ok(ApplyResponse::LeaseRevoke(response)) = result else {
            panic!("revoke {id} answered {result:?}");
        };
        assert_eq!(header_revision(&response), revision);
    }

    /// A range at a random revision (sometimes compacted, sometimes in the future), with a
    /// random limit, on both stores.
    fn check_range(&mut self) {
        let (key, end) = self.key_range();
        let current = self.model.revision();
        let floor = (self.model.compact_revision - 1).max(0);
        let revision = match self.rng.below(6) {
            0 => 0,
            1 => self.rng.below(current as u64 + 2) as i64,
            // The readable window, one below it and one past it.
            _ => floor + self.rng.below((current - floor + 2) as u64) as i64,
        };
        let limit = self.rng.below(4) as i64;
        let request = RangeRequest {
            revision,
            limit,
            ..range_req(&key, &end)
        };
        let expected = self.model.range(key.as_bytes(), end.as_bytes(), revision);
        for store in [&self.stores.main, &self.stores.steady] {
            let actual = store.range(request.clone());
            match &expected {
                Err(error) => assert_eq!(actual.as_ref().err(), Some(error), "{request:?}"),
                Ok(kvs) => {
                    let response = actual.unwrap_or_else(|e| panic!("{request:?}: {e}"));
                    let shown = if limit == 0 {
                        kvs.len()
                    } else {
                        kvs.len().min(limit as usize)
                    };
                    assert_eq!(response.kvs, kvs[..shown].to_vec(), "{request:?}");
                    assert_eq!(response.count, kvs.len() as i64, "{request:?}");
                    assert_eq!(response.more, shown < kvs.len(), "{request:?}");
                    assert_eq!(header_revision(&response), current);
                }
            }
        }
    }

    /// Watch replay from a random revision after the compaction: per revision, the events
    /// are exactly the keys whose state changed, as the model's consecutive states say.
    fn check_watch(&self) {
        let from = self.model.compact_revision.max(1) + 1;
        let filter = watch_filter("\0", "\0");
        let mut events = Vec::new();
        let mut next = from;
        while next <= self.model.revision() {
            let read = self
                .stores
                .main
                .store
                .watch_events(&filter, next, usize::MAX);
            let WatchRead::Events {
                events: batch,
                next_revision,
            } = read
            else {
                panic!(
                    "watch from {next} after compaction {}",
                    self.model.compact_revision
                );
            };
            assert!(next_revision > next, "a catch-up read always progresses");
            events.extend(batch);
            next = next_revision;
        }
        let mut actual: Vec<(i64, Vec<u8>, i32, KeyValue)> = events
            .into_iter()
            .map(|e| {
                let kv = e.kv.expect("events carry a kv");
                (kv.mod_revision, kv.key.clone(), e.r#type, kv)
            })
            .collect();
        actual.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        let mut expected = Vec::new();
        for revision in from..=self.model.revision() {
            let before = &self.model.history[revision as usize - 1];
            let after = &self.model.history[revision as usize];
            let keys: BTreeSet<&Vec<u8>> = before.keys().chain(after.keys()).collect();
            for key in keys {
                match (before.get(key), after.get(key)) {
                    (_, Some(kv)) if kv.mod_revision == revision => {
                        expected.push((revision, key.clone(), EventType::Put as i32, kv.clone()));
                    }
                    (Some(_), None) => {
                        let tombstone = KeyValue {
                            key: key.clone(),
                            mod_revision: revision,
                            ..KeyValue::default()
                        };
                        expected.push((revision, key.clone(), EventType::Delete as i32, tombstone));
                    }
                    _ => {}
                }
            }
        }
        assert_eq!(actual, expected, "watch replay from {from}");
    }

    fn check_stores_agree(&self) {
        let (main, steady) = (&self.stores.main.store, &self.stores.steady.store);
        assert_eq!(main.current_revision(), self.model.revision());
        assert_eq!(steady.current_revision(), self.model.revision());
        assert_eq!(main.hash_kv(0).unwrap(), steady.hash_kv(0).unwrap());
        assert_eq!(main.lease_leases(), steady.lease_leases());
        let model_leases: Vec<i64> = self.model.leases.iter().copied().collect();
        let leases: Vec<i64> = main.lease_leases().leases.iter().map(|l| l.id).collect();
        assert_eq!(leases, model_leases);
    }
}

/// Prints the seed when the test body panics.
struct SeedReport(u64);

impl Drop for SeedReport {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("model check failed: seed={} (rerun: CAIRN_MVCC_SEED={} cargo test -p cairn-mvcc --test model)", self.0, self.0);
        }
    }
}

fn run_seed(seed: u64) {
    let _report = SeedReport(seed);
    info!(
        seed,
        ops = OPS_PER_SEED,
        "random requests against the model"
    );
    let mut run = Run {
        rng: SplitMix64::new(seed),
        model: Model::new(),
        stores: Pair {
            main: TestStore::new(),
            steady: TestStore::new(),
        },
        next_lease: 0,
        values: 0,
    };
    for op in 0..OPS_PER_SEED {
        run.step();
        if op % 100 == 99 {
            run.check_stores_agree();
            run.check_watch();
        }
    }
    run.check_stores_agree();
    run.check_watch();
    info!(
        seed,
        revision = run.model.revision(),
        compact_revision = run.model.compact_revision,
        keys = run.model.current().len(),
        leases = run.model.leases.len(),
        "random phase done"
    );
    {
        info!(
            seed,
            "every revision still in history reads as the model says"
        );
        let first = run.model.compact_revision.max(1);
        for revision in first..=run.model.revision() {
            let request = RangeRequest {
                revision,
                ..range_req("\0", "\0")
            };
            let expected = run.model.range(b"\0", b"\0", revision).unwrap();
            assert_eq!(
                run.stores.main.range(request).unwrap().kvs,
                expected,
                "at {revision}"
            );
        }
    }
}

#[test]
fn random_requests_agree_with_the_model() {
    let seeds: Vec<u64> = match std::env::var("CAIRN_MVCC_SEED") {
        Ok(seed) => vec![seed.parse().expect("CAIRN_MVCC_SEED is a u64")],
        Err(_) => SEEDS.to_vec(),
    };
    for seed in seeds {
        run_seed(seed);
    }
}
