use std::fs;
use std::path::{Path, PathBuf};

use super::*;
use crate::record::{scan, Record};
use crate::types::{EntryRecord, HardState, SnapshotMark};

const META: &[u8] = b"member=1 cluster=7";

fn entry(index: u64, term: u64) -> EntryRecord {
    EntryRecord {
        index,
        term,
        data: format!("entry {index} of term {term}: some payload bytes").into_bytes(),
    }
}

fn entries(indexes: std::ops::RangeInclusive<u64>, term: u64) -> Vec<EntryRecord> {
    indexes.map(|i| entry(i, term)).collect()
}

fn hs(term: u64, commit: u64) -> HardState {
    HardState {
        term,
        vote: 1,
        commit,
    }
}

fn mark(index: u64, term: u64) -> SnapshotMark {
    SnapshotMark {
        index,
        term,
        data: format!("conf state at {index}").into_bytes(),
    }
}

fn of_entries(entries: Vec<EntryRecord>) -> WalBatch {
    WalBatch {
        entries,
        ..WalBatch::default()
    }
}

/// The default options with a small preallocation window: every test exercises writing
/// into preallocated space and replaying its zeros, without copying megabytes of them.
fn opts() -> WalOptions {
    WalOptions {
        preallocate_bytes: 4096,
        ..WalOptions::default()
    }
}

fn tiny(segment_bytes: u64) -> WalOptions {
    WalOptions {
        segment_bytes,
        ..opts()
    }
}

fn new_wal(opts: WalOptions) -> (tempfile::TempDir, PathBuf, Wal) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let wal = Wal::create(&dir, META, opts).unwrap();
    (tmp, dir, wal)
}

fn reopen(dir: &Path) -> (Wal, Replayed) {
    Wal::open(dir, opts()).unwrap()
}

fn segment_paths(dir: &Path) -> Vec<PathBuf> {
    segment::list(dir)
        .unwrap()
        .into_iter()
        .map(|s| s.path)
        .collect()
}

fn file_names(dir: &Path) -> Vec<String> {
    segment_paths(dir)
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

/// A copy of `src` in a fresh directory: a crash image of the log as it is now.
fn copy_dir(src: &Path) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dst = tmp.path().join("wal");
    fs::create_dir(&dst).unwrap();
    for e in fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
    (tmp, dst)
}

fn corrupt_location(err: WalError) -> (PathBuf, u64, String) {
    match err {
        WalError::Corrupt {
            segment,
            offset,
            reason,
        } => (segment, offset, reason),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

fn seq_of(path: &Path) -> u64 {
    let name = path.file_name().unwrap().to_str().unwrap();
    u64::from_str_radix(&name[..16], 16).unwrap()
}

/// Offsets `(start, end)` of the records in a segment file (which may end in the zeros
/// of preallocated space).
fn record_spans(path: &Path) -> Vec<(u64, u64)> {
    let bytes = fs::read(path).unwrap();
    let s = scan(&bytes, seq_of(path));
    if s.end != ScanEnd::Clean {
        let end = s.valid_end() as usize;
        assert!(
            bytes[end..].iter().all(|b| *b == 0),
            "{path:?}: {:?}",
            s.end
        );
    }
    s.records.iter().map(|r| (r.offset, r.end)).collect()
}

/// Where a segment's records end: what follows is only preallocated zeros.
fn data_len(path: &Path) -> u64 {
    record_spans(path).last().map_or(0, |(_, end)| *end)
}

/// A small deterministic generator (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

#[test]
fn round_trip_of_entries_hard_state_snapshot_and_metadata() {
    let (_tmp, dir, mut wal) = new_wal(opts());
    wal.append(&WalBatch {
        entries: entries(1..=3, 1),
        hard_state: Some(hs(1, 2)),
        snapshot: None,
    })
    .unwrap();
    wal.append(&WalBatch {
        entries: entries(4..=5, 2),
        hard_state: Some(hs(2, 4)),
        snapshot: Some(mark(2, 1)),
    })
    .unwrap();
    assert_eq!(wal.last_index(), 5);
    drop(wal);

    let (wal, replayed) = reopen(&dir);
    assert_eq!(
        replayed,
        Replayed {
            metadata: META.to_vec(),
            snapshot: Some(mark(2, 1)),
            hard_state: Some(hs(2, 4)),
            entries: vec![entry(3, 1), entry(4, 2), entry(5, 2)],
        }
    );
    assert_eq!(wal.last_index(), 5);
}

#[test]
fn a_new_log_replays_empty() {
    let (_tmp, dir, wal) = new_wal(opts());
    assert_eq!(wal.last_index(), 0);
    drop(wal);
    let (wal, replayed) = reopen(&dir);
    assert_eq!(
        replayed,
        Replayed {
            metadata: META.to_vec(),
            ..Replayed::default()
        }
    );
    assert_eq!(wal.last_index(), 0);
    assert_eq!(
        file_names(&dir),
        vec!["0000000000000000-0000000000000001.wal"]
    );
}

#[test]
fn a_mark_at_index_zero_starts_the_log_at_one() {
    // What cairn-raft-node writes when it bootstraps a member.
    let (_tmp, dir, mut wal) = new_wal(opts());
    wal.append(&WalBatch {
        entries: vec![],
        hard_state: Some(HardState::default()),
        snapshot: Some(mark(0, 0)),
    })
    .unwrap();
    assert_eq!(wal.last_index(), 0);
    drop(wal);
    let (mut wal, replayed) = reopen(&dir);
    assert_eq!(replayed.snapshot, Some(mark(0, 0)));
    assert_eq!(replayed.hard_state, Some(HardState::default()));
    assert_eq!(replayed.entries, vec![]);
    wal.append(&of_entries(entries(1..=2, 1))).unwrap();
    drop(wal);
    assert_eq!(reopen(&dir).1.entries, entries(1..=2, 1));
}

#[test]
fn conflicting_entries_replace_the_log_from_their_index() {
    let (_tmp, dir, mut wal) = new_wal(opts());
    wal.append(&of_entries(entries(1..=10, 1))).unwrap();
    wal.append(&of_entries(entries(6..=7, 2))).unwrap();
    assert_eq!(wal.last_index(), 7);
    drop(wal);

    let (mut wal, replayed) = reopen(&dir);
    let mut expected = entries(1..=5, 1);
    expected.extend(entries(6..=7, 2));
    assert_eq!(replayed.entries, expected);
    assert_eq!(wal.last_index(), 7);

    wal.append(&of_entries(vec![entry(8, 2)])).unwrap();
    drop(wal);
    expected.push(entry(8, 2));
    assert_eq!(reopen(&dir).1.entries, expected);
}

#[test]
fn a_gap_is_refused_and_nothing_is_written() {
    let (_tmp, dir, mut wal) = new_wal(opts());
    assert!(matches!(
        wal.append(&of_entries(vec![entry(2, 1)])),
        Err(WalError::Gap {
            index: 2,
            last_index: 0
        })
    ));
    wal.append(&of_entries(entries(1..=3, 1))).unwrap();
    let segment = segment_paths(&dir).remove(0);
    let len = data_len(&segment);

    assert!(matches!(
        wal.append(&of_entries(vec![entry(5, 1)])),
        Err(WalError::Gap {
            index: 5,
            last_index: 3
        })
    ));
    // The batch is refused whole, even its valid first entry and its hard state.
    assert!(matches!(
        wal.append(&WalBatch {
            entries: vec![entry(4, 1), entry(6, 1)],
            hard_state: Some(hs(1, 4)),
            snapshot: None,
        }),
        Err(WalError::Gap {
            index: 6,
            last_index: 4
        })
    ));
    assert_eq!(data_len(&segment), len);
    assert_eq!(wal.last_index(), 3);

    // A refusal does not poison the log.
    wal.append(&of_entries(vec![entry(4, 1)])).unwrap();
    drop(wal);
    let (_, replayed) = reopen(&dir);
    assert_eq!(replayed.entries, entries(1..=4, 1));
    assert_eq!(replayed.hard_state, None);
}

#[test]
fn entries_under_the_mark_and_marks_going_back_are_refused() {
    let (_tmp, dir, mut wal) = new_wal(opts());
    wal.append(&of_entries(entries(1..=5, 1))).unwrap();
    wal.append(&WalBatch {
        snapshot: Some(mark(3, 1)),
        ..WalBatch::default()
    })
    .unwrap();
    assert!(matches!(
        wal.append(&of_entries(vec![entry(3, 2)])),
        Err(WalError::BelowSnapshot {
            index: 3,
            snapshot_index: 3
        })
    ));
    assert!(matches!(
        wal.append(&WalBatch {
            snapshot: Some(mark(2, 1)),
            ..WalBatch::default()
        }),
        Err(WalError::SnapshotRegression {
            index: 2,
            snapshot_index: 3
        })
    ));
    // A mark past the log moves the last index; the next entry follows the mark.
    wal.append(&WalBatch {
        snapshot: Some(mark(9, 2)),
        ..WalBatch::default()
    })
    .unwrap();
    assert_eq!(wal.last_index(), 9);
    assert!(matches!(
        wal.append(&of_entries(vec![entry(11, 2)])),
        Err(WalError::Gap {
            index: 11,
            last_index: 9
        })
    ));
    wal.append(&of_entries(vec![entry(10, 2)])).unwrap();
    drop(wal);
    let (wal, replayed) = reopen(&dir);
    assert_eq!(replayed.snapshot, Some(mark(9, 2)));
    assert_eq!(replayed.entries, vec![entry(10, 2)]);
    assert_eq!(wal.last_index(), 10);
}

#[test]
fn an_empty_batch_writes_nothing() {
    let (_tmp, dir, mut wal) = new_wal(opts());
    let segment = segment_paths(&dir).remove(0);
    let len = data_len(&segment);
    wal.append(&WalBatch::default()).unwrap();
    assert_eq!(data_len(&segment), len);
}

/// Appends entries 1..=40, each batch one entry and a hard state, to a log whose segments
/// hold about two batches.
fn many_segments() -> (tempfile::TempDir, PathBuf, Wal) {
    let (tmp, dir, mut wal) = new_wal(tiny(256));
    for i in 1..=40 {
        wal.append(&WalBatch {
            entries: vec![entry(i, 1)],
            hard_state: Some(hs(1, i - 1)),
            snapshot: None,
        })
        .unwrap();
    }
    (tmp, dir, wal)
}

#[test]
fn segments_are_cut_when_full_and_named_by_sequence_and_first_index() {
    let (_tmp, dir, wal) = many_segments();
    let segments = segment::list(&dir).unwrap();
    assert!(segments.len() >= 10, "{} segments", segments.len());
    for (i, seg) in segments.iter().enumerate() {
        assert_eq!(seg.seq, i as u64);
        let len = data_len(&seg.path);
        let spans = record_spans(&seg.path);
        // Never over the limit, except a segment of a single batch.
        assert!(
            len <= 256 || spans.len() <= 4,
            "{:?} is {len} bytes",
            seg.path
        );
        let first_entry = scan(&fs::read(&seg.path).unwrap(), seg.seq)
            .records
            .into_iter()
            .find_map(|r| match r.record {
                Record::Entry(e) => Some(e.index),
                _ => None,
            });
        assert_eq!(first_entry, Some(seg.first_index), "{:?}", seg.path);
    }
    drop(wal);
    let (_, replayed) = reopen(&dir);
    assert_eq!(replayed.entries, entries(1..=40, 1));
    assert_eq!(replayed.hard_state, Some(hs(1, 39)));
}

#[test]
fn release_to_deletes_old_segments_and_replay_keeps_everything_needed() {
    let (_tmp, dir, mut wal) = many_segments();
    let before = segment::list(&dir).unwrap();

    // Without a snapshot mark nothing is released.
    wal.release_to(40).unwrap();
    assert_eq!(segment::list(&dir).unwrap(), before);

    wal.append(&WalBatch {
        snapshot: Some(mark(25, 1)),
        hard_state: Some(hs(1, 40)),
        entries: vec![],
    })
    .unwrap();
    let before = segment::list(&dir).unwrap();

    // Releasing below the mark keeps what holds entries above that index.
    wal.release_to(10).unwrap();
    let after = segment::list(&dir).unwrap();
    let keep_from = before.iter().rposition(|s| s.first_index <= 11).unwrap();
    assert!(keep_from > 0);
    assert_eq!(after, before[keep_from..].to_vec());

    // An index above the mark releases only up to the mark.
    wal.release_to(1000).unwrap();
    let after = segment::list(&dir).unwrap();
    let keep_from = before.iter().rposition(|s| s.first_index <= 26).unwrap();
    assert_eq!(after, before[keep_from..].to_vec());
    assert!(after[0].seq > 0 && after.len() < before.len());
    assert!(after.len() > 1, "the entries after the mark stay");
    drop(wal);

    let (mut wal, replayed) = reopen(&dir);
    assert_eq!(
        replayed,
        Replayed {
            metadata: META.to_vec(),
            snapshot: Some(mark(25, 1)),
            hard_state: Some(hs(1, 40)),
            entries: entries(26..=40, 1),
        }
    );
    assert_eq!(wal.last_index(), 40);

    // Release everything but the segment being written; replay still has the state.
    wal.append(&WalBatch {
        snapshot: Some(mark(40, 1)),
        ..WalBatch::default()
    })
    .unwrap();
    wal.release_to(40).unwrap();
    wal.append(&of_entries(vec![entry(41, 2)])).unwrap();
    drop(wal);
    let (_, replayed) = reopen(&dir);
    assert_eq!(
        replayed,
        Replayed {
            metadata: META.to_vec(),
            snapshot: Some(mark(40, 1)),
            hard_state: Some(hs(1, 40)),
            entries: vec![entry(41, 2)],
        }
    );
}

#[test]
fn release_keeps_entries_rewritten_after_a_cut() {
    // The log shrinks by a conflict after a segment was cut: release must go by the
    // segments' first indexes, not by their order alone.
    let (_tmp, dir, mut wal) = new_wal(tiny(390));
    wal.append(&of_entries(entries(1..=4, 1))).unwrap();
    wal.append(&of_entries(entries(5..=8, 1))).unwrap(); // cuts: starts at 5
    wal.append(&of_entries(entries(3..=6, 2))).unwrap(); // cuts: starts at 9
    wal.append(&of_entries(entries(7..=8, 2))).unwrap(); // cuts: starts at 7
    assert_eq!(
        file_names(&dir),
        vec![
            "0000000000000000-0000000000000001.wal",
            "0000000000000001-0000000000000005.wal",
            "0000000000000002-0000000000000009.wal",
            "0000000000000003-0000000000000007.wal",
        ]
    );
    wal.append(&WalBatch {
        snapshot: Some(mark(6, 2)),
        ..WalBatch::default()
    })
    .unwrap();
    wal.release_to(6).unwrap();
    assert_eq!(
        file_names(&dir),
        vec!["0000000000000003-0000000000000007.wal"]
    );
    drop(wal);
    let (_, replayed) = reopen(&dir);
    assert_eq!(replayed.snapshot, Some(mark(6, 2)));
    assert_eq!(replayed.entries, entries(7..=8, 2));
}

/// A log whose last segment ends with a batch of one entry (index 6); returns the span of
/// that last record.
fn log_ending_in_one_entry() -> (tempfile::TempDir, PathBuf, PathBuf, u64, u64) {
    let (tmp, dir, mut wal) = new_wal(opts());
    wal.append(&WalBatch {
        entries: entries(1..=3, 1),
        hard_state: Some(hs(1, 2)),
        snapshot: None,
    })
    .unwrap();
    wal.append(&WalBatch {
        entries: entries(4..=5, 1),
        hard_state: Some(hs(1, 4)),
        snapshot: None,
    })
    .unwrap();
    wal.append(&of_entries(vec![entry(6, 1)])).unwrap();
    drop(wal);
    let segment = segment_paths(&dir).pop().unwrap();
    let (start, end) = *record_spans(&segment).last().unwrap();
    assert_eq!(end, data_len(&segment));
    (tmp, dir, segment, start, end)
}

fn assert_repaired_and_appendable(dir: &Path, segment: &Path, start: u64, what: &str) {
    let (mut wal, replayed) = Wal::open(dir, opts()).unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(replayed.entries, entries(1..=5, 1), "{what}");
    assert_eq!(replayed.hard_state, Some(hs(1, 4)), "{what}");
    assert_eq!(wal.last_index(), 5, "{what}");
    assert_eq!(data_len(segment), start, "{what}");
    wal.append(&of_entries(vec![entry(6, 2)])).unwrap();
    drop(wal);
    let (_, replayed) = reopen(dir);
    let mut expected = entries(1..=5, 1);
    expected.push(entry(6, 2));
    assert_eq!(replayed.entries, expected, "{what}");
}

#[test]
fn a_tail_torn_at_any_byte_of_the_last_record_is_cut_off() {
    let (_tmp, dir, segment, start, end) = log_ending_in_one_entry();
    for cut in start..end {
        let (_copy, copy_dir) = copy_dir(&dir);
        let copy_segment = copy_dir.join(segment.file_name().unwrap());
        let file = OpenOptions::new().write(true).open(&copy_segment).unwrap();
        file.set_len(cut).unwrap();
        drop(file);
        assert_repaired_and_appendable(
            &copy_dir,
            &copy_segment,
            start,
            &format!("truncated at {cut}"),
        );
    }
}

#[test]
fn a_zero_filled_tail_is_cut_off() {
    let (_tmp, dir, segment, start, end) = log_ending_in_one_entry();
    for from in start..end {
        let (_copy, copy_dir) = copy_dir(&dir);
        let copy_segment = copy_dir.join(segment.file_name().unwrap());
        let mut bytes = fs::read(&copy_segment).unwrap();
        bytes[from as usize..].fill(0);
        // Also as a file system that extended the file but never wrote the data would.
        bytes.extend([0u8; 4096]);
        fs::write(&copy_segment, &bytes).unwrap();
        assert_repaired_and_appendable(
            &copy_dir,
            &copy_segment,
            start,
            &format!("zeroed from {from}"),
        );
    }
}

#[test]
fn random_garbage_after_the_last_record_is_a_torn_tail() {
    let (_tmp, dir, segment, start, _end) = log_ending_in_one_entry();
    let mut rng = Rng(7);
    for len in [1usize, 5, 9, 100, 5000] {
        let (_copy, copy_dir) = copy_dir(&dir);
        let copy_segment = copy_dir.join(segment.file_name().unwrap());
        let mut bytes = fs::read(&copy_segment).unwrap();
        bytes.truncate(start as usize);
        bytes.extend(rng.bytes(len));
        fs::write(&copy_segment, &bytes).unwrap();
        assert_repaired_and_appendable(&copy_dir, &copy_segment, start, &format!("{len} bytes"));
    }
}

#[test]
fn a_damaged_record_with_valid_records_after_it_is_corrupt() {
    let (_tmp, dir, mut wal) = new_wal(opts());
    for i in 1..=5 {
        wal.append(&WalBatch {
            entries: vec![entry(i, 1)],
            hard_state: Some(hs(1, i)),
            snapshot: None,
        })
        .unwrap();
    }
    drop(wal);
    let segment = segment_paths(&dir).remove(0);
    let spans = record_spans(&segment);
    // The metadata record, and the record of entry 2.
    for (start, end) in [spans[0], spans[3]] {
        for at in start..end {
            for flip in [0x01u8, 0x80, 0xff] {
                let (_copy, copy_dir) = copy_dir(&dir);
                let copy_segment = copy_dir.join(segment.file_name().unwrap());
                let mut bytes = fs::read(&copy_segment).unwrap();
                bytes[at as usize] ^= flip;
                fs::write(&copy_segment, &bytes).unwrap();
                let err = Wal::open(&copy_dir, opts()).unwrap_err();
                let (path, offset, reason) = corrupt_location(err);
                assert_eq!(path, copy_segment, "byte {at} ^ {flip:#x}");
                assert_eq!(offset, start, "byte {at} ^ {flip:#x}: {reason}");
                // Nothing was repaired.
                assert_eq!(fs::read(&copy_segment).unwrap(), bytes);
            }
        }
    }
}

#[test]
fn damage_in_a_segment_that_is_not_the_last_is_corrupt() {
    let (_tmp, dir, wal) = many_segments();
    drop(wal);
    let first = segment_paths(&dir).remove(0);
    let (last_start, last_end) = *record_spans(&first).last().unwrap();

    // A bad last record, which in the last segment would be a torn tail.
    let (_copy, copy) = copy_dir(&dir);
    let copy_first = copy.join(first.file_name().unwrap());
    let mut bytes = fs::read(&copy_first).unwrap();
    bytes[last_end as usize - 1] ^= 0x01;
    fs::write(&copy_first, &bytes).unwrap();
    let (path, offset, reason) = corrupt_location(Wal::open(&copy, opts()).unwrap_err());
    assert_eq!((path, offset), (copy_first.clone(), last_start));
    assert_eq!(
        reason,
        "checksum mismatch in a segment that is not the last"
    );

    // A truncated one.
    let (_copy, copy) = copy_dir(&dir);
    let copy_first = copy.join(first.file_name().unwrap());
    let file = OpenOptions::new().write(true).open(&copy_first).unwrap();
    file.set_len(last_end - 1).unwrap();
    drop(file);
    let (path, offset, _) = corrupt_location(Wal::open(&copy, opts()).unwrap_err());
    assert_eq!((path, offset), (copy_first, last_start));

    // A missing one.
    let (_copy, copy) = copy_dir(&dir);
    let names = file_names(&copy);
    fs::remove_file(copy.join(&names[3])).unwrap();
    let (path, offset, reason) = corrupt_location(Wal::open(&copy, opts()).unwrap_err());
    assert_eq!((path, offset), (copy.join(&names[4]), 0));
    assert_eq!(reason, "segment 0000000000000003 before it is missing");

    // Two with one number.
    let (_copy, copy) = copy_dir(&dir);
    let names = file_names(&copy);
    let twin = copy.join("0000000000000003-00000000000000ff.wal");
    fs::copy(copy.join(&names[3]), &twin).unwrap();
    let (path, offset, reason) = corrupt_location(Wal::open(&copy, opts()).unwrap_err());
    assert_eq!(offset, 0);
    assert!(path == twin || path == copy.join(&names[3]), "{path:?}");
    assert_eq!(reason, "two segments are numbered 0000000000000003");
}

#[test]
fn a_segment_whose_start_was_torn_is_removed() {
    let (_tmp, dir, mut wal) = new_wal(tiny(256));
    wal.append(&WalBatch {
        entries: entries(1..=2, 1),
        hard_state: Some(hs(1, 1)),
        snapshot: Some(mark(0, 0)),
    })
    .unwrap();
    assert_eq!(segment_paths(&dir).len(), 1);
    wal.append(&of_entries(entries(3..=4, 1))).unwrap();
    let paths = segment_paths(&dir);
    assert_eq!(paths.len(), 2, "the second batch started a segment");
    drop(wal);
    let second = paths[1].clone();
    let header_end = segment::split_header(scan(&fs::read(&second).unwrap(), 1).records)
        .unwrap()
        .header_end;

    for cut in 0..header_end {
        let (_copy, copy) = copy_dir(&dir);
        let copy_second = copy.join(second.file_name().unwrap());
        let file = OpenOptions::new().write(true).open(&copy_second).unwrap();
        file.set_len(cut).unwrap();
        drop(file);
        let (mut wal, replayed) = Wal::open(&copy, tiny(256)).unwrap();
        assert!(!copy_second.exists(), "cut at {cut}");
        assert_eq!(replayed.entries, entries(1..=2, 1), "cut at {cut}");
        assert_eq!(replayed.snapshot, Some(mark(0, 0)), "cut at {cut}");
        assert_eq!(replayed.hard_state, Some(hs(1, 1)), "cut at {cut}");
        wal.append(&of_entries(entries(3..=4, 2))).unwrap();
        assert!(copy_second.exists(), "cut at {cut}: started again");
        drop(wal);
        let (_, replayed) = reopen(&copy);
        let mut expected = entries(1..=2, 1);
        expected.extend(entries(3..=4, 2));
        assert_eq!(replayed.entries, expected, "cut at {cut}");
    }
}

#[test]
fn the_first_segment_torn_in_its_header_is_corrupt() {
    let (_tmp, dir, wal) = new_wal(opts());
    drop(wal);
    let first = segment_paths(&dir).remove(0);
    fs::write(&first, b"").unwrap();
    let (path, offset, reason) = corrupt_location(Wal::open(&dir, opts()).unwrap_err());
    assert_eq!((path, offset), (first, 0));
    assert_eq!(reason, "the segment ends inside its header");
}

/// The state a correct log must replay, kept beside it.
#[derive(Default)]
struct Model {
    snapshot: Option<SnapshotMark>,
    hard_state: Option<HardState>,
    entries: Vec<EntryRecord>,
}

impl Model {
    fn last_index(&self) -> u64 {
        self.entries
            .last()
            .map(|e| e.index)
            .or(self.snapshot.as_ref().map(|m| m.index))
            .unwrap_or(0)
    }

    fn apply(&mut self, batch: &WalBatch) {
        if let Some(mark) = &batch.snapshot {
            self.entries.retain(|e| e.index > mark.index);
            self.snapshot = Some(mark.clone());
        }
        for e in &batch.entries {
            self.entries.retain(|old| old.index < e.index);
            self.entries.push(e.clone());
        }
        if batch.hard_state.is_some() {
            self.hard_state = batch.hard_state;
        }
    }

    fn replayed(&self) -> Replayed {
        Replayed {
            metadata: META.to_vec(),
            snapshot: self.snapshot.clone(),
            hard_state: self.hard_state,
            entries: self.entries.clone(),
        }
    }
}

#[test]
fn every_acknowledged_batch_is_replayed() {
    let (_tmp, dir, mut wal) = new_wal(tiny(700));
    let mut model = Model::default();
    let mut rng = Rng(0x5eed);
    let mut term = 1;
    let (mut rewrites, mut released) = (0, 0);
    for step in 0..400 {
        let mut batch = WalBatch::default();
        let snapshot_index = model.snapshot.as_ref().map_or(0, |m| m.index);
        if rng.below(10) == 0 && model.last_index() > snapshot_index {
            let index = snapshot_index + 1 + rng.below(model.last_index() - snapshot_index);
            batch.snapshot = Some(mark(index, term));
        }
        let floor = batch.snapshot.as_ref().map_or(snapshot_index, |m| m.index);
        let last = model.last_index().max(floor);
        // Mostly appends after the last index; sometimes a rewrite of the last few.
        let from = if rng.below(5) == 0 {
            term += 1;
            (last + 1).saturating_sub(rng.below(4)).max(floor + 1)
        } else {
            last + 1
        };
        let count = rng.below(6);
        if count > 0 && from <= model.last_index() {
            rewrites += 1;
        }
        for index in from..from + count {
            let len = rng.below(120) as usize;
            batch.entries.push(EntryRecord {
                index,
                term,
                data: rng.bytes(len),
            });
        }
        if rng.below(2) == 0 {
            batch.hard_state = Some(hs(term, rng.below(last + 1)));
        }
        wal.append(&batch).unwrap();
        model.apply(&batch);
        assert_eq!(wal.last_index(), model.last_index(), "step {step}");

        if rng.below(8) == 0 {
            let to = rng.below(model.last_index() + 1);
            let before = wal.sealed.len();
            wal.release_to(to).unwrap();
            released += before - wal.sealed.len();
        }
        if rng.below(10) == 0 {
            // A crash right now: the directory as it is, the WAL still open.
            let (_copy, copy) = copy_dir(&dir);
            let (_, replayed) = reopen(&copy);
            assert_eq!(replayed, model.replayed(), "crash image at step {step}");
        }
        if rng.below(25) == 0 {
            drop(wal);
            let (reopened, replayed) = Wal::open(&dir, tiny(700)).unwrap();
            assert_eq!(replayed, model.replayed(), "reopen at step {step}");
            assert_eq!(reopened.last_index(), model.last_index());
            wal = reopened;
        }
    }
    drop(wal);
    assert_eq!(reopen(&dir).1, model.replayed());
    assert!(segment_paths(&dir).len() > 1);
    // The run did exercise what it is meant to.
    assert!(rewrites > 20, "{rewrites} rewrites");
    assert!(released > 5, "{released} segments released");
}

#[test]
fn a_failed_write_poisons_the_log_and_reopening_recovers() {
    let (_tmp, dir, mut wal) = new_wal(opts());
    wal.append(&of_entries(entries(1..=2, 1))).unwrap();
    // Swap in a read-only handle: the next write fails as a full or broken disk would.
    let path = segment_paths(&dir).remove(0);
    wal.file = File::open(&path).unwrap();
    let err = wal.append(&of_entries(vec![entry(3, 1)])).unwrap_err();
    assert!(
        matches!(&err, WalError::Io { op: "write", path: p, .. } if *p == path),
        "{err:?}"
    );
    assert!(matches!(
        wal.append(&of_entries(vec![entry(3, 1)])),
        Err(WalError::Poisoned)
    ));
    assert!(matches!(wal.release_to(1), Err(WalError::Poisoned)));
    drop(wal);
    let (mut wal, replayed) = reopen(&dir);
    assert_eq!(replayed.entries, entries(1..=2, 1));
    wal.append(&of_entries(vec![entry(3, 1)])).unwrap();
}

#[test]
fn create_and_open_report_what_is_there() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("a").join("wal");
    assert!(!Wal::exists(&dir));
    assert!(matches!(
        Wal::open(&dir, opts()),
        Err(WalError::NotFound(p)) if p == dir
    ));
    fs::create_dir_all(&dir).unwrap();
    // A first segment whose creation never finished does not count as a log.
    fs::write(dir.join("0000000000000000-0000000000000001.wal.tmp"), b"x").unwrap();
    assert!(!Wal::exists(&dir));
    assert!(matches!(
        Wal::open(&dir, opts()),
        Err(WalError::NotFound(p)) if p == dir
    ));

    let wal = Wal::create(&dir, META, opts()).unwrap();
    assert!(Wal::exists(&dir));
    assert!(!dir
        .join("0000000000000000-0000000000000001.wal.tmp")
        .exists());
    assert!(matches!(
        Wal::create(&dir, META, opts()),
        Err(WalError::AlreadyExists(p)) if p == dir
    ));
    drop(wal);
    assert_eq!(reopen(&dir).1.metadata, META);
}

/// Checks what a successful replay promises, whatever the files held.
fn assert_well_formed(replayed: &Replayed) {
    let first = replayed.snapshot.as_ref().map_or(1, |m| m.index + 1);
    for (i, e) in replayed.entries.iter().enumerate() {
        assert_eq!(e.index, first + i as u64);
    }
}

#[test]
fn garbage_files_never_panic() {
    let mut rng = Rng(0xdead_beef);
    for _ in 0..300 {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let segments = 1 + rng.below(3);
        for seq in 0..segments {
            let len = match rng.below(4) {
                0 => rng.below(10),
                1 => rng.below(100),
                _ => rng.below(3000),
            } as usize;
            let mut bytes = rng.bytes(len);
            if rng.below(2) == 0 {
                // A valid start, so decoding gets further than the first record.
                let mut valid = Vec::new();
                segment::encode_header(&mut Encoder::new(&mut valid, seq, 0), META, None, None)
                    .unwrap();
                valid.append(&mut bytes);
                bytes = valid;
            }
            let name = Segment::new(dir, seq, 1 + rng.below(3)).path;
            fs::write(name, &bytes).unwrap();
        }
        if let Ok((_, replayed)) = Wal::open(dir, opts()) {
            assert_well_formed(&replayed);
        }
    }
}

#[test]
fn damaged_logs_never_panic() {
    let (_tmp, dir, wal) = many_segments();
    drop(wal);
    let mut rng = Rng(42);
    for round in 0..200 {
        let (_copy, copy) = copy_dir(&dir);
        let paths = segment_paths(&copy);
        for _ in 0..1 + rng.below(4) {
            let path = &paths[rng.below(paths.len() as u64) as usize];
            let mut bytes = fs::read(path).unwrap();
            if bytes.is_empty() {
                continue;
            }
            match rng.below(3) {
                0 => {
                    let at = rng.below(bytes.len() as u64) as usize;
                    bytes[at] = rng.next() as u8;
                }
                1 => bytes.truncate(rng.below(bytes.len() as u64) as usize),
                _ => {
                    let len = rng.below(64) as usize;
                    bytes.extend(rng.bytes(len));
                }
            }
            fs::write(path, &bytes).unwrap();
        }
        match Wal::open(&copy, opts()) {
            Ok((_, replayed)) => assert_well_formed(&replayed),
            Err(WalError::Corrupt { .. }) => {}
            Err(other) => panic!("round {round}: {other:?}"),
        }
    }
}

#[test]
fn preallocated_space_is_not_a_torn_tail_and_sealed_segments_have_none() {
    let (_tmp, dir, mut wal) = new_wal(tiny(600));
    for i in 1..=20u64 {
        wal.append(&of_entries(vec![entry(i, 1)])).unwrap();
    }
    drop(wal);
    let paths = segment_paths(&dir);
    assert!(paths.len() > 1, "{paths:?}");
    // Sealed segments end at their last record; the active one is allocated ahead.
    for p in &paths[..paths.len() - 1] {
        assert_eq!(fs::metadata(p).unwrap().len(), data_len(p), "{p:?}");
    }
    let active = paths.last().unwrap();
    let allocated = fs::metadata(active).unwrap().len();
    assert!(
        allocated > data_len(active),
        "{allocated} vs {}",
        data_len(active)
    );
    // Reopening neither cuts nor reports the zeros, and appends go after the last record.
    let (mut wal, replayed) = reopen(&dir);
    assert_eq!(replayed.entries, entries(1..=20, 1));
    assert_eq!(fs::metadata(active).unwrap().len(), allocated);
    wal.append(&of_entries(vec![entry(21, 1)])).unwrap();
    drop(wal);
    assert_eq!(reopen(&dir).1.entries, entries(1..=21, 1));
}

/// Found by the `wal_replay` fuzz target: a log whose oldest segment starts past the
/// latest snapshot mark (entries before it missing) used to open as empty, take an
/// append, and then fail every later open. It is refused at the first open.
#[test]
fn an_oldest_segment_not_covered_by_a_mark_is_corrupt() {
    let (_tmp, dir, wal) = new_wal(opts());
    drop(wal);
    let [path] = segment_paths(&dir).try_into().unwrap();
    fs::rename(&path, Segment::new(&dir, 0, 4).path).unwrap();
    let (_, offset, reason) = corrupt_location(Wal::open(&dir, opts()).unwrap_err());
    assert_eq!(offset, 0);
    assert!(reason.contains("starts at index 4"), "{reason}");
}
