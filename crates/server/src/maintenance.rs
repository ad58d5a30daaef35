//! etcd's Maintenance service on a member: status, alarms, hashes, defragmentation,
//! leader moves and snapshots.

use std::io::Read as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use cairn_grpc_gateway::api::{MaintenanceApi, SnapshotChunks};
use cairn_grpc_gateway::EtcdError;
use cairn_mvcc_store::MvccError;
use cairn_proto::cairnpb::internal_request::Request;
use cairn_proto::etcdserverpb::{
    downgrade_request::DowngradeAction, AlarmRequest, AlarmResponse, AlarmType, DefragmentRequest,
    DefragmentResponse, DowngradeInfo, DowngradeRequest, DowngradeResponse, HashKvRequest,
    HashKvResponse, HashRequest, HashResponse, MoveLeaderRequest, MoveLeaderResponse,
    ResponseHeader, SnapshotResponse, StatusRequest, StatusResponse,
};
use cairn_raft_node::Role;

use crate::alarms::{self, Alarms};
use crate::apply::Applied;
use crate::client_error;
use crate::member::{Member, ETCD_CLUSTER_VERSION, ETCD_VERSION, STORAGE_VERSION};
use crate::quota::backend_size;

/// Bytes of snapshot per `SnapshotResponse`.
const SNAPSHOT_CHUNK_BYTES: usize = 64 * 1024;

/// The Maintenance service of a member.
pub(crate) struct Maintenance {
    member: Arc<Member>,
    alarms: Arc<Alarms>,
    snapshot_dir: PathBuf,
    /// --quota-backend-bytes, reported in Status.
    quota_bytes: u64,
}

impl Maintenance {
    /// The service for `member`, whose client snapshots are checkpointed in
    /// `snapshot_dir`, with a backend quota of `quota_bytes`.
    pub(crate) fn new(
        member: Arc<Member>,
        alarms: Arc<Alarms>,
        snapshot_dir: PathBuf,
        quota_bytes: u64,
    ) -> Self {
        Maintenance {
            member,
            alarms,
            snapshot_dir,
            quota_bytes,
        }
    }
}

/// `major.minor` of a version, as etcd reports a cluster version in Downgrade answers.
fn cluster_minor(version: &str) -> String {
    version.splitn(3, '.').take(2).collect::<Vec<_>>().join(".")
}

/// etcd's checks of a downgrade target: a semantic version, one minor version below the
/// cluster's.
fn check_downgrade_target(target: &str) -> Result<(), EtcdError> {
    let target =
        semver::Version::parse(target).map_err(|_| EtcdError::WrongDowngradeVersionFormat)?;
    let current = semver::Version::parse(ETCD_CLUSTER_VERSION)
        .map_err(|e| EtcdError::Internal(format!("cluster version: {e}")))?;
    if target.major != current.major || target.minor + 1 != current.minor {
        return Err(EtcdError::InvalidDowngradeTargetVersion);
    }
    Ok(())
}

/// Runs `work` on a blocking thread (it reads or rewrites the whole backend).
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, MvccError> + Send + 'static,
) -> Result<T, EtcdError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(client_error::store(&e)),
        Err(e) => Err(EtcdError::Internal(format!("maintenance task: {e}"))),
    }
}

#[async_trait]
impl MaintenanceApi for Maintenance {
    async fn status(&self, _req: StatusRequest) -> Result<StatusResponse, EtcdError> {
        let member = &self.member;
        let st = member.raft.status();
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
            header: self.member.header_now(),
            version: ETCD_VERSION.to_string(),
            db_size: backend_size(&member.backend)? as i64,
            leader: st.leader_id,
            raft_index: st.commit_index,
            raft_term: st.term,
            raft_applied_index: st.applied_index,
            errors,
            db_size_in_use: member
                .backend
                .size_in_use_bytes()
                .map_err(|e| EtcdError::Internal(format!("reading the backend size: {e}")))?
                as i64,
            is_learner: st.learners.contains(&member.member_id),
            storage_version: STORAGE_VERSION.to_string(),
            db_size_quota: i64::try_from(self.quota_bytes).unwrap_or(i64::MAX),
            // One version in the cluster: no downgrade in progress.
            downgrade_info: Some(DowngradeInfo::default()),
        })
    }

    async fn alarm(&self, req: AlarmRequest) -> Result<AlarmResponse, EtcdError> {
        match self.member.propose(Request::Alarm(req)).await? {
            Applied::Alarm(mut resp) => {
                resp.header = self.member.header_now();
                Ok(resp)
            }
            other => Err(EtcdError::Internal(format!(
                "unexpected apply result {other:?}"
            ))),
        }
    }

    async fn defragment(&self, _req: DefragmentRequest) -> Result<DefragmentResponse, EtcdError> {
        let backend = self.member.backend.clone();
        blocking(move || backend.defragment()).await?;
        // No header, as etcd answers (every version): `{}` on the JSON gateway.
        Ok(DefragmentResponse { header: None })
    }

    async fn hash(&self, _req: HashRequest) -> Result<HashResponse, EtcdError> {
        let backend = self.member.backend.clone();
        let hash = blocking(move || backend.hash()).await?;
        Ok(HashResponse {
            header: self.member.header_now(),
            hash,
        })
    }

    async fn hash_kv(&self, req: HashKvRequest) -> Result<HashKvResponse, EtcdError> {
        let store = self.member.store.clone();
        let hashed = blocking(move || store.hash_kv(req.revision)).await?;
        Ok(HashKvResponse {
            header: self.member.header_now(),
            hash: hashed.hash,
            compact_revision: hashed.compact_revision,
            hash_revision: hashed.hash_revision,
        })
    }

    async fn downgrade(&self, req: DowngradeRequest) -> Result<DowngradeResponse, EtcdError> {
        let action = DowngradeAction::try_from(req.action)
            .map_err(|_| EtcdError::Internal("unknown method".into()))?;
        if action == DowngradeAction::Cancel {
            // One version in the cluster: nothing to cancel.
            return Err(EtcdError::NoInflightDowngrade);
        }
        check_downgrade_target(&req.version)?;
        match action {
            DowngradeAction::Validate => Ok(DowngradeResponse {
                header: self.member.header_now(),
                version: cluster_minor(ETCD_CLUSTER_VERSION),
            }),
            _ => Err(EtcdError::Internal(
                "downgrade is not supported: cairn has one storage format; move the data \
                 with a snapshot instead"
                    .into(),
            )),
        }
    }

    async fn move_leader(&self, req: MoveLeaderRequest) -> Result<MoveLeaderResponse, EtcdError> {
        let member = &self.member;
        let st = member.raft.status();
        if st.role != Role::Leader {
            return Err(EtcdError::NotLeader);
        }
        let target = req.target_id;
        if !st.voters.contains(&target) {
            return Err(EtcdError::BadLeaderTransferee);
        }
        let mut status = member.raft.subscribe_status();
        if target != member.member_id {
            member
                .raft
                .transfer_leader(target)
                .map_err(|_| EtcdError::Stopped)?;
        }
        let transferred = tokio::time::timeout(
            member.limits.request_timeout,
            status.wait_for(|s| s.leader_id == target || s.stopped),
        )
        .await;
        match transferred {
            Ok(Ok(s)) if s.leader_id == target => Ok(MoveLeaderResponse {
                header: self.member.header_now(),
            }),
            Ok(_) => Err(EtcdError::Stopped),
            Err(_) => Err(EtcdError::Timeout),
        }
    }

    async fn snapshot(&self) -> Result<SnapshotChunks, EtcdError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "client-snapshot-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let checkpoint = Scratch(self.snapshot_dir.join(&name));
        let db = Scratch(self.snapshot_dir.join(format!("{name}.db")));
        let header = self.member.header_now();
        let backend = self.member.backend.clone();
        let parent = self.snapshot_dir.clone();
        // A consistent copy (a RocksDB checkpoint), written out in etcd's format.
        let (checkpoint_dir, db_path) = (checkpoint.0.clone(), db.0.clone());
        let term = header.as_ref().map_or(0, |h| h.raft_term);
        let file = blocking(move || {
            std::fs::create_dir_all(&parent)
                .map_err(|e| MvccError::Io(format!("creating {}: {e}", parent.display())))?;
            backend.checkpoint(&checkpoint_dir)?;
            let copy = cairn_mvcc_store::Backend::open(&checkpoint_dir)?;
            crate::etcd_snapshot::export_to(&copy, term, &db_path)
                .map_err(|e| MvccError::Io(format!("writing the snapshot: {e}")))?;
            std::fs::File::open(&db_path)
                .map_err(|e| MvccError::Io(format!("opening {}: {e}", db_path.display())))
        })
        .await?;
        drop(checkpoint);
        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        tokio::task::spawn_blocking(move || stream_snapshot(file, db, header, tx));
        Ok(Box::pin(futures::stream::poll_fn(move |cx| {
            rx.poll_recv(cx)
        })))
    }
}

/// A scratch file or directory, removed once streamed or abandoned.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.0.is_dir() {
            let _ = std::fs::remove_dir_all(&self.0);
        } else {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

/// Sends the etcd-format file in chunks, then its sha256 (as etcd ends a snapshot),
/// until the end or until the client goes away.
fn stream_snapshot(
    file: std::fs::File,
    scratch: Scratch,
    header: Option<ResponseHeader>,
    tx: tokio::sync::mpsc::Sender<Result<SnapshotResponse, EtcdError>>,
) {
    use sha2::Digest as _;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let total = len + 32;
    let mut reader = std::io::BufReader::new(file);
    let mut hasher = sha2::Sha256::new();
    let mut sent = 0u64;
    let mut done = false;
    while !done {
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
        blob.truncate(filled);
        hasher.update(&blob);
        if filled < SNAPSHOT_CHUNK_BYTES {
            blob.extend_from_slice(&hasher.clone().finalize());
            done = true;
        }
        sent += blob.len() as u64;
        let chunk = SnapshotResponse {
            header,
            remaining_bytes: total.saturating_sub(sent),
            blob: blob.into(),
            version: ETCD_VERSION.to_string(),
        };
        if tx.blocking_send(Ok(chunk)).is_err() {
            tracing::info!(sent, total, "snapshot receiver went away");
            return;
        }
    }
    tracing::info!(bytes = sent, file = %scratch.0.display(), "snapshot sent");
}
