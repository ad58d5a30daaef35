use std::io;
use std::path::{Path, PathBuf};

/// Why a WAL operation failed.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// A file system operation failed.
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        /// What was being done ("write", "fsync", "read directory", ...).
        op: &'static str,
        /// The file or directory it was done to.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The log on disk is damaged where a crash cannot have damaged it. Nothing was
    /// repaired: an operator has to look.
    #[error("WAL segment {} is corrupt at offset {offset}: {reason}", segment.display())]
    Corrupt {
        /// The segment file holding the damage.
        segment: PathBuf,
        /// The byte offset of the bad record in that file.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// [`Wal::create`](crate::Wal::create) found a WAL already in this directory.
    #[error("a WAL already exists in {}", .0.display())]
    AlreadyExists(PathBuf),
    /// [`Wal::open`](crate::Wal::open) found no WAL in this directory.
    #[error("no WAL in {}", .0.display())]
    NotFound(PathBuf),
    /// An entry's index would leave a hole after the log's last index.
    #[error("entry {index} would leave a gap after the last index {last_index}")]
    Gap {
        /// The refused entry's index.
        index: u64,
        /// The log's last index before it.
        last_index: u64,
    },
    /// An entry's index is at or below the latest snapshot mark, which already covers it.
    #[error("entry {index} is at or below the snapshot mark at {snapshot_index}")]
    BelowSnapshot {
        /// The refused entry's index.
        index: u64,
        /// The latest snapshot mark's index.
        snapshot_index: u64,
    },
    /// A snapshot mark's index is below the latest mark's.
    #[error("snapshot mark {index} is below the latest mark at {snapshot_index}")]
    SnapshotRegression {
        /// The refused mark's index.
        index: u64,
        /// The latest snapshot mark's index.
        snapshot_index: u64,
    },
    /// A record's payload does not fit the format's 32-bit length.
    #[error("a WAL record of {len} bytes is larger than the 4 GiB a record can hold")]
    RecordTooLarge {
        /// The payload's length in bytes.
        len: usize,
    },
    /// An earlier write failed, so the log's tail is unknown; reopen the WAL to repair it.
    #[error("an earlier WAL write failed; reopen the WAL to recover")]
    Poisoned,
}

/// Wraps an I/O error with what was being done to which path.
pub(crate) fn io_error(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> WalError {
    let path = path.to_path_buf();
    move |source| WalError::Io { op, path, source }
}

/// The I/O error a fail point injects: `ENOSPC` or `EIO` (the default).
#[cfg(feature = "failpoints")]
pub(crate) fn injected(errno: Option<&str>) -> io::Error {
    const ENOSPC: i32 = 28;
    const EIO: i32 = 5;
    io::Error::from_raw_os_error(match errno {
        Some("ENOSPC") => ENOSPC,
        _ => EIO,
    })
}
