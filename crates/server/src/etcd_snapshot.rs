//! etcd-format snapshots, both ways: a member's backend written as etcd's bbolt file
//! (what `Maintenance.Snapshot` streams, so `etcdctl snapshot status` and `etcdutl
//! snapshot restore` take it and a real etcd starts from it), and a file etcd saved read
//! into a new data dir (`cairn snapshot restore`).
//!
//! | etcd bucket | key, value | cairn |
//! |---|---|---|
//! | `key` | revision (8-byte main, `_`, 8-byte sub, `t` for a deletion), `mvccpb.KeyValue` | the `key` column family, the same bytes |
//! | `meta` | `consistent_index` (u64), `scheduledCompactRev` / `finishedCompactRev` (a revision key); since etcd 3.5 `term` (u64) and `confState` (the raft `ConfState` as JSON: `{"voters":[…],"auto_leave":false}`); since 3.6 `storageVersion` (`3.6.0`) | `meta`: the applied index, the compactions as 8-byte numbers, the current revision; the term and the voters come from the member (the raft term, the member list) |
//! | `lease` | lease id (8 bytes), `leasepb.Lease` {ID, TTL} | `lease`: id, `LeaseGrantRequest` {TTL, ID} |
//! | `auth`, `authUsers`, `authRoles` | `authEnabled`, `authRevision`; users; roles | the `auth` records ([`cairn_auth::record`]) |
//! | `members` | the member id in hex, the member as JSON (`{"id":…,"peerURLs":[…],"name":…,"clientURLs":[…]}`, `isLearner` when true) | the `members` records |
//! | `members_removed` | written empty | — |
//!
//! etcd 3.6 decides a backend's schema from `storageVersion`, or from `confState` and
//! `term` when that is missing (a 3.5 backend): all three are written, the storage
//! version as 3.6 (which etcd 3.7 migrates from), so etcd 3.6/3.7's tools take the file
//! as they take their own; etcd 3.4's ignore them. Alarms and the cluster version are
//! left out, as etcd's restore drops or rewrites them; its restore also rewrites the
//! members. Reading, the 3.5/3.6 meta keys and the members are passed over: a restored
//! member starts a new raft log and names its own cluster.

use std::fs::File;
use std::io::{BufWriter, Seek, Write};
use std::path::Path;

use cairn_bbolt::{BboltError, DbReader, DbWriter};
use cairn_mvcc_store::backend::{CF_AUTH, CF_KEY, CF_LEASE, CF_MEMBERS, CF_META};
use cairn_mvcc_store::meta::{
    META_APPLIED_INDEX, META_CURRENT_REVISION, META_FINISHED_COMPACT, META_SCHEDULED_COMPACT,
};
use cairn_mvcc_store::{Backend, BackendBatch, MvccError};
use cairn_proto::etcdserverpb::{LeaseGrantRequest, Member};
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
const TERM: &[u8] = b"term";
const CONF_STATE: &[u8] = b"confState";
const STORAGE_VERSION: &[u8] = b"storageVersion";
/// The storage schema the file follows (etcd 3.6's; 3.7 migrates from it).
const STORAGE_VERSION_WRITTEN: &str = "3.6.0";

/// A member as etcd keeps it in its `members` bucket.
#[derive(serde::Serialize)]
struct EtcdMember<'a> {
    id: u64,
    #[serde(rename = "peerURLs")]
    peer_urls: &'a [String],
    #[serde(rename = "isLearner", skip_serializing_if = "std::ops::Not::not")]
    is_learner: bool,
    #[serde(skip_serializing_if = "str::is_empty")]
    name: &'a str,
    #[serde(rename = "clientURLs", skip_serializing_if = "<[String]>::is_empty")]
    client_urls: &'a [String],
}

/// A raft `ConfState` as etcd keeps it in `meta`.
#[derive(serde::Serialize)]
struct EtcdConfState {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    voters: Vec<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    learners: Vec<u64>,
    auto_leave: bool,
}

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

/// Writes `backend`'s content as an etcd backend file to `out`; `term` is the raft term
/// it was taken at.
pub fn export<W: Write + Seek>(
    backend: &Backend,
    term: u64,
    out: W,
) -> Result<W, EtcdSnapshotError> {
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
    let mut members = Vec::new();
    for item in backend.scan_prefix(CF_MEMBERS, crate::members::MEMBER_PREFIX)? {
        let (_, value) = item?;
        members.push(
            Member::decode(&*value)
                .map_err(|e| EtcdSnapshotError::Record(format!("a member record: {e}")))?,
        );
    }
    // bbolt's order: the hex ids as bytes.
    let mut records: Vec<Pair> = members
        .iter()
        .map(|m| {
            let json = serde_json::to_vec(&EtcdMember {
                id: m.id,
                peer_urls: &m.peer_ur_ls,
                is_learner: m.is_learner,
                name: &m.name,
                client_urls: &m.client_ur_ls,
            })
            .map_err(|e| EtcdSnapshotError::Record(format!("a member as JSON: {e}")))?;
            Ok((format!("{:x}", m.id).into_bytes(), json))
        })
        .collect::<Result<_, EtcdSnapshotError>>()?;
    records.sort();
    let mut writer = db.bucket(b"members");
    for (k, v) in records {
        writer.put(&k, &v)?;
    }
    writer.finish()?;
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
    if term > 0 {
        meta.push((TERM.to_vec(), term.to_be_bytes().to_vec()));
    }
    let mut conf_state = EtcdConfState {
        voters: Vec::new(),
        learners: Vec::new(),
        auto_leave: false,
    };
    for m in &members {
        if m.is_learner {
            conf_state.learners.push(m.id);
        } else {
            conf_state.voters.push(m.id);
        }
    }
    meta.push((
        CONF_STATE.to_vec(),
        serde_json::to_vec(&conf_state)
            .map_err(|e| EtcdSnapshotError::Record(format!("the conf state as JSON: {e}")))?,
    ));
    meta.push((
        STORAGE_VERSION.to_vec(),
        STORAGE_VERSION_WRITTEN.as_bytes().to_vec(),
    ));
    meta.sort();
    let mut writer = db.bucket(b"meta");
    for (k, v) in meta {
        writer.put(&k, &v)?;
    }
    writer.finish()?;
    Ok(db.finish()?)
}

/// Writes `backend` as an etcd backend file at `path` (buffered); `term` as in [`export`].
pub fn export_to(backend: &Backend, term: u64, path: &Path) -> Result<(), EtcdSnapshotError> {
    let file = File::create(path).map_err(|e| EtcdSnapshotError::File(e.into()))?;
    let mut out = export(backend, term, BufWriter::new(file))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(reader: &DbReader, name: &[u8]) -> Vec<Pair> {
        let mut pairs = Vec::new();
        reader
            .for_each(name, |k, v| {
                pairs.push((k.to_vec(), v.to_vec()));
                Ok(())
            })
            .unwrap();
        pairs
    }

    #[test]
    fn writes_the_meta_keys_and_members_of_etcd_3_6() {
        let dir = tempfile::tempdir().unwrap();
        let backend = Backend::open(dir.path()).unwrap();
        let mut batch = BackendBatch::new();
        for (id, name, learner) in [(0x2a_u64, "m1", false), (0x1b, "", true)] {
            let member = Member {
                id,
                name: name.into(),
                peer_ur_ls: vec![format!("http://{id}:2380")],
                client_ur_ls: if name.is_empty() {
                    vec![]
                } else {
                    vec!["http://m1:2379".into()]
                },
                is_learner: learner,
            };
            batch.put_cf(
                CF_MEMBERS,
                [crate::members::MEMBER_PREFIX, &id.to_be_bytes()].concat(),
                member.encode_to_vec(),
            );
        }
        batch.put_cf(CF_META, META_APPLIED_INDEX, 7u64.to_be_bytes());
        backend.write(batch).unwrap();

        let out = export(&backend, 3, std::io::Cursor::new(Vec::new())).unwrap();
        let file = dir.path().join("snap.db");
        std::fs::write(&file, out.into_inner()).unwrap();
        let reader = DbReader::open(File::open(&file).unwrap()).unwrap();
        let meta: std::collections::BTreeMap<Vec<u8>, Vec<u8>> =
            bucket(&reader, b"meta").into_iter().collect();
        assert_eq!(meta[CONSISTENT_INDEX], 7u64.to_be_bytes());
        assert_eq!(meta[TERM], 3u64.to_be_bytes());
        assert_eq!(
            String::from_utf8_lossy(&meta[CONF_STATE]),
            r#"{"voters":[42],"learners":[27],"auto_leave":false}"#
        );
        assert_eq!(meta[STORAGE_VERSION], b"3.6.0");
        let members: Vec<(String, String)> = bucket(&reader, b"members")
            .into_iter()
            .map(|(k, v)| (String::from_utf8(k).unwrap(), String::from_utf8(v).unwrap()))
            .collect();
        assert_eq!(
            members,
            vec![
                (
                    "1b".to_string(),
                    r#"{"id":27,"peerURLs":["http://27:2380"],"isLearner":true}"#.to_string()
                ),
                (
                    "2a".to_string(),
                    r#"{"id":42,"peerURLs":["http://42:2380"],"name":"m1","clientURLs":["http://m1:2379"]}"#
                        .to_string()
                ),
            ]
        );
        // Read back into a new backend: the 3.6 keys are passed over.
        let dir2 = tempfile::tempdir().unwrap();
        let restored = Backend::open(dir2.path()).unwrap();
        import(&file, &restored).unwrap();
        assert_eq!(
            restored.get(CF_META, META_APPLIED_INDEX).unwrap(),
            Some(0u64.to_be_bytes().to_vec())
        );
    }
}
