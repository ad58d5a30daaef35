//! A segmented, append-only, checksummed write-ahead log for raft: log entries, the
//! hard state (term, vote, commit) and snapshot marks. The log knows nothing of keys nor
//! of the raft crate: every payload is opaque bytes, and the only rules it keeps are
//! raft's rules about indexes (no gaps; a rewritten index replaces the log from there;
//! a snapshot mark makes everything up to it unneeded).
//!
//! [`Wal::append`] writes a whole [`WalBatch`] with one `write` and one `fsync`, so a
//! raft `Ready` costs one disk flush however many entries it carries. [`Wal::open`]
//! replays the log into a [`Replayed`] and repairs a tail torn by a crash; damage
//! anywhere else is reported as [`WalError::Corrupt`], never skipped.
//!
//! ```
//! use cairn_wal::{EntryRecord, HardState, Wal, WalBatch, WalOptions};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("wal");
//! let mut wal = Wal::create(&path, b"member 1 of cluster 7", WalOptions::default())?;
//! wal.append(&WalBatch {
//!     entries: vec![
//!         EntryRecord { index: 1, term: 1, data: b"put a=1".to_vec() },
//!         EntryRecord { index: 2, term: 1, data: b"put b=2".to_vec() },
//!     ],
//!     hard_state: Some(HardState { term: 1, vote: 1, commit: 2 }),
//!     snapshot: None,
//! })?;
//! drop(wal);
//!
//! let (wal, replayed) = Wal::open(&path, WalOptions::default())?;
//! assert_eq!(replayed.metadata, b"member 1 of cluster 7");
//! assert_eq!(replayed.entries.len(), 2);
//! assert_eq!(replayed.hard_state, Some(HardState { term: 1, vote: 1, commit: 2 }));
//! assert_eq!(wal.last_index(), 2);
//! # Ok(())
//! # }
//! ```
//!
//! # Format on disk
//!
//! A WAL is a directory of segment files named `<seq>-<first_index>.wal`, both numbers
//! as 16 lowercase hex digits. `seq` counts segments from 0 with no holes; `first_index`
//! is the log's last index + 1 when the segment was started. A segment is started when
//! the next batch would make the current one exceed [`WalOptions::segment_bytes`] (a
//! batch is never split, so one larger than that gets a segment of its own).
//!
//! A segment is a sequence of records and nothing else (no padding):
//!
//! ```text
//! offset  size  field
//!      0     4  payload length n, u32 little-endian
//!      4     1  record type: 1 Metadata, 2 Entry, 3 HardState, 4 Snapshot (0 is never valid)
//!      5     4  crc32 (IEEE), u32 LE, of: the segment's seq as u64 LE, this record's
//!               byte offset in the segment as u64 LE, the type byte, the payload
//!      9     n  payload
//! ```
//!
//! Payloads, integers little-endian:
//!
//! | type | payload |
//! |---|---|
//! | Metadata | `u8` flags (bit 0: a Snapshot record follows, bit 1: a HardState record follows; other bits 0), then the metadata given to [`Wal::create`] |
//! | Entry | `u64` index, `u64` term, then the entry's data |
//! | HardState | `u64` term, `u64` vote, `u64` commit (exactly 24 bytes) |
//! | Snapshot | `u64` index, `u64` term, then the mark's data |
//!
//! Every segment opens with a header: the Metadata record, then, as its flags say, the
//! latest snapshot mark and the latest hard state at the time the segment was started.
//! So a segment plus the ones after it hold everything replay needs, and
//! [`Wal::release_to`] can delete older segments whole.
//!
//! Why the record's place is in its checksum: replay tells a torn tail (cut off and
//! repaired) from damage in the middle (an error) by whether any valid record follows the
//! first bad one. Binding each record to the segment and offset it was written at means
//! bytes that merely look like a record never pass for one: not a record-shaped value
//! inside an entry's payload, nor stale blocks of a deleted segment that a file system
//! may expose in a file's tail after a crash. Type 0 is invalid so that a zero-filled
//! tail never reads as a record.
//!
//! # Crash safety
//!
//! - [`Wal::append`] returns `Ok` only after its bytes are on disk (`fdatasync`; when it
//!   started a segment, the directory is synced too). Every batch acknowledged this way
//!   is replayed by [`Wal::open`].
//! - A crash can leave the last segment with a torn last batch: a record running past
//!   the end of the file, a bad checksum, or a zero-filled tail, with no valid record
//!   after it. Open cuts the file back to its last good record (logging a warning with
//!   the offset) and appends continue from there. A new segment whose header was never
//!   completely written is removed.
//! - A bad record followed by any valid record, a bad record in any segment but the
//!   last, or records that break the index rules are [`WalError::Corrupt`]. So is a bad
//!   record followed by megabytes of random bytes, too many to search for valid records
//!   in at a bounded cost.
//! - After an I/O error in [`Wal::append`] the log's tail is unknown: the [`Wal`] refuses
//!   further writes ([`WalError::Poisoned`]); reopening it repairs the tail.
#![deny(missing_docs)]

mod error;
mod record;
mod replay;
mod segment;
mod types;
mod wal;

pub use error::WalError;
pub use types::{EntryRecord, HardState, Replayed, SnapshotMark, WalBatch, WalOptions};
pub use wal::Wal;
