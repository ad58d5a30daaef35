//! Segment files: their names, and the header every segment opens with.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::error::WalError;
use crate::record::{Encoder, HeaderFlags, Located, Record};
use crate::types::{HardState, SnapshotMark};

const SUFFIX: &str = ".wal";

/// A segment file's identity, as its name `<seq:016x>-<first_index:016x>.wal` spells it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Segment {
    /// Position in the log, counting from 0 with no holes.
    pub seq: u64,
    /// The log's last index + 1 when the segment was started.
    pub first_index: u64,
    /// The file.
    pub path: PathBuf,
}

impl Segment {
    pub fn new(dir: &Path, seq: u64, first_index: u64) -> Segment {
        Segment {
            seq,
            first_index,
            path: dir.join(file_name(seq, first_index)),
        }
    }
}

fn file_name(seq: u64, first_index: u64) -> String {
    format!("{seq:016x}-{first_index:016x}{SUFFIX}")
}

/// The `(seq, first_index)` a segment file name spells, if it is one.
fn parse_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(SUFFIX)?;
    let (seq, first_index) = stem.split_once('-')?;
    let seq = u64::from_str_radix(seq, 16).ok()?;
    let first_index = u64::from_str_radix(first_index, 16).ok()?;
    // Only the exact spelling we write: no signs, no upper case, no short forms.
    (file_name(seq, first_index) == name).then_some((seq, first_index))
}

/// The segment files in `dir`, by sequence number. Other files are ignored. A missing
/// directory holds no segments.
pub(crate) fn list(dir: &Path) -> Result<Vec<Segment>, WalError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(WalError::Io {
                op: "read directory",
                path: dir.to_path_buf(),
                source: e,
            })
        }
    };
    let mut segments = Vec::new();
    for entry in entries {
        let entry = entry.map_err(crate::error::io_error("read directory", dir))?;
        let name = entry.file_name();
        if let Some((seq, first_index)) = name.to_str().and_then(parse_name) {
            segments.push(Segment {
                seq,
                first_index,
                path: entry.path(),
            });
        }
    }
    segments.sort_by_key(|s| s.seq);
    Ok(segments)
}

/// What a segment's header holds: the log's metadata and its state when the segment was
/// started.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Header {
    pub metadata: Vec<u8>,
    pub snapshot: Option<SnapshotMark>,
    pub hard_state: Option<HardState>,
}

/// Encodes a segment header (it goes at offset 0).
pub(crate) fn encode_header(
    enc: &mut Encoder<'_>,
    metadata: &[u8],
    snapshot: Option<&SnapshotMark>,
    hard_state: Option<&HardState>,
) -> Result<(), WalError> {
    let flags = HeaderFlags {
        snapshot: snapshot.is_some(),
        hard_state: hard_state.is_some(),
    };
    enc.metadata(flags, metadata)?;
    if let Some(mark) = snapshot {
        enc.snapshot(mark)?;
    }
    if let Some(hs) = hard_state {
        enc.hard_state(hs)?;
    }
    Ok(())
}

/// Why a segment's records do not start with a whole header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum HeaderError {
    /// The records end before the header does: the segment's creation never finished.
    Incomplete,
    /// A record at `offset` is not the one the header needs there.
    Invalid { offset: u64, reason: String },
}

/// A segment's header, where it ends, and the records after it.
#[derive(Debug)]
pub(crate) struct SplitSegment {
    pub header: Header,
    pub header_end: u64,
    pub body: Vec<Located>,
}

/// Splits a segment's records into its header and its body.
pub(crate) fn split_header(records: Vec<Located>) -> Result<SplitSegment, HeaderError> {
    let mut records = records.into_iter();
    let first = records.next().ok_or(HeaderError::Incomplete)?;
    let Record::Metadata { flags, data } = first.record else {
        return Err(HeaderError::Invalid {
            offset: first.offset,
            reason: "a segment must start with a metadata record".to_string(),
        });
    };
    let mut header = Header {
        metadata: data,
        snapshot: None,
        hard_state: None,
    };
    let mut header_end = first.end;
    if flags.snapshot {
        let next = records.next().ok_or(HeaderError::Incomplete)?;
        let Record::Snapshot(mark) = next.record else {
            return Err(HeaderError::Invalid {
                offset: next.offset,
                reason: "the segment header lacks the snapshot mark its flags announce".to_string(),
            });
        };
        header.snapshot = Some(mark);
        header_end = next.end;
    }
    if flags.hard_state {
        let next = records.next().ok_or(HeaderError::Incomplete)?;
        let Record::HardState(hs) = next.record else {
            return Err(HeaderError::Invalid {
                offset: next.offset,
                reason: "the segment header lacks the hard state its flags announce".to_string(),
            });
        };
        header.hard_state = Some(hs);
        header_end = next.end;
    }
    Ok(SplitSegment {
        header,
        header_end,
        body: records.collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::scan;

    #[test]
    fn names_round_trip_and_foreign_names_are_ignored() {
        assert_eq!(file_name(1, 0x2a), "0000000000000001-000000000000002a.wal");
        assert_eq!(
            parse_name("0000000000000001-000000000000002a.wal"),
            Some((1, 0x2a))
        );
        for foreign in [
            "0000000000000001-000000000000002A.wal",
            "1-2a.wal",
            "0000000000000001-000000000000002a.wal.tmp",
            "0000000000000001_000000000000002a.wal",
            "+000000000000001-000000000000002a.wal",
            "notes.txt",
        ] {
            assert_eq!(parse_name(foreign), None, "{foreign}");
        }
    }

    #[test]
    fn list_sorts_by_sequence_and_skips_other_files() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "000000000000000a-0000000000000010.wal",
            "0000000000000002-0000000000000001.wal",
            "0000000000000003-0000000000000001.wal.tmp",
            "README",
        ] {
            fs::write(dir.path().join(name), b"").unwrap();
        }
        let seqs: Vec<(u64, u64)> = list(dir.path())
            .unwrap()
            .iter()
            .map(|s| (s.seq, s.first_index))
            .collect();
        assert_eq!(seqs, vec![(2, 1), (10, 16)]);
        assert_eq!(list(&dir.path().join("missing")).unwrap(), Vec::new());
    }

    #[test]
    fn header_splits_from_the_body() {
        let mark = SnapshotMark {
            index: 3,
            term: 1,
            data: b"c".to_vec(),
        };
        let hs = HardState {
            term: 1,
            vote: 2,
            commit: 3,
        };
        let mut buf = Vec::new();
        let mut enc = Encoder::new(&mut buf, 0, 0);
        encode_header(&mut enc, b"m", Some(&mark), Some(&hs)).unwrap();
        let header_len = buf.len() as u64;
        let entry = crate::EntryRecord {
            index: 4,
            term: 1,
            data: vec![],
        };
        Encoder::new(&mut buf, 0, 0).entry(&entry).unwrap();

        let split = split_header(scan(&buf, 0).records).unwrap();
        assert_eq!(
            split.header,
            Header {
                metadata: b"m".to_vec(),
                snapshot: Some(mark),
                hard_state: Some(hs),
            }
        );
        assert_eq!(split.header_end, header_len);
        assert_eq!(split.body.len(), 1);
        assert_eq!(split.body[0].record, Record::Entry(entry));

        // Cut inside the hard state record: the header is incomplete.
        let torn = scan(&buf[..header_len as usize - 1], 0);
        assert_eq!(
            split_header(torn.records).unwrap_err(),
            HeaderError::Incomplete
        );
    }

    #[test]
    fn a_segment_not_opening_with_metadata_is_invalid() {
        let mut buf = Vec::new();
        Encoder::new(&mut buf, 0, 0)
            .hard_state(&HardState::default())
            .unwrap();
        assert_eq!(
            split_header(scan(&buf, 0).records).unwrap_err(),
            HeaderError::Invalid {
                offset: 0,
                reason: "a segment must start with a metadata record".to_string()
            }
        );
    }
}
