//! The in-memory key index: key → [`KeyIndex`], ordered by key.
//!
//! It answers "which revision holds key K as of revision R" for single keys and ranges without
//! touching the engine; the engine is then read by revision. Rebuilt from the `Key` bucket on
//! start, like etcd's `treeIndex`.

use std::collections::{BTreeMap, HashSet};
use std::ops::Bound;

use cairn_storage::inline_key::InlineKey;

use crate::key_index::{KeyAt, KeyIndex};
use crate::revision::Revision;

/// The keys a request covers, decoded from etcd's (`key`, `range_end`) pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyRange {
    /// `range_end` empty: exactly `key`.
    Single(Vec<u8>),
    /// `start <= k < end`; `end = None` when `range_end` is `"\0"` (every key from `start`).
    Span {
        start: Vec<u8>,
        end: Option<Vec<u8>>,
    },
}

impl KeyRange {
    pub fn new(key: &[u8], range_end: &[u8]) -> KeyRange {
        match range_end {
            [] => KeyRange::Single(key.to_vec()),
            [0] => KeyRange::Span {
                start: key.to_vec(),
                end: None,
            },
            end => KeyRange::Span {
                start: key.to_vec(),
                end: Some(end.to_vec()),
            },
        }
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        match self {
            KeyRange::Single(single) => single.as_slice() == key,
            KeyRange::Span { start, end } => {
                key >= start.as_slice() && end.as_deref().is_none_or(|end| key < end)
            }
        }
    }
}

/// The `range_end` covering every key that starts with `prefix` (etcd's `GetPrefixRangeEnd`):
/// the prefix with its last byte below 0xff incremented, or `"\0"` (every key) when there is none.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Key index of the whole store.
#[derive(Debug, Default)]
pub struct TreeIndex {
    /// Keys up to 22 bytes inline in the B-tree node: a lookup compares against keys in the
    /// node it already reads instead of following a pointer per comparison (what made lookups
    /// slow down as the tree outgrew the caches), and a short key needs no heap block.
    keys: BTreeMap<InlineKey, KeyIndex>,
}

impl TreeIndex {
    pub fn get(&self, key: &[u8], at: i64) -> Option<KeyAt> {
        self.keys.get(key)?.get(at)
    }

    /// Records a put at `revision` and returns the key as it was at `revision.main` just
    /// before it (earlier changes of the same request included): one B-tree descent for what
    /// a put needs to know and to change, since the descent is most of a put's apply cost.
    pub fn put(&mut self, key: &[u8], revision: Revision) -> Option<KeyAt> {
        match self.keys.get_mut(key) {
            Some(index) => {
                let previous = index.get(revision.main);
                index.put(revision);
                previous
            }
            None => {
                let mut index = KeyIndex::new();
                index.put(revision);
                self.keys.insert(key.into(), index);
                None
            }
        }
    }

    /// Replays a put record while rebuilding the index from the engine. A key's first record
    /// there carries its generation's create revision and version (see
    /// [`KeyIndex::restore`]); later records extend the history as live puts do.
    pub fn restore_put(&mut self, key: &[u8], revision: Revision, created: i64, version: i64) {
        match self.keys.get_mut(key) {
            Some(index) => {
                index.put(revision);
                debug_assert_eq!(
                    index.get(revision.main).map(|found| found.version),
                    Some(version),
                    "index: replayed version of {key:?} disagrees with its record"
                );
            }
            None => {
                let index = KeyIndex::restore(Revision::new(created, 0), revision, version);
                self.keys.insert(key.into(), index);
            }
        }
    }

    pub fn tombstone(&mut self, key: &[u8], revision: Revision) {
        let index = self.keys.get_mut(key);
        let index = index.unwrap_or_else(|| panic!("index: tombstone of unknown key {key:?}"));
        index.tombstone(revision);
    }

    /// Visits, in key order, every key of `range` that exists at `at`, until `visit` returns
    /// false.
    pub fn visit(&self, range: &KeyRange, at: i64, visit: &mut dyn FnMut(&[u8], KeyAt) -> bool) {
        let (lower, upper) = match range {
            KeyRange::Single(key) => {
                if let Some(found) = self.get(key, at) {
                    visit(key, found);
                }
                return;
            }
            KeyRange::Span {
                start,
                end: Some(end),
            } if end <= start => return,
            KeyRange::Span { start, end } => (
                Bound::Included(start.as_slice()),
                end.as_deref().map_or(Bound::Unbounded, Bound::Excluded),
            ),
        };
        for (key, index) in self.keys.range::<[u8], _>((lower, upper)) {
            if let Some(found) = index.get(at) {
                if !visit(key, found) {
                    return;
                }
            }
        }
    }

    /// Compacts every key at `at`; returns the revisions `<= at` whose records must be kept.
    pub fn compact(&mut self, at: i64) -> HashSet<Revision> {
        let mut keep = HashSet::new();
        self.keys.retain(|_, index| {
            index.compact(at, &mut keep);
            !index.is_empty()
        });
        keep
    }

    /// Number of keys with any history left.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys_at(index: &TreeIndex, range: &KeyRange, at: i64) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        index.visit(range, at, &mut |key, _| {
            out.push(key.to_vec());
            true
        });
        out
    }

    #[test]
    fn prefix_end_follows_etcd() {
        assert_eq!(prefix_end(b"lock/"), b"lock0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0");
    }

    #[test]
    fn range_forms_follow_etcd() {
        let mut index = TreeIndex::default();
        for (main, key) in [(2, "a"), (3, "b"), (4, "c"), (5, "d")] {
            index.put(key.as_bytes(), Revision::new(main, 0));
        }
        index.tombstone(b"c", Revision::new(6, 0));
        let owned = |keys: &[&str]| {
            keys.iter()
                .map(|k| k.as_bytes().to_vec())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            keys_at(&index, &KeyRange::new(b"b", b""), 10),
            owned(&["b"])
        );
        assert_eq!(
            keys_at(&index, &KeyRange::new(b"b", b"d"), 10),
            owned(&["b"]),
            "c deleted"
        );
        assert_eq!(
            keys_at(&index, &KeyRange::new(b"b", b"d"), 5),
            owned(&["b", "c"])
        );
        assert_eq!(
            keys_at(&index, &KeyRange::new(b"b", b"\0"), 10),
            owned(&["b", "d"])
        );
        assert_eq!(
            keys_at(&index, &KeyRange::new(b"", b"\0"), 3),
            owned(&["a", "b"])
        );
        assert!(keys_at(&index, &KeyRange::new(b"d", b"a"), 10).is_empty());
        assert!(KeyRange::new(b"b", b"\0").contains(b"zzz"));
        assert!(!KeyRange::new(b"b", b"c").contains(b"c"));
    }

    #[test]
    fn put_returns_the_key_as_it_was_before() {
        let mut index = TreeIndex::default();
        assert!(index.put(b"k", Revision::new(2, 0)).is_none());
        let second = index.put(b"k", Revision::new(3, 0)).expect("live since 2");
        assert_eq!(
            (second.created.main, second.modified.main, second.version),
            (2, 2, 1)
        );
        // A later change of the same request sees the earlier one.
        let same_request = index.put(b"k", Revision::new(3, 1)).expect("live");
        assert_eq!(
            (same_request.modified, same_request.version),
            (Revision::new(3, 0), 2)
        );
        index.tombstone(b"k", Revision::new(4, 0));
        assert!(
            index.put(b"k", Revision::new(5, 0)).is_none(),
            "deleted at 4"
        );
        assert_eq!(index.get(b"k", 5).map(|at| at.version), Some(1));
    }

    #[test]
    fn compaction_removes_keys_with_no_history_left() {
        let mut index = TreeIndex::default();
        index.put(b"gone", Revision::new(2, 0));
        index.tombstone(b"gone", Revision::new(3, 0));
        index.put(b"kept", Revision::new(4, 0));
        let keep = index.compact(4);
        assert_eq!(keep, HashSet::from([Revision::new(4, 0)]));
        assert_eq!(index.len(), 1);
    }
}
