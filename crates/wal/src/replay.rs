//! The log's index rules and the replay of decoded records into a [`Replayed`]. No I/O:
//! `append` checks a batch against the same [`Position`] that replay applies, so what
//! append accepts, replay accepts.

use crate::error::WalError;
use crate::record::Record;
use crate::segment::Header;
use crate::types::{EntryRecord, HardState, Replayed, SnapshotMark, WalBatch};

/// Where the log stands, as far as the index rules care.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Position {
    /// The last entry's index, or the snapshot mark's if that is higher.
    pub last_index: u64,
    /// The latest snapshot mark's index (0 without one).
    pub snapshot_index: u64,
}

impl Position {
    /// Takes a snapshot mark at `index`.
    pub fn mark(&mut self, index: u64) -> Result<(), WalError> {
        if index < self.snapshot_index {
            return Err(WalError::SnapshotRegression {
                index,
                snapshot_index: self.snapshot_index,
            });
        }
        self.snapshot_index = index;
        self.last_index = self.last_index.max(index);
        Ok(())
    }

    /// Takes an entry at `index`, which replaces the log from `index` on.
    pub fn entry(&mut self, index: u64) -> Result<(), WalError> {
        if index <= self.snapshot_index {
            return Err(WalError::BelowSnapshot {
                index,
                snapshot_index: self.snapshot_index,
            });
        }
        if index > self.last_index.saturating_add(1) {
            return Err(WalError::Gap {
                index,
                last_index: self.last_index,
            });
        }
        self.last_index = index;
        Ok(())
    }

    /// The position after `batch`, or why the batch breaks the rules.
    pub fn after(mut self, batch: &WalBatch) -> Result<Position, WalError> {
        if let Some(mark) = &batch.snapshot {
            self.mark(mark.index)?;
        }
        for entry in &batch.entries {
            self.entry(entry.index)?;
        }
        Ok(self)
    }
}

/// Replays the records of consecutive segments, oldest first.
#[derive(Debug)]
pub(crate) struct Replayer {
    position: Position,
    /// The last index before the oldest segment: entries up to it were released, so a
    /// snapshot mark must cover them.
    released_to: u64,
    metadata: Vec<u8>,
    snapshot: Option<SnapshotMark>,
    hard_state: Option<HardState>,
    /// Contiguous indexes, all above the snapshot mark.
    entries: Vec<EntryRecord>,
}

impl Replayer {
    /// Starts from the oldest segment on disk. Its header and first index stand for
    /// everything before it (released segments, whose entries are all covered by a
    /// snapshot mark).
    pub fn new(first_index: u64, header: Header) -> Result<Replayer, String> {
        let mut replayer = Replayer {
            position: Position {
                last_index: first_index.saturating_sub(1),
                snapshot_index: 0,
            },
            released_to: first_index.saturating_sub(1),
            metadata: header.metadata,
            snapshot: None,
            hard_state: header.hard_state,
            entries: Vec::new(),
        };
        if let Some(mark) = header.snapshot {
            replayer.snapshot(mark)?;
        }
        Ok(replayer)
    }

    /// Checks that a later segment starts where the log stands: a header is a copy of
    /// state already replayed, so it must agree with it.
    pub fn check_header(&self, first_index: u64, header: &Header) -> Result<(), String> {
        let expected = self.position.last_index.saturating_add(1);
        if first_index != expected {
            return Err(format!(
                "the segment's name says it starts at index {first_index}, but the log before it ends at {}",
                self.position.last_index
            ));
        }
        if header.metadata != self.metadata {
            return Err("the segment's metadata differs from the first segment's".to_string());
        }
        if header.snapshot != self.snapshot {
            return Err(
                "the segment header's snapshot mark differs from the latest mark before it"
                    .to_string(),
            );
        }
        if header.hard_state != self.hard_state {
            return Err(
                "the segment header's hard state differs from the latest one before it".to_string(),
            );
        }
        Ok(())
    }

    /// Applies one record from a segment's body.
    pub fn apply(&mut self, record: Record) -> Result<(), String> {
        match record {
            Record::Entry(entry) => self.entry(entry),
            Record::Snapshot(mark) => self.snapshot(mark),
            Record::HardState(hs) => {
                self.hard_state = Some(hs);
                Ok(())
            }
            Record::Metadata { .. } => {
                Err("a metadata record outside a segment header".to_string())
            }
        }
    }

    fn entry(&mut self, entry: EntryRecord) -> Result<(), String> {
        self.position
            .entry(entry.index)
            .map_err(|e| e.to_string())?;
        if let Some(first) = self.entries.first().map(|e| e.index) {
            // Indexes are contiguous, so this many entries lie below the new one.
            let below = entry.index.saturating_sub(first);
            if below < self.entries.len() as u64 {
                self.entries.truncate(below as usize);
            }
        }
        self.entries.push(entry);
        Ok(())
    }

    fn snapshot(&mut self, mark: SnapshotMark) -> Result<(), String> {
        self.position.mark(mark.index).map_err(|e| e.to_string())?;
        if let Some(first) = self.entries.first().map(|e| e.index) {
            let covered = mark.index.saturating_add(1).saturating_sub(first);
            let covered =
                usize::try_from(covered).map_or(self.entries.len(), |n| n.min(self.entries.len()));
            self.entries.drain(..covered);
        }
        self.snapshot = Some(mark);
        Ok(())
    }

    pub fn position(&self) -> Position {
        self.position
    }

    pub fn snapshot_mark(&self) -> Option<&SnapshotMark> {
        self.snapshot.as_ref()
    }

    pub fn hard_state(&self) -> Option<HardState> {
        self.hard_state
    }

    /// The replayed log, or why it does not join its snapshot mark.
    pub fn finish(self) -> Result<Replayed, String> {
        // Segments are released only up to a durable mark, and marks never go back: an
        // oldest segment starting past the latest mark means entries went missing (and
        // an append would write a log that no longer opens).
        if self.position.snapshot_index < self.released_to {
            return Err(format!(
                "the oldest segment starts at index {}, but no snapshot mark covers the entries before it (the latest mark is at {})",
                self.released_to + 1,
                self.position.snapshot_index
            ));
        }
        if let Some(first) = self.entries.first() {
            if first.index != self.position.snapshot_index + 1 {
                return Err(format!(
                    "the log's first entry is {}, but the snapshot mark is at {}",
                    first.index, self.position.snapshot_index
                ));
            }
        }
        Ok(Replayed {
            metadata: self.metadata,
            snapshot: self.snapshot,
            hard_state: self.hard_state,
            entries: self.entries,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64) -> Record {
        Record::Entry(EntryRecord {
            index,
            term,
            data: vec![index as u8],
        })
    }

    fn mark(index: u64) -> SnapshotMark {
        SnapshotMark {
            index,
            term: 1,
            data: vec![],
        }
    }

    fn indexes_and_terms(r: &Replayed) -> Vec<(u64, u64)> {
        r.entries.iter().map(|e| (e.index, e.term)).collect()
    }

    fn header(snapshot: Option<SnapshotMark>) -> Header {
        Header {
            metadata: b"meta".to_vec(),
            snapshot,
            hard_state: None,
        }
    }

    /// Found by the `wal_replay` fuzz target: a log whose only segment starts at index 4
    /// with no mark opened as empty, took an entry at 4, and then no longer opened.
    #[test]
    fn an_oldest_segment_past_the_latest_mark_is_refused() {
        let err = Replayer::new(4, header(None))
            .unwrap()
            .finish()
            .unwrap_err();
        assert!(err.contains("starts at index 4"), "{err}");
        let mut r = Replayer::new(4, header(Some(mark(2)))).unwrap();
        r.apply(entry(4, 1)).unwrap();
        assert!(r.finish().unwrap_err().contains("latest mark is at 2"));
        // Covered by the header's mark, or by a later mark in the segment's body.
        Replayer::new(4, header(Some(mark(3))))
            .unwrap()
            .finish()
            .unwrap();
        let mut r = Replayer::new(4, header(None)).unwrap();
        r.apply(entry(4, 1)).unwrap();
        r.apply(Record::Snapshot(mark(4))).unwrap();
        assert!(r.finish().unwrap().entries.is_empty());
        Replayer::new(1, header(None)).unwrap().finish().unwrap();
    }

    #[test]
    fn position_refuses_gaps_entries_under_the_mark_and_marks_going_back() {
        let mut p = Position::default();
        assert!(matches!(
            p.entry(2),
            Err(WalError::Gap {
                index: 2,
                last_index: 0
            })
        ));
        p.entry(1).unwrap();
        p.entry(2).unwrap();
        p.entry(2).unwrap();
        assert_eq!(p.last_index, 2);
        p.mark(5).unwrap();
        assert_eq!(
            p,
            Position {
                last_index: 5,
                snapshot_index: 5
            }
        );
        assert!(matches!(
            p.entry(5),
            Err(WalError::BelowSnapshot {
                index: 5,
                snapshot_index: 5
            })
        ));
        assert!(matches!(
            p.mark(4),
            Err(WalError::SnapshotRegression {
                index: 4,
                snapshot_index: 5
            })
        ));
        p.mark(5).unwrap();
        p.entry(6).unwrap();
        assert_eq!(p.last_index, 6);
    }

    #[test]
    fn replay_applies_conflicts_and_marks() {
        let mut r = Replayer::new(1, Header::default()).unwrap();
        for i in 1..=10 {
            r.apply(entry(i, 1)).unwrap();
        }
        r.apply(entry(6, 2)).unwrap();
        r.apply(entry(7, 2)).unwrap();
        r.apply(Record::Snapshot(mark(3))).unwrap();
        assert_eq!(
            r.position(),
            Position {
                last_index: 7,
                snapshot_index: 3
            }
        );
        let replayed = r.finish().unwrap();
        assert_eq!(
            indexes_and_terms(&replayed),
            vec![(4, 1), (5, 1), (6, 2), (7, 2)]
        );
        assert_eq!(replayed.snapshot, Some(mark(3)));
    }

    #[test]
    fn a_mark_beyond_the_log_empties_it() {
        let mut r = Replayer::new(1, Header::default()).unwrap();
        r.apply(entry(1, 1)).unwrap();
        r.apply(Record::Snapshot(mark(9))).unwrap();
        r.apply(entry(10, 2)).unwrap();
        let replayed = r.finish().unwrap();
        assert_eq!(indexes_and_terms(&replayed), vec![(10, 2)]);
    }

    #[test]
    fn a_later_header_must_agree_with_the_log() {
        let mut r = Replayer::new(1, Header::default()).unwrap();
        r.apply(entry(1, 1)).unwrap();
        assert_eq!(r.check_header(2, &Header::default()), Ok(()));
        assert_eq!(
            r.check_header(3, &Header::default()),
            Err(
                "the segment's name says it starts at index 3, but the log before it ends at 1"
                    .to_string()
            )
        );
        let stale = Header {
            hard_state: Some(HardState::default()),
            ..Header::default()
        };
        assert_eq!(
            r.check_header(2, &stale),
            Err(
                "the segment header's hard state differs from the latest one before it".to_string()
            )
        );
    }

    #[test]
    fn records_breaking_the_rules_are_reported() {
        let mut r = Replayer::new(1, Header::default()).unwrap();
        assert_eq!(
            r.apply(entry(3, 1)),
            Err("entry 3 would leave a gap after the last index 0".to_string())
        );
        assert_eq!(
            r.apply(Record::Metadata {
                flags: Default::default(),
                data: vec![]
            }),
            Err("a metadata record outside a segment header".to_string())
        );
    }

    #[test]
    fn a_released_log_starts_from_its_first_segment() {
        // Segments before the one starting at 8 were released under the mark at 9.
        let header = Header {
            metadata: b"m".to_vec(),
            snapshot: Some(mark(5)),
            hard_state: None,
        };
        let mut r = Replayer::new(8, header).unwrap();
        r.apply(entry(8, 1)).unwrap();
        r.apply(entry(9, 1)).unwrap();
        r.apply(Record::Snapshot(mark(9))).unwrap();
        r.apply(entry(10, 1)).unwrap();
        let replayed = r.finish().unwrap();
        assert_eq!(indexes_and_terms(&replayed), vec![(10, 1)]);

        // Entries that do not join the mark mean a segment went missing.
        let mut r = Replayer::new(8, Header::default()).unwrap();
        r.apply(entry(8, 1)).unwrap();
        assert_eq!(
            r.finish().unwrap_err(),
            "the oldest segment starts at index 8, but no snapshot mark covers the entries before it (the latest mark is at 0)"
        );
    }
}
