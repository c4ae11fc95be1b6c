//! The history of one key: its revisions grouped into *generations*.
//!
//! A generation runs from the put that creates the key to the delete (tombstone) that ends it;
//! the next put starts a new generation with version 1 again. The last generation is open (no
//! tombstone yet) or empty (the key is currently deleted). This mirrors etcd's
//! `mvcc/key_index.go`, including its compaction rule: compacting at `at` keeps, per key, the
//! newest revision `<= at` unless that revision is a tombstone, and everything newer.

use std::collections::HashSet;

use smallvec::{smallvec, SmallVec};

use crate::revision::Revision;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Generation {
    /// Number of puts in this generation, including compacted ones.
    version: i64,
    created: Revision,
    revisions: SmallVec<[Revision; 1]>,
}

impl Generation {
    fn is_empty(&self) -> bool {
        self.revisions.is_empty()
    }

    /// Index of the newest revision with `main <= at`, if any.
    fn newest_at(&self, at: i64) -> Option<usize> {
        self.revisions
            .iter()
            .rposition(|revision| revision.main <= at)
    }
}

/// What a key looked like at some revision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyAt {
    /// Revision of the record holding the value.
    pub modified: Revision,
    /// Revision of the put that created this generation.
    pub created: Revision,
    pub version: i64,
}

/// Revision history of one key.
///
/// Most keys have one generation with a handful of revisions, so both lists keep their first
/// element inline: with a million keys, two heap allocations per key were ~110 MB of RSS
/// (measured: `docs/perf/kv-single-node.md`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyIndex {
    /// Oldest first. The newest revision (put or tombstone) is derived from the last non-empty
    /// generation rather than stored: one field less in every index slot.
    generations: SmallVec<[Generation; 1]>,
}

impl KeyIndex {
    pub fn new() -> KeyIndex {
        KeyIndex {
            generations: smallvec![Generation::default()],
        }
    }

    /// Rebuilds a key's history from its oldest record left in the engine: a put at `modified`
    /// in the generation created at `created`, which had reached `version` (etcd's
    /// `keyIndex.restore`). After a compaction that record may be the only one left of its
    /// generation, so the version and the create revision come from the record itself;
    /// counting the surviving puts would restart them.
    pub fn restore(created: Revision, modified: Revision, version: i64) -> KeyIndex {
        assert!(
            version > 0 && created <= modified,
            "key_index: restoring version {version} created at {created:?}, modified at {modified:?}"
        );
        let generation = Generation {
            version,
            created,
            revisions: smallvec![modified],
        };
        KeyIndex {
            generations: smallvec![generation],
        }
    }

    /// Newest revision recorded for the key (put or tombstone).
    pub fn modified(&self) -> Revision {
        let mut newest_first = self.generations.iter().rev();
        let newest = newest_first.find_map(|generation| generation.revisions.last().copied());
        newest.unwrap_or_default()
    }

    /// True when nothing is left: no live generation and no history.
    pub fn is_empty(&self) -> bool {
        self.generations.len() == 1 && self.generations[0].is_empty()
    }

    /// Records a put at `revision`.
    pub fn put(&mut self, revision: Revision) {
        let modified = self.modified();
        assert!(
            revision > modified,
            "key_index: put at {revision:?} is not after the last change {modified:?}"
        );
        let generation = self
            .generations
            .last_mut()
            .expect("a key index always has a generation");
        if generation.is_empty() {
            generation.created = revision;
        }
        generation.revisions.push(revision);
        generation.version += 1;
    }

    /// Records a delete at `revision` and opens a new, empty generation.
    pub fn tombstone(&mut self, revision: Revision) {
        let live = self
            .generations
            .last()
            .is_some_and(|generation| !generation.is_empty());
        assert!(
            live,
            "key_index: tombstone at {revision:?} of a key that is not live"
        );
        self.put(revision);
        self.generations.push(Generation::default());
    }

    /// The key as of main revision `at`; `None` if it did not exist then.
    pub fn get(&self, at: i64) -> Option<KeyAt> {
        let generation = self.find_generation(at)?;
        let position = generation.newest_at(at)?;
        let newer = (generation.revisions.len() - position - 1) as i64;
        Some(KeyAt {
            modified: generation.revisions[position],
            created: generation.created,
            version: generation.version - newer,
        })
    }

    /// The generation that holds the key's state at `at`, or `None` if the key was deleted (or
    /// not yet created) at `at`.
    fn find_generation(&self, at: i64) -> Option<&Generation> {
        let last = self.generations.len() - 1;
        for (position, generation) in self.generations.iter().enumerate().rev() {
            if generation.is_empty() {
                continue;
            }
            if position != last {
                let tombstone = generation.revisions[generation.revisions.len() - 1].main;
                if tombstone <= at {
                    return None;
                }
            }
            if generation.revisions[0].main <= at {
                return Some(generation);
            }
        }
        None
    }

    /// Drops history older than `at`, inserting into `keep` the revisions of this key whose
    /// records must stay in the engine (the newest revision `<= at`, unless it is a tombstone).
    pub fn compact(&mut self, at: i64, keep: &mut HashSet<Revision>) {
        assert!(!self.is_empty(), "key_index: compacting an empty key index");
        // The first generation that is still open at `at` or starts after it.
        let mut first = 0;
        while first < self.generations.len() - 1 {
            let generation = &self.generations[first];
            if generation.revisions[generation.revisions.len() - 1].main > at {
                break;
            }
            first += 1;
        }
        let last = self.generations.len() - 1;
        let generation = &mut self.generations[first];
        if let Some(position) = generation.newest_at(at) {
            keep.insert(generation.revisions[position]);
            generation.revisions.drain(..position);
            // A generation reduced to its tombstone says nothing any reader can see.
            if generation.revisions.len() == 1 && first != last {
                keep.remove(&generation.revisions[0]);
                first += 1;
            }
        }
        self.generations.drain(..first);
    }

    /// Every revision still recorded, oldest first (tests and invariant checks).
    pub fn revisions(&self) -> impl Iterator<Item = Revision> + '_ {
        self.generations
            .iter()
            .flat_map(|generation| generation.revisions.iter().copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rev(main: i64) -> Revision {
        Revision::new(main, 0)
    }

    /// put 2, put 4, delete 6, put 8, put 10, delete 12, put 14 — etcd's key_index test shape.
    fn history() -> KeyIndex {
        let mut index = KeyIndex::new();
        index.put(rev(2));
        index.put(rev(4));
        index.tombstone(rev(6));
        index.put(rev(8));
        index.put(rev(10));
        index.tombstone(rev(12));
        index.put(rev(14));
        index
    }

    #[test]
    fn get_follows_generations_and_versions() {
        let index = history();
        assert_eq!(index.get(1), None);
        let at = |main| {
            index
                .get(main)
                .map(|k| (k.modified.main, k.created.main, k.version))
        };
        assert_eq!(at(2), Some((2, 2, 1)));
        assert_eq!(at(5), Some((4, 2, 2)));
        assert_eq!(at(6), None, "deleted at 6");
        assert_eq!(at(7), None);
        assert_eq!(
            at(9),
            Some((8, 8, 1)),
            "a new generation restarts the version"
        );
        assert_eq!(at(11), Some((10, 8, 2)));
        assert_eq!(at(13), None);
        assert_eq!(at(100), Some((14, 14, 1)));
    }

    #[test]
    fn compaction_keeps_newest_visible_revision_and_drops_dead_generations() {
        let mut index = history();
        let mut keep = HashSet::new();
        index.compact(5, &mut keep);
        assert_eq!(keep, HashSet::from([rev(4)]));
        assert_eq!(
            index.get(5).map(|k| k.version),
            Some(2),
            "version survives compaction"
        );

        let mut keep = HashSet::new();
        index.compact(6, &mut keep);
        assert!(keep.is_empty(), "a bare tombstone is not kept");
        assert_eq!(index.revisions().next(), Some(rev(8)));

        let mut keep = HashSet::new();
        index.compact(13, &mut keep);
        assert!(keep.is_empty());
        assert_eq!(index.revisions().collect::<Vec<_>>(), vec![rev(14)]);

        let mut keep = HashSet::new();
        index.compact(20, &mut keep);
        assert_eq!(keep, HashSet::from([rev(14)]));
        assert_eq!(index.get(20).map(|k| k.modified), Some(rev(14)));
    }

    #[test]
    fn compacting_past_a_final_delete_empties_the_index() {
        let mut index = KeyIndex::new();
        index.put(rev(2));
        index.tombstone(rev(3));
        let mut keep = HashSet::new();
        index.compact(3, &mut keep);
        assert!(keep.is_empty());
        assert!(index.is_empty());
    }

    #[test]
    fn restore_continues_a_compacted_generation() {
        let mut index = KeyIndex::restore(rev(2), rev(7), 4);
        assert_eq!(
            index.get(7).map(|k| (k.created.main, k.version)),
            Some((2, 4))
        );
        assert_eq!(
            index.get(6),
            None,
            "nothing is known before the restored record"
        );
        index.put(rev(9));
        assert_eq!(
            index.get(9).map(|k| (k.created.main, k.version)),
            Some((2, 5))
        );
    }

    #[test]
    #[should_panic(expected = "is not after the last change")]
    fn revisions_must_grow() {
        let mut index = KeyIndex::new();
        index.put(rev(5));
        index.put(rev(4));
    }
}
