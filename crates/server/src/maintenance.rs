//! etcd's Maintenance service on a member (status, alarms, hashes, defragment, leader
//! moves and snapshots), the backend quota in front of the KV writes, and
//! `cairn snapshot restore`, which turns a snapshot into a new data dir.

use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use cairn_grpc_gateway::api::{ClusterApi, KvApi, MaintenanceApi, SnapshotChunks};
use cairn_grpc_gateway::EtcdError;
use cairn_mvcc_store::backend::{CF_ALARM, CF_MEMBERS, CF_META};
use cairn_mvcc_store::meta::META_APPLIED_INDEX;
use cairn_mvcc_store::snapshot::ArchiveReader;
use cairn_mvcc_store::{Backend, BackendBatch, MvccError};
use cairn_proto::cairnpb::internal_request::Request;
use cairn_proto::etcdserverpb::{
    alarm_request::AlarmAction, AlarmRequest, AlarmResponse, AlarmType, CompactionRequest,
    CompactionResponse, DefragmentRequest, DefragmentResponse, DeleteRangeRequest,
    DeleteRangeResponse, HashKvRequest, HashKvResponse, HashRequest, HashResponse,
    MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse,
    MemberPromoteRequest, MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse,
    MemberUpdateRequest, MemberUpdateResponse, MoveLeaderRequest, MoveLeaderResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, SnapshotResponse, StatusRequest, StatusResponse,
    TxnRequest, TxnResponse,
};
use cairn_raft_node::Role;

use crate::alarms::{self, Alarms};
use crate::apply::{client_error, Applied};
use crate::server::{EtcdServer, ETCD_VERSION};
use crate::ServerError;

/// Bytes of snapshot per `SnapshotResponse`.
const SNAPSHOT_CHUNK_BYTES: usize = 64 * 1024;

/// What clients reach: the member's request handling with the backend quota enforced in
/// front of its writes, and the Maintenance service.
pub(crate) struct Frontend {
    server: Arc<EtcdServer>,
    alarms: Arc<Alarms>,
    quota: Quota,
    snapshot_dir: PathBuf,
}

impl Frontend {
    /// `server` behind a quota of `quota_bytes`; snapshots are checkpointed in
    /// `snapshot_dir`.
    pub(crate) fn new(
        server: Arc<EtcdServer>,
        alarms: Arc<Alarms>,
        quota_bytes: u64,
        snapshot_dir: PathBuf,
    ) -> Self {
        Frontend {
            quota: Quota {
                server: server.clone(),
                bytes: quota_bytes,
                size: Arc::new(SizeCache::default()),
            },
            server,
            alarms,
            snapshot_dir,
        }
    }

    /// The quota in front of this member's writes.
    pub(crate) fn quota(&self) -> Quota {
        self.quota.clone()
    }

    async fn check_quota(&self, cost: u64) -> Result<(), EtcdError> {
        self.quota.check(cost).await
    }

    fn header_now(&self) -> Option<cairn_proto::etcdserverpb::ResponseHeader> {
        Some(self.server.header(self.server.store.current_revision()))
    }
}

/// `--quota-backend-bytes` in front of a member's writes (etcd's quotaKVServer and
/// quotaLeaseServer).
#[derive(Clone)]
pub(crate) struct Quota {
    server: Arc<EtcdServer>,
    bytes: u64,
    size: Arc<SizeCache>,
}

/// The backend size, read from RocksDB at most every [`SIZE_REFRESH`]: reading its
/// properties on every write cost about 2% of the server's CPU under load.
struct SizeCache {
    origin: Instant,
    bytes: AtomicU64,
    read_at_ms: AtomicU64,
}

impl Default for SizeCache {
    fn default() -> Self {
        SizeCache {
            origin: Instant::now(),
            bytes: AtomicU64::new(0),
            read_at_ms: AtomicU64::new(u64::MAX),
        }
    }
}

const SIZE_REFRESH: Duration = Duration::from_millis(100);

impl SizeCache {
    fn get(&self, backend: &cairn_mvcc_store::Backend) -> Result<u64, EtcdError> {
        let now = self.origin.elapsed().as_millis() as u64;
        let at = self.read_at_ms.load(Ordering::Relaxed);
        if at == u64::MAX || now.saturating_sub(at) >= SIZE_REFRESH.as_millis() as u64 {
            self.bytes.store(backend_size(backend)?, Ordering::Relaxed);
            self.read_at_ms.store(now, Ordering::Relaxed);
        }
        Ok(self.bytes.load(Ordering::Relaxed))
    }
}

/// The backend's size; a failure to read it refuses the request rather than pass as 0
/// bytes (which would turn the quota off).
fn backend_size(backend: &cairn_mvcc_store::Backend) -> Result<u64, EtcdError> {
    backend
        .size_bytes()
        .map_err(|e| EtcdError::Internal(format!("reading the backend size: {e}")))
}

impl Quota {
    /// Refuses a write of `cost` bytes that would take the backend over the quota, and
    /// raises NOSPACE for this member. Far from the quota a recent size is enough; near
    /// it the size is read afresh.
    pub(crate) async fn check(&self, cost: u64) -> Result<(), EtcdError> {
        if cost == 0 || self.size.get(&self.server.backend)? + cost < self.bytes / 10 * 9 {
            return Ok(());
        }
        if backend_size(&self.server.backend)? + cost < self.bytes {
            return Ok(());
        }
        let raise = AlarmRequest {
            action: AlarmAction::Activate as i32,
            member_id: self.server.member_id,
            alarm: AlarmType::Nospace as i32,
        };
        if let Err(e) = self.server.propose(Request::Alarm(raise)).await {
            tracing::warn!(error = %e, "raising the NOSPACE alarm");
        }
        Err(EtcdError::NoSpace)
    }
}

#[async_trait]
impl KvApi for Frontend {
    async fn range(&self, req: RangeRequest) -> Result<RangeResponse, EtcdError> {
        self.server.range(req).await
    }

    async fn put(&self, req: PutRequest) -> Result<PutResponse, EtcdError> {
        self.check_quota(alarms::put_cost(&req)).await?;
        self.server.put(req).await
    }

    async fn delete_range(
        &self,
        req: DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, EtcdError> {
        self.server.delete_range(req).await
    }

    async fn txn(&self, req: TxnRequest) -> Result<TxnResponse, EtcdError> {
        self.check_quota(alarms::txn_cost(&req)).await?;
        self.server.txn(req).await
    }

    async fn compact(&self, req: CompactionRequest) -> Result<CompactionResponse, EtcdError> {
        self.server.compact(req).await
    }
}

#[async_trait]
impl ClusterApi for Frontend {
    async fn member_list(&self, req: MemberListRequest) -> Result<MemberListResponse, EtcdError> {
        self.server.member_list(req).await
    }

    async fn member_add(&self, req: MemberAddRequest) -> Result<MemberAddResponse, EtcdError> {
        self.server.member_add(req).await
    }

    async fn member_remove(
        &self,
        req: MemberRemoveRequest,
    ) -> Result<MemberRemoveResponse, EtcdError> {
        self.server.member_remove(req).await
    }

    async fn member_update(
        &self,
        req: MemberUpdateRequest,
    ) -> Result<MemberUpdateResponse, EtcdError> {
        self.server.member_update(req).await
    }

    async fn member_promote(
        &self,
        req: MemberPromoteRequest,
    ) -> Result<MemberPromoteResponse, EtcdError> {
        self.server.member_promote(req).await
    }
}

/// Runs `work` on a blocking thread (it reads or rewrites the whole backend).
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, MvccError> + Send + 'static,
) -> Result<T, EtcdError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(client_error(&e)),
        Err(e) => Err(EtcdError::Internal(format!("maintenance task: {e}"))),
    }
}

#[async_trait]
impl MaintenanceApi for Frontend {
    async fn status(&self, _req: StatusRequest) -> Result<StatusResponse, EtcdError> {
        let server = &self.server;
        let st = server.raft.status();
        let mut errors = Vec::new();
        if st.leader_id == 0 {
            errors.push(EtcdError::NoLeader.to_string());
        }
        errors.extend(
            self.alarms
                .list(AlarmType::None as i32)
                .iter()
                .map(alarms::describe),
        );
        Ok(StatusResponse {
            header: self.header_now(),
            version: ETCD_VERSION.to_string(),
            db_size: backend_size(&server.backend)? as i64,
            leader: st.leader_id,
            raft_index: st.commit_index,
            raft_term: st.term,
            raft_applied_index: st.applied_index,
            errors,
            db_size_in_use: server
                .backend
                .size_in_use_bytes()
                .map_err(|e| EtcdError::Internal(format!("reading the backend size: {e}")))?
                as i64,
            is_learner: st.learners.contains(&server.member_id),
        })
    }

    async fn alarm(&self, req: AlarmRequest) -> Result<AlarmResponse, EtcdError> {
        match self.server.propose(Request::Alarm(req)).await? {
            Applied::Alarm(mut resp) => {
                resp.header = self.header_now();
                Ok(resp)
            }
            other => Err(EtcdError::Internal(format!(
                "unexpected apply result {other:?}"
            ))),
        }
    }

    async fn defragment(&self, _req: DefragmentRequest) -> Result<DefragmentResponse, EtcdError> {
        let backend = self.server.backend.clone();
        blocking(move || backend.defragment()).await?;
        Ok(DefragmentResponse {
            header: self.header_now(),
        })
    }

    async fn hash(&self, _req: HashRequest) -> Result<HashResponse, EtcdError> {
        let backend = self.server.backend.clone();
        let hash = blocking(move || backend.hash()).await?;
        Ok(HashResponse {
            header: self.header_now(),
            hash,
        })
    }

    async fn hash_kv(&self, req: HashKvRequest) -> Result<HashKvResponse, EtcdError> {
        let store = self.server.store.clone();
        let hashed = blocking(move || store.hash_kv(req.revision)).await?;
        Ok(HashKvResponse {
            header: self.header_now(),
            hash: hashed.hash,
            compact_revision: hashed.compact_revision,
        })
    }

    async fn move_leader(&self, req: MoveLeaderRequest) -> Result<MoveLeaderResponse, EtcdError> {
        let server = &self.server;
        let st = server.raft.status();
        if st.role != Role::Leader {
            return Err(EtcdError::NotLeader);
        }
        let target = req.target_id;
        if !st.voters.contains(&target) {
            return Err(EtcdError::BadLeaderTransferee);
        }
        let mut status = server.raft.subscribe_status();
        if target != server.member_id {
            server
                .raft
                .transfer_leader(target)
                .map_err(|_| EtcdError::Stopped)?;
        }
        let transferred = tokio::time::timeout(
            server.limits.request_timeout,
            status.wait_for(|s| s.leader_id == target || s.stopped),
        )
        .await;
        match transferred {
            Ok(Ok(s)) if s.leader_id == target => Ok(MoveLeaderResponse {
                header: self.header_now(),
            }),
            Ok(_) => Err(EtcdError::Stopped),
            Err(_) => Err(EtcdError::Timeout),
        }
    }

    async fn snapshot(&self) -> Result<SnapshotChunks, EtcdError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = self.snapshot_dir.join(format!(
            "client-snapshot-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let header = self.header_now();
        let backend = self.server.backend.clone();
        let parent = self.snapshot_dir.clone();
        let checkpoint = Checkpoint(dir.clone());
        let reader = blocking(move || {
            std::fs::create_dir_all(&parent)
                .map_err(|e| MvccError::Io(format!("creating {}: {e}", parent.display())))?;
            backend.checkpoint(&dir)?;
            ArchiveReader::new(&dir)
                .map_err(|e| MvccError::Io(format!("archiving {}: {e}", dir.display())))
        })
        .await?;
        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        tokio::task::spawn_blocking(move || stream_archive(reader, checkpoint, header, tx));
        Ok(Box::pin(futures::stream::poll_fn(move |cx| {
            rx.poll_recv(cx)
        })))
    }
}

/// Marks the trailer ending a snapshot stream.
const TRAILER_MAGIC: &[u8; 16] = b"CAIRN-SNAP-TRAIL";
/// The trailer's length: etcd ends a snapshot with its 32-byte sha256 right after a
/// 512-byte boundary, and etcdctl refuses a download whose length is not of that shape.
const TRAILER_BYTES: u64 = 32;
const SECTOR_BYTES: u64 = 512;

/// What follows an archive of `archive_len` bytes in a snapshot stream: zeros up to a
/// sector boundary, then the trailer (magic, the archive's length, zeros). The archive
/// carries its own checksum.
fn stream_tail(archive_len: u64) -> Vec<u8> {
    let padding = (SECTOR_BYTES - archive_len % SECTOR_BYTES) % SECTOR_BYTES;
    let mut tail = vec![0u8; padding as usize];
    tail.extend_from_slice(TRAILER_MAGIC);
    tail.extend_from_slice(&archive_len.to_be_bytes());
    tail.resize(padding as usize + TRAILER_BYTES as usize, 0);
    tail
}

/// The length of the archive at the start of a snapshot file of `file_len` bytes ending
/// in `trailer` (its last [`TRAILER_BYTES`]), or the whole file for a bare archive.
fn archive_len(file_len: u64, trailer: &[u8]) -> u64 {
    match trailer.strip_prefix(TRAILER_MAGIC.as_slice()) {
        Some(rest) if rest.len() >= 8 => {
            let mut len = [0u8; 8];
            len.copy_from_slice(&rest[..8]);
            u64::from_be_bytes(len).min(file_len)
        }
        _ => file_len,
    }
}

/// A checkpoint directory, removed once streamed or abandoned.
struct Checkpoint(PathBuf);

impl Drop for Checkpoint {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Sends the archive in chunks until its end or until the client goes away.
fn stream_archive(
    archive: ArchiveReader,
    checkpoint: Checkpoint,
    header: Option<cairn_proto::etcdserverpb::ResponseHeader>,
    tx: tokio::sync::mpsc::Sender<Result<SnapshotResponse, EtcdError>>,
) {
    let tail = stream_tail(archive.len());
    let total = archive.len() + tail.len() as u64;
    let mut reader = archive.chain(std::io::Cursor::new(tail));
    let mut sent = 0u64;
    loop {
        let mut blob = vec![0u8; SNAPSHOT_CHUNK_BYTES];
        let mut filled = 0;
        while filled < blob.len() {
            match reader.read(&mut blob[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = tx.blocking_send(Err(EtcdError::Internal(format!(
                        "reading the snapshot: {e}"
                    ))));
                    return;
                }
            }
        }
        if filled == 0 {
            break;
        }
        blob.truncate(filled);
        sent += filled as u64;
        let chunk = SnapshotResponse {
            header,
            remaining_bytes: total.saturating_sub(sent),
            blob: blob.into(),
        };
        if tx.blocking_send(Ok(chunk)).is_err() {
            tracing::info!(sent, total, "snapshot receiver went away");
            return;
        }
    }
    tracing::info!(bytes = sent, dir = %checkpoint.0.display(), "snapshot sent");
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_tail_has_etcds_shape_and_names_the_archive_length() {
        for len in [0u64, 1, 479, 480, 511, 512, 48_309] {
            let tail = stream_tail(len);
            let file_len = len + tail.len() as u64;
            assert_eq!(file_len % SECTOR_BYTES, TRAILER_BYTES, "archive of {len}");
            let trailer = &tail[tail.len() - TRAILER_BYTES as usize..];
            assert_eq!(archive_len(file_len, trailer), len);
        }
        assert_eq!(archive_len(100, &[0u8; 32]), 100);
    }
}
