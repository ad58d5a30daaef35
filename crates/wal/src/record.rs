//! Encoding and decoding of the records described in the crate docs ("Format on disk"),
//! and the scan of a segment's bytes that tells a torn tail from corruption. No I/O.

use crate::error::WalError;
use crate::types::{EntryRecord, HardState, SnapshotMark};

/// Bytes before a record's payload: length, type, checksum.
pub(crate) const FRAME_HEADER_LEN: usize = 9;

const TYPE_METADATA: u8 = 1;
const TYPE_ENTRY: u8 = 2;
const TYPE_HARD_STATE: u8 = 3;
const TYPE_SNAPSHOT: u8 = 4;

const FLAG_SNAPSHOT: u8 = 1;
const FLAG_HARD_STATE: u8 = 2;

/// Which records follow a segment's Metadata record to complete its header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct HeaderFlags {
    pub snapshot: bool,
    pub hard_state: bool,
}

/// One decoded record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Record {
    Metadata { flags: HeaderFlags, data: Vec<u8> },
    Entry(EntryRecord),
    HardState(HardState),
    Snapshot(SnapshotMark),
}

/// A decoded record and the bytes `offset..end` it took in its segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Located {
    pub offset: u64,
    pub end: u64,
    pub record: Record,
}

/// Encoded size of an entry record.
pub(crate) fn entry_len(entry: &EntryRecord) -> u64 {
    (FRAME_HEADER_LEN + 16 + entry.data.len()) as u64
}

/// Encoded size of a hard state record.
pub(crate) fn hard_state_len() -> u64 {
    (FRAME_HEADER_LEN + 24) as u64
}

/// Encoded size of a snapshot record.
pub(crate) fn snapshot_len(mark: &SnapshotMark) -> u64 {
    (FRAME_HEADER_LEN + 16 + mark.data.len()) as u64
}

/// Appends records to a buffer bound for a known place in a known segment (a record's
/// checksum covers both).
pub(crate) struct Encoder<'b> {
    buf: &'b mut Vec<u8>,
    seq: u64,
    base: u64,
}

impl<'b> Encoder<'b> {
    /// An encoder appending to `buf`, whose byte `i` lands at offset `base + i` of the
    /// segment numbered `seq`.
    pub fn new(buf: &'b mut Vec<u8>, seq: u64, base: u64) -> Self {
        Encoder { buf, seq, base }
    }

    pub fn metadata(&mut self, flags: HeaderFlags, data: &[u8]) -> Result<(), WalError> {
        let mut bits = 0;
        if flags.snapshot {
            bits |= FLAG_SNAPSHOT;
        }
        if flags.hard_state {
            bits |= FLAG_HARD_STATE;
        }
        self.record(TYPE_METADATA, &[&[bits], data])
    }

    pub fn entry(&mut self, entry: &EntryRecord) -> Result<(), WalError> {
        self.record(
            TYPE_ENTRY,
            &[
                &entry.index.to_le_bytes(),
                &entry.term.to_le_bytes(),
                &entry.data,
            ],
        )
    }

    pub fn hard_state(&mut self, hs: &HardState) -> Result<(), WalError> {
        self.record(
            TYPE_HARD_STATE,
            &[
                &hs.term.to_le_bytes(),
                &hs.vote.to_le_bytes(),
                &hs.commit.to_le_bytes(),
            ],
        )
    }

    pub fn snapshot(&mut self, mark: &SnapshotMark) -> Result<(), WalError> {
        self.record(
            TYPE_SNAPSHOT,
            &[
                &mark.index.to_le_bytes(),
                &mark.term.to_le_bytes(),
                &mark.data,
            ],
        )
    }

    fn record(&mut self, kind: u8, payload: &[&[u8]]) -> Result<(), WalError> {
        let len: usize = payload.iter().map(|part| part.len()).sum();
        let len32 = u32::try_from(len).map_err(|_| WalError::RecordTooLarge { len })?;
        let offset = self.base + self.buf.len() as u64;
        let mut crc = checksum_prefix(self.seq, offset, kind);
        for part in payload {
            crc.update(part);
        }
        self.buf.reserve(FRAME_HEADER_LEN + len);
        self.buf.extend_from_slice(&len32.to_le_bytes());
        self.buf.push(kind);
        self.buf.extend_from_slice(&crc.finalize().to_le_bytes());
        for part in payload {
            self.buf.extend_from_slice(part);
        }
        Ok(())
    }
}

/// A checksum over a record's place and type, to be completed with its payload.
fn checksum_prefix(seq: u64, offset: u64, kind: u8) -> crc32fast::Hasher {
    let mut crc = crc32fast::Hasher::new();
    crc.update(&seq.to_le_bytes());
    crc.update(&offset.to_le_bytes());
    crc.update(&[kind]);
    crc
}

/// How a segment's bytes end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ScanEnd {
    /// The last record ends exactly at the end of the bytes.
    Clean,
    /// A bad record at `offset` with no valid record after it: what a crash during the
    /// last write leaves behind.
    Torn { offset: u64, reason: String },
    /// Damage a crash cannot explain: a bad record with a valid one after it, a record
    /// whose checksum holds but whose payload is malformed, or a tail too garbled to rule
    /// out valid records in it within [`SEARCH_BUDGET`].
    Corrupt { offset: u64, reason: String },
}

/// The records of one segment, in order, and how its bytes end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Scan {
    pub records: Vec<Located>,
    pub end: ScanEnd,
}

impl Scan {
    /// Where the last good record ends.
    pub fn valid_end(&self) -> u64 {
        self.records.last().map_or(0, |r| r.end)
    }
}

/// Decodes every record of the segment numbered `seq`. Never panics, whatever the bytes.
pub(crate) fn scan(bytes: &[u8], seq: u64) -> Scan {
    scan_with_budget(bytes, seq, SEARCH_BUDGET)
}

fn scan_with_budget(bytes: &[u8], seq: u64, search_budget: usize) -> Scan {
    let mut records = Vec::new();
    let mut pos = 0usize;
    let end = loop {
        if pos == bytes.len() {
            break ScanEnd::Clean;
        }
        let frame = match frame_at(bytes, seq, pos) {
            Ok(frame) => frame,
            Err(reason) => {
                let offset = pos as u64;
                break match next_frame(bytes, seq, pos + 1, search_budget) {
                    Search::Found(next) => ScanEnd::Corrupt {
                        offset,
                        reason: format!("{reason}, yet a valid record follows at offset {next}"),
                    },
                    Search::NoneFound => ScanEnd::Torn { offset, reason },
                    Search::GaveUp => ScanEnd::Corrupt {
                        offset,
                        reason: format!(
                            "{reason}, and the {} bytes after it are too garbled to rule out valid records in them",
                            bytes.len() - pos
                        ),
                    },
                };
            }
        };
        match parse(frame.kind, frame.payload) {
            Ok(record) => records.push(Located {
                offset: pos as u64,
                end: frame.end as u64,
                record,
            }),
            Err(reason) => {
                break ScanEnd::Corrupt {
                    offset: pos as u64,
                    reason,
                }
            }
        }
        pos = frame.end;
    };
    Scan { records, end }
}

struct Frame<'a> {
    kind: u8,
    crc: u32,
    payload: &'a [u8],
    end: usize,
}

/// The record framed at `pos`, if its length, type and checksum hold.
fn frame_at(bytes: &[u8], seq: u64, pos: usize) -> Result<Frame<'_>, String> {
    let frame = frame_unchecked(bytes, pos)?;
    let mut crc = checksum_prefix(seq, pos as u64, frame.kind);
    crc.update(frame.payload);
    if crc.finalize() != frame.crc {
        return Err("checksum mismatch".to_string());
    }
    Ok(frame)
}

/// The record framed at `pos`, if its length and type hold; the checksum is not checked.
fn frame_unchecked(bytes: &[u8], pos: usize) -> Result<Frame<'_>, String> {
    let rest = bytes.get(pos..).unwrap_or_default();
    let incomplete = || format!("incomplete record header ({} bytes left)", rest.len());
    let Some((len, after_len)) = rest.split_first_chunk::<4>() else {
        return Err(incomplete());
    };
    let Some((&kind, after_kind)) = after_len.split_first() else {
        return Err(incomplete());
    };
    let Some((crc, rest)) = after_kind.split_first_chunk::<4>() else {
        return Err(incomplete());
    };
    if !(TYPE_METADATA..=TYPE_SNAPSHOT).contains(&kind) {
        return Err(format!("unknown record type {kind}"));
    }
    let len = u32::from_le_bytes(*len) as usize;
    let Some(payload) = rest.get(..len) else {
        return Err(format!(
            "record length {len} runs past the end of the file ({} bytes left)",
            rest.len()
        ));
    };
    Ok(Frame {
        kind,
        crc: u32::from_le_bytes(*crc),
        payload,
        end: pos + FRAME_HEADER_LEN + len,
    })
}

/// How many payload bytes the search for a valid record after a bad one may checksum
/// (some 50 ms in a release build). Torn tails, zeroed tails and real damage need a tiny
/// fraction of it; only a tail of several MiB of random bytes, where many offsets claim
/// records megabytes long, runs out, and is then reported as corrupt rather than cut.
pub(crate) const SEARCH_BUDGET: usize = 1 << 30;

enum Search {
    Found(usize),
    NoneFound,
    GaveUp,
}

/// The first offset at or after `from` where a valid record is framed, checksumming at
/// most `budget` payload bytes to find it.
fn next_frame(bytes: &[u8], seq: u64, from: usize, mut budget: usize) -> Search {
    for pos in from..bytes.len() {
        // Cheap rejections first: a zeroed tail fails on the type, most others on the length.
        let Ok(frame) = frame_unchecked(bytes, pos) else {
            continue;
        };
        budget = match budget.checked_sub(frame.payload.len()) {
            Some(left) => left,
            None => return Search::GaveUp,
        };
        if frame_at(bytes, seq, pos).is_ok() {
            return Search::Found(pos);
        }
    }
    Search::NoneFound
}

fn parse(kind: u8, payload: &[u8]) -> Result<Record, String> {
    match kind {
        TYPE_METADATA => {
            let Some((&bits, data)) = payload.split_first() else {
                return Err("metadata record without flags".to_string());
            };
            if bits & !(FLAG_SNAPSHOT | FLAG_HARD_STATE) != 0 {
                return Err(format!("unknown metadata flags {bits:#04x}"));
            }
            Ok(Record::Metadata {
                flags: HeaderFlags {
                    snapshot: bits & FLAG_SNAPSHOT != 0,
                    hard_state: bits & FLAG_HARD_STATE != 0,
                },
                data: data.to_vec(),
            })
        }
        TYPE_ENTRY => {
            let (index, term, data) = index_term_data(payload, "entry")?;
            Ok(Record::Entry(EntryRecord {
                index,
                term,
                data: data.to_vec(),
            }))
        }
        TYPE_HARD_STATE => {
            let mut rest = payload;
            match (
                take_u64(&mut rest),
                take_u64(&mut rest),
                take_u64(&mut rest),
            ) {
                (Some(term), Some(vote), Some(commit)) if rest.is_empty() => {
                    Ok(Record::HardState(HardState { term, vote, commit }))
                }
                _ => Err(format!(
                    "hard state record of {} bytes, not 24",
                    payload.len()
                )),
            }
        }
        TYPE_SNAPSHOT => {
            let (index, term, data) = index_term_data(payload, "snapshot")?;
            Ok(Record::Snapshot(SnapshotMark {
                index,
                term,
                data: data.to_vec(),
            }))
        }
        _ => Err(format!("unknown record type {kind}")),
    }
}

fn index_term_data<'a>(payload: &'a [u8], what: &str) -> Result<(u64, u64, &'a [u8]), String> {
    let mut rest = payload;
    match (take_u64(&mut rest), take_u64(&mut rest)) {
        (Some(index), Some(term)) => Ok((index, term, rest)),
        _ => Err(format!(
            "{what} record of {} bytes, shorter than its index and term",
            payload.len()
        )),
    }
}

fn take_u64(bytes: &mut &[u8]) -> Option<u64> {
    let (head, rest) = bytes.split_first_chunk::<8>()?;
    *bytes = rest;
    Some(u64::from_le_bytes(*head))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64, data: &[u8]) -> EntryRecord {
        EntryRecord {
            index,
            term,
            data: data.to_vec(),
        }
    }

    fn encode_all(base: u64) -> Vec<u8> {
        let mut buf = Vec::new();
        let mut enc = Encoder::new(&mut buf, 0, base);
        enc.metadata(
            HeaderFlags {
                snapshot: true,
                hard_state: false,
            },
            b"meta",
        )
        .unwrap();
        enc.snapshot(&SnapshotMark {
            index: 4,
            term: 2,
            data: b"conf".to_vec(),
        })
        .unwrap();
        enc.entry(&entry(5, 2, b"five")).unwrap();
        enc.hard_state(&HardState {
            term: 2,
            vote: 1,
            commit: 5,
        })
        .unwrap();
        buf
    }

    #[test]
    fn records_round_trip_with_their_offsets() {
        let bytes = encode_all(0);
        let scan = scan(&bytes, 0);
        assert_eq!(scan.end, ScanEnd::Clean);
        let offsets: Vec<(u64, u64)> = scan.records.iter().map(|r| (r.offset, r.end)).collect();
        assert_eq!(offsets, vec![(0, 14), (14, 43), (43, 72), (72, 105)]);
        assert_eq!(scan.valid_end(), bytes.len() as u64);
        let records: Vec<Record> = scan.records.into_iter().map(|r| r.record).collect();
        assert_eq!(
            records,
            vec![
                Record::Metadata {
                    flags: HeaderFlags {
                        snapshot: true,
                        hard_state: false
                    },
                    data: b"meta".to_vec()
                },
                Record::Snapshot(SnapshotMark {
                    index: 4,
                    term: 2,
                    data: b"conf".to_vec()
                }),
                Record::Entry(entry(5, 2, b"five")),
                Record::HardState(HardState {
                    term: 2,
                    vote: 1,
                    commit: 5
                }),
            ]
        );
    }

    #[test]
    fn encoded_lengths_match_the_encoder() {
        let e = entry(1, 1, b"abc");
        let mark = SnapshotMark {
            index: 1,
            term: 1,
            data: b"xy".to_vec(),
        };
        let mut buf = Vec::new();
        Encoder::new(&mut buf, 0, 0).entry(&e).unwrap();
        assert_eq!(buf.len() as u64, entry_len(&e));
        buf.clear();
        Encoder::new(&mut buf, 0, 0).snapshot(&mark).unwrap();
        assert_eq!(buf.len() as u64, snapshot_len(&mark));
        buf.clear();
        Encoder::new(&mut buf, 0, 0)
            .hard_state(&HardState::default())
            .unwrap();
        assert_eq!(buf.len() as u64, hard_state_len());
    }

    #[test]
    fn a_record_is_only_valid_at_the_offset_it_was_written_for() {
        let mut bytes = vec![0u8; 3];
        // Encoded for offset 0, but placed at offset 3.
        bytes.extend(encode_all(0));
        let scan = scan(&bytes, 0);
        assert!(scan.records.is_empty());
        assert_eq!(
            scan.end,
            ScanEnd::Torn {
                offset: 0,
                reason: "unknown record type 0".to_string()
            }
        );
    }

    #[test]
    fn a_record_is_only_valid_in_the_segment_it_was_written_for() {
        let mut buf = Vec::new();
        Encoder::new(&mut buf, 3, 0)
            .entry(&entry(1, 1, b"x"))
            .unwrap();
        assert_eq!(scan(&buf, 3).end, ScanEnd::Clean);
        assert_eq!(
            scan(&buf, 4).end,
            ScanEnd::Torn {
                offset: 0,
                reason: "checksum mismatch".to_string()
            }
        );
    }

    #[test]
    fn a_tail_too_garbled_to_search_is_corrupt_not_torn() {
        let mut bytes = encode_all(0);
        let good = bytes.len();
        // Every offset claims a record of the type and length that most cost to check.
        for _ in 0..64 {
            bytes.extend((1000u32).to_le_bytes());
            bytes.push(TYPE_ENTRY);
            bytes.extend([0xab; 4]);
        }
        bytes.extend([0xcd; 1000]);
        assert!(matches!(
            scan_with_budget(&bytes, 0, usize::MAX).end,
            ScanEnd::Torn { offset, .. } if offset == good as u64
        ));
        match scan_with_budget(&bytes, 0, 10_000).end {
            ScanEnd::Corrupt { offset, reason } => {
                assert_eq!(offset, good as u64);
                assert_eq!(
                    reason,
                    "checksum mismatch, and the 1576 bytes after it are too garbled to rule out valid records in them"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn zeros_are_a_torn_tail_not_a_record() {
        let mut bytes = encode_all(0);
        let good = bytes.len() as u64;
        bytes.extend([0u8; 100]);
        let scan = scan(&bytes, 0);
        assert_eq!(scan.records.len(), 4);
        assert_eq!(
            scan.end,
            ScanEnd::Torn {
                offset: good,
                reason: "unknown record type 0".to_string()
            }
        );
    }

    #[test]
    fn a_bad_record_before_a_good_one_is_corrupt() {
        let mut bytes = encode_all(0);
        bytes[20] ^= 0x01; // inside the snapshot record at 14..43
        let scan = scan(&bytes, 0);
        assert_eq!(scan.records.len(), 1);
        assert_eq!(
            scan.end,
            ScanEnd::Corrupt {
                offset: 14,
                reason: "checksum mismatch, yet a valid record follows at offset 43".to_string()
            }
        );
    }

    #[test]
    fn a_checksummed_but_malformed_payload_is_corrupt() {
        let mut buf = Vec::new();
        Encoder::new(&mut buf, 0, 0)
            .record(TYPE_HARD_STATE, &[b"short"])
            .unwrap();
        assert_eq!(
            scan(&buf, 0).end,
            ScanEnd::Corrupt {
                offset: 0,
                reason: "hard state record of 5 bytes, not 24".to_string()
            }
        );
    }

    #[test]
    fn truncated_headers_and_payloads_are_torn() {
        let bytes = encode_all(0);
        for cut in 73..bytes.len() {
            let scan = scan(&bytes[..cut], 0);
            assert_eq!(scan.records.len(), 3, "cut at {cut}");
            match scan.end {
                ScanEnd::Torn { offset, .. } => assert_eq!(offset, 72, "cut at {cut}"),
                other => panic!("cut at {cut}: {other:?}"),
            }
        }
    }
}
