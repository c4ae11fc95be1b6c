//! Seeded random histories of a correct store pass; the same histories with one read corrupted
//! fail.
//!
//! The generator runs a sequential register store with etcd revisions, one operation per
//! linearization point, then widens each operation's interval randomly around its point (each
//! client stays sequential), so intervals overlap the way concurrent clients' do. Some operations
//! time out: their outcome is unknown, and half of them took effect. Every written value is
//! unique, which makes the corruptions below provably non-linearizable. Leases take part: puts
//! attach keys to them, revokes delete the attached keys at one revision.
//!
//! A failure prints its seed; `CAIRN_CHECK_SEED=<seed> cargo test -p cairn-check --test
//! randomized` replays it.

use std::collections::{BTreeSet, HashMap};

use cairn_check::{check, check_with, Call, CheckOptions, History, Operation, Outcome, Violation};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Shape of a generated history.
#[derive(Clone, Copy, Debug)]
struct Shape {
    operations: usize,
    clients: u64,
    keys: usize,
    /// Chance that an operation times out (its outcome is unknown).
    unknown_probability: f64,
}

/// Time between consecutive linearization points, and the most an interval extends on either
/// side of its point: about `SPREAD_NS / STEP_NS` operations overlap each one.
const STEP_NS: u64 = 1_000;
const SPREAD_NS: u64 = 6_000;

/// Histories per test run when no seed is given.
const RUNS: u64 = 6;

/// The seeds to run: the one in `CAIRN_CHECK_SEED`, or `RUNS` fresh ones.
fn seeds() -> Vec<u64> {
    match std::env::var("CAIRN_CHECK_SEED") {
        Ok(seed) => {
            let seed = seed
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("CAIRN_CHECK_SEED={seed:?} is not a u64"));
            vec![seed]
        }
        Err(_) => {
            let base: u64 = rand::random();
            (0..RUNS).map(|run| base.wrapping_add(run)).collect()
        }
    }
}

fn replay(seed: u64) -> String {
    format!(
        "seed={seed} (replay: CAIRN_CHECK_SEED={seed} cargo test -p cairn-check --test randomized)"
    )
}

/// Lease ids the generator uses (few, so grants, revokes and puts meet).
const LEASES: i64 = 3;

/// A correct linearizable store, run sequentially.
struct Store {
    revision: i64,
    /// Per key: the value and its mod_revision.
    data: HashMap<Vec<u8>, (Vec<u8>, i64)>,
    /// Per granted lease: its attached keys.
    leases: HashMap<i64, BTreeSet<Vec<u8>>>,
}

impl Store {
    fn new() -> Self {
        Store {
            revision: 1,
            data: HashMap::new(),
            leases: HashMap::new(),
        }
    }

    fn apply(&mut self, call: &Call) -> Outcome {
        match call {
            Call::Put { key, value } => Outcome::Put {
                revision: self.write(key, Some(value)),
            },
            Call::LeasePut { key, value, lease } => match self.leases.get_mut(lease) {
                Some(keys) => {
                    keys.insert(key.clone());
                    let revision = self.write(key, Some(value));
                    // `write` detached the key from every lease; attach it again.
                    self.leases.entry(*lease).or_default().insert(key.clone());
                    Outcome::Put { revision }
                }
                None => Outcome::LeaseRefused,
            },
            Call::LeaseGrant { lease } if self.leases.contains_key(lease) => Outcome::LeaseRefused,
            Call::LeaseGrant { lease } => {
                self.leases.insert(*lease, BTreeSet::new());
                Outcome::Lease {
                    revision: self.revision,
                }
            }
            Call::LeaseRevoke { lease } => match self.leases.remove(lease) {
                Some(keys) if keys.is_empty() => Outcome::Lease {
                    revision: self.revision,
                },
                Some(keys) => {
                    self.revision += 1;
                    for key in keys {
                        self.data.remove(&key);
                    }
                    Outcome::Lease {
                        revision: self.revision,
                    }
                }
                None => Outcome::LeaseRefused,
            },
            Call::LeaseKeepAlive { lease } if self.leases.contains_key(lease) => Outcome::Lease {
                revision: self.revision,
            },
            Call::LeaseKeepAlive { .. } => Outcome::LeaseRefused,
            Call::Get { key } => {
                let current = self.data.get(key);
                Outcome::Get {
                    revision: self.revision,
                    value: current.map(|(value, _)| value.clone()),
                    mod_revision: current.map_or(0, |(_, mod_revision)| *mod_revision),
                }
            }
            Call::Delete { key } if self.data.contains_key(key) => Outcome::Delete {
                revision: self.write(key, None),
                deleted: 1,
            },
            Call::Delete { .. } => Outcome::Delete {
                revision: self.revision,
                deleted: 0,
            },
            Call::CompareAndPut {
                key,
                expected,
                value,
            } => {
                let current = self.data.get(key).map(|(value, _)| value);
                if current == expected.as_ref() {
                    Outcome::CompareAndPut {
                        revision: self.write(key, Some(value)),
                        succeeded: true,
                    }
                } else {
                    Outcome::CompareAndPut {
                        revision: self.revision,
                        succeeded: false,
                    }
                }
            }
        }
    }

    fn write(&mut self, key: &[u8], value: Option<&Vec<u8>>) -> i64 {
        self.revision += 1;
        for keys in self.leases.values_mut() {
            keys.remove(key);
        }
        match value {
            Some(value) => {
                self.data
                    .insert(key.to_vec(), (value.clone(), self.revision));
            }
            None => {
                self.data.remove(key);
            }
        }
        self.revision
    }

    fn current(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.data.get(key).map(|(value, _)| value.clone())
    }
}

/// A call on a random key; `step` makes every written value unique.
fn random_call(rng: &mut StdRng, store: &Store, shape: &Shape, step: usize) -> Call {
    let key = format!("k{}", rng.gen_range(0..shape.keys)).into_bytes();
    let value = format!("v{step}").into_bytes();
    let lease = rng.gen_range(1..=LEASES);
    match rng.gen_range(0..100) {
        0..=29 => Call::Put { key, value },
        30..=64 => Call::Get { key },
        65..=72 => Call::Delete { key },
        73..=78 => Call::LeasePut { key, value, lease },
        79..=81 => Call::LeaseGrant { lease },
        82..=83 => Call::LeaseRevoke { lease },
        84 => Call::LeaseKeepAlive { lease },
        _ => {
            // Half the time the expectation holds, so CompareAndPuts also succeed.
            let expected = if rng.gen_bool(0.5) {
                store.current(&key)
            } else {
                Some(format!("v{}", rng.gen_range(0..=step)).into_bytes())
            };
            Call::CompareAndPut {
                key,
                expected,
                value,
            }
        }
    }
}

fn generate(seed: u64, shape: Shape) -> History {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut store = Store::new();
    let mut busy_until_ns = vec![0u64; shape.clients as usize];
    let mut operations = Vec::with_capacity(shape.operations);
    let mut point_ns = SPREAD_NS;
    while operations.len() < shape.operations {
        point_ns += STEP_NS;
        let free: Vec<usize> = (0..busy_until_ns.len())
            .filter(|&client| busy_until_ns[client] < point_ns)
            .collect();
        if free.is_empty() {
            continue;
        }
        let client = free[rng.gen_range(0..free.len())];
        let call = random_call(&mut rng, &store, &shape, operations.len());
        let earliest_ns = (busy_until_ns[client] + 1).max(point_ns - SPREAD_NS);
        let invoke_ns = rng.gen_range(earliest_ns..=point_ns);
        let return_ns = point_ns + rng.gen_range(0..SPREAD_NS);
        busy_until_ns[client] = return_ns;
        let outcome = if rng.gen_bool(shape.unknown_probability) {
            // Timed out: half the time the request reached the store anyway.
            if rng.gen_bool(0.5) {
                store.apply(&call);
            }
            Outcome::Unknown
        } else {
            store.apply(&call)
        };
        operations.push(Operation {
            client: client as u64,
            call,
            invoke_ns,
            return_ns,
            outcome,
        });
    }
    History::new(operations)
}

fn is_acked_write(operation: &Operation) -> bool {
    matches!(
        operation.outcome,
        Outcome::Put { .. }
            | Outcome::CompareAndPut {
                succeeded: true,
                ..
            }
    )
}

/// The value a Put or CompareAndPut call writes.
fn written_value(operation: &Operation) -> Vec<u8> {
    match &operation.call {
        Call::Put { value, .. }
        | Call::LeasePut { value, .. }
        | Call::CompareAndPut { value, .. } => value.clone(),
        other => panic!("{other} writes no value"),
    }
}

/// Makes `read` return what `write` wrote, with its mod_revision.
fn read_from(history: &mut History, read: usize, write: usize) {
    let value = written_value(&history.operations[write]);
    let revision = history.operations[write].outcome.mutation_revision();
    let Outcome::Get {
        value: read_value,
        mod_revision,
        ..
    } = &mut history.operations[read].outcome
    else {
        panic!("operation {read} is not a read");
    };
    *read_value = Some(value);
    *mod_revision = revision.unwrap_or_default();
}

fn is_read(operation: &Operation) -> bool {
    matches!(operation.outcome, Outcome::Get { .. })
}

/// Turns one read into a stale read: it returns the value (and mod_revision) of a write `w1`
/// although another mutation `w2` of the key ran entirely between `w1` and the read. With
/// unique values no order explains it. Returns the corrupted read, or None when the history
/// has no such read.
fn corrupt_with_stale_read(history: &mut History, rng: &mut StdRng) -> Option<usize> {
    let ops = &history.operations;
    let mutations: Vec<usize> = (0..ops.len())
        .filter(|&i| ops[i].outcome.mutation_revision().is_some())
        .collect();
    let same_key = |a: usize, b: usize| ops[a].key() == ops[b].key();
    let mut candidates = Vec::new();
    for read in (0..ops.len()).filter(|&i| is_read(&ops[i])) {
        // The mutation w2 invoked last among those done before the read began...
        let Some(&w2) = mutations
            .iter()
            .filter(|&&m| same_key(m, read) && ops[m].return_ns < ops[read].invoke_ns)
            .max_by_key(|&&m| ops[m].invoke_ns)
        else {
            continue;
        };
        // ...and any write w1 done before w2 began.
        if let Some(&w1) = mutations.iter().find(|&&m| {
            is_acked_write(&ops[m]) && same_key(m, read) && ops[m].return_ns < ops[w2].invoke_ns
        }) {
            candidates.push((read, w1));
        }
    }
    let &(read, w1) = candidates.get(rng.gen_range(0..candidates.len().max(1)))?;
    read_from(history, read, w1);
    Some(read)
}

/// Makes a new-old inversion: writes `wa` and `wb` overlap, read `g1` (begun after `wa` ended)
/// returned `wb`'s value, so `wa` came first; read `g2`, begun after `g1` ended, is changed to
/// return `wa`'s value. No mutation lies entirely between `wa` and `g2`, so no pair of operations
/// shows it: only the search, or revisions, can. Returns the corrupted read.
fn corrupt_with_inversion(history: &mut History, rng: &mut StdRng) -> Option<usize> {
    let ops = &history.operations;
    let writer_of: HashMap<(Option<&[u8]>, Vec<u8>), usize> = (0..ops.len())
        .filter(|&i| is_acked_write(&ops[i]))
        .map(|i| ((ops[i].key(), written_value(&ops[i])), i))
        .collect();
    let mut candidates = Vec::new();
    for g1 in (0..ops.len()).filter(|&i| is_read(&ops[i])) {
        let Outcome::Get {
            value: Some(v_b), ..
        } = &ops[g1].outcome
        else {
            continue;
        };
        let Some(&wb) = writer_of.get(&(ops[g1].key(), v_b.clone())) else {
            continue;
        };
        let same_key = |i: usize| ops[i].key() == ops[g1].key();
        // The first read of the key begun after g1 ended.
        let Some(g2) = (0..ops.len())
            .filter(|&i| same_key(i) && is_read(&ops[i]) && ops[i].invoke_ns > ops[g1].return_ns)
            .min_by_key(|&i| ops[i].invoke_ns)
        else {
            continue;
        };
        for wa in (0..ops.len()).filter(|&i| i != wb && same_key(i) && is_acked_write(&ops[i])) {
            let overlaps =
                ops[wa].invoke_ns < ops[wb].return_ns && ops[wb].invoke_ns < ops[wa].return_ns;
            let between = |m: &Operation| {
                m.key() == ops[g1].key()
                    && m.outcome.mutation_revision().is_some()
                    && m.invoke_ns > ops[wa].return_ns
                    && m.return_ns < ops[g2].invoke_ns
            };
            if overlaps && ops[wa].return_ns < ops[g1].invoke_ns && !ops.iter().any(between) {
                candidates.push((g2, wa));
            }
        }
    }
    let &(g2, wa) = candidates.get(rng.gen_range(0..candidates.len().max(1)))?;
    read_from(history, g2, wa);
    Some(g2)
}

fn without_revisions() -> CheckOptions {
    CheckOptions {
        revisions: false,
        ..CheckOptions::default()
    }
}

/// The generated history passes, with and without revisions.
fn assert_passes(history: &History, seed: u64) -> cairn_check::Report {
    let report = check(history).unwrap_or_else(|violation| {
        panic!("{}: correct history rejected: {violation}", replay(seed))
    });
    if let Err(violation) = check_with(history, &without_revisions()) {
        panic!(
            "{}: correct history rejected without revisions: {violation}",
            replay(seed)
        );
    }
    report
}

#[test]
fn correct_histories_pass_and_one_stale_read_fails() {
    let shape = Shape {
        operations: 2_000,
        clients: 8,
        keys: 6,
        unknown_probability: 0.05,
    };
    for seed in seeds() {
        eprintln!("{}", replay(seed));
        let history = generate(seed, shape);
        let report = assert_passes(&history, seed);
        assert_eq!(report.operations, shape.operations, "{}", replay(seed));
        assert!(report.unknown_operations > 0, "{}", replay(seed));

        let mut rng = StdRng::seed_from_u64(seed ^ 0x5EED);
        let mut stale = history;
        let read = corrupt_with_stale_read(&mut stale, &mut rng)
            .unwrap_or_else(|| panic!("{}: no read to corrupt", replay(seed)));
        let corrupted = &stale.operations[read];
        // Caught by revision, and without revisions by real time.
        for options in [CheckOptions::default(), without_revisions()] {
            match check_with(&stale, &options) {
                Err(Violation::StaleRead { read, .. }) => assert_eq!(*read, *corrupted),
                other => panic!(
                    "{}: expected StaleRead for {corrupted} ({options:?}), got {other:?}",
                    replay(seed)
                ),
            }
        }
    }
}

#[test]
fn a_new_old_inversion_fails() {
    let shape = Shape {
        operations: 1_500,
        clients: 8,
        keys: 4,
        unknown_probability: 0.03,
    };
    let mut corrupted_runs = 0;
    for seed in seeds() {
        let mut history = generate(seed, shape);
        let mut rng = StdRng::seed_from_u64(seed ^ 0x1A7E);
        let Some(read) = corrupt_with_inversion(&mut history, &mut rng) else {
            continue;
        };
        corrupted_runs += 1;
        let corrupted = &history.operations[read];
        match check(&history) {
            Err(Violation::StaleRead { read, .. }) => assert_eq!(*read, *corrupted),
            other => panic!(
                "{}: expected StaleRead for {corrupted}, got {other:?}",
                replay(seed)
            ),
        }
        // Without revisions only the search can refute it.
        match check_with(&history, &without_revisions()) {
            Err(Violation::NotLinearizable(details)) => {
                assert_eq!(Some(&details.key[..]), corrupted.key(), "{}", replay(seed))
            }
            other => panic!(
                "{}: expected NotLinearizable for {corrupted}, got {other:?}",
                replay(seed)
            ),
        }
    }
    assert!(corrupted_runs > 0, "no history had an inversion to make");
}

#[test]
fn a_read_of_a_value_never_written_fails() {
    let shape = Shape {
        operations: 1_000,
        clients: 5,
        keys: 4,
        unknown_probability: 0.05,
    };
    for seed in seeds() {
        let mut history = generate(seed, shape);
        let mut rng = StdRng::seed_from_u64(seed ^ 0xBAD);
        let reads: Vec<usize> = (0..history.operations.len())
            .filter(|&i| is_read(&history.operations[i]))
            .collect();
        let read = reads[rng.gen_range(0..reads.len())];
        if let Outcome::Get {
            revision,
            value,
            mod_revision,
        } = &mut history.operations[read].outcome
        {
            *value = Some(b"never written".to_vec());
            *mod_revision = *revision;
        }
        for options in [CheckOptions::default(), without_revisions()] {
            match check_with(&history, &options) {
                Err(Violation::ValueNeverWritten { .. }) => {}
                other => panic!(
                    "{}: expected ValueNeverWritten ({options:?}), got {other:?}",
                    replay(seed)
                ),
            }
        }
    }
}

#[test]
fn twenty_thousand_operations_over_a_hundred_keys() {
    let shape = Shape {
        operations: 20_000,
        clients: 10,
        keys: 100,
        unknown_probability: 0.02,
    };
    let seed = seeds()[0];
    let history = generate(seed, shape);
    let started = std::time::Instant::now();
    let report = assert_passes(&history, seed);
    eprintln!("{}: {report:?} in {:?}", replay(seed), started.elapsed());
    // Every key, and every lease's existence.
    assert_eq!(
        report.keys,
        shape.keys + LEASES as usize,
        "{}",
        replay(seed)
    );
}

#[test]
fn a_hot_key_with_many_timeouts() {
    let shape = Shape {
        operations: 3_000,
        clients: 10,
        keys: 1,
        unknown_probability: 0.1,
    };
    let seed = seeds()[0];
    let history = generate(seed, shape);
    let started = std::time::Instant::now();
    let report = assert_passes(&history, seed);
    eprintln!("{}: {report:?} in {:?}", replay(seed), started.elapsed());
}
