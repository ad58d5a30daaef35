//! The state machine raft feeds: decodes each committed [`InternalRequest`] and applies it
//! to the MVCC store, in one RocksDB write batch with the entry's index.

mod lease;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use cairn_grpc_gateway::EtcdError;
use cairn_lease_manager::Lessor;
use cairn_mvcc_store::backend::CF_MEMBERS;
use cairn_mvcc_store::hash::{PROPOSAL_LEDGER_KEY, RAFT_SNAPSHOT_KEY};
use cairn_mvcc_store::snapshot::ArchiveReader;
use cairn_mvcc_store::{BackendBatch, KvStore, MvccError};
use cairn_proto::cairnpb::{internal_request::Request, InternalRequest};
use cairn_proto::etcdserverpb::{
    alarm_request::AlarmAction, request_op, AlarmResponse, AlarmType, CompactionResponse,
    DeleteRangeResponse, LeaseGrantResponse, LeaseRevokeResponse, PutResponse, RequestOp,
    TxnResponse,
};
use cairn_proto::mvccpb::Event;
use cairn_raft_node::{
    ApplyError, CommittedEntry, EntryKind, ProposalLedger, SnapshotData, SnapshotMeta, StateMachine,
};
use prost::Message as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::alarms::Alarms;
use crate::auth_state::Proposer;
use crate::client_error;
use crate::members::{ChangeEffect, Membership};
use cairn_auth::{Auth, AuthRequest, AuthResponse};

/// What applying one entry produced, handed back to the member that proposed it.
#[derive(Debug)]
pub enum Applied {
    /// Nothing to answer (an empty or membership entry).
    Nothing,
    /// A put's response.
    Put(PutResponse),
    /// A delete's response.
    DeleteRange(DeleteRangeResponse),
    /// A txn's response.
    Txn(TxnResponse),
    /// A compaction's response.
    Compaction(CompactionResponse),
    /// A lease grant's response.
    LeaseGrant(LeaseGrantResponse),
    /// A lease revoke's response.
    LeaseRevoke(LeaseRevokeResponse),
    /// An alarm request's response.
    Alarm(AlarmResponse),
    /// An Auth request's response (no header yet).
    Auth(AuthResponse),
    /// The member list after a membership change.
    Members(Vec<cairn_proto::etcdserverpb::Member>),
    /// The request failed with a client-visible error; nothing changed.
    Failed(EtcdError),
}

/// What other parts of the member (watchers, the lessor) learn from the apply loop.
/// Called on the raft thread, in log order: implementations must not block.
pub trait ApplyHooks: Send + Sync + 'static {
    /// The events of one applied revision (prev_kv always filled where one existed).
    fn on_events(&self, revision: i64, events: &[Event]);
    /// The whole store was replaced by a snapshot from the leader; it now stands at
    /// `revision`.
    fn on_restore(&self, revision: i64) {
        let _ = revision;
    }
}

/// Hooks for a member without watchers.
#[derive(Debug, Default)]
pub struct NoHooks;

impl ApplyHooks for NoHooks {
    fn on_events(&self, _revision: i64, _events: &[Event]) {}
}

fn txn_leases(ops: &[RequestOp], out: &mut Vec<i64>) {
    for op in ops {
        match &op.request {
            Some(request_op::Request::RequestPut(p)) if p.lease != 0 => out.push(p.lease),
            Some(request_op::Request::RequestTxn(t)) => {
                txn_leases(&t.success, out);
                txn_leases(&t.failure, out);
            }
            _ => {}
        }
    }
}

/// Applies committed entries to the key space.
pub struct Applier {
    store: Arc<KvStore>,
    hooks: Arc<dyn ApplyHooks>,
    lessor: Option<Arc<Lessor>>,
    members: Option<Arc<Membership>>,
    removed: Option<tokio::sync::watch::Sender<bool>>,
    snapshot_dir: Option<PathBuf>,
    alarms: Option<Arc<Alarms>>,
    auth: Option<Arc<Auth>>,
}

impl Applier {
    /// An applier writing into `store` and telling `hooks` what changed.
    pub fn new(store: Arc<KvStore>, hooks: Arc<dyn ApplyHooks>) -> Self {
        Applier {
            store,
            hooks,
            lessor: None,
            members: None,
            removed: None,
            snapshot_dir: None,
            alarms: None,
            auth: None,
        }
    }

    /// Applies Auth requests to `auth` (its records in the batch of their index) and
    /// checks every client write against the permissions of the user who proposed it.
    pub fn with_auth(mut self, auth: Arc<Auth>) -> Self {
        self.auth = Some(auth);
        self
    }

    fn apply_auth(
        &self,
        auth: &Auth,
        index: u64,
        request: &AuthRequest,
        proposer: &Proposer,
    ) -> Result<Applied, MvccError> {
        let who = match proposer {
            Proposer::Client(who) => who.as_ref(),
            Proposer::Member => None,
        };
        match auth.apply(request, who, index) {
            Ok(applied) => {
                let mut batch = BackendBatch::new();
                crate::auth_state::write_records(applied.writes, &mut batch);
                self.store.record_applied_with(index, batch)?;
                Ok(Applied::Auth(applied.response))
            }
            Err(e) => {
                self.store.record_applied(index)?;
                Ok(Applied::Failed(client_error::auth(&e)))
            }
        }
    }

    /// The authoritative permission check of a client's write, in log order: what the
    /// proposer's user may do at this point of the log (a permission revoked since the
    /// request was checked, or credentials older than the auth state, refuse it).
    fn permitted(&self, proposer: &Proposer, req: &Request) -> Result<(), EtcdError> {
        let (Some(auth), Proposer::Client(who)) = (&self.auth, proposer) else {
            return Ok(());
        };
        let store = auth.store();
        if !store.is_enabled() {
            return Ok(());
        }
        let keys = |id: i64| {
            self.lessor
                .as_ref()
                .and_then(|lessor| lessor.time_to_live(id, true))
                .map(|ttl| ttl.keys)
        };
        let who = who.as_ref();
        match req {
            Request::Put(r) => store.check_put(who, r, &keys),
            Request::DeleteRange(r) => store.check_delete_range(who, r),
            Request::Txn(r) => store.check_txn(who, r, &keys),
            Request::LeaseRevoke(r) => store.check_lease_revoke(who, r.id, &keys),
            _ => Ok(()),
        }
        .map_err(|e| client_error::auth(&e))
    }

    /// Applies alarm requests to `alarms` and, while NOSPACE is raised, refuses every
    /// write that would grow the key space.
    pub fn with_alarms(mut self, alarms: Arc<Alarms>) -> Self {
        self.alarms = Some(alarms);
        self
    }

    fn apply_alarm(&self, index: u64, req: &Request) -> Result<Option<Applied>, MvccError> {
        let Some(alarms) = &self.alarms else {
            return Ok(None);
        };
        if let Request::Alarm(r) = req {
            let mut batch = BackendBatch::new();
            let changed = match AlarmAction::try_from(r.action) {
                Ok(AlarmAction::Get) => alarms.list(r.alarm),
                Ok(AlarmAction::Activate) if r.alarm != AlarmType::None as i32 => alarms
                    .activate(r.member_id, r.alarm, &mut batch)
                    .into_iter()
                    .collect(),
                Ok(AlarmAction::Deactivate) => alarms
                    .deactivate(r.member_id, r.alarm, &mut batch)
                    .into_iter()
                    .collect(),
                Ok(AlarmAction::Activate) | Err(_) => Vec::new(),
            };
            self.store.record_applied_with(index, batch)?;
            return Ok(Some(Applied::Alarm(AlarmResponse {
                header: None,
                alarms: changed,
            })));
        }
        if alarms.no_space() && crate::alarms::write_cost(req) > 0 {
            // Capped on every member alike: the alarm is replicated state.
            self.store.record_applied(index)?;
            return Ok(Some(Applied::Failed(EtcdError::NoSpace)));
        }
        Ok(None)
    }

    /// Makes raft snapshots (checkpoints sent to followers too far behind) and installs
    /// the leader's, working in `dir`.
    pub fn with_snapshots(mut self, dir: PathBuf) -> Self {
        self.snapshot_dir = Some(dir);
        self
    }

    fn snapshot_dir(&self) -> Result<&Path, ApplyError> {
        let dir = self
            .snapshot_dir
            .as_deref()
            .ok_or_else(|| ApplyError("no snapshot directory configured".into()))?;
        std::fs::create_dir_all(dir)
            .map_err(|e| ApplyError(format!("creating {}: {e}", dir.display())))?;
        Ok(dir)
    }

    /// Applies membership changes and member attributes to `members`; `removed` is set
    /// when this member is removed from the cluster.
    pub fn with_members(
        mut self,
        members: Arc<Membership>,
        removed: tokio::sync::watch::Sender<bool>,
    ) -> Self {
        self.members = Some(members);
        self.removed = Some(removed);
        self
    }

    fn apply_membership(&self, index: u64, req: &Request) -> Result<Option<Applied>, MvccError> {
        let Some(members) = &self.members else {
            return Ok(None);
        };
        let mut batch = BackendBatch::new();
        match req {
            Request::MemberAttributes(m) => members.apply_attributes(m, &mut batch),
            Request::MemberUpdate(m) => members.apply_update(m, &mut batch),
            _ => return Ok(None),
        }
        self.store.record_applied_with(index, batch)?;
        Ok(Some(Applied::Members(members.list())))
    }

    /// Applies lease requests to `lessor`, which also decides whether a lease exists and
    /// follows which keys are attached to which lease.
    pub fn with_lessor(mut self, lessor: Arc<Lessor>) -> Self {
        self.lessor = Some(lessor);
        self
    }

    /// A put naming a lease the lessor does not hold fails with etcd's error; without a
    /// lessor every lease is unknown.
    fn lease_exists(&self, id: i64) -> bool {
        self.lessor.as_ref().is_some_and(|lessor| lessor.exists(id))
    }

    fn check_leases(&self, leases: &[i64]) -> Result<(), EtcdError> {
        match leases.iter().find(|id| !self.lease_exists(**id)) {
            Some(_) => Err(EtcdError::LeaseNotFound),
            None => Ok(()),
        }
    }

    fn emit<R>(&self, outcome: cairn_mvcc_store::WriteOutcome<R>) -> R {
        if !outcome.events.is_empty() {
            if let Some(lessor) = &self.lessor {
                lease::track_attachments(lessor, &outcome.events);
            }
            self.hooks.on_events(outcome.revision, &outcome.events);
        }
        outcome.response
    }

    fn fatal(index: u64, e: MvccError) -> ApplyError {
        ApplyError(format!("backend failure applying entry {index}: {e}"))
    }

    fn apply_lease(
        &self,
        lessor: &Lessor,
        index: u64,
        req: &Request,
    ) -> Result<Option<Applied>, MvccError> {
        let store = &self.store;
        Ok(Some(match req {
            Request::LeaseGrant(r) => match lease::apply_grant(store, lessor, index, r)? {
                Ok(resp) => Applied::LeaseGrant(resp),
                Err(e) => Applied::Failed(e),
            },
            Request::LeaseRevoke(r) => match lease::apply_revoke(store, lessor, index, r)? {
                Ok(outcome) => Applied::LeaseRevoke(LeaseRevokeResponse {
                    header: self.emit(outcome).header,
                }),
                Err(e) => Applied::Failed(e),
            },
            _ => return Ok(None),
        }))
    }

    fn apply_request(
        &self,
        index: u64,
        req: Request,
        proposer: &Proposer,
    ) -> Result<Applied, MvccError> {
        let store = &self.store;
        let req = match crate::auth_state::from_entry(req) {
            Ok(request) => {
                return match &self.auth {
                    Some(auth) => self.apply_auth(auth, index, &request, proposer),
                    None => {
                        store.record_applied(index)?;
                        Ok(Applied::Failed(EtcdError::AuthNotEnabled))
                    }
                };
            }
            Err(req) => req,
        };
        if let Err(e) = self.permitted(proposer, &req) {
            store.record_applied(index)?;
            return Ok(Applied::Failed(e));
        }
        if let Some(applied) = self.apply_alarm(index, &req)? {
            return Ok(applied);
        }
        if let Some(applied) = self.apply_membership(index, &req)? {
            return Ok(applied);
        }
        if let Some(lessor) = &self.lessor {
            if let Some(applied) = self.apply_lease(lessor, index, &req)? {
                return Ok(applied);
            }
        }
        Ok(match req {
            Request::Put(r) => {
                let leases: Vec<i64> = if r.lease != 0 && !r.ignore_lease {
                    vec![r.lease]
                } else {
                    Vec::new()
                };
                if let Err(e) = self.check_leases(&leases) {
                    store.record_applied(index)?;
                    return Ok(Applied::Failed(e));
                }
                Applied::Put(self.emit(store.put(index, &r, BackendBatch::default())?))
            }
            Request::DeleteRange(r) => Applied::DeleteRange(self.emit(store.delete_range(
                index,
                &r,
                BackendBatch::default(),
            )?)),
            Request::Txn(r) => {
                let mut leases = Vec::new();
                txn_leases(&r.success, &mut leases);
                txn_leases(&r.failure, &mut leases);
                if let Err(e) = self.check_leases(&leases) {
                    store.record_applied(index)?;
                    return Ok(Applied::Failed(e));
                }
                Applied::Txn(self.emit(store.txn(index, &r, BackendBatch::default())?))
            }
            Request::Compaction(r) => Applied::Compaction(self.emit(store.compact(index, &r)?)),
            Request::LeaseCheckpoint(_) => {
                // Remaining TTLs are not checkpointed (etcd's default): nothing to keep.
                store.record_applied(index)?;
                Applied::Nothing
            }
            other => {
                store.record_applied(index)?;
                Applied::Failed(EtcdError::Internal(format!(
                    "request not supported yet: {:?}",
                    std::mem::discriminant(&other)
                )))
            }
        })
    }
}

impl StateMachine for Applier {
    type Output = Applied;

    fn applied_index(&self) -> u64 {
        self.store.applied_index()
    }

    fn apply(&mut self, entry: CommittedEntry<'_>) -> Result<Applied, ApplyError> {
        let index = entry.index;
        let data = match entry.kind {
            EntryKind::ConfChange { change, .. } => {
                let mut batch = BackendBatch::new();
                let mut list = Vec::new();
                if let Some(members) = &self.members {
                    if members.apply_change(&change, &mut batch) == ChangeEffect::RemovedSelf {
                        if let Some(removed) = &self.removed {
                            let _ = removed.send(true);
                        }
                    }
                    list = members.list();
                }
                self.store
                    .record_applied_with(index, batch)
                    .map_err(|e| Self::fatal(index, e))?;
                return Ok(Applied::Members(list));
            }
            // A proposal that reached the log again, or after a later one of its
            // member: applied already (or overtaken), so only the index moves.
            EntryKind::Empty | EntryKind::Rejected(_) => {
                self.store
                    .record_applied(index)
                    .map_err(|e| Self::fatal(index, e))?;
                return Ok(Applied::Nothing);
            }
            EntryKind::Normal(data) => data,
        };
        // Every member applies the same log: skipping an entry this member cannot read
        // would make it diverge from the others without anybody noticing. Stop instead,
        // as etcd does.
        let (request, proposer) = match InternalRequest::decode(data) {
            Ok(InternalRequest {
                request: Some(r),
                header,
                ..
            }) => (r, Proposer::from_header(header.as_ref())),
            Ok(_) => {
                return Err(ApplyError(format!(
                    "the committed entry at index {index} holds no request this version \
                     knows (written by a newer version?); stopping rather than diverging"
                )))
            }
            Err(e) => {
                return Err(ApplyError(format!(
                    "the committed entry at index {index} does not decode ({e}); stopping \
                     rather than diverging"
                )))
            }
        };
        match self.apply_request(index, request, &proposer) {
            Ok(applied) => Ok(applied),
            Err(e) if client_error::is_member_fault(&e) => Err(Self::fatal(index, e)),
            Err(e) => {
                self.store
                    .record_applied(index)
                    .map_err(|e| Self::fatal(index, e))?;
                Ok(Applied::Failed(client_error::store(&e)))
            }
        }
    }

    fn persist(&mut self) -> Result<(), ApplyError> {
        // The sync is timed as a backend commit by the backend itself.
        self.store
            .backend()
            .sync()
            .map_err(|e| ApplyError(format!("syncing the backend: {e}")))?;
        Ok(())
    }

    fn snapshot(&mut self, ledger: &ProposalLedger) -> Result<SnapshotData, ApplyError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        // The ledger describes the proposals applied up to the applied index the
        // checkpoint holds; it travels inside it.
        let mut batch = BackendBatch::new();
        batch.put_cf(CF_MEMBERS, PROPOSAL_LEDGER_KEY, ledger.encode());
        self.store
            .backend()
            .write(batch)
            .map_err(|e| ApplyError(format!("recording the proposal ledger: {e}")))?;
        let dir = self.snapshot_dir()?.join(format!(
            "checkpoint-{}-{}",
            self.store.applied_index(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        self.store
            .backend()
            .checkpoint(&dir)
            .map_err(|e| ApplyError(format!("checkpoint for a snapshot: {e}")))?;
        let reader = ArchiveReader::new(&dir)
            .map_err(|e| ApplyError(format!("archiving a checkpoint: {e}")))?;
        Ok(Box::new(CheckpointArchive { reader, dir }))
    }

    fn restore(&mut self, meta: &SnapshotMeta, data: &Path) -> Result<ProposalLedger, ApplyError> {
        let err = |what: &str, e: &dyn std::fmt::Display| ApplyError(format!("{what}: {e}"));
        let dir = self
            .snapshot_dir()?
            .join(format!("restore-{}", meta.index()));
        let _ = std::fs::remove_dir_all(&dir);
        let file = std::fs::File::open(data).map_err(|e| err("opening the snapshot", &e))?;
        cairn_mvcc_store::snapshot::unpack(std::io::BufReader::new(file), &dir)
            .map_err(|e| err("unpacking the snapshot", &e))?;
        #[cfg(feature = "failpoints")]
        fail::fail_point!("apply::before_restore_write", |_| {
            eprintln!("fail point apply::before_restore_write reached: aborting");
            std::process::abort()
        });
        let backend = self.store.backend().clone();
        // The restore keeps this member's id (MEMBER_LOCAL_KEYS); the cluster id is the
        // leader's too. The snapshot's metadata joins them in the same batch.
        let mut extra = BackendBatch::new();
        extra.put_cf(CF_MEMBERS, RAFT_SNAPSHOT_KEY, meta.encode());
        self.store
            .restore_from_checkpoint_with(&dir, extra)
            .map_err(|e| err("restoring the store", &e))?;
        let _ = std::fs::remove_dir_all(&dir);
        if let Some(members) = &self.members {
            members
                .reload(&backend)
                .map_err(|e| err("reloading members", &e))?;
        }
        if let Some(alarms) = &self.alarms {
            alarms
                .reload(&backend)
                .map_err(|e| err("reloading alarms", &e))?;
        }
        if let Some(lessor) = &self.lessor {
            lessor
                .recover(self.store.as_ref())
                .map_err(|e| err("reloading leases", &e))?;
        }
        if let Some(auth) = &self.auth {
            let records = crate::auth_state::records(&backend)
                .map_err(|e| err("reading auth records", &e))?;
            auth.recover(records)
                .map_err(|e| err("reloading the auth state", &e))?;
        }
        self.hooks.on_restore(self.store.current_revision());
        tracing::info!(
            index = meta.index(),
            revision = self.store.current_revision(),
            "store replaced by the leader's snapshot"
        );
        stored_ledger(&backend)
    }

    fn restored_snapshot(&self) -> Result<Option<(SnapshotMeta, ProposalLedger)>, ApplyError> {
        let backend = self.store.backend();
        let Some(bytes) = backend
            .get(CF_MEMBERS, RAFT_SNAPSHOT_KEY)
            .map_err(|e| ApplyError(format!("reading the installed snapshot's record: {e}")))?
        else {
            return Ok(None);
        };
        let meta = SnapshotMeta::decode(&bytes).map_err(|e| {
            ApplyError(format!(
                "the installed snapshot's record does not decode: {e}"
            ))
        })?;
        Ok(Some((meta, stored_ledger(backend)?)))
    }
}

/// The proposal ledger a snapshot carried (none from a leader older than the ledger).
fn stored_ledger(backend: &cairn_mvcc_store::Backend) -> Result<ProposalLedger, ApplyError> {
    match backend.get(CF_MEMBERS, PROPOSAL_LEDGER_KEY) {
        Ok(Some(bytes)) => ProposalLedger::decode(&bytes)
            .map_err(|e| ApplyError(format!("the snapshot's proposal ledger: {e}"))),
        Ok(None) => Ok(ProposalLedger::default()),
        Err(e) => Err(ApplyError(format!("reading the proposal ledger: {e}"))),
    }
}

/// A checkpoint streamed as an archive; the checkpoint is deleted once read or dropped.
struct CheckpointArchive {
    reader: ArchiveReader,
    dir: PathBuf,
}

impl std::io::Read for CheckpointArchive {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.reader.read(buf)
    }
}

impl Drop for CheckpointArchive {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
