//! etcd-format snapshots, both ways: a member's backend written as etcd's bbolt file
//! (what `Maintenance.Snapshot` streams, so `etcdctl snapshot status` and `etcdutl
//! snapshot restore` take it and a real etcd starts from it), and a file etcd saved read
//! into a new data dir (`cairn snapshot restore`).
//!
//! | etcd bucket | key, value | cairn |
//! |---|---|---|
//! | `key` | revision (8-byte main, `_`, 8-byte sub, `t` for a deletion), `mvccpb.KeyValue` | the `key` column family, the same bytes |
//! | `meta` | `consistent_index` (u64), `scheduledCompactRev` / `finishedCompactRev` (a revision key) | `meta`: the applied index, the compactions as 8-byte numbers, the current revision |
//! | `lease` | lease id (8 bytes), `leasepb.Lease` {ID, TTL} | `lease`: id, `LeaseGrantRequest` {TTL, ID} |
//! | `auth`, `authUsers`, `authRoles` | `authEnabled`, `authRevision`; users; roles | the `auth` records ([`cairn_auth::record`]) |
//! | `members`, `members_removed` | written empty: a restore names its own members | — |
//!
//! Members, alarms and the cluster version are left out, as etcd's restore drops or
//! rewrites them. etcd 3.5+'s `term`, `confState` and 3.6's `storageVersion` meta keys
//! are read past (a restored member starts a new raft log).

use std::fs::File;
use std::io::{BufWriter, Seek, Write};
use std::path::Path;

use cairn_bbolt::{BboltError, DbReader, DbWriter};
use cairn_mvcc_store::backend::{CF_AUTH, CF_KEY, CF_LEASE, CF_META};
use cairn_mvcc_store::meta::{
    META_APPLIED_INDEX, META_CURRENT_REVISION, META_FINISHED_COMPACT, META_SCHEDULED_COMPACT,
};
use cairn_mvcc_store::{Backend, BackendBatch, MvccError};
use cairn_proto::etcdserverpb::LeaseGrantRequest;
use prost::Message as _;

/// etcd's `leasepb.Lease`.
#[derive(Clone, PartialEq, prost::Message)]
struct EtcdLease {
    #[prost(int64, tag = "1")]
    id: i64,
    #[prost(int64, tag = "2")]
    ttl: i64,
    #[prost(int64, tag = "3")]
    remaining_ttl: i64,
}

/// A key and its value.
type Pair = (Vec<u8>, Vec<u8>);

/// etcd's meta keys.
const CONSISTENT_INDEX: &[u8] = b"consistent_index";
const SCHEDULED_COMPACT: &[u8] = b"scheduledCompactRev";
const FINISHED_COMPACT: &[u8] = b"finishedCompactRev";

/// Records written per batch while importing.
const IMPORT_BATCH: usize = 10_000;

/// Why a snapshot could not be converted.
#[derive(Debug, thiserror::Error)]
pub enum EtcdSnapshotError {
    /// The bbolt file.
    #[error(transparent)]
    File(#[from] BboltError),
    /// The backend.
    #[error(transparent)]
    Backend(#[from] MvccError),
    /// A record that does not convert.
    #[error("{0}")]
    Record(String),
}

/// Whether `file` starts like a bbolt file (a meta page with bbolt's magic).
pub fn is_bbolt(file: &Path) -> bool {
    let mut head = [0u8; 20];
    File::open(file)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head))
        .is_ok()
        && u32::from_le_bytes([head[16], head[17], head[18], head[19]]) == cairn_bbolt::MAGIC
}

/// A revision as etcd's `meta` bucket keeps a compaction: main, `_`, sub 0.
fn revision_key(main: i64) -> Vec<u8> {
    let mut key = main.to_be_bytes().to_vec();
    key.push(b'_');
    key.extend_from_slice(&0i64.to_be_bytes());
    key
}

/// Writes `backend`'s content as an etcd backend file to `out`.
pub fn export<W: Write + Seek>(backend: &Backend, out: W) -> Result<W, EtcdSnapshotError> {
    let mut db = DbWriter::new(out)?;
    // Each bucket's keys in order: RocksDB's order is bbolt's (bytewise).
    let mut auth: std::collections::BTreeMap<&'static str, Vec<Pair>> = Default::default();
    for item in backend.scan(CF_AUTH)? {
        let (key, value) = item?;
        if let Some((bucket, etcd_key)) = cairn_auth::record::etcd_bucket(&key) {
            auth.entry(bucket)
                .or_default()
                .push((etcd_key.to_vec(), value.to_vec()));
        }
    }
    for bucket in ["auth", "authRoles", "authUsers"] {
        let mut pairs = auth.remove(bucket).unwrap_or_default();
        pairs.sort();
        let mut writer = db.bucket(bucket.as_bytes());
        for (k, v) in pairs {
            writer.put(&k, &v)?;
        }
        writer.finish()?;
    }
    let mut keys = db.bucket(b"key");
    for item in backend.scan(CF_KEY)? {
        let (key, value) = item?;
        keys.put(&key, &value)?;
    }
    keys.finish()?;
    let mut leases = db.bucket(b"lease");
    for item in backend.scan(CF_LEASE)? {
        let (key, value) = item?;
        let grant = LeaseGrantRequest::decode(&*value)
            .map_err(|e| EtcdSnapshotError::Record(format!("a lease record: {e}")))?;
        let lease = EtcdLease {
            id: grant.id,
            ttl: grant.ttl,
            remaining_ttl: 0,
        };
        leases.put(&key, &lease.encode_to_vec())?;
    }
    leases.finish()?;
    db.bucket(b"members").finish()?;
    db.bucket(b"members_removed").finish()?;
    let number = |key: &[u8]| -> Result<Option<i64>, EtcdSnapshotError> {
        Ok(backend
            .get(CF_META, key)?
            .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
            .map(i64::from_be_bytes))
    };
    let mut meta: Vec<Pair> = Vec::new();
    if let Some(index) = number(META_APPLIED_INDEX)? {
        meta.push((CONSISTENT_INDEX.to_vec(), index.to_be_bytes().to_vec()));
    }
    if let Some(rev) = number(META_FINISHED_COMPACT)? {
        meta.push((FINISHED_COMPACT.to_vec(), revision_key(rev)));
    }
    if let Some(rev) = number(META_SCHEDULED_COMPACT)? {
        meta.push((SCHEDULED_COMPACT.to_vec(), revision_key(rev)));
    }
    meta.sort();
    let mut writer = db.bucket(b"meta");
    for (k, v) in meta {
        writer.put(&k, &v)?;
    }
    writer.finish()?;
    Ok(db.finish()?)
}

/// Writes `backend` as an etcd backend file at `path` (buffered).
pub fn export_to(backend: &Backend, path: &Path) -> Result<(), EtcdSnapshotError> {
    let file = File::create(path).map_err(|e| EtcdSnapshotError::File(e.into()))?;
    let mut out = export(backend, BufWriter::new(file))?;
    out.flush().map_err(|e| EtcdSnapshotError::File(e.into()))?;
    let file = out
        .into_inner()
        .map_err(|e| EtcdSnapshotError::File(e.into_error().into()))?;
    file.sync_all()
        .map_err(|e| EtcdSnapshotError::File(e.into()))?;
    Ok(())
}

/// Checks the sha256 etcd appends to a snapshot (a file 32 bytes past a 512-byte
/// boundary ends with one, as etcd's restore reads it); a bare backend file passes.
fn verify_sha256(file: &Path) -> Result<(), EtcdSnapshotError> {
    use sha2::Digest as _;
    use std::io::Read as _;
    let io = |e: std::io::Error| EtcdSnapshotError::File(e.into());
    let mut f = File::open(file).map_err(io)?;
    let len = f.metadata().map_err(io)?.len();
    if len % 512 != 32 {
        return Ok(());
    }
    let mut hasher = sha2::Sha256::new();
    let mut body = std::io::BufReader::new((&mut f).take(len - 32));
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = body.read(&mut chunk).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&chunk[..n]);
    }
    drop(body);
    let mut expected = [0u8; 32];
    f.read_exact(&mut expected).map_err(io)?;
    let got = hasher.finalize();
    if got.as_slice() != expected {
        return Err(EtcdSnapshotError::Record(format!(
            "snapshot file integrity check failed: expected sha256 {}, got {}",
            hex(&expected),
            hex(&got)
        )));
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads the etcd backend file `file` into the empty `backend`: the key space with its
/// revisions and compaction, the leases and the auth state; the applied index 0.
pub fn import(file: &Path, backend: &Backend) -> Result<(), EtcdSnapshotError> {
    verify_sha256(file)?;
    let reader = DbReader::open(File::open(file).map_err(|e| EtcdSnapshotError::File(e.into()))?)?;
    let mut batch = BackendBatch::new();
    let flush = |batch: &mut BackendBatch, force: bool| -> Result<(), EtcdSnapshotError> {
        if force || batch.len() >= IMPORT_BATCH {
            backend.write(std::mem::take(batch))?;
        }
        Ok(())
    };
    let mut last_main = 1i64;
    let mut bad = None;
    reader.for_each(b"key", |key, value| {
        if key.len() < 17 || key[8] != b'_' {
            bad = Some(format!("a key bucket record with key {key:?}"));
            return Err(BboltError::Invalid("bad revision key".into()));
        }
        last_main = last_main.max(i64::from_be_bytes(key[..8].try_into().unwrap_or_default()));
        batch.put_cf(CF_KEY, key, value);
        flush(&mut batch, false).map_err(|e| BboltError::Invalid(e.to_string()))
    })?;
    if let Some(why) = bad {
        return Err(EtcdSnapshotError::Record(why));
    }
    reader.for_each(b"lease", |key, value| {
        let lease = EtcdLease::decode(value)
            .map_err(|e| BboltError::Invalid(format!("a lease record: {e}")))?;
        let grant = LeaseGrantRequest {
            id: lease.id,
            ttl: lease.ttl,
        };
        batch.put_cf(CF_LEASE, key, grant.encode_to_vec());
        Ok(())
    })?;
    for bucket in ["auth", "authUsers", "authRoles"] {
        reader.for_each(bucket.as_bytes(), |key, value| {
            if let Some(record) = cairn_auth::record::from_etcd_bucket(bucket, key) {
                batch.put_cf(CF_AUTH, record, value);
            }
            Ok(())
        })?;
    }
    let mut compact = [None, None];
    reader.for_each(b"meta", |key, value| {
        let slot = match key {
            SCHEDULED_COMPACT => 0,
            FINISHED_COMPACT => 1,
            _ => return Ok(()),
        };
        if value.len() >= 8 {
            compact[slot] = Some(i64::from_be_bytes(
                value[..8].try_into().unwrap_or_default(),
            ));
        }
        Ok(())
    })?;
    for (key, rev) in [
        (META_SCHEDULED_COMPACT, compact[0]),
        (META_FINISHED_COMPACT, compact[1]),
    ] {
        if let Some(rev) = rev {
            batch.put_cf(CF_META, key, rev.to_be_bytes());
            last_main = last_main.max(rev);
        }
    }
    batch.put_cf(CF_META, META_CURRENT_REVISION, last_main.to_be_bytes());
    batch.put_cf(CF_META, META_APPLIED_INDEX, 0u64.to_be_bytes());
    flush(&mut batch, true)?;
    backend.sync()?;
    Ok(())
}
