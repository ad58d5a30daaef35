//! The state machine raft feeds: decodes each committed [`InternalRequest`] and applies it
//! to the MVCC store, in one RocksDB write batch with the entry's index.

use std::sync::Arc;

use cairn_grpc_gateway::EtcdError;
use cairn_mvcc_store::{BackendBatch, KvStore, MvccError};
use cairn_proto::cairnpb::{internal_request::Request, InternalRequest};
use cairn_proto::etcdserverpb::{
    CompactionResponse, DeleteRangeResponse, PutResponse, TxnResponse,
};
use cairn_raft_node::{ApplyError, CommittedEntry, EntryKind, StateMachine};
use prost::Message as _;

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
    /// The request failed with a client-visible error; nothing changed.
    Failed(EtcdError),
}

/// Maps a store error to what the client sees.
pub fn client_error(e: &MvccError) -> EtcdError {
    match e {
        MvccError::Compacted => EtcdError::Compacted,
        MvccError::FutureRevision => EtcdError::FutureRevision,
        MvccError::EmptyKey => EtcdError::EmptyKey,
        MvccError::KeyNotFound => EtcdError::KeyNotFound,
        MvccError::TooManyOps => EtcdError::TooManyOps,
        MvccError::DuplicateKey => EtcdError::DuplicateKey,
        other => EtcdError::Internal(other.to_string()),
    }
}

/// Applies committed entries to the key space.
pub struct Applier {
    store: Arc<KvStore>,
}

impl Applier {
    /// An applier writing into `store`.
    pub fn new(store: Arc<KvStore>) -> Self {
        Applier { store }
    }

    fn fatal(index: u64, e: MvccError) -> ApplyError {
        ApplyError(format!("backend failure applying entry {index}: {e}"))
    }

    fn apply_request(&self, index: u64, req: Request) -> Result<Applied, MvccError> {
        let store = &self.store;
        Ok(match req {
            Request::Put(r) => {
                Applied::Put(store.put(index, &r, BackendBatch::default())?.response)
            }
            Request::DeleteRange(r) => Applied::DeleteRange(
                store
                    .delete_range(index, &r, BackendBatch::default())?
                    .response,
            ),
            Request::Txn(r) => {
                Applied::Txn(store.txn(index, &r, BackendBatch::default())?.response)
            }
            Request::Compaction(r) => Applied::Compaction(store.compact(index, &r)?.response),
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
            EntryKind::Empty | EntryKind::ConfChange(_) => {
                self.store
                    .record_applied(index)
                    .map_err(|e| Self::fatal(index, e))?;
                return Ok(Applied::Nothing);
            }
            EntryKind::Normal(data) => data,
        };
        let request = match InternalRequest::decode(data) {
            Ok(InternalRequest {
                request: Some(r), ..
            }) => r,
            Ok(_) | Err(_) => {
                tracing::error!(index, "undecodable request in the raft log; skipped");
                self.store
                    .record_applied(index)
                    .map_err(|e| Self::fatal(index, e))?;
                return Ok(Applied::Failed(EtcdError::Internal(
                    "undecodable request".into(),
                )));
            }
        };
        match self.apply_request(index, request) {
            Ok(applied) => Ok(applied),
            Err(e @ (MvccError::Backend(_) | MvccError::Corrupt(_))) => Err(Self::fatal(index, e)),
            Err(e) => {
                self.store
                    .record_applied(index)
                    .map_err(|e| Self::fatal(index, e))?;
                Ok(Applied::Failed(client_error(&e)))
            }
        }
    }

    fn persist(&mut self) -> Result<(), ApplyError> {
        self.store
            .backend()
            .sync()
            .map_err(|e| ApplyError(format!("syncing the backend: {e}")))
    }
}
