//! etcd's `(key, range_end)` convention as a value.

use std::ops::Bound;

use bytes::Bytes;

/// The set of keys a `(key, range_end)` pair names, as etcd reads it:
///
/// - `range_end` empty: the single key `key`;
/// - `range_end` is `"\0"`: every key `>= key` (so `key = "\0"` means all keys);
/// - otherwise the half-open interval `[key, range_end)`, empty when
///   `range_end <= key`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyRange {
    /// Exactly one key.
    Key(Bytes),
    /// Every key from `start` (inclusive) up to `end` (exclusive); `None` has
    /// no upper bound.
    Span {
        /// The first key of the interval.
        start: Bytes,
        /// The first key after the interval, or `None` for "to the end".
        end: Option<Bytes>,
    },
    /// No key at all (`range_end <= key`).
    Empty,
}

impl KeyRange {
    /// Reads a request's `key` and `range_end`.
    pub fn new(key: &Bytes, range_end: &Bytes) -> KeyRange {
        if range_end.is_empty() {
            KeyRange::Key(key.clone())
        } else if range_end.as_ref() == [0] {
            KeyRange::Span {
                start: key.clone(),
                end: None,
            }
        } else if range_end <= key {
            KeyRange::Empty
        } else {
            KeyRange::Span {
                start: key.clone(),
                end: Some(range_end.clone()),
            }
        }
    }

    /// Whether `key` is in the range.
    pub fn contains(&self, key: &[u8]) -> bool {
        match self {
            KeyRange::Key(k) => k.as_ref() == key,
            KeyRange::Span { start, end } => {
                start.as_ref() <= key && end.as_ref().is_none_or(|end| key < end.as_ref())
            }
            KeyRange::Empty => false,
        }
    }

    /// The range as bounds for `BTreeMap::range` over byte-string keys; never
    /// panics there.
    pub fn bounds(&self) -> (Bound<&[u8]>, Bound<&[u8]>) {
        match self {
            KeyRange::Key(k) => (Bound::Included(k.as_ref()), Bound::Included(k.as_ref())),
            KeyRange::Span { start, end } => (
                Bound::Included(start.as_ref()),
                match end {
                    Some(end) => Bound::Excluded(end.as_ref()),
                    None => Bound::Unbounded,
                },
            ),
            KeyRange::Empty => (Bound::Included(&[][..]), Bound::Excluded(&[][..])),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn range(key: &'static str, end: &'static str) -> KeyRange {
        KeyRange::new(&Bytes::from(key), &Bytes::from(end))
    }

    #[test]
    fn reads_etcds_conventions() {
        assert_eq!(range("a", ""), KeyRange::Key(Bytes::from("a")));
        assert_eq!(
            range("a", "\0"),
            KeyRange::Span {
                start: Bytes::from("a"),
                end: None
            }
        );
        assert_eq!(
            range("a", "c"),
            KeyRange::Span {
                start: Bytes::from("a"),
                end: Some(Bytes::from("c"))
            }
        );
        assert_eq!(range("c", "a"), KeyRange::Empty);
        assert_eq!(range("a", "a"), KeyRange::Empty);
    }

    #[test]
    fn contains_and_bounds_agree() {
        let keys = ["", "\0", "a", "a\0", "ab", "b", "c", "zz"];
        let map: BTreeMap<&[u8], ()> = keys.iter().map(|k| (k.as_bytes(), ())).collect();
        for r in [
            range("a", ""),
            range("a", "\0"),
            range("\0", "\0"),
            range("a", "c"),
            range("c", "a"),
            range("b", "b"),
        ] {
            let by_bounds: Vec<&[u8]> = map.range::<[u8], _>(r.bounds()).map(|(k, _)| *k).collect();
            let by_contains: Vec<&[u8]> = keys
                .iter()
                .map(|k| k.as_bytes())
                .filter(|k| r.contains(k))
                .collect();
            assert_eq!(by_bounds, by_contains, "{r:?}");
        }
        assert!(range("\0", "\0").contains(b"anything"));
        assert!(!range("a", "c").contains(b"c"));
        assert!(range("a", "c").contains(b"bzzz"));
    }
}
