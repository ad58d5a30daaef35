//! Replay of a WAL directory holding whatever segment files the input describes
//! (`Wal::open`: segment names, record framing and checksums, record payloads, segment
//! headers, the index rules, torn-tail repair). Opening never panics; a WAL that opens
//! reopens to the same replay (its repair is durable and done once), and takes an append.
//!
//! Input: a control byte (bits 0-1: 1 to 3 segments; bit 2: framed), then per segment a
//! first-index byte and, but for the last segment, a u16 LE length, then its bytes.
//! Raw segments are written as they are. Framed ones are read as records, each
//! `[op][len][payload]`: op bits 0-2 are the record type (0 and 5-7 are invalid), bit 5
//! widens the payload's first two bytes into u64 index and term, bit 6 writes the
//! payload unframed, bit 7 spoils the checksum; the target computes the rest (length,
//! checksum over segment number and offset), so the fuzzer gets past the checksums.
//! Set TMPDIR to a tmpfs (/dev/shm): opening a WAL fsyncs.
#![no_main]

use cairn_wal::{EntryRecord, Wal, WalBatch, WalOptions};
use libfuzzer_sys::fuzz_target;

fn frame(seq: u64, mut input: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let [op, len, rest @ ..] = input {
        let len = usize::from(*len).min(rest.len());
        let (payload, tail) = rest.split_at(len);
        input = tail;
        let mut payload = payload.to_vec();
        if op & 0x20 != 0 && payload.len() >= 2 {
            let (index, term) = (u64::from(payload[0]), u64::from(payload[1]));
            let mut wide = index.to_le_bytes().to_vec();
            wide.extend_from_slice(&term.to_le_bytes());
            wide.extend_from_slice(&payload[2..]);
            payload = wide;
        }
        if op & 0x40 != 0 {
            out.extend_from_slice(&payload);
            continue;
        }
        let kind = op & 0x07;
        let mut crc = crc32fast::Hasher::new();
        crc.update(&seq.to_le_bytes());
        crc.update(&(out.len() as u64).to_le_bytes());
        crc.update(&[kind]);
        crc.update(&payload);
        let mut crc = crc.finalize();
        if op & 0x80 != 0 {
            crc ^= 1;
        }
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.push(kind);
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&payload);
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, mut input)) = data.split_first() else {
        return;
    };
    let segments = 1 + usize::from(control & 3) % 3;
    let framed = control & 4 != 0;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let wal_dir = dir.path().join("wal");
    std::fs::create_dir(&wal_dir).unwrap();
    for seq in 0..segments as u64 {
        let Some((&first_index, rest)) = input.split_first() else {
            break;
        };
        let body;
        if seq + 1 == segments as u64 {
            (body, input) = (rest, &[][..]);
        } else {
            let Some((len, rest)) = rest.split_first_chunk::<2>() else {
                break;
            };
            let len = usize::from(u16::from_le_bytes(*len)).min(rest.len());
            (body, input) = rest.split_at(len);
        }
        let bytes = if framed {
            frame(seq, body)
        } else {
            body.to_vec()
        };
        let name = format!("{seq:016x}-{:016x}.wal", u64::from(first_index));
        std::fs::write(wal_dir.join(name), bytes).unwrap();
    }
    // Small segments and preallocation: appends roll segments over and preallocate, and
    // each run stays fast (the default preallocates 4 MiB).
    let opts = WalOptions {
        segment_bytes: 1024,
        preallocate_bytes: 256,
    };
    let Ok((wal, replayed)) = Wal::open(&wal_dir, opts) else {
        return;
    };
    drop(wal);
    let (mut wal, again) = Wal::open(&wal_dir, opts).expect("a WAL that opened reopens");
    assert_eq!(again, replayed);
    let Some(next) = wal.last_index().checked_add(1) else {
        return;
    };
    let entry = EntryRecord {
        index: next,
        term: replayed.hard_state.map_or(1, |hs| hs.term.max(1)),
        data: b"appended".to_vec(),
    };
    wal.append(&WalBatch {
        entries: vec![entry.clone()],
        ..Default::default()
    })
    .expect("an append after the last index");
    drop(wal);
    let (_, after) = Wal::open(&wal_dir, opts).expect("a WAL that took an append reopens");
    assert_eq!(after.entries.last(), Some(&entry));
});
