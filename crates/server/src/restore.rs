//! `cairn snapshot restore`: a new data dir from a snapshot file.

use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::Path;

use cairn_mvcc_store::backend::{CF_ALARM, CF_MEMBERS, CF_META};
use cairn_mvcc_store::meta::META_APPLIED_INDEX;
use cairn_mvcc_store::{Backend, BackendBatch};

use crate::error::ServerError;
use crate::snapshot_file::{archive_len, TRAILER_BYTES};

/// Records of the `members` column family that belong to the cluster a snapshot came
/// from, not to the one restored from it.
const MEMBERS_DROPPED_PREFIXES: [&[u8]; 2] = [
    crate::members::MEMBER_PREFIX,
    crate::members::REMOVED_PREFIX,
];
const MEMBERS_DROPPED_KEYS: [&[u8]; 4] = [
    cairn_mvcc_store::hash::RAFT_SNAPSHOT_KEY,
    cairn_mvcc_store::hash::PROPOSAL_LEDGER_KEY,
    cairn_mvcc_store::backend::MEMBER_ID_KEY,
    crate::members::CLUSTER_ID_KEY,
];

/// Builds a new data dir at `data_dir` from the snapshot `file` (written by
/// Maintenance.Snapshot): the key space with its revisions and leases, without the old
/// cluster's membership, alarms or raft position. The member started on it bootstraps a
/// new cluster from its `--initial-cluster` flags.
pub fn restore_snapshot(file: &Path, data_dir: &Path) -> Result<(), ServerError> {
    let dir_error = |path: &Path, source: std::io::Error| ServerError::DataDir {
        path: path.to_path_buf(),
        source,
    };
    if let Ok(mut entries) = std::fs::read_dir(data_dir) {
        if entries.next().is_some() {
            return Err(dir_error(
                data_dir,
                std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "already exists and is not empty; restore a snapshot into a new data dir",
                ),
            ));
        }
    }
    let snapshot_error = |source: std::io::Error| ServerError::Snapshot {
        path: file.to_path_buf(),
        source,
    };
    if crate::etcd_snapshot::is_bbolt(file) {
        // A snapshot in etcd's format (etcd's own, or cairn's since it writes that).
        let db_dir = data_dir.join("member").join("db");
        std::fs::create_dir_all(&db_dir).map_err(|e| dir_error(&db_dir, e))?;
        let imported = Backend::open(&db_dir)
            .map_err(ServerError::from)
            .and_then(|backend| {
                crate::etcd_snapshot::import(file, &backend).map_err(|e| ServerError::Snapshot {
                    path: file.to_path_buf(),
                    source: std::io::Error::other(e.to_string()),
                })
            });
        if let Err(e) = imported {
            let _ = std::fs::remove_dir_all(data_dir);
            return Err(e);
        }
        return Ok(());
    }
    let mut snapshot = std::fs::File::open(file).map_err(snapshot_error)?;
    let file_len = snapshot.metadata().map_err(snapshot_error)?.len();
    let mut trailer = Vec::new();
    if file_len >= TRAILER_BYTES {
        snapshot
            .seek(SeekFrom::Start(file_len - TRAILER_BYTES))
            .map_err(snapshot_error)?;
        snapshot.read_to_end(&mut trailer).map_err(snapshot_error)?;
        snapshot.rewind().map_err(snapshot_error)?;
    }
    let archive = std::io::BufReader::new(snapshot).take(archive_len(file_len, &trailer));
    let member_dir = data_dir.join("member");
    std::fs::create_dir_all(&member_dir).map_err(|e| dir_error(&member_dir, e))?;
    if let Err(e) = cairn_mvcc_store::snapshot::unpack(archive, &member_dir.join("db")) {
        let _ = std::fs::remove_dir_all(data_dir);
        return Err(e.into());
    }
    let db_dir = member_dir.join("db");
    let backend = Backend::open(&db_dir)?;
    let mut batch = BackendBatch::new();
    for item in backend.scan(CF_MEMBERS)? {
        let (key, _) = item?;
        if MEMBERS_DROPPED_PREFIXES.iter().any(|p| key.starts_with(p))
            || MEMBERS_DROPPED_KEYS.contains(&&*key)
        {
            batch.delete_cf(CF_MEMBERS, key);
        }
    }
    for item in backend.scan(CF_ALARM)? {
        let (key, _) = item?;
        batch.delete_cf(CF_ALARM, key);
    }
    batch.put_cf(CF_META, META_APPLIED_INDEX, 0u64.to_be_bytes());
    backend.write(batch)?;
    backend.sync()?;
    Ok(())
}
