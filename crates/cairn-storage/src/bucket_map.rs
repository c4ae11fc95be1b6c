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
                let position = log.binary_search_by(|(probe, _)| probe[..].cmp(key)).ok()?;
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
                match log.binary_search_by(|(probe, _)| probe.cmp(&key)) {
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
                let first = log.partition_point(|(key, _)| &key[..] < start);
                for (key, value) in &log[first..] {
                    if !below_end(key) || !visit(key, value) {
                        return;
                    }
                }
            }
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
