//! The WAL as a reuser would drive it: append batches of entries with their hard state
//! (one fsync each), overwrite a tail the way raft does after a leader change, mark a
//! snapshot and release what it covers, then reopen the log and replay it.
//!
//! ```text
//! cargo run -p cairn-wal --example append_replay [DIR]
//! ```
//!
//! Without `DIR` the log lives in a temporary directory that is removed at the end.

use cairn_wal::{EntryRecord, HardState, SnapshotMark, Wal, WalBatch, WalOptions};

fn entry(index: u64, term: u64, command: &str) -> EntryRecord {
    EntryRecord {
        index,
        term,
        data: command.as_bytes().to_vec(),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let temp = tempfile::tempdir()?;
    let dir = match std::env::args_os().nth(1) {
        Some(dir) => std::path::PathBuf::from(dir),
        None => temp.path().join("wal"),
    };
    // Small segments, so that this short log spans several files and release_to has
    // whole segments to delete.
    let options = WalOptions {
        segment_bytes: 256,
        preallocate_bytes: 0,
    };
    if Wal::exists(&dir) {
        return Err(format!("{} already holds a log", dir.display()).into());
    }

    let mut wal = Wal::create(&dir, b"member 1 of cluster 7", options)?;
    // Term 1: ten commands, appended in batches of two as a raft Ready would hand them.
    for first in (1..=10).step_by(2) {
        wal.append(&WalBatch {
            entries: vec![
                entry(first, 1, &format!("put k{first}")),
                entry(first + 1, 1, &format!("put k{}", first + 1)),
            ],
            hard_state: Some(HardState {
                term: 1,
                vote: 1,
                commit: first - 1,
            }),
            snapshot: None,
        })?;
    }
    // A new leader in term 2 never had entries 9 and 10: they are replaced from 9 on.
    wal.append(&WalBatch {
        entries: vec![entry(9, 2, "put k9-from-term-2")],
        hard_state: Some(HardState {
            term: 2,
            vote: 2,
            commit: 9,
        }),
        snapshot: None,
    })?;
    // The state up to index 6 is now kept in a snapshot: mark it, drop what it covers.
    wal.append(&WalBatch {
        snapshot: Some(SnapshotMark {
            index: 6,
            term: 1,
            data: b"membership at 6".to_vec(),
        }),
        ..WalBatch::default()
    })?;
    wal.release_to(6)?;
    let segments = std::fs::read_dir(&dir)?.count();
    drop(wal);

    let (wal, replayed) = Wal::open(&dir, options)?;
    println!(
        "{}: {segments} segment file(s), last index {}",
        dir.display(),
        wal.last_index()
    );
    println!("metadata: {}", String::from_utf8_lossy(&replayed.metadata));
    if let Some(mark) = &replayed.snapshot {
        println!("snapshot mark: index {} term {}", mark.index, mark.term);
    }
    println!("hard state: {:?}", replayed.hard_state);
    for e in &replayed.entries {
        println!(
            "  {:>2} (term {}) {}",
            e.index,
            e.term,
            String::from_utf8_lossy(&e.data)
        );
    }
    let indexes: Vec<u64> = replayed.entries.iter().map(|e| e.index).collect();
    assert_eq!(
        indexes,
        [7, 8, 9],
        "entries after the mark, the rewritten tail included"
    );
    assert_eq!(replayed.entries[2].data, b"put k9-from-term-2");
    Ok(())
}
