//! Revisions and their byte encoding in the `key` column family.
//!
//! A revision is a pair `(main, sub)`: `main` is the store revision a client
//! sees (one per write request), `sub` numbers the changes inside it (a txn
//! that writes three keys makes `(r, 0)`, `(r, 1)`, `(r, 2)`).
//!
//! The encoding is etcd's: 8-byte big-endian `main`, a `_`, 8-byte big-endian
//! `sub`, and for a deletion a trailing `t`. Byte order equals revision order,
//! so a forward scan of the column family replays history.

use crate::error::MvccError;

/// Length of an encoded revision without the tombstone mark.
pub const REVISION_KEY_LEN: usize = 17;
/// Length of an encoded tombstone revision.
pub const TOMBSTONE_KEY_LEN: usize = REVISION_KEY_LEN + 1;
/// The byte between `main` and `sub`.
const SEPARATOR: u8 = b'_';
/// The byte that marks a deletion.
const TOMBSTONE_MARK: u8 = b't';

/// One point in the store's history.
///
/// Ordered by `main`, then `sub`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Revision {
    /// The store revision (one per write request).
    pub main: i64,
    /// The position of the change inside its store revision.
    pub sub: i64,
}

impl Revision {
    /// The revision `(main, sub)`.
    pub const fn new(main: i64, sub: i64) -> Self {
        Revision { main, sub }
    }

    /// Encodes the revision as a key of the `key` column family; `tombstone`
    /// appends the deletion mark.
    pub fn to_key(self, tombstone: bool) -> Vec<u8> {
        let mut key = Vec::with_capacity(TOMBSTONE_KEY_LEN);
        // Revisions are never negative, so the two's-complement bytes sort
        // like the numbers.
        key.extend_from_slice(&self.main.to_be_bytes());
        key.push(SEPARATOR);
        key.extend_from_slice(&self.sub.to_be_bytes());
        if tombstone {
            key.push(TOMBSTONE_MARK);
        }
        key
    }

    /// Decodes a key of the `key` column family into the revision and whether
    /// it marks a deletion.
    pub fn from_key(key: &[u8]) -> Result<(Revision, bool), MvccError> {
        let tombstone = match key.len() {
            REVISION_KEY_LEN => false,
            TOMBSTONE_KEY_LEN if key[REVISION_KEY_LEN] == TOMBSTONE_MARK => true,
            _ => return Err(MvccError::Corrupt(format!("bad revision key {key:?}"))),
        };
        if key[8] != SEPARATOR {
            return Err(MvccError::Corrupt(format!("bad revision key {key:?}")));
        }
        let mut main = [0u8; 8];
        let mut sub = [0u8; 8];
        main.copy_from_slice(&key[..8]);
        sub.copy_from_slice(&key[9..REVISION_KEY_LEN]);
        Ok((
            Revision::new(i64::from_be_bytes(main), i64::from_be_bytes(sub)),
            tombstone,
        ))
    }
}

impl std::fmt::Display for Revision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.main, self.sub)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_is_etcds_layout() {
        assert_eq!(
            Revision::new(1, 2).to_key(false),
            [0, 0, 0, 0, 0, 0, 0, 1, b'_', 0, 0, 0, 0, 0, 0, 0, 2]
        );
        assert_eq!(
            Revision::new(258, 0).to_key(true),
            [0, 0, 0, 0, 0, 0, 1, 2, b'_', 0, 0, 0, 0, 0, 0, 0, 0, b't']
        );
    }

    #[test]
    fn byte_order_is_revision_order() {
        let revs = [
            Revision::new(1, 0),
            Revision::new(1, 1),
            Revision::new(1, 255),
            Revision::new(1, 256),
            Revision::new(2, 0),
            Revision::new(255, 7),
            Revision::new(256, 0),
            Revision::new(1 << 40, 3),
            Revision::new(i64::MAX, i64::MAX),
        ];
        for pair in revs.windows(2) {
            assert!(pair[0] < pair[1]);
            assert!(pair[0].to_key(false) < pair[1].to_key(false));
            // A tombstone of a smaller revision still sorts first.
            assert!(pair[0].to_key(true) < pair[1].to_key(false));
        }
        // A tombstone sorts right after the same revision unmarked (never
        // both exist, but a range bound must still work).
        assert!(Revision::new(3, 1).to_key(false) < Revision::new(3, 1).to_key(true));
        assert!(Revision::new(3, 1).to_key(true) < Revision::new(3, 2).to_key(false));
    }

    #[test]
    fn decode_round_trips_and_rejects_garbage() {
        for (rev, tomb) in [(Revision::new(7, 3), false), (Revision::new(9, 0), true)] {
            assert_eq!(Revision::from_key(&rev.to_key(tomb)), Ok((rev, tomb)));
        }
        assert!(matches!(
            Revision::from_key(b"short"),
            Err(MvccError::Corrupt(_))
        ));
        let mut bad_mark = Revision::new(1, 1).to_key(false);
        bad_mark.push(b'x');
        assert!(matches!(
            Revision::from_key(&bad_mark),
            Err(MvccError::Corrupt(_))
        ));
        let mut bad_separator = Revision::new(1, 1).to_key(false);
        bad_separator[8] = b'-';
        assert!(matches!(
            Revision::from_key(&bad_separator),
            Err(MvccError::Corrupt(_))
        ));
    }

    #[test]
    fn display_is_main_dot_sub() {
        assert_eq!(Revision::new(5, 2).to_string(), "5.2");
    }
}
