//! The checker against brute force on small random histories of one key.
//!
//! The search prunes hard (memo with dominance, lazy unknown operations, symmetry); here every
//! order of every subset of unknown operations is tried instead, on histories small enough for
//! that, and the two verdicts must agree. Values repeat on purpose, and about half the histories
//! come from a correct store while the rest have one outcome changed, so both verdicts occur.
//! Revisions are off: the plain register is what brute force decides.
//!
//! A failure prints its seed; `CAIRN_CHECK_SEED=<seed>` replays it.

use cairn_check::{check_with, Call, CheckOptions, History, Operation, Outcome, Violation};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const HISTORIES: usize = 20_000;
const OPERATIONS_MAX: usize = 7;
const VALUES: [&[u8]; 3] = [b"a", b"b", b"c"];

fn random_value(rng: &mut StdRng) -> Vec<u8> {
    VALUES[rng.gen_range(0..VALUES.len())].to_vec()
}

fn random_register(rng: &mut StdRng) -> Option<Vec<u8>> {
    rng.gen_bool(0.75).then(|| random_value(rng))
}

fn random_call(rng: &mut StdRng) -> Call {
    let key = b"k".to_vec();
    match rng.gen_range(0..4) {
        0 => Call::Put {
            key,
            value: random_value(rng),
        },
        1 => Call::Get { key },
        2 => Call::Delete { key },
        _ => Call::CompareAndPut {
            key,
            expected: random_register(rng),
            value: random_value(rng),
        },
    }
}

/// Applies `call` to a sequential register; the outcome carries no meaningful revisions.
fn apply(register: &mut Option<Vec<u8>>, call: &Call) -> Outcome {
    match call {
        Call::Put { value, .. } => {
            *register = Some(value.clone());
            Outcome::Put { revision: 0 }
        }
        Call::Get { .. } => Outcome::Get {
            revision: 0,
            value: register.clone(),
            mod_revision: 0,
        },
        Call::Delete { .. } => Outcome::Delete {
            revision: 0,
            deleted: i64::from(register.take().is_some()),
        },
        Call::CompareAndPut {
            expected, value, ..
        } => {
            let succeeded = register == expected;
            if succeeded {
                *register = Some(value.clone());
            }
            Outcome::CompareAndPut {
                revision: 0,
                succeeded,
            }
        }
        Call::LeasePut { .. }
        | Call::LeaseGrant { .. }
        | Call::LeaseRevoke { .. }
        | Call::LeaseKeepAlive { .. } => unreachable!("random_call makes no lease calls"),
    }
}

/// A history from a correct register (linearization points 10 ns apart, intervals widened
/// around them), then, half the time, one acknowledged outcome replaced by a random one.
fn generate(rng: &mut StdRng) -> History {
    let mut register = None;
    let mut operations = Vec::new();
    for step in 0..rng.gen_range(1..=OPERATIONS_MAX) {
        let point_ns = 100 + 10 * step as u64;
        let call = random_call(rng);
        let outcome = if rng.gen_bool(0.25) {
            // Timed out: it took effect at its point or, half the time, never.
            if rng.gen_bool(0.5) {
                apply(&mut register, &call);
            }
            Outcome::Unknown
        } else {
            apply(&mut register, &call)
        };
        operations.push(Operation {
            client: step as u64,
            call,
            invoke_ns: point_ns - rng.gen_range(0..40),
            return_ns: point_ns + rng.gen_range(0..40),
            outcome,
        });
    }
    if rng.gen_bool(0.5) {
        corrupt(rng, &mut operations);
    }
    History::new(operations)
}

fn corrupt(rng: &mut StdRng, operations: &mut [Operation]) {
    let acked: Vec<usize> = (0..operations.len())
        .filter(|&i| operations[i].outcome != Outcome::Unknown)
        .collect();
    if acked.is_empty() {
        return;
    }
    let op = &mut operations[acked[rng.gen_range(0..acked.len())]];
    op.outcome = match &op.outcome {
        Outcome::Get { .. } => Outcome::Get {
            revision: 0,
            value: random_register(rng),
            mod_revision: 0,
        },
        Outcome::Delete { deleted, .. } => Outcome::Delete {
            revision: 0,
            deleted: 1 - deleted,
        },
        Outcome::CompareAndPut { succeeded, .. } => Outcome::CompareAndPut {
            revision: 0,
            succeeded: !succeeded,
        },
        other => other.clone(),
    };
}

/// Whether some order of the acknowledged operations and some subset of the unknown ones,
/// respecting real time, satisfies the register.
fn brute_force(operations: &[Operation]) -> bool {
    let mut placed = vec![false; operations.len()];
    extend(operations, &mut placed, &None)
}

fn extend(operations: &[Operation], placed: &mut [bool], register: &Option<Vec<u8>>) -> bool {
    let acked_left: Vec<usize> = (0..operations.len())
        .filter(|&i| !placed[i] && operations[i].outcome != Outcome::Unknown)
        .collect();
    // Nothing may go before an unplaced acknowledged operation that returned before it began.
    let Some(first_return) = acked_left.iter().map(|&i| operations[i].return_ns).min() else {
        return true;
    };
    for i in 0..operations.len() {
        if placed[i] || operations[i].invoke_ns > first_return {
            continue;
        }
        let mut next = register.clone();
        let outcome = apply(&mut next, &operations[i].call);
        let fits = match &operations[i].outcome {
            Outcome::Unknown => true,
            recorded => *recorded == outcome,
        };
        if fits {
            placed[i] = true;
            let found = extend(operations, placed, &next);
            placed[i] = false;
            if found {
                return true;
            }
        }
    }
    false
}

fn seed() -> u64 {
    match std::env::var("CAIRN_CHECK_SEED") {
        Ok(seed) => seed
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("CAIRN_CHECK_SEED={seed:?} is not a u64")),
        Err(_) => rand::random(),
    }
}

#[test]
fn search_agrees_with_brute_force() {
    let seed = seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let options = CheckOptions {
        revisions: false,
        ..CheckOptions::default()
    };
    let mut verdicts = [0usize; 2];
    for index in 0..HISTORIES {
        let history = generate(&mut rng);
        let expected = brute_force(&history.operations);
        let verdict = check_with(&history, &options);
        let context = || {
            let operations: Vec<String> = history
                .operations
                .iter()
                .map(|op| format!("  {op}"))
                .collect();
            format!(
                "seed={seed} (replay: CAIRN_CHECK_SEED={seed} cargo test -p cairn-check --test \
                 brute_force), history {index}:\n{}",
                operations.join("\n")
            )
        };
        match &verdict {
            Ok(_) | Err(Violation::StaleRead { .. }) | Err(Violation::ValueNeverWritten { .. }) => {
            }
            Err(Violation::NotLinearizable(_)) => {}
            Err(other) => panic!("{}\nunexpected violation kind: {other}", context()),
        }
        assert_eq!(
            verdict.is_ok(),
            expected,
            "{}\nchecker says {verdict:?}, brute force says {expected}",
            context()
        );
        verdicts[usize::from(expected)] += 1;
    }
    // Both verdicts must be common, or the comparison proves little.
    assert!(
        verdicts.iter().all(|&count| count > HISTORIES / 10),
        "seed={seed}: verdicts (not linearizable, linearizable) = {verdicts:?}"
    );
}
