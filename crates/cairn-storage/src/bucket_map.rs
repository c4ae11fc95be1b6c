//! `BucketMap`: the ordered map behind one bucket of the memory engine.
//!
//! Two shapes, same behaviour:
//! - `Tree`, a B-tree, for buckets written in any key order (meta, leases, alarms);
//! - `Log`, a sorted vector, for the `Key` bucket, whose keys are revisions and so only ever
//!   grow: an insert is a push, and deletes (compaction) come in large batches that one pass
//!   removes. A B-tree fed increasing keys leaves its nodes half full; the vector holds two
//!   pointers per entry, ~35 bytes per record less (measured in docs/perf/kv-single-node-notes.md),
//!   and its keys inline (`InlineKey`). An out-of-order insert still works, in O(n).

use std::collections::{BTreeMap, HashSet};
use std::ops::Bound;

use crate::inline_key::InlineKey;

type Entry = (Box<[u8]>, Box<[u8]>);

#[derive(Debug, PartialEq, Eq)]
pub enum BucketMap {
    Tree(BTreeMap<Box<[u8]>, Box<[u8]>>),
    Log(Vec<(InlineKey, Box<[u8]>)>),
}

impl BucketMap {
    pub fn len(&self) -> usize {
        match self {
            BucketMap::Tree(tree) => tree.len(),
            BucketMap::Log(log) => log.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        match self {
            BucketMap::Tree(tree) => tree.get(key).map(|value| &value[..]),
            BucketMap::Log(log) => {
                let position = log_search(log, key).ok()?;
                Some(&log[position].1)
            }
        }
    }

    /// Inserts or replaces; returns the value replaced.
    pub fn insert(&mut self, key: Box<[u8]>, value: Box<[u8]>) -> Option<Box<[u8]>> {
        match self {
            BucketMap::Tree(tree) => tree.insert(key, value),
            BucketMap::Log(log) => {
                let key = InlineKey::from(key);
                if log.last().is_none_or(|(last, _)| *last < key) {
                    log.push((key, value));
                    return None;
                }
                match log_search(log, &key) {
                    Ok(position) => Some(std::mem::replace(&mut log[position].1, value)),
                    Err(position) => {
                        log.insert(position, (key, value));
                        None
                    }
                }
            }
        }
    }

    /// Removes every key of `keys` in one pass; returns the entries removed.
    pub fn remove_all(&mut self, keys: &HashSet<Box<[u8]>>) -> Vec<Entry> {
        let mut removed = Vec::new();
        match self {
            BucketMap::Tree(tree) => {
                for key in keys {
                    if let Some(entry) = tree.remove_entry(key) {
                        removed.push(entry);
                    }
                }
            }
            BucketMap::Log(log) => {
                let mut kept = Vec::with_capacity(log.len().saturating_sub(keys.len()));
                for entry in log.drain(..) {
                    if keys.contains(entry.0.as_bytes()) {
                        removed.push((entry.0.into_boxed(), entry.1));
                    } else {
                        kept.push(entry);
                    }
                }
                *log = kept;
            }
        }
        removed
    }

    /// Visits `start <= key < end` in key order until `visit` returns false.
    pub fn visit(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) {
        if end.is_some_and(|end| end <= start) {
            return;
        }
        let below_end = |key: &[u8]| end.is_none_or(|end| key < end);
        match self {
            BucketMap::Tree(tree) => {
                let upper = end.map_or(Bound::Unbounded, Bound::Excluded);
                for (key, value) in tree.range::<[u8], _>((Bound::Included(start), upper)) {
                    if !visit(key, value) {
                        return;
                    }
                }
            }
            BucketMap::Log(log) => {
                let (Ok(first) | Err(first)) = log_search(log, start);
                for (key, value) in &log[first..] {
                    if !below_end(key) || !visit(key, value) {
                        return;
                    }
                }
            }
        }
    }

    /// Whether inserting `key` would add it after every key held (for the `Log` shape: a
    /// push, which leaves every entry where it was).
    pub fn appends(&self, key: &[u8]) -> bool {
        match self {
            BucketMap::Tree(tree) => tree
                .last_key_value()
                .is_none_or(|(last, _)| &last[..] < key),
            BucketMap::Log(log) => log.last().is_none_or(|(last, _)| last.as_bytes() < key),
        }
    }

    /// The entries at positions `from..to` in key order (`to` at most `len()`). A slice of the
    /// `Log` shape; the `Tree` shape walks from its first entry (snapshots in parts use this
    /// on the `Key` bucket only, which is a `Log`).
    pub fn positions(
        &self,
        from: usize,
        to: usize,
    ) -> Box<dyn Iterator<Item = (&[u8], &[u8])> + '_> {
        assert!(
            from <= to && to <= self.len(),
            "positions {from}..{to} of {}",
            self.len()
        );
        match self {
            BucketMap::Tree(tree) => Box::new(
                tree.iter()
                    .skip(from)
                    .take(to - from)
                    .map(|(k, v)| (&k[..], &v[..])),
            ),
            BucketMap::Log(log) => Box::new(log[from..to].iter().map(|(k, v)| (&k[..], &v[..]))),
        }
    }

    /// Every entry in key order.
    pub fn iter(&self) -> Box<dyn Iterator<Item = (&[u8], &[u8])> + '_> {
        match self {
            BucketMap::Tree(tree) => Box::new(tree.iter().map(|(k, v)| (&k[..], &v[..]))),
            BucketMap::Log(log) => Box::new(log.iter().map(|(k, v)| (&k[..], &v[..]))),
        }
    }
}

/// Below this many entries a plain binary search stays within a few cache lines.
const INTERPOLATE_MIN: usize = 64;

/// Where `key` is in the sorted `log`, as `binary_search` answers.
///
/// The `Key` bucket's keys are revisions, nearly dense in their leading 8 bytes (the main
/// revision, big-endian). Interpolating on those lands at or next to the entry, and a gallop
/// from there brackets it in a few probes, where a binary search of a million entries takes
/// some 20, most of them cache misses: in the sustained CURP-HO run this lookup grew from
/// 2.3% to 4.4% of the CPU as the log grew. Any sorted keys give the right answer; keys that
/// are not dense only cost more probes.
fn log_search(log: &[(InlineKey, Box<[u8]>)], key: &[u8]) -> Result<usize, usize> {
    let below = |index: usize| log[index].0.as_bytes() < key;
    let count = log.len();
    let guess = match (log.first(), log.last()) {
        (Some(first), Some(last)) if count >= INTERPOLATE_MIN => {
            let (low, high) = (leading_u64(&first.0), leading_u64(&last.0));
            let target = leading_u64(key);
            if target <= low || target >= high {
                None
            } else {
                let offset =
                    u128::from(target - low) * (count as u128 - 1) / u128::from(high - low);
                Some(offset as usize)
            }
        }
        _ => None,
    };
    // The window [start, end) that holds the key's position: entries before `start` are below
    // the key, entries from `end` on are not.
    let (start, end) = match guess {
        None => (0, count),
        Some(guess) if below(guess) => {
            let (mut known_below, mut step) = (guess, 1);
            loop {
                let probe = known_below + step;
                if probe >= count {
                    break (known_below + 1, count);
                }
                if !below(probe) {
                    break (known_below + 1, probe);
                }
                known_below = probe;
                step *= 2;
            }
        }
        Some(guess) => {
            let (mut known_above, mut step) = (guess, 1);
            loop {
                if step > known_above {
                    break (0, known_above);
                }
                let probe = known_above - step;
                if below(probe) {
                    break (probe + 1, known_above);
                }
                known_above = probe;
                step *= 2;
            }
        }
    };
    let position = start + log[start..end].partition_point(|(probe, _)| probe.as_bytes() < key);
    match log.get(position) {
        Some((found, _)) if found.as_bytes() == key => Ok(position),
        _ => Err(position),
    }
}

/// The first 8 bytes as a big-endian number, zero-padded: never decreasing in key order.
fn leading_u64(key: &[u8]) -> u64 {
    let mut bytes = [0; 8];
    let len = key.len().min(8);
    bytes[..len].copy_from_slice(&key[..len]);
    u64::from_be_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn collect(map: &BucketMap, start: &[u8], end: Option<&[u8]>) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        map.visit(start, end, &mut |k, v| {
            out.push((k.to_vec(), v.to_vec()));
            true
        });
        out
    }

    #[test]
    fn log_search_answers_as_binary_search_does() {
        let revision =
            |main: u64, sub: u64| [&main.to_be_bytes()[..], b"_", &sub.to_be_bytes()[..]].concat();
        for seed in 0..30u64 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let mut keys: Vec<Vec<u8>> = match seed % 3 {
                // Revisions: dense main numbers, a few subs, gaps where compaction removed
                // some.
                0 => {
                    let mut keys = Vec::new();
                    for main in 1..3000u64 {
                        if rng.gen_bool(0.2) {
                            continue;
                        }
                        for sub in 0..rng.gen_range(1..3u64) {
                            keys.push(revision(main, sub));
                        }
                    }
                    keys
                }
                // Revisions clustered at both ends: interpolation guesses far off.
                1 => (1..500u64)
                    .chain(1_000_000..1_000_500)
                    .map(|main| revision(main, 0))
                    .collect(),
                // Any keys, short and long.
                _ => (0..2000)
                    .map(|_| {
                        let len = rng.gen_range(0..12);
                        (0..len).map(|_| rng.gen_range(0..4u8) * 60).collect()
                    })
                    .collect(),
            };
            keys.sort();
            keys.dedup();
            let log: Vec<(InlineKey, Box<[u8]>)> = keys
                .iter()
                .map(|key| (InlineKey::from(Box::<[u8]>::from(&key[..])), Box::default()))
                .collect();
            let mut probes: Vec<Vec<u8>> = keys.clone();
            probes.extend(
                (0..3000).map(|_| revision(rng.gen_range(0..1_000_600), rng.gen_range(0..3))),
            );
            probes.extend([Vec::new(), vec![0xff; 20]]);
            for probe in &probes {
                let want = log.binary_search_by(|(key, _)| key.as_bytes().cmp(probe));
                assert_eq!(log_search(&log, probe), want, "seed={seed} probe={probe:?}");
            }
        }
    }

    /// Both shapes behave like a B-tree under random inserts (mostly increasing, some not),
    /// batched removals, lookups and range scans; with short keys (inline in the log) for even
    /// seeds, long ones (boxed) for odd seeds.
    #[test]
    fn log_and_tree_agree_with_a_btree_model() {
        for seed in 0..20u64 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let prefix = vec![7u8; if seed % 2 == 0 { 0 } else { 30 }];
            let key_of = |n: u16| [&prefix[..], &n.to_be_bytes()].concat();
            let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
            let mut maps = [BucketMap::Tree(BTreeMap::new()), BucketMap::Log(Vec::new())];
            let mut next = 0u16;
            for _ in 0..400 {
                let key: Vec<u8> = match rng.gen_range(0..10) {
                    0..=6 => {
                        next += 1;
                        key_of(next)
                    }
                    _ => key_of(rng.gen_range(0..next.max(1))),
                };
                match rng.gen_range(0..10) {
                    0..=6 => {
                        let value = vec![rng.gen::<u8>(); rng.gen_range(0..4)];
                        let expected = model.insert(key.clone(), value.clone());
                        for map in &mut maps {
                            let old = map.insert(key.clone().into(), value.clone().into());
                            assert_eq!(old.map(|v| v.to_vec()), expected, "seed={seed}");
                        }
                    }
                    _ => {
                        let doomed: HashSet<Box<[u8]>> = (0..rng.gen_range(1..20))
                            .map(|_| key_of(rng.gen_range(0..next.max(1))).into())
                            .collect();
                        let mut expected: Vec<Vec<u8>> = doomed
                            .iter()
                            .filter(|k| model.remove(&k[..]).is_some())
                            .map(|k| k.to_vec())
                            .collect();
                        expected.sort();
                        for map in &mut maps {
                            let mut removed: Vec<Vec<u8>> = map
                                .remove_all(&doomed)
                                .into_iter()
                                .map(|(k, _)| k.to_vec())
                                .collect();
                            removed.sort();
                            assert_eq!(removed, expected, "seed={seed}");
                        }
                    }
                }
            }
            let start = key_of(rng.gen_range(0..next.max(1)));
            let end = key_of(rng.gen_range(0..next.max(1)));
            let want: Vec<_> = model
                .iter()
                .filter(|(k, _)| k[..] >= start[..] && k[..] < end[..])
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let all: Vec<_> = model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            for map in &maps {
                assert_eq!(map.len(), model.len(), "seed={seed}");
                assert_eq!(collect(map, &start, Some(&end)), want, "seed={seed}");
                assert_eq!(collect(map, &[], None), all, "seed={seed}");
                for (key, value) in &model {
                    assert_eq!(map.get(key), Some(&value[..]));
                }
                let iterated: Vec<_> = map.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
                assert_eq!(iterated, all);
            }
        }
    }
}
