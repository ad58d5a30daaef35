//! Key permissions: what a role grants, and the merged key ranges a user may read or
//! write.
//!
//! A permission covers one key (`range_end` empty), the range `[key, range_end)`, or
//! every key from `key` on (`range_end == "\0"`); a prefix is the range up to the
//! prefix's successor. For each user the permissions of all its roles are merged into
//! two sorted lists of disjoint ranges (read and write; READWRITE goes to both), where
//! overlapping **and adjacent** ranges combine, as etcd's `rangePermCache` combines
//! them: `[a, b)` and `[b, c)` together allow a range request over `[a, c)`. A check
//! is then one binary search.

use std::cmp::Ordering;

use bytes::Bytes;
use cairn_proto::authpb::{permission::Type as PermissionType, Permission};

/// The kind of access a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// Reading keys (Range, Watch, a txn compare, `prev_kv`).
    Read,
    /// Writing keys (Put, DeleteRange, attaching or revoking a lease).
    Write,
}

impl Access {
    /// Whether a permission of type `perm_type` (an `authpb.Permission.Type` value)
    /// grants this access. Unknown values grant nothing.
    pub fn granted_by(self, perm_type: i32) -> bool {
        match PermissionType::try_from(perm_type) {
            Ok(PermissionType::Readwrite) => true,
            Ok(PermissionType::Read) => self == Access::Read,
            Ok(PermissionType::Write) => self == Access::Write,
            Err(_) => false,
        }
    }
}

/// The permission RoleGet shows for the `root` role: READWRITE on every key
/// (`key = ""`, `range_end = "\0"`), whatever the role record holds.
pub fn root_permission() -> Permission {
    Permission {
        perm_type: PermissionType::Readwrite as i32,
        key: Bytes::new(),
        range_end: Bytes::from_static(b"\0"),
    }
}

/// Whether `[key, range_end)` can be granted: a non-empty key, and a range end that is
/// empty (one key), `"\0"` (from the key on) or after the key (etcd's
/// `isValidPermissionRange`). etcdctl sends `key = "\0"` for an empty prefix.
pub fn is_valid_permission_range(key: &[u8], range_end: &[u8]) -> bool {
    !key.is_empty() && (range_end.is_empty() || is_open_ended(range_end) || key < range_end)
}

/// `range_end == "\0"`: every key from `key` on.
pub(crate) fn is_open_ended(range_end: &[u8]) -> bool {
    range_end == b"\0"
}

/// The end of a merged range: a key (exclusive) or past every key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum End {
    // Variant order is the ordering: every key comes before `Unbounded`.
    Key(Vec<u8>),
    Unbounded,
}

impl End {
    fn of_range_end(range_end: &[u8]) -> End {
        if is_open_ended(range_end) {
            End::Unbounded
        } else {
            End::Key(range_end.to_vec())
        }
    }

    fn is_after(&self, key: &[u8]) -> bool {
        match self {
            End::Key(end) => end.as_slice() > key,
            End::Unbounded => true,
        }
    }
}

/// Disjoint, sorted, non-adjacent key ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeSet {
    ranges: Vec<(Vec<u8>, End)>,
}

impl RangeSet {
    /// The union of `permissions`' ranges (each `(key, range_end)` as in
    /// `authpb.Permission`). Ranges with an empty key or an end not after the key
    /// cannot be granted today (see [`is_valid_permission_range`]) and are skipped if an
    /// old record holds one.
    pub fn from_ranges<'a>(permissions: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> Self {
        let mut ranges: Vec<(Vec<u8>, End)> = permissions
            .into_iter()
            .filter(|(key, range_end)| is_valid_permission_range(key, range_end))
            .map(|(key, range_end)| {
                let end = if range_end.is_empty() {
                    // One key: [key, key + "\0").
                    let mut next = key.to_vec();
                    next.push(0);
                    End::Key(next)
                } else {
                    End::of_range_end(range_end)
                };
                (key.to_vec(), end)
            })
            .collect();
        ranges.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
        let mut merged: Vec<(Vec<u8>, End)> = Vec::with_capacity(ranges.len());
        for (begin, end) in ranges {
            if let Some(last) = merged.last_mut() {
                // Touching ranges combine: etcd's check sees no gap when one range ends
                // exactly where the next begins.
                let starts_after_gap = match &last.1 {
                    End::Key(last_end) => *last_end < begin,
                    End::Unbounded => false,
                };
                if !starts_after_gap {
                    if end > last.1 {
                        last.1 = end;
                    }
                    continue;
                }
            }
            merged.push((begin, end));
        }
        RangeSet { ranges: merged }
    }

    /// Whether the set covers a request over `key` (`range_end` empty), `[key,
    /// range_end)`, or from `key` on (`range_end == "\0"`).
    ///
    /// As etcd's interval tree answers: an empty `key` is never covered; a range whose
    /// end is not after its key (a request that selects nothing) is covered when its
    /// first key is.
    pub fn covers(&self, key: &[u8], range_end: &[u8]) -> bool {
        if key.is_empty() {
            return false;
        }
        let Some((_, end)) = self.containing(key) else {
            return false;
        };
        if range_end.is_empty() {
            return true;
        }
        let wanted = End::of_range_end(range_end);
        match wanted.cmp(&End::Key(key.to_vec())) {
            Ordering::Greater => *end >= wanted,
            Ordering::Less | Ordering::Equal => true,
        }
    }

    /// The merged range holding `key`, if any.
    fn containing(&self, key: &[u8]) -> Option<&(Vec<u8>, End)> {
        let after = self
            .ranges
            .partition_point(|(begin, _)| begin.as_slice() <= key);
        let candidate = self.ranges.get(after.checked_sub(1)?)?;
        candidate.1.is_after(key).then_some(candidate)
    }

    /// Number of disjoint ranges.
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    /// No range at all.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }
}

/// What one user may read and write: its roles' permissions, merged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserPermissions {
    read: RangeSet,
    write: RangeSet,
}

impl UserPermissions {
    /// Merges `permissions` (those of every role of one user).
    pub fn from_permissions<'a>(
        permissions: impl IntoIterator<Item = &'a Permission> + Clone,
    ) -> Self {
        let of = |access: Access| {
            RangeSet::from_ranges(
                permissions
                    .clone()
                    .into_iter()
                    .filter(move |p| access.granted_by(p.perm_type))
                    .map(|p| (p.key.as_ref(), p.range_end.as_ref())),
            )
        };
        UserPermissions {
            read: of(Access::Read),
            write: of(Access::Write),
        }
    }

    /// Whether `access` on the key or range is allowed (see [`RangeSet::covers`]).
    pub fn allows(&self, access: Access, key: &[u8], range_end: &[u8]) -> bool {
        match access {
            Access::Read => self.read.covers(key, range_end),
            Access::Write => self.write.covers(key, range_end),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ranges: &[(&str, &str)]) -> RangeSet {
        RangeSet::from_ranges(ranges.iter().map(|(k, e)| (k.as_bytes(), e.as_bytes())))
    }

    #[test]
    fn valid_permission_ranges() {
        assert!(is_valid_permission_range(b"a", b""));
        assert!(is_valid_permission_range(b"a", b"b"));
        assert!(is_valid_permission_range(b"a", b"\0"));
        assert!(is_valid_permission_range(b"\0", b"\0"));
        assert!(!is_valid_permission_range(b"", b""));
        assert!(!is_valid_permission_range(b"", b"\0"));
        assert!(!is_valid_permission_range(b"b", b"a"));
        assert!(!is_valid_permission_range(b"a", b"a"));
    }

    #[test]
    fn single_key_covers_only_that_key() {
        let s = set(&[("foo", "")]);
        assert!(s.covers(b"foo", b""));
        assert!(!s.covers(b"fo", b""));
        assert!(!s.covers(b"foo0", b""));
        assert!(!s.covers(b"foo\0", b""));
        // A range of exactly that key: [foo, foo\0).
        assert!(s.covers(b"foo", b"foo\0"));
        assert!(!s.covers(b"foo", b"fop"));
        assert!(!s.covers(b"foo", b"\0"));
    }

    #[test]
    fn range_covers_its_inside_only() {
        let s = set(&[("b", "d")]);
        assert!(s.covers(b"b", b""));
        assert!(s.covers(b"c", b""));
        assert!(s.covers(b"czzz", b""));
        assert!(!s.covers(b"d", b""));
        assert!(!s.covers(b"a", b""));
        assert!(s.covers(b"b", b"d"));
        assert!(s.covers(b"bb", b"c"));
        assert!(!s.covers(b"a", b"c"));
        assert!(!s.covers(b"b", b"d\0"));
        assert!(!s.covers(b"b", b"\0"));
    }

    #[test]
    fn prefix_is_the_range_to_its_successor() {
        // etcdctl role grant-permission --prefix r read "/app/" sends range_end "/app0".
        let s = set(&[("/app/", "/app0")]);
        assert!(s.covers(b"/app/", b"/app0"));
        assert!(s.covers(b"/app/x/y", b""));
        assert!(s.covers(b"/app/x/", b"/app/x0"));
        assert!(!s.covers(b"/app", b""));
        assert!(!s.covers(b"/app0", b""));
        assert!(!s.covers(b"/", b"/app0"));
    }

    #[test]
    fn from_key_covers_everything_after() {
        let s = set(&[("m", "\0")]);
        assert!(s.covers(b"m", b"\0"));
        assert!(s.covers(b"zzz", b"\0"));
        assert!(s.covers(b"m", b"z"));
        assert!(s.covers(b"\xff\xff", b""));
        assert!(!s.covers(b"l", b"\0"));
        assert!(!s.covers(b"l", b""));
        // The whole key space as etcdctl grants it for an empty key (--prefix / --from-key).
        let all = set(&[("\0", "\0")]);
        assert!(all.covers(b"\0", b"\0"));
        assert!(all.covers(b"a", b""));
        assert!(all.covers(b"a", b"\0"));
    }

    #[test]
    fn adjacent_and_overlapping_ranges_combine() {
        let s = set(&[("a", "c"), ("c", "e")]);
        assert_eq!(s.len(), 1);
        assert!(s.covers(b"a", b"e"));
        assert!(s.covers(b"b", b"d"));
        assert!(!s.covers(b"a", b"e\0"));

        let s = set(&[("a", "d"), ("b", "c"), ("c", "f")]);
        assert_eq!(s.len(), 1);
        assert!(s.covers(b"a", b"f"));

        // A single key touching a range: [k, k\0) then [k\0, z).
        let s = set(&[("k", ""), ("k\0", "z")]);
        assert_eq!(s.len(), 1);
        assert!(s.covers(b"k", b"z"));

        // A range ending where from-key begins.
        let s = set(&[("a", "m"), ("m", "\0")]);
        assert!(s.covers(b"a", b"\0"));
    }

    #[test]
    fn a_gap_breaks_the_cover() {
        let s = set(&[("a", "c"), ("d", "f")]);
        assert_eq!(s.len(), 2);
        assert!(s.covers(b"a", b"c"));
        assert!(s.covers(b"d", b"f"));
        assert!(!s.covers(b"a", b"f"));
        assert!(!s.covers(b"b", b"e"));
        assert!(!s.covers(b"c", b""));
        // One key missing between two ranges.
        let s = set(&[("a", "c"), ("c\0", "e")]);
        assert!(!s.covers(b"a", b"e"));
        assert!(s.covers(b"c\0", b"d"));
    }

    #[test]
    fn empty_keys_and_degenerate_ranges_as_etcd() {
        let s = set(&[("\0", "\0")]);
        // An empty key is past every key for etcd's interval tree: never covered.
        assert!(!s.covers(b"", b""));
        assert!(!s.covers(b"", b"\0"));
        assert!(!s.covers(b"", b"a"));
        // A range ending before it begins selects nothing; its first key decides.
        let s = set(&[("a", "c")]);
        assert!(s.covers(b"b", b"a"));
        assert!(s.covers(b"b", b"b"));
        assert!(!s.covers(b"d", b"a"));
        // Ungrantable records are ignored.
        let s = set(&[("", ""), ("", "\0"), ("z", "a")]);
        assert!(s.is_empty());
    }

    #[test]
    fn read_write_and_readwrite_split() {
        let perms = [
            Permission {
                perm_type: PermissionType::Read as i32,
                key: "r".into(),
                range_end: "".into(),
            },
            Permission {
                perm_type: PermissionType::Write as i32,
                key: "w".into(),
                range_end: "".into(),
            },
            Permission {
                perm_type: PermissionType::Readwrite as i32,
                key: "x".into(),
                range_end: "z".into(),
            },
        ];
        let user = UserPermissions::from_permissions(perms.iter());
        assert!(user.allows(Access::Read, b"r", b""));
        assert!(!user.allows(Access::Write, b"r", b""));
        assert!(user.allows(Access::Write, b"w", b""));
        assert!(!user.allows(Access::Read, b"w", b""));
        assert!(user.allows(Access::Read, b"x", b"z"));
        assert!(user.allows(Access::Write, b"y", b""));
        assert!(!Access::Read.granted_by(7));
    }
}
