//! The in-memory index: for every key, the revisions at which it changed.
//!
//! A key's history is a list of *generations*. A generation starts with the
//! put that creates the key and ends with the tombstone that deletes it; the
//! last generation is the current one and is empty while the key does not
//! exist. For example `put(1.0) put(2.0) del(3.0) put(4.0) del(5.0)` gives
//!
//! ```text
//! {1.0, 2.0, 3.0(t)}  {4.0, 5.0(t)}  {}
//! ```
//!
//! Only revisions live here; values stay in RocksDB under their revision.

use std::collections::{BTreeMap, HashSet};

use bytes::Bytes;

use crate::key_range::KeyRange;
use crate::revision::Revision;

/// Where a key stood at some revision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct KeyRevision {
    /// The revision whose value the key had.
    pub modified: Revision,
    /// The revision that created the key's current generation.
    pub created: Revision,
    /// How many times the key was put in that generation, up to `modified`.
    pub version: i64,
}

/// One life of a key: from the put that created it to its tombstone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Generation {
    /// Number of puts in the generation, counting those compacted away.
    ver: i64,
    /// The revision that created the key in this generation.
    created: Revision,
    /// Every revision still indexed, ascending; a finished generation ends
    /// with its tombstone.
    revs: Vec<Revision>,
}

impl Generation {
    fn is_empty(&self) -> bool {
        self.revs.is_empty()
    }

    /// Index of the last revision with `main <= at_rev`.
    fn last_at_or_before(&self, at_rev: i64) -> Option<usize> {
        self.revs
            .partition_point(|rev| rev.main <= at_rev)
            .checked_sub(1)
    }
}

/// The history of one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct KeyIndex {
    /// The last revision that changed the key.
    modified: Revision,
    /// Oldest first; never empty, the last one is the current generation.
    generations: Vec<Generation>,
}

impl Default for KeyIndex {
    fn default() -> Self {
        KeyIndex {
            modified: Revision::default(),
            generations: vec![Generation::default()],
        }
    }
}

impl KeyIndex {
    /// Whether nothing is indexed (the key can be dropped from the tree).
    pub fn is_empty(&self) -> bool {
        self.generations.len() == 1 && self.generations[0].is_empty()
    }

    /// Records a put at `rev`, which must be newer than every indexed one.
    pub fn put(&mut self, rev: Revision) {
        debug_assert!(rev > self.modified, "put {rev} after {}", self.modified);
        let generation = self.current_mut();
        if generation.is_empty() {
            generation.created = rev;
        }
        generation.revs.push(rev);
        generation.ver += 1;
        self.modified = rev;
    }

    /// Records a deletion at `rev`; `false` (and no change) if the key does not
    /// exist.
    pub fn tombstone(&mut self, rev: Revision) -> bool {
        if self.current_mut().is_empty() {
            return false;
        }
        self.put(rev);
        self.generations.push(Generation::default());
        true
    }

    /// Starts the index of a key whose earliest surviving revision is the put
    /// `modified`, made `version` puts after `created` (the puts before it may
    /// have been compacted away).
    pub fn restore(&mut self, created: Revision, modified: Revision, version: i64) {
        debug_assert!(self.is_empty());
        self.generations = vec![Generation {
            ver: version,
            created,
            revs: vec![modified],
        }];
        self.modified = modified;
    }

    /// Starts the index of a key whose earliest surviving revision is a
    /// tombstone (kept because a compaction happened exactly at it).
    pub fn restore_tombstone(&mut self, rev: Revision) {
        debug_assert!(self.is_empty());
        self.generations = vec![
            Generation {
                ver: 1,
                created: Revision::default(),
                revs: vec![rev],
            },
            Generation::default(),
        ];
        self.modified = rev;
    }

    /// Where the key stood at store revision `at_rev`; `None` if it did not
    /// exist then.
    pub fn get(&self, at_rev: i64) -> Option<KeyRevision> {
        let generation = self.generation_at(at_rev)?;
        let n = generation.last_at_or_before(at_rev)?;
        Some(KeyRevision {
            modified: generation.revs[n],
            created: generation.created,
            version: generation.ver - (generation.revs.len() - n - 1) as i64,
        })
    }

    /// The generation alive at `at_rev`, if the key existed then.
    fn generation_at(&self, at_rev: i64) -> Option<&Generation> {
        let last = self.generations.len() - 1;
        for (i, generation) in self.generations.iter().enumerate().rev() {
            let (Some(first), Some(tomb)) = (generation.revs.first(), generation.revs.last())
            else {
                continue;
            };
            // A finished generation whose tombstone is at or before `at_rev`:
            // the key was deleted then, and older generations are older still.
            if i != last && tomb.main <= at_rev {
                return None;
            }
            if first.main <= at_rev {
                return Some(generation);
            }
        }
        None
    }

    /// Drops every revision not needed to answer reads at `at_rev` or later,
    /// adding the revision kept for `at_rev` to `keep`.
    ///
    /// As in etcd (3.6): the latest revision `<= at_rev` of the generation
    /// alive at `at_rev` is kept; a tombstone exactly at `at_rev` is kept too
    /// (a watcher from `at_rev` must still see that deletion); older
    /// generations and older revisions go.
    pub fn compact(&mut self, at_rev: i64, keep: &mut HashSet<Revision>) {
        let last = self.generations.len() - 1;
        let gen_idx = self
            .generations
            .iter()
            .position(|g| g.revs.last().is_none_or(|tomb| tomb.main >= at_rev))
            .unwrap_or(last);
        let generation = &mut self.generations[gen_idx];
        if let Some(n) = generation.last_at_or_before(at_rev) {
            keep.insert(generation.revs[n]);
            generation.revs.drain(..n);
        }
        self.generations.drain(..gen_idx);
    }

    fn current_mut(&mut self) -> &mut Generation {
        self.generations
            .last_mut()
            .expect("a key index always has a generation")
    }
}

/// Every key's history, ordered by key.
#[derive(Clone, Debug, Default)]
pub(crate) struct TreeIndex {
    keys: BTreeMap<Bytes, KeyIndex>,
}

impl TreeIndex {
    /// Where `key` stood at `at_rev`.
    pub fn get(&self, key: &[u8], at_rev: i64) -> Option<KeyRevision> {
        self.keys.get(key)?.get(at_rev)
    }

    /// The keys of `range` that existed at `at_rev`, in key order.
    pub fn range<'a>(
        &'a self,
        range: &'a KeyRange,
        at_rev: i64,
    ) -> impl Iterator<Item = (&'a Bytes, KeyRevision)> + 'a {
        self.keys
            .range::<[u8], _>(range.bounds())
            .filter_map(move |(key, index)| Some((key, index.get(at_rev)?)))
    }

    /// The index of `key`, created empty if missing. A new key is copied:
    /// `key` may be a slice of a whole request or record that must not stay
    /// alive with it.
    fn entry(&mut self, key: &Bytes) -> &mut KeyIndex {
        let owned = if self.keys.contains_key(key) {
            key.clone()
        } else {
            Bytes::copy_from_slice(key)
        };
        self.keys.entry(owned).or_default()
    }

    /// Records a put of `key` at `rev`.
    pub fn put(&mut self, key: &Bytes, rev: Revision) {
        self.entry(key).put(rev);
    }

    /// Records a deletion of `key` at `rev`; `false` if the key did not exist.
    pub fn tombstone(&mut self, key: &[u8], rev: Revision) -> bool {
        self.keys
            .get_mut(key)
            .is_some_and(|index| index.tombstone(rev))
    }

    /// Replays one stored put while rebuilding the index: the first revision
    /// seen of a key restores its generation from the stored record.
    pub fn restore_put(&mut self, key: &Bytes, rev: Revision, created: i64, version: i64) {
        let index = self.entry(key);
        if index.is_empty() {
            index.restore(Revision::new(created, 0), rev, version);
        } else {
            index.put(rev);
        }
    }

    /// Replays one stored tombstone while rebuilding the index.
    pub fn restore_tombstone(&mut self, key: &Bytes, rev: Revision) {
        let index = self.entry(key);
        if index.is_empty() {
            index.restore_tombstone(rev);
        } else if !index.tombstone(rev) {
            tracing::warn!(key = ?key, %rev, "tombstone of a key that does not exist; ignored");
        }
    }

    /// Compacts every key at `at_rev`, dropping keys with nothing left, and
    /// returns the revisions `<= at_rev` that must stay in the backend.
    pub fn compact(&mut self, at_rev: i64) -> HashSet<Revision> {
        let mut keep = HashSet::new();
        self.keys.retain(|_, index| {
            index.compact(at_rev, &mut keep);
            !index.is_empty()
        });
        keep
    }

    /// Number of keys with any indexed revision (deleted ones included).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.keys.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rev(main: i64) -> Revision {
        Revision::new(main, 0)
    }

    /// `put(1) put(2) del(3) put(4) del(5)` from etcd's documentation.
    fn example() -> KeyIndex {
        let mut index = KeyIndex::default();
        index.put(rev(1));
        index.put(rev(2));
        assert!(index.tombstone(rev(3)));
        index.put(rev(4));
        assert!(index.tombstone(rev(5)));
        index
    }

    fn revs(index: &KeyIndex) -> Vec<Vec<i64>> {
        index
            .generations
            .iter()
            .map(|g| g.revs.iter().map(|r| r.main).collect())
            .collect()
    }

    #[test]
    fn generations_follow_puts_and_tombstones() {
        let index = example();
        assert_eq!(revs(&index), vec![vec![1, 2, 3], vec![4, 5], vec![]]);
        assert_eq!(index.generations[0].created, rev(1));
        assert_eq!(index.generations[0].ver, 3);
        assert_eq!(index.generations[1].created, rev(4));
        assert_eq!(index.modified, rev(5));
    }

    #[test]
    fn tombstone_of_a_missing_key_changes_nothing() {
        let mut index = KeyIndex::default();
        assert!(!index.tombstone(rev(1)));
        assert!(index.is_empty());
        let mut index = example();
        assert!(!index.tombstone(rev(6)));
        assert_eq!(revs(&index), vec![vec![1, 2, 3], vec![4, 5], vec![]]);
    }

    #[test]
    fn get_answers_at_every_revision() {
        let index = example();
        let at = |r| {
            index
                .get(r)
                .map(|k| (k.modified.main, k.created.main, k.version))
        };
        assert_eq!(at(0), None);
        assert_eq!(at(1), Some((1, 1, 1)));
        assert_eq!(at(2), Some((2, 1, 2)));
        assert_eq!(at(3), None);
        assert_eq!(at(4), Some((4, 4, 1)));
        assert_eq!(at(5), None);
        assert_eq!(at(100), None);

        let mut live = example();
        live.put(rev(7));
        live.put(Revision::new(7, 1));
        live.put(rev(9));
        assert_eq!(
            live.get(8).map(|k| (k.modified, k.version)),
            Some((Revision::new(7, 1), 2))
        );
        assert_eq!(live.get(9).map(|k| k.version), Some(3));
        assert_eq!(live.get(6), None);
    }

    #[test]
    fn compaction_follows_etcd() {
        // compact(n) -> (generations left, revisions kept)
        let cases: [(i64, Vec<Vec<i64>>, Vec<i64>); 7] = [
            (1, vec![vec![1, 2, 3], vec![4, 5], vec![]], vec![1]),
            (2, vec![vec![2, 3], vec![4, 5], vec![]], vec![2]),
            (3, vec![vec![3], vec![4, 5], vec![]], vec![3]),
            (4, vec![vec![4, 5], vec![]], vec![4]),
            (5, vec![vec![5], vec![]], vec![5]),
            (6, vec![vec![]], vec![]),
            (100, vec![vec![]], vec![]),
        ];
        for (at, generations, kept) in cases {
            let mut index = example();
            let mut keep = HashSet::new();
            index.compact(at, &mut keep);
            assert_eq!(revs(&index), generations, "compact({at})");
            let mut kept_main: Vec<i64> = keep.iter().map(|r| r.main).collect();
            kept_main.sort();
            assert_eq!(kept_main, kept, "compact({at})");
            assert_eq!(index.is_empty(), at >= 6);
        }
    }

    #[test]
    fn compaction_keeps_answers_at_and_after_the_compact_revision() {
        let mut index = KeyIndex::default();
        for main in [2, 4, 6] {
            index.put(rev(main));
        }
        index.compact(5, &mut HashSet::new());
        assert_eq!(revs(&index), vec![vec![4, 6]]);
        // Version and creation survive the dropped revision.
        assert_eq!(
            index
                .get(5)
                .map(|k| (k.modified.main, k.created.main, k.version)),
            Some((4, 2, 2))
        );
        assert_eq!(index.get(6).map(|k| k.version), Some(3));
        // Compacting again at the same revision changes nothing.
        let before = index.clone();
        index.compact(5, &mut HashSet::new());
        assert_eq!(index, before);
    }

    #[test]
    fn restore_rebuilds_what_compaction_left() {
        let mut tree = TreeIndex::default();
        let a = Bytes::from("a");
        let b = Bytes::from("b");
        // "a" was created at 2, put again at 4 (version 2), 2 compacted away.
        tree.restore_put(&a, rev(4), 2, 2);
        tree.restore_put(&a, rev(6), 2, 3);
        // "b" was deleted exactly at the compact revision 5, then recreated.
        tree.restore_tombstone(&b, rev(5));
        tree.restore_put(&b, rev(7), 7, 1);
        let get = |k: &[u8], r| {
            tree.get(k, r)
                .map(|k| (k.modified.main, k.created.main, k.version))
        };
        assert_eq!(get(b"a", 5), Some((4, 2, 2)));
        assert_eq!(get(b"a", 6), Some((6, 2, 3)));
        assert_eq!(get(b"b", 5), None);
        assert_eq!(get(b"b", 6), None);
        assert_eq!(get(b"b", 7), Some((7, 7, 1)));

        let keep = tree.compact(6);
        assert_eq!(keep, HashSet::from([rev(6)]));
        assert_eq!(tree.len(), 2);
        let keep = tree.compact(8);
        assert_eq!(keep, HashSet::from([rev(6), rev(7)]));
    }

    #[test]
    fn tree_compaction_drops_dead_keys() {
        let mut tree = TreeIndex::default();
        let a = Bytes::from("a");
        let b = Bytes::from("b");
        tree.put(&a, rev(2));
        tree.put(&b, rev(3));
        assert!(tree.tombstone(b"a", rev(4)));
        assert!(!tree.tombstone(b"zz", rev(4)));
        assert_eq!(tree.compact(4), HashSet::from([rev(3), rev(4)]));
        assert_eq!(tree.len(), 2);
        assert_eq!(tree.compact(5), HashSet::from([rev(3)]));
        assert_eq!(tree.len(), 1);
        assert_eq!(tree.get(b"a", 5), None);
    }

    #[test]
    fn tree_range_filters_by_revision() {
        let mut tree = TreeIndex::default();
        for (key, main) in [("a", 2), ("b", 3), ("c", 4)] {
            tree.put(&Bytes::from(key), rev(main));
        }
        assert!(tree.tombstone(b"b", rev(5)));
        let keys = |range: KeyRange, at| -> Vec<String> {
            tree.range(&range, at)
                .map(|(k, _)| String::from_utf8(k.to_vec()).unwrap())
                .collect()
        };
        let all = KeyRange::new(&Bytes::from("\0"), &Bytes::from("\0"));
        assert_eq!(keys(all.clone(), 3), ["a", "b"]);
        assert_eq!(keys(all.clone(), 4), ["a", "b", "c"]);
        assert_eq!(keys(all, 5), ["a", "c"]);
        assert_eq!(
            keys(KeyRange::new(&Bytes::from("b"), &Bytes::new()), 4),
            ["b"]
        );
        assert_eq!(
            keys(KeyRange::new(&Bytes::from("b"), &Bytes::from("c")), 4),
            ["b"]
        );
    }
}
